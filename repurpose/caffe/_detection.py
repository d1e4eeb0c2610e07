"""SSD detection layers (weiliu89/caffe, branch ``ssd``): Normalize, PriorBox, DetectionOutput.

Ops and converters follow the fork's CPU code (``normalize_layer.cpp``,
``prior_box_layer.cpp``, ``detection_output_layer.cpp`` with ``bbox_util.cpp``): the same
box order, decoding formulas, per-class greedy NMS, confidence test (strictly greater)
and ``keep_top_k`` selection. NMS is plain torch (no torchvision).

One deliberate choice: the fork truncates ``min_size``/``max_size`` to integers
(``int min_size_ = min_sizes_[s]``) while OpenCV keeps them as floats. The ``caffe.prior_box``
op has both (``integer_sizes``); imports use OpenCV's float sizes, the two agree whenever the
sizes are whole numbers (as in the original SSD nets).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from repurpose._exceptions import ModelFormatError, UnsupportedLayerError
from repurpose.caffe._layers import Converted, LayerContext, _one_input, register_layer
from repurpose.graph import register_op

__all__ = ["CaffeNormalize", "CaffePriorBox", "CaffeDetectionOutput", "prior_aspect_ratios",
           "caffe_rows"]

CODE_TYPES = {1: "corner", 2: "center_size", 3: "corner_size"}


# ------------------------------------------------------------------ Normalize


@register_op("caffe.normalize")
class CaffeNormalize(nn.Module):
    """SSD Normalize: L2-normalise per position (or per sample), then scale.

    Args:
        channels: number of channels (size of the scale when not shared).
        across_spatial: one norm over C*H*W per sample, instead of one per position.
        channel_shared: one scale for all channels.
        eps: added to the sum of squares before the square root.
    """

    def __init__(self, channels: int = 1, across_spatial: bool = True,
                 channel_shared: bool = True, eps: float = 1e-10) -> None:
        super().__init__()
        self.across_spatial, self.channel_shared = bool(across_spatial), bool(channel_shared)
        self.eps = float(eps)
        self.weight = nn.Parameter(torch.ones(1 if channel_shared else int(channels)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.across_spatial:
            sq = (x * x).reshape(x.shape[0], -1).sum(1)
            norm = (sq + self.eps).sqrt().reshape([-1] + [1] * (x.dim() - 1))
        else:
            norm = ((x * x).sum(1, keepdim=True) + self.eps).sqrt()
        scale = self.weight.reshape([1, -1] + [1] * (x.dim() - 2)) if x.dim() > 2 else \
            self.weight.reshape(1, -1)
        return x / norm * scale


@register_layer("Normalize")
def _normalize(ctx: LayerContext) -> Converted:
    p = ctx.layer.norm_param
    shape = _one_input(ctx)
    if len(shape) < 2:
        raise ModelFormatError(f"layer {ctx.name!r}: Normalize needs a (N, C, ...) input")
    n = 1 if p.channel_shared else shape[1]
    attrs = {"channels": int(shape[1]), "across_spatial": bool(p.across_spatial),
             "channel_shared": bool(p.channel_shared), "eps": float(p.eps)}
    weight = ctx.blob(0, (n,), "scale")
    return Converted("caffe.normalize", attrs, {} if weight is None else {"weight": weight})


register_layer("NormalizeBBox", _normalize)  # OpenCV's name for the same layer


# ------------------------------------------------------------------ PriorBox


def prior_aspect_ratios(ratios: Sequence[float], flip: bool) -> list[float]:
    """1, then each new ratio (and its inverse with ``flip``), duplicates dropped."""
    out = [1.0]
    for ar in ratios:
        if any(abs(ar - a) < 1e-6 for a in out):
            continue
        out.append(float(ar))
        if flip:
            out.append(1.0 / float(ar))
    return out


@register_op("caffe.prior_box")
class CaffePriorBox(nn.Module):
    """SSD PriorBox: default boxes for a feature map, as ``(1, 2, H * W * P * 4)``.

    Channel 0 holds ``xmin, ymin, xmax, ymax`` (normalised to the image) per position
    and prior, channel 1 the variances. Only the inputs' shapes are read.

    Args:
        min_sizes, max_sizes: box sizes in pixels (``max_sizes`` empty or one per min).
        aspect_ratios: the ratios after :func:`prior_aspect_ratios`.
        clip: clamp the boxes to [0, 1].
        variance: 1 or 4 values.
        img_size: ``[h, w]`` override of the image size (else the second input's).
        step: ``[h, w]`` override of the cell size (else image size / feature size).
        offset: cell offset of the box centres.
        integer_sizes: truncate sizes to integers, as the SSD fork does.
    """

    def __init__(self, min_sizes: Sequence[float] = (), max_sizes: Sequence[float] = (),
                 aspect_ratios: Sequence[float] = (1.0,), clip: bool = False,
                 variance: Sequence[float] = (0.1,), img_size: Sequence[int] | None = None,
                 step: Sequence[float] | None = None, offset: float = 0.5,
                 integer_sizes: bool = False) -> None:
        super().__init__()
        conv = int if integer_sizes else float
        self.min_sizes = [conv(s) for s in min_sizes]
        self.max_sizes = [conv(s) for s in max_sizes]
        self.aspect_ratios = [float(a) for a in aspect_ratios]
        self.clip, self.offset = bool(clip), float(offset)
        self.variance = [float(v) for v in variance]
        self.img_size = None if img_size is None else [int(s) for s in img_size]
        self.step = None if step is None else [float(s) for s in step]
        self.integer_sizes = bool(integer_sizes)

    @property
    def num_priors(self) -> int:
        return len(self.aspect_ratios) * len(self.min_sizes) + len(self.max_sizes)

    def _sizes(self) -> list[tuple[float, float]]:
        """(width, height) of the priors of one cell, in the fork's order."""
        sizes: list[tuple[float, float]] = []
        for s, lo in enumerate(self.min_sizes):
            sizes.append((lo, lo))
            if self.max_sizes:
                side = math.sqrt(lo * self.max_sizes[s])
                sizes.append((side, side))
            for ar in self.aspect_ratios:
                if abs(ar - 1.0) < 1e-6:
                    continue
                sizes.append((lo * math.sqrt(ar), lo / math.sqrt(ar)))
        return sizes

    def forward(self, feat: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        fh, fw = int(feat.shape[-2]), int(feat.shape[-1])
        if self.img_size is not None:
            ih, iw = self.img_size
        elif image is not None:
            ih, iw = int(image.shape[-2]), int(image.shape[-1])
        else:
            raise ValueError("PriorBox needs the image as second input or img_size")
        sh, sw = self.step if self.step is not None else (ih / fh, iw / fw)
        opts: dict[str, Any] = {"dtype": torch.float64, "device": feat.device}
        # the fork's single-precision intermediates: step, centres and sizes are floats
        sh, sw = float(np.float32(sh)), float(np.float32(sw))
        cy = ((torch.arange(fh, **opts) + self.offset) * sh).float().double()
        cx = ((torch.arange(fw, **opts) + self.offset) * sw).float().double()
        wh = torch.tensor(self._sizes(), **opts).float().double()  # (P, 2)
        cx = cx[None, :, None]
        cy = cy[:, None, None]
        bw, bh = wh[None, None, :, 0], wh[None, None, :, 1]
        boxes = torch.stack(torch.broadcast_tensors((cx - bw / 2) / iw, (cy - bh / 2) / ih,
                                                    (cx + bw / 2) / iw, (cy + bh / 2) / ih),
                            -1).to(feat.dtype)
        if self.clip:
            boxes = boxes.clamp(0.0, 1.0)
        boxes = boxes.reshape(-1)
        var = torch.tensor(self.variance, dtype=feat.dtype, device=feat.device)
        var = var.repeat(boxes.numel() // var.numel()) if var.numel() == 4 else \
            var.expand(boxes.numel())
        return torch.stack([boxes, var])[None]


@register_layer("PriorBox")
def _prior_box(ctx: LayerContext) -> Converted:
    p = ctx.layer.prior_box_param
    if p.width or p.height or p.offset_h or p.offset_w:
        raise UnsupportedLayerError(f"layer {ctx.name!r}: PriorBox with explicit width/height "
                                    "or offset_h/offset_w (OpenCV's extension) is not supported")
    if not p.min_size:
        raise ModelFormatError(f"layer {ctx.name!r}: PriorBox needs min_size")
    if p.max_size and len(p.max_size) != len(p.min_size):
        raise ModelFormatError(f"layer {ctx.name!r}: {len(p.max_size)} max_size for "
                               f"{len(p.min_size)} min_size")
    if any(hi <= lo for lo, hi in zip(p.min_size, p.max_size)) or min(p.min_size) <= 0:
        raise ModelFormatError(f"layer {ctx.name!r}: sizes must be positive, max > min")
    variance = list(p.variance) or [0.1]
    if len(variance) not in (1, 4):
        raise ModelFormatError(f"layer {ctx.name!r}: PriorBox needs 1 or 4 variances, got "
                               f"{len(variance)}")
    if len(ctx.in_shapes) not in (1, 2) or len(ctx.in_shapes[0]) != 4:
        raise ModelFormatError(f"layer {ctx.name!r}: PriorBox takes a 4-D feature map and "
                               "the image")
    img = None
    if p.HasField("img_size") or p.HasField("img_h") or p.HasField("img_w"):
        img = [int(p.img_size)] * 2 if p.HasField("img_size") else [int(p.img_h), int(p.img_w)]
    elif len(ctx.in_shapes) == 1:
        raise ModelFormatError(f"layer {ctx.name!r}: PriorBox needs the image as second "
                               "bottom or img_size")
    step = None
    if p.HasField("step") or p.HasField("step_h") or p.HasField("step_w"):
        step = [float(p.step)] * 2 if p.HasField("step") else [float(p.step_h),
                                                                float(p.step_w)]
    attrs = {"min_sizes": [float(s) for s in p.min_size],
             "max_sizes": [float(s) for s in p.max_size],
             "aspect_ratios": prior_aspect_ratios(list(p.aspect_ratio), bool(p.flip)),
             "clip": bool(p.clip), "variance": [float(v) for v in variance],
             "img_size": img, "step": step, "offset": float(p.offset)}
    return Converted("caffe.prior_box", attrs)


# ------------------------------------------------------------------ DetectionOutput


def decode_boxes(loc: torch.Tensor, priors: torch.Tensor, variances: torch.Tensor,
                 code_type: str, variance_in_target: bool) -> torch.Tensor:
    """The fork's ``DecodeBBox`` for ``(P, 4)`` offsets against ``(P, 4)`` priors."""
    var = torch.ones_like(variances) if variance_in_target else variances
    if code_type == "corner":
        return priors + var * loc
    pw = priors[:, 2] - priors[:, 0]
    ph = priors[:, 3] - priors[:, 1]
    if code_type == "corner_size":
        return priors + var * loc * torch.stack([pw, ph, pw, ph], 1)
    pcx = (priors[:, 0] + priors[:, 2]) / 2
    pcy = (priors[:, 1] + priors[:, 3]) / 2
    cx = var[:, 0] * loc[:, 0] * pw + pcx
    cy = var[:, 1] * loc[:, 1] * ph + pcy
    w = torch.exp(var[:, 2] * loc[:, 2]) * pw
    h = torch.exp(var[:, 3] * loc[:, 3]) * ph
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)


def jaccard(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The fork's ``JaccardOverlap`` between each box of ``a`` (M, 4) and ``b`` (K, 4)."""
    def size(x: torch.Tensor) -> torch.Tensor:
        w, h = x[:, 2] - x[:, 0], x[:, 3] - x[:, 1]
        return torch.where((w < 0) | (h < 0), torch.zeros_like(w), w * h)

    a_, b_ = a[:, None, :], b[None, :, :]
    apart = (b_[..., 0] > a_[..., 2]) | (b_[..., 2] < a_[..., 0]) | \
        (b_[..., 1] > a_[..., 3]) | (b_[..., 3] < a_[..., 1])
    iw = torch.minimum(a_[..., 2], b_[..., 2]) - torch.maximum(a_[..., 0], b_[..., 0])
    ih = torch.minimum(a_[..., 3], b_[..., 3]) - torch.maximum(a_[..., 1], b_[..., 1])
    inter = iw * ih
    iou = inter / (size(a)[:, None] + size(b)[None, :] - inter)
    return torch.where(apart, torch.zeros_like(iou), iou)


def nms_fast(boxes: torch.Tensor, scores: torch.Tensor, score_threshold: float,
             nms_threshold: float, eta: float, top_k: int) -> torch.Tensor:
    """The fork's ``ApplyNMSFast``: indices kept, in descending score order."""
    cand = torch.nonzero(scores > score_threshold).flatten()
    order = torch.sort(scores[cand], descending=True, stable=True).indices
    cand = cand[order]
    if top_k > -1:
        cand = cand[:top_k]
    if cand.numel() == 0:
        return cand
    iou = jaccard(boxes[cand], boxes[cand]).cpu().tolist()
    kept: list[int] = []
    threshold = nms_threshold
    for i in range(cand.numel()):
        row = iou[i]
        # NaN overlaps (degenerate boxes) fail the test, as in the C++ loop
        keep = all(row[k] <= threshold for k in kept)
        if keep:
            kept.append(i)
            if eta < 1 and threshold > 0.5:
                threshold *= eta
    return cand[torch.tensor(kept, dtype=torch.long, device=cand.device)]


@register_op("caffe.detection_output")
class CaffeDetectionOutput(nn.Module):
    """SSD DetectionOutput: decode, per-class NMS, keep the best.

    The fork writes one ``(1, 1, K, 7)`` blob of ``[image, label, score, xmin, ymin, xmax,
    ymax]`` rows for the whole batch, K varying with the data. This op gives each image a
    fixed block instead, ``(N, 1, max_detections, 7)``: image ``i``'s rows (the fork's, in
    its order) then padding rows ``[i, -1, -1, -1, -1, -1, -1]`` (the fork's own "nothing
    found" row). So the output is a per-sample blob of static shape (``extract`` and shape
    inference work); :func:`caffe_rows` turns it back into the fork's blob.

    Args:
        num_classes, share_location, background_label_id: as in Caffe.
        code_type: ``"corner"``, ``"center_size"`` or ``"corner_size"``.
        variance_encoded_in_target: the offsets already include the variances.
        nms_threshold, top_k, eta: the NMS parameters (``top_k=-1``: all).
        keep_top_k: detections kept per image (-1: all).
        confidence_threshold: scores must be strictly greater (``None``: all).
    """

    def __init__(self, num_classes: int = 2, share_location: bool = True,
                 background_label_id: int = 0, code_type: str = "corner",
                 variance_encoded_in_target: bool = False, nms_threshold: float = 0.3,
                 top_k: int = -1, eta: float = 1.0, keep_top_k: int = -1,
                 confidence_threshold: float | None = None) -> None:
        super().__init__()
        self.num_classes, self.share_location = int(num_classes), bool(share_location)
        self.background = int(background_label_id)
        self.code_type, self.variance_in_target = code_type, bool(variance_encoded_in_target)
        self.nms_threshold, self.top_k, self.eta = float(nms_threshold), int(top_k), float(eta)
        self.keep_top_k = int(keep_top_k)
        self.threshold = -math.inf if confidence_threshold is None else \
            float(confidence_threshold)

    def max_detections(self, num_priors: int) -> int:
        """Rows per image: ``keep_top_k``, else what per-class NMS can keep at most."""
        per_class = num_priors if self.top_k < 0 else min(self.top_k, num_priors)
        classes = self.num_classes - (0 <= self.background < self.num_classes)
        most = per_class * classes
        return most if self.keep_top_k < 0 else min(self.keep_top_k, most)

    def forward(self, loc: torch.Tensor, conf: torch.Tensor,
                prior: torch.Tensor) -> torch.Tensor:
        n = loc.shape[0]
        p = prior.shape[-1] // 4
        k = max(1, self.max_detections(p))
        out = torch.full((n, 1, k, 7), -1.0, dtype=loc.dtype, device=loc.device)
        out[:, :, :, 0] = torch.arange(n, dtype=loc.dtype, device=loc.device)[:, None, None]
        if loc.is_meta:
            return out
        n_loc = 1 if self.share_location else self.num_classes
        locs = loc.reshape(n, p, n_loc, 4)
        confs = conf.reshape(n, p, self.num_classes)
        priors = prior.reshape(-1, 2, p, 4)[0]
        for i in range(n):
            rows = self._image(i, locs[i], confs[i], priors)
            out[i, 0, : rows.shape[0]] = rows
        return out

    def _image(self, i: int, loc: torch.Tensor, conf: torch.Tensor,
               priors: torch.Tensor) -> torch.Tensor:
        decoded = [decode_boxes(loc[:, c], priors[0], priors[1], self.code_type,
                                self.variance_in_target) for c in range(loc.shape[1])]
        found: list[tuple[int, torch.Tensor]] = []
        for c in range(self.num_classes):
            if c == self.background:
                continue
            boxes = decoded[0 if self.share_location else c]
            found.append((c, nms_fast(boxes, conf[:, c], self.threshold, self.nms_threshold,
                                      self.eta, self.top_k)))
        total = sum(int(idx.numel()) for _, idx in found)
        if self.keep_top_k > -1 and total > self.keep_top_k:
            found = self._keep_best(found, conf)
        rows = []
        for c, idx in found:
            if idx.numel() == 0:
                continue
            boxes = decoded[0 if self.share_location else c][idx]
            head = torch.tensor([float(i), float(c)], dtype=loc.dtype, device=loc.device)
            rows.append(torch.cat([head.expand(idx.numel(), 2), conf[idx, c][:, None], boxes],
                                  1))
        return torch.cat(rows) if rows else loc.new_zeros((0, 7))

    def _keep_best(self, found: list[tuple[int, torch.Tensor]],
                   conf: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
        labels = torch.cat([torch.full_like(idx, c) for c, idx in found])
        index = torch.cat([idx for _, idx in found])
        best = torch.sort(conf[index, labels], descending=True, stable=True).indices
        best = best[: self.keep_top_k]
        labels, index = labels[best], index[best]
        return [(c, index[labels == c]) for c, _ in found]


@register_layer("DetectionOutput")
def _detection_output(ctx: LayerContext) -> Converted:
    p = ctx.layer.detection_output_param
    if len(ctx.in_shapes) != 3:
        raise UnsupportedLayerError(
            f"layer {ctx.name!r}: DetectionOutput with {len(ctx.in_shapes)} bottoms; "
            "the SSD form (loc, conf, priors) is supported")
    if not p.HasField("num_classes") or p.num_classes == 0:
        raise ModelFormatError(f"layer {ctx.name!r}: DetectionOutput needs num_classes")
    loc, conf, prior = (math.prod(s[1:]) for s in ctx.in_shapes)
    n_loc = 1 if p.share_location else int(p.num_classes)
    priors = ctx.in_shapes[2][-1] // 4
    if loc != priors * n_loc * 4 or conf != priors * p.num_classes:
        raise ModelFormatError(
            f"layer {ctx.name!r}: {priors} priors need {priors * n_loc * 4} location and "
            f"{priors * p.num_classes} confidence values per image, got {loc} and {conf}")
    nms = p.nms_param
    attrs = {"num_classes": int(p.num_classes), "share_location": bool(p.share_location),
             "background_label_id": int(p.background_label_id),
             "code_type": CODE_TYPES[int(p.code_type)],
             "variance_encoded_in_target": bool(p.variance_encoded_in_target),
             "nms_threshold": float(nms.nms_threshold),
             "top_k": int(nms.top_k) if nms.HasField("top_k") else -1,
             "eta": float(nms.eta), "keep_top_k": int(p.keep_top_k),
             "confidence_threshold": float(p.confidence_threshold)
             if p.HasField("confidence_threshold") else None}
    return Converted("caffe.detection_output", attrs)


def caffe_rows(detections: np.ndarray | torch.Tensor) -> np.ndarray:
    """The fork's ``(1, 1, K, 7)`` blob from this op's padded per-image output."""
    out = np.asarray(detections).reshape(-1, 7)
    found = out[out[:, 1] != -1]
    if len(found):
        return found[None, None]
    images = np.unique(out[:, 0])
    empty = np.full((len(images), 7), -1.0, dtype=out.dtype)
    empty[:, 0] = images
    return empty[None, None]


def comparable_detections(ours: np.ndarray, theirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both detection lists as sorted ``(K, 7)`` rows, for comparison with OpenCV.

    OpenCV pads its output to ``keep_top_k`` rows with zeros (the fork, and this import,
    emit only the detections) and may order equal-score rows differently.
    """
    def rows(x: np.ndarray) -> np.ndarray:
        r = x.reshape(-1, 7)
        r = r[np.any(r != 0, axis=1) & (r[:, 1] != -1)]
        return r[np.lexsort((r[:, 3], -r[:, 2], r[:, 1], r[:, 0]))]

    return rows(ours), rows(theirs)


# ops whose outputs need aligning before an element-wise comparison with OpenCV
COMPARABLE = {"caffe.detection_output": comparable_detections}
