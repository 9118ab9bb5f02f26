"""lr_find: exact restore (bitwise, also on errors and Ctrl-C), any batch structure, ranking, the sweep, results."""

from __future__ import annotations

import copy
import math
import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import dawnet
from dawnet.training import CyclicalLR, LRFinderResult, lr_find
from dawnet.training.lr_finder import RangeSweepLR, smooth_curve


def _data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 6, 6, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0).long() + 2 * (x[:, 0, 0, 0] > 0).long()
    return TensorDataset(x, y)


def _model():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.2), nn.Flatten(),
                         nn.Linear(64, 4))


def _agent(schedule=True, **kwargs):
    torch.manual_seed(0)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = CyclicalLR(opt, 0.01, 0.1, step_size=4) if schedule else None
    return dawnet.Agent(model, opt, loss=nn.CrossEntropyLoss(), schedule=sched, metrics=["accuracy"],
                        device="cpu", seed=3, **kwargs)


def _loader():
    return DataLoader(_data(), batch_size=16, shuffle=True)


def _equal(a, b, path="state"):
    """Bitwise equality of nested state (tensors, numbers, strings, containers)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{path}: keys {set(a) ^ set(b)}"
        for k in a:
            _equal(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _equal(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), path
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def _everything(agent):
    """What must survive lr_find: the agent's full state, RNG, modes, grads, schedule position."""
    state = copy.deepcopy(agent.state_dict())
    state.pop("rng")  # compared through the generators themselves below
    return {
        "state": state,
        "torch_rng": torch.get_rng_state(),
        "np_rng": np.random.get_state()[1].copy(),
        "py_rng": random.getstate(),
        "modes": [m.training for m in agent.model.modules()],
        "grads": [None if p.grad is None else p.grad.clone() for p in agent.model.parameters()],
        "lr": [g["lr"] for g in agent.optimizer.param_groups],
        "schedule": agent.schedule,
        "callbacks": list(agent.callbacks),
    }


def _check_restored(agent, before):
    after = _everything(agent)
    _equal(before["state"], after["state"])
    assert torch.equal(before["torch_rng"], after["torch_rng"])
    assert np.array_equal(before["np_rng"], after["np_rng"])
    assert before["py_rng"] == after["py_rng"]
    assert before["modes"] == after["modes"]
    _equal(before["grads"], after["grads"], "grads")
    assert before["lr"] == after["lr"]
    assert after["schedule"] is before["schedule"] and after["callbacks"] == before["callbacks"]


def test_restores_everything_bitwise_and_training_continues_identically():
    def run(with_lr_find):
        agent = _agent()  # seeds the global RNG, which dropout draws from
        agent.fit(_loader(), steps=5, progress=False)
        if with_lr_find:
            agent.model.eval()  # a mode lr_find must put back
            before = _everything(agent)
            result = lr_find(agent, _loader(), min_lr=1e-4, max_lr=10, num_iter=15, progress=False)
            assert len(result.lrs) >= 10
            _check_restored(agent, before)
            agent.model.train()
        agent.fit(_loader(), steps=9, progress=False)
        return agent

    a, b = run(True), run(False)
    for p, q in zip(a.model.state_dict().values(), b.model.state_dict().values()):
        assert torch.equal(p, q)  # BN statistics included
    keys = ("step", "epoch", "loss", "lr", "momentum")
    assert [[r[k] for k in keys] for r in a.history.steps] == [[r[k] for k in keys] for r in b.history.steps]


class _Boom(Exception):
    pass


def _failing(exc, after=3):
    def batches():
        for i, batch in enumerate(DataLoader(_data(), batch_size=16)):
            if i == after:
                raise exc
            yield batch
    return batches()


@pytest.mark.parametrize("exc", [_Boom("data broke"), KeyboardInterrupt()])
def test_restores_on_exception_and_interrupt(exc):
    agent = _agent()
    agent.fit(_loader(), steps=3, progress=False)
    before = _everything(agent)
    with pytest.raises(type(exc)):
        lr_find(agent, _failing(exc), num_iter=20, progress=False)
    _check_restored(agent, before)


def test_non_finite_loss_stops_restores_and_reports():
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    agent = dawnet.Agent(model, opt, loss=nn.MSELoss(), device="cpu")
    data = [(torch.randn(8, 4) * 100, torch.randn(8, 1)) for _ in range(5)]
    before = _everything(agent)
    result = lr_find(agent, data, min_lr=1e-3, max_lr=1e30, num_iter=60, diverge=1e300, progress=False)
    assert result.stop_reason.startswith("non-finite loss")
    assert not math.isfinite(result.losses[-1]) and len(result.losses) < 60
    _check_restored(agent, before)
    assert all(torch.isfinite(p).all() for p in agent.model.parameters())


def test_divergence_stops_the_sweep():
    agent = _agent()
    result = lr_find(agent, _loader(), min_lr=1e-3, max_lr=1e4, num_iter=80, progress=False)
    assert result.stop_reason.startswith("diverged")
    assert len(result.lrs) < 80
    assert result.smoothed[-1] > 4.0 * min(result.smoothed)


