"""Compare an imported Caffe net with OpenCV's independent Caffe runtime, blob by blob."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from repurpose._compare import compare_to_scale
from repurpose._exceptions import RepurposeError
from repurpose.caffe import _convert, _parse, _preprocess
from repurpose.caffe._detection import COMPARABLE

__all__ = ["BlobComparison", "verify", "opencv_blobs"]


@dataclass(frozen=True)
class BlobComparison:
    """One blob of the net compared with OpenCV.

    Attributes
    ----------
    layer : str
        The Caffe layer that writes the blob.
    value : str
        The graph value name (``blob`` or ``blob@layer`` for overwritten versions).
    shape : tuple of int
        Our blob's shape.
    max_abs_diff : float or None
        ``None`` when OpenCV has no such blob (e.g. a layer it removes) or shapes differ.
    ok : bool or None
        Whether the blobs agree within the tolerances (``None`` when not compared).
    max_rel_err : float or None
        ``max_abs_diff`` relative to the blob's scale (its largest absolute value in
        OpenCV's output): the figure the verdict is judged by.
    """

    layer: str
    value: str
    shape: tuple[int, ...]
    max_abs_diff: float | None
    ok: bool | None
    max_rel_err: float | None = None


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as err:
        raise RepurposeError(
            "verification needs OpenCV with its Caffe importer: "
            "pip install 'opencv-python-headless<5'"
        ) from err
    if not hasattr(cv2, "dnn") or not hasattr(cv2.dnn, "readNetFromCaffe"):
        raise RepurposeError("this OpenCV has no Caffe importer (removed in OpenCV 5); "
                             "install 'opencv-python-headless<5'")
    return cv2


_ROUND = re.compile(r"\bround_mode\s*:\s*(CEIL|FLOOR|0|1)\b")


def _opencv_prototxt(prototxt: Path, tmp: Path) -> Path:
    """OpenCV's schema spells pooling field 13 ``ceil_mode``; rewrite ``round_mode``."""
    text = prototxt.read_text()
    if not _ROUND.search(text):
        return prototxt
    out = tmp / "opencv.prototxt"
    out.write_text(_ROUND.sub(
        lambda m: "ceil_mode: " + ("true" if m.group(1) in ("CEIL", "0") else "false"), text))
    return out


def opencv_blobs(prototxt: str | Path, caffemodel: str | Path | None,
                 feeds: Mapping[str, np.ndarray], layers: list[str],
                 overwritten: set[str] = frozenset()) -> dict[str, list[np.ndarray]]:  # type: ignore[assignment]
    """Run OpenCV's Caffe importer and return ``{layer: [outputs]}`` for ``layers``.

    Layers in ``overwritten`` have an output that a later in-place layer overwrites in
    OpenCV's memory; they are read by a pass that stops at that layer.
    """
    cv2 = _cv2()
    with tempfile.TemporaryDirectory() as tmp:
        proto = _opencv_prototxt(Path(prototxt), Path(tmp))
        net = cv2.dnn.readNetFromCaffe(str(proto), "" if caffemodel is None else str(caffemodel))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    net.enableFusion(False)
    known = set(net.getLayerNames())
    for name, arr in feeds.items():  # an input overwritten in place is value "blob@blob"
        net.setInput(np.ascontiguousarray(arr, dtype=np.float32), name.split("@")[0])
    wanted = [name for name in layers if name in known]
    result: dict[str, list[np.ndarray]] = {}
    plain = [n for n in wanted if n not in overwritten]
    if plain:
        for name, outs in zip(plain, net.forwardAndRetrieve(plain)):
            result[name] = [np.array(o) for o in outs]
    for name in wanted:
        if name in overwritten:
            result[name] = [np.array(o) for o in net.forwardAndRetrieve([name])[0]]
    return result


def _feeds(net: Any, spec: Any, image: Any, mean: Any, seed: int) -> dict[str, np.ndarray]:
    feeds: dict[str, np.ndarray] = {}
    rng = np.random.default_rng(seed)
    for name in net.input_names:
        shape = net.input_shapes[name]
        if image is not None and name == net.input_names[0] and len(shape) == 4:
            from PIL import Image

            pre = _preprocess.caffe_preprocess(spec, shape, mean)
            with Image.open(image) as img:
                x = pre(img.convert("RGB")).numpy()
            feeds[name] = np.repeat(x[None], shape[0], axis=0).astype(np.float32)
        else:
            feeds[name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def verify(
    prototxt: str | Path,
    caffemodel: str | Path | None = None,
    *,
    image: str | Path | None = None,
    mean: Any = None,
    inputs: Mapping[str, np.ndarray] | None = None,
    input_shape: Any = None,
    seed: int = 0,
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> list[BlobComparison]:
    """Run our import and OpenCV's on the same input and compare every blob.

    Parameters
    ----------
    prototxt, caffemodel : str or Path
        The model files.
    image : str or Path, optional
        An image, preprocessed as the model expects (BGR, x255, minus ``mean``). Default:
        random normal input (seeded).
    mean : optional
        As in :func:`handler_from_caffe`.
    inputs : dict of str to ndarray, optional
        Explicit input arrays by input name (overrides ``image``).
    input_shape : optional
        As in :func:`load_net`.
    seed : int
        Seed of the random input.
    rtol, atol : float
        Tolerances of the per-blob ``ok`` flag: ``max|a - b| <= atol + rtol * max|b|``.
        The error is judged against the blob's scale, not per element: float32 sums in a
        different order differ by about 1e-7 of the values summed, so an element near zero
        in a blob whose values reach thousands has a large error relative to itself.

    Returns
    -------
    list of BlobComparison
        One entry per value written by a layer, in execution order.
    """
    spec = _parse.read_prototxt(prototxt)
    weights = None if caffemodel is None else _parse.read_caffemodel(
        caffemodel, ceil_mode=spec.ceil_mode_schema)
    net = _convert.convert_spec(spec, weights, input_shape=input_shape).eval()
    feeds = dict(inputs) if inputs is not None else _feeds(net, spec, image, mean, seed)
    values = [v for node in net.nodes for v in node.outputs]
    with torch.no_grad():
        ours = net.run({k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in feeds.items()},
                       values, fuse=False)  # layer by layer, as imported
    # OpenCV reuses the memory of blobs it was not asked to keep: read layers whose output is
    # overwritten in place, and multi-output layers, in passes that stop at them.
    overwritten = {n.name for n in net.nodes
                   if len(n.outputs) > 1 or any("@" in v for v in n.outputs)}
    theirs = opencv_blobs(prototxt, caffemodel, feeds, net.layer_names, overwritten)
    report = []
    for node in net.nodes:
        outs = theirs.get(node.name, [])
        for i, value in enumerate(node.outputs):
            a = ours[value].numpy()
            b = outs[i] if i < len(outs) else None
            if b is not None and node.op in COMPARABLE:  # e.g. detection lists
                a, b = COMPARABLE[node.op](a, b)
            if b is None or b.size != a.size:
                report.append(BlobComparison(node.name, value, tuple(a.shape), None, None))
                continue
            diff, rel, ok = compare_to_scale(a, b.reshape(a.shape), rtol, atol)
            report.append(BlobComparison(node.name, value, tuple(a.shape), diff, ok, rel))
    return report

