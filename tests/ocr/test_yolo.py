"""The YOLO text-line detector: registered presets, shapes, input checks, and that it learns."""

import numpy as np
import pytest
import torch

import dawnet
from dawnet.ocr.models.yolo import YOLO, yolo, yolo_large
from dawnet.registry import create_model, model_spec


def test_presets_are_registered_and_rebuild_from_their_spec():
    assert dawnet.list_models("yolo*") == ["yolo", "yolo_large"]
    m = create_model("yolo", size=320)
    spec = model_spec(m)
    assert spec["name"] == "yolo" and spec["kwargs"] == {"size": 320}
    small, large = yolo(), yolo_large()
    n_small = sum(p.numel() for p in small.parameters())
    n_large = sum(p.numel() for p in large.parameters())
    assert n_small < 1.5e6 < 5 * n_small < n_large  # a CPU model and a much larger GPU one


@pytest.mark.parametrize("factory", [yolo, yolo_large])
def test_forward_gives_objectness_and_four_distances_at_stride_8(factory):
    m = factory().eval()
    with torch.no_grad():
        out = m(torch.rand(2, 1, 256, 192))
    assert out.shape == (2, 5, 32, 24) and torch.isfinite(out).all()
    assert m.stride == 8


def test_objectness_starts_at_the_prior():
    m = yolo().eval()
    with torch.no_grad():
        p = m(torch.rand(1, 1, 128, 128))[:, 0].sigmoid()
    assert 0.001 < float(p.mean()) < 0.05  # near 0.01: the loss does not start swamped by background


def test_bad_inputs_get_clear_errors():
    m = yolo()
    with pytest.raises(ValueError, match="grayscale"):
        m(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="multiples of 32"):
        m(torch.rand(1, 1, 100, 64))
    with pytest.raises(ValueError, match="multiple of 32"):
        YOLO(size=500)
    with pytest.raises(ValueError, match="widths needs 5"):
        YOLO(widths=(8, 16))


def _pages(n, seed=0):
    from dawnet.ocr.data.fonts import find_fonts
    from dawnet.ocr.data.pages import PageConfig, PageSynthesizer
    from dawnet.ocr.data.synth import LineSynthesizer

    synth = PageSynthesizer(
        LineSynthesizer(find_fonts(families=["Steve"])),
        ["a line of handwriting", "the second line, a little longer than that", "end."],
        config=PageConfig(width=256, lines=(3, 6), digit_prob=0.0),
    )
    pages = []
    for i in range(n):
        p = synth.render(seed + i)
        pages.append((p.image, p.boxes))
    return pages


@pytest.mark.slow
def test_detector_overfits_a_few_pages(tmp_path):
    """A few pages learned to mAP@0.5 >= 0.9: the model, targets, loss and decoding fit together."""
    from dawnet.ocr.data.formats.records import PageRecord
    from dawnet.ocr.detection import DetectionAgent, DetectionDataset, detection_loader

    torch.manual_seed(0)
    rendered = _pages(4)
    records = []
    for i, (im, boxes) in enumerate(rendered):
        path = tmp_path / f"p{i}.png"
        im.save(path)
        records.append(
            PageRecord(
                path=str(path), width=im.width, height=im.height, boxes=list(boxes), classes=[0] * len(boxes)
            )
        )
    ds = DetectionDataset(records, size=256)
    m = yolo(size=256)
    opt = torch.optim.AdamW(m.parameters(), 3e-3)
    agent = DetectionAgent(m, opt, size=256, device="cpu", seed=0)
    before = agent.evaluate(detection_loader(ds, 4))
    agent.fit(detection_loader(ds, 4, shuffle=True), steps=150, progress=False)
    after = agent.evaluate(detection_loader(ds, 4))
    assert after["loss"] < 0.5 * before["loss"]
    assert after["map50"] >= 0.9, after
    # inference from a raw page finds the lines in page pixels
    im, boxes = rendered[0]
    found = agent.infer(np.asarray(im))["boxes"]
    from dawnet.ocr.detection import box_iou

    iou = box_iou(torch.tensor(boxes, dtype=torch.float), found)
    assert (iou.max(1).values > 0.5).all(), iou
