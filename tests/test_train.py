import json

import pytest
import torch

from dsaprune.cli.main import main
from dsaprune.data import DeviceLoader, channel_stats, make_shapes
from dsaprune.train import (
    CheckpointError,
    TrainConfig,
    Trainer,
    TrainingDiverged,
    evaluate,
    read_checkpoint,
)
from dsaprune.train.schedule import lr_factor


def _loaders(n_train=512, n_test=200, batch=64, seed=0):
    tr, te = make_shapes(n_train, seed=seed), make_shapes(n_test, seed=seed + 99)
    mean, std = channel_stats(tr.images)
    kw = dict(mean=mean, std=std, seed=seed)
    return DeviceLoader(tr, batch, train=True, **kw), DeviceLoader(te, 100, train=False, **kw)


def test_schedules():
    assert lr_factor(0, 100, 10, "cosine", [], 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, "cosine", [], 0.1) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10, "cosine", [], 0.1) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "cosine", [], 0.1) == pytest.approx(0.5)
    assert lr_factor(99, 100, 0, "cosine", [], 0.1) < 0.001
    ms = [0.4, 0.6, 0.8]
    assert [lr_factor(s, 300, 0, "step", ms, 0.1) for s in (119, 120, 180, 240)] == pytest.approx(
        [1, 0.1, 0.01, 0.001]
    )


def test_config_validation_and_yaml(tmp_path):
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="linear")
    with pytest.raises(ValueError, match="unknown training settings.*bogus"):
        TrainConfig.from_dict({"bogus": 1})
    import argparse

    from dsaprune.cli.spec import RunSpec

    (tmp_path / "c.yaml").write_text("train:\n  epochs: 3\n  lr: 0.05\n")
    cfg = RunSpec.from_args(argparse.Namespace(config=str(tmp_path / "c.yaml"), lr=0.2)).train
    assert cfg.epochs == 3 and cfg.lr == 0.2  # the file, and the command line over it


def test_trainer_learns(tiny_net):
    torch.manual_seed(0)
    tr, te = _loaders(n_train=1024)
    before = evaluate(tiny_net(), te)["acc"]
    t = Trainer(tiny_net(), tr, te, TrainConfig(epochs=8, lr=0.2, batch_size=64), progress=False)
    last = t.fit()
    assert last["test_acc"] > max(0.4, before + 0.2)  # chance is 0.1
    assert len(t.history) == 8 and t.step == 8 * 16


def test_evaluate_per_sample(tiny_net):
    """``per_sample`` gives which images were right, in the loader's order, and its mean is the
    accuracy; outputs that are not class logits have none."""
    torch.manual_seed(0)
    _, te = _loaders(n_test=250)
    net = tiny_net()
    ev = evaluate(net, te, per_sample=True)
    right = ev["correct"]
    assert right.dtype == torch.bool and right.shape == (250,)
    assert right.sum().item() / 250 == ev["acc"]
    expected = torch.cat([net.eval()(x).argmax(1) == y for x, y in te])
    assert torch.equal(right, expected)
    assert "correct" not in evaluate(net, te)  # only on request

    class Embed(torch.nn.Module):  # not class logits: no accuracy, no per-sample results
        def forward(self, x):
            return x.flatten(1)[:, :3].unsqueeze(1)

    ev = evaluate(Embed(), te, per_sample=True, device=torch.device("cpu"))
    assert ev["acc"] is None and ev["correct"] is None


def test_no_weight_decay_on_bn_and_bias(tiny_net):
    tr, te = _loaders()
    cfg = TrainConfig(epochs=1, no_wd_bn_bias=True)
    groups = Trainer(tiny_net(), tr, te, cfg, progress=False).optimizer.param_groups
    assert groups[1]["weight_decay"] == 0 and all(p.ndim == 1 for p in groups[1]["params"])
    assert all(p.ndim > 1 for p in groups[0]["params"])


def test_fractional_epochs(tiny_net):
    tr, te = _loaders()
    t = Trainer(tiny_net(), tr, te, TrainConfig(epochs=0.5), progress=False)
    t.fit()
    assert t.step == 4 and t.epoch == 1


