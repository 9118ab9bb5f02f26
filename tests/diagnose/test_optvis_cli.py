"""``dawnet visualize``: a layer's channel, a class, a line a recognizer reads, and clear errors."""

import json

import pytest
import torch
from digit_reader import H, train_tiny_crnn  # tests/diagnose/digit_reader.py
from nets import TinyCRNN
from PIL import Image

import dawnet
from dawnet.cli import main


@pytest.fixture(scope="module")
def toy_checkpoint(tmp_path_factory):
    import toy  # tests/toy.py: a registered classifier (conv, BatchNorm, dropout)

    path = tmp_path_factory.mktemp("vis") / "toy.pt"
    agent = toy.make_agent()
    agent.learn(next(iter(toy.loader())))
    agent.save(path)
    return path


@dawnet.register_model("optvis_test_crnn")
class ReaderCRNN(TinyCRNN):
    """The tiny digit CRNN of digit_reader with the recognizer interface the OCR agents use."""

    height, in_chans, num_classes, min_width, head_kind = H, 1, 11, 2, "ctc"

    def __init__(self):
        super().__init__(classes=11, height=H, channels=(16, 32), hidden=32, log_probs=True)

    def forward(self, x, widths=None):
        out = super().forward(x)  # (N, T, 11) log-probabilities
        lengths = (
            torch.full((x.shape[0],), out.shape[1], dtype=torch.long) if widths is None else (widths + 1) // 2
        )
        return out, lengths


@pytest.fixture(scope="module")
def recognizer_checkpoint(tmp_path_factory):
    """A CTC agent around a CRNN trained to read digit strings, saved and loadable with Agent.load."""
    from dawnet.ocr.agents import CTCAgent
    from dawnet.ocr.charset import Charset

    model = ReaderCRNN()
    model.load_state_dict(train_tiny_crnn().state_dict())  # trained once per session, shared with inversion
    agent = CTCAgent(
        model, torch.optim.Adam(model.parameters(), 1e-3), charset=Charset("0123456789"), device="cpu"
    )
    path = tmp_path_factory.mktemp("vis") / "crnn.pt"
    agent.save(path)
    return path


def test_channel_of_a_layer(toy_checkpoint, tmp_path, capsys):
    out, fig = tmp_path / "ch.png", tmp_path / "fig.png"
    code = main(
        [
            "visualize",
            str(toy_checkpoint),
            "--layer",
            "features.4",
            "--channel",
            "3",
            "--steps",
            "24",
            "--size",
            "20",
            "30",
            "--out",
            str(out),
            "--figure",
            str(fig),
            "--json",
            "--quiet",
        ]
    )
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    assert res["objective"] == "channel('features.4', 3)" and res["size"] == [20, 30] and res["channels"] == 1
    assert res["final"] > res["start"]
    with Image.open(out) as im:
        assert im.size == (30, 20) and im.mode == "L"  # exactly the size asked for, grey like the model
    assert fig.exists()


