"""Every graded question of every chapter is itself tested.

For each question: the reference passes; every known mistake fails *and is diagnosed as
itself*; a stub is "not attempted"; a raising and an endless implementation are reported.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import types
from pathlib import Path

import pytest

from tfbook.exercises import ExerciseSet, Question, chapters, load

ROOT = Path(__file__).resolve().parents[1]

QUESTIONS = [q for ch in chapters() for q in load(ch)]
MISTAKES = [(q, m) for q in QUESTIONS for m in q.mistakes]


def test_every_chapter_has_exercises():
    for ch in chapters():
        assert len(load(ch)) >= 4, f"{ch} has fewer than 4 exercises"


@pytest.mark.parametrize("question", QUESTIONS, ids=lambda q: q.qid)
def test_reference_passes(question):
    result = question.evaluate(question.reference)
    assert result.status == "passed", result.text()
    assert result.points == question.points


@pytest.mark.parametrize("question", QUESTIONS, ids=lambda q: q.qid)
def test_question_has_known_mistakes_and_hints(question):
    assert len(question.mistakes) >= 1, f"{question.qid} lists no known mistake"
    assert question.hints, f"{question.qid} has no hint"
    assert len(question.make_cases()) >= 2, f"{question.qid} tries fewer than 2 cases"


@pytest.mark.parametrize(
    ("question", "mistake"), MISTAKES, ids=[f"{q.qid}-{m.name}" for q, m in MISTAKES]
)
def test_known_mistake_fails_with_its_diagnosis(question, mistake):
    result = question.evaluate(mistake.fn)
    assert result.status == "failed", result.text()
    assert result.points == 0
    assert result.mistake is mistake, (
        f"expected diagnosis {mistake.name!r}, got "
        f"{result.mistake.name if result.mistake else None!r}\n{result.text()}"
    )
    assert f"Likely mistake: {mistake.name}" in result.text()


@pytest.mark.parametrize("question", QUESTIONS, ids=lambda q: q.qid)
def test_stub_is_not_attempted(question):
    def stub(*args, **kwargs):
        raise NotImplementedError("write your solution here")

    result = question.evaluate(stub)
    assert result.status == "not attempted"
    assert "not attempted" in result.text()


@pytest.mark.parametrize("question", QUESTIONS, ids=lambda q: q.qid)
def test_raising_answer_is_reported_with_the_call(question):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("oops")

    result = question.evaluate(broken)
    assert result.status == "error"
    assert "broken(" in result.text() and "ZeroDivisionError: oops" in result.text()


@pytest.mark.parametrize("question", QUESTIONS, ids=lambda q: q.qid)
def test_endless_answer_times_out(question, monkeypatch):
    def endless(*args, **kwargs):
        while True:
            pass

    monkeypatch.setattr(question, "timeout", 0.5)
    result = question.evaluate(endless)
    assert result.status == "timeout"
    assert "did not return within 0.5 s" in result.text()


@pytest.mark.parametrize("question", QUESTIONS, ids=lambda q: q.qid)
def test_output_is_deterministic(question):
    first = question.evaluate(question.mistakes[0].fn).text()
    second = question.evaluate(question.mistakes[0].fn).text()
    assert first == second


# ----------------------------------------------------------------------- declaring questions


def test_contributing_shows_a_question_as_its_module_declares_it():
    """CONTRIBUTING.md's example is a real question: every argument it shows exists and holds
    what the chapter module passes (its mistakes are a subset of the question's)."""
    text = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    section = text[text.index("## Exercises") :]
    block = re.search(r"```python\n(q\d+ = Question\(.*?)```", section, re.S).group(1)
    call = ast.parse(block).body[0].value
    qid, title = (arg.value for arg in call.args)
    chapter = qid.split(".")[0]
    question = load(chapter)[qid]
    module = importlib.import_module(f"tfbook.exercises.{chapter}")
    accepted = inspect.signature(Question).parameters
    shown = {}
    for keyword in call.keywords:
        assert keyword.arg in accepted, f"Question() takes no argument {keyword.arg!r}"
        expression = compile(ast.Expression(keyword.value), "CONTRIBUTING.md", "eval")
        shown[keyword.arg] = eval(expression, vars(module))
    assert title == question.title
    assert {"reference", "cases", "kind", "library", "forbidden"} <= set(shown)
    assert shown["reference"] is question._reference
    assert shown["cases"] is question.make_cases
    assert shown["kind"] == question.kind and shown["library"] is question.library
    assert tuple(shown["forbidden"]) == question.forbidden
    assert shown.get("hints", question.hints) == question.hints
    known = [(m.name, m.fn, m.fix) for m in question.mistakes]
    assert all((m.name, m.fn, m.fix) in known for m in shown.get("mistakes", []))


def _chapter_module(name: str, **questions: Question) -> dict:
    namespace = {"__name__": f"tfbook.exercises.{name}"}
    namespace.update(questions)
    return namespace


def _question(qid: str) -> Question:
    return Question(qid, "title", reference=lambda: 1, cases=lambda: [])


def test_exercise_set_collects_the_declared_questions_in_order():
    namespace = _chapter_module(
        "ch42", q10=_question("ch42.q10"), q2=_question("ch42.q2"), q1=_question("ch42.q1")
    )
    namespace["helper"] = types.SimpleNamespace()  # anything else is not a question
    exercises = ExerciseSet.collect(namespace, "Chapter 42 exercises")
    assert [q.qid for q in exercises] == ["ch42.q1", "ch42.q2", "ch42.q10"]
    assert exercises.names == ["q1", "q2", "q10"] and exercises.chapter == "ch42"


@pytest.mark.parametrize(
    ("name", "qid"), [("q2", "ch42.q3"), ("q1", "ch41.q1"), ("first", "ch42.first")]
)
def test_exercise_set_refuses_a_question_under_another_name(name, qid):
    namespace = _chapter_module("ch42", **{name: _question(qid)})
    with pytest.raises(ValueError, match=f"bound to the name {name!r}"):
        ExerciseSet.collect(namespace, "Chapter 42 exercises")


def test_exercise_set_refuses_a_module_without_questions():
    with pytest.raises(ValueError, match="declares no Question"):
        ExerciseSet.collect(_chapter_module("ch42"), "Chapter 42 exercises")


def test_question_arguments_are_checked():
    with pytest.raises(ValueError, match=r"ch42.q1: kind must be one of .*got 'guess'"):
        Question("ch42.q1", "t", reference=lambda: 1, cases=lambda: [], kind="guess")
    with pytest.raises(TypeError, match=r"forbidden must be a sequence of dotted names"):
        Question("ch42.q1", "t", reference=lambda: 1, cases=lambda: [], forbidden="torch.softmax")


@pytest.mark.parametrize("chapter", chapters())
def test_chapter_modules_export_every_question(chapter):
    module = importlib.import_module(f"tfbook.exercises.{chapter}")
    names = [q.qid.split(".")[1] for q in module.EXERCISES]
    assert set(names) | {"EXERCISES", "progress"} <= set(module.__all__)
    assert all(getattr(module, name) is module.EXERCISES[name] for name in names)
