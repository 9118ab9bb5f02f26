"""The benchmark's report: one table of every model (accuracy next to cost) for the terminal, and
``report.md`` with the protocol, the tables, the figures, the machine, the versions and the data checksums."""

from __future__ import annotations

import json
from pathlib import Path

from dawnet.atomic import atomic_write_text
from dawnet.ocr.bench.data import DIGITS, LINES, PAGES
from dawnet.ocr.bench.schema import Results
from dawnet.ocr.recipes import DETECTOR, RECOGNIZER

__all__ = ["format_table", "write_report", "grid", "pct", "num"]


def _big(results: Results) -> int:
    return int(results["profile"].get("latency_batch", 32))


def pct(v: float | None) -> str:
    """A fraction as a percentage with 2 decimals (``0.1234`` -> ``12.34``); ``-`` for None."""
    return "-" if v is None else f"{100 * v:.2f}"


def num(v: float | int | None, digits: int = 2) -> str:
    """A float with ``digits`` decimals, an int as is; ``-`` for None."""
    if v is None:
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def format_table(results: Results) -> str:
    """One table: every recognizer and decoder (CER per test set), the detector, and the page pipeline."""
    sets = ["seen", "test", "digits"]
    head = (
        ["model", "decoder", "params (M)", "GFLOPs", "ms b1", f"ms b{_big(results)}", "train s"]
        + [f"CER {s}" for s in sets]
        + ["WER test", "word acc test", "1-NED test", "page CER"]
    )
    lines = []
    by = {(r["model"], r["decoder"], r["set"]): r for r in results["recognition"]}
    page = {r["recognizer"]: r for r in results["pipeline"]}
    for model, decoder in dict.fromkeys((r["model"], r["decoder"]) for r in results["recognition"]):
        m = results["models"][model]
        t = by.get((model, decoder, "test"), {})
        row = [
            model,
            decoder,
            f"{m['params'] / 1e6:.2f}",
            f"{m['gflops']:.2f}",
            f"{m['latency_ms_b1']:.1f}",
            f"{m['latency_ms_batch']:.1f}",
            f"{m['train_seconds']:.0f}",
        ]
        row += [pct(by.get((model, decoder, s), {}).get("cer")) for s in sets]
        row += [
            pct(t.get("wer")),
            pct(t.get("word_accuracy")),
            num(t.get("one_minus_ned"), 4),
            pct(page[model]["page_cer"]) if decoder == "greedy" and model in page else "-",
        ]
        lines.append(row)
    out = grid(head, lines)
    det_head = [
        "detector",
        "params (M)",
        "GFLOPs/page",
        "ms b1",
        f"ms b{_big(results)}",
        "train s",
        "mAP@0.5",
        "mAP@0.5:0.95",
        "pages",
    ]
    det_rows = []
    for r in results["detection"]:
        m = results["models"][r["model"]]
        det_rows.append(
            [
                f"{r['model']} ({r['preset']})",
                f"{m['params'] / 1e6:.2f}",
                f"{m['gflops']:.2f}",
                f"{m['latency_ms_b1']:.1f}",
                f"{m['latency_ms_batch']:.1f}",
                f"{m['train_seconds']:.0f}",
                pct(r["map50"]),
                pct(r["map"]),
                str(r["pages"]),
            ]
        )
    out += "\n\n" + grid(det_head, det_rows)
    pipe_head = [
        "pipeline",
        "page CER",
        "page WER",
        "line CER (true boxes)",
        "lines found / true",
        "s per page",
    ]
    pipe_rows = [
        [
            f"{r['detector']} + {r['recognizer']}",
            pct(r["page_cer"]),
            pct(r["page_wer"]),
            pct(r["line_cer_gt_boxes"]),
            f"{r['detected_lines']} / {r['lines']}",
            f"{r['seconds_per_page']:.2f}",
        ]
        for r in results["pipeline"]
    ]
    out += "\n\n" + grid(pipe_head, pipe_rows)
    return out


