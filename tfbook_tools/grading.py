"""Batch grading of submitted notebooks (chapter 0): ``tfbook grade SUBMISSION... --out CSV``.

For each submission:

1. It is read (never written): a file that is not valid notebook JSON, or not a tfbook
   chapter notebook, gets the status ``invalid``.
2. The official check cells are restored from the master notebook by question id, so a
   deleted or edited check cell cannot change the grade.
3. The notebook runs in its own kernel process (a fresh temporary working directory, a
   per-cell timeout and an address-space limit). The grader's process never imports or
   runs student code.
4. After the student's cells, the grader runs its own grading cell in that kernel: it
   reloads ``tfbook`` from disk (undoing any monkey-patching), evaluates every question's
   answer with the official checks and writes the results to a file only the grader reads.
   Nothing the notebook printed is trusted.

Statuses: ``graded`` (ran to the end), ``timeout`` (a cell exceeded the timeout: later cells
are skipped, questions reached before it are still scored), ``error`` (a cell raised or the
kernel died), ``invalid`` (unreadable or not a chapter notebook).
"""

from __future__ import annotations

import copy
import csv
import json
import multiprocessing
import os
import tempfile
import textwrap
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from tfbook_tools import default_masters_dir
from tfbook_tools.student import StudentEditionError, chapter_of_notebook, check_cells

__all__ = ["GradeResult", "grade_notebook", "grade_batch", "default_masters_dir", "find_master"]

STATUSES = ("graded", "timeout", "error", "invalid")


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
    matches = sorted(masters_dir.glob(f"{chapter[2:]}_*.ipynb"))
    return matches[0] if matches else None


def _read_submission(path: Path) -> nbformat.NotebookNode:
    raw = path.read_bytes()
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(
            f"not a notebook: not valid JSON ({exc.__class__.__name__}: {exc})"
        ) from exc
    if not isinstance(data, dict) or "cells" not in data or "nbformat" not in data:
        raise ValueError("not a notebook: JSON without 'cells'/'nbformat'")
    try:
        nb = nbformat.reads(json.dumps(data), as_version=4)
        nbformat.validate(nb)
    except Exception as exc:  # noqa: BLE001 - any validation problem makes it invalid
        raise ValueError(f"not a valid notebook: {str(exc).splitlines()[0]}") from exc
    return nb


def _restore_check_cells(nb: nbformat.NotebookNode, master: nbformat.NotebookNode) -> list[str]:
    """Put the master's check cells back into ``nb`` by question id; return what was done."""
    official = check_cells(master)
    notes: list[str] = []
    seen: set[str] = set()
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("tfbook", {})
        qid = meta.get("question") if isinstance(meta, dict) else None
        if meta.get("role") == "check" and qid in official:
            seen.add(qid)
            if cell.source != official[qid][1]:
                notes.append(f"{qid}: check cell was edited; the official one was restored")
                cell.source = official[qid][1]
    for qid, (_, source, _) in official.items():
        if qid in seen:
            continue
        position = len(nb.cells)
        for i, cell in enumerate(nb.cells):
            meta = cell.get("metadata", {}).get("tfbook", {})
            if isinstance(meta, dict) and meta.get("question") == qid:
                position = i + 1
        new = nbformat.v4.new_code_cell(source)
        new.metadata["tfbook"] = {"question": qid, "role": "check"}
        nb.cells.insert(position, new)
        notes.append(f"{qid}: check cell was missing; the official one was restored")
    return notes


def _prelude(memory_mb: int) -> str:
    return textwrap.dedent(
        f"""
        import os, resource
        os.environ.pop("TFBOOK_STRICT", None)
        os.environ["TFBOOK_COURSE_MODE"] = "1"
        os.environ["MPLBACKEND"] = "Agg"
        _limit = {memory_mb} * 1024 * 1024
        if _limit > 0:
            resource.setrlimit(resource.RLIMIT_AS, (_limit, _limit))
        del _limit
        """
    ).strip()


def _grading_cell(chapter: str, answers: dict[str, str], out_path: str) -> str:
    return textwrap.dedent(
        f"""
        def __tfbook_grade():
            import importlib, json, sys
            for name in [m for m in sys.modules if m == "tfbook" or m.startswith("tfbook.")]:
                del sys.modules[name]
            exercises = importlib.import_module("tfbook.exercises.{chapter}").EXERCISES
            results = {{}}
            for qid, expr in {answers!r}.items():
                q = exercises[qid]
                try:
                    answer = eval(expr, globals())
                except Exception as exc:
                    results[qid] = {{"status": "not attempted", "points": 0.0,
                                    "text": f"[{{qid}}] {{q.title}}: not attempted "
                                            f"({{type(exc).__name__}} evaluating {{expr}})"}}
                    continue
                r = q.evaluate(answer)
                results[qid] = {{"status": r.status, "points": r.points, "text": r.text()}}
            with open({out_path!r}, "w", encoding="utf-8") as fh:
                json.dump(results, fh)
        __tfbook_grade()
        """
    ).strip()


