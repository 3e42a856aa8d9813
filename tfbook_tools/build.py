"""Build helpers behind the Makefile (chapter 0): ``python -m tfbook_tools.build COMMAND``.

Commands:

- ``prepare-static``: copy the MathJax shipped by the pinned ``jupyter-server-mathjax``
  package into ``_build/_static_extra/mathjax`` so the HTML book typesets formulas offline
  (when the package is missing, a tiny loader that falls back to the CDN is written instead).
  It also copies the NanumGothic font shipped by the pinned ``koreanize-matplotlib`` package
  and writes ``tfbook.css``, which uses it for Hangul only (``unicode-range``), so Korean
  text renders on machines without a Korean system font, and writes the student edition
  of every chapter into ``_build/_static_extra/student/`` for the download links.
- ``strict-config``: print ``_config.yml`` with notebook execution switched off, for the
  strict (``-W``) build that reuses the nbval-verified stored outputs.
- ``sync-hints NOTEBOOK...``: write above each exercise's solution cell a one-line pointer
  to ``ex.qN.hint()``, which reveals the hints (kept in ``tfbook.exercises.chNN``) one at a
  time.
- ``execute NOTEBOOK...``: re-execute master notebooks in place with nbclient (no widget
  state: the HTML book shows static figures instead; no timing metadata), so stored
  outputs are refreshed deterministically.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
from pathlib import Path

from tfbook_tools import repo_root

__all__ = ["prepare_static", "strict_config", "execute_notebooks", "main"]

ROOT = repo_root()
STATIC_EXTRA = ROOT / "_build" / "_static_extra"
MATHJAX_CDN = "https://cdn.jsdelivr.net/npm/mathjax@2.7.9/MathJax.js"

# The parts of MathJax 2 the book uses: TeX input, SVG output (needs no web fonts), the
# combined configuration file and the extensions it loads.
_MATHJAX_PARTS = [
    "MathJax.js",
    "LICENSE",
    "config",
    "extensions",
    "jax/input/TeX",
    "jax/output/SVG",
    "jax/output/HTML-CSS",
    "jax/element",
    "localization/en",
    "fonts/HTML-CSS/STIX-Web",
]


def _mathjax_source() -> Path | None:
    spec = importlib.util.find_spec("jupyter_server_mathjax")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        static = Path(location) / "static"
        if (static / "MathJax.js").is_file():
            return static
    return None


def prepare_static(dest: Path = STATIC_EXTRA) -> Path:
    """Put a MathJax 2 copy (or a CDN fallback loader) under ``dest/mathjax``; return it."""
    target = dest / "mathjax"
    source = _mathjax_source()
    stamp = target / ".source"
    if source is not None and stamp.is_file() and stamp.read_text() == str(source):
        return target
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    if source is None:
        (target / "MathJax.js").write_text(
            "// Local MathJax missing (pip install -r requirements.txt): load it from the CDN.\n"
            "(function(){var s=document.createElement('script');"
            f"s.src='{MATHJAX_CDN}?config=TeX-AMS-MML_HTMLorMML-full';"
            "document.head.appendChild(s);})();\n"
        )
        print(f"warning: jupyter-server-mathjax not installed; {target} falls back to the CDN")
        return target
    for part in _MATHJAX_PARTS:
        src = source / part
        if src.is_dir():
            shutil.copytree(src, target / part)
        elif src.is_file():
            (target / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target / part)
    stamp.write_text(str(source))
    return target


_HANGUL_RANGES = "U+1100-11FF, U+3130-318F, U+A960-A97F, U+AC00-D7AF, U+D7B0-D7FF"

_CSS = """/* Written by `python -m tfbook_tools.build prepare-static`; do not edit. */
/* Hangul from a bundled font, used only for Hangul code points. */
@font-face {{
  font-family: "TfbookHangul";
  src: url("fonts/hangul.woff") format("woff");
  font-weight: normal;
  unicode-range: {ranges};
}}
@font-face {{
  font-family: "TfbookHangul";
  src: url("fonts/hangul-bold.woff") format("woff");
  font-weight: bold;
  unicode-range: {ranges};
}}
:root {{
  --pst-font-family-base: "TfbookHangul", var(--pst-font-family-base-system);
  --pst-font-family-heading: "TfbookHangul", var(--pst-font-family-base-system);
  --pst-font-family-monospace: var(--pst-font-family-monospace-system), "TfbookHangul";
}}
/* Figures keep their white background in the dark theme, so their text stays legible. */
html[data-theme="dark"] .cell_output img {{
  background-color: #ffffff;
  border-radius: 4px;
}}
"""


def _hangul_webfont(src: Path, dest: Path) -> None:
    """Subset ``src`` to Hangul as a WOFF file (fontTools, a matplotlib dependency).

    Subsetting also drops the font's VTT source tables (``TSI*``), which Chromium's font
    sanitizer rejects: the raw NanumGothic.ttf fails to load as a web font.
    """
    import logging

    from fontTools import subset

    logging.getLogger("fontTools").setLevel(logging.ERROR)
    options = subset.Options()
    options.flavor = "woff"
    options.hinting = False
    options.notdef_outline = True
    options.name_IDs = ["*"]
    font = subset.load_font(str(src), options)
    subsetter = subset.Subsetter(options)
    codepoints: list[int] = []
    for part in _HANGUL_RANGES.split(","):
        lo, hi = part.strip().removeprefix("U+").split("-")
        codepoints += range(int(lo, 16), int(hi, 16) + 1)
    subsetter.populate(unicodes=codepoints)
    subsetter.subset(font)
    subset.save_font(font, str(dest), options)


def prepare_fonts(dest: Path = STATIC_EXTRA) -> Path:
    """Write a Hangul web font and ``tfbook.css`` into ``dest``; return the CSS path."""
    from tfbook.plotting import hangul_font_path

    fonts = dest / "fonts"
    fonts.mkdir(parents=True, exist_ok=True)
    regular = hangul_font_path()
    if regular is not None:
        bold = regular.parent / "NanumGothicBold.ttf"
        pairs = [
            (regular, fonts / "hangul.woff"),
            (bold if bold.is_file() else regular, fonts / "hangul-bold.woff"),
        ]
        for src, out in pairs:
            if not out.is_file():
                _hangul_webfont(src, out)
    css = dest / "tfbook.css"
    css.write_text(_CSS.format(ranges=_HANGUL_RANGES), encoding="utf-8")
    return css


def prepare_student_editions(dest: Path = STATIC_EXTRA) -> Path:
    """Write the student edition of every chapter into ``dest/student`` (linked from each page)."""
    from tfbook_tools.student import write_student_editions

    masters = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
    out = dest / "student"
    write_student_editions(masters, out, force=True)
    return out


def strict_config(config: Path = ROOT / "_config.yml") -> str:
    """``_config.yml`` with execution off (stored outputs are used as they are)."""
    import yaml

    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    data.setdefault("execute", {})["execute_notebooks"] = "off"
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


def execute_notebooks(paths: list[Path], timeout: int = 300) -> None:
    """Re-execute each notebook in place (its own folder as working directory)."""
    import nbformat
    from nbclient import NotebookClient

    for path in paths:
        nb = nbformat.read(path, as_version=4)
        client = NotebookClient(
            nb,
            timeout=timeout,
            kernel_name="python3",
            resources={"metadata": {"path": str(path.parent)}},
            record_timing=False,
            # True only to avoid an nbclient KeyError when an Output widget (interact) prints;
            # the state is dropped below: the HTML book shows static figures instead.
            store_widget_state=True,
        )
        client.execute()
        nb.metadata.pop("widgets", None)
        for cell in nb.cells:
            cell.get("metadata", {}).pop("execution", None)
        nbformat.write(nb, path)
        print(f"executed {path}")


def hints_markdown(question) -> str:
    """The line shown above an exercise's solution cell: where its hints are. The hints
    themselves are never printed in the notebook or the book, so each is one deliberate call
    of ``hint()`` away, not one click away from all of them."""
    qn = question.qid.split(".")[1]
    return (
        f"Stuck? Each call of `ex.{qn}.hint()` reveals one more hint; "
        f"`ex.{qn}.solution()` shows a solution."
    )


def sync_hints(paths: list[Path]) -> list[Path]:
    """Insert or refresh the hints pointer before each exercise's solution cell (the hints
    stay in the exercise module, one source of truth). Returns the notebooks that changed."""
    import nbformat

    from tfbook.exercises import load
    from tfbook_tools.student import chapter_of_notebook, check_cells

    changed = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        chapter = chapter_of_notebook(nb)
        if chapter is None:
            continue
        exercises = load(chapter)
        before = nbformat.writes(nb)
        for qid, _ in sorted(check_cells(nb).items(), key=lambda kv: kv[1][0]):
            check_index = check_cells(nb)[qid][0]
            solution = max(
                i
                for i in range(check_index)
                if nb.cells[i].cell_type == "code" and "# BEGIN SOLUTION" in nb.cells[i].source
            )
            text = hints_markdown(exercises[qid])
            previous = nb.cells[solution - 1]
            if previous.metadata.get("tfbook") == {"question": qid, "role": "hints"}:
                previous.source = text
            else:
                cell = nbformat.v4.new_markdown_cell(text)
                cell.metadata["tfbook"] = {"question": qid, "role": "hints"}
                nb.cells.insert(solution, cell)
        if nbformat.writes(nb) != before:
            nbformat.write(nb, path)
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tfbook_tools.build")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("prepare-static")
    sub.add_parser("strict-config")
    ex = sub.add_parser("execute")
    ex.add_argument("notebooks", nargs="+", type=Path)
    ex.add_argument("--timeout", type=int, default=300)
    hs = sub.add_parser("sync-hints")
    hs.add_argument("notebooks", nargs="+", type=Path)
    br = sub.add_parser("browser-test")
    br.add_argument("html_dir", type=Path)
    br.add_argument("--workers", type=int, default=2, help="browsers checking pages at once")
    br.add_argument(
        "--screenshots", choices=("full", "top"), default="full",
        help="screenshot the whole page or only its first screen",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.command == "prepare-static":
        print(f"static files in {prepare_static()} and {prepare_fonts()}")
        print(f"student editions in {prepare_student_editions()}")
    elif args.command == "strict-config":
        sys.stdout.write(strict_config())
    elif args.command == "execute":
        execute_notebooks(args.notebooks, args.timeout)
    elif args.command == "sync-hints":
        for path in sync_hints(args.notebooks):
            print(f"hints updated in {path}")
    elif args.command == "browser-test":
        from tfbook_tools.browser_check import run

        return run(args.html_dir, workers=args.workers, full_page=args.screenshots == "full")
    return 0


if __name__ == "__main__":
    sys.exit(main())
