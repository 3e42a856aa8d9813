"""Structure of the book: notebooks executed and clean, imports in chapter order, the table of
contents, exercises wired to check cells, and the README's commands present in the Makefile."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest
import yaml

from tfbook.exercises import chapters, load
from tfbook.registry import chapter_of
from tfbook_tools.student import check_cells

ROOT = Path(__file__).resolve().parents[1]
MASTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
CHAPTERS = [p for p in MASTERS if int(p.name[:2]) >= 1]


def _chapter(path: Path) -> int:
    return int(path.name[:2])


def _code(nb) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if c.cell_type == "code"]


def _tfbook_imports(source: str) -> set[str]:
    lines = [ln for ln in source.splitlines() if not ln.lstrip().startswith(("%", "!"))]
    tree = ast.parse("\n".join(lines))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "tfbook"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "tfbook":
                found.add(node.module)
                for alias in node.names:  # `from tfbook.exercises import ch04`
                    candidate = f"{node.module}.{alias.name}"
                    if re.fullmatch(r"tfbook\.exercises\.ch\d\d", candidate):
                        found.add(candidate)
    return found


@pytest.fixture(scope="module", params=MASTERS, ids=lambda p: p.stem)
def notebook(request):
    return request.param, nbformat.read(request.param, as_version=4)


def test_there_are_chapters():
    assert len(CHAPTERS) >= 5


def test_every_code_cell_executed(notebook):
    path, nb = notebook
    unrun = [
        i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.execution_count is None
    ]
    assert not unrun, f"{path.name}: cells {unrun} never executed (run `make execute`)"


def test_no_error_or_stderr_outputs(notebook):
    path, nb = notebook
    for i, cell in enumerate(_code(nb)):
        for out in cell.outputs:
            assert out.output_type != "error", f"{path.name}: code cell {i} stored an error"
            assert not (out.output_type == "stream" and out.name == "stderr"), (
                f"{path.name}: code cell {i} wrote to stderr: {out.text[:200]!r}"
            )


def test_kernelspec_is_python3(notebook):
    _, nb = notebook
    assert nb.metadata["kernelspec"]["name"] == "python3"


def test_first_code_cell_seeds_everything(notebook):
    path, nb = notebook
    first = _code(nb)[0].source
    assert "seed_everything(" in first and "setup()" in first, f"{path.name}: {first!r}"


def test_imports_only_modules_of_earlier_chapters(notebook):
    path, nb = notebook
    n = _chapter(path)
    for cell in _code(nb):
        for module in _tfbook_imports(cell.source):
            assert chapter_of(module) <= n, (
                f"{path.name} (chapter {n}) imports {module} from chapter {chapter_of(module)}"
            )


def test_modules_import_only_earlier_chapters():
    for path in sorted((ROOT / "tfbook").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        n = chapter_of(module)
        if module in ("tfbook", "tfbook.exercises"):
            continue  # the package roots re-export the core only (checked by their imports)
        for imported in _tfbook_imports(path.read_text(encoding="utf-8")):
            assert chapter_of(imported) <= n, f"{module} (ch {n}) imports {imported}"


def test_the_model_file_never_imports_the_conversions():
    """tfbook.model is the architecture only: tfbook.interop imports it, never the reverse."""
    tree = ast.parse((ROOT / "tfbook" / "model.py").read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):  # lazy imports inside functions count too
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names |= {node.module or ""} | {f"{node.module}.{a.name}" for a in node.names}
    assert not [name for name in names if "interop" in name]


def _top_level_imports(source: str) -> set[str]:
    lines = [ln for ln in source.splitlines() if not ln.lstrip().startswith(("%", "!"))]
    found = set()
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


#: What belongs to the instructor/build tooling and must never reach a student's kernel.
TOOLING = {"tfbook_tools", "nbformat", "nbclient", "playwright", "sphinx", "nbval"}


def test_no_notebook_imports_the_tooling(notebook):
    path, nb = notebook
    for i, cell in enumerate(_code(nb)):
        bad = _top_level_imports(cell.source) & TOOLING
        assert not bad, f"{path.name} code cell {i} imports tooling: {sorted(bad)}"


def test_library_imports_no_tooling():
    for path in sorted((ROOT / "tfbook").rglob("*.py")):
        bad = _top_level_imports(path.read_text(encoding="utf-8")) & TOOLING
        assert not bad, f"{path.relative_to(ROOT)} imports tooling: {sorted(bad)}"


def test_library_makes_no_repository_assumptions():
    for path in sorted((ROOT / "tfbook").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for needle in ("parents[", "TFBOOK_REPO_ROOT", '"book"', "'book'"):
            assert needle not in text, f"{path.relative_to(ROOT)} contains {needle!r}"


def test_library_runtime_dependencies_are_torch_numpy_matplotlib():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = {re.split(r"[<>=!~ \[]", d)[0] for d in project["dependencies"]}
    assert names == {"torch", "numpy", "matplotlib"}


def _readme_tree() -> dict[str, set[str]]:
    """Package -> entries listed under it in the README's tree block."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("## The tree", 1)[1].split("```text", 1)[1].split("```", 1)[0]
    tree: dict[str, set[str]] = {}
    package = None
    for line in block.splitlines():
        name = line.split()[0] if line.strip() else ""
        if line.startswith(("tfbook/", "tfbook_tools/")):
            package = name.rstrip("/")
            tree[package] = set()
        elif line.startswith("  ") and not line.startswith("    ") and package:
            tree[package].add(name.rstrip("/"))
        elif not line.startswith(" "):
            package = None
    return tree


