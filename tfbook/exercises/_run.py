"""Running a student's function on a question's cases (the exercise engine, chapter 0).

:func:`run_answer` is the only part of a check that runs student code: it calls the answer
on fresh, seeded copies of each :class:`Case` under the watchers of ``_watch`` and records
what happened as plain :class:`Outcome` s, which can cross a process boundary (the batch
grader runs this half in a sandbox). It never sees the reference.
"""

from __future__ import annotations

import copy
import linecache
import os
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tfbook.exercises._compare import compare
from tfbook.exercises._drivers import _driven
from tfbook.exercises._watch import (
    _CallWatch,
    _OneThread,
    _run_with_timeout,
    _Timeout,
    _WorkCounter,
)

__all__ = ["Case", "Frozen", "Outcome", "OUTCOME_KINDS", "run_answer"]


@dataclass
class Case:
    """One input on which the answer is compared with the reference.

    Args:
        name: short, stable description shown in feedback (``"random, seed 3"``).
        args: positional arguments (copied before every call; never shared).
        kwargs: keyword arguments.
        seed: when set, ``torch``/``numpy`` are seeded with it right before each call, so
            functions that draw random numbers are compared on the same draws.
    """

    name: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    seed: int | None = None


class Frozen:
    """A fixed callable a case hands to the student's function (a layer, a model, an RNN).

    It calls ``fn`` without gradients, prints as the short stable ``name`` (so feedback text
    is deterministic) and deep-copies to itself, so the engine sees the same object before and
    after the call (the answer may call it, not change it).
    """

    def __init__(self, name: str, fn: Callable[..., Any]) -> None:
        self.name, self.fn = name, fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with torch.no_grad():
            return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return self.name

    def __deepcopy__(self, memo: dict) -> Frozen:
        return self


