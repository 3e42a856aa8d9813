"""Graded exercises of chapter 4, "Attention".

1. scaled dot-product attention;
2. attention with a mask (True = may attend), fully masked rows giving zeros;
3. the causal mask;
4. the mask of a prefix language model for a padded batch (a prefix read both ways, then
   causal, padding hidden);
5. a sliding-window causal mask (local attention: the last ``window`` keys);
6. grouped-query attention: query heads sharing fewer key/value heads;
7. predict, then run: the shapes of a ``MultiHeadAttention`` call and its parameter count;
8. debugging: an attention written for (B, T, d) without masks, used with heads and masks;
9. derivation: the Jacobian of one query's attention output with respect to the query;
10. build with the library: attention pooling (one learned query) from ``MultiHeadAttention``.

Usage: ``from tfbook.exercises import ch04 as ex; ex.q1.check(my_attention)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from tfbook.attention import (
    MultiHeadAttention,
    causal_mask,
    padding_mask,
    scaled_dot_product_attention,
)
from tfbook.exercises._engine import (
    Case,
    ExerciseSet,
    Mistake,
    Question,
    compare_modules,
)


def _randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g)


# --------------------------------------------------------------------------- q1


def _attention(q, k, v):
    """Scaled dot-product attention; returns (output, weights)."""
    d_k = q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)  # (..., T_q, T_k)
    weights = torch.softmax(scores, dim=-1)  # each query's weights sum to 1 over the keys
    return weights @ v, weights


def _attention_no_scale(q, k, v):
    weights = torch.softmax(q @ k.transpose(-2, -1), dim=-1)
    return weights @ v, weights


def _attention_divide_by_dk(q, k, v):
    weights = torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1], dim=-1)
    return weights @ v, weights


def _attention_softmax_over_queries(q, k, v):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    weights = torch.softmax(scores, dim=-2)
    return weights @ v, weights


def _attention_cases() -> list[Case]:
    g = torch.Generator().manual_seed(4)
    cases = []
    for i, (b, t_q, t_k, d_k, d_v) in enumerate([(2, 4, 6, 8, 5), (1, 3, 5, 16, 4)]):
        q, k, v = _randn(g, b, t_q, d_k), _randn(g, b, t_k, d_k), _randn(g, b, t_k, d_v)
        cases.append(
            Case(f"random {i + 1}: q {t_q}x{d_k}, k {t_k}x{d_k}, v {t_k}x{d_v}", (q, k, v))
        )
    one = _randn(g, 1, 2, 4), _randn(g, 1, 1, 4), _randn(g, 1, 1, 3)
    cases.append(Case("a single key (every weight is 1)", one))
    big = _randn(g, 1, 3, 64) * 30, _randn(g, 1, 4, 64) * 30, _randn(g, 1, 4, 2)
    cases.append(Case("huge scores (softmax must not overflow)", big))
    return cases


#: What exercises 4.1 and 4.2 may not call: scaled_dot_product_attention, ours or PyTorch's, under
#: any name (PyTorch's, and its private variants, run the operations named here).
_ATTENTION_SHORTCUTS = (
    "tfbook.attention.scaled_dot_product_attention",
    "torch.nn.functional.scaled_dot_product_attention",
    "aten._safe_softmax",
    "aten._scaled_dot_product_flash_attention_for_cpu",
    "aten._scaled_dot_product_flash_attention",
    "aten._scaled_dot_product_efficient_attention",
    "aten._scaled_dot_product_cudnn_attention",
)


def _library_attention(q, k, v):
    return scaled_dot_product_attention(q, k, v)


q1 = Question(
    "ch04.q1",
    "Scaled dot-product attention",
    reference=_attention,
    cases=_attention_cases,
    mistakes=[
        Mistake(
            "no 1/sqrt(d_k) scaling",
            _attention_no_scale,
            "Divide the scores Q K^T by sqrt(d_k), where d_k = q.shape[-1].",
        ),
        Mistake(
            "divided by d_k instead of sqrt(d_k)",
            _attention_divide_by_dk,
            "The scale is the square root of d_k: use math.sqrt(q.shape[-1]).",
        ),
        Mistake(
            "softmax over the queries (dim=-2) instead of the keys",
            _attention_softmax_over_queries,
            "Each query's weights must sum to 1 over the keys: softmax(scores, dim=-1).",
        ),
    ],
    hints=[
        "Scores first: q @ k.transpose(-2, -1) has shape (..., T_q, T_k).",
        "Scale the scores by one over the square root of the key width (the size of the last "
        "axis of q), then take the softmax across the keys.",
        "Return (weights @ v, weights).",
    ],
    kind="implement",
    library=_library_attention,
    forbidden=_ATTENTION_SHORTCUTS,
)


# --------------------------------------------------------------------------- q2


def _masked_attention(q, k, v, mask):
    """Attention where mask (True = may attend) hides keys; a fully masked row gives zeros."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~mask, float("-inf"))  # exp(-inf) = 0 exactly
    row_ok = mask.any(dim=-1, keepdim=True)  # does the query see at least one key?
    scores = scores.masked_fill(~row_ok, 0.0)  # avoid softmax(-inf, ..., -inf) = NaN
    weights = torch.softmax(scores, dim=-1).masked_fill(~row_ok, 0.0)
    return weights @ v, weights


def _masked_inverted(q, k, v, mask):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


def _masked_after_softmax(q, k, v, mask):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    weights = torch.softmax(scores, dim=-1) * mask
    return weights @ v, weights


def _masked_finite_fill(q, k, v, mask):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    weights = torch.softmax(scores.masked_fill(~mask, -1e9), dim=-1)
    return weights @ v, weights


def _masked_zero_fill(q, k, v, mask):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    weights = torch.softmax(scores.masked_fill(~mask, 0.0), dim=-1)
    return weights @ v, weights


def _masked_nan_rows(q, k, v, mask):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    return weights @ v, weights


