"""``dawnet bench``: profiles, the results schema, the table and report, cost, Pareto fronts, the comparison of
two runs, a bench checkpoint read in a fresh process, and the smoke profile end to end."""

import dataclasses
import json
import subprocess
import sys
import time

import pytest
import torch

from dawnet.cli import main
from dawnet.ocr.bench import (
    PROFILES,
    check_results,
    compare,
    format_table,
    get_profile,
    pareto_front,
    save_and_reload,
    train_recognizer,
    train_utilization,
    write_report,
)
from dawnet.ocr.bench.cost import median_time, recognizer_cost
from dawnet.ocr.bench.data import DIGITS, LINES, PAGES


def test_profiles_state_an_equal_budget_and_use_the_right_detector():
    assert set(PROFILES) == {"smoke", "cpu", "full"}
    for p in PROFILES.values():
        assert p.rec_steps > 0 and p.rec_batch > 0 and p.det_steps > 0
        assert f"{p.rec_steps} steps x {p.rec_batch} lines per recognizer" in p.budget()
    assert PROFILES["cpu"].detector == "yolo" and PROFILES["full"].detector == "yolo_large"
    # hw-lines training lines are rendered on the fly; the held-out splits are built (in full on GPUs)
    assert PROFILES["full"].lines == {"train": 0, "val": 3000, "test": 3000}
    assert PROFILES["cpu"].train_lines > 0 and PROFILES["full"].train_lines > 0


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


def _row(model, decoder, set_name, cer):
    return {"model": model, "decoder": decoder, "set": set_name, "lines": 10, "cer": cer, "wer": 2 * cer,
            "word_accuracy": 1 - 2 * cer, "line_accuracy": 0.5, "one_minus_ned": 1 - cer, "lines_per_s": 100.0,
            "blank_lines": 0}


def _model(params, gflops, b1, b32, train_s, what="1x32x400 line", **kw):
    return {"params": params, "gflops": gflops, "input": what, "latency_ms_b1": b1, "latency_batch": 32,
            "latency_ms_batch": b32, "throughput_per_s": 32000 / b32, "unknown_ops": {}, "train_seconds": train_s,
            "train_steps": 700, "batch_size": 16, "train_samples": 11200, "train_utilization": 0.0125,
            "checkpoint": "models/x.pt", **kw}


@pytest.fixture
def full_results():
    """A complete results.json of two recognizers, the detector and the pipeline (made-up numbers)."""
    rec = [_row("crnn", "greedy", "seen", 0.10), _row("crnn", "greedy", "test", 0.25),
           _row("crnn", "greedy", "digits", 0.05), _row("crnn", "beam3+lm", "seen", 0.09),
           _row("crnn", "beam3+lm", "test", 0.24), _row("crnn", "beam3", "digits", 0.04),
           _row("attn", "greedy", "seen", 0.08), _row("attn", "greedy", "test", 0.20),
           _row("attn", "greedy", "digits", 0.04)]
    return {
        "format": "dawnet.bench", "format_version": 1,
        "profile": {"name": "cpu", "description": "The default.", "latency_batch": 32, "augment": False,
                    "beam": 3, "lm_weight": 0.5, "lm_bonus": 1.0, "rec_lr": 2e-3, "det_lr": 3e-3},
        "budget": "700 steps x 16 lines per recognizer", "seed": 0, "created": "2026-12-08T01:00:00Z",
        "machine": {"device": "cpu", "processor": "x86_64", "cpu_model": "Test CPU", "cpu_count": 2,
                    "torch_threads": 2, "load_average": [1.0, 1.0, 1.0], "load_average_end": [2.0, 2.0, 2.0],
                    "peak_flops": 5e10},
        "versions": {"dawnet": "0.1", "torch": "2.x"},
        "normalization": "NFC",
        "models": {"crnn": _model(600000, 0.27, 9.5, 16.0, 300.4, kind="recognizer", head="ctc"),
                   "attn": _model(830000, 0.3, 23.1, 40.7, 420.6, kind="recognizer", head="attn"),
                   "yolo": _model(950000, 0.53, 65.1, 215.3, 200.0, "1x384x384 page", kind="detector",
                                  preset="yolo")},
        "recognition": rec,
        "detection": [{"model": "yolo", "preset": "yolo", "set": "pages", "pages": 40, "map50": 0.9, "map": 0.6}],
        "pipeline": [{"detector": "yolo", "recognizer": n, "decoder": "greedy", "page_cer": c, "page_wer": 2 * c,
                      "line_cer_gt_boxes": c - 0.05, "detected_lines": 290, "lines": 300, "seconds_per_page": 0.5}
                     for n, c in (("crnn", 0.3), ("attn", 0.25))],
        "data": {"hw-lines-v1": {"path": "d/hw", "spec": "hw-lines-v1", "size": "bench-cpu",
                                 "sizes": {"train": 4000, "test": 300}, "spec_digest": "abc123",
                                 "manifest_sha256": "0123456789abcdef0123", "build_seconds": 1.0},
                 "seen-fonts": {"lines": 150, "sha256": "fedcba9876543210ff", "what": "seen"}},
        "lm": {"order": 6, "train_lines": 1000, "held_out_lines": 100, "held_out_perplexity": 4.5, "seconds": 1.0,
               "path": "models/charlm.json.gz"},
        "seconds": 1200.0,
    }


