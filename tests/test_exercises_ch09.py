"""Chapter 9's exercises: what their cases and references claim, and the grader's view.

``tests/test_exercises.py`` checks every question inline (the reference passes, each known
mistake is diagnosed) and ``tests/test_exercise_library.py`` runs every case through the library
counterpart. Here: the sizes 9.1 hard-codes are GPT-2 small's, 9.2's fresh adapter gets no
gradient for A, 9.3's reference merge gives a plain GPT that computes what the adapted one
computes and the code shown in the notebook is the three-bug version, 9.4's gold spans are the
names ``tag_line`` marks, 9.5's cases hold the masks they name; and every question through the
grader's judge (``judged`` from ``tests/test_no_loop.py``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from test_no_loop import judged

from tfbook.exercises import ch09
from tfbook.finetune import add_lora, name_f1
from tfbook.model import GPT, PUBLISHED, TransformerConfig, count_parameters, meta_model
from tfbook.tasks import tag_line

NOTEBOOK = Path(__file__).resolve().parents[1] / "book" / "09_finetuning.ipynb"


@pytest.mark.parametrize("question", list(ch09.EXERCISES), ids=lambda q: q.qid)
def test_the_reference_passes_through_the_judge(question, monkeypatch):
    result = judged(question, question.reference, monkeypatch)
    assert result.status == "passed", result.text()


@pytest.mark.parametrize(("qid", "index"), [("ch09.q1", 3), ("ch09.q2", 3), ("ch09.q5", 3)])
def test_a_known_mistake_is_diagnosed_through_the_judge(qid, index, monkeypatch):
    question = ch09.EXERCISES[qid]
    mistake = question.mistakes[index]
    result = judged(question, mistake.fn, monkeypatch)
    assert result.status == "failed", result.text()
    assert result.mistake is not None and result.mistake.name == mistake.name, result.text()


def test_a_partial_fix_of_the_merge_is_named_through_the_judge(monkeypatch):
    def scale_fixed(state, alpha):
        return ch09._merge_with_bugs(state, alpha, scale=False, orientation=True, dropped=True)

    result = judged(ch09.q3, scale_fixed, monkeypatch)
    assert "one of the three bugs is fixed, but still" in result.text(), result.text()


# ----------------------------------------------------------------------------- 9.1


def test_the_predictions_use_gpt2_smalls_real_sizes():
    cls, cfg = PUBLISHED["gpt2-small"][:2]
    assert count_parameters(meta_model(cls, cfg)) == ch09._GPT2_PARAMETERS
    assert (cfg.d_model, cfg.d_ff, cfg.n_layers) == tuple(
        ch09._GPT2[k] for k in ("d_model", "d_ff", "n_layers")
    )
    assert cfg.tie_weights  # the task text says the head is tied


# ----------------------------------------------------------------------------- 9.2


def test_a_fresh_adapter_gives_a_no_gradient_and_the_cases_cover_gpt2_width():
    cases = {case.name: case for case in ch09.q2.make_cases()}
    fresh = next(c for name, c in cases.items() if "fresh" in name)
    assert not fresh.args[3].any()
    grad_a, grad_b = ch09.q2.call(ch09.q2.reference, fresh)
    assert not grad_a.any() and grad_b.abs().max() > 0
    wide = next(c for name, c in cases.items() if "GPT-2" in name)
    A, B = wide.args[2], wide.args[3]
    assert A.numel() + B.numel() == 12_288 and wide.args[0].shape == (4, 64, 768)
    assert all(case.args[0].dtype == torch.float64 for case in cases.values())


# ----------------------------------------------------------------------------- 9.3


def test_the_merged_state_dict_loads_into_a_plain_gpt_that_computes_the_same():
    for case in ch09.q3.make_cases():
        state, alpha = case.args
        names = tuple(k[: -len(".lora_A")] for k in state if k.endswith(".lora_A"))
        adapted = GPT(TransformerConfig(**ch09.TINY_LORA_GPT)).double().eval()
        add_lora(adapted, names, r=state[names[0] + ".lora_A"].shape[0], alpha=alpha)
        adapted.load_state_dict(state)
        plain = GPT(TransformerConfig(**ch09.TINY_LORA_GPT)).double().eval()
        plain.load_state_dict(ch09._reference_merge(state, alpha))  # strict: every key, no other
        ids = torch.randint(0, ch09.TINY_LORA_GPT["vocab_size"], (3, 8))
        with torch.no_grad():
            torch.testing.assert_close(plain(ids), adapted(ids), rtol=1e-12, atol=1e-12)
            delta = (plain(ids) - GPT(TransformerConfig(**ch09.TINY_LORA_GPT)).double()(ids)).abs()
        assert delta.max() > 0  # the adapters change the function


@pytest.mark.skipif(not NOTEBOOK.is_file(), reason="book/09_finetuning.ipynb is not written yet")
def test_the_buggy_merge_shown_in_the_notebook_is_the_three_bug_version():
    import nbformat

    text = "\n".join(c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells)
    code = re.search(r"```python\n(def buggy_merge_adapters.*?)```", text, re.S)
    assert code, "exercise 9.3's buggy_merge_adapters is not in the notebook's markdown"
    names: dict = {}
    exec(code.group(1), names)
    result = ch09.q3.evaluate(names["buggy_merge_adapters"])
    assert result.status == "failed", result.text()
    assert "none of the three bugs fixed yet" in result.text(), result.text()


# ----------------------------------------------------------------------------- 9.4


def test_gold_spans_are_the_names_tag_line_marks():
    """Every decoded gold span reads a name (as written or in capitals), and a perfect
    prediction scores 1 on spans and on characters (tfbook.finetune.name_f1)."""
    for case in ch09.q4.make_cases():
        lines, names, _ = case.args
        forms = set(names) | {n.upper() for n in names}
        for line in lines:
            tags = tag_line(line, names)
            for start, end in ch09._spans(tags):
                assert line[start:end] in forms, (line, start, end)
            marked = sum(t != 0 for t in tags)
            assert marked == sum(e - s for s, e in ch09._spans(tags))
        gold = [tag_line(line, names) for line in lines]
        if any(any(t) for t in gold):
            assert ch09._reference_span_f1(lines, names, gold) == (1.0, 1.0, 1.0)
            flat = torch.tensor([t for tags in gold for t in tags])
            assert name_f1(flat, flat) == 1.0


def test_the_span_cases_hold_what_their_names_say():
    cases = {case.name: case.args for case in ch09.q4.make_cases()}
    for lines, _, predicted in cases.values():
        assert [len(line) for line in lines] == [len(tags) for tags in predicted]
    starts_with_i = next(args for name, args in cases.items() if "start with I" in name)
    assert any(tags[0] == 2 for tags in starts_with_i[2])
    handmade = next(args for name, args in cases.items() if "hand-made" in name)[2]
    assert any(
        b == 2 and a == 0 for tags in handmade for a, b in zip(tags[:-1], tags[1:], strict=True)
    )
    assert any(
        b == 1 and a == 2 for tags in handmade for a, b in zip(tags[:-1], tags[1:], strict=True)
    )


# ----------------------------------------------------------------------------- 9.5


def test_the_pooling_cases_hold_the_masks_they_name():
    cases = ch09.q5.make_cases()
    for case in cases:
        real = case.args[1]
        assert real.dtype == torch.bool and real.any(dim=1).all(), case.name
    kinds = {"left": False, "holes": False, "default": False}
    for case in cases:
        real = case.args[1]
        lengths = real.sum(dim=1)
        right = torch.arange(real.shape[1])[None, :] < lengths[:, None]
        left = torch.arange(real.shape[1]).flip(0)[None, :] < lengths[:, None]
        if not torch.equal(real, right) and torch.equal(real, left):
            kinds["left"] = True
        if not torch.equal(real, right) and not torch.equal(real, left):
            kinds["holes"] = True
        if "how" not in case.kwargs:
            kinds["default"] = True
    assert all(kinds.values()), kinds
