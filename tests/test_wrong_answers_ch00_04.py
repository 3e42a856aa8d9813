"""Plausible wrong answers to the exercises of chapters 0 to 4: every one must be rejected.

Most of these once passed a check whose cases happened not to vary something (every d_model a
perfect square, every symbol one character, white space always single spaces, no batch of one
sentence, float32 inputs only); the cases were added so that they fail now. A few were always
rejected and are kept because they show which differences the cases must keep (d_k != d_v,
B != T). Same path as tests/test_wrong_answers.py: ``Question.evaluate``.
"""

from __future__ import annotations

import math
import re
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from _wrong_answers import assert_rejected, pairs, question

_SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>", "<mask>"]


# --------------------------------------------------------------------------- chapter 0


def _softmax_minus_mean(x, dim=-1):
    e = (x - x.mean(dim=dim, keepdim=True)).exp()  # overflows once a row spans more than ~176
    return e / e.sum(dim=dim, keepdim=True)


def _softmax_minus_min(x, dim=-1):
    e = (x - x.amin(dim=dim, keepdim=True)).exp()  # the minimum: exp(max - min) overflows
    return e / e.sum(dim=dim, keepdim=True)


def _one_hot_library_int64(ids, vocab_size):
    return F.one_hot(ids, vocab_size)  # int64, not the float tensor the task asks for


def _one_hot_float64(ids, vocab_size):
    return F.one_hot(ids, vocab_size).double()  # float64, not float32


def _masked_mean_left_padding(x, lengths):
    t = x.shape[1]  # the real tokens assumed at the end of each row
    keep = (torch.arange(t)[None, :] >= (t - lengths)[:, None]).to(x.dtype)
    return (x * keep[:, :, None]).sum(dim=1) / lengths[:, None].to(x.dtype)


def _count_bias_always(d_in, d_out, bias=True):
    return d_in * d_out + d_out  # the bias argument ignored


# --------------------------------------------------------------------------- chapter 1


def _rnn_ignores_h0(x, h0, W_ih, W_hh, b_ih, b_hh):
    H = h0.shape[-1]
    h, outputs = torch.zeros_like(h0), []  # starts from zeros whatever h0 is
    for t in range(x.shape[1]):
        gi, gh = x[:, t] @ W_ih.T + b_ih, h @ W_hh.T + b_hh  # (B, 3H) each
        r = torch.sigmoid(gi[:, :H] + gh[:, :H])
        z = torch.sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])
        n = torch.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
        h = (1 - z) * n + z * h
        outputs.append(h)
    return torch.stack(outputs, dim=1)


def _jacobian_w_hh_transposed(hs, W_hh, k):
    t, h = hs.shape
    jac = torch.eye(h, dtype=hs.dtype)
    for j in range(t - 1, t - 1 - k, -1):
        jac = jac @ (torch.diag(1 - hs[j] ** 2) @ W_hh.T)  # W_hh^T: the forward map's layout
    return jac


def _attention_preview_sqrt_t(x):
    scores = x @ x.transpose(-2, -1) / math.sqrt(x.shape[1])  # sqrt(T) instead of sqrt(d)
    return torch.softmax(scores, dim=-1) @ x


def _final_state_gather_squeeze(x, lengths, rnn):
    states, _ = rnn(x)
    index = (lengths - 1)[:, None, None].expand(-1, 1, states.shape[-1])
    return states.gather(1, index).squeeze()  # also drops the batch axis of a single sentence


# --------------------------------------------------------------------------- chapter 2


def _vocab(counts, min_freq):
    kept = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
    vocab = {tok: i for i, tok in enumerate(_SPECIALS)}
    for word in kept:
        vocab[word] = len(vocab)
    return vocab


def _vocab_split_single_space(texts, min_freq):
    # split(" "): "" from a run of spaces, "The\tcat" as one word
    return _vocab(Counter(w for t in texts for w in t.split(" ")), min_freq)


def _vocab_lowercased(texts, min_freq):
    # lower-cased, which nothing asks for: "The" and "the" merged
    return _vocab(Counter(w for t in texts for w in t.lower().split()), min_freq)


def _pairs_of_characters(word_freqs):
    counts = {}
    for symbols, freq in word_freqs.items():
        word = "".join(symbols)  # characters, not symbols: wrong once "aa" is one symbol
        for pair in zip(word, word[1:], strict=False):
            counts[pair] = counts.get(pair, 0) + freq
    return counts


