"""Wrong answers that passed because no case varied what they get wrong.

Each answer below computes the right values on every case the question used to have; a case
added since (named in the test) makes it fail, with a diagnosis that names the mistake. Same
path as tests/test_wrong_answers.py: ``Question.evaluate``.
"""

from __future__ import annotations

import torch
from _wrong_answers import assert_rejected, question

# --------------------------------------------------------------------------- 7.5 top-p


def _top_p_without_the_p_one_branch(logits, p):
    """Right in exact arithmetic; in float32 the running sum reaches 1.0 before the tail."""
    probs, order = torch.softmax(logits, dim=-1).sort(dim=-1, descending=True, stable=True)
    before = probs.cumsum(dim=-1) - probs  # mass of the better tokens
    keep = torch.empty_like(before, dtype=torch.bool).scatter_(-1, order, before < p)
    return logits.masked_fill(~keep, float("-inf"))


def _top_p_loop_until_sum_reaches_one(logits, p):
    """A per-row loop that stops adding tokens once the float sum reaches p."""
    out = torch.full_like(logits, float("-inf"))
    flat, flat_out = logits.reshape(-1, logits.shape[-1]), out.view(-1, logits.shape[-1])
    for row, row_out in zip(flat, flat_out, strict=True):
        probs = torch.softmax(row, dim=-1)
        total = 0.0
        for i in torch.sort(probs, descending=True, stable=True).indices.tolist():
            if total >= p:
                break
            row_out[i] = row[i]
            total += probs[i].item()
    return out


def test_p_one_with_confident_logits_keeps_every_token():
    case = "confident logits"
    q = question("ch07.q5")
    logits = torch.tensor([[0.0, 20.0, -5.0, -20.0, -40.0]])
    for wrong in (_top_p_without_the_p_one_branch, _top_p_loop_until_sum_reaches_one):
        assert torch.isinf(wrong(logits, 1.0)).any(), "the answer should fail the new case"
        assert_rejected("ch07.q5", wrong)
        result = q.evaluate(wrong)
        assert case in result.case, result.case
    result = q.evaluate(_top_p_without_the_p_one_branch)
    assert result.mistake.name == "p = 1 drops unlikely tokens"
