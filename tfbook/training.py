"""The training loop: optimiser, learning-rate schedules, clipping, history (chapter 7).

One function, :func:`train`, trains any model on any objective: the caller gives a
``batch_fn(step) -> batch`` and a ``loss_fn(model, batch) -> loss`` (built from
:mod:`tfbook.objectives`), and the loop does what every Transformer training run does, one
:func:`train_step` at a time (chapter 8's run, :mod:`tfbook.run`, takes the same step):

1. AdamW (Loshchilov and Hutter 2019), with weight decay only on the matrices (``>= 2-D``
   parameters: linear and embedding weights), never on biases and LayerNorm gains;
2. a learning rate that warms up and then decays (the paper's "Noam" schedule, or a linear
   warm-up followed by a cosine decay, or a constant rate);
3. gradient clipping by global norm, so one bad batch cannot throw the weights far away;
4. a record of the loss, the learning rate and the gradient norm at every step.

It is deterministic (same seed, same model, same batches: the same losses bit for bit on
one machine) and it stops with a clear error at the first non-finite loss.

Public API:

- :func:`noam_lr` ``(step, d_model, warmup)``: the paper's learning rate (section 5.3).
- :func:`warmup_cosine` ``(step, total_steps, warmup, peak, floor)``: a multiplier.
- :class:`TrainConfig`: every knob of :func:`train`.
- :class:`History`: what :func:`train` records.
- :func:`train` ``(model, batch_fn, loss_fn, cfg, eval_fn)`` returns a :class:`History`.
- :func:`train_step` ``(model, optimizer, batch, loss_fn, clip, *, step, reduce)``: one update;
  returns a :class:`StepResult` ``(loss, grad_norm)``.
- :func:`make_optimizer` ``(model, cfg)``: the AdamW with its two parameter groups.
- :func:`lr_multiplier` ``(cfg, step)``: the schedule :func:`train` uses.
- :func:`progress_bar` ``(steps, show)``: ``steps`` in a ``tqdm`` bar when there is one.
- :func:`plot_history` ``(history, ax, title)``: the loss curve on a log axis.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from tfbook import _validate as check

__all__ = [
    "noam_lr",
    "warmup_cosine",
    "SCHEDULES",
    "TrainConfig",
    "History",
    "make_optimizer",
    "lr_multiplier",
    "train",
    "train_step",
    "StepResult",
    "progress_bar",
    "plot_history",
]

SCHEDULES: tuple[str, ...] = ("cosine", "noam", "constant")


# ----------------------------------------------------------------------------- schedules


def noam_lr(step: int, d_model: int, warmup: int) -> float:
    r"""The learning rate of "Attention Is All You Need" (section 5.3) at ``step``.

    .. math:: lrate = d_{model}^{-0.5} \cdot \min(step^{-0.5},\ step \cdot warmup^{-1.5})

    It grows linearly for ``warmup`` steps, peaks at ``step = warmup`` with
    :math:`(d_{model} \cdot warmup)^{-0.5}`, then decays as :math:`1/\sqrt{step}`.
    Steps are counted from 1 (the first update).

    Args:
        step: the update number, >= 1.
        d_model: the model width (the paper: 512).
        warmup: the warm-up steps (the paper: 4000).

    Example:
        >>> round(noam_lr(4000, d_model=512, warmup=4000), 6)  # the paper's peak
        0.000699
    """
    check.positive_int("step", step)
    check.positive_int("d_model", d_model)
    check.positive_int("warmup", warmup)
    return d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)


def warmup_cosine(
    step: int, total_steps: int, warmup: int, peak: float = 1.0, floor: float = 0.0
) -> float:
    """A linear warm-up to ``peak``, then half a cosine down to ``floor`` at ``total_steps``.

    ``step / warmup * peak`` for ``step <= warmup``; then
    ``floor + (peak - floor) * (1 + cos(pi * progress)) / 2`` with
    ``progress = (step - warmup) / (total_steps - warmup)``; ``floor`` after ``total_steps``.
    Used as a multiplier of the base learning rate (``peak=1``).

    Args:
        step: the update number (>= 0; :func:`train` counts from 1).
        total_steps: where the decay ends (>= ``warmup``).
        warmup: the warm-up steps (0: start at ``peak``).
        peak, floor: the largest and the final value.

    Example:
        >>> [round(warmup_cosine(s, 10, 2), 3) for s in (0, 1, 2, 6, 10)]
        [0.0, 0.5, 1.0, 0.5, 0.0]
    """
    check.nonneg_int("step", step)
    check.nonneg_int("warmup", warmup)
    check.int_in("total_steps", total_steps, max(warmup, 1), 10**12)
    check.number_in("peak", peak, 0.0, math.inf, high_open=True)
    check.number_in("floor", floor, 0.0, peak)
    if step < warmup:
        return peak * step / warmup
    if step >= total_steps:
        return floor
    progress = (step - warmup) / (total_steps - warmup)  # 0 -> 1
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


# -------------------------------------------------------------------------------- config


@dataclass
class TrainConfig:
    """Every knob of :func:`train`.

    Args:
        steps: number of updates.
        lr: the peak learning rate (the base rate the schedule multiplies).
        weight_decay: AdamW's decoupled weight decay, on matrices only.
        betas: AdamW's moment coefficients (the paper: 0.9 and 0.98).
        warmup: steps of linear warm-up.
        schedule: ``"cosine"`` (warm-up, then cosine decay to 0 at ``steps``), ``"noam"``
            (the paper's shape, :func:`noam_lr`, scaled so that its peak at ``warmup`` is
            ``lr``: the paper's own values are ``lr = (d_model * warmup) ** -0.5``) or
            ``"constant"`` (warm-up, then ``lr``).
        clip: the largest global gradient norm (``None``: no clipping).
        eval_every: call ``eval_fn`` every this many steps (and after the last one).
        seed: seeds PyTorch's global generator at the start (dropout, random batches that
            use it), so two runs with the same seed and the same initial model agree.
        progress: show a ``tqdm`` progress bar (when ``tqdm`` is installed).
    """

    steps: int = 200
    lr: float = 3e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    warmup: int = 20
    schedule: str = "cosine"  # "cosine" | "noam" | "constant"
    clip: float | None = 1.0
    eval_every: int = 50
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        check.positive_int("steps", self.steps)
        check.positive_float("lr", self.lr)
        check.number_in("weight_decay", self.weight_decay, 0.0, math.inf, high_open=True)
        if not (isinstance(self.betas, (tuple, list)) and len(self.betas) == 2):
            raise TypeError(f"betas must be a pair of floats, got {self.betas!r}")
        for i, b in enumerate(self.betas):
            check.number_in(f"betas[{i}]", b, 0.0, 1.0, high_open=True)
        check.nonneg_int("warmup", self.warmup)
        check.one_of("schedule", self.schedule, SCHEDULES)
        if self.schedule == "noam" and self.warmup == 0:
            raise ValueError("warmup must be >= 1 with schedule='noam' (its peak), got 0")
        if self.clip is not None:
            check.positive_float("clip", self.clip)
        check.positive_int("eval_every", self.eval_every)
        check.nonneg_int("seed", self.seed)
        check.boolean("progress", self.progress)


@dataclass
class History:
    """What :func:`train` records, one entry per step.

    Attributes:
        steps: the step numbers ``1 .. cfg.steps``.
        losses: the training loss of each step's batch (before the update).
        lrs: the learning rate used by each update.
        grad_norms: the global gradient norm of each step *before* clipping.
        evals: ``(step, value)`` pairs returned by ``eval_fn``.
    """

    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    evals: list[tuple[int, float]] = field(default_factory=list)

    def __repr__(self) -> str:
        if not self.steps:
            return "History(no steps)"
        last = f", last eval {self.evals[-1][1]:.4f}" if self.evals else ""
        return (
            f"History({len(self.steps)} steps, loss {self.losses[0]:.4f} -> "
            f"{self.losses[-1]:.4f}{last})"
        )


# ------------------------------------------------------------------------------ the loop


def lr_multiplier(cfg: TrainConfig, step: int) -> float:
    """The factor of ``cfg.lr`` at update ``step`` (from 1) under ``cfg.schedule``."""
    if cfg.schedule == "noam":  # d_model cancels out of the ratio: only the shape remains
        return noam_lr(step, 1, cfg.warmup) / noam_lr(cfg.warmup, 1, cfg.warmup)
    if cfg.schedule == "cosine":
        return warmup_cosine(step, max(cfg.steps, cfg.warmup, 1), cfg.warmup)
    return min(1.0, step / cfg.warmup) if cfg.warmup else 1.0  # constant after the warm-up


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with two parameter groups: decay on the ``>= 2-D`` weights, none on the rest.

    Biases and LayerNorm gains/shifts are 1-D: decaying them towards 0 only hurts (a
    LayerNorm gain of 0 switches its features off). A tied matrix appears once.
    """
    params = [p for p in model.parameters() if p.requires_grad]  # a tied weight comes once
    if not params:
        raise ValueError("model must have trainable parameters, got none")
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]  # e.g. a model without any bias
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))


