"""The real MobileNet-SSD plate detector (realdata/plate_ssd) against OpenCV, blob by blob."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

import repurpose as rp
import repurpose.caffe as rc

cv2 = pytest.importorskip("cv2")


@pytest.mark.realdata
def test_plate_ssd_matches_opencv_on_every_blob(realdata: Path) -> None:
    base = realdata / "plate_ssd" / "mininet_ssd_v1"
    proto, model = base.with_suffix(".prototxt"), base.with_suffix(".caffemodel")
    # the detector's own input range ((pixel - 127.5) / 127.5), smooth so it finds boxes
    rng = np.random.default_rng(0)
    coarse = rng.uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32)
    x = np.repeat(np.repeat(coarse, 32, axis=2), 32, axis=3)
    # at 256x256 instead of 512x512 (4x less work; priors follow the image size)
    report = rc.verify(proto, model, inputs={"data": x}, input_shape=x.shape)
    assert len(report) == 119  # every layer's output
    for r in report:
        assert r.max_abs_diff is not None and r.ok, r
    # the detections: the same count of boxes, labels and scores as OpenCV (compared after
    # sorting, OpenCV's zero padding to keep_top_k dropped)
    (det,) = [r for r in report if r.layer == "detection_out"]
    assert det.shape[0] > 1 and det.shape[1] == 7
    assert det.max_abs_diff < 1e-5


@pytest.mark.realdata
def test_plate_ssd_imports_fork_layers_and_rounds_priors_like_opencv(realdata: Path) -> None:
    base = realdata / "plate_ssd" / "mininet_ssd_v1"
    net = rc.load_net(base.with_suffix(".prototxt"), base.with_suffix(".caffemodel"))
    ops = Counter(n.op for n in net.nodes)
    assert ops["caffe.permute"] == 12 and ops["caffe.prior_box"] == 6
    assert ops["caffe.detection_output"] == 1
    prior = net.get_submodule("ssd0_mobilenet0_relu22_fwd_priorbox")
    assert prior.min_sizes == [pytest.approx(51.2)]  # OpenCV's float sizes, not the fork's 51


@pytest.mark.realdata
def test_plate_ssd_saved_round_trip(realdata: Path, tmp_path: Path) -> None:
    # the new ops rebuild from their saved attributes (`repurpose verify caffe` runs the
    # comparison of the test above)
    base = realdata / "plate_ssd" / "mininet_ssd_v1"
    proto, model = base.with_suffix(".prototxt"), base.with_suffix(".caffemodel")
    handler = rp.ModelHandler.from_caffe(proto, model)
    handler.save(tmp_path / "ssd")
    loaded = rp.ModelHandler.load(tmp_path / "ssd")
    x = torch.from_numpy(np.random.default_rng(1).uniform(-1, 1, (2, 3, 512, 512))
                         .astype(np.float32))
    with torch.no_grad():
        before = handler.module.run({"data": x}, ["detection_out"])["detection_out"]
        after = loaded.module.run({"data": x}, ["detection_out"])["detection_out"]
    assert before.shape == (2, 1, 100, 7)
    torch.testing.assert_close(before, after)
