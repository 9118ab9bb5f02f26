"""What a benchmarked model costs: parameters and GFLOPs (``dawnet.cost.count``), latency at batch 1 and at
the profile's batch (median of repeats after a warm-up), throughput, and training utilization."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from dawnet.ocr.bench.schema import Cost

__all__ = ["median_time", "recognizer_cost", "detector_cost", "train_utilization"]


def median_time(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` calls (at least 1), after one warm-up call;
    CUDA work is synchronized before and after each call."""
    fn()  # warm-up
    times = []
    for _ in range(max(1, repeats)):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _cost(report, what: str, latency: dict[int, float], batch: int) -> Cost:
    return {
        "params": report.params,
        "gflops": report.flops / 1e9,
        "input": what,
        "latency_ms_b1": 1000 * latency[1],
        "latency_batch": batch,
        "latency_ms_batch": 1000 * latency[batch],
        "throughput_per_s": batch / latency[batch],
        "unknown_ops": dict(report.unknown_ops),
    }


@torch.no_grad()  # not inference_mode: dawnet.cost.count sees no aten ops under it
def recognizer_cost(agent, width: int, repeats: int, batch: int = 32) -> Cost:
    """Params, GFLOPs per line of ``width`` px, latency (model + greedy decoding) at batch 1 and ``batch``."""
    from dawnet.cost import count

    model, dev = agent.model, agent.device
    was = model.training
    model.eval()
    try:
        x = torch.rand(1, 1, agent.height, width, device=dev)
        w = torch.tensor([width], device=dev)
        report = count(model, x, w, warn_unknown=False)
        lat = {}
        for b in (1, batch):
            xb, wb = x.expand(b, -1, -1, -1).contiguous(), w.expand(b).contiguous()
            lat[b] = median_time(lambda xb=xb, wb=wb: agent.read_batch(xb, wb), repeats, dev)
    finally:
        model.train(was)
    return _cost(report, f"1x{agent.height}x{width} line", lat, batch)


@torch.no_grad()  # not inference_mode: dawnet.cost.count sees no aten ops under it
def detector_cost(agent, repeats: int, batch: int = 32) -> Cost:
    """Params, GFLOPs per letterboxed page, latency (model + box decoding and NMS) at batch 1 and ``batch``."""
    from dawnet.cost import count
    from dawnet.ocr.detection import decode_detections

    model, dev, s = agent.model, agent.device, agent.size
    was = model.training
    model.eval()
    try:
        x = torch.rand(1, 1, s, s, device=dev)
        report = count(model, x, warn_unknown=False)
        lat = {}
        for b in (1, batch):
            xb = x.expand(b, -1, -1, -1).contiguous()
            lat[b] = median_time(lambda xb=xb: decode_detections(model(xb), agent.stride), repeats, dev)
    finally:
        model.train(was)
    return _cost(report, f"1x{s}x{s} page", lat, batch)


def train_utilization(gflops: float, samples: int, seconds: float, peak: float | None) -> float | None:
    """Training model-FLOPs utilization with the common ``train = 3 x forward`` convention: 3 x ``gflops`` x
    ``samples`` / ``seconds`` / ``peak`` FLOP/s; None without a peak or a duration."""
    if not peak or seconds <= 0:
        return None
    from dawnet.cost import utilization

    return utilization(3 * gflops * 1e9 * samples, seconds, peak)