def _masked_cases() -> list[Case]:
    g = torch.Generator().manual_seed(40)
    cases = []
    for i, (b, t_q, t_k) in enumerate([(2, 4, 5), (1, 6, 6)]):
        q, k, v = _randn(g, b, t_q, 8), _randn(g, b, t_k, 8), _randn(g, b, t_k, 3)
        mask = torch.rand(b, t_q, t_k, generator=g) > 0.5
        mask[..., 0] = True  # every query sees a key ...
        mask[..., -1] = False  # ... and misses one
        cases.append(Case(f"random {i + 1}: mask {b}x{t_q}x{t_k}", (q, k, v, mask)))
    q, k, v = _randn(g, 1, 5, 4), _randn(g, 1, 5, 4), _randn(g, 1, 5, 2)
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    cases.append(Case("causal mask (5, 5), broadcast over the batch", (q, k, v, causal)))
    q, k, v = _randn(g, 2, 3, 4), _randn(g, 2, 3, 4), _randn(g, 2, 3, 2)
    empty = torch.ones(2, 3, 3, dtype=torch.bool)
    empty[0, 1] = False
    cases.append(Case("query 1 of sequence 0 may attend to nothing", (q, k, v, empty)))
    q, k, v = 12.0 * _randn(g, 2, 4, 8), 12.0 * _randn(g, 2, 5, 8), _randn(g, 2, 5, 3)
    padding = (torch.arange(5)[None, :] < torch.tensor([5, 3])[:, None])[:, None, :]
    name = "padding mask (2, 1, 5) for lengths [5, 3], scores in the hundreds"
    cases.append(Case(name, (q, k, v, padding)))
    return cases


def _library_masked_attention(q, k, v, mask):
    return scaled_dot_product_attention(q, k, v, mask)


q2 = Question(
    "ch04.q2",
    "Masked attention",
    reference=_masked_attention,
    cases=_masked_cases,
    mistakes=[
        Mistake(
            "mask convention inverted (True treated as 'blocked')",
            _masked_inverted,
            "In this book True means 'may attend': hide the positions where mask is False, "
            "e.g. scores.masked_fill(~mask, float('-inf')).",
        ),
        Mistake(
            "mask applied after the softmax",
            _masked_after_softmax,
            "Mask the scores before the softmax, so the remaining weights still sum to 1.",
        ),
        Mistake(
            "finite fill value: a fully masked row leaks a uniform average",
            _masked_finite_fill,
            "A row with every key masked must give zero weights; with -1e9 the softmax "
            "spreads the weight uniformly over the hidden keys. Use -inf and zero the rows "
            "where mask.any(dim=-1) is False.",
        ),
        Mistake(
            "masked scores set to 0 instead of -inf",
            _masked_zero_fill,
            "A score of 0 is an ordinary score: exp(0) = 1, so a hidden key still gets weight. "
            "Only -inf becomes exactly 0 after the softmax.",
        ),
        Mistake(
            "a fully masked row gives NaN",
            _masked_nan_rows,
            "softmax of a row of -inf is 0/0 = NaN: find the rows with no allowed key "
            "(mask.any(dim=-1, keepdim=True)) and give them zero weights.",
        ),
    ],
    hints=[
        "Compute the scaled scores as in exercise 4.1, then hide the blocked keys before the "
        "softmax with scores.masked_fill(~mask, float('-inf')).",
        "A query with no allowed key would get softmax(-inf, ..., -inf) = NaN. Compute "
        "row_ok = mask.any(dim=-1, keepdim=True) and set those rows' weights to 0.",
        "One way: fill the fully masked rows' scores with 0 before the softmax, then "
        "weights.masked_fill(~row_ok, 0.0) after it.",
    ],
    kind="implement",
    library=_library_masked_attention,
    forbidden=(*_ATTENTION_SHORTCUTS, "tfbook.attention.masked_softmax"),
)


# --------------------------------------------------------------------------- q3


def _causal_mask(seq_len):
    """(T, T) boolean mask, True on and below the diagonal (may attend)."""
    return torch.ones(seq_len, seq_len, dtype=torch.bool).tril()


def _causal_upper(seq_len):
    return torch.ones(seq_len, seq_len, dtype=torch.bool).triu()


def _causal_strict(seq_len):
    return torch.ones(seq_len, seq_len, dtype=torch.bool).tril(diagonal=-1)


def _causal_torch_convention(seq_len):
    return torch.ones(seq_len, seq_len, dtype=torch.bool).triu(diagonal=1)


def _causal_cases() -> list[Case]:
    g = torch.Generator().manual_seed(400)
    sizes = [int(t) for t in torch.randint(3, 9, (2,), generator=g)]
    return [Case(f"seq_len={t} (random)", (t,)) for t in sizes] + [
        Case("seq_len=1", (1,)),
        Case("seq_len=2", (2,)),
        Case("seq_len=37 (longer than any mask built in advance)", (37,)),
    ]


q3 = Question(
    "ch04.q3",
    "The causal mask",
    reference=_causal_mask,
    cases=_causal_cases,
    mistakes=[
        Mistake(
            "upper triangle: each position sees the future, not the past",
            _causal_upper,
            "Row t is the query at position t; it may attend to keys 0..t, which lie on and "
            "below the diagonal: use tril().",
        ),
        Mistake(
            "diagonal excluded: a position may not attend to itself",
            _causal_strict,
            "Position t may attend to itself (it is not in the future): keep the diagonal, "
            "tril() with diagonal=0.",
        ),
        Mistake(
            "PyTorch nn.MultiheadAttention convention (True = blocked)",
            _causal_torch_convention,
            "nn.MultiheadAttention's attn_mask marks blocked positions with True; this book "
            "marks allowed positions with True. Invert it (or use tril()).",
        ),
    ],
    hints=[
        "Entry (t, s) answers: may the query at position t look at the key at position s?",
        "It may when s <= t: on and below the diagonal.",
        "torch.ones(T, T, dtype=torch.bool).tril()",
    ],
    kind="implement",
    library=causal_mask,
    forbidden=("tfbook.attention.causal_mask",),
)


# --------------------------------------------------------------------------- q4: prefix LM


def prefix_lm_mask(ids, prefix_len, pad_id):
    """(B, T, T) mask of a prefix language model (True = may attend).

    Row b's first prefix_len[b] positions are a prefix read in both directions; after it the
    model writes causally. Query t may attend key s when key s is not padding and s lies in
    the prefix or not in the future: s < prefix_len[b] or s <= t.
    """
    t = ids.shape[1]
    s = torch.arange(t)
    causal = s[None, :] <= s[:, None]  # (T, T): key s not after query t
    in_prefix = s[None, :] < prefix_len[:, None]  # (B, T): key s inside row b's prefix
    keys_real = ids != pad_id  # (B, T)
    return (causal[None, :, :] | in_prefix[:, None, :]) & keys_real[:, None, :]  # (B, T, T)


