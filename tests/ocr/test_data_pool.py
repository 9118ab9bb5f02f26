"""The pinned font pool of the v2 specs: lock and cache agree, exclusions hold on the real fonts, splits are
disjoint, balanced and stable. Needs the cache that set-up fetches (scripts/fetch-fonts)."""

import copy
import hashlib
import json
import shutil
from collections import Counter

import pytest

from dawnet.ocr.data import fontpool
from dawnet.ocr.data.fontpool import FontPoolError, cache_dir, load_lock, pool_families, pool_fonts, split_of
from dawnet.ocr.data.fonts import exclusion_reason, joins_letters
from dawnet.ocr.data.specs import POOL_LOCK_SHA256, SPLITS, pool_splits, spec
from dawnet.ocr.data.text import TEXT_ALPHABET

LOCK = load_lock()
BY_ID = {f["id"]: f for f in LOCK["families"]}


def _path(family_id: str, k: int = 0) -> str:
    fam = BY_ID[family_id]
    return fontpool._file_path(fam, fam["files"][k], cache_dir())


def _mini_lock(ids):
    lock = copy.deepcopy(LOCK)
    lock["families"] = [copy.deepcopy(BY_ID[i]) for i in ids]
    return lock


def _copy_cache(lock, dest):
    for fam in lock["families"]:
        for f in fam["files"]:
            rel = fontpool._rel(fam, f["name"])
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(cache_dir() / rel, dest / rel)


def test_the_lock_is_the_pinned_one_and_the_cache_matches_it():
    assert hashlib.sha256(fontpool.LOCK_PATH.read_bytes()).hexdigest() == POOL_LOCK_SHA256
    assert fontpool.verify_cache() == []
    src = LOCK["category_source"]
    assert src["package"] == "google-font-metadata" and src["category"] == "handwriting"
    assert src["families"] == sum(f["source"] == "fontsource" for f in LOCK["families"])
    for fam in pool_families():
        assert fam["files"] and all(len(f["sha256"]) == 64 for f in fam["files"])
        if fam["source"] == "fontsource":
            assert fam["integrity"].startswith("sha512-") and fam["package"] == f"@fontsource/{fam['id']}"
            assert fam["files"][0]["name"].startswith(f"{fam['id']}-latin-")


def test_a_changed_byte_or_a_missing_file_is_caught(tmp_path):
    lock = _mini_lock(["caveat", "indie-flower"])
    _copy_cache(lock, tmp_path)
    assert fontpool.verify_cache(tmp_path, lock) == []
    fonts = pool_fonts(["Caveat", "Indie Flower"], tmp_path, lock, probe=TEXT_ALPHABET)
    assert [f.sha256 for f in fonts] == [f["sha256"] for fam in lock["families"] for f in fam["files"]]
    assert [f.family for f in fonts] == ["Caveat", "Caveat", "Indie Flower"]  # Caveat has a 700 variant
    victim = tmp_path / fontpool._rel(BY_ID["caveat"], BY_ID["caveat"]["files"][0]["name"])
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 1
    victim.write_bytes(bytes(data))
    assert fontpool.verify_cache(tmp_path, lock) == [str(victim)]
    with pytest.raises(FontPoolError, match=r"differs from fonts-lock.json .*Fix: delete it and run scripts/fetch-"):
        pool_fonts(["Caveat"], tmp_path, lock)
    victim.unlink()
    with pytest.raises(FontPoolError, match=r"Caveat \(@fontsource/caveat\) is missing: .*Fix: run scripts/fetch-"):
        pool_fonts(["Caveat"], tmp_path, lock)
    assert "\n" not in str(pytest.raises(FontPoolError, pool_fonts, ["Caveat"], tmp_path, lock).value)


