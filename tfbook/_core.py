"""Reproducibility, source display and timing (chapter 0, used by every chapter)."""

from __future__ import annotations

import inspect
import os
import random
import textwrap
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from tfbook import _validate as check

__all__ = ["seed_everything", "show_source", "best_time"]  # and wide_float, for the library


def wide_float(device: torch.device | str) -> torch.dtype:
    """The widest float a device computes in: float64, except on Apple's MPS (float32 there).

    Sums of many losses and log-probabilities (a validation loss, a beam's score) are kept in
    this dtype on the device itself, so no value has to be copied to the host to add it.

    Example:
        >>> wide_float("cpu"), wide_float("mps")
        (torch.float64, torch.float32)
    """
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def seed_everything(seed: int = 0, *, deterministic: bool = True) -> torch.Generator:
    """Seed Python's ``random``, NumPy and PyTorch, and ask PyTorch for deterministic kernels.

    Args:
        seed: a non-negative integer.
        deterministic: also call ``torch.use_deterministic_algorithms(True)`` (with
            ``warn_only=True``, so an operation without a deterministic kernel warns
            instead of failing) and fix the number of CPU threads' reduction order.

    Returns:
        A ``torch.Generator`` seeded with ``seed``, for code that prefers an explicit generator.

    Example:
        >>> g = seed_everything(0)
        >>> a = torch.rand(2); _ = seed_everything(0); b = torch.rand(2)
        >>> bool(torch.equal(a, b))
        True
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.Generator().manual_seed(seed)


def _source_of(obj: object) -> str:
    try:
        return textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError) as exc:
        raise TypeError(f"show_source: no Python source available for {obj!r} ({exc})") from exc


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency of ipykernel
        return False
    shell = get_ipython()
    return shell is not None and shell.__class__.__name__ == "ZMQInteractiveShell"


class _Source:
    """A piece of source code with a highlighted HTML view and a plain-text view."""

    def __init__(self, code: str, name: str) -> None:
        self.code = code
        self.name = name

    def __repr__(self) -> str:
        return self.code.rstrip("\n")

    def _repr_markdown_(self) -> str:
        return f"```python\n{self.code.rstrip()}\n```"


def show_source(obj: object, *, display: bool = True) -> str:
    """Show the source code of a function, class or module.

    In a notebook the code is displayed as a highlighted Python block (so the HTML book
    shows it highlighted too); elsewhere it is printed as plain text. The source string
    is returned either way (``display=False`` only returns it).

    Args:
        obj: a function, class, method or module with Python source.
        display: print/display the source (default) or only return it.

    Raises:
        TypeError: for objects without Python source (builtins, C extensions).
    """
    code = _source_of(obj)
    if display:
        name = getattr(obj, "__qualname__", getattr(obj, "__name__", repr(obj)))
        src = _Source(code, name)
        if _in_notebook():
            from IPython.display import display as ipy_display

            ipy_display(src)
        else:
            print(repr(src))
    return code


def best_time(fn: Callable[..., Any], *args: Any, repeats: int = 5) -> float:
    """Seconds taken by the fastest of ``repeats`` calls ``fn(*args)``.

    The minimum is the run least disturbed by other work on the machine, so it is the most
    repeatable figure for comparing two implementations measured side by side. Timings vary
    from run to run: notebook cells that print them are tagged ``nbval-ignore-output`` and
    assert ratios, never absolute times.
    """
    check.positive_int("repeats", repeats)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - start)
    return best
