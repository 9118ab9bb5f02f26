"""``sha256_file``: the hex SHA-256 of a file, read in 1 MiB blocks; the one helper behind font locks, data
manifests and bench data checks."""

from __future__ import annotations

import hashlib
import os

__all__ = ["sha256_file"]


def sha256_file(path: str | os.PathLike) -> str:
    """The hex SHA-256 digest of the file at ``path`` (streamed, so large files need no memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