class StepResult(NamedTuple):
    """What one :func:`train_step` measured (a tuple: ``loss, grad_norm = train_step(...)``)."""

    #: The loss of the step's batch, before the update (a Python float).
    loss: float
    #: The global norm of the gradients *before* clipping.
    grad_norm: float


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Any,
    loss_fn: Callable[[nn.Module, Any], Tensor],
    clip: float | None = 1.0,
    *,
    step: int | None = None,
    reduce: Callable[[Tensor], float] | None = None,
) -> StepResult:
    """One update: forward and loss, stop if it is not finite, backward, clip, optimiser step.

    The caller owns everything around the step: ``model.train()``, the learning rate of this
    update, the random seed of its dropout masks (the forward pass draws them first).

    Args:
        model: the module ``loss_fn`` runs (under DDP: the wrapped module).
        optimizer: updates the parameters of its ``param_groups``; they are also the ones
            clipped.
        batch: whatever ``loss_fn`` takes.
        loss_fn: ``(model, batch) -> scalar loss``.
        clip: the largest global gradient norm (``None``: no clipping, the norm is still
            measured).
        step: the step's number, named in the error of a non-finite loss.
        reduce: ``loss -> float``, the value to check and return, called before the backward
            pass (default ``loss.item()``); e.g. the mean loss over all processes, so that every
            process stops at the same step.

    Returns:
        A :class:`StepResult` ``(loss, grad_norm)``.

    Raises:
        FloatingPointError: the loss is NaN or infinite; nothing is updated.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> model, batch = nn.Linear(2, 1), (torch.full((4, 2), 10.0), torch.zeros(4, 1))
        >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> def mse(m, b):
        ...     return ((m(b[0]) - b[1]) ** 2).mean()
        >>> first = train_step(model, optimizer, batch, mse, clip=1.0)
        >>> first.grad_norm > 1.0  # measured before clipping
        True
        >>> train_step(model, optimizer, batch, mse).loss < first.loss
        True
    """
    loss = loss_fn(model, batch)  # forward: a scalar tensor
    _check_scalar(loss)
    value = loss.item() if reduce is None else reduce(loss)  # e.g. a mean over processes
    if not math.isfinite(value):  # stop before the update: no weight has changed
        where = "" if step is None else f" at step {step}"
        raise FloatingPointError(
            f"loss is {value}{where}: training stopped before the update (try a lower lr, a "
            "longer warmup or gradient clipping; check the inputs and for a log(0) or a "
            "division by 0 in loss_fn)"
        )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()  # gradients of the loss for every parameter (averaged over DDP's processes)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    max_norm = math.inf if clip is None else clip
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)  # the norm *before* clipping
    optimizer.step()
    return StepResult(value, norm.item())


