"""Parallel training: a DataParallel that forwards attributes, and the few DDP helpers the Agent uses.

Under ``torchrun`` (which sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``), ``Agent.fit`` initializes the process group
(gloo on CPU, nccl on CUDA), wraps the model in ``DistributedDataParallel`` and shards the data; these helpers are
what it uses, and they are safe to call in a single process, where they do nothing.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DataParallel",
    "unwrap",
    "world_size",
    "rank",
    "is_main_process",
    "init_distributed",
    "all_reduce_sum",
    "all_gather_objects",
    "barrier",
]


class DataParallel(nn.DataParallel):
    """``torch.nn.DataParallel`` that forwards unknown attribute and method access to the wrapped module.

    ``DataParallel(model).charset`` or ``.decode(...)`` reach ``model``. Only ``forward`` is split across
    devices: a forwarded custom method runs on one device, in the calling thread, like calling it on
    ``.module`` directly. Training code should call the wrapper itself (its ``forward``).
    """

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            # During unpickling or deepcopy `module` is not there yet: do not recurse looking for it.
            if name == "module" or "_modules" not in self.__dict__ or "module" not in self._modules:
                raise
            return getattr(self._modules["module"], name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(dir(self._modules["module"])))


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DataParallel / DistributedDataParallel / ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def world_size() -> int:
    """Number of processes in the job (1 without torch.distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's rank (0 without torch.distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """True on rank 0: the process that prints and writes files."""
    return rank() == 0


def init_distributed(device: torch.device) -> bool:
    """Join the ``torchrun`` process group when WORLD_SIZE > 1; returns True when running distributed."""
    if world_size() <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return True


def all_reduce_sum(values: list[float]) -> list[float]:
    """Sum a list of numbers over all processes (returns it unchanged in a single process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(values)
    backend_device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor(values, dtype=torch.float64, device=backend_device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_gather_objects(obj) -> list:
    """Every process's ``obj`` (picklable), in rank order; ``[obj]`` in a single process.

    For results that are not sums, such as the predictions a detection mAP ranks over the whole set.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
