"""The compiled training step (``compile=True``) computes the loss that the eager model does, in
every phase of a pruning run: warm-up, allocation under masks, and after the channels are removed
(when the trainer compiles the smaller network afresh)."""

import pytest
import torch
from torch import nn

import dsaprune
from dsaprune.data import DeviceLoader, channel_stats, make_shapes
from dsaprune.pruner.callback import PrunerCallback
from dsaprune.train import TrainConfig


def _bn_state(model: nn.Module) -> list[torch.Tensor]:
    return [b.clone() for n, b in model.named_buffers()]


def _set_bn_state(model: nn.Module, saved: list[torch.Tensor]) -> None:
    for b, s in zip(model.buffers(), saved, strict=True):
        b.copy_(s)


def test_compiled_step_matches_eager_in_every_phase(tiny_net, monkeypatch):
    tr_data, te_data = make_shapes(512, seed=2), make_shapes(100, seed=3)
    mean, std = channel_stats(tr_data.images)
    tr = DeviceLoader(tr_data, 64, train=True, mean=mean, std=std)
    te = DeviceLoader(te_data, 100, train=False, mean=mean, std=std)
    x, y = next(iter(tr))
    seen: dict[str, list[tuple[float, float]]] = {}
    step = PrunerCallback.after_step

    def after_step(self, trainer):
        step(self, trainer)  # the pruner first: it sets the next step's masks, or prunes
        phase = self.pruner.phase
        if len(seen.get(phase, [])) >= 2:
            return
        saved = _bn_state(trainer.model)  # both forwards start from the same BN statistics
        compiled = nn.functional.cross_entropy(trainer.net(x), y).item()
        _set_bn_state(trainer.model, saved)
        eager = nn.functional.cross_entropy(trainer.model(x), y).item()
        _set_bn_state(trainer.model, saved)
        seen.setdefault(phase, []).append((compiled, eager))

    monkeypatch.setattr(PrunerCallback, "after_step", after_step)
    torch.manual_seed(0)
    assert TrainConfig(compile=True).compile_mode == "reduce-overhead"
    res = dsaprune.prune(
        tiny_net(), tr, budget="flops=0.5", epochs=3, test_data=te, progress=False,
        device="cpu", compile=True,
    )  # fmt: skip
    assert res.report["flops_ratio"] <= 0.5
    # warm-up, the allocation under masks, and the pruned network's fine-tuning
    assert {"warmup", "allocate", "pruned"} <= set(seen), seen.keys()
    for phase, pairs in seen.items():
        for compiled, eager in pairs:
            assert compiled == pytest.approx(eager, rel=1e-4, abs=1e-5), phase


def test_compile_mode_is_checked():
    with pytest.raises(ValueError, match="compile_mode must be one of default, reduce-overhead"):
        TrainConfig(compile_mode="fast")
