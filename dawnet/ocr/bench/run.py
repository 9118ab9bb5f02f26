"""One benchmark run: build the data, train the LM, every recognizer and the detector, save each model and
score it *as reloaded from its checkpoint file* (so the numbers belong to the file a user gets), measure its
cost, and write ``results.json``, ``report.md`` and the figures."""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict
from pathlib import Path

import torch

from dawnet.atomic import atomic_write_text
from dawnet.ocr.bench.cost import detector_cost, recognizer_cost, train_utilization
from dawnet.ocr.bench.data import LINES, PAGES, SeenFontLines, line_test_sets, log, prepare_data
from dawnet.ocr.bench.figures import draw_figures, draw_history
from dawnet.ocr.bench.profiles import RECOGNIZERS, Profile, get_profile
from dawnet.ocr.bench.report import write_report
from dawnet.ocr.bench.schema import FORMAT, FORMAT_VERSION, LMResult, RecognitionRow, Results, jsonable
from dawnet.ocr.bench.training import train_detector, train_recognizer

__all__ = ["run_bench", "save_and_reload", "decoders", "score_lines"]


def save_and_reload(agent, path: Path, device: torch.device, trust_code: bool = False):
    """Save ``agent`` to ``path`` and return the agent :meth:`Agent.load` rebuilds from that file alone:
    what the benchmark scores, so a checkpoint that cannot stand on its own fails the run."""
    from dawnet.agent import Agent

    agent.save(path)
    return Agent.load(path, map_location=device, trust_code=trust_code)


def decoders(prof: Profile, lm) -> list[tuple[str, dict, tuple[str, ...]]]:
    """(label, ``set_decoder`` settings, test sets) per decoder. The LM models English text, so it decodes the
    text lines; digit strings are random (no LM text), so beam search reads them without it."""
    return [
        ("greedy", dict(beam=1, lm_weight=0.0, bonus=0.0), ("seen", "test", "digits")),
        (f"beam{prof.beam}+lm", dict(beam=prof.beam, lm=lm, lm_weight=prof.lm_weight, bonus=prof.lm_bonus),
         ("seen", "test")),
        (f"beam{prof.beam}", dict(beam=prof.beam, lm_weight=0.0, bonus=0.0), ("digits",)),
    ]


def score_lines(agent, dataset, progress: bool) -> RecognitionRow:
    """The text metrics of ``agent`` reading ``dataset`` (its current decoder), without the per-line pairs."""
    from dawnet.ocr.reading import evaluate_lines

    r = evaluate_lines(agent, dataset, batch_size=16, progress=progress)
    r.pop("pairs")
    r.pop("normalization", None)
    if "blank" in r:
        r["blank_lines"] = len(r.pop("blank"))
    return r


def _train_lm(prof: Profile, seed: int, charset, out: Path):
    """The character LM on the LM text of the lines spec (never test lines): (lm, its results entry)."""
    from dawnet.ocr.lines import lm_texts
    from dawnet.ocr.lm import CharNgramLM

    t = time.perf_counter()
    train_text, held, _ = lm_texts(LINES, seed)
    lm = CharNgramLM.train(train_text, order=prof.lm_order, vocab=charset.chars)
    lm.save(out / "models" / "charlm.json.gz")
    info: LMResult = {
        "order": prof.lm_order,
        "train_lines": len(train_text),
        "held_out_lines": len(held),
        "held_out_perplexity": lm.perplexity(held) if held else None,
        "seconds": time.perf_counter() - t,
        "path": "models/charlm.json.gz",
    }
    return lm, info


def _peak_flops(device: torch.device) -> float | None:
    try:
        from dawnet.cost import peak_flops

        return peak_flops(device)
    except (RuntimeError, ValueError):
        return None


def _bench_recognizer(name: str, results: Results, charset, prof: Profile, seed: int, device, lm,
                      seen: SeenFontLines, out: Path, peak: float | None, progress: bool):
    """Train, save, reload, measure and score one recognizer; returns the reloaded agent."""
    log(progress, f"train {name}: {prof.rec_steps} steps x {prof.rec_batch} lines")
    trained, seconds = train_recognizer(name, results["data"], charset, prof, seed, device, progress)
    agent = save_and_reload(trained, out / "models" / f"{name}.pt", device, trust_code=":" in name)
    del trained
    sets = line_test_sets(results["data"], agent.height, seen)
    width = int(statistics.median(sets["test"].widths()))
    cost = recognizer_cost(agent, width, prof.latency_repeats, prof.latency_batch)
    samples = prof.rec_steps * prof.rec_batch
    results["models"][name] = {
        "kind": "recognizer",
        "head": agent.model.head_kind,
        **cost,
        "train_seconds": seconds,
        "train_steps": agent.step,
        "batch_size": prof.rec_batch,
        "train_samples": samples,
        "train_utilization": train_utilization(cost["gflops"], samples, seconds, peak),
        "checkpoint": f"models/{name}.pt",
    }
    draw_history(agent, out / "figures" / f"history-{name}.png", name)
    for decoder, settings, set_names in decoders(prof, lm):
        agent.set_decoder(**settings)
        for set_name in set_names:
            ds = sets[set_name]
            log(progress, f"score {name} ({decoder}) on {set_name} ({len(ds)} lines)")
            r = score_lines(agent, ds, progress)
            results["recognition"].append({"model": name, "decoder": decoder, "set": set_name, **r})
    agent.set_decoder(beam=1, lm_weight=0.0, bonus=0.0)
    return agent


