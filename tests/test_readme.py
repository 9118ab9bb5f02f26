"""The README's examples run as written: every Python block, and every shell command that runs on smoke data.

Python blocks run in order, in one fresh interpreter, in an empty folder, after ``PREAMBLE``: the few things the
text leaves to the reader (data loaders, a test batch, a digit image, line images and a recognizer checkpoint),
all small and random, so the calls themselves are the README's, unchanged. A traceback names the README line.

Shell commands are the lines of ``bash`` blocks and the ``dawnet ...`` commands quoted in the prose. Each is run
on smoke data: spec names get ``:smoke``, ``--steps N`` becomes ``--steps 2``, and the placeholders the text uses
(CKPT, RUN, DIR, DATA, ...) stand for what the earlier commands built. The few that cannot run in a minute (the
cpu and full benchmark, ``make``, a server) are listed in ``NOT_RUN`` with the reason; a command that is neither
run nor listed fails the test, so a new README command is tested from the day it is written.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

# What the README leaves to the reader. The Agent section trains a small CNN on 28x28 digits; the diagnosis
# sections use a recognizer (runs/crnn/best.pt, what `dawnet train crnn ... --out runs/crnn` writes) and lines
# of height 32: `x`, `a`, `b` are single lines, `loader` yields line batches.
PREAMBLE = """\
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

import dawnet
import dawnet.ocr.models
from dawnet.ocr.agents import CTCAgent
from dawnet.ocr.charset import Charset

torch.manual_seed(0)
_digits = TensorDataset(torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,)))
train_loader = DataLoader(_digits, batch_size=16, shuffle=True)
val_loader = DataLoader(_digits, batch_size=32)
x_test = torch.rand(8, 1, 28, 28)
Image.fromarray((np.random.default_rng(0).random((28, 28)) * 255).astype(np.uint8)).save("digit.png")

_charset = Charset("abcdefghijklmnopqrstuvwxyz ")
_crnn = dawnet.create_model("crnn", num_classes=_charset.num_ctc_classes)
CTCAgent(_crnn, torch.optim.AdamW(_crnn.parameters()), charset=_charset, device="cpu").save("runs/crnn/best.pt")
x, a, b = torch.rand(1, 1, 32, 128), torch.rand(1, 1, 32, 128), torch.rand(1, 1, 32, 128)
loader = DataLoader(TensorDataset(torch.rand(8, 1, 32, 128)), batch_size=4)
"""

# The driver: run each block with its README line numbers, so a traceback points into README.md.
DRIVER = """\
import json, sys
ns = {"__name__": "__main__"}
exec(compile(sys.argv[2], "readme-preamble", "exec"), ns)
for line, source in json.load(open(sys.argv[1])):
    print(f"README block at line {line}", flush=True)
    exec(compile("\\n" * (line - 1) + source, "README.md", "exec"), ns)
