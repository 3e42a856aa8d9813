"""Shared fixtures: paths of the repository and its master notebooks."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
MASTERS = sorted(BOOK.glob("[0-9][0-9]_*.ipynb"))


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


# Under pytest-xdist (`make unit` runs two workers), a module-scoped fixture runs once in every
# worker that runs one of its tests. These modules build something expensive once per module
# (a sandboxed grading batch, a student edition per notebook, a trained tokenizer), so their
# tests are kept together on one worker: `--dist loadgroup` honours these groups.
_ONE_WORKER_PER_MODULE = {
    "test_grading",
    "test_grading_corpus",
    "test_hostile",
    "test_run",
    "test_structure",
    "test_tokenizers",
}


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if getattr(item, "module", None) is None:  # a docstring example (--doctest-modules)
            continue
        module = item.module.__name__.rpartition(".")[2]
        if module in _ONE_WORKER_PER_MODULE:
            item.add_marker(pytest.mark.xdist_group(module))
        elif module == "test_student":  # one group per notebook: its edition is built once
            callspec = getattr(item, "callspec", None)
            master = callspec.params.get("editions") if callspec is not None else None
            name = master.stem if master is not None else "other"
            item.add_marker(pytest.mark.xdist_group(f"test_student-{name}"))
