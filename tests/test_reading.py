"""The chapters read as a book: no scaffolding or process talk in the reader's way.

Four scans of every master notebook (and the book's Markdown pages):

- no stored progress bar short of 100% (a notebook opened before running, or downloaded,
  would show each training run stalled at 0%);
- no visible code cell made only of assertions (checks still run, hidden with a
  ``remove-input``/``hide-input`` tag, or next to the output they check);
- no source shown twice (``show_source(f)`` as a cell's last expression displays the code and
  then its escaped string: write ``_ = show_source(f)``);
- no words of our process in the prose ("issue", "ticket", "session") outside code.

Each scan is shown to fail on a deliberate example.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

BOOK = Path(__file__).resolve().parents[1] / "book"
NOTEBOOKS = sorted(BOOK.glob("[0-9][0-9]_*.ipynb"))
PAGES = sorted(BOOK.glob("*.md"))
HIDDEN = {"remove-input", "hide-input", "remove-cell", "hide-cell"}

_BAR = re.compile(r"(\d{1,3})%\|")
_CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)  # fenced blocks and inline code
_PROCESS_WORDS = re.compile(r"\b(issues?|tickets?|sessions?)\b", re.I)


def _texts(cell) -> list[str]:
    texts = []
    for out in cell.get("outputs", []):
        if "text" in out:
            texts.append("".join(out["text"]))
        for value in out.get("data", {}).values():
            if isinstance(value, str | list):
                texts.append("".join(value))
    return texts


def stalled_bars(nb) -> list[str]:
    """Cells storing a progress bar below 100%."""
    found = []
    for i, cell in enumerate(nb.cells):
        for text in _texts(cell):
            if any(int(p) < 100 for p in _BAR.findall(text)):
                found.append(f"cell {i}: {text.strip()[:60]!r}")
    return found


def _is_assertion(stmt: ast.stmt) -> bool:
    if isinstance(stmt, ast.Assert):
        return True
    call = stmt.value if isinstance(stmt, ast.Expr) else None
    if isinstance(call, ast.Call):
        name = ast.unparse(call.func)
        return name.rsplit(".", 1)[-1].startswith("assert")
    return False


def visible_assert_only_cells(nb) -> list[str]:
    """Visible code cells whose every statement is an assertion."""
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or HIDDEN & set(cell.metadata.get("tags", [])):
            continue
        try:
            body = ast.parse(cell.source).body
        except SyntaxError:  # IPython magics: not plain Python
            continue
        if body and all(_is_assertion(s) for s in body):
            found.append(f"cell {i}: {cell.source.strip()[:60]!r}")
    return found


def source_shown_twice(nb) -> list[str]:
    """Cells that display code (Markdown) and also return its escaped string."""
    found = []
    for i, cell in enumerate(nb.cells):
        outs = cell.get("outputs", [])
        shown = any("```" in "".join(o.get("data", {}).get("text/markdown", "")) for o in outs)
        returned = [
            "".join(o["data"].get("text/plain", ""))
            for o in outs
            if o.get("output_type") == "execute_result"
        ]
        if shown and any(t[:1] in {"'", '"'} and "\\n" in t for t in returned):
            found.append(f"cell {i}: {cell.source.strip()[:60]!r}")
    return found


def process_words(markdown: str) -> list[str]:
    """Words of our process in prose (code spans and blocks are not prose)."""
    prose = _CODE.sub(" ", markdown)
    return [m.group(0) for m in _PROCESS_WORDS.finditer(prose)]


# ------------------------------------------------------------------------------- the scans


@pytest.fixture(scope="module", params=NOTEBOOKS, ids=lambda p: p.stem)
def notebook(request):
    return nbformat.read(request.param, as_version=4)


def test_no_stored_progress_bar_is_stalled(notebook) -> None:
    assert stalled_bars(notebook) == []


def test_no_visible_cell_is_only_assertions(notebook) -> None:
    assert visible_assert_only_cells(notebook) == []


def test_no_source_is_shown_twice(notebook) -> None:
    assert source_shown_twice(notebook) == []


def test_the_prose_never_speaks_of_our_process(notebook) -> None:
    words = [
        (i, w)
        for i, cell in enumerate(notebook.cells)
        if cell.cell_type == "markdown"
        for w in process_words(cell.source)
    ]
    assert words == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_the_pages_never_speak_of_our_process(page) -> None:
    assert process_words(page.read_text(encoding="utf-8")) == []


# ---------------------------------------------------------------- each scan fails when it must


def _nb(*cells):
    return nbformat.v4.new_notebook(cells=list(cells))


def test_the_scans_catch_deliberate_examples() -> None:
    bar = nbformat.v4.new_code_cell("train()")
    bar.outputs = [nbformat.v4.new_output("stream", text="training:   0%|  | 0/200\n")]
    done = nbformat.v4.new_code_cell("train()")
    done.outputs = [nbformat.v4.new_output("stream", text="training: 100%|##| 200/200\n")]
    assert stalled_bars(_nb(bar)) and not stalled_bars(_nb(done))

    checks = nbformat.v4.new_code_cell("assert x > 0\ntorch.testing.assert_close(a, b)")
    hidden = nbformat.v4.new_code_cell("assert x > 0", metadata={"tags": ["remove-input"]})
    mixed = nbformat.v4.new_code_cell("assert x > 0\nprint(x)")
    assert visible_assert_only_cells(_nb(checks)) and not visible_assert_only_cells(
        _nb(hidden, mixed)
    )

    twice = nbformat.v4.new_code_cell("show_source(f)")
    twice.outputs = [
        nbformat.v4.new_output(
            "display_data", data={"text/markdown": "```python\ndef f(): ...\n```"}
        ),
        nbformat.v4.new_output(
            "execute_result", data={"text/plain": "'def f(): ...\\n'"}, execution_count=1
        ),
    ]
    once = nbformat.v4.new_code_cell("_ = show_source(f)")
    once.outputs = twice.outputs[:1]
    assert source_shown_twice(_nb(twice)) and not source_shown_twice(_nb(once))

    assert process_words("As the issue says, this session fixed it.") == ["issue", "session"]
    assert process_words("The log's `session` row; ```\nissues = 3\n```") == []
