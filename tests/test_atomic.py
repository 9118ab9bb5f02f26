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


def test_stale_temporaries_of_killed_writes_are_removed_on_the_next_save(tmp_path):
    target = tmp_path / "last.pt"
    save_checkpoint({"format": "dawnet.checkpoint", "i": 0}, target)
    stale = killed_write(target)
    assert stale.startswith(".last.pt.") and (tmp_path / stale).exists()
    other = tmp_path / ".other.pt.1-0123456789ab.tmp.pt"  # another target's temporary is not touched
    other.write_bytes(b"x")
    live = tmp_path / f".last.pt.{os.getpid()}-0123456789ab.tmp.pt"  # a write still running here: kept
    live.write_bytes(b"x")
    save_checkpoint({"format": "dawnet.checkpoint", "i": 1}, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["last.pt", other.name, live.name])
    assert load_checkpoint(target)["i"] == 1
    assert remove_stale_temporaries(target) == []
