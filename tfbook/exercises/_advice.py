"""Diagnoses: what the feedback says is wrong with an answer (the exercise engine, chapter 0).

- :class:`Mistake`: a question's known wrong implementation and the advice that fixes it,
  recognised because the answer's output equals the mistake's;
- :class:`Bugs`: the bugs of a debug question's given code, so a partial fix can be named;
- :func:`dtype_lost`: an answer that computed in a smaller float dtype than its input's.

Two generic diagnoses, used after a question's own mistakes:

- :func:`crash_advice`: an exception whose message is known to mislead (``"Target -100 is
  out of bounds"`` from ``ignore_index=pad_id``) mapped to what to change (:data:`CRASHES`);
- :func:`property_advice`: what a wrong tensor output shows by itself: probabilities that are
  negative or whose rows do not sum to 1, a constant factor or a flipped sign, axes swapped.

Both return a ``(name, fix)`` pair or ``None``; the engine shows it under "Likely mistake"
(a crash) or "Your output shows" (a property).
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tfbook.exercises._run import Case

__all__ = [
    "Mistake",
    "Bugs",
    "LOOP_OVER_POSITIONS",
    "CRASHES",
    "RETURNED_NONE",
    "crash_advice",
    "property_advice",
    "dtype_lost",
]


@dataclass
class Mistake:
    """A realistic wrong implementation and the advice that fixes it.

    Args:
        name: what the mistake is, in a few words (``"no 1/sqrt(d_k) scaling"``).
        fn: the wrong implementation, same signature as the reference.
        fix: one or two sentences telling the student what to change.
        heading: how the feedback introduces ``name``: ``"Likely mistake"`` for a mistake
            recognised by its output, ``"Your output shows"`` for a property of the output
            alone (rows that do not sum to 1, a constant factor).
    """

    name: str
    fn: Callable[..., Any]
    fix: str
    heading: str = "Likely mistake"


@dataclass
class Bugs:
    """The bugs of a debug question's given code, so that a partial fix can be named.

    Args:
        fn: the given code with a switch per bug: ``fn(*case.args, **case.kwargs, **switches)``
            where ``switches`` maps every name of ``bugs`` to ``True`` (the bug is there) or
            ``False`` (it is fixed); all ``False`` is the reference.
        bugs: ``name -> (what is still wrong, how to fix it)``, in the order the task lists
            them (``"zero_grad": ("the gradients are never reset", "call ...")``).

    When an answer matches none of the question's mistakes, the engine tries every mix of
    fixed and remaining bugs and, on a match, says how many are fixed and which remain.
    """

    fn: Callable[..., Any]
    bugs: dict[str, tuple[str, str]]

    def __post_init__(self) -> None:
        if not self.bugs:
            raise ValueError("bugs must name at least one bug, got none")
        for name, pair in self.bugs.items():
            if not (isinstance(pair, tuple) and len(pair) == 2):
                raise TypeError(
                    f"bugs[{name!r}] must be a (what is still wrong, how to fix it) pair, "
                    f"got {pair!r}"
                )

    def remaining(self) -> list[tuple[str, ...]]:
        """Every non-empty set of bugs still present, fewest first (one left before two)."""
        names = list(self.bugs)
        found = []
        for size in range(1, len(names) + 1):
            found += list(itertools.combinations(names, size))
        return found

    def mistake(self, left: Sequence[str]) -> Mistake:
        """The diagnosis of an answer in which exactly the bugs ``left`` remain."""
        n, k = len(self.bugs), len(self.bugs) - len(left)
        whats = "; ".join(self.bugs[name][0] for name in left)
        fixes = " ".join(self.bugs[name][1] for name in left)
        if k == 0:
            name = f"none of the {count_word(n)} bugs fixed yet: {whats}"
        else:
            fixed = "is" if k == 1 else "are"
            name = f"{count_word(k)} of the {count_word(n)} bugs {fixed} fixed, but still: {whats}"
        return Mistake(name, functools.partial(self.fn, **self.switches(left)), fixes)

    def switches(self, left: Sequence[str]) -> dict[str, bool]:
        return {name: name in left for name in self.bugs}


def count_word(n: int) -> str:
    words = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    return words[n] if 0 <= n < len(words) else str(n)


#: The diagnosis of an answer whose work grows with the number of positions.
LOOP_OVER_POSITIONS = Mistake(
    "a loop over positions",
    None,  # recognised by counting the answer's work, not by comparing outputs
    "Work on whole tensors: a matrix product of the (B, T, ...) tensors computes every "
    "position at once, and softmax and arithmetic act on all rows together. Remove the Python "
    "loop, the list comprehension or the torch.stack of per-position results.",
)


def float_tensors(value: Any) -> list[torch.Tensor]:
    """The floating-point tensors in ``value`` and, one level down, in its items."""
    items = value if isinstance(value, (list, tuple)) else [value]
    if isinstance(value, dict):
        items = list(value.values())
    return [t for t in items if isinstance(t, torch.Tensor) and t.dtype.is_floating_point]


def dtype_lost(case: Case, expected: Any, got: Any) -> Mistake | None:
    """An answer in a smaller float dtype than its input's, which the output needs."""
    inputs = {t.dtype for a in [*case.args, *case.kwargs.values()] for t in float_tensors(a)}
    pairs = zip(float_tensors(expected), float_tensors(got), strict=False)
    for e, g in pairs:
        if e.dtype != g.dtype and inputs == {e.dtype}:
            mine, theirs = str(g.dtype).replace("torch.", ""), str(e.dtype).replace("torch.", "")
            return Mistake(
                f"your answer is {mine}, the input was {theirs}",
                None,
                f"Stay in the input's dtype: no .float() or .to({mine}), and new tensors made "
                f"with dtype=x.dtype; the check compares more digits than {mine} keeps.",
            )
    return None


