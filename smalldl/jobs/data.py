"""rules/data.smk: raw data -> resources/index/{dataset}.parquet -> resources/cache/{dataset}/w{W}.npy."""

from __future__ import annotations

import importlib
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from smalldl.data import cache as cache_mod
from smalldl.data import kinds
from smalldl.data.limits import DEFAULT_MAX_PIXELS, DEFAULT_MIN_SIDE, ImageLimits
from smalldl.errors import InputError
from smalldl.utils import read_table, write_parquet


def generate_synthetic(*, dataset: Mapping[str, Any], out_dir: str | Path, seed: int, workers: int = 1) -> None:
    """Write a synthetic dataset (PNG files + index.csv) of spec ``dataset`` into ``out_dir``, all or
    nothing."""
    kind = kinds.kind(dataset["kind"], "datasets.*.kind")
    if not kind.synthetic:
        raise InputError(f"datasets.*: only synthetic kinds are generated (kind {kind.name})")
    module = importlib.import_module(kind.adapter)
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    kwargs = dict(dataset.get("params") or {})
    for key in ("images_per_patient", "images_per_study"):
        if key in kwargs:
            kwargs[key] = tuple(kwargs[key])
    try:
        module.generate(tmp, seed=seed, workers=workers, **kwargs)
    except (TypeError, ValueError) as exc:
        raise InputError(f"datasets.*.params for kind {kind.name}: {exc}") from None
    finally:
        if not (tmp / "index.csv").is_file():
            shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)


def fetch_nih(
    *,
    dataset_name: str,
    dataset: Mapping[str, Any],
    out_json: str | Path,
    retries: int | None = None,
    backoff: float = 2.0,
) -> dict[str, Any]:
    """Download a fetched kind's data (ChestX-ray14) into resources/raw/{dataset}/ or verify a local copy;
    record where."""
    kind = kinds.kind(dataset["kind"], f"datasets.{dataset_name}.kind")
    if kind.raw != "fetch":
        fetched = ", ".join(kinds.names(raw="fetch"))
        raise InputError(f"datasets.{dataset_name}: only kind {fetched} is fetched (kind {kind.name})")
    params = dict(dataset.get("params") or {})
    return importlib.import_module(kind.adapter).fetch(
        dataset_name,
        params,
        Path(out_json).parent,
        out_json,
        retries=int(params.get("retries", 5)) if retries is None else retries,
        backoff=backoff,
    )


def index(
    *,
    dataset_name: str,
    dataset: Mapping[str, Any],
    out_parquet: str | Path,
    raw: str | Path | None = None,
    fetched: str | Path | None = None,
    check_files: bool = True,
) -> pd.DataFrame:
    """The uniform index table of any dataset kind (local copies are indexed in place), and the manifest of
    its images (``resources/index/<dataset>.files.tsv``: path, size, mtime_ns; smalldl.data.manifest)."""
    from smalldl.data import manifest
    from smalldl.data.index import build_index

    table = build_index(dataset_name, dataset, raw=raw, fetched=fetched, check_files=check_files)
    manifest.write_manifest(table["path"].astype(str), manifest.manifest_path(out_parquet))
    write_parquet(table, out_parquet)
    return table


def cache(
    *,
    index_parquet: str | Path,
    out_npy: str | Path,
    out_meta: str | Path,
    width: int,
    aspect: float | None,
    workers: int = 1,
    dataset_name: str = "<name>",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
) -> dict[str, Any]:
    """Decode and resize every indexed image once into a uint8 memmap; an image over ``max_pixels``
    (``datasets.<dataset_name>.max_pixels``) or with a side under ``min_side`` (``preprocess.min_side``)
    stops it, named."""
    meta = cache_mod.build_cache(
        read_table(index_parquet),
        out_npy,
        out_meta,
        width=width,
        aspect=aspect,
        workers=workers,
        limits=ImageLimits(dataset=dataset_name, max_pixels=max_pixels, min_side=min_side),
    )
    print(f"cache: {meta['n']} images of {meta['height']}x{meta['width']}", file=sys.stderr)
    return meta
