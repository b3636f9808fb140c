"""DataLoaders whose batches are a function of (seed, epoch, rank), so a run can resume mid-epoch.

Every loader reads through a :class:`ResumableSampler` (a DistributedSampler, also for one
process): under DDP each rank reads its own shard; the order is a function of (seed, epoch);
an epoch can start after the batches a cut run already trained. Datasets draw their
augmentations from (seed, epoch, index) (``data/datasets.py``, ``data/faces.py``), so neither
the worker count nor a resume changes what a sample looks like.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from emotion_perception.train.distributed import DistributedContext


class ResumableSampler(DistributedSampler):
    """A DistributedSampler that can leave out the first ``skip`` indices of this rank's epoch."""

    def __init__(self, dataset: Dataset, *, num_replicas: int, rank: int, shuffle: bool, seed: int,
                 drop_last: bool) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(super().__iter__(), self.skip, None)

    def __len__(self) -> int:
        return max(0, self.num_samples - self.skip)


def _generator_seed(seed: int, rank: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, rank, epoch]).generate_state(1)[0])


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker; numpy and random follow from it, for any transform that uses them.
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # noqa: NPY002 - seeding the global stream third-party transforms draw from
    random.seed(worker_seed)


def build_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    ctx: DistributedContext,
    shuffle: bool,
    collate_fn: Callable[[list[Any]], Any] | None,
    workers: int = 0,
    seed: int = 0,
    drop_last: bool = False,
    persistent_workers: bool = False,
) -> DataLoader:
    """DataLoader over a :class:`ResumableSampler`; ``batch_size`` is per process.

    Call :func:`set_loader_epoch` before each epoch so shuffling (and a dataset's own
    ``set_epoch``) follows the epoch. Persistent workers keep their copy of the dataset, so they
    would miss a dataset's ``set_epoch``: off by default.
    """
    sampler = ResumableSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=shuffle, seed=seed,
                               drop_last=drop_last)
    generator = torch.Generator()
    generator.manual_seed(_generator_seed(seed, ctx.rank, 0))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_fn,
        drop_last=drop_last,
        pin_memory=ctx.device.type == "cuda",
        worker_init_fn=_seed_worker,
        generator=generator,
        persistent_workers=persistent_workers and workers > 0,
    )


def set_loader_epoch(loader: DataLoader, epoch: int, skip_batches: int = 0) -> None:
    """Prepare ``loader`` for ``epoch``, leaving out its first ``skip_batches`` batches.

    Reshuffles the sampler, tells a dataset with ``set_epoch``, and reseeds the generator the
    workers' seeds come from with (seed, rank, epoch): a fresh loader of a resumed run hands out
    what the uninterrupted run's loader did.
    """
    sampler = loader.sampler
    if not isinstance(sampler, ResumableSampler):
        if skip_batches:
            raise ValueError("only a loader from build_loader can start an epoch part-way")
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
    else:
        sampler.set_epoch(epoch)
        sampler.skip = skip_batches * int(loader.batch_size or 1)
        if loader.generator is not None:
            loader.generator.manual_seed(_generator_seed(sampler.seed, sampler.rank, epoch))
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)
