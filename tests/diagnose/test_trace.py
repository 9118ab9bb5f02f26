"""Receptive fields against brute force, top-k patches against a naive sort, sensitivity targets."""

from __future__ import annotations

import copy
import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dawnet.diagnose.trace import (
    canonical,
    channel,
    ctc_logprob,
    feature_layout,
    logit,
    neuron,
    occlusion,
    receptive_field,
    sensitivity,
    to_input_space,
    top_patches,
)


# ---------------------------------------------------------------------------------------------
# small models: the shapes that broke other tools
# ---------------------------------------------------------------------------------------------
class CRNN(nn.Module):
    """Grayscale line -> conv with (2, 1) pooling -> BiLSTM -> (N, T, C) logits."""

    def __init__(self, classes: int = 11, hidden: int = 12):
        super().__init__()
        self.cnn = nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(1, 8, 3, padding=1), relu1=nn.ReLU(), pool1=nn.MaxPool2d(2, 2),
            conv2=nn.Conv2d(8, 16, 3, padding=1), relu2=nn.ReLU(), pool2=nn.MaxPool2d((2, 1), (2, 1)),
            conv3=nn.Conv2d(16, 16, 3, padding=1), bn3=nn.BatchNorm2d(16), relu3=nn.ReLU(inplace=True),
            pool3=nn.MaxPool2d((2, 1), (2, 1)),
            conv4=nn.Conv2d(16, 24, (2, 1)), relu4=nn.ReLU(),
        ))
        self.rnn = nn.LSTM(24, hidden, bidirectional=True, batch_first=True)
        self.head = nn.Linear(2 * hidden, classes)

    def forward(self, x):
        f = self.cnn(x)  # (N, 24, 1, W/2)
        seq = f.squeeze(2).permute(0, 2, 1)  # (N, T, 24)
        out, _ = self.rnn(seq)
        return self.head(out)  # (N, T, classes)


class Block(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.short = nn.Conv2d(cin, cout, 1, stride) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x):
        return torch.relu(self.conv2(torch.relu(self.conv1(x))) + self.short(x))