#: Exceptions whose message does not say what to change: ``(pattern, name, fix)``, the
#: pattern searched in ``"ExceptionType: message"``.
CRASHES: tuple[tuple[str, str, str], ...] = (
    (
        r"Target -100 is out of bounds",
        "ignore_index set to the padding id, while the targets already use -100",
        "teacher_forcing and causal_lm_targets mark the positions to ignore with -100 "
        "(tfbook.objectives.IGNORE_INDEX), which is F.cross_entropy's default ignore_index: "
        "give those targets to lm_loss, or to F.cross_entropy without ignore_index=pad_id.",
    ),
    (
        r"Target -?\d+ is out of bounds",
        "a target that is not a token id in [0, V)",
        "Every target must be a token id below the vocabulary size V (the logits' last axis); "
        "positions to skip carry the ignore index (-100, the default of F.cross_entropy).",
    ),
    (
        r"Expected target size \[\d+, \d+\], got \[\d+, \d+\]",
        "logits of shape (B, T, V) given to F.cross_entropy as they are",
        "F.cross_entropy wants the classes on axis 1: flatten the logits to (B * T, V) and the "
        "targets to (B * T,) with reshape, or use tfbook.objectives.lm_loss where the task "
        "allows it.",
    ),
    (
        r"expected (?:m1 and m2 to have the same dtype|scalar type \w+ but found \w+)"
        r"|expected both vectors to have same dtype|must have the same dtype",
        "float32 and float64 tensors mixed in one operation",
        "Make new tensors in the inputs' dtype (torch.zeros(..., dtype=x.dtype), "
        "torch.tensor(..., dtype=x.dtype)) and do not convert the inputs with .float().",
    ),
    (
        r"element 0 of tensors does not require grad",
        "backward() on a value that has no graph",
        "The loss must come from the model's output by tensor operations: no torch.no_grad() "
        "around the forward pass, and no .item(), .detach() or .data before backward().",
    ),
    (
        r"backward through the graph a second time",
        "backward() twice through the same graph",
        "Compute the loss anew from the model's output at every step (inside the loop); "
        "a loss kept from an earlier step has already been backpropagated.",
    ),
    (
        r"modified by an inplace operation",
        "an in-place operation on a tensor backward() still needs",
        "Use the out-of-place forms (x = x + y, masked_fill, not +=, masked_fill_) on tensors "
        "that are part of the computation of the loss.",
    ),
    (
        r"leaf Variable that requires grad is being used in an in-place operation",
        "a parameter changed in place while gradients are recorded",
        "Let the optimizer change the parameters (optimizer.step()); a manual update goes "
        "inside torch.no_grad().",
    ),
    (
        r"view size is not compatible with input tensor's size and stride",
        "view() on a tensor that transpose() made non-contiguous",
        "After transpose() or permute() use .reshape(...), or .contiguous().view(...).",
    ),
    (
        r"takes \d+ positional arguments? but \d+ (?:was|were) given"
        r"|missing \d+ required positional argument|got an unexpected keyword argument",
        "parameters that differ from the task's signature",
        "The check calls your function as on the call line above: give it exactly the "
        "parameters the task names, in that order (with the defaults the task states).",
    ),
    (
        r"'NoneType' object (?:has no attribute|is not subscriptable|is not iterable)",
        "a value that is None where a tensor was expected",
        "A function that ends without return gives None: check that every function of yours "
        "(and every branch of it) returns its result.",
    ),
)


#: The diagnosis of an answer that returned ``None`` where a value was expected.
RETURNED_NONE = (
    "your function returned None",
    "A function without a return statement (or whose last line computes a value without "
    "returning it) gives None: end it with return and the result.",
)


def crash_advice(detail: str) -> tuple[str, str] | None:
    """The ``(name, fix)`` of the first :data:`CRASHES` entry whose pattern occurs in
    ``detail`` (``"ExceptionType: message"``), or ``None``."""
    first_line = detail.splitlines()[0] if detail else ""
    for pattern, name, fix in CRASHES:
        if re.search(pattern, first_line):
            return name, fix
    return None


def _float64(x: Any) -> np.ndarray | None:
    if isinstance(x, torch.Tensor) and (x.dtype.is_floating_point or x.dtype == torch.bool):
        return x.detach().cpu().to(torch.float64).numpy()
    if isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float64)
    return None


