"""Positional encodings: telling a Transformer where each token sits (chapter 3).

Attention and sums over tokens are blind to order, so the Transformer adds a vector that
depends on the position of each token to its embedding. Chapter 3 builds both classic
choices and, as a look ahead, rotary position embeddings (RoPE), which act inside attention.

Public API:

- :func:`sinusoidal_encoding`: the fixed sine/cosine table of Vaswani et al. (2017),
  ``(T, d_model)``, computed in float64 and returned in the requested dtype.
- :class:`SinusoidalPositionalEncoding`: adds that table to a ``(B, T, d_model)`` input;
  works for any sequence length (the formula has no last row).
- :class:`LearnedPositionalEmbedding`: a trained table of ``max_len`` position vectors
  (BERT, GPT-2); a clear ``ValueError`` past ``max_len``.
- :func:`apply_rotary`: rotary position embedding (RoPE, Su et al. 2021) applied to queries
  or keys of shape ``(..., T, d)``; the rotated dot product depends only on the distance.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tfbook import _validate as check

__all__ = [
    "sinusoidal_encoding",
    "SinusoidalPositionalEncoding",
    "LearnedPositionalEmbedding",
    "apply_rotary",
]


def _check_even_d(name: str, value: object) -> int:
    value = check.positive_int(name, value)
    if value % 2:
        raise ValueError(f"{name} must be even (dimensions come in sine/cosine pairs), got {value}")
    return value


def _check_base(base: object) -> float:
    if isinstance(base, bool) or not isinstance(base, (int, float)):
        raise TypeError(f"base must be a number, got {type(base).__name__}")
    if not base > 1.0:
        raise ValueError(f"base must be > 1, got {base}")
    return float(base)


def _inverse_frequencies(d_model: int, base: float) -> Tensor:
    """Pair frequencies omega_i = base ** (-2i / d_model), float64, shape ``(d_model // 2,)``."""
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # 0, 2, 4, ..., d_model - 2
    return base ** (-two_i / d_model)


def _check_sequence_input(x: object, d_model: int, start: object = 0) -> None:
    ok = isinstance(x, Tensor) and x.dim() == 3 and x.shape[-1] == d_model
    check.shape("x", x, f"(B, T, d_model={d_model})", ok)
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    check.nonneg_int("start", start)


def _check_rows_exist(max_len: int, start: int, seq_len: int) -> None:
    if start + seq_len > max_len:
        where = f"sequence length {seq_len}" if start == 0 else f"start + T = {start + seq_len}"
        raise ValueError(
            f"LearnedPositionalEmbedding: {where} exceeds max_len={max_len}; the table has "
            f"rows for positions 0..{max_len - 1} only (no row for position {max_len}). "
            "Truncate the input or use an encoding defined for every position (sinusoidal, "
            "rotary)."
        )


def sinusoidal_encoding(
    seq_len: int, d_model: int, base: float = 10000.0, *, dtype: torch.dtype = torch.float32
) -> Tensor:
    """The sinusoidal positional encoding table of the original Transformer.

    Row ``k`` encodes position ``k`` (counting from 0). Dimensions come in pairs
    ``(2i, 2i + 1)`` that share one frequency ``omega_i = base ** (-2i / d_model)``::

        PE[k, 2i]     = sin(k * omega_i)
        PE[k, 2i + 1] = cos(k * omega_i)

    The table is computed in float64 and then cast to ``dtype``.

    Args:
        seq_len: number of positions (rows), at least 1.
        d_model: width of each encoding; must be even.
        base: the constant inside the formula (10000 in the paper); must be > 1.
        dtype: floating-point dtype of the result.

    Returns:
        A tensor of shape ``(T, d_model)``.

    Raises:
        TypeError: ``seq_len`` or ``d_model`` is not an int, ``base`` not a number.
        ValueError: ``seq_len < 1``, ``d_model`` odd or < 2, ``base <= 1``.

    Example:
        >>> pe = sinusoidal_encoding(50, 16)
        >>> tuple(pe.shape)
        (50, 16)
        >>> float(pe[0, 1])  # cos(0) = 1
        1.0
    """
    seq_len = check.positive_int("seq_len", seq_len)
    d_model = _check_even_d("d_model", d_model)
    base = _check_base(base)
    k = torch.arange(seq_len, dtype=torch.float64)[:, None]  # (T, 1)
    angles = k * _inverse_frequencies(d_model, base)[None, :]  # (T, d_model / 2)
    pe = torch.empty(seq_len, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles)
    return pe.to(dtype)


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the fixed sinusoidal encoding to a batch of token vectors.

    Nothing is learned. A table of ``cache_len`` rows is kept as a (non-saved) buffer; longer
    inputs get a freshly computed table, so any sequence length works. ``start`` shifts the
    positions: a decoder that has already read ``start`` tokens (chapter 7) adds the rows
    ``start .. start + T - 1``.

    Args:
        d_model: width of the token vectors; must be even.
        base: the constant of the formula (10000 in the paper).
        dropout: dropout probability applied after the addition (0.1 in the paper).
        cache_len: number of positions precomputed at construction.

    Attributes:
        check_inputs: check ``x`` and ``start`` on every call (a model that checked its own
            inputs switches it off, see ``tfbook._validate.skip_inner_checks``).

    Shape:
        - Input: ``(B, T, d_model)``, floating point; ``start``: an int >= 0 (default 0).
        - Output: ``(B, T, d_model)``, same dtype: ``x + PE[start : start + T]``.

    Example:
        >>> pe = SinusoidalPositionalEncoding(d_model=8)
        >>> tuple(pe(torch.zeros(2, 5, 8)).shape)
        (2, 5, 8)
    """

    check_inputs = True

    def __init__(
        self, d_model: int, base: float = 10000.0, dropout: float = 0.0, cache_len: int = 512
    ) -> None:
        super().__init__()
        self.d_model = _check_even_d("d_model", d_model)
        self.base = _check_base(base)
        cache_len = check.positive_int("cache_len", cache_len)
        self.dropout = nn.Dropout(check.probability("dropout", dropout))
        self.register_buffer(
            "pe", sinusoidal_encoding(cache_len, d_model, self.base), persistent=False
        )

    def encoding(self, seq_len: int, dtype: torch.dtype = torch.float32) -> Tensor:
        """The first ``seq_len`` rows of the table, shape ``(T, d_model)``, in ``dtype``.

        float64 rows are computed afresh at full precision (the cached table is float32).
        """
        if dtype == torch.float64:
            pe = sinusoidal_encoding(seq_len, self.d_model, self.base, dtype=torch.float64)
            return pe.to(self.pe.device)
        if seq_len <= self.pe.shape[0]:
            return self.pe[:seq_len].to(dtype)
        return sinusoidal_encoding(seq_len, self.d_model, self.base).to(self.pe.device, dtype)

    def forward(self, x: Tensor, start: int = 0) -> Tensor:
        """Return ``dropout(x + PE[start : start + T])``; see the class docstring for shapes."""
        if self.check_inputs:
            _check_sequence_input(x, self.d_model, start)
        pe = self.encoding(start + x.shape[1], x.dtype)[start:]  # (T, d_model): rows start, ...
        return self.dropout(x + pe.to(x.device)[None, :, :])  # (B, T, d_model)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, base={self.base:g}"


class LearnedPositionalEmbedding(nn.Module):
    """A trained vector per position, added to the token vectors (BERT, GPT-2 style).

    The table has exactly ``max_len`` rows, one per position ``0 .. max_len - 1``; a
    longer input has positions without a row, which is an error, not a silent wrap-around.

    Args:
        max_len: number of positions the table covers (the longest sequence it accepts).
        d_model: width of the token vectors.

    Shape:
        - Input: ``(B, T, d_model)``, floating point; ``start``: the first position (default
          0), with ``start + T <= max_len``.
        - Output: ``(B, T, d_model)``: ``x + table[start : start + T]``.

    Attributes:
        table: the ``nn.Embedding(max_len, d_model)`` holding the position vectors
            (initialised like ``nn.Embedding``, from a standard normal).
        check_inputs: check ``x`` and ``start`` on every call (a model that checked its own
            inputs switches it off).

    Example:
        >>> pos = LearnedPositionalEmbedding(max_len=12, d_model=16)
        >>> tuple(pos(torch.zeros(1, 5, 16)).shape)
        (1, 5, 16)
    """

    check_inputs = True

    def __init__(self, max_len: int, d_model: int) -> None:
        super().__init__()
        self.max_len = check.positive_int("max_len", max_len)
        self.d_model = check.positive_int("d_model", d_model)
        self.table = nn.Embedding(max_len, d_model)

    def forward(self, x: Tensor, start: int = 0) -> Tensor:
        """Return ``x + table[start : start + T]``; see the class docstring for shapes."""
        if self.check_inputs:
            _check_sequence_input(x, self.d_model, start)
            _check_rows_exist(self.max_len, start, x.shape[1])
        positions = torch.arange(start, start + x.shape[1], device=x.device)  # (T,)
        return x + self.table(positions).to(x.dtype)[None, :, :]  # (B, T, d_model)

    def extra_repr(self) -> str:
        return f"max_len={self.max_len}, d_model={self.d_model}"


def apply_rotary(x: Tensor, positions: Tensor | None = None, base: float = 10000.0) -> Tensor:
    """Rotary position embedding (RoPE): rotate each pair of dimensions by a position angle.

    Dimensions are paired as ``(2i, 2i + 1)`` (the RoFormer layout). The pair of the token at
    position ``m`` is rotated by the angle ``m * theta_i`` with
    ``theta_i = base ** (-2i / d)``::

        y[..., 2i]     = x[..., 2i] * cos(m theta_i) - x[..., 2i + 1] * sin(m theta_i)
        y[..., 2i + 1] = x[..., 2i] * sin(m theta_i) + x[..., 2i + 1] * cos(m theta_i)

    Applied to queries and keys (not values), it makes the dot product of a query at
    position ``m`` with a key at position ``n`` a function of their content and of
    ``m - n`` only.

    Args:
        x: queries or keys, shape ``(..., T, d)`` with ``d`` even, floating point.
        positions: integer or float positions, shape ``(T,)``; default ``0 .. T - 1``.
        base: the frequency constant (10000 in RoFormer); must be > 1.

    Returns:
        A tensor of the same shape and dtype as ``x``.

    Raises:
        TypeError: ``x`` is not a floating-point tensor.
        ValueError: ``x`` has fewer than 2 dimensions or an odd last dimension, or
            ``positions`` does not have shape ``(T,)``.

    Example:
        >>> q = torch.ones(1, 3, 4)
        >>> torch.equal(apply_rotary(q)[:, 0], q[:, 0])  # position 0 is not rotated
        True
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        what = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(f"apply_rotary: x must be a floating-point torch.Tensor, got {what}")
    if x.dim() < 2:
        raise ValueError(f"apply_rotary: x must have shape (..., T, d), got shape {tuple(x.shape)}")
    seq_len, d = x.shape[-2], x.shape[-1]
    if d % 2:
        raise ValueError(f"apply_rotary: the last dimension of x must be even, got {d}")
    base = _check_base(base)
    if positions is None:
        positions = torch.arange(seq_len, device=x.device)
    if not isinstance(positions, Tensor) or tuple(positions.shape) != (seq_len,):
        got = tuple(positions.shape) if isinstance(positions, Tensor) else type(positions)
        raise ValueError(f"apply_rotary: positions must have shape ({seq_len},), got {got}")
    omega = _inverse_frequencies(d, base).to(positions.device)  # (d / 2,)
    angles = positions.to(torch.float64)[:, None] * omega[None, :]  # (T, d / 2)
    cos = torch.cos(angles).to(x.dtype)  # (T, d / 2)
    sin = torch.sin(angles).to(x.dtype)
    x_even, x_odd = x[..., 0::2], x[..., 1::2]  # (..., T, d / 2) each
    y = torch.empty_like(x)
    y[..., 0::2] = x_even * cos - x_odd * sin
    y[..., 1::2] = x_even * sin + x_odd * cos
    return y
