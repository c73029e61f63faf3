"""Shared helpers of the adapters of datasets on disk (nih, chexpert, mura, folder): a dataset's CSV read as
text, the images a listing names checked, and the ``plan_index`` of an in-place adapter. Here, not in
``smalldl.data.index``, which dispatches to the adapters: an adapter importing the index would be an import
cycle."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from smalldl.errors import InputError


def read_text_csv(csv: str | Path, missing: str | None = None) -> pd.DataFrame:
    """A dataset's CSV read as text ('' for blanks); a missing or unreadable file is one InputError naming
    it (``missing``: the message for a missing file, e.g. naming the config key that points at it)."""
    try:
        return pd.read_csv(csv, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise InputError(missing or f"{csv} does not exist") from None
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{csv} is not a readable CSV: {exc}") from None


def check_listed_images(table: pd.DataFrame, dataset: str, root: str | Path, check_files: bool = True) -> None:
    """No image listed twice and, with check_files, every listed image on disk; else one InputError."""
    dup = table["image_id"].duplicated()
    if dup.any():
        raise InputError(f"dataset {dataset}: image {table['image_id'][dup].iloc[0]!r} is listed twice")
    if check_files:
        for p in table["path"]:
            if not Path(p).is_file():
                raise InputError(f"dataset {dataset}: image {p} (listed in {root}) does not exist")


def unchecked_plan(build_index: Callable[..., pd.DataFrame]) -> Callable[[str, Mapping[str, Any], int], pd.DataFrame]:
    """The ``plan_index`` of an in-place adapter (the registry's interface: smalldl.data.kinds): the index
    its ``build_index(params, dataset=, check_files=)`` will make, the images not looked for (``seed``
    unused: the data is where it is)."""

    def plan_index(dataset: str, params: Mapping[str, Any], seed: int) -> pd.DataFrame:
        """The index the adapter's ``build_index`` will make, images not checked (the registry's interface:
        smalldl.data.kinds)."""
        return build_index(params, dataset=dataset, check_files=False)

    return plan_index
