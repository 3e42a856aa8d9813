"""`tfbook grade` and the capstone corpus (chapter 8 reads Shakespeare's plays).

The grader copies its corpus (``$TFBOOK_DATA/shakespeare`` or ``~/.cache/tfbook/shakespeare``:
the manifest and the works it lists, nothing else) into the batch's folder and binds the copy
read-only into every sandbox as ``$TFBOOK_DATA``. Here the grader's corpus is a small fake one
(``fake_corpus``), so nothing depends on ``~/.cache``. The sandboxed batches:

- with the corpus: a notebook that calls ``fetch_shakespeare()`` and ``split_by_play()`` is
  graded (and finds the same lengths as the grader), one that tries to write, delete or rename
  inside the corpus fails to, the package data (``tfbook/data``) is visible; the grader's
  corpus is byte-identical afterwards;
- without it: one warning line that says to run ``make corpus``; the reading notebook ends as
  ``error`` (its cell raised CorpusError), the others are graded as before.
"""

from __future__ import annotations

import contextlib
import logging
from importlib import resources
from pathlib import Path

import nbformat
import pytest
from _grading_helpers import (
    FAKE_WORKS,
    MASTER,
    append,
    corpus_attack,
    insert_after_import,
    read_rows,
    solved,
    tree_hashes,
)

from tfbook.corpus import split_by_play
from tfbook_tools import grading
from tfbook_tools import sandbox as sb
from tfbook_tools.cli import main as cli_main
from tfbook_tools.grading.batch import Batch, Limits
from tfbook_tools.grading.restore import prepare

needs_sandbox = pytest.mark.skipif(
    sb.sandbox_problem() is not None, reason=f"no sandbox here: {sb.sandbox_problem()}"
)
TIMEOUT = 90  # the reader without a corpus waits for pip to fail (about 8 s)


def reader(expected: tuple[int, int], hidden: list[str]) -> str:
    """A cell that reads the corpus as chapter 8 does and checks what it got."""
    return f"""import os
from tfbook.corpus import fetch_shakespeare, split_by_play

folder = fetch_shakespeare()
train, val = split_by_play(folder)
print(len(train), len(val))
assert (len(train), len(val)) == {expected!r}, (len(train), len(val))
assert sorted(os.listdir(os.environ["TFBOOK_DATA"])) == ["shakespeare"]
for path in {hidden!r}:
    assert not os.path.exists(path), path + " (the grader's) is visible"
"""