def _prefix_inclusive(ids, prefix_len, pad_id):
    s = torch.arange(ids.shape[1])
    visible = (s[None, :] <= s[:, None])[None] | (s[None, :] <= prefix_len[:, None])[:, None, :]
    return visible & (ids != pad_id)[:, None, :]


def _prefix_causal_only(ids, prefix_len, pad_id):
    s = torch.arange(ids.shape[1])
    return (s[None, :] <= s[:, None])[None] & (ids != pad_id)[:, None, :]


def _prefix_first_row_length(ids, prefix_len, pad_id):
    s = torch.arange(ids.shape[1])
    visible = (s[None, :] <= s[:, None]) | (s[None, :] < prefix_len[0])
    return visible[None] & (ids != pad_id)[:, None, :]


def _prefix_upper(ids, prefix_len, pad_id):
    s = torch.arange(ids.shape[1])
    visible = (s[None, :] >= s[:, None])[None] | (s[None, :] < prefix_len[:, None])[:, None, :]
    return visible & (ids != pad_id)[:, None, :]


def _prefix_and(ids, prefix_len, pad_id):
    s = torch.arange(ids.shape[1])
    visible = (s[None, :] <= s[:, None])[None] & (s[None, :] < prefix_len[:, None])[:, None, :]
    return visible & (ids != pad_id)[:, None, :]


def _prefix_no_padding(ids, prefix_len, pad_id):
    s = torch.arange(ids.shape[1])
    return (s[None, :] <= s[:, None])[None] | (s[None, :] < prefix_len[:, None])[:, None, :]


def _prefix_padding_rows(ids, prefix_len, pad_id):
    s = torch.arange(ids.shape[1])
    visible = (s[None, :] <= s[:, None])[None] | (s[None, :] < prefix_len[:, None])[:, None, :]
    return visible & (ids != pad_id)[:, :, None]


def _prefix_inverted(ids, prefix_len, pad_id):
    return ~prefix_lm_mask(ids, prefix_len, pad_id)


def _prefix_strictly_before(ids, prefix_len, pad_id):
    s = torch.arange(ids.shape[1])
    visible = (s[None, :] < s[:, None])[None] | (s[None, :] < prefix_len[:, None])[:, None, :]
    return visible & (ids != pad_id)[:, None, :]


def _prefix_padding_counted(ids, prefix_len, pad_id):
    s = torch.arange(ids.shape[1])
    lengths = (ids != pad_id).sum(dim=1)  # as if every pad_id sat at the end of its row
    visible = (s[None, :] <= s[:, None])[None] | (s[None, :] < prefix_len[:, None])[:, None, :]
    return visible & (s[None, :] < lengths[:, None])[:, None, :]


def _prefix_cases() -> list[Case]:
    g = torch.Generator().manual_seed(4100)

    def batch(lengths, t, pad_id=0):
        ids = torch.randint(1, 30, (len(lengths), t), generator=g)
        for b, n in enumerate(lengths):
            ids[b, n:] = pad_id
        return ids

    return [
        Case(
            "prefixes of 2 and 3, lengths [6, 5], T = 6",
            (batch([6, 5], 6), torch.tensor([2, 3]), 0),
        ),
        Case(
            "three rows, prefixes [1, 4, 2], lengths [5, 7, 3], T = 7",
            (batch([5, 7, 3], 7), torch.tensor([1, 4, 2]), 0),
        ),
        Case("prefix 0: a plain decoder", (batch([4], 4), torch.tensor([0]), 0)),
        Case(
            "the whole row is the prefix: an encoder", (batch([5, 3], 5), torch.tensor([5, 3]), 0)
        ),
        Case(
            "T = 40, prefixes [13, 27], pad_id = 3",
            (batch([40, 31], 40, pad_id=3), torch.tensor([13, 27]), 3),
        ),
    ]


def _library_prefix_lm_mask(ids, prefix_len, pad_id):
    t = ids.shape[1]
    in_prefix = torch.arange(t)[None, :] < prefix_len[:, None]  # (B, T)
    return (causal_mask(t) | in_prefix[:, None, :]) & padding_mask(ids, pad_id)


q4 = Question(
    "ch04.q4",
    "The mask of a prefix language model",
    reference=prefix_lm_mask,
    cases=_prefix_cases,
    mistakes=[
        Mistake(
            "prefix taken one position too long (s <= prefix_len)",
            _prefix_inclusive,
            "A prefix of length P holds positions 0 .. P - 1: the key s is in the prefix when "
            "s < P. Position P is the first one the model writes, and earlier queries must not "
            "see it.",
        ),
        Mistake(
            "the prefix ignored: an ordinary causal mask",
            _prefix_causal_only,
            "Inside the prefix every position may read every other prefix position, the later "
            "ones too: allow key s whenever s < prefix_len[b], in addition to the causal "
            "keys.",
        ),
        Mistake(
            "causal part as the upper triangle: each query sees the future",
            _prefix_upper,
            "Row t is the query, column s the key; outside the prefix a query may read keys "
            "0 .. t, on and below the diagonal (s <= t), not above it.",
        ),
        Mistake(
            "causal and prefix combined with AND",
            _prefix_and,
            "A key is visible when it is causal OR in the prefix; AND would hide every key "
            "after the prefix, even the query's own.",
        ),
        Mistake(
            "the first row's prefix length used for every row",
            _prefix_first_row_length,
            "prefix_len has one length per row: compare the key positions with "
            "prefix_len[:, None], a (B, 1) column, so each row gets its own prefix.",
        ),
        Mistake(
            "the padding ignored",
            _prefix_no_padding,
            "Padding keys must stay hidden whatever the prefix says: AND the result with "
            "ids != pad_id over the keys (B, 1, T).",
        ),
        Mistake(
            "padding applied to the queries (rows) instead of the keys (columns)",
            _prefix_padding_rows,
            "Padding must not be looked at: it masks keys, the last axis, and only them (a "
            "padding query keeps its row). Use (ids != pad_id)[:, None, :] of shape (B, 1, T).",
        ),
        Mistake(
            "True where attention is blocked (the inverse convention)",
            _prefix_inverted,
            "Here True means may attend, as in tfbook's masks; some libraries use True for "
            "masked out. Return the visible keys, not their complement.",
        ),
        Mistake(
            "a query cannot read its own position",
            _prefix_strictly_before,
            "Not in the future is s <= t: the diagonal is visible (tril(), or tril(diagonal=0), "
            "not diagonal=-1).",
        ),
        Mistake(
            "padding found by counting: every pad_id taken to sit at the end of the row",
            _prefix_padding_counted,
            "A key is padding when its id equals pad_id, wherever it sits: compare ids with "
            "pad_id position by position, (ids != pad_id)[:, None, :], instead of counting the "
            "real tokens and hiding the keys after them.",
        ),
    ],
    hints=[
        "Build three pieces that broadcast to (B, T, T): the causal mask over (query, key), a "
        "(B, 1, T) mask of the keys inside each row's prefix, and a (B, 1, T) mask of the keys "
        "that are not padding.",
        "A key is visible when (it is causal OR it is in the prefix) AND it is not padding.",
    ],
    kind="implement",
    library=_library_prefix_lm_mask,
)


