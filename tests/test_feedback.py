"""Feedback a student can act on: the message a wrong answer gets, read as a student reads it.

Each test runs a plausible wrong answer through a real question and asserts on the text it
produces: large arguments summarised, numbers written by type with the error against the
tolerance, a dtype lost, the student's own failing line, advice for crashes whose message
misleads, the failing case retrievable, partial fixes of a multi-bug debug question named,
properties of a wrong output, and hints revealed one at a time.
"""

from __future__ import annotations

import functools
import importlib
import os
import socket
import tempfile
import threading

import pytest
import torch
import torch.nn.functional as F
from _wrong_answers import question

from tfbook.exercises import ch04, ch06, ch07, ch08
from tfbook.exercises._advice import CRASHES, crash_advice, property_advice
from tfbook.exercises._compare import _describe, compare
from tfbook.exercises._engine import Bugs, Question
from tfbook.objectives import teacher_forcing

#: No feedback message is longer than this (a state dict once printed 42 KB).
MESSAGE_LIMIT = 2000


# --------------------------------------------------------------------------- 1. summaries


def test_a_training_loop_failure_summarises_its_weights_and_batches():
    text = question("ch07.q3").evaluate(ch07._train_as_given).text()
    assert "weights=state dict, 21 tensors" in text
    assert "batches=[tensor (4, 8) int64, tensor (4, 8) int64, tensor (4, 8) int64]" in text
    assert "tensor([[" not in text  # no tensor printed value by value
    assert len(text) < 1000, text


def test_gradient_accumulation_failure_is_short():
    text = question("ch08.q3").evaluate(ch08._accumulate_as_given).text()
    assert "weights=state dict, 21 tensors, ids=tensor (8, 7) int64" in text
    assert len(text) < 1000, text


@pytest.mark.parametrize(
    ("value", "described"),
    [
        (torch.zeros(2, 5, 8), "tensor (2, 5, 8) float32"),
        (torch.tensor([3, 1, 4]), "tensor([3, 1, 4]) int64"),
        ({f"w{i}": torch.zeros(2) for i in range(24)}, "state dict, 24 tensors"),
        (torch.nn.Linear(4, 3), "Linear (15 parameters)"),
        ([3, 1, 4, 1, 5, 9, 2, 6, 5], "list of 9 ints: [3, 1, 4, ...]"),
        ([torch.zeros(4, 8, dtype=torch.long)] * 9, "list of 9 tensors (4, 8) int64"),
        ("a" * 100, repr("a" * 37 + "...")),
    ],
)
def test_values_are_described_compactly(value, described):
    assert _describe(value) == described


def test_no_description_is_long():
    nested = {f"key{i}": list(range(50)) for i in range(40)}
    assert len(_describe(nested)) <= 160
    assert len(_describe([nested] * 20)) <= 160


def _wrong_answer_sets():
    """Every plausible wrong answer kept in tests/test_wrong_answers*.py: ``(qid, answer)``."""
    found = []
    for name in (
        "test_wrong_answers",
        "test_wrong_answers_ch00_04",
        "test_wrong_answers_ch05_08",
        "test_wrong_answers_defaults",
    ):
        module = importlib.import_module(name)
        for attribute in ("WRONG", "WRONG_DEFAULTS"):
            for qid, answers in getattr(module, attribute, {}).items():
                for answer in answers:
                    found.append((qid, answer[0] if isinstance(answer, tuple) else answer))
        for qid, entry in getattr(module, "FORBIDDEN_ANSWERS", {}).items():
            found.append((qid, entry[0] if isinstance(entry, tuple) else entry))
    return found


WRONG_ANSWERS = _wrong_answer_sets()


@pytest.mark.parametrize(
    ("qid", "wrong"), WRONG_ANSWERS, ids=[f"{q}-{fn.__name__}" for q, fn in WRONG_ANSWERS]
)
def test_every_kept_wrong_answer_gets_a_short_message(qid, wrong):
    text = question(qid).evaluate(wrong).text()
    assert len(text) < MESSAGE_LIMIT, f"{len(text)} characters:\n{text[:3000]}"


def test_the_kept_wrong_answers_are_found():
    assert len(WRONG_ANSWERS) >= 40, len(WRONG_ANSWERS)


# --------------------------------------------------------------------------- 2. numbers


def _budget_off_by_one(*args, **kwargs):
    checkpoint_bytes, passes = ch08.q2.reference(*args, **kwargs)
    return checkpoint_bytes - 1, passes


