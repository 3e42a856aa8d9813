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

- ``forbidden``: what the answer must not call (what the exercise asks the student to
  write): dotted names of functions, watched with ``sys.setprofile``, and aten operations
  (``"aten._softmax"``), watched with a ``TorchDispatchMode`` whatever name reached them;
- ``loop_probe``: for tasks that say "no loop over positions", inputs of two lengths
  (``T = 4`` and ``T = 32``) on which the answer's work is counted (Python lines it runs
  and tensor operations it calls, :class:`_WorkCounter`); a vectorised answer does the same
  work at both lengths, a loop over positions about eight times as much.

A question whose answer is not a plain function of its inputs (a training step that needs a
model and an optimizer) names a ``driver`` in ``DRIVERS``: the driver builds those
objects from plain data wherever the answer runs, calls the answer and returns plain data.

The engine is split by concern; this module holds the question and a chapter's set of
questions, and re-exports the rest:

- ``_compare``: comparing an output with the reference's (:func:`compare`);
- ``_run``: running the answer on the cases (:class:`Case`, :class:`Frozen`,
  :func:`run_answer`, :class:`Outcome`);
- ``_watch``: what is watched meanwhile (time, forbidden calls, the work done);
- ``_drivers``: answers called through a training loop (``DRIVERS``);
- ``_advice``: diagnoses (:class:`Mistake`, :class:`Bugs`, a lost dtype, misleading
  crashes, properties of a wrong output);