# --------------------------------------------------------------------------- q5


def _sliding_window_mask(seq_len, window):
    """(T, T) bool: query t may attend to key s when s <= t and t - s < window."""
    t = torch.arange(seq_len)
    distance = t[:, None] - t[None, :]  # (T, T): how far back key s lies from query t
    return (distance >= 0) & (distance < window)


def _window_off_by_one(seq_len, window):
    t = torch.arange(seq_len)
    distance = t[:, None] - t[None, :]
    return (distance >= 0) & (distance <= window)  # window + 1 keys


def _window_symmetric(seq_len, window):
    t = torch.arange(seq_len)
    return (t[:, None] - t[None, :]).abs() < window  # a band, future included


def _window_ignored(seq_len, window):
    return torch.ones(seq_len, seq_len, dtype=torch.bool).tril()


def _window_transposed(seq_len, window):
    return _sliding_window_mask(seq_len, window).T  # keys after the query


def _window_first_keys(seq_len, window):
    t = torch.arange(seq_len)
    return (t[None, :] <= t[:, None]) & (t[None, :] < window)  # the first keys, not the last


def _window_cases() -> list[Case]:
    return [
        Case("T = 6, window = 3", (6, 3)),
        Case("window = 1: each query sees itself only (T = 5)", (5, 1)),
        Case("window = T = 7: the causal mask", (7, 7)),
        Case("window larger than T (T = 4, window = 10)", (4, 10)),
        Case("T = 1", (1, 1)),
        Case("T = 3000, window = 1024 (longer than any pre-built mask)", (3000, 1024)),
    ]


q5 = Question(
    "ch04.q5",
    "A sliding-window causal mask",
    reference=_sliding_window_mask,
    cases=_window_cases,
    mistakes=[
        Mistake(
            "window + 1 keys: t - s <= window",
            _window_off_by_one,
            "The window counts the query's own key: keys t - window + 1, ..., t, so "
            "t - s < window (window = 1 leaves only the diagonal).",
        ),
        Mistake(
            "a symmetric band: future keys within the window allowed",
            _window_symmetric,
            "The mask stays causal: a key after the query (s > t) is hidden whatever the window.",
        ),
        Mistake(
            "the window ignored: the plain causal mask",
            _window_ignored,
            "Keys more than window - 1 positions back are hidden too.",
        ),
        Mistake(
            "transposed: keys after the query",
            _window_transposed,
            "Row t is the query, column s the key: allow s <= t, on and below the diagonal.",
        ),
        Mistake(
            "the first window keys instead of the last",
            _window_first_keys,
            "The window slides with the query: query t sees keys t - window + 1 to t, not "
            "keys 0 to window - 1.",
        ),
    ],
    hints=[
        "Entry (t, s) compares the two positions: work with the distance t - s of every pair, "
        "a (T, T) tensor from two aranges.",
        "A key is visible when it is not in the future and not too far back: two comparisons "
        "on the distance, combined with &.",
    ],
    check_dtype=True,
    kind="implement",
    library_note="none: tfbook's attention builds causal and padding masks, not local ones",
)


# --------------------------------------------------------------------------- q6: GQA


def grouped_query_attention(x, w_q, w_k, w_v, w_o, n_heads, n_kv_heads=None):
    """Self-attention with n_heads query heads sharing n_kv_heads key/value heads (no biases).

    x (B, T, d_model); w_q, w_o (d_model, d_model); w_k, w_v (d_model, n_kv_heads * d_head),
    d_head = d_model / n_heads. Query head i reads key/value head i // (n_heads / n_kv_heads);
    n_kv_heads = None means one key/value head per query head (multi-head attention).
    """
    b, t, d_model = x.shape
    n_kv = n_heads if n_kv_heads is None else n_kv_heads
    d_head = d_model // n_heads
    group = n_heads // n_kv  # query heads per key/value head
    q = (x @ w_q).view(b, t, n_heads, d_head).transpose(1, 2)  # (B, h, T, d_head)
    k = (x @ w_k).view(b, t, n_kv, d_head).transpose(1, 2)  # (B, h_kv, T, d_head)
    v = (x @ w_v).view(b, t, n_kv, d_head).transpose(1, 2)  # (B, h_kv, T, d_head)
    k = k.repeat_interleave(group, dim=1)  # (B, h, T, d_head): heads 0..g-1 share key head 0
    v = v.repeat_interleave(group, dim=1)
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d_head), dim=-1)  # (B,h,T,T)
    concat = (weights @ v).transpose(1, 2).reshape(b, t, d_model)  # (B, T, d_model)
    return concat @ w_o


def _gqa_variant(
    x,
    w_q,
    w_k,
    w_v,
    w_o,
    n_heads,
    n_kv_heads=None,
    *,
    tiled=False,
    scale_dim=None,
    project=True,
    bad_merge=False,
):
    b, t, d_model = x.shape
    n_kv = n_heads if n_kv_heads is None else n_kv_heads
    d_head = d_model // n_heads
    group = n_heads // n_kv
    q = (x @ w_q).view(b, t, n_heads, d_head).transpose(1, 2)
    k = (x @ w_k).view(b, t, n_kv, d_head).transpose(1, 2)
    v = (x @ w_v).view(b, t, n_kv, d_head).transpose(1, 2)
    if tiled:  # query head i reads key head i % n_kv
        k, v = k.repeat(1, group, 1, 1), v.repeat(1, group, 1, 1)
    else:
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    d = d_head if scale_dim is None else scale_dim
    heads = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), dim=-1) @ v
    if bad_merge:
        concat = heads.reshape(b, t, d_model)
    else:
        concat = heads.transpose(1, 2).reshape(b, t, d_model)
    return concat @ w_o if project else concat