def test_the_table_renders_every_model_decoder_and_set_from_the_results(full_results):
    assert format_table(full_results).splitlines() == [
        "| model | decoder  | params (M) | GFLOPs | ms b1 | ms b32 | train s | CER seen | CER test | CER digits "
        "| WER test | word acc test | 1-NED test | page CER |",
        "|-------|----------|------------|--------|-------|--------|---------|----------|----------|------------"
        "|----------|---------------|------------|----------|",
        "| crnn  | greedy   | 0.60       | 0.27   | 9.5   | 16.0   | 300     | 10.00    | 25.00    | 5.00       "
        "| 50.00    | 50.00         | 0.7500     | 30.00    |",
        "| crnn  | beam3+lm | 0.60       | 0.27   | 9.5   | 16.0   | 300     | 9.00     | 24.00    | -          "
        "| 48.00    | 52.00         | 0.7600     | -        |",
        "| crnn  | beam3    | 0.60       | 0.27   | 9.5   | 16.0   | 300     | -        | -        | 4.00       "
        "| -        | -             | -          | -        |",
        "| attn  | greedy   | 0.83       | 0.30   | 23.1  | 40.7   | 421     | 8.00     | 20.00    | 4.00       "
        "| 40.00    | 60.00         | 0.8000     | 25.00    |",
        "",
        "| detector    | params (M) | GFLOPs/page | ms b1 | ms b32 | train s | mAP@0.5 | mAP@0.5:0.95 | pages |",
        "|-------------|------------|-------------|-------|--------|---------|---------|--------------|-------|",
        "| yolo (yolo) | 0.95       | 0.53        | 65.1  | 215.3  | 200     | 90.00   | 60.00        | 40    |",
        "",
        "| pipeline    | page CER | page WER | line CER (true boxes) | lines found / true | s per page |",
        "|-------------|----------|----------|-----------------------|--------------------|------------|",
        "| yolo + crnn | 30.00    | 60.00    | 25.00                 | 290 / 300          | 0.50       |",
        "| yolo + attn | 25.00    | 50.00    | 20.00                 | 290 / 300          | 0.50       |",
    ]


