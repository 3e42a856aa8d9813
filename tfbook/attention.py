"""Scaled dot-product attention, masks and multi-head attention (chapter 4).

Chapter 4, "Attention", builds this module step by step and checks it against
``torch.nn.functional.scaled_dot_product_attention`` and ``torch.nn.MultiheadAttention``.

Mask convention (the whole book): a boolean mask where ``True`` means "this query **may
attend** to this key", the convention of ``torch.nn.functional.scaled_dot_product_attention``.
``torch.nn.MultiheadAttention`` uses the opposite convention (``True`` means "blocked");
:func:`mask_from_torch` converts its masks at the boundary.

Public API:

- :func:`scaled_dot_product_attention` ``(q, k, v, mask=None, dropout_p=0.0)`` returns
  ``(output, weights)``; a fully masked query row gives zero weights and a zero output.
- :func:`masked_softmax`: the numerically stable softmax it uses.
- :func:`causal_mask` ``(seq_len)`` and :func:`padding_mask` ``(lengths or ids, pad_id)``.
- :func:`mask_from_torch`: PyTorch's ``attn_mask`` / ``key_padding_mask`` to our convention.
- :func:`split_heads` and :func:`merge_heads`: ``(B, T, d_model) <-> (B, h, T, d_head)``.
- :class:`MultiHeadAttention` ``(d_model, n_heads, dropout=0.0, bias=True)`` with an explicit
  path (returns the weights) and a fast path through PyTorch's fused kernel;
  :meth:`MultiHeadAttention.from_torch` copies the weights of an ``nn.MultiheadAttention``.
- :class:`SelfAttention` ``(d_model, n_heads)`` and :class:`CrossAttention`: the same module
  with a sub-layer's signature (``x -> tensor``), ready for :class:`tfbook.norm.ResidualSublayer`.
- :class:`KVCache` (chapter 7): the keys and values an attention module has already computed,
  so that decoding one token at a time does not recompute the past; every attention module's
  ``forward`` takes an optional ``cache``, and ``causal_mask(T, past=P)`` is the mask of ``T``
  new queries over ``P + T`` keys.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tfbook import _validate as check

__all__ = [
    "scaled_dot_product_attention",
    "masked_softmax",
    "causal_mask",
    "padding_mask",
    "mask_from_torch",
    "split_heads",
    "merge_heads",
    "MultiHeadAttention",
    "SelfAttention",
    "CrossAttention",
    "KVCache",
]


def masked_softmax(scores: Tensor, mask: Tensor | None = None) -> Tensor:
    """Softmax over the last axis, with masked entries given weight exactly 0.

    Masked entries are set to ``-inf`` before the softmax, so ``exp`` makes them exactly 0.
    ``torch.softmax`` subtracts each row's maximum before ``exp`` (the numerically stable
    form derived in chapter 4), so large scores cannot overflow. A row with no allowed entry
    would be ``0 / 0 = NaN``; it is given all-zero weights instead, with finite gradients.

    Args:
        scores: attention scores.
        mask: boolean, broadcastable to ``scores``; ``True`` = may attend.

    Returns:
        Weights of the same shape as ``scores``; each row sums to 1, or to 0 when the row
        is fully masked.

    Shape:
        - scores: ``(..., T_q, T_k)``
        - mask: broadcastable to ``(..., T_q, T_k)``
        - output: ``(..., T_q, T_k)``
    """
    if mask is None:
        return torch.softmax(scores, dim=-1)
    check.bool_mask("mask", mask, tuple(scores.shape))
    row_ok = mask.any(dim=-1, keepdim=True)  # (..., T_q, 1): has at least one allowed key
    scores = scores.masked_fill(~mask, float("-inf"))
    # Fully masked rows get finite dummy scores (no NaN in the forward or backward pass)
    # and are zeroed after the softmax.
    scores = scores.masked_fill(~row_ok, 0.0)
    return torch.softmax(scores, dim=-1).masked_fill(~row_ok, 0.0)


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    dropout_p: float = 0.0,
) -> tuple[Tensor, Tensor]:
    r"""Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V, computed explicitly.

    Args:
        q: queries.
        k: keys (same last dimension ``d_k`` as ``q``).
        v: values (same number of positions ``T_k`` as ``k``).
        mask: optional boolean mask, ``True`` = may attend, broadcastable to the scores
            ``(..., T_q, T_k)``: e.g. :func:`causal_mask` ``(T, T)`` or
            :func:`padding_mask` ``(B, 1, T_k)``.
        dropout_p: probability of dropping an attention weight (applied to the weights
            that multiply ``v``; the returned weights are the ones before dropout).

    Returns:
        The pair ``(output, weights)``, the weighted averages of the values and the
        attention weights. A fully masked query row has zero weights and a zero output.

    Shape:
        - q: ``(..., T_q, d_k)``
        - k: ``(..., T_k, d_k)``
        - v: ``(..., T_k, d_v)``
        - mask: broadcastable to ``(..., T_q, T_k)``
        - output: ``(..., T_q, d_v)``
        - weights: ``(..., T_q, T_k)``

    Raises:
        ValueError: when the shapes do not fit together.
        TypeError: when the mask is not boolean.

    Example:
        >>> q = k = v = torch.randn(2, 5, 8)
        >>> out, w = scaled_dot_product_attention(q, k, v, mask=causal_mask(5))
        >>> out.shape, w.shape
        (torch.Size([2, 5, 8]), torch.Size([2, 5, 5]))
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        check.shape(name, t, "(..., T, d)", isinstance(t, Tensor) and t.dim() >= 2)
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q and k must have the same last dimension d_k: q {tuple(q.shape)}, k {tuple(k.shape)}"
        )
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"k and v must have the same number of positions T_k: k {tuple(k.shape)}, "
            f"v {tuple(v.shape)}"
        )
    d_k = q.shape[-1]
    # (Q / sqrt(d_k)) K^T equals Q K^T / sqrt(d_k); scaling Q touches T_q * d_k numbers
    # instead of T_q * T_k.
    scores = (q / math.sqrt(d_k)) @ k.transpose(-2, -1)  # (..., T_q, T_k)
    weights = masked_softmax(scores, mask)
    dropped = F.dropout(weights, p=dropout_p, training=True) if dropout_p > 0 else weights
    return dropped @ v, weights  # (..., T_q, d_v), (..., T_q, T_k)


