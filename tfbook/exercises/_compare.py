"""Comparison of an answer's output with the reference's (the exercise engine, chapter 0).

:func:`compare` turns two outputs into ``None`` (equal within the tolerances) or a one-line,
deterministic description of the first difference; :func:`compare_modules` (with
:func:`adopt_weights` and :func:`run_module`) compares a question's answer that is an
``nn.Module`` with the reference module on the same weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["compare", "run_module", "adopt_weights", "compare_modules"]


#: The longest description of one argument or value in feedback (a state dict or a long list
#: is summarised, never printed whole).
_DESCRIBE_LIMIT = 160


def _shape(shape: Any) -> str:
    return str(tuple(int(n) for n in shape))


def _plural(value: Any) -> str:
    """What a list of ``value`` s is called: ``ints``, ``tensors``, ``lists`` ..."""
    if isinstance(value, torch.Tensor):
        return "tensors"
    if isinstance(value, bool):
        return "bools"
    if isinstance(value, (int, np.integer)):
        return "ints"
    if isinstance(value, (float, np.floating)):
        return "floats"
    if isinstance(value, str):
        return "strings"
    return type(value).__name__ + "s"


def _describe_sequence(x: list | tuple, depth: int) -> str:
    kind = type(x).__name__
    if not x:
        return repr(x)
    open_, close = ("[", "]") if isinstance(x, list) else ("(", ")")
    parts = [_describe(item, depth + 1) for item in x[:7]]
    whole = open_ + ", ".join(parts) + ("," if len(x) == 1 and kind == "tuple" else "") + close
    if len(x) <= 6 and len(whole) <= 80:
        return whole
    names = {_plural(item) for item in x}
    what = names.pop() if len(names) == 1 else "items"
    tensors = [item for item in x if isinstance(item, torch.Tensor)]
    if len(tensors) == len(x) and len({(tuple(t.shape), t.dtype) for t in tensors}) == 1:
        return f"{kind} of {len(x)} tensors {_shape(x[0].shape)} {_dtype(x[0])}"
    preview = ", ".join(parts[:3])
    return f"{kind} of {len(x)} {what}: {open_}{preview}, ...{close}"


def _dtype(x: torch.Tensor | np.ndarray) -> str:
    return str(x.dtype).replace("torch.", "")


def _describe(x: Any, depth: int = 0) -> str:
    """Short, deterministic description of a value (for the 'call' line of feedback).

    Tensors by shape and dtype (``tensor (2, 5, 8) float32``; a few integers by value), state
    dicts by their number of tensors, modules by class and parameter count, long lists by
    length and first items; nothing longer than ``_DESCRIBE_LIMIT`` characters.
    """
    if isinstance(x, torch.Tensor):
        if x.dtype in (torch.int64, torch.int32, torch.bool) and 0 < x.numel() <= 8 and x.dim():
            return f"tensor({x.tolist()}) {_dtype(x)}"
        return f"tensor {_shape(x.shape)} {_dtype(x)}"
    if isinstance(x, np.ndarray):
        return f"array {_shape(x.shape)} {_dtype(x)}"
    if isinstance(x, torch.nn.Module):
        count = sum(p.numel() for p in x.parameters())
        return f"{type(x).__name__} ({count:,} parameters)"
    if isinstance(x, dict):
        if x and all(isinstance(v, torch.Tensor) for v in x.values()):
            return f"state dict, {len(x)} tensors"
        text = "{" + ", ".join(f"{k!r}: {_describe(v, depth + 1)}" for k, v in x.items()) + "}"
        if len(text) <= _DESCRIBE_LIMIT and depth == 0 or len(text) <= 60:
            return text
        return f"dict of {len(x)} items (keys {', '.join(map(repr, list(x)[:3]))}, ...)"
    if isinstance(x, (list, tuple)):
        text = _describe_sequence(x, depth)
    elif isinstance(x, str) and len(x) > 40:
        return repr(x[:37] + "...")
    elif isinstance(x, (float, np.floating)):
        return repr(float(x)) if len(repr(float(x))) <= 8 else _number(float(x))
    else:
        text = repr(x)
    if len(text) > _DESCRIBE_LIMIT:
        return text[: _DESCRIBE_LIMIT - 4] + " ..."
    return text


def _number(v: float, digits: int = 4) -> str:
    """``v`` with ``digits`` significant digits, in plain notation from 1e-4 to 1e16."""
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == 0.0:
        return "0"
    magnitude = math.floor(math.log10(abs(v))) + 1  # digits before the point
    if 1e-4 <= abs(v) < 1e16:
        digits = max(digits, magnitude)
    return f"{v:#.{digits}g}".rstrip(".")  # trailing zeros kept: 2.420 against 2.475


def _error(v: float) -> str:
    """An error in two significant digits: ``7.0e-2``, ``0.30``, ``12``."""
    if v == 0.0 or not math.isfinite(v):
        return f"{v:g}"
    if 0.1 <= v < 100:
        return f"{v:#.2g}".rstrip(".")  # 0.30, 1.0, 12
    mantissa, exponent = f"{v:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _tolerance(v: float) -> str:
    """A tolerance as it was written: ``1e-5``, ``5e-4``, ``2.5e-3``."""
    if v == 0.0 or not math.isfinite(v):
        return f"{v:g}"
    for digits in range(6):
        mantissa, exponent = f"{v:.{digits}e}".split("e")
        if float(f"{mantissa}e{exponent}") == v:
            return f"{mantissa}e{int(exponent)}"
    return _error(v)


def _pair(expected: float, got: float) -> tuple[str, str]:
    """The two numbers with as few significant digits (4 at least) as tell them apart, and
    the same number of decimals: ``2.420`` and ``2.475``, ``0.000213`` and ``0.000198``."""
    for digits in range(4, 18):
        want, have = _number(expected, digits), _number(got, digits)
        if want != have:
            break
    if "e" in want + have or "." not in want or "." not in have:
        return want, have
    while want.endswith("0") and have.endswith("0"):  # zeros both have say nothing
        want, have = want[:-1], have[:-1]
    return want.rstrip("."), have.rstrip(".")


def _is_integer(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _number_difference(
    expected: float, got: float, atol: float, rtol: float, integers: bool = False
) -> str:
    """``expected 0.000213, got 0.000198 (relative error 7.0e-2, allowed 1e-5)``: counts as
    integers, other numbers with enough digits to tell them apart, and the difference against
    the tolerance that decides."""
    if integers:
        gap = int(got) - int(expected)
        more = "more" if gap > 0 else "less"
        return f"expected {int(expected)}, got {int(got)} ({abs(gap)} {more})"
    want, have = _pair(expected, got)
    text = f"expected {want}, got {have}"
    if not math.isfinite(expected) or not math.isfinite(got):
        return text
    if expected != 0.0 and rtol * abs(expected) >= atol:
        rel = abs(got - expected) / abs(expected)
        return text + f" (relative error {_error(rel)}, allowed {_tolerance(rtol)})"
    return text + f" (difference {_error(abs(got - expected))}, allowed {_tolerance(atol)})"


def _as_float64(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().to(torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _compare_arrays(
    expected: Any, got: Any, where: str, atol: float, rtol: float, check_dtype: bool
) -> str | None:
    kind = "torch.Tensor" if isinstance(expected, torch.Tensor) else "numpy.ndarray"
    if not isinstance(got, type(expected)) and not (
        isinstance(expected, torch.Tensor) and isinstance(got, torch.Tensor)
    ):
        return f"{where}: expected a {kind}, got {type(got).__name__}"
    if tuple(got.shape) != tuple(expected.shape):
        return f"{where}: wrong shape: expected {tuple(expected.shape)}, got {tuple(got.shape)}"
    if check_dtype and got.dtype != expected.dtype:
        return f"{where}: wrong dtype: expected {expected.dtype}, got {got.dtype}"
    is_bool = (expected.dtype in (torch.bool, np.bool_), got.dtype in (torch.bool, np.bool_))
    if is_bool[0] != is_bool[1]:  # always checked: a 0/1 float mask is not a boolean mask
        hint = " (a float mask is added to the scores and blocks nothing)" if is_bool[0] else ""
        return f"{where}: wrong dtype: expected {expected.dtype}, got {got.dtype}{hint}"
    if expected.dtype in (torch.bool, np.bool_) or got.dtype in (torch.bool, np.bool_):
        e = _as_float64(expected)
        g = _as_float64(got)
        if not np.array_equal(e, g):
            idx = tuple(int(i) for i in np.argwhere(e != g)[0])
            return (
                f"{where}: values differ at index {idx}: "
                f"expected {bool(e[idx])}, got {bool(g[idx])} "
                f"({int((e != g).sum())} of {e.size} entries differ)"
            )
        return None
    e = _as_float64(expected)
    g = _as_float64(got)
    if e.size == 0:
        return None
    for name, bad in (("NaN", np.isnan), ("inf", np.isinf)):
        if bad(g).any() and not bad(e).any():
            idx = tuple(int(i) for i in np.argwhere(bad(g))[0])
            return f"{where}: contains {name} (first at index {idx}); the reference has none"
    close = np.isclose(g, e, atol=atol, rtol=rtol, equal_nan=True)
    if close.all():
        return None
    with np.errstate(invalid="ignore"):  # -inf - -inf where both hold -inf: NaN, made inf
        diff = np.where(close, 0.0, np.abs(np.nan_to_num(g - e, nan=np.inf, posinf=np.inf)))
    idx = tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape))
    n_bad = int((~close).sum())
    integers = not (_is_floating(expected) or _is_floating(got))
    text = (
        f"{where}: values differ in {n_bad} of {e.size} entries; largest difference at "
        f"index {idx}: {_number_difference(e[idx], g[idx], atol, rtol, integers)}"
    )
    if _is_floating(expected) and _is_floating(got) and got.dtype != expected.dtype:
        text += f"; your answer is {_dtype(got)}, the expected output {_dtype(expected)}"
    return text


def _is_floating(x: torch.Tensor | np.ndarray) -> bool:
    if isinstance(x, torch.Tensor):
        return x.dtype.is_floating_point or x.dtype.is_complex
    return np.issubdtype(x.dtype, np.inexact)


def compare(
    expected: Any,
    got: Any,
    *,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    check_dtype: bool = False,
    where: str = "output",
) -> str | None:
    """Compare two outputs; return ``None`` when equal, else a one-line description.

    Tensors and arrays are compared in float64 with ``atol``/``rtol`` after checking type and
    shape (and dtype when ``check_dtype``); tuples, lists and dicts element by element;
    floats with the same tolerances; everything else with ``==``.
    """
    if isinstance(expected, (torch.Tensor, np.ndarray)):
        return _compare_arrays(expected, got, where, atol, rtol, check_dtype)
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)):
            return f"{where}: expected a {type(expected).__name__}, got {type(got).__name__}"
        if len(got) != len(expected):
            return f"{where}: expected {len(expected)} items, got {len(got)}"
        for i, (e, g) in enumerate(zip(expected, got, strict=True)):
            msg = compare(
                e, g, atol=atol, rtol=rtol, check_dtype=check_dtype, where=f"{where}[{i}]"
            )
            if msg:
                return msg
        return None
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            return f"{where}: expected a dict, got {type(got).__name__}"
        if set(got) != set(expected):
            missing = sorted(map(str, set(expected) - set(got)))
            extra = sorted(map(str, set(got) - set(expected)))
            return f"{where}: wrong keys (missing {missing}, unexpected {extra})"
        for key in expected:
            msg = compare(
                expected[key],
                got[key],
                atol=atol,
                rtol=rtol,
                check_dtype=check_dtype,
                where=f"{where}[{key!r}]",
            )
            if msg:
                return msg
        return None
    if isinstance(expected, bool) or expected is None or isinstance(expected, str):
        if got != expected or type(got) is not type(expected):
            return f"{where}: expected {expected!r}, got {_describe(got)}"
        return None
    if isinstance(expected, (int, float, np.integer, np.floating)):
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        elif isinstance(got, np.ndarray) and got.size == 1:
            got = got.item()
        if not isinstance(got, (int, float, np.integer, np.floating)) or isinstance(got, bool):
            return f"{where}: expected a number, got {type(got).__name__}"
        if not math.isclose(float(got), float(expected), abs_tol=atol, rel_tol=rtol):
            integers = _is_integer(expected) and _is_integer(got)
            difference = _number_difference(float(expected), float(got), atol, rtol, integers)
            return f"{where}: {difference}"
        return None
    if got != expected:
        return f"{where}: expected {_describe(expected)}, got {_describe(got)}"
    return None


def run_module(module: torch.nn.Module, *args: Any) -> tuple[Any, str | None]:
    """``(module.eval()(*args), None)`` without gradients, or ``(None, "Type: message")``.

    For questions whose answer is a module: the student's exception becomes text that the
    comparison reports (and compares with the reference's, when both fail the same way).
    """
    try:
        with torch.no_grad():
            return module.eval()(*args), None
    except Exception as exc:  # noqa: BLE001 - the student's bug, reported as text
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return None, f"{type(exc).__name__}: {message}"


def adopt_weights(expected: torch.nn.Module, got: Any, what: str, naming: str) -> str | None:
    """Load ``expected``'s weights into the answer ``got``, or say why it cannot take them.

    Args:
        expected: the reference module.
        got: the student's answer (should be an ``nn.Module`` with the same parameters).
        what: ``"module"`` or ``"layer"``, for the message.
        naming: how the parameters must be named, shown when the names differ.

    Returns:
        ``None`` when the weights were loaded (the two modules can now be compared on
        inputs), else a one-line description of the mismatch.
    """
    if not isinstance(got, torch.nn.Module):
        return f"expected an nn.Module (an instance of your class), got {type(got).__name__}"
    want, have = expected.state_dict(), got.state_dict()
    if set(want) != set(have):
        missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))

        def few(names: list[str]) -> str:
            return f"{names[:3]}{' ...' if len(names) > 3 else ''}"

        return (
            f"the {what}'s parameters have different names: missing {few(missing)}, "
            f"unexpected {few(extra)} ({naming})"
        )
    for key, value in want.items():
        if tuple(have[key].shape) != tuple(value.shape):
            want_shape, have_shape = tuple(value.shape), tuple(have[key].shape)
            return f"parameter {key}: expected shape {want_shape}, got {have_shape}"
    got.load_state_dict(want)
    return None


def compare_modules(
    expected: torch.nn.Module,
    got: Any,
    probes: Sequence[tuple[str, tuple]],
    what: str,
    naming: str,
) -> str | None:
    """Give the answer ``got`` the weights of ``expected`` and compare the two on ``probes``.

    For a question whose answer is a module (a layer built from library parts).

    Args:
        expected: the reference module (or a known mistake's, while diagnosing).
        got: the student's module.
        probes: ``(where, args)`` pairs: each module is called as ``module(*args)``, and
            ``where`` (``"forward(x (2, 5, 8))"``) names the call in the feedback.
        what, naming: passed to :func:`adopt_weights`.

    Returns:
        ``None`` when the outputs agree on every probe (or both modules fail with the same
        exception type), else the first difference.
    """
    problem = adopt_weights(expected, got, what, naming)
    if problem:
        return problem
    for where, args in probes:
        out_expected, err_expected = run_module(expected, *args)
        out_got, err_got = run_module(got, *args)
        if err_expected or err_got:
            if err_expected and err_got and err_expected.split(":")[0] == err_got.split(":")[0]:
                continue  # both fail the same way (used when a known mistake is recognised)
            return (
                f"{where} raised {err_got}" if err_got else f"{where} should raise {err_expected}"
            )
        diff = compare(out_expected, out_got, where=where)
        if diff:
            return diff
    return None
