"""Plausible wrong answers to the exercises of chapters 5 to 8: every one must be rejected.

Each of these once passed its check (the cases did not vary the argument, the edge or the shape
it gets wrong, or the check did not watch for the library function the exercise forbids); the
questions now have the cases that separate them. Same path as tests/test_wrong_answers.py:
``question.evaluate(wrong)``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from _wrong_answers import assert_rejected, pairs, question

from tfbook.attention import CrossAttention, SelfAttention, causal_mask
from tfbook.feedforward import PositionwiseFeedForward
from tfbook.generate import top_p_filter
from tfbook.model import DecoderLayer
from tfbook.norm import ResidualSublayer

# --------------------------------------------------------------------------- chapter 5


def _dropout_strictly_above_p(x, u, p, training):
    if not training or p == 0.0:
        return x.clone()
    if p >= 1.0:
        return torch.zeros_like(x)
    return torch.where(u > p, x / (1.0 - p), torch.zeros_like(x))  # drops u == p, asked to keep


# --------------------------------------------------------------------------- chapter 6


class _DecoderPostLNByDefault(torch.nn.Module):
    def __init__(self, d_model, n_heads, d_ff, norm_first=False):  # the default should be True
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


class _DecoderOwnCausalMask(_DecoderPostLNByDefault):
    def __init__(self, d_model, n_heads, d_ff, norm_first=True):
        super().__init__(d_model, n_heads, d_ff, norm_first)

    def forward(self, x, memory_a, memory_b, self_mask=None, mask_a=None, mask_b=None):
        x = self.self_attn(x, causal_mask(x.shape[1]))  # self_mask ignored
        x = self.cross_a(x, memory_a, mask_a)
        x = self.cross_b(x, memory_b, mask_b)
        return self.ffn(x)


class _DecoderSubclassOfLibrary(DecoderLayer):  # the one-source library layer, extended
    def __init__(self, d_model, n_heads, d_ff, norm_first=True):
        super().__init__(d_model, n_heads, d_ff, norm_first=norm_first)
        self.cross_a = self.cross_attn
        del self.cross_attn
        self.cross_b = ResidualSublayer(d_model, CrossAttention(d_model, n_heads), norm_first)

    def forward(self, x, memory_a, memory_b, self_mask=None, mask_a=None, mask_b=None):
        x = self.self_attn(x, self_mask)
        x = self.cross_a(x, memory_a, mask_a)
        x = self.cross_b(x, memory_b, mask_b)
        return self.ffn(x)


# --------------------------------------------------------------------------- chapter 7


def _train_padding_id_hard_coded(config, weights, batches, lr, pad_id=0):
    from tfbook.model import GPT, TransformerConfig

    model = GPT(TransformerConfig(**config))
    model.load_state_dict(weights)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for ids in batches:
        logits = model(ids[:, :-1])
        loss = F.cross_entropy(  # ignore_index=0 whatever pad_id says
            logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), ignore_index=0
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def _top_p(logits, p, *, stable=True, strict=False):
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True, stable=stable)
    probs = torch.softmax(sorted_logits, dim=-1)
    before = probs.cumsum(dim=-1) - probs
    drop_sorted = before > p if strict else before >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def _top_p_unstable_sort(logits, p):
    return _top_p(logits, p, stable=False)  # ties broken in whatever order the sort leaves them


def _top_p_strictly_above_p(logits, p):
    return _top_p(logits, p, strict=True)  # keeps one token too many when the mass equals p


# --------------------------------------------------------------------------- chapter 8


def _ch08_step_padding_id_hard_coded(model, optimizer, src, tgt, pad_id, clip):
    from tfbook.objectives import lm_loss, teacher_forcing

    decoder_inputs, targets = teacher_forcing(tgt, 0)  # 0 instead of the pad_id argument
    loss = lm_loss(model(src, decoder_inputs), targets)
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return loss.item()


WRONG = {
    "ch05.q5": [_dropout_strictly_above_p],
    "ch06.q3": [_DecoderPostLNByDefault, _DecoderOwnCausalMask],
    "ch07.q3": [_train_padding_id_hard_coded],
    "ch07.q5": [_top_p_unstable_sort, _top_p_strictly_above_p],
    "ch08.q5": [_ch08_step_padding_id_hard_coded],
}
PAIRS, PAIR_IDS = pairs(WRONG)


@pytest.mark.parametrize(("qid", "wrong"), PAIRS, ids=PAIR_IDS)
def test_plausible_wrong_answer_is_rejected(qid, wrong):
    assert_rejected(qid, wrong)


# --------------------------------------------------------------------------- forbidden calls
# The exercise text forbids the library function (or class) it rebuilds; the values are right,
# only the engine's watch tells the answer apart.


def _top_p_from_the_library(logits, p):
    return top_p_filter(logits, p)


FORBIDDEN_ANSWERS = {
    "ch06.q3": (_DecoderSubclassOfLibrary, "tfbook.model.DecoderLayer"),
    "ch07.q5": (_top_p_from_the_library, "tfbook.generate.top_p_filter"),
}


@pytest.mark.parametrize("qid", sorted(FORBIDDEN_ANSWERS))
def test_calling_the_library_function_is_rejected_and_named(qid):
    answer, name = FORBIDDEN_ANSWERS[qid]
    result = question(qid).evaluate(answer)
    assert result.status == "failed", result.text()
    assert "this exercise asks you to compute it yourself" in result.text()
    assert name in result.text()


# --------------------------------------------------------------------------- 7.3 shortcuts


def _train_with_objectives_helpers(config, weights, batches, lr, pad_id=0):
    from tfbook.model import GPT, TransformerConfig
    from tfbook.objectives import causal_lm_targets, lm_loss

    model = GPT(TransformerConfig(**config))
    model.load_state_dict(weights)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for ids in batches:
        inputs, targets = causal_lm_targets(ids, pad_id=pad_id)  # the text says not these
        loss = lm_loss(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_training_loop_through_the_objectives_helpers_is_refused():
    # right losses (this is how the library computes them), but 7.3 asks for F.cross_entropy
    result = question("ch07.q3").evaluate(_train_with_objectives_helpers)
    assert result.status == "failed", result.text()
    assert "tfbook.objectives.causal_lm_targets" in result.text()


# --------------------------------------------------------------------------- 7.1, 8.1 one step off
# rtol 1e-3 accepted these: the Noam rate at step + 1 differs by 1.0e-3 (relative), and 8.1's
# rate at step 1999 instead of 2000 by 6.8e-10 from 0 (within the old atol 1e-9).


def _noam(step, d_model=512, warmup=4000):
    return d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)


def _ch07_predicted_one_step_late(kind):
    if "noam" not in kind:
        return {"loss": math.log(40), "perplexity": 40.0}[kind.split()[0]]
    step = int(kind.split("step ")[1].split()[0])
    return _noam(step + 1)  # steps counted from 0: the rate of the next step


def _warmup_cosine(step, peak=1e-3, warmup=100, total=2000):
    if step <= warmup:
        return peak * step / warmup
    return peak * (1 + math.cos(math.pi * (step - warmup) / (total - warmup))) / 2


def _ch08_predicted_last_step_one_early(kind):
    if kind.startswith("loss"):
        return math.log(65)
    if kind.startswith("perplexity"):
        return 65.0
    step = int(kind.split()[-1])
    return _warmup_cosine(1999 if step == 2000 else step)  # "the last step" counted from 0


@pytest.mark.parametrize(
    ("qid", "wrong"),
    [("ch07.q1", _ch07_predicted_one_step_late), ("ch08.q1", _ch08_predicted_last_step_one_early)],
)
def test_schedule_one_step_off_is_rejected(qid, wrong):
    result = question(qid).evaluate(wrong)
    assert result.status == "failed", result.text()
    assert "allowed" in result.text()  # the difference is shown against the tolerance


# --------------------------------------------------------------------------- 8.5 dropout


def _ch08_step(model, optimizer, src, tgt, pad_id, clip):
    from tfbook.objectives import lm_loss, teacher_forcing

    decoder_inputs, targets = teacher_forcing(tgt, pad_id)
    loss = lm_loss(model(src, decoder_inputs), targets)
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return loss.item()


def _ch08_step_in_eval_mode(model, optimizer, src, tgt, pad_id, clip):
    model.eval()  # dropout switched off while training
    return _ch08_step(model, optimizer, src, tgt, pad_id, clip)


def _ch08_step_reseeded(model, optimizer, src, tgt, pad_id, clip):
    torch.manual_seed(0)  # "for reproducibility": the same dropout masks at every step
    return _ch08_step(model, optimizer, src, tgt, pad_id, clip)


@pytest.mark.parametrize("wrong", [_ch08_step_in_eval_mode, _ch08_step_reseeded])
def test_training_step_that_changes_dropout_is_rejected(wrong):
    result = question("ch08.q5").evaluate(wrong)
    assert result.status == "failed", result.text()
    assert "dropout 0.1" in result.text()
