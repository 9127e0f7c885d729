"""Launched by test_ddp.py under ``torchrun`` (or plainly, as the single-process reference):
trains a small network for one epoch and saves this rank's final weights."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from conftest import TinyNet  # noqa: E402

from dsaprune.data import DeviceLoader, channel_stats, make_shapes  # noqa: E402
from dsaprune.train import TrainConfig, Trainer, distributed  # noqa: E402


def prune_run(out: str, method: str) -> None:
    """DSA (or another method that all-reduces, e.g. the iterative Group Fisher's rounds) under
    DDP: records what each rank gave to, and got from, the all-reduce."""
    import dsaprune
    import dsaprune.pruner.allocate as dsa_mod

    dist = distributed.setup("cpu")
    seen = []
    reduce = dsa_mod.all_reduce_sum

    def recording(t):
        local = t.clone()
        total = reduce(t)
        seen.append((local, total.clone()))
        return total

    dsa_mod.all_reduce_sum = recording
    torch.manual_seed(0)
    tr, va = make_shapes(512, seed=5), make_shapes(128, seed=7)
    mean, std = channel_stats(tr.images)
    kw = dict(mean=mean, std=std, seed=1, rank=dist.rank, world_size=dist.world_size)
    res = dsaprune.prune(
        TinyNet(),
        DeviceLoader(tr, 64, train=True, **kw),
        DeviceLoader(va, 64, train=True, **kw),
        budget="flops=0.5",
        epochs=3,
        dist=dist,
        progress=False,
        window_end_fraction=0.6,
        method=method,
    )
    torch.save(
        {"state": res.model.state_dict(), "report": res.report, "seen": seen},
        Path(out) / f"{method}-rank{dist.rank}.pt",
    )
    distributed.cleanup()


def main(out: str, bn: str) -> None:
    if bn in ("dsa", "group_fisher_iterative"):
        return prune_run(out, bn)
    dist = distributed.setup("cpu")
    torch.manual_seed(0)
    model = TinyNet(bn=bn == "bn")
    tr, te = make_shapes(256, seed=5), make_shapes(64, seed=6)
    mean, std = channel_stats(tr.images)
    kw = dict(mean=mean, std=std, seed=1, rank=dist.rank, world_size=dist.world_size)
    train = DeviceLoader(tr, 32, train=True, **kw)
    test = DeviceLoader(te, 32, train=False, **kw)
    cfg = TrainConfig(epochs=1, lr=0.05, nesterov=False, weight_decay=1e-4, seed=1)
    t = Trainer(model, train, test, cfg, dist=dist, progress=False)
    last = t.fit()
    tag = f"rank{dist.rank}" if dist.enabled else "single"
    torch.save({"state": t.model.state_dict(), "last": last}, Path(out) / f"{bn}-{tag}.pt")
    distributed.cleanup()


if __name__ == "__main__":
    main(*sys.argv[1:])