"""


def blocks(language: str) -> list[tuple[int, str]]:
    """``(first line, source)`` of every fenced block in README.md whose info string is ``language``."""
    text = README.read_text()
    found = []
    for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.M | re.S):
        if m.group(1) == language:
            found.append((text[:m.start(2)].count("\n") + 1, m.group(2)))
    return found


def test_the_readme_has_the_blocks_this_file_runs():
    assert len(blocks("python")) == 5
    assert len(blocks("bash")) == 3
    assert {lang for lang in re.findall(r"^```(\w*)$", README.read_text(), re.M)} <= {"python", "bash", ""}


@pytest.mark.slow  # trains a small CNN for 1,000 steps, runs an LR range test, a 512-step feature visualization
def test_every_python_block_runs_as_written(tmp_path):
    (tmp_path / "blocks.json").write_text(json.dumps(blocks("python")))
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(README.parent)}
    out = subprocess.run([sys.executable, "-c", DRIVER, str(tmp_path / "blocks.json"), PREAMBLE], cwd=tmp_path,
                         capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-6000:]
    assert out.stdout.count("README block at line") == 5


# -- shell commands --------------------------------------------------------------------------------------------

# Commands that are not run, each with the reason (a prefix covers every command that starts with it).
NOT_RUN = {
    "make bench": "sets up the venv and runs the 20-minute cpu benchmark",
    "make test": "runs this test suite",
    "torchrun": "needs a user's training script and several processes",
    "pip install": "installs packages",
    ".venv/bin/python benchmarks/": "measurements that take minutes each; their numbers are what the README quotes",
    "bench_recipes.py": "benchmarks/bench_recipes.py runs of 5-10 minutes each (the table's measurements)",
    "dawnet bench --profile full": "the full benchmark, for GPUs (an hour)",
    "dawnet bench --model": "needs the reader's own model package (mypkg); the smoke run covers the same code",
    "dawnet inspect": "starts a web server that runs until interrupted (tests/inspector drives it)",
    "dawnet visualize CKPT --read": "optimizes a line for 1,000 steps (minutes on a CPU), and a model trained for 2 "
                                    "steps never reads the text, so it exits 1 (tests/diagnose run it briefly)",
}
# `dawnet bench` alone is the 20-minute cpu profile; a quoted `dawnet bench` in the prose names the command.
NOT_RUN_EXACT = {"dawnet bench": "the 20-minute cpu profile (the smoke profile below runs every stage)"}

# How a README command becomes a smoke-data command: the placeholders stand for what earlier commands built.
PLACEHOLDERS = [
    (r"\bRUN/models/", "runs/bench-smoke/models/"),      # a bench run's folder
    (r"\bDATA/", "runs/bench-data/"),                    # the bench's data folder
    (r"\bRUN\b", "runs/digits"),                         # a `dawnet train ... --out RUN` folder
    (r"\bDIR\b", "data/digits-v1"),                      # a `dawnet data build digits-v1 --out DIR` folder
    (r"\bCKPT\b", "runs/crnn/best.pt"),
    (r"runs/bench-cpu\b", "runs/bench-smoke"),
    (r"-bench-cpu\b", "-bench-smoke"),
    (r"\brun/crnn\.pt\b", "runs/crnn/best.pt"),
    (r"\bruns/mine/", "runs/bench-smoke/"),  # the --model run is not made: compare sets the smoke run beside itself
]


def readme_commands() -> list[str]:
    """Every shell command of README.md: the lines of its bash blocks and the commands quoted in its prose."""
    text = README.read_text()
    commands = [line.split("  #")[0].strip() for _, block in blocks("bash") for line in block.splitlines()]
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    for m in re.finditer(r"`([^`]+)`", prose):
        span = " ".join(m.group(1).split())
        if span.startswith(("dawnet ", ".venv/bin/python ", "make ", "torchrun ", "pip ", "bench_recipes.py ")):
            commands.append(span)
    return list(dict.fromkeys(c for c in commands if c))  # in README order, each once


def not_run_reason(command: str) -> str | None:
    if command in NOT_RUN_EXACT:
        return NOT_RUN_EXACT[command]
    return next((why for prefix, why in NOT_RUN.items() if command.startswith(prefix)), None)


def smoke_version(command: str) -> str:
    """``command`` as it runs on smoke data: spec names get ':smoke', ``--steps N`` becomes 2, optional
    ``[--flag]`` parts are given, placeholders point at what the earlier commands built."""
    for pattern, value in PLACEHOLDERS:
        command = re.sub(pattern, value, command)
    command = re.sub(r"\[(--[\w-]+)\]", r"\1", command)
    command = re.sub(r"--steps \d+", "--steps 2", command)
    command = re.sub(r"(?<![\w/.:-])(hw-lines-v1|digits-v1|pages-v1)(?![\w/.:-])", r"\1:smoke", command)
    return command


def _phase(command: str) -> int:
    """Commands that build what others read run first: data, then training, then the smoke benchmark."""
    if command.startswith("dawnet data build"):
        return 0
    if command.startswith("dawnet train"):
        return 1
    if command.startswith("dawnet bench --profile smoke"):
        return 2
    return 3


def test_every_readme_command_is_run_or_says_why_not():
    commands = readme_commands()
    assert "dawnet data list" in commands and "dawnet eval RUN/best.pt --data DIR --json" in commands
    run = [c for c in commands if not_run_reason(c) is None]
    assert all(c.startswith("dawnet ") for c in run), [c for c in run if not c.startswith("dawnet ")]
    assert len(run) >= 20
    assert smoke_version("dawnet train crnn --data hw-lines-v1 --steps 20000 --out runs/crnn") == (
        "dawnet train crnn --data hw-lines-v1:smoke --steps 2 --out runs/crnn")
    paths = "dawnet data show data/hw-lines-v1 --split test"
    assert smoke_version(paths) == paths  # a folder named like a spec is a path, not a spec
    assert smoke_version("dawnet eval RUN/models/crnn.pt --data DATA/digits-v1-bench-cpu/test --beam 6") == (
        "dawnet eval runs/bench-smoke/models/crnn.pt --data runs/bench-data/digits-v1-bench-smoke/test --beam 6")


@pytest.mark.slow  # builds smoke data, trains for 2 steps, runs the smoke benchmark and every command on them
def test_every_readme_command_runs_on_smoke_data(tmp_path):
    from PIL import Image, ImageDraw

    line = Image.new("L", (200, 40), 255)
    ImageDraw.Draw(line).text((6, 12), "hello world", fill=0)
    line.save(tmp_path / "line.png")
    page = Image.new("L", (400, 300), 255)
    for y in (40, 120, 200):
        ImageDraw.Draw(page).text((20, y), "a line of text on a page", fill=0)
    page.save(tmp_path / "page.png")
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(README.parent)}
    commands = sorted((smoke_version(c) for c in readme_commands() if not_run_reason(c) is None), key=_phase)
    failures = []
    for command in commands:
        argv = shlex.split(command)
        out = subprocess.run([sys.executable, "-m", "dawnet.cli", *argv[1:]], cwd=tmp_path, capture_output=True,
                             text=True, env=env, timeout=600)
        if out.returncode != 0:
            failures.append(f"{command}: exit {out.returncode}: {out.stderr.strip()[-600:]}")
        elif "--json" in argv:
            try:
                json.loads(out.stdout)  # exactly one JSON document
            except ValueError as e:
                failures.append(f"{command}: --json output is not one JSON document ({e}): {out.stdout[-300:]}")
    assert failures == [], "\n".join(failures)
