"""`tfbook grade` on a synthetic batch built from the warm-up chapter (ch00).

The batch covers full marks, partial credit, all stubs, a cell that raises, an endless cell,
a deleted check cell, a check cell edited to print a fake "passed", corrupt JSON and a file
that is not a notebook. The CSV must be exactly what it should be and no submission may be
modified.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
from pathlib import Path

import nbformat
import pytest

from tfbook_tools.cli import main as cli_main
from tfbook_tools.student import make_student_edition

ROOT = Path(__file__).resolve().parents[1]
MASTER = ROOT / "book" / "00_exercises.ipynb"

pytestmark = pytest.mark.slow


def _student() -> nbformat.NotebookNode:
    return make_student_edition(nbformat.read(MASTER, as_version=4), MASTER.name)


def _solved(student: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Fill every stub with the master's solution (what a perfect student submits)."""
    master = nbformat.read(MASTER, as_version=4)
    nb = copy.deepcopy(student)
    for cell, original in zip(nb.cells, master.cells, strict=True):
        if cell.metadata.get("tfbook", {}).get("role") == "solution":
            cell.source = original.source
    return nb


def _set_solution(nb, qid: str, source: str) -> None:
    for cell in nb.cells:
        if cell.metadata.get("tfbook") == {"question": qid, "role": "solution"}:
            cell.source = source
            return
    raise AssertionError(qid)


def _insert_after_check(nb, qid: str, source: str) -> None:
    for i, cell in enumerate(nb.cells):
        if cell.metadata.get("tfbook") == {"question": qid, "role": "check"}:
            nb.cells.insert(i + 1, nbformat.v4.new_code_cell(source))
            return
    raise AssertionError(qid)


WRONG_SOFTMAX = """def softmax(x, dim=-1):
    e = x.exp()
    return e / e.sum(dim=dim, keepdim=True)"""

WRONG_MEAN = """def masked_mean(x, lengths):
    return x.mean(dim=1)"""


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    folder = tmp_path_factory.mktemp("submissions")
    student = _student()
    subs: dict[str, object] = {}

    subs["full"] = _solved(student)

    partial = _solved(student)
    _set_solution(partial, "ch00.q1", WRONG_SOFTMAX)  # known mistake: 0 points
    _set_solution(partial, "ch00.q4", _stub_of(student, "ch00.q4"))  # left as a stub
    subs["partial"] = partial

    subs["stubs"] = copy.deepcopy(student)

    raising = _solved(student)
    _insert_after_check(raising, "ch00.q1", "undefined_name + 1  # a NameError at top level")
    subs["raising"] = raising

    endless = _solved(student)
    _insert_after_check(endless, "ch00.q2", "while True:\n    pass")
    subs["endless"] = endless

    deleted = _solved(student)
    deleted.cells = [
        c
        for c in deleted.cells
        if c.metadata.get("tfbook") != {"question": "ch00.q1", "role": "check"}
    ]
    subs["deleted_check"] = deleted

    faked = _solved(student)
    _set_solution(faked, "ch00.q3", WRONG_MEAN)
    for cell in faked.cells:
        if cell.metadata.get("tfbook") == {"question": "ch00.q3", "role": "check"}:
            cell.source = 'print("[ch00.q3] Mean over a padded batch: passed (3 cases)")'
    subs["faked_check"] = faked

    paths = []
    for name, nb in subs.items():
        path = folder / f"{name}.ipynb"
        nbformat.write(nb, path)
        paths.append(path)
    corrupt = folder / "corrupt.ipynb"
    corrupt.write_text(nbformat.writes(student)[:500], encoding="utf-8")
    paths.append(corrupt)
    text = folder / "essay.txt"
    text.write_text("This is my essay about attention.\n", encoding="utf-8")
    paths.append(text)

    before = {p: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in paths}
    out = tmp_path_factory.mktemp("grades") / "grades.csv"
    code = cli_main(
        [
            "grade",
            *map(str, paths),
            "--out",
            str(out),
            "--jobs",
            "2",
            "--timeout",
            "15",
            "--masters",
            str(ROOT / "book"),
        ]
    )
    assert code == 0
    after = {p: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in paths}
    with out.open(encoding="utf-8") as fh:
        rows = {Path(r["file"]).stem: r for r in csv.DictReader(fh)}
    return {"rows": rows, "before": before, "after": after, "out": out, "paths": paths}


