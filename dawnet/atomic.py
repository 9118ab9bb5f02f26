"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every write goes to a temporary file in the target's folder (same file system, so the rename is atomic), is
flushed and fsynced, then renamed over the target with ``os.replace``; the folder is fsynced after the rename.
Files are created with mode ``0o666`` minus the process umask, like ``open(path, "w")`` (``tempfile.mkstemp``
would make every file ``0600``). A temporary file is named ``.NAME.PID-RANDOM.tmpSUFFIX``; when a write is
killed it stays behind, and a later write into the same folder removes it once its process is gone (each
process looks at a folder on its first write there and then at most once a minute, so writing thousands of
files into one folder stays linear). ``fsync=False`` skips the flushes to disk for files that are cheap to
remake (data images): readers still never see half a file, but a power cut may lose the newest ones::

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
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

__all__ = ["atomic_write", "atomic_path", "atomic_save", "atomic_write_bytes", "atomic_write_text",
           "remove_stale_temporaries"]


_RESCAN_SECONDS = 60.0
_scanned: dict[str, float] = {}  # folder -> when this process last removed stale temporaries there


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_write(path, fsync=fsync) as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8", *, fsync: bool = True) -> Path:
    """Write ``text`` to ``path`` atomically (no newline translation); returns the path."""
    return atomic_write_bytes(path, text.encode(encoding), fsync=fsync)


def atomic_save(path: str | os.PathLike, write: Callable[[IO[bytes]], object], *, fsync: bool = True) -> Path:
    """Call ``write(f)`` with a binary file object and make the result ``path`` atomically; returns the path.

    For writers that take a file object: ``atomic_save(p, lambda f: torch.save(state, f))``.
    """
    with atomic_write(path, fsync=fsync) as f:
        write(f)
    return Path(path)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None, *,
                 fsync: bool = True) -> Iterator[IO]:
    """A file object (``"wb"``, or ``"w"`` for text) whose content becomes ``path`` when the block ends.

    If the block raises, the target is left as it was and the temporary file is removed.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write opens files for writing: mode 'wb' or 'w', got {mode!r}")
    with _temporary(path, sync_file=False, sync_dir=fsync) as tmp:
        with open(tmp, mode, encoding=(encoding or "utf-8") if mode == "w" else None,
                  newline="" if mode == "w" else None) as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = True) -> Iterator[Path]:
    """A temporary file name (the file exists, empty) that is renamed to ``path`` when the block ends.

    For writers that need a name rather than a file object (matplotlib animations, lmdb, ``np.save``). The
    content is fsynced before the rename. If the block raises, the target is left as it was.
    """
    with _temporary(path, sync_file=fsync, sync_dir=fsync) as tmp:
        yield tmp


@contextlib.contextmanager
def _temporary(path: str | os.PathLike, sync_file: bool, sync_dir: bool) -> Iterator[Path]:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    folder, now = str(target.parent), time.monotonic()
    if now - _scanned.get(folder, -_RESCAN_SECONDS) >= _RESCAN_SECONDS:
        _scanned[folder] = now
        _remove_stale(target.parent, None)
    tmp = _create_temporary(target)
    try:
        yield tmp
        if sync_file:
            _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if sync_dir:
        _fsync_dir(target.parent)


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove temporary files that killed writes of ``path`` left behind (their process is gone); returns them.

    Temporaries of writes still running, in this process or another live one, are kept. (Writes call this
    for their whole folder on their own, see the module doc.)
    """
    target = Path(path)
    return _remove_stale(target.parent, target.name)


def _remove_stale(folder: Path, name: str | None) -> list[Path]:
    """Remove dead processes' temporaries in ``folder``: of target ``name``, or of every target (None)."""
    stem = re.escape(name) if name is not None else r".+"
    pattern = re.compile(rf"\.{stem}\.(\d+)-[0-9a-f]{{12}}\.tmp")
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
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

