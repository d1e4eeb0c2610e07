"""A training recipe in Caffe's terms, for the network repurposers.

Three generic pieces, filled from a ``solver.prototxt`` and a ``train_val.prototxt`` by
:func:`repurpose.caffe.read_recipe` (or written by hand):

- ``lr_mults``: per layer, one ``(lr_mult, decay_mult)`` pair per parameter (weight, bias,
  ...), Caffe's ``param { lr_mult decay_mult }``. A parameter trains at ``lr * lr_mult``
  with weight decay ``weight_decay * decay_mult``; ``lr_mult`` 0 freezes it, and a layer
  whose every multiplier is 0 is frozen like ``ModelHandler.freeze`` (BatchNorm kept in
  eval mode).
- a schedule spec: ``{"lr_policy": "step", "gamma": 0.1, "stepsize": 100}`` and the other
  Caffe policies, a multiplier of every group's rate per optimizer step (iteration).
- :class:`CaffeSGD`: Caffe's SGD, whose momentum buffer accumulates ``lr * grad``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from repurpose.repurposers._freezing import freeze_modules

__all__ = ["CaffeSGD", "BlobMult", "check_lr_mults", "apply_lr_mults", "check_schedule_spec",
           "schedule_factor", "HEAD"]

HEAD = "head"
# the schedule spec's fields besides lr_policy (those of CaffeSolver's schedule)
_SPEC_FIELDS = {"gamma": float, "power": float, "stepsize": int, "stepvalue": tuple,
                "max_iter": int}

Pairs = tuple[tuple[float, float], ...]


class BlobMult(NamedTuple):
    """The multipliers of one parameter, and the name of its optimizer group."""

    lr_mult: float
    decay_mult: float
    name: str


# ----- the optimizer -------------------------------------------------------------------
class CaffeSGD(torch.optim.Optimizer):
    """SGD with momentum exactly as Caffe's ``SGDSolver`` (or ``NesterovSolver``) updates.

    Per parameter, with ``g`` the gradient plus ``weight_decay * w`` (Caffe's
    ``Regularize``): ``v = momentum * v + lr * g`` and ``w -= v``. PyTorch's SGD keeps
    ``v = momentum * v + g`` and steps ``w -= lr * v``; the two agree while ``lr`` is
    constant, but after a schedule drops the rate Caffe's buffer still carries the steps
    taken at the old rate, while PyTorch's rescales them to the new one. With ``nesterov``:
    ``w -= (1 + momentum) * v_new - momentum * v_old`` (Caffe's ``NesterovSolver``).

    Examples
    --------
    >>> w = torch.nn.Parameter(torch.ones(2))
    >>> opt = CaffeSGD([w], lr=0.1, momentum=0.9)
    >>> w.grad = torch.ones(2); opt.step()
    >>> w.grad = torch.ones(2); opt.param_groups[0]["lr"] = 0.01; opt.step()
    >>> [round(x, 6) for x in w.tolist()]  # v = 0.1, then 0.9 * 0.1 + 0.01 = 0.1
    [0.8, 0.8]
    """

    def __init__(self, params: Iterable[Any], lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False) -> None:
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                    "nesterov": nesterov}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, m, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.add(p, alpha=wd) if wd else p.grad
                state = self.state[p]
                v_old = state.get("momentum_buffer")
                if v_old is None:
                    v_old = torch.zeros_like(p)
                v = v_old.mul(m).add_(g, alpha=lr)
                state["momentum_buffer"] = v
                if group["nesterov"]:
                    p.sub_(v.mul(1 + m).sub_(v_old, alpha=m))
                else:
                    p.sub_(v)
        return loss


# ----- the schedule --------------------------------------------------------------------
def check_schedule_spec(spec: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming what is wrong in a Caffe schedule spec."""
    # imported here: the Caffe reader (protobuf) loads only when a recipe is used
    from repurpose.caffe._solver import LR_POLICIES

    policy = spec.get("lr_policy")
    if policy not in LR_POLICIES:
        raise ValueError(f"schedule={dict(spec)!r}: lr_policy must be one of "
                         f"{', '.join(LR_POLICIES)}, got {policy!r}")
    unknown = sorted(set(spec) - {"lr_policy", *_SPEC_FIELDS})
    if unknown:
        raise ValueError(f"schedule={dict(spec)!r}: unknown field(s) {unknown}; a schedule "
                         f"spec has lr_policy and {', '.join(_SPEC_FIELDS)}")
    missing = [f for f in LR_POLICIES[policy] if f not in spec]
    if missing:
        raise ValueError(f"schedule={dict(spec)!r}: lr_policy {policy!r} needs "
                         f"{', '.join(missing)}")
    try:
        solver = _solver(spec)
    except (TypeError, ValueError):
        raise ValueError(f"schedule={dict(spec)!r}: gamma and power must be numbers, "
                         "stepsize and max_iter integers, stepvalue a list of integers"
                         ) from None
    for name in ("stepsize", "max_iter"):
        if name in LR_POLICIES[policy] and policy != "sigmoid" and getattr(solver, name) <= 0:
            raise ValueError(f"schedule={dict(spec)!r}: {name} must be positive for "
                             f"lr_policy {policy!r}, got {spec[name]!r}")


def schedule_factor(spec: Mapping[str, Any], step: int) -> float:
    """The multiplier of every group's rate at optimizer step ``step`` (0 for the first).

    Caffe's ``GetLearningRate`` divided by ``base_lr``; ``poly`` stays at 0 past its
    ``max_iter``.
    """
    solver = _solver(spec)
    if solver.lr_policy == "poly":
        step = min(step, solver.max_iter)
    return solver.learning_rate(step)


def _solver(spec: Mapping[str, Any]) -> Any:
    """The spec as a ``CaffeSolver`` with ``base_lr`` 1 (its rate is then the factor)."""
    from repurpose.caffe._solver import CaffeSolver

    values = {k: kind(spec[k]) for k, kind in _SPEC_FIELDS.items()
              if k in spec and k != "stepvalue"}
    steps = spec.get("stepvalue", ())
    steps = tuple(int(s) for s in (steps if isinstance(steps, list | tuple) else [steps]))
    return CaffeSolver(base_lr=1.0, lr_policy=str(spec["lr_policy"]), stepvalue=steps,
                       **values)


# ----- per-layer multipliers -----------------------------------------------------------
def check_lr_mults(lr_mults: Mapping[str, Any]) -> dict[str, Pairs]:
    """``{layer: ((lr_mult, decay_mult), ...)}`` from a mapping whose values are such pairs
    or a single number (the ``lr_mult`` of every parameter, ``decay_mult`` 1)."""
    if not isinstance(lr_mults, Mapping):
        raise ValueError(f"lr_mults={lr_mults!r}; expected a mapping {{layer: [(lr_mult, "
                         "decay_mult), ...]}} (see repurpose.caffe.read_recipe)")
    return {str(name): _pairs(name, value) for name, value in lr_mults.items()}


def _pairs(name: str, value: Any) -> Pairs:
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            pairs: Pairs = ((float(value), 1.0),)
        else:
            pairs = tuple((float(lr), float(decay)) for lr, decay in value)
    except (TypeError, ValueError):
        raise ValueError(f"lr_mults[{name!r}]={value!r}; expected a number or a list of "
                         "(lr_mult, decay_mult) pairs, one per parameter (weight, bias)"
                         ) from None
    for lr, decay in pairs:
        if not (lr >= 0 and decay >= 0):
            raise ValueError(f"lr_mults[{name!r}]={value!r}: lr_mult and decay_mult must be "
                             ">= 0 (lr_mult 0 freezes the parameter)")
    return pairs


def apply_lr_mults(lr_mults: Mapping[str, Any], layers: Sequence[tuple[str, nn.Module]],
                   source_names: Sequence[str]) -> dict[int, BlobMult]:
    """Freeze what ``lr_mults`` zeroes and return the multipliers of the trained parameters.

    Parameters
    ----------
    lr_mults : mapping
        See :func:`check_lr_mults`. Pairs apply to the parameters of each module of a
        layer in order (weight, bias); missing ones are (1, 1) as in Caffe, extra ones
        (blobs that are buffers here, such as a Caffe BatchNorm's statistics) are ignored.
    layers : sequence of (name, module)
        The trained network's layers, the new head as ``"head"``.
    source_names : sequence of str
        Every layer of the source network: those cut away by the repurposer are skipped.

    Returns
    -------
    dict
        ``id(parameter) -> BlobMult`` for each trainable parameter of a listed layer.
    """
    mults = check_lr_mults(lr_mults)
    modules = dict(layers)
    unknown = [n for n in mults if n not in modules and n not in set(source_names)]
    if unknown:
        raise ValueError(
            f"lr_mults names layer(s) {unknown} that the network does not have; valid: the "
            f"layers of ModelHandler.layer_names, and {HEAD!r} for the new classifier "
            "(rp.caffe.read_recipe(..., head=<train_val layer>) maps a layer to it)")
    found: dict[int, BlobMult] = {}
    for name, pairs in mults.items():
        if name not in modules:
            continue  # cut away with the top of the source network
        blobs = _blobs(modules[name], pairs)
        if blobs and all(lr == 0 for _, _, lr, _ in blobs):
            freeze_modules([modules[name]])
            continue
        for pname, p, lr, decay in blobs:
            if lr == 0:
                p.requires_grad_(False)
            elif p.requires_grad:
                found[id(p)] = BlobMult(lr, decay, f"{name}/{pname}")
    return found


def _blobs(module: nn.Module, pairs: Pairs) -> list[tuple[str, nn.Parameter, float, float]]:
    """``(name, parameter, lr_mult, decay_mult)``: the pairs apply to the parameters of each
    submodule in order (a Caffe layer is one module; a head with a hidden layer has two
    Linear layers, each with weight and bias)."""
    out = []
    for prefix, sub in module.named_modules():
        own = list(sub.named_parameters(recurse=False))
        full = pairs + ((1.0, 1.0),) * max(0, len(own) - len(pairs))
        out += [(f"{prefix}.{n}" if prefix else n, p, lr, decay)
                for (n, p), (lr, decay) in zip(own, full, strict=False)]
    return out
