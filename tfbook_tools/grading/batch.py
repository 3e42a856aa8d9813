"""Grading a batch of submissions (chapter 0): :func:`grade_batch` and :func:`grade_notebook`.

A :class:`Batch` owns a private folder (removed at the end), the master notebooks it has
read, and, once the submissions are read, the sandbox site and the :class:`Launcher` every
submission is started with. Each submission is read and restored
(:mod:`~tfbook_tools.grading.reading`, :mod:`~tfbook_tools.grading.restore`), run in its
sandbox while its judge hears the checks (:mod:`~tfbook_tools.grading.launch`,
:mod:`~tfbook_tools.grading.judges`), and reported (:mod:`~tfbook_tools.grading.report`).
Any failure while reading, preparing, running or collecting one submission becomes that
submission's row; the others are still graded.

Public API: :func:`grade_batch`, :func:`grade_notebook`, :class:`Batch`, :class:`Limits`,
:class:`SandboxUnavailable`.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import tempfile
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from tfbook_tools import default_masters_dir
from tfbook_tools import sandbox as sb
from tfbook_tools.grading.corpus import reads_corpus, stage_corpus
from tfbook_tools.grading.judges import JUDGES
from tfbook_tools.grading.launch import Launcher
from tfbook_tools.grading.reading import (
    MAX_NOTEBOOK_MB,
    Invalid,
    find_master,
    read_submission,
    submission_chapter,
)
from tfbook_tools.grading.report import GradeResult, GradesCsv, printable, qid_key
from tfbook_tools.grading.restore import Prepared, prepare
from tfbook_tools.grading.site import build_site
from tfbook_tools.student import StudentEditionError

__all__ = ["Batch", "Limits", "SandboxUnavailable", "grade_batch", "grade_notebook"]

log = logging.getLogger(__name__)


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot run here; grading untrusted code without it needs an explicit flag."""


def _require_sandbox(sandbox: bool) -> None:
    if sandbox:
        problem = sb.sandbox_problem()
        if problem:
            raise SandboxUnavailable(problem)


@dataclass(frozen=True)
class Limits:
    """What one submission may use, as a whole."""

    timeout: float = 300.0  # seconds of wall clock, kernel start included
    memory_mb: int = 6144  # all its processes together
    max_bytes: int = MAX_NOTEBOOK_MB << 20  # the largest submission file read


@dataclass
class Batch:
    """The state of one batch: its private folder, masters, site, corpus copy and launcher."""

    masters_dir: Path
    limits: Limits
    sandbox: bool  # False only for trusted code
    protect: list[Path]  # folders hidden from every sandbox (submissions, grades)
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tfbook-grade-")))
    masters: dict[str, nbformat.NotebookNode] = field(default_factory=dict)
    data: Path | None = None  # the sandboxes' $TFBOOK_DATA (a copy of the corpus)
    corpus_source: Path | None = None  # the grader's corpus, hidden from the sandboxes
    launcher: Launcher | None = None  # set by set_up()
    abort: threading.Event = field(default_factory=threading.Event)

    def close(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)

    def master(self, chapter: str) -> nbformat.NotebookNode:
        """The master notebook of ``chapter`` (read once); :class:`Invalid` if there is none."""
        if chapter not in self.masters:
            from tfbook.exercises import chapters

            path = find_master(chapter, self.masters_dir)
            if chapter not in chapters() or path is None:
                raise Invalid(f"no master notebook for {chapter} in {self.masters_dir}")
            self.masters[chapter] = nbformat.read(path, as_version=4)
        return self.masters[chapter]

    def read(self, index: int, path: Path) -> Prepared | GradeResult:
        """Submission ``index`` ready to run, or its ``invalid`` row."""
        result = GradeResult(file=str(path))
        try:
            nb = read_submission(path, self.limits.max_bytes)
            chapter = submission_chapter(nb)
            result.chapter = chapter
            return prepare(index, path, nb, chapter, self.master(chapter))
        except Invalid as exc:
            result.reason = str(exc)
        except StudentEditionError as exc:
            result.reason = f"the master notebook is malformed: {exc}"
        except Exception as exc:  # noqa: BLE001 - one submission never stops the batch
            result.reason = f"could not be read: {type(exc).__name__}: {str(exc)[:200]}"
        result.status = "invalid"
        result.reason = printable(result.reason)
        return result

    def provide_corpus(self, prepared: list[Prepared]) -> None:
        """Stage the corpus for the sandboxes; one warning line when the batch lacks it."""
        from tfbook.corpus import corpus_folder

        self.corpus_source = corpus_folder()
        self.data, problem = stage_corpus(self.base, self.corpus_source)
        if problem and reads_corpus(prepared, self.masters):
            log.warning(
                "tfbook grade: warning: %s; chapter 8 notebooks that read Shakespeare's plays "
                "will fail (the sandbox has no network): run `make corpus` (or `python -m "
                "tfbook.corpus fetch`, with TFBOOK_DATA as the grader's) before grading",
                problem,
            )

    def set_up(self, prepared: list[Prepared]) -> None:
        """Build the site for the chapters of ``prepared``, stage the corpus, and fix how
        every submission is started."""
        import tfbook

        chapters = sorted({p.chapter for p in prepared})
        site = build_site(self.base, {c: self.masters[c] for c in chapters})
        self.provide_corpus(prepared)
        masks = [*self.protect, self.base, Path(self.masters_dir)]
        masks.append(Path(tfbook.__file__).resolve().parent)
        if self.corpus_source is not None:
            masks.append(self.corpus_source)  # only the copy at sb.DATA is visible
        self.launcher = Launcher(
            site=site,
            data=self.data,
            masks=tuple(masks),
            sandboxed=self.sandbox,
            timeout=self.limits.timeout,
            memory_mb=self.limits.memory_mb,
        )

    def grade(self, prepared: Prepared, slot: int) -> GradeResult:
        """The row of one prepared submission (``slot``: which parallel job runs it)."""
        result = GradeResult(file=str(prepared.path), chapter=prepared.chapter, status="error")
        try:
            return self._grade(prepared, slot, result)
        except Exception as exc:  # noqa: BLE001 - becomes this submission's row
            tail = traceback.format_exc(limit=3).strip().splitlines()[-1]
            reason = f"the grader failed on this submission: {type(exc).__name__}: {tail}"
            result.reason = printable(reason)
            return result

    def _folder(self, prepared: Prepared) -> Path:
        """The submission's folder: ``in/cells.json`` (read-only in the sandbox), ``run/``
        (the judge's socket) and ``empty/`` (bound over what the sandbox must not see)."""
        folder = self.base / f"sub-{prepared.index}"
        for d in (folder, folder / "in", folder / "run", folder / "empty"):
            d.mkdir()
            os.chmod(d, 0o755)
        cells = folder / "in" / "cells.json"
        cells.write_text(prepared.notebook, encoding="utf-8")
        os.chmod(cells, 0o644)
        return folder

    def _grade(self, prepared: Prepared, slot: int, result: GradeResult) -> GradeResult:
        from tfbook.exercises import load

        if self.launcher is None:
            raise RuntimeError("Batch.set_up() must come before Batch.grade()")
        exercises = load(prepared.chapter)
        for q in exercises:
            result.max_points[q.qid] = q.points
            result.scores[q.qid] = 0.0
            result.feedback[q.qid] = f"[{q.qid}] {q.title}: not checked (its check never ran)"
        folder = self._folder(prepared)
        socket_path = str(folder / "run" / "judge.sock")
        link = JUDGES.start(prepared.chapter, socket_path, self.limits.timeout + 60)
        try:
            link.wait_ready()
            watch = {link.conn.fileno(): link.receive}
            run = self.launcher.run(folder, slot, watch, self.abort.is_set)
            link.finish()
        finally:
            link.close()
        if self.abort.is_set():
            raise KeyboardInterrupt

        points_of = {q.qid: q.points for q in exercises}
        for qid, record in link.records.items():
            if qid not in points_of:
                continue
            points = record.get("points")
            passed = record.get("status") == "passed" and isinstance(points, (int, float))
            result.scores[qid] = max(0.0, min(float(points), points_of[qid])) if passed else 0.0
            text = record.get("text")
            result.feedback[qid] = text[:4000] if isinstance(text, str) else ""
        status, reasons = self.launcher.outcome(run, prepared.labels)
        result.status = status
        result.reason = printable("; ".join(prepared.notes + reasons + link.problems()))
        return result


