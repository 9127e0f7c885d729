"""Training settings: one dataclass, every field a CLI option (the CLI reads YAML into it)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class TrainConfig:
    epochs: float = 30.0
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    no_wd_bn_bias: bool = False  # exempt BN parameters and biases from weight decay
    schedule: str = "cosine"  # "cosine" or "step"
    milestones: list[float] = field(default_factory=lambda: [0.4, 0.6, 0.8])  # fractions of epochs
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    amp: bool = True  # bf16 autocast; used only on CUDA
    channels_last: bool = True  # used only on CUDA
    compile: bool = False
    # torch.compile's mode: "reduce-overhead" captures the compiled step in CUDA graphs (one
    # launch per step instead of hundreds; a CIFAR ResNet step is launch-bound), on CUDA only
    compile_mode: str = "reduce-overhead"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "lr", "momentum", "weight_decay", "gamma", "warmup_epochs"):
            v = getattr(self, name)
            if not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v}")
        if not self.epochs > 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        for name in ("momentum", "weight_decay", "warmup_epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.schedule not in ("cosine", "step"):
            raise ValueError(f"schedule must be 'cosine' or 'step', got {self.schedule!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(
                f"compile_mode must be one of {', '.join(COMPILE_MODES)}, got {self.compile_mode!r}"
            )
        if any(not 0 < m < 1 for m in self.milestones):
            raise ValueError(
                f"milestones are fractions of the schedule in (0, 1): {self.milestones}"
            )

    @classmethod
    def fields(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        unknown = set(d) - set(cls.fields())
        if unknown:
            raise ValueError(
                f"unknown training settings {sorted(unknown)}; known: {', '.join(cls.fields())}"
            )
        return cls(**d)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
