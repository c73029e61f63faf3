"""House rules for the Snakefiles: every rule has log, benchmark, threads and resources (mem_mb, runtime),
training rules request gpu from config, the Snakefile imports nothing heavy at DAG-build time, and each
rule -> one thin script -> the job function of the same name in the jobs module that mirrors its rules
file, passed only the job's inputs, outputs, params, wildcards, threads and (scheduling keys) resources."""

import importlib
import inspect
import re
import subprocess
import sys
from types import SimpleNamespace

from ..conftest import ROOT, RULES


def rule_blocks():
    text = "\n".join(p.read_text() for p in sorted((ROOT / "rules").glob("*.smk")))
    blocks = re.split(r"^(?:rule|checkpoint) (\w+):\n", text, flags=re.M)
    return dict(zip(blocks[1::2], blocks[2::2], strict=True))


def rules_by_file():
    """{rules file stem: [(rule, script path or None)]}."""
    out = {}
    for path in sorted((ROOT / "rules").glob("*.smk")):
        blocks = re.split(r"^(?:rule|checkpoint) (\w+):\n", path.read_text(), flags=re.M)
        out[path.stem] = [
            (name, (m.group(1) if (m := re.search(r'    script:\n        "\.\./([^"]+)"', body)) else None))
            for name, body in zip(blocks[1::2], blocks[2::2], strict=True)
        ]
    return out


def test_conftest_lists_every_rule():
    assert set(RULES) == set(rule_blocks())


def test_every_rule_script_calls_the_job_of_its_name_in_the_module_of_its_rules_file():
    """rules/<file>.smk rule R -> workflow_scripts/R.py -> smalldl.jobs.<file>.R, keyword-only."""
    seen = set()
    for stem, rules in rules_by_file().items():
        if stem == "common":
            assert not rules, "rules/common.smk holds input functions only"
            continue
        module = importlib.import_module(f"smalldl.jobs.{stem}")
        for rule, script in rules:
            assert script == f"workflow_scripts/{rule}.py", f"rule {rule} runs {script}"
            text = (ROOT / script).read_text()
            assert re.search(rf"from smalldl.jobs import {stem}\b", text), f"{script} must import smalldl.jobs.{stem}"
            assert re.search(rf"\b{stem}\.{rule}\(", text), f"{script} must call {stem}.{rule}(...)"
            job = getattr(module, rule, None)
            assert callable(job), f"smalldl.jobs.{stem} has no function {rule}"
            kinds = {p.kind for p in inspect.signature(job).parameters.values()}
            assert kinds == {inspect.Parameter.KEYWORD_ONLY}, f"smalldl.jobs.{stem}.{rule} must be keyword-only"
            seen.add(rule)
    assert seen == set(RULES)
    modules = {p.stem for p in (ROOT / "smalldl" / "jobs").glob("*.py")} - {"__init__", "_shared"}
    assert modules == set(rules_by_file()) - {"common"}, "one jobs module per rules file"


def test_no_workflow_script_reads_the_whole_config():
    """A rule's params are its job's contract (and Snakemake's params trigger covers them); resources carry
    only where and how a job runs (config.SCHEDULING_KEYS), which no result depends on."""
    allowed = {"input", "output", "params", "wildcards", "threads", "resources", "log", "rule"}
    for script in sorted((ROOT / "workflow_scripts").glob("*.py")):
        text = script.read_text()
        assert not re.search(r"\b(?:snakemake|smk)\.config\b", text), f"{script.name} reads the config"
        used = set(re.findall(r"\bsmk\.(\w+)", text))
        assert used <= allowed, f"{script.name} uses smk.{sorted(used - allowed)}"


class _Named(dict):
    """Snakemake's named lists as a job script sees them: attributes and ``get``."""

    __getattr__ = dict.__getitem__


def _training_job(**more_inputs):
    """A fake ``snakemake`` object of a finetune job (wildcards, inputs, params, outputs, resources)."""
    return SimpleNamespace(
        wildcards=_Named(task="chest", arch="resnet18", recipe="imagenet-full", n="50", seed="2"),
        input=_Named(cache="c.npy", cache_meta="c.json", split="s.parquet", subset="n50.csv", **more_inputs),
        params=_Named(task={"labels": ["a"]}, settings={"epochs": 3}, seed=7),
        output=_Named(metrics="m.json", predictions="p.parquet", val_predictions="v.parquet", history="h.csv"),
        resources=SimpleNamespace(mem_mb=1000, runtime=10, device="cpu", eval_batch_size=0, checkpoint=1),
        threads=2,
    )