def package_data() -> str:
    """A cell that finds every file of ``tfbook/data`` (the committed runs of chapter 8 among
    them, once they exist) through importlib.resources, with the grader's sizes."""
    root = Path(str(resources.files("tfbook") / "data"))
    sizes = {
        str(p.relative_to(root)): p.stat().st_size
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert "corpus_ko_en.txt" in sizes
    return f"""from importlib import resources
from pathlib import Path

root = Path(str(resources.files("tfbook") / "data"))
for name, size in {sizes!r}.items():
    assert (root / name).stat().st_size == size, name
"""


def _with(cell: str) -> nbformat.NotebookNode:
    nb = solved()
    insert_after_import(nb, cell)
    return nb


@contextlib.contextmanager
def _warnings():
    """The grader's log records of level WARNING, whatever pytest does with logging."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger(grading.__name__)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def _grade(folder: Path, nbs: dict, data: Path) -> tuple[dict, list[str], Path]:
    paths = []
    for name, nb in nbs.items():
        nbformat.write(nb, folder / f"{name}.ipynb")
        paths.append(str(folder / f"{name}.ipynb"))
    out = folder / "grades" / "grades.csv"
    with pytest.MonkeyPatch.context() as mp, _warnings() as records:
        mp.setenv("TFBOOK_DATA", str(data))
        code = cli_main(
            ["grade", "--out", str(out), "--jobs", "2", "--timeout", str(TIMEOUT), *paths]
        )
    assert code == 0
    return read_rows(out), [r.getMessage() for r in records], out.parent


@pytest.fixture(scope="module")
def with_corpus(tmp_path_factory):
    from _grading_helpers import fake_corpus

    cache = tmp_path_factory.mktemp("grader-cache")
    corpus = fake_corpus(cache)
    expected = tuple(len(text) for text in split_by_play(corpus))
    hidden = [str(corpus)]
    real = Path.home() / ".cache" / "tfbook"
    if real.exists() and not str(real).startswith(sb.HOME):
        hidden.append(str(real))  # the grader's real cache, when it has one, stays hidden
    nbs = {
        "reader": _with(reader(expected, hidden)),
        "package_data": _with(package_data()),
        "writer": _with(corpus_attack(corpus)),
    }
    before = tree_hashes(cache)
    rows, warnings, out = _grade(tmp_path_factory.mktemp("with-corpus"), nbs, cache)
    return {"rows": rows, "warnings": warnings, "before": before, "after": tree_hashes(cache)}


@pytest.fixture(scope="module")
def without_corpus(tmp_path_factory):
    empty = tmp_path_factory.mktemp("empty-cache")
    nbs = {"reader": _with(reader((0, 0), [])), "plain": solved()}
    rows, warnings, out = _grade(tmp_path_factory.mktemp("without-corpus"), nbs, empty)
    notes = (out / "reader.feedback.md").read_text(encoding="utf-8")
    return {"rows": rows, "warnings": warnings, "notes": notes, "empty": sorted(empty.iterdir())}


def _scores(row: dict) -> tuple:
    return row["status"], row["total"], row["max_total"]


@pytest.mark.slow
@needs_sandbox
@pytest.mark.parametrize("name", ["reader", "package_data", "writer"])
def test_with_the_corpus_chapter_8_cells_run_and_cannot_change_it(with_corpus, name):
    assert _scores(with_corpus["rows"][name]) == ("graded", "4", "4"), with_corpus["rows"][name]


@pytest.mark.slow
@needs_sandbox
def test_the_graders_corpus_is_byte_identical_and_no_warning_is_logged(with_corpus):
    assert with_corpus["before"] == with_corpus["after"]
    assert len(with_corpus["before"]) == len(FAKE_WORKS) + 1  # the works and the manifest
    assert with_corpus["warnings"] == []


@pytest.mark.slow
@needs_sandbox
def test_without_a_corpus_one_warning_and_the_reader_fails_as_at_home(without_corpus):
    warnings = without_corpus["warnings"]
    assert len(warnings) == 1, warnings
    assert "no manifest.json" in warnings[0] and "make corpus" in warnings[0]
    assert "\n" not in warnings[0]
    assert _scores(without_corpus["rows"]["reader"]) == ("error", "4", "4")
    assert "raised CorpusError" in without_corpus["notes"]
    assert _scores(without_corpus["rows"]["plain"]) == ("graded", "4", "4")
    assert without_corpus["empty"] == []  # nothing was written to the grader's cache


@pytest.mark.slow
def test_trusted_grading_without_a_sandbox_reads_the_copy(tmp_path, monkeypatch):
    from _grading_helpers import fake_corpus

    corpus = fake_corpus(tmp_path / "cache")
    expected = tuple(len(text) for text in split_by_play(corpus))
    path = tmp_path / "reader.ipynb"
    nb = _with(reader(expected, []))  # nothing is hidden from trusted code
    cache = str(tmp_path / "cache")
    append(nb, f"import os\nassert os.environ['TFBOOK_DATA'] != {cache!r}  # a copy, not it")
    nbformat.write(nb, path)
    monkeypatch.setenv("TFBOOK_DATA", cache)
    result = grading.grade_notebook(path, timeout=TIMEOUT, sandbox=False)
    assert (result.status, result.total) == ("graded", 4), result.reason


# --------------------------------------------------------------------------- fast checks


def test_the_copy_holds_the_manifest_and_the_listed_works_only(tmp_path):
    from _grading_helpers import fake_corpus

    corpus = fake_corpus(tmp_path / "cache")
    (corpus / "notes.txt").write_text("not a work\n", encoding="utf-8")  # not in the manifest
    secret = tmp_path / "secret.txt"
    secret.write_text("the grader's\n", encoding="utf-8")
    (corpus / "the_tempest.txt").unlink()
    (corpus / "the_tempest.txt").symlink_to(secret)  # never followed
    cache, problem = grading.stage_corpus(tmp_path / "batch", corpus)
    assert cache == tmp_path / "batch" / "data"
    copy = cache / "shakespeare"
    names = sorted(p.name for p in copy.iterdir())
    assert names == sorted(
        [f"{w}.txt" for w in FAKE_WORKS if w != "the_tempest"] + ["manifest.json"]
    )
    for name in names:
        assert (copy / name).read_bytes() == (corpus / name).read_bytes(), name
        assert (copy / name).stat().st_mode & 0o777 == 0o644
    assert copy.stat().st_mode & 0o777 == 0o755
    assert "the_tempest.txt" in problem and str(corpus) in problem


def test_no_corpus_or_a_broken_manifest_gives_no_copy_and_says_why(tmp_path):
    cache, problem = grading.stage_corpus(tmp_path / "batch", tmp_path / "none" / "shakespeare")
    assert cache is None and "no manifest.json" in problem
    broken = tmp_path / "broken" / "shakespeare"
    broken.mkdir(parents=True)
    (broken / "manifest.json").write_text('{"works": {"../../etc/passwd": 1}}', encoding="utf-8")
    cache, problem = grading.stage_corpus(tmp_path / "batch", broken)
    assert cache is None and "not a readable corpus manifest" in problem
    assert not (tmp_path / "batch").exists()


def test_the_warning_is_logged_only_when_the_batch_reads_the_corpus(tmp_path, monkeypatch):
    monkeypatch.setenv("TFBOOK_DATA", str(tmp_path / "empty"))
    master = nbformat.read(MASTER, as_version=4)
    plain, reads = solved(), solved()
    append(reads, "from tfbook.corpus import fetch_shakespeare\nfetch_shakespeare()")
    logged = []
    for nb in (plain, reads):
        batch = Batch(MASTER.parent, Limits(1, 1, 1 << 20), sandbox=True, protect=[])
        try:
            batch.masters["ch00"] = master
            prepared = prepare(0, tmp_path / "x.ipynb", nb, "ch00", master)
            with _warnings() as records:
                batch.provide_corpus([prepared])
            logged.append([r.getMessage() for r in records])
            assert batch.data is None
        finally:
            batch.close()
    assert logged[0] == []
    assert len(logged[1]) == 1 and "make corpus" in logged[1][0]


@pytest.mark.skipif(sb._bwrap() is None, reason="bubblewrap is not installed")
def test_the_sandbox_binds_the_copy_read_only_at_a_fixed_path(tmp_path):
    def args(data):
        return sb.command(
            site=tmp_path,
            indir=tmp_path,
            rundir=tmp_path,
            tmp_mb=16,
            uid=65534,
            masks=[],
            empty=tmp_path,
            info_fd=2,
            data=data,
        )

    with_data = args(tmp_path / "data")
    i = with_data.index(sb.DATA)
    assert with_data[i - 2 : i + 1] == ["--ro-bind", str(tmp_path / "data"), sb.DATA]
    assert sb.DATA not in args(None)
    env = dict(site="s", notebook="n", socket="k", home="/h", workdir="/w")
    assert sb.environment(**env, data=sb.DATA)["TFBOOK_DATA"] == sb.DATA
    assert "TFBOOK_DATA" not in sb.environment(**env)
