"""Shared machinery of the repurposers that train a torch network (fine-tuning and friends).

:class:`NetworkRepurposer` holds the training hyperparameters common to every network
repurposer and does the work around the :class:`Trainer`: building the parameter groups
(head at ``lr``, body at ``lr * body_lr_mult`` with optional layer decay), the validation
split, early stopping, predicting, and saving the weights. A subclass only builds its
network: :meth:`NetworkRepurposer._build_body` and :meth:`NetworkRepurposer._build_head`.

Shared parameters are declared once (:data:`TRAINING_PARAMS`, with their docs). A subclass
lists its own parameters in ``_own_params`` (and changed defaults in ``_param_defaults``);
its ``__init__`` is generated with an explicit signature (what ``inspect.signature``,
scikit-learn's ``get_params`` and the CLI read) that stores every argument under its name,
and the ``%(parameters)s`` line of its docstring becomes the numpydoc list of all of them.

Data streams (:class:`TrainingMixin`): inputs are wrapped as a
:class:`~repurpose.repurposers._train_data.Source` and read batch by batch for training,
validation and prediction, so memory does not grow with the number of samples.
"""

from __future__ import annotations

import copy
import inspect
import os
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from repurpose._exceptions import RepurposeError
from repurpose.graph import GraphNet
from repurpose.repurposers import _ddp
from repurpose.repurposers._base import Repurposer, _check_finite_input
from repurpose.repurposers._freezing import frozen_norm_layers
from repurpose.repurposers._io import arrays_to_module_state, module_state_to_arrays
from repurpose.repurposers._param_groups import (
    NORM_TYPES,
    LayerParams,
    body_lr_scales,
    build_param_groups,
    layers_from_modules,
)
from repurpose.repurposers._recipe import HEAD, apply_lr_mults
from repurpose.repurposers._train_data import Source, Split, as_source, dataset_labels
from repurpose.repurposers._training import (
    Trainer,
    TrainSettings,
    predict_logits,
    split_validation,
)

__all__ = ["NetworkRepurposer", "TrainingMixin", "ClassifierNet", "Head", "Param",
           "layer_modules", "pool_features", "TRAIN_PARAMS", "TRAINING_PARAMS", "HEAD_PARAMS"]


@dataclass(frozen=True)
class Param:
    """One constructor parameter: name, default, type (annotation and numpydoc) and doc."""

    name: str
    default: Any
    annotation: Any
    type: str
    doc: str

    def with_default(self, default: Any) -> Param:
        return Param(self.name, default, self.annotation, self.type, self.doc)


HEAD_PARAMS = {p.name: p for p in (
    Param("n_hidden", None, int | None, "int, optional",
          "Width of one hidden ReLU layer in the new head; None for a linear head."),
    Param("dropout", 0.0, float, "float", "Dropout before the head's output layer."),
)}