def test_training_arguments_are_what_lr_find_and_finetune_share_and_finetune_arguments_extend_them():
    """workflow.training_arguments: the keyword arguments the rules lr_find and finetune (final_run) build
    alike; finetune_arguments adds finetune's own, and each job gets exactly its parameters."""
    from smalldl import workflow
    from smalldl.jobs import train

    def params(job):
        return set(inspect.signature(job).parameters)

    shared = workflow.training_arguments(_training_job())
    assert set(shared) == params(train.lr_find) & params(train.finetune)
    assert params(train.lr_find) - set(shared) == {"out_csv", "out_json", "out_png"}
    assert shared["source_ckpt"] is None and shared["settings"]["threads"] == 2 and shared["global_seed"] == 7
    for smk in (_training_job(), _training_job(source="src.pt", lr="lr.json")):
        run = workflow.finetune_arguments(smk)
        assert set(run) == params(train.finetune)
        assert {k: run[k] for k in shared} == workflow.training_arguments(smk)
        assert (run["n"], run["seed"], run["lr_json"]) == (50, 2, smk.input.get("lr"))
    assert workflow.training_arguments(_training_job(source="src.pt"))["source_ckpt"] == "src.pt"


def test_every_rule_declares_log_benchmark_threads_resources():
    blocks = rule_blocks()
    assert set(RULES) <= set(blocks)
    for name, body in blocks.items():
        body = re.split(r"\n(?:rule|checkpoint) ", body)[0]
        for directive in ("log:", "benchmark:", "threads:", "resources:", "conda:"):
            assert f"    {directive}" in body, f"rule {name} has no {directive}"
        assert "mem_mb=" in body and "runtime=" in body, f"rule {name}: resources need mem_mb and runtime"
    for name in ("pretrain", "finetune", "lr_find"):
        assert "gpu=" in blocks[name], f"training rule {name} must request gpu (from config)"


def test_building_the_dag_does_not_import_torch(tmp_path):
    code = (
        "import sys; from snakemake.cli import main; sys.argv=['snakemake','-n','-q','-s',sys.argv[1],"
        "'--directory',sys.argv[2]]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "assert 'torch' not in sys.modules, 'torch imported while building the DAG'\nprint('ok')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "Snakefile"), str(tmp_path)], capture_output=True, text=True
    )
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


def design_module_table():
    """Modules named in the first column of docs/DESIGN.md's module table (``a/b.py``, ``c.py`` in one cell:
    ``c.py`` is in ``a/``)."""
    text = (ROOT / "docs" / "DESIGN.md").read_text()
    table = text.split("| module | owns |", 1)[1].split("\n\n", 1)[0]
    listed = set()
    for row in table.splitlines()[2:]:
        names = re.findall(r"`([^`]+\.py)`", row.split("|")[1])
        folder = names[0].rpartition("/")[0] if names else ""
        listed |= {n if "/" in n else f"{folder}/{n}".lstrip("/") for n in names}
    return listed


def test_every_library_module_is_in_the_design_module_table():
    modules = {p.relative_to(ROOT / "smalldl").as_posix() for p in (ROOT / "smalldl").rglob("*.py")}
    listed = design_module_table()
    assert modules - listed == set(), "modules missing from docs/DESIGN.md's module table"
    assert listed - modules == set(), "docs/DESIGN.md's module table names modules that do not exist"


def test_snakemake_lint_finds_nothing(tmp_path):
    """`snakemake --lint` (a CI step) on the tiny config: e.g. input functions belong in rules/common.smk,
    not beside the rules that use them."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--lint", "--configfile",
           str(ROOT / "configs" / "tiny.yaml"), "--directory", str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]


def test_a_script_handed_to_the_fork_server_imports_nothing_heavy_in_the_job_s_own_process():
    """A script that passes preload modules to workflow.run runs in a child of the fork server; the job's own
    process (the one Snakemake starts) only runs its top level: pandas, pyarrow or torch imported there cost
    every job about 0.4 s before the hand-over (benchmarks/demo_costs.py: "outside")."""
    import ast
    import subprocess
    import sys

    handed = [p for p in sorted((ROOT / "workflow_scripts").glob("*.py")) if "_MODULES)" in p.read_text()]
    assert {p.stem for p in handed} >= {"finetune", "pretrain", "final_run", "radiomics_model"}
    for script in handed:
        tree = ast.parse(script.read_text())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = {a.name if isinstance(n, ast.Import) else f"{n.module}.{a.name}" for n in top for a in n.names}
        assert names == {"_bootstrap", "smalldl.workflow"}, f"{script.name} imports {sorted(names)} at its top"
    code = "import sys, smalldl.workflow; print(sorted({'pandas', 'pyarrow', 'torch', 'sklearn'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", f"smalldl.workflow imports {out.stdout.strip()}"
