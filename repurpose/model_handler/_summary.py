"""The layer table printed by ``ModelHandler.summary()`` and ``repurpose inspect``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from repurpose.model_handler._extract import Runner, eval_mode
from repurpose.model_handler._freeze import is_frozen
from repurpose.model_handler._layers import LayerIndex, module_of

__all__ = ["Summary", "SummaryRow", "summarize"]


@dataclass(frozen=True)
class SummaryRow:
    """One layer: name, type, output shape (batch axis included, None if unknown),
    number of parameters, and whether it is frozen."""

    name: str
    type: str
    output_shape: tuple[int, ...] | None
    params: int
    frozen: bool = False


class Summary(list[SummaryRow]):
    """A list of :class:`SummaryRow` that prints as a table."""

    @property
    def total_params(self) -> int:
        """Sum of the parameter counts of all rows."""
        return sum(row.params for row in self)

    def __str__(self) -> str:
        header = ("layer", "type", "output shape", "params", "")
        body = [
            (
                r.name,
                r.type,
                "?" if r.output_shape is None else "x".join(str(d) for d in r.output_shape),
                f"{r.params:,}",
                "frozen" if r.frozen else "",
            )
            for r in self
        ]
        widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
        lines = [_fmt(header, widths), _fmt(tuple("-" * w for w in widths), widths)]
        lines += [_fmt(row, widths) for row in body]
        lines.append(f"{len(self)} layers, {self.total_params:,} parameters")
        return "\n".join(line.rstrip() for line in lines)


def _fmt(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(c.rjust(w) if i == 3 else c.ljust(w) for i, (c, w) in
                     enumerate(zip(cells, widths)))


def summarize(module: nn.Module, index: LayerIndex, input_shape: Sequence[int] | None,
              device: torch.device) -> Summary:
    """Build the summary; runs one forward pass on zeros when ``input_shape`` is known."""
    shapes: dict[str, tuple[int, ...]] = {}
    if input_shape is not None:
        x = torch.zeros((1, *input_shape), device=device)
        runner = Runner(module, index, index.names, stop_early=False, pooling=None)
        try:
            with eval_mode(module), torch.no_grad():
                values = runner(x)
        except Exception as err:  # any failure of the user's forward
            raise ValueError(
                f"forward pass on input_shape={tuple(input_shape)} failed: {err}"
            ) from err
        shapes = {k: tuple(v.shape) for k, v in values.items() if isinstance(v, torch.Tensor)}
    rows = Summary()
    for layer in index.layers:
        sub = module_of(module, layer)
        params = 0 if sub is None else sum(p.numel() for p in sub.parameters())
        frozen = sub is not None and is_frozen(sub)
        rows.append(SummaryRow(layer.name, layer.type, shapes.get(layer.name), params, frozen))
    return rows
