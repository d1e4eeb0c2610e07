"""Input preprocessing metadata, stored with a handler and applied to image inputs."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

__all__ = ["Preprocess"]

_ORDERS = ("RGB", "BGR")


@dataclass(frozen=True, eq=False)
class Preprocess:
    """How to turn an image into the tensor a network expects.

    The pipeline is: load the image as float RGB in [0, 1] -> ``resize`` -> centre ``crop``
    -> reorder channels to ``channel_order`` -> multiply by ``raw_scale`` -> subtract
    ``mean`` -> divide by ``std`` -> multiply by ``input_scale``.

    Parameters
    ----------
    channel_order : {"RGB", "BGR"}
        The channel order the network expects.
    resize : int or (int, int), optional
        An int resizes the shorter side to that length (keeping the aspect ratio);
        a pair resizes to exactly (H, W). Applied before ``crop``.
    crop : (int, int), optional
        Centre crop (H, W).
    raw_scale : float
        Images load in [0, 1] and are multiplied by this (Caffe models use 255).
    mean : tuple of float or ndarray, optional
        Per-channel mean, or a mean image (C, H, W), in the network's channel order and
        after ``raw_scale``. A mean image larger than the image is centre-cropped.
    std : tuple of float, optional
        Per-channel standard deviation.
    input_scale : float
        Caffe's ``input_scale``, applied last.

    Examples
    --------
    >>> from PIL import Image
    >>> p = Preprocess(resize=8, crop=(6, 6), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    >>> p(Image.new("RGB", (10, 8))).shape
    torch.Size([3, 6, 6])
    """

    channel_order: str = "RGB"
    resize: int | tuple[int, int] | None = None
    crop: tuple[int, int] | None = None
    raw_scale: float = 1.0
    mean: tuple[float, ...] | np.ndarray | None = None
    std: tuple[float, ...] | None = None
    input_scale: float = 1.0

    def __post_init__(self) -> None:
        order = str(self.channel_order).upper()
        if order not in _ORDERS:
            raise ValueError(f"channel_order={self.channel_order!r}; use 'RGB' or 'BGR'")
        object.__setattr__(self, "channel_order", order)
        if self.resize is not None and not isinstance(self.resize, int):
            object.__setattr__(self, "resize", _pair(self.resize, "resize"))
        if self.crop is not None:
            object.__setattr__(self, "crop", _pair(self.crop, "crop"))
        if self.mean is not None:
            mean = np.asarray(self.mean, dtype=np.float32)
            if mean.ndim == 1:
                object.__setattr__(self, "mean", tuple(float(m) for m in mean))
            elif mean.ndim == 3:
                object.__setattr__(self, "mean", mean)
            else:
                raise ValueError(
                    f"mean has shape {mean.shape}; give one value per channel or an image (C, H, W)"
                )
        if self.std is not None:
            object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Preprocess):
            return NotImplemented
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
                    return False
                if a.shape != b.shape or not np.array_equal(a, b):
                    return False
            elif a != b:
                return False
        return True

    __hash__ = None  # type: ignore[assignment]

    @property
    def mean_image(self) -> np.ndarray | None:
        """The mean image (C, H, W) when ``mean`` is one, else None."""
        return self.mean if isinstance(self.mean, np.ndarray) else None

    def __call__(self, image: Any) -> torch.Tensor:
        """Preprocess one image: a PIL image, or an RGB array (H, W, 3) that is float in
        [0, 1] or uint8 in [0, 255] (a 2-D array is taken as grayscale).

        Returns
        -------
        torch.Tensor
            Float tensor (C, H, W).
        """
        from PIL import Image

        if isinstance(image, Image.Image):
            image = self._resize_pil(image.convert("RGB"))
            arr = np.asarray(image, dtype=np.float32) / 255.0
        else:
            raw = np.asarray(image)
            arr = raw.astype(np.float32) / (255.0 if raw.dtype == np.uint8 else 1.0)
            if arr.ndim == 2:  # grayscale: repeat into RGB, as PIL's convert("RGB") does
                arr = np.repeat(arr[:, :, None], 3, axis=2)
            if arr.ndim != 3 or arr.shape[2] != 3:
                raise ValueError(f"image array has shape {raw.shape}; expected (H, W, 3) RGB")
            if self.resize is not None:
                pil = Image.fromarray(np.clip(arr * 255.0 + 0.5, 0, 255).astype(np.uint8))
                arr = np.asarray(self._resize_pil(pil), dtype=np.float32) / 255.0
        x = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
        return self.apply_tensor(x)

    def apply_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """Apply every step after resizing to an RGB tensor (C, H, W) in [0, 1]."""
        if self.crop is not None:
            x = _center_crop(x, self.crop)
        if self.channel_order == "BGR":
            x = x.flip(0)
        if self.raw_scale != 1.0:
            x = x * self.raw_scale
        if self.mean is not None:
            x = x - self._mean_tensor(x)
        if self.std is not None:
            x = x / torch.tensor(self.std, dtype=x.dtype).view(-1, 1, 1)
        if self.input_scale != 1.0:
            x = x * self.input_scale
        return x.contiguous()

    def _mean_tensor(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(self.mean, np.ndarray):
            return torch.tensor(self.mean, dtype=x.dtype).view(-1, 1, 1)
        mean = torch.from_numpy(self.mean).to(x.dtype)
        h, w = x.shape[-2:]
        if mean.shape[-2] < h or mean.shape[-1] < w:
            raise ValueError(
                f"mean image is {tuple(mean.shape[-2:])} but the image is {(h, w)}; "
                "set crop to at most the mean image size"
            )
        return _center_crop(mean, (h, w))

    def _resize_pil(self, image: Any) -> Any:
        from PIL import Image

        if self.resize is None:
            return image
        if isinstance(self.resize, int):
            w, h = image.size
            scale = self.resize / min(w, h)
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
        else:
            size = (self.resize[1], self.resize[0])
        return image.resize(size, getattr(Image, "Resampling", Image).BILINEAR)

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable fields; a mean image is replaced by the marker ``"image"``."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                value = "image"
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any], mean_image: np.ndarray | None = None) -> Preprocess:
        """Inverse of :meth:`to_json`; ``mean_image`` fills the ``"image"`` marker."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in obj.items() if k in known}
        if kwargs.get("mean") == "image":
            if mean_image is None:
                raise ValueError("preprocess refers to a mean image but none was given")
            kwargs["mean"] = mean_image
        for key in ("resize", "crop"):
            if isinstance(kwargs.get(key), list):
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)


def _pair(value: Any, name: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}={value!r}; give (height, width)") from err
    return (h, w)


def _center_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    h, w = x.shape[-2:]
    ch, cw = size
    if ch > h or cw > w:
        raise ValueError(f"cannot crop {(ch, cw)} from an image of size {(h, w)}; resize first")
    top, left = (h - ch) // 2, (w - cw) // 2
    return x[..., top : top + ch, left : left + cw]
