"""The data order and the processes of a GPT run (chapter 8).

Part of :mod:`tfbook.run`, which re-exports the public names; import them from there. Every
step's global batch is a pure function of ``(seed, step)``; each process of a data-parallel
run takes a contiguous slice of it; a stop signal is a flag the loop reads between steps.

Public API:

- :func:`step_seed` ``(seed, step)``, :func:`global_batch` ``(ids, context, batch_size, seed,
  step)``: the data order.
- For the loop (:mod:`tfbook.run.loop`): :func:`rank_slice`, :class:`Processes`,
  :func:`env_int`, :func:`setup_processes`, :class:`StopSignal`.
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from tfbook import _validate as check
from tfbook._core import wide_float
from tfbook.data import lm_batches

__all__ = [
    "step_seed",
    "global_batch",
    "rank_slice",
    "Processes",
    "env_int",
    "setup_processes",
    "StopSignal",
]

# ---------------------------------------------------------------------------- data order


def step_seed(seed: int, step: int) -> int:
    """The seed of step ``step``'s batch: ``seed * 1_000_003 + step`` (step 0: validation).

    The same rule as :meth:`tfbook.data.Seq2SeqData.batch_fn`.
    """
    return check.nonneg_int("seed", seed) * 1_000_003 + check.nonneg_int("step", step)


def global_batch(
    ids: Tensor, context: int, batch_size: int, seed: int, step: int
) -> tuple[Tensor, Tensor]:
    """Step ``step``'s global batch: ``batch_size`` random windows drawn with
    :func:`step_seed` ``(seed, step)``.

    A pure function of its arguments: no state carries from one step to the next, which is
    what makes resuming and data-parallel training exact.

    Args:
        ids: the training text as token ids.
        context: ``T``.
        batch_size: ``B``, over all processes.
        seed, step: the run's seed and the step (from 1).

    Returns:
        ``(inputs, targets)`` as :func:`tfbook.data.lm_batches`.

    Shape:
        - ids: ``(N,)``; inputs, targets: ``(B, T)``

    Example:
        >>> ids = torch.arange(1000)
        >>> a, _ = global_batch(ids, context=8, batch_size=4, seed=1, step=7)
        >>> b, _ = global_batch(ids, context=8, batch_size=4, seed=1, step=7)
        >>> bool(torch.equal(a, b)), a.shape
        (True, torch.Size([4, 8]))
    """
    generator = torch.Generator().manual_seed(step_seed(seed, step))
    return lm_batches(ids, context, batch_size, generator)


def rank_slice(x: Tensor, rank: int, world: int) -> Tensor:
    per = x.shape[0] // world
    return x[rank * per : (rank + 1) * per]  # (B / W, T): this process's contiguous share


# ----------------------------------------------------------------------- processes (DDP)


@dataclass
class Processes:
    """Where this process stands: rank, world size, device, whether it made the group."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False

    @property
    def wide(self) -> torch.dtype:
        """float64 for sums and collectives (float32 on Apple's MPS, which has no float64)."""
        return wide_float(self.device)

    def all_sum(self, x: Tensor) -> Tensor:
        if self.world > 1:
            dist.all_reduce(x, op=dist.ReduceOp.SUM)
        return x

    def all_max(self, x: Tensor) -> Tensor:
        if self.world > 1:
            dist.all_reduce(x, op=dist.ReduceOp.MAX)
        return x

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an int, got {raw!r}") from None


def setup_processes(device: str | torch.device | None) -> Processes:
    """One process, or join the group ``torchrun`` describes in the environment."""
    world = env_int("WORLD_SIZE", 1)
    if device is not None:
        device = torch.device(device)
    if world <= 1:
        if device is None:
            device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return Processes(device=device)
    if not dist.is_available():
        raise RuntimeError(
            f"WORLD_SIZE={world} asks for several processes, but this PyTorch build has no "
            "torch.distributed"
        )
    rank, local_rank = env_int("RANK", 0), env_int("LOCAL_RANK", 0)
    use_cuda = torch.cuda.is_available() and (device is None or device.type == "cuda")
    if use_cuda:  # one GPU per process: the LOCAL_RANK-th of this machine
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend=backend)
    if dist.get_world_size() != world or dist.get_rank() != rank:
        raise RuntimeError(
            f"the process group (rank {dist.get_rank()} of {dist.get_world_size()}) disagrees "
            f"with RANK={rank}, WORLD_SIZE={world}"
        )
    return Processes(rank, world, local_rank, device, owns)


class StopSignal:
    """SIGINT and SIGTERM set a flag (the step finishes); a second SIGINT stops at once."""

    def __init__(self) -> None:
        self.name: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():  # handlers: main thread only
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt("second Ctrl-C: stopped without a new checkpoint")
        self.name = signal.Signals(signum).name

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
