"""Batch loaders that hand the trainer normalised float batches already on the training device.

:class:`DeviceLoader` keeps a small data set on the device as one uint8 tensor and augments in
batches there (random crop with zero padding, horizontal flip, normalisation) through one gather:
no per-image Python work, the same code on CPU and GPU. The order and augmentation of epoch ``e``
depend only on ``(seed, e)``, so a resumed run sees exactly the batches it would have seen, and
under data parallelism every rank takes its slice of the same global batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from .common import ImageData, split_train_val


def _normaliser(mean, std, device) -> tuple[torch.Tensor, torch.Tensor]:
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1) * 255.0
    s = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1) * 255.0
    return m, s


class DeviceLoader:
    """Iterate over ``data`` in batches of ``batch_size`` (global batch under data parallelism)."""

    def __init__(
        self,
        data: ImageData,
        batch_size: int,
        *,
        train: bool,
        mean: list[float],
        std: list[float],
        device: torch.device | str = "cpu",
        pad: int = 4,
        flip: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
        drop_last: bool | None = None,
    ) -> None:
        if batch_size % world_size:
            raise ValueError(
                f"batch size {batch_size} is not divisible by the {world_size} processes"
            )
        self._kw = dict(
            train=train, mean=mean, std=std, device=device, pad=pad, flip=flip, seed=seed,
            rank=rank, world_size=world_size, channels_last=channels_last, drop_last=drop_last,
        )  # fmt: skip
        self.data, self.batch_size, self.train = data, batch_size, train
        self.device = torch.device(device)
        self.pad, self.flip = (pad, flip) if train else (0, False)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.channels_last = channels_last
        self.drop_last = train if drop_last is None else drop_last
        self.epoch = 0
        self._mean, self._std = _normaliser(mean, std, self.device)
        self._images: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def held_out(self, fraction: float = 0.1) -> tuple[DeviceLoader, DeviceLoader]:
        """Loaders of the images left for training and of the ``fraction`` held out of each
        class (``split_train_val``), with this loader's settings (augmentation included)."""
        train, val = split_train_val(self.data, fraction)
        # a held-out part smaller than one batch is still one (partial) batch
        return DeviceLoader(train, self.batch_size, **self._kw), DeviceLoader(
            val, self.batch_size, **{**self._kw, "drop_last": False}
        )

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _stage(self) -> None:
        if self._images is None:
            imgs = self.data.images
            if self.pad:  # padded once, so a crop is a plain gather
                p = self.pad
                imgs = torch.nn.functional.pad(imgs, (0, 0, p, p, p, p))
            self._images = imgs.to(self.device)
            self._labels = self.data.labels.to(self.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self._stage()
        n, b = len(self.data), self.batch_size
        steps = len(self)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(n, generator=g) if self.train else torch.arange(n)
        h, w = self.data.image_size
        if self.pad or self.flip:
            total = steps * b
            dy = torch.randint(0, 2 * self.pad + 1, (total,), generator=g)
            dx = torch.randint(0, 2 * self.pad + 1, (total,), generator=g)
            fl = torch.rand(total, generator=g) < 0.5 if self.flip else torch.zeros(total, bool)
            order, dy, dx, fl = (t.to(self.device) for t in (order, dy, dx, fl))
        else:
            order = order.to(self.device)
        ar_h = torch.arange(h, device=self.device)
        ar_w = torch.arange(w, device=self.device)
        local = b // self.world_size
        for s in range(steps):
            lo = s * b
            hi = min(lo + b, n)
            # this rank's slice of the global batch
            per = -(-(hi - lo) // self.world_size)
            r_lo, r_hi = lo + self.rank * per, min(lo + (self.rank + 1) * per, hi)
            if self.drop_last:
                r_lo, r_hi = lo + self.rank * local, lo + (self.rank + 1) * local
            idx = order[r_lo:r_hi]
            if self.pad or self.flip:
                rows = dy[r_lo:r_hi, None] + ar_h
                cols = dx[r_lo:r_hi, None] + torch.where(
                    fl[r_lo:r_hi, None], w - 1 - ar_w, ar_w
                )
                x = self._images[idx[:, None, None], rows[:, :, None], cols[:, None, :]]
            else:
                x = self._images[idx]
            x = x.permute(0, 3, 1, 2).float()  # NHWC storage: this view is channels_last
            x = (x - self._mean) / self._std
            if not self.channels_last:
                x = x.contiguous()
            yield x, self._labels[idx]


class StreamLoader:
    """Wraps a ``DataLoader`` of uint8 batches: moves them to the device and normalises them."""

    def __init__(
        self,
        dataset: torch.utils.data.Dataset,
        batch_size: int,
        *,
        train: bool,
        mean: list[float],
        std: list[float],
        device: torch.device | str = "cpu",
        workers: int = 4,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
    ) -> None:
        self.dataset, self.batch_size = dataset, batch_size
        self._kw = dict(
            train=train, mean=mean, std=std, device=device, workers=workers, seed=seed,
            rank=rank, world_size=world_size, channels_last=channels_last,
        )  # fmt: skip
        self.device = torch.device(device)
        self.sampler = torch.utils.data.DistributedSampler(
            dataset, world_size, rank, shuffle=train, seed=seed, drop_last=train
        )
        self.loader = torch.utils.data.DataLoader(
            dataset,
            batch_size // world_size,
            sampler=self.sampler,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            drop_last=train,
            persistent_workers=workers > 0,
        )
        self.channels_last = channels_last
        self._mean, self._std = _normaliser(mean, std, self.device)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def held_out(self, fraction: float = 0.1) -> tuple[StreamLoader, StreamLoader]:
        """As :meth:`DeviceLoader.held_out`, for a streamed image folder."""
        train, val = split_train_val(self.dataset, fraction)
        return StreamLoader(train, self.batch_size, **self._kw), StreamLoader(
            val, self.batch_size, **self._kw
        )

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        for x, y in self.loader:
            x = x.to(self.device, non_blocking=True).float()
            x = ((x - self._mean) / self._std).contiguous(memory_format=fmt)
            yield x, y.to(self.device, non_blocking=True)