def _gqa_tiled(x, w_q, w_k, w_v, w_o, n_heads, n_kv_heads=None):
    return _gqa_variant(x, w_q, w_k, w_v, w_o, n_heads, n_kv_heads, tiled=True)


def _gqa_scale_d_model(x, w_q, w_k, w_v, w_o, n_heads, n_kv_heads=None):
    return _gqa_variant(x, w_q, w_k, w_v, w_o, n_heads, n_kv_heads, scale_dim=x.shape[-1])


def _gqa_no_output_projection(x, w_q, w_k, w_v, w_o, n_heads, n_kv_heads=None):
    return _gqa_variant(x, w_q, w_k, w_v, w_o, n_heads, n_kv_heads, project=False)


def _gqa_bad_merge(x, w_q, w_k, w_v, w_o, n_heads, n_kv_heads=None):
    return _gqa_variant(x, w_q, w_k, w_v, w_o, n_heads, n_kv_heads, bad_merge=True)


def _gqa_cases() -> list[Case]:
    g = torch.Generator().manual_seed(406000)

    def case(name, b, t, d, h, kv, scale=1.0, give_kv=True):
        d_head = d // h
        x = scale * _randn(g, b, t, d)
        w_q, w_o = (_randn(g, d, d) / math.sqrt(d) for _ in range(2))
        w_k, w_v = (_randn(g, d, kv * d_head) / math.sqrt(d) for _ in range(2))
        if give_kv:
            return Case(name, (x, w_q, w_k, w_v, w_o, h, kv))
        return Case(name, (x, w_q, w_k, w_v, w_o, h))

    return [
        case("4 query heads, 2 key/value heads: B=2, T=5, d_model=8", 2, 5, 8, 4, 2),
        case("6 query heads, 3 key/value heads: B=1, T=4, d_model=12", 1, 4, 12, 6, 3),
        case("one key/value head (multi-query): h=4, d_model=8", 2, 3, 8, 4, 1),
        case("n_kv_heads not given: multi-head, h=2, d_model=8", 1, 4, 8, 2, 2, give_kv=False),
        case("as many key/value heads as query heads: h=3, d_model=6", 1, 3, 6, 3, 3),
        case("a single token, h=4, 2 key/value heads", 2, 1, 8, 4, 2),
        case("large entries (scores in the hundreds): h=4, 2 key/value heads", 2, 4, 8, 4, 2, 10.0),
    ]


