"""Comparing an imported net's values with a reference run, value by value.

Shared by the verifiers of every importer (Caffe, MXNet, ONNX): each runs its reference
framework, then :func:`compare_net` runs the net on the same inputs and judges every value
against its own scale (see :func:`repurpose._compare.compare_to_scale`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from repurpose._compare import compare_to_scale
from repurpose.graph._graph import GraphNet

__all__ = ["NodeDiff", "VerifyReport", "compare_net"]


@dataclass(frozen=True)
class NodeDiff:
    """How far one value of the imported net is from the reference."""

    value: str
    shape: tuple[int, ...]
    max_abs_diff: float
    max_rel_diff: float  # max_abs_diff relative to the value's largest absolute value
    ok: bool


@dataclass
class VerifyReport:
    """Per-value differences; ``ok`` when every value is within tolerance."""

    rows: list[NodeDiff] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    reference: str = ""

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows) and not self.missing and bool(self.rows)

    def format(self) -> str:
        """A table with one line per compared value."""
        width = max([len(r.value) for r in self.rows] + [5])
        lines = [f"reference: {self.reference}",
                 f"{'value':<{width}}  {'shape':<18} {'max|diff|':>10} {'max rel':>10}  ok"]
        for r in self.rows:
            lines.append(f"{r.value:<{width}}  {str(r.shape):<18} {r.max_abs_diff:>10.3g} "
                         f"{r.max_rel_diff:>10.3g}  {'yes' if r.ok else 'NO'}")
        if self.missing:
            lines.append(f"not in the imported net: {', '.join(self.missing)}")
        bad = sum(not r.ok for r in self.rows)
        lines.append(f"{len(self.rows)} values compared, {bad} outside tolerance: "
                     + ("OK" if self.ok else "MISMATCH"))
        return "\n".join(lines)


def compare_net(net: GraphNet, feeds: Mapping[str, np.ndarray],
             ref: Mapping[str, np.ndarray], source: str, rtol: float, atol: float,
             ) -> VerifyReport:
    """Run ``net`` on ``feeds`` and compare every value ``ref`` names with it."""
    produced = {v for node in net.nodes for v in node.outputs}
    wanted = [k for k in ref if k in produced]
    report = VerifyReport(missing=[k for k in ref if k not in produced and k not in feeds],
                          reference=source)
    with torch.no_grad():
        values = net.run({k: torch.from_numpy(np.asarray(v)) for k, v in feeds.items()}, wanted,
                         fuse=False)  # layer by layer, as imported
    for key in wanted:
        got = values[key].detach().cpu().numpy().astype(np.float64)
        exp = np.asarray(ref[key], np.float64)
        if got.shape != exp.shape:
            report.rows.append(NodeDiff(key, tuple(exp.shape), float("inf"), float("inf"), False))
            continue
        abs_max, rel, ok = compare_to_scale(got, exp, rtol, atol)
        report.rows.append(NodeDiff(key, tuple(exp.shape), abs_max, rel, ok))
    return report
