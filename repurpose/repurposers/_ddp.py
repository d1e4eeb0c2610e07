"""Training under ``torchrun``: DistributedDataParallel for the network repurposers.

The same script that calls ``FineTuneRepurposer(...).fit(data)`` trains on ``N`` processes
when launched with ``torchrun --nproc_per_node=N script.py``. This module holds everything
the :class:`~repurpose.repurposers._training.Trainer` needs for that, so the loop itself only
calls a few hooks:

- :func:`setup` reads torchrun's environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``) and
  starts the process group if the user has not (gloo on the CPU, nccl on CUDA, where it also
  selects the GPU ``LOCAL_RANK``). Outside torchrun nothing changes.
- :func:`agree` makes every rank use rank 0's value (the seed: validation split, shuffling).
- :func:`rank_batches` shards an epoch. ``batch_size`` is per process: the epoch's order
  (the same on every rank, seeded by ``(seed, epoch)`` like a ``DistributedSampler`` with
  ``set_epoch``) is cut into global batches of ``batch_size * world`` samples and each rank
  takes its contiguous part of each. Unlike ``DistributedSampler`` no sample is repeated to
  even out the ranks; :func:`loss_weight` instead weighs each rank's mean loss so that the
  averaged gradient is exactly the gradient of the global batch's mean loss. ``N``
  processes with ``batch_size=b`` therefore follow one process with ``batch_size=N*b``.
- :func:`sum_all` adds epoch totals (loss, correct, validation loss) over the ranks, so
  early stopping and best-epoch restore decide identically everywhere.
- :func:`sync_batchnorm` makes training-mode BatchNorm use the statistics of the global
  batch (a differentiable all-reduce; on the CPU too, where ``nn.SyncBatchNorm`` cannot run).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from repurpose._exceptions import RepurposeError
from repurpose.repurposers._train_data import epoch_batches

__all__ = ["World", "DISTRIBUTED", "setup", "current", "agree", "rank_batches", "loss_weight",
           "sum_all", "wrap", "share_buffers", "sync_batchnorm"]

DISTRIBUTED = ("auto", True, False)


@dataclass(frozen=True)
class World:
    """This process's rank and the number of processes (1: a plain single-process run)."""

    rank: int = 0
    size: int = 1

    @property
    def active(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that shows progress and writes checkpoints."""
        return self.rank == 0


def setup(mode: Any, device: torch.device) -> World:
    """The world this run trains in; starts the process group under torchrun if needed.

    ``mode`` is ``"auto"`` (distributed when launched by torchrun with more than one
    process, or when a process group is already running), ``True`` (the same, but an error
    outside torchrun) or ``False`` (always one process).
    """
    if not (isinstance(mode, bool) or mode == "auto"):
        raise ValueError(f"distributed={mode!r}; expected 'auto', True or False")
    if mode is False or not dist.is_available():
        return World()
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            if mode is True:
                raise RepurposeError(
                    "distributed=True but this process was not launched by torchrun "
                    "(WORLD_SIZE is not set above 1); run `torchrun --nproc_per_node=N "
                    "script.py`, or use distributed='auto'"
                )
            return World()
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size())


def current() -> World:
    """The running process group's world, without starting one (one process if none)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def agree(value: int, world: World, device: torch.device) -> int:
    """Rank 0's ``value`` on every rank (an integer such as a random seed)."""
    if not world.active:
        return value
    t = torch.tensor([value], dtype=torch.long, device=_comm_device(device))
    dist.broadcast(t, 0)
    return int(t.item())


def rank_batches(n: int, batch_size: int, world: World, order: torch.Tensor | None = None
                 ) -> list[tuple[torch.Tensor, int]]:
    """This rank's part of each global batch, with the global batch's size.

    With one process this is :func:`epoch_batches` (sizes included). With ``k`` processes
    the global batches hold ``batch_size * k`` positions; a final global batch smaller than
    ``2 * k`` joins the one before, so that the last step gives every rank at least two
    samples (BatchNorm needs two) when the epoch has more than one batch.
    """
    batches = epoch_batches(n, batch_size * world.size, order)
    if world.active and len(batches) > 1 and len(batches[-1]) < 2 * world.size:
        last = batches.pop()
        batches[-1] = torch.cat([batches[-1], last])
    if not world.active:
        return [(b, len(b)) for b in batches]
    if len(batches[-1]) < world.size:
        raise ValueError(
            f"{n} training samples cannot be shared by {world.size} processes; give at "
            f"least {world.size} samples or launch fewer processes"
        )
    return [(torch.tensor_split(b, world.size)[world.rank], len(b)) for b in batches]


def loss_weight(local: int, total: int, world: World) -> float:
    """Weight of a rank's mean loss so that DDP's gradient average is the global mean's."""
    return 1.0 if not world.active else local * world.size / total


def sum_all(values: list[float], world: World, device: torch.device) -> list[float]:
    """The sums over ranks (identical on every rank)."""
    if not world.active:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device(device))
    dist.all_reduce(t)
    return t.tolist()