def test_a_count_is_written_as_an_integer():
    text = question("ch08.q2").evaluate(_budget_off_by_one).text()
    assert "expected 12000, got 11999 (1 less)" in text, text
    assert "12000.0" not in text


def _uniform_loss_slightly_off(kind):
    return ch07.q1.reference(kind) * 1.001


def test_a_float_shows_the_digits_that_differ_and_the_tolerance():
    text = question("ch07.q1").evaluate(_uniform_loss_slightly_off).text()
    assert "expected 3.689, got 3.693 (relative error 1.0e-3, allowed 1e-5)" in text, text


def test_small_numbers_keep_their_significant_digits():
    text = compare(0.000213, 0.000198, atol=1e-12, rtol=1e-5)
    assert text == "output: expected 0.000213, got 0.000198 (relative error 7.0e-2, allowed 1e-5)"


def test_integer_tensors_are_compared_as_integers():
    text = compare(torch.tensor([5, 7, 9]), torch.tensor([5, 7, 12]))
    assert text.endswith("index (2,): expected 9, got 12 (3 more)"), text


def _jacobian_in_float32(q, k, v):
    return ch04.q9.reference(q, k, v).float()


def test_a_float32_answer_to_a_float64_input_is_named():
    text = question("ch04.q9").evaluate(_jacobian_in_float32).text()
    assert "your answer is float32, the expected output float64" in text, text
    assert "Likely mistake: your answer is float32, the input was float64." in text
    # enough digits to see the two numbers differ (once "0.0465 vs 0.0465")
    line = next(x for x in text.splitlines() if "largest difference" in x)
    want, have = line.split("expected ")[1].split(" (")[0].split(", got ")
    assert want != have, line


# --------------------------------------------------------------------------- 3. crashes


def _attention_with_a_shape_bug(q, k, v):
    scores = q @ k  # the keys not transposed
    return torch.softmax(scores, dim=-1) @ v


def test_the_students_own_failing_line_is_shown():
    text = question("ch04.q1").evaluate(_attention_with_a_shape_bug).text()
    lineno = _attention_with_a_shape_bug.__code__.co_firstlineno + 1
    assert (
        f"in your code, line {lineno} of _attention_with_a_shape_bug: "
        "scores = q @ k  # the keys not transposed"
    ) in text, text
    assert "_run.py" not in text and "_watch.py" not in text


def _step_ignoring_the_padding_id(model, optimizer, src, tgt, pad_id, clip):
    optimizer.zero_grad()
    decoder_inputs, targets = teacher_forcing(tgt, pad_id)
    logits = model(src, decoder_inputs)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=pad_id)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return loss.item()


def test_ignore_index_set_to_the_padding_id_gets_advice():
    text = question("ch08.q5").evaluate(_step_ignoring_the_padding_id).text()
    assert "raised IndexError: Target -100 is out of bounds." in text, text
    assert "ignore_index=pad_id)" in text  # the student's line
    assert "Likely mistake: ignore_index set to the padding id" in text
    assert "without ignore_index=pad_id" in text


def test_an_instance_instead_of_the_class_is_named():
    pooling = ch04.q10.reference(8, 2)
    result = question("ch04.q10").evaluate(pooling)
    assert result.status == "error"
    name = type(pooling).__name__
    assert f"pass the class itself, check({name}), not {name}(...)" in result.text()


def test_an_instance_judged_elsewhere_gets_the_same_advice():
    """The grader judges outcomes without the answer: a raised outcome of an answer with no
    name, for a question that wants a class, gets the advice too."""
    q = question("ch04.q10")
    cases = q.make_cases()
    from tfbook.exercises._run import Outcome

    result = q.judge("answer", cases, [Outcome("raised", detail="AttributeError: 'int'")])
    assert "Likely mistake: an instance passed where the check wants the class" in result.text()


@pytest.mark.parametrize(
    ("fn", "name"),
    [
        (lambda x: x.float() @ x.double(), "float32 and float64 tensors mixed"),
        (lambda x: x.sum().backward(), "backward() on a value that has no graph"),
        (
            lambda x: F.cross_entropy(torch.zeros(4, 7, 12), torch.zeros(4, 7, dtype=torch.long)),
            "logits of shape (B, T, V) given to F.cross_entropy as they are",
        ),
        (lambda x: x.nonexistent_method(), None),
        (lambda x: torch.zeros(2, 3).transpose(0, 1).view(6), "view() on a tensor"),
        (lambda x: None.shape, "a value that is None"),
    ],
)
def test_known_crashes_are_mapped_to_advice(fn, name):
    try:
        fn(torch.ones(3, 3, dtype=torch.float64, requires_grad=False))
    except Exception as exc:  # noqa: BLE001 - the crash under test
        found = crash_advice(f"{type(exc).__name__}: {exc}")
    else:
        pytest.fail("the example did not raise")
    if name is None:
        assert found is None, found
    else:
        assert found is not None and found[0].startswith(name), found


