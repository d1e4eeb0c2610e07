"""The training recipe that comes with a Caffe model: ``solver.prototxt`` and the per-layer
``param { lr_mult decay_mult }`` of ``train_val.prototxt``, as plain data."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repurpose._exceptions import ModelFormatError
from repurpose.caffe import _generic, _parse

__all__ = ["CaffeSolver", "read_solver", "read_lr_mults", "read_recipe", "LR_POLICIES"]

# policy -> the solver fields it needs (Caffe's SGDSolver::GetLearningRate)
LR_POLICIES: dict[str, tuple[str, ...]] = {
    "fixed": (), "step": ("gamma", "stepsize"), "exp": ("gamma",), "inv": ("gamma", "power"),
    "multistep": ("gamma", "stepvalue"), "poly": ("power", "max_iter"),
    "sigmoid": ("gamma", "stepsize"),
}
_SOLVER_TYPES = {0: "SGD", 1: "Nesterov", 2: "AdaGrad", 3: "RMSProp", 4: "AdaDelta", 5: "Adam"}


@dataclass(frozen=True)
class CaffeSolver:
    """A ``solver.prototxt``: learning-rate schedule and optimiser settings.

    Attributes
    ----------
    base_lr : float
        The base learning rate.
    lr_policy : str
        One of :data:`LR_POLICIES` (``"fixed"``, ``"step"``, ``"multistep"``, ``"poly"``,
        ``"inv"``, ``"exp"``, ``"sigmoid"``).
    gamma, power : float
        Schedule parameters (0 when absent).
    stepsize : int
        For ``step`` and ``sigmoid``.
    stepvalue : tuple of int
        For ``multistep``.
    max_iter : int
        Iterations of the run (and ``poly``'s horizon).
    momentum, weight_decay : float
        SGD momentum and the global L2 (or L1) weight decay.
    regularization_type : str
        ``"L2"`` (Caffe's default) or ``"L1"``.
    type : str
        Solver type: ``"SGD"``, ``"Nesterov"``, ``"Adam"``, ... (from ``type`` or the old
        ``solver_type`` enum).
    iter_size : int
        Batches accumulated per iteration.
    net : str or None
        The ``net``/``train_net`` path as written.
    other : dict
        Every other field, as written (``test_iter``, ``snapshot``, ``momentum2``, ...).
    """

    base_lr: float
    lr_policy: str = "fixed"
    gamma: float = 0.0
    power: float = 0.0
    stepsize: int = 0
    stepvalue: tuple[int, ...] = ()
    max_iter: int = 0
    momentum: float = 0.0
    weight_decay: float = 0.0
    regularization_type: str = "L2"
    type: str = "SGD"
    iter_size: int = 1
    net: str | None = None
    other: dict[str, Any] = field(default_factory=dict)

    def learning_rate(self, iteration: int) -> float:
        """Caffe's learning rate at ``iteration`` (``SGDSolver::GetLearningRate``).

        Examples
        --------
        >>> s = CaffeSolver(base_lr=0.01, lr_policy="step", gamma=0.1, stepsize=100)
        >>> s.learning_rate(99), round(s.learning_rate(100), 6)
        (0.01, 0.001)
        """
        it, lr = int(iteration), self.base_lr
        policy = self.lr_policy
        if policy == "fixed":
            return lr
        if policy == "step":
            return lr * self.gamma ** (it // self.stepsize)
        if policy == "exp":
            return lr * self.gamma ** it
        if policy == "inv":
            return lr * (1.0 + self.gamma * it) ** (-self.power)
        if policy == "multistep":
            return lr * self.gamma ** sum(1 for t in self._multistep_times() if it >= t)
        if policy == "poly":
            if not 0 <= it <= self.max_iter:
                raise ValueError(f"iteration {it} is outside the poly schedule's 0..max_iter "
                                 f"({self.max_iter})")
            return lr * (1.0 - it / self.max_iter) ** self.power
        return lr / (1.0 + math.exp(-self.gamma * (it - self.stepsize)))  # sigmoid

    def schedule(self) -> dict[str, Any]:
        """The ``lr_policy`` and the fields it uses, as plain data: the ``schedule`` a
        network repurposer takes (a multiplier of its ``lr`` per optimizer step).

        Examples
        --------
        >>> CaffeSolver(base_lr=0.01, lr_policy="multistep", gamma=0.1,
        ...             stepvalue=(100, 300)).schedule()
        {'lr_policy': 'multistep', 'gamma': 0.1, 'stepvalue': [100, 300]}
        """
        spec: dict[str, Any] = {"lr_policy": self.lr_policy}
        for name in LR_POLICIES[self.lr_policy]:
            value = getattr(self, name)
            spec[name] = list(value) if isinstance(value, tuple) else value
        return spec

    def _multistep_times(self) -> list[int]:
        return _advance_times(self.stepvalue)


def _advance_times(stepvalue: tuple[int, ...]) -> list[int]:
    """When Caffe's multistep counter advances: at most one step per iteration, at the first
    iteration past the next step value (so repeated values take one iteration each)."""
    times: list[int] = []
    for v in stepvalue:
        times.append(max(v, times[-1] + 1 if times else 0))
    return times


def _number(values: dict[str, Any], name: str, kind: type, path: str) -> Any:
    value = values.get(name)
    if isinstance(value, list):
        raise ModelFormatError(f"{path}: {name} is given {len(value)} times")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ModelFormatError(f"{path}: {name}={value!r} is not a {kind.__name__}") from None


def read_solver(path: str | Path) -> CaffeSolver:
    """Read a ``solver.prototxt`` into a :class:`CaffeSolver`.

    Raises
    ------
    ModelFormatError
        Unreadable file, unknown ``lr_policy``, or a field the policy needs is missing.
    """
    text = _parse._read_bytes(path, "solver").decode("utf-8", errors="replace")
    where = str(path)
    fields = _generic.parse_message(text, where)
    policy = str(fields.pop("lr_policy", "fixed"))
    if policy not in LR_POLICIES:
        raise ModelFormatError(f"{where}: lr_policy {policy!r} is not one of "
                               f"{', '.join(LR_POLICIES)}")
    missing = [f for f in LR_POLICIES[policy] if f not in fields]
    if "base_lr" not in fields or missing:
        raise ModelFormatError(f"{where}: lr_policy {policy!r} needs "
                               f"{', '.join(['base_lr', *missing])}")
    steps = fields.pop("stepvalue", [])
    steps = steps if isinstance(steps, list) else [steps]
    if any(b < a for a, b in zip(steps, steps[1:])):
        raise ModelFormatError(f"{where}: stepvalue {steps} must increase")
    kinds = {"base_lr": float, "gamma": float, "power": float, "stepsize": int,
             "max_iter": int, "momentum": float, "weight_decay": float, "iter_size": int}
    values = {k: _number(fields, k, t, where) for k, t in kinds.items() if k in fields}
    for k in kinds:
        fields.pop(k, None)
    if policy == "step" and values["stepsize"] <= 0:
        raise ModelFormatError(f"{where}: stepsize must be positive for lr_policy 'step'")
    if policy == "poly" and values["max_iter"] <= 0:
        raise ModelFormatError(f"{where}: max_iter must be positive for lr_policy 'poly'")
    solver_type = fields.pop("type", None)
    old_type = fields.pop("solver_type", None)
    if solver_type is None:
        solver_type = _SOLVER_TYPES.get(old_type, old_type) if old_type is not None else "SGD"
    net = fields.pop("net", None) or fields.pop("train_net", None)
    return CaffeSolver(lr_policy=policy, stepvalue=tuple(int(s) for s in steps),
                       regularization_type=str(fields.pop("regularization_type", "L2")),
                       type=str(solver_type), net=None if net is None else str(net),
                       other=fields, **values)


def read_lr_mults(prototxt: str | Path,
                  phase: str = "TRAIN") -> dict[str, tuple[tuple[float, float], ...]]:
    """Per-layer learning-rate and weight-decay multipliers of a (train_val) prototxt.

    Returns
    -------
    dict
        ``{layer: ((lr_mult, decay_mult), ...)}``, one pair per parameter blob in order
        (weight, bias, ...), for the layers that declare ``param`` (or V1 ``blobs_lr`` /
        ``weight_decay``); other layers use (1, 1). ``lr_mult`` 0 means frozen.

    Examples
    --------
    The multipliers of CaffeNet's fine-tuning recipe are typically ``{"conv1": ((1.0, 1.0),
    (2.0, 0.0)), ...}``: biases learn twice as fast and are not decayed.
    """
    return _spec_mults(_read_train_val(prototxt, phase))


def _read_train_val(prototxt: str | Path, phase: str = "TRAIN") -> _parse.NetSpec:
    """The net, quietly: data layers' fields the importer's schema lacks (image_data_param,
    transform_param, ...) do not matter for the recipe."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*fields this importer's schema does not know")
        return _parse.read_prototxt(prototxt, phase=phase)


