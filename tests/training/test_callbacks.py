"""SnapshotAtMinimum and Checkpoint on real fits: which steps save, what is kept, resume, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import dawnet
from dawnet.checkpoint import load_checkpoint
from dawnet.training import Checkpoint, SnapshotAtMinimum, SuperConvergence


def _loader(n=64, batch=8):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 5, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True)


def _agent(schedule=None, callbacks=()):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return dawnet.Agent(model, opt, loss=nn.CrossEntropyLoss(), metrics=["accuracy"], device="cpu",
                        schedule=schedule(opt) if schedule else None, callbacks=callbacks)


def test_snapshots_land_exactly_on_the_schedule_minima(tmp_path):
    snap = SnapshotAtMinimum(tmp_path)
    agent = _agent(lambda o: SuperConvergence(o, 0.01, 0.1, step_size=3, cycles=3, flat_steps=2,
                                              annihilate_steps=4), [snap])
    total = agent.schedule.total_steps
    agent.fit(_loader(), steps=total, progress=False)
    minima = agent.schedule.minima()
    assert [int(p.stem.split("step")[1]) for p in snap.paths] == minima
    assert sorted(tmp_path.glob("snapshot-*.pt")) == snap.paths
    marked = [r["step"] for r in agent.history.steps if r.get("snapshot")]
    assert marked == minima
    for step in minima:  # the lr of the step that produced each snapshot is a cycle low
        record = agent.history.steps[step - 1]
        assert record["lr"] <= 0.01 + 1e-12
    last = load_checkpoint(snap.paths[-1])
    assert last["progress"]["step"] == total
    for name, value in agent.model.state_dict().items():
        assert torch.equal(last["model"]["state_dict"][name], value)
    assert last["callbacks"]["SnapshotAtMinimum"]["saved"][-1] == str(snap.paths[-1])


def test_snapshots_at_the_restarts_of_a_foreign_schedule(tmp_path):
    snap = SnapshotAtMinimum(tmp_path, keep=2)
    agent = _agent(lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=5, eta_min=0.001),
                   [snap])
    agent.fit(_loader(), steps=17, progress=False)
    assert [p.name for p in snap.paths] == ["snapshot-step00000010.pt", "snapshot-step00000015.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in snap.paths]  # keep=2 pruned step 5
    assert [r["step"] for r in agent.history.steps if r.get("snapshot")] == [5, 10, 15]


def test_snapshot_state_survives_a_resume(tmp_path):
    make = lambda o: SuperConvergence(o, 0.01, 0.1, step_size=2, cycles=4, annihilate_steps=2)  # noqa: E731
    snap = SnapshotAtMinimum(tmp_path / "s", keep=2)
    agent = _agent(make, [snap])
    agent.fit(_loader(), steps=9, progress=False)
    agent.save(tmp_path / "mid.pt")
    again = SnapshotAtMinimum(tmp_path / "s", keep=2)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 2))
    resumed = dawnet.Agent.load(tmp_path / "mid.pt", model=model, callbacks=[again])
    assert again.saved == snap.saved
    resumed.fit(_loader(), steps=resumed.schedule.total_steps, progress=False)
    assert [int(p.stem.split("step")[1]) for p in again.paths] == resumed.schedule.minima()[-2:]


def test_checkpoint_keeps_the_newest(tmp_path):
    cb = Checkpoint(tmp_path, every=1, keep=2)
    agent = _agent(callbacks=[cb])
    agent.fit(_loader(), epochs=4, progress=False)
    assert [p.name for p in cb.paths] == ["epoch0003-step00000024.pt", "epoch0004-step00000032.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([p.name for p in cb.paths] + ["last.pt"])
    assert load_checkpoint(tmp_path / "last.pt")["progress"]["epoch"] == 4


def test_checkpoint_keeps_the_best_by_a_monitored_metric(tmp_path):
    cb = Checkpoint(tmp_path, keep=1, monitor="val_accuracy", mode="max")
    agent = _agent(callbacks=[cb])
    val = _loader(32)
    agent.fit(_loader(), epochs=5, val=val, progress=False)
    accs = [r["val_accuracy"] for r in agent.history.epochs]
    best_epoch = max(range(5), key=lambda i: (accs[i], i)) + 1  # ties: the newer is kept
    assert len(cb.paths) == 1 and cb.paths[0].name.startswith(f"epoch{best_epoch:04d}")
    assert cb.best == max(accs)
    best = load_checkpoint(tmp_path / "best.pt")
    first_best = accs.index(max(accs)) + 1  # best.pt is rewritten only on strict improvement
    assert best["progress"]["epoch"] == first_best


def test_checkpoint_by_steps_and_nan_never_best(tmp_path):
    cb = Checkpoint(tmp_path, every_steps=3, monitor="loss", mode="min", keep=None)
    agent = _agent(callbacks=[cb])
    agent.fit(_loader(), steps=9, progress=False)
    assert [p.name.split("-")[1] for p in cb.paths] == ["step00000003.pt", "step00000006.pt", "step00000009.pt"]
    losses = [r["loss"] for r in agent.history.steps if r["step"] % 3 == 0]
    assert cb.best == min(losses)
    stamp = (tmp_path / "best.pt").stat().st_mtime_ns
    cb._save(agent, {"loss": math.nan}, "step")
    assert cb.best == min(losses) and (tmp_path / "best.pt").stat().st_mtime_ns == stamp


def test_checkpoint_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        Checkpoint(tmp_path, mode="lowest")
    with pytest.raises(ValueError, match="every"):
        Checkpoint(tmp_path, every=0)
    with pytest.raises(ValueError, match="keep"):
        SnapshotAtMinimum(tmp_path, keep=0)
    agent = _agent(callbacks=[Checkpoint(tmp_path, monitor="val_loss")])
    with pytest.raises(KeyError, match="val="):
        agent.fit(_loader(), epochs=1, progress=False)
