"""One run-preparation path for ``train``, ``prune`` and ``eval``: the process group and device,
the data splits, and loaders that honour every data option (``--image-size``, ``--workers``,
``--channels-last``, the seed and the data-parallel rank)."""

from __future__ import annotations

import argparse
import contextlib
import os
from dataclasses import dataclass

from ..data import Splits, load_splits, make_loader
from ..io import claim_run_dir
from ..train import distributed
from ..train.distributed import DistInfo


@dataclass
class Run:
    args: argparse.Namespace
    dist: DistInfo
    splits: Splits
    seed: int = 0
    channels_last: bool = False

    def loader(self, data, batch_size: int, *, train: bool):
        """Device batches of ``data`` (a split of ``self.splits``); evaluation loaders take
        ``batch_size`` per process."""
        return make_loader(
            data,
            self.splits,
            batch_size if train else batch_size * self.dist.world_size,
            train=train,
            device=self.dist.device,
            seed=self.seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            channels_last=self.channels_last,
            workers=getattr(self.args, "workers", 4),
        )


def prepare(args: argparse.Namespace, *, seed: int = 0, channels_last: bool = False) -> Run:
    """Join the process group (under ``torchrun``), pick the device, load the data."""
    dist = distributed.setup(getattr(args, "device", "auto"))
    try:
        splits = load_splits(
            args.dataset,
            args.data,
            download=getattr(args, "download", False),
            image_size=getattr(args, "image_size", 224),
            progress=not getattr(args, "quiet", False),
        )
    except BaseException:
        distributed.cleanup()  # callers clean up only once they hold the run
        raise
    # channels_last pays off only on CUDA: on the CPU it slows these networks down
    return Run(args, dist, splits, seed, channels_last and dist.device.type == "cuda")


@contextlib.contextmanager
def run_folder(args: argparse.Namespace):
    """Claim ``args.out`` for this run while it lasts: refused if it is a file, or holds another
    run without --resume / --force, or another process is writing to it (see
    ``io.claim_run_dir``). Only the main process of a data-parallel run holds the lock."""
    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    with claim_run_dir(args.out, getattr(args, "resume", False), getattr(args, "force", False)):
        yield
