"""peak_flops measures a plausible matmul rate; utilization is achieved / peak, with checked inputs."""

from __future__ import annotations

import pytest
import torch

from dawnet.cost import peak_flops, utilization


def test_peak_flops_cpu():
    rng = torch.get_rng_state()
    peak = peak_flops("cpu", torch.float32, size=128, min_time=0.02, repeats=2, cache=False)
    assert 1e6 < peak < 1e14  # a CPU does between a MFLOP/s and 100 TFLOP/s
    assert torch.equal(torch.get_rng_state(), rng)
    with pytest.raises(ValueError, match="floating"):
        peak_flops("cpu", torch.int32)


def test_utilization():
    assert utilization(2e9, 0.5, 8e9) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="seconds_per_step"):
        utilization(1e9, 0, 1e9)
    with pytest.raises(ValueError, match="peak"):
        utilization(1e9, 1, 0)
