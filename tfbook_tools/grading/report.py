"""What grading reports (chapter 0): one row per submission, the CSV and the feedback files.

A submission's :class:`GradeResult` becomes one CSV row (per-question points, total, status)
and one Markdown feedback file. Text that came from a submission never reaches a terminal or a
file with control characters (:func:`printable`), and no CSV cell starts a spreadsheet
formula (:func:`csv_cell`). :class:`GradesCsv` appends rows as submissions finish and, at the
end, rewrites the file in the order the submissions were given.

Public API: :class:`GradeResult`, :class:`GradesCsv`, :data:`STATUSES`, :func:`printable`,
:func:`csv_cell`, :func:`csv_header`, :func:`csv_row`, :func:`feedback_markdown`,
:func:`feedback_names`, :func:`qid_key`.
"""

from __future__ import annotations

import csv
import io
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "GradeResult",
    "GradesCsv",
    "STATUSES",
    "csv_cell",
    "csv_header",
    "csv_row",
    "feedback_markdown",
    "feedback_names",
    "printable",
    "qid_key",
]

STATUSES = ("graded", "timeout", "error", "invalid")
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


@dataclass
class GradeResult:
    """Outcome for one submission."""

    file: str
    chapter: str = ""
    status: str = "invalid"
    reason: str = ""
    scores: dict[str, float] = field(default_factory=dict)  # qid -> points
    max_points: dict[str, float] = field(default_factory=dict)
    feedback: dict[str, str] = field(default_factory=dict)  # qid -> check text

    @property
    def total(self) -> float:
        return sum(self.scores.values())

    @property
    def max_total(self) -> float:
        return sum(self.max_points.values())

    @property
    def percent(self) -> float:
        return 100.0 * self.total / self.max_total if self.max_total else 0.0


def printable(text: str) -> str:
    """No control characters (escape sequences) from a submission reach a terminal or file."""
    return "".join(c if c.isprintable() else "?" for c in text)


def csv_cell(value: object) -> str:
    """A CSV cell that a spreadsheet never reads as a formula."""
    text = str(value)
    return "'" + text if text.startswith(_FORMULA) else text


def csv_header(qids: list[str]) -> list[str]:
    """The CSV's first row for the questions ``qids``."""
    return ["file", "chapter", "status", *qids, "total", "max_total", "percent"]


def csv_row(result: GradeResult, qids: list[str]) -> list[str]:
    """``result`` as a CSV row under :func:`csv_header` of ``qids``."""
    cells = [f"{result.scores[q]:g}" if q in result.scores else "" for q in qids]
    row = [result.file, result.chapter, result.status, *cells]
    row += [f"{result.total:g}", f"{result.max_total:g}", f"{result.percent:.1f}"]
    return [csv_cell(c) for c in row]


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def feedback_markdown(result: GradeResult) -> str:
    """The feedback file of one submission: status, notes, score, then each check's text."""
    name = Path(result.file).name
    lines = [f"# Feedback: {name}", ""]
    lines.append(f"- chapter: {result.chapter or 'unknown'}")
    lines.append(f"- status: {result.status}")
    if result.reason:
        lines.append(f"- notes: {result.reason}")
    lines.append(f"- score: {result.total:g} / {result.max_total:g} ({result.percent:.1f}%)")
    lines.append("")
    for qid in result.scores:
        lines.append(f"## {qid}: {result.scores[qid]:g} / {result.max_points[qid]:g}")
        lines.append("")
        text = result.feedback.get(qid, "")
        fence = _fence(text)
        lines += [fence + "text", text, fence, ""]
    return "\n".join(lines)


def qid_key(qid: str) -> tuple:
    """Sort key of question ids: by chapter, then by number (``q2`` before ``q10``)."""
    chapter, _, number = qid.partition(".q")
    return (chapter, int(number) if number.isdigit() else 0, qid)


def feedback_names(paths: list[Path]) -> list[str]:
    """One feedback file name per submission (``<stem>.feedback.md``), distinct."""
    used: set[str] = set()
    names = []
    for path in paths:
        stem = Path(path).stem or "submission"
        name, n = f"{stem}.feedback.md", 1
        while name in used:
            n += 1
            name = f"{stem}-{n}.feedback.md"
        used.add(name)
        names.append(name)
    return names


class GradesCsv:
    """The grades CSV and the feedback files of one batch, written as submissions finish.

    Use as a context manager; :meth:`add` may be called from several threads.
    """

    def __init__(self, out_csv: Path, qids: list[str], paths: list[Path]) -> None:
        self.out_csv, self.qids = Path(out_csv), qids
        self.names = feedback_names(paths)
        self.results: list[GradeResult | None] = [None] * len(paths)
        self._lock = threading.Lock()

    def __enter__(self) -> GradesCsv:
        self._fh = self.out_csv.open("w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._fh)
        self._writer.writerow(csv_header(self.qids))
        self._fh.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()

    def add(self, index: int, result: GradeResult) -> None:
        """Append the row of submission ``index`` and write its feedback file."""
        with self._lock:
            self.results[index] = result
            self._writer.writerow(csv_row(result, self.qids))
            self._fh.flush()
            feedback = self.out_csv.parent / self.names[index]
            feedback.write_text(feedback_markdown(result), encoding="utf-8")

    def rewrite_in_order(self) -> list[GradeResult]:
        """Replace the CSV (atomically) by its rows in the submissions' order; return them."""
        final = [r for r in self.results if r is not None]
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(csv_header(self.qids))
        for r in final:
            writer.writerow(csv_row(r, self.qids))
        tmp = self.out_csv.with_name(f".{self.out_csv.name}.tmp")
        tmp.write_text(buffer.getvalue(), encoding="utf-8", newline="")
        os.replace(tmp, self.out_csv)
        return final
