"""Hardware limits: the sustained matmul FLOP/s a device reaches, and how close a model runs to it."""

from __future__ import annotations

import time

import torch

__all__ = ["peak_flops", "utilization"]

_CACHE: dict[tuple, float] = {}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def peak_flops(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, size: int | None = None,
               min_time: float = 0.2, repeats: int = 3, cache: bool = True) -> float:
    """Measured sustained FLOP/s of square ``size x size`` matmuls on ``device`` in ``dtype``.

    One matmul is ``2 * size**3`` flops (the same convention as ``count``: 2 flops per MAC). Each of
    ``repeats`` rounds runs matmuls for at least ``min_time`` seconds after a warm-up; the best round
    is returned, since the peak is what the hardware can sustain, not an average over interference.
    ``size`` defaults to 1024 on CPU and 8192 on accelerators. Results are cached per arguments
    (``cache=False`` measures again).
    """
    device = torch.device(device)
    if not (dtype.is_floating_point or dtype.is_complex):
        raise ValueError(f"peak_flops measures floating-point matmuls; got dtype={dtype}")
    if min_time <= 0 or repeats < 1:
        raise ValueError(f"min_time must be > 0 and repeats >= 1, got min_time={min_time}, repeats={repeats}")
    size = int(size or (1024 if device.type == "cpu" else 8192))
    key = (str(device), dtype, size, min_time, repeats)
    if cache and key in _CACHE:
        return _CACHE[key]
    gen = torch.Generator(device="cpu").manual_seed(0)  # leave the global RNG alone
    a = torch.randn(size, size, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=gen).to(device=device, dtype=dtype)
    with torch.no_grad():
        for _ in range(2):  # warm-up: allocator, kernel selection, clocks
            torch.mm(a, b)
        _sync(device)
        best = 0.0
        for _ in range(repeats):
            n, start = 0, time.perf_counter()
            while True:
                torch.mm(a, b)
                n += 1
                if n % 4 == 0 or device.type == "cpu":
                    _sync(device)
                    elapsed = time.perf_counter() - start
                    if elapsed >= min_time:
                        break
            best = max(best, 2.0 * size**3 * n / elapsed)
    if cache:
        _CACHE[key] = best
    return best


def utilization(flops_per_step: float, seconds_per_step: float, peak: float) -> float:
    """Model-FLOPs utilization: achieved FLOP/s (``flops_per_step / seconds_per_step``) over ``peak``.

    ``flops_per_step`` is what the model needs per step (e.g. ``count(...).total_flops`` for a
    training step), not what the hardware executed, so recomputation does not inflate it.
    """
    if flops_per_step < 0:
        raise ValueError(f"flops_per_step must be >= 0, got {flops_per_step}")
    if seconds_per_step <= 0:
        raise ValueError(f"seconds_per_step must be > 0, got {seconds_per_step}")
    if peak <= 0:
        raise ValueError(f"peak must be > 0 FLOP/s, got {peak}; measure it with peak_flops(device, dtype)")
    return float(flops_per_step) / float(seconds_per_step) / float(peak)
