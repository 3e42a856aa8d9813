"""Restoring the official check cells into a submission (chapter 0).

The master notebook's check cells replace the submission's by question id (from the cell
metadata a student edition carries, else from the ``ex.qN.check(...)`` line), so a deleted
or edited check cell changes nothing; a missing one goes after its solution cell. What the
sandbox runs is the resulting list of code cells, each with a label for the reasons a row
gives ("cell 7 (the check cell of ch04.q1) raised ...").

Public API: :func:`prepare`, :class:`Prepared`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

from tfbook_tools.grading.reading import cell_meta, cell_source
from tfbook_tools.student import check_cells, parse_check

__all__ = ["Prepared", "prepare"]


@dataclass
class Prepared:
    """A submission ready to run: the code cells the sandbox executes, and what they are."""

    index: int  # its place in the batch
    path: Path
    chapter: str
    notebook: str  # JSON: {"cells": [source, ...]}
    labels: list[str]  # one per cell, for the reasons a row gives
    notes: list[str]  # what restoring changed


def _check_qid(cell: dict, chapter: str) -> str | None:
    parsed = parse_check(cell_source(cell)) if cell.get("cell_type") == "code" else None
    return f"{chapter}.{parsed[0]}" if parsed else None


def _defines(source: str, name: str) -> bool:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        return False
    return re.search(rf"^(def\s+{name}\b|{name}\s*=|class\s+{name}\b)", source, re.M) is not None


def _marked(cells: list, qid: str, role: str) -> list[int]:
    """The cells whose metadata marks them as ``qid``'s cell of ``role``."""
    return [
        i
        for i, c in enumerate(cells)
        if cell_meta(c).get("role") == role and cell_meta(c).get("question") == qid
    ]


def prepare(index: int, path: Path, nb: nbformat.NotebookNode, chapter: str, master) -> Prepared:
    """Restore the master's check cells into ``nb`` and keep only its code cells."""
    official = check_cells(master)  # qid -> (index, source, answer expression)
    cells = list(nb.cells)
    notes: list[str] = []
    replaced: dict[int, str] = {}
    inserts: list[tuple[int, str]] = []
    for qid, (_, source, expr) in official.items():
        targets = _marked(cells, qid, "check")
        targets = targets or [i for i, c in enumerate(cells) if _check_qid(c, chapter) == qid]
        if targets:
            for i in targets:
                replaced[i] = qid
                if cell_source(cells[i]) != source or cells[i].get("cell_type") != "code":
                    notes.append(f"{qid}: check cell was edited; the official one was restored")
            continue
        solution = _marked(cells, qid, "solution") or [
            i
            for i, c in enumerate(cells)
            if c.get("cell_type") == "code" and _defines(cell_source(c), expr)
        ]
        inserts.append((solution[-1] + 1 if solution else len(cells), qid))
        notes.append(f"{qid}: check cell was missing; the official one was restored")
    plan: list[tuple[str, str]] = []  # (source, label)
    pending = sorted(inserts)
    for i, cell in enumerate(cells + [None]):
        while pending and pending[0][0] == i:
            qid = pending.pop(0)[1]
            plan.append((official[qid][1], f"the restored check cell of {qid}"))
        if cell is None:
            break
        if i in replaced:
            plan.append((official[replaced[i]][1], f"cell {i} (the check cell of {replaced[i]})"))
        elif cell.get("cell_type") == "code":
            plan.append((cell_source(cell), f"cell {i}"))
    cells_json = json.dumps({"cells": [source for source, _ in plan]})
    return Prepared(index, path, chapter, cells_json, [label for _, label in plan], notes)
