"""`tfbook grade` on a synthetic batch built from the warm-up chapter (ch00).

The batch covers full marks, partial credit, all stubs, a cell that raises, a notebook that
never ends, a deleted check cell, a check cell edited to print a fake "passed", an 8 GB
allocation, the unchanged master notebook, corrupt JSON and a file that is not a notebook.
Each notebook runs in the bubblewrap sandbox. The CSV must be exactly what it should be and
no submission may be modified. ``tests/test_hostile.py`` attacks the grader.
"""

from __future__ import annotations

import csv
import json
import shutil

import nbformat
import pytest
from _grading_helpers import (
    MASTER,
    ROOT,
    insert_after_check,
    read_rows,
    set_solution,
    sha,
    solved,
    stub_of,
    student,
)

from tfbook_tools.cli import main as cli_main
from tfbook_tools.sandbox import sandbox_problem

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        sandbox_problem() is not None, reason=f"no sandbox here: {sandbox_problem()}"
    ),
]

TIMEOUT = 40  # seconds per submission (as a whole): the sleeper hits it, nothing else may

WRONG_SOFTMAX = """def softmax(x, dim=-1):
    e = x.exp()
    return e / e.sum(dim=dim, keepdim=True)"""

WRONG_MEAN = """def masked_mean(x, lengths):
    return x.mean(dim=1)"""


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    folder = tmp_path_factory.mktemp("submissions")
    stubs = student()
    subs: dict[str, object] = {}

    subs["full"] = solved()

    partial = solved()
    set_solution(partial, "ch00.q1", WRONG_SOFTMAX)  # known mistake: 0 points
    set_solution(partial, "ch00.q4", stub_of(stubs, "ch00.q4"))  # left as a stub
    subs["partial"] = partial

    subs["stubs"] = stubs

    raising = solved()
    insert_after_check(raising, "ch00.q1", "undefined_name + 1  # a NameError at top level")
    subs["raising"] = raising

    sleeper = solved()
    insert_after_check(sleeper, "ch00.q2", "import time\nwhile True:\n    time.sleep(1)")
    subs["endless"] = sleeper

    deleted = solved()
    deleted.cells = [
        c
        for c in deleted.cells
        if c.metadata.get("tfbook") != {"question": "ch00.q1", "role": "check"}
    ]
    subs["deleted_check"] = deleted

    faked = solved()
    set_solution(faked, "ch00.q3", WRONG_MEAN)
    for cell in faked.cells:
        if cell.metadata.get("tfbook") == {"question": "ch00.q3", "role": "check"}:
            cell.source = 'print("[ch00.q3] Mean over a padded batch: passed (3 cases)")'
    subs["faked_check"] = faked

    hog = solved()
    # 8 GB fits in this 24 GiB machine, so only the grader's 4 GiB limit can refuse it.
    insert_after_check(hog, "ch00.q2", "import torch\nbig = torch.ones(2_000_000_000)")
    subs["hog"] = hog

    paths = []
    for name, nb in subs.items():
        path = folder / f"{name}.ipynb"
        nbformat.write(nb, path)
        paths.append(path)
    shutil.copyfile(MASTER, folder / "master.ipynb")
    paths.append(folder / "master.ipynb")
    corrupt = folder / "corrupt.ipynb"
    corrupt.write_text(nbformat.writes(stubs)[:500], encoding="utf-8")
    paths.append(corrupt)
    text = folder / "essay.txt"
    text.write_text("This is my essay about attention.\n", encoding="utf-8")
    paths.append(text)

    before = {p: (sha(p), p.stat().st_mtime_ns) for p in paths}
    out = tmp_path_factory.mktemp("grades") / "grades.csv"
    code = cli_main(
        [
            "grade",
            *map(str, paths),
            "--out",
            str(out),
            "--jobs",
            "3",
            "--timeout",
            str(TIMEOUT),
            "--memory-mb",
            "4096",
            "--masters",
            str(ROOT / "book"),
        ]
    )
    assert code == 0
    after = {p: (sha(p), p.stat().st_mtime_ns) for p in paths}
    return {"rows": read_rows(out), "before": before, "after": after, "out": out, "paths": paths}


