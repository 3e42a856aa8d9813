"""Plausible wrong answers to the questions that replaced three more re-typing questions: every
one must be rejected, with the message a student would need.

Exercise 3.1 asks for learned relative-position biases clipped at K (Shaw et al., T5), 3.8 for a
trained position table stretched to a new length by linear interpolation, and 6.3 for a decoder
layer that reads two encoded sources; their chapters print none of them. The wrong answers are
written as a student would write them. For 3.1: the offset taken the other way round, the sign
lost, the shift by K forgotten (torch then reads negative columns from the end of the table
without complaint), a clip one short or on one side only, K read from the wrong axis, a causal
mask where an encoder has none, float32 forced on a float64 table. For 3.8: F.interpolate's
default grid, positions squeezed as in exercise 3.4, the nearest row, a frozen or plain
nn.Embedding, 0/0 for a single row, the feature axis stretched, a wrong default length. For 6.3:
the source masks swapped, one source read twice, the two readings averaged side by side, the
sources in the wrong order, one cross-attention shared, a mask or norm_first not passed on, the
network in the wrong place. Each entry names a part of the feedback that must appear (the named
mistake, or the comparison's own line when no known mistake matches). Same path as
tests/test_wrong_answers.py: ``Question.evaluate``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _wrong_answers import assert_rejected
from torch import nn

from tfbook.attention import CrossAttention, SelfAttention
from tfbook.feedforward import PositionwiseFeedForward
from tfbook.norm import ResidualSublayer
from tfbook.positional import LearnedPositionalEmbedding

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


# --------------------------------------------------------------------------- 3.8 stretching


def _new_module(rows):
    stretched = LearnedPositionalEmbedding(rows.shape[0], rows.shape[1])
    with torch.no_grad():
        stretched.table.weight.copy_(rows)
    return stretched


def _interp(weight, new_len, **options):
    return F.interpolate(weight.T[None], size=new_len, mode="linear", **options)[0].T


def _stretch_interpolate_default(weight, new_len=None):
    new_len = 2 * weight.shape[0] if new_len is None else new_len
    return _new_module(_interp(weight, new_len))  # align_corners=False


def _stretch_interpolate_nearest(weight, new_len=None):
    new_len = 2 * weight.shape[0] if new_len is None else new_len
    return _new_module(F.interpolate(weight.T[None], size=new_len, mode="nearest")[0].T)


def _stretch_squeezed(weight, new_len=None):
    old_len = weight.shape[0]
    new_len = 2 * old_len if new_len is None else new_len
    x = torch.arange(new_len, dtype=torch.float64) * old_len / new_len
    below = x.floor().long().clamp(max=old_len - 1)
    above = (below + 1).clamp(max=old_len - 1)
    f = (x - below)[:, None]
    return _new_module((1 - f) * weight.double()[below] + f * weight.double()[above])


def _corner_parts(weight, new_len):
    old_len = weight.shape[0]
    x = torch.arange(new_len, dtype=torch.float64) * (old_len - 1) / max(new_len - 1, 1)
    below = x.floor().long().clamp(max=old_len - 1)
    return x, below, (below + 1).clamp(max=old_len - 1)


def _stretch_floor_only(weight, new_len=None):
    new_len = 2 * weight.shape[0] if new_len is None else new_len
    _, below, _ = _corner_parts(weight, new_len)
    return _new_module(weight[below])


def _stretch_weights_swapped(weight, new_len=None):
    new_len = 2 * weight.shape[0] if new_len is None else new_len
    x, below, above = _corner_parts(weight, new_len)
    f = (x - below)[:, None]
    return _new_module(f * weight.double()[below] + (1 - f) * weight.double()[above])


def _stretch_copy_last_row(weight, new_len=None):
    old_len = weight.shape[0]
    new_len = 2 * old_len if new_len is None else new_len
    return _new_module(weight[torch.arange(new_len).clamp(max=old_len - 1)])


def _stretch_from_pretrained(weight, new_len=None):
    new_len = 2 * weight.shape[0] if new_len is None else new_len
    stretched = LearnedPositionalEmbedding(new_len, weight.shape[1])
    stretched.table = nn.Embedding.from_pretrained(_interp(weight, new_len, align_corners=True))
    return stretched


def _stretch_plain_embedding(weight, new_len=None):
    new_len = 2 * weight.shape[0] if new_len is None else new_len
    rows = _interp(weight, new_len, align_corners=True)
    return nn.Embedding.from_pretrained(rows, freeze=False)


def _stretch_float64_table(weight, new_len=None):
    new_len = 2 * weight.shape[0] if new_len is None else new_len
    stretched = LearnedPositionalEmbedding(new_len, weight.shape[1])
    rows = _interp(weight.double(), new_len, align_corners=True)
    stretched.table.weight = nn.Parameter(rows)  # float64, the module's other tables float32
    return stretched


def _stretch_divides_by_zero(weight, new_len=None):
    old_len = weight.shape[0]
    new_len = 2 * old_len if new_len is None else new_len
    x = torch.arange(new_len, dtype=torch.float64) * (old_len - 1) / (new_len - 1)  # 0/0 at 1
    below = x.floor().long().clamp(0, old_len - 1)
    above = (below + 1).clamp(max=old_len - 1)
    f = (x - below)[:, None]
    return _new_module((1 - f) * weight.double()[below] + f * weight.double()[above])


def _stretch_above_unclamped(weight, new_len=None):
    new_len = 2 * weight.shape[0] if new_len is None else new_len
    x, below, _ = _corner_parts(weight, new_len)
    f = (x - below)[:, None]
    return _new_module((1 - f) * weight[below] + f * weight[below + 1])  # row L at the end


def _stretch_odd_default(weight, new_len=None):
    new_len = 2 * weight.shape[0] - 1 if new_len is None else new_len  # old rows on even rows
    return _new_module(_interp(weight, new_len, align_corners=True))


def _stretch_wrong_axis(weight, new_len=None):
    new_len = 2 * weight.shape[0] if new_len is None else new_len
    rows = F.interpolate(weight[None], size=new_len, mode="linear", align_corners=True)[0]
    return _new_module(rows)  # (L, new_len): the feature axis was stretched


WRONG_38 = [
    (_stretch_interpolate_default, "align_corners=False"),
    (_stretch_interpolate_nearest, "values differ"),
    (_stretch_squeezed, "positions squeezed"),
    (_stretch_floor_only, "row floor(x) only"),
    (_stretch_weights_swapped, "the two weights swapped"),
    (_stretch_copy_last_row, "copied from the last one"),
    (_stretch_from_pretrained, "does not require gradients"),
    (_stretch_plain_embedding, "expected a tfbook.positional.LearnedPositionalEmbedding"),
    (_stretch_float64_table, "wrong dtype"),
    (_stretch_divides_by_zero, "contains NaN"),
    (_stretch_above_unclamped, "IndexError"),
    (_stretch_odd_default, "not given"),
    (_stretch_wrong_axis, "expected max_len=10"),
]


@pytest.mark.parametrize(
    "wrong", [fn for fn, _ in WRONG_38], ids=[fn.__name__ for fn, _ in WRONG_38]
)
def test_wrong_stretch_is_rejected(wrong):
    assert_rejected("ch03.q8", wrong, dict(WRONG_38)[wrong])


# --------------------------------------------------------------------------- 6.3 two sources


class _TwoSources(nn.Module):
    def __init__(self, d_model, n_heads, d_ff, norm_first=True):
        super().__init__()
        self.self_attn = ResidualSublayer(d_model, SelfAttention(d_model, n_heads), norm_first)
        self.cross_a = ResidualSublayer(d_model, CrossAttention(d_model, n_heads), norm_first)
        self.cross_b = ResidualSublayer(d_model, CrossAttention(d_model, n_heads), norm_first)
        self.ffn = ResidualSublayer(d_model, PositionwiseFeedForward(d_model, d_ff), norm_first)

    def forward(self, x, memory_a, memory_b, self_mask=None, mask_a=None, mask_b=None):
        x = self.self_attn(x, self_mask)
        x = self.cross_a(x, memory_a, mask_a)
        x = self.cross_b(x, memory_b, mask_b)
        return self.ffn(x)


class _TwoMasksSwapped(_TwoSources):
    def forward(self, x, memory_a, memory_b, self_mask=None, mask_a=None, mask_b=None):
        x = self.self_attn(x, self_mask)
        x = self.cross_a(x, memory_a, mask_b)
        x = self.cross_b(x, memory_b, mask_a)
        return self.ffn(x)


class _TwoReadsSourceATwice(_TwoSources):
    def forward(self, x, memory_a, memory_b, self_mask=None, mask_a=None, mask_b=None):
        x = self.self_attn(x, self_mask)
        x = self.cross_a(x, memory_a, mask_a)
        x = self.cross_b(x, memory_a, mask_a)
        return self.ffn(x)


class _TwoSideBySide(_TwoSources):
    def forward(self, x, memory_a, memory_b, self_mask=None, mask_a=None, mask_b=None):
        h = self.self_attn(x, self_mask)
        both = self.cross_a(h, memory_a, mask_a) + self.cross_b(h, memory_b, mask_b)
        return self.ffn(both / 2)  # "average the two readings"


class _TwoBFirst(_TwoSources):
    def forward(self, x, memory_a, memory_b, self_mask=None, mask_a=None, mask_b=None):
        x = self.self_attn(x, self_mask)
        x = self.cross_b(x, memory_b, mask_b)
        x = self.cross_a(x, memory_a, mask_a)
        return self.ffn(x)


class _TwoQueriesFromSources(_TwoSources):
    def forward(self, x, memory_a, memory_b, self_mask=None, mask_a=None, mask_b=None):
        x = self.self_attn(x, self_mask)
        x = self.cross_a(memory_a, x)
        x = self.cross_b(memory_b, x)
        return self.ffn(x)


class _TwoNoSelfMask(_TwoSources):
    def forward(self, x, memory_a, memory_b, self_mask=None, mask_a=None, mask_b=None):
        x = self.self_attn(x)
        x = self.cross_a(x, memory_a, mask_a)
        x = self.cross_b(x, memory_b, mask_b)
        return self.ffn(x)


class _TwoAlwaysPreLN(_TwoSources):
    def __init__(self, d_model, n_heads, d_ff, norm_first=True):
        super().__init__(d_model, n_heads, d_ff)  # norm_first not passed on


class _TwoSharedCrossAttention(_TwoSources):
    def __init__(self, d_model, n_heads, d_ff, norm_first=True):
        super().__init__(d_model, n_heads, d_ff, norm_first)
        self.cross_b = self.cross_a  # one cross-attention for both sources


class _TwoNoMaskB(_TwoSources):
    def forward(self, x, memory_a, memory_b, self_mask=None, mask_a=None, mask_b=None):
        x = self.self_attn(x, self_mask)
        x = self.cross_a(x, memory_a, mask_a)
        x = self.cross_b(x, memory_b)  # source B's padding read
        return self.ffn(x)


class _TwoFeedForwardBetween(_TwoSources):
    def forward(self, x, memory_a, memory_b, self_mask=None, mask_a=None, mask_b=None):
        x = self.self_attn(x, self_mask)
        x = self.cross_a(x, memory_a, mask_a)
        x = self.ffn(x)
        return self.cross_b(x, memory_b, mask_b)


class _TwoGeluNetwork(_TwoSources):
    def __init__(self, d_model, n_heads, d_ff, norm_first=True):
        super().__init__(d_model, n_heads, d_ff, norm_first)
        network = PositionwiseFeedForward(d_model, d_ff, activation="gelu")
        self.ffn = ResidualSublayer(d_model, network, norm_first)


class _TwoNamedCrossAttn(nn.Module):
    def __init__(self, d_model, n_heads, d_ff, norm_first=True):
        super().__init__()
        self.self_attn = ResidualSublayer(d_model, SelfAttention(d_model, n_heads), norm_first)
        self.cross_attn = ResidualSublayer(d_model, CrossAttention(d_model, n_heads), norm_first)
        self.cross_b = ResidualSublayer(d_model, CrossAttention(d_model, n_heads), norm_first)
        self.ffn = ResidualSublayer(d_model, PositionwiseFeedForward(d_model, d_ff), norm_first)

    def forward(self, x, memory_a, memory_b, self_mask=None, mask_a=None, mask_b=None):
        x = self.self_attn(x, self_mask)
        x = self.cross_attn(x, memory_a, mask_a)
        x = self.cross_b(x, memory_b, mask_b)
        return self.ffn(x)


WRONG_63 = [
    (_TwoMasksSwapped, "the two source masks swapped"),
    (_TwoReadsSourceATwice, "both cross-attentions read source A"),
    (_TwoSideBySide, "values differ"),
    (_TwoBFirst, "source B read before source A"),
    (_TwoQueriesFromSources, "wrong shape"),
    (_TwoNoSelfMask, "self_mask not passed"),
    (_TwoAlwaysPreLN, "norm_first ignored"),
    (_TwoSharedCrossAttention, "values differ"),
    (_TwoNoMaskB, "values differ"),
    (_TwoFeedForwardBetween, "values differ"),
    (_TwoGeluNetwork, "values differ"),
    (_TwoNamedCrossAttn, "different names"),
]


@pytest.mark.parametrize("wrong", [c for c, _ in WRONG_63], ids=[c.__name__ for c, _ in WRONG_63])
def test_wrong_two_source_layer_is_rejected(wrong):
    assert_rejected("ch06.q3", wrong, dict(WRONG_63)[wrong])


def test_reference_shaped_answer_passes():
    """The wrong answers above differ from _TwoSources by one change each; it must pass."""
    from _wrong_answers import question

    assert question("ch06.q3").evaluate(_TwoSources).status == "passed"
