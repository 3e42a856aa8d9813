"""Chapter 8's exercises as the grader judges them, and the training-step driver.

``tests/test_exercises.py`` checks every question inline (reference passes, each known mistake
is diagnosed). Here the same answers go through the grader's judge and the sandbox's stand-in
question over the wire (``judged`` from ``tests/test_no_loop.py``): the judge holds the
references and the cases, the frozen GPT of exercise 8.4 stays in the judge behind a handle,
and the training step of exercise 8.5 runs where the student's code runs, inside the
``"training step"`` driver, on a model and an optimizer built there from plain data.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from test_no_loop import judged

from tfbook.exercises import ch08
from tfbook.exercises._drivers import DRIVERS, _build_model, drive_training_step


@pytest.mark.parametrize("question", list(ch08.EXERCISES), ids=lambda q: q.qid)
def test_the_reference_passes_through_the_judge(question, monkeypatch):
    result = judged(question, question.reference, monkeypatch)
    assert result.status == "passed", result.text()
    assert result.points == question.points


@pytest.mark.parametrize(
    ("qid", "index"), [("ch08.q3", 2), ("ch08.q4", 1), ("ch08.q5", 0), ("ch08.q5", 4)]
)
def test_a_known_mistake_is_diagnosed_through_the_judge(qid, index, monkeypatch):
    question = ch08.EXERCISES[qid]
    mistake = question.mistakes[index]
    result = judged(question, mistake.fn, monkeypatch)
    assert result.status == "failed", result.text()
    assert result.mistake is not None and result.mistake.name == mistake.name, result.text()


def test_a_loss_returned_as_a_tensor_is_an_error_that_says_what_to_return(monkeypatch):
    def keeps_the_tensor(model, optimizer, src, tgt, pad_id, clip):
        ch08.train_step(model, optimizer, src, tgt, pad_id, clip)
        return torch.tensor(1.0)

    for result in (
        ch08.q5.evaluate(keeps_the_tensor),
        judged(ch08.q5, keeps_the_tensor, monkeypatch),
    ):
        assert result.status == "error", result.text()
        assert "must return the loss as a Python float (loss.item())" in result.text()


def test_the_driver_builds_the_same_model_every_time_and_leaves_the_rng_alone():
    run = ch08.q5.make_cases()[0].args[0]
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    a, b = _build_model(run), _build_model(run)
    assert torch.rand(1) == before  # the global generator was not used
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    assert next(a.parameters()).dtype == torch.float64 and a.training


def test_the_update_cases_exercise_what_they_claim():
    """Case 1 clips (the norm is above clip), the edge case does not; there is padding."""
    cases = ch08.q5.make_cases()
    seen = {}

    def spy(model, optimizer, src, tgt, pad_id, clip):
        decoder_inputs, targets = ch08.teacher_forcing(tgt, pad_id)
        loss = ch08.lm_loss(model(src, decoder_inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        seen.setdefault(case.name, []).append((norm.item(), clip, bool((tgt == pad_id).any())))
        optimizer.step()
        return loss.item()

    for case in cases[:4]:
        drive_training_step(spy, *case.args)
    first, edge = seen[cases[0].name][0], seen[cases[3].name][0]
    assert first[0] > first[1] and edge[0] < edge[1], seen
    assert all(padded for steps in seen.values() for _, _, padded in steps)


def test_drivers_are_named_and_unknown_names_are_refused():
    assert "training step" in DRIVERS
    with pytest.raises(ValueError, match="driver must be one of"):
        ch08.Question("ch08.qx", "x", ch08.train_step, lambda: [], driver="no such driver")


# --------------------------------------------------------------------------- in the sandbox

SOLUTIONS = """import math

import torch

from tfbook.exercises import ch08 as ex
from tfbook.model import GPT, TransformerConfig
from tfbook.objectives import causal_lm_targets, lm_loss, perplexity, teacher_forcing


def predicted(kind):
    if kind.startswith("loss"):
        return math.log(65)
    if kind.startswith("perplexity"):
        return 65.0
    step = int(kind.split()[-1])
    if step <= 100:
        return 1e-3 * step / 100
    return 1e-3 * (1 + math.cos(math.pi * (step - 100) / 1900)) / 2


def training_budget(n_params, steps, global_batch, context, corpus_tokens):
    return 12 * n_params, steps * global_batch * context / corpus_tokens


