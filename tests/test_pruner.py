"""The Pruner in a hand-written training loop, and models whose outputs are not class logits."""

import pytest
import torch
from torch import nn

import dsaprune
from dsaprune.budget import BudgetError
from dsaprune.data import channel_stats, make_shapes
from dsaprune.train import TrainConfig, make_optimizer
from dsaprune.train.schedule import lr_factor


def _batches(n: int, seed: int, batch: int = 32) -> list[tuple[torch.Tensor, torch.Tensor]]:
    d = make_shapes(n, seed=seed)
    mean, std = channel_stats(d.images)
    mean, std = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    x = (d.images.permute(0, 3, 1, 2).float() / 255 - mean) / std  # stored as [N, H, W, C]
    y = d.labels.long()
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, n, batch)]


TRAIN, VAL = _batches(320, 2), _batches(96, 4)
EPOCHS = 2
SETTINGS = dict(window_end_fraction=0.6, lr=0.05)


def _own_loop(
    model: nn.Module,
    stop_after: int | None = None,
    state: dict | None = None,
    estimator: str = "fisher",
    method: str = "dsa",
    **settings,
):
    """The loop a user writes: their optimizer and schedule, ``pruner.step()`` after each
    optimizer step. ``stop_after``: return a checkpoint after that many steps; ``state``: go on
    from one."""
    cfg = TrainConfig(epochs=EPOCHS, lr=SETTINGS["lr"])
    total = EPOCHS * len(TRAIN)
    pruner = dsaprune.Pruner(
        model,
        TRAIN[0][0][:1],
        "flops=0.5",
        total_steps=total,
        val_data=VAL,
        train_data=TRAIN,
        steps_per_epoch=len(TRAIN),
        window_end_fraction=SETTINGS["window_end_fraction"],
        estimator=estimator,
        method=method,
        **settings,
    )
    optimizer = make_optimizer(model, cfg)
    step = 0
    if state is not None:
        pruner.load_state_dict(state["pruner"])  # first: it may change the model's shapes
        model.load_state_dict(state["model"])
        optimizer = make_optimizer(model, cfg)
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
    model.train()
    for x, y in (TRAIN * EPOCHS)[step:]:
        for g in optimizer.param_groups:
            g["lr"] = cfg.lr * lr_factor(step, total, 0, cfg.schedule, cfg.milestones, cfg.gamma)
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        if pruner.step(optimizer.param_groups[0]["lr"]):
            optimizer = make_optimizer(model, cfg)  # channels were removed
        if step == stop_after:
            return {
                "pruner": pruner.state_dict(),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "step": step,
                "phase": pruner.phase,
            }
    return pruner.finish()


def test_own_loop_gives_the_same_allocation_and_model_as_prune(tiny_net):
    torch.manual_seed(0)
    ref = dsaprune.prune(
        tiny_net(),
        TRAIN,
        VAL,
        epochs=EPOCHS,
        device="cpu",
        progress=False,
        report_latency=False,
        **SETTINGS,
    )
    torch.manual_seed(0)
    own = _own_loop(tiny_net())
    assert own.report["met_by"] == ref.report["met_by"] == "allocator"
    assert own.report["keep_counts"] == ref.report["keep_counts"]
    assert own.report["flops_ratio"] == ref.report["flops_ratio"] <= 0.5
    assert own.report["allocation_updates"] == ref.report["allocation_updates"] > 3
    a, b = own.model.state_dict(), ref.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


@pytest.mark.parametrize(
    "estimator,method",
    [("fisher", "dsa"), ("fisher_step", "dsa"), ("fisher", "group_fisher_iterative")],
)
def test_own_loop_resumes_exactly_in_the_middle_of_the_allocation(
    tiny_net, estimator, method, monkeypatch
):
    """``fisher_step``: the first step after the resume is a Θ-step's, so it must gather;
    ``group_fisher_iterative`` (2 rounds over the window's first 5 steps, at its 3rd and 5th):
    after its first round, with the Fisher of a step summed since."""
    monkeypatch.setattr(dsaprune.methods.IterativeGroupFisher, "rounds", 2)
    stop = 8 if method == "group_fisher_iterative" else 6
    torch.manual_seed(0)
    whole = _own_loop(tiny_net(), estimator=estimator, method=method)
    torch.manual_seed(0)
    saved = _own_loop(tiny_net(), stop_after=stop, estimator=estimator, method=method)
    assert saved["phase"] == "allocate"  # the masks of the next step come from loaded weights
    if method == "group_fisher_iterative":
        rounds = saved["pruner"]["rounds"]
        assert rounds["done"] == 1 and rounds["samples"] > 0
    resumed = _own_loop(tiny_net(), state=saved, estimator=estimator, method=method)
    assert resumed.report["keep_counts"] == whole.report["keep_counts"]
    for k, v in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v, rtol=0, atol=0, msg=k)