class _DictAgent(dawnet.Agent):
    """A task whose batches are dicts: the finder must go through the agent's own unpack."""

    def unpack(self, batch):
        return (batch["image"],), batch["label"]


def test_works_for_any_batch_structure():
    torch.manual_seed(0)
    model = _model()
    agent = _DictAgent(model, torch.optim.Adam(model.parameters(), 1e-3), loss=nn.CrossEntropyLoss(),
                       device="cpu")
    ds = _data()
    data = [{"image": ds.tensors[0][i:i + 16], "label": ds.tensors[1][i:i + 16]} for i in range(0, 96, 16)]
    result = lr_find(agent, data, num_iter=25, progress=False)
    assert len(result.lrs) > 5
    assert result.lrs == sorted(result.lrs)


def test_ranks_by_validation_metric_where_higher_is_better():
    agent = _agent()
    val = [(_data(32, seed=9).tensors[0], _data(32, seed=9).tensors[1])]
    result = lr_find(agent, _loader(), min_lr=1e-3, max_lr=1.0, num_iter=12, val=val, metric="accuracy",
                     higher_better=True, progress=False)
    assert result.ranked_by == "accuracy" and result.higher_better
    assert len(result.values) == len(result.lrs)
    assert all(0 <= v <= 1 for v in result.values)
    assert result.curve() == [-v for v in result.values]
    smoothed, _ = smooth_curve(result.lrs, [-v for v in result.values])
    assert result.best_lr() == result.lrs[min(range(len(smoothed)), key=smoothed.__getitem__)]
    by_loss = lr_find(agent, _loader(), min_lr=1e-3, max_lr=1.0, num_iter=6, val=val, progress=False)
    assert by_loss.ranked_by == "val_loss" and not by_loss.higher_better


def test_accumulation_counts_optimizer_steps():
    agent = _agent(accumulate=2)
    seen = []

    class Counting(list):
        def __iter__(self):
            for b in super().__iter__():
                seen.append(1)
                yield b

    data = Counting(list(DataLoader(_data(), batch_size=16)))
    result = lr_find(agent, data, min_lr=1e-4, max_lr=1e-2, num_iter=10, progress=False)
    assert len(result.lrs) == 10 and len(seen) == 20
    assert agent.step == 0


def test_one_shot_iterator_reports_exhaustion():
    agent = _agent()
    result = lr_find(agent, iter(list(DataLoader(_data(), batch_size=16))), min_lr=1e-5, max_lr=1e-3,
                     num_iter=20, progress=False)
    assert result.stop_reason.startswith("data exhausted") and len(result.lrs) == 6


@pytest.mark.parametrize("kwargs, words", [
    ({"min_lr": 1.0, "max_lr": 0.1}, "min_lr < max_lr"),
    ({"min_lr": 0.0}, "min_lr < max_lr"),
    ({"num_iter": 1}, "num_iter"),
    ({"mode": "cosine"}, "mode"),
    ({"smooth": 1.0}, "smooth"),
    ({"diverge": 1.0}, "diverge"),
    ({"metric": "accuracy"}, "val="),
    ({"metric": "f1", "val": [(torch.zeros(1, 1, 6, 6), torch.zeros(1).long())]}, "not one of"),
])
def test_rejects_bad_arguments(kwargs, words):
    agent = _agent()
    with pytest.raises(ValueError, match=words):
        lr_find(agent, _loader(), progress=False, **kwargs)


def test_sweep_is_a_scheduler_with_matching_closed_and_chainable_forms():
    p = nn.Parameter(torch.zeros(1))
    cases = (("exp", [1e-4, 1e-3, 1e-2, 1e-1, 1.0]), ("linear", [1e-4, 0.250075, 0.50005, 0.750025, 1.0]))
    for mode, expected in cases:
        opt = torch.optim.SGD([{"params": [p]}, {"params": [nn.Parameter(torch.zeros(1))], "lr": 0.5}], lr=0.25)
        sweep = RangeSweepLR(opt, 1e-4, 1.0, num_iter=5, mode=mode)
        used = []
        for _ in range(5):
            used.append([g["lr"] for g in opt.param_groups])
            opt.step()
            sweep.step()
        assert [u[0] for u in used] == pytest.approx(expected, rel=1e-9)
        assert [u[1] for u in used] == pytest.approx([2 * e for e in expected], rel=1e-9)  # ratio kept
        assert "optimizer" not in sweep.state_dict()


def test_result_round_trips_through_json_and_plots(tmp_path):
    from matplotlib.figure import Figure

    agent = _agent()
    result = lr_find(agent, _loader(), min_lr=1e-4, max_lr=100, num_iter=40, progress=False)
    path = tmp_path / "lr.json"
    result.save(path)
    again = LRFinderResult.load(path)
    assert again.lrs == result.lrs and again.stop_reason == result.stop_reason
    assert again.suggest() == result.suggest()
    fig = result.plot()
    assert isinstance(fig, Figure)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert any(lab.startswith("base_lr") for lab in labels) and any(lab.startswith("max_lr") for lab in labels)
    with pytest.raises(ValueError, match="not an LRFinderResult"):
        LRFinderResult.from_json('{"foo": 1}')
