"""The checking engine behind every chapter's exercises (chapter 0).

A :class:`Question` knows a reference implementation, how to make seeded test cases,
and a list of :class:`Mistake` s: realistic wrong implementations with the advice that
fixes each. ``check(answer)`` runs the student's function on every case, compares it with
the reference and, when the output is wrong, looks for the known mistake that produces
exactly the same wrong output, so the feedback can name it.

Everything printed is deterministic plain text (nbval compares it); notebooks also get
a coloured HTML view. Environment switches:

- ``TFBOOK_STRICT=1``: a check that does not pass raises ``AssertionError`` (CI uses it,
  so a wrong reference solution can never pass).
- ``TFBOOK_COURSE_MODE=1``: ``solution()`` and ``solution_source()`` refuse, and the
  ``reference`` attribute is hidden (for graded courses).

``evaluate`` is two halves that can run in different processes: :func:`run_answer` calls the
answer on the cases and records plain :class:`Outcome` s (the only half that runs student
code), and :meth:`Question.judge` compares those outcomes with the reference. The batch
grader (``tfbook_tools.grading``) runs the first half in a sandbox and the second in its own
process.

Two things a question can ask for beyond its outputs, both observed while the answer runs:

- ``forbidden``: dotted names of functions the answer must not call (the ones the exercise
  asks the student to write), watched with ``sys.setprofile``;
- ``loop_probe``: for tasks that say "no loop over positions", inputs of two lengths
  (``T = 4`` and ``T = 32``) on which the answer's work is counted (Python lines it runs
  and tensor operations it calls, :class:`_WorkCounter`); a vectorised answer does the same
  work at both lengths, a loop over positions about eight times as much.

A question whose answer is not a plain function of its inputs (a training step that needs a
model and an optimizer) names a ``driver`` in ``DRIVERS``: the driver builds those
objects from plain data wherever the answer runs, calls the answer and returns plain data.
"""

from __future__ import annotations

import copy
import html
import inspect
import math
import os
import signal
import sys
import textwrap
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = [
    "Case",
    "Mistake",
    "Outcome",
    "Question",
    "Result",
    "ExerciseSet",
    "compare",
    "run_answer",
    "STATUSES",
    "OUTCOME_KINDS",
    "DRIVERS",
    "LOOP_OVER_POSITIONS",
]

#: Every status a check can end in.
STATUSES = ("passed", "failed", "not attempted", "error", "timeout")

_STATUS_COLOURS = {
    "passed": ("#1b5e20", "#e8f5e9"),
    "failed": ("#b71c1c", "#ffebee"),
    "not attempted": ("#37474f", "#eceff1"),
    "error": ("#bf360c", "#fbe9e7"),
    "timeout": ("#bf360c", "#fbe9e7"),
}


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


# --------------------------------------------------------------------------- cases


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


@dataclass
class Mistake:
    """A realistic wrong implementation and the advice that fixes it.

    Args:
        name: what the mistake is, in a few words (``"no 1/sqrt(d_k) scaling"``).
        fn: the wrong implementation, same signature as the reference.
        fix: one or two sentences telling the student what to change.
    """

    name: str
    fn: Callable[..., Any]
    fix: str