def test_a_resume_under_other_settings_is_refused_by_name(tiny_net, tmp_path):
    """The checkpoint holds the settings it was made with (loadable with weights_only): a
    resume under another one, e.g. a default that moved, would not continue the same run."""
    torch.manual_seed(0)
    saved = _own_loop(tiny_net(), stop_after=6)
    torch.save(saved, tmp_path / "last.pt")
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    # the default's value for this short window: a held-out pass at every update
    assert saved["pruner"]["config"]["signal_every"] == 1
    with pytest.raises(ValueError, match=r"other DSA settings \(signal_every: 1 there, 2 now\)"):
        _own_loop(tiny_net(), state=saved, signal_every=2)
    with pytest.raises(ValueError, match=r"allocator.power: 2.0 there, 1.0 now"):
        _own_loop(tiny_net(), state=saved, power=1.0)
    resumed = _own_loop(tiny_net(), state=saved, signal_every=1)  # the same, given explicitly
    assert resumed.report["flops_ratio"] <= 0.5


def test_a_checkpoint_older_than_a_setting_names_it_and_the_way_out(tiny_net):
    """A checkpoint saved before a setting existed cannot be matched by any value given now:
    the message says which setting is new and that the saving version resumes it."""
    torch.manual_seed(0)
    saved = _own_loop(tiny_net(), stop_after=6)
    del saved["pruner"]["config"]["signal_every"]
    saved["pruner"]["config"]["allocator"]["retired"] = 3
    msg = (
        r"allocator\.retired: 3 there, a setting this version no longer has, "
        r"signal_every: not in the checkpoint \(a setting newer than it\), 1 now\); "
    )
    with pytest.raises(ValueError, match=msg + "resume it with the dsaprune version that saved it"):
        _own_loop(tiny_net(), state=saved)


def test_pruner_names_what_it_needs(tiny_net):
    x = TRAIN[0][0][:1]
    with pytest.raises(ValueError, match="pass val_data"):
        dsaprune.Pruner(tiny_net(), x, total_steps=10)
    with pytest.raises(ValueError, match="total_steps"):
        dsaprune.Pruner(tiny_net(), x, total_steps=0, val_data=VAL)
    with pytest.raises(ValueError, match="unknown DSA settings"):
        dsaprune.Pruner(tiny_net(), x, total_steps=10, val_data=VAL, rho=1)
    pruner = dsaprune.Pruner(tiny_net(), x, total_steps=10, method="ssl", train_data=TRAIN)
    with pytest.raises(ValueError, match=r"step\(lr="):
        pruner.step()
    uniform = dsaprune.Pruner(tiny_net(), x, total_steps=10, method="uniform")
    res = uniform.finish()  # a schedule that never reached its window still meets the budget
    assert res.report["flops_ratio"] <= 0.5 and res.report["met_by"] == "uniform"


class Heads(nn.Module):
    """A shared body with two heads, returning a dict or a tuple."""

    def __init__(self, as_dict: bool) -> None:
        super().__init__()
        self.as_dict = as_dict
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.cls, self.box = nn.Linear(32, 10), nn.Linear(32, 4)

    def forward(self, x):
        h = self.body(x)
        if self.as_dict:
            return {"logits": self.cls(h), "box": self.box(h)}
        return self.cls(h), self.box(h)


@pytest.mark.parametrize("as_dict", [True, False], ids=["dict", "tuple"])
def test_models_with_dict_or_tuple_outputs_prune_with_a_user_loss(as_dict):
    def loss_fn(out, y):
        logits, box = (out["logits"], out["box"]) if as_dict else out
        return nn.functional.cross_entropy(logits, y) + box.pow(2).mean()

    torch.manual_seed(0)
    res = dsaprune.prune(
        Heads(as_dict),
        TRAIN,
        VAL,
        test_data=VAL,
        epochs=2,
        loss_fn=loss_fn,
        device="cpu",
        progress=False,
        report_latency=False,
        window_end_fraction=0.6,
        metric=lambda model, data: -sum(loss_fn(model(x), y).item() for x, y in data),
    )
    r = res.report
    assert r["metric_after"] < 0 and r["metric_before"] is None  # the caller's own score
    assert r["flops_ratio"] <= 0.5 and r["flops_after"] == dsaprune.count_flops(res.model)
    assert r["acc_after"] is None  # not class logits: the metric is the caller's
    assert all(h["test_loss"] is not None and h["train_acc"] is None for h in r["history"])
    out = res.model(VAL[0][0])
    logits = out["logits"] if as_dict else out[0]
    assert logits.shape == (32, 10)


