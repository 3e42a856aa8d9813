"""The grader's copy of the capstone corpus for the sandboxes (chapter 0).

Chapter 8 reads Shakespeare's plays from the corpus cache (:mod:`tfbook.corpus`). When the
grader has it (``make corpus``), :func:`stage_corpus` copies it (the manifest and the works it
lists, nothing else) into the batch's folder, and every sandbox binds that copy read-only as
``$TFBOOK_DATA``; when it has not, the batch logs one warning line if a notebook reads it, and
those notebooks fail as they would on a student's machine without network.

Public API: :func:`stage_corpus`, :func:`reads_corpus`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from tfbook_tools.grading.reading import cell_source, read_regular
from tfbook_tools.grading.restore import Prepared

__all__ = ["reads_corpus", "stage_corpus"]

#: Names in a notebook's code that read the capstone corpus (chapter 8, tfbook.corpus).
_CORPUS_USE_RE = re.compile(
    r"\b(?:fetch_shakespeare|split_by_play|corpus_folder|run_gpt|tfbook\.corpus)\b"
)
_WORK_NAME_RE = re.compile(r"[A-Za-z0-9_()]+")
_MAX_CORPUS_FILE_MB = 64


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
        raw = read_regular(manifest, limit)
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
            data = read_regular(source / f"{name}.txt", limit)
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


def reads_corpus(prepared: list[Prepared], masters: dict[str, object]) -> bool:
    """Whether a submission, or the master of its chapter, reads the capstone corpus."""
    if any(_CORPUS_USE_RE.search(p.notebook) for p in prepared):
        return True
    return any(
        _CORPUS_USE_RE.search(cell_source(cell))
        for chapter in {p.chapter for p in prepared}
        for cell in getattr(masters.get(chapter), "cells", [])
        if cell.get("cell_type") == "code"
    )