def test_the_report_states_the_run_protocol_cost_and_data(full_results, tmp_path):
    path = write_report(full_results, tmp_path / "report.md")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "# dawnet bench: profile `cpu`"
    assert lines[4] == ("Run 2026-12-08T01:00:00Z, 20.0 minutes, seed 0, device cpu (Test CPU, 2 CPUs, 2 torch "
                        "threads, load average [1.0, 1.0, 1.0] at the start and [2.0, 2.0, 2.0] at the end).")
    assert ("- Recognizers train on the hw-lines-v2 + digits-v1 training lines (AdamW with weight decay 0.0001, "
            "super-convergence one-cycle 0.0002 -> 0.002 over 90% of the steps, then annihilation to 2e-06, "
            "gradient clip 5); the detector on the pages-v2 training pages (AdamW with weight decay 0.0001, "
            "super-convergence one-cycle 0.0003 -> 0.003 over 60% of the steps, then annihilation to 3e-06, "
            "gradient clip 10); no model selection on test data. Every model is scored as reloaded from its "
            "checkpoint file.") in lines
    assert any(ln.startswith("- Decoders: greedy, and beam 3 with the character 6-gram LM (weight 0.5, bonus 1.0 "
                             "per character; trained on 1000 LM lines, held-out perplexity 4.50)") for ln in lines)
    assert any(ln.endswith("training time / measured peak (50.0 GFLOP/s matmul).") for ln in lines)
    assert ("| crnn  | 1x32x400 line  | 600000 | 0.270  | 9.5   | 16.0   | 2000.0        | 700         | 300     "
            "| 1.25 %      |") in lines
    assert ("| yolo  | 1x384x384 page | 950000 | 0.530  | 65.1  | 215.3  | 148.6         | 700         | 200     "
            "| 1.25 %      |") in lines
    assert "| hw-lines-v1 | abc123      | {\"train\": 4000, \"test\": 300} | 0123456789abcdef |" in lines
    assert "| seen-fonts  | -           | 150                          | fedcba9876543210 |" in lines
    assert ("Training curves: [crnn](figures/history-crnn.png), [attn](figures/history-attn.png), "
            "[yolo](figures/history-yolo.png)") in lines
    assert lines[-3:] == ["## Versions", "", "dawnet 0.1, torch 2.x"]


