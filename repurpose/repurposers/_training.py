"""The training loop shared by the network repurposers.

One :class:`Trainer` runs mini-batch training of a classifier ``model(*inputs) -> logits``
with: optimiser parameter groups (discriminative rates, no decay on biases and norms),
SGD-momentum (PyTorch's or Caffe's form) or AdamW, a cosine, one-cycle or Caffe
``lr_policy`` schedule stepped per batch, a step budget (``max_steps``), gradient
clipping, optional L2-SP, optional gradual unfreezing (head only, then the body), an
augmentation callable, a validation set with early stopping and best-weights restore,
a per-epoch progress bar, a ``history`` dict, optional mixed precision, and per-epoch
checkpoints that a later run resumes from.

Resumed runs are exact: each epoch seeds torch's generator and its own shuffling generator
from ``(seed, epoch)``, so an epoch's randomness does not depend on what ran before it,
and the checkpoint holds everything else (weights, optimiser, scheduler, scaler, early
stopping state). The caller's global RNG state is restored after training.

The data streams: the loop reads a :class:`~repurpose.repurposers._train_data.Split` (a
source plus labels) batch by batch, so memory does not grow with the number of samples.
The run id of a checkpoint hashes the settings, the network's shapes and a cheap data
fingerprint (labels, sample count, file names and sizes, a few decoded samples).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from repurpose._exceptions import RepurposeError
from repurpose._validation import check_choice, check_int, check_number
from repurpose.repurposers import _ddp
from repurpose.repurposers._checkpoint import load_checkpoint, save_checkpoint
from repurpose.repurposers._freezing import set_train_mode
from repurpose.repurposers._param_groups import l2sp_penalty
from repurpose.repurposers._recipe import CaffeSGD, check_schedule_spec, schedule_factor
from repurpose.repurposers._train_data import Source, Split, TensorSource, epoch_batches

__all__ = ["TrainSettings", "Trainer", "as_split", "predict_logits", "split_validation",
           "lr_factor", "snapshot"]

Inputs = tuple[torch.Tensor, ...]
# What the loop accepts: a Split, or (for in-memory data) a tuple of input tensors + labels.
Data = Split | Inputs
Callback = Callable[[int, dict[str, float]], Any]

OPTIMIZERS = ("adamw", "sgd", "caffe_sgd", "caffe_nesterov")
SCHEDULES = ("cosine", "onecycle", "constant")


@dataclass
class TrainSettings:
    """Everything the loop needs besides the model and its parameter groups."""

    max_epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adamw"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str | Mapping[str, Any] | None = "cosine"
    clip_grad_norm: float | None = None
    l2sp: float = 0.0
    unfreeze_after: int | None = None
    patience: int | None = 5
    augment: Callable[..., Any] | None = None
    amp: bool = False
    device: str | torch.device = "cpu"
    seed: int = 0
    progress: bool = True
    checkpoint_dir: str | os.PathLike | None = None
    callbacks: Sequence[Callback] = ()
    num_workers: int = 0
    max_steps: int | None = None
    distributed: str | bool = "auto"
    sync_batchnorm: bool = False

    def validate(self) -> None:
        """Check the values; raise ``ValueError`` naming the bad one."""
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        if isinstance(self.schedule, Mapping):
            check_schedule_spec(self.schedule)
        else:
            check_choice("schedule", self.schedule, (*SCHEDULES, None))
        for name in ("max_epochs", "batch_size"):
            check_int(name, getattr(self, name), 1)
        if self.max_steps is not None:
            check_int("max_steps", self.max_steps, 1)
        check_int("num_workers", self.num_workers, 0)
        check_choice("distributed", self.distributed, _ddp.DISTRIBUTED)
        check_number("lr", self.lr, 0, low_open=True)
        for name in ("weight_decay", "l2sp"):
            check_number(name, getattr(self, name), 0)
        if self.augment is not None and not callable(self.augment):
            raise ValueError(f"augment={self.augment!r}; expected a callable or None")

    def fingerprint(self, processes: int = 1) -> dict[str, Any]:
        """The settings that change the result, for checking a checkpoint belongs to a run.

        ``batch_size`` counts as the global batch (times the ``processes`` under torchrun):
        a run resumes on another number of processes when that stays the same.
        """
        keys = ("max_epochs", "lr", "optimizer", "momentum", "weight_decay",
                "schedule", "clip_grad_norm", "l2sp", "unfreeze_after", "patience", "amp",
                "seed")
        found = {"batch_size": self.batch_size * processes, **{k: getattr(self, k) for k in keys}}
        if self.max_steps is not None:  # only when set: older checkpoints keep their run id
            found["max_steps"] = self.max_steps
        return found


def lr_factor(schedule: str | Mapping[str, Any] | None, step: int, total: int) -> float:
    """The multiplier of every group's base rate at ``step`` of ``total`` steps.

    A mapping is a Caffe ``lr_policy`` spec, a function of the step alone.
    """
    if isinstance(schedule, Mapping):
        return schedule_factor(schedule, step)
    t = min(step, total) / max(total, 1)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if schedule == "onecycle":
        start, end, peak = 1.0 / 25.0, 1.0 / 25e4, 0.3
        if t < peak:
            return start + (1.0 - start) * 0.5 * (1.0 - math.cos(math.pi * t / peak))
        return end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * (t - peak) / (1.0 - peak)))
    return 1.0


def split_validation(
    y: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Indices ``(train, val)``: a stratified hold-out that never takes a class's last sample.

    Every class with two or more samples gives about ``fraction`` of them (at least one,
    never all). When that would hold out too many (many small classes), a random choice of
    those classes gives one sample each. Classes with a single sample stay in training;
    when no class has two, there is no validation part (``val`` is None).
    """
    if fraction <= 0:
        return np.arange(len(y)), None
    if not 0 < fraction < 1:
        raise ValueError(f"validation_fraction={fraction!r}; expected a number in [0, 1)")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    eligible = classes[counts >= 2]
    if len(eligible) == 0:
        return np.arange(len(y)), None
    n_val = max(1, int(round(fraction * len(y))))
    few = n_val < len(eligible)
    if few:
        eligible = np.sort(rng.choice(eligible, n_val, replace=False))
    val: list[int] = []
    for c in eligible:
        idx = rng.permutation(np.flatnonzero(y == c))
        take = 1 if few else min(len(idx) - 1, max(1, int(round(fraction * len(idx)))))
        val.extend(idx[:take])
    val_idx = np.sort(np.asarray(val, dtype=np.int64))
    return np.setdiff1d(np.arange(len(y)), val_idx), val_idx


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of ``model``'s state (parameters and buffers)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _autocast(device: torch.device, enabled: bool):
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=enabled)