TRAINING_PARAMS: tuple[Param, ...] = (
    Param("lr", 1e-3, float, "float", "Learning rate of the head."),
    Param("body_lr_mult", 0.1, float, "float",
          "The pretrained body's rate is ``lr * body_lr_mult`` (discriminative rates)."),
    Param("layer_decay", None, float | None, "float, optional",
          "Further multiply the rate by ``layer_decay`` per layer below the top of the body "
          "(timm's layer decay; fastai's ``slice(lo, hi)``)."),
    Param("optimizer", "adamw", str, '{"adamw", "sgd", "caffe_sgd", "caffe_nesterov"}',
          "AdamW, SGD with (Nesterov) ``momentum``, or Caffe's SGD (plain or Nesterov), whose "
          "momentum buffer accumulates ``lr * grad`` (see ``repurpose.caffe.read_recipe``)."),
    Param("momentum", 0.9, float, "float", "SGD momentum."),
    Param("weight_decay", 1e-4, float, "float",
          "Not applied to biases and normalisation parameters (unless ``lr_mults`` gives "
          "them a decay_mult), nor to the body under L2-SP."),
    Param("l2sp", 0.0, float, "float",
          "Strength ``alpha`` of L2-SP (Li et al. 2018): adds ``alpha/2 * ||w - w0||^2`` over "
          "the trainable pretrained weights, pulling them towards their start rather than "
          "to 0."),
    Param("schedule", "cosine", str | Mapping[str, Any] | None,
          '{"cosine", "onecycle", "constant"}, dict or None',
          "Learning-rate schedule, stepped per batch (optimizer step). A dict is a Caffe "
          '``lr_policy`` with its fields, counted in steps: ``{"lr_policy": "step", "gamma": '
          '0.1, "stepsize": 1000}``; also fixed, multistep (``stepvalue``), poly (``power``, '
          "``max_iter``), inv, exp, sigmoid."),
    Param("max_epochs", 20, int, "int", "Maximum number of passes over the training data."),
    Param("max_steps", None, int | None, "int, optional",
          "Train for this many optimizer steps (Caffe's ``max_iter``), the last epoch cut "
          "short; replaces ``max_epochs``, which is then ignored."),
    Param("lr_mults", None, Mapping[str, Any] | None, "dict, optional",
          "Caffe's per-layer ``param { lr_mult decay_mult }``: ``{layer: [(lr_mult, "
          "decay_mult), ...]}``, one pair per parameter (weight, bias) of each module in the "
          "layer, or a number (the lr_mult of all). A listed parameter trains at "
          "``lr * lr_mult`` (not ``body_lr_mult``) with weight decay "
          "``weight_decay * decay_mult``; lr_mult 0 "
          'freezes it, and a layer all 0 is frozen. ``"head"`` is the new classifier; '
          "layers cut away are ignored. Read from a train_val.prototxt by "
          "``repurpose.caffe.read_recipe``."),
    Param("batch_size", 32, int, "int",
          "Samples per batch (training and prediction). A final training batch of one "
          "sample is merged into the previous batch."),
    Param("clip_grad_norm", None, float | None, "float, optional",
          "Clip the global gradient norm."),
    Param("validation_fraction", 0.1, float, "float",
          "Stratified share of the training data held out for early stopping (ignored when "
          "``fit`` gets ``X_val``); 0 for none."),
    Param("patience", 5, int | None, "int, optional",
          "Stop after this many epochs without a better validation loss, and restore the "
          "best weights; None trains all ``max_epochs``."),
    Param("unfreeze_after", None, int | None, "int, optional",
          "Gradual unfreezing: train only the head for this many epochs, then the body too."),
    Param("augment", None, Callable[..., Any] | None, "callable, optional",
          "Applied to each training batch of inputs (a tensor on the device, read on the "
          "fly); returns a tensor. Per-sample random transforms can also live in your own "
          "``Dataset`` (they then run in the ``num_workers`` loader processes)."),
    Param("amp", False, bool, "bool", "Mixed precision (float16 on CUDA, bfloat16 on CPU)."),
    Param("device", None, Any, "str or torch.device, optional",
          "Default: the handler's device."),
    Param("checkpoint_dir", None, str | os.PathLike | None, "str or Path, optional",
          "Save the training state after every epoch; a later ``fit`` with the same "
          "directory and data resumes where it stopped and ends with the same weights."),
    Param("callbacks", None, Sequence[Callable[[int, dict[str, float]], Any]] | None,
          "sequence of callable, optional",
          "``f(epoch, logs)`` after each epoch (logs: loss, acc, val_loss, val_acc, lr)."),
    Param("random_state", None, int | None, "int, optional",
          "Seed of the head's initialisation, the shuffling and dropout."),
    Param("progress", True, bool, "bool", "Show a progress bar with loss and accuracy per epoch."),
    Param("num_workers", 0, int, "int",
          "Loader processes that read (and decode) the data while the network trains; 0 "
          "reads in the training process. Data is read batch by batch (pinned memory on "
          "CUDA), so memory does not grow with the number of samples."),
    Param("distributed", "auto", str | bool, '{"auto", True, False}',
          "Under ``torchrun`` (``\"auto\"``: when launched with more than one process) train "
          "with DistributedDataParallel: ``batch_size`` is per process, each epoch is shared "
          "out among the processes, gradients are averaged, only rank 0 shows progress and "
          "writes checkpoints. See docs/scaling.md. False: always one process."),
    Param("sync_batchnorm", False, bool, "bool",
          "Under torchrun, BatchNorm layers normalise with the statistics of the global "
          "batch (all processes) rather than of each process's part."),
)

# Constructor arguments that configure the training loop (shared by the network repurposers).
TRAIN_PARAMS = tuple(p.name for p in TRAINING_PARAMS if p.name not in (
    "body_lr_mult", "layer_decay", "validation_fraction", "device", "random_state", "lr_mults"))
