"""PyTorch eager vs ONNX Runtime fp32 vs ONNX Runtime int8, side by side in one run (issue 19, item 4).

    .venv/bin/python benchmarks/onnx_speed.py                        # crnn, attn, yolo; 1 thread; batch 1 and 32
    .venv/bin/python benchmarks/onnx_speed.py --threads 2 --json
    .venv/bin/python benchmarks/onnx_speed.py --checkpoints DIR/models --data DATA/test   # trained models: + CER

Each model is exported with ``dawnet.ocr.onnx.export_onnx`` (fp32, and ``quantize="int8"``) and timed at batch
1 and batch 32: recognizers on 32x256 lines (model + greedy decoding: attention decodes in the host, one ONNX
step per character, as PyTorch's greedy loop does), the detector on letterboxed pages (raw outputs). PyTorch and
ONNX Runtime get the same intra-op thread count; a time is the median of ``--repeats`` calls after a warm-up,
and the three runtimes' calls are interleaved so that a busy machine slows them alike (the load average is
printed: on a shared machine the ratios are the number to read, not the milliseconds). Without
``--checkpoints`` the weights are seeded smoke weights (an untrained attention decoder runs to its length limit:
the worst case). With ``--data`` the recognizers are also scored (CER) by each runtime on those lines.

Goals (issue 19): crnn ONNX Runtime batch 1 <= 0.5x eager, int8 <= 0.3x eager.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import dawnet.ocr.models  # noqa: F401  (registers the presets)
from dawnet.ocr import decode as D
from dawnet.ocr.charset import Charset

CHARSET = Charset("".join(sorted(set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?'\"-()&/"))))
GOALS = {("crnn", 1, "ort fp32"): 0.5, ("crnn", 1, "ort int8"): 0.3}


def _agent(name: str, checkpoints: Path | None, det_size: int):
    from dawnet.agent import Agent

    if checkpoints is not None and (checkpoints / f"{name}.pt").is_file():
        return Agent.load(checkpoints / f"{name}.pt", map_location="cpu")
    from dawnet.ocr.agents import recognizer_agent
    from dawnet.ocr.detection import DetectionAgent
    from dawnet.registry import create_model

    torch.manual_seed(0)
    if name.startswith("yolo"):
        model = create_model(name)
        return DetectionAgent(model, torch.optim.SGD(model.parameters(), lr=0.1), size=det_size, device="cpu")
    ctc = name.startswith("crnn")
    model = create_model(name, num_classes=CHARSET.num_ctc_classes if ctc else CHARSET.num_attn_classes)
    return recognizer_agent(model, torch.optim.SGD(model.parameters(), lr=0.1), CHARSET, device="cpu")


def _runners(agent, files: dict, batch: int, threads: int) -> tuple[dict, dict]:
    """Callables per runtime for one batch size, and their greedy outputs (recognizers) for comparison."""
    from dawnet.ocr.onnx import load

    model = agent.model.eval()
    runtimes = {"eager": None, **{k: load(f, threads=threads) for k, f in files.items()}}
    if hasattr(agent, "charset"):
        g = torch.Generator().manual_seed(batch)
        x = torch.rand(batch, 1, int(model.height), 256, generator=g)
        widths = torch.full((batch,), 256)
        ctc = model.head_kind == "ctc"

        def make(rt):
            net = model if rt is None else rt.model

            def run():
                with torch.inference_mode():
                    out, lengths = net(x, widths)
                    return D.ctc_greedy(out, lengths) if ctc else D.attention_greedy(out, lengths, agent.charset.end)
            return run
    else:
        x = torch.rand(batch, 1, agent.size, agent.size, generator=torch.Generator().manual_seed(batch))

        def make(rt):
            def run():
                with torch.inference_mode():
                    return model(x) if rt is None else rt.forward(x)
            return run
    fns = {name: make(rt) for name, rt in runtimes.items()}
    return fns, {name: fn() for name, fn in fns.items()}


def _median_ms(fns: dict, repeats: int) -> dict:
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: 1000 * statistics.median(v) for k, v in times.items()}


def _id_cer(a: list, b: list) -> float:
    from rapidfuzz.distance import Levenshtein

    return 100 * sum(Levenshtein.distance(x, y) for x, y in zip(a, b)) / max(1, sum(len(x) for x in a))


def _score(agent, files: dict, data: str, threads: int, limit: int) -> dict:
    """CER (points) of each runtime on ``data`` (a line folder), scored by ``dawnet.ocr.reading.evaluate_lines``."""
    from dawnet.ocr.lines import load_line_data
    from dawnet.ocr.onnx import load
    from dawnet.ocr.reading import evaluate_lines

    lines = load_line_data(data, agent.height, charset=agent.charset, splits=("test",), val_lines=limit).test
    out = {"eager": evaluate_lines(agent, lines, 16, progress=False)["cer"] * 100}
    for name, f in files.items():
        out[name] = evaluate_lines(load(f, threads=threads), lines, 16, progress=False)["cer"] * 100
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["crnn", "attn", "yolo"], help="Presets (default: crnn attn yolo).")
    p.add_argument("--batches", nargs="+", type=int, default=[1, 32], help="Batch sizes (default: 1 32).")
    p.add_argument("--threads", type=int, default=1, help="Intra-op threads for both runtimes (default: 1).")
    p.add_argument("--repeats", type=int, default=10, help="Timed calls per runtime at batch 1 (default: 10; a "
                                                           "third of it, at least 3, at larger batches).")
    p.add_argument("--det-size", type=int, default=640, help="Detector letterbox size without --checkpoints "
                                                             "(default: 640).")
    p.add_argument("--checkpoints", type=Path, default=None, help="A folder with crnn.pt / attn.pt / yolo.pt "
                                                                  "(e.g. DIR/models from 'dawnet bench').")
    p.add_argument("--data", default=None, help="Line data to score the recognizers on (CER per runtime).")
    p.add_argument("--limit", type=int, default=200, help="Lines of --data to score (default: 200).")
    p.add_argument("--json", action="store_true", help="Print one JSON object.")
    args = p.parse_args(argv)
    from dawnet.ocr.onnx import export_onnx

    torch.set_num_threads(args.threads)
    rows, scores, exports = [], {}, {}
    with tempfile.TemporaryDirectory(prefix="onnx-speed-") as tmp:
        for name in args.models:
            agent = _agent(name, args.checkpoints, args.det_size)
            files = {}
            for label, kw in (("ort fp32", {}), ("ort int8", {"quantize": "int8"})):
                r = export_onnx(agent, Path(tmp) / f"{name}-{label[-4:]}.onnx", **kw)
                files[label] = r.files[0]
                exports[f"{name} {label}"] = {"max_abs_vs_torch": r.parity["max_abs"],
                                              "mb": sum(f.stat().st_size for f in r.files) / 1e6}
            for batch in args.batches:
                fns, outs = _runners(agent, files, batch, args.threads)
                ms = _median_ms(fns, args.repeats if batch == 1 else max(3, args.repeats // 3))
                row = {"model": name, "batch": batch, "ms": ms, "ratio": {k: v / ms["eager"] for k, v in ms.items()}}
                if hasattr(agent, "charset"):
                    row["greedy_cer_vs_eager"] = {k: _id_cer(outs["eager"], v) for k, v in outs.items()}
                rows.append(row)
            if args.data and hasattr(agent, "charset"):
                scores[name] = _score(agent, files, args.data, args.threads, args.limit)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    result = {"threads": args.threads, "cpus": os.cpu_count(), "load_1min": load, "torch": torch.__version__,
              "rows": rows, "exports": exports, "cer": scores,
              "weights": str(args.checkpoints) if args.checkpoints else "seeded smoke weights"}
    if args.json:
        print(json.dumps(result))
        return 0
    import onnxruntime

    print(f"PyTorch {torch.__version__} eager vs ONNX Runtime {onnxruntime.__version__}, {args.threads} thread(s), "
          f"{result['weights']}; load average {load:.1f} on {os.cpu_count()} CPUs")
    print(f"{'model':6s} {'batch':>5s} {'eager ms':>9s} {'fp32 ms':>9s} {'int8 ms':>9s} {'fp32/eager':>10s} "
          f"{'int8/eager':>10s}  greedy CER int8 vs eager")
    for r in rows:
        ms, ratio = r["ms"], r["ratio"]
        goal = "".join(f" (goal <= {GOALS[(r['model'], r['batch'], k)]})" for k in ("ort fp32", "ort int8")
                       if (r["model"], r["batch"], k) in GOALS)
        cer = r.get("greedy_cer_vs_eager", {}).get("ort int8")
        print(f"{r['model']:6s} {r['batch']:5d} {ms['eager']:9.2f} {ms['ort fp32']:9.2f} {ms['ort int8']:9.2f} "
              f"{ratio['ort fp32']:10.2f} {ratio['ort int8']:10.2f}  {'-' if cer is None else f'{cer:.2f} pts'}"
              f"{goal}")
    for k, v in exports.items():
        print(f"export {k}: {v['mb']:.2f} MB, max |onnx - torch| {v['max_abs_vs_torch']:.1e} on the probe batch")
    for name, s in scores.items():
        print(f"CER on {args.data} ({name}): " + ", ".join(f"{k} {v:.2f}%" for k, v in s.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
