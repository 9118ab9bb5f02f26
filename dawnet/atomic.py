"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every write goes to a temporary file in the target's folder (same file system, so the rename is atomic), is
flushed and fsynced, then renamed over the target with ``os.replace``; the folder is fsynced after the rename.
Files are created with mode ``0o666`` minus the process umask, like ``open(path, "w")`` (``tempfile.mkstemp``
would make every file ``0600``). A temporary file is named ``.NAME.PID-RANDOM.tmpSUFFIX``; when a write is
killed it stays behind, and the next write of the same target removes it once its process is gone::

    atomic_write_text("run/summary.json", text)
    atomic_save("run/last.pt", lambda f: torch.save(state, f))
    with atomic_write("fig.png") as f:       # a binary file object; the suffix is kept for PIL and friends
        image.save(f, format="PNG")
    with atomic_path("anim.gif") as tmp:     # for writers that need a file name
        animation.save(tmp)
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

__all__ = ["atomic_write", "atomic_path", "atomic_save", "atomic_write_bytes", "atomic_write_text",
           "remove_stale_temporaries"]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_write(path) as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (no newline translation); returns the path."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_save(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> Path:
    """Call ``write(f)`` with a binary file object and make the result ``path`` atomically; returns the path.

    For writers that take a file object: ``atomic_save(p, lambda f: torch.save(state, f))``.
    """
    with atomic_write(path) as f:
        write(f)
    return Path(path)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """A file object (``"wb"``, or ``"w"`` for text) whose content becomes ``path`` when the block ends.

    If the block raises, the target is left as it was and the temporary file is removed.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write opens files for writing: mode 'wb' or 'w', got {mode!r}")
    with _temporary(path, sync=False) as tmp:
        with open(tmp, mode, encoding=(encoding or "utf-8") if mode == "w" else None,
                  newline="" if mode == "w" else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file name (the file exists, empty) that is renamed to ``path`` when the block ends.

    For writers that need a name rather than a file object (matplotlib animations, lmdb, ``np.save``). The
    content is fsynced before the rename. If the block raises, the target is left as it was.
    """
    with _temporary(path, sync=True) as tmp:
        yield tmp


@contextlib.contextmanager
def _temporary(path: str | os.PathLike, sync: bool) -> Iterator[Path]:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    tmp = _create_temporary(target)
    try:
        yield tmp
        if sync:
            _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(target.parent)


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove temporary files that killed writes of ``path`` left behind (their process is gone); returns them.

    Temporaries of writes still running, in this process or another live one, are kept.
    """
    target = Path(path)
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(\d+)-[0-9a-f]{{12}}\.tmp")
    removed = []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return removed
    for entry in entries:
        m = pattern.match(entry.name)
        if m is None or _alive(int(m.group(1))):
            continue
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def _create_temporary(target: Path) -> Path:
    # os.open applies the umask to 0o666, as open() does; O_EXCL makes the name ours alone.
    for _ in range(100):
        tmp = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(6)}.tmp{target.suffix}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"could not create a temporary file beside {target}")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, owned by someone else (or cannot tell): keep its file
    return True


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

