"""Compare an imported MXNet net with mxnet itself (or with recorded outputs), node by node."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from repurpose._exceptions import ModelFormatError, RepurposeError
from repurpose.graph._report import NodeDiff, VerifyReport, compare_net
from repurpose.mxnet._convert import load_net

__all__ = ["verify", "VerifyReport", "NodeDiff", "REFERENCE_SCRIPT", "mxnet_version"]

REFERENCE_SCRIPT = Path(__file__).with_name("_reference.py")
NO_MXNET = (
    "mxnet is not importable in this Python, so there is nothing to compare with "
    "(mxnet 1.9.1 needs numpy < 1.24 and cannot live in this environment). Pass "
    "mxnet_python= (CLI: --mxnet-python) with the python of an environment that has "
    "mxnet 1.x, e.g. .venv-mxnet/bin/python (`make mxnet-fixtures` creates it), or "
    "reference= (CLI: --reference) with recorded outputs (.npz)."
)


_PROBE = "import sys, mxnet; v = mxnet.__version__; assert isinstance(v, str); sys.stdout.write(v)"


def mxnet_version(python: str | Path | None = None) -> str | None:
    """The version of the real mxnet that ``python`` (default: this one) imports, or None.

    Any folder called ``mxnet`` on the path (a test directory, a checkout) is found by
    ``importlib.util.find_spec``, so that is only a first filter (a folder without
    ``__init__.py`` is never mxnet). The answer comes from importing mxnet in a fresh
    interpreter, run outside the current directory: it must load (with its native
    library) and have a ``__version__``.
    """
    if python is None:
        spec = importlib.util.find_spec("mxnet")
        if spec is None or spec.origin in (None, "namespace"):
            return None
        python = sys.executable
    try:
        proc = subprocess.run([str(python), "-c", _PROBE], capture_output=True, text=True,
                              timeout=300, cwd=tempfile.gettempdir())
    except (OSError, subprocess.SubprocessError):
        return None
    version = proc.stdout.strip()
    return version if proc.returncode == 0 and version else None


def _run_reference(symbol: Path, params: Path | None, inputs: Mapping[str, np.ndarray],
                   mxnet_python: str | Path | None) -> tuple[dict[str, np.ndarray], str]:
    with tempfile.TemporaryDirectory() as tmp:
        in_path, out_path = Path(tmp) / "inputs.npz", Path(tmp) / "outputs.npz"
        np.savez(in_path, **inputs)  # type: ignore[arg-type]
        # verify() checked that this python has mxnet when no other one is given
        python = str(mxnet_python) if mxnet_python is not None else sys.executable
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
        Tolerances: ``max|a - b| <= atol + rtol * max|b|`` per value, i.e. the error is
        judged against the value's scale (see :func:`repurpose.caffe.verify`).
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
    if reference is None and mxnet_python is None and mxnet_version() is None:
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
    return compare_net(net, feeds, ref, source, rtol, atol)


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