def _bench_detector(results: Results, prof: Profile, seed: int, device, out: Path, peak: float | None,
                    progress: bool):
    """Train, save, reload, measure and score the detector; returns the reloaded agent."""
    from dawnet.ocr.detection import DetectionDataset, detection_loader

    log(progress, f"train {prof.detector}: {prof.det_steps} steps x {prof.det_batch} pages at {prof.det_size} px")
    trained, seconds = train_detector(results["data"], prof, seed, device, progress)
    det = save_and_reload(trained, out / "models" / "yolo.pt", device)
    del trained
    draw_history(det, out / "figures" / "history-yolo.png", prof.detector)
    cost = detector_cost(det, prof.latency_repeats, prof.latency_batch)
    samples = prof.det_steps * prof.det_batch
    results["models"]["yolo"] = {
        "kind": "detector",
        "preset": prof.detector,
        **cost,
        "train_seconds": seconds,
        "train_steps": det.step,
        "batch_size": prof.det_batch,
        "train_samples": samples,
        "train_utilization": train_utilization(cost["gflops"], samples, seconds, peak),
        "checkpoint": "models/yolo.pt",
    }
    test_pages = DetectionDataset(_test_pages(results), prof.det_size)
    log(progress, f"score the detector on {len(test_pages)} test pages")
    r = det.evaluate(detection_loader(test_pages, 4))
    results["detection"].append({"model": "yolo", "preset": prof.detector, "set": "pages",
                                 "pages": len(test_pages), **r})
    return det, len(test_pages)


def _test_pages(results: Results) -> Path:
    return Path(results["data"][PAGES]["path"]) / "test" / "coco.json"


def run_bench(
    profile: str | Profile = "cpu",
    out: str | os.PathLike = "runs/bench",
    models=(),
    data_dir: str | os.PathLike = "runs/bench-data",
    seed: int = 0,
    progress: bool = True,
    workers: int | None = None,
) -> Results:
    """Run the benchmark protocol (see :mod:`dawnet.ocr.bench`); writes ``out/results.json``, ``report.md``,
    ``models/*.pt`` and ``figures/*.png`` and returns the results."""
    from dawnet.environment import library_versions, load_average, machine
    from dawnet.ocr.data.specs import spec
    from dawnet.ocr.lines import spec_charset
    from dawnet.ocr.metrics import DEFAULT
    from dawnet.ocr.page import evaluate_pages

    prof = get_profile(profile)
    out, data_dir = Path(out), Path(data_dir)
    names = list(RECOGNIZERS) + [m for m in models if m not in RECOGNIZERS]
    if len(set(names)) != len(names):
        raise ValueError(f"--model names must be distinct, got {models}")
    (out / "models").mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if prof.device == "auto" and torch.cuda.is_available() else "cpu")
    t_start = time.perf_counter()
    results: Results = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "profile": asdict(prof),
        "budget": prof.budget(),
        "seed": seed,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(device),
        "versions": library_versions(),
        "normalization": None,
        "models": {},
        "recognition": [],
        "detection": [],
        "pipeline": [],
    }
    results["data"] = prepare_data(prof, data_dir, progress, workers)
    charset = spec_charset(spec(LINES))
    seen = SeenFontLines(prof.seen_lines, 32)
    results["data"]["seen-fonts"] = seen.info()
    lm, results["lm"] = _train_lm(prof, seed, charset, out)
    peak = results["machine"]["peak_flops"] = _peak_flops(device)

    # recognizers: equal budget, every test set, greedy and beam + LM
    agents = {name: _bench_recognizer(name, results, charset, prof, seed, device, lm, seen, out, peak, progress)
              for name in names}
    results["normalization"] = DEFAULT.describe()

    # the detector, and the pipeline with every recognizer
    det, n_pages = _bench_detector(results, prof, seed, device, out, peak, progress)
    for name, agent in agents.items():
        log(progress, f"read {min(prof.eval_pages, n_pages)} pages with yolo + {name}")
        r = evaluate_pages(det, agent, _test_pages(results), limit=prof.eval_pages, progress=progress)
        results["pipeline"].append({"detector": "yolo", "recognizer": name, "decoder": "greedy", **r})
    results["seconds"] = time.perf_counter() - t_start
    results["machine"]["load_average_end"] = load_average()
    atomic_write_text(out / "results.json", _dumps(results))
    draw_figures(results, out / "figures")
    write_report(results, out / "report.md")
    return results


def _dumps(results: Results) -> str:
    import json

    return json.dumps(jsonable(results), indent=1)