@dataclass
class Result:
    """The outcome of checking one answer (plain text via ``str``, HTML in notebooks)."""

    qid: str
    title: str
    status: str
    points: float
    max_points: float
    detail: str = ""
    case: str = ""
    mistake: Mistake | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def text(self) -> str:
        head = f"[{self.qid}] {self.title}: "
        if self.status == "passed":
            return head + f"passed ({self.detail})"
        if self.status == "not attempted":
            return head + "not attempted (the function still raises NotImplementedError)"
        lines = [head + self.status.upper() + (f' on case "{self.case}"' if self.case else "")]
        lines += ["  " + line for line in self.detail.splitlines()]
        if self.mistake is not None:
            lines.append(f"  Likely mistake: {self.mistake.name}.")
            lines.append(f"  How to fix it: {self.mistake.fix}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.text()

    def __repr__(self) -> str:
        return self.text()

    def _repr_html_(self) -> str:
        fg, bg = _STATUS_COLOURS[self.status]
        body = html.escape(self.text())
        return (
            f'<div class="tfbook-check tfbook-{self.status.replace(" ", "-")}" '
            f'style="border-left:4px solid {fg};background:{bg};color:{fg};'
            f'padding:6px 10px;margin:4px 0;font-family:monospace;white-space:pre-wrap">'
            f"{body}</div>"
        )


# --------------------------------------------------------------------------- comparison


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
            return f"{where}: expected {_fmt(expected)}, got {_fmt(got)}"
        return None
    if got != expected:
        return f"{where}: expected {_describe(expected)}, got {_describe(got)}"
    return None


# --------------------------------------------------------------------------- running


class _Timeout(Exception):
    pass


def _run_with_timeout(fn: Callable[[], Any], seconds: float) -> Any:
    """Run ``fn()``; raise :class:`_Timeout` after ``seconds``.

    In the main thread (a notebook cell, a script) a SIGALRM interrupts a runaway Python
    loop. Elsewhere the call runs in a daemon thread and is abandoned after the limit.
    """
    if seconds is None or seconds <= 0:
        return fn()
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGALRM"):

        def _handler(signum, frame):  # noqa: ARG001
            raise _Timeout()

        previous = signal.signal(signal.SIGALRM, _handler)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            return fn()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            box["error"] = exc

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise _Timeout()
    if "error" in box:
        raise box["error"]
    return box.get("value")


class _OneThread:
    """PyTorch on one thread while a check runs, then as it was.

    Exercise inputs are tiny: a thread pool only costs time on them (on a busy machine twenty
    times as much), and one thread gives the answer and the reference the same summation order.
    """

    def __enter__(self) -> None:
        self.threads = torch.get_num_threads()
        if self.threads != 1:
            torch.set_num_threads(1)

    def __exit__(self, *exc: object) -> None:
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)


