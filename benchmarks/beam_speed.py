"""CTC prefix beam search at model speed: the vectorized search against the per-prefix reference, beside the
crnn forward pass it decodes, in one run (issue 19, item 5).

    .venv/bin/python benchmarks/beam_speed.py                   # 200 lines of 64 steps, beam 10, 6-gram LM
    .venv/bin/python benchmarks/beam_speed.py --lines 100 --json

The log-probs are recognizer_speed.py's peaky, trained-model-like ones (64 steps x 80 classes, about half the
frames blank), the LM its 6-gram on random text, weight 0.5, bonus 1.0. Times are per line (one thread), each
the median of ``--repeats`` passes over all lines, the passes of the compared decoders interleaved so that a
busy machine slows them alike; the yardstick is crnn's PyTorch batch-1 forward on a 32x256 line. Both searches
are run on the same lines: the report counts lines decoded identically and the CER between their outputs.

With ``flashlight-text`` installed, its compiled lexicon-free CTC decoder (beam 10, 10 tokens per step, no
threshold, log-add merging) is timed beside them: without an LM, and with dawnet's LM behind flashlight's Python
``LM`` interface (its bundled KenLM needs the LM as an ARPA file, which dawnet does not write).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from recognizer_speed import CHARSET, HEIGHT, WIDTH, _random_texts  # noqa: E402

import dawnet.ocr.models  # noqa: E402,F401  (registers the presets)
from dawnet.ocr import decode as D  # noqa: E402
from dawnet.ocr.lm import EOS, CharNgramLM  # noqa: E402
from dawnet.registry import create_model  # noqa: E402


def peaky_log_probs(lines: int, seed: int = 0) -> torch.Tensor:
    """recognizer_speed.py's decoding input: T=64 steps, 80 classes, one class at +8 per frame, half blank."""
    rng = np.random.default_rng(seed)
    t, c = WIDTH // 4, CHARSET.num_ctc_classes
    logits = rng.normal(size=(lines, t, c)).astype(np.float32)
    best = rng.integers(0, c, size=(lines, t))
    best[:, ::2] = 0
    np.put_along_axis(logits, best[..., None], 8.0, axis=-1)
    return torch.from_numpy(logits).log_softmax(-1)


def _cer(a: list[list[int]], b: list[list[int]]) -> float:
    from rapidfuzz.distance import Levenshtein

    return sum(Levenshtein.distance(x, y) for x, y in zip(a, b)) / max(1, sum(len(x) for x in a))