def test_unit_class_and_layer_listing(toy_checkpoint, tmp_path, capsys):
    assert main(["visualize", str(toy_checkpoint), "--list-layers"]) == 0
    assert "features.4\tConv2d" in capsys.readouterr().out
    out = tmp_path / "u.png"
    assert (
        main(
            [
                "visualize",
                str(toy_checkpoint),
                "--layer",
                "features.0",
                "--channel",
                "1",
                "--neuron",
                "5",
                "5",
                "--steps",
                "8",
                "--size",
                "16",
                "--batch",
                "2",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    assert "objective: neuron('features.0', 1, 5, 5)" in capsys.readouterr().out
    with Image.open(out) as im:
        assert im.size == (32, 16)  # the batch side by side
    assert (
        main(
            [
                "visualize",
                str(toy_checkpoint),
                "--class",
                "2",
                "--steps",
                "8",
                "--size",
                "16",
                "--out",
                str(out),
                "--quiet",
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["objective"] == "class_logit(2)"


def test_readme_channel_command_on_a_recognizer_uses_its_line_height(tmp_path, capsys):
    """README: `dawnet visualize CKPT --layer backbone.layers.4 --channel 12 --out ch12.png` on a recognizer
    (the default size used to be 128 x 128, which a 32 px line model refuses)."""
    from dawnet.ocr.agents import CTCAgent
    from dawnet.ocr.charset import Charset
    from dawnet.ocr.models.recognizer import crnn_small

    cs = Charset("abc ")
    torch.manual_seed(0)
    model = crnn_small(num_classes=cs.num_ctc_classes)
    ckpt, out = tmp_path / "crnn.pt", tmp_path / "ch12.png"
    CTCAgent(model, torch.optim.SGD(model.parameters(), lr=0.01), charset=cs, device="cpu").save(ckpt)
    argv = ["visualize", str(ckpt), "--layer", "backbone.layers.4", "--channel", "12", "--out", str(out)]
    assert main([*argv, "--steps", "2", "--json", "--quiet"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["objective"] == "channel('backbone.layers.4', 12)" and res["steps"] == 2
    assert res["size"] == [32, 128] and res["channels"] == 1
    with Image.open(out) as im:
        assert im.size == (128, 32) and im.mode == "L"
    assert main([*argv, "--steps", "1", "--size", "16", "64", "--quiet"]) == 2
    assert "the model reads lines 32 px high, but the image would be 16 px: pass --size 32 W" in capsys.readouterr().err


@pytest.mark.slow
def test_read_makes_a_recognizer_read_the_text(recognizer_checkpoint, tmp_path, capsys):
    out = tmp_path / "line.png"
    code = main(
        [
            "visualize",
            str(recognizer_checkpoint),
            "--read",
            "372",
            "--steps",
            "400",
            "--out",
            str(out),
            "--json",
            "--quiet",
        ]
    )
    res = json.loads(capsys.readouterr().out)
    assert code == 0 and res["satisfied"] and res["read"] == ["372"], res
    with Image.open(out) as im:
        assert im.size[1] == H  # the recognizer's line height
    # the written PNG itself reads "372" with the checkpoint
    assert main(["read", str(recognizer_checkpoint), str(out)]) == 0
    assert capsys.readouterr().out.strip() == "372"


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--out", "x.png"], "exactly one of"),
        (["--layer", "nope", "--channel", "0", "--out", "x.png"], "no layer named 'nope'"),
        (
            ["--layer", "features.4", "--channel", "99", "--steps", "2", "--size", "8", "--out", "x.png"],
            "channel 99",
        ),
        (["--layer", "features.4"], "--out is required"),
        (["--read", "abc", "--out", "x.png"], "recognizer"),
    ],
)
def test_errors_are_clear(toy_checkpoint, tmp_path, capsys, argv, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["visualize", str(toy_checkpoint), *argv, "--quiet"]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--steps", "0"], "argument --steps: must be an integer >= 1, got 0"),
        (["--batch", "-1"], "argument --batch: must be an integer >= 1, got -1"),
        (["--lr", "nan"], "argument --lr: must be a finite number > 0, got nan"),
        (["--size", "0"], "argument --size: must be an integer >= 1, got 0"),
        (["--threads", "0"], "argument --threads: must be an integer >= 1, got 0"),
    ],
)
def test_option_ranges_are_checked_before_loading(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        main(["visualize", str(tmp_path / "never-read.pt"), "--layer", "a", "--out", "x.png", *argv])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"dawnet visualize: error: {message}"


@pytest.mark.slow
def test_read_rejects_unknown_characters(recognizer_checkpoint, tmp_path, capsys):
    assert (
        main(["visualize", str(recognizer_checkpoint), "--read", "xyz", "--out", str(tmp_path / "x.png")])
        == 2
    )
    assert "xyz" in capsys.readouterr().err
    assert main(["visualize", "missing.pt", "--layer", "a", "--out", "x.png"]) == 2