def grade_notebook(
    path: Path,
    masters_dir: Path | None = None,
    *,
    timeout: float = 60.0,
    memory_mb: int = 6144,
) -> GradeResult:
    """Grade one submission (see the module docstring). Never modifies ``path``."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from nbclient.util import run_sync

    from tfbook.exercises import load

    masters_dir = masters_dir or default_masters_dir()
    result = GradeResult(file=str(path))
    try:
        nb = _read_submission(path)
    except (OSError, ValueError) as exc:
        result.reason = str(exc)
        return result
    chapter = chapter_of_notebook(nb)
    if chapter is None:
        result.reason = (
            "not a tfbook chapter notebook (no 'from tfbook.exercises import chNN as ex')"
        )
        return result
    result.chapter = chapter
    master_path = find_master(chapter, masters_dir)
    if master_path is None:
        result.reason = f"no master notebook for {chapter} in {masters_dir}"
        return result
    master = nbformat.read(master_path, as_version=4)
    official = check_cells(master)
    exercises = load(chapter)
    for q in exercises:
        result.max_points[q.qid] = q.points
        result.scores[q.qid] = 0.0
        result.feedback[q.qid] = f"[{q.qid}] {q.title}: not reached"
    work = copy.deepcopy(nb)
    try:
        notes = _restore_check_cells(work, master)
    except StudentEditionError as exc:
        result.reason = str(exc)
        return result
    answers = {qid: expr for qid, (_, _, expr) in official.items()}
    for cell in work.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    work.cells.insert(0, nbformat.v4.new_code_cell(_prelude(memory_mb)))

    status, reasons = "graded", list(notes)
    with tempfile.TemporaryDirectory(prefix="tfbook-grade-") as tmp:
        out_path = os.path.join(tmp, ".tfbook-results.json")
        client = NotebookClient(
            work,
            timeout=int(timeout),
            kernel_name="python3",
            allow_errors=True,
            interrupt_on_timeout=False,
            record_timing=False,
            resources={"metadata": {"path": tmp}},
        )
        try:
            with client.setup_kernel():
                for index, cell in enumerate(work.cells):
                    if cell.cell_type != "code":
                        continue
                    try:
                        client.execute_cell(cell, index)
                    except CellTimeoutError:
                        status = "timeout"
                        reasons.append(f"cell {index - 1} did not finish within {timeout:g} s")
                        run_sync(client.km.interrupt_kernel)()
                        break
                    if any(o.get("output_type") == "error" for o in cell.outputs):
                        if status == "graded":
                            status = "error"
                        err = next(o for o in cell.outputs if o.get("output_type") == "error")
                        reasons.append(f"cell {index - 1} raised {err.get('ename')}")
                grading = nbformat.v4.new_code_cell(_grading_cell(chapter, answers, out_path))
                work.cells.append(grading)
                budget = max(timeout, 30.0 * max(1, len(answers)))
                client.timeout = int(budget)
                client.execute_cell(grading, len(work.cells) - 1)
        except DeadKernelError:
            status = "error"
            reasons.append("the kernel died (out of memory, or the process was killed)")
        except CellTimeoutError:
            status = "timeout"
            reasons.append("grading did not finish (the kernel stayed busy after an interrupt)")
        except Exception as exc:  # noqa: BLE001 - keep grading the rest of the batch
            status = "error"
            reasons.append(f"grader could not run the notebook: {type(exc).__name__}: {exc}")
        if os.path.exists(out_path):
            with open(out_path, encoding="utf-8") as fh:
                graded = json.load(fh)
            for qid, info in graded.items():
                if qid in result.scores:
                    result.scores[qid] = (
                        float(info["points"]) if info["status"] == "passed" else 0.0
                    )
                    result.feedback[qid] = info["text"]
        elif status == "graded":
            status = "error"
            reasons.append("the grading cell produced no results")
    result.status = status
    result.reason = "; ".join(reasons)
    return result


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
        lines.append("```text")
        lines.append(result.feedback.get(qid, ""))
        lines.append("```")
        lines.append("")
    return "\n".join(lines)


def _grade_worker(args: tuple[str, str, float, int]) -> GradeResult:
    path, masters, timeout, memory_mb = args
    return grade_notebook(Path(path), Path(masters), timeout=timeout, memory_mb=memory_mb)


def grade_batch(
    paths: list[Path],
    out_csv: Path,
    masters_dir: Path | None = None,
    *,
    jobs: int = 1,
    timeout: float = 60.0,
    memory_mb: int = 6144,
) -> list[GradeResult]:
    """Grade every submission, write ``out_csv`` and one ``<name>.feedback.md`` per submission."""
    masters_dir = masters_dir or default_masters_dir()
    work = [(str(p), str(masters_dir), timeout, memory_mb) for p in paths]
    if jobs > 1 and len(work) > 1:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            results = list(pool.map(_grade_worker, work))
    else:
        results = [_grade_worker(w) for w in work]

    qids: list[str] = []
    for r in results:
        for qid in r.scores:
            if qid not in qids:
                qids.append(qid)
    qids.sort(key=lambda q: (q.split(".")[0], int(q.split(".q")[1])))
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with out_csv.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "chapter", "status", *qids, "total", "max_total", "percent"])
        for r in results:
            cells = [f"{r.scores[q]:g}" if q in r.scores else "" for q in qids]
            writer.writerow(
                [
                    r.file,
                    r.chapter,
                    r.status,
                    *cells,
                    f"{r.total:g}",
                    f"{r.max_total:g}",
                    f"{r.percent:.1f}",
                ]
            )
    used: set[str] = set()
    for r in results:
        stem = Path(r.file).stem
        name, n = f"{stem}.feedback.md", 1
        while name in used:
            n += 1
            name = f"{stem}-{n}.feedback.md"
        used.add(name)
        (out_csv.parent / name).write_text(_feedback_markdown(r), encoding="utf-8")
    return results
