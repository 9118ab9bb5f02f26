"""batch_infer and Ensemble: exact averaging and voting, checkpoints loaded one at a time, bad input."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import dawnet
import dawnet.ensemble as ens
from dawnet.ensemble import Ensemble, batch_infer


def _net(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 4))


@pytest.fixture()
def members():
    return [_net(s) for s in range(3)]


@pytest.fixture()
def x():
    return torch.randn(50, 6, generator=torch.Generator().manual_seed(1))


def _by_hand(models, x):
    for m in models:
        m.eval()
    with torch.no_grad():
        return [m(x).softmax(-1) for m in models]


def test_mean_averages_probabilities(members, x):
    probs = _by_hand(members, x)
    expected = sum(probs) / 3
    pred, scores = batch_infer(members, x, batch_size=7, return_scores=True, device="cpu")
    assert torch.allclose(scores, expected, atol=1e-6)
    assert torch.equal(pred, expected.argmax(-1))
    members[0].train()
    batch_infer(members, x, device="cpu")
    assert members[0].training and not members[1].training


def test_vote_counts_and_breaks_ties_by_mean_probability(x):
    a, b = _net(0), _net(1)
    pa, pb = _by_hand([a, b], x)
    pred, shares = batch_infer([a, b], x, reduce="vote", return_scores=True, device="cpu")
    la, lb = pa.argmax(-1), pb.argmax(-1)
    agree = la == lb
    assert torch.equal(pred[agree], la[agree])
    assert (~agree).any()  # two members disagree somewhere: a tie, broken by the mean probability
    mean = (pa + pb) / 2
    a_wins = mean.gather(1, la[:, None])[:, 0] > mean.gather(1, lb[:, None])[:, 0]
    assert torch.equal(pred[~agree], torch.where(a_wins, la, lb)[~agree])
    assert torch.allclose(shares.sum(-1), torch.ones(len(x)))


def test_checkpoints_load_one_at_a_time(tmp_path, members, x, monkeypatch):
    paths = []
    for i, m in enumerate(members):
        agent = dawnet.Agent(m, torch.optim.SGD(m.parameters(), lr=0.1), device="cpu")
        paths.append(agent.save(tmp_path / f"s{i}.pt"))
    loaded = []
    real = ens.load_model

    def counting(source, **kwargs):
        gc.collect()
        alive = [r for r in loaded if r() is not None]
        assert not alive, "a previous member is still in memory"
        net = real(source, **kwargs)
        loaded.append(weakref.ref(net))
        return net

    monkeypatch.setattr(ens, "load_model", counting)
    pred = batch_infer(paths, x, model=lambda: _net(99), device="cpu")
    assert len(loaded) == 3
    monkeypatch.setattr(ens, "load_model", real)
    assert torch.equal(pred, batch_infer(members, x, device="cpu"))


def test_unregistered_checkpoint_needs_a_builder(tmp_path, members, x):
    m = members[0]
    path = dawnet.Agent(m, torch.optim.SGD(m.parameters(), lr=0.1), device="cpu").save(tmp_path / "a.pt")
    with pytest.raises(Exception, match="model="):
        batch_infer([path], x, device="cpu")


def test_dataloader_batches_and_batch_dim_for_sequence_outputs(members, x):
    loader = DataLoader(TensorDataset(x, torch.zeros(len(x))), batch_size=16)
    assert torch.equal(batch_infer(members, loader, device="cpu"), batch_infer(members, x, device="cpu"))

    class Frames(nn.Module):  # (N, 6) -> (T=5, N, C=4), like a CTC recognizer
        def __init__(self, seed):
            super().__init__()
            self.net = _net(seed)

        def forward(self, inp):
            return torch.stack([self.net(inp * (t + 1)) for t in range(5)])

    frames = [Frames(s) for s in range(2)]
    pred = batch_infer(frames, x, batch_dim=1, batch_size=9, device="cpu")
    assert pred.shape == (5, len(x))
    with torch.no_grad():
        for f in frames:
            f.eval()
        expected = sum(f(x).softmax(-1) for f in frames).argmax(-1)
    assert torch.equal(pred, expected)


def test_ensemble_module(members, x, tmp_path):
    e = Ensemble(members)
    e.eval()
    with torch.no_grad():
        assert torch.allclose(e(x), sum(_by_hand(members, x)) / 3, atol=1e-6)
    assert torch.equal(e.predict(x), batch_infer(members, x, device="cpu"))
    paths = [dawnet.Agent(m, torch.optim.SGD(m.parameters(), lr=0.1), device="cpu").save(tmp_path / f"{i}.pt")
             for i, m in enumerate(members)]
    again = Ensemble.from_checkpoints(paths, model=lambda: _net(7))
    assert torch.equal(again.predict(x), e.predict(x))
    voter = Ensemble(members, reduce="vote")
    assert torch.equal(voter.predict(x), batch_infer(members, x, reduce="vote", device="cpu"))


@pytest.mark.parametrize("call, error, words", [
    (lambda m, x: batch_infer([], x), ValueError, "empty"),
    (lambda m, x: batch_infer(m, x, reduce="median"), ValueError, "reduce"),
    (lambda m, x: batch_infer(m, x, batch_size=0), ValueError, "batch_size"),
    (lambda m, x: batch_infer(["/nonexistent/a.pt"], x), FileNotFoundError, "not found"),
    (lambda m, x: batch_infer(m, (b for b in [x])), ValueError, "one-shot"),
    (lambda m, x: batch_infer([object()], x), TypeError, "member"),
])
def test_bad_input(members, x, call, error, words):
    with pytest.raises(error, match=words):
        call(members, x)