@pytest.mark.parametrize("package", ["tfbook", "tfbook_tools"])
def test_readme_tree_matches_the_files(package):
    listed = _readme_tree()[package]
    on_disk = {
        p.name for p in (ROOT / package).iterdir() if p.name != "__pycache__" and p.suffix != ".pyc"
    }
    assert listed == on_disk, (
        f"README tree of {package}/ is out of date: missing {sorted(on_disk - listed)}, "
        f"gone {sorted(listed - on_disk)}"
    )


def test_toc_lists_every_master_and_only_existing_files():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    files = [toc["root"]] + [c["file"] for part in toc["parts"] for c in part["chapters"]]
    for f in files:
        assert any((ROOT / f"{f}{ext}").is_file() for ext in (".md", ".ipynb")), f
    for path in MASTERS:
        assert f"book/{path.stem}" in files, f"{path.name} missing from _toc.yml"


def test_check_cells_match_the_exercise_modules(notebook):
    path, nb = notebook
    chapter = f"ch{_chapter(path):02d}"
    assert chapter in chapters(), f"{path.name} has no tfbook/exercises/{chapter}.py"
    in_notebook = sorted(check_cells(nb))
    in_module = sorted(q.qid for q in load(chapter))
    assert in_notebook == in_module
    minimum = 5 if _chapter(path) >= 4 else 4
    assert len(in_module) >= minimum


def test_check_cells_passed_in_the_stored_outputs(notebook):
    path, nb = notebook
    for qid, (index, _, _) in check_cells(nb).items():
        text = "".join(
            o.get("text", "") or o.get("data", {}).get("text/plain", "")
            for o in nb.cells[index].outputs
        )
        assert f"[{qid}]" in text and ": passed (" in text, f"{path.name} {qid}: {text!r}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_has_the_standard_parts(path):
    nb = nbformat.read(path, as_version=4)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for needle in ("Common confusions", "## Summary", "## Exercises", "{bibliography}", "{cite}"):
        assert needle in text, f"{path.name} lacks {needle!r}"
    assert any("ipywidgets" in c.source or "interact" in c.source for c in _code(nb)), path.name
    assert "show_source(" in "\n".join(c.source for c in _code(nb)), path.name


def test_readme_commands_are_makefile_targets():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-zA-Z][\w-]*):", makefile, re.M))
    used = set(re.findall(r"`make ([a-z][\w-]*)`", readme))
    assert {"book", "test", "lab", "execute", "student", "clean"} <= used
    assert used <= targets, f"README mentions missing targets: {sorted(used - targets)}"


def test_ci_runs_make_test():
    assert "make test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_hint_blocks_match_the_exercise_modules(notebook):
    from tfbook_tools.build import hints_markdown

    path, nb = notebook
    chapter = f"ch{_chapter(path):02d}"
    blocks = {
        c.metadata["tfbook"]["question"]: c.source
        for c in nb.cells
        if c.metadata.get("tfbook", {}).get("role") == "hints"
    }
    for q in load(chapter):
        assert blocks.get(q.qid) == hints_markdown(q), (
            f"{path.name} {q.qid}: hints block missing or stale "
            "(run `python -m tfbook_tools.build sync-hints book/*.ipynb`)"
        )