def test_figures_plot_cer_against_cost_for_the_test_set(full_results, tmp_path):
    from dawnet.ocr.bench import draw_figures

    paths = draw_figures(full_results, tmp_path / "figures")
    assert paths == [tmp_path / "figures" / "pareto-gflops.png", tmp_path / "figures" / "pareto-latency.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(q.name for q in (tmp_path / "figures").iterdir()) == ["pareto-gflops.png", "pareto-latency.png"]


def test_compare_of_two_full_runs_lists_every_metric_and_what_differs(full_results):
    import copy

    other = copy.deepcopy(full_results)
    other["recognition"][1]["cer"] = 0.20  # crnn greedy on the unseen-font test lines: 25% -> 20%
    other["seed"], other["machine"]["torch_threads"] = 1, 1
    lines = compare(full_results, other).splitlines()
    assert lines[0] == "| model           | metric                   | A       | B       | B - A  |"
    assert "| crnn (greedy)   | cer test (%)             | 25.00   | 20.00   | -5.00  |" in lines
    assert "| crnn (greedy)   | cer seen (%)             | 10.00   | 10.00   | +0.00  |" in lines
    assert lines[-3:] == ["Protocol differences:", "- seeds differ (0 vs 1)",
                          "- machine torch_threads differs (2 vs 1): compare timings with care"]


def test_results_schema_is_checked_with_one_line_errors(full_results):
    assert check_results(full_results) is full_results
    with pytest.raises(ValueError, match=r"^not a dawnet bench results.json \(no 'format': 'dawnet.bench'\)$"):
        check_results([1, 2])
    with pytest.raises(ValueError, match=r"^results.json has format_version 2; this dawnet reads up to 1: "
                                         r"upgrade dawnet to read it$"):
        check_results({**full_results, "format_version": 2})
    assert get_profile("smoke") is PROFILES["smoke"]
    with pytest.raises(ValueError, match=r"^unknown profile 'tiny'; choose one of smoke, cpu, full$"):
        get_profile("tiny")


def test_training_utilization_is_three_forward_passes_per_sample_over_the_peak():
    # 3 x 0.5 GFLOPs x 1,000 samples = 1.5e12 FLOPs in 10 s = 1.5e11 FLOP/s of a 1e12 peak: 15%
    assert train_utilization(0.5, 1000, 10.0, 1e12) == pytest.approx(0.15)
    assert train_utilization(0.5, 1000, 10.0, None) is None
    assert train_utilization(0.5, 1000, 0.0, 1e12) is None


def test_median_time_warms_up_once_then_takes_the_median(monkeypatch):
    clock = iter([0.0, 3.0, 10.0, 11.0, 20.0, 22.0])  # the timed calls take 3 s, 1 s and 2 s
    calls = []
    monkeypatch.setattr(time, "perf_counter", lambda: next(clock))
    assert median_time(lambda: calls.append(1), repeats=3, device=torch.device("cpu")) == 2.0
    assert len(calls) == 4  # one untimed warm-up call first


def test_recognizer_cost_reports_params_flops_and_latency_of_one_line(monkeypatch):
    import dawnet.ocr.models  # noqa: F401  (registers the presets)
    from dawnet.cost import count
    from dawnet.ocr.agents import CTCAgent
    from dawnet.ocr.charset import Charset
    from dawnet.ocr.recipes import RECOGNIZER
    from dawnet.registry import create_model

    cs = Charset("abc")
    torch.manual_seed(0)
    model = create_model("crnn_small", num_classes=cs.num_ctc_classes, height=32)
    agent = CTCAgent(model, RECOGNIZER.optimizer(model.parameters()), charset=cs, device="cpu")
    ticks = iter(range(1000))  # every perf_counter call is one second later: each timed call takes 1 s
    monkeypatch.setattr(time, "perf_counter", lambda: float(next(ticks)))
    cost = recognizer_cost(agent, width=64, repeats=3, batch=4)
    assert model.training is True  # measured in eval mode, then the training mode is restored
    expected = count(model.eval(), torch.rand(1, 1, 32, 64), torch.tensor([64]), warn_unknown=False)
    assert cost == {"params": sum(p.numel() for p in model.parameters()), "gflops": expected.flops / 1e9,
                    "input": "1x32x64 line", "latency_ms_b1": 1000.0, "latency_batch": 4,
                    "latency_ms_batch": 1000.0, "throughput_per_s": 4.0, "unknown_ops": {}}


def test_a_bench_checkpoint_reads_the_same_text_in_a_fresh_process(tmp_path):
    """What the bench scores is the saved file: reloaded, and read by ``dawnet read`` in another process, it
    gives the same text as the model the bench trained in memory."""
    from dawnet.ocr.data.fonts import find_fonts
    from dawnet.ocr.data.formats import write_tsv
    from dawnet.ocr.data.specs import spec
    from dawnet.ocr.data.synth import LineSynthesizer
    from dawnet.ocr.lines import spec_charset

    texts = ["hello there", "a line", "dawnet 42", "more words"]
    synth = LineSynthesizer([f for f in find_fonts() if f.covers("".join(texts))][:1])
    images = [synth.render(t, seed=i).image for i, t in enumerate(texts)]
    data = {}
    for name in (LINES, DIGITS):
        write_tsv(list(zip(images, texts)), tmp_path / name / "train")
        data[name] = {"path": str(tmp_path / name)}
    pngs = []
    for i, im in enumerate(images):
        pngs.append(tmp_path / f"line{i}.png")
        im.save(pngs[-1])
    prof = dataclasses.replace(PROFILES["smoke"], rec_steps=2, rec_batch=2, train_lines=0)  # the built lines
    trained, _ = train_recognizer("crnn", data, spec_charset(spec(LINES)), prof, 0, torch.device("cpu"),
                                  False)
    in_memory = [r.text for r in trained.read([str(p) for p in pngs])]
    assert any(in_memory)  # an untrained model reads something, which must survive the round trip
    reloaded = save_and_reload(trained, tmp_path / "crnn.pt", torch.device("cpu"))
    assert [r.text for r in reloaded.read([str(p) for p in pngs])] == in_memory
    out = subprocess.run([sys.executable, "-m", "dawnet.cli", "read", str(tmp_path / "crnn.pt"), *map(str, pngs),
                          "--json"], capture_output=True, text=True, check=True)
    assert [json.loads(line)["text"] for line in out.stdout.splitlines()] == in_memory


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
    assert r["data"][PAGES]["manifest_sha256"] and r["versions"]["torch"]
    report = (run / "report.md").read_text()
    assert "## Protocol" in report and "Budget" in report and "pareto-gflops.png" in report
    # the table's numbers belong to the saved files: 'dawnet eval' of each checkpoint in a fresh process scores
    # the unseen-font test lines exactly as the bench did
    for name in ("crnn", "attn"):
        done = subprocess.run([sys.executable, "-m", "dawnet.cli", "eval", str(run / "models" / f"{name}.pt"),
                               "--data", str(data / f"{LINES}-bench-smoke"), "--batch-size", "16", "--json",
                               "--threads", "1"], capture_output=True, text=True, check=True)
        bench_cer = next(x["cer"] for x in r["recognition"] if (x["model"], x["decoder"], x["set"]) ==
                         (name, "greedy", "test"))
        assert json.loads(done.stdout)["cer"] == bench_cer

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
