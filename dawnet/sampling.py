"""Epoch loaders: the data order as a function of (seed, epoch), sharded per rank, resumable mid-epoch.

``Agent.fit`` rebuilds the user's ``DataLoader`` for every epoch around a ``DistributedSampler`` (keeping the
loader's shuffle setting, seeded with the agent's seed, ``set_epoch`` called) in one process as under DDP, and
skips the batches already consumed when a run resumes inside an epoch. So the data order never depends on the
global RNG, resuming is exact, a checkpoint crosses between one process and DDP, and each rank gets its shard.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterable, Iterator

import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    DistributedSampler,
    IterableDataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
)

__all__ = ["SkipBatches", "epoch_sampler", "epoch_loader", "eval_loader", "num_batches"]


class SkipBatches(Sampler[list[int]]):
    """A batch sampler without its first ``skip`` batches: resuming skips indices, never loads data."""

    def __init__(self, batch_sampler: Iterable[list[int]], skip: int):
        self.batch_sampler, self.skip = batch_sampler, skip

    def __iter__(self) -> Iterator[list[int]]:
        return itertools.islice(iter(self.batch_sampler), self.skip, None)

    def __len__(self) -> int:
        return max(len(self.batch_sampler) - self.skip, 0)


def num_batches(data) -> int | None:
    """Batches in one epoch on this rank, or None when the data has no length."""
    try:
        return len(data)
    except TypeError:
        return None


def epoch_loader(data, epoch: int, seed: int, skip: int = 0, rank: int = 0, world: int = 1):
    """The training data of ``epoch`` for this rank, without its first ``skip`` batches.

    A DataLoader over a map-style dataset with a default (random or sequential) sampler is rebuilt around
    a seeded ``DistributedSampler``, keeping its shuffle setting. A custom batch sampler is kept: its ``set_epoch`` is
    called when it has one, and under DDP it must shard the data itself. Other iterables are used as they
    are, and resuming consumes their first ``skip`` batches.
    """
    if not isinstance(data, DataLoader):
        if world > 1:
            raise ValueError(
                "under DDP, training data must be a torch DataLoader so dawnet can shard it per rank; "
                f"got {type(data).__name__}"
            )
        return itertools.islice(iter(data), skip, None) if skip else data
    if isinstance(data.dataset, IterableDataset) or data.batch_sampler is None:
        if world > 1:
            raise ValueError("under DDP, an IterableDataset or a DataLoader with batch_size=None must shard "
                             "itself; dawnet cannot shard it. Use a map-style Dataset with a batch size, or split "
                             "the stream by torch.distributed.get_rank() yourself")
        if skip:
            warnings.warn("resuming inside an epoch of an iterable data set: skipping batches by reading them; "
                          "the order is exact only if the data is deterministic", stacklevel=3)
        return itertools.islice(iter(data), skip, None) if skip else data
    batch_sampler = _batch_sampler(data, epoch, seed, rank, world)
    if skip:
        batch_sampler = SkipBatches(batch_sampler, skip)
    return _rebuild(data, batch_sampler, seed + epoch)


def eval_loader(data, rank: int = 0, world: int = 1):
    """Evaluation data for this rank: every sample exactly once over all ranks, in order."""
    if world == 1 or not isinstance(data, DataLoader):
        return data
    if isinstance(data.dataset, IterableDataset) or data.batch_size is None:
        raise ValueError("under DDP, evaluation data must be a DataLoader over a map-style dataset with a batch "
                         "size, so dawnet can split it between ranks")
    shard = list(range(rank, len(data.dataset), world))  # no padding: each sample counts exactly once
    return _rebuild(data, BatchSampler(shard, data.batch_size, data.drop_last), 0)


def _batch_sampler(data: DataLoader, epoch: int, seed: int, rank: int, world: int):
    sampler = data.sampler
    default = isinstance(sampler, SequentialSampler) or (
        isinstance(sampler, RandomSampler) and not sampler.replacement and sampler._num_samples is None
    )
    if data.batch_size is not None and default:
        sampler = epoch_sampler(len(data.dataset), isinstance(sampler, RandomSampler), seed, epoch, rank, world)
        return BatchSampler(sampler, data.batch_size, data.drop_last)
    for candidate in (data.batch_sampler, sampler):
        if hasattr(candidate, "set_epoch"):
            candidate.set_epoch(epoch)
    if world > 1 and not isinstance(sampler, DistributedSampler) and not hasattr(data.batch_sampler, "set_epoch"):
        raise ValueError(
            f"under DDP, a DataLoader with a custom sampler ({type(sampler).__name__}) must shard the data itself "
            "(a DistributedSampler, or a batch sampler with set_epoch that splits by rank); or use shuffle=True/False "
            "and let dawnet shard it"
        )
    return data.batch_sampler


def epoch_sampler(size: int, shuffle: bool, seed: int, epoch: int, rank: int = 0, world: int = 1) -> DistributedSampler:
    """This rank's indices of ``epoch``: a permutation seeded by ``seed + epoch``, padded to equal shards."""
    sampler = DistributedSampler(range(size), num_replicas=world, rank=rank, shuffle=shuffle, seed=seed)
    sampler.set_epoch(epoch)
    return sampler


def _rebuild(data: DataLoader, batch_sampler, generator_seed: int) -> DataLoader:
    kwargs = dict(
        batch_sampler=batch_sampler,
        num_workers=data.num_workers,
        collate_fn=data.collate_fn,
        pin_memory=data.pin_memory,
        timeout=data.timeout,
        worker_init_fn=data.worker_init_fn,
        # worker seeds come from this generator, not from the global RNG, so resuming does not shift them
        generator=torch.Generator().manual_seed(generator_seed),
    )
    if data.num_workers > 0:
        kwargs.update(
            multiprocessing_context=data.multiprocessing_context,
            prefetch_factor=data.prefetch_factor,
            persistent_workers=data.persistent_workers,
        )
    if getattr(data, "pin_memory_device", ""):
        kwargs["pin_memory_device"] = data.pin_memory_device
    return DataLoader(data.dataset, **kwargs)
