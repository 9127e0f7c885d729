"""The fast training path: the device-side augmentation draws crops and flips as the usual CPU
transforms do (uniform offsets in the padded image, a fair flip), a seeded run is deterministic,
and the compiled step (``compile=True``) computes the loss that the eager model does in every phase
of a pruning run: warm-up, allocation under masks, and after the channels are removed (when the
trainer compiles the smaller network afresh)."""

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


@pytest.mark.slow
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


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_device_augmentation_draws_uniform_crops_and_fair_flips(device):
    # each pixel holds its own row and column: the centre of a crop tells where it was cut
    rows, cols = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    img = torch.stack([rows, cols, torch.zeros_like(rows)], -1).to(torch.uint8)
    data = make_shapes(64)
    data.images = img.expand(64, 32, 32, 3).clone()
    ld = DeviceLoader(data, 64, train=True, mean=[0.0] * 3, std=[1 / 255] * 3, device=device)
    counts = torch.zeros(9, 9, dtype=torch.long)
    flips, n = 0, 0
    for epoch in range(40):
        ld.set_epoch(epoch)
        for x, _ in ld:
            x = x.cpu().round().long()
            r, c16, c15 = x[:, 0, 16, 16], x[:, 1, 16, 16], x[:, 1, 16, 15]
            flipped = c15 > c16  # a flipped crop runs its columns backwards
            dy = r - 12  # centre row 16 of the crop is row 16 + dy - 4 of the image
            dx = torch.where(flipped, c16 - 11, c16 - 12)
            assert bool(((dy >= 0) & (dy <= 8) & (dx >= 0) & (dx <= 8)).all())
            counts.index_put_((dy, dx), torch.ones_like(dy), accumulate=True)
            flips += int(flipped.sum())
            n += len(x)
    # Pearson's chi-square against the uniform 9 x 9 offsets (80 degrees of freedom: 124.8 is
    # its 0.1% critical value), and the flip rate within 4 standard errors of one half
    expected = n / 81
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 124.8, chi2
    assert abs(flips / n - 0.5) < 4 * (0.25 / n) ** 0.5


def test_a_seeded_run_is_deterministic(tiny_net):
    tr_data = make_shapes(384, seed=2)
    mean, std = channel_stats(tr_data.images)

    def run():
        torch.manual_seed(0)
        tr = DeviceLoader(tr_data, 64, train=True, mean=mean, std=std, seed=3)
        return dsaprune.prune(
            tiny_net(), tr, budget="flops=0.5", epochs=2, progress=False, device="cpu", seed=3
        )

    a, b = run(), run()
    assert [g["channels_after"] for g in a.report["groups"]] == [
        g["channels_after"] for g in b.report["groups"]
    ]
    for (k, va), vb in zip(
        a.model.state_dict().items(), b.model.state_dict().values(), strict=True
    ):
        assert torch.equal(va, vb), k
