"""The judge: where a sandboxed submission's answers are compared and scored (chapter 0).

One judge process per submission, started by the grader outside the sandbox (forked from a
server that has ``torch`` and the exercise modules loaded). It holds the references; the
sandbox never does. It listens on a Unix socket that is the sandbox's only way out, and
for each ``check``/``evaluate`` the sandbox opens:

1. makes the question's cases (twice: one copy is handed out, the other is only used for
   judging, so nothing the submission does to the objects it is handed can change the
   expected values) and sends the inputs as plain data; objects a case hands to the
   student's function (a frozen layer, a model) stay here and are reached through handles
   that allow calls and public attribute reads only;
2. receives what the student's function did on each case (plain data, size- and
   schema-checked; objects the function returned stay in the sandbox behind handles);
3. judges with the engine's own :meth:`Question.judge` (the same comparison and diagnosis
   as ``check``), clamps the points to the question's, and streams each ``check`` verdict
   to the grader at once, so a later crash or kill of anything cannot erase it.

The judge runs with its own address-space and CPU-time limits.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import resource
import select
import socket
from typing import Any

import torch
from torch import nn

from tfbook.exercises import load
from tfbook.exercises._engine import OUTCOME_KINDS, Outcome, Question, Result
from tfbook.exercises._run import Frozen
from tfbook_tools.wire import RemoteObject, Session, WireError, encode, remote_class
from tfbook_tools.wire import send as wire_send

__all__ = ["judge_main", "Limits"]

MAX_SESSIONS = 300
MAX_CALLS = 20_000
_NAME_RE = re.compile(r"[^A-Za-z0-9_.<>\[\]-]")

# The check engine's own modules: none of their objects is handed to a submission.
_ENGINE_PARTS = ("_engine", "_run", "_compare", "_watch", "_drivers", "_display", "_advice")
_ENGINE_MODULES = frozenset(f"tfbook.exercises.{m}" for m in _ENGINE_PARTS)


class Limits:
    """Per-submission limits of the judge (sessions, calls, CPU seconds, memory)."""

    def __init__(self, cpu_seconds: float, memory_mb: int) -> None:
        self.cpu_seconds, self.memory_mb = cpu_seconds, memory_mb


class RemoteModule(nn.Module):
    """A student's ``nn.Module`` that stays in the sandbox; the judge sees this proxy."""

    def __init__(self, session: Session, node: dict) -> None:
        super().__init__()
        object.__setattr__(self, "_r", RemoteObject(session, node))

    def _call(self, method, *args, **kwargs):
        r = object.__getattribute__(self, "_r")
        return r._session.remote_call(r._id, method, args, kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(None, *args, **kwargs)

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("state_dict")

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        return self._call("load_state_dict", dict(state_dict), strict=strict)

    def named_parameters(self, *args: Any, **kwargs: Any):
        return iter(self._call("named_parameters"))

    def parameters(self, recurse: bool = True):
        return iter([p for _, p in self._call("named_parameters")])

    def eval(self) -> RemoteModule:
        self._call("eval")
        return self

    def train(self, mode: bool = True) -> RemoteModule:
        self._call("train", mode)
        return self

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            return super().__getattr__(name)
        r = object.__getattribute__(self, "_r")
        return r._session.remote_getattr(r._id, name)

    def __repr__(self) -> str:
        return repr(object.__getattribute__(self, "_r"))

    def __deepcopy__(self, memo: dict) -> RemoteModule:
        return self


def _proxy(session: Session, node: dict) -> Any:
    if node.get("module") is True:
        return remote_class(node, RemoteModule)(session, node)
    return remote_class(node)(session, node)


def _trusted_module(module_name: Any) -> bool:
    return isinstance(module_name, str) and (
        module_name == "tfbook" or module_name.startswith("tfbook.")
    )


class CaseObjects:
    """What the sandbox may do with the objects a case hands to the student's function.

    Call the object (when its class defines ``__call__`` in ``tfbook`` or it is an
    ``nn.Module``), call public methods defined by ``tfbook`` classes or ``forward``/
    ``state_dict`` of an ``nn.Module``, and read public attributes (plain data comes back
    by value, a module or ``tfbook`` object as a new handle). Nothing else: no private or
    dunder names, no functions, classes or Python modules, no other ``nn.Module`` method.
    """

    report_exits = False
    TORCH_METHODS = ("forward", "state_dict", "extra_repr")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.calls = 0

    def _tick(self) -> None:
        self.calls += 1
        if self.calls > MAX_CALLS:
            raise PermissionError("too many calls on the grader's objects")

    def exportable(self, obj: Any) -> bool:
        if isinstance(obj, (type, type(os), RemoteObject)) or inspect.isroutine(obj):
            return False
        if type(obj).__module__ in _ENGINE_MODULES and not isinstance(obj, Frozen):
            return False  # questions, cases, outcomes, results, mistakes (a Frozen layer is fine)
        return isinstance(obj, nn.Module) or _trusted_module(type(obj).__module__)

    def _owner(self, obj: Any, name: str) -> tuple[Any, type | None]:
        for klass in type(obj).__mro__:
            if name in vars(klass):
                return vars(klass)[name], klass
        return None, None

    def call(self, obj: Any, method: str | None, args: list, kwargs: dict) -> Any:
        self._tick()
        if method is None:
            attr, klass = self._owner(obj, "__call__")
            allowed = klass is not None and (
                _trusted_module(klass.__module__) or isinstance(obj, nn.Module)
            )
            if not allowed:
                raise PermissionError(f"{type(obj).__name__} objects cannot be called here")
            return obj(*args, **kwargs)
        if method.startswith("_"):
            raise PermissionError(f"method {method!r} is not available")
        attr, klass = self._owner(obj, method)
        if klass is None or not inspect.isfunction(attr):
            raise PermissionError(f"{type(obj).__name__}.{method} is not available")
        torch_method = klass.__module__.startswith("torch.") and method in self.TORCH_METHODS
        if not (_trusted_module(klass.__module__) or torch_method):
            raise PermissionError(f"{type(obj).__name__}.{method} is not available")
        return getattr(obj, method)(*args, **kwargs)

    def getattr(self, obj: Any, name: str) -> tuple[str, Any]:
        self._tick()
        static, klass = self._owner(obj, name)
        if klass is not None:
            if inspect.isfunction(static):
                torch_method = klass.__module__.startswith("torch.") and name in self.TORCH_METHODS
                if _trusted_module(klass.__module__) or torch_method:
                    return "method", None
                raise PermissionError(f"{type(obj).__name__}.{name} is not available")
            if not _trusted_module(klass.__module__):
                raise PermissionError(f"{type(obj).__name__}.{name} is not available")
        value = getattr(obj, name)
        if isinstance(value, (type, type(os))) or inspect.isroutine(value):
            raise PermissionError(f"{type(obj).__name__}.{name} is not available")
        return "value", value


def _safe_name(name: Any) -> str:
    if not isinstance(name, str):
        return "answer"
    cleaned = _NAME_RE.sub("", name)[:60]
    return cleaned or "answer"


def _text(value: Any, limit: int = 1000) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _fingerprint(cases: list) -> str:
    """The cases' plain data (objects by type name), to check that two draws agree."""

    def export(obj: Any) -> dict:
        return {"t": "remote", "id": 0, "type": type(obj).__name__}

    return json.dumps(
        [[c.name, encode(c.args, export), encode(c.kwargs, export), c.seed] for c in cases]
    )


def _count(item: dict, key: str) -> int:
    value = item.get(key, -1)
    if not isinstance(value, int) or isinstance(value, bool) or not -1 <= value < 2**62:
        raise WireError(f"bad outcome {key}")
    return value


def _outcomes(items: Any, session: Session, n_cases: int) -> list[Outcome]:
    if not isinstance(items, list) or len(items) > n_cases:
        raise WireError("the outcomes do not match the cases")
    outcomes = []
    for item in items:
        if not isinstance(item, dict) or item.get("kind") not in OUTCOME_KINDS:
            raise WireError("bad outcome")
        kind = item["kind"]
        value = session.decode(item.get("value")) if kind in ("returned", "counted") else None
        outcome = Outcome(kind, value, _text(item.get("detail")), _count(item, "index"))
        outcome.lines, outcome.tensor_ops = _count(item, "lines"), _count(item, "tensor_ops")
        outcomes.append(outcome)
    return outcomes


def _served(session: Session, cases: list) -> list[dict]:
    """The cases' inputs as the sandbox receives them (objects stay here behind handles)."""
    return [
        {
            "name": c.name,
            "args": session.encode(list(c.args)),
            "kwargs": session.encode(dict(c.kwargs)),
            "seed": c.seed if isinstance(c.seed, int) else None,
        }
        for c in cases
    ]


def _clamped(q: Question, result: Result) -> Result:
    points = q.points if result.status == "passed" else 0.0
    result.points = max(0.0, min(float(points), q.points))
    return result


class Judge:
    """Serves one submission's sessions; ``record(qid, result)`` receives each check."""

    def __init__(self, chapter: str, limits: Limits, record) -> None:
        self.exercises = load(chapter)
        self.limits = limits
        self.record = record
        self.sessions = 0
        self.objects = CaseObjects(limits)

    def session(self, sock: socket.socket) -> None:
        self.sessions += 1
        session = Session(sock, self.objects, _proxy, wait_timeout=120.0)
        start = session.wait()
        if self.sessions > MAX_SESSIONS:
            session.send({"op": "error", "message": "too many checks; this one was refused"})
            return
        qid, kind = start.get("qid"), start.get("kind")
        if start.get("op") != "start" or kind not in ("check", "evaluate"):
            session.send({"op": "error", "message": "bad request"})
            return
        try:
            q = self.exercises[qid] if isinstance(qid, str) and qid else None
        except KeyError:
            q = None
        if q is None or q.qid != qid:
            session.send({"op": "error", "message": f"unknown question {str(qid)[:40]!r}"})
            return
        session.wait_timeout = q.timeout + 30.0
        name = _safe_name(start.get("name"))
        if start.get("callable") is True:
            served, judged = q.make_cases(), q.make_cases()
            served_probes, judged_probes = q.probe_cases(), q.probe_cases()
            if _fingerprint(served + served_probes) != _fingerprint(judged + judged_probes):
                session.send({"op": "error", "message": f"{q.qid}: its cases are not reproducible"})
                return
            request = {"op": "cases", "cases": _served(session, served), "timeout": q.timeout}
            request["forbidden"] = list(q.forbidden)  # calls the answer must not make
            request["probes"] = _served(session, served_probes)  # work counted: no loop
            request["driver"] = q.driver  # how the answer is called (a training step ...)
            answer = session.request(request)
            if answer.get("op") != "answer":
                raise WireError("expected the answer")
            n_outcomes = len(judged) + len(judged_probes)
            outcomes = _outcomes(answer.get("outcomes"), session, n_outcomes)
            result = self._judge(q, lambda: q.judge(name, judged, outcomes, judged_probes))
        else:
            answer = session.request({"op": "value"})
            if answer.get("op") != "answer":
                raise WireError("expected the answer")
            value = session.decode(answer.get("value"))
            result = self._judge(q, lambda: q.evaluate(value))
        result = _clamped(q, result)
        if kind == "check":
            self.record(q.qid, result)
        mistake = result.mistake
        session.send(
            {
                "op": "result",
                "status": result.status,
                "points": result.points,
                "detail": result.detail,
                "case": result.case,
                "mistake": (
                    {"name": mistake.name, "fix": mistake.fix, "heading": mistake.heading}
                    if mistake
                    else None
                ),
            }
        )

    def _judge(self, q: Question, run) -> Result:
        try:
            return run()
        except (WireError, ConnectionError, TimeoutError, OSError) as exc:
            detail = f"the answer could not be judged: {type(exc).__name__}: {exc}"
        except Exception as exc:  # noqa: BLE001 - a judge failure scores 0, never crashes
            detail = f"the answer could not be judged: {type(exc).__name__}: {exc}"
        return Result(q.qid, q.title, "error", 0.0, q.points, detail[:1000])


def _set_limits(limits: Limits) -> None:
    mb = int(limits.memory_mb)
    if mb > 0:
        resource.setrlimit(resource.RLIMIT_AS, (mb << 20, mb << 20))
    cpu = max(1, int(limits.cpu_seconds))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def judge_main(conn: socket.socket, chapter: str, socket_path: str, limits: Limits) -> None:
    """Run one judge: ``conn`` is a socket to the grader (framed JSON, :mod:`tfbook_tools.wire`).

    Messages to the grader: ``{"op": "ready"}``, one ``{"op": "check", "qid", "status",
    "points", "text"}`` per recorded check, ``{"op": "note", "text"}`` and ``{"op": "done"}``.
    The grader sends ``{"op": "stop"}`` (or closes the socket) when the sandbox has ended.
    """
    torch.set_num_threads(1)
    # The judge uses the references itself; nothing it hands out may show them.
    os.environ["TFBOOK_COURSE_MODE"] = "1"

    def send(message: dict) -> None:
        wire_send(conn, message)

    try:
        _set_limits(limits)

        def record(qid: str, result: Result) -> None:
            text = result.text()[:4000]
            send(
                {"op": "check", "qid": qid, "status": result.status, "points": result.points}
                | {"text": text}
            )

        judge = Judge(chapter, limits, record)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        os.chdir(os.path.dirname(socket_path))  # a relative name: no limit on the path's length
        listener.bind(os.path.basename(socket_path))
        os.chmod(socket_path, 0o666)
        listener.listen(8)
        send({"op": "ready"})
        while True:
            ready, _, _ = select.select([listener, conn], [], [], 1.0)
            if conn in ready:
                break
            if listener not in ready:
                continue
            sock, _ = listener.accept()
            with sock:
                try:
                    judge.session(sock)
                except (WireError, OSError, ConnectionError, TimeoutError) as exc:
                    send({"op": "note", "text": f"a check exchange was dropped: {exc!r}"[:300]})
                except Exception as exc:  # noqa: BLE001 - keep serving the submission
                    note = f"a check failed in the judge: {type(exc).__name__}: {exc}"
                    send({"op": "note", "text": note[:300]})
        send({"op": "done"})
    except BaseException as exc:  # noqa: BLE001 - reported, then the process ends
        try:
            note = f"the judge stopped: {type(exc).__name__}: {exc}"
            send({"op": "note", "text": note[:300], "fatal": True})
        except Exception:  # noqa: BLE001
            pass
    finally:
        conn.close()


def server_main(fd: int) -> None:
    """A fork server for judges: loads ``torch`` and the exercises once, forks one per request.

    Requests arrive on the Unix socket ``fd`` as ``{"chapter", "socket", "cpu", "memory"}``
    with the judge's end of a socket pair attached; the answer is ``{"pid": n}``. The server
    ends when the grader closes its end.
    """
    import signal

    from tfbook.exercises import chapters

    torch.set_num_threads(1)  # no thread pool may exist when the server forks
    for chapter in chapters():
        load(chapter)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped automatically
    server = socket.socket(fileno=fd)
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(server, 65536, 1)
        except OSError:
            break
        if not data:
            break
        request = json.loads(data.decode("utf-8"))
        pid = os.fork()
        if pid == 0:
            status = 0
            try:
                server.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                conn = socket.socket(fileno=fds[0])
                limits = Limits(request["cpu"], request["memory"])
                judge_main(conn, request["chapter"], request["socket"], limits)
            except BaseException:  # noqa: BLE001
                status = 1
            finally:
                os._exit(status)
        for n in fds:
            os.close(n)
        server.sendall(json.dumps({"pid": pid}).encode("utf-8"))


if __name__ == "__main__":
    import sys

    server_main(int(sys.argv[1]))
