"""A real network through ONNX: SqueezeNet v1.0 (Caffe) -> export -> import, vs onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime")

import repurpose as rp  # noqa: E402


@pytest.mark.realdata
def test_squeezenet_round_trip_through_onnx(realdata, tmp_path) -> None:
    root = realdata / "squeezenet_v1.0"
    handler = rp.ModelHandler.from_caffe(root / "deploy.prototxt",
                                         root / "squeezenet_v1.0_dc.caffemodel")
    images = sorted((realdata / "flowers12" / "val").glob("*/*.jpg"))[:2]
    from PIL import Image

    x = torch.stack([handler.preprocess(Image.open(p)) for p in images]).numpy()
    path = handler.export_onnx(tmp_path / "squeezenet.onnx")
    with torch.no_grad():
        expected = handler.module(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": x})[0], expected, rtol=1e-5,
                               atol=1e-5)
    # Layer by layer: activations reach the hundreds, so float32 sums in a different order
    # differ by ~1e-3 there; the class scores agree to a relative 1e-5 (above).
    report = rp.onnx.verify(path, x, rtol=1e-3, atol=1e-2)
    assert report.ok and len(report.rows) > 60, report.format()
    back = rp.ModelHandler.from_onnx(path, preprocess=handler.preprocess)
    with torch.no_grad():
        np.testing.assert_allclose(back.module(torch.from_numpy(x)).numpy(), expected,
                                   rtol=1e-5, atol=1e-5)