def _library_gqa(x, w_q, w_k, w_v, w_o, n_heads, n_kv_heads=None):
    """tfbook's MultiHeadAttention with each key/value head's weights copied to its group."""
    d_model = x.shape[-1]
    n_kv = n_heads if n_kv_heads is None else n_kv_heads
    d_head = d_model // n_heads

    def widen(w):  # (d_model, h_kv * d_head) -> (d_model, h * d_head), head j for query i
        blocks = w.view(d_model, n_kv, d_head)
        return blocks[:, [i * n_kv // n_heads for i in range(n_heads)], :].reshape(d_model, -1)

    mha = MultiHeadAttention(d_model, n_heads, bias=False).to(x.dtype)
    with torch.no_grad():  # nn.Linear stores W^T: y = x W^T
        for proj, w in (
            (mha.q_proj, w_q),
            (mha.k_proj, widen(w_k)),
            (mha.v_proj, widen(w_v)),
            (mha.out_proj, w_o),
        ):
            proj.weight.copy_(w.T)
    return mha(x, x, x)[0]


q6 = Question(
    "ch04.q6",
    "Grouped-query attention",
    reference=grouped_query_attention,
    cases=_gqa_cases,
    mistakes=[
        Mistake(
            "key/value heads tiled: query head i reads key head i % n_kv_heads",
            _gqa_tiled,
            "Groups are contiguous: query heads 0 .. g - 1 share key/value head 0, the next g "
            "share head 1 (g = n_heads / n_kv_heads). Repeat each key/value head g times in a "
            "row (repeat_interleave), not the whole stack of heads g times (repeat).",
        ),
        Mistake(
            "scaled by sqrt(d_model) instead of sqrt(d_head)",
            _gqa_scale_d_model,
            "Each head's dot products have d_head = d_model / n_heads terms: divide by "
            "sqrt(d_head).",
        ),
        Mistake(
            "output projection W^O forgotten",
            _gqa_no_output_projection,
            "After concatenating the heads, multiply by w_o: it mixes what the heads found.",
        ),
        Mistake(
            "heads merged without moving the head axis back",
            _gqa_bad_merge,
            "The heads are (B, h, T, d_head): transpose(1, 2) to (B, T, h, d_head) before "
            "reshaping to (B, T, d_model), or every row mixes positions.",
        ),
    ],
    hints=[
        "Queries split into n_heads heads of d_head = d_model / n_heads features, keys and "
        "values into n_kv_heads heads of the same d_head.",
        "Make the key/value heads as many as the query heads by repeating each one for its "
        "group, then attend head by head as in multi-head attention.",
    ],
    check_dtype=True,
    kind="implement",
    library=_library_gqa,
    forbidden=_ATTENTION_SHORTCUTS,
)


# --------------------------------------------------------------------------- q7: predict

#: The calls of exercise 4.7.
SHAPE_KINDS = (
    "weights: cross-attention, B=2, h=4, T_q=3, T_k=7, d_model=16",
    "output: the same call",
    "parameters: MultiHeadAttention(16, 4)",
    "weights: self-attention of a (2, 5, 16) batch with one head",
)


def _reference_predicted_shapes(kind):
    """Shapes and a parameter count of ``tfbook.attention.MultiHeadAttention`` calls."""
    answers = {
        SHAPE_KINDS[0]: (2, 4, 3, 7),  # (B, h, T_q, T_k): one row per query, per head
        SHAPE_KINDS[1]: (2, 3, 16),  # (B, T_q, d_model): one output per query
        SHAPE_KINDS[2]: 4 * (16 * 16 + 16),  # W^Q, W^K, W^V, W^O with biases, whatever h
        SHAPE_KINDS[3]: (2, 1, 5, 5),  # the head axis stays, of size 1
    }
    return answers[kind]


def _shapes_with(**changes):
    def wrong(kind):
        key = SHAPE_KINDS.index(kind)
        return changes.get(f"k{key}", _reference_predicted_shapes(kind))

    return wrong


_shapes_no_head_axis = _shapes_with(k0=(2, 3, 7), k3=(2, 5, 5))
_shapes_keys_first = _shapes_with(k0=(2, 4, 7, 3))
_shapes_output_follows_keys = _shapes_with(k1=(2, 7, 16))
_shapes_projections_per_head = _shapes_with(k2=4 * 4 * (16 * 16 + 16))
_shapes_no_biases = _shapes_with(k2=4 * 16 * 16)
_shapes_single_head_squeezed = _shapes_with(k3=(2, 5, 5))


def _library_predicted_shapes(kind):
    index = SHAPE_KINDS.index(kind)
    g = torch.Generator().manual_seed(0)
    if index in (0, 1):
        mha = MultiHeadAttention(16, 4)
        out, weights = mha(
            _randn(g, 2, 3, 16), _randn(g, 2, 7, 16), _randn(g, 2, 7, 16), None, True
        )
        return tuple(weights.shape) if index == 0 else tuple(out.shape)
    if index == 2:
        return sum(p.numel() for p in MultiHeadAttention(16, 4).parameters())
    x = _randn(g, 2, 5, 16)
    return tuple(MultiHeadAttention(16, 1)(x, x, x, need_weights=True)[1].shape)


q7 = Question(
    "ch04.q7",
    "Predict the shapes of a multi-head attention call",
    reference=_reference_predicted_shapes,
    cases=lambda: [Case(kind, (kind,)) for kind in SHAPE_KINDS],
    mistakes=[
        Mistake(
            "one head: the head axis dropped",
            _shapes_single_head_squeezed,
            "The shape does not depend on the value of h: with one head the head axis is still "
            "there, with size 1.",
        ),
        Mistake(
            "the head axis left out of the weights",
            _shapes_no_head_axis,
            "Every head computes its own weights: need_weights=True returns (B, h, T_q, T_k).",
        ),
        Mistake(
            "the weights' last two axes swapped (keys before queries)",
            _shapes_keys_first,
            "Row i of a weight matrix belongs to query i and sums to 1 over the keys: "
            "(..., T_q, T_k).",
        ),
        Mistake(
            "the output given the keys' length",
            _shapes_output_follows_keys,
            "Attention answers every query: the output has one row per query, (B, T_q, "
            "d_model), whatever the number of keys.",
        ),
        Mistake(
            "a full set of projections per head",
            _shapes_projections_per_head,
            "The heads share W^Q, W^K, W^V and W^O: each is one d_model x d_model map whose "
            "output is cut into h pieces, so the count does not depend on h.",
        ),
        Mistake(
            "the projections' biases not counted",
            _shapes_no_biases,
            "MultiHeadAttention(d_model, h) has bias=True by default: each of the four nn.Linear "
            "maps adds d_model biases.",
        ),
    ],
    hints=[
        "Queries decide the rows, keys the columns: cross-attention from 3 target positions to "
        "7 source positions gives 3 x 7 weights per head and per sequence.",
        "split_heads turns (B, T, d_model) into (B, h, T, d_head): the head axis comes right "
        "after the batch and stays through the softmax.",
        "Four nn.Linear(d_model, d_model) maps with biases; h does not appear. Return a tuple of "
        "ints for a shape and an int for a count.",
    ],
    kind="predict",
    library=_library_predicted_shapes,
)


# --------------------------------------------------------------------------- q8: debugging


def _reference_fixed_attention(q, k, v, mask=None):
    """Scaled dot-product attention for any leading axes, the mask applied to the scores."""
    d_k = q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)  # (..., T_q, T_k)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))  # hidden keys get weight exactly 0
    weights = torch.softmax(scores, dim=-1)  # the keys are the last axis, with or without heads
    return weights @ v, weights


def _fixed_listing(q, k, v, mask=None):
    scores = torch.matmul(q, k.transpose(-2, -1)) / q.shape[-1] ** 0.5
    weights = torch.softmax(scores, dim=2)
    if mask is not None:
        weights = weights.masked_fill(~mask, 0.0)
    return weights @ v, weights


def _fixed_axis_only(q, k, v, mask=None):
    scores = torch.matmul(q, k.transpose(-2, -1)) / q.shape[-1] ** 0.5
    weights = torch.softmax(scores, dim=-1)
    if mask is not None:
        weights = weights.masked_fill(~mask, 0.0)
    return weights @ v, weights


def _fixed_mask_only(q, k, v, mask=None):
    scores = torch.matmul(q, k.transpose(-2, -1)) / q.shape[-1] ** 0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=2)
    return weights @ v, weights


def _fixed_zero_fill(q, k, v, mask=None):
    scores = torch.matmul(q, k.transpose(-2, -1)) / q.shape[-1] ** 0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, 0.0)
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


def _fixed_cases():
    g = torch.Generator().manual_seed(48)
    q, k, v = _randn(g, 2, 2, 4, 8), _randn(g, 2, 2, 4, 8), _randn(g, 2, 2, 4, 3)
    cases = [Case("heads (2, 2, 4, 8), causal mask (4, 4)", (q, k, v, _causal_mask(4)))]
    q, k, v = _randn(g, 2, 3, 3, 4), _randn(g, 2, 3, 6, 4), _randn(g, 2, 3, 6, 5)
    keys_real = (torch.arange(6)[None, :] < torch.tensor([[6], [4]]))[:, None, None, :]
    cases.append(Case("heads, T_q=3, T_k=6, padding mask (2, 1, 1, 6)", (q, k, v, keys_real)))
    q, k, v = _randn(g, 1, 5, 4), _randn(g, 1, 5, 4), _randn(g, 1, 5, 2)
    cases.append(Case("no heads, no mask (the listing's own test)", (q, k, v)))
    q, k, v = _randn(g, 2, 4, 3, 8), _randn(g, 2, 4, 5, 8), _randn(g, 2, 4, 5, 8)
    cases.append(Case("heads, T_q=3, T_k=5, no mask", (q, k, v)))
    return cases


def _library_fixed_attention(q, k, v, mask=None):
    return scaled_dot_product_attention(q, k, v, mask)


