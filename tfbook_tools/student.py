"""Master notebook -> student edition (chapter 0).

In a master notebook a solution sits between ``# BEGIN SOLUTION`` and ``# END SOLUTION``.
The student edition replaces each such block by a stub that raises
``NotImplementedError`` (which checks report as "not attempted"), clears every output,
locks the check cells (``ex.qN.check(...)``: not editable, not deletable) and records a
stable question id in the metadata of check and solution cells, which the grader uses to
restore the official check cells.

The conversion is a pure function of the master: the same input gives byte-identical
output. :func:`write_student_editions` never overwrites a file whose content differs from
what it would write unless ``force=True``.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

__all__ = [
    "BEGIN",
    "END",
    "StudentEditionError",
    "chapter_of_notebook",
    "check_cells",
    "exercise_imports",
    "make_student_edition",
    "parse_check",
    "solution_lines",
    "write_student_editions",
    "WriteReport",
]

BEGIN = "# BEGIN SOLUTION"
END = "# END SOLUTION"
_IMPORT_RE = re.compile(r"^\s*from\s+tfbook\.exercises\s+import\s+(ch\d\d)\s+as\s+ex\b", re.M)
_CHECK_RE = re.compile(r"^\s*ex\.(q\d+)\.check\((.+)\)\s*$")
STUB = 'raise NotImplementedError("{label}: replace this line with your solution")'


class StudentEditionError(ValueError):
    """A master notebook whose solution markers or check cells are malformed."""


def exercise_imports(source: str) -> list[str]:
    """The chapters a code cell's ``from tfbook.exercises import chNN as ex`` lines name."""
    return _IMPORT_RE.findall(source)


def parse_check(source: str) -> tuple[str, str] | None:
    """``(qN, answer_expression)`` when ``source`` is a check cell's (one ``ex.qN.check(...)``
    line, comments aside), else ``None``."""
    lines = [ln for ln in source.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    match = _CHECK_RE.match(lines[0]) if len(lines) == 1 else None
    return (match.group(1), match.group(2).strip()) if match else None


def chapter_of_notebook(nb: nbformat.NotebookNode) -> str | None:
    """``"chNN"`` from the notebook's ``from tfbook.exercises import chNN as ex`` line."""
    meta = nb.get("metadata", {}).get("tfbook", {})
    if isinstance(meta, dict) and isinstance(meta.get("chapter"), str):
        return meta["chapter"]
    for cell in nb.cells:
        imported = exercise_imports(cell.source) if cell.cell_type == "code" else []
        if imported:
            return imported[0]
    return None


def check_cells(nb: nbformat.NotebookNode) -> dict[str, tuple[int, str, str]]:
    """Map question id (``"ch04.q1"``) -> ``(cell index, cell source, answer expression)``."""
    chapter = chapter_of_notebook(nb)
    found: dict[str, tuple[int, str, str]] = {}
    for index, cell in enumerate(nb.cells):
        parsed = parse_check(cell.source) if cell.cell_type == "code" else None
        if parsed is None:
            continue
        if chapter is None:
            raise StudentEditionError(
                f"cell {index} is a check cell but the notebook never runs "
                "'from tfbook.exercises import chNN as ex'"
            )
        qid = f"{chapter}.{parsed[0]}"
        if qid in found:
            raise StudentEditionError(
                f"question {qid} has two check cells ({found[qid][0]}, {index})"
            )
        found[qid] = (index, cell.source, parsed[1])
    return found


def _replace_solutions(source: str, label: str, where: str) -> tuple[str, int]:
    out: list[str] = []
    inside = False
    blocks = 0
    for line in source.splitlines():
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise StudentEditionError(f"{where}: '{BEGIN}' inside another solution block")
            inside = True
            blocks += 1
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}# YOUR CODE HERE")
            out.append(indent + STUB.format(label=label))
        elif stripped == END:
            if not inside:
                raise StudentEditionError(f"{where}: '{END}' without '{BEGIN}'")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise StudentEditionError(f"{where}: '{BEGIN}' without '{END}'")
    return "\n".join(out), blocks


def solution_lines(nb: nbformat.NotebookNode) -> list[str]:
    """Every non-blank line between solution markers (what a student edition must not contain)."""
    lines: list[str] = []
    for cell in nb.cells:
        inside = False
        for line in cell.source.splitlines():
            if line.strip() == BEGIN:
                inside = True
            elif line.strip() == END:
                inside = False
            elif inside and line.strip():
                lines.append(line.strip())
    return lines


def make_student_edition(
    master: nbformat.NotebookNode, source_name: str = ""
) -> nbformat.NotebookNode:
    """Return the student edition of ``master`` (the master itself is not modified)."""
    nb = copy.deepcopy(master)
    chapter = chapter_of_notebook(nb)
    checks = check_cells(nb)
    qid_at = {index: qid for qid, (index, _, _) in checks.items()}
    check_indices = sorted(qid_at)
    for index, cell in enumerate(nb.cells):
        meta = cell.setdefault("metadata", {})
        meta.pop("execution", None)
        if cell.cell_type != "code":
            continue
        cell.outputs = []
        cell.execution_count = None
        if BEGIN in cell.source:
            following = [i for i in check_indices if i > index]
            if not following:
                raise StudentEditionError(f"solution cell {index} is not followed by a check cell")
            qid = qid_at[following[0]]
            cell.source, _ = _replace_solutions(cell.source, qid, f"cell {index}")
            hidden = ("hide-input", "hide-cell", "remove-input", "remove-cell")
            tags = [t for t in meta.get("tags", []) if t not in hidden]
            if tags:
                meta["tags"] = tags
            else:
                meta.pop("tags", None)
            meta["tfbook"] = {"question": qid, "role": "solution"}
        if index in qid_at:
            meta["editable"] = False
            meta["deletable"] = False
            meta["tfbook"] = {"question": qid_at[index], "role": "check"}
    nb.metadata.pop("widgets", None)
    nb.metadata["tfbook"] = {"edition": "student", "chapter": chapter, "master": source_name}
    return nb


@dataclass
class WriteReport:
    """What :func:`write_student_editions` did with one file: written, unchanged or refused."""

    path: Path
    action: str  # "written", "unchanged", "refused"


def write_student_editions(
    sources: list[Path], out_dir: Path, *, force: bool = False
) -> list[WriteReport]:
    """Write the student edition of every master in ``sources`` into ``out_dir``.

    A file that exists with different content is left alone ("refused") unless ``force``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    reports = []
    for src in sources:
        master = nbformat.read(src, as_version=4)
        student = make_student_edition(master, src.name)
        text = nbformat.writes(student) + "\n"
        dest = out_dir / src.name
        if dest.exists():
            if dest.read_text(encoding="utf-8") == text:
                reports.append(WriteReport(dest, "unchanged"))
                continue
            if not force:
                reports.append(WriteReport(dest, "refused"))
                continue
        dest.write_text(text, encoding="utf-8")
        reports.append(WriteReport(dest, "written"))
    return reports
