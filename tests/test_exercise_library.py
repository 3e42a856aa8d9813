"""Every exercise agrees with the library function it re-derives (one home per piece of logic).

An exercise's reference solution is a second, step-by-step copy of a ``tfbook`` function. Each
``Question`` names that function (``question.library``) or says why there is none
(``question.library_note``); here every case of every question runs through both, so a broken
library function or a drifting reference fails CI.
"""

from __future__ import annotations

import pytest
import torch

from tfbook.exercises import chapters, load

QUESTIONS = [q for ch in chapters() for q in load(ch)]
WITH_LIBRARY = [q for q in QUESTIONS if q.library is not None]


@pytest.mark.parametrize("question", QUESTIONS, ids=lambda q: q.qid)
def test_every_question_names_its_library_function_or_says_why_not(question):
    assert question.library is not None or question.library_note.strip(), (
        f"{question.qid}: set .library (the tfbook function it re-derives) or .library_note"
    )


def test_most_questions_have_a_library_counterpart():
    assert len(WITH_LIBRARY) >= 20, [q.qid for q in WITH_LIBRARY]


@pytest.mark.parametrize("question", WITH_LIBRARY, ids=lambda q: q.qid)
def test_reference_and_library_agree_on_every_case(question):
    for case in question.make_cases():
        expected = question.call(question.reference, case)
        with torch.no_grad():
            got = question.call(question.library, case)
        problem = question.compare(expected, got)
        assert problem is None, f"{question.qid}, case {case.name!r}: library differs: {problem}"
