"""Padding the bench's training batches waste: hw-lines-v2 training lines rendered on the fly, batched as
``dawnet.ocr.bench.training.line_loader`` batches them (``WidthBucketSampler`` on the text length, which is
known without rendering) against random batches of the same size. Renders ``--lines`` training lines once,
measures their real widths at the recognizers' height, and prints the padding fraction of both batchings.

    .venv/bin/python benchmarks/bench_padding.py --lines 2400 --batch 12
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lines", type=int, default=2400, help="training lines rendered (default: 2400)")
    p.add_argument("--batch", type=int, default=12, help="lines per batch (default: 12, the cpu profile's)")
    p.add_argument("--height", type=int, default=32, help="line height in px (default: 32)")
    a = p.parse_args()

    from dawnet.ocr.bench.data import LINES
    from dawnet.ocr.data.datasets import WidthBucketSampler, padding_fraction, to_tensor
    from dawnet.ocr.data.generate import SpecGenerator
    from dawnet.ocr.data.specs import spec

    gen = SpecGenerator(spec(LINES))
    texts = gen.texts("train")
    widths = [to_tensor(gen.item("train", i).image, a.height).shape[-1] for i in range(a.lines)]
    by_text = WidthBucketSampler([len(texts[i % len(texts)]) for i in range(a.lines)], a.batch, drop_last=True)
    order = np.random.default_rng(0).permutation(a.lines)
    random = [order[s:s + a.batch].tolist() for s in range(0, a.lines - a.batch + 1, a.batch)]
    by_width = WidthBucketSampler(widths, a.batch, drop_last=True)
    r = np.corrcoef([len(texts[i % len(texts)]) for i in range(a.lines)], widths)[0, 1]
    print(json.dumps({
        "spec": LINES, "lines": a.lines, "batch": a.batch, "height": a.height,
        "median_width": float(np.median(widths)), "corr_text_length_width": round(float(r), 3),
        "padding_random": round(padding_fraction(widths, random), 4),
        "padding_by_text_length": round(padding_fraction(widths, list(by_text)), 4),
        "padding_by_true_width": round(padding_fraction(widths, list(by_width)), 4),
    }))


if __name__ == "__main__":
    main()
