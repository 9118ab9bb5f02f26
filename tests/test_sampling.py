"""Epoch loaders: order from (seed, epoch), complete DDP shards, skipping without loading data."""

import torch
from torch.utils.data import DataLoader, Dataset

from dawnet.sampling import epoch_loader, epoch_sampler, eval_loader


class Counting(Dataset):
    def __init__(self, n):
        self.n, self.loaded = n, []

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.loaded.append(i)
        return torch.tensor(i)


def test_order_depends_on_seed_and_epoch_only():
    a = list(epoch_sampler(50, True, seed=1, epoch=0))
    torch.manual_seed(123)  # the global RNG does not matter
    assert list(epoch_sampler(50, True, seed=1, epoch=0)) == a
    assert list(epoch_sampler(50, True, seed=1, epoch=1)) != a
    assert sorted(a) == list(range(50))
    assert list(epoch_sampler(5, False, seed=1, epoch=3)) == [0, 1, 2, 3, 4]


def test_shards_cover_the_data():
    train = [list(epoch_sampler(11, True, 0, 0, rank=r, world=3)) for r in range(3)]
    assert {len(s) for s in train} == {4} and set(sum(train, [])) == set(range(11))


def test_skip_does_not_load_skipped_samples_and_keeps_the_order():
    data = Counting(20)
    full = [b.tolist() for b in epoch_loader(DataLoader(data, batch_size=3, shuffle=True), 2, seed=5)]
    data.loaded.clear()
    rest = [b.tolist() for b in epoch_loader(DataLoader(data, batch_size=3, shuffle=True), 2, seed=5, skip=4)]
    assert rest == full[4:]
    assert sorted(data.loaded) == sorted(sum(full[4:], []))


def test_custom_batch_sampler_and_plain_iterables():
    batches = [[0, 1], [2, 3], [4, 5]]
    loader = DataLoader(Counting(6), batch_sampler=batches)
    assert [b.tolist() for b in epoch_loader(loader, 0, 0, skip=1)] == [[2, 3], [4, 5]]
    assert list(epoch_loader([10, 20, 30], 0, 0, skip=2)) == [30]


def test_eval_loader_splits_between_ranks():
    loader = DataLoader(Counting(7), batch_size=2)
    parts = [torch.cat(list(eval_loader(loader, r, 2))).tolist() for r in range(2)]
    assert sorted(parts[0] + parts[1]) == list(range(7))