def causal_mask(seq_len: int, *, device: torch.device | str | None = None, past: int = 0) -> Tensor:
    """Lower-triangular mask: position ``t`` may attend to positions ``0..t`` only.

    With ``past=P`` (incremental decoding, chapter 7) the ``T`` queries are the positions
    ``P .. P + T - 1`` and the keys are all ``P + T`` positions so far: query ``i`` may attend
    to keys ``0 .. P + i``. ``past=0`` is the square mask.

    Args:
        seq_len: number of (new) query positions ``T`` (>= 1).
        device: where to create the mask.
        past: number of earlier positions ``P`` whose keys sit in a :class:`KVCache` (>= 0).

    Returns:
        Boolean tensor, ``True`` on and below the (shifted) diagonal (may attend).

    Shape:
        - output: ``(T, P + T)``, broadcastable against scores ``(..., T, P + T)``

    Example:
        >>> causal_mask(2, past=3).int()
        tensor([[1, 1, 1, 1, 0],
                [1, 1, 1, 1, 1]], dtype=torch.int32)
    """
    check.positive_int("seq_len", seq_len)
    check.nonneg_int("past", past)
    # diagonal=past keeps, in row i, the columns j <= past + i
    return torch.ones(seq_len, past + seq_len, dtype=torch.bool, device=device).tril(past)


