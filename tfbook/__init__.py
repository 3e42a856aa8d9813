"""tfbook: the library the Transformer textbook builds, one chapter at a time.

Core helpers (introduced in the preface, chapter 0):

- :func:`seed_everything` makes Python, NumPy and PyTorch deterministic.
- :func:`show_source` displays the source of a ``tfbook`` object in a notebook.
- ``MODULE_CHAPTER`` (from :mod:`tfbook.registry`) says which chapter introduces which module.

Chapter modules (``tfbook.rnn``, ``tfbook.attention`` ...) are imported explicitly, e.g.
``from tfbook.attention import scaled_dot_product_attention``.
"""

from tfbook._core import seed_everything, show_source
from tfbook.registry import MODULE_CHAPTER, chapter_of

__version__ = "0.1.0"

__all__ = ["__version__", "seed_everything", "show_source", "MODULE_CHAPTER", "chapter_of"]
