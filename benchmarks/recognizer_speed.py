"""Recognizer speed: batch-1 CPU latency per 32x256 line, training lines/s with model-FLOPs utilization,
and decoding lines/s (CTC greedy vs prefix beam search with and without the character LM).

Everything is measured side by side in one run, on this machine, with the thread count stated::

    .venv/bin/python benchmarks/recognizer_speed.py                  # crnn, crnn_small, crnn_medium, attn
    .venv/bin/python benchmarks/recognizer_speed.py --models crnn --threads 1 --json

Target (issue 6): CRNN inference at batch 1 <= 10 ms per 32x256 line on a CPU (model + greedy decoding).
Latency is the median of ``--repeats`` timed calls after a warm-up; FLOPs come from ``dawnet.cost.count``
(one multiply-add = 2 FLOPs); utilization = model FLOPs per training step / step time / measured peak
(``dawnet.cost.peak_flops``: float32 1024^3 matmuls, measured again right before each model's timed steps,
so that on a shared machine both see the same load; a busy machine still makes MFU noisy).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch

import dawnet.ocr.models  # noqa: F401  (registers the presets)
from dawnet.cost import count, peak_flops, utilization
from dawnet.ocr import decode as D
from dawnet.ocr.agents import AttentionAgent, CTCAgent
from dawnet.ocr.charset import Charset
from dawnet.ocr.lm import CharNgramLM
from dawnet.ocr.models import model_cfgs
from dawnet.registry import create_model

TARGET_MS = 10.0
HEIGHT, WIDTH = 32, 256
CHARSET = Charset("".join(sorted(set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?'\"-()&/"))))


def _median_seconds(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _random_texts(n: int, rng: np.random.Generator, length=(10, 30)) -> list[str]:
    chars = CHARSET.chars
    return ["".join(rng.choice(list(chars), size=int(rng.integers(*length)))) for _ in range(n)]


def bench_model(name: str, repeats: int, train_steps: int, batch: int, peak: float | None = None) -> dict:
    ctc = model_cfgs[name]["head"] == "ctc"
    torch.manual_seed(0)
    model = create_model(name, num_classes=CHARSET.num_ctc_classes if ctc else CHARSET.num_attn_classes).eval()
    x = torch.rand(1, 1, HEIGHT, WIDTH)
    row = {"model": name, "head": model_cfgs[name]["head"], "params": sum(p.numel() for p in model.parameters())}
    with torch.no_grad():  # (not inference_mode: there conv/LSTM dispatch ops the counter does not see)
        fwd = count(model, x, warn_unknown=False)
    if fwd.unknown_ops:
        print(f"warning: {name}: ops without a FLOP formula: {fwd.unknown_ops}", file=sys.stderr)
    row["gmacs_per_line"] = fwd.macs / 1e9

    def infer():
        with torch.inference_mode():
            out, lengths = model(x)
            if ctc:
                D.ctc_greedy(out, lengths)
            else:
                D.attention_greedy(out, lengths, CHARSET.end)

    row["latency_ms"] = 1000 * _median_seconds(infer, repeats)
    row["target_ratio"] = row["latency_ms"] / TARGET_MS  # <= 1 meets the 10 ms target (stated for CTC models)

    # training: lines/s and model-FLOPs utilization on batches of 32x256 lines with 10-30 character texts
    rng = np.random.default_rng(0)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    cls = CTCAgent if ctc else AttentionAgent
    agent = cls(model, opt, charset=CHARSET, device="cpu", metrics={})
    batches = [(torch.rand(batch, 1, HEIGHT, WIDTH), torch.full((batch,), WIDTH), _random_texts(batch, rng))
               for _ in range(2)]
    inputs, _ = agent.unpack(batches[0])
    step_cost = count(model, *inputs, backward=True, warn_unknown=False)
    agent.learn(batches[1])  # warm-up
    # the peak is measured right before the timed steps: on a shared machine both then see the same load
    peak = peak_flops("cpu", cache=False) if peak is None else peak
    row["peak_gflops"] = peak / 1e9
    t = time.perf_counter()
    for i in range(train_steps):
        agent.learn(batches[i % 2])
    step_s = (time.perf_counter() - t) / train_steps
    row["train_lines_per_s"] = batch / step_s
    row["train_gflops_per_step"] = step_cost.total_flops / 1e9
    row["mfu"] = utilization(step_cost.total_flops, step_s, peak)
    return row


def bench_decoding(lines: int, beam: int) -> list[dict]:
    """CTC decoding lines/s on peaky (trained-model-like) log-probs: T=64 steps, 80 classes; with the cost of
    readings (per-character confidences and frames) after greedy decoding and after a beam search."""
    rng = np.random.default_rng(0)
    t, c = WIDTH // 4, CHARSET.num_ctc_classes
    logits = rng.normal(size=(lines, t, c)).astype(np.float32)
    best = rng.integers(0, c, size=(lines, t))
    best[:, ::2] = 0  # about half the frames are blank, as in a trained CTC model
    np.put_along_axis(logits, best[..., None], 8.0, axis=-1)
    lp = torch.from_numpy(logits).log_softmax(-1)
    lm = CharNgramLM.train(_random_texts(2000, rng), order=6, vocab=CHARSET.chars)
    ids = D.ctc_greedy(lp)  # what confidences and frames cost for ids a beam search found: a forced alignment
    rows = []
    for label, fn in [
        ("ctc greedy (batch)", lambda: D.ctc_greedy(lp)),
        ("ctc greedy readings (batch)", lambda: D.ctc_greedy_readings(lp, None, CHARSET)),
        ("ctc align greedy ids (readings)", lambda: D.ctc_readings(lp, None, ids, CHARSET)),
        (f"ctc prefix beam {beam}", lambda: D.ctc_beam_search(lp, beam=beam)),
        (f"ctc prefix beam {beam} + 6-gram LM", lambda: D.ctc_beam_search(lp, beam=beam, lm=lm, charset=CHARSET,
                                                                          lm_weight=0.5, bonus=1.0)),
    ]:
        s = _median_seconds(fn, repeats=3, warmup=1)
        rows.append({"decoder": label, "lines_per_s": lines / s, "ms_per_line": 1000 * s / lines})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="+", default=["crnn", "crnn_small", "crnn_medium", "attn"],
                   help="Presets to measure (default: crnn crnn_small crnn_medium attn).")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: PyTorch's choice).")
    p.add_argument("--repeats", type=int, default=50, help="Timed batch-1 calls per model (default: 50).")
    p.add_argument("--train-steps", type=int, default=5, help="Timed training steps per model (default: 5).")
    p.add_argument("--batch", type=int, default=16, help="Training batch size (default: 16).")
    p.add_argument("--decode-lines", type=int, default=200, help="Lines for the decoding benchmark (default: 200).")
    p.add_argument("--beam", type=int, default=10, help="Beam width for the decoding benchmark (default: 10).")
    p.add_argument("--json", action="store_true", help="Print one JSON object.")
    args = p.parse_args(argv)
    unknown = [m for m in args.models if m not in model_cfgs]
    if unknown:
        p.error(f"unknown presets {unknown}; choose from {sorted(model_cfgs)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [bench_model(m, args.repeats, args.train_steps, args.batch) for m in args.models]
    peak = statistics.median(r["peak_gflops"] for r in rows) * 1e9
    dec = bench_decoding(args.decode_lines, args.beam)
    result = {"threads": torch.get_num_threads(), "torch": torch.__version__, "peak_gflops": peak / 1e9,
              "input": f"1x1x{HEIGHT}x{WIDTH}", "target_ms": TARGET_MS, "models": rows, "decoding": dec}
    ctc = [r for r in rows if r["head"] == "ctc"]
    attn = [r for r in rows if r["head"] == "attn"]
    if ctc and attn:
        result["attn_over_ctc_latency"] = attn[0]["latency_ms"] / ctc[0]["latency_ms"]
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"Recognizer speed (torch {torch.__version__}, {result['threads']} threads, measured peak (median) "
          f"{result['peak_gflops']:.1f} GFLOP/s fp32; batch-1 input {result['input']})")
    head = (f"{'model':<12} {'params':>8} {'GMAC/line':>9} {'ms/line':>8} {'/10ms':>6} {'train lines/s':>13} "
            f"{'MFU':>6}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['model']:<12} {r['params'] / 1e6:>7.2f}M {r['gmacs_per_line']:>9.3f} {r['latency_ms']:>8.2f} "
              f"{r['target_ratio']:>6.2f} {r['train_lines_per_s']:>13.1f} {100 * r['mfu']:>5.1f}%")
    if "attn_over_ctc_latency" in result:
        print(f"attention / CTC batch-1 latency: {result['attn_over_ctc_latency']:.2f}x "
              f"({attn[0]['model']} vs {ctc[0]['model']})")
    print(f"\nCTC decoding ({args.decode_lines} lines of {WIDTH // 4} steps x {CHARSET.num_ctc_classes} classes)")
    for d in dec:
        print(f"  {d['decoder']:<32} {d['lines_per_s']:>10.1f} lines/s  {d['ms_per_line']:>8.3f} ms/line")
    return 0


if __name__ == "__main__":
    sys.exit(main())
