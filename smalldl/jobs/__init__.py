"""The workflow's job entry points, one module per rules file (``rules/data.smk`` ->
``smalldl.jobs.data``) and one function per rule, named after the rule.

Each workflow script (``workflow_scripts/<rule>.py``) calls ``smalldl.jobs.<file>.<rule>(...)`` with
``snakemake.input``, ``snakemake.output``, ``snakemake.params``, ``snakemake.wildcards`` and
``snakemake.threads`` only, never the whole config: a rule's params are its job's contract. Every entry
point takes keyword-only arguments, so no two paths can be swapped silently, and can be run (and tested)
without Snakemake.
"""
