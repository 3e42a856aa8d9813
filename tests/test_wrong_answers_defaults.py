"""Wrong defaults that once passed: every case used to pass every argument.

A default argument that is wrong (``activation="gelu"``, ``positional="learned"``, a causal
``self_mask`` when none is given) or missing (no ``=None``) changed nothing in a check whose
cases all spelled out every argument. Each question below now also calls the answer with only
the required arguments; each test shows the wrong answer is rejected and that the feedback
names the default it got wrong. Every answer here passed before that case was added. Same path
as tests/test_wrong_answers.py: ``Question.evaluate``.
"""

from __future__ import annotations

import pytest
import torch
from _wrong_answers import question

from tfbook.attention import CrossAttention, MultiHeadAttention, SelfAttention, causal_mask
from tfbook.exercises.ch03 import stretch_positions
from tfbook.feedforward import PositionwiseFeedForward
from tfbook.norm import LayerNorm, ResidualSublayer

# --------------------------------------------------------------------------- 3.8


def _stretch_same_length_by_default(weight, new_len=None):
    old_len, d_model = weight.shape
    new_len = old_len if new_len is None else new_len  # "no new length given: keep it"
    return stretch_positions(weight, new_len)


def _stretch_length_required(weight, new_len):  # no default at all
    return stretch_positions(weight, new_len)


# --------------------------------------------------------------------------- 4.10


class _PoolingMaskRequired(torch.nn.Module):
    def __init__(self, d_model, n_heads):
        super().__init__()
        self.query = torch.nn.Parameter(torch.randn(1, 1, d_model))
        self.attn = MultiHeadAttention(d_model, n_heads)

    def forward(self, x, mask):  # no default: forward(x) raises
        return self.attn(self.query.expand(x.shape[0], -1, -1), x, x, mask)[0][:, 0]


class _PoolingCausalByDefault(_PoolingMaskRequired):
    def forward(self, x, mask=None):
        if mask is None:  # a "safe" default that hides all keys but the first from the query
            mask = causal_mask(x.shape[1])[:1]
        return super().forward(x, mask)


# --------------------------------------------------------------------------- 5.8


class _ParallelMaskRequired(torch.nn.Module):
    def __init__(self, d_model, n_heads, d_ff=None):
        super().__init__()
        self.norm = LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_heads)
        self.ffn = PositionwiseFeedForward(d_model, d_ff, activation="gelu")

    def forward(self, x, mask):  # no default: forward(x) raises
        h = self.norm(x)
        return x + self.attn(h, mask) + self.ffn(h)


# --------------------------------------------------------------------------- 6.3


class _DecoderCausalByDefault(torch.nn.Module):
    def __init__(self, d_model, n_heads, d_ff, norm_first=True):
        super().__init__()
        self.self_attn = ResidualSublayer(d_model, SelfAttention(d_model, n_heads), norm_first)
        self.cross_a = ResidualSublayer(d_model, CrossAttention(d_model, n_heads), norm_first)
        self.cross_b = ResidualSublayer(d_model, CrossAttention(d_model, n_heads), norm_first)
        self.ffn = ResidualSublayer(d_model, PositionwiseFeedForward(d_model, d_ff), norm_first)

    def forward(self, x, memory_a, memory_b, self_mask=None, mask_a=None, mask_b=None):
        if self_mask is None:  # causal when not given: the default is "nothing hidden"
            self_mask = causal_mask(x.shape[1])
        x = self.self_attn(x, self_mask)
        x = self.cross_a(x, memory_a, mask_a)
        x = self.cross_b(x, memory_b, mask_b)
        return self.ffn(x)


class _DecoderMasksRequired(_DecoderCausalByDefault):
    def forward(self, x, memory_a, memory_b, self_mask, mask_a, mask_b):  # no defaults
        x = self.self_attn(x, self_mask)
        x = self.cross_a(x, memory_a, mask_a)
        x = self.cross_b(x, memory_b, mask_b)
        return self.ffn(x)


WRONG_DEFAULTS = {
    "ch03.q8": [
        (_stretch_same_length_by_default, "twice"),
        (_stretch_length_required, "twice"),
    ],
    "ch04.q10": [(_PoolingMaskRequired, "default is None"), (_PoolingCausalByDefault, "None")],
    "ch05.q8": [(_ParallelMaskRequired, "default is None")],
    "ch06.q3": [(_DecoderCausalByDefault, "None"), (_DecoderMasksRequired, "None")],
}
CASES = [(qid, fn, named) for qid, fns in WRONG_DEFAULTS.items() for fn, named in fns]
IDS = [f"{qid}-{fn.__name__}" for qid, fn, _ in CASES]


@pytest.mark.parametrize(("qid", "wrong", "named"), CASES, ids=IDS)
def test_wrong_default_is_rejected_and_the_default_named(qid, wrong, named):
    result = question(qid).evaluate(wrong)
    assert result.status != "passed", f"{qid} passed a wrong default {wrong.__name__}"
    assert result.points == 0
    assert "not given" in result.text() and named in result.text(), result.text()
