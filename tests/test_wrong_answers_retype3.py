"""Plausible wrong answers to the questions that replaced the last re-typing questions: every
one must be rejected, with the message a student would need.

Each question here asks for something its chapter does not print (GELU's slope without
autograd, RMSNorm, the parallel block of GPT-J and PaLM, ...), so it cannot be answered by
copying code from above it. The wrong answers are written as a student would write them: a
finite difference instead of the formula, a constant rounded or cast to float32, eps in the
wrong place or with the wrong default, the wrong axis, an in-place update of the input, a
block wired one step off. Each entry names a part of the feedback that must appear (the named
mistake, or the comparison's own line when no known mistake matches). Same path as
tests/test_wrong_answers.py: ``Question.evaluate``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from _wrong_answers import assert_rejected
from torch import nn

from tfbook.attention import SelfAttention, causal_mask
from tfbook.feedforward import PositionwiseFeedForward
from tfbook.norm import LayerNorm

# --------------------------------------------------------------------------- 1.2 the GRU loop


def _gru_step(x_t, h, W_ih, W_hh, b_ih, b_hh, *, use_reset=True):
    H = h.shape[-1]
    gi, gh = x_t @ W_ih.T + b_ih, h @ W_hh.T + b_hh  # (B, 3H) each
    r = torch.sigmoid(gi[:, :H] + gh[:, :H])
    z = torch.sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])
    n = torch.tanh(gi[:, 2 * H :] + (r if use_reset else 1.0) * gh[:, 2 * H :])
    return (1 - z) * n + z * h


def _gru_order_z_r_n(x, h0, W_ih, W_hh, b_ih, b_hh):
    H = h0.shape[-1]
    h, outputs = h0, []
    for t in range(x.shape[1]):
        gi, gh = x[:, t] @ W_ih.T + b_ih, h @ W_hh.T + b_hh
        z = torch.sigmoid(gi[:, :H] + gh[:, :H])  # "update gate first", as in some papers
        r = torch.sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])
        n = torch.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
        h = (1 - z) * n + z * h
        outputs.append(h)
    return torch.stack(outputs, dim=1)


def _gru_chunk_wrong_axis(x, h0, W_ih, W_hh, b_ih, b_hh):
    W_ir, W_iz, W_in = W_ih.chunk(3, dim=1)  # the input axis, not the stacked one
    W_hr, W_hz, W_hn = W_hh.chunk(3, dim=1)
    b_ir, b_iz, b_in = b_ih.chunk(3)
    b_hr, b_hz, b_hn = b_hh.chunk(3)
    h, outputs = h0, []
    for t in range(x.shape[1]):
        r = torch.sigmoid(x[:, t] @ W_ir.T + b_ir + h @ W_hr.T + b_hr)
        z = torch.sigmoid(x[:, t] @ W_iz.T + b_iz + h @ W_hz.T + b_hz)
        n = torch.tanh(x[:, t] @ W_in.T + b_in + r * (h @ W_hn.T + b_hn))
        h = (1 - z) * n + z * h
        outputs.append(h)
    return torch.stack(outputs, dim=1)


def _gru_reset_unused(x, h0, W_ih, W_hh, b_ih, b_hh):
    h, outputs = h0, []
    for t in range(x.shape[1]):
        h = _gru_step(x[:, t], h, W_ih, W_hh, b_ih, b_hh, use_reset=False)
        outputs.append(h)
    return torch.stack(outputs, dim=1)


def _gru_torch_cell(x, h0, W_ih, W_hh, b_ih, b_hh):
    cell = nn.GRUCell(W_ih.shape[1], h0.shape[-1]).to(x.dtype)
    with torch.no_grad():
        cell.weight_ih.copy_(W_ih)
        cell.weight_hh.copy_(W_hh)
        cell.bias_ih.copy_(b_ih)
        cell.bias_hh.copy_(b_hh)
        outputs, h = [], h0
        for t in range(x.shape[1]):
            h = cell(x[:, t], h)
            outputs.append(h)
    return torch.stack(outputs, dim=1)


def _gru_last_state_only(x, h0, W_ih, W_hh, b_ih, b_hh):
    h = h0
    for t in range(x.shape[1]):
        h = _gru_step(x[:, t], h, W_ih, W_hh, b_ih, b_hh)
    return h  # (B, H): only h_T


def _gru_time_first(x, h0, W_ih, W_hh, b_ih, b_hh):
    h, outputs = h0, []
    for t in range(x.shape[1]):
        h = _gru_step(x[:, t], h, W_ih, W_hh, b_ih, b_hh)
        outputs.append(h)
    return torch.stack(outputs)  # (T, B, H)


def _gru_updates_h0_in_place(x, h0, W_ih, W_hh, b_ih, b_hh):
    h, outputs = h0, []
    for t in range(x.shape[1]):
        new = _gru_step(x[:, t], h, W_ih, W_hh, b_ih, b_hh)
        h.copy_(new)  # the caller's h0 overwritten
        outputs.append(new)
    return torch.stack(outputs, dim=1)


def _gru_one_bias(x, h0, W_ih, W_hh, b_ih, b_hh):
    H = h0.shape[-1]
    h, outputs = h0, []
    for t in range(x.shape[1]):
        gi, gh = x[:, t] @ W_ih.T, h @ W_hh.T
        b = b_ih + b_hh  # one bias per gate, added before the reset product
        r = torch.sigmoid(gi[:, :H] + gh[:, :H] + b[:H])
        z = torch.sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H] + b[H : 2 * H])
        n = torch.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :] + b[2 * H :])
        h = (1 - z) * n + z * h
        outputs.append(h)
    return torch.stack(outputs, dim=1)


def _gru_mix_other_way(x, h0, W_ih, W_hh, b_ih, b_hh):
    H = h0.shape[-1]
    h, outputs = h0, []
    for t in range(x.shape[1]):
        gi, gh = x[:, t] @ W_ih.T + b_ih, h @ W_hh.T + b_hh
        r = torch.sigmoid(gi[:, :H] + gh[:, :H])
        z = torch.sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])
        n = torch.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
        h = z * n + (1 - z) * h  # Cho et al.'s letters, PyTorch's gate
        outputs.append(h)
    return torch.stack(outputs, dim=1)


def _gru_no_transpose(x, h0, W_ih, W_hh, b_ih, b_hh):
    H = h0.shape[-1]
    h, outputs = h0, []
    for t in range(x.shape[1]):
        gi, gh = x[:, t] @ W_ih[:, : x.shape[-1]].T + b_ih, h @ W_hh[:, :H] + b_hh[:H]
        r = torch.sigmoid(gi[:, :H] + gh)
        z = torch.sigmoid(gi[:, H : 2 * H] + gh)
        n = torch.tanh(gi[:, 2 * H :] + r * gh)
        h = (1 - z) * n + z * h
        outputs.append(h)
    return torch.stack(outputs, dim=1)


def _gru_tanh_of_sum(x, h0, W_ih, W_hh, b_ih, b_hh):
    h, outputs = h0, []
    for t in range(x.shape[1]):
        h = torch.tanh(_gru_step(x[:, t], h, W_ih, W_hh, b_ih, b_hh))  # one squashing too many
        outputs.append(h)
    return torch.stack(outputs, dim=1)


# --------------------------------------------------------------------------- 2.3 a new list


def _merge_as_tuple(symbols, pair):
    out, i = [], 0
    while i < len(symbols):
        if tuple(symbols[i : i + 2]) == tuple(pair):
            out.append(pair[0] + pair[1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)  # the right symbols, but the task asks for a new list


# --------------------------------------------------------------------------- 2.5 analogies


def _unit(weight):
    return weight / weight.norm(dim=1, keepdim=True)


def _analogy_scores(weight, a, b, c):
    unit = _unit(weight)
    return (unit[b] - unit[a] + unit[c]) @ unit.T  # (Q, V)


def _analogy_columns_for_every_query(weight, a, b, c):
    scores = _analogy_scores(weight, a, b, c)
    for given in (a, b, c):
        scores[:, given] = float("-inf")  # every query loses every query's given tokens
    return scores.argmax(dim=1)


def _analogy_rows_indexed(weight, a, b, c):
    scores = _analogy_scores(weight, a, b, c)
    for given in (a, b, c):
        scores[given] = float("-inf")  # rows (queries), not columns (tokens)
    return scores.argmax(dim=1)


def _analogy_argmax_dim0(weight, a, b, c):
    scores = _analogy_scores(weight, a, b, c)
    rows = torch.arange(len(a))
    for given in (a, b, c):
        scores[rows, given] = float("-inf")
    return scores.argmax(dim=0)


def _analogy_list_of_ints(weight, a, b, c):
    scores = _analogy_scores(weight, a, b, c)
    rows = torch.arange(len(a))
    for given in (a, b, c):
        scores[rows, given] = float("-inf")
    return scores.argmax(dim=1).tolist()


def _analogy_float_ids(weight, a, b, c):
    scores = _analogy_scores(weight, a, b, c)
    rows = torch.arange(len(a))
    for given in (a, b, c):
        scores[rows, given] = float("-inf")
    return scores.argmax(dim=1).float()


def _analogy_columns_normalised(weight, a, b, c):
    unit = weight / weight.norm(dim=0, keepdim=True)  # each feature, not each row
    scores = (unit[b] - unit[a] + unit[c]) @ unit.T
    rows = torch.arange(len(a))
    for given in (a, b, c):
        scores[rows, given] = float("-inf")
    return scores.argmax(dim=1)


def _analogy_3cosmul(weight, a, b, c):
    unit = _unit(weight)
    cos = unit @ unit.T  # (V, V)

    def shifted(i):
        return (cos[i] + 1) / 2  # in [0, 1]

    scores = shifted(b) * shifted(c) / (shifted(a) + 1e-3)  # Levy and Goldberg's 3CosMul
    rows = torch.arange(len(a))
    for given in (a, b, c):
        scores[rows, given] = float("-inf")
    return scores.argmax(dim=1)


def _analogy_c_kept(weight, a, b, c):
    scores = _analogy_scores(weight, a, b, c)
    rows = torch.arange(len(a))
    for given in (a, b):  # c forgotten
        scores[rows, given] = float("-inf")
    return scores.argmax(dim=1)


def _analogy_fill_minus_one(weight, a, b, c):
    scores = _analogy_scores(weight, a, b, c)
    rows = torch.arange(len(a))
    for given in (a, b, c):
        scores[rows, given] = -1.0  # "the smallest cosine", but the target is not unit length
    return scores.argmax(dim=1)


def _analogy_normalises_in_place(weight, a, b, c):
    weight /= weight.norm(dim=1, keepdim=True)  # the caller's table changed
    scores = (weight[b] - weight[a] + weight[c]) @ weight.T
    rows = torch.arange(len(a))
    for given in (a, b, c):
        scores[rows, given] = float("-inf")
    return scores.argmax(dim=1)


def _analogy_nearest_to_b(weight, a, b, c):
    unit = _unit(weight)
    scores = unit[b] @ unit.T  # the neighbour of b, the offset c - a ignored
    rows = torch.arange(len(a))
    for given in (a, b, c):
        scores[rows, given] = float("-inf")
    return scores.argmax(dim=1)


# --------------------------------------------------------------------------- 3.5 half-split RoPE


def _angles(x, base, exponent=2.0):
    t, d = x.shape[-2], x.shape[-1]
    m = torch.arange(t, dtype=torch.float64)[:, None]
    theta = base ** (-exponent * torch.arange(d // 2, dtype=torch.float64) / d)
    return torch.cos(m * theta).to(x.dtype), torch.sin(m * theta).to(x.dtype)


def _rope_chapter_layout(x, base=10000.0):
    cos, sin = _angles(x, base)  # the chapter's pairs (2i, 2i+1), copied from above
    out = torch.empty_like(x)
    out[..., 0::2] = x[..., 0::2] * cos - x[..., 1::2] * sin
    out[..., 1::2] = x[..., 0::2] * sin + x[..., 1::2] * cos
    return out


def _rope_rotate_half_sign(x, base=10000.0):
    cos, sin = _angles(x, base)
    h = x.shape[-1] // 2
    rotated = torch.cat([x[..., h:], -x[..., :h]], dim=-1)  # (x2, -x1) instead of (-x2, x1)
    return x * torch.cat([cos, cos], -1) + rotated * torch.cat([sin, sin], -1)


def _rope_exponent_four(x, base=10000.0):
    cos, sin = _angles(x, base, exponent=4.0)  # 2i / (d/2): the pair index doubled twice
    h = x.shape[-1] // 2
    return torch.cat([x[..., :h] * cos - x[..., h:] * sin, x[..., :h] * sin + x[..., h:] * cos], -1)


def _rope_no_base_argument(x):
    cos, sin = _angles(x, 10000.0)
    h = x.shape[-1] // 2
    return torch.cat([x[..., :h] * cos - x[..., h:] * sin, x[..., :h] * sin + x[..., h:] * cos], -1)


def _rope_in_place(x, base=10000.0):
    cos, sin = _angles(x, base)
    h = x.shape[-1] // 2
    first, second = x[..., :h].clone(), x[..., h:].clone()
    x[..., :h] = first * cos - second * sin  # written into the caller's tensor
    x[..., h:] = first * sin + second * cos
    return x


def _rope_sequential_update(x, base=10000.0):
    cos, sin = _angles(x, base)
    h = x.shape[-1] // 2
    y = x.clone()
    y[..., :h] = y[..., :h] * cos - y[..., h:] * sin
    y[..., h:] = y[..., :h] * sin + y[..., h:] * cos  # reads the already rotated first half
    return y


def _rope_transposed_angles(x, base=10000.0):
    t, d = x.shape[-2], x.shape[-1]
    m = torch.arange(t, dtype=torch.float64)
    theta = base ** (-2 * torch.arange(d // 2, dtype=torch.float64) / d)
    angles = (theta[:, None] * m[None, :]).to(x.dtype)  # (d/2, T)
    h = d // 2
    cos, sin = angles.cos(), angles.sin()
    return torch.cat([x[..., :h] * cos - x[..., h:] * sin, x[..., :h] * sin + x[..., h:] * cos], -1)


def _rope_float64_result(x, base=10000.0):
    t, d = x.shape[-2], x.shape[-1]
    m = torch.arange(t, dtype=torch.float64)[:, None]
    theta = base ** (-2 * torch.arange(d // 2, dtype=torch.float64) / d)
    cos, sin = torch.cos(m * theta), torch.sin(m * theta)  # float64, never cast back
    h = d // 2
    return torch.cat([x[..., :h] * cos - x[..., h:] * sin, x[..., :h] * sin + x[..., h:] * cos], -1)


def _rope_positive_exponent(x, base=10000.0):
    t, d = x.shape[-2], x.shape[-1]
    m = torch.arange(t, dtype=torch.float64)[:, None]
    theta = base ** (2 * torch.arange(d // 2, dtype=torch.float64) / d)  # a wavelength, not 1/it
    cos, sin = torch.cos(m * theta).to(x.dtype), torch.sin(m * theta).to(x.dtype)
    h = d // 2
    return torch.cat([x[..., :h] * cos - x[..., h:] * sin, x[..., :h] * sin + x[..., h:] * cos], -1)


def _rope_complex_neighbours(x, base=10000.0):
    cos, sin = _angles(x, base)
    pairs = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2).contiguous())  # (2i, 2i+1)
    turned = pairs * torch.complex(cos, sin)
    return torch.view_as_real(turned).reshape(x.shape)


def _rope_flip(x, base=10000.0):
    cos, sin = _angles(x, base)
    rotated = x.flip(-1) * torch.cat([-torch.ones_like(cos), torch.ones_like(cos)], -1)
    return x * torch.cat([cos, cos], -1) + rotated * torch.cat([sin, sin], -1)  # flip != swap


# --------------------------------------------------------------------------- 4.5 sliding window


def _window_float(seq_len, window):
    t = torch.arange(seq_len)
    back = t[:, None] - t[None, :]
    return ((back >= 0) & (back < window)).float()


def _window_tril_triu_wrong_diagonal(seq_len, window):
    ones = torch.ones(seq_len, seq_len, dtype=torch.bool)
    return ones.tril() & ones.triu(-window)  # one diagonal too many


def _window_prebuilt(seq_len, window):
    full = torch.ones(1024, 1024, dtype=torch.bool)
    band = full.tril() & full.triu(-(window - 1)) if window <= 1024 else full.tril()
    return band[:seq_len, :seq_len].clone()  # right up to 1024 positions


def _window_loop_strict(seq_len, window):
    mask = torch.zeros(seq_len, seq_len, dtype=torch.bool)
    for t in range(seq_len):
        mask[t, max(0, t - window + 1) : t] = True  # the query's own key left out
    return mask


def _window_int_mask(seq_len, window):
    t = torch.arange(seq_len)
    back = t[:, None] - t[None, :]
    return (back >= 0).long() * (back < window).long()  # 0/1 integers


def _window_numpy(seq_len, window):
    import numpy as np

    t = np.arange(seq_len)
    back = t[:, None] - t[None, :]
    return (back >= 0) & (back < window)


def _window_clamped(seq_len, window):
    w = min(window, seq_len - 1)  # "the window cannot be longer than the sequence"
    t = torch.arange(seq_len)
    back = t[:, None] - t[None, :]
    return (back >= 0) & (back < w)


def _window_from_distance_rows(seq_len, window):
    t = torch.arange(seq_len)
    back = t[None, :] - t[:, None]  # s - t: the sign the other way
    return (back >= 0) & (back < window)


def _window_inclusive_start(seq_len, window):
    t = torch.arange(seq_len)
    back = t[:, None] - t[None, :]
    return (back > 0) & (back <= window)  # the window shifted one back


def _window_half_each_side(seq_len, window):
    t = torch.arange(seq_len)
    back = t[:, None] - t[None, :]
    return back.abs() < (window + 1) // 2  # centred on the query


def _window_tril_only_when_short(seq_len, window):
    ones = torch.ones(seq_len, seq_len, dtype=torch.bool)
    if seq_len <= window:
        return ones.tril()
    return ones.triu(-(window - 1))  # the causal part forgotten when the window is short


# --------------------------------------------------------------------------- 4.9 d out / d q


def _weights(q, k):
    return torch.softmax(k @ q / math.sqrt(q.shape[-1]), dim=-1)


def _out_jac_central_difference(q, k, v):
    h = 1e-5

    def out(z):
        return _weights(z, k) @ v

    steps = torch.eye(q.shape[-1], dtype=q.dtype) * h
    return torch.stack([(out(q + e) - out(q - e)) / (2 * h) for e in steps], dim=1)


def _out_jac_unshifted_exp(q, k, v):
    e = torch.exp(k @ q / math.sqrt(q.shape[-1]))  # no maximum subtracted
    a = e / e.sum()
    return v.T @ (torch.diag(a) - torch.outer(a, a)) @ k / math.sqrt(q.shape[-1])


def _out_jac_float32_inside(q, k, v):
    qf, kf, vf = q.float(), k.float(), v.float()  # "float32 is enough for a derivative"
    a = torch.softmax(kf @ qf / math.sqrt(q.shape[-1]), dim=-1)
    return (vf.T @ (torch.diag(a) - torch.outer(a, a)) @ kf / math.sqrt(q.shape[-1])).double()


def _out_jac_scalar_a_dot_a(q, k, v):
    a = _weights(q, k)
    return v.T @ (torch.diag(a) - a @ a) @ k / math.sqrt(q.shape[-1])  # a scalar, not a a^T


def _out_jac_elementwise_square(q, k, v):
    a = _weights(q, k)
    return v.T @ (torch.diag(a) - a * a) @ k / math.sqrt(q.shape[-1])  # broadcast, not outer


def _out_jac_divided_by_t_k(q, k, v):
    a = _weights(q, k)
    return v.T @ (torch.diag(a) - torch.outer(a, a)) @ k / math.sqrt(k.shape[0])  # sqrt(T_k)


def _out_jac_plain_mean_centring(q, k, v):
    a = _weights(q, k)
    centred = v - v.mean(dim=0)  # the plain mean, not the weighted one
    return centred.T @ torch.diag(a) @ k / math.sqrt(q.shape[-1])


def _out_jac_weights_jacobian_only(q, k, v):
    a = _weights(q, k)
    return (torch.diag(a) - torch.outer(a, a)) / math.sqrt(q.shape[-1])  # 4.9's old answer


def _out_jac_averaged_over_keys(q, k, v):
    a = _weights(q, k)
    return v.T @ (torch.diag(a) - torch.outer(a, a)) @ k / math.sqrt(q.shape[-1]) / k.shape[0]


def _out_jac_numpy(q, k, v):
    a = _weights(q, k).numpy()
    import numpy as np

    return v.numpy().T @ (np.diag(a) - np.outer(a, a)) @ k.numpy() / math.sqrt(q.shape[-1])


def _out_jac_autograd_jacobian(q, k, v):
    with torch.enable_grad():
        return torch.autograd.functional.jacobian(lambda z: _weights(z, k) @ v, q)


def _out_jac_value_gradient(q, k, v):
    a = _weights(q, k)
    return torch.outer(v.T @ a, k.T @ a) / math.sqrt(q.shape[-1])  # only the a a^T part


# --------------------------------------------------------------------------- 5.2 GELU's slope


def _own_gelu(x):
    return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _gelu_grad_central_difference(x):
    h = 1e-5
    return (_own_gelu(x + h) - _own_gelu(x - h)) / (2 * h)


def _gelu_grad_forward_difference(x):
    h = 1e-7
    return (_own_gelu(x + h) - _own_gelu(x)) / h


def _gelu_grad_in_float32(x):
    z = x.float()  # "float32 is enough for a slope"
    cdf = 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))
    return (cdf + z * torch.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)).double()


def _gelu_grad_sigmoid_cdf(x):
    cdf = torch.sigmoid(1.702 * x)  # the quick approximation of Phi, exact density
    return cdf + x * torch.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _gelu_grad_exp_minus_x_squared(x):
    cdf = 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))
    return cdf + x * torch.exp(-(x**2)) / math.sqrt(2.0 * math.pi)  # the 1/2 lost


def _gelu_grad_pi_rounded(x):
    cdf = 0.5 * (1.0 + torch.erf(x / 1.4142))
    return cdf + x * torch.exp(-0.5 * x * x) / math.sqrt(2.0 * 3.14159)


def _gelu_grad_density_without_x(x):
    cdf = 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))
    return cdf + torch.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)  # Phi + phi


def _gelu_grad_roles_swapped(x):
    cdf = 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))
    return x * cdf + torch.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)  # x Phi + phi


def _gelu_grad_clamped(x):
    z = x.clamp(-5.0, 5.0)  # "to keep exp from underflowing"
    cdf = 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))
    return cdf + z * torch.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def _gelu_grad_in_place(x):
    density = torch.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    cdf = 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))
    return x.mul_(density).add_(cdf)  # right values, written into the caller's tensor


def _gelu_grad_rounded_constant(x):
    cdf = torch.special.ndtr(x)
    return cdf + x * torch.exp(-0.5 * x * x) / 2.5066  # sqrt(2 pi) to 5 digits


def _gelu_grad_float32_result(x):
    cdf = 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))
    return (cdf + x * torch.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)).float()


def _gelu_grad_numpy(x):
    import numpy as np

    z = x.numpy()
    erf = np.vectorize(math.erf)
    return 0.5 * (1.0 + erf(z / np.sqrt(2.0))) + z * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)


def _gelu_grad_jvp(x):
    return torch.func.jvp(_own_gelu, (x,), (torch.ones_like(x),))[1]


# --------------------------------------------------------------------------- 5.3 RMSNorm


def _rms_eps_after(x, gamma, eps=1e-6):
    return gamma * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True)) + eps


def _rms_eps_hard_coded(x, gamma, eps=1e-6):
    return gamma * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)  # argument ignored


def _rms_eps_scaled_by_d(x, gamma, eps=1e-6):
    d = x.shape[-1]
    return gamma * x * math.sqrt(d) / torch.sqrt(x.pow(2).sum(-1, keepdim=True) + eps)


def _rms_in_float64(x, gamma, eps=1e-6):
    x = x.double()  # "for precision"
    return gamma.double() * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def _rms_positions_axis(x, gamma, eps=1e-6):
    return gamma * x / torch.sqrt(x.pow(2).mean(1, keepdim=True) + eps)


def _rms_without_keepdim(x, gamma, eps=1e-6):
    ms = x.pow(2).mean(-1)  # (B, T): broadcasts against the features, not the tokens
    return gamma * x / torch.sqrt(ms + eps)


def _rms_gain_first(x, gamma, eps=1e-6):
    y = gamma * x
    return y / torch.sqrt(y.pow(2).mean(-1, keepdim=True) + eps)


def _rms_max_norm(x, gamma, eps=1e-6):
    return gamma * x / (x.abs().amax(-1, keepdim=True) + eps)


def _rms_default_from_layer_norm(x, gamma, eps=None):
    eps = eps or 1e-5  # LayerNorm's default
    return gamma * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def _rms_centred_for_stability(x, gamma, eps=1e-6):
    x = x - x.mean(-1, keepdim=True)  # "subtract the mean first, it is more stable"
    return gamma * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def _rms_in_place(x, gamma, eps=1e-6):
    return x.div_(torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)).mul_(gamma)


def _rms_torch_module(x, gamma, eps=1e-6):
    norm = nn.RMSNorm(x.shape[-1], eps=eps).to(x.dtype)
    with torch.no_grad():
        norm.weight.copy_(gamma)
    return norm(x)


def _rms_f_normalize(x, gamma, eps=1e-6):
    return F.normalize(x, dim=-1) * math.sqrt(x.shape[-1]) * gamma  # no eps at all


# --------------------------------------------------------------------------- 5.4 evaluation mode


def _drop_module_inside(x, norm, ffn, p, training):
    return x + nn.Dropout(p)(ffn(norm(x)))  # a fresh module is in training mode


def _drop_only_rescale_removed(x, norm, ffn, p, training):
    return x + F.dropout(ffn(norm(x)), p)  # F.dropout's training=True default kept


def _drop_only_mode_passed(x, norm, ffn, p, training):
    branch = F.dropout(ffn(norm(x)), p, training=training)
    return x + (branch if training else branch * (1 - p))


def _drop_in_place_residual(x, norm, ffn, p, training):
    x += F.dropout(ffn(norm(x)), p, training=training)
    return x


def _drop_alpha_dropout(x, norm, ffn, p, training):
    return x + F.alpha_dropout(ffn(norm(x)), p, training=training)


def _drop_mask_by_hand(x, norm, ffn, p, training):
    branch = ffn(norm(x))
    if training:
        keep = (torch.rand_like(branch) >= p).to(branch.dtype)  # its own draw, not F.dropout's
        branch = branch * keep / (1 - p)
    return x + branch


def _drop_training_flag_inverted(x, norm, ffn, p, training):
    return x + F.dropout(ffn(norm(x)), p, training=not training)


def _drop_eval_branch_skipped(x, norm, ffn, p, training):
    if not training:
        return x  # "no dropout at evaluation" read as "no branch at evaluation"
    return x + F.dropout(ffn(norm(x)), p)


def _drop_norm_on_residual(x, norm, ffn, p, training):
    h = norm(x)
    return h + F.dropout(ffn(h), p, training=training)


def _drop_twice(x, norm, ffn, p, training):
    branch = F.dropout(F.dropout(ffn(norm(x)), p, training=training), p, training=training)
    return x + branch


def _drop_p_as_keep(x, norm, ffn, p, training):
    return x + F.dropout(ffn(norm(x)), 1 - p, training=training)  # p read as the keep rate


# --------------------------------------------------------------------------- 5.8 parallel block


class _Parallel(nn.Module):
    """The right parts under the right names; the subclasses get the wiring wrong."""

    def __init__(self, d_model, n_heads, d_ff=None):
        super().__init__()
        self.norm = LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_heads)
        self.ffn = PositionwiseFeedForward(d_model, d_ff, activation="gelu")


class _ParallelTwoNorms(nn.Module):
    def __init__(self, d_model, n_heads, d_ff=None):
        super().__init__()
        self.norm1, self.norm2 = LayerNorm(d_model), LayerNorm(d_model)  # one per branch
        self.attn = SelfAttention(d_model, n_heads)
        self.ffn = PositionwiseFeedForward(d_model, d_ff, activation="gelu")

    def forward(self, x, mask=None):
        return x + self.attn(self.norm1(x), mask) + self.ffn(self.norm2(x))


class _ParallelDffDefaultDModel(_Parallel):
    def __init__(self, d_model, n_heads, d_ff=None):
        super().__init__(d_model, n_heads, d_ff or d_model)

    def forward(self, x, mask=None):
        h = self.norm(x)
        return x + self.attn(h, mask) + self.ffn(h)


class _ParallelTanhGelu(_Parallel):
    def __init__(self, d_model, n_heads, d_ff=None):
        super().__init__(d_model, n_heads, d_ff)
        self.ffn = PositionwiseFeedForward(d_model, d_ff, activation="gelu_tanh")

    def forward(self, x, mask=None):
        h = self.norm(x)
        return x + self.attn(h, mask) + self.ffn(h)


class _ParallelAveraged(_Parallel):
    def forward(self, x, mask=None):
        h = self.norm(x)
        return x + 0.5 * (self.attn(h, mask) + self.ffn(h))


class _ParallelCausalByDefault(_Parallel):
    def forward(self, x, mask=None):
        if mask is None:
            mask = causal_mask(x.shape[1])
        h = self.norm(x)
        return x + self.attn(h, mask) + self.ffn(h)


class _ParallelWithDropout(_Parallel):
    def __init__(self, d_model, n_heads, d_ff=None):
        super().__init__(d_model, n_heads, d_ff)
        self.drop = nn.Dropout(0.1)  # "as in the paper"

    def forward(self, x, mask=None):
        h = self.norm(x)
        return x + self.drop(self.attn(h, mask) + self.ffn(h))


class _ParallelReturnsPair(_Parallel):
    def forward(self, x, mask=None):
        h = self.norm(x)
        a = self.attn(h, mask)
        return x + a + self.ffn(h), a


class _ParallelOutputNormed(_Parallel):
    def forward(self, x, mask=None):
        h = self.norm(x)
        return self.norm(x + self.attn(h, mask) + self.ffn(h))


class _ParallelFfnReadsAttention(_Parallel):
    def forward(self, x, mask=None):
        a = self.attn(self.norm(x), mask)
        return x + a + self.ffn(a)


class _ParallelMaskInverted(_Parallel):
    def forward(self, x, mask=None):
        h = self.norm(x)
        blocked = None if mask is None else ~mask  # "True means masked"
        return x + self.attn(h, blocked) + self.ffn(h)


class _ParallelResidualNormed(_Parallel):
    def forward(self, x, mask=None):
        h = self.norm(x)
        return h + self.attn(h, mask) + self.ffn(h)  # the stream carries LN(x)


# --------------------------------------------------------------------------- the test

# qid -> [(wrong answer, a phrase its feedback must contain)]
WRONG = {
    "ch04.q5": [
        (_window_float, "wrong dtype: expected torch.bool, got torch.float32"),
        (_window_tril_triu_wrong_diagonal, "window + 1 keys"),
        (_window_prebuilt, "wrong shape"),
        (_window_loop_strict, "expected True, got False"),
        (_window_int_mask, "wrong dtype: expected torch.bool, got torch.int64"),
        (_window_numpy, "expected a torch.Tensor"),
        (_window_clamped, "expected True, got False"),
        (_window_from_distance_rows, "transposed: keys after the query"),
        (_window_inclusive_start, "expected True, got False"),
        (_window_half_each_side, "expected"),
        (_window_tril_only_when_short, "expected False, got True"),
    ],
    "ch05.q4": [
        (_drop_module_inside, "dropout still drops entries at evaluation"),
        (_drop_only_rescale_removed, "one of the two bugs is fixed"),
        (_drop_only_mode_passed, "still multiplied by 1 - p at evaluation"),
        (_drop_in_place_residual, "modified its input argument 'x' in place"),
        (_drop_alpha_dropout, "output"),
        (_drop_mask_by_hand, "output"),
        (_drop_training_flag_inverted, "output"),
        (_drop_eval_branch_skipped, "output"),
        (_drop_norm_on_residual, "output"),
        (_drop_twice, "output"),
        (_drop_p_as_keep, "output"),
    ],
    "ch02.q5": [
        (_analogy_columns_for_every_query, "output"),
        (_analogy_rows_indexed, "index 19 is out of bounds"),
        (_analogy_argmax_dim0, "output"),
        (_analogy_list_of_ints, "expected a torch.long tensor of token ids, got list"),
        (_analogy_float_ids, "expected a torch.long tensor of token ids, got Tensor"),
        (_analogy_columns_normalised, "output"),
        (_analogy_3cosmul, "output"),
        (_analogy_c_kept, "output"),
        (_analogy_fill_minus_one, "a finite score (such as 0 or -1), not -inf"),
        (_analogy_normalises_in_place, "modified its input argument 'weight' in place"),
        (_analogy_nearest_to_b, "output"),
    ],
    "ch01.q2": [
        (_gru_order_z_r_n, "reset and update gates swapped"),
        (_gru_chunk_wrong_axis, "raised"),
        (_gru_reset_unused, "output"),
        (_gru_torch_cell, "calls torch.nn.GRUCell.forward"),
        (_gru_last_state_only, "wrong shape"),
        (_gru_time_first, "wrong shape"),
        (_gru_updates_h0_in_place, "modified its input argument 'h0' in place"),
        (_gru_one_bias, "the reset gate applied before adding b_hn"),
        (_gru_mix_other_way, "the mix the other way round"),
        (_gru_no_transpose, "mat1 and mat2 shapes cannot be multiplied"),
        (_gru_tanh_of_sum, "output"),
    ],
    "ch02.q3": [(_merge_as_tuple, "expected a new list of strings, got tuple")],
    "ch03.q5": [
        (_rope_chapter_layout, "pairs (2i, 2i+1): the chapter's layout"),
        (_rope_rotate_half_sign, "rotation in the wrong direction"),
        (_rope_exponent_four, "output"),
        (_rope_no_base_argument, "takes 1 positional argument but 2 were given"),
        (_rope_in_place, "modified its input argument 'x' in place"),
        (_rope_sequential_update, "output"),
        (_rope_transposed_angles, "must match the size of tensor"),
        (_rope_float64_result, "wrong dtype: expected torch.float32, got torch.float64"),
        (_rope_positive_exponent, "output"),
        (_rope_complex_neighbours, "pairs (2i, 2i+1): the chapter's layout"),
        (_rope_flip, "output"),
    ],
    "ch04.q9": [
        (_out_jac_central_difference, "allowed 1e-11"),
        (_out_jac_unshifted_exp, "NaN"),
        (_out_jac_float32_inside, "allowed 1e-11"),
        (_out_jac_scalar_a_dot_a, "output"),
        (_out_jac_elementwise_square, "output"),
        (_out_jac_divided_by_t_k, "output"),
        (_out_jac_plain_mean_centring, "output"),
        (_out_jac_weights_jacobian_only, "expected (3, 4), got (5, 5)"),
        (_out_jac_averaged_over_keys, "output"),
        (_out_jac_numpy, "expected a torch.Tensor, got ndarray"),
        (_out_jac_autograd_jacobian, "calls torch.autograd.functional.jacobian"),
        (_out_jac_value_gradient, "output"),
    ],
    "ch05.q2": [
        (_gelu_grad_central_difference, "allowed 1e-12"),
        (_gelu_grad_forward_difference, "allowed 1e-12"),
        (_gelu_grad_in_float32, "allowed 1e-12"),
        (_gelu_grad_sigmoid_cdf, "output"),
        (_gelu_grad_exp_minus_x_squared, "output"),
        (_gelu_grad_pi_rounded, "output"),
        (_gelu_grad_density_without_x, "output"),
        (_gelu_grad_roles_swapped, "output"),
        (_gelu_grad_clamped, "expected 1.00000, got 1.00001"),
        (_gelu_grad_in_place, "modified its input argument 'x' in place"),
        (_gelu_grad_rounded_constant, "output"),
        (_gelu_grad_float32_result, "your answer is float32, the input was float64"),
        (_gelu_grad_numpy, "expected a torch.Tensor, got ndarray"),
        (_gelu_grad_jvp, "calls torch.func.jvp"),
    ],
    "ch05.q3": [
        (_rms_eps_after, "output"),
        (_rms_eps_hard_coded, "output"),
        (_rms_eps_scaled_by_d, "output"),
        (_rms_in_float64, "your answer is float64, the input was float32"),
        (_rms_positions_axis, "output"),
        (_rms_without_keepdim, "The size of tensor a (8) must match the size of tensor b (3)"),
        (_rms_gain_first, "output"),
        (_rms_max_norm, "output"),
        (_rms_default_from_layer_norm, "eps defaults to 1e-5 (LayerNorm's), not 1e-6"),
        (_rms_centred_for_stability, "the mean subtracted"),
        (_rms_in_place, "modified its input argument 'x' in place"),
        (_rms_torch_module, "calls torch.nn.RMSNorm.forward"),
        (_rms_f_normalize, "output"),
    ],
    "ch05.q8": [
        (_ParallelTwoNorms, "missing ['norm.bias', 'norm.weight']"),
        (_ParallelDffDefaultDModel, "expected shape (32, 8), got (8, 8)"),
        (_ParallelTanhGelu, "allowed 1e-5"),
        (_ParallelAveraged, "values differ"),
        (_ParallelCausalByDefault, "with mask not given (its default is None)"),
        (_ParallelWithDropout, "in training mode"),
        (_ParallelReturnsPair, "expected a torch.Tensor, got tuple"),
        (_ParallelOutputNormed, "values differ"),
        (_ParallelFfnReadsAttention, "values differ"),
        (_ParallelMaskInverted, "values differ"),
        (_ParallelResidualNormed, "values differ"),
    ],
}
PAIRS = [(qid, fn, phrase) for qid, found in WRONG.items() for fn, phrase in found]


@pytest.mark.parametrize(
    ("qid", "wrong", "phrase"), PAIRS, ids=[f"{q}-{fn.__name__}" for q, fn, _ in PAIRS]
)
def test_wrong_answer_is_rejected_with_a_useful_message(qid, wrong, phrase):
    assert_rejected(qid, wrong, phrase)
