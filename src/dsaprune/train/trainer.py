"""The supervised training loop: SGD with warm-up and cosine / step schedules, label smoothing,
bf16 autocast and channels_last on GPU, optional ``torch.compile``, DDP, atomic per-epoch
checkpoints with exact resume, JSON-lines metrics and a progress bar.

Per step the loop does no host synchronisation on GPU: losses and accuracies accumulate on the
device and are read once per epoch (and every ``refresh`` steps for the progress bar).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn

from ..io import atomic_write_text
from ..progress import Progress, say
from .checkpoint import (
    CheckpointError,
    check_model_name,
    load_model_state,
    read_checkpoint,
    save_checkpoint,
)
from .config import TrainConfig
from .distributed import DistInfo, all_reduce_sum
from .outputs import as_float, batch_size, is_class_logits, to_device
from .schedule import lr_factor


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left untouched."""


def param_groups(model: nn.Module, weight_decay: float, no_wd_bn_bias: bool) -> list[dict]:
    if not no_wd_bn_bias:
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.SGD:
    return torch.optim.SGD(
        param_groups(model, cfg.weight_decay, cfg.no_wd_bn_bias),
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov and cfg.momentum > 0,
        weight_decay=cfg.weight_decay,
    )


_WITHOUT_CUDA_GRAPHS = {"reduce-overhead": "default", "max-autotune": "max-autotune-no-cudagraphs"}


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    amp: bool = True,
    device: torch.device | None = None,
    loss_fn: Callable | None = None,
    progress: bool = False,
    per_sample: bool = False,
) -> dict:
    """Mean loss (``loss_fn``, default cross-entropy on class logits) and top-1 accuracy over
    ``loader`` (summed over ranks under DDP). Either is None where the outputs are not class
    logits and no loss is given. ``per_sample``: also ``"correct"``, which of this process's
    samples were classified right (bool, on the CPU, in the loader's order), so that two models'
    accuracies can be compared image by image (paired tests, bootstrap over the test set)."""
    was = model.training
    model.eval()
    dev = device or next(model.parameters()).device
    acc = torch.zeros(4, dtype=torch.float64, device=dev)  # loss sum, correct, count, scored
    bar = Progress(len(loader) if hasattr(loader, "__len__") else 0, "evaluating", progress)
    right = []
    for x, y in loader:
        bar.update(1)
        n = batch_size(x)
        if n == 0:
            continue
        x, y = to_device(x, dev), to_device(y, dev)
        with _autocast(dev, amp):
            out = model(x)
        logits = is_class_logits(out, y)
        if loss_fn is not None:
            acc[0] += loss_fn(as_float(out), y).float() * n
        elif logits:
            acc[0] += nn.functional.cross_entropy(out.float(), y, reduction="sum")
        if logits:
            hit = out.argmax(1) == y
            acc[1] += hit.sum()
            acc[3] += n
            if per_sample:
                right.append(hit.cpu())
        acc[2] += n
    bar.close()
    model.train(was)
    loss, correct, n, scored = all_reduce_sum(acc).tolist()
    has_loss = loss_fn is not None or scored > 0
    res = {
        "loss": loss / max(n, 1) if has_loss else None,
        "acc": correct / scored if scored else None,
        "n": int(n),
    }
    if per_sample:
        res["correct"] = torch.cat(right) if right else None
    return res


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable, max_batches: int = 20) -> nn.Module:
    """Re-estimate every BatchNorm's running statistics on ``max_batches`` batches (a plain
    average, no momentum), without touching a weight: after channels are removed or masked the
    statistics the network trained with no longer describe its activations."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return model
    was = model.training
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    model.train()
    dev = next(model.parameters()).device
    for i, (x, _) in enumerate(batches):
        if i >= max_batches:
            break
        model(to_device(x, dev))
    for m, mom in zip(bns, saved, strict=True):
        m.momentum = mom
    model.train(was)
    return model


def _key(callback) -> str:
    """The name a callback's state is saved under in a checkpoint."""
    return getattr(callback, "state_key", type(callback).__name__)