def _encode_drop_empty_strings(text, vocab, add_special_tokens=False):
    # split(" ") with the empty strings dropped: tabs and newlines still join words
    ids = [vocab.get(w, vocab["<unk>"]) for w in text.split(" ") if w]
    return [vocab["<bos>"], *ids, vocab["<eos>"]] if add_special_tokens else ids


def _encode_regex_spaces(text, vocab, add_special_tokens=False):
    words = [w for w in re.split(r" +", text) if w]  # runs of spaces only, not all white space
    ids = [vocab.get(w, vocab["<unk>"]) for w in words]
    return [vocab["<bos>"], *ids, vocab["<eos>"]] if add_special_tokens else ids


def _nearest_drop_first_column(weight, ids, k):
    from tfbook.embedding import cosine_similarity_matrix

    # assumes the query is always ranked first: a twin row with the same cosine 1 may be first
    return cosine_similarity_matrix(weight)[ids].topk(k + 1, dim=-1).indices[:, 1:]


def _nearest_argsort_skip_first(weight, ids, k):
    from tfbook.embedding import cosine_similarity_matrix

    # the same assumption through a full sort
    order = cosine_similarity_matrix(weight)[ids].argsort(dim=-1, descending=True)
    return order[:, 1 : k + 1]


# --------------------------------------------------------------------------- chapter 3


def _rope_parts(x, dtype):
    t, d = x.shape[-2], x.shape[-1]
    m = torch.arange(t, dtype=torch.float64)[:, None]
    theta = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    return torch.cos(m * theta).to(dtype), torch.sin(m * theta).to(dtype)


def _rope_returns_float64(x, base=10000.0):
    x = x.double()  # computed in float64 and returned so: not the input's dtype
    cos, sin = _rope_parts(x, torch.float64)
    first, second = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)


def _rope_always_float32(x, base=10000.0):
    cos, sin = _rope_parts(x, torch.float32)
    out = torch.zeros(x.shape)  # torch's default dtype, float32, whatever x's dtype
    h = x.shape[-1] // 2
    out[..., :h] = x[..., :h] * cos - x[..., h:] * sin
    out[..., h:] = x[..., :h] * sin + x[..., h:] * cos
    return out


def _shift_matrix_exponent_over_half(delta, d_model):
    half = d_model // 2
    m = torch.zeros(d_model, d_model, dtype=torch.float64)
    for i in range(half):
        phi = delta * 10000.0 ** (-2 * i / half)  # divided by d_model / 2, not d_model
        m[i, i], m[i, i + half] = math.cos(phi), math.sin(phi)
        m[i + half, i], m[i + half, i + half] = -math.sin(phi), math.cos(phi)
    return m


def _attention_scaled_by_d_v(q, k, v):
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(v.shape[-1]), dim=-1)
    return weights @ v, weights  # sqrt(d_v): the cases keep d_v != d_k


def _attention_scaled_by_t_k(q, k, v):
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(k.shape[1]), dim=-1)
    return weights @ v, weights  # sqrt(T_k): the cases keep T_k != d_k


# "passed before": the check accepted it until this file's cases were added to the question;
# "kept": always rejected, kept for the difference between the cases it relies on.
WRONG = {
    "ch00.q1": [_softmax_minus_mean, _softmax_minus_min],  # passed before
    "ch00.q2": [_one_hot_library_int64, _one_hot_float64],  # passed before
    "ch00.q3": [_masked_mean_left_padding],  # kept
    "ch00.q4": [_count_bias_always],  # kept
    "ch01.q2": [_rnn_ignores_h0],  # kept
    "ch01.q3": [_jacobian_w_hh_transposed],  # kept
    "ch01.q4": [_attention_preview_sqrt_t],  # kept
    "ch01.q7": [_final_state_gather_squeeze],  # passed before
    "ch02.q1": [_vocab_split_single_space, _vocab_lowercased],  # passed before
    "ch02.q2": [_pairs_of_characters],  # passed before
    "ch02.q7": [_encode_drop_empty_strings, _encode_regex_spaces],  # passed before
    "ch02.q9": [_nearest_drop_first_column, _nearest_argsort_skip_first],  # passed before
    "ch03.q2": [_shift_matrix_exponent_over_half],  # kept
    "ch03.q5": [_rope_returns_float64, _rope_always_float32],  # passed before
    "ch04.q1": [_attention_scaled_by_d_v, _attention_scaled_by_t_k],  # kept
}
PAIRS, PAIR_IDS = pairs(WRONG)


