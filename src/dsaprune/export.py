"""Export a (pruned) model to ONNX for deployment outside PyTorch."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch
from torch import nn

from .io import atomic_write_bytes


def export_onnx(
    model: nn.Module,
    path: str | Path,
    input_shape: tuple[int, ...],
    *,
    opset: int = 17,
) -> Path:
    """Write ``model`` (in eval mode, on the CPU) as an ONNX graph with a dynamic batch axis:
    input ``input`` of shape [batch, *input_shape], output ``logits``. The file is written
    atomically (a failed export leaves no partial file)."""
    model = model.eval().cpu()
    x = torch.randn(1, *input_shape)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # the TorchScript-based exporter is the one that needs no extra package (onnxscript)
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning, UserWarning))
        torch.onnx.export(
            model,
            (x,),
            buf,
            dynamo=False,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=opset,
        )
    atomic_write_bytes(buf.getvalue(), path)
    return Path(path)