def _spec_mults(spec: _parse.NetSpec) -> dict[str, tuple[tuple[float, float], ...]]:
    return {layer.name: tuple((float(p.lr_mult), float(p.decay_mult)) for p in layer.param)
            for layer in spec.layers if layer.param}


_RECIPE_OPTIMIZERS = {"SGD": "caffe_sgd", "Nesterov": "caffe_nesterov"}


def read_recipe(solver: str | Path | CaffeSolver,
                train_val: str | Path | Mapping[str, Any] | None = None, *,
                head: str | None = None) -> dict[str, Any]:
    """The settings of a fine-tuning repurposer that follow a Caffe training recipe.

    Parameters
    ----------
    solver : str, Path or CaffeSolver
        The ``solver.prototxt`` (or what :func:`read_solver` read from it).
    train_val : str, Path or mapping, optional
        The ``train_val.prototxt`` whose ``param { lr_mult decay_mult }`` become
        ``lr_mults`` (or such a mapping, as :func:`read_lr_mults` returns). Its TRAIN data
        layer's ``batch_size`` (times the solver's ``iter_size``) becomes ``batch_size``.
    head : str, optional
        The train_val layer that is the new classifier (the renamed last layer of a Caffe
        fine-tuning recipe, with its ``lr_mult: 10``); its multipliers go to the
        repurposer's new head.

    Returns
    -------
    dict
        Keyword arguments for ``FineTuneRepurposer`` or ``RandomFreezeRepurposer``, plain
        data that ``get_params``, ``clone`` and ``save`` keep: ``optimizer`` (Caffe's SGD
        update), ``lr`` (base_lr), ``momentum``, ``weight_decay``, ``schedule`` (the
        lr_policy, per iteration), ``max_steps`` (max_iter, which replaces ``max_epochs``),
        ``body_lr_mult=1`` (Caffe's default lr_mult), ``patience=None`` and
        ``validation_fraction=0`` (Caffe runs all iterations and keeps the last weights),
        ``lr_mults``, and ``batch_size`` and ``clip_grad_norm`` when the files set them.

    Raises
    ------
    ModelFormatError
        A solver type other than SGD or Nesterov, L1 regularisation, ``max_iter`` not
        positive, ``iter_size`` above 1 without a batch size, or ``head`` not in train_val.

    Examples
    --------
    >>> import repurpose as rp
    >>> rp.caffe.read_recipe(rp.caffe.CaffeSolver(
    ...     base_lr=0.001, lr_policy="step", gamma=0.1, stepsize=200, max_iter=500,
    ...     momentum=0.9, weight_decay=0.0005), {"fc8_new": ((10, 1), (20, 0))},
    ...     head="fc8_new")  # doctest: +NORMALIZE_WHITESPACE
    {'optimizer': 'caffe_sgd', 'lr': 0.001, 'momentum': 0.9, 'weight_decay': 0.0005,
     'schedule': {'lr_policy': 'step', 'gamma': 0.1, 'stepsize': 200}, 'max_steps': 500,
     'body_lr_mult': 1.0, 'layer_decay': None, 'patience': None, 'validation_fraction': 0.0,
     'lr_mults': {'head': [[10.0, 1.0], [20.0, 0.0]]}}
    """
    s = solver if isinstance(solver, CaffeSolver) else read_solver(solver)
    where = "the solver" if isinstance(solver, CaffeSolver) else str(solver)
    if s.type not in _RECIPE_OPTIMIZERS:
        raise ModelFormatError(f"{where}: solver type {s.type!r} is not supported by a recipe "
                               f"(only {', '.join(_RECIPE_OPTIMIZERS)}); set optimizer= and lr= "
                               "on the repurposer yourself")
    if s.regularization_type != "L2":
        raise ModelFormatError(f"{where}: regularization_type {s.regularization_type!r} is not "
                               "supported (only L2 weight decay)")
    if s.max_iter <= 0:
        raise ModelFormatError(f"{where}: max_iter={s.max_iter}; it must be positive (the "
                               "number of iterations to train)")
    recipe: dict[str, Any] = {
        "optimizer": _RECIPE_OPTIMIZERS[s.type], "lr": s.base_lr, "momentum": s.momentum,
        "weight_decay": s.weight_decay, "schedule": s.schedule(), "max_steps": s.max_iter,
        "body_lr_mult": 1.0, "layer_decay": None, "patience": None, "validation_fraction": 0.0,
    }
    clip = float(s.other.get("clip_gradients", -1))
    if clip > 0:
        recipe["clip_grad_norm"] = clip
    recipe.update(_train_val_settings(train_val, head))
    if "batch_size" in recipe:
        recipe["batch_size"] *= s.iter_size
    elif s.iter_size > 1:
        raise ModelFormatError(f"{where}: iter_size={s.iter_size} accumulates batches, but the "
                               "batch size is unknown; give the train_val.prototxt with its "
                               "data layer, or set batch_size=<batch * iter_size> yourself")
    return recipe


