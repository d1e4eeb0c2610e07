"""RandomResizedCropFlip: the crop geometry, exact no-op and flip cases, use in fine-tuning."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import repurpose as rp


def ramps(n: int, h: int, w: int) -> torch.Tensor:
    """Channel 0 = the column index, channel 1 = the row index (for reading crops back)."""
    cols = torch.arange(w, dtype=torch.float32).expand(h, w)
    rows = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
    return torch.stack([cols, rows]).expand(n, 2, h, w).clone()


@settings(max_examples=40, deadline=None)
@given(lo=st.floats(0.05, 1.0), width=st.floats(0.0, 0.9), r_lo=st.floats(0.3, 1.0),
       r_width=st.floats(0.0, 2.0), n=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_crops_have_the_drawn_area_and_ratio_and_stay_inside(lo: float, width: float,
                                                             r_lo: float, r_width: float,
                                                             n: int, seed: int) -> None:
    scale = (lo, min(1.0, lo + width))
    ratio = (r_lo, r_lo + r_width)
    aug = rp.RandomResizedCropFlip(scale=scale, ratio=ratio, flip=0.5)
    torch.manual_seed(seed)
    theta = aug.draw(n, 1.0, torch.device("cpu"))
    w, h = theta[:, 0, 0].abs(), theta[:, 1, 1]
    assert torch.all(w.abs() + theta[:, 0, 2].abs() <= 1 + 1e-6)  # inside the image
    assert torch.all(h + theta[:, 1, 2].abs() <= 1 + 1e-6)
    unclamped = (w < 1) & (h < 1)
    area, r = (w * h)[unclamped], (w / h)[unclamped]
    assert torch.all((area >= scale[0] - 1e-5) & (area <= scale[1] + 1e-5))
    assert torch.all((r >= ratio[0] * (1 - 1e-5)) & (r <= ratio[1] * (1 + 1e-5)))


def test_the_output_is_the_crop_resized() -> None:
    x = ramps(64, 40, 60)
    torch.manual_seed(0)
    aug = rp.RandomResizedCropFlip(scale=(0.2, 0.6), flip=0.5)
    out = aug(x)
    torch.manual_seed(0)
    theta = aug.draw(64, 60 / 40, torch.device("cpu"))
    # along a row the column ramp rises (or falls, flipped) by the crop's width per pixel
    slope = (out[:, 0, :, 1:] - out[:, 0, :, :-1]).mean((1, 2))
    torch.testing.assert_close(slope, theta[:, 0, 0], atol=5e-3, rtol=1e-3)
    rise = (out[:, 1, 1:, :] - out[:, 1, :-1, :]).mean((1, 2))
    torch.testing.assert_close(rise, theta[:, 1, 1], atol=5e-3, rtol=1e-3)
    # the crop's centre column, in pixels of the input
    centre = out[:, 0].mean((1, 2))
    torch.testing.assert_close(centre, (theta[:, 0, 2] + 1) * 60 / 2 - 0.5, atol=1e-2,
                               rtol=1e-3)
    assert out.shape == x.shape and out.dtype == x.dtype


def test_no_crop_is_exact_and_flips_are_exact() -> None:
    x = torch.randn(5, 3, 17, 17)
    keep = rp.RandomResizedCropFlip(scale=(1, 1), ratio=(1, 1), flip=0.0)
    assert torch.equal(keep(x), x)
    flip = rp.RandomResizedCropFlip(scale=(1, 1), ratio=(1, 1), flip=1.0)
    assert torch.equal(flip(x), x.flip(3))
    torch.manual_seed(3)
    half = rp.RandomResizedCropFlip(scale=(1, 1), ratio=(1, 1), flip=0.5)(x)
    flipped = [torch.equal(half[i], x[i].flip(2)) for i in range(5)]
    kept = [torch.equal(half[i], x[i]) for i in range(5)]
    assert all(f != k for f, k in zip(flipped, kept, strict=True))


def test_contrast_scales_each_image_within_the_range() -> None:
    x = torch.randn(50, 3, 8, 8)
    out = rp.RandomResizedCropFlip(scale=(1, 1), ratio=(1, 1), flip=0.0, contrast=0.3)(x)
    factor = out.flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)
    assert torch.all((factor >= 0.7 - 1e-5) & (factor <= 1.3 + 1e-5))
    assert factor.std() > 0.05  # a draw per image
    torch.testing.assert_close(out, x * factor[:, None, None, None])


def test_the_same_seed_gives_the_same_batch() -> None:
    x = torch.randn(4, 3, 20, 20)
    aug = rp.RandomResizedCropFlip(contrast=0.2)
    torch.manual_seed(7)
    a = aug(x)
    torch.manual_seed(7)
    assert torch.equal(a, aug(x))
    assert not torch.equal(a, aug(x))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"scale": (0.0, 1.0)}, r"scale=\(0.0, 1.0\); expected a pair with 0 < low <= high <= 1"),
    ({"scale": (0.8, 0.5)}, r"scale=\(0.8, 0.5\)"),
    ({"scale": 0.5}, r"scale=0.5; expected a pair \(low, high\)"),
    ({"ratio": (2.0, 1.0)}, r"ratio=\(2.0, 1.0\); expected a pair with 0 < low <= high, e.g."),
    ({"flip": 1.5}, r"flip=1.5; expected a number in \[0, 1\]"),
    ({"contrast": -0.1}, r"contrast=-0.1"),
])
def test_bad_settings_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        rp.RandomResizedCropFlip(**kwargs)


def test_a_batch_that_is_not_images_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\(N, C, H, W\); got shape \(4, 10\)"):
        rp.RandomResizedCropFlip()(torch.randn(4, 10))


def test_fine_tuning_uses_it_on_every_batch() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    X = np.random.default_rng(0).normal(size=(24, 3, 12, 12)).astype(np.float32)
    y = np.repeat([0, 1], 12)
    seen: list[tuple[int, ...]] = []
    crops = rp.RandomResizedCropFlip()

    def spy(x: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(x.shape))
        return crops(x)

    common = {"transfer_layer": "3", "freeze": None, "max_epochs": 2, "batch_size": 8,
              "validation_fraction": 0.0, "progress": False, "random_state": 0}
    plain = rp.FineTuneRepurposer(rp.ModelHandler(net), **common).fit(X, y)
    rep = rp.FineTuneRepurposer(rp.ModelHandler(net), augment=spy, **common).fit(X, y)
    assert seen == [(8, 3, 12, 12)] * 6  # 3 batches x 2 epochs
    assert not math.isclose(plain.history_["loss"][-1], rep.history_["loss"][-1])
