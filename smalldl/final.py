"""The final model of a target: what ``results/final/{task}/`` holds and how a raw image is scored by it.

A final model is one or more members (the recommended recipe's runs at the largest size, one per seed;
``members`` in ``model.json``), each ``seed<s>.pt`` ({arch, state, sha256}), and ``model.json``: the
architecture, task type, the names of its outputs, the recipe, the commit of the code that made it, the
temperature applied to its probabilities, and everything needed to preprocess a raw image exactly as the
study's cache did (``preprocess``):

- decoding: ``smalldl.data.cache.read_grey`` (PIL images to 8-bit grey, 16-bit and float min-max scaled;
  DICOM through its modality LUT and VOI window, MONOCHROME1 inverted: ``smalldl.data.dicom``), the size
  checks of ``smalldl.data.limits`` (``max_pixels``, ``min_side``);
- resizing: ``smalldl.data.cache.load_resized`` to the cache's ``width`` x ``height`` (aspect kept, centre
  crop or zero pad in height): the same function the cache job ran, so an image of the study is the same
  bytes here as in the cache;
- evaluation: the centre ``crop``, and the normalisation of the architecture, which lives in the model
  (``smalldl.models.Classifier``: grey copied to three channels, ImageNet's or the lite model's mean and
  std, recorded in ``preprocess.normalisation`` for the reader);
- test-time augmentation as the study evaluated (``tta`` views of ``settings``' flip and rotation, the
  views drawn from ``tta_seed``), used when asked for.

Probabilities are the mean of the members' probabilities, then the temperature (``smalldl.calibration``).
``predict_paths`` scores files in sorted order, chunk by chunk: the same images in the same order give the
same probabilities to the bit (the final model's recorded test AUC is computed through it).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from smalldl.errors import InputError

SPEC_NAME = "model.json"
#: Image files a folder given to ``predict`` is searched for (DICOM also without a suffix: by its magic).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".tif", ".tiff", ".bmp")
#: Images decoded and scored together: the chunks (hence the batches) depend on the image order alone.
CHUNK = 256
#: The settings of evaluation a final model keeps (``smalldl.evaluate.predict_views`` reads them).
EVAL_KEYS = ("crop", "flip", "rotate", "tta", "amp", "channels_last", "batch_size", "eval_batch_size")


def member_name(seed: int) -> str:
    return f"seed{seed}.pt"


def source_commit() -> str:
    """The git commit of the code that runs (``-dirty`` where tracked files differ), or ``unknown``."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=20
        ).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "diff", "--quiet", "HEAD"], timeout=20).returncode != 0
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def output_names(task_type: str, labels: Sequence[str], outputs: int) -> list[str]:
    """The names of a model's outputs: its labels, or ``<label>=<k>`` per class of a multiclass task."""
    if task_type == "multiclass":
        return [f"{labels[0]}={k}" for k in range(outputs)]
    return list(labels)


def preprocess_spec(*, width: int, height: int, crop: int, arch: str, max_pixels: int, min_side: int) -> dict[str, Any]:
    """``model.json``'s ``preprocess``: the cache's size and evaluation's crop, the limits checked on the
    header, and (for the reader) how grey levels, DICOM and normalisation are handled."""
    from smalldl import models

    lite = arch == models.LITE0
    return {
        "width": int(width),
        "height": int(height),
        "crop": int(crop),
        "max_pixels": int(max_pixels),
        "min_side": int(min_side),
        "grey": "8-bit grey; 16-bit and float images min-max scaled; colour converted by PIL's L mode",
        "dicom": "modality LUT, then VOI window; MONOCHROME1 inverted (smalldl.data.dicom)",
        "resize": "bilinear to the width, aspect kept, centre crop or zero pad to the height",
        "normalisation": {
            "scale": "x / 255, grey copied to 3 channels",
            "mean": list(models.LITE_MEAN if lite else models.IMAGENET_MEAN),
            "std": list(models.LITE_STD if lite else models.IMAGENET_STD),
        },
    }


