"""Token embeddings (chapter 2: Tokens and embeddings).

An embedding layer turns token ids into vectors: row ``i`` of a learnable matrix
``W`` of shape ``(vocab_size, d_model)`` is the vector of token ``i``. Multiplying a
one-hot row by ``W`` selects that row, so the layer is a look-up, not a product.

Public API:

- :class:`TokenEmbedding`: ``(B, T)`` integer ids to ``(B, T, d_model)`` vectors,
  multiplied by ``sqrt(d_model)`` as in the Transformer paper (switchable).
- :func:`one_hot_embed`: the same look-up written as ``one_hot(ids) @ W`` (for teaching).
- :func:`cosine_similarity_matrix`: pairwise cosine similarities of a set of vectors.
- :func:`pca_2d`: a two-dimensional projection of vectors (principal components by SVD).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tfbook import _validate as check

__all__ = ["TokenEmbedding", "one_hot_embed", "cosine_similarity_matrix", "pca_2d"]


class TokenEmbedding(nn.Module):
    """Look up one learnable vector per token id, scaled by ``sqrt(d_model)``.

    The Transformer multiplies its embedding weights by ``sqrt(d_model)``
    (Vaswani et al. 2017, section 3.4), where the same matrix is shared with the
    pre-softmax output layer. The weights are therefore initialised small, with
    standard deviation ``d_model ** -0.5`` (the order of magnitude of an output
    layer's weights); after the multiplication each component of a token vector has
    unit variance, the same order as the sinusoidal positional encoding added next.

    Args:
        vocab_size: number of tokens ``V`` (rows of the weight matrix), at least 1.
        d_model: width of each token vector, at least 1.
        scale: multiply the looked-up rows by ``sqrt(d_model)`` (default ``True``);
            ``False`` returns the raw rows.
        padding_idx: optional id whose vector is all zeros and receives no gradient
            (as in ``torch.nn.Embedding``).
        init_std: standard deviation of the normal initialisation; defaults to
            ``d_model ** -0.5``.

    Attributes:
        check_inputs: check the ids on every call (a model that checked its own inputs
            switches it off).

    Shape:
        - Input: ``(B, T)`` integer ids (any shape of integers works: ``(*)``).
        - Output: ``(B, T, d_model)`` (in general ``(*, d_model)``), float32.

    Example:
        >>> emb = TokenEmbedding(vocab_size=10, d_model=16)
        >>> emb(torch.tensor([[1, 2, 3]])).shape
        torch.Size([1, 3, 16])
    """

    check_inputs = True

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        *,
        scale: bool = True,
        padding_idx: int | None = None,
        init_std: float | None = None,
    ) -> None:
        super().__init__()
        check.positive_int("vocab_size", vocab_size)
        check.positive_int("d_model", d_model)
        if padding_idx is not None and not 0 <= padding_idx < vocab_size:
            raise ValueError(
                f"padding_idx must lie in [0, {vocab_size - 1}] or be None, got {padding_idx}"
            )
        if init_std is not None:
            check.positive_float("init_std", init_std)
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.scale = bool(scale)
        self.padding_idx = padding_idx
        self.init_std = float(init_std) if init_std is not None else d_model**-0.5
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=padding_idx)
        self.reset_parameters()

    @property
    def weight(self) -> nn.Parameter:
        """The ``(vocab_size, d_model)`` weight matrix (shareable with an output layer)."""
        return self.embedding.weight

    @property
    def scale_factor(self) -> float:
        """``sqrt(d_model)`` when ``scale`` is on, else ``1.0``."""
        return math.sqrt(self.d_model) if self.scale else 1.0

    def reset_parameters(self) -> None:
        """Draw the weights from ``N(0, init_std**2)``; zero the padding row if any."""
        with torch.no_grad():
            nn.init.normal_(self.embedding.weight, mean=0.0, std=self.init_std)
            if self.padding_idx is not None:
                self.embedding.weight[self.padding_idx].zero_()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Return the (scaled) vectors of ``ids``.

        Args:
            ids: integer token ids in ``[0, vocab_size)``.

        Returns:
            The token vectors, ``weight[ids] * sqrt(d_model)`` (or unscaled).

        Shape:
            ``(B, T)`` to ``(B, T, d_model)``.
        """
        if self.check_inputs:
            check.token_ids("ids", ids, self.vocab_size)
        x = self.embedding(ids)  # (B, T, d_model): one row of the matrix per id
        if self.scale:
            x = x * math.sqrt(self.d_model)
        return x

    def extra_repr(self) -> str:
        return (
            f"vocab_size={self.vocab_size}, d_model={self.d_model}, scale={self.scale}, "
            f"padding_idx={self.padding_idx}"
        )


def one_hot_embed(ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Embed ids the slow way: one-hot rows times the weight matrix.

    ``one_hot(ids) @ weight`` equals ``weight[ids]`` exactly (each one-hot row has a
    single 1, so the product copies one row); this function exists to show it.

    Args:
        ids: integer token ids in ``[0, V)``.
        weight: the ``(V, d_model)`` embedding matrix.

    Returns:
        The token vectors.

    Shape:
        ``ids (B, T)``, ``weight (V, d_model)`` to ``(B, T, d_model)``.
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"weight must be a 2-D tensor (V, d_model), got {shape}")
    check.token_ids("ids", ids, weight.shape[0])
    one_hot = F.one_hot(ids.long(), num_classes=weight.shape[0]).to(weight.dtype)  # (B, T, V)
    return one_hot @ weight  # (B, T, V) @ (V, d_model) -> (B, T, d_model)


def cosine_similarity_matrix(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine similarity of every pair of rows of ``x``.

    ``cos(a, b) = a . b / (|a| |b|)``: 1 for vectors pointing the same way, 0 for
    orthogonal ones, -1 for opposite ones. Rows shorter than ``eps`` count as length ``eps``.

    Args:
        x: ``N`` vectors, one per row.
        eps: lower bound on the norms (avoids dividing by zero).

    Returns:
        The symmetric ``(N, N)`` matrix ``S`` with ``S[i, j] = cos(x[i], x[j])``.

    Shape:
        ``(N, d)`` to ``(N, N)``.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a 2-D tensor (N, d), got {shape}")
    unit = x / x.norm(dim=1, keepdim=True).clamp_min(eps)  # (N, d), each row of length 1
    return unit @ unit.T  # (N, N)


def pca_2d(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Project vectors onto their first two principal components (via SVD).

    The rows are centred, then ``X = U S Vt`` and the projection is ``X @ Vt[:2].T``.
    The sign of each component is fixed so that its largest-magnitude loading is
    positive, which makes the picture reproducible across runs and libraries.

    Args:
        x: ``N`` vectors of width ``d >= 2``, one per row (tensor or array).

    Returns:
        A float64 array of 2-D coordinates.

    Shape:
        ``(N, d)`` to ``(N, 2)``.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2:
        raise ValueError(f"x must have shape (N, d) with N >= 2 and d >= 2, got {x.shape}")
    centred = x - x.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    components = vt[:2]  # (2, d)
    signs = np.sign(components[np.arange(2), np.abs(components).argmax(axis=1)])
    components = components * signs[:, None]
    return centred @ components.T  # (N, 2)