def _clone(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    return copy.deepcopy(x)


def failed_case_copy(qid: str, case: Case | None) -> Case:
    """A fresh copy of the case a check of question ``qid`` last failed on (``last_case()``
    in the notebook and in the grading sandbox); a clear error before any failure."""
    if case is None:
        raise LookupError(
            f"[{qid}] no failed case yet: last_case() returns the inputs of the case "
            "a check failed on, after a check that did not pass"
        )
    args = tuple(_clone(a) for a in case.args)
    return Case(case.name, args, {k: _clone(v) for k, v in case.kwargs.items()}, case.seed)


def _seed(seed: int | None) -> None:
    if seed is not None:
        torch.manual_seed(seed)
        np.random.seed(seed)


def _call(fn: Callable[..., Any], case: Case, driver: str | None = None) -> Any:
    args = tuple(_clone(a) for a in case.args)
    kwargs = {k: _clone(v) for k, v in case.kwargs.items()}
    _seed(case.seed)
    return _driven(fn, driver)(*args, **kwargs)


#: Where the code that a check runs but the student did not write lives: the engine, the
#: library, PyTorch, NumPy and the standard library (a traceback frame elsewhere is the
#: student's: a notebook cell, or a module of their own).
def _not_students() -> tuple[str, ...]:
    import sysconfig

    import tfbook

    roots = {os.path.dirname(os.path.realpath(tfbook.__file__))}
    for module in (torch, np, os):
        roots.add(os.path.dirname(os.path.realpath(module.__file__)))
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            roots.add(os.path.realpath(path))
    return tuple(sorted(root + os.sep for root in roots))


def _students_line(tb: Any) -> str:
    """``line 3 of my_attention: y = x @ x``: the last frame of a traceback in the student's
    code (not the engine's, the library's or PyTorch's), or ``""`` when there is none."""
    skip = _not_students()
    found = ""
    for frame, lineno in traceback.walk_tb(tb):
        filename = frame.f_code.co_filename
        if filename.startswith("<frozen") or os.path.realpath(filename).startswith(skip):
            continue
        line = linecache.getline(filename, lineno).strip()
        if len(line) > 100:
            line = line[:96] + " ..."
        found = f"line {lineno} of {frame.f_code.co_name}" + (f": {line}" if line else "")
    return found


#: The longest exception message a feedback line repeats.
_MESSAGE_LIMIT = 300


def _raised(exc: BaseException) -> str:
    """``"ValueError: first line of the message"`` and, on the next line, where in the
    student's code it was raised."""
    text = str(exc).strip()
    message = text.splitlines()[0] if text else ""
    if len(message) > _MESSAGE_LIMIT:
        message = message[: _MESSAGE_LIMIT - 4] + " ..."
    where = _students_line(exc.__traceback__)
    return f"{type(exc).__name__}: {message}" + (f"\nin your code, {where}" if where else "")


#: What an answer can do on one case (see :class:`Outcome`).
OUTCOME_KINDS = (
    "returned",
    "counted",
    "not attempted",
    "timeout",
    "raised",
    "modified",
    "forbidden",
)


@dataclass
class Outcome:
    """What an answer did on one case: plain data, so it can cross a process boundary.

    ``kind`` is one of :data:`OUTCOME_KINDS`: ``"returned"`` (``value`` is the output),
    ``"counted"`` (on a loop probe: ``value`` is the output, ``lines`` and ``tensor_ops`` the
    work it took), ``"not attempted"`` (it raised ``NotImplementedError``), ``"timeout"``,
    ``"raised"`` (``detail`` is ``"ExceptionType: first line of the message"``),
    ``"forbidden"`` (it called ``detail``, a function the exercise asks the student to write)
    or ``"modified"`` (it changed its positional argument number ``index`` in place).
    """

    kind: str
    value: Any = None
    detail: str = ""
    index: int = -1
    lines: int = -1
    tensor_ops: int = -1


def run_answer(
    answer: Callable[..., Any],
    cases: Sequence[Case],
    timeout: float,
    forbidden: Sequence[str] = (),
    *,
    probes: Sequence[Case] = (),
    driver: str | None = None,
) -> list[Outcome]:
    """Call ``answer`` on every case (fresh copies of the inputs, seeded, time-limited).

    Stops after the first case that does not return normally, or that called one of the
    ``forbidden`` functions (dotted names). When every case returned, the answer runs on the
    ``probes`` too, with its work counted (outcomes of kind ``"counted"``, after the cases'
    outcomes). ``driver`` names the ``DRIVERS`` entry that calls the answer. This is the
    only part of a check that runs the student's code; it never sees the reference.
    """
    with _OneThread():
        return _run_answer(answer, cases, timeout, forbidden, probes, driver)


def _run_answer(
    answer: Callable[..., Any],
    cases: Sequence[Case],
    timeout: float,
    forbidden: Sequence[str],
    probes: Sequence[Case],
    driver: str | None,
) -> list[Outcome]:
    outcomes: list[Outcome] = []
    watch = _CallWatch(forbidden) if forbidden else None
    call = _driven(answer, driver)
    for number, case in enumerate([*cases, *probes]):
        counter = _WorkCounter() if number >= len(cases) else None
        before = [_clone(a) for a in case.args]
        args = tuple(_clone(a) for a in case.args)
        kwargs = {k: _clone(v) for k, v in case.kwargs.items()}

        def run(args=args, kwargs=kwargs, seed=case.seed, counter=counter):
            _seed(seed)
            once = (lambda: counter.run(lambda: call(*args, **kwargs))) if counter else None
            once = once or (lambda: call(*args, **kwargs))
            return watch.run(once) if watch is not None else once()

        try:
            got = _run_with_timeout(run, timeout)
        except NotImplementedError:
            outcomes.append(Outcome("not attempted"))
            break
        except _Timeout:
            outcomes.append(Outcome("timeout"))
            break
        except Exception as exc:  # noqa: BLE001 - the student's bug, reported
            outcomes.append(Outcome("raised", detail=_raised(exc)))
            break
        if watch is not None and watch.seen:
            outcomes.append(Outcome("forbidden", detail=watch.seen))
            break
        if counter is not None and counter.tampered:
            outcomes.append(Outcome("forbidden", detail="sys.settrace"))
            break
        changed = [
            i
            for i, (old, new) in enumerate(zip(before, args, strict=True))
            if compare(old, new, atol=0.0, rtol=0.0) is not None
        ]
        if changed:
            outcomes.append(Outcome("modified", index=changed[0]))
            break
        if counter is not None:
            outcomes.append(
                Outcome("counted", got, lines=counter.lines, tensor_ops=counter.tensor_ops)
            )
        else:
            outcomes.append(Outcome("returned", got))
    return outcomes