@pytest.mark.parametrize(("qid", "wrong"), PAIRS, ids=PAIR_IDS)
def test_plausible_wrong_answer_is_rejected(qid, wrong):
    assert_rejected(qid, wrong)


# --------------------------------------------------------------------------- forbidden calls
# Passed before: exercise 2.5 says "Do not use tfbook.embedding.cosine_similarity_matrix or
# F.cosine_similarity"; both compute the right values, so only the watch rejects them.


def _analogy_target(weight, a, b, c):
    unit = weight / weight.norm(dim=1, keepdim=True)
    return unit[b] - unit[a] + unit[c]  # (Q, d)


def _best_allowed(cos, a, b, c):
    queries = torch.arange(len(a))
    for ids in (a, b, c):
        cos[queries, ids] = float("-inf")
    return cos.argmax(dim=1)


def _cosine_by_library(weight, a, b, c):
    from tfbook.embedding import cosine_similarity_matrix

    target = _analogy_target(weight, a, b, c)
    cos = cosine_similarity_matrix(torch.cat([target, weight]))[: len(a), len(a) :]
    return _best_allowed(cos, a, b, c)


def _cosine_by_torch(weight, a, b, c):
    target = _analogy_target(weight, a, b, c)
    return _best_allowed(F.cosine_similarity(target[:, None], weight[None], dim=-1), a, b, c)


def _cosine_by_torch_module(weight, a, b, c):
    target = _analogy_target(weight, a, b, c)
    cos = torch.nn.CosineSimilarity(dim=-1)(target[:, None], weight[None])
    return _best_allowed(cos, a, b, c)


FORBIDDEN = [
    ("ch02.q5", _cosine_by_library, "tfbook.embedding.cosine_similarity_matrix"),
    ("ch02.q5", _cosine_by_torch, "torch.nn.functional.cosine_similarity"),
    ("ch02.q5", _cosine_by_torch_module, "torch.nn.functional.cosine_similarity"),
]


@pytest.mark.parametrize(
    ("qid", "answer", "name"), FORBIDDEN, ids=[f"{q}-{f.__name__}" for q, f, _ in FORBIDDEN]
)
def test_calling_a_forbidden_function_is_rejected_and_named(qid, answer, name):
    q = question(qid)
    result = q.evaluate(answer)
    assert result.status == "failed", result.text()
    assert f"your function calls {name}" in result.text()
    with torch.no_grad():  # the values are right: only the watch tells them apart
        case = q.make_cases()[0]
        assert q.compare(q.reference(*case.args), answer(*case.args)) is None


# --------------------------------------------------------------------------- 4.3 pre-built mask

_PREBUILT = torch.ones(16, 16, dtype=torch.bool).tril()  # built once, before any call


def _causal_mask_sliced_from_prebuilt(seq_len):
    return _PREBUILT[:seq_len, :seq_len].clone()  # right up to 16 positions, wrong beyond


def test_causal_mask_sliced_from_a_prebuilt_one_is_rejected():
    result = question("ch04.q3").evaluate(_causal_mask_sliced_from_prebuilt)
    assert result.status != "passed", result.text()
    assert "seq_len=37" in result.text()


# --------------------------------------------------------------------------- 4.2 large scores


def _masked_attention_unshifted_exp(q, k, v, mask):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    e = scores.exp() * mask  # no max subtracted: exp overflows to inf for scores above 88
    weights = e / e.sum(dim=-1, keepdim=True).clamp_min(1e-30)  # an empty row gives zeros
    return weights @ v, weights


def test_masked_attention_without_the_max_shift_is_rejected():
    result = question("ch04.q2").evaluate(_masked_attention_unshifted_exp)
    assert result.status == "failed", result.text()
    assert "scores in the hundreds" in result.text()


# --------------------------------------------------------------------------- 1.4, 4.6 large entries


def _exp_normalised(scores):
    e = scores.exp()  # no max subtracted: inf for scores above 88, then inf / inf = NaN
    return e / e.sum(dim=-1, keepdim=True)


def _attention_preview_unshifted(x):
    return _exp_normalised(x @ x.transpose(-2, -1) / math.sqrt(x.shape[-1])) @ x


@pytest.mark.parametrize(("qid", "wrong"), [("ch01.q4", _attention_preview_unshifted)])
def test_softmax_without_the_max_shift_is_rejected(qid, wrong):
    result = question(qid).evaluate(wrong)
    assert result.status == "failed", result.text()
    assert "large entries" in result.text()
