"""A small Sphinx extension for the book's HTML build (chapter 0).

sphinx-thebe 0.3.1 registers its inline configuration script (``const THEBE_JS_URL = ...``)
once per read phase; Jupyter Book 1 triggers that twice, so every page declared the same
``const`` twice and raised "Identifier 'THEBE_JS_URL' has already been declared" in the
browser. This extension drops exact duplicate script entries from each page's context.
"""

from __future__ import annotations

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


def setup(app) -> dict[str, Any]:
    app.connect("html-page-context", _drop_duplicate_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
