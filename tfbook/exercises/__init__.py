"""Graded exercises: one module per chapter, same API everywhere (chapter 0).

Usage in a chapter notebook::

    from tfbook.exercises import ch04 as ex
    ex.q1.check(my_attention)   # runs seeded cases, names a known mistake if it sees one
    ex.q1.hint()                # next hint
    ex.q1.solution()            # reference solution (off when TFBOOK_COURSE_MODE=1)
    ex.progress()               # table of this chapter's questions

See ``tfbook.exercises._engine`` for the engine, ``tfbook_tools.student`` for
student editions and ``tfbook_tools.grading`` for batch grading.
"""

from __future__ import annotations

import importlib
import pkgutil

from tfbook.exercises._engine import Bugs, Case, ExerciseSet, Mistake, Question, Result, compare

__all__ = [
    "Bugs",
    "Case",
    "ExerciseSet",
    "Mistake",
    "Question",
    "Result",
    "compare",
    "chapters",
    "load",
]


def chapters() -> list[str]:
    """Names of the chapter exercise modules that exist (``["ch01", "ch02", ...]``)."""
    names = [m.name for m in pkgutil.iter_modules(__path__) if m.name.startswith("ch")]
    return sorted(n for n in names if n[2:].isdigit())


def load(chapter: str) -> ExerciseSet:
    """The ``ExerciseSet`` of ``chapter`` (``"ch04"``)."""
    if chapter not in chapters():
        raise ValueError(f"unknown exercise chapter {chapter!r}; known: {chapters()}")
    return importlib.import_module(f"tfbook.exercises.{chapter}").EXERCISES
