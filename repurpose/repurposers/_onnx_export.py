"""Export fitted repurposers to ONNX end to end: image tensor in, class probabilities out.

For meta-model repurposers the feature layers, their pooling, the per-layer standardisation
and the concatenation are folded into the graph in front of the classifier. Network
repurposers export their trained module. A head is found through a registry of builders
(``register_head``), so a user's repurposer class can add its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from repurpose._exceptions import RepurposeError
from repurpose.model_handler._onnx_export import (
    DEFAULT_OPSET,
    Layers,
    export_module,
    input_shape_or_fail,
)
from repurpose.repurposers._gated_experts import expert_affine, mix

__all__ = ["register_head", "repurposer_module", "export_repurposer"]

HeadBuilder = Callable[[Any], nn.Module]
_HEADS: list[tuple[type, HeadBuilder]] = []  # registered by users
_BUILTIN: list[tuple[type, HeadBuilder]] = []


def register_head(cls: type) -> Callable[[HeadBuilder], HeadBuilder]:
    """Register how a fitted repurposer class becomes a torch module (image -> probabilities).

    The builder gets the fitted repurposer and returns the module; subclasses match too.
    """

    def decorator(builder: HeadBuilder) -> HeadBuilder:
        _HEADS.append((cls, builder))
        return builder

    return decorator


class _Standardise(nn.Module):
    """Per-layer ``(f - mean) / scale``, then concatenation or the mean over layers."""

    def __init__(self, rep: Any) -> None:
        super().__init__()
        self.average = rep.combine == "average"
        for i, k in enumerate(rep.feature_layers_):
            self.register_buffer(f"mean{i}", _f32(rep.feature_mean_[k]))
            self.register_buffer(f"scale{i}", _f32(rep.feature_scale_[k]))
        self.n = len(rep.feature_layers_)

    def parts(self, *feats: torch.Tensor) -> list[torch.Tensor]:
        """Each layer standardised, in layer order."""
        return [(f - getattr(self, f"mean{i}")) / getattr(self, f"scale{i}")
                for i, f in enumerate(feats)]

    def forward(self, *feats: torch.Tensor) -> torch.Tensor:
        parts = self.parts(*feats)
        if self.average:
            return torch.stack(parts).mean(0)
        return parts[0] if len(parts) == 1 else torch.cat(parts, 1)


class _ExpertsMix(nn.Module):
    """A :class:`GatedExpertsRepurposer`'s head: per-layer standardised logits, mixed by
    the confidence gate, then softmax."""

    gate_bias: torch.Tensor
    gate_slope: torch.Tensor
    log_temperature: torch.Tensor

    def __init__(self, rep: Any) -> None:
        super().__init__()
        self.standardise = _Standardise(rep)
        for i, expert in enumerate(rep.experts_):
            weight, bias = expert_affine(expert["coef"], expert["intercept"])
            self.register_buffer(f"weight{i}", _f32(weight))
            self.register_buffer(f"bias{i}", _f32(bias))
        for name in ("gate_bias", "gate_slope", "log_temperature"):
            self.register_buffer(name, _f32(rep.gate_[name]))

    def forward(self, *feats: torch.Tensor) -> torch.Tensor:
        logits = torch.stack([x @ getattr(self, f"weight{i}").T + getattr(self, f"bias{i}")
                              for i, x in enumerate(self.standardise.parts(*feats))])
        out, _ = mix(logits, self.gate_bias, self.gate_slope, self.log_temperature)
        return torch.softmax(out, 1)


class _MetaModel(nn.Module):
    """Image -> pooled features of the feature layers -> ``combine`` -> classifier."""

    def __init__(self, rep: Any, classifier: nn.Module, standardise: bool = True) -> None:
        super().__init__()
        if rep.handler is None:
            raise RepurposeError(f"{type(rep).__name__} has no handler, so there is no "
                                 "network to export; set rep.handler to its ModelHandler")
        self.features = Layers(rep.handler, rep.feature_layers_, rep.pooling)
        self.combine = _Standardise(rep) if standardise else None
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.features(x)
        if self.combine is None:
            return self.classifier(*feats)
        return self.classifier(self.combine(*feats))


def _f32(a: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, np.float32))


class _Affine(nn.Module):
    """``x @ weight.T + bias`` followed by softmax (or by a sigmoid for one column)."""

    weight: torch.Tensor
    bias: torch.Tensor

    def __init__(self, weight: np.ndarray, bias: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("weight", _f32(weight))
        self.register_buffer("bias", _f32(bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x @ self.weight.T + self.bias
        if z.shape[1] == 1:
            p = torch.sigmoid(z)
            return torch.cat([1 - p, p], 1)
        return torch.softmax(z, 1)


class _PlattSVM(nn.Module):
    """Linear one-vs-rest SVM decision values, Platt-calibrated and normalised."""

    weight: torch.Tensor
    bias: torch.Tensor
    a: torch.Tensor
    b: torch.Tensor

    def __init__(self, weight: np.ndarray, bias: np.ndarray, ab: np.ndarray,
                 columns: Sequence[int], binary: bool) -> None:
        super().__init__()
        self.register_buffer("weight", _f32(weight))
        self.register_buffer("bias", _f32(bias))
        self.register_buffer("a", _f32(ab[:, 0]))
        self.register_buffer("b", _f32(ab[:, 1]))
        self.columns = list(columns)
        self.binary = binary

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dec = x @ self.weight.T + self.bias
        p = torch.sigmoid(-(self.a * dec[:, self.columns] + self.b))
        if self.binary:
            return torch.cat([1 - p, p], 1)
        total = p.sum(1, keepdim=True)
        uniform = torch.full_like(p, 1.0 / p.shape[1])
        return torch.where(total > 0, p / torch.where(total > 0, total, torch.ones_like(total)),
                           uniform)


class _Softmax(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, *x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(*x), 1)


def _register_builtin_heads() -> None:
    from repurpose.repurposers import (
        BNNRepurposer,
        GatedExpertsRepurposer,
        GatedRepurposer,
        GPRepurposer,
        LogisticRegressionRepurposer,
        MLPRepurposer,
        SVMRepurposer,
    )
    from repurpose.repurposers._network import NetworkRepurposer

    if _BUILTIN:
        return

    def builtin(cls: type) -> Callable[[HeadBuilder], HeadBuilder]:
        def decorator(builder: HeadBuilder) -> HeadBuilder:
            _BUILTIN.append((cls, builder))
            return builder

        return decorator

    @builtin(NetworkRepurposer)
    def _network(rep: Any) -> nn.Module:
        return _Softmax(rep.model_)

    @builtin(LogisticRegressionRepurposer)
    def _lr(rep: Any) -> nn.Module:
        model = rep.model_
        return _MetaModel(rep, _Affine(model.coef_, model.intercept_))

    @builtin(MLPRepurposer)
    def _mlp(rep: Any) -> nn.Module:
        return _MetaModel(rep, _Softmax(rep.module_))

    @builtin(SVMRepurposer)
    def _svm(rep: Any) -> nn.Module:
        if rep.kernel != "linear" or any("ab" not in c for c in rep.calibrators_):
            raise RepurposeError(
                f"SVMRepurposer(kernel={rep.kernel!r}, calibration={rep.calibration!r}) does "
                "not export to ONNX; only kernel='linear' with calibration='sigmoid' does")
        weight = np.stack([sv.T @ coef for sv, coef in zip(rep.support_vectors_, rep.dual_coef_)])
        ab = np.stack([c["ab"] for c in rep.calibrators_])
        binary = rep.n_classes_ == 2
        columns = [min(1, weight.shape[0] - 1)] if binary else list(range(rep.n_classes_))
        return _MetaModel(rep, _PlattSVM(weight, rep.intercept_, ab, columns, binary))

    @builtin(GatedRepurposer)
    def _gated(rep: Any) -> nn.Module:
        if rep.end_to_end:
            return _Softmax(rep.model_)
        return _MetaModel(rep, _Softmax(rep._gate_net()), standardise=False)

    @builtin(GatedExpertsRepurposer)
    def _experts(rep: Any) -> nn.Module:
        return _MetaModel(rep, _ExpertsMix(rep), standardise=False)

    def _no_export(rep: Any) -> nn.Module:
        raise RepurposeError(
            f"{type(rep).__name__} does not export to ONNX: its prediction averages over "
            "samples of a posterior (gpytorch / Bayesian layers), which an ONNX graph cannot "
            "reproduce to the same probabilities. Export its handler's feature layers with "
            "handler.export_onnx(path, layers=rep.feature_layers_) and keep the head in Python")

    builtin(GPRepurposer)(_no_export)
    builtin(BNNRepurposer)(_no_export)


def repurposer_module(rep: Any) -> nn.Module:
    """The torch module (image -> probabilities) of a fitted repurposer."""
    _register_builtin_heads()
    rep._check_fitted()
    for cls, builder in [*reversed(_HEADS), *reversed(_BUILTIN)]:  # subclasses come later
        if isinstance(rep, cls):
            return builder(rep)
    raise RepurposeError(f"{type(rep).__name__} has no ONNX export; register one with "
                         "repurpose.onnx.register_head")


def export_repurposer(rep: Any, path: str | os.PathLike[str],
                      input_shape: Sequence[int] | None = None,
                      opset: int = DEFAULT_OPSET) -> Path:
    """Write a fitted repurposer end to end (input -> ``probabilities``) to ONNX."""
    module = repurposer_module(rep)
    handler = getattr(rep, "handler", None)
    shape = input_shape or getattr(rep, "input_shape_", None) or getattr(
        handler, "input_shape", None)
    return export_module(module, path, input_shape_or_fail(shape, type(rep).__name__),
                         ("probabilities",), opset)
