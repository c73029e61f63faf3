"""Hashed, resumable downloads (HTTP Range) and safe archive extraction.

``download`` fetches one URL into ``dest``: bytes go to ``dest.part`` first, an interrupted transfer (cut
connection, killed job) resumes from the bytes already there with an HTTP ``Range`` request, and ``dest``
appears only once its size and checksum match. ``safe_extract`` unpacks a tar or zip archive through a
staging folder and refuses absolute paths, ``..``, links and device files, so an archive cannot write
outside its destination.

Network failures before the first byte arrives are reported at once (``offline_hint`` says what to place
where), never retried for minutes.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import stat
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import TextIO

from smalldl.errors import InputError

CHUNK = 1 << 20
USER_AGENT = "smalldl/0.1 (+https://github.com; resumable dataset download)"
ALGORITHMS = ("md5", "sha1", "sha256")
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


def parse_checksum(text: str, where: str = "checksum") -> tuple[str, str]:
    """``"md5:9e10..."`` -> ("md5", "9e10..."); InputError naming ``where`` when malformed."""
    algo, sep, digest = str(text).partition(":")
    algo, digest = algo.strip().lower(), digest.strip().lower()
    if not sep or algo not in ALGORITHMS or not re.fullmatch(r"[0-9a-f]+", digest):
        raise InputError(f"{where}: {text!r} is not a checksum like 'md5:<hex>' or 'sha256:<hex>'")
    if len(digest) != hashlib.new(algo).digest_size * 2:
        raise InputError(f"{where}: {text!r} has the wrong length for {algo}")
    return algo, digest


def file_digest(path: str | Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def verify_file(path: str | Path, size: int | None = None, checksums: Sequence[str] = ()) -> str | None:
    """Check ``path`` against a size and any one of ``checksums`` (alternatives). Returns the matching one.

    Raises InputError naming the file, what was expected and what was found.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist")
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise InputError(f"{path}: size {actual_size} bytes, expected {size} (incomplete or a different file)")
    if not checksums:
        return None
    parsed = [parse_checksum(c, str(path)) for c in checksums]
    digests: dict[str, str] = {}
    for algo, expected in parsed:
        if algo not in digests:
            digests[algo] = file_digest(path, algo)
        if digests[algo] == expected:
            return f"{algo}:{expected}"
    found = ", ".join(f"{a} {d}" for a, d in digests.items())
    wanted = " or ".join(f"{a} {d}" for a, d in parsed)
    raise InputError(f"{path}: checksum mismatch (expected {wanted}; found {found})")


