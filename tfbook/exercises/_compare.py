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


def _describe(x: Any) -> str:
    """Short, deterministic description of a value (for the 'call' line of feedback)."""
    if isinstance(x, torch.Tensor):
        return f"Tensor{tuple(x.shape)} {str(x.dtype).replace('torch.', '')}"
    if isinstance(x, np.ndarray):
        return f"ndarray{tuple(x.shape)} {x.dtype}"
    if isinstance(x, (list, tuple)) and len(x) > 6:
        return f"{type(x).__name__} of {len(x)} items"
    if isinstance(x, str) and len(x) > 40:
        return repr(x[:37] + "...")
    if isinstance(x, float):
        return f"{x:.4g}"
    return repr(x)


def _fmt(v: float) -> str:
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    v = float(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.4f}"


def _number_difference(expected: float, got: float, atol: float, rtol: float) -> str:
    """``expected 0.000698771, got 0.000698072 (relative difference 1.0e-03, allowed 1e-05)``:
    enough digits to tell the two numbers apart, and the difference against the tolerance."""
    want, have = _fmt(expected), _fmt(got)
    if want == have:  # four decimals hide the difference
        want, have = f"{expected:.9g}", f"{got:.9g}"
    text = f"expected {want}, got {have}"
    if not math.isfinite(expected) or not math.isfinite(got):
        return text
    if expected != 0.0 and rtol * abs(expected) >= atol:
        rel = abs(got - expected) / abs(expected)
        return text + f" (relative difference {rel:.1e}, allowed {rtol:g})"
    return text + f" (difference {abs(got - expected):.1e}, allowed {atol:g})"


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
    if np.isnan(g).any() and not np.isnan(e).any():
        idx = tuple(int(i) for i in np.argwhere(np.isnan(g))[0])
        return f"{where}: contains NaN (first at index {idx}); the reference has none"
    close = np.isclose(g, e, atol=atol, rtol=rtol, equal_nan=True)
    if close.all():
        return None
    diff = np.where(close, 0.0, np.abs(np.nan_to_num(g - e, nan=np.inf, posinf=np.inf)))
    idx = tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape))
    n_bad = int((~close).sum())
    return (
        f"{where}: values differ in {n_bad} of {e.size} entries; largest difference at "
        f"index {idx}: expected {_fmt(e[idx])}, got {_fmt(g[idx])}"
    )


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
            return f"{where}: {_number_difference(float(expected), float(got), atol, rtol)}"
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
