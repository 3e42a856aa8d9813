"""Student editions: no solution text, outputs cleared, check cells locked, deterministic,
never overwriting, and every edition runs top to bottom with every check "not attempted"."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tfbook.exercises import load
from tfbook_tools.cli import main as cli_main
from tfbook_tools.student import (
    StudentEditionError,
    check_cells,
    make_student_edition,
    solution_lines,
)

ROOT = Path(__file__).resolve().parents[1]
MASTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))


def _code_outside_solutions(nb) -> str:
    kept = []
    for cell in nb.cells:
        inside = False
        for line in cell.source.splitlines():
            if line.strip() == "# BEGIN SOLUTION":
                inside = True
            elif line.strip() == "# END SOLUTION":
                inside = False
            elif not inside:
                kept.append(line.strip())
    return "\n".join(kept)


@pytest.fixture(scope="module", params=MASTERS, ids=lambda p: p.stem)
def editions(request):
    master = nbformat.read(request.param, as_version=4)
    return request.param, master, make_student_edition(master, request.param.name)


def test_master_has_solutions_and_checks(editions):
    _, master, _ = editions
    assert solution_lines(master), "a master notebook without solutions"
    assert check_cells(master)


def test_no_solution_text_left(editions):
    _, master, student = editions
    student_text = "\n".join(c.source for c in student.cells)
    elsewhere = _code_outside_solutions(master)
    leaked = [
        line
        for line in solution_lines(master)
        if line in student_text and line not in elsewhere and not line.startswith("#")
    ]
    assert not leaked, f"solution lines left in the student edition: {leaked[:5]}"
    assert "BEGIN SOLUTION" not in student_text and "END SOLUTION" not in student_text


def test_outputs_cleared_and_checks_locked(editions):
    path, master, student = editions
    assert all(not c.get("outputs") for c in student.cells if c.cell_type == "code")
    assert all(c.get("execution_count") is None for c in student.cells if c.cell_type == "code")
    chapter = student.metadata["tfbook"]["chapter"]
    locked = [c for c in student.cells if c.metadata.get("tfbook", {}).get("role") == "check"]
    qids = sorted(c.metadata["tfbook"]["question"] for c in locked)
    assert qids == sorted(q.qid for q in load(chapter)), "check cells and questions differ"
    for cell in locked:
        assert cell.metadata["editable"] is False and cell.metadata["deletable"] is False
    stubs = [c for c in student.cells if c.metadata.get("tfbook", {}).get("role") == "solution"]
    assert stubs and all("raise NotImplementedError" in c.source for c in stubs)
    assert all("hide-input" not in c.metadata.get("tags", []) for c in stubs)
    assert master.cells[0].source == student.cells[0].source  # master untouched


def test_byte_identical_for_same_input(editions, tmp_path):
    path, _, _ = editions
    out1, out2 = tmp_path / "a", tmp_path / "b"
    assert cli_main(["student", str(path), "--out", str(out1)]) == 0
    assert cli_main(["student", str(path), "--out", str(out2)]) == 0
    assert (out1 / path.name).read_bytes() == (out2 / path.name).read_bytes()


def test_never_overwrites_a_different_file_without_force(tmp_path):
    path = ROOT / "book" / "00_exercises.ipynb"
    target = tmp_path / path.name
    target.write_text("my own work\n", encoding="utf-8")
    assert cli_main(["student", str(path), "--out", str(tmp_path)]) == 1
    assert target.read_text(encoding="utf-8") == "my own work\n"
    assert cli_main(["student", str(path), "--out", str(tmp_path), "--force"]) == 0
    assert target.read_text(encoding="utf-8") != "my own work\n"
    assert cli_main(["student", str(path), "--out", str(tmp_path)]) == 0  # unchanged


def test_malformed_markers_are_reported():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("from tfbook.exercises import ch00 as ex"),
        nbformat.v4.new_code_cell("def f(x):\n    # BEGIN SOLUTION\n    return x"),
        nbformat.v4.new_code_cell("ex.q1.check(f)"),
    ]
    with pytest.raises(StudentEditionError, match="without '# END SOLUTION'"):
        make_student_edition(nb)


@pytest.mark.slow
def test_student_edition_runs_and_every_check_is_not_attempted(editions, tmp_path):
    path, _, student = editions
    client = NotebookClient(
        student,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()  # raises CellExecutionError on any error
    texts = []
    for cell in student.cells:
        if cell.metadata.get("tfbook", {}).get("role") == "check":
            out = "".join(
                o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in cell.outputs
            )
            texts.append(out)
    assert texts and all(re.search(r"not attempted", t) for t in texts), texts
