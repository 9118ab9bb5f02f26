"""Epoch loaders: the data order as a function of (seed, epoch), sharded per rank, resumable mid-epoch.

``Agent.fit`` rebuilds the user's ``DataLoader`` for every epoch around :class:`EpochSampler`, whose order
depends only on the agent's seed and the epoch number (like ``DistributedSampler.set_epoch``), and skips the
batches already consumed when a run resumes inside an epoch. So the data order never depends on the global
RNG, resuming is exact, and under DDP each rank gets its own shard.
"""

from __future__ import annotations

import itertools
import math
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

__all__ = ["EpochSampler", "SkipBatches", "epoch_loader", "eval_loader", "num_batches"]


class EpochSampler(Sampler[int]):
    """Indices of one epoch: a permutation seeded by ``(seed, epoch)`` when shuffling, sharded ``rank::world``.

    With ``pad=True`` (training) every rank gets the same number of indices, repeating a few from the start
    as ``DistributedSampler`` does; with ``pad=False`` (evaluation) each index is seen exactly once.
    """

    def __init__(self, size: int, shuffle: bool, seed: int, epoch: int, rank: int = 0, world: int = 1,
                 pad: bool = True):
        self.size, self.shuffle, self.seed, self.epoch = size, shuffle, seed, epoch
        self.rank, self.world, self.pad = rank, world, pad

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        if self.world > 1 and self.pad and self.size % self.world:
            extra = self.world - self.size % self.world
            order += (order * math.ceil(extra / max(len(order), 1)))[:extra]
        return order[self.rank :: self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices())

    def __len__(self) -> int:
        if self.world == 1:
            return self.size
        if self.pad:
            return math.ceil(self.size / self.world)
        return len(range(self.rank, self.size, self.world))


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
    :class:`EpochSampler`, keeping its shuffle setting. A custom batch sampler is kept: its ``set_epoch`` is
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
    sampler = EpochSampler(len(data.dataset), shuffle=False, seed=0, epoch=0, rank=rank, world=world, pad=False)
    return _rebuild(data, BatchSampler(sampler, data.batch_size, data.drop_last), 0)


def _batch_sampler(data: DataLoader, epoch: int, seed: int, rank: int, world: int):
    sampler = data.sampler
    default = isinstance(sampler, SequentialSampler) or (
        isinstance(sampler, RandomSampler) and not sampler.replacement and sampler._num_samples is None
    )
    if data.batch_size is not None and default:
        shuffle = isinstance(sampler, RandomSampler)
        epoch_sampler = EpochSampler(len(data.dataset), shuffle, seed, epoch, rank, world)
        return BatchSampler(epoch_sampler, data.batch_size, data.drop_last)
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