def _question_ids(chapters: set[str]) -> list[str]:
    """Every question of ``chapters``, in the order of the CSV's columns."""
    from tfbook.exercises import load

    qids = [q.qid for chapter in sorted(chapters) for q in load(chapter)]
    return sorted(qids, key=qid_key)


def _grade_in_parallel(
    batch: Batch,
    prepared: list[Prepared],
    jobs: int,
    finish: Callable[[int, GradeResult], None],
) -> None:
    """Grade ``prepared`` with ``jobs`` at a time; ``finish(index, result)`` as each ends.
    An interruption (Ctrl-C) stops every running sandbox and cancels the rest."""
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


def grade_batch(
    paths: list[Path],
    out_csv: Path,
    masters_dir: Path | None = None,
    *,
    jobs: int = 1,
    timeout: float = Limits.timeout,
    memory_mb: int = Limits.memory_mb,
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
    _require_sandbox(sandbox)
    paths = [Path(p) for p in paths]
    out_csv = Path(out_csv)
    out_dir = out_csv.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    batch = Batch(
        Path(masters_dir or default_masters_dir()),
        Limits(timeout, memory_mb, int(max_notebook_mb) << 20),
        sandbox,
        protect=[out_dir.resolve(), *{Path(os.path.abspath(p)).parent for p in paths}],
    )
    try:
        items = [batch.read(i, p) for i, p in enumerate(paths)]
        prepared = [p for p in items if isinstance(p, Prepared)]
        qids = _question_ids({p.chapter for p in prepared})
        if prepared:
            batch.set_up(prepared)
        with GradesCsv(out_csv, qids, paths) as grades:

            def finish(index: int, result: GradeResult) -> None:
                grades.add(index, result)
                if progress:
                    progress(result)

            for index, item in enumerate(items):
                if isinstance(item, GradeResult):
                    finish(index, item)
            _grade_in_parallel(batch, prepared, jobs, finish)
        return grades.rewrite_in_order()
    finally:
        batch.close()


def grade_notebook(
    path: Path,
    masters_dir: Path | None = None,
    *,
    timeout: float = Limits.timeout,
    memory_mb: int = Limits.memory_mb,
    sandbox: bool = True,
) -> GradeResult:
    """Grade one submission without writing anything (see :func:`grade_batch`)."""
    _require_sandbox(sandbox)
    path = Path(path)
    batch = Batch(
        Path(masters_dir or default_masters_dir()),
        Limits(timeout, memory_mb),
        sandbox,
        protect=[Path(os.path.abspath(path)).parent],
    )
    try:
        item = batch.read(0, path)
        if isinstance(item, GradeResult):
            return item
        batch.set_up([item])
        return batch.grade(item, 0)
    finally:
        batch.close()
