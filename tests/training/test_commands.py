"""`dawnet history` and `dawnet lr-find` end to end, in process."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from torch import nn

import dawnet
from dawnet.cli import main
from dawnet.history import History
from dawnet.training import SnapshotAtMinimum, SuperConvergence


@dawnet.register_model("tests_training_digits_cnn")
class DigitsCNN(nn.Module):
    def __init__(self, width: int = 8):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                 nn.MaxPool2d(2), nn.Flatten(), nn.Linear(width * 16, 10))

    def forward(self, x):
        return self.net(x)


def _agent(tmp_path=None):
    torch.manual_seed(0)
    model = DigitsCNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    callbacks = [SnapshotAtMinimum(tmp_path / "snaps")] if tmp_path else []
    return dawnet.Agent(model, opt, loss=nn.CrossEntropyLoss(), metrics=["accuracy"], device="cpu",
                        schedule=SuperConvergence(opt, 0.01, 0.1, step_size=3, cycles=2), callbacks=callbacks)


def _batches(n=8):
    g = torch.Generator().manual_seed(0)
    return [(torch.rand(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(n)]


@pytest.mark.slow  # fits, renders a PNG
def test_history_plot_and_exports(tmp_path, capsys):
    agent = _agent(tmp_path)
    agent.fit(_batches(), steps=16, val=_batches(2), progress=False)
    path = agent.save(tmp_path / "run.pt")
    png, csv, js = tmp_path / "h.png", tmp_path / "h.csv", tmp_path / "h.json"
    assert main(["history", str(path), "--out", str(png), "--csv", str(csv), "--json", str(js)]) == 0
    with Image.open(png) as im:
        assert im.size[0] > 500 and im.size[1] > 300
    assert len(csv.read_text().strip().splitlines()) == 1 + 16
    assert History.from_json(js).steps == agent.history.steps
    assert main(["history", str(path), "--csv", str(csv), "--level", "epoch"]) == 0
    assert len(csv.read_text().strip().splitlines()) == 1 + 2
    capsys.readouterr()
    assert main(["history", str(path)]) == 0
    assert "16 steps, 2 epochs" in capsys.readouterr().out


def test_history_errors(tmp_path, capsys):
    missing = tmp_path / "missing.pt"
    assert main(["history", str(missing)]) == 2
    assert capsys.readouterr().err == (f"dawnet: error: {missing} does not exist: give the path of a checkpoint "
                                       "written by Agent.save\n")
    agent = _agent()
    agent.fit(_batches(), steps=3, progress=False)
    path = agent.save(tmp_path / "run.pt")
    assert main(["history", str(path), "--out", str(tmp_path / "x.gif")]) == 2
    assert capsys.readouterr().err == (f"dawnet: error: --out {tmp_path / 'x.gif'}: give a file name ending in "
                                       ".png, .pdf or .svg\n")
    assert not (tmp_path / "x.gif").exists()
    # a bad --out is refused before anything is written
    assert main(["history", str(path), "--csv", str(tmp_path / "h.csv"), "--out", str(tmp_path / "x.gif")]) == 2
    assert capsys.readouterr().err.startswith("dawnet: error: --out ") and not (tmp_path / "h.csv").exists()
    assert main(["history", str(path), "--out", str(tmp_path / "x.png"), "--keys", "val_cer"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dawnet: error: keys ['val_cer'] are not in the history; it has step keys ['step', ")
    assert err.endswith(" and epoch keys []\n") and err.count("\n") == 1
    assert not (tmp_path / "x.png").exists()
    with pytest.raises(SystemExit) as e:
        main(["history", str(path), "--out", str(tmp_path / "x.png"), "--dpi", "0"])
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == ("dawnet history: error: argument --dpi: must be an "
                                                        "integer >= 1, got 0")


@pytest.mark.slow  # imports scikit-learn, runs a 30-step sweep
def test_lr_find_command(tmp_path, capsys):
    pytest.importorskip("sklearn", reason="--data digits reads scikit-learn's digits")
    path = _agent().save(tmp_path / "init.pt")
    before = path.read_bytes()
    out, saved = tmp_path / "lr.png", tmp_path / "lr.json"
    code = main(["lr-find", str(path), "--data", "digits", "--num-iter", "30", "--min-lr", "1e-4",
                 "--max-lr", "10", "--json", "--out", str(out), "--save", str(saved), "--device", "cpu"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert 0 < summary["base_lr"] < summary["max_lr"] <= 10
    assert summary["steps"] <= 30 and out.exists() and json.loads(saved.read_text())["lrs"]
    assert path.read_bytes() == before  # the checkpoint is only read


def test_lr_find_command_errors(tmp_path, capsys):
    path = _agent().save(tmp_path / "init.pt")
    assert main(["lr-find", str(path), "--data", "imagenet"]) == 2
    assert capsys.readouterr().err == ("dawnet: error: --data 'imagenet': give one of digits, mnist5k or "
                                       "package.module:function\n")
    assert main(["lr-find", str(path), "--data", "os:getcwd"]) == 2
    assert capsys.readouterr().err == ("dawnet: error: --data os:getcwd runs code from 'os': add --trust-code if "
                                       "you trust it\n")
    assert main(["lr-find", str(path), "--data", "digits", "--min-lr", "1", "--max-lr", "0.1"]) == 2
    assert capsys.readouterr().err == ("dawnet: error: need 0 < min_lr < max_lr (finite), got min_lr=1.0, "
                                       "max_lr=0.1\n")
    for option, value, message in [("--num-iter", "0", "must be an integer >= 1, got 0"),
                                   ("--min-lr", "-1e-3", "must be a finite number > 0, got -1e-3"),
                                   ("--max-lr", "inf", "must be a finite number > 0, got inf"),
                                   ("--smooth", "1", "must be a finite number >= 0 and < 1, got 1"),
                                   ("--diverge", "1", "must be a finite number > 1, got 1"),
                                   ("--batch-size", "-4", "must be an integer >= 1, got -4")]:
        with pytest.raises(SystemExit) as e:
            main(["lr-find", str(path), "--data", "digits", f"{option}={value}"])
        assert e.value.code == 2
        assert capsys.readouterr().err.splitlines()[-1] == f"dawnet lr-find: error: argument {option}: {message}"
