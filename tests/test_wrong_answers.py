"""Plausible wrong answers a student would write: every one must be rejected.

The known mistakes of each question (tested in test_exercises.py) are the *diagnosed* wrong
answers; this file adds wrong answers found by attacking the checks as a student would
(numerically unstable code, a float where a boolean mask is needed, the wrong axes), each of
which once passed or could pass a check with too few edge cases.
"""

from __future__ import annotations

import math

import pytest
import torch

from tfbook.exercises import load


def _softmax_global_max(x, dim=-1):
    e = torch.exp(x - x.max())  # one maximum for the whole tensor: rows far below it underflow
    return e / e.sum(dim=dim, keepdim=True)


def _softmax_no_max(x, dim=-1):
    return torch.exp(x) / torch.exp(x).sum(dim=dim, keepdim=True)


def _causal_float(seq_len):
    return torch.tril(torch.ones(seq_len, seq_len))  # 0/1 floats: added to scores, blocks nothing


def _causal_int(seq_len):
    return torch.tril(torch.ones(seq_len, seq_len, dtype=torch.long))


def _decoder_mask_float(ids, pad_id):
    t = ids.shape[1]
    causal = torch.tril(torch.ones(t, t))
    return causal * (ids != pad_id)[:, None, :].float()


def _masked_zero(q, k, v, mask):
    scores = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(~mask, 0.0)
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


def _mha_no_transpose_back(x, w_q, w_k, w_v, w_o, n_heads):
    b, t, d = x.shape
    dh = d // n_heads

    def split(y):
        return y.view(b, t, n_heads, dh).transpose(1, 2)

    q, k, v = split(x @ w_q), split(x @ w_k), split(x @ w_v)
    heads = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(dh), dim=-1) @ v
    return heads.reshape(b, t, d) @ w_o


def _layer_norm_sequence_stats(x, gamma, beta, eps=1e-5):
    mu = x.mean(dim=(-2, -1), keepdim=True)
    var = x.var(dim=(-2, -1), unbiased=False, keepdim=True)
    return gamma * (x - mu) / torch.sqrt(var + eps) + beta


def _sinusoid_two_i_twice(seq_len, d_model):
    k = torch.arange(seq_len, dtype=torch.float64)[:, None]
    i = torch.arange(0, d_model, 2, dtype=torch.float64)  # already the even column index
    angles = k / 10000.0 ** (2 * i / d_model)
    pe = torch.zeros(seq_len, d_model, dtype=torch.float64)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(angles), torch.cos(angles)
    return pe


WRONG = {
    "ch00.q1": [_softmax_global_max, _softmax_no_max],
    "ch03.q1": [_sinusoid_two_i_twice],
    "ch04.q2": [_masked_zero],
    "ch04.q3": [_causal_float, _causal_int],
    "ch04.q4": [_decoder_mask_float],
    "ch04.q6": [_mha_no_transpose_back],
    "ch05.q3": [_layer_norm_sequence_stats],
}
PAIRS = [(qid, fn) for qid, fns in WRONG.items() for fn in fns]


def _question(qid):
    chapter = qid.split(".")[0]
    return load(chapter)[qid]


@pytest.mark.parametrize(("qid", "wrong"), PAIRS, ids=[f"{q}-{f.__name__}" for q, f in PAIRS])
def test_plausible_wrong_answer_is_rejected(qid, wrong):
    result = _question(qid).evaluate(wrong)
    assert result.status != "passed", f"{qid} passed a wrong answer {wrong.__name__}"
    assert result.points == 0
