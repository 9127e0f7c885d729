"""Export a (pruned) model to ONNX for deployment outside PyTorch."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch
from torch import nn

from .io import atomic_write_bytes

# onnxruntime runs ai.onnx opsets from 7 on; the TorchScript exporter writes up to its own maximum
MIN_OPSET = 7


def max_opset() -> int:
    from torch.onnx import _constants

    return int(getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 17))


class ExportError(ValueError):
    """An export asked of a model that cannot give it (opset, input size, output path)."""


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
    top = max_opset()
    if not MIN_OPSET <= opset <= top:
        raise ExportError(
            f"--opset {opset}: onnxruntime and this exporter support opsets {MIN_OPSET} to {top}"
        )
    if Path(path).is_dir():
        raise ExportError(f"--onnx {path}: is a folder; name the .onnx file to write")
    model = model.eval().cpu()
    x = torch.randn(1, *input_shape)
    try:
        with torch.no_grad():
            model(x)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(
            f"the model does not run on an input of shape {list(input_shape)} "
            f"([channels, height, width]): {first}; pass --input-size C H W that it accepts"
        ) from None
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
