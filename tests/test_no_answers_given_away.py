"""No student edition gives an answer away: no line of any solution appears anywhere in it.

Checked against the whole student edition (code and markdown cells, the collapsed hint blocks
included) and against everything ``hint()`` prints. Lines are compared with white space
removed, so ``x-mu`` and ``x - mu`` count as the same line. Short or generic lines (under 12
characters without spaces, such as ``return out``) and comments are not counted.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from tfbook.exercises import chapters, load
from tfbook_tools.student import make_student_edition, solution_lines

ROOT = Path(__file__).resolve().parents[1]
MASTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
MIN_CHARS = 12


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _countable(line: str) -> bool:
    line = line.strip()
    return not line.startswith("#") and len(_squash(line)) >= MIN_CHARS


def _hint_text(chapter: str) -> str:
    return "\n".join(h for q in load(chapter) for h in q.hints)


@pytest.mark.parametrize("path", MASTERS, ids=lambda p: p.stem)
def test_student_edition_contains_no_solution_line(path):
    master = nbformat.read(path, as_version=4)
    student = make_student_edition(master, path.name)
    chapter = f"ch{int(path.name[:2]):02d}"
    text = _squash("\n".join(c.source for c in student.cells) + "\n" + _hint_text(chapter))
    leaks = [line for line in solution_lines(master) if _countable(line) and _squash(line) in text]
    assert not leaks, f"{path.name}: solution lines visible to students: {leaks}"


@pytest.mark.parametrize("chapter", chapters())
def test_hints_contain_no_line_of_the_reference(chapter):
    import inspect

    hints = _squash(_hint_text(chapter))
    leaks = []
    for q in load(chapter):
        body = inspect.getsource(q.reference).splitlines()[1:]  # not the `def` line
        leaks += [
            f"{q.qid}: {ln.strip()}" for ln in body if _countable(ln) and _squash(ln) in hints
        ]
    assert not leaks, f"hints that hold a line of the reference solution: {leaks}"
