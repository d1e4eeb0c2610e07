"""Test helper: numpy/Python ports of the SSD fork's CPU loops (weiliu89/caffe, branch ssd):
prior_box_layer.cpp Forward_cpu and detection_output_layer.cpp Forward_cpu with the
bbox_util.cpp functions it calls (DecodeBBox, JaccardOverlap, ApplyNMSFast)."""

from __future__ import annotations

import math

import numpy as np


def f32(x):
    """Round to single precision (the fork's float variables), as a Python float."""
    return float(np.float32(x))


def prior_box(layer_hw, img_hw, min_sizes, max_sizes, ratios, flip, clip, variance,
              step=None, offset=0.5):
    layer_h, layer_w = layer_hw
    img_h, img_w = img_hw
    ars = [1.0]
    for ar in ratios:
        if any(abs(ar - a) < 1e-6 for a in ars):
            continue
        ars.append(ar)
        if flip:
            ars.append(1.0 / ar)
    step_h, step_w = step if step else (f32(img_h) / f32(layer_h), f32(img_w) / f32(layer_w))
    out = []
    for h in range(layer_h):
        for w in range(layer_w):
            cx = f32((w + f32(offset)) * f32(step_w))
            cy = f32((h + f32(offset)) * f32(step_h))
            for s, mn in enumerate(min_sizes):
                mn = int(mn)  # the fork's `int min_size_`
                boxes = [(f32(mn), f32(mn))]
                if max_sizes:
                    side = f32(math.sqrt(mn * int(max_sizes[s])))
                    boxes.append((side, side))
                for ar in ars:
                    if abs(ar - 1.0) < 1e-6:
                        continue
                    boxes.append((f32(mn * math.sqrt(ar)), f32(mn / math.sqrt(ar))))
                for bw, bh in boxes:
                    out += [(cx - bw / 2.0) / img_w, (cy - bh / 2.0) / img_h,
                            (cx + bw / 2.0) / img_w, (cy + bh / 2.0) / img_h]
    out = np.asarray(out, np.float64)
    if clip:
        out = np.clip(out, 0, 1)
    var = np.tile(variance, len(out) // len(variance)) if len(variance) == 4 else \
        np.full(len(out), variance[0])
    return np.stack([out, var])[None].astype(np.float32)


def _decode(prior, var, box, code, in_target):
    v = [1.0] * 4 if in_target else var
    if code == "corner":
        return [prior[k] + v[k] * box[k] for k in range(4)]
    pw, ph = prior[2] - prior[0], prior[3] - prior[1]
    if code == "corner_size":
        return [prior[0] + v[0] * box[0] * pw, prior[1] + v[1] * box[1] * ph,
                prior[2] + v[2] * box[2] * pw, prior[3] + v[3] * box[3] * ph]
    pcx, pcy = (prior[0] + prior[2]) / 2.0, (prior[1] + prior[3]) / 2.0
    cx, cy = v[0] * box[0] * pw + pcx, v[1] * box[1] * ph + pcy
    w, h = math.exp(v[2] * box[2]) * pw, math.exp(v[3] * box[3]) * ph
    return [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]


def _size(b):
    if b[2] < b[0] or b[3] < b[1]:
        return 0.0
    return (b[2] - b[0]) * (b[3] - b[1])


def _jaccard(a, b):
    if b[0] > a[2] or b[2] < a[0] or b[1] > a[3] or b[3] < a[1]:
        return 0.0
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = iw * ih
    return inter / (_size(a) + _size(b) - inter)


def _nms(boxes, scores, score_thr, nms_thr, eta, top_k):
    pairs = [(s, i) for i, s in enumerate(scores) if s > score_thr]
    pairs.sort(key=lambda p: -p[0])  # stable, as std::stable_sort
    if top_k > -1:
        pairs = pairs[:top_k]
    kept, thr = [], nms_thr
    for _, idx in pairs:
        keep = all(_jaccard(boxes[idx], boxes[k]) <= thr for k in kept)
        if keep:
            kept.append(idx)
            if eta < 1 and thr > 0.5:
                thr *= eta
    return kept


def detection_output(loc, conf, prior, num_classes, share_location=True, background=0,
                     code="corner", in_target=False, nms_thr=0.3, top_k=-1, eta=1.0,
                     keep_top_k=-1, conf_thr=-np.inf):
    n = loc.shape[0]
    p = prior.shape[-1] // 4
    n_loc = 1 if share_location else num_classes
    loc = loc.reshape(n, p, n_loc, 4).astype(np.float64)
    conf = conf.reshape(n, p, num_classes).astype(np.float64)
    pri = prior.reshape(2, p, 4).astype(np.float64)
    rows = []
    for i in range(n):
        decoded = [[_decode(pri[0, j], pri[1, j], loc[i, j, c], code, in_target)
                    for j in range(p)] for c in range(n_loc)]
        indices = {}
        for c in range(num_classes):
            if c == background:
                continue
            boxes = decoded[0 if share_location else c]
            indices[c] = _nms(boxes, conf[i, :, c], conf_thr, nms_thr, eta, top_k)
        total = sum(len(v) for v in indices.values())
        if keep_top_k > -1 and total > keep_top_k:
            pairs = [(conf[i, j, c], c, j) for c, js in indices.items() for j in js]
            pairs.sort(key=lambda t: -t[0])
            indices = {}
            for _, c, j in pairs[:keep_top_k]:
                indices.setdefault(c, []).append(j)
        for c in sorted(indices):
            for j in indices[c]:
                box = decoded[0 if share_location else c][j]
                rows.append([i, c, conf[i, j, c], *box])
    if not rows:
        out = np.full((n, 7), -1.0)
        out[:, 0] = np.arange(n)
        return out[None, None]
    return np.asarray(rows)[None, None]