q8 = Question(
    "ch04.q8",
    "Fix an attention written before heads and masks",
    reference=_reference_fixed_attention,
    cases=_fixed_cases,
    mistakes=[
        Mistake(
            "the listing unchanged",
            _fixed_listing,
            "Two bugs: dim=2 is the key axis of (B, T_q, T_k) only (with heads it is the "
            "queries), and zeroing weights after the softmax leaves rows that no longer sum "
            "to 1.",
        ),
        Mistake(
            "softmax axis fixed, mask still applied after the softmax",
            _fixed_axis_only,
            "Zeroed weights leave each row summing to less than 1: hide the keys in the scores "
            "(-inf) before the softmax, so the allowed keys share all the weight.",
        ),
        Mistake(
            "mask fixed, softmax still over dim=2",
            _fixed_mask_only,
            "With heads the scores are (B, h, T_q, T_k) and dim=2 normalises over the queries. "
            "Count from the end: the keys are dim=-1 for any number of leading axes.",
        ),
        Mistake(
            "masked scores set to 0 instead of -inf",
            _fixed_zero_fill,
            "A score of 0 is an ordinary score (exp(0) = 1); only -inf becomes a weight of "
            "exactly 0.",
        ),
    ],
    hints=[
        "Run the listing on a (B, h, T, d) input with a causal mask and print the weights: do "
        "the rows sum to 1? Does a query give weight to a key in its future?",
        "Which axis of (B, h, T_q, T_k) holds the keys? Write the softmax's axis so it is right "
        "with and without the head axis.",
        "A mask belongs before the softmax, on the scores, with the value whose exponential "
        "is exactly 0.",
    ],
    kind="debug",
    library=_library_fixed_attention,
)


# --------------------------------------------------------------------------- q9: derivation


def _reference_output_jacobian(q, k, v):
    """d out / d q for one query q (d_k,) over keys k (T_k, d_k) and values v (T_k, d_v),
    out = softmax(k q / sqrt(d_k)) v: a (d_v, d_k) matrix, entry (i, j) = d out_i / d q_j."""
    d_k = q.shape[-1]
    a = torch.softmax(k @ q / math.sqrt(d_k), dim=-1)  # (T_k,): the weights
    softmax_jacobian = torch.diag(a) - torch.outer(a, a)  # d a / d z, (T_k, T_k)
    # out = v^T a, a = softmax(z), z = k q / sqrt(d_k): three factors of the chain rule
    return v.T @ softmax_jacobian @ k / math.sqrt(d_k)  # (d_v, d_k)


def _out_jac_no_scale(q, k, v):
    a = torch.softmax(k @ q / math.sqrt(q.shape[-1]), dim=-1)
    return v.T @ (torch.diag(a) - torch.outer(a, a)) @ k


def _out_jac_unscaled_weights(q, k, v):
    a = torch.softmax(k @ q, dim=-1)
    return v.T @ (torch.diag(a) - torch.outer(a, a)) @ k / math.sqrt(q.shape[-1])


def _out_jac_diag_only(q, k, v):
    a = torch.softmax(k @ q / math.sqrt(q.shape[-1]), dim=-1)
    return v.T @ torch.diag(a) @ k / math.sqrt(q.shape[-1])


def _out_jac_sign_flipped(q, k, v):
    a = torch.softmax(k @ q / math.sqrt(q.shape[-1]), dim=-1)
    return v.T @ (torch.outer(a, a) - torch.diag(a)) @ k / math.sqrt(q.shape[-1])


def _out_jac_transposed(q, k, v):
    a = torch.softmax(k @ q / math.sqrt(q.shape[-1]), dim=-1)
    return k.T @ (torch.diag(a) - torch.outer(a, a)) @ v / math.sqrt(q.shape[-1])


def _out_jac_weights_constant(q, k, v):
    return torch.zeros(v.shape[-1], q.shape[-1], dtype=q.dtype)


def _out_jac_linear(q, k, v):  # the softmax's own derivative skipped: as if a = z
    return v.T @ k / math.sqrt(q.shape[-1])


def _out_jac_cases():
    g = torch.Generator().manual_seed(49)

    def rnd(*shape, scale=1.0):
        return scale * torch.randn(*shape, generator=g, dtype=torch.float64)

    aligned_k = rnd(4, 6)
    big_q = torch.tensor([20.0, 0.0, 0.0, 0.0], dtype=torch.float64)  # d_k = 4: z = 10 k[:, 0]
    top = torch.tensor([[150.0], [149.9], [100.0], [-30.0], [149.75]], dtype=torch.float64)
    big_k = torch.cat([top, rnd(5, 3)], dim=1)  # scaled scores 1500, 1499, 1000, -300, 1497.5
    return [
        Case("random: T_k = 5, d_k = 4, d_v = 3", (rnd(4, scale=2.0), rnd(5, 4), rnd(5, 3))),
        Case("random: T_k = 3, d_k = d_v = 8", (rnd(8, scale=2.0), rnd(3, 8), rnd(3, 8))),
        Case(
            "q = 0: uniform weights, T_k = 4, d_k = 2, d_v = 5",
            (rnd(2, scale=0.0), rnd(4, 2), rnd(4, 5)),
        ),
        Case("edge: one key (T_k = 1)", (rnd(3), rnd(1, 3), rnd(1, 2))),
        Case("edge: d_k = 1 (no scaling)", (rnd(1), rnd(6, 1, scale=2.0), rnd(6, 2))),
        Case(
            "one key close to the query: weights near one-hot, T_k = 4, d_k = 6",
            (2.0 * aligned_k[0] + 0.1 * rnd(6), aligned_k, rnd(4, 3)),
        ),
        Case(
            "scaled scores near 1500, the two largest 1 apart: exp overflows unless shifted",
            (big_q, big_k, rnd(5, 3)),
        ),
        Case(
            "values in the thousands, scores near 1",
            (rnd(5, scale=0.5), rnd(6, 5), rnd(6, 4, scale=3000.0)),
        ),
    ]


def _library_output_jacobian(q, k, v):
    def out(query):  # the library's attention for one query, (d_v,)
        return scaled_dot_product_attention(query[None, None], k[None], v[None])[0][0, 0]

    with torch.enable_grad():
        return torch.autograd.functional.jacobian(out, q)