def as_split(data: Data, y: Any = None) -> Split:
    """A :class:`Split` as is, or in-memory inputs (a tuple of tensors) with labels."""
    if isinstance(data, Split):
        return data
    if y is None:
        raise ValueError("labels are needed with a tuple of input tensors")
    return Split(TensorSource(data), torch.as_tensor(np.asarray(y), dtype=torch.long))


def _loader_kw(device: torch.device, num_workers: int, seed: int = 0) -> dict[str, Any]:
    return {"num_workers": num_workers, "pin_memory": device.type == "cuda", "seed": seed}


def _read(data: Split | Source, batches: list[torch.Tensor], device: torch.device,
          num_workers: int, seed: int = 0) -> Iterator[list[torch.Tensor]]:
    for xb in data.read(batches, **_loader_kw(device, num_workers, seed)):
        yield [x.to(device, non_blocking=True) for x in xb]


@torch.inference_mode()
def predict_logits(
    model: nn.Module, data: Split | Source | Inputs, batch_size: int,
    device: str | torch.device, amp: bool = False, num_workers: int = 0,
) -> torch.Tensor:
    """Logits of ``model(*inputs)`` in eval mode, streamed in batches; on the CPU, float32.

    ``data`` is a split, a source, or a tuple of input tensors (all samples, in order).
    """
    device = torch.device(device)
    if isinstance(data, tuple):
        data = TensorSource(data)
    was_training = model.training
    model.eval()
    try:
        out = []
        batches = epoch_batches(len(data), batch_size, merge_single=False)
        for xb in _read(data, batches, device, num_workers):
            with _autocast(device, amp):
                out.append(model(*xb).float().cpu())
        return torch.cat(out)
    finally:
        model.train(was_training)


