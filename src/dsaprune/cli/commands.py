"""What each subcommand does; argument parsing lives in ``main.py``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from .. import models
from ..io import atomic_write_json
from ..train import TrainConfig, Trainer, distributed, load_model_state, read_checkpoint
from ..train import evaluate as evaluate_model
from .prepare import prepare, run_folder
from .spec import RunSpec


def run_training(args: argparse.Namespace, cfg: TrainConfig, progress: bool = True) -> dict:
    with run_folder(args):
        return _run_training(args, cfg, progress)


def _run_training(args: argparse.Namespace, cfg: TrainConfig, progress: bool) -> dict:
    run = prepare(args, seed=cfg.seed, channels_last=cfg.channels_last)
    dist, splits = run.dist, run.splits
    try:
        torch.manual_seed(cfg.seed)
        model = models.create(args.model, num_classes=splits.num_classes)
        train_loader = run.loader(splits.train, cfg.batch_size, train=True)
        test_loader = run.loader(splits.test, 256, train=False)
        meta = {
            "model_name": args.model,
            "num_classes": splits.num_classes,
            "dataset": args.dataset,
            "mean": splits.mean,
            "std": splits.std,
        }
        trainer = Trainer(
            model, train_loader, test_loader, cfg, args.out, dist=dist, meta=meta, progress=progress
        )
        if dist.is_main:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            atomic_write_json(
                {
                    "model": args.model,
                    "dataset": args.dataset,
                    "data": args.data,
                    "world_size": dist.world_size,
                    **cfg.to_dict(),
                },
                Path(args.out) / "config.json",
            )
        if getattr(args, "resume", False) and trainer.resume() and progress and dist.is_main:
            print(f"resumed from {trainer.checkpoint_path} at epoch {trainer.epoch}")
        t0 = time.perf_counter()
        last = trainer.fit()
        last["wall_time_s"] = time.perf_counter() - t0
        return {"trainer": trainer, "last": last, "splits": splits, "dist": dist}
    finally:
        distributed.cleanup()


def train(args: argparse.Namespace) -> int:
    out = run_training(args, RunSpec.from_args(args).train, progress=not args.quiet)
    if out["dist"].is_main:
        last = out["last"]
        print(
            f"done: test accuracy {100 * last.get('test_acc', float('nan')):.2f}% after "
            f"{out['trainer'].epoch} epochs; checkpoint {out['trainer'].checkpoint_path}"
        )
    return 0


def model_from_checkpoint(path: str) -> tuple[torch.nn.Module, dict]:
    """Rebuild the zoo model a training checkpoint holds, with its weights."""
    ckpt = read_checkpoint(path)
    model = models.create(ckpt["model_name"], num_classes=int(ckpt["num_classes"]))
    load_model_state(model, ckpt, path)
    return model, ckpt


def evaluate(args: argparse.Namespace) -> int:
    from .files import open_model

    model, ckpt = open_model(args.checkpoint)
    if args.dataset is None:  # the data set the model was trained on, not a silent default
        args.dataset = ckpt.get("dataset")
        if args.dataset is None:
            raise ValueError(
                f"{args.checkpoint} does not record its data set: pass --dataset (and --data)"
            )
    run = prepare(args)
    splits = run.splits
    if ckpt.get("num_classes") is not None and splits.num_classes != int(ckpt["num_classes"]):
        raise ValueError(
            f"{args.checkpoint} was trained for {ckpt['num_classes']} classes, but "
            f"--dataset {args.dataset} has {splits.num_classes}"
        )
    # normalise as the model was trained
    splits.mean = list(ckpt.get("mean") or splits.mean)
    splits.std = list(ckpt.get("std") or splits.std)
    loader = run.loader(splits.test, args.batch_size, train=False)
    dist = run.dist
    res = evaluate_model(model.to(dist.device), loader, progress=dist.is_main)
    print(
        f"{ckpt['model_name']} on {args.dataset} test ({res['n']} images): "
        f"accuracy {100 * res['acc']:.2f}%, loss {res['loss']:.4f}"
    )
    return 0
