"""Compare an imported MXNet net with mxnet itself (or with recorded outputs), node by node."""

from __future__ import annotations

import importlib.util
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from repurpose._exceptions import ModelFormatError, RepurposeError
from repurpose.graph import GraphNet
from repurpose.mxnet._convert import load_net

__all__ = ["verify", "VerifyReport", "NodeDiff", "REFERENCE_SCRIPT"]

REFERENCE_SCRIPT = Path(__file__).with_name("_reference.py")
NO_MXNET = (
    "mxnet is not importable in this Python, so there is nothing to compare with "
    "(mxnet 1.9.1 needs numpy < 1.24 and cannot live in this environment). Pass "
    "mxnet_python= (CLI: --mxnet-python) with the python of an environment that has "
    "mxnet 1.x, e.g. .venv-mxnet/bin/python (`make mxnet-fixtures` creates it), or "
    "reference= (CLI: --reference) with recorded outputs (.npz)."
)


@dataclass(frozen=True)
class NodeDiff:
    """How far one value of the imported net is from the reference."""

    value: str
    shape: tuple[int, ...]
    max_abs_diff: float
    max_rel_diff: float
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


def _mxnet_importable() -> bool:
    return importlib.util.find_spec("mxnet") is not None


def _run_reference(symbol: Path, params: Path | None, inputs: Mapping[str, np.ndarray],
                   mxnet_python: str | Path | None) -> tuple[dict[str, np.ndarray], str]:
    with tempfile.TemporaryDirectory() as tmp:
        in_path, out_path = Path(tmp) / "inputs.npz", Path(tmp) / "outputs.npz"
        np.savez(in_path, **inputs)  # type: ignore[arg-type]
        python = str(mxnet_python) if mxnet_python is not None else None
        if python is None:
            if not _mxnet_importable():
                raise RepurposeError(NO_MXNET)
            import sys

            python = sys.executable
        if not Path(python).exists():
            raise RepurposeError(f"--mxnet-python {python!r} does not exist")
        cmd = [python, str(REFERENCE_SCRIPT), str(symbol), str(params or "-"), str(in_path),
               str(out_path)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
            raise RepurposeError(f"the mxnet reference run failed ({python}): {tail[0]}")
        with np.load(out_path, allow_pickle=False) as data:
            outputs = {k: data[k] for k in data.files}
    version = str(outputs.pop("__mxnet_version__", "?"))
    outputs.pop("__seconds_per_batch__", None)
    return outputs, f"mxnet {version} via {python}"


def _load_reference(path: str | Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as err:
        raise ModelFormatError(f"cannot read reference outputs {path}: {err}") from err


def verify(symbol_json: str | Path, params: str | Path | None = None,
           inputs: np.ndarray | Mapping[str, np.ndarray] | None = None,
           input_shape: Sequence[int] | None = None, mxnet_python: str | Path | None = None,
           reference: str | Path | None = None, rtol: float = 1e-4, atol: float = 1e-5,
           seed: int = 0) -> VerifyReport:
    """Run the imported net and MXNet on the same input and compare every node output.

    Parameters
    ----------
    symbol_json, params : str or Path
        The MXNet checkpoint files.
    inputs : ndarray or mapping, optional
        The input batch (or ``{input name: batch}``). Default: the ``__input__<name>``
        arrays of ``reference``, else a seeded normal batch of 2 of ``input_shape``.
    input_shape : sequence of int, optional
        One input's shape without batch axis, for the random batch.
    mxnet_python : str or Path, optional
        Python executable of an environment with mxnet 1.x; the reference then runs
        there in a subprocess. Default: this Python, if it can import mxnet.
    reference : str or Path, optional
        An ``.npz`` of recorded outputs (``{value: array}``) to compare with instead of
        running mxnet.
    rtol, atol : float
        Tolerances (``|a - b| <= atol + rtol * |b|``).
    seed : int
        Seed of the random input.

    Returns
    -------
    VerifyReport
        ``.rows`` (one :class:`NodeDiff` per value), ``.ok``, ``.format()``.

    Raises
    ------
    RepurposeError
        When there is nothing to compare with (no mxnet, no reference) or mxnet fails.
    """
    if reference is None and mxnet_python is None and not _mxnet_importable():
        raise RepurposeError(NO_MXNET)
    if reference is None and mxnet_python is not None and not Path(mxnet_python).exists():
        raise RepurposeError(f"--mxnet-python {str(mxnet_python)!r} does not exist")
    net = load_net(symbol_json, params)
    recorded = _load_reference(reference) if reference is not None else None
    feeds = _inputs(net.input_names, net.input_shapes, inputs, input_shape, recorded, seed)
    if recorded is not None:
        ref = {k: v for k, v in recorded.items() if not k.startswith("__")}
        source = str(reference)
    else:
        ref, source = _run_reference(Path(symbol_json), None if params is None else Path(params),
                                     feeds, mxnet_python)
    return _compare(net, feeds, ref, source, rtol, atol)


def _inputs(names: Sequence[str], shapes: Mapping[str, Sequence[int]],
            inputs: np.ndarray | Mapping[str, np.ndarray] | None,
            input_shape: Sequence[int] | None, recorded: Mapping[str, np.ndarray] | None,
            seed: int) -> dict[str, np.ndarray]:
    if isinstance(inputs, Mapping):
        return {k: np.asarray(v, np.float32) for k, v in inputs.items()}
    if inputs is not None:
        if len(names) != 1:
            raise ValueError(f"the net has inputs {list(names)}; pass a mapping")
        return {names[0]: np.asarray(inputs, np.float32)}
    if recorded is not None and all(f"__input__{n}" in recorded for n in names):
        return {n: recorded[f"__input__{n}"] for n in names}
    rng = np.random.default_rng(seed)
    feeds = {}
    for name in names:
        shape = (2, *input_shape) if input_shape is not None else shapes.get(name)
        if shape is None:
            raise ValueError(f"the shape of input {name!r} is unknown; pass input_shape "
                             "(without batch axis) or inputs")
        feeds[name] = rng.normal(size=tuple(shape)).astype(np.float32)
    return feeds


def _compare(net: GraphNet, feeds: Mapping[str, np.ndarray],
             ref: Mapping[str, np.ndarray], source: str, rtol: float, atol: float,
             ) -> VerifyReport:
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
        diff = np.abs(got - exp)
        abs_max = float(diff.max()) if diff.size else 0.0
        rel = diff / np.maximum(np.abs(exp), 1e-12)
        ok = bool(np.all(diff <= atol + rtol * np.abs(exp)))
        report.rows.append(NodeDiff(key, tuple(exp.shape), abs_max,
                                    float(rel.max()) if rel.size else 0.0, ok))
    return report