def _stub_of(student, qid: str) -> str:
    for cell in student.cells:
        if cell.metadata.get("tfbook") == {"question": qid, "role": "solution"}:
            return cell.source
    raise AssertionError(qid)


EXPECTED = {
    # name: (status, q1, q2, q3, q4)
    "full": ("graded", 1, 1, 1, 1),
    "partial": ("graded", 0, 1, 1, 0),
    "stubs": ("graded", 0, 0, 0, 0),
    "raising": ("error", 1, 1, 1, 1),
    "endless": ("timeout", 1, 1, 0, 0),
    "deleted_check": ("graded", 1, 1, 1, 1),
    "faked_check": ("graded", 1, 1, 0, 1),
}


def test_csv_header(batch):
    with batch["out"].open(encoding="utf-8") as fh:
        header = next(csv.reader(fh))
    assert header == [
        "file",
        "chapter",
        "status",
        "ch00.q1",
        "ch00.q2",
        "ch00.q3",
        "ch00.q4",
        "total",
        "max_total",
        "percent",
    ]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_graded_rows(batch, name):
    row = batch["rows"][name]
    status, *scores = EXPECTED[name]
    assert row["chapter"] == "ch00"
    assert row["status"] == status, row
    assert [row[f"ch00.q{i}"] for i in range(1, 5)] == [str(s) for s in scores], row
    assert row["total"] == str(sum(scores))
    assert row["max_total"] == "4"
    assert row["percent"] == f"{100 * sum(scores) / 4:.1f}"


@pytest.mark.parametrize("name", ["corrupt", "essay"])
def test_invalid_files(batch, name):
    row = batch["rows"][name]
    assert row["status"] == "invalid"
    assert row["chapter"] == ""
    assert row["total"] == "0" and row["percent"] == "0.0"


def test_submissions_are_never_modified(batch):
    assert batch["before"] == batch["after"]


def test_feedback_files(batch):
    folder = batch["out"].parent
    names = sorted(p.name for p in folder.glob("*.feedback.md"))
    assert len(names) == len(batch["paths"])
    partial = (folder / "partial.feedback.md").read_text(encoding="utf-8")
    assert "status: graded" in partial
    assert "Likely mistake: no maximum subtracted" in partial
    assert "not attempted" in partial
    endless = (folder / "endless.feedback.md").read_text(encoding="utf-8")
    assert "did not finish within 15 s" in endless
    faked = (folder / "faked_check.feedback.md").read_text(encoding="utf-8")
    assert "check cell was edited" in faked
    assert "padding positions included in the mean" in faked
    deleted = (folder / "deleted_check.feedback.md").read_text(encoding="utf-8")
    assert "check cell was missing" in deleted
    corrupt = (folder / "corrupt.feedback.md").read_text(encoding="utf-8")
    assert "not valid JSON" in corrupt


def test_refuses_to_write_over_a_submission(tmp_path):
    sub = tmp_path / "x.ipynb"
    sub.write_text(json.dumps({"cells": [], "nbformat": 4}), encoding="utf-8")
    assert cli_main(["grade", str(sub), "--out", str(sub)]) == 2
    assert json.loads(sub.read_text(encoding="utf-8")) == {"cells": [], "nbformat": 4}


def test_memory_limit_stops_a_memory_hog_and_the_rest_is_graded(tmp_path):
    from tfbook_tools.grading import grade_notebook

    nb = _solved(_student())
    # 8 GB: fits in this 24 GiB machine, so only the grader's 4 GiB limit can refuse it.
    _insert_after_check(nb, "ch00.q2", "import torch\nbig = torch.ones(2_000_000_000)")
    path = tmp_path / "hog.ipynb"
    nbformat.write(nb, path)
    result = grade_notebook(path, ROOT / "book", timeout=60, memory_mb=4096)
    assert result.status == "error"
    assert "raised RuntimeError" in result.reason
    assert result.total == 4
