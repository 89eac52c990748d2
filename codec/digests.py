"""File digests read in one pass, for the model manifest (sha256 and git's blob id) and the batch driver's resume
records. Without torch: the batch driver's parent process imports this and nothing heavy."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable

CHUNK = 1 << 20  # files are read (and models downloaded) in blocks of 1 MiB


def file_digests(file: Path, git_blob: bool = False,
                 progress: Callable[[int], Any] | None = None) -> tuple[str, str | None]:
    """(sha256, git blob id or None) of `file`, read once."""
    h = hashlib.sha256()
    blob = None
    if git_blob:
        blob = hashlib.sha1()
        blob.update(b"blob %d\0" % Path(file).stat().st_size)
    with open(file, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
            if blob is not None:
                blob.update(block)
            if progress:
                progress(len(block))
    return h.hexdigest(), (blob.hexdigest() if blob is not None else None)


def sha256_of(file: Path, progress: Callable[[int], Any] | None = None) -> str:
    return file_digests(file, progress=progress)[0]


def git_blob_of(file: Path) -> str:
    """git's blob id of `file` (what `git hash-object FILE` prints)."""
    return file_digests(file, git_blob=True)[1]
