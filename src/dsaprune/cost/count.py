"""Counting the cost of a concrete network.

FLOPs follow ``torch.utils.flop_counter.FlopCounterMode``: convolutions and matrix products only,
2 FLOPs per multiply-add. Papers quote multiply-adds ("MACs"), which is half of this number.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@torch.no_grad()
def count_flops(model: nn.Module, input_size: tuple[int, ...] = (3, 32, 32)) -> int:
    """FLOPs of one forward pass on one input of shape ``input_size`` (no batch dimension)."""
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
        x = torch.zeros(1, *input_size, device=device)
        with FlopCounterMode(display=False) as counter:
            model(x)
        return int(counter.get_total_flops())
    finally:
        model.train(was_training)


def count_params(model: nn.Module) -> int:
    """Number of parameters (BN running statistics are buffers and do not count)."""
    return sum(p.numel() for p in model.parameters())
