"""What the exercise engine watches while a student's function runs (chapter 0).

- a time limit (:func:`_run_with_timeout`), so an endless loop becomes a "timeout";
- the calls it makes (:class:`_CallWatch`, ``sys.setprofile``): a call to a function the
  exercise asks the student to write is noticed;
- the work it does (:class:`_WorkCounter`): Python lines run and tensor operations called,
  so a loop over positions shows as work that grows with the number of positions.

PyTorch runs on one thread meanwhile (:class:`_OneThread`).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode, _get_current_dispatch_mode_stack


def _is_engine_file(path: str) -> bool:
    """Whether ``path`` (a real path) is one of the engine's modules (``_*.py`` beside this one)."""
    folder, name = os.path.split(path)
    return folder == os.path.dirname(os.path.realpath(__file__)) and name.startswith("_")


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


#: What the aten operations a question may forbid compute (``forbidden=("aten._softmax",)``),
#: named in the feedback. An operation is refused however the answer reaches it: under another
#: name (``torch.special.softmax``), through ``functools.partial``, ``operator.methodcaller`` or
#: ``torch.ops.aten``, or inside a larger function that does the exercise's work.
OPERATIONS = {
    "aten._softmax": "softmax (torch.softmax, Tensor.softmax, F.softmax, torch.special.softmax)",
    "aten._log_softmax": "log_softmax (whose exp is the softmax)",
    "aten._safe_softmax": "the softmax of scaled_dot_product_attention",
    "aten._scaled_dot_product_flash_attention_for_cpu": "scaled_dot_product_attention",
    "aten._scaled_dot_product_flash_attention": "scaled_dot_product_attention",
    "aten._scaled_dot_product_efficient_attention": "scaled_dot_product_attention",
    "aten._scaled_dot_product_cudnn_attention": "scaled_dot_product_attention",
    "aten.native_layer_norm": "layer_norm (F.layer_norm, nn.LayerNorm, torch.native_layer_norm)",
    "aten.native_group_norm": "group_norm (a layer norm when there is one group)",
    "aten.native_batch_norm": "batch_norm or instance_norm (a layer norm on transposed input)",
    "aten.gelu": "gelu (F.gelu, nn.GELU, torch.ops.aten.gelu)",
    "aten.gelu_backward": "autograd through a gelu (backward, autograd.grad, jacrev)",
    "aten._softmax_backward_data": "autograd through a softmax (backward, autograd.grad, jacrev)",
}


def operation_name(func: Any) -> str:
    """``"aten._softmax"`` for the operator ``aten._softmax.default`` (any overload)."""
    return func.name().split(".")[0].replace("::", ".")


class _OperationWatch(TorchDispatchMode):
    """Notices the forbidden aten operations (``"aten._softmax"``) the code it wraps runs,
    whatever Python name, wrapper or library function reached them; the operation still runs
    (the answer's result is refused afterwards, even if it caught an exception)."""

    def __init__(self, operations: dict[str, str], watch: _CallWatch | None) -> None:
        super().__init__()
        self.operations, self.watch = operations, watch

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.watch is not None and self.watch.seen is None:
            name = operation_name(func)
            if name in self.operations:
                self.watch.seen = self.operations[name]
        return func(*args, **(kwargs or {}))


_DISPATCH_READY = False


def _ready_for_dispatch_modes() -> None:
    """Run one operation under a dispatch mode, once per process, before any answer runs.

    PyTorch's first dispatch through a Python mode imports ``torch._dynamo`` (seconds); done
    under the answer's time limit and ``sys.setprofile``, it could be cut short halfway.
    """
    global _DISPATCH_READY
    if not _DISPATCH_READY:
        with _OperationWatch({}, None):
            torch.zeros(1).neg()
        _DISPATCH_READY = True


class _CallWatch:
    """Notices a call to any of the ``forbidden`` functions or operations.

    Functions are watched through ``sys.setprofile``: Python functions are recognised by their
    code object, built-in functions by identity, and ``"torch.Tensor.softmax"``-style names by
    the method's name on a tensor; a class name forbids its ``forward``. Names starting with
    ``"aten."`` are operations (:data:`OPERATIONS`), watched by a ``TorchDispatchMode``. Only
    the student's call runs under the watch.
    """

    def __init__(self, forbidden: Sequence[str]) -> None:
        self.codes: dict[Any, str] = {}
        self.builtins: dict[int, str] = {}
        self.methods: dict[str, str] = {}
        self.operations: dict[str, str] = {}
        for name in forbidden:
            if name.startswith("aten."):
                self.operations[name] = describe_operation(name)
                continue
            obj = _resolve(name)
            if isinstance(obj, type):
                obj = obj.forward
            code = getattr(obj, "__code__", None)
            if code is not None:
                self.codes[code] = name
            elif name.startswith("torch.Tensor."):
                self.methods[name.rsplit(".", 1)[1]] = name
            else:
                self.builtins[id(obj)] = name
        self.seen: str | None = None
        if self.operations:
            _ready_for_dispatch_modes()

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
        mode = _OperationWatch(self.operations, self) if self.operations else None
        previous = sys.getprofile()
        sys.setprofile(self._profile)
        if mode is not None:
            mode.__enter__()
        try:
            return fn()
        finally:
            if sys.getprofile() != self._profile:  # the answer replaced the watch
                self.seen = self.seen or "sys.setprofile"
            sys.setprofile(previous)
            if mode is not None:
                if mode in _get_current_dispatch_mode_stack():
                    mode.__exit__(None, None, None)
                else:  # the answer took it off the stack
                    self.seen = self.seen or "torch.utils._python_dispatch._pop_mode"


def describe_operation(name: str) -> str:
    """``"aten._softmax, the operation behind softmax (...)"``: a forbidden operation as the
    feedback names it. Raises ``ValueError`` for a name PyTorch has no operator for."""
    if not name.startswith("aten.") or not hasattr(torch.ops.aten, name[len("aten.") :]):
        raise ValueError(f"forbidden operation must name an aten operator (aten.xxx), got {name!r}")
    what = OPERATIONS.get(name)
    return f"{name}, the operation behind {what}" if what else name


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
            known = not _is_engine_file(real) and not real.startswith(self._skip_folders or ())
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