def grid(head: list[str], rows: list[list[str]]) -> str:
    """A Markdown table (it also reads well in a terminal)."""
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows)] if rows else [len(h) for h in head]
    fmt = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join(
        [fmt(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [fmt(r) for r in rows]
    )


def write_report(results: Results, path: Path) -> Path:
    """``report.md``: protocol, the tables, figures, machine, versions, seeds and data checksums."""
    p = results["profile"]
    m = results["machine"]
    lines = [
        f"# dawnet bench: profile `{p['name']}`",
        "",
        f"{p['description']}",
        "",
        f"Run {results['created']}, {results['seconds'] / 60:.1f} minutes, seed {results['seed']}, device "
        f"{m['device']} ({m.get('gpu') or m.get('cpu_model') or m['processor']}, {m['cpu_count']} CPUs, "
        f"{m['torch_threads']} torch threads, load average {m.get('load_average')} at the start and "
        f"{m.get('load_average_end')} at the end).",
        "",
        "## Protocol",
        "",
        f"- Budget (equal for every recognizer): {results['budget']}.",
        (f"- Recognizers train on {LINES} training lines rendered on the fly ({p['train_lines']} per epoch, "
         f"batched by text length) + the {DIGITS} training lines ("
         if p.get("train_lines") else f"- Recognizers train on the {LINES} + {DIGITS} training lines (")
        + RECOGNIZER.with_lr(p["rec_lr"]).describe()
        + (", line augmentation" if p["augment"] else "")
        + f"); the detector on the {PAGES} training pages ("
        + DETECTOR.with_lr(p["det_lr"]).describe()
        + "); no model selection on test data. Every model is scored as reloaded from its checkpoint file.",
        f"- Decoders: greedy, and beam {p['beam']} with the character {results['lm']['order']}-gram LM "
        f"(weight {p['lm_weight']}, bonus {p['lm_bonus']} per character; trained on "
        f"{results['lm']['train_lines']} LM lines, held-out perplexity "
        f"{num(results['lm']['held_out_perplexity'])}) on the text lines; beam {p['beam']} without it on the "
        "digit strings, which are random (an English LM only hurts them).",
        f"- Test sets: `seen` = held-out texts in the training fonts; `test` = {LINES} test split (unseen "
        f"fonts); `digits` = {DIGITS} test split (real MNIST digits); pages = {PAGES} test split.",
        f"- Text normalization: {results['normalization']}. CER/WER are corpus-level (edits / reference "
        "length); page CER joins each page's lines in reading order.",
        "- GFLOPs: one forward pass (2 FLOPs per multiply-add, `dawnet.cost.count`) of one line of the "
        "median test width, or one letterboxed page. Latency: median wall time of model + greedy decoding "
        "(detector: + NMS) after a warm-up. Training utilization: 3 x forward FLOPs x training samples / "
        f"training time / measured peak ({num((m.get('peak_flops') or 0) / 1e9, 1)} GFLOP/s matmul).",
        "",
        "## Results",
        "",
        format_table(results),
        "",
        "![CER vs GFLOPs](figures/pareto-gflops.png) ![CER vs latency](figures/pareto-latency.png)",
        "",
        "Training curves: " + ", ".join(f"[{n}](figures/history-{n}.png)" for n in results["models"]),
        "",
        "## Cost and training",
        "",
        grid(
            [
                "model",
                "input",
                "params",
                "GFLOPs",
                "ms b1",
                f"ms b{_big(results)}",
                "throughput /s",
                "train steps",
                "train s",
                "utilization",
            ],
            [
                [
                    n,
                    v["input"],
                    str(v["params"]),
                    f"{v['gflops']:.3f}",
                    f"{v['latency_ms_b1']:.1f}",
                    f"{v['latency_ms_batch']:.1f}",
                    f"{v['throughput_per_s']:.1f}",
                    str(v["train_steps"]),
                    f"{v['train_seconds']:.0f}",
                    pct(v["train_utilization"]) + " %",
                ]
                for n, v in results["models"].items()
            ],
        ),
        "",
        "## Data",
        "",
        grid(
            ["data", "spec digest", "sizes", "manifest sha256"],
            [
                [
                    n,
                    d.get("spec_digest", "-"),
                    json.dumps(d.get("sizes", d.get("lines"))),
                    d.get("manifest_sha256", d.get("sha256", "-"))[:16],
                ]
                for n, d in results["data"].items()
            ],
        ),
        "",
        "## Versions",
        "",
        ", ".join(f"{k} {v}" for k, v in results["versions"].items()),
        "",
    ]
    atomic_write_text(path, "\n".join(lines))
    return path
