"""render(): Lucid's defaults, determinism, model state restored, device/dtype, no resize, outputs."""

import importlib
import inspect

import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from dawnet.diagnose import optvis
from dawnet.diagnose.optvis import objectives as O
from dawnet.diagnose.optvis import param as P
from dawnet.diagnose.optvis import transform as T

R = importlib.import_module("dawnet.diagnose.optvis.render")  # the module; optvis.render is the function



def _net(channels=3):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(channels, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
    )


def test_defaults_are_lucids(monkeypatch):
    seen = {}
    real = R.Visualization.__init__

    def spy(self, model, objective, param, transforms=None, optimizer=None, *a, **k):
        real(self, model, objective, param, transforms, optimizer, *a, **k)
        seen.update(param=self.param, transforms=self.transforms, optimizer=self.optimizer)

    monkeypatch.setattr(R.Visualization, "__init__", spy)
    res = optvis.render(_net(), O.channel("4", 1), steps=1, progress=False)
    assert (
        isinstance(seen["param"], P.FFTImage)
        and seen["param"].decorrelate
        and seen["param"].valid == "sigmoid"
    )
    assert seen["param"].shape == (1, 3, 128, 128)
    assert isinstance(seen["optimizer"], torch.optim.Adam) and seen["optimizer"].defaults["lr"] == 0.05
    assert repr(seen["transforms"]) == repr(T.standard_transforms())
    assert list(res.tensors) == [1]
    assert inspect.signature(optvis.render).parameters["steps"].default == 512


def test_seed_makes_it_deterministic():
    net = _net()
    a = optvis.render(net, O.channel("4", 2), size=24, steps=6, seed=3, progress=False)
    b = optvis.render(net, O.channel("4", 2), size=24, steps=6, seed=3, progress=False)
    c = optvis.render(net, O.channel("4", 2), size=24, steps=6, seed=4, progress=False)
    assert torch.equal(a.final, b.final) and a.history == b.history
    assert not torch.equal(a.final, c.final)
    torch.manual_seed(9)
    d = optvis.render(net, O.channel("4", 2), size=24, steps=6, progress=False)
    torch.manual_seed(9)
    e = optvis.render(net, O.channel("4", 2), size=24, steps=6, progress=False)
    assert torch.equal(d.final, e.final)  # without a seed, torch.manual_seed still governs


def test_model_state_restored_and_weights_untouched():
    net = _net().train()
    net[0].bias.requires_grad_(False)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    optvis.render(net, O.channel("4", 2), size=16, steps=5, progress=False)
    assert net.training and all(m.training for m in net.modules())
    assert not net[0].bias.requires_grad and net[0].weight.requires_grad
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k  # BatchNorm statistics not updated: eval mode during render
    assert all(p.grad is None for p in net.parameters())


def test_thresholds_pil_figure_and_save(tmp_path):
    res = optvis.render(
        _net(1),
        O.channel("4", 0) - 0.1 * O.total_variation(),
        size=(20, 33),
        steps=8,
        thresholds=(0, 4, 8),
        batch=2,
        progress=False,
    )
    assert sorted(res.tensors) == [0, 4, 8] and res.tensors[8].shape == (2, 1, 20, 33)
    assert len(res.history) == 8
    assert res.images[4][1].size == (33, 20) and res.images[4][1].mode == "L"
    assert isinstance(res.figure, Figure)
    assert "total_variation" in res.objective
    res.save(tmp_path / "x.png")
    from PIL import Image

    with Image.open(tmp_path / "x.png") as im:
        assert im.size == (66, 20)
    with pytest.raises(ValueError, match="thresholds"):
        optvis.render(_net(), O.channel("4", 0), steps=4, thresholds=(5,), progress=False)


def test_no_resize_anywhere(monkeypatch):
    """Any H x W, any channel count: the model sees exactly the parameterized size; nothing interpolates."""

    def forbidden(*a, **k):
        raise AssertionError("resize called")

    monkeypatch.setattr(F, "interpolate", forbidden)
    monkeypatch.setattr(F, "upsample", forbidden)
    for channels, size in ((1, (37, 53)), (3, (64, 17)), (5, (16, 16))):
        net = _net(channels)
        shapes = []
        hook = net.register_forward_pre_hook(lambda m, args, seen=shapes: seen.append(tuple(args[0].shape)))
        res = optvis.render(net, O.channel("4", 1), size=size, steps=3, progress=False)
        hook.remove()
        assert set(shapes) == {(1, channels, *size)}
        assert res.final.shape == (1, channels, *size)


def test_runs_in_the_models_dtype_and_custom_optimizer():
    net = _net().double()
    seen = []
    net.register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype))
    res = optvis.render(
        net,
        O.channel("4", 1),
        size=12,
        steps=3,
        progress=False,
        optimizer=lambda ps: torch.optim.SGD(ps, lr=1.0),
        transforms=False,
    )
    assert seen == [torch.float64] * 3 and res.param.spectrum.dtype == torch.float64


def test_image_only_objective_skips_the_model():
    calls = []
    net = _net()
    net.register_forward_pre_hook(lambda m, a: calls.append(1))
    res = optvis.render(
        net, -O.L2(constant=0.25), size=12, steps=20, thresholds=(0, 20), progress=False, transforms=False
    )
    assert calls == []  # nothing to compute in the model
    assert abs(float(res.final.mean()) - 0.25) < abs(float(res.tensors[0].mean()) - 0.25)
    assert res.history[-1] > res.history[0]


def test_preprocess_runs_after_the_transforms():
    seen = []
    net = _net(1)
    net.register_forward_pre_hook(lambda m, a: seen.append(float(a[0].detach().min())))

    def normalize(x):
        return (x - 0.5) / 0.25

    optvis.render(net, O.channel("4", 0), size=16, steps=3, preprocess=normalize, progress=False)
    assert min(seen) < 0  # [0, 1] images were normalized before the model saw them


def test_deepdream_from_a_real_image_keeps_its_size():
    start = torch.linspace(0, 1, 21 * 34).view(1, 1, 21, 34)
    net = _net(1).eval()
    res = optvis.render(net, O.deepdream("4"), init=start, steps=20, thresholds=(0, 20), progress=False)
    assert res.tensors[0].shape == res.tensors[20].shape == (1, 1, 21, 34)
    torch.testing.assert_close(res.tensors[0], start.clamp(1e-3, 1 - 1e-3), atol=1e-4, rtol=0)
    with torch.no_grad():  # the layer's energy on the images themselves (no transforms)
        energy = [float(net[:5](res.tensors[t]).pow(2).mean()) for t in (0, 20)]
    assert energy[1] > energy[0]


def test_nan_objective_is_reported():
    bad = O.Objective(lambda T: T("4").mean() * float("nan"), "nan", ["4"])
    with pytest.raises(FloatingPointError, match="learning rate"):
        optvis.render(_net(), bad, size=12, steps=2, progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_lstm_backprop_in_eval_mode():
    """cuDNN refuses LSTM backward in eval mode: RNNs run in train mode with dropout 0, then are restored."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.rnn = nn.LSTM(32, 8, num_layers=2, dropout=0.3, batch_first=True)

        def forward(self, x):
            return self.rnn(self.conv(x).flatten(1, 2).transpose(1, 2))[0]

    m = M().cuda().eval()
    # no random transforms: with them, 5 steps on this tiny LSTM move the objective less than their noise
    res = optvis.render(m, O.channel("rnn", 3), size=(8, 20), steps=20, transforms=[], seed=0, progress=False)
    assert res.history[-1] > res.history[0]
    assert not m.rnn.training and m.rnn.dropout == 0.3