def model_spec(
    *,
    task_name: str,
    task: Mapping[str, Any],
    arch: str,
    recipe: str,
    outputs: int,
    settings: Mapping[str, Any],
    preprocess: Mapping[str, Any],
    tta_seed: int,
    temperature: float = 1.0,
    **extra: Any,
) -> dict[str, Any]:
    """``model.json`` less its members: what ``load`` and ``read_image`` need, and the provenance (the
    recipe, the code's commit; ``extra``: e.g. the ensemble choice and the runs it came from)."""
    return {
        "task": task_name,
        "task_type": task["type"],
        "labels": list(task["labels"]),
        "outputs": output_names(task["type"], task["labels"], outputs),
        "arch": arch,
        "recipe": recipe,
        "commit": source_commit(),
        "settings": {k: settings[k] for k in EVAL_KEYS if k in settings},
        "preprocess": dict(preprocess),
        "tta_seed": int(tta_seed),
        "temperature": float(temperature),
        **extra,
    }


def export(out_dir: str | Path, members: Mapping[int, Mapping[str, Any]], spec: Mapping[str, Any]) -> Path:
    """Write ``members`` ({seed: state_dict}) as ``seed<s>.pt`` and ``spec`` (with ``members``: seed, file,
    SHA-256 of its state) as ``model.json`` into ``out_dir``; returns the spec's path."""
    from smalldl.jobs._shared import file_sha256
    from smalldl.utils import save_torch, write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    listed = []
    for seed, state in members.items():
        path = out / member_name(seed)
        save_torch({"arch": spec["arch"], "state": dict(state)}, path)
        listed.append({"seed": int(seed), "file": path.name, "sha256": file_sha256(path)})
    write_json(out / SPEC_NAME, {**spec, "members": listed})
    return out / SPEC_NAME


@dataclass
class FinalModel:
    """A loaded final model: its spec (``model.json``), the members' networks and the device."""

    spec: dict[str, Any]
    nets: list[Any]
    device: Any

    @property
    def names(self) -> list[str]:
        return list(self.spec["outputs"])

    def probabilities(self, images: np.ndarray, *, tta: bool = False) -> np.ndarray:
        """Probabilities (N x outputs) of uint8 images (N x height x width, as ``read_image`` gives): the
        members' mean, then the temperature."""
        from smalldl.calibration import apply_temperature
        from smalldl.data.arrays import Data
        from smalldl.evaluate import predict_views

        settings = self.settings
        data = Data(images=images, targets=np.zeros((len(images), 1), np.float32))
        views = int(self.spec["settings"].get("tta", 0)) if tta else 0
        probs = []
        for net in self.nets:
            plain, mean = predict_views(
                net,
                data,
                settings,
                device=self.device,
                task_type=self.spec["task_type"],
                tta=views,
                seed=int(self.spec["tta_seed"]),
            )
            probs.append(mean if views else plain)
        prob = np.mean(np.stack(probs), axis=0) if len(probs) > 1 else probs[0]
        return apply_temperature(prob, float(self.spec.get("temperature", 1.0)), self.spec["task_type"])

    @property
    def settings(self) -> dict[str, Any]:
        from smalldl import formats

        return formats.resolve({**self.spec["settings"], "compile": "off"}, self.device)[0]