def _flashlight_cases(arr, beam: int, lm: CharNgramLM) -> dict:
    """flashlight-text's LexiconFreeDecoder, without an LM and with dawnet's LM as a Python callback LM."""
    from flashlight.lib.text.decoder import (
        LM,
        CriterionType,
        LexiconFreeDecoder,
        LexiconFreeDecoderOptions,
        LMState,
        ZeroLM,
    )

    table, eos = D.lm_index(lm, CHARSET), lm.index[EOS]

    class CharLM(LM):
        def __init__(self):
            LM.__init__(self)
            self.texts: dict = {}

        def start(self, start_with_nothing):
            state = LMState()
            self.texts[state] = ""
            return state

        def score(self, state, token):
            text = self.texts[state]
            if token == 0:  # blank (flashlight does not score it with a CTC criterion; kept safe)
                return state, 0.0
            child = state.child(token)
            self.texts.setdefault(child, text + CHARSET.chars[token - 1])
            return child, float(lm.log_distribution(text)[table[token]])

        def finish(self, state):
            return state, float(lm.log_distribution(self.texts[state])[eos])

    def decoder(lm_obj, weight, bonus):
        opts = LexiconFreeDecoderOptions(beam_size=beam, beam_size_token=beam, beam_threshold=1e9, lm_weight=weight,
                                         sil_score=bonus, log_add=True, criterion_type=CriterionType.CTC)
        dec = LexiconFreeDecoder(opts, lm_obj, -1, 0, [])

        def run(keep=lm_obj):  # the Python LM must outlive the decoder that calls it
            out = []
            for a in arr:
                toks = [t for t in dec.decode(a.ctypes.data, a.shape[0], a.shape[1])[0].tokens if t >= 0]
                out.append([c for i, c in enumerate(toks) if c != 0 and (i == 0 or c != toks[i - 1])])
            return out
        return run

    return {f"flashlight-text beam {beam}": decoder(ZeroLM(), 0.0, 0.0),
            f"flashlight-text beam {beam} + LM (Python callback)": decoder(CharLM(), 0.5, 1.0)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lines", type=int, default=200, help="Lines decoded per pass (default: 200).")
    p.add_argument("--beam", type=int, default=10, help="Beam width (default: 10).")
    p.add_argument("--repeats", type=int, default=3, help="Timed passes per decoder (default: 3).")
    p.add_argument("--json", action="store_true", help="Print one JSON object.")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    lp = peaky_log_probs(args.lines)
    arr = lp.numpy()
    lm = CharNgramLM.train(_random_texts(2000, np.random.default_rng(0)), order=6, vocab=CHARSET.chars)
    fusion = {"lm": lm, "charset": CHARSET, "lm_weight": 0.5, "bonus": 1.0}
    torch.manual_seed(0)
    model = create_model("crnn", num_classes=CHARSET.num_ctc_classes).eval()
    x = torch.rand(1, 1, HEIGHT, WIDTH)

    def forward():
        with torch.inference_mode():
            for _ in range(args.lines):
                model(x)

    cases = {
        "crnn forward, PyTorch batch 1": forward,
        f"reference beam {args.beam}": lambda: [D.ctc_prefix_beam_search_reference(a, args.beam) for a in arr],
        f"vectorized beam {args.beam}": lambda: D.ctc_beam_search(lp, beam=args.beam),
        f"reference beam {args.beam} + 6-gram LM": lambda: [D.ctc_prefix_beam_search_reference(a, args.beam, **fusion)
                                                            for a in arr],
        f"vectorized beam {args.beam} + 6-gram LM": lambda: D.ctc_beam_search(lp, beam=args.beam, **fusion),
    }
    try:
        cases.update(_flashlight_cases(np.ascontiguousarray(arr), args.beam, lm))
    except ImportError:
        pass  # optional: pip install flashlight-text
    outputs = {name: fn() for name, fn in cases.items()}  # warm-up pass, and the outputs compared below
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    ms = {name: 1000 * statistics.median(v) / args.lines for name, v in times.items()}
    names = list(cases)
    model_ms = ms[names[0]]
    agree = {}
    pairs = [(names[1], names[2]), (names[3], names[4]), *((names[1], n) for n in names[5:6]),
             *((names[3], n) for n in names[6:7])]
    for ref, new in pairs:
        agree[new] = {"identical_lines": sum(a == b for a, b in zip(outputs[ref], outputs[new])),
                      "cer_between_points": 100 * _cer(outputs[ref], outputs[new])}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    result = {"lines": args.lines, "steps": arr.shape[1], "classes": arr.shape[2], "beam": args.beam, "threads": 1,
              "load_1min": load, "cpus": os.cpu_count(), "ms_per_line": ms,
              "ratio_to_model": {k: v / model_ms for k, v in ms.items()}, "agreement": agree}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"CTC prefix beam search, {args.lines} lines x {arr.shape[1]} steps x {arr.shape[2]} classes, 1 thread "
          f"(load average {load:.1f} on {os.cpu_count()} CPUs)")
    print(f"{'':52s} {'ms/line':>8s} {'x model':>8s}  agreement with the reference")
    for name in names:
        a = agree.get(name)
        note = f"  {a['identical_lines']}/{args.lines} lines identical, CER {a['cer_between_points']:.2f} pts" if a \
            else ""
        print(f"{name:52s} {ms[name]:8.2f} {ms[name] / model_ms:8.2f}{note}")
    for ref, new in pairs:
        print(f"speed-up of {new} over {ref}: {ms[ref] / ms[new]:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