class Trainer:
    """Mini-batch training of ``model(*inputs) -> logits`` with cross-entropy.

    Parameters
    ----------
    model : nn.Module
        Moved to ``settings.device``; trained in place.
    groups : list of dict
        Optimiser parameter groups (see ``build_param_groups``).
    settings : TrainSettings
    frozen_norms : sequence of nn.Module
        Normalisation layers kept in eval mode throughout (frozen layers).
    body_params, body_norms : sequences
        The pretrained body's trainable parameters and norm layers, frozen during the
        first ``settings.unfreeze_after`` epochs.
    l2sp_params : sequence of Parameter
        Parameters pulled towards their starting values when ``settings.l2sp > 0``.
    """

    def __init__(
        self,
        model: nn.Module,
        groups: list[dict],
        settings: TrainSettings,
        *,
        frozen_norms: Sequence[nn.Module] = (),
        body_params: Sequence[nn.Parameter] = (),
        body_norms: Sequence[nn.Module] = (),
        l2sp_params: Sequence[nn.Parameter] = (),
    ) -> None:
        settings.validate()
        self.settings = settings
        self.device = torch.device(settings.device)
        self.model = model.to(self.device)
        self.world = _ddp.setup(settings.distributed, self.device)
        self._net = self.model  # what trains: the model, or its DDP wrapper under torchrun
        self.frozen_norms = list(frozen_norms)
        self.body_params = list(body_params)
        self.body_norms = list(body_norms)
        self.l2sp_params = list(l2sp_params) if settings.l2sp > 0 else []
        self.l2sp_anchors = [p.detach().clone() for p in self.l2sp_params]
        self.optimizer = self._make_optimizer(groups)
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=settings.amp and self.device.type == "cuda"
        )
        self.history: dict[str, list[float]] = {
            k: [] for k in ("epoch", "loss", "acc", "val_loss", "val_acc", "lr")
        }

    def _make_optimizer(self, groups: list[dict]) -> torch.optim.Optimizer:
        s = self.settings
        if not groups:
            raise RepurposeError("nothing to train: every parameter is frozen")
        if s.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=s.lr, momentum=s.momentum, nesterov=s.momentum > 0)
        if s.optimizer.startswith("caffe_"):
            return CaffeSGD(groups, lr=s.lr, momentum=s.momentum,
                            nesterov=s.optimizer == "caffe_nesterov")
        return torch.optim.AdamW(groups, lr=s.lr)

    # -- one step and one epoch -------------------------------------------------------
    def objective(self, logits: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        """The minimised loss: cross-entropy plus the L2-SP penalty when enabled."""
        loss = F.cross_entropy(logits.float(), yb)
        if self.l2sp_params:
            penalty = l2sp_penalty(self.l2sp_params, self.l2sp_anchors, self.settings.l2sp)
            loss = loss + penalty.to(loss.device)
        return loss

    def _step(self, xb: list[torch.Tensor], yb: torch.Tensor, total: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.settings
        self.optimizer.zero_grad(set_to_none=True)
        with _autocast(self.device, s.amp):
            logits = self._net(*xb)
        loss = self.objective(logits, yb)
        scaled = self.scaler.is_enabled()
        weighted = loss * _ddp.loss_weight(len(yb), total, self.world) if self.world.active \
            else loss
        (self.scaler.scale(weighted) if scaled else weighted).backward()
        if s.clip_grad_norm is not None:
            if scaled:
                self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]
                      if p.grad is not None]
            nn.utils.clip_grad_norm_(params, s.clip_grad_norm)
        if scaled:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        correct = (logits.detach().argmax(1) == yb).sum()
        return loss.detach() * len(yb), correct

    def _train_epoch(self, data: Split, epoch: int) -> tuple[float, float]:
        s = self.settings
        head_only = s.unfreeze_after is not None and epoch < s.unfreeze_after
        for p in self.body_params:
            p.requires_grad_(not head_only)
        set_train_mode(self.model, self.frozen_norms + (self.body_norms if head_only else []))
        epoch_seed = s.seed * 100_003 + epoch
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(epoch_seed))
        batches = _ddp.rank_batches(len(data), s.batch_size, self.world,
                                    order)[:self._steps_left(epoch)]
        # rebuilt each epoch: gradual unfreezing changes which parameters DDP must reduce
        self._net = _ddp.wrap(self.model, self.world, self.device)
        total = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        reads = _read(data, [b for b, _ in batches], self.device, s.num_workers, epoch_seed)
        for xb, (idx, size) in zip(reads, batches, strict=True):
            if s.augment is not None:
                xb = list(s.augment(*xb)) if len(xb) > 1 else [s.augment(xb[0])]
            loss, ok = self._step(xb, data.y[idx].to(self.device, non_blocking=True), size)
            total += loss
            correct += ok
        for p in self.body_params:
            p.requires_grad_(True)
        _ddp.share_buffers(self.model, self.world)
        loss_sum, n_correct = _ddp.sum_all([total.item(), correct.item()], self.world,
                                           self.device)
        seen = sum(size for _, size in batches)  # global samples (max_steps may cut the epoch)
        return loss_sum / seen, n_correct / seen

    def evaluate(self, data: Data, y: Any = None) -> tuple[float, float]:
        """Mean cross-entropy and accuracy of the current model on a data set."""
        split = as_split(data, y)
        if self.world.active:
            return self._evaluate_shared(split)
        logits = predict_logits(self.model, split, self.settings.batch_size, self.device,
                                self.settings.amp, self.settings.num_workers)
        labels = split.y.cpu()
        loss = F.cross_entropy(logits, labels).item()
        return loss, (logits.argmax(1) == labels).float().mean().item()

    def _evaluate_shared(self, split: Split) -> tuple[float, float]:
        """:meth:`evaluate` with each rank predicting its block of the samples."""
        part = torch.tensor_split(torch.arange(len(split)), self.world.size)[self.world.rank]
        mine = split.subset(part)
        sums = [0.0, 0.0]
        if len(mine):
            logits = predict_logits(self.model, mine, self.settings.batch_size, self.device,
                                    self.settings.amp, self.settings.num_workers)
            labels = mine.y.cpu()
            sums = [F.cross_entropy(logits, labels, reduction="sum").item(),
                    float((logits.argmax(1) == labels).sum())]
        loss_sum, n_correct = _ddp.sum_all(sums, self.world, self.device)
        return loss_sum / len(split), n_correct / len(split)

    # -- the whole run ----------------------------------------------------------------
    def fit(self, data: Data, y: Any = None,
            val: Split | tuple[Inputs, Any] | None = None) -> dict[str, list[float]]:
        """Train; return the history (also in ``self.history``). Restores the best weights.

        Parameters
        ----------
        data : Split or tuple of Tensor
            The training data: a split (streamed), or input tensors with labels ``y``.
        y : array-like, optional
            Int-coded labels, with a tuple of tensors.
        val : Split or (tuple of Tensor, labels), optional
            The validation data for early stopping.
        """
        s = self.settings
        train = as_split(data, y)
        valid = val if val is None or isinstance(val, Split) else as_split(*val)
        self._epoch_steps = len(_ddp.rank_batches(len(train), s.batch_size, self.world))
        total, epochs = self._budget()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(s.schedule, step, total)
        )
        self._run_id = self._identify(train, valid) if s.checkpoint_dir is not None else ""
        self._best: dict[str, torch.Tensor] | None = None
        self._best_loss, self._bad_epochs, start, done = math.inf, 0, 0, False
        if s.checkpoint_dir is not None:
            start, done = self._resume()
        devices = [self.device] if self.device.type == "cuda" else []
        synced = _ddp.sync_batchnorm(self.model, self.world) if s.sync_batchnorm \
            else contextlib.nullcontext()
        with torch.random.fork_rng(devices=devices, device_type=self.device.type), synced:
            bar = tqdm(total=epochs, initial=start, desc="epochs", leave=False,
                       disable=not s.progress or done or not self.world.main, unit="epoch")
            for epoch in range(start, epochs if not done else start):
                torch.manual_seed(s.seed * 1_000_003 + epoch)
                logs = self._run_epoch(epoch, train, valid)
                bar.set_postfix({k: f"{v:.3g}" for k, v in logs.items() if k != "epoch"},
                                refresh=False)
                bar.update(1)
                if self._end_epoch(epoch, logs):
                    break
            bar.close()
        self.model.eval()
        return self.history

    def _end_epoch(self, epoch: int, logs: dict[str, float]) -> bool:
        """Early stopping, checkpoint and callbacks after an epoch; True to stop."""
        s = self.settings
        stop = s.patience is not None and self._bad_epochs >= s.patience
        last = stop or epoch == self._budget()[1] - 1
        if last:
            self._restore_best()
        self._save(epoch + 1, complete=last)
        for callback in s.callbacks:
            callback(epoch, logs)
        return stop

    def _budget(self) -> tuple[int, int]:
        """``(optimizer steps, epochs)`` of the run: ``max_steps`` replaces ``max_epochs``."""
        per_epoch, max_steps = self._epoch_steps, self.settings.max_steps
        if max_steps is None:
            return per_epoch * self.settings.max_epochs, self.settings.max_epochs
        return max_steps, -(-max_steps // per_epoch)

    def _steps_left(self, epoch: int) -> int:
        """Optimizer steps epoch ``epoch`` may take (the last epoch of ``max_steps`` is cut)."""
        return self._budget()[0] - epoch * self._epoch_steps

    def _identify(self, train: Split, val: Split | None) -> str:
        """A hash of the settings, data and network shapes: a checkpoint must match it."""
        run = {"settings": self.settings.fingerprint(self.world.size), "data": train.fingerprint(),
               "val": None if val is None else val.fingerprint(),
               "params": [[k, list(v.shape)] for k, v in self.model.state_dict().items()]}
        return hashlib.sha256(json.dumps(run, sort_keys=True).encode()).hexdigest()

    def _run_epoch(self, epoch: int, train: Split, val: Split | None) -> dict[str, float]:
        loss, acc = self._train_epoch(train, epoch)
        val_loss, val_acc = self.evaluate(val) if val is not None else (math.nan, math.nan)
        logs = {"epoch": float(epoch), "loss": loss, "acc": acc, "val_loss": val_loss,
                "val_acc": val_acc, "lr": max(g["lr"] for g in self.optimizer.param_groups)}
        for k, v in logs.items():
            self.history[k].append(v)
        if val is not None:
            if val_loss < self._best_loss:
                self._best_loss, self._bad_epochs = val_loss, 0
                self._best = snapshot(self.model)
            else:
                self._bad_epochs += 1
        return logs

    def _restore_best(self) -> None:
        if self._best is not None:
            self.model.load_state_dict(self._best)

    # -- checkpoints ------------------------------------------------------------------
    def _save(self, epoch: int, complete: bool) -> None:
        if self.settings.checkpoint_dir is None or not self.world.main:
            return
        save_checkpoint(self.settings.checkpoint_dir, {
            "run_id": self._run_id, "epoch": epoch, "complete": complete,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "best": self._best, "best_loss": self._best_loss, "bad_epochs": self._bad_epochs,
            "history": self.history, "global_batch": self._global_batch(),
        })

    def _global_batch(self) -> int:
        return self.settings.batch_size * self.world.size

    def _resume(self) -> tuple[int, bool]:
        state = load_checkpoint(self.settings.checkpoint_dir)  # type: ignore[arg-type]
        if state is None:
            return 0, False
        saved = state.get("global_batch", self._global_batch())
        if saved != self._global_batch():
            raise RepurposeError(
                f"the checkpoint in {str(self.settings.checkpoint_dir)!r} was trained with a "
                f"global batch of {saved} samples (batch_size x processes); with "
                f"{self.world.size} process(es) pass batch_size={saved / self.world.size:g} "
                "to resume it, or another checkpoint_dir to train from scratch"
            )
        if state.get("run_id") != self._run_id:
            raise RepurposeError(
                f"the checkpoint in {str(self.settings.checkpoint_dir)!r} belongs to a different "
                "run (other data, settings or network); pass another checkpoint_dir or delete "
                "that directory to train from scratch"
            )
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
        except (KeyError, RuntimeError, ValueError) as err:
            raise RepurposeError(f"cannot resume from the checkpoint: {err}") from err
        self._best = state["best"]
        if self._best is not None:
            self._best = {k: v.to(self.device) for k, v in self._best.items()}
        self._best_loss, self._bad_epochs = float(state["best_loss"]), int(state["bad_epochs"])
        self.history = copy.deepcopy(state["history"])
        return int(state["epoch"]), bool(state["complete"])
