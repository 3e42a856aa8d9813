"""tfbook: the library the Transformer textbook builds, one chapter at a time.

Core helpers (introduced in the preface, chapter 0):

- :func:`seed_everything` makes Python, NumPy and PyTorch deterministic.
- :func:`show_source` displays the source of a ``tfbook`` object in a notebook.
- :func:`best_time` times a function (best of several runs), for the benchmarks in the chapters.
- ``MODULE_CHAPTER`` (from :mod:`tfbook.registry`) says which chapter introduces which module.

Chapter modules (``tfbook.rnn``, ``tfbook.attention`` ...) are imported explicitly, e.g.
``from tfbook.attention import scaled_dot_product_attention``.
"""

from tfbook._core import best_time, seed_everything, show_source
from tfbook.registry import MODULE_CHAPTER, chapter_of

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "seed_everything",
    "show_source",
    "best_time",
    "MODULE_CHAPTER",
    "chapter_of",
]
