"""One run's record: what a run's metrics.json holds, for fine-tuning and radiomics runs alike, and the
order of the summary's leading columns (smalldl/results/summary.py flattens the records into the summary).

A ``RunRecord`` has the fields every run has (identity, data sizes, validation and test scores, timing,
environment) and one family-specific part: ``CnnFields`` for a fine-tuning run, ``RadiomicsFields`` for a
radiomics model (with ``BestChoice`` for the best model of its (task, featureset, n, seed)). Fields a family
does not have are null in its metrics.json (e.g. a radiomics run's schedule); the other family's part is
absent.

Light: standard library only.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from smalldl.errors import InputError

#: The keys that identify a run, first in the summary in this order (when present).
RUN_KEYS = (
    "family",
    "task",
    "arch",
    "recipe",
    "schedule",
    "transfer",
    "source",
    "init",
    "featureset",
    "model",
    "n",
    "seed",
)
#: Columns the summary adds to each run's record (smalldl/results/summary.py).
DERIVED = ("headline_auc", "headline_metric", "select_auc")
#: Summary columns first in this order (when present); every other key follows (sorted), then ``path``.
SUMMARY_LEAD = (
    *RUN_KEYS,
    *DERIVED,
    "test_auc",
    "test_auc_tta",
    "val_auc",
    "val_auc_tta",
    "test_loss",
    "val_loss",
    "n_train",
    "n_val",
    "n_test",
    "selected_epoch",
    "epochs",
    "epochs_run",
    "steps",
    "max_lr",
    "lr_source",
    "wall_time_s",
    "images_per_s",
    "device",
    "run_seed",
)
#: Keys every run's metrics.json must have.
REQUIRED = ("task", "arch", "recipe", "n", "seed", "test_auc", "val_auc")


@dataclass
class CnnFields:
    """What only a fine-tuning run has."""

    selected_state_sha256: str
    epochs_run: int
    lr_source: str
    init_info: dict[str, Any]
    #: seconds per phase of the job (smalldl.jobs.train.finetune): startup (process start to the job's code:
    #: interpreter, imports), setup (data, model, formats), train, validate (per epoch), test (test set and
    #: validation TTA), write (predictions, history, model)
    phase_s: dict[str, float] = field(default_factory=dict)


@dataclass
class BestChoice:
    """The best radiomics model of one (task, featureset, n, seed), chosen on validation AUC."""

    chosen_model: str
    chosen_run: str
    candidates_val_auc: dict[str, float | None]
    selected_on: str = "val_auc"


@dataclass
class RadiomicsFields:
    """What only a radiomics run has."""

    featureset: str
    model: str
    n_features: int
    cv_auc: float | None
    cv_auc_per_label: dict[str, float | None]
    cv_folds: int
    n_iter: int
    best_params: dict[str, Any]
    fit_status: dict[str, str]
    convergence_warnings: int
    features: str
    sklearn: str
    choice: BestChoice | None = None


@dataclass
class RunRecord:
    """One run of the study: a fine-tuning run (``cnn``) or a radiomics model (``radiomics``)."""

    family: str
    task: str
    arch: str
    recipe: str
    n: int
    seed: int
    run_seed: int
    task_type: str
    labels: list[str]
    n_train: int
    n_val: int
    n_test: int
    train_positives: dict[str, int]
    val_auc: float | None
    val_loss: float | None
    val_auc_per_label: dict[str, float | None]
    test_auc: float | None
    test_loss: float | None
    test_auc_per_label: dict[str, float | None]
    wall_time_s: float
    device: str
    python: str
    threads: int
    # the recipe axes (null for a radiomics run)
    schedule: str | None = None
    transfer: str | None = None
    source: str | None = None
    init: str | None = None
    # test-time augmentation (null and 0 where a run has none)
    val_auc_tta: float | None = None
    test_auc_tta: float | None = None
    test_auc_per_label_tta: dict[str, float | None] | None = None
    tta_views: int = 0
    # training (null for a radiomics run)
    selected_epoch: int | None = None
    epochs: int | None = None
    max_lr: float | None = None
    steps: int | None = None
    images_per_s: float | None = None
    source_checkpoint: str | None = None
    source_val_auc: float | None = None
    torch: str | None = None
    # the precision and memory format of training and evaluation and whether the CPU kernels were on
    # (smalldl.formats: amp, channels_last, cpu_kernels, chosen_by, machine; null for radiomics)
    formats: dict[str, str] | None = None
    # the GPU a training run held a slot of (smalldl.devices: UUID, slot number; null on the CPU)
    gpu: str | None = None
    gpu_slot: int | None = None
    cnn: CnnFields | None = field(default=None)
    radiomics: RadiomicsFields | None = field(default=None)

    def __post_init__(self) -> None:
        if (self.cnn is None) == (self.radiomics is None) or self.family != ("cnn" if self.cnn else "radiomics"):
            raise ValueError(f"run record of family {self.family!r} needs exactly its own part (cnn or radiomics)")

    def to_json(self) -> dict[str, Any]:
        """The metrics.json of this run: every common field and the fields of its family's part."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("cnn", "radiomics")}
        if self.cnn is not None:
            out.update(asdict(self.cnn))
        if self.radiomics is not None:
            part = asdict(self.radiomics)
            choice = part.pop("choice")
            out.update(part)
            if choice is not None:
                out.update(choice)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = "run metrics") -> RunRecord:
        """The record of a metrics.json (as ``to_json`` writes it); an unknown or missing key is an
        InputError naming ``where``."""
        data = dict(data)
        family = data.get("family", "cnn")
        try:
            if family == "cnn":
                part = {"cnn": CnnFields(**_take(data, CnnFields))}
            elif family == "radiomics":
                choice = _take(data, BestChoice) if "chosen_model" in data else None
                rad = _take(data, RadiomicsFields, skip=("choice",))
                part = {"radiomics": RadiomicsFields(**rad, choice=BestChoice(**choice) if choice else None)}
            else:
                raise InputError(f"{where}: unknown family {family!r}")
            common = _take(data, cls, skip=("cnn", "radiomics"))
            if data:
                raise InputError(f"{where}: unknown key(s) {', '.join(sorted(data))}")
            return cls(**common, **part)
        except TypeError as exc:
            raise InputError(f"{where}: not a run record ({exc})") from None

    def chosen_as_best(self, chosen_run: str, candidates_val_auc: dict[str, float | None]) -> RunRecord:
        """This radiomics model's record as the best model of its (task, featureset, n, seed)."""
        if self.radiomics is None:
            raise ValueError("only a radiomics run can be chosen as the best radiomics model")
        choice = BestChoice(self.radiomics.model, chosen_run, dict(candidates_val_auc))
        return replace(self, recipe="best", radiomics=replace(self.radiomics, model="best", choice=choice))


def read_metrics_json(path: str | Path) -> dict[str, Any]:
    """A run's metrics.json as a dict; an unreadable file, or one that is not a JSON object, is one
    InputError naming it."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"run metrics {path} cannot be read ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"run metrics {path}: not a JSON object")
    return data


def _take(data: dict[str, Any], kind: type, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Pop the fields of dataclass ``kind`` (those present) from ``data``."""
    return {f.name: data.pop(f.name) for f in fields(kind) if f.name not in skip and f.name in data}
