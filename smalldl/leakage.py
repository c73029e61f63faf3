"""The leak guard: no patient or image a source model was trained or validated on may be in the validation
or test set of a target fine-tuned from it (directly, or through a chain of sources).

A source model that saw a test patient has seen that patient's anatomy, and often the very images and
labels the target is scored on: its transfer results would be optimistic by construction. The split of
each source task drops the patients listed by ``tasks.<name>.exclude_patients_of``; the config check
(``smalldl.config.check_offered_leaks``) refuses a study that offers a source on the same data without it,
and the study gate (rule ``study_gate``, ``gate``) proves from the split tables and the indexes themselves,
before any training job of the study, that nothing got through, and says what to change if it did.

What is "the same data" is decided from the data: two tasks share an image when their index rows point to
the same file (paths resolved, links followed) or to files of the same content (same size, then the same
fingerprint: SHA-256 of the first and last 64 KiB), whatever the dataset entries are called; their patient
ids are compared when the config says they are on the same data (``config.same_data``) or when they share
an image (ids of unrelated datasets name different people).
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from smalldl.errors import InputError

#: The parts of a source task's split its model is trained or validated on, and of a target's split
#: its runs are scored on.
SOURCE_PARTS = ("train", "val")
TARGET_PARTS = ("val", "test")
#: Bytes read from each end of a file for its fingerprint.
FINGERPRINT_BYTES = 1 << 16


@dataclass(frozen=True)
class Link:
    """One source of a chain that was pretrained here: its name, its task, whether the config says that task
    is on the same data as the target (its patient ids are then compared; the data may say so too), and
    whether that task excludes the target's patients."""

    source: str
    task: str
    same_data: bool
    #: whether tasks.<task>.exclude_patients_of lists the target (its split then drops the target's
    #: patients, by their ids)
    excludes_target: bool = False


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


class ImageFiles:
    """What identifies an image file: its resolved path, and where two paths differ, its content (size,
    then a fingerprint of both ends). Each is computed once per file, for every pair the gate checks."""

    def __init__(self) -> None:
        self._real: dict[str, str] = {}
        self._size: dict[str, int | None] = {}
        self._print: dict[str, str | None] = {}
        self.fingerprinted = 0

    def real(self, path: str) -> str:
        if path not in self._real:
            self._real[path] = os.path.realpath(path)
        return self._real[path]

    def size(self, path: str) -> int | None:
        if path not in self._size:
            try:
                self._size[path] = os.stat(path).st_size
            except OSError:  # not on disk (an index built without its files): paths alone decide
                self._size[path] = None
        return self._size[path]

    def fingerprint(self, path: str) -> str | None:
        if path not in self._print:
            size = self.size(path)
            digest = None
            if size is not None:
                try:
                    with open(path, "rb") as fh:
                        h = hashlib.sha256(fh.read(FINGERPRINT_BYTES))
                        if size > FINGERPRINT_BYTES:
                            fh.seek(max(FINGERPRINT_BYTES, size - FINGERPRINT_BYTES))
                            h.update(fh.read())
                    digest = f"{size}:{h.hexdigest()}"
                    self.fingerprinted += 1
                except OSError:
                    digest = None
            self._print[path] = digest
        return self._print[path]

    def shared(self, target_paths: Sequence[str], source_paths: Sequence[str]) -> set[str]:
        """The real paths of the target's files that are also source files: the same file, or a file of
        the same content."""
        target = {self.real(p) for p in target_paths if p}
        source = {self.real(p) for p in source_paths if p}
        found = target & source
        by_size: dict[int, list[str]] = {}
        for p in source - found:
            size = self.size(p)
            if size is not None:
                by_size.setdefault(size, []).append(p)
        for p in sorted(target - found):
            size = self.size(p)
            if size is None or size not in by_size:
                continue
            mine = self.fingerprint(p)
            if mine is not None and any(self.fingerprint(q) == mine for q in by_size[size]):
                found.add(p)
        return found