class Trainer:
    """Trains ``model`` on ``train_loader``; evaluates on ``eval_loader`` after every epoch.

    ``out_dir`` receives ``last.pt`` (every epoch), ``metrics.jsonl`` and ``config.json``.
    ``meta`` (model name, data set, normalisation …) is stored in every checkpoint so that
    ``dsaprune eval`` can rebuild the model from the file alone.
    """

    def __init__(
        self,
        model: nn.Module,
        train_loader,
        eval_loader,
        cfg: TrainConfig,
        out_dir: str | Path | None = None,
        *,
        dist: DistInfo | None = None,
        meta: dict | None = None,
        progress: bool = True,
        loss_fn: nn.Module | None = None,
        callbacks: list | None = None,
        steps_per_epoch: int | None = None,
    ) -> None:
        self.cfg, self.dist = cfg, dist or DistInfo()
        self.device = self.dist.device
        self.model = model.to(self.device)
        cuda = self.device.type == "cuda"
        if cuda and cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.train_loader, self.eval_loader = train_loader, eval_loader
        self.out_dir = Path(out_dir) if out_dir else None
        self.meta = meta or {}
        self.progress = progress and self.dist.is_main
        self.amp = cfg.amp and cuda
        self.user_loss = loss_fn  # evaluation reports it; without one, cross-entropy on logits
        self.loss_fn = loss_fn or nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.callbacks = list(callbacks or [])
        self.rebuild()
        self.epoch, self.step = 0, 0
        self.history: list[dict] = []
        self.steps_per_epoch = steps_per_epoch or len(train_loader)
        self.total_steps = max(1, round(cfg.epochs * self.steps_per_epoch))
        self.warmup_steps = round(cfg.warmup_epochs * self.steps_per_epoch)

    def rebuild(self) -> None:
        """(Re)create the optimizer and the DDP / compiled wrappers around ``self.model``, e.g.
        after its layers were physically pruned (momentum restarts)."""
        cuda = self.device.type == "cuda"
        self.optimizer = make_optimizer(self.model, self.cfg)
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.net: nn.Module = self.model
        if self.dist.enabled:
            ids = [self.device.index] if cuda else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if self.cfg.compile:
            mode = self.cfg.compile_mode
            if self.dist.enabled:  # CUDA graphs do not capture DDP's gradient all-reduce
                mode = _WITHOUT_CUDA_GRAPHS.get(mode, mode)
            # a pruned model is a new program: compile it afresh rather than pile recompiled
            # variants of the old shapes onto the cache until dynamo gives up and runs eagerly
            torch._dynamo.reset()
            # the pruner adds and removes forward hooks (the gates) on a model already compiled:
            # without guards on the hooks, the compiled step would go on running without them
            torch._dynamo.config.skip_nnmodule_hook_guards = False
            self.net = torch.compile(self.net, mode=mode)

    def _call(self, event: str, *args) -> None:
        for cb in self.callbacks:
            fn = getattr(cb, event, None)
            if fn is not None:
                fn(self, *args)

    # -- checkpoints --------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path | None:
        return self.out_dir / "last.pt" if self.out_dir else None

    def save(self) -> None:
        if not (self.dist.is_main and self.out_dir):
            return
        save_checkpoint(
            self.checkpoint_path,
            model=self.model.state_dict(),
            optimizer=self.optimizer.state_dict(),
            epoch=self.epoch,
            step=self.step,
            config=self.cfg.to_dict(),
            history=self.history,
            callbacks={
                _key(cb): cb.state_dict() for cb in self.callbacks if hasattr(cb, "state_dict")
            },
            **self.meta,
        )
        lines = "".join(json.dumps(h) + "\n" for h in self.history)
        atomic_write_text(lines, self.out_dir / "metrics.jsonl")

    def resume(self, path: str | Path | None = None) -> bool:
        """Continue from ``path`` (default: ``out_dir/last.pt``); False if there is none."""
        path = Path(path) if path else self.checkpoint_path
        if path is None or not path.exists():
            return False
        ckpt = read_checkpoint(path)
        check_model_name(ckpt, path, self.meta.get("model_name", ""))
        # callbacks first: one may change the model's shape (DSA re-applies its pruning)
        saved = ckpt.get("callbacks", {})
        for cb in self.callbacks:
            name = _key(cb)
            if hasattr(cb, "load_state_dict"):
                if name not in saved:
                    raise CheckpointError(f"{path}: holds no {name} state; it is from another run")
                cb.load_state_dict(self, saved[name])
        load_model_state(self.model, ckpt, path, self.meta.get("model_name", ""))
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"{path}: optimizer state does not fit ({e})") from None
        self.epoch, self.step = int(ckpt["epoch"]), int(ckpt["step"])
        self.history = list(ckpt.get("history", []))
        return True

    # -- training -----------------------------------------------------------------------------
    def _set_lr(self) -> None:
        c = self.cfg
        f = lr_factor(
            self.step, self.total_steps, self.warmup_steps, c.schedule, c.milestones, c.gamma
        )
        for g, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            g["lr"] = base * f

    def train_epoch(self) -> dict:
        self.net.train()
        # dropout and any other global randomness depend on (seed, epoch) alone: exact resume
        torch.manual_seed(self.cfg.seed * 1_000_003 + self.epoch + 1)
        if hasattr(self.train_loader, "set_epoch"):
            self.train_loader.set_epoch(self.epoch)
        steps = min(len(self.train_loader), self.total_steps - self.step)
        acc = torch.zeros(4, dtype=torch.float64, device=self.device)  # as in evaluate
        # passes still to come at this loader's length (a DSA run's allocation trains on the
        # 90% split, so its passes are shorter than the epochs the schedule counts)
        passes = self.epoch + math.ceil((self.total_steps - self.step) / max(1, steps))
        bar = Progress(steps, f"epoch {self.epoch + 1}/{passes}", self.progress)
        t0 = time.perf_counter()
        n_seen = 0
        for i, (x, y) in enumerate(self.train_loader):
            if i >= steps:
                break
            n = batch_size(x)
            x, y = to_device(x, self.device), to_device(y, self.device)
            self._set_lr()
            with _autocast(self.device, self.amp):
                out = self.net(x)
                logits = is_class_logits(out, y)
                if i == 0 and logits:
                    self._check_targets(out, y)
                loss = self.loss_fn(as_float(out), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.step += 1
            self._call("after_step")
            n_seen += n
            acc[0] += loss.detach() * n
            if logits:
                acc[1] += (out.detach().argmax(1) == y).sum()
                acc[3] += n
            acc[2] += n
            bar.update(1)
            if bar.drawing and i % 20 == 0:
                bar.set_postfix(loss=f"{acc[0].item() / acc[2].item():.3f}")
        bar.close()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        dt = time.perf_counter() - t0
        loss_sum, correct, n, scored = all_reduce_sum(acc).tolist()
        return {
            "train_loss": loss_sum / max(n, 1),
            "train_acc": correct / scored if scored else None,
            "lr": self.optimizer.param_groups[0]["lr"],
            "epoch_time_s": dt,
            "images_per_s": n_seen * self.dist.world_size / max(dt, 1e-9),
        }

    def _check_targets(self, out: torch.Tensor, y: torch.Tensor) -> None:
        """Class-index targets outside the model's outputs, said plainly (cross-entropy would
        fail with an index error on the CPU and a device-side assert on a GPU)."""
        if out.dim() != 2 or y.dtype not in (torch.int64, torch.int32) or y.numel() == 0:
            return
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= out.shape[1]:
            bad = hi if hi >= out.shape[1] else lo
            raise ValueError(
                f"a target label is {bad}, but the model has {out.shape[1]} outputs (classes "
                f"0 to {out.shape[1] - 1}): the data has more classes than the model, or its "
                "labels are not class indices"
            )

    def diverged(self, what: str) -> TrainingDiverged:
        """The error that stops a run whose numbers became NaN or infinite: ``what`` happened,
        the last good checkpoint is intact."""
        ckpt = self.checkpoint_path
        if ckpt is not None and ckpt.is_file():
            return TrainingDiverged(
                f"{what}; the last good checkpoint is intact ({ckpt}, epoch {self.epoch}). Lower "
                "the learning rate or add warm-up, then resume"
            )
        return TrainingDiverged(
            f"{what}, before any epoch had finished, so there is no checkpoint to resume from. "
            "Lower the learning rate or add warm-up, then run again"
        )

    def fit(self) -> dict:
        """Train until the schedule ends (from where a resumed run stopped); return the last
        epoch's metrics."""
        while self.step < self.total_steps:
            rec = self.train_epoch()
            if not math.isfinite(rec["train_loss"]):
                raise self.diverged(
                    f"training loss became {rec['train_loss']} in epoch {self.epoch + 1}"
                )
            self.epoch += 1
            if self.eval_loader is not None:
                ev = evaluate(self.net, self.eval_loader, self.amp, self.device, self.user_loss)
                rec.update(test_loss=ev["loss"], test_acc=ev["acc"])
            # epoch counts passes over the loader; schedule_epoch, how far the schedule is (a
            # DSA run's passes over its 90% split are shorter than the epochs it counts)
            rec.update(
                epoch=self.epoch, step=self.step, schedule_epoch=self.step / self.steps_per_epoch
            )
            self._call("after_epoch", rec)
            self.history.append(rec)
            self.save()
            if self.progress:
                msg = f"epoch {self.epoch}: loss {rec['train_loss']:.4f}"
                if rec.get("test_acc") is not None:
                    msg += f", test acc {100 * rec['test_acc']:.2f}%"
                say(msg + f" ({rec['epoch_time_s']:.1f} s)")
        return self.history[-1] if self.history else {}
