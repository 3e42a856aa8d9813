"""The sandbox's site (chapter 0): the code a submission sees while it is graded.

:func:`build_site` writes, in the batch's private folder, a copy of ``tfbook`` whose exercise
modules are stand-ins without references (:mod:`tfbook_tools.sandbox_client`: each chapter's
questions, titles, points, hints and public constants, nothing else), the check engine, the
runner code the sandbox starts, and matplotlib's font list built once. The sandbox binds it
read-only.

Public API: :func:`build_site`, :func:`engine_modules`.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tfbook_tools.grading.reading import cell_source
from tfbook_tools.wire import WireError, encode

__all__ = ["build_site", "engine_modules"]

#: The modules of ``tfbook_tools`` the sandbox runs (:mod:`tfbook_tools.sandbox_runner`).
RUNNER_MODULES = ("__init__.py", "wire.py", "sandbox_client.py", "sandbox_runner.py")
_CHAPTER_MODULE_RE = re.compile(r"ch\d\d")

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


def _imported_siblings(path: Path, package: str) -> set[str]:
    """The modules of ``package`` (by name, without it) that the module at ``path`` imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 1 or (node.level == 0 and module == package):
                if module and node.level == 1:
                    names.add(module.split(".")[0])
                else:
                    names.update(alias.name for alias in node.names)
            elif node.level == 0 and module.startswith(package + "."):
                names.add(module[len(package) + 1 :].split(".")[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(package + "."):
                    names.add(alias.name[len(package) + 1 :].split(".")[0])
    return names


def engine_modules(folder: Path, start: str = "_engine") -> list[str]:
    """The file names of the check engine: ``start`` and every module of the exercise package
    in ``folder`` it imports, directly or not. A chapter module (it holds references) among
    them is an error: the sandbox must never see one."""
    found: set[str] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        if name in found or not (folder / f"{name}.py").is_file():
            continue
        if _CHAPTER_MODULE_RE.fullmatch(name):
            raise RuntimeError(
                f"the check engine imports tfbook.exercises.{name}, whose references must not "
                "reach the grading sandbox"
            )
        found.add(name)
        todo += _imported_siblings(folder / f"{name}.py", "tfbook.exercises")
    return sorted(f"{name}.py" for name in found)


def _public_constants(module, master) -> dict:
    """The values a master notebook reads from ``ex`` besides its questions, encoded."""
    names = set()
    for cell in master.cells:
        if cell.get("cell_type") == "code":
            names.update(re.findall(r"\bex\.([A-Za-z][A-Za-z0-9_]*)", cell_source(cell)))
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


def _manifest_entry(chapter: str, master) -> dict:
    module = importlib.import_module(f"tfbook.exercises.{chapter}")
    ex = module.EXERCISES
    return {
        "title": ex.title,
        "questions": [
            {"qid": q.qid, "title": q.title, "points": q.points, "hints": list(q.hints)} for q in ex
        ],
        "public": _public_constants(module, master),
    }


def _build_font_cache(site: Path) -> None:
    """matplotlib's font list, built once here instead of in every sandbox's empty home."""
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


def build_site(base: Path, chapters: dict[str, object]) -> Path:
    """A copy of ``tfbook`` (exercise modules replaced by stand-ins) and the runner code.

    Args:
        base: the batch's private folder; the site is ``base/site``.
        chapters: chapter (``"ch04"``) -> its master notebook, for each chapter graded.
    """
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
    for name in engine_modules(package / "exercises"):
        shutil.copyfile(package / "exercises" / name, exercises / name)
    (exercises / "__init__.py").write_text(_STUB_INIT, encoding="utf-8")
    manifest: dict = {"chapters": {}}
    for chapter, master in sorted(chapters.items()):
        manifest["chapters"][chapter] = _manifest_entry(chapter, master)
        stub = _STUB_CHAPTER.format(chapter=chapter)
        (exercises / f"{chapter}.py").write_text(stub, encoding="utf-8")
    (exercises / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    tools = site / "tfbook_tools"
    tools.mkdir()
    source = Path(tfbook_tools.__file__).resolve().parent
    for name in RUNNER_MODULES:
        shutil.copyfile(source / name, tools / name)
    _build_font_cache(site)
    for root, _dirs, files in os.walk(site):
        os.chmod(root, 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644)
    return site
