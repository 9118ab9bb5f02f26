"""Exact resume: fit(N), save, load in a fresh process, fit(N+M) == fit(N+M) uninterrupted, bitwise."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent


def run(mode: str, path: Path, steps: int) -> dict:
    out = subprocess.run([sys.executable, str(HERE / "resume_script.py"), mode, str(path), str(steps)],
                         capture_output=True, text=True, cwd=HERE, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_resume_mid_epoch_in_a_fresh_process_is_bitwise_exact(tmp_path):
    full = run("fresh", tmp_path / "full.pt", 30)
    first = run("fresh", tmp_path / "resumed.pt", 17)  # 17 = one epoch of 12 batches + 5: mid-epoch
    assert (first["epoch"], first["batch_in_epoch"]) == (1, 5)
    resumed = run("resume", tmp_path / "resumed.pt", 30)
    assert resumed["losses"] == full["losses"]  # the history holds all 30 steps, the first 17 from the checkpoint
    assert resumed["lrs"] == full["lrs"]
    a = torch.load(tmp_path / "full.pt", weights_only=True)["model"]["state_dict"]
    b = torch.load(tmp_path / "resumed.pt", weights_only=True)["model"]["state_dict"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