def _clone(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    return copy.deepcopy(x)


def _seed(seed: int | None) -> None:
    if seed is not None:
        torch.manual_seed(seed)
        np.random.seed(seed)


def _call(fn: Callable[..., Any], case: Case, driver: str | None = None) -> Any:
    args = tuple(_clone(a) for a in case.args)
    kwargs = {k: _clone(v) for k, v in case.kwargs.items()}
    _seed(case.seed)
    return _driven(fn, driver)(*args, **kwargs)


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


def _resolve(name: str) -> Any:
    """The object a dotted name such as ``"torch.nn.functional.gelu"`` refers to."""
    import importlib

    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(name)


class _CallWatch:
    """Notices, through ``sys.setprofile``, a call to any of the ``forbidden`` functions.

    Python functions are recognised by their code object, built-in functions by identity,
    and ``"torch.Tensor.softmax"``-style names by the method's name on a tensor. A class
    name forbids its ``forward``. Only the student's call runs under the watch.
    """

    def __init__(self, forbidden: Sequence[str]) -> None:
        self.codes: dict[Any, str] = {}
        self.builtins: dict[int, str] = {}
        self.methods: dict[str, str] = {}
        for name in forbidden:
            if name.startswith("torch.Tensor."):
                self.methods[name.rsplit(".", 1)[1]] = name
                continue
            obj = _resolve(name)
            if isinstance(obj, type):
                obj = obj.forward
            code = getattr(obj, "__code__", None)
            if code is not None:
                self.codes[code] = name
            else:
                self.builtins[id(obj)] = name
        self.seen: str | None = None

    def _profile(self, frame: Any, event: str, arg: Any) -> None:
        if self.seen is not None:
            return
        if event == "call":
            self.seen = self.codes.get(frame.f_code)
        elif event == "c_call":
            name = self.builtins.get(id(arg))
            if name is None and self.methods:
                owner = getattr(arg, "__self__", None)
                if isinstance(owner, torch.Tensor):
                    name = self.methods.get(getattr(arg, "__name__", ""))
            self.seen = name

    def run(self, fn: Callable[[], Any]) -> Any:
        previous = sys.getprofile()
        sys.setprofile(self._profile)
        try:
            return fn()
        finally:
            if sys.getprofile() != self._profile:  # the answer replaced the watch
                self.seen = self.seen or "sys.setprofile"
            sys.setprofile(previous)


def _not_the_answers_code() -> tuple[str, ...]:
    """Folders whose Python lines are not counted as the answer's work: the standard library,
    installed packages (torch, numpy, IPython ...) and this engine (the answer's own lines,
    in a notebook, a test or any other file, are counted)."""
    import sysconfig

    paths = sysconfig.get_paths()
    roots = {paths.get(key) for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots |= {os.path.dirname(torch.__file__), os.path.dirname(np.__file__)}
    folders = {os.path.realpath(r) + os.sep for r in roots if r}
    return tuple(sorted(folders))


class _CountingMode(torch.overrides.TorchFunctionMode):
    """Counts every call of a torch function, tensor method or tensor operator (``+``,
    ``@``, indexing ...) made by the code it wraps; calls made inside torch do not count."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


class _WorkCounter:
    """Counts the work one call of an answer does: the Python lines it runs (``sys.settrace``,
    lines of the answer's own code and of anything it defines, not of torch, numpy or the
    standard library) and the tensor operations it calls (a ``TorchFunctionMode``).

    Vectorised code does the same work for 4 positions as for 32; a loop, a comprehension or
    a ``torch.stack`` of per-position results runs its body once per position, so its count
    grows with the length. Garbage collection is paused during the call so that finalisers
    cannot add lines of their own.
    """

    _skip_folders: tuple[str, ...] | None = None

    def __init__(self) -> None:
        self.lines = 0
        self.tensor_ops = 0
        self.tampered = False
        self._counted: dict[Any, bool] = {}
        if _WorkCounter._skip_folders is None:
            _WorkCounter._skip_folders = _not_the_answers_code()

    def _counts(self, code: Any) -> bool:
        known = self._counted.get(code)
        if known is None:
            path = code.co_filename
            real = os.path.realpath(path) if os.path.isabs(path) else path
            known = real != os.path.realpath(__file__) and not real.startswith(
                self._skip_folders or ()
            )
            self._counted[code] = known
        return known

    def _trace(self, frame: Any, event: str, arg: Any) -> Any:
        if event == "call" and self._counts(frame.f_code):
            return self._line
        return None

    def _line(self, frame: Any, event: str, arg: Any) -> Any:
        if event == "line":
            self.lines += 1
        return self._line

    def run(self, fn: Callable[[], Any]) -> Any:
        import gc

        collecting = gc.isenabled()
        gc.disable()
        previous = sys.gettrace()
        mode = _CountingMode()
        sys.settrace(self._trace)
        try:
            with mode:
                return fn()
        finally:
            if sys.gettrace() != self._trace:  # the answer switched the counter off
                self.tampered = True
            sys.settrace(previous)
            self.tensor_ops = mode.calls
            if collecting:
                gc.enable()


#: The diagnosis of an answer whose work grows with the number of positions.
LOOP_OVER_POSITIONS = Mistake(
    "a loop over positions",
    None,  # recognised by counting the answer's work, not by comparing outputs
    "Work on whole tensors: a matrix product of the (B, T, ...) tensors computes every "
    "position at once, and softmax and arithmetic act on all rows together. Remove the Python "
    "loop, the list comprehension or the torch.stack of per-position results.",
)


# --------------------------------------------------------------------------- drivers


def _build_model(run: dict) -> torch.nn.Module:
    """The model a driver's ``run`` describes: ``run["model"]`` (a dotted class name) built
    from ``run["config_class"](**run["config"])`` with the seed ``run["init_seed"]`` (the
    global generator is left as it was), in ``run["dtype"]``, in training mode."""
    config = _resolve(run["config_class"])(**run["config"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(run["init_seed"])
        model = _resolve(run["model"])(config)
    return model.to(getattr(torch, run.get("dtype", "float32"))).train()


def _exact_match(
    model: torch.nn.Module, src: torch.Tensor, tgt: torch.Tensor, pad_id: int
) -> float:
    """Fraction of the pairs whose every target token is the model's most likely one.

    With teacher forcing, a row all of whose next-token argmaxes are right is exactly the row
    greedy decoding gets right (each greedy step then reads the true previous tokens).
    """
    model.eval()
    with torch.no_grad():
        predicted = model(src, tgt[:, :-1]).argmax(dim=-1)  # (N, T - 1)
    target = tgt[:, 1:]  # (N, T - 1)
    right = (predicted == target) | (target == pad_id)  # padding never counts against a row
    return right.all(dim=1).double().mean().item()


def drive_training_step(step: Callable[..., Any], run: dict) -> dict:
    """Call a training step the way a training loop does, on a model and an optimizer built
    from plain data, and return what the updates did (also plain data).

    ``step(model, optimizer, src, tgt, pad_id, clip)`` must make one update and return the
    loss as a Python float. ``run`` describes the model (see :func:`_build_model`), the
    optimizer (``run["optimizer"]``, a class of ``torch.optim``, with ``run["optimizer_args"]``)
    and ``run["pad_id"]``, ``run["clip"]``, and then either

    - ``run["batches"]``: a list of ``(src, tgt)``, one update each; returns
      ``{"losses": [...], "parameters": state dict after the last update}``, or
    - ``run["train"] = (src, tgt)``, ``run["steps"]``, ``run["batch_size"]``, ``run["seed"]``
      and ``run["test"] = (src, tgt)``: that many updates on random batches of the training
      pairs (drawn with their own generator); returns ``{"exact match": fraction of the test
      pairs the model then gets entirely right}`` (:func:`_exact_match`).
    """
    model = _build_model(run)
    optimizer = getattr(torch.optim, run["optimizer"])(model.parameters(), **run["optimizer_args"])
    losses: list[float] = []

    def update(src: torch.Tensor, tgt: torch.Tensor) -> None:
        loss = step(model, optimizer, src, tgt, run["pad_id"], run["clip"])
        if not isinstance(loss, float):
            raise TypeError(
                f"the training step must return the loss as a Python float (loss.item()), "
                f"got {type(loss).__name__}"
            )
        losses.append(loss)

    if "batches" in run:
        for src, tgt in run["batches"]:
            update(src, tgt)
        parameters = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return {"losses": losses, "parameters": parameters}
    src, tgt = run["train"]
    generator = torch.Generator().manual_seed(run["seed"])
    for _ in range(run["steps"]):
        rows = torch.randint(src.shape[0], (run["batch_size"],), generator=generator)
        update(src[rows], tgt[rows])
    return {"exact match": _exact_match(model, *run["test"], run["pad_id"])}


#: Drivers by name (``Question.driver``): ``name -> (driver, how the answer is called)``. The
#: driver is called as ``driver(answer, *case.args, **case.kwargs)``.
DRIVERS: dict[str, tuple[Callable[..., Any], str]] = {
    "training step": (drive_training_step, "called by the check's training loop"),
}


def _driven(fn: Callable[..., Any], driver: str | None) -> Callable[..., Any]:
    """``fn`` itself, or ``fn`` called through the named driver."""
    if driver is None:
        return fn
    if driver not in DRIVERS:
        raise ValueError(f"unknown driver {driver!r}; known: {sorted(DRIVERS)}")
    drive = DRIVERS[driver][0]

    def driven(*args: Any, **kwargs: Any) -> Any:
        return drive(fn, *args, **kwargs)

    return driven


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
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            outcomes.append(Outcome("raised", detail=f"{type(exc).__name__}: {message}"))
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


def _call_text(
    name: str, case: Case, params: Sequence[str] | None, driver: str | None = None
) -> str:
    if driver is not None:  # the inputs are the driver's, not the answer's
        return f"{name}({', '.join(params or [])}), {DRIVERS[driver][1]}: {case.name}"
    parts = []
    for i, a in enumerate(case.args):
        label = params[i] + "=" if params and i < len(params) else ""
        parts.append(label + _describe(a))
    parts += [f"{k}={_describe(v)}" for k, v in case.kwargs.items()]
    return f"{name}({', '.join(parts)})"


class Question:
    """One graded exercise.

    Args:
        qid: stable id, ``"ch04.q1"``; used in cell metadata and grade sheets.
        title: short title shown in feedback and progress tables.
        reference: the correct implementation; also what ``solution()`` shows.
        cases: a function returning the list of :class:`Case` to try (called anew for
            every check so inputs are fresh); seeded random cases first, edge cases after.
        mistakes: known wrong implementations, each diagnosed by name when matched.
        hints: successive hints, from gentle to nearly the answer.
        points: points awarded when the check passes (all or nothing).
        atol, rtol, check_dtype: comparison settings (see :func:`compare`).
        timeout: seconds allowed per call of the student's function.
        compare_fn: optional ``(expected, got) -> str | None`` replacing :func:`compare`.
        library: the ``tfbook`` function this exercise re-derives, called with the
            reference's signature (an adapter when the library's signature differs); a test
            runs every case through both and requires them to agree, so the library and the
            exercise cannot drift apart. May also be set after construction.
        library_note: when ``library`` is ``None``, why there is no library counterpart.
        driver: the name of a ``DRIVERS`` entry when the answer is not a plain function of
            the cases' inputs (a training step): the reference, the answer, the mistakes and
            ``library`` are then all called through it.

    Set after construction: ``kind`` (``"implement"``, ``"predict"``, ``"debug"``,
    ``"derive"`` or ``"build"``); ``forbidden`` (dotted names of functions the answer must not
    call); ``loop_probe``, for tasks that say "no loop over positions" (``length -> Case``,
    inputs with ``length`` positions: the answer runs on ``probe_lengths``, 4 and 32, with its
    work counted, and work that grows by at least half a unit per added position fails).
    """

    def __init__(
        self,
        qid: str,
        title: str,
        reference: Callable[..., Any],
        cases: Callable[[], list[Case]],
        mistakes: Sequence[Mistake] = (),
        hints: Sequence[str] = (),
        *,
        points: float = 1.0,
        atol: float = 1e-5,
        rtol: float = 1e-4,
        check_dtype: bool = False,
        timeout: float = 10.0,
        compare_fn: Callable[[Any, Any], str | None] | None = None,
        library: Callable[..., Any] | None = None,
        library_note: str = "",
        driver: str | None = None,
    ) -> None:
        if driver is not None and driver not in DRIVERS:
            raise ValueError(f"driver must be one of {sorted(DRIVERS)}, got {driver!r}")
        self.qid = qid
        self.title = title
        self._reference = reference
        self.make_cases = cases
        self.mistakes = list(mistakes)
        self.hints = list(hints)
        self.points = float(points)
        self.atol, self.rtol, self.check_dtype = atol, rtol, check_dtype
        self.timeout = timeout
        self._compare_fn = compare_fn
        self.library = library
        self.library_note = library_note
        #: dotted names of functions the answer must not call (the exercise asks the
        #: student to write them); set after construction, like ``kind``
        self.forbidden: tuple[str, ...] = ()
        self.driver = driver
        self.loop_probe: Callable[[int], Case] | None = None
        self.probe_lengths: tuple[int, int] = (4, 32)
        self.kind = "implement"
        self.state = "not checked"
        self._hints_shown = 0
        try:
            self._params = list(inspect.signature(reference).parameters)
        except (TypeError, ValueError):
            self._params = None

    def __repr__(self) -> str:
        return f"<Question {self.qid}: {self.title}>"

    @property
    def reference(self) -> Callable[..., Any]:
        """The reference implementation (hidden when ``TFBOOK_COURSE_MODE=1``)."""
        if _env_flag("TFBOOK_COURSE_MODE"):
            raise AttributeError(
                f"[{self.qid}] the reference is switched off for this course (TFBOOK_COURSE_MODE)"
            )
        return self._reference

    @reference.setter
    def reference(self, fn: Callable[..., Any]) -> None:
        self._reference = fn

    # -- comparison
    def compare(self, expected: Any, got: Any) -> str | None:
        """Return ``None`` when ``got`` matches ``expected``, else what differs."""
        if self._compare_fn is not None:
            return self._compare_fn(expected, got)
        return compare(expected, got, atol=self.atol, rtol=self.rtol, check_dtype=self.check_dtype)

    def _result(self, status: str, detail: str = "", case: str = "", mistake=None) -> Result:
        points = self.points if status == "passed" else 0.0
        return Result(self.qid, self.title, status, points, self.points, detail, case, mistake)

    def call(self, fn: Callable[..., Any], case: Case) -> Any:
        """``fn`` (the reference, a mistake, the library) on a fresh copy of ``case``'s inputs,
        through the question's driver if it has one."""
        with _OneThread():
            return _call(fn, case, self.driver)

    def probe_cases(self) -> list[Case]:
        """The loop probe's inputs, shortest first (none without a ``loop_probe``)."""
        if self.loop_probe is None:
            return []
        return [self.loop_probe(n) for n in self.probe_lengths]

    def _diagnose(self, case: Case, got: Any) -> Mistake | None:
        for mistake in self.mistakes:
            try:
                wrong = self.call(mistake.fn, case)
            except Exception:  # noqa: BLE001 - a mistake that cannot run on this case
                continue
            if self.compare(wrong, got) is None:
                return mistake
        return None

    # -- the check itself
    def evaluate(self, answer: Any) -> Result:
        """Check ``answer`` (a function) without printing anything; return a :class:`Result`."""
        if not callable(answer):
            return self._result(
                "error",
                f"expected a function to check, got {type(answer).__name__}: "
                f"pass the function itself, e.g. check(my_function), not its result",
            )
        name = getattr(answer, "__name__", "answer")
        cases, probes = self.make_cases(), self.probe_cases()
        outcomes = run_answer(
            answer, cases, self.timeout, self.forbidden, probes=probes, driver=self.driver
        )
        return self.judge(name, cases, outcomes, probes)

    def judge(
        self,
        name: str,
        cases: Sequence[Case],
        outcomes: Sequence[Outcome],
        probes: Sequence[Case] = (),
    ) -> Result:
        """Compare what an answer called ``name`` did on ``cases`` with the reference.

        ``outcomes`` come from ``run_answer`` (here or in another process); the first
        case that did not return the reference's output decides the result. Then the loop
        probes (``probes``, the outcomes after the cases'): their outputs must be right too,
        and the work must not grow with the number of positions.
        """
        with _OneThread():
            return self._judge(name, cases, outcomes, probes)

    def _judge(
        self, name: str, cases: Sequence[Case], outcomes: Sequence[Outcome], probes: Sequence[Case]
    ) -> Result:
        for index, case in enumerate([*cases, *probes]):
            probe = index >= len(cases)
            expected = self.call(self._reference, case)
            call = _call_text(name, case, self._params, self.driver)
            if index >= len(outcomes):
                return self._result(
                    "error", f"call: {call}\nno outcome was reported for this case", case.name
                )
            outcome = outcomes[index]
            if outcome.kind == "not attempted":
                return self._result("not attempted")
            if outcome.kind == "timeout":
                return self._result(
                    "timeout",
                    f"call: {call}\ndid not return within {self.timeout:g} s (an endless loop?)",
                    case.name,
                )
            if outcome.kind == "raised":
                return self._result("error", f"call: {call}\nraised {outcome.detail}", case.name)
            if outcome.kind == "forbidden":
                return self._result(
                    "failed",
                    f"call: {call}\nyour function calls {outcome.detail}; this exercise asks you "
                    "to compute it yourself (the library's version is what you are rebuilding)",
                    case.name,
                )
            if outcome.kind == "modified":
                i = outcome.index
                label = self._params[i] if self._params and 0 <= i < len(self._params) else i
                return self._result(
                    "failed",
                    f"call: {call}\nthe function modified its input argument {label!r} "
                    "in place; work on a copy or use out-of-place operations",
                    case.name,
                )
            if outcome.kind != ("counted" if probe else "returned"):
                return self._result(
                    "error", f"call: {call}\nunknown outcome {outcome.kind!r}", case.name
                )
            diff = self.compare(expected, outcome.value)
            if diff is not None:
                return self._result(
                    "failed",
                    f"call: {call}\n{diff}",
                    case.name,
                    self._diagnose(case, outcome.value),
                )
        if probes:
            loop = self._judge_work(name, outcomes[len(cases) :])
            if loop is not None:
                return loop
        return self._result("passed", f"{len(cases)} cases")

    def _judge_work(self, name: str, outcomes: Sequence[Outcome]) -> Result | None:
        """Fail an answer whose work grows with the number of positions (a loop over them)."""
        short, long = outcomes[0], outcomes[-1]
        work = [max(0, o.lines) + max(0, o.tensor_ops) for o in (short, long)]
        t_short, t_long = self.probe_lengths
        if work[1] - work[0] < (t_long - t_short) / 2:  # vectorised: the same work
            return None
        ratio = work[1] / max(work[0], 1)
        return self._result(
            "failed",
            f"call: {name} on inputs with T = {t_short} and T = {t_long} positions\n"
            f"your function does {ratio:.1f}x as much work at T = {t_long} as at "
            f"T = {t_short} ({short.tensor_ops} -> {long.tensor_ops} tensor operations, "
            f"{short.lines} -> {long.lines} lines of Python run): the work grows with the "
            "number of positions, so it loops over them; this exercise asks for no loop over "
            "positions",
            f"no loop over positions (T = {t_short} and T = {t_long})",
            LOOP_OVER_POSITIONS,
        )

    def check(self, answer: Any) -> None:
        """Check ``answer`` and show the feedback. With ``TFBOOK_STRICT=1`` a failure raises."""
        result = self.evaluate(answer)
        self.state = result.status
        _show(result)
        if _env_flag("TFBOOK_STRICT") and not result.passed:
            raise AssertionError(f"TFBOOK_STRICT: check did not pass\n{result.text()}")

    def hint(self) -> None:
        """Show the next hint (each call reveals one more)."""
        if not self.hints:
            print(f"[{self.qid}] No hints for this question.")
            return
        if self._hints_shown >= len(self.hints):
            print(f"[{self.qid}] No more hints: all {len(self.hints)} shown. Try solution().")
            return
        self._hints_shown += 1
        n = self._hints_shown
        print(f"[{self.qid}] Hint {n}/{len(self.hints)}: {self.hints[n - 1]}")

    def solution(self) -> None:
        """Show the reference solution (unless ``TFBOOK_COURSE_MODE=1``)."""
        if _env_flag("TFBOOK_COURSE_MODE"):
            print(f"[{self.qid}] Solutions are switched off for this course (TFBOOK_COURSE_MODE).")
            return
        from tfbook._core import show_source

        print(f"[{self.qid}] Reference solution:")
        show_source(self._reference)

    def solution_source(self) -> str:
        """The reference solution's source (refused when ``TFBOOK_COURSE_MODE=1``)."""
        if _env_flag("TFBOOK_COURSE_MODE"):
            raise RuntimeError(
                f"[{self.qid}] solutions are switched off for this course (TFBOOK_COURSE_MODE)"
            )
        return textwrap.dedent(inspect.getsource(self._reference))


def _show(obj: Any) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # pragma: no cover
        print(str(obj))
        return
    if get_ipython() is not None and get_ipython().__class__.__name__ == "ZMQInteractiveShell":
        display(obj)
    else:
        print(str(obj))


class _Table:
    def __init__(self, title: str, rows: list[tuple[str, str, str, str]]) -> None:
        self.title, self.rows = title, rows

    def __repr__(self) -> str:
        widths = [max(len(r[i]) for r in self.rows) for i in range(4)]
        lines = [self.title]
        for r in self.rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head, *body = self.rows
        out = [f"<p><b>{html.escape(self.title)}</b></p><table><thead><tr>"]
        out += [f"<th>{html.escape(c)}</th>" for c in head]
        out.append("</tr></thead><tbody>")
        for r in body:
            fg = _STATUS_COLOURS.get(r[3], ("#37474f", ""))[0]
            cells = [f"<td>{html.escape(c)}</td>" for c in r[:3]]
            cells.append(f'<td style="color:{fg};font-weight:bold">{html.escape(r[3])}</td>')
            out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("</tbody></table>")
        return "".join(out)


class ExerciseSet:
    """The exercises of one chapter, in order (``EXERCISES`` in each ``chNN`` module)."""

    def __init__(self, chapter: str, title: str, questions: Sequence[Question]) -> None:
        ids = [q.qid for q in questions]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate question ids in {chapter}: {ids}")
        for q in questions:
            if not q.qid.startswith(chapter + "."):
                raise ValueError(f"question {q.qid!r} does not belong to chapter {chapter!r}")
        self.chapter, self.title, self.questions = chapter, title, list(questions)

    def __iter__(self):
        return iter(self.questions)

    def __len__(self) -> int:
        return len(self.questions)

    def __getitem__(self, qid: str) -> Question:
        for q in self.questions:
            if q.qid == qid or q.qid.endswith("." + qid):
                return q
        raise KeyError(qid)

    def progress(self) -> None:
        """Show a table of this chapter's questions and their state."""
        rows = [("question", "title", "points", "state")]
        earned = 0.0
        for q in self.questions:
            rows.append((q.qid, q.title, f"{q.points:g}", q.state))
            earned += q.points if q.state == "passed" else 0.0
        total = sum(q.points for q in self.questions)
        _show(_Table(f"{self.title}: {earned:g} of {total:g} points", rows))
