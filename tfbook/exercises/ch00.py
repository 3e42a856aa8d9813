"""Warm-up exercises of the preface (chapter 0): how checks, hints and solutions work.

Four small tensor exercises every later chapter relies on: a numerically stable softmax,
one-hot vectors, a masked mean over a padded batch, and counting a linear layer's
parameters. Used by ``book/00_exercises.ipynb`` and by the grading tests.
"""

from __future__ import annotations

import torch

from tfbook.exercises._engine import Case, ExerciseSet, Mistake, Question

# --------------------------------------------------------------------------- q1 softmax


def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax along ``dim``, stable for large inputs (the maximum is subtracted first)."""
    shifted = x - x.amax(dim=dim, keepdim=True)
    e = shifted.exp()
    return e / e.sum(dim=dim, keepdim=True)


def _softmax_naive(x, dim=-1):
    e = x.exp()
    return e / e.sum(dim=dim, keepdim=True)


def _softmax_axis0(x, dim=-1):
    shifted = x - x.amax(dim=0, keepdim=True)
    e = shifted.exp()
    return e / e.sum(dim=0, keepdim=True)


def _softmax_global(x, dim=-1):
    shifted = x - x.max()
    e = shifted.exp()
    return e / e.sum()


def _softmax_cases() -> list[Case]:
    cases = []
    for seed in (1, 2):
        g = torch.Generator().manual_seed(seed)
        cases.append(Case(f"random (3, 5), seed {seed}", (torch.randn(3, 5, generator=g),)))
    g = torch.Generator().manual_seed(3)
    cases.append(Case("random (2, 3, 4), dim=1", (torch.randn(2, 3, 4, generator=g),), {"dim": 1}))
    cases.append(Case("large scores (1000 and up)", (torch.tensor([[1000.0, 1001.0, 1002.0]]),)))
    rows = torch.tensor([[0.0, 1.0, 2.0], [1000.0, 1001.0, 1002.0]])
    cases.append(Case("rows of very different size (one maximum per row)", (rows,)))
    # subtracting the row's mean, minimum or first entry is stable only while the row's spread
    # stays below ~88 (exp overflows in float32): only the maximum is safe for every row
    spread = torch.tensor([[-1000.0, 0.0, 1000.0], [500.0, 0.0, -500.0]])
    cases.append(Case("a wide spread within each row (-1000 to 1000)", (spread,)))
    return cases


q1 = Question(
    "ch00.q1",
    "Numerically stable softmax",
    reference=softmax,
    cases=_softmax_cases,
    mistakes=[
        Mistake(
            "softmax over the wrong axis (dim=0)",
            _softmax_axis0,
            "Normalise along the `dim` argument: every slice along `dim` must sum to 1.",
        ),
        Mistake(
            "normalised over the whole tensor",
            _softmax_global,
            "Sum with `keepdim=True` along `dim` only, not over every entry.",
        ),
        Mistake(
            "no maximum subtracted: exp overflows to inf, inf/inf = nan",
            _softmax_naive,
            "Subtract `x.amax(dim=dim, keepdim=True)` before `exp`; the result is unchanged "
            "mathematically but never overflows.",
        ),
    ],
    hints=[
        "softmax(x)_i = exp(x_i) / sum_j exp(x_j), taken along `dim`.",
        "exp(1000) is inf in float32. Subtracting the same constant from every x_i leaves "
        "the softmax unchanged: subtract the maximum along `dim`.",
    ],
    kind="implement",
    library_note="chapter 4's tfbook.attention.masked_softmax (a later chapter than this one)",
    forbidden=(
        "torch.softmax",
        "torch.nn.functional.softmax",
        "torch.Tensor.softmax",
        # the operations, under whatever name (torch.special.softmax, functools.partial ...)
        "aten._softmax",
        "aten._log_softmax",
        "aten._safe_softmax",
    ),
)


# --------------------------------------------------------------------------- q2 one-hot


def one_hot(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """``(...,)`` long ids -> ``(..., vocab_size)`` float one-hot vectors."""
    out = torch.zeros(*ids.shape, vocab_size)
    return out.scatter(-1, ids.unsqueeze(-1), 1.0)


def _one_hot_transposed(ids, vocab_size):
    return one_hot(ids, vocab_size).transpose(-1, -2)


def _one_hot_shifted(ids, vocab_size):
    out = torch.zeros(*ids.shape, vocab_size)
    return out.scatter(-1, (ids.unsqueeze(-1) - 1) % vocab_size, 1.0)


def _one_hot_ones(ids, vocab_size):
    return torch.ones(*ids.shape, vocab_size) - one_hot(ids, vocab_size)


def _one_hot_cases() -> list[Case]:
    g = torch.Generator().manual_seed(4)
    return [
        Case("ids (2, 3), V=5", (torch.randint(0, 5, (2, 3), generator=g), 5)),
        Case("ids [0, 1, 2, 3], V=4", (torch.tensor([0, 1, 2, 3]), 4)),
        Case("single id 0, V=3", (torch.tensor([0]), 3)),
    ]


q2 = Question(
    "ch00.q2",
    "One-hot vectors",
    reference=one_hot,
    cases=_one_hot_cases,
    check_dtype=True,  # the task asks for a float tensor (F.one_hot's int64 cannot multiply W)
    mistakes=[
        Mistake(
            "vocabulary axis first instead of last",
            _one_hot_transposed,
            "Return shape `(*ids.shape, vocab_size)`: the one-hot axis is the last one.",
        ),
        Mistake(
            "off by one (id k sets column k-1)",
            _one_hot_shifted,
            "Token id k sets column k; ids start at 0.",
        ),
        Mistake(
            "zeros and ones swapped",
            _one_hot_ones,
            "Start from zeros and put a single 1 at the id's column.",
        ),
    ],
    hints=[
        "Start from `torch.zeros(*ids.shape, vocab_size)`.",
        "`tensor.scatter(-1, ids.unsqueeze(-1), 1.0)` writes a 1 at each id's column.",
    ],
    kind="implement",
    library_note="none: nn.Embedding's look-up, chapter 2, replaces one-hot products",
)


# --------------------------------------------------------------------------- q3 masked mean


def masked_mean(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean over the first ``lengths[b]`` positions of each sequence.

    Shape: x ``(B, T, d)``, lengths ``(B,)`` -> ``(B, d)``.
    """
    positions = torch.arange(x.shape[1])
    keep = (positions[None, :] < lengths[:, None]).to(x.dtype)  # (B, T)
    total = (x * keep[:, :, None]).sum(dim=1)
    return total / lengths[:, None].to(x.dtype)