def test_every_crash_pattern_is_named_and_explained():
    for pattern, name, fix in CRASHES:
        assert pattern and name and fix.endswith(".")


def _softmax_without_return(x, dim=-1):
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    e / e.sum(dim=dim, keepdim=True)  # computed, never returned


def test_a_function_without_return_is_named():
    text = question("ch00.q1").evaluate(_softmax_without_return).text()
    assert "output: expected a torch.Tensor, got NoneType" in text
    assert "Likely mistake: your function returned None." in text, text


# --------------------------------------------------------------------------- 4. the case


def _softmax_over_the_wrong_axis(x, dim=-1):
    e = torch.exp(x - x.amax(dim=0, keepdim=True))
    return e / e.sum(dim=0, keepdim=True)


def test_the_failing_case_can_be_rebuilt():
    q = question("ch00.q1")
    result = q.evaluate(_softmax_over_the_wrong_axis)
    assert result.status == "failed"
    assert "to rerun this case: case = ex.q1.last_case(), then " in result.text()
    case = q.last_case()
    assert case.name == result.case
    got = _softmax_over_the_wrong_axis(*case.args, **case.kwargs)
    assert compare(q.reference(*case.args, **case.kwargs), got) is not None  # fails again


def test_last_case_before_any_failure_says_why_there_is_none():
    q = Question("ch99.q1", "t", lambda x: x, lambda: [])
    with pytest.raises(LookupError, match="no failed case yet"):
        q.last_case()


def test_last_case_is_a_fresh_copy():
    q = question("ch00.q1")
    q.evaluate(_softmax_over_the_wrong_axis)
    first = q.last_case()
    first.args[0].zero_()
    assert q.last_case().args[0].abs().sum() > 0


# --------------------------------------------------------------------------- 5. partial fixes


def _partial_fixes(q):
    """Every mix of fixed and remaining bugs of ``q`` with at least one fixed and one left."""
    n = len(q.bugs.bugs)
    return [(q, left) for left in q.bugs.remaining() if 0 < len(left) < n]


PARTIAL = [pair for q in (ch06.q2, ch07.q3, ch08.q3) for pair in _partial_fixes(q)]


@pytest.mark.parametrize(
    ("q", "left"), PARTIAL, ids=[f"{q.qid}-{'+'.join(left)}" for q, left in PARTIAL]
)
def test_a_partial_fix_is_named_with_the_bugs_that_remain(q, left):
    answer = functools.partial(q.bugs.fn, **q.bugs.switches(left))
    result = q.evaluate(answer)
    assert result.status == "failed", result.text()
    if result.mistake in q.mistakes:  # a mix the question names as one of its own mistakes
        return
    fixed = len(q.bugs.bugs) - len(left)
    words = {1: "one", 2: "two"}
    assert result.mistake is not None, result.text()
    assert result.mistake.name.startswith(f"{words[fixed]} of the three bugs"), result.text()
    for name, (what, _) in q.bugs.bugs.items():
        assert (what in result.text()) == (name in left), result.text()


def _train_with_the_shift_fixed(config, weights, batches, lr, pad_id=0):
    return ch07._train_variant(
        config, weights, batches, lr, pad_id, shift="right", ignore_pad=False, zero_grad=False
    )


def test_training_loop_with_one_fix_names_the_two_bugs_left():
    text = question("ch07.q3").evaluate(_train_with_the_shift_fixed).text()
    assert (
        "Likely mistake: one of the three bugs is fixed, but still: the padding counts in the "
        "loss; the gradients are never reset."
    ) in text, text


@pytest.mark.parametrize("q", [ch06.q2, ch07.q3, ch08.q3], ids=lambda q: q.qid)
def test_every_bug_fixed_is_the_reference(q):
    fixed = functools.partial(q.bugs.fn, **q.bugs.switches(()))
    assert q.evaluate(fixed).status == "passed"


