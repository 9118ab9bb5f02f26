"""Cost of one feature-visualization step against a bare forward+backward of the same net.

Net: 4 conv layers, 64 channels, 3x3, ReLU, at 128x128 (batch 1). One optvis step = FFT +
decorrelated-colour parameterization, Lucid's standard transforms (pad 12, jitter 8, scale,
rotate, jitter 4: fused into one resampling), hooks, objective (a channel of the last layer),
backward to the image and an Adam update. Baselines, timed interleaved with it (medians):

  bare_train:  net(x) -> mean -> backward with parameter gradients (an ordinary training fwd+bwd)
  bare_input:  net(x) -> mean -> backward to the input only, parameters frozen (exactly the
               gradient work a visualization step needs; the stricter comparison)

Issue target: step / bare <= 1.15 (the popular port measured ~1.3x, 3.5x with its resize).

    .venv/bin/python benchmarks/optvis_step.py                 # CPU
    .venv/bin/python benchmarks/optvis_step.py --device cuda --rounds 200
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

from dawnet.diagnose.optvis import objectives as O
from dawnet.diagnose.optvis import param as P
from dawnet.diagnose.optvis import transform as T
from dawnet.diagnose.optvis.render import Visualization


def make_net(width: int = 64) -> nn.Sequential:
    layers, c = [], 3
    for _ in range(4):
        layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU()]
        c = width
    return nn.Sequential(*layers)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu).")
    ap.add_argument("--size", type=int, default=128, help="Image side in pixels (default: 128).")
    ap.add_argument("--rounds", type=int, default=30, help="Interleaved measurement rounds (default: 30).")
    ap.add_argument("--warmup", type=int, default=5, help="Untimed rounds first (default: 5).")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: PyTorch's choice).")
    ap.add_argument("--json", action="store_true", help="Print one JSON object.")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    net = make_net().to(dev).eval()
    x = torch.rand(1, 3, args.size, args.size, device=dev)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def bare_train():
        for p in net.parameters():
            p.requires_grad_(True)
            p.grad = None
        net(x).mean().backward()

    def bare_input():
        for p in net.parameters():
            p.requires_grad_(False)
        xi = x.detach().requires_grad_(True)
        net(xi).mean().backward()

    param = P.image(args.size, args.size, channels=3, generator=torch.Generator().manual_seed(0))
    vis = Visualization(
        net, O.channel("7", 5), param, T.standard_transforms(), generator=torch.Generator().manual_seed(0)
    )

    def step():
        with vis:  # freezes parameters while stepping; restored on exit (outside the timed region)
            t0 = time.perf_counter()
            vis.step()
            sync()
            return time.perf_counter() - t0

    def timed(fn):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t0

    times = {"bare_train": [], "bare_input": [], "optvis_step": []}
    for i in range(args.warmup + args.rounds):
        order = [
            ("bare_train", lambda: timed(bare_train)),
            ("bare_input", lambda: timed(bare_input)),
            ("optvis_step", step),
        ]
        if i % 2:
            order.reverse()  # alternate the order so drift and caches favour no one
        for name, fn in order:
            t = fn()
            if i >= args.warmup:
                times[name].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    res = {
        "device": torch.cuda.get_device_name(dev) if cuda else f"cpu ({torch.get_num_threads()} threads)",
        "size": args.size,
        "rounds": args.rounds,
        "median_ms": {k: round(v * 1e3, 3) for k, v in med.items()},
        "ratio_vs_bare_train": round(med["optvis_step"] / med["bare_train"], 3),
        "ratio_vs_bare_input": round(med["optvis_step"] / med["bare_input"], 3),
        "target": 1.15,
    }
    if args.json:
        print(json.dumps(res))
    else:
        print(
            f"optvis step vs bare forward+backward, 4x64 conv net at {args.size}x{args.size}, {res['device']}"
        )
        for k, v in res["median_ms"].items():
            print(f"  {k:12s} {v:9.3f} ms (median of {args.rounds})")
        print(f"  ratio vs bare fwd+bwd (with weight grads): {res['ratio_vs_bare_train']:.3f}")
        print(
            f"  ratio vs bare fwd+bwd (input grad only):   {res['ratio_vs_bare_input']:.3f}  (target <= 1.15)"
        )
    return res


if __name__ == "__main__":
    main()
