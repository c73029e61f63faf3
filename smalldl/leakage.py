"""The leak guard: no patient whose images a source model was trained or validated on may be in the
validation or test set of a target fine-tuned from it (directly, or through a chain of sources).

A source model that saw a test patient has seen that patient's anatomy, and often the very images and
labels the target is scored on: its transfer results would be optimistic by construction. The split of
each source task already drops the patients listed by ``tasks.<name>.exclude_patients_of``; this module
proves, from the split tables themselves, that nothing got through, and says what to change if it did.

Patient ids are compared only between tasks on the same data (the same dataset, or datasets with the
same kind and params): ids of different datasets name different people.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from smalldl.errors import InputError

#: The parts of a source task's split its model is trained or validated on, and of a target's split
#: its runs are scored on.
SOURCE_PARTS = ("train", "val")
TARGET_PARTS = ("val", "test")


@dataclass(frozen=True)
class Link:
    """One source of a chain that was pretrained here: its name, its task, and whether that task is on
    the same data as the target (only then can they share patients)."""

    source: str
    task: str
    same_data: bool


def used_part(split: pd.DataFrame, parts: Sequence[str]) -> pd.DataFrame:
    """The selected rows of ``parts`` of a split table (every row a model of that part sees)."""
    return split[split["split"].isin(parts) & split["selected"]]


def shared(target_split: pd.DataFrame, source_split: pd.DataFrame) -> dict[str, int]:
    """Patients in both the target's validation/test rows and the source's training/validation rows, with
    the images of each side that belong to them."""
    target = used_part(target_split, TARGET_PARTS)
    source = used_part(source_split, SOURCE_PARTS)
    patients = set(target["patient_id"].astype(str)) & set(source["patient_id"].astype(str))
    return {
        "patients": len(patients),
        "source_images": int(source["patient_id"].astype(str).isin(patients).sum()),
        "target_images": int(target["patient_id"].astype(str).isin(patients).sum()),
        "target_test_images": int(target.loc[target["split"] == "test", "patient_id"].astype(str).isin(patients).sum()),
    }


def check(
    *,
    target: str,
    source: str,
    target_split: pd.DataFrame,
    links: Sequence[Link],
    link_splits: Mapping[str, pd.DataFrame],
) -> dict[str, Any]:
    """Check every link of ``source``'s chain against ``target``; the record of what was checked.

    Raises InputError naming the source, the target, the shared patients and images, and the keys that
    fix it, at the first link that shares a patient."""
    checked = []
    for link in links:
        if not link.same_data:
            checked.append({"source": link.source, "task": link.task, "same_data": False})
            continue
        found = shared(target_split, link_splits[link.task])
        checked.append({"source": link.source, "task": link.task, "same_data": True, **found})
        if found["patients"]:
            via = "" if link.source == source else f" (source {source} is pretrained from it)"
            raise InputError(
                f"test leakage: source {link.source}{via} was trained and validated on task {link.task}, which "
                f"shares {found['patients']} patients with the validation/test set of target {target}: "
                f"{found['source_images']} of its training/validation images, {found['target_images']} of the "
                f"target's validation/test images ({found['target_test_images']} test). Fix: add {target} to "
                f"tasks.{link.task}.exclude_patients_of, or list only other targets in sources.{link.source}.targets"
            )
    return {"target": target, "source": source, "chain": [link.source for link in links], "checked": checked}