- ``_display``: plain-text and HTML feedback (:class:`Result`, hints).
"""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

import torch

from tfbook.exercises._advice import (
    LOOP_OVER_POSITIONS,
    RETURNED_NONE,
    Bugs,
    Mistake,
    crash_advice,
    dtype_lost,
    property_advice,
)
from tfbook.exercises._compare import (
    adopt_weights,
    compare,
    compare_modules,
    run_module,
)
from tfbook.exercises._display import (
    STATUSES,
    Result,
    _env_flag,
    _show,
    _Table,
    call_text,
    hint_text,
)
from tfbook.exercises._drivers import DRIVERS, drive_training_step
from tfbook.exercises._run import (
    OUTCOME_KINDS,
    Case,
    Frozen,
    Outcome,
    _call,
    failed_case_copy,
    run_answer,
)
from tfbook.exercises._watch import OPERATIONS, _OneThread, describe_operation
from tfbook.exercises._watch import _run_with_timeout as _run_with_timeout  # for the sandbox

__all__ = [
    "Bugs",
    "Case",
    "Frozen",
    "Mistake",
    "Outcome",
    "Question",
    "Result",
    "ExerciseSet",
    "KINDS",
    "compare",
    "adopt_weights",
    "compare_modules",
    "run_module",
    "run_answer",
    "drive_training_step",
    "STATUSES",
    "hint_text",
    "OUTCOME_KINDS",
    "DRIVERS",
    "LOOP_OVER_POSITIONS",
    "OPERATIONS",
]

#: Every status a check can end in.
#: The kinds of question (``Question(kind=...)``): write a function the chapter describes,
#: commit to a number or a choice before the cell that reveals it, fix a realistic bug, work a
#: number out on paper, make something new from library parts.
KINDS = ("implement", "predict", "debug", "derive", "build")


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
        kind: what the question asks for, one of ``KINDS``: ``"implement"``,
            ``"predict"``, ``"debug"``, ``"derive"`` or ``"build"``.
        library: the ``tfbook`` function this exercise re-derives, called with the
            reference's signature (an adapter when the library's signature differs); a test
            runs every case through both and requires them to agree, so the library and the
            exercise cannot drift apart.
        library_note: when ``library`` is ``None``, why there is no library counterpart.
        forbidden: what the answer must not call (what the exercise asks the student to
            write): dotted names of functions (``"torch.softmax"``) and aten operations
            (``"aten._softmax"``, see ``OPERATIONS``), refused however the answer reaches
            them; a call fails the check.
        loop_probe: for tasks that say "no loop over positions": ``length -> Case``, inputs
            with ``length`` positions (or a list of such cases, one per code path, e.g. per
            mode of the answer). The answer runs on ``probe_lengths`` (4 and 32) with its
            work counted, and work that grows by at least half a unit per added position, on
            any of the cases, fails.
        driver: the name of a ``DRIVERS`` entry when the answer is not a plain function of
            the cases' inputs (a training step): the reference, the answer, the mistakes and
            ``library`` are then all called through it.
        bugs: for a debug question whose given code has several bugs, :class:`Bugs`: an
            answer that fixed some of them is told which remain.
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
        kind: str = "implement",
        library: Callable[..., Any] | None = None,
        library_note: str = "",
        forbidden: Sequence[str] = (),
        loop_probe: Callable[[int], Case | list[Case]] | None = None,
        driver: str | None = None,
        bugs: Bugs | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"{qid}: kind must be one of {KINDS}, got {kind!r}")
        if isinstance(forbidden, str) or not all(isinstance(n, str) for n in forbidden):
            raise TypeError(
                f"{qid}: forbidden must be a sequence of dotted names (str), got {forbidden!r}"
            )
        for name in forbidden:
            if name.startswith("aten."):
                describe_operation(name)  # a ValueError for an operator PyTorch does not have
        if driver is not None and driver not in DRIVERS:
            raise ValueError(f"driver must be one of {sorted(DRIVERS)}, got {driver!r}")
        if bugs is not None and not isinstance(bugs, Bugs):
            raise TypeError(f"{qid}: bugs must be a Bugs or None, got {type(bugs).__name__}")
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
        self.kind = kind
        self.library = library
        self.library_note = library_note
        self.forbidden: tuple[str, ...] = tuple(forbidden)
        self.driver = driver
        self.loop_probe = loop_probe
        self.probe_lengths: tuple[int, int] = (4, 32)
        self.bugs = bugs
        self.state = "not checked"
        self._hints_shown = 0
        self._last_case: Case | None = None
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
        """The loop probe's inputs, shortest first (none without a ``loop_probe``): every case
        of the first length, then the same cases at the second."""
        if self.loop_probe is None:
            return []
        made = [self.loop_probe(n) for n in self.probe_lengths]
        return [case for cases in made for case in (cases if isinstance(cases, list) else [cases])]

    def _diagnose(self, case: Case, expected: Any, got: Any) -> Mistake | None:
        """The known mistake that gives ``got`` on ``case``; else the mix of fixed and
        remaining bugs that does (``bugs``); else what the output shows by itself."""
        partial = [self.bugs.mistake(left) for left in self.bugs.remaining()] if self.bugs else []
        for mistake in [*self.mistakes, *partial]:
            try:
                wrong = self.call(mistake.fn, case)
            except Exception:  # noqa: BLE001 - a mistake that cannot run on this case
                continue
            if self.compare(wrong, got) is None:
                return mistake
        dtype = dtype_lost(case, expected, got)
        if dtype is not None:
            return dtype
        shown = property_advice(expected, got)
        if shown == RETURNED_NONE:
            return Mistake(shown[0], None, shown[1])
        if shown is not None:
            return Mistake(shown[0], None, shown[1], "Your output shows")
        return None

    def last_case(self) -> Case:
        """The inputs of the last case this question's check failed on (a fresh copy):
        ``case = ex.q1.last_case()``, then ``my_function(*case.args, **case.kwargs)``."""
        return failed_case_copy(self.qid, self._last_case)

    def _rerun_text(self, name: str, case: Case) -> str:
        """How to rebuild ``case`` in the notebook: one line."""
        qn = self.qid.rsplit(".", 1)[-1]
        if self.driver is not None:
            return (
                f"to look at this case: case = ex.{qn}.last_case() (case.args[0] describes "
                "the model, the optimizer and the batches)"
            )
        fn = name if name.isidentifier() and name != "answer" else "your_function"
        call = f"{fn}(*case.args" + (", **case.kwargs)" if case.kwargs else ")")
        seeded = f" after torch.manual_seed({case.seed})" if case.seed is not None else ""
        what = "build this case's module" if inspect.isclass(self._reference) else "rerun this case"
        return f"to {what}: case = ex.{qn}.last_case(), then {call}{seeded}"

    # -- the check itself
    def evaluate(self, answer: Any) -> Result:
        """Check ``answer`` (a function) without printing anything; return a :class:`Result`."""
        if not callable(answer):
            return self._result(
                "error",
                f"expected a function to check, got {type(answer).__name__}: "
                f"pass the function itself, e.g. check(my_function), not its result",
            )
        if inspect.isclass(self._reference) and isinstance(answer, torch.nn.Module):
            return self._result(
                "error",
                f"expected a class to check, got an instance of {type(answer).__name__}: "
                f"pass the class itself, check({type(answer).__name__}), not "
                f"{type(answer).__name__}(...); the check makes its own instances with each "
                "case's arguments",
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
            call = call_text(name, case, self._params, self.driver)
            if index >= len(outcomes):
                return self._result(
                    "error", f"call: {call}\nno outcome was reported for this case", case.name
                )
            outcome = outcomes[index]
            if outcome.kind == "not attempted":
                return self._result("not attempted")
            if outcome.kind in ("timeout", "raised", "returned", "counted"):
                self._last_case = case
            if outcome.kind == "timeout":
                return self._result(
                    "timeout",
                    f"call: {call}\ndid not return within {self.timeout:g} s (an endless loop?)\n"
                    + self._rerun_text(name, case),
                    case.name,
                )
            if outcome.kind == "raised":
                return self._result(
                    "error",
                    f"call: {call}\nraised {outcome.detail}\n{self._rerun_text(name, case)}",
                    case.name,
                    self._crash_advice(name, outcome.detail),
                )
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
                    f"call: {call}\n{diff}\n{self._rerun_text(name, case)}",
                    case.name,
                    self._diagnose(case, expected, outcome.value),
                )
        if probes:
            loop = self._judge_work(name, outcomes[len(cases) :])
            if loop is not None:
                return loop
        return self._result("passed", f"{len(cases)} cases")

    def _crash_advice(self, name: str, detail: str) -> Mistake | None:
        """Advice for an exception whose message misleads (``CRASHES``), and for a module
        instance passed where the check wants its class."""
        if inspect.isclass(self._reference) and name == "answer":
            return Mistake(
                "an instance passed where the check wants the class",
                None,
                "Pass the class itself, check(MyClass), not MyClass(...): the check makes its "
                "own instances with each case's arguments.",
            )
        known = crash_advice(detail)
        return Mistake(known[0], None, known[1]) if known is not None else None

    def _judge_work(self, name: str, outcomes: Sequence[Outcome]) -> Result | None:
        """Fail an answer whose work grows with the number of positions (a loop over them)."""
        t_short, t_long = self.probe_lengths
        per_length = len(outcomes) // 2  # the probe's cases at T = 4, then the same at T = 32
        for short, long in zip(outcomes[:per_length], outcomes[per_length:], strict=True):
            work = [max(0, o.lines) + max(0, o.tensor_ops) for o in (short, long)]
            if work[1] - work[0] >= (t_long - t_short) / 2:  # a vectorised answer: the same
                break
        else:
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
        print(hint_text(self.qid, self.hints, self._hints_shown))

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

    @classmethod
    def collect(cls, namespace: dict[str, Any], title: str) -> ExerciseSet:
        """The questions a chapter module declares, in order: ``collect(globals(), title)``.

        Every :class:`Question` bound to a name ``qN`` of the module whose globals are
        ``namespace`` (``tfbook.exercises.chNN``) belongs to the set, ordered by ``N``; its id
        must be ``"chNN.qN"``, so ``ex.q3`` is always question 3 of its chapter.
        """
        chapter = str(namespace.get("__name__", "")).rsplit(".", 1)[-1]
        found = []
        for name, value in namespace.items():
            if not isinstance(value, Question):
                continue
            if value.qid != f"{chapter}.{name}" or not name[1:].isdigit():
                raise ValueError(
                    f"question {value.qid!r} is bound to the name {name!r} in {chapter}: "
                    f"expected the name to be the id's last part (q1, q2, ...)"
                )
            found.append((int(name[1:]), value))
        if not found:
            raise ValueError(f"{chapter} declares no Question (names q1, q2, ...)")
        return cls(chapter, title, [q for _, q in sorted(found, key=lambda pair: pair[0])])

    @property
    def names(self) -> list[str]:
        """The module-level names of the questions, in order (``["q1", "q2", ...]``)."""
        return [q.qid.rsplit(".", 1)[1] for q in self.questions]

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
