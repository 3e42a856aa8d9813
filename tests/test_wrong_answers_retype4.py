"""Plausible wrong answers to the questions that replaced three more re-typing questions: every
one must be rejected, with the message a student would need.

Exercise 3.1 asks for learned relative-position biases clipped at K (Shaw et al., T5), which
chapter 3 does not print. The wrong answers are written as a student would write them: the
offset taken the other way round, the sign lost, the shift by K forgotten (torch then reads
negative columns from the end of the table without complaint), a clip one short or on one side
only, K read from the wrong axis, a causal mask where an encoder has none, float32 forced on a
float64 table. Each entry names a part of the feedback that must appear (the named mistake, or
the comparison's own line when no known mistake matches). Same path as
tests/test_wrong_answers.py: ``Question.evaluate``.
"""

from __future__ import annotations

import pytest
import torch
from _wrong_answers import assert_rejected

# --------------------------------------------------------------------------- 3.1 relative biases


def _offsets(seq_len):
    positions = torch.arange(seq_len)
    return positions[None, :] - positions[:, None]  # key n minus query m


def _k(table):
    return (table.shape[-1] - 1) // 2


def _rel_query_minus_key(table, seq_len):
    k = _k(table)
    return table[:, (-_offsets(seq_len)).clamp(-k, k) + k]


def _rel_abs_distance(table, seq_len):
    k = _k(table)
    return table[:, _offsets(seq_len).abs().clamp(max=k) + k]


def _rel_no_shift(table, seq_len):
    k = _k(table)
    return table[:, _offsets(seq_len).clamp(-k, k)]


def _rel_clip_one_short(table, seq_len):
    k = _k(table)
    return table[:, _offsets(seq_len).clamp(-k, max(k - 1, 0)) + k]


def _rel_clamp_above_only(table, seq_len):
    k = _k(table)
    return table[:, _offsets(seq_len).clamp(max=k) + k]


def _rel_modulo(table, seq_len):
    k = _k(table)
    return table[:, (_offsets(seq_len) + k) % table.shape[-1]]


def _rel_where_abs(table, seq_len):
    k = _k(table)
    offset = _offsets(seq_len)
    clipped = torch.where(offset.abs() > k, k, offset)  # loses the sign of far keys
    return table[:, clipped + k]


def _rel_k_from_heads(table, seq_len):
    k = (table.shape[0] - 1) // 2  # the head axis
    return table[:, _offsets(seq_len).clamp(-k, k) + k]


def _rel_causal(table, seq_len):
    k = _k(table)
    offset = _offsets(seq_len)
    bias = table[:, offset.clamp(-k, k) + k]
    return bias.masked_fill(offset > 0, float("-inf"))


def _rel_always_float32(table, seq_len):
    k = _k(table)
    return table[:, _offsets(seq_len).clamp(-k, k) + k].float()


def _rel_through_float32(table, seq_len):
    k = _k(table)
    return table.float()[:, _offsets(seq_len).clamp(-k, k) + k].to(table.dtype)


def _rel_queries_from_one(table, seq_len):
    k = _k(table)
    queries = torch.arange(1, seq_len + 1)[:, None]
    return table[:, (torch.arange(seq_len)[None, :] - queries).clamp(-k, k) + k]


def _rel_heads_last(table, seq_len):
    k = _k(table)
    return table[:, _offsets(seq_len).clamp(-k, k) + k].permute(1, 2, 0)


WRONG = {
    "ch03.q1": [
        (_rel_query_minus_key, "offset taken as query minus key"),
        (_rel_abs_distance, "distance |n - m|"),
        (_rel_no_shift, "no + K"),
        (_rel_clip_one_short, "clipped to K - 1 above"),
        (_rel_clamp_above_only, "clipped above only"),
        (_rel_modulo, "modulo"),
        (_rel_where_abs, "values differ"),
        (_rel_k_from_heads, "values differ"),
        (_rel_causal, "contains inf"),
        (_rel_always_float32, "wrong dtype"),
        (_rel_through_float32, "values differ"),
        (_rel_queries_from_one, "values differ"),
        (_rel_heads_last, "wrong shape"),
    ],
}
CASES = [(qid, fn, phrase) for qid, entries in WRONG.items() for fn, phrase in entries]


@pytest.mark.parametrize(
    ("qid", "wrong", "phrase"), CASES, ids=[f"{q}-{fn.__name__}" for q, fn, _ in CASES]
)
def test_wrong_answer_is_rejected(qid, wrong, phrase):
    assert_rejected(qid, wrong, phrase)
