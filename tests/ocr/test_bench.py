"""``dawnet bench``: profiles, Pareto fronts, the comparison of two runs, and the smoke profile end to end."""

import json

import pytest

from dawnet.cli import main
from dawnet.ocr.bench import PROFILES, compare, pareto_front


def test_profiles_state_an_equal_budget_and_use_the_right_detector():
    assert set(PROFILES) == {"smoke", "cpu", "full"}
    for p in PROFILES.values():
        assert p.rec_steps > 0 and p.rec_batch > 0 and p.det_steps > 0
        assert f"{p.rec_steps} steps x {p.rec_batch} lines per recognizer" in p.budget()
    assert PROFILES["cpu"].detector == "yolo" and PROFILES["full"].detector == "yolo_large"
    assert PROFILES["full"].lines is None  # the published splits in full


def test_pareto_front_keeps_the_points_nothing_beats():
    pts = [(1.0, 50.0), (2.0, 40.0), (3.0, 45.0), (4.0, 10.0), (0.5, 90.0), (4.0, 12.0)]
    assert pareto_front(pts) == [4, 0, 1, 3]


def _results(cer_test, seed=0, profile="cpu"):
    rec = [
        {
            "model": "crnn",
            "decoder": "greedy",
            "set": "test",
            "cer": cer_test,
            "wer": 0.5,
            "word_accuracy": 0.5,
            "one_minus_ned": 0.8,
        }
    ]
    return {
        "format": "dawnet.bench",
        "profile": {"name": profile},
        "seed": seed,
        "recognition": rec,
        "detection": [{"model": "yolo", "preset": "yolo", "map50": 0.9, "map": 0.6}],
        "pipeline": [{"detector": "yolo", "recognizer": "crnn", "page_cer": 0.3}],
        "models": {"crnn": {"gflops": 1.3, "latency_ms_b1": 10.0, "train_seconds": 100.0}},
        "data": {"hw-lines-v1": {"spec_digest": "abc"}},
        "machine": {"cpu_model": "x", "torch_threads": 2},
    }


def test_compare_sets_runs_side_by_side_with_differences_and_protocol_warnings():
    text = compare(_results(0.20), _results(0.15, seed=1))
    row = next(line for line in text.splitlines() if "cer test" in line)
    assert "20.00" in row and "15.00" in row and "-5.00" in row
    assert "seeds differ (0 vs 1)" in text
    same = compare(_results(0.2), _results(0.2))
    assert "Protocol differences" not in same
    with pytest.raises(ValueError, match="not a dawnet bench"):
        compare({"format": "other"}, _results(0.2))


def test_compare_command_reads_folders_and_reports_bad_files(tmp_path, capsys):
    for name, cer in (("a", 0.4), ("b", 0.3)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(_results(cer)))
    assert main(["bench", "compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "-10.00" in out
    assert main(["bench", "compare", str(tmp_path / "a"), str(tmp_path / "missing.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


ACCURACY = ("cer", "wer", "word_accuracy", "one_minus_ned", "line_accuracy")


@pytest.mark.slow
def test_smoke_profile_end_to_end_and_reproducible(tmp_path, capsys):
    data = tmp_path / "data"
    assert (
        main(
            [
                "bench",
                "--profile",
                "smoke",
                "--out",
                str(tmp_path / "run1"),
                "--data-dir",
                str(data),
                "--quiet",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "| crnn" in printed and "| attn" in printed and "mAP@0.5" in printed and "page CER" in printed
    run = tmp_path / "run1"
    for f in (
        "results.json",
        "report.md",
        "models/crnn.pt",
        "models/attn.pt",
        "models/yolo.pt",
        "models/charlm.json.gz",
        "figures/pareto-gflops.png",
        "figures/pareto-latency.png",
        "figures/history-crnn.png",
        "figures/history-yolo.png",
    ):
        assert (run / f).is_file(), f
    r = json.loads((run / "results.json").read_text())
    sets = {(x["model"], x["decoder"], x["set"]) for x in r["recognition"]}
    assert {("crnn", "greedy", s) for s in ("seen", "test", "digits")} <= sets
    assert {m for m, d, _ in sets} == {"crnn", "attn"}
    # the English LM decodes the text lines only; digit strings get beam search without it
    assert {(d, s) for m, d, s in sets if m == "crnn"} == {
        ("greedy", "seen"), ("greedy", "test"), ("greedy", "digits"),
        ("beam3+lm", "seen"), ("beam3+lm", "test"), ("beam3", "digits")}
    for name in ("crnn", "attn", "yolo"):
        m = r["models"][name]
        assert m["params"] > 0 and m["gflops"] > 0 and m["latency_ms_b1"] > 0 and m["train_steps"] > 0
    assert 0 <= r["detection"][0]["map50"] <= 1 and len(r["pipeline"]) == 2
    assert r["data"]["pages-v1"]["manifest_sha256"] and r["versions"]["torch"]
    report = (run / "report.md").read_text()
    assert "## Protocol" in report and "Budget" in report and "pareto-gflops.png" in report

    # the same seed on the same machine reproduces the accuracy columns exactly (the data is reused)
    assert (
        main(
            [
                "bench",
                "--profile",
                "smoke",
                "--out",
                str(tmp_path / "run2"),
                "--data-dir",
                str(data),
                "--quiet",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    r2 = json.loads((tmp_path / "run2" / "results.json").read_text())
    assert [{k: x[k] for k in ACCURACY} for x in r["recognition"]] == [
        {k: x[k] for k in ACCURACY} for x in r2["recognition"]
    ]
    assert [x["map"] for x in r["detection"]] == [x["map"] for x in r2["detection"]]
    assert [x["page_cer"] for x in r["pipeline"]] == [x["page_cer"] for x in r2["pipeline"]]
