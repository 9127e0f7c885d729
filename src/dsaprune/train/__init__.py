"""Training: the plain supervised trainer, its settings, checkpoints and DDP helpers."""

from .checkpoint import CheckpointError, load_model_state, read_checkpoint, save_checkpoint
from .config import TrainConfig
from .distributed import DistInfo, setup
from .trainer import Trainer, TrainingDiverged, evaluate, make_optimizer, recalibrate_bn

__all__ = [
    "CheckpointError",
    "DistInfo",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "evaluate",
    "load_model_state",
    "make_optimizer",
    "read_checkpoint",
    "recalibrate_bn",
    "save_checkpoint",
    "setup",
]
