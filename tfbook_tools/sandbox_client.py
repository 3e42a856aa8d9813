"""The exercise API inside a grading sandbox (chapter 0).

While ``tfbook grade`` runs a submission, ``tfbook.exercises`` inside the sandbox is a stand-in
built by the grader: ``ex.q1.check(fn)``, ``evaluate``, ``hint``, ``progress`` behave as
usual, but the sandbox holds no reference solution, no expected value and no solution text.
A check asks the grader's judge (a process outside the sandbox) for the case inputs, runs the
student's function on them here (:func:`tfbook.exercises._engine.run_answer`), sends the
outputs as plain data (:mod:`tfbook_tools.wire`) and shows the judge's verdict. The judge
records the verdict of the last ``check`` of each question; nothing this process prints,
writes or returns can change a score in any other way.
"""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path
from typing import Any

from tfbook.exercises._engine import (
    Case,
    ExerciseSet,
    Mistake,
    Result,
    _run_with_timeout,
    _show,
    failed_case_copy,
    hint_text,
    run_answer,
)
from tfbook_tools.wire import MAX_MESSAGE, Session, WireError, decode

__all__ = ["install", "chapters", "load", "RemoteQuestion", "RemoteExerciseSet"]

SOCKET_ENV = "TFBOOK_GRADER_SOCKET"
_MANIFEST = "manifest.json"


def _manifest() -> dict:
    import tfbook.exercises

    path = Path(tfbook.exercises.__file__).with_name(_MANIFEST)
    return json.loads(path.read_text(encoding="utf-8"))


class _StudentObjects:
    """What the judge may do with objects of this sandbox: anything (they are the student's)."""

    report_exits = True

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout

    def exportable(self, obj: Any) -> bool:
        return True

    def call(self, obj: Any, method: str | None, args: list, kwargs: dict) -> Any:
        fn = obj if method is None else getattr(obj, method)
        result = _run_with_timeout(lambda: fn(*args, **kwargs), self.timeout)
        if hasattr(result, "__next__") and hasattr(result, "__iter__"):
            result = list(result)  # generators (named_parameters, ...) cross as lists
        return result

    def getattr(self, obj: Any, name: str) -> tuple[str, Any]:
        value = getattr(obj, name)
        if callable(value) and hasattr(value, "__self__") and not isinstance(value, type):
            return "method", None
        return "value", value


def _cases(session: Session, items: list) -> list[Case]:
    """The judge's cases (or loop probes) as :class:`Case` s of plain data and handles."""
    return [
        Case(
            str(c["name"]),
            tuple(session.decode(c["args"])),
            dict(session.decode(c["kwargs"])),
            c["seed"],
        )
        for c in items
    ]