# Not JSON-able (callables); saved as None, since predictions do not depend on them.
_RUNTIME_ONLY = ("augment", "callbacks")
_HANDLER = Param("handler", None, Any, "ModelHandler",
                 "The source network (never modified; training works on a copy).")


def _generated_init(params: Sequence[Param]) -> Callable[..., None]:
    """An ``__init__`` with an explicit signature that stores each argument by name."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    signature = inspect.Signature(
        [inspect.Parameter("self", kind)]
        + [inspect.Parameter(p.name, kind, default=p.default, annotation=p.annotation)
           for p in params],
        return_annotation=None,
    )

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        for name, value in list(bound.arguments.items())[1:]:
            setattr(self, name, value)

    __init__.__signature__ = signature  # type: ignore[attr-defined]
    return __init__


def _params_doc(params: Sequence[Param]) -> str:
    lines = []
    for p in params:
        lines.append(f"{p.name} : {p.type}")
        lines += textwrap.wrap(p.doc, 84, initial_indent="    ", subsequent_indent="    ")
    return textwrap.indent("\n".join(lines), "    ").lstrip()


def pool_features(x: torch.Tensor) -> torch.Tensor:
    """Average spatial axes away: ``(N, C, ...)`` -> ``(N, C)``; 2-D input is returned as is."""
    return x.flatten(2).mean(2) if x.ndim > 2 else x


def check_body_layout(module: nn.Module) -> None:
    """Refuse a body that ends at an NHWC value (see ``GraphNet.nhwc_values``): the head
    pools axes 2 and up, which for such a value are W and C, not H and W."""
    if not isinstance(module, GraphNet):
        return
    nhwc = sorted(module.nhwc_within(module.output_names))
    if nhwc:
        raise ValueError(
            f"the network is cut at {nhwc}, a value the imported model keeps in NHWC layout; "
            "a network repurposer's head pools axes 2 and 3, which are not H and W there. "
            "Cut at the NCHW value next to it (the layer after the model's transpose back), "
            "or use a meta-model repurposer, whose feature pooling knows the layout"
        )


def layer_modules(module: nn.Module, names: Sequence[str]) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` for each layer name that is a module (functional ops are skipped)."""
    if isinstance(module, GraphNet):
        known = set(module.layer_names)
        return [(n, module.layer(n)) for n in names if n in known]
    modules = dict(module.named_modules())
    return [(n, modules[n]) for n in names if n in modules]