def test_bugs_must_be_described():
    with pytest.raises(ValueError, match="bugs must name at least one bug"):
        Bugs(lambda: None, {})
    with pytest.raises(TypeError, match=r"bugs\['x'\] must be a \(what is still wrong"):
        Bugs(lambda: None, {"x": "only a description"})


# --------------------------------------------------------------------------- 6. properties


def _softmax_plus_one_in_the_sum(x, dim=-1):
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / (e.sum(dim=dim, keepdim=True) + 1.0)


def _softmax_minus_a_tenth(x, dim=-1):
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True) - 0.1


def _softmax_doubled(x, dim=-1):
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return 2 * e / e.sum(dim=dim, keepdim=True)


@pytest.mark.parametrize(
    ("wrong", "shown"),
    [
        (_softmax_plus_one_in_the_sum, "the rows of your output sum to "),
        (_softmax_minus_a_tenth, "negative probabilities (the smallest is "),
        (_softmax_doubled, "every entry is 2 times the expected one"),
    ],
)
def test_a_wrong_output_is_described_by_its_properties(wrong, shown):
    text = question("ch00.q1").evaluate(wrong).text()
    assert f"Your output shows: {shown}" in text, text


def test_property_checks():
    p = torch.softmax(torch.randn(3, 4, generator=torch.Generator().manual_seed(0)), dim=-1)
    assert "sums to 1 along axis 0" in property_advice(p, p / p.sum(0, keepdim=True))[0]
    assert property_advice(p, -p)[0] == "the sign of every entry is flipped"
    s = torch.randn(4, 4, generator=torch.Generator().manual_seed(1))
    assert "sqrt(8)" in property_advice(s, s * 8**0.5)[0]
    assert "last two axes swapped" in property_advice(s, s.T)[0]
    assert "another order" in property_advice(torch.zeros(2, 3, 4), torch.zeros(2, 4, 3))[0]
    assert "an extra axis of size 1" in property_advice(torch.zeros(2, 3), torch.zeros(2, 1, 3))[0]
    assert property_advice(s, s + torch.randn(4, 4)) is None  # nothing stands out


# --------------------------------------------------------------------------- 7. hints


def test_hints_come_one_at_a_time_and_say_how_many_remain(capsys):
    q = Question("ch99.q1", "t", lambda x: x, lambda: [], hints=["first", "second"])
    q.hint()
    assert capsys.readouterr().out == (
        "[ch99.q1] Hint 1 of 2: first (1 more: call ex.q1.hint() again)\n"
    )
    q.hint()
    assert capsys.readouterr().out == (
        "[ch99.q1] Hint 2 of 2: second (that was the last; ex.q1.solution() shows a solution)\n"
    )
    q.hint()
    assert "No more hints" in capsys.readouterr().out


# --------------------------------------------------------------------------- while grading


def _graded(q, answer, monkeypatch):
    """``answer`` checked as the grader checks it: the sandbox's stand-in question runs it
    and a judge (in a thread here, holding the reference) decides. Returns the stand-in and
    its result."""
    from tfbook_tools import sandbox_client
    from tfbook_tools.judge import Judge, Limits

    judge = Judge(q.qid.split(".")[0], Limits(cpu_seconds=600, memory_mb=0), lambda *_: None)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "judge.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(1)

        def serve():
            connection, _ = listener.accept()
            with connection:
                judge.session(connection)

        server = threading.Thread(target=serve, daemon=True)
        server.start()
        monkeypatch.setenv(sandbox_client.SOCKET_ENV, path)
        info = {"qid": q.qid, "title": q.title, "points": q.points, "hints": list(q.hints)}
        remote = sandbox_client.RemoteQuestion(info)
        result = remote.evaluate(answer)
        server.join(60)
        listener.close()
    return remote, result


def test_while_grading_the_feedback_and_the_case_are_the_same(monkeypatch):
    remote, result = _graded(question("ch00.q1"), _softmax_doubled, monkeypatch)
    assert "Your output shows: every entry is 2 times the expected one." in result.text()
    case = remote.last_case()
    assert case.name == result.case
    local = question("ch00.q1")
    local.evaluate(_softmax_doubled)
    assert torch.equal(case.args[0], local.last_case().args[0])


def test_while_grading_the_students_line_is_shown(monkeypatch):
    _, result = _graded(question("ch04.q1"), _attention_with_a_shape_bug, monkeypatch)
    assert "in your code, line " in result.text() and "scores = q @ k" in result.text()