def _train_val_settings(train_val: str | Path | Mapping[str, Any] | None,
                        head: str | None) -> dict[str, Any]:
    """``lr_mults`` and the TRAIN data layer's ``batch_size`` (when set) of a train_val."""
    if train_val is None:
        return {}
    if isinstance(train_val, Mapping):
        return {"lr_mults": _recipe_mults(train_val, head)}
    spec = _read_train_val(train_val)
    settings: dict[str, Any] = {"lr_mults": _recipe_mults(_spec_mults(spec), head)}
    batch = _batch_size(spec)
    if batch is not None:
        settings["batch_size"] = batch
    return settings


def _recipe_mults(mults: Mapping[str, Any], head: str | None) -> dict[str, list[list[float]]]:
    out = {str(k): [[float(lr), float(decay)] for lr, decay in v] for k, v in mults.items()}
    if head is not None:
        if head not in out:
            raise ModelFormatError(f"head={head!r} is not a layer with param {{ lr_mult }} in "
                                   f"the train_val; layers: {', '.join(out) or 'none'}")
        out["head"] = out.pop(head)
    return out


def _batch_size(spec: _parse.NetSpec) -> int | None:
    """The ``batch_size`` of the TRAIN net's data layer, if one sets it."""
    for params in spec.params:
        for value in params.values():
            if isinstance(value, dict) and "batch_size" in value:
                return int(value["batch_size"])
    return None
