"""Batch augmentation for fine-tuning on few photos: random resized crops, flips, contrast.

:class:`RandomResizedCropFlip` is an ``augment=`` callable for the network repurposers. It
works on a batch of preprocessed images ``(N, C, H, W)`` already on the device, so it needs
no image library, runs on CUDA as on the CPU, and costs one ``grid_sample`` per batch: each
image gets its own crop (area share and aspect ratio drawn at random, as in the
Inception-style random-resized crop), resized back to ``H x W`` bilinearly, flipped left to
right with probability ``flip``, and its contrast scaled around the preprocessing mean.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from repurpose._validation import check_number

__all__ = ["RandomResizedCropFlip"]

_EXAMPLE = {"scale": "(0.35, 1.0)", "ratio": "(0.75, 1.33)"}


class RandomResizedCropFlip:
    """Random resized crop, horizontal flip and contrast jitter of each image of a batch.

    Pass it as ``augment=`` to :class:`~repurpose.FineTuneRepurposer` (or any network
    repurposer): it is applied to every training batch, a fresh draw per image and batch,
    from torch's global generator (which the training loop seeds per epoch, so runs repeat).

    Parameters
    ----------
    scale : tuple of float
        The range of the crop's area as a share of the image's (``(0.35, 1.0)``: between a
        third of the photo and all of it). A crop never leaves the image: where the drawn
        area and ratio would make it wider or taller than the image, that side is cut to
        the image's.
    ratio : tuple of float
        The range of the crop's aspect ratio (width / height), drawn log-uniformly.
    flip : float
        Probability of flipping an image left to right.
    contrast : float
        Multiply each image by a factor drawn uniformly in ``[1 - contrast, 1 + contrast]``.
        For inputs with the mean subtracted (Caffe and ImageNet preprocessing) that scales
        the contrast around the mean colour; 0 (default) leaves the values unchanged.

    Examples
    --------
    >>> import torch
    >>> import repurpose as rp
    >>> aug = rp.RandomResizedCropFlip(scale=(0.5, 1.0), flip=0.5)
    >>> x = torch.randn(4, 3, 32, 32)
    >>> aug(x).shape
    torch.Size([4, 3, 32, 32])
    >>> torch.equal(rp.RandomResizedCropFlip(scale=(1, 1), ratio=(1, 1), flip=1.0)(x),
    ...             x.flip(3))
    True
    """

    def __init__(self, scale: tuple[float, float] = (0.35, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), flip: float = 0.5,
                 contrast: float = 0.0) -> None:
        self.scale = _check_range("scale", scale, 0.0, 1.0)
        self.ratio = _check_range("ratio", ratio, 0.0, math.inf)
        self.flip = check_number("flip", flip, 0, 1)
        self.contrast = check_number("contrast", contrast, 0, 1)

    def __repr__(self) -> str:
        return (f"RandomResizedCropFlip(scale={self.scale}, ratio={self.ratio}, "
                f"flip={self.flip}, contrast={self.contrast})")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(
                f"RandomResizedCropFlip needs a batch of images (N, C, H, W); got shape "
                f"{tuple(x.shape)}. Use it as augment= of a network repurposer on image inputs"
            )
        theta = self.draw(len(x), x.shape[3] / x.shape[2], x.device)
        flips = theta[:, 0, 0] < 0
        if _is_identity(theta.abs()):  # no crop: exact flips, no interpolation error
            out = torch.where(flips[:, None, None, None], x.flip(3), x)
        else:
            grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
            out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border",
                                align_corners=False)
        if self.contrast > 0:
            factor = 1 + (2 * torch.rand(len(x), device=x.device) - 1) * self.contrast
            out = out * factor.to(x.dtype)[:, None, None, None]
        return out

    def draw(self, n: int, aspect: float, device: torch.device) -> torch.Tensor:
        """``(n, 2, 3)`` affine matrices (``F.affine_grid``'s): crop, position and flip.

        ``aspect`` is the images' width / height; the crops' sizes are shares of the side.
        """
        area = torch.empty(n, device=device).uniform_(*self.scale)
        lo, hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        ratio = torch.exp(torch.empty(n, device=device).uniform_(lo, hi)) / aspect
        width = torch.sqrt(area * ratio).clamp(max=1.0)  # shares of the side
        height = torch.sqrt(area / ratio).clamp(max=1.0)
        # the crop's centre in [-1, 1] coordinates, so that it stays inside the image
        cx = (2 * torch.rand(n, device=device) - 1) * (1 - width)
        cy = (2 * torch.rand(n, device=device) - 1) * (1 - height)
        sign = torch.where(torch.rand(n, device=device) < self.flip, -1.0, 1.0)
        theta = torch.zeros(n, 2, 3, device=device)
        theta[:, 0, 0], theta[:, 0, 2] = width * sign, cx
        theta[:, 1, 1], theta[:, 1, 2] = height, cy
        return theta


def _is_identity(theta: torch.Tensor) -> bool:
    eye = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], device=theta.device)
    return bool(torch.equal(theta, eye.expand_as(theta)))


def _check_range(name: str, value: tuple[float, float], low: float,
                 high: float) -> tuple[float, float]:
    """``(lo, hi)`` with ``low < lo <= hi <= high``, else a ValueError naming ``name``."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r}; expected a pair (low, high) of numbers") from None
    if not low < lo <= hi <= high:
        raise ValueError(f"{name}={value!r}; expected a pair with {low:g} < low <= high"
                         + ("" if math.isinf(high) else f" <= {high:g}")
                         + f", e.g. {name}={_EXAMPLE[name]}")
    return lo, hi
