"""``dsaprune`` entry point: builds the argument parser and dispatches to the subcommands."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import __version__, models
from ..cost.timing import steady_malloc
from ..data import DATASETS, DataError
from ..estimators import ESTIMATORS
from ..grouping import TraceError
from ..methods import METHODS, describe_methods
from ..train import CheckpointError, TrainConfig, TrainingDiverged
from ..train.config import COMPILE_MODES

STEADY_HELP = (
    "keep freed memory in this process (glibc: no per-call mmap, no heap trimming);"
    " at large batches the system allocator's page faults can take half of a "
    "CPU forward pass and vary between runs. Deploy the pruned network the same way"
)


FORCE_HELP = "write into RUN_DIR even if it holds another run's files (they are replaced)"
# the demo's task: the methods differ there by more than the seeds' spread (docs/decisions.md)
DEMO_BUDGET, DEMO_EPOCHS, DEMO_LR = "flops=0.3", 0.5, 0.01
DEMO_METHODS = COMPARE_METHODS = "dsa,group_fisher,uniform"


def _bool_flag(p: argparse.ArgumentParser, name: str, help: str) -> None:
    p.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=None, help=help)


def _positive(v: str) -> int:
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {v!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def _counts(v: str) -> list[int]:
    try:
        return [_positive(x) for x in v.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected whole channel counts >= 1 separated by commas, e.g. 14,4,5; got {v!r}"
        ) from None


def _data_args(p: argparse.ArgumentParser, recorded: bool = False) -> None:
    g = p.add_argument_group("data")
    g.add_argument(
        "--dataset",
        default=None if recorded else "shapes",
        choices=DATASETS,
        help=("[the data set the checkpoint records] " if recorded else "")
        + "shapes: built in, needs no files (default); cifar10 / cifar100: the "
        "official python-version folder or .tar.gz, or an image folder / archive "
        "train/<class>/*, test/<class>/*; imagefolder: any such folder of small "
        "same-size images; imagenet: an ImageNet-style folder of any image sizes",
    )
    g.add_argument(
        "--data",
        metavar="PATH",
        help="file or folder of the data set (default for cifar: "
        "~/.cache/dsaprune/data/<name>, downloaded if missing)",
    )
    g.add_argument(
        "--download",
        action="store_true",
        help="download CIFAR into --data if nothing is found there",
    )
    g.add_argument(
        "--image-size", type=int, default=224, help="crop size for --dataset imagenet (default 224)"
    )
    g.add_argument(
        "--workers", type=int, default=4, help="loader processes for --dataset imagenet (default 4)"
    )
    g.add_argument(
        "--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda, cuda:N"
    )


def _train_args(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    g = p.add_argument_group("training schedule (defaults in brackets; --config sets any of them)")
    g.add_argument("--epochs", type=float, help=f"epochs, may be fractional [{d.epochs}]")
    g.add_argument("--batch-size", type=_positive, help=f"global batch size [{d.batch_size}]")
    g.add_argument("--lr", type=float, help=f"peak learning rate [{d.lr}]")
    g.add_argument("--momentum", type=float, help=f"SGD momentum [{d.momentum}]")
    _bool_flag(g, "nesterov", f"Nesterov momentum [{d.nesterov}]")
    g.add_argument("--weight-decay", type=float, help=f"L2 weight decay [{d.weight_decay}]")
    _bool_flag(
        g, "no-wd-bn-bias", f"no weight decay on BN parameters and biases [{d.no_wd_bn_bias}]"
    )
    g.add_argument(
        "--schedule", choices=["cosine", "step"], help=f"learning-rate decay [{d.schedule}]"
    )
    g.add_argument(
        "--milestones",
        type=lambda s: [float(v) for v in s.split(",")],
        help="step schedule: fractions of the run where the lr drops, e.g. 0.4,0.6,0.8",
    )
    g.add_argument(
        "--gamma", type=float, help=f"step schedule: lr multiplier per milestone [{d.gamma}]"
    )
    g.add_argument("--warmup-epochs", type=float, help=f"linear warm-up length [{d.warmup_epochs}]")
    g.add_argument("--label-smoothing", type=float, help=f"[{d.label_smoothing}]")
    _bool_flag(g, "amp", f"bf16 autocast on CUDA [{d.amp}]")
    _bool_flag(g, "channels-last", f"channels_last memory format on CUDA [{d.channels_last}]")
    _bool_flag(g, "compile", f"torch.compile the model, forward and backward [{d.compile}]")
    g.add_argument(
        "--compile-mode",
        choices=COMPILE_MODES,
        help=f"torch.compile mode; reduce-overhead adds CUDA graphs on CUDA [{d.compile_mode}]",
    )
    g.add_argument(
        "--seed", type=int, help=f"seed of initialisation, order and augmentation [{d.seed}]"
    )
    g.add_argument("--config", metavar="FILE", help="YAML file of these settings (CLI options win)")


def _prune_args(pr: argparse.ArgumentParser, several: bool = False) -> None:
    """The options of a prune run; ``several``: ``compare``'s, which runs one per method and
    seed (``--methods``, ``--seeds``) and continues itself (no ``--resume``)."""
    src = pr.add_mutually_exclusive_group()
    src.add_argument(
        "--model",
        default="resnet20",
        help="model to prune from scratch: a zoo name, torchvision:NAME or timm:NAME",
    )
    src.add_argument("--checkpoint", metavar="FILE", help="a trained dsaprune checkpoint")
    pr.add_argument(
        "--weights",
        metavar="FILE",
        help="start --model from a state_dict file, e.g. torchvision's pretrained weights "
        "(treated as a trained network: no warm-up; a classifier for another number of "
        "classes is re-initialised)",
    )
    pr.add_argument(
        "--budget",
        help="KIND=FRACTION of the full network: flops=0.5, params=0.3, latency=0.5 (measured "
        "on --device at --latency-batch) [flops=0.5, or the config's]",
    )
    pr.add_argument(
        "--latency-batch",
        type=int,
        help="batch size that latency is predicted and measured at [1]",
    )
    pr.add_argument(
        "--steady-malloc",
        action="store_true",
        help=STEADY_HELP,
    )
    pr.add_argument(
        "--latency-report",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="measure the network's latency before and after pruning for the report (default)",
    )
    pr.add_argument("--out", required=True, metavar="RUN_DIR", help="output folder")
    if several:
        pr.add_argument(
            "--methods",
            default=COMPARE_METHODS,
            help="methods to compare, comma-separated [%(default)s]. " + describe_methods(),
        )
        pr.add_argument(
            "--seeds",
            type=_positive,
            default=3,
            help="runs per method, seeds --seed, --seed+1, … [3]",
        )
    else:
        pr.add_argument(
            "--method",
            choices=list(METHODS),
            help="dsa (default), or a baseline in the same flow. " + describe_methods(),
        )
        pr.add_argument(
            "--keep-counts",
            type=_counts,
            metavar="N,N,...",
            help="with --method given: the channels each prunable group keeps, in the order of "
            "a run's report.json keep_counts",
        )
    pr.add_argument(
        "--penalty",
        type=float,
        help="strength of the ssl / morphnet penalty [ssl 5e-4, morphnet 2e-3]",
    )
    pr.add_argument("--round-to", type=_positive, help="channel counts in multiples of N [1]")
    pr.add_argument(
        "--physical",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="physically prune once masks are hard (default), or stay masked",
    )
    pr.add_argument(
        "--estimator",
        choices=list(ESTIMATORS),
        help="DSA's loss signal for the allocation step: fisher (second-order removal cost "
        "of each group's next channels, the default) or ste (the paper's straight-through "
        "gradient of sampled masks)",
    )
    pr.add_argument(
        "--warmup-fraction",
        type=float,
        help="share of the schedule before allocation [the paper's 20 epochs, or 0.2 of a "
        "run shorter than 100 epochs; 0 with --checkpoint]",
    )
    if several:
        pr.add_argument(
            "--force",
            action="store_true",
            help="start every run afresh, replacing what RUN_DIR holds (default: continue)",
        )
    else:
        pr.add_argument(
            "--resume",
            action="store_true",
            help="continue an interrupted run from RUN_DIR/last.pt",
        )
        pr.add_argument("--force", action="store_true", help=FORCE_HELP)
    pr.add_argument("--quiet", action="store_true", help="no progress output")
    _data_args(pr)
    _train_args(pr)
    pr.set_defaults(epochs_default=1.0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dsaprune",
        description="Budgeted channel pruning with Differentiable Sparsity Allocation.",
    )
    p.add_argument("--version", action="version", version=f"dsaprune {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser(
        "train",
        help="train a zoo model (plain supervised training)",
        description="Train a zoo model; run under `torchrun --nproc_per_node=N` "
        "for data-parallel training. Writes last.pt (every epoch), "
        "metrics.jsonl and config.json to --out.",
    )
    t.add_argument(
        "--model",
        default="resnet20",
        help=f"zoo model ({', '.join(models.names())}), or torchvision:NAME / timm:NAME",
    )
    t.add_argument("--out", required=True, metavar="RUN_DIR", help="output folder")
    t.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    t.add_argument("--force", action="store_true", help=FORCE_HELP)
    t.add_argument("--quiet", action="store_true", help="no progress output")
    _data_args(t)
    _train_args(t)

    e = sub.add_parser(
        "eval",
        help="evaluate a checkpoint on a test set",
        description="Rebuild the model stored in a checkpoint and report its "
        "test accuracy and loss.",
    )
    e.add_argument("--checkpoint", required=True, metavar="FILE", help="a last.pt file")
    e.add_argument("--batch-size", type=_positive, default=256, help="evaluation batch size [256]")
    _data_args(e, recorded=True)

    pr = sub.add_parser(
        "prune",
        help="prune a zoo model or a trained checkpoint to a budget with DSA",
        description="Differentiable Sparsity Allocation under a budget while the weights train "
        "(from scratch with --model, or from a trained --checkpoint with no warm-up), physical "
        "channel removal, then training on until the schedule ends. Writes model.pt, "
        "report.json, report.md, allocation.png and training.png to --out.",
    )
    _prune_args(pr)
    cmp = sub.add_parser(
        "compare",
        help="prune the same network with several methods and seeds, and compare them",
        description="One `dsaprune prune` run per method and seed (the prune options apply to "
        "every run; --seed is the first seed), into RUN_DIR/<method>_s<seed>/, then a table of "
        "each method's test accuracy, its standard error over seeds and the differences "
        "against DSA paired by seed. Run the same command again to continue an interrupted "
        "comparison. Writes compare.json and compare.md to --out.",
    )
    _prune_args(cmp, several=True)

    ins = sub.add_parser(
        "inspect",
        help="list a model's channel groups and their costs",
        description="Trace a zoo model (or a checkpoint's) into channel groups "
        "and print members, channels and share of FLOPs and parameters.",
    )
    isrc = ins.add_mutually_exclusive_group()
    isrc.add_argument(
        "--model", default="resnet20", help="zoo model, torchvision:NAME or timm:NAME"
    )
    isrc.add_argument("--checkpoint", metavar="FILE", help="a dsaprune checkpoint")
    ins.add_argument(
        "--latency",
        action="store_true",
        help="also fit (or read from the cache) the latency model on --device and show each "
        "group's share of the latency",
    )
    ins.add_argument("--latency-batch", type=int, default=1, help="batch size for --latency [1]")
    ins.add_argument("--steady-malloc", action="store_true", help=STEADY_HELP)
    ins.add_argument("--device", default="cpu", help="device for --latency [cpu]")

    ex = sub.add_parser(
        "export",
        help="export a pruned model file or a training checkpoint to ONNX",
        description="Write the model as ONNX (input 'input' [batch, C, H, W], output 'logits', "
        "dynamic batch axis) for onnxruntime and other deployment runtimes.",
    )
    ex.add_argument("--checkpoint", required=True, metavar="FILE", help="model.pt or last.pt")
    ex.add_argument("--onnx", required=True, metavar="OUT", help="the .onnx file to write")
    ex.add_argument(
        "--input-size",
        type=_positive,
        nargs=3,
        metavar=("C", "H", "W"),
        help="[the model's own]",
    )
    ex.add_argument("--opset", type=int, default=17, help="ONNX opset version [17]")

    d = sub.add_parser(
        "demo",
        help="the built-in demonstration (what `make demo` runs)",
        description="A ResNet-20 trained on the built-in shapes data (shipped with the package) "
        "pruned by DSA, group_fisher and uniform, several seeds each; no files needed.",
    )
    d.add_argument("--out", default="runs/demo", metavar="RUN_DIR", help="output [runs/demo]")
    d.add_argument("--budget", default=DEMO_BUDGET, help=f"[{DEMO_BUDGET}]")
    d.add_argument(
        "--epochs", type=float, default=DEMO_EPOCHS, help=f"epochs of each run [{DEMO_EPOCHS:g}]"
    )
    d.add_argument(
        "--lr", type=float, default=DEMO_LR, help=f"learning rate of the fine-tune [{DEMO_LR:g}]"
    )
    d.add_argument("--seeds", type=int, default=3, help="seeds per method [3]")
    d.add_argument("--methods", default=DEMO_METHODS, help="[%(default)s]")
    d.add_argument("--device", default="auto", help="auto, cpu, cuda")
    d.add_argument(
        "--config",
        metavar="FILE",
        help="YAML file of prune settings for every run, as `dsaprune prune --config` reads",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "steady_malloc", False) and not steady_malloc():
        print(
            f"dsaprune {args.command}: warning: --steady-malloc needs glibc; latency is "
            "measured with the allocator as it is",
            file=sys.stderr,
        )
    from . import commands

    try:
        from . import compare, demo
        from . import prune as prune_cmds

        args.argv = list(argv if argv is not None else sys.argv[1:])
        handlers = {
            "train": commands.train,
            "eval": commands.evaluate,
            "demo": demo.cmd_demo,
            "compare": compare.cmd_compare,
            "prune": prune_cmds.cmd_prune,
            "inspect": prune_cmds.cmd_inspect,
            "export": prune_cmds.cmd_export,
        }
        return handlers[args.command](args)
    except (DataError, CheckpointError, TrainingDiverged, TraceError, ValueError) as e:
        print(f"dsaprune {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dsaprune {args.command}: interrupted; {_where_to_resume(args)}", file=sys.stderr)
        return 130


def _where_to_resume(args: argparse.Namespace) -> str:
    out = getattr(args, "out", None)
    if args.command == "compare" and out:
        return f"finished runs are kept in {out}/: run the same command again to continue"
    if args.command not in ("train", "prune") or not out:
        return "nothing was written"
    ckpt = Path(out) / "last.pt"
    if ckpt.is_file():
        return f"{ckpt} holds the last finished epoch: run the same command with --resume"
    return "no epoch had finished, so there is no checkpoint: run the command again"


if __name__ == "__main__":
    sys.exit(main())
