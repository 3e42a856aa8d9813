"""Shared by the tests/test_wrong_answers*.py files: a question by id, and the one assertion
every plausible wrong answer must meet."""

from __future__ import annotations

from tfbook.exercises import load


def question(qid: str):
    """The ``Question`` called ``qid`` (e.g. ``"ch04.q2"``)."""
    return load(qid.split(".")[0])[qid]


def pairs(wrong: dict) -> tuple[list, list[str]]:
    """``(qid, function)`` pairs of a ``{qid: [functions]}`` dict, and their test ids."""
    found = [(qid, fn) for qid, fns in wrong.items() for fn in fns]
    return found, [f"{qid}-{fn.__name__}" for qid, fn in found]


def assert_rejected(qid: str, wrong, phrase: str = "") -> None:
    """``wrong`` fails question ``qid``, earns nothing, and its feedback contains ``phrase``."""
    result = question(qid).evaluate(wrong)
    assert result.status != "passed", f"{qid} passed a wrong answer {wrong.__name__}"
    assert result.points == 0
    assert phrase in result.text(), result.text()