def _mean_with_padding(x, lengths):
    return x.mean(dim=1)


def _mean_by_max_len(x, lengths):
    positions = torch.arange(x.shape[1])
    keep = (positions[None, :] < lengths[:, None]).to(x.dtype)
    return (x * keep[:, :, None]).sum(dim=1) / x.shape[1]


def _mean_off_by_one(x, lengths):
    positions = torch.arange(x.shape[1])
    keep = (positions[None, :] <= lengths[:, None]).to(x.dtype)
    return (x * keep[:, :, None]).sum(dim=1) / lengths[:, None].to(x.dtype)


def _masked_mean_cases() -> list[Case]:
    cases = []
    for seed in (5, 6):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(3, 6, 4, generator=g)
        cases.append(
            Case(f"random (3, 6, 4), lengths [6, 3, 1], seed {seed}", (x, torch.tensor([6, 3, 1])))
        )
    g = torch.Generator().manual_seed(7)
    cases.append(Case("no padding", (torch.randn(2, 4, 3, generator=g), torch.tensor([4, 4]))))
    return cases


q3 = Question(
    "ch00.q3",
    "Mean over a padded batch",
    reference=masked_mean,
    cases=_masked_mean_cases,
    mistakes=[
        Mistake(
            "padding positions included in the mean",
            _mean_with_padding,
            "Multiply by a 0/1 mask of the real positions before summing.",
        ),
        Mistake(
            "divided by the padded length T instead of each sequence's length",
            _mean_by_max_len,
            "Divide each sequence's sum by its own length, `lengths[:, None]`.",
        ),
        Mistake(
            "mask keeps one position too many (<= instead of <)",
            _mean_off_by_one,
            "Position t is real when t < length (positions start at 0).",
        ),
    ],
    hints=[
        "Build a (B, T) table that is 1 at the real positions and 0 at the padding: compare "
        "a row of positions 0 .. T - 1 with a column of lengths, and broadcasting does the rest.",
        "Zero the padding with the table, sum over the time axis, and divide each sequence's "
        "sum by its own length.",
    ],
    kind="implement",
    library_note="none: a warm-up on masks; chapter 4 builds masks in tfbook.attention",
)


# --------------------------------------------------------------------------- q4 parameters


def linear_parameter_count(d_in: int, d_out: int, bias: bool = True) -> int:
    """Number of trainable parameters of ``nn.Linear(d_in, d_out, bias)``."""
    return d_in * d_out + (d_out if bias else 0)


def _count_without_bias(d_in, d_out, bias=True):
    return d_in * d_out


def _count_bias_per_input(d_in, d_out, bias=True):
    return d_in * d_out + (d_in if bias else 0)


def _count_cases() -> list[Case]:
    return [
        Case("d_in=512, d_out=2048", (512, 2048)),
        Case("d_in=3, d_out=7, bias=True", (3, 7), {"bias": True}),
        Case("d_in=4, d_out=4, bias=False", (4, 4), {"bias": False}),
    ]


q4 = Question(
    "ch00.q4",
    "Parameters of a linear layer",
    reference=linear_parameter_count,
    cases=_count_cases,
    mistakes=[
        Mistake(
            "bias forgotten",
            _count_without_bias,
            "A linear layer with bias has one bias per output unit: add `d_out`.",
        ),
        Mistake(
            "one bias per input instead of per output",
            _count_bias_per_input,
            "y = xW^T + b has one bias per output: the bias has d_out entries.",
        ),
    ],
    hints=[
        "The weight matrix has shape (d_out, d_in).",
        "Compare with `sum(p.numel() for p in nn.Linear(d_in, d_out).parameters())`.",
    ],
    kind="implement",
    library_note="none: arithmetic on the parameter shapes of nn.Linear",
)


EXERCISES = ExerciseSet.collect(globals(), "Warm-up exercises")
progress = EXERCISES.progress
__all__ = [*EXERCISES.names, "EXERCISES", "progress"]
