"""``verify`` judges each blob's error against the blob's scale (issue: real SqueezeNet
imports were reported broken because tolerances were absolute per element)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from caffe_writer import NetWriter
from click.testing import CliRunner

import repurpose.caffe as rc
from repurpose._compare import compare_to_scale
from repurpose.cli import cli


def _big_net(tmp_path: Path) -> tuple[Path, Path]:
    """Two stacked convolutions whose blobs reach the thousands on 0-255 inputs."""
    w = NetWriter((1, 3, 24, 24))
    w.layer("conv1", "Convolution", ["data"], ["conv1"], [(32, 3, 3, 3), (32,)],
            convolution_param={"num_output": 32, "kernel_size": [3]})
    w.layer("conv2", "Convolution", ["conv1"], ["conv2"], [(32, 32, 3, 3), (32,)],
            convolution_param={"num_output": 32, "kernel_size": [3]})
    return w.write(tmp_path)


def test_compare_to_scale_judges_against_the_largest_value():
    ref = np.array([3000.0, -1500.0, 0.0001])
    diff, rel, ok = compare_to_scale(ref + 0.01, ref, rtol=1e-4, atol=1e-5)
    assert ok and diff == pytest.approx(0.01) and rel == pytest.approx(0.01 / 3000)
    diff, rel, ok = compare_to_scale(ref * 1.01, ref, rtol=1e-4, atol=1e-5)
    assert not ok and rel == pytest.approx(0.01)
    assert compare_to_scale(np.zeros(3), np.zeros(3), 1e-4, 1e-5) == (0.0, 0.0, True)
    assert compare_to_scale(np.full(2, np.nan), np.zeros(2), 1e-4, 1e-5)[2] is False


def test_blobs_in_the_thousands_pass_and_show_their_relative_error(tmp_path):
    pytest.importorskip("cv2")
    proto, model = _big_net(tmp_path)
    x = np.random.default_rng(0).uniform(0, 255, (1, 3, 24, 24)).astype(np.float32)
    report = rc.verify(proto, model, inputs={"data": x})
    compared = [r for r in report if r.max_abs_diff is not None]
    assert {r.layer for r in compared} == {"conv1", "conv2"}
    assert max(r.max_abs_diff for r in compared) > 1e-4  # an absolute per-element test fails
    assert all(r.ok for r in compared)
    assert all(r.max_rel_err is not None and r.max_rel_err < 1e-5 for r in compared)


def test_cli_shows_the_relative_error_column(tmp_path):
    pytest.importorskip("cv2")
    proto, model = _big_net(tmp_path)
    result = CliRunner().invoke(cli, ["verify", "caffe", str(proto), str(model)])
    assert result.exit_code == 0, result.output
    assert "max rel" in result.output and "0 mismatched" in result.output