def train(
    model: nn.Module,
    batch_fn: Callable[[int], Any],
    loss_fn: Callable[[nn.Module, Any], Tensor],
    cfg: TrainConfig | None = None,
    eval_fn: Callable[[nn.Module], float] | None = None,
) -> History:
    """Train ``model`` for ``cfg.steps`` updates and return the :class:`History`.

    Each step: get the batch, then :func:`train_step` (compute the loss, stop if it is not
    finite, backpropagate, clip the gradients' global norm, update), then move the schedule
    on. ``eval_fn`` runs every ``cfg.eval_every`` steps and after the last one, in eval mode
    and without gradients.

    Args:
        model: any ``nn.Module``; it is put in training mode for the updates and left in
            eval mode at the end.
        batch_fn: ``step -> batch`` (steps from 1), e.g. ``lambda s: lm_batches(...)`` or
            :meth:`tfbook.data.Seq2SeqData.batch_fn`.
        loss_fn: ``(model, batch) -> scalar loss``, e.g. a :func:`tfbook.objectives.lm_loss`.
        cfg: a :class:`TrainConfig` (default ``TrainConfig()``).
        eval_fn: ``model -> float`` (a held-out loss, an accuracy), recorded in
            ``History.evals``.

    Returns:
        The :class:`History` of the run.

    Raises:
        FloatingPointError: at the first step whose loss is NaN or infinite (naming the
            step), instead of training on with broken weights.

    Example:
        >>> from torch import nn
        >>> _ = torch.manual_seed(0)
        >>> model, x = nn.Linear(3, 1), torch.randn(32, 3)
        >>> y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
        >>> cfg = TrainConfig(steps=100, lr=0.1, warmup=5, progress=False)
        >>> h = train(model, lambda step: (x, y), lambda m, b: ((m(b[0]) - b[1]) ** 2).mean(), cfg)
        >>> h.losses[-1] < 0.01 * h.losses[0]
        True
    """
    cfg = TrainConfig() if cfg is None else cfg
    _check_train_inputs(model, batch_fn, loss_fn, cfg, eval_fn)
    torch.manual_seed(cfg.seed)  # dropout and anything else that draws from the global RNG
    optimizer = make_optimizer(model, cfg)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: lr_multiplier(cfg, i + 1))
    history = History()
    model.train()
    for step in progress_bar(range(1, cfg.steps + 1), cfg.progress):
        lr = optimizer.param_groups[0]["lr"]  # the rate this update uses
        loss, norm = train_step(model, optimizer, batch_fn(step), loss_fn, cfg.clip, step=step)
        schedule.step()  # the next step's learning rate
        history.steps.append(step)
        history.losses.append(loss)
        history.lrs.append(lr)
        history.grad_norms.append(norm)
        if eval_fn is not None and (step % cfg.eval_every == 0 or step == cfg.steps):
            history.evals.append((step, _evaluate(model, eval_fn)))
    model.eval()  # ready for evaluation and generation
    return history


