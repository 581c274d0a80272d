"""Training samples keyed by (seed, epoch, index): new augmentations every epoch, in every worker.

A DataLoader's workers hold their own copies of the dataset; with ``persistent_workers`` they keep
them for the whole run, so an epoch set on the main process's dataset never reaches them, and a
random stream seeded from the worker's fixed ``torch.initial_seed()`` replays the same augmented
sample for each index every epoch. Here the sampler carries the epoch instead: it yields
:class:`SampleKey` records, and the dataset draws its augmentation from ``sample_rng(key)``. The
stream depends only on (seed, epoch, index), so a run is reproducible whatever the number of workers
or ranks, and each epoch is new.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch


class SampleKey(NamedTuple):
    """What a training dataset's ``__getitem__`` receives from :class:`EpochKeySampler`."""

    index: int
    seed: int
    epoch: int


def sample_rng(key: SampleKey) -> np.random.Generator:
    """The sample's own random stream: a function of (seed, epoch, index) only."""
    return np.random.default_rng([int(key.seed) % 2**32, int(key.epoch), int(key.index)])


def split_key(key) -> tuple[int, np.random.Generator | None]:
    """(index, its random stream) for a SampleKey; (index, None) for a plain integer index."""
    if isinstance(key, SampleKey):
        return key.index, sample_rng(key)
    return int(key), None


class EpochKeySampler(torch.utils.data.Sampler):
    """Shuffles ``n`` indices per epoch (this rank's share of them under DDP) and yields SampleKeys.

    Call :meth:`set_epoch` before each epoch, as with torch's DistributedSampler (which does the
    shuffling and the split over ranks here: with ``world_size`` 1 it is a seeded per-epoch shuffle).
    """

    def __init__(self, n: int, *, seed: int = 0, world_size: int = 1, rank: int = 0, shuffle: bool = True):
        self.seed = int(seed)
        self.epoch = 0
        self.order = torch.utils.data.distributed.DistributedSampler(
            range(n), num_replicas=world_size, rank=rank, shuffle=shuffle, seed=self.seed)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.order.set_epoch(self.epoch)

    def __iter__(self):
        for i in self.order:
            yield SampleKey(int(i), self.seed, self.epoch)

    def __len__(self) -> int:
        return len(self.order)
