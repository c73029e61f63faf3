"""The results of a study, computed from the runs' files by the results rules (``smalldl.jobs.results``):

- ``summary``: the summary table (one row per run, from metrics.json) and Table 1 (from the split manifests);
- ``intervals``: each run's test AUC with a bootstrap CI from its predictions, and the means over seeds;
- ``comparisons``: paired comparisons of recipes, and the stage winners with their margins;
- ``curves``: learning-curve fits and the training size needed for the target AUC;
- ``readme``: the generated results/README.md.
"""
