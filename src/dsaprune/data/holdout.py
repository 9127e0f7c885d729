"""Holding out the batches DSA's allocation reads, one way for every kind of data.

:func:`hold_out` splits training data into a part the weights train on and a held-out part the
Θ-step reads. A loader that knows its samples is split by sample: the library's loaders hold out
10% of each class (``split_train_val``), a PyTorch ``DataLoader`` over a map-style data set a
fixed random 10% of its indices (an image folder lists one class after another, so a tail would
be one class). Any other re-iterable of batches, such as a list, is split by position: its last
10% of batches, read once and cached.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler, Subset


def hold_out(data, fraction: float = 0.1):
    """(training part, held-out part) of ``data``; see the module docstring."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the held-out fraction must be in (0, 1), got {fraction}")
    if hasattr(data, "held_out"):
        return data.held_out(fraction)
    if isinstance(data, DataLoader) and _by_sample(data):
        return _split_loader(data, fraction)
    n = len(data)
    cut = max(1, int(round((1 - fraction) * n)))
    if cut >= n:
        raise ValueError(
            f"the training data has too few batches ({n}) to hold out {fraction:.0%} for "
            "validation: pass val_data, or more batches"
        )
    return BatchRange(data, 0, cut), BatchRange(data, cut, n, cache=True)


def _by_sample(loader: DataLoader) -> bool:
    """A DataLoader that can be rebuilt over parts of its data set: map-style, with the default
    batching over a plain or shuffled order."""
    try:
        len(loader.dataset)
    except TypeError:
        return False
    return loader.batch_size is not None and isinstance(
        loader.sampler, (RandomSampler, SequentialSampler)
    )


def _split_loader(loader: DataLoader, fraction: float) -> tuple[DataLoader, DataLoader]:
    n = len(loader.dataset)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
    n_val = max(1, round(n * fraction))
    if n_val >= n:
        raise ValueError(f"the data set has too few samples ({n}) to hold out {fraction:.0%}")

    def part(idx: list[int], shuffle: bool, drop_last: bool) -> DataLoader:
        return DataLoader(
            Subset(loader.dataset, sorted(idx)),
            batch_size=loader.batch_size,
            shuffle=shuffle,
            num_workers=loader.num_workers,
            collate_fn=loader.collate_fn,
            pin_memory=loader.pin_memory,
            drop_last=drop_last,
            persistent_workers=loader.persistent_workers,
        )

    shuffled = isinstance(loader.sampler, RandomSampler)
    return part(order[n_val:], shuffled, loader.drop_last), part(order[:n_val], False, False)


class BatchRange:
    """Batches ``lo`` … ``hi`` − 1 of a re-iterable batch source (the validation part is cached
    after its first pass, so it is read once)."""

    def __init__(self, source, lo: int, hi: int, cache: bool = False) -> None:
        self.source, self.lo, self.hi, self.cache = source, lo, hi, cache
        self._cached: list | None = None

    def __len__(self) -> int:
        return self.hi - self.lo

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.source, "set_epoch"):
            self.source.set_epoch(epoch)

    def __iter__(self):
        if self._cached is not None:
            yield from self._cached
            return
        got = []
        for i, b in enumerate(self.source):
            if i >= self.hi:
                break
            if i >= self.lo:
                if self.cache:
                    got.append(b)
                yield b
        if self.cache:
            self._cached = got