class ResNet(nn.Module):
    """Residual blocks with a strided 1x1 shortcut branch."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.block1 = Block(8, 8)
        self.block2 = Block(8, 16, stride=2)

    def forward(self, x):
        return self.block2(self.block1(torch.relu(self.stem(x))))


class Dilated(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(OrderedDict(
            c1=nn.Conv2d(1, 6, 3, padding=1), a1=nn.LeakyReLU(0.1),
            c2=nn.Conv2d(6, 6, 3, padding=2, dilation=2), a2=nn.LeakyReLU(0.1),
            c3=nn.Conv2d(6, 6, (3, 5), padding=(4, 0), dilation=(4, 2)), a3=nn.Tanh(),
        ))

    def forward(self, x):
        return self.body(x)


class RGBNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(3, 8, 5, stride=2, padding=2), relu1=nn.ReLU(),
            pool1=nn.AvgPool2d(3, 2, ceil_mode=True),
            conv2=nn.Conv2d(8, 8, (3, 1), padding="same"), relu2=nn.ReLU(),
            pad=nn.ZeroPad2d((1, 0, 2, 1)), conv3=nn.Conv2d(8, 8, 2, stride=(1, 2)),
        ))
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        f = self.features(x)
        return self.fc(f.mean(dim=(2, 3)))


def brute_force_boxes(model, layer_fn, shape, big=1e3, seed=0, tol=1e-3):
    """Per output position, the bounding box of the input pixels whose perturbation moves it.

    Perturbs one pixel at a time (all channels, both signs, one batch with the base image
    inside so every sample runs the same kernel) and records which outputs move by > tol.
    An output that moves only by rounding stays below tol; a real dependence moves by ~big.
    Positions that read no pixel (pure padding) map to None.
    """
    m = copy.deepcopy(model).eval()
    c, h, w = shape
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(1, c, h, w, generator=g)
    xs = [base]
    for sign in (1.0, -1.0):
        pert = base.repeat(h * w, 1, 1, 1)
        idx = torch.arange(h * w)
        pert.view(h * w, c, h * w)[idx, :, idx] += sign * big
        xs.append(pert)
    x = torch.cat(xs)
    with torch.no_grad():
        f = layer_fn(m, x)  # (B, C, *S)
    moved = ((f[1:] - f[:1]).abs().amax(dim=1) > tol).reshape(2, h * w, -1).any(0)  # (pixels, S)
    feat = tuple(f.shape[2:])
    boxes = {}
    for flat in range(moved.shape[1]):
        pix = torch.nonzero(moved[:, flat]).flatten()
        ys, xs_ = pix // w, pix % w
        pos = tuple(divmod(flat, feat[1])) if len(feat) == 2 else (flat,) if feat else ()
        boxes[pos] = (int(ys.min()), int(xs_.min()), int(ys.max()) + 1, int(xs_.max()) + 1) if len(pix) else None
    return boxes


def same_box(rf_box, truth):
    if truth is None:  # reads only padding: an empty box
        half = len(rf_box) // 2
        return any(rf_box[half + i] <= rf_box[i] for i in range(half))
    return rf_box == truth


def layer_fn(name, layout=None):
    def run(model, x):
        from dawnet.diagnose.probe import probe

        with probe(model, name) as p:
            model(x)
            out = p[name]
        mod = dict(model.named_modules())[name] if name != "output" else model
        return canonical(out, feature_layout(mod, out, layout))

    return run


def seeded(cls, seed=0):
    torch.manual_seed(seed)
    m = cls()
    m.eval()
    return m


# ---------------------------------------------------------------------------------------------
# receptive fields
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layer", ["cnn.pool1", "cnn.conv3", "cnn.relu4"])
def test_crnn_analytic_rf_matches_brute_force_per_axis(layer):
    model = seeded(CRNN)
    shape = (1, 16, 24)
    rf = receptive_field(model, layer, shape)
    assert rf.method == "analytic" and rf.agree is True, rf.checks
    truth = brute_force_boxes(model, layer_fn(layer), shape)
    for pos, box in truth.items():
        assert same_box(rf.box(*pos), box), (layer, pos)


def test_crnn_conv4_height_and_width_differ():
    """(2, 1) pooling: the height field grows while the width jump stays at 2."""
    rf = receptive_field(seeded(CRNN), "cnn.conv4", (1, 16, 24))
    h, w = rf.axes["height"], rf.axes["width"]
    # size grows by (k - 1) * jump per layer; jump multiplies by the stride.
    # height: conv1 3 -> pool1 +1 (j 2) -> conv2 +4 -> pool2 +2 (j 4) -> conv3 +8 -> pool3 +4 (j 8) -> conv4 +8
    # width:  conv1 3 -> pool1 +1 (j 2) -> conv2 +4 -> pool2 (k 1) -> conv3 +4 -> pool3 (k 1) -> conv4 (k 1)
    assert (h.size, h.jump) == (30, 8)
    assert (w.size, w.jump) == (12, 2)


def test_crnn_sequence_layer_rf_is_whole_width_and_matches_brute_force():
    model = seeded(CRNN)
    shape = (1, 16, 24)
    rf = receptive_field(model, "rnn", shape)
    assert rf.method == "empirical" and "recurrent" in rf.analytic_reason
    assert rf.layout == "NTC" and rf.feature_axes == ("width",)
    assert math.isinf(rf.axes["width"].size)
    truth = brute_force_boxes(model, layer_fn("rnn"), shape)
    for (t,), box in truth.items():
        assert same_box(rf.box(t), box)
    assert 0 < rf.empirical["width"]["effective_size"] < 24


def test_crnn_logits_rf_via_output():
    model = seeded(CRNN)
    rf = receptive_field(model, "output", (1, 16, 24))
    assert rf.layout == "NTC" and rf.feature_shape == (12,)
    truth = brute_force_boxes(model, layer_fn("output"), (1, 16, 24))
    assert all(same_box(rf.box(*p), b) for p, b in truth.items())


def test_residual_rf_is_empirical_and_matches_brute_force():
    model = seeded(ResNet)
    shape = (1, 20, 22)
    rf = receptive_field(model, "block2", shape)
    assert rf.analytic is None and "merge" in rf.analytic_reason
    truth = brute_force_boxes(model, layer_fn("block2"), shape)
    centre = tuple(n // 2 for n in rf.feature_shape)
    # the empirical centre box equals brute force, and the derived size/jump reproduce interior boxes
    (y0, x0, y1, x1) = truth[centre]
    assert rf.empirical["height"]["size"] == y1 - y0 and rf.empirical["width"]["size"] == x1 - x0
    assert rf.axes["height"].jump == 2 and rf.axes["width"].jump == 2
    interior = [p for p, b in truth.items() if b[0] > 0 and b[1] > 0 and b[2] < shape[1] and b[3] < shape[2]]
    assert interior
    for pos in interior:
        assert rf.box(*pos) == truth[pos]
    # inside a block the chain holds: conv1 of block2 is analytic and agrees
    inner = receptive_field(model, "block1.conv1", shape)
    assert inner.method == "analytic" and inner.agree


def test_dilated_rf_analytic_equals_brute_force():
    model = seeded(Dilated)
    shape = (1, 30, 28)
    rf = receptive_field(model, "body.a3", shape)
    assert rf.method == "analytic" and rf.agree
    assert rf.axes["height"].size == 1 + 2 + 4 + 8 and rf.axes["width"].size == 1 + 2 + 4 + 8
    truth = brute_force_boxes(model, layer_fn("body.a3"), shape)
    assert all(same_box(rf.box(*p), b) for p, b in truth.items())


def test_rgb_rf_with_ceil_mode_same_padding_and_zero_pad():
    model = seeded(RGBNet)
    shape = (3, 23, 29)
    for layer in ("features.pool1", "features.conv2", "features.conv3"):
        rf = receptive_field(model, layer, shape)
        assert rf.method == "analytic" and rf.agree, (layer, rf.checks)
        truth = brute_force_boxes(model, layer_fn(layer), shape)
        assert all(same_box(rf.box(*p), b) for p, b in truth.items()), layer


def test_functional_pool_is_not_trusted_analytically():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 4, 3, padding=1)
            self.b = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            return self.b(F.max_pool2d(self.a(x), 2))

    model = seeded(Functional)
    rf = receptive_field(model, "b", (1, 16, 16))
    assert rf.method == "empirical" and "functional" in rf.analytic_reason
    with pytest.raises(ValueError, match="empirical"):
        receptive_field(model, "b", (1, 16, 16), method="analytic")
    assert rf.axes["height"].jump == 2 and rf.axes["height"].size == 3 + 1 + 2 * 2


def test_to_input_space_aligns_peaks_to_field_centres():
    model = seeded(RGBNet)
    rf = receptive_field(model, "features.conv1", (3, 24, 24), method="analytic")
    amap = torch.zeros(rf.feature_shape)
    amap[3, 5] = 1.0
    up = to_input_space(amap, rf, mode="nearest")
    assert up.shape == (24, 24)
    cy, cx = rf.center(3, 5)
    assert up[int(cy), int(cx)] == 1.0 and up.sum() > 0
    seq_rf = receptive_field(seeded(CRNN), "rnn", (1, 16, 24))
    up = to_input_space(torch.arange(12.0), seq_rf)
    assert up.shape == (16, 24) and torch.all(up[0] == up[-1])


def test_rf_json_round_trip_and_bad_input():
    import json

    rf = receptive_field(seeded(CRNN), "rnn", (1, 16, 24))
    d = json.loads(json.dumps(rf.to_dict()))
    assert d["axes"]["width"]["size"] is None and d["layer"] == "rnn"
    with pytest.raises(ValueError, match="input_shape"):
        receptive_field(seeded(CRNN), "rnn", (16,))
    with pytest.raises(KeyError, match="Did you mean"):
        receptive_field(seeded(CRNN), "cnn.conv", (1, 16, 24))


# ---------------------------------------------------------------------------------------------
# top-k patches
# ---------------------------------------------------------------------------------------------
def _images(n=37, shape=(1, 16, 24), seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, *shape), generator=g)


@pytest.mark.parametrize("distinct", [True, False])
def test_top_patches_equal_naive_sort(distinct):
    model = seeded(CRNN)
    x = _images()
    loader = DataLoader(TensorDataset(x, torch.zeros(len(x))), batch_size=5)
    chans = [0, 3, 7]
    k = 6
    res = top_patches(model, "cnn.conv3", loader, channels=chans, k=k, distinct=distinct, progress=False)
    with torch.no_grad():
        f = layer_fn("cnn.conv3")(model, x)  # (N, C, h, w)
    s = f.shape[2] * f.shape[3]
    for i, c in enumerate(chans):
        fc = f[:, c].reshape(len(x), s)
        if distinct:
            v, pos = fc.max(dim=1)
            order = torch.argsort(v, descending=True)[:k]
            want = [(int(n), int(pos[n])) for n in order]
            want_v = v[order]
        else:
            v, idx = fc.flatten().sort(descending=True)
            want = [(int(j) // s, int(j) % s) for j in idx[:k]]
            want_v = v[:k]
        got = [(int(res.image_index[i, j]), res.positions[i][j][0] * f.shape[3] + res.positions[i][j][1])
               for j in range(k)]
        assert got == want
        torch.testing.assert_close(res.values[i], want_v)
        for j, (n, _) in enumerate(want):
            y0, x0, y1, x1 = res.boxes[i][j]
            assert y1 > y0 and x1 > x0
            torch.testing.assert_close(res.patches[i][j], x[n, :, y0:y1, x0:x1])
            assert res.boxes[i][j] == res.rf.box(*res.positions[i][j])
    assert res.images_seen == len(x)


def test_top_patches_for_lstm_units_and_character_logits():
    model = seeded(CRNN)
    x = _images(20)
    loader = DataLoader(x, batch_size=8)
    res = top_patches(model, "rnn", loader, channels=[0, 13], k=4, progress=False)
    assert res.rf.layout == "NTC" and all(len(p) == 1 for row in res.positions for p in row)
    # effective window, not the whole line
    assert all(p.shape[-1] < 24 for row in res.patches for p in row)
    res = top_patches(model, "output", loader, channels=[2], k=3, progress=False)
    with torch.no_grad():
        out = model(x)[:, :, 2]  # (N, T)
    v, t = out.max(dim=1)
    order = torch.argsort(v, descending=True)[:3]
    assert [int(i) for i in res.image_index[0]] == [int(i) for i in order]
    assert [p[0] for p in res.positions[0]] == [int(t[i]) for i in order]


def test_top_patches_bad_channels():
    with pytest.raises(ValueError, match="out of range"):
        top_patches(seeded(CRNN), "cnn.conv1", DataLoader(_images(4), batch_size=2), channels=[99], progress=False)


# ---------------------------------------------------------------------------------------------
# sensitivity
# ---------------------------------------------------------------------------------------------
def test_logit_target_is_one_class_not_summed():
    model = seeded(CRNN)
    x = _images(2)
    s = sensitivity(model, x, logit(cls=4, t=5))
    xr = x.clone().requires_grad_(True)
    model(xr)[:, 5, 4].sum().backward()
    torch.testing.assert_close(s.gradient, xr.grad)
    xs = x.clone().requires_grad_(True)
    model(xs)[:, 5, :].sum().backward()  # what "time step t, all classes" would give
    assert not torch.allclose(s.gradient, xs.grad)
    assert s.heatmap.shape == (2, 16, 24)


def test_neuron_gradient_lives_inside_its_receptive_field():
    model = seeded(CRNN)
    rf = receptive_field(model, "cnn.conv3", (1, 16, 24))
    s = sensitivity(model, _images(1), neuron("cnn.conv3", 2, 1, 4))
    y0, x0, y1, x1 = rf.box(1, 4)
    inside = s.heatmap[0, y0:y1, x0:x1].sum()
    assert inside > 0 and torch.isclose(inside, s.heatmap[0].sum())


def test_ctc_logprob_matches_ctc_loss_and_smoothgrad_runs():
    model = seeded(CRNN)
    x = _images(1)
    t = ctc_logprob("ab", alphabet="abcdefghij")
    s = sensitivity(model, x, t, method="grad_x_input")
    with torch.no_grad():
        lp = model(x).log_softmax(-1).permute(1, 0, 2)
    want = -F.ctc_loss(lp, torch.tensor([[1, 2]]), torch.tensor([12]), torch.tensor([2]), reduction="sum")
    torch.testing.assert_close(s.value, want.reshape(1))
    with pytest.raises(ValueError, match="not in the alphabet"):
        ctc_logprob("az", alphabet="abc")
    sg = sensitivity(model, x, channel("cnn.conv2", 1), method="smoothgrad", samples=3)
    assert sg.heatmap.shape == (1, 16, 24) and sg.heatmap.sum() > 0


def test_occlusion_finds_the_pixel_a_neuron_reads():
    model = seeded(RGBNet)
    x = torch.rand(1, 3, 24, 24)
    tgt = neuron("features.conv1", 0, 4, 4)
    rf = receptive_field(model, "features.conv1", (3, 24, 24))
    occ = occlusion(model, x, tgt, window=3, stride=1, fill=0.0)
    y0, x0, y1, x1 = rf.box(4, 4)
    outside = occ[0].clone()
    outside[max(0, y0 - 2):y1 + 2, max(0, x0 - 2):x1 + 2] = 0
    assert occ[0].abs().sum() > 0 and outside.abs().sum() == 0
    region = occlusion(model, x, tgt, window=2, stride=1, region=(y0, x0, y1, x1))
    assert region[0, :y0].abs().sum() == 0


def test_zero_initialised_branch_hides_from_functional_but_not_structural_rf():
    """A residual branch whose last conv starts at zero (zero-init-last) carries no gradient: the
    model as it is looks through the shortcut only, while the architecture sees further."""
    model = seeded(ResNet)
    shape = (1, 20, 22)
    truth = brute_force_boxes(model, layer_fn("block2"), shape)  # all branches live
    with torch.no_grad():
        model.block1.conv2.weight.zero_()
        model.block2.conv2.weight.zero_()
    rf = receptive_field(model, "block2", shape)
    centre = tuple(n // 2 for n in rf.feature_shape)
    y0, x0, y1, x1 = truth[centre]
    assert rf.axes["height"].size == y1 - y0 and rf.axes["width"].size == x1 - x0  # architecture: 13
    # as the weights are, only stem -> block1 shortcut (identity) -> block2 1x1 stride-2 shortcut is live
    assert rf.empirical["height"]["functional_size"] == 3
    dead = brute_force_boxes(model, layer_fn("block2"), shape)[centre]
    assert dead[2] - dead[0] == 3