def share_buffers(model: nn.Module, world: World) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics: without
    ``sync_batchnorm`` each rank's follow its own part of the batches)."""
    if world.active:
        for buffer in model.buffers():
            dist.broadcast(buffer.data, 0)


def wrap(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    """``model`` itself, or a DistributedDataParallel wrapper of it (built for the
    parameters that currently require gradients; rank 0's weights are broadcast)."""
    if not world.active:
        return model
    ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


@contextlib.contextmanager
def sync_batchnorm(model: nn.Module, world: World) -> Iterator[None]:
    """While active, the model's BatchNorm layers normalise training batches with the
    statistics of the global batch (every rank's samples)."""
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)] if world.active else []
    for m in norms:
        m.forward = _synced_forward(m)  # type: ignore[method-assign]
    try:
        yield
    finally:
        for m in norms:
            del m.forward


def _synced_forward(bn: _BatchNorm) -> Any:
    own = type(bn).forward

    def forward(x: torch.Tensor) -> torch.Tensor:
        if not bn.training:
            return own(bn, x)
        return _global_batch_norm(bn, x)

    return forward


def _global_batch_norm(bn: _BatchNorm, x: torch.Tensor) -> torch.Tensor:
    from torch.distributed.nn.functional import all_reduce

    dims = [0, *range(2, x.ndim)]
    shape = [1, x.shape[1]] + [1] * (x.ndim - 2)
    count = torch.full((1,), float(x.numel() // x.shape[1]), device=x.device, dtype=x.dtype)
    total = all_reduce(torch.cat([x.sum(dims), count]))
    n = total[-1]
    mean = total[:-1] / n
    centred = x - mean.view(shape)
    var = all_reduce((centred * centred).sum(dims)) / n
    y = centred * torch.rsqrt(var.view(shape) + bn.eps)
    if bn.affine:
        y = y * bn.weight.view(shape) + bn.bias.view(shape)
    if bn.track_running_stats and bn.running_mean is not None:
        _update_running(bn, mean.detach(), var.detach() * n / (n - 1).clamp(min=1))
    return y


@torch.no_grad()
def _update_running(bn: _BatchNorm, mean: torch.Tensor, var: torch.Tensor) -> None:
    assert bn.num_batches_tracked is not None  # noqa: S101 (set with running stats)
    bn.num_batches_tracked.add_(1)
    momentum = bn.momentum if bn.momentum is not None else \
        1.0 / float(bn.num_batches_tracked.item())
    bn.running_mean.lerp_(mean, momentum)  # type: ignore[union-attr]
    bn.running_var.lerp_(var, momentum)  # type: ignore[union-attr]


def _comm_device(device: torch.device) -> torch.device:
    """Where collectives' tensors live: the GPU for nccl, the CPU for gloo."""
    backend = dist.get_backend() if dist.is_initialized() else "gloo"
    return device if backend == "nccl" else torch.device("cpu")