def check_pair(
    *,
    target: str,
    source: str,
    target_split: pd.DataFrame,
    target_paths: Mapping[str, str],
    links: Sequence[Link],
    link_splits: Mapping[str, pd.DataFrame],
    link_paths: Mapping[str, Mapping[str, str]],
    task_datasets: Mapping[str, str] | None = None,
    files: ImageFiles | None = None,
) -> dict[str, Any]:
    """Check every link of ``source``'s chain against ``target``, by image files and by patients; the
    record of what was checked. ``target_paths`` and ``link_paths[task]``: image_id -> file path (the
    index's).

    Raises InputError naming the source, the target, the shared patients and images, and the keys that
    fix it, at the first link that shares a patient or an image file."""
    files = files or ImageFiles()
    datasets = task_datasets or {}
    target_used = used_part(target_split, TARGET_PARTS)
    target_files = target_used["image_id"].astype(str).map(lambda i: target_paths.get(i, ""))
    checked = []
    for link in links:
        split = link_splits[link.task]
        source_used = used_part(split, SOURCE_PARTS)
        paths = link_paths.get(link.task, {})
        source_files = [paths.get(i, "") for i in source_used["image_id"].astype(str)]
        same_files = files.shared(list(target_files), source_files)
        hit = pd.Series([bool(p) and files.real(p) in same_files for p in target_files], index=target_used.index)
        images = {"images": int(hit.sum()), "test_images": int((hit & (target_used["split"] == "test")).sum())}
        compare_patients = link.same_data or bool(same_files)
        found = (
            shared(target_split, split)
            if compare_patients
            else dict.fromkeys(("patients", "source_images", "target_images", "target_test_images"), 0)
        )
        checked.append({"source": link.source, "task": link.task, "same_data": link.same_data, **found,
                        "shared_files": images["images"]})  # fmt: skip
        if found["patients"] or images["images"]:
            raise InputError(_leak_message(target, source, link, found, images, same_files, datasets))
    return {"target": target, "source": source, "chain": [link.source for link in links], "checked": checked}


def _leak_message(
    target: str,
    source: str,
    link: Link,
    found: Mapping[str, int],
    images: Mapping[str, int],
    same_files: set[str],
    datasets: Mapping[str, str],
) -> str:
    via = "" if link.source == source else f" (source {source} is pretrained from it)"
    restrict = f"sources.{link.source}.targets" + ("" if link.source == source else f" or sources.{source}.targets")
    what = f"shares {found['patients']} patients"
    if images["images"]:
        what += f" and {images['images']} image files ({images['test_images']} test; e.g. {sorted(same_files)[0]})"
    counts = ""
    if found["patients"]:
        counts = (
            f": {found['source_images']} of its training/validation images, {found['target_images']} of the "
            f"target's validation/test images ({found['target_test_images']} test)"
        )
    own, theirs = datasets.get(link.task), datasets.get(target)
    entries = ""
    if own and theirs and own != theirs and not link.same_data:
        entries = (
            f" (datasets {own} and {theirs} hold the same images under two entries: make them one entry or point "
            "both at the same folder, so that their patients can be excluded)"
        )
    if link.task == target:
        fix = f"Fix: list only other targets in {restrict}"
    elif link.excludes_target and own and theirs:
        fix = (
            f"tasks.{link.task}.exclude_patients_of lists {target}, but the patient ids of datasets {own} and "
            f"{theirs} do not match (one without a patient column counts each image as a patient). Fix: give "
            f"both the same patient ids, or list only other targets in {restrict}"
        )
    else:
        fix = (
            f"Fix: add {target} to tasks.{link.task}.exclude_patients_of{entries}, or list only other targets in "
            f"{restrict}"
        )
    return (
        f"test leakage: source {link.source}{via} was trained and validated on task {link.task}, which {what} "
        f"with the validation/test set of target {target}{counts}. {fix}"
    )


def gate(
    *,
    pairs: Sequence[Mapping[str, Any]],
    splits: Mapping[str, pd.DataFrame],
    paths: Mapping[str, Mapping[str, str]],
    task_datasets: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The study gate: ``check_pair`` for every (target, source chain) pair of the study
    (``config.gate_pairs``), on the split tables (``splits``: task -> table) and the indexes' files
    (``paths``: task -> image_id -> path). Every leak is printed; the first is raised (InputError), with
    how many other pairs leak."""
    files = ImageFiles()
    records, leaks = [], []
    for pair in pairs:
        links = [Link(**link) for link in pair["links"]]
        try:
            records.append(
                check_pair(
                    target=pair["target"],
                    source=pair["source"],
                    target_split=splits[pair["target"]],
                    target_paths=paths[pair["target"]],
                    links=links,
                    link_splits={link.task: splits[link.task] for link in links},
                    link_paths={link.task: paths[link.task] for link in links},
                    task_datasets=task_datasets,
                    files=files,
                )  # fmt: skip
            )
        except InputError as exc:
            leaks.append(str(exc))
            print(f"ERROR: {exc}", file=sys.stderr)
    if leaks:
        more = f" (and {len(leaks) - 1} more leaking pairs, each in the log)" if len(leaks) > 1 else ""
        raise InputError(f"{leaks[0]}{more}")
    return {"pairs": records, "fingerprinted_files": files.fingerprinted}