def _range(values: np.ndarray) -> str:
    low, high = float(values.min()), float(values.max())
    return f"{low:.4g}" if f"{low:.4g}" == f"{high:.4g}" else f"{low:.4g} to {high:.4g}"


def _is_distribution(e: np.ndarray) -> bool:
    """Rows (the last axis) of non-negative numbers summing to 1."""
    if e.ndim == 0 or e.shape[-1] < 2 or not np.isfinite(e).all() or (e < 0).any():
        return False
    return bool(np.allclose(e.sum(axis=-1), 1.0, atol=1e-4))


def _probabilities(e: np.ndarray, g: np.ndarray) -> tuple[str, str] | None:
    if not _is_distribution(e) or not np.isfinite(g).all():
        return None
    if (g < -1e-6).any():
        return (
            f"negative probabilities (the smallest is {float(g.min()):.4g})",
            "Probabilities are never negative: exponentials are positive, and dividing by "
            "their sum keeps them so. Look for a subtraction after the exponential.",
        )
    sums = g.sum(axis=-1)
    if np.allclose(sums, 1.0, atol=1e-4):
        return None
    other = [
        axis
        for axis in range(g.ndim - 1)
        if g.shape[axis] > 1 and np.allclose(g.sum(axis=axis), 1.0, atol=1e-4)
    ]
    if other:
        return (
            f"your output sums to 1 along axis {other[0]}, not along the last axis",
            "Normalise along the last axis (dim=-1): each row, not each column, is one "
            "distribution.",
        )
    return (
        f"the rows of your output sum to {_range(sums)}, not 1",
        "Each row is a distribution: divide the exponentials by their sum along the same "
        "axis (keepdim=True), and add nothing to that sum.",
    )


def _factor(e: np.ndarray, g: np.ndarray) -> tuple[str, str] | None:
    """``got`` is one constant times ``expected`` (a scale missing, doubled, or -1)."""
    if not (np.isfinite(e).all() and np.isfinite(g).all()) or np.abs(e).max() == 0:
        return None
    c = float((e * g).sum() / (e * e).sum())
    if abs(c) < 1e-12 or abs(c - 1.0) < 1e-6:
        return None
    if not np.allclose(g, c * e, rtol=1e-5, atol=1e-7 * max(1.0, float(np.abs(g).max()))):
        return None
    if abs(c + 1.0) < 1e-6:
        return (
            "the sign of every entry is flipped",
            "Your output is minus the expected one: look for a subtraction in the wrong "
            "order or a minus sign too many.",
        )
    named = ""
    for value, name in ((c, "{}"), (1.0 / c, "1/{}")):
        square = value * value
        whole = abs(value - round(value)) < 1e-6
        if square > 1.5 and abs(square - round(square)) < 1e-6 and value > 0 and not whole:
            named = " = " + name.format(f"sqrt({round(square)})")
            break
    return (
        f"every entry is {c:.4g}{named} times the expected one",
        "A constant factor is missing or one too many: check each scale in the formula "
        "(1/sqrt(d_k), a mean instead of a sum, a temperature) and where it is applied.",
    )


def _swapped(e: np.ndarray, g: np.ndarray) -> tuple[str, str] | None:
    """The last two axes of ``got`` swapped (same shape when they have the same size)."""
    if e.ndim < 2 or e.shape[-1] != e.shape[-2] or not np.isfinite(g).all():
        return None
    if np.allclose(g, np.swapaxes(e, -1, -2), rtol=1e-4, atol=1e-6):
        return (
            "your output is the expected one with its last two axes swapped",
            "Rows and columns are exchanged: check the order of a matrix product "
            "(q @ k.transpose(-2, -1), not k @ q.transpose(-2, -1)) or a transpose too many.",
        )
    return None


def _shape(e: np.ndarray, g: np.ndarray) -> tuple[str, str] | None:
    if e.shape == g.shape:
        return None
    if sorted(e.shape) == sorted(g.shape):
        return (
            f"your shape {g.shape} has the expected sizes {e.shape} in another order",
            "An axis is in the wrong place: check each transpose, permute or view against the "
            "shapes the task names.",
        )
    if tuple(n for n in g.shape if n != 1) == tuple(n for n in e.shape if n != 1):
        extra = "an extra" if g.ndim > e.ndim else "a missing"
        return (
            f"{extra} axis of size 1: shape {g.shape}, expected {e.shape}",
            "Remove the axis with squeeze(dim) or add it with unsqueeze(dim) (or keepdim=) "
            "where the task's shape says so.",
        )
    return None


def property_advice(expected: Any, got: Any) -> tuple[str, str] | None:
    """What a wrong tensor output shows by itself, compared with the expected one, as
    ``(what, what to check)``; ``None`` when nothing stands out."""
    if got is None and expected is not None:
        return RETURNED_NONE
    e, g = _float64(expected), _float64(got)
    if e is None or g is None:
        return None
    if e.shape != g.shape:
        return _shape(e, g)
    for check in (_factor, _probabilities, _swapped):
        found = check(e, g)
        if found is not None:
            return found
    return None
