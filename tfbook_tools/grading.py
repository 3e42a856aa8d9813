"""Batch grading of submitted notebooks (chapter 0): ``tfbook grade SUBMISSION... --out CSV``.

For each submission:

1. The grader reads it (never writes it): a symbolic link, a file that is not a regular
   file, larger than the size limit, not valid JSON, nested too deeply, not a valid
   notebook (nbformat 3 and 4 are accepted), or whose chapter is ambiguous (notebook
   metadata, the ``from tfbook.exercises import chNN as ex`` line and the check cells'
   question ids must agree) gets the status ``invalid``.
2. The official check cells are restored from the master notebook by question id, so a
   deleted or edited check cell changes nothing; a missing one goes after its solution cell.
3. The notebook runs in a sandbox (:mod:`tfbook_tools.sandbox`): a throwaway home and
   ``/tmp``, a read-only view of the Python installation and of a copy of ``tfbook`` whose
   exercise modules are stand-ins without references (:mod:`tfbook_tools.sandbox_client`),
   no network, no other processes, no other submission, no grades, no master notebooks;
   one wall-clock and one memory limit for the whole submission. Chapter 8 reads
   Shakespeare's plays from the corpus cache (:mod:`tfbook.corpus`): when the grader has
   it (``make corpus``), a copy of it (the manifest and the works it lists, nothing else)
   is bound read-only into every sandbox as ``$TFBOOK_DATA``; when it has not, one warning
   line is logged and the notebooks that read it fail as they would on a student's machine.
4. Every check the notebook makes is judged outside the sandbox by a judge process
   (:mod:`tfbook_tools.judge`) that holds the references: the sandbox sends the student's
   outputs on the judge's inputs as plain data, the judge compares them with the engine's
   own comparison, clamps the points and reports the verdict to the grader at once.
   Nothing the notebook prints, writes or returns is trusted in any other way.

Statuses: ``graded`` (ran to the end), ``timeout`` (the submission ran past the time limit:
it was stopped, the checks it made before still count), ``error`` (a cell raised, the kernel
died, or the submission was stopped for using too much memory: the checks made still count)
and ``invalid``. Any failure while reading, preparing, running or collecting one submission
becomes that submission's row; rows are written to the CSV as submissions finish.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import queue
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import traceback
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from tfbook_tools import default_masters_dir, wire
from tfbook_tools import sandbox as sb
from tfbook_tools.student import StudentEditionError, check_cells

__all__ = [
    "GradeResult",
    "SandboxUnavailable",
    "grade_notebook",
    "grade_batch",
    "default_masters_dir",
    "find_master",
    "read_submission",
    "submission_chapter",
    "stage_corpus",
]

STATUSES = ("graded", "timeout", "error", "invalid")
MAX_NOTEBOOK_MB = 16
MAX_JSON_DEPTH = 64
MAX_CELLS = 5000
JUDGE_MEMORY_MB = 4096
_IMPORT_RE = re.compile(r"^[ \t]*from\s+tfbook\.exercises\s+import\s+(ch\d\d)\s+as\s+ex\b", re.M)
_CHECK_RE = re.compile(r"^\s*ex\.(q\d+)\.check\((.+)\)\s*$")
_CHAPTER_RE = re.compile(r"ch\d\d")
_FORMULA = ("=", "+", "-", "@", "\t", "\r")
#: Names in a notebook's code that read the capstone corpus (chapter 8, tfbook.corpus).
_CORPUS_USE_RE = re.compile(
    r"\b(?:fetch_shakespeare|split_by_play|corpus_folder|run_gpt|tfbook\.corpus)\b"
)
_WORK_NAME_RE = re.compile(r"[A-Za-z0-9_()]+")
_MAX_CORPUS_FILE_MB = 64

log = logging.getLogger(__name__)


class Invalid(ValueError):
    """A submission that cannot be graded (the reason is the message)."""


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot run here; grading untrusted code without it needs an explicit flag."""


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


def find_master(chapter: str, masters_dir: Path) -> Path | None:
    """The master notebook of ``chapter`` (``"ch04"`` -> ``book/04_*.ipynb``)."""
    if not _CHAPTER_RE.fullmatch(chapter or ""):
        return None
    matches = sorted(masters_dir.glob(f"{chapter[2:]}_*.ipynb"))
    return matches[0] if matches else None


