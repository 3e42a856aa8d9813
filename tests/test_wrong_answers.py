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
from _wrong_answers import assert_rejected, pairs, question
from torch import nn

from tfbook.attention import MultiHeadAttention
from tfbook.positional import apply_rotary
from tfbook.rnn import RNN


def _softmax_global_max(x, dim=-1):
    e = torch.exp(x - x.max())  # one maximum for the whole tensor: rows far below it underflow
    return e / e.sum(dim=dim, keepdim=True)


def _softmax_no_max(x, dim=-1):
    return torch.exp(x) / torch.exp(x).sum(dim=dim, keepdim=True)


def _causal_float(seq_len):
    return torch.tril(torch.ones(seq_len, seq_len))  # 0/1 floats: added to scores, blocks nothing


def _causal_int(seq_len):
    return torch.tril(torch.ones(seq_len, seq_len, dtype=torch.long))


def _masked_zero(q, k, v, mask):
    scores = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(~mask, 0.0)
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


# ---- issue 14: the predict, debug, derive and build questions of chapters 1 to 5


def _counts_without_first_input_product(kind):
    layer, depth = kind.split(", ")
    n_layers = int(depth.split()[0])
    if layer == "RNN":  # the x_1 W_ih product of the first step forgotten
        return 12 + n_layers - 2, 12 + n_layers - 2
    return 2 * n_layers, n_layers


def _final_state_clamped(x, lengths, rnn):
    states, _ = rnn(x)  # "fixed" the IndexError by clamping instead of subtracting 1
    return states[torch.arange(x.shape[0]), lengths.clamp(max=x.shape[1] - 1)]


class _BiRNNOneSharedRNN(nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.rnn = RNN(input_size, hidden_size)  # one RNN read in both directions

    def forward(self, x):
        ahead, _ = self.rnn(x)
        behind, _ = self.rnn(x.flip(1))
        return torch.cat([ahead, behind.flip(1)], dim=-1)


def _bpe_end_of_word_marker(kind):
    # Sennrich et al.'s original BPE adds </w> to every word; tfbook's chunks do not
    values = {
        "vocab_size with 0 merges": 10,
        "tokens in the text after 3 merges": 5,
        "vocab_size after 3 merges": 13,
        "vocab_size when asked for 10 merges": 13,
    }
    return values[kind]


def _encode_strip_then_split(text, vocab, add_special_tokens=False):
    unk = vocab["<unk>"]
    ids = [vocab.get(w, unk) for w in text.strip().split(" ")]  # still breaks on double spaces
    return [vocab["<bos>"], *ids, vocab["<eos>"]] if add_special_tokens else ids


def _rms_cosine_d_minus_one(d):
    return 1.0 / math.sqrt(d - 1)


def _nearest_euclidean(weight, ids, k):
    distance = torch.cdist(weight, weight)[ids]
    distance[torch.arange(len(ids)), ids] = float("inf")
    return distance.topk(k, dim=-1, largest=False).indices


def _maps_raw_and_learned_swapped(encoding):
    return {"rotary": "A", "learned": "C", "raw index": "B", "sinusoidal": "D"}[encoding]


def _rope_scores_keys_by_queries(q, k):
    t_q, t_k = q.shape[-2], k.shape[-2]
    q_rot = apply_rotary(q, torch.arange(t_k - t_q, t_k))
    return apply_rotary(k) @ q_rot.transpose(-2, -1)  # (T_k, T_q): transposed scores


def _shapes_merged_batch_and_heads(kind):
    if kind.startswith("weights: cross"):
        return (8, 3, 7)  # nn.MultiheadAttention's (B * h, T_q, T_k) layout
    answers = {"output": (2, 3, 16), "parameters": 1088, "weights: self": (2, 1, 5, 5)}
    return next(v for key, v in answers.items() if kind.startswith(key))


def _fixed_float_mask_added(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores + mask.float()  # a 0/1 float mask added to the scores blocks nothing
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


def _jacobian_divided_by_dk(q, k, v):
    d_k = q.shape[-1]
    a = torch.softmax(k @ q / d_k, dim=-1)  # d_k where sqrt(d_k) belongs, twice
    return v.T @ (torch.diag(a) - a[:, None] * a[None, :]) @ k / d_k


class _PoolingMean(nn.Module):
    def __init__(self, d_model, n_heads):
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, 1, d_model))
        self.attn = MultiHeadAttention(d_model, n_heads)

    def forward(self, x, mask=None):  # an average of the real tokens: no attention at all
        keep = mask.transpose(1, 2).to(x.dtype) if mask is not None else torch.ones_like(x[..., :1])
        return (x * keep).sum(dim=1) / keep.sum(dim=1)