def padding_mask(
    lengths_or_ids: Tensor | Sequence[int],
    pad_id: int | None = None,
    *,
    max_len: int | None = None,
) -> Tensor:
    """Key mask hiding padding positions, from sequence lengths or from padded token ids.

    Two ways to call it:

    - ``padding_mask(lengths, max_len=T)``: 1-D lengths; position ``j`` of sequence ``b``
      is real when ``j < lengths[b]`` (``max_len`` defaults to ``max(lengths)``);
    - ``padding_mask(ids, pad_id)``: 2-D token ids; a position is real when its id is not
      ``pad_id``.

    Args:
        lengths_or_ids: lengths ``(B,)`` or token ids ``(B, T)``.
        pad_id: the padding id (required with ids, not allowed with lengths).
        max_len: length ``T`` of the padded batch (lengths only).

    Returns:
        Boolean tensor, ``True`` at real tokens (may be attended to), ``False`` at padding.
        The middle axis of size 1 lets it broadcast over the queries.

    Shape:
        - output: ``(B, 1, T)``, broadcastable against scores ``(B, T_q, T)``; combine it
          with a causal mask by ``padding_mask(...) & causal_mask(T)`` -> ``(B, T, T)``.
    """
    x = torch.as_tensor(lengths_or_ids)
    if x.dtype.is_floating_point or x.dtype == torch.bool:
        raise TypeError(f"lengths_or_ids must hold integers, got dtype {x.dtype}")
    if x.dim() == 1:
        if pad_id is not None:
            raise ValueError(
                "pad_id is only used with 2-D token ids; got 1-D lengths "
                f"{tuple(x.shape)} and pad_id={pad_id}"
            )
        if (x < 0).any():
            raise ValueError(f"lengths must be >= 0, got {x.tolist()}")
        longest = int(x.max()) if x.numel() else 0
        t = longest if max_len is None else max_len
        if t < longest:
            raise ValueError(f"max_len={max_len} is shorter than the longest length {longest}")
        real = torch.arange(t, device=x.device)[None, :] < x[:, None]  # (B, T)
    elif x.dim() == 2:
        if pad_id is None:
            raise ValueError("pad_id is required when lengths_or_ids holds 2-D token ids (B, T)")
        if max_len is not None:
            raise ValueError("max_len is only used with 1-D lengths")
        real = x != pad_id  # (B, T)
    else:
        raise ValueError(
            "lengths_or_ids must be lengths of shape (B,) or token ids of shape (B, T), "
            f"got shape {tuple(x.shape)}"
        )
    return real[:, None, :]  # (B, 1, T)


def mask_from_torch(
    attn_mask: Tensor | None = None, key_padding_mask: Tensor | None = None
) -> Tensor | None:
    """Convert nn.MultiheadAttention's boolean masks (True = blocked) to ours (True = may attend).

    Args:
        attn_mask: PyTorch's boolean ``attn_mask``, ``True`` where attention is *not* allowed.
        key_padding_mask: PyTorch's boolean ``key_padding_mask``, ``True`` at padding keys.

    Returns:
        One boolean mask in the book's convention (``True`` = may attend), the combination
        of both, or ``None`` when neither is given.

    Shape:
        - attn_mask: ``(T_q, T_k)`` or ``(B * h, T_q, T_k)`` (the latter is not supported
          here: reshape it to ``(B, h, T_q, T_k)`` and invert it yourself)
        - key_padding_mask: ``(B, T_k)``
        - output: ``(T_q, T_k)``, ``(B, 1, T_k)`` or ``(B, T_q, T_k)``
    """
    out = None
    if attn_mask is not None:
        if attn_mask.dtype != torch.bool:
            raise TypeError(
                f"attn_mask must be boolean to be converted, got dtype {attn_mask.dtype}"
            )
        if attn_mask.dim() != 2:
            raise ValueError(f"attn_mask must have shape (T_q, T_k), got {tuple(attn_mask.shape)}")
        out = ~attn_mask
    if key_padding_mask is not None:
        if key_padding_mask.dtype != torch.bool:
            raise TypeError(
                "key_padding_mask must be boolean to be converted, got dtype "
                f"{key_padding_mask.dtype}"
            )
        if key_padding_mask.dim() != 2:
            raise ValueError(
                f"key_padding_mask must have shape (B, T_k), got {tuple(key_padding_mask.shape)}"
            )
        keys = ~key_padding_mask[:, None, :]  # (B, 1, T_k)
        out = keys if out is None else out & keys
    return out


