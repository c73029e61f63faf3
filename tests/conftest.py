import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Tests are about behaviour, and the machines have 2 cores: keep torch from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "1")

#: Every rule of the workflow (the tests check each has its directives, its script and its job function).
RULES = (
    "generate_synthetic",
    "fetch_nih",
    "index",
    "cache",
    "split",
    "subset",
    "leak_check",
    "pretrain",
    "imagenet_weights",
    "lr_find",
    "finetune",
    "select_stage",
    "radiomics_features",
    "radiomics_model",
    "radiomics_best",
    "aggregate",
    "table1",
    "bootstrap",
    "compare",
    "learning_curves",
    "results_readme",
    "plot_auc_vs_n",
    "plot_history",
    "plot_axis",
    "plot_learning_curves",
)
#: The rules the tiny study (configs/tiny.yaml) plans: all but the NIH download (no ChestX-ray14 there)
#: and the lr finder (off).
TINY_RULES = tuple(r for r in RULES if r not in ("fetch_nih", "lr_find"))