def test_fetch_is_a_checksum_pass_when_cached(tmp_path):
    lock = _mini_lock(["caveat", "rock-salt"])
    _copy_cache(lock, tmp_path)
    summary = fontpool.fetch(tmp_path, lock, progress=False)
    assert summary["fetched"] == 0 and summary["downloaded_bytes"] == 0 and summary["files"] == 3
    assert fontpool.is_pool_cache(tmp_path) and not fontpool.is_pool_cache(tmp_path / "fontsource")


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DAWNET_FONTS_DIR", str(tmp_path / "a"))
    assert cache_dir() == tmp_path / "a" and cache_dir(tmp_path / "b") == tmp_path / "b"
    monkeypatch.delenv("DAWNET_FONTS_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x" / "dawnet" / "fonts"


def test_exclusion_rules_on_real_fonts():
    assert exclusion_reason(_path("caveat")) is None and BY_ID["caveat"]["split"] in SPLITS
    for caps in ("rock-salt", "walter-turncoat", "amatic-sc"):  # lowercase drawn as capitals / small caps
        assert exclusion_reason(_path(caps))[0] == "caps" and BY_ID[caps]["rule"] == "caps"
    humor = BY_ID["fonts-humor-sans:humor-sans"]  # Debian's caps-only hand
    assert humor["rule"] == "caps" and exclusion_reason(_path("fonts-humor-sans:humor-sans"))[0] == "caps"
    assert exclusion_reason(_path("league-script"))[0] == "pictorial"  # outline letters fall apart
    rule, reason = exclusion_reason(_path("ballet"))
    assert rule == "coverage" and reason == "does not draw '-'"
    assert joins_letters(_path("great-vibes")) and not joins_letters(_path("caveat"))


def test_metadata_exclusions():
    guides = [f for f in LOCK["families"] if f["id"].endswith("-guides")]
    assert len(guides) >= 50 and all(f.get("excluded") and not f["files"] for f in guides)
    for cjk in ("klee-one", "nanum-pen-script", "ma-shan-zheng"):
        assert BY_ID[cjk]["excluded"].startswith("CJK-first family")
    for dup in ("kristi", "comic-neue", "dancing-script", "kaushan-script"):
        assert BY_ID[dup]["source"] == "fontsource" and not BY_ID[dup].get("excluded")
    for dup in ("fonts-kristi:kristi", "fonts-comic-neue:comic-neue", "fonts-dancingscript:dancing-script",
                "fonts-kaushanscript:kaushan-script"):
        assert BY_ID[dup]["rule"] == "duplicate" and BY_ID[dup]["source"] == "debian"
    assert len(BY_ID) == len(LOCK["families"])  # ids are unique


@pytest.mark.slow
def test_every_lock_decision_holds_on_the_cached_files():
    """Re-derive each glyph-rule decision of the lock from the fetched bytes."""
    for fam in LOCK["families"]:
        if not fam["files"] or fam.get("rule") in ("metadata", "duplicate"):
            continue
        got = exclusion_reason(fontpool._file_path(fam, fam["files"][0], cache_dir()))
        assert (got[0] if got else None) == fam.get("rule"), fam["id"]
        if got is None:
            assert fam["class"] == fontpool.hand_class(fam["id"], joins_letters(_path(fam["id"])))


def test_splits_are_disjoint_large_and_mixed():
    splits = pool_splits()
    sets = {s: set(v) for s, v in splits.items()}
    assert not (sets["train"] & sets["val"] or sets["train"] & sets["test"] or sets["val"] & sets["test"])
    assert len(sets["train"]) >= 150 and len(sets["val"]) >= 15 and len(sets["test"]) >= 30
    kept = pool_families()
    overall = Counter(f["class"] for f in kept)
    for s in SPLITS:
        mix = Counter(f["class"] for f in kept if f["split"] == s)
        for c in fontpool.HAND_CLASSES:
            assert abs(mix[c] / sum(mix.values()) - overall[c] / len(kept)) < 0.12, (s, c, mix)
    assert spec("hw-lines-v2").fonts == splits and spec("pages-v2").fonts == splits


def test_adding_a_family_moves_no_other():
    for fam in pool_families():
        assert split_of(fam["id"]) == fam["split"]
    lock = copy.deepcopy(LOCK)
    before = {s: [f["family"] for f in pool_families(lock, s)] for s in SPLITS}
    for k in range(20):
        new = {"id": f"new-hand-{k}", "family": f"New Hand {k}", "source": "fontsource", "files": [],
               "class": "print", "split": split_of(f"new-hand-{k}")}
        lock["families"].append(new)
    after = {s: [f["family"] for f in pool_families(lock, s) if not f["id"].startswith("new-hand-")] for s in SPLITS}
    assert after == before
    assert {f["split"] for f in lock["families"] if f["id"].startswith("new-hand-")} == set(SPLITS)


def test_a_different_lock_is_refused(monkeypatch, tmp_path):
    other = tmp_path / "fonts-lock.json"
    lock = json.loads(fontpool.LOCK_PATH.read_text())
    lock["families"] = lock["families"][:-1]
    other.write_text(json.dumps(lock))
    monkeypatch.setattr(fontpool, "LOCK_PATH", other)
    with pytest.raises(FontPoolError, match="not the lock the v2 specs pin"):
        pool_splits()


def test_cli_fonts_show_and_list(tmp_path, capsys, monkeypatch):
    from PIL import Image

    from dawnet.cli import main

    assert main(["data", "fonts", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["bad"] == [] and summary["families"] == len(pool_families())
    assert summary["excluded"]["caps"] == 8 and sum(summary["splits"]["test"].values()) == len(pool_splits()["test"])
    sheet = tmp_path / "families.png"
    assert main(["data", "show", "hw-lines-v2", "--split", "val", "--families", "--out", str(sheet)]) == 0
    with Image.open(sheet) as im:
        assert im.mode == "L" and im.size == (1755, round((0.95 * 8 + 0.6) * 90))  # 24 families, 3 columns
    lines = tmp_path / "lines.png"
    assert main(["data", "show", "hw-lines-v2:smoke", "--split", "test", "-n", "5", "--out", str(lines)]) == 0
    assert lines.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "dawnet bench uses: lines hw-lines-v2, digits digits-v1, pages pages-v2" in out
    assert "hw-lines-v2 " in out and "39 families" in out
    monkeypatch.setenv("DAWNET_FONTS_DIR", str(tmp_path / "empty"))
    assert main(["data", "build", "hw-lines-v2:smoke", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "is missing" in err and err.rstrip().endswith("Fix: run scripts/fetch-fonts")
