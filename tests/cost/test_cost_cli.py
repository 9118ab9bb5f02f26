"""``dawnet flops``: table and JSON output for a package.module:factory model, and clear errors."""

from __future__ import annotations

import json

import pytest
from torch import nn

from dawnet.cli import main


def tiny_crnn():
    """Factory the CLI builds through create_model('test_cost_cli:tiny_crnn')."""
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(2), nn.Linear(16, 5))


def test_json(capsys):
    assert main(["flops", "test_cost_cli:tiny_crnn", "--input", "2,1,4,4", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    conv, lin = 2 * 4 * 1 * 9 * 16, 2 * 4 * 16 * 5
    assert d["macs"] == conv + lin and d["flops"] == 2 * (conv + lin)
    assert d["params"] == 4 * 9 + 4 + 16 * 5 + 5
    assert d["per_module"]["0"]["macs"] == conv


def test_table_and_backward(capsys):
    assert main(["flops", "test_cost_cli:tiny_crnn", "--input", "1,1,4,4", "--backward", "--depth", "1"]) == 0
    out = capsys.readouterr().out
    assert "Cost of Sequential" in out and "Bwd FLOPs" in out and "Conv2d" in out


@pytest.mark.parametrize("argv,message", [
    (["flops", "test_cost_cli:tiny_crnn", "--input", "1,a"], "not a shape"),
    (["flops", "no_such_model_xyz", "--input", "1,1,4,4"], "not registered"),
    (["flops", "test_cost_cli:tiny_crnn", "--input", "1,3,4,4"], "failed on input"),
])
def test_errors(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err