class _ByteProgress:
    """Plain progress lines for a byte stream: ``download x: 12.0/100.0 MiB (12%) 3.1 MiB/s, eta 28s``."""

    def __init__(self, desc: str, done: int, total: int | None, every: float, out: TextIO | None) -> None:
        self.desc, self.total, self.every = desc, total, every
        self.out = out if out is not None else sys.stderr
        self.start_bytes = self.done = done
        self.start = self.last = time.monotonic()

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.line(now)

    def line(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        mib = 1 << 20
        rate = (self.done - self.start_bytes) / max(now - self.start, 1e-9)
        if self.total:
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            text = (
                f"{self.desc}: {self.done / mib:.1f}/{self.total / mib:.1f} MiB ({100 * self.done / self.total:.0f}%) "
                f"{rate / mib:.1f} MiB/s, eta {eta:.0f}s"
            )
        else:
            text = f"{self.desc}: {self.done / mib:.1f} MiB {rate / mib:.1f} MiB/s"
        print(text, file=self.out, flush=True)


def _content_range_start(header: str | None) -> int | None:
    m = re.match(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)", header or "")
    return int(m.group(1)) if m else None


def download(
    url: str,
    dest: str | Path,
    *,
    size: int | None = None,
    checksums: Sequence[str] = (),
    timeout: float = 30.0,
    retries: int = 5,
    backoff: float = 2.0,
    offline_hint: str = "",
    progress_every: float = 2.0,
    log: TextIO | None = None,
) -> str | None:
    """Download ``url`` to ``dest`` (resuming ``dest.part``), check size and checksum; returns the match.

    A transfer cut short is resumed with ``Range: bytes=<have>-`` up to ``retries`` times. If the server
    cannot be reached at all, InputError at once (with ``offline_hint``). A checksum mismatch removes the
    bad bytes (so the next run starts afresh) and raises InputError naming the file.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    out = log if log is not None else sys.stderr
    hint = f" {offline_hint}" if offline_hint else ""
    attempt = 0
    received_any = False
    while True:
        have = part.stat().st_size if part.exists() else 0
        if size is not None and have > size:
            part.unlink()
            have = 0
        if size is not None and have == size:
            break
        headers = {"User-Agent": USER_AGENT}
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have and size is None:
                break  # the part file already holds the whole resource
            if exc.code in _RETRY_STATUS and attempt < retries:
                attempt += 1
                print(f"download {dest.name}: HTTP {exc.code}, retry {attempt}/{retries}", file=out, flush=True)
                time.sleep(backoff * attempt)
                continue
            raise InputError(
                f"download of {dest.name} from {url} failed: HTTP {exc.code} {exc.reason}.{hint}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if received_any and attempt < retries:
                attempt += 1
                print(f"download {dest.name}: {reason}; retry {attempt}/{retries}", file=out, flush=True)
                time.sleep(backoff * attempt)
                continue
            raise InputError(f"cannot download {dest.name} from {url} ({reason}).{hint}") from None
        with resp:
            status = getattr(resp, "status", 200)
            ctype = resp.headers.get("Content-Type", "") or ""
            if "text/html" in ctype.lower() and not dest.name.lower().endswith((".html", ".htm")):
                raise InputError(
                    f"download of {dest.name} from {url} returned a web page, not the file (the link may have "
                    f"changed or need a browser).{hint}"
                )
            if have and status == 206 and _content_range_start(resp.headers.get("Content-Range")) != have:
                have = 0  # the server answered another range: start again
                mode = "wb"
            elif have and status != 206:
                print(f"download {dest.name}: server ignored the range request, starting again", file=out)
                have = 0
                mode = "wb"
            else:
                mode = "ab" if have else "wb"
            length = resp.headers.get("Content-Length")
            expected_end = have + int(length) if length and length.isdigit() else size
            if have:
                print(f"download {dest.name}: resuming at {have} bytes", file=out, flush=True)
            tracker = _ByteProgress(f"download {dest.name}", have, size or expected_end, progress_every, out)
            got = have
            try:
                with open(part, mode) as fh:
                    while True:
                        block = resp.read(CHUNK)
                        if not block:
                            break
                        fh.write(block)
                        got += len(block)
                        received_any = True
                        tracker.update(len(block))
            except (http.client.IncompleteRead, ConnectionError, TimeoutError, OSError) as exc:
                if attempt >= retries:
                    raise InputError(
                        f"download of {dest.name} from {url} broke off after {got} bytes ({exc}) {retries} times; "
                        "run again to resume"
                    ) from None
                attempt += 1
                print(f"download {dest.name}: cut short at {got} bytes ({exc}); retry {attempt}/{retries}", file=out)
                time.sleep(backoff * attempt)
                continue
            tracker.line()
        if expected_end is not None and got < expected_end:
            if attempt >= retries:
                raise InputError(
                    f"download of {dest.name} from {url} stopped at {got} of {expected_end} bytes {retries} times; "
                    "run again to resume"
                )
            attempt += 1
            print(f"download {dest.name}: cut short at {got}/{expected_end} bytes; retry {attempt}/{retries}", file=out)
            time.sleep(backoff * attempt)
            continue
        break
    try:
        matched = verify_file(part, size, checksums)
    except InputError as exc:
        part.unlink(missing_ok=True)
        raise InputError(f"download of {dest.name} from {url}: {exc}; the bad file was removed") from None
    os.replace(part, dest)
    return matched


# ------------------------------------------------------------------------------------------ extraction


def _check_member_name(archive: Path, name: str) -> PurePosixPath:
    rel = PurePosixPath(name.replace("\\", "/"))
    if rel.is_absolute() or re.match(r"^[A-Za-z]:", name) or ".." in rel.parts:
        raise InputError(f"archive {archive}: member {name!r} would be written outside the destination; refused")
    return rel


def _members_tar(archive: Path, tar: tarfile.TarFile) -> Iterable[tuple[PurePosixPath, tarfile.TarInfo]]:
    for member in tar:
        rel = _check_member_name(archive, member.name)
        if member.issym() or member.islnk():
            raise InputError(f"archive {archive}: member {member.name!r} is a link; refused")
        if not (member.isfile() or member.isdir()):
            raise InputError(f"archive {archive}: member {member.name!r} is not a regular file; refused")
        yield rel, member


def safe_extract(archive: str | Path, dest: str | Path, progress_every: float = 2.0) -> list[str]:
    """Extract a .tar(.gz|.bz2|.xz) or .zip into ``dest``; returns the extracted file names (relative).

    Members go to a staging folder inside ``dest`` and are moved into place only when the whole archive
    has been read, so an unsafe member or a corrupt archive leaves ``dest`` as it was.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    staging = dest / f".extract-{archive.name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    names: list[str] = []
    last = time.monotonic()
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    rel = _check_member_name(archive, info.filename)
                    mode = info.external_attr >> 16
                    if stat.S_ISLNK(mode):
                        raise InputError(f"archive {archive}: member {info.filename!r} is a link; refused")
                    target = staging.joinpath(*rel.parts)
                    if info.is_dir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst, CHUNK)
                    names.append(rel.as_posix())
        else:
            with tarfile.open(archive, "r:*") as tar:
                for rel, member in _members_tar(archive, tar):
                    target = staging.joinpath(*rel.parts)
                    if member.isdir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    src = tar.extractfile(member)
                    if src is None:
                        raise InputError(f"archive {archive}: member {member.name!r} cannot be read")
                    with src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst, CHUNK)
                    names.append(rel.as_posix())
                    if time.monotonic() - last >= progress_every:
                        last = time.monotonic()
                        print(f"extract {archive.name}: {len(names)} files", file=sys.stderr, flush=True)
        root = staging.resolve()
        for name in names:
            src_path = staging / name
            if not src_path.resolve().is_relative_to(root):
                raise InputError(f"archive {archive}: member {name!r} resolves outside the destination; refused")
        for name in names:
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / name, target)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise InputError(f"archive {archive} cannot be extracted ({exc}); is it complete?") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"extract {archive.name}: {len(names)} files", file=sys.stderr, flush=True)
    return names


__all__ = ["download", "file_digest", "parse_checksum", "safe_extract", "verify_file"]
