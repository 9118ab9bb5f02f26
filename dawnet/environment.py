"""Versions and hardware facts: what ``dawnet env`` prints for a bug report and what a benchmark run records
about the machine it measured. One place, so the two never disagree."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform

import torch

__all__ = ["environment", "machine", "library_versions", "cpu_model", "load_average"]

_LIBRARIES = ("numpy", "pillow", "pycocotools", "rapidfuzz", "matplotlib", "mlxtend")


def cpu_model() -> str | None:
    """The CPU's model name from ``/proc/cpuinfo`` (None where there is no such file)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
    except OSError:
        return None
    return names[0] if names else None


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, rounded to 0.01 (None where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def library_versions() -> dict:
    """dawnet, torch, CUDA and the libraries a benchmark's numbers depend on (None: not installed)."""
    import dawnet

    out = {"dawnet": dawnet.__version__, "torch": torch.__version__, "cuda": torch.version.cuda}
    for name in _LIBRARIES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def machine(device: torch.device) -> dict:
    """The machine a run measured on ``device``: platform, CPU, cores, threads, load, accelerator."""
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "load_average": load_average(),
    }
    name = cpu_model()
    if name:
        info["cpu_model"] = name
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def environment() -> dict:
    """Versions and hardware facts that matter when reproducing a result (``dawnet env``)."""
    import numpy
    import PIL

    import dawnet

    info = {
        "dawnet": dawnet.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["cuda"] = torch.version.cuda
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info