def split_heads(x: Tensor, n_heads: int) -> Tensor:
    """Cut the last axis into ``n_heads`` heads and move the heads before the positions.

    Args:
        x: projected queries, keys or values.
        n_heads: number of heads ``h``; must divide ``d_model``.

    Returns:
        A view of the same numbers in which head ``i`` holds the features
        ``i * d_head`` to ``(i + 1) * d_head - 1`` of every position.

    Shape:
        - x: ``(B, T, d_model)``
        - output: ``(B, h, T, d_head)`` with ``d_head = d_model // h``
    """
    check.shape("x", x, "(B, T, d_model)", x.dim() == 3)
    b, t, d_model = x.shape
    if d_model % n_heads != 0:
        raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
    return x.view(b, t, n_heads, d_model // n_heads).transpose(1, 2)  # (B, h, T, d_head)


def merge_heads(x: Tensor) -> Tensor:
    """Inverse of :func:`split_heads`: concatenate the heads' features again.

    Shape:
        - x: ``(B, h, T, d_head)``
        - output: ``(B, T, h * d_head)``
    """
    check.shape("x", x, "(B, h, T, d_head)", x.dim() == 4)
    b, h, t, d_head = x.shape
    return x.transpose(1, 2).reshape(b, t, h * d_head)  # (B, T, d_model)


class KVCache:
    """The keys and values one attention module has already computed (chapter 7).

    A decoder writes one token at a time. Without a cache every step re-projects the keys and
    values of *all* earlier tokens, although they never change (a token only reads the past).
    The cache keeps them, per head, so a step projects only the new token:

    - self-attention (``static=False``): each call appends the new positions' keys and values
      and the queries attend over the past and the new ones together;
    - cross-attention (``static=True``): the keys and values of the encoder's memory are
      projected on the first call and reused unchanged at every later step.

    Pass one cache per attention module (``mha(x, x, x, mask, cache=kv)``); for whole models
    :class:`tfbook.model.DecoderCache` holds one per layer.

    Args:
        static: keys and values are computed once and then only read (cross-attention).

    Attributes:
        keys, values: ``None`` before the first call, then ``(B, h, T_past, d_head)``.

    Example:
        >>> mha, kv = MultiHeadAttention(d_model=16, n_heads=4), KVCache()
        >>> x = torch.randn(2, 5, 16)
        >>> _ = mha(x[:, :4], x[:, :4], x[:, :4], causal_mask(4), cache=kv)
        >>> step, _ = mha(x[:, 4:], x[:, 4:], x[:, 4:], causal_mask(1, past=4), cache=kv)
        >>> full, _ = mha(x, x, x, causal_mask(5))
        >>> len(kv), torch.allclose(step[:, 0], full[:, 4], atol=1e-6)
        (5, True)
    """

    def __init__(self, static: bool = False) -> None:
        self.static = check.boolean("static", static)
        self.keys: Tensor | None = None  # (B, h, T_past, d_head)
        self.values: Tensor | None = None  # (B, h, T_past, d_head)

    def __len__(self) -> int:
        """Number of positions ``T_past`` whose keys and values are stored."""
        return 0 if self.keys is None else self.keys.shape[2]

    @property
    def holds_memory(self) -> bool:
        """A static (cross-attention) cache that already holds the memory's keys and values."""
        return self.static and self.keys is not None

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append the new positions' keys and values; return all of them.

        Shape:
            - k, v: ``(B, h, T_new, d_head)``
            - output: two tensors ``(B, h, T_past + T_new, d_head)``
        """
        if self.holds_memory:
            raise ValueError("a static (cross-attention) cache is filled once, got a second update")
        if self.keys is None:
            self.keys, self.values = k, v
        else:
            _check_cache_fits(self.keys, k)
            self.keys = torch.cat([self.keys, k], dim=2)  # (B, h, T_past + T_new, d_head)
            self.values = torch.cat([self.values, v], dim=2)
        return self.keys, self.values

    def reorder(self, index: Tensor) -> None:
        """Keep the batch rows ``index`` (in that order), e.g. the surviving beams of a search.

        Shape:
            - index: ``(B_new,)`` integer indices into the cached batch ``B``
        """
        if self.keys is not None:
            self.keys = self.keys.index_select(0, index)  # (B_new, h, T_past, d_head)
            self.values = self.values.index_select(0, index)

    def __repr__(self) -> str:
        shape = None if self.keys is None else tuple(self.keys.shape)
        return f"KVCache(static={self.static}, keys={shape})"


def _keys_seen(key: Tensor, cache: KVCache | None) -> int:
    """How many keys the queries will see: the new ones, the cached ones, or the memory's."""
    if cache is None:
        return key.shape[1]
    return len(cache) if cache.holds_memory else len(cache) + key.shape[1]


def _check_attention_inputs(
    mha: MultiHeadAttention,
    query: object,
    key: object,
    value: object,
    mask: object,
    cache: object,
    is_causal: object,
) -> None:
    d = mha.d_model
    for name, t in (("query", query), ("key", key), ("value", value)):
        ok = isinstance(t, Tensor) and t.dim() == 3 and t.shape[-1] == d
        check.shape(name, t, f"(B, T, d_model={d})", ok)
    if key.shape[:2] != value.shape[:2]:
        raise ValueError(
            f"key and value must have the same (B, T_k): key {tuple(key.shape)}, "
            f"value {tuple(value.shape)}"
        )
    if query.shape[0] != key.shape[0]:
        raise ValueError(
            f"query and key must have the same batch size: query {tuple(query.shape)}, "
            f"key {tuple(key.shape)}"
        )
    if cache is not None:
        if not isinstance(cache, KVCache):
            raise TypeError(f"cache must be a KVCache or None, got {type(cache).__name__}")
        if cache.keys is not None and cache.keys.shape[0] != query.shape[0]:
            raise ValueError(
                f"cache must hold keys for the batch of query (B={query.shape[0]}), got "
                f"B={cache.keys.shape[0]}"
            )
    check.boolean("is_causal", is_causal)
    if is_causal and mask is not None:
        raise ValueError("mask must be None with is_causal=True (one or the other), got a tensor")
    if is_causal and cache is not None and cache.static:
        raise ValueError("is_causal must be False with a static (cross-attention) cache, got True")
    if is_causal and cache is None and query.shape[1] != key.shape[1]:
        raise ValueError(
            "is_causal=True needs as many queries as keys (self-attention), got "
            f"T_q={query.shape[1]}, T_k={key.shape[1]}"
        )
    if mask is not None:
        b, t_q, t_k = query.shape[0], query.shape[1], _keys_seen(key, cache)
        if isinstance(mask, Tensor) and mask.dim() not in (2, 3, 4):
            raise ValueError(
                "mask must have shape (T_q, T_k), (B, T_q, T_k), (B, 1, T_k) or "
                f"(B, h, T_q, T_k), got {tuple(mask.shape)}"
            )
        if isinstance(mask, Tensor) and mask.dim() == 3:
            mask = mask.unsqueeze(1)  # as the forward will use it: (B, 1, T_q or 1, T_k)
        check.bool_mask("mask", mask, (b, mha.n_heads, t_q, t_k))


def _check_cache_fits(cached: Tensor, new: Tensor) -> None:
    if new.dim() != 4 or new.shape[:2] != cached.shape[:2] or new.shape[3] != cached.shape[3]:
        b, h, _, d = cached.shape
        raise ValueError(
            f"cache must receive keys of shape (B={b}, h={h}, T_new, d_head={d}) like the ones "
            f"it holds, got {tuple(new.shape)}"
        )


class MultiHeadAttention(nn.Module):
    """Multi-head attention: project, split into heads, attend in parallel, concatenate, project.

    ``MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O`` with
    ``head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)``; the ``h`` per-head projections are
    stored as one ``(d_model, d_model)`` linear layer each for queries, keys and values. In
    self-attention (``query``, ``key`` and ``value`` the same tensor) the three weight matrices
    are stacked into one ``(3 d_model, d_model)`` product, as GPT-2 stores them.

    Args:
        d_model: width of the token vectors.
        n_heads: number of heads ``h``; must divide ``d_model`` (``d_head = d_model / h``).
        dropout: dropout probability on the attention weights (training mode only).
        bias: whether the four projections have a bias.

    Attributes:
        check_inputs: check the inputs on every call (a model that checked its own inputs
            switches it off).

    Shape:
        - query: ``(B, T_q, d_model)``
        - key, value: ``(B, T_k, d_model)`` (the same tensor as ``query`` for self-attention)
        - mask: boolean, ``True`` = may attend; ``(T_q, T_k)``, ``(B, T_q, T_k)``,
          ``(B, 1, T_k)`` or ``(B, h, T_q, T_k)`` (a 3-D mask is shared by every head)
        - output: ``(B, T_q, d_model)``
        - weights: ``(B, h, T_q, T_k)`` (only with ``need_weights=True``)

    Example:
        >>> mha = MultiHeadAttention(d_model=16, n_heads=4)
        >>> x = torch.randn(2, 5, 16)
        >>> out, weights = mha(x, x, x, mask=causal_mask(5), need_weights=True)
        >>> out.shape, weights.shape
        (torch.Size([2, 5, 16]), torch.Size([2, 4, 5, 5]))
    """

    check_inputs = True

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        check.positive_int("d_model", d_model)
        check.positive_int("n_heads", n_heads)
        if d_model % n_heads != 0:
            raise ValueError(
                f"d_model must be divisible by n_heads, got d_model={d_model}, n_heads={n_heads}"
            )
        check.probability("dropout", dropout)
        self.d_model, self.n_heads, self.d_head = d_model, n_heads, d_model // n_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)  # W^Q for all heads
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)  # W^K
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)  # W^V
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)  # W^O

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        mask: Tensor | None = None,
        need_weights: bool = False,
        cache: KVCache | None = None,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from ``query`` to ``key``/``value``.

        Args:
            query: the sequence asking (the decoder's states in cross-attention).
            key: the sequence being looked up.
            value: what is read out of it (usually the same tensor as ``key``).
            mask: boolean, ``True`` = may attend (see the class docstring for shapes).
            need_weights: take the explicit path and also return the per-head weights;
                otherwise the fast path (``F.scaled_dot_product_attention``) is used.
            cache: a :class:`KVCache` for incremental decoding (chapter 7). A self-attention
                cache gets the new keys and values appended and the queries attend over
                all ``T_past + T_k`` of them (give a mask of that width, e.g.
                ``causal_mask(T_q, past=T_past)``, or ``is_causal=True``); a static cache
                projects ``key``/``value`` on its first call and reuses them afterwards.
            is_causal: attend causally, as under :func:`causal_mask` (with a cache: query
                ``i`` sees the past and the new keys ``0 .. i``), without a ``mask``. The
                fast path then builds no mask at all.

        Returns:
            The pair ``(output, weights)``, with ``weights`` set to ``None`` unless
            ``need_weights`` is true.

        Shape:
            - query ``(B, T_q, d_model)``, key and value ``(B, T_k, d_model)``
            - output ``(B, T_q, d_model)``, weights ``(B, h, T_q, T_k)`` (with a
              self-attention cache ``T_k`` counts the cached positions too)
        """
        if self.check_inputs:
            _check_attention_inputs(self, query, key, value, mask, cache, is_causal)
        past = 0 if cache is None or cache.static else len(cache)  # keys already cached
        if query is key and key is value and self._stackable(cache):  # self-attention
            q, k, v = (split_heads(t, self.n_heads) for t in self._project_stacked(query))
        else:
            q = split_heads(self.q_proj(query), self.n_heads)  # (B, h, T_q, d_head)
            if cache is not None and cache.holds_memory:  # cross-attention: memory projected once
                k, v = cache.keys, cache.values  # (B, h, T_k, d_head) each
            else:
                k = split_heads(self.k_proj(key), self.n_heads)  # (B, h, T_k, d_head)
                v = split_heads(self.v_proj(value), self.n_heads)  # (B, h, T_k, d_head)
        if cache is not None and not cache.holds_memory:
            k, v = cache.update(k, v)  # (B, h, T_past + T_k, d_head): the past, then the new
        if is_causal and (need_weights or past):  # the fused kernel's causal flag is square
            mask, is_causal = causal_mask(query.shape[1], past=past, device=query.device), False
        if mask is not None and mask.dim() == 3:
            mask = mask.unsqueeze(1)  # (B, 1, T_q or 1, T_k): shared by every head
        p = self.dropout if self.training else 0.0
        if need_weights:  # explicit path: every intermediate is visible
            heads, weights = scaled_dot_product_attention(q, k, v, mask, dropout_p=p)
        else:  # fast path: PyTorch's fused kernel, same mask convention
            heads = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=p, is_causal=is_causal
            )  # (B, h, T_q, d_head)
            if mask is not None:  # a fully masked row must give 0 on every backend
                heads = heads.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)
            weights = None
        return self.out_proj(merge_heads(heads)), weights  # (B, T_q, d_model)

    def _stackable(self, cache: KVCache | None) -> bool:
        """Whether Q, K and V may come from one product: plain linear layers without hooks
        (a wrapped, replaced or hooked projection, e.g. a LoRA adapter, is called as the module
        it is) and no static cache."""
        layers = (self.q_proj, self.k_proj, self.v_proj)
        plain = all(type(m) is nn.Linear for m in layers)
        hooked = any(m._forward_hooks or m._forward_pre_hooks for m in layers)
        return plain and not hooked and (cache is None or not cache.static)

    def _project_stacked(self, x: Tensor) -> tuple[Tensor, ...]:
        """``(x W^Q, x W^K, x W^V)`` in one matrix product with the three weights stacked:
        the three products of the module's own layers, in one kernel call instead of three."""
        layers = (self.q_proj, self.k_proj, self.v_proj)
        weight = torch.cat([m.weight for m in layers])  # (3 d_model, d_model)
        bias = None if self.q_proj.bias is None else torch.cat([m.bias for m in layers])
        return F.linear(x, weight, bias).chunk(3, dim=-1)  # 3 x (B, T, d_model)

    @classmethod
    def from_torch(cls, module: nn.MultiheadAttention) -> MultiHeadAttention:
        """A :class:`MultiHeadAttention` with the weights of a ``torch.nn.MultiheadAttention``.

        Only the weights are copied; inputs stay batch-first whatever ``module.batch_first``
        is. PyTorch's boolean masks mean the opposite of ours (``True`` = blocked): convert
        them with :func:`mask_from_torch` (``attn_mask``, ``key_padding_mask``).

        Args:
            module: an ``nn.MultiheadAttention`` with ``kdim == vdim == embed_dim`` and
                without ``add_bias_kv`` or ``add_zero_attn``.

        Returns:
            A new module, same dtype and device, in the same training/eval mode, computing
            the same function (``module``'s averaged weights are our weights' head mean).
        """
        if not isinstance(module, nn.MultiheadAttention):
            raise TypeError(f"module must be nn.MultiheadAttention, got {type(module).__name__}")
        if module.kdim != module.embed_dim or module.vdim != module.embed_dim:
            raise ValueError(
                f"kdim and vdim must equal embed_dim={module.embed_dim}, got "
                f"kdim={module.kdim}, vdim={module.vdim}"
            )
        if module.bias_k is not None or module.add_zero_attn:
            raise ValueError("add_bias_kv and add_zero_attn are not supported")
        d = module.embed_dim
        has_bias = module.in_proj_bias is not None
        if module._qkv_same_embed_dim:
            w_q, w_k, w_v = module.in_proj_weight.detach().split(d, dim=0)
        else:
            w_q, w_k, w_v = (
                module.q_proj_weight.detach(),
                module.k_proj_weight.detach(),
                module.v_proj_weight.detach(),
            )
        ref = module.out_proj.weight
        new = cls(d, module.num_heads, dropout=module.dropout, bias=has_bias)
        new = new.to(device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            for proj, w in ((new.q_proj, w_q), (new.k_proj, w_k), (new.v_proj, w_v)):
                proj.weight.copy_(w)
            new.out_proj.weight.copy_(module.out_proj.weight)
            if has_bias:
                for proj, bias in zip(
                    (new.q_proj, new.k_proj, new.v_proj),
                    module.in_proj_bias.detach().split(d),
                    strict=True,
                ):
                    proj.bias.copy_(bias)
                new.out_proj.bias.copy_(module.out_proj.bias)
        return new.train(module.training)


class SelfAttention(MultiHeadAttention):
    """Multi-head self-attention as a sub-layer: ``x -> MultiHead(x, x, x)``, one tensor out.

    The same module as :class:`MultiHeadAttention` (same parameters, same state-dict names,
    :meth:`~MultiHeadAttention.from_torch` works), with the signature a residual sub-layer
    needs, so ``ResidualSublayer(d_model, SelfAttention(d_model, h))`` just works.

    Shape:
        - x: ``(B, T, d_model)``; mask: boolean, ``True`` = may attend, e.g. ``(T, T)``
          (with a :class:`KVCache` of ``P`` positions: ``(T, P + T)``), or ``is_causal=True``
          instead of a causal mask
        - output: ``(B, T, d_model)``
    """

    def forward(  # type: ignore[override]
        self,
        x: Tensor,
        mask: Tensor | None = None,
        cache: KVCache | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        return super().forward(x, x, x, mask, cache=cache, is_causal=is_causal)[0]  # (B, T, d)


class CrossAttention(MultiHeadAttention):
    """Multi-head cross-attention as a sub-layer: queries from ``x``, keys and values from
    ``memory`` (the encoder's output), one tensor out.

    Inside a :class:`tfbook.norm.ResidualSublayer` only ``x`` is normalised; ``memory`` is
    passed through as it is (the encoder already normalised it).

    Shape:
        - x: ``(B, T_q, d_model)``; memory: ``(B, T_k, d_model)``
        - mask: boolean, ``True`` = may attend, e.g. ``(B, 1, T_k)`` for the source padding
        - output: ``(B, T_q, d_model)``

    With a static :class:`KVCache` the memory's keys and values are projected on the first
    call and reused afterwards (the memory does not change while a target is decoded).
    """

    def forward(  # type: ignore[override]
        self, x: Tensor, memory: Tensor, mask: Tensor | None = None, cache: KVCache | None = None
    ) -> Tensor:
        return super().forward(x, memory, memory, mask, cache=cache)[0]  # (B, T_q, d_model)
