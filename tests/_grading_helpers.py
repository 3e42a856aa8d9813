"""Notebook builders shared by the grading tests (student editions of the warm-up chapter)."""

from __future__ import annotations

import copy
import csv
import hashlib
import os
from pathlib import Path

import nbformat

from tfbook_tools.student import make_student_edition

ROOT = Path(__file__).resolve().parents[1]
MASTER = ROOT / "book" / "00_exercises.ipynb"
QIDS = ["ch00.q1", "ch00.q2", "ch00.q3", "ch00.q4"]


def student() -> nbformat.NotebookNode:
    """The ch00 student edition: every solution is a stub."""
    return make_student_edition(nbformat.read(MASTER, as_version=4), MASTER.name)


def solved(nb: nbformat.NotebookNode | None = None) -> nbformat.NotebookNode:
    """Fill every stub with the master's solution (what a perfect student submits)."""
    master = nbformat.read(MASTER, as_version=4)
    nb = copy.deepcopy(nb if nb is not None else student())
    for cell, original in zip(nb.cells, master.cells, strict=True):
        if cell.metadata.get("tfbook", {}).get("role") == "solution":
            cell.source = original.source
    return nb


def set_solution(nb, qid: str, source: str) -> None:
    for cell in nb.cells:
        if cell.metadata.get("tfbook") == {"question": qid, "role": "solution"}:
            cell.source = source
            return
    raise AssertionError(qid)


def stub_of(nb, qid: str) -> str:
    for cell in nb.cells:
        if cell.metadata.get("tfbook") == {"question": qid, "role": "solution"}:
            return cell.source
    raise AssertionError(qid)


def insert_after_check(nb, qid: str, *sources: str) -> None:
    for i, cell in enumerate(nb.cells):
        if cell.metadata.get("tfbook") == {"question": qid, "role": "check"}:
            for k, source in enumerate(sources):
                nb.cells.insert(i + 1 + k, nbformat.v4.new_code_cell(source))
            return
    raise AssertionError(qid)


def insert_after_import(nb, *sources: str) -> None:
    for i, cell in enumerate(nb.cells):
        if "from tfbook.exercises import ch00 as ex" in cell.source:
            for k, source in enumerate(sources):
                nb.cells.insert(i + 1 + k, nbformat.v4.new_code_cell(source))
            return
    raise AssertionError("no import cell")


def append(nb, source: str) -> None:
    nb.cells.append(nbformat.v4.new_code_cell(source))


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree_hashes(*roots: Path) -> dict[str, str]:
    """Hash of every file under ``roots`` (bytecode caches included)."""
    out = {}
    for root in roots:
        if root.is_file():
            out[str(root)] = sha(root)
            continue
        for folder, _, files in os.walk(root):
            for name in files:
                path = Path(folder) / name
                if path.is_file() and not path.is_symlink():
                    out[str(path)] = sha(path)
    return out


def read_rows(path: Path) -> dict[str, dict]:
    with path.open(encoding="utf-8") as fh:
        return {Path(r["file"].lstrip("'")).stem: r for r in csv.DictReader(fh)}
