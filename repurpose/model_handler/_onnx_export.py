"""Export a handler's network (or its part up to some layers) to ONNX.

The export uses ``torch.onnx.export`` with the TorchScript exporter (``dynamo=False``):
it needs neither ``onnxscript`` nor a network connection and writes the same file for
the same model every time. Repurposers export through
:mod:`repurpose.repurposers._onnx_export`, which builds on this module.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from repurpose._exceptions import RepurposeError

__all__ = ["export_module", "export_handler", "Layers", "input_shape_or_fail", "DEFAULT_OPSET"]

DEFAULT_OPSET = 17


def export_module(module: nn.Module, path: str | os.PathLike[str], input_shape: Sequence[int],
                  output_names: Sequence[str] = ("output",), opset: int = DEFAULT_OPSET,
                  input_name: str = "input") -> Path:
    """Write ``module`` (one input, batch axis dynamic) to the ONNX file ``path``."""
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"cannot export to {str(target)!r}: it is a directory; give a file "
                         "name such as model.onnx")
    target.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros((1, *(int(d) for d in input_shape)))
    param = next(iter(module.parameters()), None)
    if param is not None:
        example = example.to(param.device)
    axes = {name: {0: "batch"} for name in (input_name, *output_names)}
    modes = [(m, m.training) for m in module.modules()]  # the caller's modules are shared
    module.eval()
    tmp = target.with_name(f".{target.name}.partial")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(module, (example,), str(tmp), dynamo=False, opset_version=opset,
                              input_names=[input_name], output_names=list(output_names),
                              dynamic_axes=axes, do_constant_folding=True)
        os.replace(tmp, target)
    except Exception as err:  # torch raises many types for what it cannot export
        raise RepurposeError(f"torch.onnx.export failed: {type(err).__name__}: {err}") from err
    finally:
        tmp.unlink(missing_ok=True)
        for m, training in modes:
            m.training = training
    return target


class Layers(nn.Module):
    """Outputs of named layers of a handler's network, through the handler's extraction."""

    def __init__(self, handler: Any, layers: Sequence[str], pooling: str | None) -> None:
        super().__init__()
        from repurpose.model_handler._extract import Runner

        self.net = handler.module
        self.names = list(layers)
        self.runner = Runner(handler.module, handler._index, self.names, stop_early=True,
                             pooling=pooling)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.runner(x)
        return tuple(out[n] for n in self.names)


def input_shape_or_fail(shape: Sequence[int] | None, where: str) -> tuple[int, ...]:
    if shape is None:
        raise ValueError(f"the input shape of {where} is unknown; pass input_shape "
                         "(one input without the batch axis, e.g. (3, 224, 224))")
    return tuple(int(d) for d in shape)


def export_handler(handler: Any, path: str | os.PathLike[str],
                   layers: str | Sequence[str] | None = None,
                   input_shape: Sequence[int] | None = None,
                   opset: int = DEFAULT_OPSET) -> Path:
    """Write a handler's network, or its part up to ``layers`` (the outputs), to ONNX."""
    shape = input_shape_or_fail(input_shape or handler.input_shape, "the handler")
    if layers is None:
        return export_module(handler.module, path, shape, opset=opset)
    names = handler._resolve(layers)
    # torch reserves names made of digits (nn.Sequential's layers) for its own values
    outputs = [f"layer_{n}" if n.isdigit() else n for n in names]
    return export_module(Layers(handler, names, None), path, shape, outputs, opset)
