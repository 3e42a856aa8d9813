"""Plausible wrong answers to the re-typing replacements (1.1, 1.5, 2.4, 3.3, 3.4, 4.4, 4.6,
5.1, 5.6, 7.5) that tests/test_wrong_answers_retype.py and _cases.py do not try: every one must
be rejected, with the message a student would need.

They are the mistakes a student makes when the formula is understood but the code is not: a
weight used untransposed, a maximum over the wrong axis, float arithmetic where integers are
exact, a pre-built table, a tuple for a list, a library shortcut reached under another name, an
input changed in place, numpy for torch. Those marked "passed before the question changed" were
accepted until their question got a new case, a requirement, a forbidden call or a named
mistake; the others were already rejected, and the phrase pins the message they get. Same
path as tests/test_wrong_answers.py: ``Question.evaluate``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _wrong_answers import assert_rejected


def _add_parts(q, k, W_q, W_k, w):
    return torch.tanh((q @ W_q.T)[:, :, None] + (k @ W_k.T)[:, None]) @ w


def _add_untransposed_weights(q, k, v, W_q, W_k, w):
    e = torch.tanh((q @ W_q)[:, :, None] + (k @ W_k)[:, None]) @ w  # W as (d_in, d_a)
    return torch.softmax(e, dim=-1) @ v


def _add_global_max(q, k, v, W_q, W_k, w):
    e = _add_parts(q, k, W_q, W_k, w)
    p = (e - e.max()).exp()  # one maximum for the whole batch
    return p / p.sum(dim=-1, keepdim=True) @ v


def _add_max_over_queries(q, k, v, W_q, W_k, w):
    e = _add_parts(q, k, W_q, W_k, w)
    p = (e - e.max(dim=1, keepdim=True).values).exp()
    return p / p.sum(dim=-1, keepdim=True) @ v


def _add_clamped_scores(q, k, v, W_q, W_k, w):
    e = _add_parts(q, k, W_q, W_k, w).clamp(-80, 80)  # "keep exp finite"
    p = e.exp()
    return p / p.sum(dim=-1, keepdim=True) @ v


def _add_float64_exp(q, k, v, W_q, W_k, w):
    e = _add_parts(q, k, W_q, W_k, w).double().exp()  # float64 overflows only past 709
    return (e / e.sum(dim=-1, keepdim=True)).float() @ v


def _add_squeezed(q, k, v, W_q, W_k, w):
    return (torch.softmax(_add_parts(q, k, W_q, W_k, w), dim=-1) @ v).squeeze()


def _add_keys_scored_with_values(q, k, v, W_q, W_k, w):
    e = torch.tanh((q @ W_q.T)[:, :, None] + (v @ W_k.T)[:, None]) @ w
    return torch.softmax(e, dim=-1) @ v


def _add_first_batch_only(q, k, v, W_q, W_k, w):
    e = torch.tanh((q[0] @ W_q.T)[:, None] + (k[0] @ W_k.T)[None]) @ w  # written for B = 1
    return (torch.softmax(e, dim=-1) @ v[0]).expand(q.shape[0], -1, -1)


def _add_transposed_broadcast(q, k, v, W_q, W_k, w):
    e = torch.tanh((q @ W_q.T)[:, None] + (k @ W_k.T)[:, :, None]) @ w  # (B, T_k, T_q)
    return torch.softmax(e, dim=-1).transpose(-2, -1) @ v  # normalised over the queries


def _add_returns_weights(q, k, v, W_q, W_k, w):
    return torch.softmax(_add_parts(q, k, W_q, W_k, w), dim=-1)


def _add_inplace_transpose(q, k, v, W_q, W_k, w):
    e = (
        torch.tanh((q @ W_q.t_())[:, :, None] + (k @ W_k.t_())[:, None]) @ w
    )  # t_ changes the caller's
    return torch.softmax(e, dim=-1) @ v


def _add_numpy(q, k, v, W_q, W_k, w):
    qn, kn, vn = q.numpy(), k.numpy(), v.numpy()
    e = np.tanh((qn @ W_q.numpy().T)[:, :, None] + (kn @ W_k.numpy().T)[:, None]) @ w.numpy()
    e = np.exp(e - e.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)) @ vn


def _add_causal(q, k, v, W_q, W_k, w):
    e = _add_parts(q, k, W_q, W_k, w)
    mask = torch.ones(e.shape[-2:], dtype=torch.bool).tril()
    return torch.softmax(e.masked_fill(~mask, float("-inf")), dim=-1) @ v


def _ctx_float_sqrt_int(budget_bytes, batch, n_heads, n_layers, bytes_per_value=4):
    return int(math.sqrt(budget_bytes / (batch * n_heads * n_layers * bytes_per_value)))


def _ctx_float_sqrt_floor_of_floordiv(budget_bytes, batch, n_heads, n_layers, bytes_per_value=4):
    return math.floor((budget_bytes // (batch * n_heads * n_layers * bytes_per_value)) ** 0.5)


def _ctx_torch(budget_bytes, batch, n_heads, n_layers, bytes_per_value=4):
    t = torch.tensor(budget_bytes / (batch * n_heads * n_layers * bytes_per_value))
    return int(torch.sqrt(t).floor())  # float32 square root


def _ctx_bits(budget_bytes, batch, n_heads, n_layers, bytes_per_value=4):
    return math.isqrt(budget_bytes // (batch * n_heads * n_layers * bytes_per_value * 8))


def _ctx_plus_qkv(budget_bytes, batch, n_heads, n_layers, bytes_per_value=4):
    per = batch * n_heads * n_layers * bytes_per_value
    t = 0
    while per * ((t + 1) ** 2 + 3 * (t + 1)) <= budget_bytes:  # Q, K, V counted too
        t += 1
    return t


def _ctx_numpy_int(budget_bytes, batch, n_heads, n_layers, bytes_per_value=4):
    return np.int64(math.isqrt(budget_bytes // (batch * n_heads * n_layers * bytes_per_value)))


def _ctx_isqrt_before_division(budget_bytes, batch, n_heads, n_layers, bytes_per_value=4):
    return math.isqrt(budget_bytes) // math.isqrt(batch * n_heads * n_layers * bytes_per_value)


def _ctx_divide_sqrt_separately(budget_bytes, batch, n_heads, n_layers, bytes_per_value=4):
    return int(math.sqrt(budget_bytes) / math.sqrt(batch * n_heads * n_layers * bytes_per_value))


def _ctx_returns_float_half(budget_bytes, batch, n_heads, n_layers, bytes_per_value=4):
    return math.isqrt(budget_bytes // (batch * n_heads * n_layers * bytes_per_value)) * 1.0


def _merge(symbols, a, b):
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and symbols[i] == a and symbols[i + 1] == b:
            out.append(a + b)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def _bpe_tuple(chunk, merges):
    symbols = list(chunk)
    for a, b in merges:
        symbols = _merge(symbols, a, b)
    return tuple(symbols)


def _bpe_pops_merges(chunk, merges):
    symbols = list(chunk)
    while merges:
        a, b = merges.pop(0)  # empties the caller's list
        symbols = _merge(symbols, a, b)
    return symbols


def _bpe_sorted_merges(chunk, merges):
    symbols = list(chunk)
    for a, b in sorted(merges):
        symbols = _merge(symbols, a, b)
    return symbols


def _bpe_bytes(chunk, merges):
    symbols = [chr(c) for c in chunk.encode("utf-8")]  # GPT-2 works on bytes
    for a, b in merges:
        symbols = _merge(symbols, a, b)
    return symbols


def _bpe_drops_last(chunk, merges):
    symbols = list(chunk)
    for a, b in merges:
        out, i = [], 0
        while i < len(symbols) - 1:
            if symbols[i] == a and symbols[i + 1] == b:
                out.append(a + b)
                i += 2
            else:
                out.append(symbols[i])
                i += 1
        symbols = out  # the last symbol is lost when not merged
    return symbols


def _bpe_private_tokenizer(chunk, merges):
    from tfbook import tokenizers as t

    alphabet = sorted(set(chunk) | {ch for a, b in merges for ch in a + b})
    method = "token" + "ize"  # the name spelt in two pieces
    return getattr(t.BPETokenizer(merges, alphabet), method)(chunk)


def _bpe_encode_decode(chunk, merges):
    from tfbook.tokenizers import BPETokenizer

    alphabet = sorted(set(chunk) | {ch for a, b in merges for ch in a + b})
    tok = BPETokenizer(merges, alphabet)
    return [tok.decode([i]) for i in tok.encode(chunk)]


def _bpe_partial(chunk, merges):
    from tfbook.tokenizers import BPETokenizer

    alphabet = sorted(set(chunk) | {ch for a, b in merges for ch in a + b})
    f = functools.partial(BPETokenizer.tokenize, BPETokenizer(merges, alphabet))
    return f(chunk)


def _bpe_skip_space(chunk, merges):
    symbols = list(chunk)
    head = []
    if symbols and symbols[0] == " ":
        head, symbols = [" "], symbols[1:]  # the space kept apart, never merged
    for a, b in merges:
        symbols = _merge(symbols, a, b)
    return head + symbols


def _slopes(n, dtype=torch.float32):
    return 2.0 ** (-8.0 * torch.arange(1, n + 1, dtype=dtype) / n)


def _dist(t_q, t_k):
    return (torch.arange(t_k - t_q, t_k)[:, None] - torch.arange(t_k)[None, :]).float()


_POSITIONS_4096 = torch.arange(4096)  # a table built once, for max_len 4096


def _alibi_table_4096(n_heads, t_q, t_k):
    _t = _POSITIONS_4096
    back = (_t[t_k - t_q : t_k, None] - _t[None, :t_k]).float()  # short beyond 4096
    return (-_slopes(n_heads)[:, None, None] * back).masked_fill(back < 0, float("-inf"))


def _alibi_finfo_min(n_heads, t_q, t_k):
    d = _dist(t_q, t_k)
    return (-_slopes(n_heads)[:, None, None] * d).masked_fill(d < 0, torch.finfo(torch.float32).min)


def _alibi_integer_exponent(n_heads, t_q, t_k):
    h = torch.arange(1, n_heads + 1)
    m = 2.0 ** (-(8 * h // n_heads)).float()
    d = _dist(t_q, t_k)
    return (-m[:, None, None] * d).masked_fill(d < 0, float("-inf"))


def _alibi_paper_power_of_two(n_heads, t_q, t_k):
    def pow2(n):
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(n_heads).is_integer():
        s = pow2(n_heads)
    else:
        c = 2 ** math.floor(math.log2(n_heads))
        s = pow2(c) + pow2(2 * c)[0::2][: n_heads - c]
    d = _dist(t_q, t_k)
    return (-torch.tensor(s)[:, None, None] * d).masked_fill(d < 0, float("-inf"))


def _alibi_last_query_distance(n_heads, t_q, t_k):
    d = (t_k - 1 - torch.arange(t_k)).float().expand(t_q, t_k)  # every query as the newest
    i = torch.arange(t_k - t_q, t_k)[:, None]
    return (-_slopes(n_heads)[:, None, None] * d).masked_fill(
        torch.arange(t_k)[None] > i, float("-inf")
    )


def _alibi_triu_offset(n_heads, t_q, t_k):
    d = _dist(t_q, t_k).abs()
    future = torch.ones(t_q, t_k, dtype=torch.bool).triu(diagonal=t_k - t_q + 2)  # one off
    return (-_slopes(n_heads)[:, None, None] * d).masked_fill(future, float("-inf"))


def _alibi_heads_last(n_heads, t_q, t_k):
    d = _dist(t_q, t_k)
    return (-_slopes(n_heads) * d[..., None]).masked_fill(d[..., None] < 0, float("-inf"))


def _alibi_squeezed(n_heads, t_q, t_k):
    d = _dist(t_q, t_k)
    return (-_slopes(n_heads)[:, None, None] * d).masked_fill(d < 0, float("-inf")).squeeze()


def _alibi_numpy(n_heads, t_q, t_k):
    d = np.arange(t_k - t_q, t_k)[:, None] - np.arange(t_k)[None, :]
    m = 2.0 ** (-8.0 * np.arange(1, n_heads + 1) / n_heads)
    b = -m[:, None, None] * d
    b[:, d < 0] = -np.inf
    return b.astype(np.float32)


def _alibi_ln_slopes(n_heads, t_q, t_k):
    m = torch.exp(-8.0 * torch.arange(1, n_heads + 1) / n_heads)  # e^ instead of 2^
    d = _dist(t_q, t_k)
    return (-m[:, None, None] * d).masked_fill(d < 0, float("-inf"))


def _th(d, dtype=torch.float64):
    return 10000.0 ** (-torch.arange(0, d, 2, dtype=dtype) / d)


def _pi_float32_result(seq_len, d, train_len):
    m = torch.arange(seq_len, dtype=torch.float64)
    if seq_len > train_len:
        m = m * train_len / seq_len
    return torch.outer(m, _th(d)).float()  # float32 returned


def _pi_theta_float32(seq_len, d, train_len):
    m = torch.arange(seq_len, dtype=torch.float64)
    if seq_len > train_len:
        m = m * train_len / seq_len
    return torch.outer(m, _th(d, torch.float32).double())  # frequencies in float32


def _pi_pos_float32(seq_len, d, train_len):
    m = torch.arange(seq_len, dtype=torch.float32)
    if seq_len > train_len:
        m = m * train_len / seq_len
    return torch.outer(m.double(), _th(d))


def _pi_linspace(seq_len, d, train_len):
    if seq_len > train_len:
        m = torch.linspace(0, train_len, seq_len, dtype=torch.float64)  # endpoint included
    else:
        m = torch.arange(seq_len, dtype=torch.float64)
    return torch.outer(m, _th(d))


def _pi_arange_step(seq_len, d, train_len):
    step = train_len / seq_len if seq_len > train_len else 1.0
    m = torch.arange(0, train_len if seq_len > train_len else seq_len, step, dtype=torch.float64)
    return torch.outer(m, _th(d))  # arange with a float step: its length may be off by one


def _pi_one_based(seq_len, d, train_len):
    m = torch.arange(1, seq_len + 1, dtype=torch.float64)
    if seq_len > train_len:
        m = m * train_len / seq_len
    return torch.outer(m, _th(d))


def _pi_full_width(seq_len, d, train_len):
    m = torch.arange(seq_len, dtype=torch.float64)
    if seq_len > train_len:
        m = m * train_len / seq_len
    return torch.outer(m, 10000.0 ** (-torch.arange(0, d, dtype=torch.float64) / d))


def _pi_int_positions(seq_len, d, train_len):
    m = torch.arange(seq_len)  # int64
    if seq_len > train_len:
        m = m * train_len // seq_len  # integer division of the product
    return torch.outer(m.double(), _th(d))


def _pi_sin_cos(seq_len, d, train_len):
    m = torch.arange(seq_len, dtype=torch.float64)
    if seq_len > train_len:
        m = m * train_len / seq_len
    a = torch.outer(m, _th(d))
    return torch.cat([a.cos(), a.sin()], dim=-1)[:, : d // 2]


def _pi_numpy(seq_len, d, train_len):
    m = np.arange(seq_len, dtype=np.float64)
    if seq_len > train_len:
        m = m * train_len / seq_len
    return np.outer(m, 10000.0 ** (-np.arange(0, d, 2) / d))


def _pi_base_10000_float(seq_len, d, train_len):
    m = torch.arange(seq_len, dtype=torch.float64)
    if seq_len > train_len:
        m = m * train_len / seq_len
    return torch.outer(
        m, 1.0 / (10000 ** (torch.arange(0, d, 2) / d)).double()
    )  # int arange / d -> float32


def _s(t):
    return torch.arange(t)


def _pfx_lengths_from_count(ids, prefix_len, pad_id):
    b, t = ids.shape
    lengths = (ids != pad_id).sum(dim=1)  # padding assumed at the end
    s = _s(t)
    vis = (s[None, :] <= s[:, None])[None] | (s[None, :] < prefix_len[:, None])[:, None, :]
    return vis & (s[None, :] < lengths[:, None])[:, None, :]


def _pfx_inverted(ids, prefix_len, pad_id):
    s = _s(ids.shape[1])
    vis = (s[None, :] <= s[:, None])[None] | (s[None, :] < prefix_len[:, None])[:, None, :]
    return ~(vis & (ids != pad_id)[:, None, :])  # True where attention is blocked


def _pfx_head_axis(ids, prefix_len, pad_id):
    s = _s(ids.shape[1])
    vis = (s[None, :] <= s[:, None])[None] | (s[None, :] < prefix_len[:, None])[:, None, :]
    return (vis & (ids != pad_id)[:, None, :])[:, None]  # (B, 1, T, T) for the heads


def _pfx_pad_both(ids, prefix_len, pad_id):
    s = _s(ids.shape[1])
    vis = (s[None, :] <= s[:, None])[None] | (s[None, :] < prefix_len[:, None])[:, None, :]
    real = ids != pad_id
    return vis & real[:, None, :] & real[:, :, None]  # padding queries hidden too


def _pfx_strict_diag(ids, prefix_len, pad_id):
    t = ids.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool).tril(diagonal=-1)  # strictly before
    return (causal[None] | (_s(t)[None, :] < prefix_len[:, None])[:, None, :]) & (ids != pad_id)[
        :, None, :
    ]


def _pfx_item(ids, prefix_len, pad_id):
    t = ids.shape[1]
    p = int(prefix_len.max())  # one prefix for the batch
    s = _s(t)
    vis = (s[None, :] <= s[:, None]) | (s[None, :] < p)
    return vis[None] & (ids != pad_id)[:, None, :]


def _pfx_long(ids, prefix_len, pad_id):
    s = _s(ids.shape[1])
    vis = (s[None, :] <= s[:, None])[None] | (s[None, :] < prefix_len[:, None])[:, None, :]
    return (vis & (ids != pad_id)[:, None, :]).long()


def _pfx_prefix_over_queries(ids, prefix_len, pad_id):
    s = _s(ids.shape[1])
    vis = (s[None, :] <= s[:, None])[None] | (s < prefix_len[:, None])[:, :, None]  # rows
    return vis & (ids != pad_id)[:, None, :]


def _pfx_loop_lengths(ids, prefix_len, pad_id):
    b, t = ids.shape
    out = torch.zeros(b, t, t, dtype=torch.bool)
    for r in range(b):
        n = int((ids[r] != pad_id).sum())
        p = int(prefix_len[r])
        out[r, :, :n] = torch.ones(t, n, dtype=torch.bool).tril()
        out[r, :, : min(p, n)] = True
    return out


def _proj(x, w, n, dh):
    b, t, _ = x.shape
    return (x @ w).view(b, t, n, dh).transpose(1, 2)


def _attend(q, k, v, dh):
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(dh), dim=-1) @ v


def _gqa_sdpa(x, w_q, w_k, w_v, w_o, n_heads, n_kv_heads=None):
    b, t, d = x.shape
    kv = n_kv_heads or n_heads
    dh = d // n_heads
    q, k, v = _proj(x, w_q, n_heads, dh), _proj(x, w_k, kv, dh), _proj(x, w_v, kv, dh)
    g = n_heads // kv
    out = F.scaled_dot_product_attention(q, k.repeat_interleave(g, 1), v.repeat_interleave(g, 1))
    return out.transpose(1, 2).reshape(b, t, d) @ w_o


def _gqa_scale_by_dmodel(x, w_q, w_k, w_v, w_o, n_heads, n_kv_heads=None):
    b, t, d = x.shape
    kv = n_kv_heads or n_heads
    dh = d // n_heads
    q, k, v = _proj(x, w_q, n_heads, dh), _proj(x, w_k, kv, dh), _proj(x, w_v, kv, dh)
    g = n_heads // kv
    out = torch.softmax(
        q @ k.repeat_interleave(g, 1).transpose(-2, -1) / math.sqrt(d), -1
    ) @ v.repeat_interleave(g, 1)
    return out.transpose(1, 2).reshape(b, t, d) @ w_o


def _gqa_dh_from_kv(x, w_q, w_k, w_v, w_o, n_heads, n_kv_heads=None):
    b, t, d = x.shape
    kv = n_kv_heads or n_heads
    dh = w_k.shape[1] // kv
    q, k, v = _proj(x, w_q, n_heads, dh), _proj(x, w_k, kv, dh), _proj(x, w_v, kv, dh)
    g = n_heads // kv
    out = torch.softmax(
        q @ k.repeat_interleave(g, 1).transpose(-2, -1) / math.sqrt(d // kv), -1
    ) @ v.repeat_interleave(g, 1)
    return out.transpose(1, 2).reshape(b, t, d) @ w_o  # scale with n_kv_heads' width


def _gqa_default_zero(x, w_q, w_k, w_v, w_o, n_heads, n_kv_heads=None):
    kv = n_kv_heads if n_kv_heads else 1  # None read as "one shared head"
    b, t, d = x.shape
    dh = d // n_heads
    q, k, v = _proj(x, w_q, n_heads, dh), _proj(x, w_k, kv, dh), _proj(x, w_v, kv, dh)
    g = n_heads // kv
    out = _attend(q, k.repeat_interleave(g, 1), v.repeat_interleave(g, 1), dh)
    return out.transpose(1, 2).reshape(b, t, d) @ w_o


def _gqa_causal(x, w_q, w_k, w_v, w_o, n_heads, n_kv_heads=None):
    b, t, d = x.shape
    kv = n_kv_heads or n_heads
    dh = d // n_heads
    q, k, v = _proj(x, w_q, n_heads, dh), _proj(x, w_k, kv, dh), _proj(x, w_v, kv, dh)
    g = n_heads // kv
    out = F.scaled_dot_product_attention(
        q, k.repeat_interleave(g, 1), v.repeat_interleave(g, 1), is_causal=True
    )
    return out.transpose(1, 2).reshape(b, t, d) @ w_o


def _gqa_wo_transposed(x, w_q, w_k, w_v, w_o, n_heads, n_kv_heads=None):
    b, t, d = x.shape
    kv = n_kv_heads or n_heads
    dh = d // n_heads
    q, k, v = _proj(x, w_q, n_heads, dh), _proj(x, w_k, kv, dh), _proj(x, w_v, kv, dh)
    g = n_heads // kv
    out = _attend(q, k.repeat_interleave(g, 1), v.repeat_interleave(g, 1), dh)
    return out.transpose(1, 2).reshape(b, t, d) @ w_o.T  # nn.Linear's layout


def _gqa_softmax_over_queries(x, w_q, w_k, w_v, w_o, n_heads, n_kv_heads=None):
    b, t, d = x.shape
    kv = n_kv_heads or n_heads
    dh = d // n_heads
    q, k, v = _proj(x, w_q, n_heads, dh), _proj(x, w_k, kv, dh), _proj(x, w_v, kv, dh)
    g = n_heads // kv
    s = q @ k.repeat_interleave(g, 1).transpose(-2, -1) / math.sqrt(dh)
    out = torch.softmax(s, dim=-2) @ v.repeat_interleave(g, 1)
    return out.transpose(1, 2).reshape(b, t, d) @ w_o


def _gqa_integer_division_group(x, w_q, w_k, w_v, w_o, n_heads, n_kv_heads=None):
    b, t, d = x.shape
    kv = n_kv_heads or n_heads
    dh = d // n_heads
    q, k, v = _proj(x, w_q, n_heads, dh), _proj(x, w_k, kv, dh), _proj(x, w_v, kv, dh)
    idx = torch.arange(n_heads) % kv  # head i -> kv head i mod n_kv
    out = _attend(q, k[:, idx], v[:, idx], dh)
    return out.transpose(1, 2).reshape(b, t, d) @ w_o


def _gqa_einsum_group(x, w_q, w_k, w_v, w_o, n_heads, n_kv_heads=None):
    b, t, d = x.shape
    kv = n_kv_heads or n_heads
    dh = d // n_heads
    g = n_heads // kv
    q = (x @ w_q).view(b, t, g, kv, dh)  # groups as the outer index: heads (0, kv, 2kv, ...)
    k = (x @ w_k).view(b, t, kv, dh)
    v = (x @ w_v).view(b, t, kv, dh)
    s = torch.einsum("btgjd,bsjd->bgjts", q, k) / math.sqrt(dh)
    out = torch.einsum("bgjts,bsjd->btgjd", torch.softmax(s, -1), v)
    return out.reshape(b, t, d) @ w_o


def _gqa_float64(x, w_q, w_k, w_v, w_o, n_heads, n_kv_heads=None):
    from tfbook.exercises.ch04 import grouped_query_attention as ref

    return ref(
        x.double(), w_q.double(), w_k.double(), w_v.double(), w_o.double(), n_heads, n_kv_heads
    )


def _gqa_library_mha(x, w_q, w_k, w_v, w_o, n_heads, n_kv_heads=None):
    kv = n_kv_heads or n_heads
    b, t, d = x.shape
    dh = d // n_heads
    g = n_heads // kv
    w_k_full = w_k.view(d, kv, dh).repeat_interleave(g, 1).reshape(d, d)
    w_v_full = w_v.view(d, kv, dh).repeat_interleave(g, 1).reshape(d, d)
    out, _ = F.multi_head_attention_forward(
        x.transpose(0, 1),
        x.transpose(0, 1),
        x.transpose(0, 1),
        d,
        n_heads,
        None,
        None,
        None,
        None,
        False,
        0.0,
        w_o.T,
        None,
        training=False,
        need_weights=False,
        use_separate_proj_weight=True,
        q_proj_weight=w_q.T,
        k_proj_weight=w_k_full.T,
        v_proj_weight=w_v_full.T,
    )
    return out.transpose(0, 1)


def _swi_silu_times_beta(x, w_gate, w_up, w_down, beta=1.0):
    z = x @ w_gate
    return (beta * F.silu(z) * (x @ w_up)) @ w_down


def _swi_silu_of_beta_z(x, w_gate, w_up, w_down, beta=1.0):
    z = x @ w_gate
    return (F.silu(beta * z) * (x @ w_up)) @ w_down  # beta z sigmoid(beta z)


def _swi_gate_on_up(x, w_gate, w_up, w_down, beta=1.0):
    u = x @ w_up
    return ((x @ w_gate) * u * torch.sigmoid(beta * u)) @ w_down


def _swi_fp16(x, w_gate, w_up, w_down, beta=1.0):
    z = (x @ w_gate).half()
    return ((z * torch.sigmoid(beta * z)).float() * (x @ w_up)) @ w_down


def _swi_tanh_sigmoid(x, w_gate, w_up, w_down, beta=1.0):
    z = x @ w_gate
    sig = 0.5 * (1 + torch.tanh(beta * z))  # forgot the 1/2 inside tanh
    return (z * sig * (x @ w_up)) @ w_down


def _swi_numpy(x, w_gate, w_up, w_down, beta=1.0):
    z = x.numpy() @ w_gate.numpy()
    swish = z * 0.5 * (1 + np.tanh(beta * z / 2))  # z sigmoid(beta z), without overflow
    return (swish * (x.numpy() @ w_up.numpy())) @ w_down.numpy()


def _wid_round_to_multiple_then_check(d_model, d_ff, multiple_of=1):
    h = int(2 * (4 * d_model) / 3)  # LLaMA's 4d rule, d_ff ignored
    return h // multiple_of * multiple_of


def _wid_llama_code(d_model, d_ff, multiple_of=1):
    h = int(2 * d_ff / 3)
    return multiple_of * ((h + multiple_of - 1) // multiple_of)


def _wid_floor_2dff_over3(d_model, d_ff, multiple_of=1):
    return (2 * d_ff) // 3 // multiple_of * multiple_of


def _wid_numpy(d_model, d_ff, multiple_of=1):
    return np.int64(
        (2 * d_model * d_ff + d_ff + d_model) // (3 * d_model) // multiple_of * multiple_of
    )


def _wid_b1_only_dff_plus_dmodel_wrong(d_model, d_ff, multiple_of=1):
    budget = 2 * d_model * d_ff + 2 * d_ff  # b2 counted as d_ff
    return budget // (3 * d_model) // multiple_of * multiple_of


def _wid_swiglu_counts_b2(d_model, d_ff, multiple_of=1):
    budget = 2 * d_model * d_ff + d_ff  # SwiGLU keeps b2, so only b1 is freed
    return budget // (3 * d_model) // multiple_of * multiple_of


def _wid_round_first(d_model, d_ff, multiple_of=1):
    h = round((2 * d_model * d_ff + d_ff + d_model) / (3 * d_model))
    return h // multiple_of * multiple_of


def _wid_search_from_multiple(d_model, d_ff, multiple_of=1):
    budget = 2 * d_model * d_ff + d_ff + d_model
    h = multiple_of  # starts at one multiple: never returns 0
    while 3 * d_model * (h + multiple_of) <= budget:
        h += multiple_of
    return h


def _wid_mod_subtract(d_model, d_ff, multiple_of=1):
    h = (2 * d_model * d_ff + d_ff + d_model) // (3 * d_model)
    return h - h % multiple_of + (multiple_of if h % multiple_of else 0)


def _tp_cum_gt(logits, p):
    if p >= 1.0:
        return logits.clone()
    sl, order = torch.sort(logits, dim=-1, descending=True, stable=True)
    probs = torch.softmax(sl, -1)
    drop = (probs.cumsum(-1) - probs) > p  # > instead of >=
    return logits.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), float("-inf"))


def _tp_unstable_sort(logits, p):
    if p >= 1.0:
        return logits.clone()
    sl, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sl, -1)
    drop = (probs.cumsum(-1) - probs) >= p
    return logits.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), float("-inf"))


def _tp_argsort_ascending_flip(logits, p):
    if p >= 1.0:
        return logits.clone()
    order = torch.argsort(logits, dim=-1, stable=True).flip(-1)  # ties: higher index first
    sl = logits.gather(-1, order)
    probs = torch.softmax(sl, -1)
    drop = (probs.cumsum(-1) - probs) >= p
    return logits.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), float("-inf"))


def _tp_threshold_logit(logits, p):
    if p >= 1.0:
        return logits.clone()
    sl, order = torch.sort(logits, dim=-1, descending=True, stable=True)
    probs = torch.softmax(sl, -1)
    n = ((probs.cumsum(-1) - probs) < p).sum(-1, keepdim=True)
    cut = sl.gather(-1, n - 1)
    return logits.masked_fill(logits < cut, float("-inf"))  # ties at the cut all kept


def _tp_2d_only(logits, p):
    if p >= 1.0:
        return logits.clone()
    out = logits.clone()
    for r in range(logits.shape[0]):
        row = logits[r]
        sl, order = torch.sort(row, descending=True, stable=True)
        probs = torch.softmax(sl, -1)
        drop = (probs.cumsum(-1) - probs) >= p
        out[r, order[drop]] = float("-inf")
    return out


def _tp_inplace(logits, p):
    if p >= 1.0:
        return logits
    sl, order = torch.sort(logits, dim=-1, descending=True, stable=True)
    probs = torch.softmax(sl, -1)
    drop = (probs.cumsum(-1) - probs) >= p
    return logits.masked_fill_(torch.zeros_like(drop).scatter(-1, order, drop), float("-inf"))


def _tp_library_alias(logits, p):
    import tfbook.generate as g

    return getattr(g, "top_" + "p_filter")(logits, p)


def _tp_dim0(logits, p):
    if p >= 1.0:
        return logits.clone()
    sl, order = torch.sort(logits, dim=-1, descending=True, stable=True)
    probs = torch.softmax(sl, 0)  # softmax over the batch axis
    drop = (probs.cumsum(-1) - probs) >= p
    return logits.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), float("-inf"))


def _tp_gather_not_scatter(logits, p):
    if p >= 1.0:
        return logits.clone()
    sl, order = torch.sort(logits, dim=-1, descending=True, stable=True)
    probs = torch.softmax(sl, -1)
    drop = (probs.cumsum(-1) - probs) >= p
    return logits.masked_fill(drop.gather(-1, order), float("-inf"))  # gather is the inverse


def _tp_min_tokens_one_p_small(logits, p):
    sl, order = torch.sort(logits, dim=-1, descending=True, stable=True)
    probs = torch.softmax(sl, -1)
    drop = probs.cumsum(-1) - probs >= p
    drop[..., -1] = drop[..., -1] & (p < 1.0)  # p = 1 patched for the last token only
    return logits.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), float("-inf"))


def _swi_inplace_weight(x, w_gate, w_up, w_down, beta=1.0):
    bz = x @ w_gate.mul_(beta)  # beta folded into the caller's weight
    return (bz / beta * torch.sigmoid(bz) * (x @ w_up)) @ w_down


def _swi_first_batch(x, w_gate, w_up, w_down, beta=1.0):
    z = x[0] @ w_gate  # written for B = 1
    return ((z * torch.sigmoid(beta * z) * (x[0] @ w_up)) @ w_down).expand_as(x)


def _swi_down_T(x, w_gate, w_up, w_down, beta=1.0):
    z = x @ w_gate
    return (z * torch.sigmoid(beta * z) * (x @ w_up)) @ w_down.T


def _swi_relu_gate(x, w_gate, w_up, w_down, beta=1.0):
    return (torch.relu(x @ w_gate) * (x @ w_up)) @ w_down  # ReGLU


def _swi_silu_over_beta_zero(x, w_gate, w_up, w_down, beta=1.0):
    return (F.silu(beta * (x @ w_gate)) / beta * (x @ w_up)) @ w_down  # right unless beta = 0


def _tp_topk(logits, p):
    if p >= 1.0:
        return logits.clone()
    sl, order = torch.topk(logits, logits.shape[-1], dim=-1)  # ties in no promised order
    probs = torch.softmax(sl, -1)
    drop = (probs.cumsum(-1) - probs) >= p
    return logits.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), float("-inf"))


def _gqa_group_size_misread(x, w_q, w_k, w_v, w_o, n_heads, n_kv_heads=None):
    b, t, d = x.shape
    g = n_kv_heads or 1  # n_kv_heads read as the size of a group
    kv = n_heads // g
    dh = d // n_heads
    q, k, v = _proj(x, w_q, n_heads, dh), _proj(x, w_k, kv, dh), _proj(x, w_v, kv, dh)
    out = _attend(q, k.repeat_interleave(g, 1), v.repeat_interleave(g, 1), dh)
    return out.transpose(1, 2).reshape(b, t, d) @ w_o


WRONG = {
    "ch01.q1": [
        (_add_causal, "expected -0.07085, got -2.736"),
        (_add_clamped_scores, "expected 2.600, got 0.7288"),
        (_add_first_batch_only, "expected -1.119, got -0.3047"),
        (
            _add_float64_exp,
            "exp in float64 without subtracting the maximum",
        ),  # passed before the question changed
        (_add_global_max, "output: contains NaN (first at index (0, 2, 0))"),
        (_add_inplace_transpose, "the function modified its input argument 'W_q' in place"),
        (_add_keys_scored_with_values, "expected -0.1016, got -2.504"),
        (_add_max_over_queries, "expected -0.5717, got -0.01460"),
        (_add_numpy, "expected a torch.Tensor, got ndarray"),
        (_add_returns_weights, "output: wrong shape: expected (2, 4, 6), got (2, 4, 4)"),
        (_add_squeezed, "output: wrong shape: expected (3, 1, 4), got (3, 4)"),
        (_add_transposed_broadcast, "softmax over the queries instead of the keys"),
        (_add_untransposed_weights, "expected -0.1016, got -1.001"),
    ],
    "ch01.q5": [
        (_ctx_bits, "expected T = 1000, got T = 353"),
        (
            _ctx_divide_sqrt_separately,
            "square root taken in floating point",
        ),  # passed before the question changed
        (
            _ctx_float_sqrt_floor_of_floordiv,
            "square root taken in floating point",
        ),  # passed before the question changed
        (
            _ctx_float_sqrt_int,
            "square root taken in floating point",
        ),  # passed before the question changed
        (_ctx_isqrt_before_division, "expected T = 1000, got T = 1088"),
        (_ctx_numpy_int, "expected an int, got int64"),
        (_ctx_plus_qkv, "expected T = 1000, got T = 998"),
        (_ctx_returns_float_half, "expected an int, got float"),
        (_ctx_torch, "square root rounded to the nearest integer"),
    ],
    "ch02.q4": [
        (_bpe_bytes, "expected 1 items, got 10"),
        (_bpe_drops_last, "the last symbol lost when it is not merged"),
        (_bpe_encode_decode, "calls tfbook.tokenizers.BPETokenizer.encode"),
        (_bpe_partial, "calls tfbook.tokenizers.BPETokenizer.tokenize"),
        (_bpe_pops_merges, "the function modified its input argument 'merges' in place"),
        (_bpe_private_tokenizer, "calls tfbook.tokenizers.BPETokenizer.tokenize"),
        (_bpe_skip_space, "the leading space kept apart from the merges"),
        (
            _bpe_sorted_merges,
            "merged as far as the vocabulary allows, not in the order the merges were learnt",
        ),
        (_bpe_tuple, "expected a list of strings, got tuple"),  # passed before the question changed
    ],
    "ch03.q3": [
        (_alibi_finfo_min, "expected -inf, got -3.403e+38"),
        (_alibi_heads_last, "output: wrong shape: expected (8, 5, 5), got (5, 5, 8)"),
        (_alibi_integer_exponent, "expected -0.4725, got -0.7500"),
        (_alibi_last_query_distance, "expected 0, got -2.000"),
        (_alibi_ln_slopes, "expected -2.000, got -1.472"),
        (_alibi_numpy, "expected a torch.Tensor, got ndarray"),
        (_alibi_paper_power_of_two, "expected -0.01172, got -0.7500"),
        (_alibi_squeezed, "output: wrong shape: expected (1, 4, 4), got (4, 4)"),
        (
            _alibi_table_4096,
            "output: wrong shape: expected (2, 1, 10000), got (2, 0, 4096)",
        ),  # passed before the question changed
        (_alibi_triu_offset, "expected -inf, got -0.5000"),
    ],
    "ch03.q4": [
        (
            _pi_arange_step,
            "positions as arange(0, train_len, train_len / seq_len)",
        ),  # passed before the question changed
        (_pi_base_10000_float, "expected 0.4177430, got 0.4177429"),
        (_pi_float32_result, "expected torch.float64, got torch.float32"),
        (_pi_full_width, "output: wrong shape: expected (64, 4), got (64, 8)"),
        (_pi_int_positions, "expected 0.7500, got 0"),
        (_pi_linspace, "positions spread by linspace(0, L, T): the last one lands on L"),
        (_pi_numpy, "expected a torch.Tensor, got ndarray"),
        (_pi_one_based, "expected 0, got 0.2500"),
        (_pi_pos_float32, "positions computed in float32, cast to float64 afterwards"),
        (_pi_sin_cos, "expected 15.75, got -0.9991"),
        (_pi_theta_float32, "frequencies computed in float32, cast to float64 afterwards"),
    ],
    "ch04.q4": [
        (_pfx_head_axis, "output: wrong shape: expected (2, 6, 6), got (2, 1, 6, 6)"),
        (_pfx_inverted, "True where attention is blocked (the inverse convention)"),
        (_pfx_item, "expected False, got True"),
        (
            _pfx_lengths_from_count,
            "padding found by counting: every pad_id taken to sit at the end of the row",
        ),
        (_pfx_long, "expected torch.bool, got torch.int64"),
        (
            _pfx_loop_lengths,
            "padding found by counting: every pad_id taken to sit at the end of the row",
        ),
        (_pfx_pad_both, "padding applied to the queries (rows) instead of the keys (columns)"),
        (_pfx_prefix_over_queries, "expected False, got True"),
        (_pfx_strict_diag, "a query cannot read its own position"),
    ],
    "ch04.q6": [
        (_gqa_causal, "calls torch.nn.functional.scaled_dot_product_attention"),
        (
            _gqa_default_zero,
            "raised RuntimeError: shape '[1, 4, 1, 4]' is invalid for input of size 32",
        ),
        (_gqa_group_size_misread, "is invalid for input of size 24"),
        (_gqa_dh_from_kv, "expected 0.5351, got 0.3976"),
        (_gqa_einsum_group, "key/value heads tiled: query head i reads key head i % n_kv_heads"),
        (
            _gqa_float64,
            "your answer is float64, the input was float32",
        ),  # passed before the question changed
        (
            _gqa_integer_division_group,
            "key/value heads tiled: query head i reads key head i % n_kv_heads",
        ),
        (
            _gqa_library_mha,
            "calls torch.nn.functional.scaled_dot_product_attention",
        ),  # passed before the question changed
        (_gqa_scale_by_dmodel, "scaled by sqrt(d_model) instead of sqrt(d_head)"),
        (
            _gqa_sdpa,
            "calls torch.nn.functional.scaled_dot_product_attention",
        ),  # passed before the question changed
        (_gqa_softmax_over_queries, "expected -1.034, got -1.773"),
        (_gqa_wo_transposed, "expected 0.9418, got -0.8873"),
    ],
    "ch05.q1": [
        (
            _swi_down_T,
            "raised RuntimeError: mat1 and mat2 shapes cannot be multiplied (6x6 and 4x6)",
        ),
        (_swi_first_batch, "expected 0.8190, got -0.04402"),
        (_swi_fp16, "values differ in 12 of 24 entries"),  # float16 rounding: 3e-4
        (_swi_gate_on_up, "the two branches swapped: Swish applied to x V"),
        (_swi_inplace_weight, "the function modified its input argument 'w_gate' in place"),
        (_swi_numpy, "expected a torch.Tensor, got ndarray"),
        (_swi_relu_gate, "ReLU instead of Swish (ReGLU)"),
        (_swi_silu_of_beta_z, "expected -0.7906, got -1.977"),
        (
            _swi_silu_over_beta_zero,
            "SiLU(beta z) / beta: 0 / 0 when beta = 0",
        ),  # passed before the question changed
        (_swi_silu_times_beta, "beta multiplies the output instead of the sigmoid's argument"),
        (_swi_tanh_sigmoid, "expected 0.6624, got 0.7960"),
    ],
    "ch05.q6": [
        (_wid_b1_only_dff_plus_dmodel_wrong, "expected width 1367, got 1368"),
        (_wid_floor_2dff_over3, "the ReLU network's biases not counted (2 d_ff / 3)"),
        (_wid_llama_code, "the ReLU network's biases not counted (2 d_ff / 3)"),
        (_wid_mod_subtract, "rounded up to the multiple"),
        (_wid_numpy, "expected an int, got int64"),
        (_wid_round_first, "rounded to the nearest multiple"),
        (_wid_round_to_multiple_then_check, "the ReLU network's biases not counted (2 d_ff / 3)"),
        (_wid_search_from_multiple, "rounded up to the multiple"),
        (_wid_swiglu_counts_b2, "expected width 1367, got 1366"),
    ],
    "ch07.q5": [
        (_tp_2d_only, "raised IndexError: index 7 is out of bounds for dimension 0 with size 3"),
        (_tp_argsort_ascending_flip, "expected -inf, got 1.000"),
        (_tp_cum_gt, "expected -inf, got 0"),
        (_tp_dim0, "expected -inf, got -2.252"),
        (_tp_gather_not_scatter, "expected -inf, got 0.5321"),
        (_tp_inplace, "the function modified its input argument 'logits' in place"),
        (_tp_library_alias, "calls tfbook.generate.top_p_filter"),
        (_tp_min_tokens_one_p_small, "output: contains inf (first at index (0, 0))"),
        (_tp_threshold_logit, "expected -inf, got 1.000"),
        (_tp_topk, "expected -inf, got 1.000"),
        (_tp_unstable_sort, "expected -inf, got 1.000"),
    ],
}
PAIRS = [(qid, fn, phrase) for qid, found in WRONG.items() for fn, phrase in found]


@pytest.mark.parametrize(
    ("qid", "wrong", "phrase"), PAIRS, ids=[f"{q}-{fn.__name__}" for q, fn, _ in PAIRS]
)
def test_wrong_answer_is_rejected_with_a_useful_message(qid, wrong, phrase):
    assert_rejected(qid, wrong, phrase)
