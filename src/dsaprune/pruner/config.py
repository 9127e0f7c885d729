"""The flow's settings and its schedule: when the warm-up ends, how long the allocation window
lasts, how often the Θ-step runs and how often it reads a held-out pass, all from the run's length
so that any length works."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from ..allocation import AllocatorConfig
from ..estimators import make_estimator
from ..methods import FISHER_BATCHES, make_method
from ..train.config import TrainConfig

PAPER_EPOCHS = 300
PAPER_WARMUP_EPOCHS = 20
SHORT_RUN_WARMUP = 0.2  # the warm-up's share of a run shorter than 100 epochs
# α updates per held-out pass by default: 4 kept the Θ-step within 1.15x a plain step over the
# 8-epoch window (1.11-1.13 against 1.22-1.27 at 1) and was level with 1 on six dev seeds
# (default minus it -0.03 +- 0.14 at 50% FLOPs, +0.14 +- 0.14 at 33%; docs/decisions.md)
HELD_OUT_SIGNAL_EVERY = 4
# ... but never fewer held-out passes than this over the window: the evidence above had 25-29
# (100-117 updates); the demo's 9-update window with a pass every fourth update (2-3 passes)
# fell from 88.4% to 70.1% (docs/decisions.md), so a short window takes one at every update
MIN_HELD_OUT_PASSES = 25


def default_warmup_fraction(epochs: float) -> float:
    """The warm-up when none is given: the paper's 20 epochs, or a fifth of a shorter run.

    At 300 epochs this is the paper's 20/300; at 100 epochs or fewer it is 0.2. On the 8-epoch
    CIFAR-10 schedule 0.2 raised DSA from 80.14% to 80.81% at 50% FLOPs and from 79.19% to
    79.65% at 33% (2 seeds each, every seed higher; ``bench/results/cifar10_notes.md``).
    """
    if not epochs > 0:
        raise ValueError(f"epochs must be > 0, got {epochs}")
    return min(PAPER_WARMUP_EPOCHS / epochs, SHORT_RUN_WARMUP)


def flat_settings(d: dict, prefix: str = "") -> dict:
    """``DSAConfig.to_dict()`` (or a saved copy) flat, an allocator setting as
    ``allocator.<name>``: what comparisons of two runs' settings read."""
    out = {}
    for k, v in d.items():
        out.update(flat_settings(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def is_whole(value, minimum: int = 1) -> bool:
    """Whether ``value`` is an int (not a bool) of at least ``minimum``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


@dataclass
class DSAConfig:
    warmup_fraction: float | None = None  # None: default_warmup_fraction(epochs)
    window_end_fraction: float = 100 / 300
    alloc_every: int = 20  # weight steps per α update (fewer when the window is short)
    min_updates: int = 100  # the window holds at least this many α updates where it can
    # held-out samples each Θ-step reads: the first this many of its batch (the held-out loader
    # reshuffles every pass); None (the default), or inputs / targets that are not both tensors,
    # read it whole. 64 of 128 cost 0.67 ± 0.33 points after the 2-epoch fine-tune at 33% on the
    # dev half (docs/decisions.md, "The Θ-step's cost")
    alloc_samples: int | None = None
    # the Θ-step's held-out pass under bfloat16 autocast on the CPU as well (on a GPU it follows
    # the run's ``amp``, bfloat16 by default). Off by default: its channel costs matched
    # float32's within 1.4%, but over the 8-epoch window it saved nothing measurable on the
    # 2-core CPU (1.24× against 1.42× only on a 2-epoch fine-tune from a checkpoint), and the
    # published CPU tables were measured without it (docs/decisions.md, "Where the Θ-step's
    # time goes")
    signal_bf16: bool = False
    # a held-out pass every this many α updates; the updates between take the running average
    # of the loss signal (``AllocatorConfig.momentum``) as it stands, so the window keeps its
    # updates and pays for fewer passes. None (the default): set by the run's window
    # (``signal_interval``): HELD_OUT_SIGNAL_EVERY where that leaves MIN_HELD_OUT_PASSES passes,
    # fewer updates per pass on a shorter window; 1 for an estimator that reads the training step
    signal_every: int | None = None
    beta2_init: float = 0.05
    beta2_growth: float = 1.1  # per epoch of the paper's 300-epoch schedule
    prob_floor: float = 0.01
    # the order in which a group's channels are kept (the masks' and the final cut's):
    # "fisher", each channel's coupled Fisher removal cost measured once on training batches
    # when the allocation starts (chosen on the dev half: docs/decisions.md), or a weight-based
    # source, "bn_first" (|γ|), "bn_sum" or "l1"
    importance: str = "fisher"
    # training batches each channel's coupled Fisher is measured on, once: the flow's channel
    # order ("fisher") and group_fisher's allocation
    fisher_batches: int = FISHER_BATCHES
    init_alpha: float = 0.99
    hard_threshold: float = 0.01
    round_to: int = 1
    physical: bool = True  # physically prune once masks are hard; False keeps masked training
    method: str = "dsa"  # or a baseline in the same flow (see dsaprune.methods.METHODS)
    penalty: float | None = None  # ssl / morphnet strength (None: ssl 5e-4, morphnet 2e-3)
    estimator: str = "fisher"  # the Θ-step's loss signal (see dsaprune.estimators)
    # method "given": the channels each prunable group keeps, in the order of a run's report
    keep_counts: list[int] | None = None
    # the paper's mechanics, kept to compare against (docs/decisions.md): with True the weights
    # train under masks sampled from the keep probabilities (β2, prob_floor and hard_threshold
    # shape them), with False (the default) under the deterministic top-n mask of the current α
    sample_train_masks: bool = False
    allocator: AllocatorConfig = field(default_factory=AllocatorConfig)

    def __post_init__(self) -> None:
        for name in ("warmup_fraction", "window_end_fraction"):
            v = getattr(self, name)
            if v is not None and not 0 <= v <= 1:
                raise ValueError(f"{name} is a share of the schedule in [0, 1], got {v}")
        if self.warmup_fraction is not None and self.warmup_fraction > self.window_end_fraction:
            raise ValueError(
                f"warmup_fraction {self.warmup_fraction} ends after the allocation window "
                f"(window_end_fraction {self.window_end_fraction:.4g}); lower the first or "
                "raise the second"
            )
        if not is_whole(self.fisher_batches):
            raise ValueError(
                f"fisher_batches is a whole number of training batches >= 1, got "
                f"{self.fisher_batches!r}"
            )
        if not is_whole(self.round_to):
            raise ValueError(f"round_to is a whole number of channels >= 1, got {self.round_to!r}")
        if self.alloc_samples is not None and not is_whole(self.alloc_samples):
            raise ValueError(
                f"alloc_samples is a whole number of samples >= 1 (or None for the whole "
                f"held-out batch), got {self.alloc_samples!r}"
            )
        if self.signal_every is not None and not is_whole(self.signal_every):
            raise ValueError(
                f"signal_every is a whole number of α updates >= 1, got {self.signal_every!r}"
            )
        if not isinstance(self.signal_bf16, bool):
            raise ValueError(f"signal_bf16 is true or false, got {self.signal_bf16!r}")
        method = make_method(self.method)  # an unknown name fails here, not mid-run
        if method.iterative and self.sample_train_masks:
            raise ValueError(
                f"method {self.method!r} trains under the channels it has kept so far; "
                "sample_train_masks=True (sampled masks) is DSA's alone: leave it False"
            )
        if method.takes_counts != (self.keep_counts is not None):
            raise ValueError(
                f"method {self.method!r} applies given keep counts: set keep_counts "
                "(--keep-counts N,N,..., one per prunable group, as in a run's report.json)"
                if method.takes_counts
                else "keep_counts are read by method 'given' only: add --method given, or drop "
                "the counts"
            )
        if self.keep_counts is not None and not all(is_whole(n) for n in self.keep_counts):
            raise ValueError(
                f"keep_counts are whole numbers of channels >= 1, got {self.keep_counts!r}"
            )
        if self.penalty is not None and self.penalty < 0:
            raise ValueError(f"penalty strength must be >= 0, got {self.penalty}")
        est = make_estimator(self.estimator)  # an unknown name fails here, not mid-run
        if self.signal_every is None and est.from_training_step:
            self.signal_every = 1  # a held-out estimator's is set by the run (``for_run``)
        if est.from_training_step and self.signal_every != 1:
            raise ValueError(
                f"signal_every applies to a held-out pass; estimator {self.estimator!r} reads "
                "its signal off the training step at no extra pass: leave signal_every at 1"
            )
        if est.from_training_step and self.sample_train_masks:
            raise ValueError(
                f"estimator {self.estimator!r} reads its signal at the top-n mask the weights "
                "train under; with sample_train_masks=True they train under sampled masks: "
                "choose another estimator or sample_train_masks=False"
            )
        if self.importance not in ("fisher", "bn_first", "bn_sum", "l1"):
            raise ValueError(
                f"importance must be fisher, bn_first, bn_sum or l1, got {self.importance!r}"
            )

    @classmethod
    def nest(cls, settings: dict) -> dict:
        """Flat settings (``method=…, rho1=…``) as ``from_dict`` reads them: allocator fields
        under ``allocator``."""
        alloc_keys = set(AllocatorConfig.__dataclass_fields__)
        d = {k: v for k, v in settings.items() if k not in alloc_keys}
        alloc = {k: v for k, v in settings.items() if k in alloc_keys}
        if alloc:
            d["allocator"] = {**d.get("allocator", {}), **alloc}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DSAConfig:
        d = dict(d)
        alloc = AllocatorConfig(**d.pop("allocator", {}))
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown DSA settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(allocator=alloc, **d)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def reads_held_out(self) -> bool:
        """Whether the run reads held-out batches (and so trains the weights on the rest until
        the allocation is decided): DSA with an estimator that measures on a held-out pass of
        its own; ``fisher_step`` reads the weight step's backward, so its weights train on
        every image, as a baseline's do."""
        return (
            make_method(self.method).reads_validation
            and not make_estimator(self.estimator).from_training_step
        )

    def warmup_for(self, epochs: float) -> float:
        """The warm-up's share of a run of ``epochs``: the one given, else the default (never
        past the allocation window's end)."""
        if self.warmup_fraction is not None:
            return self.warmup_fraction
        return min(default_warmup_fraction(epochs), self.window_end_fraction)

    def for_run(self, epochs: float, total_steps: int) -> DSAConfig:
        """This config with the settings its run decides fixed: the warm-up for a run of
        ``epochs``, and ``signal_every`` for its window of ``total_steps`` weight steps (reports
        show the values used, a checkpoint holds them, and a resumed run recomputes the same)."""
        cfg = self
        if cfg.warmup_fraction is None:
            cfg = replace(cfg, warmup_fraction=cfg.warmup_for(epochs))
        if cfg.signal_every is None:
            cfg = replace(cfg, signal_every=signal_interval(cfg, epochs, total_steps))
        return cfg


def window_bounds(cfg: DSAConfig, epochs: float, total_steps: int) -> tuple[int, int]:
    """The allocation window's first and last weight step in a run of ``epochs``."""
    warmup = cfg.warmup_for(epochs)  # called every step: no config copy
    return round(warmup * total_steps), round(cfg.window_end_fraction * total_steps)


def alloc_interval(cfg: DSAConfig, epochs: float, total_steps: int) -> int:
    """Weight steps per allocation update: ``alloc_every``, or fewer where the window would
    otherwise hold less than ``min_updates`` updates."""
    w0, w1 = window_bounds(cfg, epochs, total_steps)
    return max(1, min(cfg.alloc_every, (w1 - w0) // max(1, cfg.min_updates)))


def signal_interval(cfg: DSAConfig, epochs: float, total_steps: int) -> int:
    """α updates per held-out pass: ``signal_every`` if given, else HELD_OUT_SIGNAL_EVERY, fewer
    where the window's updates would leave under MIN_HELD_OUT_PASSES passes (down to 1)."""
    if cfg.signal_every is not None:
        return cfg.signal_every
    w0, w1 = window_bounds(cfg, epochs, total_steps)
    updates = max(1, (w1 - w0) // alloc_interval(cfg, epochs, total_steps))
    return max(1, min(HELD_OUT_SIGNAL_EVERY, updates // MIN_HELD_OUT_PASSES))


def split_settings(settings: dict) -> tuple[dict, dict]:
    """(TrainConfig fields, DSAConfig fields with the allocator's nested); an unknown name is
    refused with the known ones."""
    train_keys = set(TrainConfig.fields())
    dsa_keys = {f.name for f in fields(DSAConfig)}
    nested = DSAConfig.nest({k: v for k, v in settings.items() if k not in train_keys})
    unknown = set(nested) - dsa_keys
    if unknown:
        known = sorted(train_keys | dsa_keys | set(DSAConfig().allocator.__dataclass_fields__))
        name = sorted(unknown)[0]
        raise ValueError(f"unknown setting {name!r}; known settings: {', '.join(known)}")
    return {k: v for k, v in settings.items() if k in train_keys}, nested