def fixed_accumulated_update(config, weights, ids, lr, n_micro):
    net = GPT(TransformerConfig(**config))
    net.load_state_dict(weights)
    sgd = torch.optim.SGD(net.parameters(), lr=lr)
    recorded = []
    sgd.zero_grad()
    for part in ids.split(ids.shape[0] // n_micro):
        x, y = causal_lm_targets(part)
        part_loss = lm_loss(net(x), y)
        (part_loss / n_micro).backward()
        recorded.append(part_loss.item())
    sgd.step()
    return recorded, {k: v.detach().clone() for k, v in net.named_parameters()}


def heldout_perplexity(model, ids, context):
    summed, count = 0.0, 0
    for begin in range(0, len(ids) - 1, context):
        x, y = causal_lm_targets(ids[begin : begin + context + 1].unsqueeze(0))
        summed += lm_loss(model(x), y).item() * y.numel()
        count += y.numel()
    return perplexity(summed / count)
"""

TRAIN_STEP = """def train_step(model, optimizer, src, tgt, pad_id, clip):
    reads, scored = teacher_forcing(tgt, pad_id)
    loss = lm_loss(model(src, reads), scored)
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return loss.item()
"""

CHECKS = [
    "ex.q1.check(predicted)",
    "ex.q2.check(training_budget)",
    "ex.q3.check(fixed_accumulated_update)",
    "ex.q4.check(heldout_perplexity)",
    "ex.q5.check(train_step)",
]


def _notebook(*sources: str):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    return nb


@pytest.mark.slow
def test_chapter_8_graded_in_the_sandbox(tmp_path):
    """``tfbook grade`` on two ch08 submissions: the training step runs inside the sandbox,
    on a model built there by the driver; the judge scores it (2 points) or names the bug."""
    import nbformat

    from tfbook_tools.grading import grade_batch
    from tfbook_tools.sandbox import sandbox_problem

    if sandbox_problem() is not None:
        pytest.skip(f"no sandbox here: {sandbox_problem()}")
    masters = tmp_path / "masters"
    masters.mkdir()
    imports = "from tfbook.exercises import ch08 as ex"
    nbformat.write(_notebook(imports, *CHECKS), masters / "08_capstone.ipynb")
    never_zeroed = TRAIN_STEP.replace("    optimizer.zero_grad()\n", "")
    paths = []
    for name, step in (("right", TRAIN_STEP), ("never_zeroed", never_zeroed)):
        paths.append(tmp_path / f"{name}.ipynb")
        nbformat.write(_notebook(SOLUTIONS, step, *CHECKS), paths[-1])
    results = grade_batch(paths, tmp_path / "grades.csv", masters, jobs=2, timeout=240)
    by_name = {os.path.basename(r.file): r for r in results}
    right, wrong = by_name["right.ipynb"], by_name["never_zeroed.ipynb"]
    assert (right.status, right.total, right.max_total) == ("graded", 6.0, 6.0), right
    assert wrong.total == 4.0 and wrong.scores["ch08.q5"] == 0.0, wrong
    assert "Likely mistake: gradients never zeroed" in wrong.feedback["ch08.q5"]


NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "book").glob("08_*.ipynb"))


@pytest.mark.skipif(not NOTEBOOKS, reason="book/08_*.ipynb is not written yet")
def test_the_buggy_loop_shown_in_the_notebook_is_the_known_mistake():
    """Exercise 8.3's given code (in the chapter's markdown) is diagnosed as itself."""
    import re

    import nbformat

    from tfbook.model import GPT, TransformerConfig
    from tfbook.objectives import causal_lm_targets, lm_loss

    text = "\n".join(c.source for c in nbformat.read(NOTEBOOKS[0], as_version=4).cells)
    code = re.search(r"```python\n(def buggy_accumulated_update.*?)```", text, re.S)
    assert code, "exercise 8.3's buggy_accumulated_update is not in the notebook's markdown"
    names = dict(torch=torch, GPT=GPT, TransformerConfig=TransformerConfig)
    names |= dict(causal_lm_targets=causal_lm_targets, lm_loss=lm_loss)
    exec(code.group(1), names)
    result = ch08.q3.evaluate(names["buggy_accumulated_update"])
    assert result.status == "failed" and result.mistake is ch08.q3.mistakes[0], result.text()


def _library_step_answers():
    """Three ways a student could hand 8.5 to the library's own step."""
    import functools

    import tfbook.training
    from tfbook.objectives import lm_loss, teacher_forcing
    from tfbook.training import train_step as renamed

    def loss_fn(model, batch):
        src, tgt, pad_id = batch
        decoder_inputs, targets = teacher_forcing(tgt, pad_id)
        return lm_loss(model(src, decoder_inputs), targets)

    def direct(model, optimizer, src, tgt, pad_id, clip):
        return tfbook.training.train_step(model, optimizer, (src, tgt, pad_id), loss_fn, clip).loss

    def imported_under_another_name(model, optimizer, src, tgt, pad_id, clip):
        return renamed(model, optimizer, (src, tgt, pad_id), loss_fn, clip).loss

    step = functools.partial(tfbook.training.train_step, loss_fn=loss_fn)

    def through_partial(model, optimizer, src, tgt, pad_id, clip):
        return step(model, optimizer, (src, tgt, pad_id), clip=clip).loss

    return [direct, imported_under_another_name, through_partial]


@pytest.mark.parametrize("answer", _library_step_answers(), ids=lambda f: f.__name__)
def test_handing_the_step_to_the_library_is_refused(answer, capsys):
    ch08.q5.check(answer)
    assert ch08.q5.state == "failed"
    assert "calls tfbook.training.train_step" in capsys.readouterr().out
