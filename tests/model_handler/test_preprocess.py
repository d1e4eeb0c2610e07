import numpy as np
import pytest
import torch
from PIL import Image

from repurpose import Preprocess


def test_pipeline_order_matches_the_contract():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    p = Preprocess(channel_order="BGR", crop=(4, 4), raw_scale=255.0, mean=(10.0, 20.0, 30.0),
                   std=(2.0, 4.0, 8.0), input_scale=0.5)
    x = p(Image.fromarray(arr))
    rgb = arr.astype(np.float32)[1:5, 2:6].transpose(2, 0, 1)
    bgr = rgb[::-1]
    ref = (bgr - np.array([10, 20, 30.0])[:, None, None]) / np.array([2, 4, 8.0])[:, None, None]
    np.testing.assert_allclose(x.numpy(), ref * 0.5, rtol=1e-5, atol=1e-4)


def test_resize_shorter_side_and_exact():
    img = Image.new("RGB", (20, 10))
    assert Preprocess(resize=5)(img).shape == (3, 5, 10)
    assert Preprocess(resize=(7, 3))(img).shape == (3, 7, 3)
    assert Preprocess(resize=(7, 3))(np.zeros((10, 20, 3))).shape == (3, 7, 3)


def test_mean_image_is_centre_cropped():
    mean = np.arange(3 * 6 * 6, dtype=np.float32).reshape(3, 6, 6)
    p = Preprocess(crop=(4, 4), mean=mean)
    x = p(np.zeros((4, 4, 3), np.float32))
    np.testing.assert_array_equal(x.numpy(), -mean[:, 1:5, 1:5])
    with pytest.raises(ValueError, match="mean image is \\(6, 6\\) but the image is \\(8, 8\\)"):
        Preprocess(mean=mean).apply_tensor(torch.zeros(3, 8, 8))


def test_json_roundtrip_and_equality():
    p = Preprocess(resize=(8, 8), crop=(4, 4), mean=[1, 2, 3], std=(1, 1, 1))
    assert p.mean == (1.0, 2.0, 3.0)
    assert Preprocess.from_json(p.to_json()) == p
    mean = np.ones((3, 4, 4), np.float32)
    q = Preprocess(mean=mean)
    assert q.to_json()["mean"] == "image"
    assert Preprocess.from_json(q.to_json(), mean) == q and q != p


def test_validation():
    with pytest.raises(ValueError, match="channel_order='RGBA'; use 'RGB' or 'BGR'"):
        Preprocess(channel_order="RGBA")
    with pytest.raises(ValueError, match="mean has shape \\(2, 2\\)"):
        Preprocess(mean=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="crop=5; give \\(height, width\\)"):
        Preprocess(crop=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cannot crop \\(9, 9\\)"):
        Preprocess(crop=(9, 9))(np.zeros((4, 4, 3)))


def test_array_inputs_uint8_and_grayscale():
    arr = np.full((4, 4, 3), 255, np.uint8)
    np.testing.assert_allclose(Preprocess()(arr).numpy(), 1.0)
    assert Preprocess()(np.zeros((4, 5))).shape == (3, 4, 5)
    with pytest.raises(ValueError, match="expected \\(H, W, 3\\) RGB"):
        Preprocess()(np.zeros((4, 4, 4)))
