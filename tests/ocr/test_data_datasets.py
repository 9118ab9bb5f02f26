"""Datasets: fixed height, aspect kept, ink-bright tensors, collate with lengths, width bucketing."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from dawnet.ocr.charset import Charset, UnknownCharacterError
from dawnet.ocr.data.datasets import (
    LineAugment,
    LineDataset,
    PageDataset,
    WidthBucketSampler,
    collate_lines,
    collate_pages,
    padding_fraction,
    to_tensor,
)
from dawnet.ocr.data.formats import PageRecord, write_tsv

TEXTS = ["a", "hello there", "hi", "a long line of text here", "mid size", "xy"]


@pytest.fixture()
def tsv(tmp_path):
    samples = []
    for t in TEXTS:
        a = np.full((40, 20 + 12 * len(t)), 220, np.uint8)
        a[10:30, 4:8 + 10 * len(t)] = 30
        samples.append((Image.fromarray(a), t))
    return write_tsv(samples, tmp_path)


def test_items_have_fixed_height_kept_aspect_and_bright_ink(tsv):
    ds = LineDataset(tsv, height=32)
    assert len(ds) == len(TEXTS)
    it = ds[3]
    x = it["image"]
    assert x.shape[:2] == (1, 32) and x.dtype == torch.float32
    assert x.shape[-1] == round((20 + 12 * len(TEXTS[3])) * 32 / 40) == it["width"]
    assert x.min() >= 0 and x.max() <= 1
    assert abs(x[0, 0, 0].item() - (1 - 220 / 255)) < 1e-3  # paper is dark
    assert x[0, 16, 10].item() > 0.8  # ink is bright
    assert ds.widths() == [ds[i]["width"] for i in range(len(ds))]


def test_collate_pads_with_background_and_encodes_targets(tsv):
    cs = Charset.from_texts(TEXTS)
    ds = LineDataset(tsv, height=32, charset=cs)
    batch = collate_lines([ds[0], ds[3], ds[5]])
    w = batch["widths"].tolist()
    assert batch["images"].shape == (3, 1, 32, max(w))
    assert batch["images"][0, :, :, w[0]:].abs().sum() == 0 and batch["mask"][0].sum() == w[0]
    assert batch["texts"] == ["a", TEXTS[3], "xy"]
    assert batch["target_lengths"].tolist() == [1, len(TEXTS[3]), 2]
    assert batch["targets"].tolist() == cs.encode("a") + cs.encode(TEXTS[3]) + cs.encode("xy")
    assert collate_lines([ds[0]], pad_to_multiple=16)["images"].shape[-1] % 16 == 0


def test_unknown_characters_fail_at_construction(tsv):
    with pytest.raises(UnknownCharacterError, match="'y'"):
        LineDataset(tsv, charset=Charset("a helotr"))


def test_width_bucketing_covers_all_and_wastes_less_padding():
    rng = np.random.default_rng(0)
    widths = rng.integers(20, 600, size=1000).tolist()
    smp = WidthBucketSampler(widths, batch_size=16, seed=1)
    batches = smp.batches()
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert len(batches) == len(smp) == 63
    naive = [list(range(i, min(i + 16, 1000))) for i in range(0, 1000, 16)]
    assert padding_fraction(widths, batches) < 0.5 * padding_fraction(widths, naive)
    assert smp.batches() == batches  # same epoch, same batches
    smp.set_epoch(1)
    assert smp.batches() != batches
    assert all(len(b) == 16 for b in WidthBucketSampler(widths, 16, drop_last=True).batches())


def test_dataloader_with_bucket_sampler(tsv):
    ds = LineDataset(tsv, height=24, charset=Charset.from_texts(TEXTS))
    dl = DataLoader(ds, batch_sampler=WidthBucketSampler(ds.widths(), 2), collate_fn=collate_lines)
    seen = [t for b in dl for t in b["texts"]]
    assert sorted(seen) == sorted(TEXTS)


def test_augmentation_is_seeded_and_changes_the_image(tsv):
    ds = LineDataset(tsv, height=32, augment=LineAugment(p=1.0), seed=5)
    plain = LineDataset(tsv, height=32)
    a, b = ds[3]["image"], ds[3]["image"]
    assert torch.equal(a, b)
    assert a.shape != plain[3]["image"].shape or not torch.equal(a, plain[3]["image"])
    ds.set_epoch(1)
    assert not torch.equal(ds[3]["image"], a)


def test_page_dataset_letterboxes_boxes(tmp_path):
    path = tmp_path / "p.png"
    Image.new("L", (400, 200), 255).save(path)
    page = PageRecord(path=str(path), width=400, height=200, boxes=[(100, 50, 300, 100)], texts=["t"], classes=[0])
    it = PageDataset([page], size=200)[0]
    assert it["image"].shape == (1, 200, 200) and it["scale"] == 0.5 and it["offset"] == (0, 50)
    assert it["boxes"].tolist() == [[50.0, 75.0, 150.0, 100.0]]
    batch = collate_pages([it, it])
    assert batch["images"].shape == (2, 1, 200, 200) and batch["texts"] == [["t"], ["t"]]
    orig = (batch["boxes"][0] - batch["offsets"][0].repeat(2)) / batch["scales"][0]
    assert orig.tolist() == [[100.0, 50.0, 300.0, 100.0]]


# -- images through dawnet.images; blank lines counted (issue 18 item 2) -----------------------------------


def test_blank_lines_are_flagged_per_item_per_batch_and_listed(tmp_path):
    lines = [(Image.fromarray(np.where(np.arange(60)[None, :] % 7 < 3, 30, 220).astype(np.uint8).repeat(20, 0)),
              "ink"),
             (Image.new("L", (60, 20), 255), "white"),
             (Image.fromarray(np.full((20, 60), 200, np.uint8) + np.eye(20, 60, dtype=np.uint8) * 6), "faint"),
             (Image.new("L", (60, 20), 0), "black")]
    ds = LineDataset(write_tsv(lines, tmp_path), height=16)
    assert [ds[i]["blank"] for i in range(4)] == [False, True, True, True]
    batch = collate_lines([ds[i] for i in range(4)])
    assert batch["blank"] == [False, True, True, True]
    assert ds.blank_lines() == [batch["sources"][1], batch["sources"][2], batch["sources"][3]]
    assert batch["sources"][1].endswith("labels.tsv:2")
    augmented = LineDataset(write_tsv(lines, tmp_path), height=16, augment=LineAugment(p=1.0))
    assert [augmented[i]["blank"] for i in range(4)] == [False, True, True, True]  # as read, not as augmented


def test_a_16_bit_line_gives_the_tensor_of_its_8_bit_original(tmp_path):
    a = np.full((40, 90), 235, np.uint8)
    a[12:28, 10:80:3] = 25
    Image.fromarray(a).save(tmp_path / "l8.png")
    Image.fromarray(a.astype(np.uint16) * 257).save(tmp_path / "l16.png")
    (tmp_path / "labels.tsv").write_text("l8.png\tline\nl16.png\tline\n", encoding="utf-8")
    ds = LineDataset(tmp_path / "labels.tsv", height=32)
    assert torch.equal(ds[0]["image"], ds[1]["image"]) and not ds[1]["blank"]


def test_widths_follow_exif_rotation_as_items_do(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 8  # stored 40 wide x 120 high, shown 120 wide x 40 high
    a = np.full((120, 40), 230, np.uint8)
    a[10:100, 15:25] = 20
    Image.fromarray(a).save(tmp_path / "r.png", exif=exif)
    (tmp_path / "labels.tsv").write_text("r.png\trotated\n", encoding="utf-8")
    ds = LineDataset(tmp_path / "labels.tsv", height=20)
    assert ds.widths() == [ds[0]["width"]] == [60]


def test_to_tensor_reads_rgba_alpha_ink_like_its_gray_original():
    a = np.full((20, 50), 255, np.uint8)
    a[5:15, 5:45] = 0
    rgba = Image.fromarray(np.dstack([np.full_like(a, 255)] * 3 + [255 - a]), mode="RGBA")
    assert torch.equal(to_tensor(rgba, 20), to_tensor(Image.fromarray(a), 20))
    assert to_tensor(rgba, 20).max() == 1.0


def test_widths_of_page_level_lines_are_the_crops_sizes_without_decoding(tmp_path, monkeypatch):
    from dawnet.ocr.data.formats import read_page_xml

    page = Image.new("L", (300, 200), 255)
    page.paste(40, (20, 30, 131, 50))
    page.save(tmp_path / "page.png")
    (tmp_path / "page.xml").write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<PcGts xmlns="http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15">'
        '<Page imageFilename="page.png" imageWidth="300" imageHeight="200"><TextRegion id="r">'
        '<Coords points="0,0 299,0 299,199 0,199"/>'
        '<TextLine id="a"><Coords points="20.6,30 130.2,30.4 130.2,49.5 20.6,49.5"/>'
        "<TextEquiv><Unicode>polygon line</Unicode></TextEquiv></TextLine>"
        '<TextLine id="b"><Coords points="250,150 340,150 340,190 250,190"/>'
        "<TextEquiv><Unicode>runs off the page</Unicode></TextEquiv></TextLine>"
        "</TextRegion></Page></PcGts>", encoding="utf-8")
    records = read_page_xml(tmp_path / "page.xml")
    assert [r.load().size for r in records] == [(111, 20), (50, 41)]
    ds = LineDataset(records, height=20)
    expected = [ds[i]["width"] for i in range(len(ds))]
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", lambda self: pytest.fail("widths() decoded pixels"))
    assert [r.size() for r in records] == [(111, 20), (50, 41)]
    assert ds.widths() == expected == [111, 24]
