"""Reading one submission (chapter 0): the file, the notebook in it, and its chapter.

Nothing here writes: a submission is opened read-only, never through a symbolic link, and a
file that is not a regular file, too large, not valid JSON, nested too deeply, not a valid
notebook (nbformat 3 and 4 are accepted) or whose chapter is ambiguous raises
:class:`Invalid` with the reason, which becomes the submission's row.

Public API: :func:`read_submission`, :func:`submission_chapter`, :func:`find_master`,
:func:`read_regular`, :class:`Invalid`.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import nbformat

from tfbook_tools.student import exercise_imports

__all__ = [
    "Invalid",
    "MAX_NOTEBOOK_MB",
    "cell_meta",
    "cell_source",
    "find_master",
    "read_regular",
    "read_submission",
    "submission_chapter",
]

MAX_NOTEBOOK_MB = 16
MAX_JSON_DEPTH = 64
MAX_CELLS = 5000
_CHAPTER_RE = re.compile(r"ch\d\d")


class Invalid(ValueError):
    """A submission that cannot be graded (the reason is the message)."""


class NotRegular(OSError):
    """A path that is not a regular file (a folder, a device, a pipe ...)."""


class TooLarge(OSError):
    """A file larger than the limit it is read with."""


def read_regular(path: Path, limit: int) -> bytes:
    """The bytes of the regular file ``path``, never read through a symbolic link.

    Raises :class:`NotRegular` for a folder, device or pipe, :class:`TooLarge` beyond
    ``limit`` bytes, and ``OSError`` when it cannot be opened (``ELOOP`` for a link).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise NotRegular(f"{path} is not a regular file")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"{path} is larger than {limit >> 20} MB")
    return data


def find_master(chapter: str, masters_dir: Path) -> Path | None:
    """The master notebook of ``chapter`` (``"ch04"`` -> ``book/04_*.ipynb``)."""
    if not _CHAPTER_RE.fullmatch(chapter or ""):
        return None
    matches = sorted(masters_dir.glob(f"{chapter[2:]}_*.ipynb"))
    return matches[0] if matches else None


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


def _read_bytes(path: Path, max_bytes: int) -> bytes:
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
        return read_regular(path, max_bytes)
    except NotRegular:
        raise Invalid("not a regular file") from None
    except TooLarge:
        raise Invalid(f"larger than the limit of {max_bytes >> 20} MB") from None
    except OSError as exc:
        raise Invalid(f"cannot be read ({exc.strerror})") from None


def read_submission(path: Path, max_bytes: int = MAX_NOTEBOOK_MB << 20) -> nbformat.NotebookNode:
    """Read and validate one submission as an nbformat 4 notebook; :class:`Invalid` if not."""
    raw = _read_bytes(path, max_bytes)
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


def cell_source(cell: dict) -> str:
    """A cell's source, ``""`` when it is not a string."""
    source = cell.get("source", "")
    return source if isinstance(source, str) else ""


def cell_meta(cell: dict) -> dict:
    """A cell's ``tfbook`` metadata (question id, role), ``{}`` when it has none or an odd one."""
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
        chapter
        for cell in nb.cells
        if cell.get("cell_type") == "code"
        for chapter in exercise_imports(cell_source(cell))
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
        qid = cell_meta(cell).get("question")
        if isinstance(qid, str) and not qid.startswith(chapter + "."):
            raise Invalid(f"cell {index} is marked as question {qid[:40]!r} of another chapter")
    return chapter