def test_resume_is_exact(tmp_path, tiny_net):
    cfg = TrainConfig(epochs=3, lr=0.05, warmup_epochs=0.5, seed=3)

    def run(out, stop_after=None):
        torch.manual_seed(3)
        tr, te = _loaders(seed=3)
        t = Trainer(tiny_net(), tr, te, cfg, out, meta={"model_name": "tiny"}, progress=False)
        t.resume()
        if stop_after is not None:  # the process dies during epoch `stop_after + 1`
            real, done = t.train_epoch, []

            def dying_epoch():
                if len(done) == stop_after:
                    raise KeyboardInterrupt
                done.append(1)
                return real()

            t.train_epoch = dying_epoch
            with pytest.raises(KeyboardInterrupt):
                t.fit()
            return t
        t.fit()
        return t

    full = run(tmp_path / "a")
    run(tmp_path / "b", stop_after=1)
    resumed = run(tmp_path / "b")
    assert resumed.epoch == 3 and resumed.step == full.step
    for (k, v), w in zip(
        full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(v, w), k
    a = [json.loads(s) for s in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(s) for s in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]


def test_checkpoint_loads_weights_only(tmp_path, tiny_net):
    tr, te = _loaders()
    Trainer(tiny_net(), tr, te, TrainConfig(epochs=1), tmp_path, progress=False).fit()
    ck = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ck["format"] == "dsaprune-checkpoint" and ck["epoch"] == 1
    assert not list(tmp_path.glob("*.tmp"))


def test_nan_loss_stops_with_checkpoint_intact(tmp_path, tiny_net):
    tr, te = _loaders()
    t = Trainer(tiny_net(), tr, te, TrainConfig(epochs=3, lr=0.05), tmp_path, progress=False)
    t.total_steps = t.steps_per_epoch
    t.fit()
    good = (tmp_path / "last.pt").read_bytes()
    t = Trainer(tiny_net(), tr, te, TrainConfig(epochs=3, lr=1e30), tmp_path, progress=False)
    t.resume()
    with pytest.raises(TrainingDiverged, match="last good checkpoint is intact"):
        t.fit()
    assert (tmp_path / "last.pt").read_bytes() == good


def test_checkpoint_of_other_architecture(tmp_path, tiny_net):
    tr, te = _loaders()
    meta = {"model_name": "tiny"}
    Trainer(tiny_net(), tr, te, TrainConfig(epochs=0.2), tmp_path, meta=meta, progress=False).fit()
    other = Trainer(
        tiny_net(), tr, te, TrainConfig(), tmp_path, meta={"model_name": "big"}, progress=False
    )
    with pytest.raises(CheckpointError, match="holds a 'tiny' model, not 'big'"):
        other.resume()
    wider = Trainer(
        tiny_net(num_classes=5), tr, te, TrainConfig(), tmp_path, meta=meta, progress=False
    )
    with pytest.raises(CheckpointError, match="fc.weight has shape"):
        wider.resume()
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        read_checkpoint(tmp_path / "junk.pt")
    # a model file (dsaprune.save) passed where a training checkpoint belongs: the fix is named
    torch.save({"format": "dsaprune-pruned-model", "model_name": "tiny"}, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="pass --model tiny --weights"):
        read_checkpoint(tmp_path / "m.pt")


@pytest.mark.slow
def test_cli_train_resume_eval(tmp_path, capsys, small_shapes):
    out = tmp_path / "run"
    args = [
        "train",
        "--model",
        "resnet20",
        "--dataset",
        "shapes",
        "--epochs",
        "0.05",
        "--batch-size",
        "64",
        "--out",
        str(out),
        "--quiet",
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    assert (out / "last.pt").exists() and (out / "metrics.jsonl").exists()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"] == "resnet20" and cfg["epochs"] == 0.05
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out / "last.pt")]) == 0  # the data set it records
    assert f"resnet20 on shapes test ({small_shapes} images): accuracy" in capsys.readouterr().out
    # resuming a run into a folder of another model is refused with a clear message
    bad = args[:2] + ["resnet32"] + args[3:] + ["--resume"]
    assert main(bad) == 2
    assert "holds a 'resnet20' model, not 'resnet32'" in capsys.readouterr().err


def test_cli_errors(tmp_path, capsys):
    assert (
        main(
            [
                "train",
                "--dataset",
                "cifar10",
                "--data",
                str(tmp_path / "x"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "no cifar10 data there" in capsys.readouterr().err
    assert main(["train", "--model", "nope", "--epochs", "0.01", "--out", str(tmp_path)]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--warmup-epochs" in capsys.readouterr().out