def _ln_rounded(kind):
    values = {"y.mean()": 0.0, "y.std()": 1.03, "y.norm()": 4.0}
    return values.get(kind, 2.07 if "gamma" in kind else 0.0)


# ---- chapter 8: the capstone's exercises


def _ch08_predict_rounded(kind):
    from tfbook.exercises import ch08

    return round(ch08._reference_predicted(kind), 1 if "V=65" in kind else 4)  # 4.2, 0.0001 ...


def _ch08_budget_fp16_weights(n_params, steps, global_batch, context, corpus_tokens):
    # mixed precision's habit: fp16 weights, fp32 moments (this checkpoint is all fp32)
    return 2 * n_params + 8 * n_params, steps * global_batch * context / corpus_tokens


def _ch08_budget_context_plus_one(n_params, steps, global_batch, context, corpus_tokens):
    return 12 * n_params, steps * global_batch * (context + 1) / corpus_tokens


def _ch08_accumulate_strided(config, weights, ids, lr, n_micro):
    from tfbook.exercises import ch08

    # rows i, i + n, i + 2n ...: the same update, but not the contiguous slices DDP takes
    order = torch.cat([ids[i::n_micro] for i in range(n_micro)])
    return ch08._reference_accumulated(config, weights, order, lr, n_micro)


def _ch08_accumulate_divided_losses(config, weights, ids, lr, n_micro):
    from tfbook.exercises import ch08

    losses, params = ch08._reference_accumulated(config, weights, ids, lr, n_micro)
    return [loss / n_micro for loss in losses], params  # recorded after the division


def _ch08_perplexity_drops_last_window(model, ids, context):
    from tfbook.exercises import ch08

    full = (ids.shape[0] - 1) // context * context + 1  # only the windows of context + 1 tokens
    return ch08._reference_heldout_perplexity(model, ids[: max(full, 2)], context)


def _ch08_perplexity_sliding(model, ids, context):
    from tfbook.objectives import lm_loss, perplexity

    losses = []  # every token from the longest context available: a different measurement
    for t in range(1, ids.shape[0]):
        window = ids[max(0, t - context) : t + 1][None]
        losses.append(lm_loss(model(window[:, :-1])[:, -1:], window[:, -1:]).item())
    return perplexity(sum(losses) / len(losses))


def _ch08_step_returns_tensor(model, optimizer, src, tgt, pad_id, clip):
    from tfbook.exercises import ch08

    ch08.train_step(model, optimizer, src, tgt, pad_id, clip)
    return torch.tensor(0.0)  # a tensor, not loss.item()


def _ch08_step_fixed_clip(model, optimizer, src, tgt, pad_id, clip):
    from tfbook.exercises import ch08

    return ch08.train_step(model, optimizer, src, tgt, pad_id, 1.0)  # the argument ignored


def _ch08_step_label_smoothing(model, optimizer, src, tgt, pad_id, clip):
    from tfbook.objectives import lm_loss, teacher_forcing

    decoder_inputs, targets = teacher_forcing(tgt, pad_id)
    loss = lm_loss(model(src, decoder_inputs), targets, label_smoothing=0.1)
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return loss.item()


def _ch08_step_per_sequence_mean(model, optimizer, src, tgt, pad_id, clip):
    import torch.nn.functional as F

    logits = model(src, tgt[:, :-1])  # summed over tokens, divided by the number of sequences
    loss = (
        F.cross_entropy(logits.transpose(1, 2), tgt[:, 1:], ignore_index=pad_id, reduction="sum")
        / tgt.shape[0]
    )
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return loss.item()