def _evaluate(model: nn.Module, eval_fn: Callable[[nn.Module], float]) -> float:
    model.eval()
    with torch.no_grad():
        value = eval_fn(model)
    model.train()
    if isinstance(value, Tensor):
        value = value.item()
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"eval_fn must return a float, got {type(value).__name__}")
    return float(value)


def _check_scalar(loss: object) -> None:
    ok = isinstance(loss, Tensor) and loss.dim() == 0 and loss.dtype.is_floating_point
    if not ok:
        got = f"shape {tuple(loss.shape)}" if isinstance(loss, Tensor) else type(loss).__name__
        raise TypeError(f"loss_fn must return a scalar floating-point tensor, got {got}")


def _check_train_inputs(
    model: object, batch_fn: object, loss_fn: object, cfg: object, eval_fn: object
) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for name, fn in (("batch_fn", batch_fn), ("loss_fn", loss_fn)):
        if not callable(fn):
            raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
    if eval_fn is not None and not callable(eval_fn):
        raise TypeError(f"eval_fn must be callable or None, got {type(eval_fn).__name__}")
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")


def progress_bar(steps: range, show: bool):
    """``steps`` wrapped in a ``tqdm.auto`` bar when asked for and available.

    ``tqdm`` is not a dependency of the library: without it the loop runs silently.
    """
    if not show:
        return steps
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm ships with the book's environment
        return steps
    return tqdm(steps, desc="training", unit="step")


# -------------------------------------------------------------------------------- figure


def plot_history(history: History, ax=None, title: str = "Training loss"):
    """The training loss per step (and the ``eval_fn`` values) on a logarithmic y axis.

    Args:
        history: what :func:`train` returned.
        ax: a matplotlib ``Axes`` to draw on (default: a new figure).
        title: the axes' title.

    Returns:
        The ``Axes``.
    """
    if not isinstance(history, History):
        raise TypeError(f"history must be a History, got {type(history).__name__}")
    if not history.steps:
        raise ValueError("history must hold at least one step, got an empty History")
    import matplotlib.pyplot as plt

    from tfbook.plotting import COLORS

    if ax is None:
        _, ax = plt.subplots(figsize=(6.0, 3.5))
    ax.plot(history.steps, history.losses, color=COLORS[0], lw=1.2, label="training loss")
    if history.evals:
        steps, values = zip(*history.evals, strict=True)
        ax.plot(steps, values, "o--", color=COLORS[1], ms=5, label="eval_fn")
        ax.legend()
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    return ax
