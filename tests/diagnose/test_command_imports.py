"""`dawnet diagnose`, `visualize`, `inspect` and `flops` are cheap to import: building their parsers (what
`dawnet --help` does) imports no torch, matplotlib, numpy, PIL or dawnet library module; `run` imports those."""

import json
import subprocess
import sys

SCRIPT = r"""
import argparse, json, sys
import dawnet.commands  # what every command pays anyway: the dawnet package itself
before = set(sys.modules)
from dawnet.commands import diagnose, flops, inspect, visualize
parser = argparse.ArgumentParser()
sub = parser.add_subparsers()
for command in (diagnose, visualize, inspect, flops):
    command.register(sub)
heavy = ("torch", "matplotlib", "numpy", "PIL", "starlette", "uvicorn", "tqdm", "dawnet.diagnose",
         "dawnet.inspector", "dawnet.cost", "dawnet.ocr", "dawnet.agent", "dawnet.images", "dawnet.atomic")
new = set(sys.modules) - before
print(json.dumps(sorted(n for n in new if n in heavy or n.startswith(tuple(h + "." for h in heavy)))))
"""


def test_command_modules_import_nothing_heavy_at_import_or_register_time():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []
