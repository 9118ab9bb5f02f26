"""count(): module attribution, backward, side effects, unknown ops, meta device, parameters, report."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import _get_current_dispatch_mode

from dawnet.cost import count, format_count


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(torch.relu(self.bn(self.conv(x))))


class Net(nn.Module):
    """conv block -> functional matmul with a parameter -> linear head."""

    def __init__(self):
        super().__init__()
        self.block = Block()
        self.proj = nn.Parameter(torch.randn(8, 4))
        self.head = nn.Linear(4, 5)

    def forward(self, x):
        y = self.block(x).mean((2, 3))  # (N, 8)
        return self.head(y @ self.proj)  # functional matmul, invisible to hook-based counters


def net_macs(n, h, w):
    return n * 8 * 3 * 9 * h * w + n * 8 * 4 + n * 4 * 5


def test_functional_ops_are_counted_and_attributed():
    r = count(Net(), torch.randn(2, 3, 6, 7))
    assert r.macs == net_macs(2, 6, 7)
    assert r.module("block").macs == r.module("block.conv").macs == 2 * 8 * 3 * 9 * 6 * 7
    assert r.module("head").macs == 2 * 4 * 5
    assert r.module("").macs == r.macs  # the root holds everything, functional ops included
    assert r.module("block.bn").macs == 0


def test_parameters_all_trainable_frozen_buffers_per_module():
    net = Net()
    for p in net.block.conv.parameters():
        p.requires_grad_(False)
    r = count(net, torch.randn(1, 3, 4, 4))
    conv = 8 * 3 * 9 + 8
    total = conv + 2 * 8 + 8 * 4 + 4 * 5 + 5
    assert (r.params, r.trainable_params, r.frozen_params) == (total, total - conv, conv)
    assert r.buffers == 8 + 8 + 1  # running mean, running var, num_batches_tracked
    assert r.module("block.conv").params == conv and r.module("block.conv").trainable_params == 0


def test_shared_parameters_counted_once():
    lin = nn.Linear(4, 4)
    net = nn.Sequential(lin, nn.ReLU(), lin)
    r = count(net, torch.randn(2, 4))
    assert r.params == 4 * 4 + 4
    assert r.macs == 2 * (2 * 4 * 4)  # but run twice


def test_backward_counts_real_ops():
    lin = nn.Linear(8, 6)
    x = torch.randn(5, 8)
    r = count(lin, x, backward=True)
    # input needs no grad: autograd runs only grad_W = grad_out^T x (5*8*6) and sums grad_b
    assert r.backward_macs == 5 * 8 * 6
    r2 = count(lin, x.clone().requires_grad_(), backward=True)
    assert r2.backward_macs == 2 * 5 * 8 * 6  # + grad_x = grad_out W
    assert r2.total_flops == r2.flops + r2.backward_flops == 2 * 5 * 8 * 6 * 3


def test_backward_conv_first_layer_skips_input_grad():
    conv = nn.Conv2d(3, 4, 3)
    r = count(conv, torch.randn(2, 3, 8, 8), backward=True)
    assert "convolution_backward" in r.backward_by_operator
    assert r.backward_macs == r.macs == 2 * 4 * 3 * 9 * 6 * 6


def test_backward_attributed_to_modules():
    r = count(Net(), torch.randn(2, 3, 5, 5), backward=True)
    assert r.module("head").backward_macs == 2 * 4 * 5 * 2  # grad W and grad input of the head
    assert r.module("block.conv").backward_macs == 2 * 8 * 3 * 9 * 25  # grad W only (input is data)
    assert r.module("").backward_macs == r.backward_macs


def test_backward_needs_something_to_differentiate():
    lin = nn.Linear(3, 3).requires_grad_(False)
    with pytest.raises(ValueError, match="requires_grad"):
        count(lin, torch.randn(2, 3), backward=True)


def _state(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [m.training for m in model.modules()],
            [None if p.grad is None else p.grad.clone() for p in model.parameters()])


def _assert_same(model, before):
    sd, modes, grads = before
    after_sd = model.state_dict()
    for k, v in sd.items():
        assert torch.equal(after_sd[k], v), k
    assert [m.training for m in model.modules()] == modes
    for p, g in zip(model.parameters(), grads):
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)


@pytest.mark.parametrize("train", [True, False])
def test_no_side_effects(train):
    net = Net().train(train)
    net.head.weight.grad = torch.ones_like(net.head.weight)  # an existing grad must survive
    before = _state(net)
    x = torch.randn(4, 3, 5, 5)
    rng = torch.get_rng_state()
    functional = (torch.nn.functional.linear, torch.nn.functional.conv2d, torch.Tensor.__matmul__)
    count(net, x, backward=True)
    _assert_same(net, before)
    assert (torch.nn.functional.linear, torch.nn.functional.conv2d, torch.Tensor.__matmul__) == functional
    assert torch.equal(torch.get_rng_state(), rng)  # dropout drew random numbers, then the state came back
    assert torch.is_grad_enabled()
    assert _get_current_dispatch_mode() is None


class Raises(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(4)

    def forward(self, x):
        self.bn(x)  # updates running stats, then fails
        raise RuntimeError("boom")


def test_no_side_effects_when_model_raises():
    net = Raises().train()
    before = _state(net)
    with pytest.raises(RuntimeError, match="boom"):
        count(net, torch.randn(3, 4))
    _assert_same(net, before)
    assert _get_current_dispatch_mode() is None
    # the global module hooks are gone: a later plain forward is not tracked by anything
    assert not torch.nn.modules.module._global_forward_hooks
    assert not torch.nn.modules.module._global_forward_pre_hooks


class Unknown(nn.Module):
    def forward(self, x):
        return torch.linalg.inv(x) + torch.linalg.inv(x)


def test_unknown_ops_listed_with_calls():
    with pytest.warns(UserWarning, match="NOT in the totals"):
        r = count(Unknown(), torch.randn(3, 3) + 3 * torch.eye(3))
    assert r.unknown_ops == {"linalg_inv_ex": 2}
    assert "NOT COUNTED" in r.table() and "linalg_inv_ex x2" in r.table()
    # a handle for it counts it; None ignores it on purpose
    r2 = count(Unknown(), torch.eye(3), handles={"aten::linalg_inv_ex": None})
    assert r2.unknown_ops == {}


def test_a_formula_that_fails_is_reported_not_fatal():
    def broken(args, kwargs, out):
        raise IndexError("bad arguments")

    with pytest.warns(UserWarning, match="formula failed"):
        r = count(nn.Linear(3, 2), torch.randn(4, 3), handles={"aten::addmm": broken})
    assert list(r.unknown_ops) == ["addmm (formula failed: IndexError: bad arguments)"]
    assert r.macs == 0


@pytest.mark.slow  # torch's meta kernels import sympy on first use (about 7 s)
def test_meta_device_matches_real_count():
    net = Net()
    x = torch.randn(2, 3, 6, 7)
    real = count(net, x, backward=True)
    meta = count(net, x, backward=True, device="meta")
    assert (meta.macs, meta.backward_macs, meta.params) == (real.macs, real.backward_macs, real.params)
    assert meta.device == "meta"
    assert next(net.parameters()).device.type == "cpu"
    lstm = nn.LSTM(6, 8, bidirectional=True)
    assert count(lstm, torch.randn(5, 2, 6), device="meta").macs == count(lstm, torch.randn(5, 2, 6)).macs
    with pytest.raises(ValueError, match="meta"):
        count(net, x, device="cuda")


class NeedsData(nn.Module):
    def forward(self, x):
        return x[: int(x.sum().item() > 0) + 1] * 2


@pytest.mark.slow
def test_meta_device_explains_models_that_need_data():
    with pytest.raises(RuntimeError, match="device=None"):
        count(NeedsData(), torch.randn(3, 2), device="meta")


def test_report_table_dict_json():
    r = count(Net(), torch.randn(2, 3, 6, 7), backward=True)
    full = r.table(depth=None)
    assert "block" in full and "conv" in full and "Bwd FLOPs" in full
    shallow = r.table(depth=1)
    assert "block" in shallow and "  conv" not in shallow
    assert "2x3x6x7" in r.table(depth=0)
    d = json.loads(r.to_json())
    assert d["macs"] == r.macs and d["flops"] == 2 * r.macs and d["params"] == r.params
    assert d["per_module"]["block.conv"]["macs"] == 2 * 8 * 3 * 9 * 6 * 7
    assert isinstance(d["macs"], int) and isinstance(d["flops"], int)
    assert str(r) == r.table()


def test_elementwise_switch():
    r_off = count(Net(), torch.randn(2, 3, 6, 7))
    r_on = count(Net(), torch.randn(2, 3, 6, 7), elementwise=True)
    assert r_off.macs == r_on.macs
    assert r_off.flops == 2 * r_off.macs
    assert r_on.flops == 2 * r_on.macs + r_on.elementwise_flops > r_off.flops


@pytest.mark.parametrize("n,text", [(12, "12"), (1234, "1.23 K"), (5_600_000, "5.60 M"), (7.1e9, "7.10 G"),
                                    (3e12, "3.00 T")])
def test_format_count(n, text):
    assert format_count(n) == text


def test_rejects_non_modules():
    with pytest.raises(TypeError, match="nn.Module"):
        count(lambda x: x, torch.randn(2))


def test_inference_mode_counts_the_same_as_no_grad():
    """Under torch.inference_mode the aten kernels bypass Python dispatch modes; count must still see them."""
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3)).eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        expected = count(model, x).macs
    with torch.inference_mode():
        assert count(model, torch.randn(2, 1, 8, 8)).macs == expected
    assert expected == 2 * (4 * 1 * 9 * 36 + 144 * 3)  # conv: N*Cout*Cin*k*k*Hout*Wout; linear: N*in*out
