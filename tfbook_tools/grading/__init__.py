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

The package, one module per concern: :mod:`~tfbook_tools.grading.reading` (the file, the
notebook, its chapter), :mod:`~tfbook_tools.grading.restore` (the official check cells),
:mod:`~tfbook_tools.grading.site` (the code the sandbox sees), :mod:`~tfbook_tools.grading.corpus`
(its copy of the capstone corpus), :mod:`~tfbook_tools.grading.judges` (starting judges and
hearing their verdicts), :mod:`~tfbook_tools.grading.launch` (running one submission and how it
ended), :mod:`~tfbook_tools.grading.batch` (the batch, in parallel) and
:mod:`~tfbook_tools.grading.report` (the CSV and the feedback files).

Statuses: ``graded`` (ran to the end), ``timeout`` (the submission ran past the time limit:
it was stopped, the checks it made before still count), ``error`` (a cell raised, the kernel
died, or the submission was stopped for using too much memory: the checks made still count)
and ``invalid``. Any failure while reading, preparing, running or collecting one submission
becomes that submission's row; rows are written to the CSV as submissions finish.
"""

from __future__ import annotations

from tfbook_tools import default_masters_dir
from tfbook_tools import sandbox as sb  # noqa: F401 - grading.sb: where submissions run
from tfbook_tools.grading.batch import SandboxUnavailable, grade_batch, grade_notebook
from tfbook_tools.grading.corpus import stage_corpus
from tfbook_tools.grading.reading import Invalid, find_master, read_submission, submission_chapter
from tfbook_tools.grading.report import STATUSES, GradeResult

__all__ = [
    "GradeResult",
    "Invalid",
    "STATUSES",
    "SandboxUnavailable",
    "default_masters_dir",
    "find_master",
    "grade_batch",
    "grade_notebook",
    "read_submission",
    "stage_corpus",
    "submission_chapter",
]