class RemoteQuestion:
    """``ex.qN`` while grading: checks are judged outside the sandbox."""

    def __init__(self, info: dict) -> None:
        self.qid = info["qid"]
        self.title = info["title"]
        self.points = float(info["points"])
        self.hints = list(info["hints"])
        self.state = "not checked"
        self._hints_shown = 0
        self._cases: dict[str, Case] = {}  # the last check's cases, by name
        self._last_case: Case | None = None

    def __repr__(self) -> str:
        return f"<Question {self.qid}: {self.title}>"

    def __getattr__(self, name: str) -> Any:
        if name in ("reference", "mistakes", "make_cases", "library"):
            raise AttributeError(
                f"[{self.qid}] {name} is not available while the submission is graded"
            )
        raise AttributeError(name)

    # -- the judge
    def _ask(self, kind: str, answer: Any) -> Result:
        path = os.environ.get(SOCKET_ENV, "")
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(path)
        except OSError as exc:
            return self._local("error", f"the grader could not be reached ({exc})")
        with sock:
            try:
                return self._session(sock, kind, answer)
            except (OSError, WireError, ValueError, KeyError, TypeError) as exc:
                return self._local("error", f"the exchange with the grader failed ({exc})")

    def _session(self, sock: socket.socket, kind: str, answer: Any) -> Result:
        is_function = callable(answer)
        name = getattr(answer, "__name__", "answer")
        session = Session(sock, _StudentObjects(10.0))
        start = {
            "op": "start",
            "kind": kind,
            "qid": self.qid,
            "callable": is_function,
            "name": name if isinstance(name, str) else "answer",
        }
        reply = session.request(start)
        if reply.get("op") == "error":
            return self._local("error", str(reply.get("message", "refused by the grader")))
        if is_function:
            timeout = float(reply["timeout"])
            session.policy = _StudentObjects(timeout)
            cases = _cases(session, reply["cases"])
            self._cases = {case.name: case for case in cases}
            probes = _cases(session, reply.get("probes", []))
            forbidden = [str(n) for n in reply.get("forbidden", []) if isinstance(n, str)]
            driver = reply.get("driver")
            driver = str(driver) if driver is not None else None
            outcomes = run_answer(answer, cases, timeout, forbidden, probes=probes, driver=driver)
            sent = []
            for outcome in outcomes:
                item = {"kind": outcome.kind, "detail": outcome.detail, "index": outcome.index}
                item |= {"lines": outcome.lines, "tensor_ops": outcome.tensor_ops}
                if outcome.kind in ("returned", "counted"):
                    try:
                        item["value"] = session.encode(outcome.value)
                    except (WireError, RecursionError) as exc:
                        item = {
                            "kind": "raised",
                            "detail": f"WireError: the output cannot be sent to the grader: {exc}",
                        }
                sent.append(item)
            message = {"op": "answer", "outcomes": sent}
        else:
            try:
                message = {"op": "answer", "value": session.encode(answer)}
            except (WireError, RecursionError) as exc:
                message = {"op": "answer", "value": None, "note": f"not sendable: {exc}"}
        if len(json.dumps(message)) > MAX_MESSAGE:
            message = {
                "op": "answer",
                "outcomes": [{"kind": "raised", "detail": "WireError: the output is too large"}],
            }
        reply = session.request(message)
        if reply.get("op") != "result":
            return self._local("error", "the grader sent no verdict")
        mistake = reply.get("mistake")
        failed_on = self._cases.get(str(reply.get("case", "")))
        if reply.get("status") != "passed" and failed_on is not None:
            self._last_case = failed_on
        return Result(
            self.qid,
            self.title,
            str(reply["status"]),
            float(reply["points"]),
            self.points,
            str(reply.get("detail", "")),
            str(reply.get("case", "")),
            Mistake(
                str(mistake["name"]),
                None,
                str(mistake["fix"]),
                str(mistake.get("heading", "Likely mistake")),
            )
            if mistake
            else None,
        )

    def _local(self, status: str, detail: str) -> Result:
        return Result(self.qid, self.title, status, 0.0, self.points, detail)

    # -- the student API
    def evaluate(self, answer: Any) -> Result:
        """Check ``answer`` without recording it; return the judge's :class:`Result`."""
        return self._ask("evaluate", answer)

    def check(self, answer: Any) -> None:
        """Check ``answer``; the judge records this verdict for the grade."""
        result = self._ask("check", answer)
        self.state = result.status
        _show(result)

    def last_case(self) -> Case:
        """The inputs of the last case a check failed on (a fresh copy), as in a notebook."""
        return failed_case_copy(self.qid, self._last_case)

    def hint(self) -> None:
        if not self.hints:
            print(f"[{self.qid}] No hints for this question.")
            return
        if self._hints_shown >= len(self.hints):
            print(f"[{self.qid}] No more hints: all {len(self.hints)} shown. Try solution().")
            return
        self._hints_shown += 1
        print(hint_text(self.qid, self.hints, self._hints_shown, solutions=False))

    def solution(self) -> None:
        print(f"[{self.qid}] Solutions are switched off for this course (TFBOOK_COURSE_MODE).")

    def solution_source(self) -> str:
        raise RuntimeError(
            f"[{self.qid}] solutions are switched off for this course (TFBOOK_COURSE_MODE)"
        )


class RemoteExerciseSet(ExerciseSet):
    """``ex.EXERCISES`` while grading: the engine's own set, holding :class:`RemoteQuestion` s."""


_SETS: dict[str, RemoteExerciseSet] = {}


def load(chapter: str) -> RemoteExerciseSet:
    if chapter not in _SETS:
        info = _manifest()["chapters"].get(chapter)
        if info is None:
            raise ValueError(f"unknown exercise chapter {chapter!r}; known: {chapters()}")
        questions = [RemoteQuestion(q) for q in info["questions"]]
        _SETS[chapter] = RemoteExerciseSet(chapter, info["title"], questions)
    return _SETS[chapter]


def chapters() -> list[str]:
    return sorted(_manifest()["chapters"])


def install(namespace: dict, chapter: str) -> None:
    """Fill a chapter module's namespace: ``q1``, ``q2``, ..., ``EXERCISES``, ``progress``."""
    exercises = load(chapter)
    for q in exercises:
        namespace[q.qid.split(".")[-1]] = q
    namespace["EXERCISES"] = exercises
    namespace["progress"] = exercises.progress
    public = _manifest()["chapters"][chapter].get("public", {})
    for name, value in public.items():
        if re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name) and name not in namespace:
            namespace[name] = decode(value)