q9 = Question(
    "ch04.q9",
    "How the output moves with the query",
    reference=_reference_output_jacobian,
    cases=_out_jac_cases,
    mistakes=[
        Mistake(
            "the chain-rule factor 1/sqrt(d_k) left out",
            _out_jac_no_scale,
            "The softmax sees z = k q / sqrt(d_k), so d z / d q = k / sqrt(d_k): the factor "
            "1/sqrt(d_k) stays in the product.",
        ),
        Mistake(
            "the weights taken at the unscaled scores",
            _out_jac_unscaled_weights,
            "The weights are softmax(k q / sqrt(d_k)): evaluate the softmax's Jacobian at the "
            "scaled scores, not at k q.",
        ),
        Mistake(
            "the term -a a^T left out",
            _out_jac_diag_only,
            "Each weight depends on every score through the normalising sum: the softmax's "
            "Jacobian is diag(a) - a a^T, not diag(a).",
        ),
        Mistake(
            "the sign flipped",
            _out_jac_sign_flipped,
            "Raising a score raises its own weight: the softmax's Jacobian is diag(a) - a a^T.",
        ),
        Mistake(
            "the transpose: (d_k, d_v) instead of (d_v, d_k)",
            _out_jac_transposed,
            "Row i of the Jacobian belongs to out_i and column j to q_j: v^T (...) k, "
            "of shape (d_v, d_k).",
        ),
        Mistake(
            "the weights treated as constants: all zeros",
            _out_jac_weights_constant,
            "The weights depend on q through the scores; only v is constant here. Differentiate "
            "through the softmax.",
        ),
        Mistake(
            "the softmax's derivative skipped: v^T k / sqrt(d_k)",
            _out_jac_linear,
            "Between the scores and the output sits the softmax: multiply by its Jacobian "
            "diag(a) - a a^T in the middle.",
        ),
    ],
    hints=[
        "Three steps: z = k q / sqrt(d_k) (T_k scores), a = softmax(z), out = v^T a. "
        "Write the Jacobian of each step, then multiply them in order (the chain rule).",
        "d z / d q = k / sqrt(d_k), of shape (T_k, d_k); d out / d a = v^T, of shape "
        "(d_v, T_k); the softmax's Jacobian sits between them.",
        "Compute the weights with torch.softmax (it subtracts the maximum for you) and check "
        "the shape of your product: (d_v, d_k).",
    ],
    atol=1e-12,
    rtol=1e-11,  # a float32 answer fails on its values, and the feedback names its dtype
    kind="derive",
    library=_library_output_jacobian,
    forbidden=(  # "use the formula, not autograd"
        "aten._softmax_backward_data",
        "torch.Tensor.backward",
        "torch.autograd.backward",
        "torch.autograd.grad",
        "torch.autograd.functional.jacobian",
        "torch.autograd.functional.vjp",
        "torch.autograd.functional.jvp",
        "torch.func.jacrev",
        "torch.func.jacfwd",
        "torch.func.vjp",
        "torch.func.jvp",
        "torch.func.grad",
    ),
)


# --------------------------------------------------------------------------- q10: build


class _ReferencePooling(nn.Module):
    """Attention pooling: one learned query reads the whole sequence (cross-attention from a
    single query), giving one d_model vector per sequence; built on MultiHeadAttention."""

    def __init__(self, d_model, n_heads):
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, 1, d_model))  # learned, shared by all inputs
        self.attn = MultiHeadAttention(d_model, n_heads)

    def forward(self, x, mask=None):
        asking = self.query.expand(x.shape[0], -1, -1)  # (B, 1, d_model): T_q = 1
        pooled, _ = self.attn(asking, x, x, mask)  # keys and values from the sequence
        return pooled[:, 0]  # (B, d_model)


class _PoolingIgnoresMask(_ReferencePooling):
    def forward(self, x, mask=None):
        return super().forward(x)


class _PoolingKeepsQueryAxis(_ReferencePooling):
    def forward(self, x, mask=None):
        return self.attn(self.query.expand(x.shape[0], -1, -1), x, x, mask)[0]


class _PoolingFirstToken(_ReferencePooling):
    def forward(self, x, mask=None):
        return self.attn(x[:, :1], x, x, mask)[0][:, 0]


def _compare_pooling(expected, got) -> str | None:
    """Give the answer the expected module's weights; compare them on padded batches."""
    d_model = expected.state_dict()["query"].shape[-1]
    g = torch.Generator().manual_seed(410 + d_model)
    probes = []
    for lengths, t in [([5, 3, 1], 5), ([4], 4)]:
        x = torch.randn(len(lengths), t, d_model, generator=g)
        mask = padding_mask(torch.tensor(lengths), max_len=t)  # (B, 1, T)
        x = x.masked_fill(~mask.transpose(1, 2), 50.0)  # loud padding vectors
        where = f"forward(x {tuple(x.shape)}, padding mask for lengths {lengths})"
        probes.append((where, (x, mask)))
    x = torch.randn(2, 4, d_model, generator=g)
    probes.append((f"forward(x {tuple(x.shape)}) with mask not given (its default is None)", (x,)))
    naming = "a parameter named query and a MultiHeadAttention named attn"
    return compare_modules(expected, got, probes, "module", naming)


q10 = Question(
    "ch04.q10",
    "Attention pooling from MultiHeadAttention",
    reference=_ReferencePooling,
    cases=lambda: [
        Case("d_model=8, n_heads=2", (8, 2), seed=101),
        Case("d_model=12, n_heads=3", (12, 3), seed=102),
    ],
    mistakes=[
        Mistake(
            "the padding mask not passed to the attention",
            _PoolingIgnoresMask,
            "Padding vectors are not part of the sentence: pass mask to MultiHeadAttention so "
            "the query gives them weight 0.",
        ),
        Mistake(
            "the query axis kept: (B, 1, d_model)",
            _PoolingKeepsQueryAxis,
            "One query gives one output row per sequence; drop that axis of size 1 to return "
            "(B, d_model).",
        ),
        Mistake(
            "the first token used as the query",
            _PoolingFirstToken,
            "The query is the learned parameter, the same for every sequence; the sequence "
            "supplies only the keys and values.",
        ),
    ],
    hints=[
        "This is cross-attention with a single query: the query comes from a learned "
        "nn.Parameter of shape (1, 1, d_model), the keys and values from x.",
        "MultiHeadAttention wants a query with the batch size of the keys: expand the "
        "parameter to (B, 1, d_model) (expand does not copy).",
        "attn(query, key, value, mask) returns (output, weights); the output is (B, 1, "
        "d_model), one row per query.",
    ],
    compare_fn=_compare_pooling,
    kind="build",
    library_note=(
        "none: tfbook has no attention pooling; the reference is built on "
        "tfbook.attention.MultiHeadAttention"
    ),
)


EXERCISES = ExerciseSet.collect(globals(), "Chapter 4 exercises")
progress = EXERCISES.progress
__all__ = [*EXERCISES.names, "EXERCISES", "progress"]
