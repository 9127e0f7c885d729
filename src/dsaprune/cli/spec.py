"""The one typed description of a command-line run, built once from the arguments and the
``--config`` file (the only place the CLI reads YAML): training settings, pruning settings, the
budget and the schedule's length. Every command reads its settings from here."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from ..io import ConfigError, read_yaml
from ..pruner import DSAConfig, split_settings
from ..train import TrainConfig

# the pruning options that have a command-line flag (the others come from --config)
PRUNE_FLAGS = (
    "round_to",
    "method",
    "physical",
    "warmup_fraction",
    "penalty",
    "estimator",
    "keep_counts",
)


def read_settings(args: argparse.Namespace) -> dict:
    """Flat settings: ``--config`` (``train:`` / ``dsa:`` sections, or flat) overridden by the
    options given on the command line."""
    s: dict = {}
    if getattr(args, "config", None):
        d = read_yaml(args.config)
        for section in ("train", "dsa"):
            part = d.pop(section, {}) or {}
            if not isinstance(part, dict):
                raise ConfigError(f"--config {args.config}: '{section}:' must hold a mapping")
            s.update(part)
        s.update(d)
    for k in (*TrainConfig.fields(), *PRUNE_FLAGS, "latency_batch"):
        v = getattr(args, k, None)
        if v is not None:
            s[k] = v
    return s


@dataclass
class RunSpec:
    """A run's settings, typed; ``budget`` is None where neither the arguments nor the file
    give one (the command's default applies)."""

    train: TrainConfig
    dsa: DSAConfig = field(default_factory=DSAConfig)
    budget: str | None = None
    latency_batch: int = 1

    @classmethod
    def from_args(cls, args: argparse.Namespace, *, trained: bool = False) -> RunSpec:
        """``trained``: the run starts from trained weights (``--checkpoint``, ``--weights``):
        no warm-up unless one is set (the warm-up lets a fresh network's weights settle)."""
        s = read_settings(args)
        in_file = s.pop("budget", None)
        budget = getattr(args, "budget", None) or in_file  # the command line wins
        latency_batch = int(s.pop("latency_batch", 1))
        if s.get("epochs") is None and getattr(args, "epochs_default", None) is not None:
            s["epochs"] = args.epochs_default  # the command's own default (prune: 1 epoch)
        t, d = split_settings(s)
        if trained:
            d.setdefault("warmup_fraction", 0.0)
        return cls(TrainConfig.from_dict(t), DSAConfig.from_dict(d), budget, latency_batch)

    @property
    def epochs(self) -> float:
        return self.train.epochs

    def prune_settings(self) -> dict:
        """The settings ``dsaprune.prune`` takes as keywords (all but ``epochs``)."""
        t = {k: v for k, v in self.train.to_dict().items() if k != "epochs"}
        return {**t, **self.dsa.to_dict()}
