"""model_stats: per-layer params, MACs, activation statistics, dead units, norms; table, dict, figure."""

from __future__ import annotations

import math

import pytest
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dawnet.diagnose.statistics import model_stats


def make_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.BatchNorm1d(6), nn.Linear(6, 3))
    with torch.no_grad():  # the second ReLU unit half is dead: bias -100 on units 3..5
        net[0].bias[3:] = -100.0
    return net


def test_stats_values_are_exact():
    net = make_net()
    x = torch.randn(8, 4)
    s = model_stats(net, x)
    assert [r.name for r in s.layers] == ["0", "1", "2", "3"]
    lin = s.layer("0")
    out = net[0](x)
    assert lin.params == 4 * 6 + 6 and lin.macs == 8 * 4 * 6 and lin.output_shape == [8, 6]
    assert lin.mean == pytest.approx(out.mean().item(), rel=1e-6)
    assert lin.std == pytest.approx(out.std(unbiased=False).item(), rel=1e-5)
    assert (lin.min, lin.max) == pytest.approx((out.min().item(), out.max().item()))
    relu = s.layer("1")
    assert relu.zero_fraction >= 0.5  # 3 of 6 units dead for every sample
    assert relu.zero_fraction == (torch.relu(out) == 0).sum().item() / out.numel()
    assert lin.weight_norm == pytest.approx(torch.cat([net[0].weight.flatten(), net[0].bias]).norm().item())
    assert lin.grad_norm is None and relu.weight_norm is None


def test_gradient_norms_when_present():
    net = make_net()
    x = torch.randn(8, 4)
    net(x).sum().backward()
    s = model_stats(net, x)
    g = torch.cat([net[3].weight.grad.flatten(), net[3].bias.grad])
    assert s.layer("3").grad_norm == pytest.approx(g.norm().item())


def test_loader_accumulates_and_changes_nothing():
    net = make_net().train()
    data = TensorDataset(torch.randn(20, 4), torch.zeros(20))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    s = model_stats(net, DataLoader(data, batch_size=8))
    assert (s.batches, s.samples) == (3, 20)
    assert net.training
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k  # BatchNorm running stats untouched
    assert model_stats(net, DataLoader(data, batch_size=8), max_batches=1).samples == 8


def test_lstm_tuple_outputs_and_outputs():
    lstm = nn.Sequential(nn.LSTM(4, 5, batch_first=True))
    s = model_stats(lstm, torch.randn(2, 7, 4))
    assert s.layer("0").output_shape == [2, 7, 5] and s.layer("0").macs == 2 * 7 * 4 * 5 * (4 + 5)


def test_table_dict_figure():
    s = model_stats(make_net(), torch.randn(8, 4))
    text = s.table()
    assert "Linear" in text and "Zeros" in text
    assert f"{100 * s.layer('1').zero_fraction:.1f}%" in text
    d = s.to_dict()
    assert d["layers"][0]["macs"] == 8 * 4 * 6 and d["samples"] == 8
    fig = s.figure()
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    assert not math.isnan(d["layers"][1]["zero_fraction"])


def test_bad_input():
    with pytest.raises(TypeError, match="iterable of batches"):
        model_stats(make_net(), 3)
    with pytest.raises(ValueError, match="no batch"):
        model_stats(make_net(), [])