class Head(nn.Module):
    """New classifier: pool spatial axes, optional hidden layer, linear output layer."""

    def __init__(self, n_in: int, n_classes: int, n_hidden: int | None = None,
                 dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if n_hidden:
            layers += [nn.Linear(n_in, int(n_hidden)), nn.ReLU()]
            n_in = int(n_hidden)
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(n_in, n_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(pool_features(x).flatten(1))


class ClassifierNet(nn.Module):
    """``head(*body(x))``: a (pretrained) body and a new head."""

    def __init__(self, body: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.body(x)
        return self.head(*feats) if isinstance(feats, tuple | list) else self.head(feats)


@dataclass
class Body:
    """A network body and its layers in input-to-output order.

    ``fresh`` names layers that are newly initialised (trained like the head: full rate,
    no L2-SP anchor).
    """

    module: nn.Module
    layers: list[tuple[str, nn.Module]]
    fresh: frozenset[str] = frozenset()


class TrainingMixin:
    """Streaming data and the training run, for repurposers that train torch modules.

    Expects the attributes ``handler``, ``batch_size``, ``device``, ``random_state``,
    ``validation_fraction``, ``amp``, ``num_workers`` (missing ones take the defaults of
    :class:`TrainSettings`) and the label encoding of :class:`Repurposer`.
    """

    handler: Any
    classes_: np.ndarray
    history_: dict[str, list[float]]
    _val_data: tuple[Any, Any]

    def _device(self) -> torch.device:
        device = getattr(self, "device", None)
        if device is not None:
            return torch.device(device)
        return torch.device(getattr(self.handler, "device", None) or "cpu")

    def _seed(self) -> int:
        seed = getattr(self, "random_state", None)
        if seed is None:
            seed = int(np.random.default_rng().integers(2**31 - 1))
        # under torchrun every rank must split, shuffle and initialise alike
        device = self._device()
        world = _ddp.setup(getattr(self, "distributed", "auto"), device)
        return _ddp.agree(int(seed), world, device)

    def _workers(self) -> int:
        return int(getattr(self, "num_workers", 0) or 0)

    def _settings(self, seed: int) -> TrainSettings:
        values = {f.name: getattr(self, f.name) for f in fields(TrainSettings)
                  if f.name not in ("device", "seed") and hasattr(self, f.name)}
        values["callbacks"] = tuple(values.get("callbacks") or ())
        return TrainSettings(**values, device=self._device(), seed=seed)

    # ----- data ------------------------------------------------------------------------
    def _stream(self, X: Any, y: Any = None, *, labels: bool) -> tuple[Source, Any]:
        """Wrap ``X`` as a source (nothing is loaded); read labels if asked and not given."""
        _check_finite_input(X)
        source, dataset = as_source(X, preprocess=getattr(self.handler, "preprocess", None),
                                    batch_size=int(getattr(self, "batch_size", 64)))
        if len(source) == 0:
            raise ValueError("the data is empty; give at least one sample per class")
        if labels and y is None and dataset is not None:
            collate = getattr(X, "collate_fn", None)
            y = dataset_labels(dataset, num_workers=self._workers(), collate_fn=collate,
                               batch_size=int(getattr(self, "batch_size", 64)))
        if y is not None and len(y) != len(source):
            raise ValueError(f"X has {len(source)} samples but y has {len(y)} labels")
        return source, y

    def _split(self, source: Source, y: np.ndarray, seed: int) -> tuple[Split, Split | None]:
        """Training and validation parts (``fit``'s ``X_val`` or a stratified split)."""
        data = Split(source, torch.as_tensor(y, dtype=torch.long))
        X_val, y_val = getattr(self, "_val_data", (None, None))
        if X_val is not None:
            val_source, labels = self._stream(X_val, y_val, labels=True)
            codes = self._encode_known(labels)
            return data, Split(val_source, torch.as_tensor(codes, dtype=torch.long))
        fraction = float(getattr(self, "validation_fraction", 0.0))
        train_idx, val_idx = split_validation(y, fraction, seed)
        if val_idx is None:
            return data, None
        return data.subset(train_idx), data.subset(val_idx)

    def _encode_known(self, labels: Any) -> np.ndarray:
        if labels is None:
            raise ValueError("no labels for the validation data: pass y_val, or X_val that "
                             "yields (input, label) pairs")
        labels = np.asarray(labels).ravel()
        codes = np.searchsorted(self.classes_, labels)
        codes = np.clip(codes, 0, len(self.classes_) - 1)
        unknown = labels[self.classes_[codes] != labels]
        if len(unknown):
            raise ValueError(
                f"y_val has labels not seen in y: {sorted(set(unknown.tolist()))[:5]}; "
                f"known: {self.classes_.tolist()}"
            )
        return codes.astype(np.int64)

    def save(self, path: str | os.PathLike, include_handler: bool = True) -> Path:
        """Save (see :meth:`Repurposer.save`). Under torchrun only rank 0 writes, and every
        rank waits until it has: the ranks hold the same model, and two processes writing
        one directory would corrupt it."""
        world = _ddp.current()
        target = Path(path)
        if world.main:
            target = super().save(path, include_handler)  # type: ignore[misc]
        if world.active:
            torch.distributed.barrier()
        return target

    # ----- training and prediction -----------------------------------------------------
    def _train(self, model: nn.Module, groups: list[dict], source: Source, y: np.ndarray,
               seed: int, **kw: Any) -> Trainer:
        """Train ``model`` on the source (split for validation); set ``history_``."""
        trainer = Trainer(model, groups, self._settings(seed), **kw)
        train, val = self._split(source, y, seed)
        self.history_ = trainer.fit(train, val=val)
        return trainer

    def _proba(self, model: nn.Module, data: Source | tuple[torch.Tensor, ...]) -> np.ndarray:
        logits = predict_logits(model, data, int(getattr(self, "batch_size", 64)),
                                self._device(), bool(getattr(self, "amp", False)),
                                self._workers())
        return torch.softmax(logits.double(), 1).numpy()


class NetworkRepurposer(TrainingMixin, Repurposer):
    """Base of repurposers that train a body (from the handler) plus a new head.

    Subclasses declare ``_own_params`` (a tuple of :class:`Param`, their parameters before
    the shared :data:`TRAINING_PARAMS`) and ``_param_defaults`` (changed defaults); their
    ``__init__`` is generated. They implement :meth:`_build_body` and :meth:`_build_head`.
    """

    _own_params: ClassVar[tuple[Param, ...]] = ()
    _param_defaults: ClassVar[dict[str, Any]] = {}

    lr: float
    body_lr_mult: float
    layer_decay: float | None
    optimizer: str
    momentum: float
    weight_decay: float
    l2sp: float
    schedule: str | Mapping[str, Any] | None
    max_epochs: int
    max_steps: int | None
    lr_mults: Mapping[str, Any] | None
    batch_size: int
    clip_grad_norm: float | None
    validation_fraction: float
    patience: int | None
    unfreeze_after: int | None
    augment: Callable[..., Any] | None
    amp: bool
    device: Any
    checkpoint_dir: str | os.PathLike[str] | None
    callbacks: Sequence[Callable[[int, dict[str, float]], Any]] | None
    random_state: int | None
    progress: bool
    num_workers: int
    model_: ClassifierNet
    history_: dict[str, list[float]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_own_params" not in cls.__dict__ or "__init__" in cls.__dict__:
            return
        params = cls.all_params()
        cls.__init__ = _generated_init(params)  # type: ignore[method-assign]
        if cls.__doc__:
            cls.__doc__ = cls.__doc__.replace("%(parameters)s", _params_doc(params))

    @classmethod
    def all_params(cls) -> list[Param]:
        """Every constructor parameter, in signature order, with this class's defaults."""
        own = [p.name for p in cls._own_params]
        params = [_HANDLER, *cls._own_params,
                  *(p for p in TRAINING_PARAMS if p.name not in own)]
        return [p.with_default(cls._param_defaults[p.name]) if p.name in cls._param_defaults
                else p for p in params]

    # ----- hooks -------------------------------------------------------------------------
    def _build_body(self) -> Body:
        """Build the body from ``self.handler`` (a copy: never the handler's own module)."""
        raise NotImplementedError

    def _build_head(self, widths: list[int], n_classes: int) -> nn.Module:
        """Build the head for body outputs of the given (pooled) widths."""
        raise NotImplementedError

    # ----- fit / predict -----------------------------------------------------------------
    def fit(self, X: Any, y: Any = None, *, X_val: Any = None, y_val: Any = None
            ) -> NetworkRepurposer:
        """Train the network, streaming the data batch by batch.

        Parameters
        ----------
        X : ndarray, Tensor, Dataset, DataLoader or path
            Inputs (N, ...), data yielding ``(input, label)`` pairs, or an image folder
            (one subfolder per class; read with the handler's ``preprocess``).
        y : array-like of shape (N,), optional
            Labels of any sortable type; if None, taken from ``X``'s pairs (an image
            folder's labels come from its file list, without loading the images).
        X_val, y_val : optional
            A validation set for early stopping (then ``validation_fraction`` is ignored).

        Returns
        -------
        self
        """
        self._val_data = (X_val, y_val)
        try:
            super().fit(X, y)
        finally:
            del self._val_data
        return self

    def _prepare(self, X: Any, y: Any = None, *, labels: bool, fitting: bool = False
                 ) -> tuple[Any, Any]:
        return self._stream(X, y, labels=labels)

    def _build_model(self, sample: torch.Tensor | None, widths: list[int] | None,
                     seed: int) -> tuple[ClassifierNet, Body]:
        if self.handler is None:
            raise ValueError(f"{type(self).__name__} needs handler=ModelHandler(...)")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            body = self._build_body()
            check_body_layout(body.module)
            if widths is None:
                widths = _output_widths(body.module, sample)
            head = self._build_head(widths, self.n_classes_)
        self.head_widths_ = list(widths)
        return ClassifierNet(body.module, head), body

    def _param_layers(self, model: ClassifierNet, body: Body) -> list[LayerParams]:
        pretrained = [(n, m) for n, m in body.layers if n not in body.fresh]
        fresh = [(n, m) for n, m in body.layers if n in body.fresh]
        layers = layers_from_modules(pretrained, pretrained=True)
        covered = {id(p) for layer in layers for p in layer.params}
        covered |= {id(p) for _, m in fresh for p in m.parameters()}
        rest = [p for p in body.module.parameters() if p.requires_grad and id(p) not in covered]
        if rest:  # parameters held by containers rather than by a listed layer
            layers.insert(0, LayerParams("body.other", [p for p in rest if p.ndim > 1],
                                         [p for p in rest if p.ndim <= 1], 1.0, True))
        for layer, scale in zip(layers, body_lr_scales(len(layers), float(self.body_lr_mult),
                                                       self.layer_decay), strict=True):
            layer.lr_scale = scale
        layers += layers_from_modules(fresh, pretrained=False)
        layers += layers_from_modules([("head", model.head)], pretrained=False)
        return layers

    def _fit(self, X: Any, y: np.ndarray) -> None:
        if not isinstance(X, Source):
            raise RepurposeError(f"{type(self).__name__} expected a data source")
        seed = self._seed()
        model, body = self._build_model(X.first()[0], None, seed)
        self._fit_model(model, body, X, y, seed)
        self.model_ = model.eval()

    def _fit_model(self, model: ClassifierNet, body: Body, X: Source, y: np.ndarray,
                   seed: int) -> None:
        """Train the built network on the data (a subclass may start or route it otherwise)."""
        mults = {} if self.lr_mults is None else apply_lr_mults(
            self.lr_mults, [*body.layers, (HEAD, model.head)], self.handler.layer_names)
        layers = self._param_layers(model, body)
        groups = build_param_groups(layers, float(self.lr), float(self.weight_decay),
                                    l2sp=float(self.l2sp), mults=mults)
        self._train(
            model, groups, X, y, seed, frozen_norms=frozen_norm_layers(model),
            body_params=[p for p in body.module.parameters() if p.requires_grad],
            body_norms=[m for m in body.module.modules() if isinstance(m, NORM_TYPES)],
            l2sp_params=[p for layer in layers if layer.pretrained for p in layer.params],
        )

    def _predict_proba(self, X: Any) -> np.ndarray:
        return self._proba(self.model_, X)

    # ----- saving ------------------------------------------------------------------------
    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {"head_widths": list(self.head_widths_), "history": json_history(self.history_)}
        return meta, module_state_to_arrays(self.model_.state_dict(), "model/")

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        model, _ = self._build_model(None, [int(w) for w in meta["head_widths"]], 0)
        model.load_state_dict(arrays_to_module_state(arrays, "model/"))
        self.model_ = model.to(self._device()).eval()
        self.history_ = history_from_json(meta)

    def _params_to_json(self) -> dict[str, Any]:
        return params_to_json(super()._params_to_json())


def params_to_json(params: dict[str, Any]) -> dict[str, Any]:
    """Make training parameters JSON-able: callables become None, paths and devices str."""
    for name in _RUNTIME_ONLY:
        if name in params:
            params[name] = None
    if params.get("checkpoint_dir") is not None:
        params["checkpoint_dir"] = os.fspath(params["checkpoint_dir"])
    if params.get("device") is not None:
        params["device"] = str(params["device"])
    return params


def history_from_json(meta: dict[str, Any]) -> dict[str, list[float]]:
    """The ``history_`` saved by :func:`json_history` (None back to NaN)."""
    return {k: [float("nan") if v is None else v for v in vs]
            for k, vs in meta.get("history", {}).items()}


def json_history(history: dict[str, list[float]]) -> dict[str, list[float | None]]:
    return {k: [None if v != v else float(v) for v in vs] for k, vs in history.items()}


@torch.no_grad()
def _output_widths(body: nn.Module, sample: torch.Tensor | None) -> list[int]:
    if sample is None:
        raise RepurposeError("cannot size the head without a sample input")
    device = next((p.device for p in body.parameters()), torch.device("cpu"))
    was_training = body.training
    body.eval()
    try:
        out = body(sample[:1].to(device))
    finally:
        body.train(was_training)
    outs = out if isinstance(out, tuple | list) else (out,)
    return [int(pool_features(o).flatten(1).shape[1]) for o in outs]


def copy_module(module: nn.Module) -> nn.Module:
    """A deep copy, so that training never touches the handler's module."""
    return copy.deepcopy(module)

