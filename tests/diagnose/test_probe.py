"""Probes: named-layer capture, LSTM tuples, gradients, no hooks left behind, wrapped models."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from nets import TinyCRNN
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from dawnet.diagnose.probe import capture, layer_names, probe, resolve_layers


def crnn() -> nn.Module:
    """conv1 (4), pool (2, 2), conv2 (6), pool (2, 1), BiLSTM (5 units), head: (N, W / 2, 7) on 8 px lines."""
    return TinyCRNN(classes=7, height=8, channels=(4, 6), hidden=5)


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


@pytest.fixture
def model():
    torch.manual_seed(0)
    return crnn().eval()


def test_captures_conv_and_lstm_tuple(model):
    x = torch.rand(2, 1, 8, 12)
    with probe(model, ["cnn.conv2", "rnn"]) as p:
        out = model(x)
    assert hook_count(model) == 0
    assert p["cnn.conv2"].shape == (2, 6, 4, 6)
    seq, (h, c) = p.output("rnn")
    assert seq.shape == (2, 6, 10) and h.shape == (2, 2, 5) and c.shape == (2, 2, 5)
    torch.testing.assert_close(p["rnn"], seq)
    h2, c2 = p.hidden("rnn")
    torch.testing.assert_close(h2, h)
    # the LSTM output really is what the head read
    torch.testing.assert_close(model.head(p["rnn"]), out)
    # the forward h of the last step equals the forward half of the output at the last step
    torch.testing.assert_close(h[0], seq[:, -1, :5])
    assert not p["rnn"].requires_grad
    assert set(p.activations) == {"cnn.conv2", "rnn"}


def test_gradients_of_lstm_outputs_and_hidden_state(model):
    x = torch.rand(3, 1, 8, 12)
    with probe(model, ["rnn", "cnn.pool2"], grad=True) as p:
        out = model(x)
        out[:, 2, 1].sum().backward()
    g = p.grad("rnn")
    assert g.shape == (3, 6, 10)
    torch.testing.assert_close(g[:, 2], model.head.weight[1].detach().expand(3, 10))
    assert torch.all(g[:, [0, 1, 3, 4, 5]] == 0)
    seq_g, (h_g, c_g) = p.grad_output("rnn")
    assert h_g is None and c_g is None  # the final state was not used by the loss
    assert p.grad("cnn.pool2").shape == (3, 6, 2, 6)


def test_keep_graph_allows_input_gradients(model):
    x = torch.rand(1, 1, 8, 12, requires_grad=True)
    with probe(model, "cnn.conv2", detach=False) as p:
        model(x)
    (g,) = torch.autograd.grad(p["cnn.conv2"][0, 1, 2, 3], x)
    # conv2 (3x3) at (2, 3) reads pool1 rows 1..3, columns 2..4, i.e. conv1 rows 2..7, columns 4..9, which
    # read input rows 1..8 (the image ends at 7), columns 3..10: the gradient lives there and nowhere else
    rows, cols = g[0, 0].nonzero(as_tuple=True)
    assert rows.numel() > 0 and rows.min() >= 1 and cols.min() >= 3 and cols.max() <= 10


def test_no_hooks_left_after_exception(model):
    class Boom(RuntimeError):
        pass

    with pytest.raises(Boom):
        with probe(model, ["cnn.conv1", "rnn", "head"], grad=True):
            assert hook_count(model) == 3
            raise Boom()
    assert hook_count(model) == 0
    # a failing forward inside the block too
    with pytest.raises(RuntimeError):
        with probe(model, ["cnn.conv1"]):
            model(torch.rand(1, 3, 8, 12))  # wrong channels
    assert hook_count(model) == 0


def test_unknown_layer_suggests_names(model):
    with pytest.raises(KeyError, match="Did you mean: .*cnn.conv1"):
        with probe(model, ["cnn.conv"]):
            pass
    assert hook_count(model) == 0
    assert "rnn" in layer_names(model) and "cnn.pool2" in layer_names(model)


def test_layer_that_did_not_run_is_an_error(model):
    with probe(model, ["head"]) as p:
        pass
    with pytest.raises(RuntimeError, match="did not run"):
        p["head"]


def test_dataparallel_and_output_name(model):
    dp = nn.DataParallel(model)
    x = torch.rand(2, 1, 8, 12)
    with probe(dp, ["rnn", "output", "module.cnn.conv1"]) as p:
        out = dp(x)
    assert hook_count(dp) == 0
    torch.testing.assert_close(p["output"], out)
    assert p["module.cnn.conv1"].shape == (2, 4, 8, 12)
    assert resolve_layers(dp, "rnn")["rnn"] is model.rnn


def test_keep_all_calls_of_a_shared_module():
    shared = nn.Linear(4, 4)
    seq = nn.Sequential(OrderedDict(a=shared, act=nn.Tanh(), b=shared))
    with probe(seq, "a", keep="all") as p:
        seq(torch.rand(2, 4))
    assert p.calls["a"] == 2 and len(p.outputs("a")) == 2


def test_packed_sequence_output_is_padded():
    lstm = nn.LSTM(3, 4, batch_first=True)
    x = torch.rand(2, 5, 3)
    packed = pack_padded_sequence(x, torch.tensor([5, 3]), batch_first=True)
    with probe(lstm, "output") as p:
        lstm(packed)
    assert p["output"].shape == (2, 5, 4)
    assert torch.all(p["output"][1, 3:] == 0)


def test_capture_restores_mode(model):
    model.train()
    acts, out = capture(model, ["cnn.relu1"], torch.rand(1, 1, 8, 12))
    assert model.training and acts["cnn.relu1"].min() >= 0 and out.shape == (1, 6, 7)


def test_inplace_op_after_the_layer_does_not_rewrite_the_capture():
    conv = nn.Conv2d(1, 2, 3, padding=1)
    seq = nn.Sequential(conv, nn.ReLU(inplace=True))
    x = torch.randn(1, 1, 6, 6)
    with probe(seq, "0", grad=True) as p:
        (seq(x) * 2).sum().backward()
    pre = conv(x).detach()
    assert pre.min() < 0
    torch.testing.assert_close(p["0"], pre)  # negative values kept
    torch.testing.assert_close(p.grad("0"), 2 * (pre > 0).float())


def test_ddp_wrapped_model(tmp_path, model):
    import torch.distributed as dist

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(model)
        x = torch.rand(2, 1, 8, 12)
        with probe(ddp, ["rnn", "cnn.conv2"], grad=True) as p:
            ddp(x).sum().backward()
        assert hook_count(ddp) == 0
        assert p["rnn"].shape == (2, 6, 10) and p.grad("cnn.conv2").shape == (2, 6, 4, 6)
        assert p.hidden("rnn")[0].shape == (2, 2, 5)
    finally:
        dist.destroy_process_group()
