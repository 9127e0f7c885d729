"""``dsaprune.prune``: the whole pipeline behind one call, the library's trainer driving a
:class:`~dsaprune.Pruner`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from .data.holdout import hold_out
from .pruner import DSAConfig, Pruner, PrunerCallback, PruneResult, split_settings
from .train import TrainConfig, Trainer, evaluate
from .train.distributed import DistInfo, setup


def prune(
    model: nn.Module,
    train_data,
    val_data=None,
    *,
    budget: str = "flops=0.5",
    epochs: float = 1.0,
    example_inputs: torch.Tensor | None = None,
    loss_fn: nn.Module | None = None,
    test_data=None,
    full_train_data=None,
    device: str = "auto",
    out_dir: str | Path | None = None,
    ignored_layers: list[str] | None = None,
    model_name: str = "",
    progress: bool = True,
    dist: DistInfo | None = None,
    pretrained: bool = False,
    resume: bool = False,
    latency_batch: int = 1,
    report_latency: bool = True,
    meta: dict | None = None,
    metric: Callable[[nn.Module, Iterable], float] | None = None,
    **settings,
) -> PruneResult:
    """Prune ``model`` to ``budget`` with DSA while it trains for ``epochs`` (may be fractional).

    ``train_data`` is any re-iterable of (inputs, targets) batches with a length, e.g. a DataLoader;
    without ``val_data`` 10% of it is held out for DSA's allocation (:func:`dsaprune.data.hold_out`)
    where its estimator reads held-out batches (``fisher_step`` and the baselines read none and
    train on all of it). With ``val_data``, ``train_data`` trains the weights during allocation and
    ``full_train_data`` (default: ``train_data``) once the allocation is frozen. The model's outputs
    may be a tensor, a tuple or a dict: ``loss_fn(outputs, targets)`` (default cross-entropy) reads
    them, and accuracy is reported only for class logits. Settings are any field of
    :class:`TrainConfig` (lr, weight_decay, …), :class:`DSAConfig` (warmup_fraction, round_to,
    physical, ``method``: ``dsa`` or a baseline ``uniform``, ``magnitude``, ``group_fisher``,
    ``group_fisher_iterative``, ``ssl``, ``morphnet``, ``given`` with ``keep_counts``,
    ``penalty``: their strength, …) or :class:`AllocatorConfig` (rho1, …).
    ``pretrained=True`` also measures the accuracy of the network as given (``acc_before``).
    A ``latency=F`` budget is a fraction of the network's latency on ``device`` at
    ``latency_batch``, predicted by per-layer fits measured there (cached per device);
    ``report_latency`` (default on) measures the network before and after pruning, for every
    budget kind, and reports the measured speed-up beside the predicted one. ``meta`` (plain
    values) is stored in every checkpoint beside the model name; the CLI records the data set,
    classes and normalisation there, so that ``dsaprune eval`` reads a run's ``last.pt`` alone.
    With ``out_dir`` a checkpoint (``last.pt``: weights, optimizer, allocator, phase) is written
    after every epoch; ``resume=True`` continues from it (pass the same, unpruned, model).
    ``metric(model, test_data)``: the task's own score (mIoU, mAP, …), reported as
    ``metric_before`` / ``metric_after`` beside the accuracy, which is measured only where the
    outputs are class logits.
    Returns the pruned model and a report.
    """
    t_start = time.perf_counter()
    first = check_batches(train_data, "train_data")
    if val_data is not None:
        check_batches(val_data, "val_data")
    tset, dset = split_settings(settings)
    cfg = TrainConfig(epochs=epochs, **tset)
    dcfg = DSAConfig.from_dict(dset)  # fixed for the run's length by the Pruner
    dist = dist or setup(device)
    model = model.to(dist.device)
    full = full_train_data if full_train_data is not None else train_data
    if not dcfg.reads_held_out:  # a baseline, or DSA reading the weight step's own backward
        train_part = full
    elif val_data is None:
        train_part, val_data = hold_out(train_data)
    else:
        train_part = train_data
    if dcfg.reads_held_out and len(val_data) < 1:
        raise ValueError(
            "the validation split that DSA's allocation reads holds no batch (it is smaller "
            "than one batch): use a smaller batch size or more data"
        )
    if example_inputs is None:
        example_inputs = first[0][:1]
    steps_per_epoch = len(full)  # epochs count passes over the whole training set
    amp = cfg.amp and dist.device.type == "cuda"
    loss_fn = loss_fn or nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    pruner = Pruner(
        model,
        example_inputs,
        budget,
        total_steps=max(1, round(epochs * steps_per_epoch)),
        val_data=val_data,
        loss_fn=loss_fn,
        train_data=full,
        steps_per_epoch=steps_per_epoch,
        config=dcfg,
        ignored_layers=ignored_layers,
        amp=amp,
        dist=dist,
        latency_batch=latency_batch,
        report_latency=report_latency,
        progress=progress,
        model_name=model_name,
    )
    # from scratch there is no trained "before" network to measure
    before = test_data is not None and pretrained
    # accuracy is None where the outputs are not class logits (the task's metric is the caller's)
    acc_before = evaluate(model, test_data)["acc"] if before else None
    metric_before = metric(model, test_data) if before and metric else None
    trainer = Trainer(
        model,
        train_part,
        test_data,
        cfg,
        out_dir,
        dist=dist,
        progress=progress,
        loss_fn=loss_fn,
        callbacks=[PrunerCallback(pruner, full)],
        steps_per_epoch=steps_per_epoch,
        meta={"model_name": model_name, **(meta or {})},
    )
    if resume:
        if out_dir is None:
            raise ValueError("resume=True needs the out_dir of the run to continue")
        if not trainer.resume():
            raise FileNotFoundError(f"{Path(out_dir) / 'last.pt'}: no checkpoint to resume from")
    trainer.fit()
    result = pruner.finish()
    report = {
        **result.report,
        "acc_before": acc_before,
        "acc_after": (evaluate(result.model, test_data)["acc"] if test_data is not None else None),
        "metric_before": metric_before,
        "metric_after": (
            metric(result.model, test_data) if metric and test_data is not None else None
        ),
        "epochs": epochs,
        "wall_time_s": time.perf_counter() - t_start,
        "train_config": cfg.to_dict(),
        "history": trainer.history,
    }
    return PruneResult(result.model, report)


def check_batches(data, name: str):
    """Refuse data that the flow cannot read many times over as (inputs, targets) batches,
    naming what was given and the fix; returns the first batch."""
    if iter(data) is data:
        raise ValueError(
            f"{name} is a {type(data).__name__}, which can be read only once; training reads "
            "it every epoch: pass a DataLoader or a list of (inputs, targets) batches"
        )
    try:
        len(data)
    except TypeError:
        raise ValueError(
            f"{name} ({type(data).__name__}) has no length; pass a DataLoader or a list of "
            "(inputs, targets) batches"
        ) from None
    if len(data) == 0:
        raise ValueError(f"{name} holds no batch")
    first = next(iter(data))
    if isinstance(first, dict):
        raise ValueError(
            f"{name} yields dicts (keys {sorted(first)}); the flow reads (inputs, targets) "
            "pairs: wrap it, e.g. ((b['image'], b['label']) for each batch b) in a re-iterable"
        )
    if not (isinstance(first, (tuple, list)) and len(first) == 2 and torch.is_tensor(first[0])):
        raise ValueError(
            f"{name} yields {type(first).__name__}s; the flow reads (inputs, targets) pairs "
            "whose inputs are tensors"
        )
    return first