def test_iterative_group_fisher_cuts_in_rounds_to_the_budget_and_finishes_a_short_run(tiny_net):
    torch.manual_seed(0)
    res = _own_loop(tiny_net(), method="group_fisher_iterative")
    r = res.report
    assert r["met_by"] == "group_fisher_iterative" and r["flops_ratio"] <= 0.5
    ratios = [h["cost_ratio"] for h in r["allocation_history"]]
    assert [h["round"] for h in r["allocation_history"]] == list(range(1, len(ratios) + 1))
    assert len(ratios) > 2 and ratios == sorted(ratios, reverse=True) and ratios[-1] <= 0.5
    assert r["allocation_updates"] == len(ratios)  # its rounds
    # a run that ends before its window opens takes every round at once, on a one-shot Fisher
    model = tiny_net()
    pruner = dsaprune.Pruner(
        model, TRAIN[0][0][:1], "flops=0.5", total_steps=100, train_data=TRAIN,
        method="group_fisher_iterative",
    )  # fmt: skip
    short = pruner.finish().report
    assert short["flops_ratio"] <= 0.5 and len(short["allocation_history"]) == 1


def test_given_applies_another_runs_counts_and_refuses_counts_that_do_not_fit(tiny_net):
    x = TRAIN[0][0][:1]
    uniform = dsaprune.Pruner(tiny_net(), x, total_steps=10, method="uniform").finish()
    counts = [14, 13]  # at the budget (0.497 of the FLOPs), where uniform keeps [10, 23]
    assert counts != uniform.report["keep_counts"]
    given = dsaprune.Pruner(
        tiny_net(), x, total_steps=10, method="given", keep_counts=counts, train_data=TRAIN
    ).finish()
    assert given.report["keep_counts"] == counts and given.report["met_by"] == "given"
    assert given.report["flops_ratio"] <= 0.5
    with pytest.raises(ValueError, match="set keep_counts"):
        dsaprune.Pruner(tiny_net(), x, total_steps=10, method="given")
    with pytest.raises(ValueError, match="method 'given' only"):
        dsaprune.Pruner(tiny_net(), x, total_steps=10, val_data=VAL, keep_counts=counts)
    with pytest.raises(ValueError, match="do not fit this network"):
        dsaprune.Pruner(tiny_net(), x, total_steps=10, method="given", keep_counts=counts[1:])
    with pytest.raises(ValueError, match="do not fit this network"):
        dsaprune.Pruner(tiny_net(), x, total_steps=10, method="given", keep_counts=[17, 13])
    # below the budget: kept exactly (no shift fills the budget); over it: refused at once
    below = dsaprune.Pruner(
        tiny_net(), x, total_steps=10, method="given", keep_counts=[11, 19], train_data=TRAIN
    ).finish()
    assert below.report["keep_counts"] == [11, 19] and below.report["flops_ratio"] < 0.49
    with pytest.raises(BudgetError, match=r"keep_counts \[16, 14\] cost flops=0\.5.*over the"):
        dsaprune.Pruner(tiny_net(), x, total_steps=10, method="given", keep_counts=[16, 14])


def test_fisher_batches_sets_how_many_training_batches_the_fisher_reads(tiny_net):
    class Counted(list):
        def __iter__(self):
            for b in super().__iter__():
                self.read += 1
                yield b

    x = TRAIN[0][0][:1]
    for n in (1, 3):
        batches = Counted(TRAIN)
        batches.read = 0
        dsaprune.Pruner(
            tiny_net(), x, total_steps=10, method="group_fisher", train_data=batches,
            fisher_batches=n,
        ).finish()  # fmt: skip
        assert batches.read == n
    with pytest.raises(ValueError, match="fisher_batches is a whole number"):
        dsaprune.DSAConfig(fisher_batches=0)
