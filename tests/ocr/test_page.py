"""Page OCR: crops, reading order, page CER against line CER, and the ``dawnet read --detector`` entry point.

The detector here is an *oracle*: a real ``nn.Module`` whose output encodes a page's true boxes exactly (what
a perfect detector emits), so the tests check the pipeline's geometry and scoring, not a training run.
"""

import json

import numpy as np
import pytest
import torch
from torch import nn

from dawnet.ocr.detection import DetectionAgent, assign_targets, encode_ltrb, grid_points, letterbox
from dawnet.ocr.page import crop_lines, evaluate_pages, read_page


class OracleDetector(nn.Module):
    """Emits the raw outputs of a perfect detector for the boxes it is given (canvas pixels)."""

    stride = 8

    def __init__(self, size: int):
        super().__init__()
        self.size = size
        self.weight = nn.Parameter(torch.zeros(1))  # the Agent needs a parameter to optimize
        self.boxes = torch.zeros(0, 4)

    def forward(self, x):
        h = x.shape[-1] // self.stride
        points = grid_points(h, h, self.stride)
        positive, targets = assign_targets(points, [self.boxes], self.stride)
        d = encode_ltrb(points, targets[0]).clamp(min=1e-3)
        out = torch.zeros(x.shape[0], 5, h, h)
        out[:, 0] = torch.where(positive[0], 8.0, -8.0).reshape(h, h)
        out[:, 1:] = torch.log(d / self.stride).T.reshape(4, h, h)
        return out + 0 * self.weight


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    from dawnet.ocr.data.fonts import find_fonts
    from dawnet.ocr.data.formats.records import PageRecord
    from dawnet.ocr.data.pages import PageConfig, PageSynthesizer
    from dawnet.ocr.data.synth import LineSynthesizer

    texts = ["the quick brown fox", "jumps over the lazy dog", "pack my box with", "five dozen liquor jugs"]
    synth = PageSynthesizer(
        LineSynthesizer(find_fonts(families=["Steve"])),
        texts,
        config=PageConfig(width=320, lines=(3, 4), digit_prob=0.0),
    )
    folder = tmp_path_factory.mktemp("pages")
    out = []
    for i in range(2):
        p = synth.render(10 + i)
        path = folder / f"p{i}.png"
        p.image.save(path)
        out.append(
            PageRecord(
                path=str(path),
                width=p.image.width,
                height=p.image.height,
                boxes=list(p.boxes),
                texts=list(p.texts),
                classes=[0] * len(p.boxes),
            )
        )
    return out


@pytest.fixture(scope="module")
def recognizer():
    import dawnet.ocr.models  # noqa: F401
    from dawnet.ocr.agents import CTCAgent
    from dawnet.ocr.charset import Charset
    from dawnet.registry import create_model

    torch.manual_seed(0)
    cs = Charset("abcdefghijklmnopqrstuvwxyz ")
    m = create_model("crnn_small", num_classes=cs.num_ctc_classes)
    return CTCAgent(m, torch.optim.SGD(m.parameters(), 0.1), charset=cs, device="cpu")


class OracleAgent(DetectionAgent):
    """Points the oracle at the true boxes of the page being read (looked up by its pixels)."""

    truth: dict = {}

    def prepare(self, raw):
        (x,) = super().prepare(raw)
        key = hash(np.asarray(raw).tobytes())
        boxes = torch.tensor(self.truth[key], dtype=torch.float32)
        from dawnet.ocr.detection import letterbox_boxes

        self.model.boxes = letterbox_boxes(boxes, self._letterbox)
        return (x,)


def oracle(pages, size=320, drop=None):
    m = OracleDetector(size)
    agent = OracleAgent(m, torch.optim.SGD(m.parameters(), 0.1), size=size, device="cpu")
    agent.truth = {}
    for p in pages:
        boxes = [b for i, b in enumerate(p.boxes) if i != drop]
        agent.truth[hash(np.asarray(p.load()).tobytes())] = boxes
    return agent