EXPECTED = {
    # name: (status, q1, q2, q3, q4)
    "full": ("graded", 1, 1, 1, 1),
    "partial": ("graded", 0, 1, 1, 0),
    "stubs": ("graded", 0, 0, 0, 0),
    "raising": ("error", 1, 1, 1, 1),
    "endless": ("timeout", 1, 1, 0, 0),
    "deleted_check": ("graded", 1, 1, 1, 1),
    "faked_check": ("graded", 1, 1, 0, 1),
    "hog": ("error", 1, 1, 1, 1),
    "master": ("graded", 1, 1, 1, 1),
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


def test_rows_in_input_order(batch):
    with batch["out"].open(encoding="utf-8") as fh:
        files = [row["file"] for row in csv.DictReader(fh)]
    assert files == [str(p) for p in batch["paths"]]


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
    assert f"did not finish within {TIMEOUT} s" in endless
    faked = (folder / "faked_check.feedback.md").read_text(encoding="utf-8")
    assert "check cell was edited" in faked
    assert "padding positions included in the mean" in faked
    deleted = (folder / "deleted_check.feedback.md").read_text(encoding="utf-8")
    assert "check cell was missing" in deleted
    hog = (folder / "hog.feedback.md").read_text(encoding="utf-8")
    assert "raised RuntimeError" in hog
    corrupt = (folder / "corrupt.feedback.md").read_text(encoding="utf-8")
    assert "not valid JSON" in corrupt


def test_refuses_to_write_over_a_submission(tmp_path):
    sub = tmp_path / "x.ipynb"
    sub.write_text(json.dumps({"cells": [], "nbformat": 4}), encoding="utf-8")
    assert cli_main(["grade", str(sub), "--out", str(sub)]) == 2
    assert json.loads(sub.read_text(encoding="utf-8")) == {"cells": [], "nbformat": 4}


def test_rows_name_the_master_notebook_of_an_unknown_chapter(tmp_path):
    nb = student()
    for cell in nb.cells:
        cell.source = cell.source.replace("import ch00 as ex", "import ch99 as ex")
    nb.metadata["tfbook"]["chapter"] = "ch99"
    for cell in nb.cells:
        meta = cell.metadata.get("tfbook", {})
        if "question" in meta:
            meta["question"] = meta["question"].replace("ch00", "ch99")
    path = tmp_path / "ch99.ipynb"
    nbformat.write(nb, path)
    out = tmp_path / "grades" / "grades.csv"
    assert cli_main(["grade", str(path), "--out", str(out), "--masters", str(ROOT / "book")]) == 0
    row = read_rows(out)["ch99"]
    assert row["status"] == "invalid"
    assert "no master notebook for ch99" in (out.parent / "ch99.feedback.md").read_text()


def test_feedback_fences_cannot_be_broken():
    from tfbook_tools.grading.report import GradeResult, feedback_markdown

    result = GradeResult("a.ipynb", "ch00", "graded", scores={"ch00.q1": 0.0})
    result.max_points = {"ch00.q1": 1.0}
    result.feedback = {"ch00.q1": "got '```\n# Injected heading'"}
    text = feedback_markdown(result)
    assert "````text" in text


def test_the_same_path_is_quoted_for_spreadsheets():
    from tfbook_tools.grading.report import csv_cell

    assert csv_cell("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert csv_cell("-name.ipynb") == "'-name.ipynb"
    assert csv_cell("+1") == "'+1" and csv_cell("@x") == "'@x" and csv_cell("\tx") == "'\tx"
    assert csv_cell("name.ipynb") == "name.ipynb" and csv_cell("4") == "4"


def test_grade_notebook_without_sandbox_for_trusted_code(tmp_path):
    """``--no-sandbox`` (trusted notebooks only) grades through the same judge."""
    from tfbook_tools.grading import grade_notebook

    path = tmp_path / "partial.ipynb"
    nb = solved()
    set_solution(nb, "ch00.q1", WRONG_SOFTMAX)
    nbformat.write(nb, path)
    result = grade_notebook(path, ROOT / "book", timeout=120, memory_mb=4096, sandbox=False)
    assert (result.status, result.total, result.max_total) == ("graded", 3.0, 4.0)
    assert "no maximum subtracted" in result.feedback["ch00.q1"]


def test_the_site_copies_the_whole_check_engine_and_no_chapter_module(tmp_path):
    """Whatever modules the engine is split into, the sandbox gets all of them (followed
    through every import form), and an engine that imports a chapter module is refused."""
    from tfbook_tools.grading.site import engine_modules

    (tmp_path / "_engine.py").write_text(
        "from tfbook.exercises._compare import compare\nfrom . import _watch\n"
    )
    (tmp_path / "_compare.py").write_text("from ._display import show\nimport json\n")
    (tmp_path / "_watch.py").write_text("import tfbook.exercises._frozen\n")
    (tmp_path / "_display.py").write_text("from tfbook.exercises import Question\n")
    (tmp_path / "_frozen.py").write_text("")
    (tmp_path / "_unused.py").write_text("")
    (tmp_path / "ch04.py").write_text("from tfbook.exercises._engine import Question\n")
    expected = ["_compare.py", "_display.py", "_engine.py", "_frozen.py", "_watch.py"]
    assert engine_modules(tmp_path) == expected

    (tmp_path / "_frozen.py").write_text("from tfbook.exercises import ch04\n")
    with pytest.raises(RuntimeError, match="tfbook.exercises.ch04"):
        engine_modules(tmp_path)


def test_the_site_holds_the_installed_engine_and_stand_ins_only(tmp_path):
    from tfbook_tools.grading.site import build_site

    master = nbformat.read(MASTER, as_version=4)
    exercises = build_site(tmp_path, {"ch00": master}) / "tfbook" / "exercises"
    installed = ROOT / "tfbook" / "exercises"
    engine = {p.name for p in exercises.glob("*.py")} - {"__init__.py", "ch00.py"}
    assert "_engine.py" in engine
    for name in engine:
        assert (exercises / name).read_bytes() == (installed / name).read_bytes(), name
    stand_in = (exercises / "ch00.py").read_text(encoding="utf-8")
    assert '_install(globals(), "ch00")' in stand_in and "def " not in stand_in
    assert sorted(p.name for p in exercises.glob("ch*.py")) == ["ch00.py"]
