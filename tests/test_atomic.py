"""dawnet.atomic: whole files or none, the process umask, and stale temporaries of killed writes removed."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from dawnet.atomic import (
    atomic_path,
    atomic_save,
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    remove_stale_temporaries,
)
from dawnet.checkpoint import load_checkpoint, save_checkpoint


@pytest.fixture
def umask():
    def set_umask(mask):
        os.umask(mask)

    before = os.umask(0o022)
    os.umask(before)
    yield set_umask
    os.umask(before)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_get_the_process_umask(tmp_path, umask, mask, mode):
    umask(mask)
    atomic_write_text(tmp_path / "a.txt", "hello")
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    save_checkpoint({"format": "dawnet.checkpoint", "x": 1}, tmp_path / "c.pt")
    for name in ("a.txt", "b.bin", "c.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name
    assert (tmp_path / "a.txt").read_text() == "hello" and (tmp_path / "b.bin").read_bytes() == b"\x00\x01"


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path):
    target = tmp_path / "state.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(target, "w") as f:
            f.write("new, half written")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    with pytest.raises(ValueError, match="mode 'wb' or 'w'"):
        with atomic_write(target, "a"):
            pass


def test_writers_that_need_a_file_object_or_a_name(tmp_path):
    atomic_save(tmp_path / "t.pt", lambda f: torch.save({"w": torch.arange(3)}, f))
    assert torch.equal(torch.load(tmp_path / "t.pt", weights_only=True)["w"], torch.arange(3))
    with atomic_path(tmp_path / "plot.png") as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".png" and tmp.exists()  # formats are read from suffixes
        tmp.write_bytes(b"png bytes")
    assert (tmp_path / "plot.png").read_bytes() == b"png bytes"
    with atomic_write(tmp_path / "nested" / "deeper" / "x.txt", "w") as f:  # folders are made
        f.write("line\r\n")
    assert (tmp_path / "nested" / "deeper" / "x.txt").read_bytes() == b"line\r\n"  # no newline translation


def killed_write(target) -> str:
    """Start a process that opens an atomic write of ``target``, then SIGKILL it; returns its temporary's name."""
    script = textwrap.dedent(f"""
        import os, sys
        from dawnet.atomic import atomic_write
        with atomic_write({str(target)!r}) as f:
            f.write(b"partial")
            f.flush()
            print(os.listdir({str(target.parent)!r}), flush=True)
            os.kill(os.getpid(), 9)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == -9
    return [n for n in ast.literal_eval(out.stdout) if n.endswith(".tmp.pt")][0]


def save_in_a_new_process(target, i: int) -> None:
    script = (f"from dawnet.checkpoint import save_checkpoint; "
              f"save_checkpoint({{'format': 'dawnet.checkpoint', 'i': {i}}}, {str(target)!r})")
    subprocess.run([sys.executable, "-c", script], check=True)


def test_stale_temporaries_of_killed_writes_are_removed_on_the_next_save(tmp_path):
    target = tmp_path / "last.pt"
    save_checkpoint({"format": "dawnet.checkpoint", "i": 0}, target)
    stale = killed_write(target)
    assert stale.startswith(".last.pt.") and (tmp_path / stale).exists()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    other = tmp_path / f".other.pt.{int(gone.stdout)}-0123456789ab.tmp.pt"  # another target's, its process gone
    other.write_bytes(b"x")
    live = tmp_path / f".last.pt.{os.getpid()}-0123456789ab.tmp.pt"  # a write still running here: kept
    live.write_bytes(b"x")
    assert remove_stale_temporaries(target) == [tmp_path / stale]  # this target's only
    (tmp_path / stale).write_bytes(b"again")
    save_in_a_new_process(target, 1)  # the resumed run's first save cleans the folder
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["last.pt", live.name])
    assert load_checkpoint(target)["i"] == 1


def test_many_writes_into_one_folder_scan_it_once(tmp_path, monkeypatch):
    from dawnet import atomic

    scans = []
    real = atomic._remove_stale
    monkeypatch.setattr(atomic, "_remove_stale", lambda folder, name: scans.append(folder) or real(folder, name))
    for i in range(200):
        atomic_write_bytes(tmp_path / f"{i}.png", b"x", fsync=False)
    assert scans == [tmp_path] and len(list(tmp_path.iterdir())) == 200


def test_fsync_false_skips_the_flushes(tmp_path, monkeypatch):
    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(fd) or real(fd))
    atomic_write_bytes(tmp_path / "a.png", b"png", fsync=False)
    atomic_write_text(tmp_path / "b.txt", "text", fsync=False)
    assert calls == [] and (tmp_path / "a.png").read_bytes() == b"png" and (tmp_path / "b.txt").read_text() == "text"
    atomic_write_bytes(tmp_path / "c.bin", b"c")
    assert len(calls) == 2  # the file, then its folder
