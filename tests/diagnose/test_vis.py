"""Figures: each returns a matplotlib Figure that shows what was asked, and refuses bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from nets import TinyCRNN
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from dawnet.diagnose.edit import compare, stroke
from dawnet.diagnose.probe import capture
from dawnet.diagnose.trace import logit, neuron, receptive_field, sensitivity, top_patches
from dawnet.diagnose.vis import (
    activation_histograms,
    biases,
    conv_weights,
    feature_maps,
    figure_png,
    heatmap_overlay,
    patch_grid,
    save_figure,
)


def make_net(cin: int = 1) -> nn.Module:
    """conv1 (6), pool (2, 2), conv2 (10), pool (2, 1), BiLSTM (4 units), head: (N, W / 2, 5) on 8 px lines."""
    return TinyCRNN(classes=5, height=8, channels=(6, 10), hidden=4, in_channels=cin)


@pytest.fixture
def net():
    torch.manual_seed(0)
    return make_net().eval()


def bar_heights(ax) -> list[float]:
    """Heights of the bars drawn as vertical lines (one LineCollection)."""
    return [seg[1][1] - seg[0][1] for seg in ax.collections[0].get_segments()]


def images(n=6, h=8, w=20, seed=0):
    return torch.rand(n, 1, h, w, generator=torch.Generator().manual_seed(seed))


def test_feature_maps_grid_scales_and_colorbars(net):
    acts, _ = capture(net, ["cnn.conv2", "rnn"], images(1))
    fig = feature_maps(acts["cnn.conv2"], channels=[0, 3, 5])
    assert isinstance(fig, Figure)
    maps = [im for ax in fig.axes for im in ax.get_images()]
    assert len(maps) == 3
    assert len({im.get_clim() for im in maps}) == 1  # shared scale
    want = acts["cnn.conv2"][0, [0, 3, 5]]
    assert maps[0].get_clim() == pytest.approx((float(want.min()), float(want.max())))
    np.testing.assert_allclose(maps[1].get_array(), acts["cnn.conv2"][0, 3].numpy())
    own = feature_maps(acts["cnn.conv2"], shared_scale=False)
    images_ = [im for ax in own.axes for im in ax.get_images()]
    assert len(images_) == 10 and len({im.get_clim() for im in images_}) > 1
    assert len(own.axes) >= 20  # one colour bar per map
    seq = feature_maps(acts["rnn"], layout="NTC")
    assert seq.axes[0].get_images()[0].get_array().shape == (8, 10)  # 8 units x 10 time steps
    with pytest.raises(ValueError, match="out of range"):
        feature_maps(acts["cnn.conv2"], channels=[99])
    assert figure_png(fig)[:8] == b"\x89PNG\r\n\x1a\n"


def test_conv_weights_first_layer_images_and_deep_norms(net):
    fig = conv_weights(net.cnn.conv1)
    ims = [im for ax in fig.axes for im in ax.get_images()]
    assert len(ims) == 6
    np.testing.assert_allclose(ims[2].get_array(), net.cnn.conv1.weight[2, 0].detach().numpy())
    rgb = conv_weights(make_net(cin=3).cnn.conv1)
    assert [ax.get_images()[0].get_array().shape for ax in rgb.axes if ax.get_images()][0] == (3, 3, 3)
    deep = conv_weights(net.cnn.conv2)
    norms = net.cnn.conv2.weight.detach().flatten(1).norm(dim=1).numpy()
    np.testing.assert_allclose(bar_heights(deep.axes[0]), norms, rtol=1e-5)


def test_biases_and_histograms(net):
    fig = biases(net)
    titles = [ax.get_title() for ax in fig.axes]
    assert any(t.startswith("cnn.conv1") for t in titles) and any("rnn" in t for t in titles)
    head = next(ax for ax in fig.axes if ax.get_title().startswith("head"))
    np.testing.assert_allclose(bar_heights(head), net.head.bias.detach().numpy(), rtol=1e-6)
    acts, _ = capture(net, ["cnn.relu1", "cnn.conv2"], images(2))
    hist = activation_histograms(acts)
    relu_zeros = float((acts["cnn.relu1"] == 0).float().mean())
    assert f"zeros {relu_zeros:.0%}" in hist.axes[0].get_title()
    with pytest.raises(ValueError, match="no layer with a bias"):
        biases(nn.Conv2d(1, 2, 3, bias=False))


def test_patch_grid_and_sensitivity_overlay(net, tmp_path):
    x = images(10)
    top = top_patches(net, "cnn.conv2", DataLoader(x, batch_size=4), channels=[1, 4], k=3, progress=False)
    fig = top.figure()
    shown = [ax.get_images()[0].get_array() for ax in fig.axes if ax.get_images()]
    assert len(shown) == 6
    np.testing.assert_allclose(shown[0], top.patches[0][0][0].numpy())
    with pytest.raises(ValueError, match="not ranked"):
        patch_grid(top, channels=[2])
    s = sensitivity(net, x[:1], logit(cls=2, t=3))
    ov = s.figure(x[0])
    assert isinstance(ov, Figure)
    rf = receptive_field(net, "cnn.conv2", (1, 8, 20))
    box = rf.box(1, 4)
    ov = heatmap_overlay(x[0], sensitivity(net, x[:1], neuron("cnn.conv2", 0, 1, 4)).heatmap[0], box=box)
    assert ov.axes[1].patches  # the field's outline
    save_figure(ov, tmp_path / "sub" / "s.png")
    with Image.open(tmp_path / "sub" / "s.png") as im:
        assert im.size[0] > 100


def test_edit_report_figure(net):
    x = images(1)
    edited = stroke(x[0], [(2, 3), (6, 10)], width=2)
    rep = compare(net, x[0], edited, ["cnn.conv2", "rnn"])
    fig = rep.figure("cnn.conv2", n=3)
    assert isinstance(fig, Figure) and len(fig.axes) == 3 + 3 * 3  # images, then before/after/change per channel
    change = fig.axes[5].get_images()[0].get_array()
    c = rep.top_channels("cnn.conv2", 1)[0][0]
    np.testing.assert_allclose(change, rep.layers["cnn.conv2"].delta[0, c].numpy(), rtol=1e-6)
    fig = rep.figure("rnn")
    assert isinstance(fig, Figure)


# ---------------------------------------------------------------------------------------------
# the CLI writes these figures from a real checkpoint (a CTC recognizer) and a real line image
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def recognizer_checkpoint(tmp_path_factory):
    from PIL import ImageDraw, ImageFont

    from dawnet.ocr.agents import CTCAgent
    from dawnet.ocr.charset import Charset
    from dawnet.ocr.models.recognizer import crnn_small

    d = tmp_path_factory.mktemp("diag")
    cs = Charset("abcdefghijklmnopqrstuvwxyz ")
    torch.manual_seed(0)
    model = crnn_small(num_classes=cs.num_ctc_classes)
    agent = CTCAgent(model, torch.optim.SGD(model.parameters(), lr=0.01), charset=cs, device="cpu")
    agent.save(d / "crnn.pt")
    im = Image.new("L", (160, 40), 255)
    ImageDraw.Draw(im).text((6, 10), "hello world", fill=0, font=ImageFont.load_default(size=18))
    im.save(d / "line.png")
    return d


@pytest.mark.slow
def test_cli_figures_rf_and_layers(recognizer_checkpoint, capsys):
    import json

    from dawnet.cli import main

    d = recognizer_checkpoint
    ckpt, img, out = str(d / "crnn.pt"), str(d / "line.png"), d / "figs"
    rc = main(["diagnose", ckpt, "--image", img, "--layer", "backbone.layers.4", "--layer", "seq",
               "--channels", "1", "2", "--sensitivity", "1", "--out", str(out), "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    names = sorted(Path(f).name for f in report["files"])
    assert names == sorted([
        "input.png", "backbone_layers_4_maps.png", "backbone_layers_4_c1_on_input.png",
        "backbone_layers_4_c1_sensitivity.png", "backbone_layers_4_weights.png", "seq_maps.png",
        "seq_c1_on_input.png", "seq_c1_sensitivity.png", "activation_histograms.png", "biases.png",
        "report.json"])
    for f in report["files"][:-1]:
        with Image.open(f) as im:
            im.verify()  # a whole PNG, not a truncated or empty file
    assert json.loads((out / "report.json").read_text())["layers"] == report["layers"]
    rf = report["layers"]["backbone.layers.4"]["receptive_field"]
    assert rf["method"] == "analytic" and rf["agree"] is True
    assert report["layers"]["seq"]["layout"] == "NTC" and report["layers"]["seq"]["channels"] == [1, 2]
    from dawnet.agent import Agent

    assert report["answer"] == Agent.load(ckpt).read(img)[0].text  # what the agent reads from that image

    assert main(["diagnose", "rf", ckpt, "--layer", "backbone", "--json"]) == 0
    rf = json.loads(capsys.readouterr().out)
    assert rf["input_shape"] == [1, 32, 256] and rf["axes"]["height"]["jump"] != rf["axes"]["width"]["jump"]
    assert main(["diagnose", "rf", ckpt, "--layer", "seq", "--input-shape", "1,32,96"]) == 0
    text = capsys.readouterr().out
    assert "recurrent" in text and "width: size whole axis" in text
    torch.set_num_threads(2)
    assert main(["diagnose", "layers", ckpt]) == 0
    assert "seq.rnn" in capsys.readouterr().out
    assert torch.get_num_threads() == 1  # the default: one thread
    assert main(["diagnose", "layers", ckpt, "--threads", "2", "--json"]) == 0
    assert torch.get_num_threads() == 2
    assert "seq.rnn" in [row["name"] for row in json.loads(capsys.readouterr().out)]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--top", "0"], "argument --top: must be an integer >= 1, got 0"),
        (["--sensitivity", "-1"], "argument --sensitivity: must be an integer >= 0, got -1"),
        (["--threads", "0"], "argument --threads: must be an integer >= 1, got 0"),
    ],
)
def test_cli_checks_option_ranges_first(tmp_path, capsys, argv, message):
    from dawnet.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["diagnose", str(tmp_path / "never-read.pt"), "--layer", "seq", *argv])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"dawnet diagnose: error: {message}"


def test_cli_errors_name_the_fix(recognizer_checkpoint, capsys):
    from dawnet.cli import main

    d = recognizer_checkpoint
    ckpt = str(d / "crnn.pt")
    assert main(["diagnose", str(d / "missing.pt"), "--image", "x.png", "--layer", "seq"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["diagnose", "rf", ckpt, "--layer", "backbone.layer"]) == 2
    assert "Did you mean" in capsys.readouterr().err
    assert main(["diagnose", ckpt, "--layer", "seq"]) == 2
    assert "--image" in capsys.readouterr().err
    assert main(["diagnose", ckpt, "--image", str(d / "line.png"), "--layer", "seq", "--channels", "999",
                 "--out", str(d / "bad")]) == 2
    assert "out of range" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_on_a_classifier_vector_layer(tmp_path, capsys):
    import json

    from dawnet.cli import main
    from toy import make_agent

    agent = make_agent()
    agent.save(tmp_path / "toy.pt")
    Image.fromarray((np.random.default_rng(0).random((12, 12)) * 255).astype("uint8")).save(tmp_path / "im.png")
    rc = main(["diagnose", str(tmp_path / "toy.pt"), "--image", str(tmp_path / "im.png"), "--layer", "head",
               "--top", "2", "--sensitivity", "1", "--out", str(tmp_path / "o"), "--trust-code", "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    head = report["layers"]["head"]
    assert head["layout"] == "NC" and len(head["channels"]) == 2
    assert head["values"][str(head["channels"][0])] == pytest.approx(max(report["answer"][0]), rel=1e-5)
    assert {"head_weights.png", f"head_c{head['channels'][0]}_sensitivity.png"} <= {Path(f).name for f in
                                                                                    report["files"]}
