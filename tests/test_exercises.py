"""Every graded question of every chapter is itself tested.

For each question: the reference passes; every known mistake fails *and is diagnosed as
itself*; a stub is "not attempted"; a raising and an endless implementation are reported.
"""

from __future__ import annotations

import pytest

from tfbook.exercises import chapters, load

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
