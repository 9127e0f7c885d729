"""A run's allocation state in a checkpoint, as a part of :class:`~dsaprune.pruner.Pruner`:
plain values and tensors (loadable with ``weights_only=True``), restored into a fresh pruner on
the same network so that a resumed run continues exactly (same phase, same held-out batches, the
same pruning re-applied before the saved weights are loaded)."""

from __future__ import annotations

import time

from ..allocation import Allocator
from ..gates import GateHooks
from .config import flat_settings


class Checkpointing:
    """``state_dict`` / ``load_state_dict`` of :class:`~dsaprune.pruner.Pruner`."""

    def state_dict(self) -> dict:
        """Plain values and tensors only (a checkpoint loads with ``weights_only=True``)."""
        return {
            "phase": self.phase,
            "step": self.step_count,
            "allocator": self.allocator.state_dict() if self.allocator else None,
            "events": self.events,
            "history": self.history,
            "keep_counts": self.keep_counts,
            "keep_index": self.keep_index,
            "alpha_final": self.alpha_final,
            "final_ratio": self.final_ratio,
            "val_consumed": self.val_consumed,
            "channels": self.channels,
            "t_cache": self.t_cache,  # the β1 solve's warm start: exact resume
            "train_mask": self.train_mask,
            "measured_order": self.measured_order,
            "rounds": self.rounds.state_dict() if self.rounds is not None else None,
            "config": self.cfg.to_dict(),  # a resume under other settings would not be exact
        }

    def load_state_dict(self, d: dict) -> None:
        """Restore a saved run into this (unpruned) model: the allocator, the phase, and, if the
        saved run had pruned, the same pruning, so the saved weights fit (then rebuild the
        optimizer before loading its state)."""
        if list(d["channels"]) != self.channels:
            raise ValueError(
                f"the checkpoint's channel groups {d['channels']} are not this model's "
                f"{self.channels}: it is from another model"
            )
        if self.pruned or self.step_count:
            raise RuntimeError("load_state_dict restores into a fresh Pruner, before any step")
        self._check_same_settings(d.get("config"))  # a checkpoint of before 2026-12-05 has none
        self.phase, self.events, self.history = d["phase"], d["events"], d["history"]
        self.step_count = int(d["step"])
        self.keep_counts, self.keep_index = d["keep_counts"], d["keep_index"]
        self.alpha_final, self.final_ratio = d["alpha_final"], d["final_ratio"]
        self.val_consumed, self.val_iter = d["val_consumed"], None
        self.t_cache = d["t_cache"]
        self.train_mask = d.get("train_mask")
        self.measured_order = d.get("measured_order")
        if d.get("rounds") is not None:
            self.rounds = self._make_rounds(1, 1)
            self.rounds.load_state_dict(d["rounds"])
        self._phase_t0 = time.perf_counter()
        if d["allocator"] is not None:
            theta = d["allocator"]["theta"]
            self.allocator = Allocator(
                self.cost, self.budget.fraction, theta, 1, self.cfg.allocator
            )
            self.allocator.load_state_dict(d["allocator"])
        self.penalty = self._penalty() if self.phase == "penalty" else None
        if self.phase in ("allocate", "settle"):
            self.hooks = GateHooks(self.groups)
            # the next step's masks are read from the weights, which the caller loads after
            # this: they are set at the next forward
            self.hooks.on_demand = self._set_masks
        if self.keep_index is not None:
            self._apply_pruning()

    def _check_same_settings(self, saved: dict | None) -> None:
        """A run resumes under the settings it was made with: another estimator, schedule or
        default (after an upgrade, say) would continue it as a different run, silently."""
        if saved is None:
            return
        now = flat_settings(self.cfg.to_dict())
        saved = flat_settings(saved)
        changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        if changed:
            listed = ", ".join(_difference(k, saved, now) for k in changed)
            if set(saved) == set(now):
                fix = (
                    "resume with the settings it was made with (give them explicitly, e.g. "
                    "in --config)"
                )
            else:  # no value of a setting the checkpoint lacks matches it
                fix = "resume it with the dsaprune version that saved it"
            raise ValueError(
                f"the checkpoint was made with other DSA settings ({listed}); {fix}, or start "
                "the run afresh"
            )


def _difference(key: str, saved: dict, now: dict) -> str:
    """One changed setting, worded so that a user can tell an upgrade from an edit: a setting
    missing from the checkpoint did not exist in the version that saved it (nor does one this
    version lacks), so no value given now continues that run exactly."""
    if key not in saved:
        return f"{key}: not in the checkpoint (a setting newer than it), {now[key]!r} now"
    if key not in now:
        return f"{key}: {saved[key]!r} there, a setting this version no longer has"
    return f"{key}: {saved[key]!r} there, {now[key]!r} now"
