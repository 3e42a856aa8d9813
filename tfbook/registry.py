"""Which chapter introduces which ``tfbook`` module (chapter 0 is the preface / core).

A chapter's notebook may import only modules introduced in chapters <= its own, and a
module may import only modules of chapters <= its own; ``tests/test_structure.py``
enforces both.
"""

from __future__ import annotations

__all__ = ["MODULE_CHAPTER", "chapter_of"]

#: module name -> chapter that introduces it
MODULE_CHAPTER: dict[str, int] = {
    "tfbook": 0,
    "tfbook._core": 0,
    "tfbook._validate": 0,
    "tfbook.registry": 0,
    "tfbook.plotting": 0,
    "tfbook.diagrams": 0,
    "tfbook.exercises": 0,
    "tfbook.rnn": 1,
    "tfbook.tokenizers": 2,
    "tfbook.embedding": 2,
    "tfbook.positional": 3,
    "tfbook.attention": 4,
    "tfbook.feedforward": 5,
    "tfbook.norm": 5,
    "tfbook.layers": 6,
    "tfbook.model": 6,
    "tfbook._model_checks": 6,
    "tfbook.caches": 6,
    "tfbook.interop": 6,
    "tfbook.data": 7,
    "tfbook.objectives": 7,
    "tfbook.training": 7,
    "tfbook.generate": 7,
    "tfbook.corpus": 8,
    "tfbook.run": 8,
    "tfbook.numbers": 8,
    "tfbook.ablation": 8,
    "tfbook.tasks": 9,
    "tfbook.finetune": 9,
}


def chapter_of(module: str) -> int:
    """Chapter that introduces ``module`` (a dotted name inside ``tfbook``).

    Sub-modules inherit their package's chapter, except ``tfbook.exercises.chNN``,
    which belongs to chapter NN.

    Raises:
        KeyError: for a module the registry does not know.
    """
    if module.startswith("tfbook.exercises.ch"):
        suffix = module.rsplit(".", 1)[1][2:]
        if suffix.isdigit():
            return int(suffix)
    if module.startswith("tfbook.exercises."):
        return 0
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        name = ".".join(parts[:n])
        if name in MODULE_CHAPTER:
            return MODULE_CHAPTER[name]
    raise KeyError(f"module {module!r} is not in tfbook.registry.MODULE_CHAPTER")
