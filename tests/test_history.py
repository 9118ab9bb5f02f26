"""History records and their CSV/JSON export."""

import csv
import io
import json

import pytest
import torch

from dawnet.history import History
from toy import loader, make_agent


def test_export_round_trips(tmp_path):
    agent = make_agent()
    agent.fit(loader(32), epochs=2, val=loader(16, shuffle=False), progress=False)
    h = agent.history
    h.to_json(tmp_path / "h.json")
    again = History.from_json(tmp_path / "h.json")
    assert again.steps == h.steps and again.epochs == h.epochs
    rows = list(csv.DictReader(io.StringIO(h.to_csv(tmp_path / "steps.csv"))))
    assert len(rows) == len(h.steps) and float(rows[-1]["loss"]) == pytest.approx(h.steps[-1]["loss"])
    text = h.to_csv(level="epoch")
    assert text.splitlines()[0].split(",")[:3] == ["epoch", "step", "time"]
    assert json.loads(h.to_json())["epochs"][-1]["val_accuracy"] == h.last("val_accuracy", level="epoch")


def test_series_last_and_validation():
    h = History()
    h.log_step(step=1, loss=2.0, lr=0.1)
    h.log_step(step=2, loss=1.0, lr=torch.tensor(0.05))
    assert h.series("loss") == ([1, 2], [2.0, 1.0])
    assert h.last("lr") == pytest.approx(0.05) and h.last("missing", default=-1) == -1
    with pytest.raises(TypeError, match="must be numbers"):
        h.log_step(step=3, loss="high")
    with pytest.raises(ValueError, match="level"):
        h.keys("batch")
    h.truncate(1)
    assert len(h) == 1