# --------------------------------------------------------------------------- reading


def _depth_ok(data: object, limit: int) -> bool:
    stack = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return True


def read_submission(path: Path, max_bytes: int = MAX_NOTEBOOK_MB << 20) -> nbformat.NotebookNode:
    """Read and validate one submission as an nbformat 4 notebook; :class:`Invalid` if not."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise Invalid("no such file") from None
    except OSError as exc:
        raise Invalid(f"cannot be read ({exc.strerror})") from None
    if stat.S_ISLNK(info.st_mode):
        raise Invalid("a symbolic link (refused: submit the notebook file itself)")
    if not stat.S_ISREG(info.st_mode):
        raise Invalid("not a regular file")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise Invalid(f"cannot be read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise Invalid("not a regular file")
        raw = fh.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise Invalid(f"larger than the limit of {max_bytes >> 20} MB")
    try:
        text = raw.decode("utf-8-sig")
        data = json.loads(text)
    except RecursionError:
        raise Invalid(f"not a notebook: JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except (UnicodeDecodeError, ValueError) as exc:
        detail = f"{type(exc).__name__}: {str(exc)[:200]}"
        raise Invalid(f"not a notebook: not valid JSON ({detail})") from None
    if not _depth_ok(data, MAX_JSON_DEPTH):
        raise Invalid(f"not a notebook: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    version = data.get("nbformat") if isinstance(data, dict) else None
    if type(version) is not int or version not in (3, 4):
        raise Invalid("not a notebook: no 'nbformat' 3 or 4")
    try:
        nb = nbformat.reads(text, as_version=4)
        nbformat.validate(nb)
    except Exception as exc:  # noqa: BLE001 - any validation problem makes it invalid
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise Invalid(f"not a valid notebook: {first}") from None
    if len(nb.cells) > MAX_CELLS:
        raise Invalid(f"more than {MAX_CELLS} cells")
    return nb


def _source(cell: dict) -> str:
    source = cell.get("source", "")
    return source if isinstance(source, str) else ""


def _cell_meta(cell: dict) -> dict:
    meta = cell.get("metadata")
    meta = meta.get("tfbook") if isinstance(meta, dict) else None
    return meta if isinstance(meta, dict) else {}


def submission_chapter(nb: nbformat.NotebookNode) -> str:
    """The chapter of a submission; :class:`Invalid` unless metadata, import and checks agree."""
    meta = nb.get("metadata", {}).get("tfbook")
    declared = None
    if meta is not None:
        if not isinstance(meta, dict):
            raise Invalid("the notebook's 'tfbook' metadata is not a mapping")
        declared = meta.get("chapter")
        if declared is not None and not (
            isinstance(declared, str) and _CHAPTER_RE.fullmatch(declared)
        ):
            shown = str(declared)[:40]
            raise Invalid(f"the notebook's metadata names no valid chapter ({shown!r})")
    imported = {
        m.group(1)
        for cell in nb.cells
        if cell.get("cell_type") == "code"
        for m in _IMPORT_RE.finditer(_source(cell))
    }
    if len(imported) > 1:
        raise Invalid(f"imports the exercises of several chapters ({', '.join(sorted(imported))})")
    if not imported:
        raise Invalid(
            "not a tfbook chapter notebook (no 'from tfbook.exercises import chNN as ex')"
        )
    chapter = imported.pop()
    if declared is not None and declared != chapter:
        raise Invalid(f"the metadata says {declared} but the notebook imports {chapter}")
    for index, cell in enumerate(nb.cells):
        qid = _cell_meta(cell).get("question")
        if isinstance(qid, str) and not qid.startswith(chapter + "."):
            raise Invalid(f"cell {index} is marked as question {qid[:40]!r} of another chapter")
    return chapter


# --------------------------------------------------------------------------- restoring


@dataclass
class Prepared:
    """A submission ready to run: the code cells the sandbox executes, and what they are."""

    index: int
    path: Path
    chapter: str
    notebook: str
    labels: list[str]
    notes: list[str]


def _check_qid(cell: dict, chapter: str) -> str | None:
    if cell.get("cell_type") != "code":
        return None
    lines = [
        line
        for line in _source(cell).splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    match = _CHECK_RE.match(lines[0]) if len(lines) == 1 else None
    return f"{chapter}.{match.group(1)}" if match else None


def _defines(source: str, name: str) -> bool:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        return False
    return re.search(rf"^(def\s+{name}\b|{name}\s*=|class\s+{name}\b)", source, re.M) is not None


def prepare(index: int, path: Path, nb: nbformat.NotebookNode, chapter: str, master) -> Prepared:
    """Restore the master's check cells into ``nb`` and keep only its code cells."""
    official = check_cells(master)  # qid -> (index, source, answer expression)
    cells = [c for c in nb.cells]
    notes: list[str] = []
    replaced: dict[int, str] = {}
    inserts: list[tuple[int, str]] = []
    for qid, (_, source, expr) in official.items():
        marked = [
            i
            for i, c in enumerate(cells)
            if _cell_meta(c).get("role") == "check" and _cell_meta(c).get("question") == qid
        ]
        targets = marked or [i for i, c in enumerate(cells) if _check_qid(c, chapter) == qid]
        if targets:
            for i in targets:
                replaced[i] = qid
                if _source(cells[i]) != source or cells[i].get("cell_type") != "code":
                    notes.append(f"{qid}: check cell was edited; the official one was restored")
            continue
        solution = [
            i
            for i, c in enumerate(cells)
            if _cell_meta(c).get("role") == "solution" and _cell_meta(c).get("question") == qid
        ]
        if not solution:
            solution = [
                i
                for i, c in enumerate(cells)
                if c.get("cell_type") == "code" and _defines(_source(c), expr)
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
            plan.append((_source(cell), f"cell {i}"))
    cells_json = json.dumps({"cells": [source for source, _ in plan]})
    return Prepared(index, path, chapter, cells_json, [lbl for _, lbl in plan], notes)


# --------------------------------------------------------------------------- the site


_STUB_INIT = '''"""tfbook.exercises while a submission is graded (checks are judged outside)."""

from tfbook.exercises._engine import (  # noqa: F401
    Case, ExerciseSet, Mistake, Outcome, Question, Result, compare,
)
from tfbook_tools.sandbox_client import chapters, load  # noqa: F401
'''
_STUB_CHAPTER = '''"""Chapter {chapter} exercises while a submission is graded (no references)."""

from tfbook_tools.sandbox_client import install as _install

_install(globals(), "{chapter}")
'''


def _public_constants(module, master) -> dict:
    from tfbook_tools.wire import WireError, encode

    names = set()
    for cell in master.cells:
        if cell.get("cell_type") == "code":
            names.update(re.findall(r"\bex\.([A-Za-z][A-Za-z0-9_]*)", _source(cell)))
    out = {}
    for name in sorted(names):
        value = getattr(module, name, None)
        if value is None or re.fullmatch(r"q\d+|EXERCISES|progress", name):
            continue
        try:
            out[name] = encode(value)
        except (WireError, RecursionError):
            continue
    return out


def build_site(base: Path, chapters: dict[str, object]) -> Path:
    """A copy of ``tfbook`` (exercise modules replaced by stand-ins) and the runner code."""
    import importlib

    import tfbook
    import tfbook_tools

    site = base / "site"
    package = Path(tfbook.__file__).resolve().parent
    shutil.copytree(
        package,
        site / "tfbook",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "exercises"),
    )
    exercises = site / "tfbook" / "exercises"
    exercises.mkdir()
    shutil.copyfile(package / "exercises" / "_engine.py", exercises / "_engine.py")
    (exercises / "__init__.py").write_text(_STUB_INIT, encoding="utf-8")
    manifest: dict = {"chapters": {}}
    for chapter, master in sorted(chapters.items()):
        module = importlib.import_module(f"tfbook.exercises.{chapter}")
        ex = module.EXERCISES
        manifest["chapters"][chapter] = {
            "title": ex.title,
            "questions": [
                {"qid": q.qid, "title": q.title, "points": q.points, "hints": list(q.hints)}
                for q in ex
            ],
            "public": _public_constants(module, master),
        }
        stub = _STUB_CHAPTER.format(chapter=chapter)
        (exercises / f"{chapter}.py").write_text(stub, encoding="utf-8")
    (exercises / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    tools = site / "tfbook_tools"
    tools.mkdir()
    source = Path(tfbook_tools.__file__).resolve().parent
    for name in ("__init__.py", "wire.py", "sandbox_client.py", "sandbox_runner.py"):
        shutil.copyfile(source / name, tools / name)
    # matplotlib's font list, built once here instead of in every sandbox's empty home.
    cache = site / "mplconfig"
    cache.mkdir()
    env = dict(os.environ, MPLCONFIGDIR=str(cache), MPLBACKEND="Agg")
    subprocess.run(
        [sys.executable, "-c", "import matplotlib.font_manager"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=600,
        check=False,
    )
    for root, _dirs, files in os.walk(site):
        os.chmod(root, 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644)
    return site


# --------------------------------------------------------------------------- the corpus


def _read_regular(path: Path, limit: int) -> bytes:
    """The bytes of a regular file, never read through a symbolic link; OSError otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise OSError(f"{path} is not a regular file")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise OSError(f"{path} is larger than {limit >> 20} MB")
    return data


def stage_corpus(base: Path, source: Path | None = None) -> tuple[Path | None, str]:
    """Copy the grader's capstone corpus to ``base/data/shakespeare`` for the sandboxes.

    Only ``manifest.json`` and the ``<work>.txt`` files it lists are copied (regular files,
    never through a symbolic link), so a sandbox that binds the copy sees the corpus and
    nothing else of the grader's cache or home; the grader's own folder is never bound.

    Args:
        base: the batch's private folder.
        source: the grader's corpus folder (default :func:`tfbook.corpus.corpus_folder`:
            ``$TFBOOK_DATA/shakespeare``, else ``~/.cache/tfbook/shakespeare``).

    Returns:
        ``(cache, problem)``: the folder to hand to the sandbox as ``$TFBOOK_DATA``
        (``None`` when the grader has no corpus with a readable manifest) and what is wrong
        with the grader's corpus, in a few words (``""`` when nothing is).

    Example:
        >>> cache, problem = stage_corpus(Path(tempfile.mkdtemp()))  # doctest: +SKIP
    """
    from tfbook.corpus import corpus_folder

    source = Path(source) if source is not None else corpus_folder()
    limit = _MAX_CORPUS_FILE_MB << 20
    manifest = source / "manifest.json"
    if not manifest.exists():
        return None, f"no corpus at {source} (no manifest.json)"
    try:
        raw = _read_regular(manifest, limit)
        works = json.loads(raw.decode("utf-8"))["works"]
        if not isinstance(works, dict) or not all(
            isinstance(k, str) and _WORK_NAME_RE.fullmatch(k) for k in works
        ):
            raise ValueError("its 'works' is not a mapping of work names")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, f"{manifest} is not a readable corpus manifest ({str(exc)[:200]})"
    cache = base / "data"
    dest = cache / "shakespeare"
    dest.mkdir(parents=True)
    missing = []
    for name in works:
        try:
            data = _read_regular(source / f"{name}.txt", limit)
        except OSError:
            missing.append(f"{name}.txt")
            continue
        (dest / f"{name}.txt").write_bytes(data)
    (dest / "manifest.json").write_bytes(raw)
    for folder in (cache, dest):
        os.chmod(folder, 0o755)
    for path in dest.iterdir():
        os.chmod(path, 0o644)
    if missing:
        shown = ", ".join(missing[:3]) + (
            f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        )
        return cache, f"the corpus at {source} lacks {shown} (listed in its manifest.json)"
    return cache, ""


def _reads_corpus(prepared: list[Prepared], masters: dict[str, object]) -> bool:
    """Whether a submission, or the master of its chapter, reads the capstone corpus."""
    if any(_CORPUS_USE_RE.search(p.notebook) for p in prepared):
        return True
    return any(
        _CORPUS_USE_RE.search(_source(cell))
        for chapter in {p.chapter for p in prepared}
        for cell in getattr(masters.get(chapter), "cells", [])
        if cell.get("cell_type") == "code"
    )


# --------------------------------------------------------------------------- judges


class _JudgeServer:
    """Starts judge processes from a fork server that has torch and the exercises loaded."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None

    def _ensure(self) -> socket.socket:
        if self.proc is not None and self.proc.poll() is None and self.sock is not None:
            return self.sock
        if self.sock is not None:
            self.sock.close()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        import tfbook
        import tfbook_tools

        roots = {
            str(Path(tfbook.__file__).resolve().parents[1]),
            str(Path(tfbook_tools.__file__).resolve().parents[1]),
        }
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([*sorted(roots), env.get("PYTHONPATH", "")])
        env.pop("TFBOOK_STRICT", None)
        env["OMP_NUM_THREADS"] = "1"  # the server forks: no thread pools before that
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tfbook_tools.judge", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        theirs.close()
        self.sock = mine
        return mine

    def start(self, chapter: str, socket_path: str, cpu: float, memory: int):
        """A new judge; returns the grader's end of its socket and the judge's pid."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        request = {"chapter": chapter, "socket": socket_path, "cpu": cpu, "memory": memory}
        try:
            with self.lock:
                for attempt in (1, 2):
                    server = self._ensure()
                    try:
                        data = [json.dumps(request).encode("utf-8")]
                        socket.send_fds(server, data, [theirs.fileno()])
                        server.settimeout(120)
                        reply = json.loads(server.recv(4096).decode("utf-8"))
                        break
                    except (OSError, ValueError):
                        if attempt == 2:
                            raise
                        self.proc = None  # the server died: start a new one
        finally:
            theirs.close()
        return mine, int(reply["pid"])


_JUDGES = _JudgeServer()


# --------------------------------------------------------------------------- the batch


class _Batch:
    def __init__(
        self,
        masters_dir: Path,
        *,
        timeout: float,
        memory_mb: int,
        sandbox: bool,
        max_bytes: int,
        protect: list[Path],
    ) -> None:
        self.masters_dir = masters_dir
        self.timeout, self.memory_mb = float(timeout), int(memory_mb)
        self.sandbox, self.max_bytes = sandbox, max_bytes
        self.base = Path(tempfile.mkdtemp(prefix="tfbook-grade-"))
        self.protect = protect
        self.masters: dict[str, object] = {}
        self.site: Path | None = None
        self.data: Path | None = None  # the sandboxes' $TFBOOK_DATA (a copy of the corpus)
        self.corpus_source: Path | None = None
        self.abort = threading.Event()

    def provide_corpus(self, prepared: list[Prepared]) -> None:
        """Stage the corpus for the sandboxes; one warning line when the batch lacks it."""
        from tfbook.corpus import corpus_folder

        self.corpus_source = corpus_folder()
        self.data, problem = stage_corpus(self.base, self.corpus_source)
        if problem and _reads_corpus(prepared, self.masters):
            log.warning(
                "tfbook grade: warning: %s; chapter 8 notebooks that read Shakespeare's plays "
                "will fail (the sandbox has no network): run `make corpus` (or `python -m "
                "tfbook.corpus fetch`, with TFBOOK_DATA as the grader's) before grading",
                problem,
            )

    def close(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)

    def master(self, chapter: str):
        if chapter not in self.masters:
            from tfbook.exercises import chapters

            path = find_master(chapter, self.masters_dir)
            if chapter not in chapters() or path is None:
                raise Invalid(f"no master notebook for {chapter} in {self.masters_dir}")
            self.masters[chapter] = nbformat.read(path, as_version=4)
        return self.masters[chapter]

    def read(self, index: int, path: Path) -> Prepared | GradeResult:
        result = GradeResult(file=str(path))
        try:
            nb = read_submission(path, self.max_bytes)
            chapter = submission_chapter(nb)
            result.chapter = chapter
            master = self.master(chapter)
            return prepare(index, path, nb, chapter, master)
        except Invalid as exc:
            result.reason = str(exc)
        except StudentEditionError as exc:
            result.reason = f"the master notebook is malformed: {exc}"
        except Exception as exc:  # noqa: BLE001 - one submission never stops the batch
            result.reason = f"could not be read: {type(exc).__name__}: {str(exc)[:200]}"
        result.status = "invalid"
        result.reason = _printable(result.reason)
        return result

    def grade(self, prepared: Prepared, slot: int) -> GradeResult:
        result = GradeResult(file=str(prepared.path), chapter=prepared.chapter, status="error")
        try:
            return self._grade(prepared, slot, result)
        except Exception as exc:  # noqa: BLE001 - becomes this submission's row
            tail = traceback.format_exc(limit=3).strip().splitlines()[-1]
            reason = f"the grader failed on this submission: {type(exc).__name__}: {tail}"
            result.reason = _printable(reason)
            return result

    def _grade(self, prepared: Prepared, slot: int, result: GradeResult) -> GradeResult:
        from tfbook.exercises import load

        exercises = load(prepared.chapter)
        for q in exercises:
            result.max_points[q.qid] = q.points
            result.scores[q.qid] = 0.0
            result.feedback[q.qid] = f"[{q.qid}] {q.title}: not checked (its check never ran)"
        folder = self.base / f"sub-{prepared.index}"
        indir, rundir, empty = folder / "in", folder / "run", folder / "empty"
        for d in (folder, indir, rundir, empty):
            d.mkdir()
            os.chmod(d, 0o755)
        (indir / "cells.json").write_text(prepared.notebook, encoding="utf-8")
        os.chmod(indir / "cells.json", 0o644)

        conn, pid = _JUDGES.start(
            prepared.chapter, str(rundir / "judge.sock"), self.timeout + 60, JUDGE_MEMORY_MB
        )
        records: dict[str, dict] = {}
        notes: list[str] = []
        state = {"done": False, "ready": False}

        def on_judge() -> bool:
            """Read one message from the judge; False once it has nothing more to say."""
            if state["done"]:
                return False
            try:
                message = wire.recv(conn, 1 << 20)
            except (OSError, ValueError, ConnectionError):
                state["done"] = True
                return False
            op = message.get("op")
            if op == "ready":
                state["ready"] = True
            elif op == "done":
                state["done"] = True
            elif op == "check" and isinstance(message.get("qid"), str):
                records[message["qid"]] = message
            elif op == "note" and isinstance(message.get("text"), str) and len(notes) < 20:
                notes.append(message["text"][:300])
            return not state["done"]

        try:
            conn.settimeout(120)
            on_judge()
            if not state["ready"]:
                raise RuntimeError("the judge did not start: " + "; ".join(notes))
            conn.settimeout(30)
            run = self._run(prepared, slot, folder, {conn.fileno(): on_judge})
            try:
                wire.send(conn, {"op": "stop"})
            except OSError:
                pass
            conn.settimeout(15)
            while not state["done"]:
                on_judge()
        finally:
            conn.close()
            if not state["done"]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        if self.abort.is_set():
            raise KeyboardInterrupt

        for qid, record in records.items():
            q = next((q for q in exercises if q.qid == qid), None)
            if q is None:
                continue
            points = record.get("points")
            passed = record.get("status") == "passed" and isinstance(points, (int, float))
            result.scores[qid] = max(0.0, min(float(points), q.points)) if passed else 0.0
            text = record.get("text")
            result.feedback[qid] = text[:4000] if isinstance(text, str) else ""
        status, reasons = self._status(prepared, run)
        for note in notes:
            if "stopped" in note or "failed" in note:
                reasons.append(f"judge: {note}")
        result.status = status
        result.reason = _printable("; ".join(prepared.notes + reasons))
        return result

    def _run(self, prepared: Prepared, slot: int, folder: Path, watch) -> sb.Run:
        tmp_mb = max(64, min(1024, self.memory_mb // 4))
        if self.sandbox:
            info_r, info_w = os.pipe()
            masks = [*self.protect, self.base, Path(self.masters_dir)]
            import tfbook

            masks.append(Path(tfbook.__file__).resolve().parent)
            if self.corpus_source is not None:
                masks.append(self.corpus_source)  # only the copy at sb.DATA is visible
            args = sb.command(
                site=self.site,
                indir=folder / "in",
                rundir=folder / "run",
                tmp_mb=tmp_mb,
                uid=65534 - slot,
                masks=masks,
                empty=folder / "empty",
                info_fd=info_w,
                data=self.data,
            )
            env = sb.environment(
                site=sb.SITE,
                notebook=sb.NOTEBOOK,
                socket=sb.SOCKET,
                home=sb.HOME,
                workdir=sb.WORKDIR,
                data=sb.DATA if self.data is not None else None,
            )
            pass_fds: tuple[int, ...] = (info_w,)
            cwd = None
            file_mb = 0
        else:
            info_r = None
            work = folder / "work"
            work.mkdir()
            args = [sys.executable, "-m", "tfbook_tools.sandbox_runner"]
            env = sb.environment(
                site=str(self.site),
                notebook=str(folder / "in" / "cells.json"),
                socket=str(folder / "run" / "judge.sock"),
                home=str(work / "home"),
                workdir=str(work / "work"),
                data=str(self.data) if self.data is not None else None,
            )
            env.pop("TFBOOK_MAX_TASKS")
            pass_fds, cwd, file_mb = (), str(work), tmp_mb
        try:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                cwd=cwd,
                pass_fds=pass_fds,
                start_new_session=True,
                preexec_fn=sb.limit_preexec(self.memory_mb, file_mb),
            )
        finally:
            if self.sandbox:
                os.close(info_w)
        try:
            return sb.supervise(
                proc,
                timeout=self.timeout,
                memory_mb=self.memory_mb,
                info_fd=info_r,
                watch=watch,
                abort=self.abort.is_set,
                sandboxed=self.sandbox,
            )
        finally:
            for pipe in (proc.stdout, proc.stderr):
                pipe.close()
            if info_r is not None:
                os.close(info_r)

    def _status(self, prepared: Prepared, run: sb.Run) -> tuple[str, list[str]]:
        labels = prepared.labels

        def label(cell: object) -> str:
            ok = isinstance(cell, int) and not isinstance(cell, bool) and 0 <= cell < len(labels)
            return labels[cell] if ok else "a cell"

        reasons: list[str] = []
        kinds = {e["e"] for e in run.events}
        started = [e.get("cell") for e in run.events if e["e"] == "start"]
        errors = [e for e in run.events if e["e"] == "end" and isinstance(e.get("error"), str)]
        for event in errors[:5]:
            reasons.append(f"{label(event.get('cell'))} raised {event['error'][:60]}")
        if len(errors) > 5:
            reasons.append(f"{len(errors) - 5} more cells raised")
        where = f" (it was running {label(started[-1])})" if started else ""
        if run.ended == "timeout":
            reasons.append(f"the notebook did not finish within {self.timeout:g} s{where}")
            return "timeout", reasons
        if run.ended == "memory":
            reasons.append(
                f"the submission used more than {self.memory_mb} MB of memory (all its "
                f"processes together) and was stopped{where}"
            )
            return "error", reasons
        if run.ended == "aborted":
            return "error", reasons + ["grading was interrupted"]
        if "done" in kinds:
            return ("error" if errors else "graded"), reasons
        if "dead" in kinds:
            reasons.append(f"the kernel died{where} (out of memory, or the process was killed)")
        elif "fail" in kinds:
            msg = next(str(e.get("msg"))[:200] for e in run.events if e["e"] == "fail")
            reasons.append(f"the notebook could not be run: {msg}")
        elif "kernel" not in kinds:
            tail = " ".join(run.stderr.strip().splitlines()[-3:])[-300:]
            reasons.append("the kernel did not start" + (f": {tail}" if tail else ""))
        else:
            reasons.append(f"the notebook stopped before its end{where} (its processes ended)")
        return "error", reasons


# --------------------------------------------------------------------------- output


def _printable(text: str) -> str:
    """No control characters (escape sequences) from a submission reach a terminal or file."""
    return "".join(c if c.isprintable() else "?" for c in text)


def _cell(value: object) -> str:
    """A CSV cell that a spreadsheet never reads as a formula."""
    text = str(value)
    return "'" + text if text.startswith(_FORMULA) else text


def _row(result: GradeResult, qids: list[str]) -> list[str]:
    cells = [f"{result.scores[q]:g}" if q in result.scores else "" for q in qids]
    row = [result.file, result.chapter, result.status, *cells]
    row += [f"{result.total:g}", f"{result.max_total:g}", f"{result.percent:.1f}"]
    return [_cell(c) for c in row]


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _feedback_markdown(result: GradeResult) -> str:
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


def _qid_key(qid: str) -> tuple:
    chapter, _, number = qid.partition(".q")
    return (chapter, int(number) if number.isdigit() else 0, qid)


def _feedback_names(paths: list[Path]) -> list[str]:
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


def grade_batch(
    paths: list[Path],
    out_csv: Path,
    masters_dir: Path | None = None,
    *,
    jobs: int = 1,
    timeout: float = 300.0,
    memory_mb: int = 6144,
    sandbox: bool = True,
    max_notebook_mb: int = MAX_NOTEBOOK_MB,
    progress=None,
) -> list[GradeResult]:
    """Grade every submission, write ``out_csv`` and one ``<name>.feedback.md`` per submission.

    ``timeout`` (seconds) and ``memory_mb`` hold for each submission as a whole. With
    ``sandbox=False`` (only for trusted code) the notebooks run without isolation.
    Rows are appended to ``out_csv`` as submissions finish; at the end the file is rewritten
    in the order of ``paths``. ``progress(result)`` is called for each finished submission.
    """
    if sandbox:
        problem = sb.sandbox_problem()
        if problem:
            raise SandboxUnavailable(problem)
    masters_dir = Path(masters_dir or default_masters_dir())
    paths = [Path(p) for p in paths]
    out_csv = Path(out_csv)
    out_dir = out_csv.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    protect = [out_dir.resolve(), *{Path(os.path.abspath(p)).parent for p in paths}]
    batch = _Batch(
        masters_dir,
        timeout=timeout,
        memory_mb=memory_mb,
        sandbox=sandbox,
        max_bytes=int(max_notebook_mb) << 20,
        protect=protect,
    )
    names = _feedback_names(paths)
    results: list[GradeResult | None] = [None] * len(paths)
    try:
        items = [batch.read(i, p) for i, p in enumerate(paths)]
        prepared = [p for p in items if isinstance(p, Prepared)]
        chapters = sorted({p.chapter for p in prepared})
        qids: list[str] = []
        from tfbook.exercises import load

        for chapter in chapters:
            qids += [q.qid for q in load(chapter)]
        qids.sort(key=_qid_key)
        if prepared:
            batch.site = build_site(batch.base, {c: batch.masters[c] for c in chapters})
            batch.provide_corpus(prepared)
        header = ["file", "chapter", "status", *qids, "total", "max_total", "percent"]
        lock = threading.Lock()
        with out_csv.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            fh.flush()

            def finish(index: int, result: GradeResult) -> None:
                with lock:
                    results[index] = result
                    writer.writerow(_row(result, qids))
                    fh.flush()
                    feedback = out_dir / names[index]
                    feedback.write_text(_feedback_markdown(result), encoding="utf-8")
                if progress:
                    progress(result)

            for index, item in enumerate(items):
                if isinstance(item, GradeResult):
                    finish(index, item)
            slots: queue.Queue[int] = queue.Queue()
            for slot in range(max(1, jobs)):
                slots.put(slot)

            def task(item: Prepared) -> GradeResult:
                slot = slots.get()
                try:
                    return batch.grade(item, slot)
                finally:
                    slots.put(slot)

            with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
                futures = {pool.submit(task, item): item.index for item in prepared}
                try:
                    pending = set(futures)
                    while pending:
                        done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                        for future in done:
                            try:
                                finish(futures[future], future.result())
                            except KeyboardInterrupt:
                                pass
                except BaseException:
                    batch.abort.set()
                    for future in futures:
                        future.cancel()
                    raise
        final = [r for r in results if r is not None]
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(header)
        for r in final:
            writer.writerow(_row(r, qids))
        tmp = out_csv.with_name(f".{out_csv.name}.tmp")
        tmp.write_text(buffer.getvalue(), encoding="utf-8", newline="")
        os.replace(tmp, out_csv)
        return final
    finally:
        batch.close()


def grade_notebook(
    path: Path,
    masters_dir: Path | None = None,
    *,
    timeout: float = 300.0,
    memory_mb: int = 6144,
    sandbox: bool = True,
) -> GradeResult:
    """Grade one submission without writing anything (see :func:`grade_batch`)."""
    if sandbox:
        problem = sb.sandbox_problem()
        if problem:
            raise SandboxUnavailable(problem)
    path = Path(path)
    batch = _Batch(
        Path(masters_dir or default_masters_dir()),
        timeout=timeout,
        memory_mb=memory_mb,
        sandbox=sandbox,
        max_bytes=MAX_NOTEBOOK_MB << 20,
        protect=[Path(os.path.abspath(path)).parent],
    )
    try:
        item = batch.read(0, path)
        if isinstance(item, GradeResult):
            return item
        batch.site = build_site(batch.base, {item.chapter: batch.masters[item.chapter]})
        batch.provide_corpus([item])
        return batch.grade(item, 0)
    finally:
        batch.close()
