"""Every objective increases when optimized, on a tiny conv net and a tiny recurrent recognizer.

Also: formulas print readably, only the needed layers are hooked, and hooks go away after
render and after an exception.
"""

import pytest
import torch
from nets import TinyConvNet
from torch import nn

from dawnet.diagnose import optvis
from dawnet.diagnose.optvis import objectives as O
from dawnet.diagnose.optvis import param as P


def tiny_conv() -> nn.Module:
    """Two conv layers and a linear classifier over 5 classes (on the global mean)."""
    return TinyConvNet(in_channels=3, classes=5, width=8)


class TimeMajorCRNN(nn.Module):
    """conv -> (2,1) pools -> BiLSTM (time-major, as nn.LSTM defaults: what the TNC layout reads; nets.TinyCRNN
    is batch-first) -> Linear: (N, T, C) log-probs."""

    def __init__(self, classes=6, height=8):
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.pool = nn.MaxPool2d((2, 1))
        self.rnn = nn.LSTM(6 * height // 2, 8, bidirectional=True)
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        f = self.pool(torch.relu(self.conv(x)))  # (N, C, H/2, W)
        seq = f.flatten(1, 2).permute(2, 0, 1)  # (T=W, N, C*H/2)
        out, _ = self.rnn(seq)
        return torch.log_softmax(self.fc(out), -1).transpose(0, 1)  # (N, T, C)


def _gain(model, objective, shape, steps=25, seed=0):
    """Objective on the untransformed image before and after a few Adam steps."""
    torch.manual_seed(seed)
    p = P.image(
        shape[2], shape[3], batch=shape[0], channels=shape[1], generator=torch.Generator().manual_seed(seed)
    )
    with optvis.Visualization(model, objective, p, transforms=None) as vis:
        before, _ = vis.evaluate()
        for _ in range(steps):
            vis.step()
        after, _ = vis.evaluate()
    return before, after


torch.manual_seed(0)
CONV = tiny_conv()
CRNN = TimeMajorCRNN()
VEC8 = torch.randn(8)
VEC16 = torch.randn(16)
TARGET_ACTS = torch.rand(1, 8, 16, 16)

CONV_OBJECTIVES = {
    "neuron": O.neuron("conv2", 3),
    "neuron_off_centre": O.neuron("conv2", 1, y=2, x=12),
    "channel": O.channel("conv1", 5),
    "direction": O.direction("conv2", VEC8),
    "direction_cossim_pow": O.direction("conv2", VEC8, cossim_pow=1.0),
    "direction_neuron": O.direction_neuron("conv2", VEC8, y=4, x=4),
    "direction_cossim": O.direction_cossim("conv2", VEC8),
    "deepdream": O.deepdream("conv2"),
    "class_logit": O.class_logit(2),
    "activation_match": O.activation_match("conv1", TARGET_ACTS),
    "minus_L1": -O.L1(constant=0.5),
    "minus_L2": -O.L2(),
    "minus_total_variation": -O.total_variation(),
    "minus_blur": -O.blur_input_each_step(),
    "minus_L1_layer": -O.L1("conv1"),
    "product": O.channel("conv2", 0) * O.channel("conv2", 0),
    "ratio": O.channel("conv2", 4) / 10.0,
    "sum": O.channel("conv2", 4) + 0.5 * O.neuron("conv1", 2) - 0.01 * O.total_variation(),
    "string": O.as_objective("conv2:6"),
}

CRNN_OBJECTIVES = {
    "lstm_neuron_time_step": O.neuron("rnn", 3, x=5),
    "lstm_channel": O.channel("rnn", 10),
    "lstm_direction": O.direction("rnn", VEC16),
    "lstm_deepdream": O.deepdream("rnn"),
    "char_logit": O.char_logit(3, t=7),
    "ctc_target": O.ctc_target([1, 2, 2, 3]),
    "conv_channel": O.channel("conv", 2),
    "minus_lstm_tv": -O.total_variation("rnn"),
}


@pytest.mark.parametrize("name", list(CONV_OBJECTIVES))
def test_objective_increases_conv(name):
    before, after = _gain(CONV, CONV_OBJECTIVES[name], (1, 3, 16, 16))
    assert after > before, f"{name}: {before} -> {after}"


@pytest.mark.parametrize("name", list(CRNN_OBJECTIVES))
def test_objective_increases_recurrent(name):
    before, after = _gain(CRNN, CRNN_OBJECTIVES[name], (1, 1, 8, 16))
    assert after > before, f"{name}: {before} -> {after}"


def test_diversity_decreases_when_subtracted():
    obj = -O.diversity("conv2")
    before, after = _gain(CONV, obj, (3, 3, 16, 16), steps=30)
    assert after > before
    with pytest.raises(ValueError, match="batch of at least 2"):
        _gain(CONV, obj, (1, 3, 16, 16), steps=1)


def test_channel_interpolate_and_alignment_on_a_batch():
    before, after = _gain(CONV, O.channel_interpolate("conv2", 1, "conv2", 6), (4, 3, 16, 16))
    assert after > before
    different = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    p = P.image(16, 16, batch=4, init=different)
    with optvis.Visualization(CONV, O.alignment("conv1"), p, transforms=None) as vis:
        before, _ = vis.evaluate()
        for _ in range(20):
            vis.step()
        after, _ = vis.evaluate()
    assert after > before  # neighbouring images became more alike
    # the interpolation weights: the first image serves channel 1 only, the last channel 6 only
    p = P.image(16, 16, batch=3, generator=torch.Generator().manual_seed(0))
    with optvis.Visualization(CONV, O.channel_interpolate("conv2", 1, "conv2", 6), p, transforms=None) as vis:
        _, acts = vis.evaluate()
        a = acts["conv2"]
        expected = a[0, 1].mean() + 0.5 * (a[1, 1].mean() + a[1, 6].mean()) + a[2, 6].mean()
        torch.testing.assert_close(torch.tensor(vis.evaluate()[0]), expected, rtol=1e-5, atol=1e-6)


def test_objective_batch_selection_changes_only_that_image():
    p = P.image(16, 16, batch=2, generator=torch.Generator().manual_seed(0))
    start = p().detach().clone()
    with optvis.Visualization(CONV, O.channel("conv2", 3, batch=1), p, transforms=None) as vis:
        for _ in range(5):
            vis.step()
        now = vis.image()
    assert torch.allclose(now[0], start[0])
    assert not torch.allclose(now[1], start[1])


def test_formula_repr_and_layers():
    obj = 0.8 * O.channel("conv3", 12) - 0.05 * O.total_variation()
    assert repr(obj) == "0.8 * channel('conv3', 12) - 0.05 * total_variation()"
    assert obj.layers == {"conv3", "image"}
    assert (
        repr(O.channel("a", 1) - (O.channel("b", 2) + O.channel("c", 3)))
        == "channel('a', 1) - (channel('b', 2) + channel('c', 3))"
    )
    assert (
        repr((O.channel("a", 1) + 1) * O.neuron("b", 2, x=3)) == "(channel('a', 1) + 1) * neuron('b', 2, x=3)"
    )
    assert repr(-O.L1()) == "-L1()"
    assert repr(sum([O.channel("a", 1), O.channel("a", 2)])) == "channel('a', 1) + channel('a', 2)"
    assert O.class_logit(3).needs_output and not O.channel("a", 1).needs_output
    with pytest.raises(TypeError):
        O.channel("a", 1) + "b"
    with pytest.raises(ValueError, match="layer:channel"):
        O.as_objective("conv2")


def test_custom_objective_with_wrap_objective():
    @O.wrap_objective
    def mean_of(layer, scale=1.0):
        def inner(T):
            return T(layer).mean() * scale

        return inner

    obj = mean_of("conv1", scale=2.0)
    assert repr(obj) == "mean_of('conv1', scale=2.0)" and obj.layers == {"conv1"}
    before, after = _gain(CONV, obj, (1, 3, 16, 16), steps=10)
    assert after > before


def _hooks(model):
    return {n: len(m._forward_hooks) for n, m in model.named_modules() if m._forward_hooks}


def test_only_needed_layers_hooked_and_hooks_removed():
    p = P.image(16, 16)
    with optvis.Visualization(CONV, O.channel("conv1", 1) + O.neuron("conv2", 0), p, transforms=None):
        assert set(_hooks(CONV)) == {"conv1", "conv2"}
    assert _hooks(CONV) == {}
    optvis.render(CONV, O.channel("conv2", 1), size=16, steps=2, progress=False)
    assert _hooks(CONV) == {}


def test_hooks_and_model_state_restored_after_exception():
    model = tiny_conv().train()
    model.conv1.weight.requires_grad_(False)  # a user's frozen layer stays frozen, the rest trainable
    with pytest.raises(IndexError, match="channel 99"):
        optvis.render(model, O.channel("conv2", 99), size=16, steps=3, progress=False)
    assert _hooks(model) == {}
    assert model.training and all(m.training for m in model.modules())
    assert not model.conv1.weight.requires_grad and model.conv2.weight.requires_grad
    with pytest.raises(KeyError, match="conv3"):
        optvis.render(model, O.channel("conv3", 0), size=16, steps=1, progress=False)
    assert _hooks(model) == {}


class _Counter(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x


def test_forward_stops_after_the_last_needed_layer():
    counter = _Counter()
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), counter, nn.Conv2d(4, 4, 3))
    optvis.render(model, O.channel("0", 1), size=12, steps=3, progress=False)
    assert counter.calls == 0
    optvis.render(model, O.channel("3", 1), size=12, steps=3, progress=False)
    assert counter.calls == 3


def test_ctc_target_too_long_for_the_output_is_a_clear_error():
    with pytest.raises(ValueError, match="wider image"):
        optvis.render(CRNN, O.ctc_target([1, 1, 1, 1, 1]), size=(8, 6), steps=1, progress=False)