WRONG = {
    "ch00.q1": [_softmax_global_max, _softmax_no_max],
    "ch04.q2": [_masked_zero],
    "ch04.q3": [_causal_float, _causal_int],
    "ch01.q6": [_counts_without_first_input_product],
    "ch01.q7": [_final_state_clamped],
    "ch01.q8": [_BiRNNOneSharedRNN],
    "ch02.q6": [_bpe_end_of_word_marker],
    "ch02.q7": [_encode_strip_then_split],
    "ch02.q8": [_rms_cosine_d_minus_one],
    "ch02.q9": [_nearest_euclidean],
    "ch03.q6": [_maps_raw_and_learned_swapped],
    "ch03.q7": [_rope_scores_keys_by_queries],
    "ch04.q7": [_shapes_merged_batch_and_heads],
    "ch04.q8": [_fixed_float_mask_added],
    "ch04.q9": [_jacobian_divided_by_dk],
    "ch04.q10": [_PoolingMean],
    "ch05.q7": [_ln_rounded],
    "ch08.q1": [_ch08_predict_rounded],
    "ch08.q2": [_ch08_budget_fp16_weights, _ch08_budget_context_plus_one],
    "ch08.q3": [_ch08_accumulate_strided, _ch08_accumulate_divided_losses],
    "ch08.q4": [_ch08_perplexity_drops_last_window, _ch08_perplexity_sliding],
    "ch08.q5": [
        _ch08_step_returns_tensor,
        _ch08_step_fixed_clip,
        _ch08_step_label_smoothing,
        _ch08_step_per_sequence_mean,
    ],
}
PAIRS, PAIR_IDS = pairs(WRONG)


@pytest.mark.parametrize(("qid", "wrong"), PAIRS, ids=PAIR_IDS)
def test_plausible_wrong_answer_is_rejected(qid, wrong):
    assert_rejected(qid, wrong)


# --------------------------------------------------------------------------- forbidden calls
# Calling the library (or PyTorch) function the exercise asks the student to write passes every
# value check; the engine watches the call and fails it, naming the function.


def _calls(name):
    import importlib

    module, attr = name.rsplit(".", 1)
    return getattr(importlib.import_module(module), attr)


def _half_through_interleaved(x, base):
    """Exercise 3.5's half-split RoPE through the library's interleaved one, the features
    reordered before and after (right values; the library function is refused)."""
    d = x.shape[-1]
    interleaved = torch.stack([x[..., : d // 2], x[..., d // 2 :]], dim=-1).flatten(-2)
    y = _calls("tfbook.positional.apply_rotary")(interleaved, base=base)
    return torch.cat([y[..., 0::2], y[..., 1::2]], dim=-1)


def _gelu_grad_by_autograd(x):
    """GELU's slope by autograd, which exercise 5.2 refuses (its values are right)."""
    with torch.enable_grad():
        leaf = x.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(torch.nn.functional.gelu(leaf).sum(), leaf)
    return grad


FORBIDDEN_ANSWERS = {
    "ch00.q1": lambda x, dim=-1: x.softmax(dim),
    "ch01.q4": lambda x: _calls("tfbook.rnn.attention_preview")(x),
    "ch03.q5": lambda x, base=10000.0: _half_through_interleaved(x, base),
    "ch04.q1": lambda q, k, v: _calls("tfbook.attention.scaled_dot_product_attention")(q, k, v),
    "ch04.q3": lambda seq_len: _calls("tfbook.attention.causal_mask")(seq_len),
    "ch05.q2": lambda x: _gelu_grad_by_autograd(x),
    "ch05.q3": lambda x, gamma, eps=1e-6: torch.nn.functional.rms_norm(
        x, (x.shape[-1],), gamma, eps
    ),
}


@pytest.mark.parametrize("qid", sorted(FORBIDDEN_ANSWERS))
def test_calling_the_function_to_be_written_is_rejected_and_named(qid):
    q = question(qid)
    result = q.evaluate(FORBIDDEN_ANSWERS[qid])
    assert result.status == "failed", result.text()
    assert "this exercise asks you to compute it yourself" in result.text()
    # the same function computes the right values: only the watch tells them apart
    with torch.no_grad():
        case = q.make_cases()[0]
        problem = q.compare(
            q.reference(*case.args, **case.kwargs),
            FORBIDDEN_ANSWERS[qid](*case.args, **case.kwargs),
        )
    assert problem is None


def test_switching_the_watch_off_is_noticed():
    """Exercise 4.3 forbids a function by name only (no operation watch to fall back on)."""
    import sys

    def sneaky(seq_len):
        sys.setprofile(None)
        return _calls("tfbook.attention.causal_mask")(seq_len)

    result = question("ch04.q3").evaluate(sneaky)
    assert result.status == "failed" and "sys.setprofile" in result.text()
