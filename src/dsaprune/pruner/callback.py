"""The library's own trainer driving a :class:`~dsaprune.Pruner` (what ``dsaprune.prune`` runs);
the trainer itself knows nothing of pruning."""

from __future__ import annotations

from ..train import TrainingDiverged
from .pruner import Pruner


class PrunerCallback:
    """A :class:`Pruner` inside :class:`~dsaprune.train.Trainer`: steps it after every
    optimizer step, rebuilds the optimizer when it prunes, and trains on ``full_train`` once the
    held-out batches are no longer read."""

    state_key = "pruner"  # the checkpoint's entry

    def __init__(self, pruner: Pruner, full_train) -> None:
        self.pruner, self.full_train = pruner, full_train

    def after_step(self, trainer) -> None:
        try:
            changed = self.pruner.step(trainer.optimizer.param_groups[0]["lr"])
        except TrainingDiverged as e:
            raise trainer.diverged(str(e)) from None
        self._follow(trainer, changed)

    def _follow(self, trainer, changed: bool) -> None:
        if changed:
            trainer.rebuild()
        if not self.pruner.holds_out:
            trainer.train_loader = self.full_train  # from the next epoch on

    def after_epoch(self, trainer, rec: dict) -> None:
        rec.update(self.pruner.epoch_record())

    def state_dict(self) -> dict:
        return self.pruner.state_dict()

    def load_state_dict(self, trainer, d: dict) -> None:
        self.pruner.load_state_dict(d)
        self._follow(trainer, self.pruner.pruned and self.pruner.cfg.physical)
