"""tfbook_tools: the instructor and build tooling of the textbook (not imported by any chapter).

The library students import is :mod:`tfbook`; this package holds what builds, checks and
grades the book around it:

- ``tfbook_tools.student``: master notebook -> student edition.
- ``tfbook_tools.grading``: batch grading of submitted notebooks into a CSV (a package, one
  module per concern: reading, restore, site, corpus, judges, launch, batch, report), each
  run in the bubblewrap sandbox of ``tfbook_tools.sandbox`` (cells run by ``sandbox_runner``,
  checks sent through ``sandbox_client`` and ``wire`` to the ``judge``, which holds the
  references).
- ``tfbook_tools.build``: helpers behind the Makefile (static files, hints, execution).
- ``tfbook_tools.browser_check``: the offline headless-Chromium check of the built book.
- ``tfbook_tools.sphinxext``: the book's small Sphinx extension.
- ``tfbook_tools.cli``: the ``tfbook`` command (``tfbook student``, ``tfbook grade``,
  ``tfbook train``).

Paths to the repository (the book, the master notebooks) are arguments of these tools; the
default is :func:`repo_root`, this checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["repo_root", "default_masters_dir"]


def repo_root() -> Path:
    """The repository the tooling works on: ``$TFBOOK_REPO_ROOT``, else this checkout."""
    env = os.environ.get("TFBOOK_REPO_ROOT")
    return Path(env) if env else Path(__file__).resolve().parents[1]


def default_masters_dir() -> Path:
    """Folder of the master notebooks: ``$TFBOOK_MASTERS``, else ``book/`` of :func:`repo_root`."""
    env = os.environ.get("TFBOOK_MASTERS")
    return Path(env) if env else repo_root() / "book"
