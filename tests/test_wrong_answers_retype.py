"""Plausible wrong answers to the questions that replaced re-typing questions: every one must
be rejected, with the message a student would need.

Each question here asks for something the chapter did not print (additive attention, the
longest context that fits a memory budget, ...), so a student cannot copy it from above. The
wrong answers are written as a student would write them: off by one, wrong axis, missing or
extra scale, a library shortcut, float32 where float64 is needed. Each entry names the part of
the feedback that must appear (the named mistake, or the comparison's own line when no known
mistake matches). Same path as tests/test_wrong_answers.py: ``Question.evaluate``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from _wrong_answers import assert_rejected

# --------------------------------------------------------------------------- 1.1 additive


def _additive_softmax_dim1(q, k, v, W_q, W_k, w):
    e = torch.tanh((q @ W_q.T)[:, :, None] + (k @ W_k.T)[:, None]) @ w
    return torch.softmax(e, dim=1) @ v  # dim 1 is the queries' axis


def _additive_diagonal_only(q, k, v, W_q, W_k, w):
    e = torch.tanh(q @ W_q.T + k @ W_k.T) @ w  # q_i paired with k_i only: (B, T) scores
    alpha = torch.softmax(e, dim=-1)
    return alpha[:, None, :] @ v  # every query gets the same average


def _additive_no_tanh(q, k, v, W_q, W_k, w):
    e = ((q @ W_q.T)[:, :, None] + (k @ W_k.T)[:, None]) @ w  # linear: the query cancels
    return torch.softmax(e, dim=-1) @ v


def _additive_untransposed_einsum(q, k, v, W_q, W_k, w):
    qa = torch.einsum("btd,da->bta", q, W_q.T)
    ka = torch.einsum("bsd,ad->bsa", k, W_k)
    e = torch.einsum("btsa,a->bts", torch.tanh(qa[:, :, None] + ka[:, None]), w)
    return torch.einsum("bts,bsd->btd", e.exp() / e.exp().sum(-1, keepdim=True), v)


def _additive_scaled_sqrt_dk(q, k, v, W_q, W_k, w):
    e = torch.tanh((q @ W_q.T)[:, :, None] + (k @ W_k.T)[:, None]) @ w
    return torch.softmax(e / math.sqrt(k.shape[-1]), dim=-1) @ v


def _additive_minus_mean(q, k, v, W_q, W_k, w):
    e = torch.tanh((q @ W_q.T)[:, :, None] + (k @ W_k.T)[:, None]) @ w
    p = (e - e.mean(dim=-1, keepdim=True)).exp()  # the mean is not the maximum
    return p / p.sum(dim=-1, keepdim=True) @ v


def _additive_sum_not_average(q, k, v, W_q, W_k, w):
    e = torch.tanh((q @ W_q.T)[:, :, None] + (k @ W_k.T)[:, None]) @ w
    return torch.sigmoid(e) @ v  # a gate per key, not weights that sum to 1


# --------------------------------------------------------------------------- 1.5 context


def _context_float_int(budget_bytes, batch, n_heads, n_layers, bytes_per_value=4):
    return math.sqrt(budget_bytes / (batch * n_heads * n_layers * bytes_per_value)) // 1  # float


def _context_numpy_floor(budget_bytes, batch, n_heads, n_layers, bytes_per_value=4):
    import numpy as np

    return np.floor(np.sqrt(budget_bytes / (batch * n_heads * n_layers * bytes_per_value)))


def _context_ignores_bytes(budget_bytes, batch, n_heads, n_layers, bytes_per_value=4):
    return math.isqrt(budget_bytes // (batch * n_heads * n_layers * 4))  # always float32


def _context_at_least_one(budget_bytes, batch, n_heads, n_layers, bytes_per_value=4):
    return max(1, math.isqrt(budget_bytes // (batch * n_heads * n_layers * bytes_per_value)))


def _context_strictly_less(budget_bytes, batch, n_heads, n_layers, bytes_per_value=4):
    t = 0
    while batch * n_heads * n_layers * (t + 1) ** 2 * bytes_per_value < budget_bytes:
        t += 1  # "fits" read as strictly below the budget
    return t


def _context_gib_rounded(budget_bytes, batch, n_heads, n_layers, bytes_per_value=4):
    per = batch * n_heads * n_layers * bytes_per_value
    return int(math.sqrt(round(budget_bytes / per, -3)))  # a calculator's rounded quotient


def _context_no_batch(budget_bytes, batch, n_heads, n_layers, bytes_per_value=4):
    return math.isqrt(budget_bytes // (n_heads * n_layers * bytes_per_value))


# --------------------------------------------------------------------------- 2.4 BPE encode


def _bpe_library_shortcut(chunk, merges):
    from tfbook.tokenizers import BPETokenizer

    alphabet = sorted(set(chunk) | {ch for a, b in merges for ch in a + b})
    return BPETokenizer(merges, alphabet).tokenize(chunk)


def _bpe_leftmost_known_pair(chunk, merges):
    known = {tuple(m) for m in merges}
    symbols = list(chunk)
    while True:  # merge the leftmost known pair until none is left: position, not rank
        for i in range(len(symbols) - 1):
            if (symbols[i], symbols[i + 1]) in known:
                symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]
                break
        else:
            return symbols


def _bpe_strip_space(chunk, merges):
    symbols = list(chunk.strip())  # the leading space is part of the chunk
    for a, b in merges:
        out, i = [], 0
        while i < len(symbols):
            if symbols[i : i + 2] == [a, b]:
                out.append(a + b)
                i += 2
            else:
                out.append(symbols[i])
                i += 1
        symbols = out
    return symbols


def _bpe_joined_string_replace(chunk, merges):
    text = " ".join(chunk)  # symbols separated by spaces: but a space is a symbol too
    for a, b in merges:
        text = text.replace(f"{a} {b}", a + b)
    return text.split(" ")


def _bpe_concatenation_equal(chunk, merges):
    symbols = list(chunk)
    for a, b in merges:
        out, i = [], 0
        while i < len(symbols):
            if (
                i + 1 < len(symbols) and symbols[i] + symbols[i + 1] == a + b
            ):  # "a"+"bc" == "ab"+"c"
                out.append(a + b)
                i += 2
            else:
                out.append(symbols[i])
                i += 1
        symbols = out
    return symbols


def _bpe_latest_rank_first_loop(chunk, merges):
    rank = {tuple(m): r for r, m in enumerate(merges)}
    symbols = list(chunk)
    while len(symbols) > 1:
        present = [p for p in zip(symbols, symbols[1:], strict=False) if p in rank]
        if not present:
            break
        a, b = max(present, key=rank.get)  # the newest merge present, not the oldest
        out, i = [], 0
        while i < len(symbols):
            if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == (a, b):
                out.append(a + b)
                i += 2
            else:
                out.append(symbols[i])
                i += 1
        symbols = out
    return symbols


def _bpe_in_place_skips_one(chunk, merges):
    symbols = list(chunk)
    for a, b in merges:
        i = 0
        while i < len(symbols) - 1:
            if symbols[i] == a and symbols[i + 1] == b:
                symbols[i : i + 2] = [a + b]
                i += 2  # "jump by 2", but the list is already one shorter
            else:
                i += 1
    return symbols


# --------------------------------------------------------------------------- 3.3 ALiBi


def _alibi_slopes(n_heads):
    return 2.0 ** (-8.0 * torch.arange(1, n_heads + 1) / n_heads)


_TABLE = torch.arange(1024)[:, None] - torch.arange(1024)[None, :]  # built once, max_len 1024


def _alibi_prebuilt_table(n_heads, t_q, t_k):
    back = _TABLE[t_k - t_q : t_k, :t_k].float()  # silently short beyond 1024 positions
    bias = -_alibi_slopes(n_heads)[:, None, None] * back
    return bias.masked_fill(back < 0, float("-inf"))


def _alibi_float64(n_heads, t_q, t_k):
    back = (torch.arange(t_k - t_q, t_k)[:, None] - torch.arange(t_k)[None, :]).double()
    m = 2.0 ** (-8.0 * torch.arange(1, n_heads + 1, dtype=torch.float64) / n_heads)
    return (-m[:, None, None] * back).masked_fill(back < 0, float("-inf"))  # float64


def _alibi_diagonal_masked(n_heads, t_q, t_k):
    back = (torch.arange(t_k - t_q, t_k)[:, None] - torch.arange(t_k)[None, :]).float()
    bias = -_alibi_slopes(n_heads)[:, None, None] * back
    return bias.masked_fill(back <= 0, float("-inf"))  # a query may read itself


def _alibi_minus_1e9(n_heads, t_q, t_k):
    back = (torch.arange(t_k - t_q, t_k)[:, None] - torch.arange(t_k)[None, :]).float()
    bias = -_alibi_slopes(n_heads)[:, None, None] * back
    return bias.masked_fill(back < 0, -1e9)  # "minus a large number" instead of -inf


def _alibi_slopes_ascending(n_heads, t_q, t_k):
    back = (torch.arange(t_k - t_q, t_k)[:, None] - torch.arange(t_k)[None, :]).float()
    bias = -_alibi_slopes(n_heads).flip(0)[:, None, None] * back  # smallest slope first
    return bias.masked_fill(back < 0, float("-inf"))


def _alibi_tril_mask(n_heads, t_q, t_k):
    back = (torch.arange(t_k - t_q, t_k)[:, None] - torch.arange(t_k)[None, :]).float()
    bias = -_alibi_slopes(n_heads)[:, None, None] * back
    allowed = torch.ones(t_q, t_k, dtype=torch.bool).tril()  # assumes queries start at 0
    return bias.masked_fill(~allowed, float("-inf"))


def _alibi_slopes_halving_from_one(n_heads, t_q, t_k):
    back = (torch.arange(t_k - t_q, t_k)[:, None] - torch.arange(t_k)[None, :]).float()
    m = 0.5 ** torch.arange(n_heads)  # 1, 1/2, 1/4, ...
    return (-m[:, None, None] * back).masked_fill(back < 0, float("-inf"))


# --------------------------------------------------------------------------- 4.4 prefix LM


def _prefix_float_mask(ids, prefix_len, pad_id):
    t = ids.shape[1]
    visible = (
        torch.tril(torch.ones(t, t))[None]
        + (torch.arange(t) < prefix_len[:, None])[:, None, :].float()
    )
    return visible.clamp(max=1) * (ids != pad_id)[:, None, :].float()  # 0/1 floats


def _prefix_eight_by_eight(ids, prefix_len, pad_id):
    causal = torch.ones(8, 8, dtype=torch.bool).tril()  # a table built for T <= 8
    t = ids.shape[1]
    in_prefix = (torch.arange(t) < prefix_len[:, None])[:, None, :]
    return (causal[:t, :t] | in_prefix) & (ids != pad_id)[:, None, :]


def _prefix_triu(ids, prefix_len, pad_id):
    t = ids.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool).triu()  # upper triangle: the future
    in_prefix = (torch.arange(t) < prefix_len[:, None])[:, None, :]
    return (causal | in_prefix) & (ids != pad_id)[:, None, :]


def _prefix_and_instead_of_or(ids, prefix_len, pad_id):
    t = ids.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    in_prefix = (torch.arange(t) < prefix_len[:, None])[:, None, :]
    return causal & in_prefix & (ids != pad_id)[:, None, :]


def _prefix_loop_in_place(ids, prefix_len, pad_id):
    b, t = ids.shape
    mask = torch.ones(t, t, dtype=torch.bool).tril().expand(b, t, t)  # a view: one storage
    for row in range(b):
        mask[row, :, : prefix_len[row]] = True  # writes into every row at once
    return mask & (ids != pad_id)[:, None, :]


def _prefix_pad_id_zero(ids, prefix_len, pad_id):
    t = ids.shape[1]
    visible = (
        torch.ones(t, t, dtype=torch.bool).tril()
        | (torch.arange(t) < prefix_len[:, None])[:, None, :]
    )
    return visible & (ids != 0)[:, None, :]  # pad_id assumed to be 0


# --------------------------------------------------------------------------- 5.6 SwiGLU width


def _width_two_thirds_rule(d_model, d_ff, multiple_of=1):
    h = int(2 * d_ff / 3)  # the "2/3 of 4 d" rule of thumb, biases forgotten
    return multiple_of * ((h + multiple_of - 1) // multiple_of)  # LLaMA rounds up


def _width_float_division(d_model, d_ff, multiple_of=1):
    h = (2 * d_model * d_ff + d_ff + d_model) / (3 * d_model)
    return h // multiple_of * multiple_of  # a float: 1367.0


def _width_ceil_then_floor(d_model, d_ff, multiple_of=1):
    h = math.ceil((2 * d_model * d_ff + d_ff + d_model) / (3 * d_model))  # may exceed
    return h // multiple_of * multiple_of


def _width_strictly_fewer(d_model, d_ff, multiple_of=1):
    budget = 2 * d_model * d_ff + d_ff + d_model
    h = 0
    while 3 * d_model * (h + multiple_of) < budget:  # "fewer", where equal is allowed
        h += multiple_of
    return h


def _width_only_one_bias(d_model, d_ff, multiple_of=1):
    budget = 2 * d_model * d_ff + d_ff  # b2 forgotten
    return budget // (3 * d_model) // multiple_of * multiple_of


def _width_relu_without_matrix_count(d_model, d_ff, multiple_of=1):
    budget = d_model * d_ff + d_ff + d_model  # one matrix for the ReLU network
    return budget // (3 * d_model) // multiple_of * multiple_of


def _width_at_least_one_multiple(d_model, d_ff, multiple_of=1):
    h = (2 * d_model * d_ff + d_ff + d_model) // (3 * d_model) // multiple_of * multiple_of
    return max(h, multiple_of)  # "a width of 0 makes no sense"


# --------------------------------------------------------------------------- 5.1 SwiGLU


def _swiglu_beta_default_zero(x, w_gate, w_up, w_down, beta=0.0):  # the default is 1
    z = x @ w_gate
    return (z * torch.sigmoid(beta * z) * (x @ w_up)) @ w_down


def _swiglu_beta_required(x, w_gate, w_up, w_down, beta):
    z = x @ w_gate
    return (z * torch.sigmoid(beta * z) * (x @ w_up)) @ w_down


def _swiglu_exp_formula(x, w_gate, w_up, w_down, beta=1.0):
    z = x @ w_gate
    swish = z * torch.exp(beta * z) / (1 + torch.exp(beta * z))  # inf / inf for large z
    return (swish * (x @ w_up)) @ w_down


def _swiglu_nn_linear_layout(x, w_gate, w_up, w_down, beta=1.0):
    z = x @ w_gate.T  # nn.Linear's layout, W stored as (d_ff, d_model)
    return (z * torch.sigmoid(beta * z) * (x @ w_up.T)) @ w_down.T


def _swiglu_silu_only(x, w_gate, w_up, w_down, beta=1.0):
    return (F.silu(x @ w_gate) * (x @ w_up)) @ w_down  # SiLU whatever beta says


def _swiglu_divide_by_beta(x, w_gate, w_up, w_down, beta=1.0):
    z = x @ w_gate
    return (z * torch.sigmoid(z / beta) * (x @ w_up)) @ w_down


def _swiglu_added_branches(x, w_gate, w_up, w_down, beta=1.0):
    z = x @ w_gate
    return (z * torch.sigmoid(beta * z) + (x @ w_up)) @ w_down  # + instead of *


# --------------------------------------------------------------------------- 4.6 GQA


def _gqa_parts(x, w_q, w_k, w_v, n_heads, n_kv_heads):
    b, t, d = x.shape
    kv, dh = n_kv_heads or n_heads, d // n_heads
    q = (x @ w_q).view(b, t, n_heads, dh).transpose(1, 2)
    k = (x @ w_k).view(b, t, kv, dh).transpose(1, 2)
    v = (x @ w_v).view(b, t, kv, dh).transpose(1, 2)
    return q, k, v, n_heads // kv, dh


def _gqa_unshifted(x, w_q, w_k, w_v, w_o, n_heads, n_kv_heads=None):
    q, k, v, g, dh = _gqa_parts(x, w_q, w_k, w_v, n_heads, n_kv_heads)
    k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
    e = (q @ k.transpose(-2, -1) / math.sqrt(dh)).exp()  # no max subtracted
    out = (e / e.sum(dim=-1, keepdim=True)) @ v
    return out.transpose(1, 2).reshape(x.shape) @ w_o


def _gqa_expand_view(x, w_q, w_k, w_v, w_o, n_heads, n_kv_heads=None):
    q, k, v, g, dh = _gqa_parts(x, w_q, w_k, w_v, n_heads, n_kv_heads)
    b, kv, t, _ = k.shape
    # expand along a new axis after the heads, then flatten: heads (0, 1, 0, 1, ...)
    k = k[:, None].expand(b, g, kv, t, dh).reshape(b, g * kv, t, dh)
    v = v[:, None].expand(b, g, kv, t, dh).reshape(b, g * kv, t, dh)
    out = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(dh), dim=-1) @ v
    return out.transpose(1, 2).reshape(x.shape) @ w_o


def _gqa_default_mqa(x, w_q, w_k, w_v, w_o, n_heads, n_kv_heads=1):  # the default is n_heads
    q, k, v, g, dh = _gqa_parts(x, w_q, w_k, w_v, n_heads, n_kv_heads)
    k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
    out = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(dh), dim=-1) @ v
    return out.transpose(1, 2).reshape(x.shape) @ w_o


def _gqa_strided_kv_heads(x, w_q, w_k, w_v, w_o, n_heads, n_kv_heads=None):
    b, t, d = x.shape
    kv = n_kv_heads or n_heads
    dh = d // n_heads
    q = (x @ w_q).view(b, t, n_heads, dh).transpose(1, 2)
    k = (x @ w_k).view(b, t, dh, kv).permute(0, 3, 1, 2)  # head j = features j, j + kv, ...
    v = (x @ w_v).view(b, t, dh, kv).permute(0, 3, 1, 2)
    k, v = k.repeat_interleave(n_heads // kv, dim=1), v.repeat_interleave(n_heads // kv, dim=1)
    out = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(dh), dim=-1) @ v
    return out.transpose(1, 2).reshape(b, t, d) @ w_o


def _gqa_mean_of_queries(x, w_q, w_k, w_v, w_o, n_heads, n_kv_heads=None):
    q, k, v, g, dh = _gqa_parts(x, w_q, w_k, w_v, n_heads, n_kv_heads)
    b, h, t, _ = q.shape
    q_group = q.view(b, h // g, g, t, dh).mean(dim=2)  # one query per group: too few heads
    out = torch.softmax(q_group @ k.transpose(-2, -1) / math.sqrt(dh), dim=-1) @ v
    out = out.repeat_interleave(g, dim=1)
    return out.transpose(1, 2).reshape(x.shape) @ w_o


def _gqa_no_transpose_back(x, w_q, w_k, w_v, w_o, n_heads, n_kv_heads=None):
    q, k, v, g, dh = _gqa_parts(x, w_q, w_k, w_v, n_heads, n_kv_heads)
    k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
    out = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(dh), dim=-1) @ v
    return out.reshape(x.shape) @ w_o  # (B, h, T, d_head) read as (B, T, h, d_head)


# --------------------------------------------------------------------------- 3.4 interpolation


def _theta(d, dtype=torch.float64):
    return 10000.0 ** (-torch.arange(0, d, 2, dtype=dtype) / d)


def _pi_default_float32(seq_len, d, train_len):
    m = torch.arange(seq_len).float()  # float32 positions and frequencies
    if seq_len > train_len:
        m = m * train_len / seq_len
    return torch.outer(m, _theta(d, torch.float32)).double()  # cast at the end: too late


def _pi_integer_division(seq_len, d, train_len):
    m = torch.arange(seq_len, dtype=torch.float64)
    if seq_len > train_len:
        m = m * (train_len // seq_len)  # integer division: 0
    return torch.outer(m, _theta(d))


def _pi_floor_positions(seq_len, d, train_len):
    m = torch.arange(seq_len, dtype=torch.float64)
    if seq_len > train_len:
        m = torch.floor(m * train_len / seq_len)  # whole positions only
    return torch.outer(m, _theta(d))


def _pi_greater_equal(seq_len, d, train_len):
    m = torch.arange(seq_len, dtype=torch.float64)
    if seq_len >= train_len:
        m = m * (train_len - 1) / (seq_len - 1)  # the last position onto the last trained one
    return torch.outer(m, _theta(d))


def _pi_positions_over_length(seq_len, d, train_len):
    m = torch.arange(seq_len, dtype=torch.float64) / seq_len * train_len  # also when T <= L
    return torch.outer(m, _theta(d))


def _pi_clamped(seq_len, d, train_len):
    m = torch.arange(seq_len, dtype=torch.float64).clamp(max=train_len - 1)  # clipping
    return torch.outer(m, _theta(d))


def _pi_interleaved_columns(seq_len, d, train_len):
    m = torch.arange(seq_len, dtype=torch.float64)
    if seq_len > train_len:
        m = m * train_len / seq_len
    angles = torch.outer(m, _theta(d))
    return angles.repeat_interleave(2, dim=1)  # one column per feature, not per pair


# --------------------------------------------------------------------------- the test

# qid -> [(wrong answer, a phrase its feedback must contain)]
WRONG = {
    "ch01.q1": [
        (_additive_softmax_dim1, "softmax over the queries instead of the keys"),
        (_additive_diagonal_only, "output"),
        (_additive_no_tanh, "tanh left out"),
        (_additive_untransposed_einsum, "softmax without subtracting the maximum"),
        (_additive_scaled_sqrt_dk, "output"),
        (_additive_minus_mean, "contains NaN"),
        (_additive_sum_not_average, "output"),
    ],
    "ch01.q5": [
        (_context_float_int, "expected an int, got float"),
        (_context_numpy_floor, "expected an int"),
        (_context_ignores_bytes, "expected T = 3344, got T = 2364"),
        (_context_at_least_one, "expected T = 0, got T = 1"),
        (_context_strictly_less, "expected T = 1000, got T = 999"),
        (_context_gib_rounded, "got T"),
        (_context_no_batch, "expected T = 1000, got T = 1414"),
    ],
    "ch02.q4": [
        (_bpe_library_shortcut, "calls tfbook.tokenizers.BPETokenizer.tokenize"),
        (_bpe_leftmost_known_pair, "not in the order the merges were learnt"),
        (_bpe_strip_space, "expected 1 items, got 2"),
        (_bpe_joined_string_replace, "expected 2 items, got 1"),
        (_bpe_concatenation_equal, "expected 2 items, got 1"),
        (_bpe_latest_rank_first_loop, "merges replayed newest first"),
        (_bpe_in_place_skips_one, "output"),
    ],
    "ch03.q3": [
        (_alibi_prebuilt_table, "expected (2, 1, 10000), got (2, 0, 1024)"),
        (_alibi_float64, "wrong dtype: expected torch.float32, got torch.float64"),
        (_alibi_diagonal_masked, "the diagonal masked"),
        (_alibi_minus_1e9, "expected -inf, got -1000000000"),
        (_alibi_slopes_ascending, "expected -2.000, got -0.01562"),
        (_alibi_tril_mask, "causal mask placed as if the queries were positions 0"),
        (_alibi_slopes_halving_from_one, "slopes counted from h = 0"),
    ],
    "ch04.q4": [
        (_prefix_float_mask, "wrong dtype: expected torch.bool, got torch.float32"),
        (_prefix_eight_by_eight, "The size of tensor a (8) must match the size of tensor b (40)"),
        (_prefix_triu, "upper triangle"),
        (_prefix_and_instead_of_or, "combined with AND"),
        (_prefix_loop_in_place, "expected False, got True (2 of 72 entries differ)"),
        (_prefix_pad_id_zero, "the padding ignored"),
    ],
    "ch05.q6": [
        (_width_two_thirds_rule, "biases not counted"),
        (_width_float_division, "expected an int, got float 1367.0"),
        (_width_ceil_then_floor, "expected width 7, got 8"),
        (_width_strictly_fewer, "expected width 1367, got 1366"),
        (_width_only_one_bias, "expected width 1367, got 1366"),
        (_width_relu_without_matrix_count, "expected width 1367, got 684"),
        (_width_at_least_one_multiple, "expected width 0, got 64"),
    ],
    "ch05.q1": [
        (_swiglu_beta_default_zero, "beta not given (its default is 1)"),
        (_swiglu_beta_required, "missing 1 required positional argument: 'beta'"),
        (_swiglu_exp_formula, "contains NaN"),
        (_swiglu_nn_linear_layout, "mat1 and mat2 shapes cannot be multiplied"),
        (_swiglu_silu_only, "beta ignored (always 1)"),
        (_swiglu_divide_by_beta, "output"),
        (_swiglu_added_branches, "output"),
    ],
    "ch04.q6": [
        (_gqa_unshifted, "contains NaN"),
        (_gqa_expand_view, "key/value heads tiled"),
        (_gqa_default_mqa, "n_kv_heads not given: multi-head"),
        (_gqa_strided_kv_heads, "output"),
        (_gqa_mean_of_queries, "values differ in 80 of 80 entries"),
        (_gqa_no_transpose_back, "heads merged without moving the head axis back"),
    ],
    "ch03.q4": [
        (_pi_default_float32, "angles computed in float32"),
        (_pi_integer_division, "output"),
        (_pi_floor_positions, "output"),
        (_pi_greater_equal, "output"),
        (_pi_positions_over_length, "positions scaled even when the sequence fits"),
        (_pi_clamped, "output"),
        (_pi_interleaved_columns, "wrong shape"),
    ],
}
PAIRS = [(qid, fn, phrase) for qid, found in WRONG.items() for fn, phrase in found]


@pytest.mark.parametrize(
    ("qid", "wrong", "phrase"), PAIRS, ids=[f"{q}-{fn.__name__}" for q, fn, _ in PAIRS]
)
def test_wrong_answer_is_rejected_with_a_useful_message(qid, wrong, phrase):
    assert_rejected(qid, wrong, phrase)