def test_crops_are_padded_by_line_height_and_clipped():
    from PIL import Image

    page = Image.new("L", (100, 80), 255)
    boxes = torch.tensor([[10.0, 10.0, 60.0, 30.0], [0.0, 70.0, 100.0, 80.0]])
    crops = crop_lines(page, boxes, pad=(0.5, 0.25))
    assert crops[0].size == (50 + 20, 20 + 10)  # 0.5 x 20 px each side in x, 0.25 x 20 px in y
    assert crops[1].size == (100, 13)  # clipped at the page edges; above: 2.5 px, widened to 3


def test_read_page_returns_lines_in_reading_order_in_page_pixels(pages, recognizer):
    page = pages[0]
    det = oracle(pages)
    result = read_page(page.load(), det, recognizer)
    assert len(result.lines) == len(page.boxes)
    ys = [ln.box[1] for ln in result.lines]
    assert ys == sorted(ys)
    got = torch.tensor([ln.box for ln in result.lines])
    truth = torch.tensor(sorted(page.boxes, key=lambda b: b[1]))
    assert torch.allclose(got, truth, atol=1.5)  # letterbox and back: within the resampling
    assert result.text.count("\n") == len(page.boxes) - 1
    assert set(result.seconds) == {"detect", "recognize"}
    json.dumps(result.to_dict())


def test_page_cer_matches_line_cer_with_perfect_boxes_and_grows_with_a_missed_line(pages, recognizer):
    perfect = evaluate_pages(oracle(pages), recognizer, pages, progress=False)
    assert perfect["detected_lines"] == perfect["lines"] == sum(len(p.boxes) for p in pages)
    assert abs(perfect["page_cer"] - perfect["line_cer_gt_boxes"]) < 0.05
    missed = evaluate_pages(oracle(pages, drop=1), recognizer, pages, progress=False)
    assert missed["detected_lines"] == perfect["lines"] - len(pages)
    assert missed["line_cer_gt_boxes"] == perfect["line_cer_gt_boxes"]  # the recognizer alone is unchanged
    assert missed["page_cer"] > perfect["page_cer"]


def test_evaluate_pages_needs_transcriptions(pages, recognizer):
    from dataclasses import replace

    bare = [replace(p, texts=[]) for p in pages]
    with pytest.raises(ValueError, match="transcription"):
        evaluate_pages(oracle(pages), recognizer, bare, progress=False)


def test_letterbox_of_a_numpy_page_matches_the_pil_page(pages):
    im = pages[0].load()
    a, _ = letterbox(im, 320)
    b, _ = letterbox(np.asarray(im), 320)
    assert torch.equal(a, b)


def test_read_command_reads_pages_with_detector_and_recognizer(tmp_path, pages, recognizer, capsys):
    """The page mode of ``dawnet read``: the read command's own parser, real checkpoints."""
    from dawnet.cli import build_parser
    from dawnet.commands import CommandError
    from dawnet.commands.read import read_pages
    from dawnet.ocr.models.yolo import yolo

    m = yolo(size=320)
    det = DetectionAgent(m, torch.optim.SGD(m.parameters(), 0.1), size=320, score_threshold=0.0, device="cpu")
    det.save(tmp_path / "det.pt")
    recognizer.save(tmp_path / "rec.pt")
    read = build_parser("read")

    def parse(argv):  # ``dawnet read ARGV`` as the command line gives it
        return read.parse_args(["read", *argv])

    args = parse(
        [
            "--detector",
            str(tmp_path / "det.pt"),
            "--recognizer",
            str(tmp_path / "rec.pt"),
            "--json",
            pages[0].path,
            pages[1].path,
        ]
    )
    assert read_pages(args) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["image"] for o in out] == [pages[0].path, pages[1].path]
    assert all(o["text"] == "\n".join(line["text"] for line in o["lines"]) for o in out)
    # the recognizer as the first positional argument, as in `dawnet read CHECKPOINT IMAGE`
    args = parse(
        ["--detector", str(tmp_path / "det.pt"), str(tmp_path / "rec.pt"), pages[0].path]
    )
    assert read_pages(args) == 0
    with pytest.raises(ValueError, match="not a text-line detector"):
        read_pages(
            parse(
                ["--detector", str(tmp_path / "rec.pt"), str(tmp_path / "rec.pt"), pages[0].path]
            )
        )
    with pytest.raises(CommandError, match="at least one page"):
        read_pages(
            parse(["--detector", str(tmp_path / "det.pt"), str(tmp_path / "rec.pt")])
        )
