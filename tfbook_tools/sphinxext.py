"""A small Sphinx extension for the book's HTML build (chapter 0).

sphinx-thebe 0.3.1 registers its inline configuration script (``const THEBE_JS_URL = ...``)
once per read phase; Jupyter Book 1 triggers that twice, so every page declared the same
``const`` twice and raised "Identifier 'THEBE_JS_URL' has already been declared" in the
browser. This extension drops exact duplicate script entries from each page's context.

It also puts a "Download the student edition" link at the top of every chapter page whose
student edition (written by ``python -m tfbook_tools.build prepare-static`` into
``_static/student/``) exists.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

__all__ = ["setup"]


def _drop_duplicate_scripts(app, pagename, templatename, context, doctree) -> None:  # noqa: ARG001
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple[str, str]] = set()
    unique = []
    for script in scripts:
        attributes = getattr(script, "attributes", {}) or {}
        key = (str(getattr(script, "filename", script) or ""), str(attributes.get("body", "")))
        if key in seen:
            continue
        seen.add(key)
        unique.append(script)
    context["script_files"] = unique


_CHAPTER = re.compile(r"^book/(\d\d_[\w-]+)$")


def _student_download_link(app, pagename, templatename, context, doctree) -> None:  # noqa: ARG001
    match = _CHAPTER.match(pagename)
    if not match or "body" not in context:
        return
    name = f"{match.group(1)}.ipynb"
    for static in app.config.html_static_path:
        if (Path(app.confdir) / static / "student" / name).is_file():
            break
    else:
        return
    href = context["pathto"](f"_static/student/{name}", 1)
    link = (
        '<p class="tfbook-student-download"><a class="reference download" '
        f'href="{href}" download="{name}">Download the student edition of this chapter '
        f"({name}: exercises as stubs, no solutions)</a></p>"
    )
    context["body"] = link + context["body"]


def setup(app) -> dict[str, Any]:
    app.connect("html-page-context", _drop_duplicate_scripts, priority=900)
    app.connect("html-page-context", _student_download_link, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