def load(model_dir: str | Path, device: str = "cpu") -> FinalModel:
    """The final model in ``model_dir`` (``model.json`` and its members, each checked against the SHA-256
    the spec records); InputError naming the file for anything missing or damaged."""
    import torch

    from smalldl import models
    from smalldl.jobs._shared import file_sha256

    folder = Path(model_dir)
    spec_path = folder / SPEC_NAME
    try:
        spec = json.loads(spec_path.read_text())
        members = spec["members"]
    except FileNotFoundError:
        raise InputError(f"{folder} is not a final model: it has no {SPEC_NAME} (results/final/<task>/)") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{spec_path} is not a final model's spec ({exc})") from None
    dev = torch.device(device)
    nets = []
    for member in members:
        path = folder / member["file"]
        if not path.is_file():
            raise InputError(f"final model {folder}: member {path} is missing")
        if file_sha256(path) != member["sha256"]:
            raise InputError(f"final model {folder}: member {path} is not the file {SPEC_NAME} records (SHA-256)")
        obj = models._load_weights(path, "final model member")
        net = models.build(spec["arch"], len(spec["outputs"]))
        net.load_state_dict(obj["state"])
        nets.append(net.to(dev).eval())
    if not nets:
        raise InputError(f"final model {folder} has no members")
    return FinalModel(spec=spec, nets=nets, device=dev)


def read_image(path: str | Path, spec: Mapping[str, Any]) -> np.ndarray:
    """One raw image as the cache holds it (uint8 height x width): ``smalldl.data.cache.load_resized``
    with the study's size and limits; InputError naming the file when it cannot be read."""
    from smalldl.data.cache import load_resized
    from smalldl.data.limits import ImageLimits

    pre = spec["preprocess"]
    limits = ImageLimits(dataset="predict", max_pixels=int(pre["max_pixels"]), min_side=int(pre["min_side"]))
    try:
        return load_resized(str(path), int(pre["width"]), int(pre["height"]), limits)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken file raises what its decoder raises
        raise InputError(f"image {path} cannot be decoded ({type(exc).__name__}: {exc})") from None


def image_paths(inputs: Sequence[str | Path]) -> list[Path]:
    """The images ``inputs`` names, sorted: files as given, and in each folder (recursively) the files
    with an image suffix (``IMAGE_SUFFIXES``) or DICOM's magic."""
    from smalldl.data import dicom

    out: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for f in sorted(path.rglob("*")):
                if (
                    f.is_file()
                    and not f.name.startswith(".")
                    and (f.suffix.lower() in IMAGE_SUFFIXES or (not f.suffix and dicom.is_dicom(f)))
                ):
                    out.append(f)
        elif path.is_file():
            out.append(path)
        else:
            raise InputError(f"{path} is neither an image nor a folder")
    return sorted(dict.fromkeys(out))


def predict_paths(
    model: FinalModel,
    paths: Sequence[str | Path],
    *,
    tta: bool = False,
    warn: Callable[[str], None] | None = None,
    progress: bool = True,
) -> tuple[Any, list[str]]:
    """Score ``paths`` in their order: (a table with ``image`` and ``p_<output>`` per image that could be
    read, the one-line messages of those that could not). Each bad image is reported through ``warn``
    (default: stderr) as it is met, and the rest are still scored."""
    import pandas as pd

    from smalldl.utils import Progress

    warn = warn or (lambda line: print(line, file=sys.stderr, flush=True))
    tracker = Progress(len(paths), desc="predict", unit="img", every=5.0) if progress else None
    rows: list[str] = []
    probs: list[np.ndarray] = []
    errors: list[str] = []
    batch: list[np.ndarray] = []

    def flush() -> None:
        if batch:
            probs.append(model.probabilities(np.stack(batch), tta=tta))
            batch.clear()

    for path in paths:
        try:
            image = read_image(path, model.spec)
        except InputError as exc:
            errors.append(f"skipped: {exc}")
            warn(errors[-1])
        else:
            rows.append(str(path))
            batch.append(image)
            if len(batch) == CHUNK:
                flush()
        if tracker is not None:
            tracker.update()
    flush()
    if tracker is not None:
        tracker.close()
    table = pd.DataFrame({"image": rows})
    prob = np.concatenate(probs) if probs else np.zeros((0, len(model.names)))
    for j, name in enumerate(model.names):
        table[f"p_{name}"] = prob[:, j].astype(np.float64)
    return table, errors
