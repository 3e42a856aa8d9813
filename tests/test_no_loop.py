"""A task that says "no loop over positions" rejects a loop, however it is written (issue 14).

Exercise 1.4 (self-attention in one matrix product) counts the work of the answer at 4 and at
32 positions: the Python lines it runs and the tensor operations it calls. Vectorised answers
do the same work at both lengths, whatever library calls they use; a for loop, a list
comprehension, ``torch.stack`` of per-position results, ``map`` with a lambda, recursion or a
NumPy loop all do about eight times as much, and fail with a diagnosis that says so. The
check works the same way inline, through the grader's judge (in process, over the wire) and
in the bubblewrap sandbox of ``tfbook grade``.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import tempfile
import threading

import nbformat
import numpy as np
import pytest
import torch

from tfbook.exercises import ch01, load
from tfbook.exercises._engine import LOOP_OVER_POSITIONS
from tfbook.exercises._watch import _WorkCounter

Q = ch01.q4


# --------------------------------------------------------------------------- right answers


def vectorised(x):
    scores = x @ x.transpose(-2, -1) / math.sqrt(x.shape[-1])  # (B, T, T)
    return torch.softmax(scores, dim=-1) @ x


def einsum_and_explicit_softmax(x):
    scores = torch.einsum("btd,bsd->bts", x, x) / x.shape[-1] ** 0.5
    e = (scores - scores.amax(dim=-1, keepdim=True)).exp()
    return torch.einsum("bts,bsd->btd", e / e.sum(dim=-1, keepdim=True), x)


def baddbmm_with_a_debug_print(x):
    scores = torch.baddbmm(torch.zeros(1), x, x.transpose(1, 2), alpha=x.shape[-1] ** -0.5)
    print("scores", scores)  # printing a tensor runs torch's own Python code: not counted
    return torch.nn.functional.softmax(scores, dim=2).bmm(x)


def numpy_vectorised(x):
    a = x.numpy()
    s = a @ a.transpose(0, 2, 1) / np.sqrt(a.shape[-1])
    w = np.exp(s - s.max(axis=-1, keepdims=True))
    return torch.from_numpy((w / w.sum(axis=-1, keepdims=True)) @ a)


def helper_per_batch_row(x):
    def one_sequence(seq):  # (T, d): a loop over the batch is not a loop over positions
        return torch.softmax(seq @ seq.T / math.sqrt(seq.shape[-1]), dim=-1) @ seq

    return torch.stack([one_sequence(seq) for seq in x])


RIGHT = [
    vectorised,
    einsum_and_explicit_softmax,
    baddbmm_with_a_debug_print,
    numpy_vectorised,
    helper_per_batch_row,
]


# --------------------------------------------------------------------------- loops


def for_loop(x):
    out = torch.empty_like(x)
    for t in range(x.shape[1]):
        scores = x[:, t : t + 1] @ x.transpose(-2, -1) / math.sqrt(x.shape[-1])  # (B, 1, T)
        out[:, t : t + 1] = torch.softmax(scores, dim=-1) @ x
    return out


def list_comprehension(x):
    d = math.sqrt(x.shape[-1])
    rows = [
        torch.softmax(x[:, t : t + 1] @ x.transpose(1, 2) / d, -1) @ x for t in range(x.shape[1])
    ]
    return torch.cat(rows, dim=1)


def stack_of_positions(x):
    def position(q):  # q: (B, d), one query position of every sequence
        weights = torch.softmax((q[:, None] @ x.transpose(1, 2)) / math.sqrt(x.shape[-1]), -1)
        return (weights @ x)[:, 0]  # (B, d)

    return torch.stack([position(x[:, t]) for t in range(x.shape[1])], dim=1)


def map_with_lambda(x):
    d = math.sqrt(x.shape[-1])
    rows = map(lambda q: torch.softmax(q[:, None] @ x.transpose(1, 2) / d, -1) @ x, x.unbind(1))
    return torch.cat(list(rows), dim=1)


def while_loop(x):
    t, rows = 0, []
    while t < x.shape[1]:
        rows.append(torch.softmax(x[:, t : t + 1] @ x.transpose(1, 2) / x.shape[-1] ** 0.5, -1) @ x)
        t += 1
    return torch.cat(rows, dim=1)


def recursion(x, t=0):
    if t == x.shape[1]:
        return x[:, :0]
    row = torch.softmax(x[:, t : t + 1] @ x.transpose(1, 2) / x.shape[-1] ** 0.5, -1) @ x
    return torch.cat([row, recursion(x, t + 1)], dim=1)


def numpy_loop(x):
    a = x.numpy()
    out = np.empty_like(a)
    for t in range(a.shape[1]):
        s = a[:, t : t + 1] @ a.transpose(0, 2, 1) / np.sqrt(a.shape[-1])
        w = np.exp(s - s.max(axis=-1, keepdims=True))
        out[:, t : t + 1] = (w / w.sum(axis=-1, keepdims=True)) @ a
    return torch.from_numpy(out)


LOOPS = [
    for_loop,
    list_comprehension,
    stack_of_positions,
    map_with_lambda,
    while_loop,
    recursion,
    numpy_loop,
]


# --------------------------------------------------------------------------- inline


@pytest.mark.parametrize("answer", RIGHT, ids=lambda f: f.__name__)
def test_vectorised_answers_pass(answer, capsys):
    result = Q.evaluate(answer)
    assert result.status == "passed", result.text()


@pytest.mark.parametrize("answer", LOOPS, ids=lambda f: f.__name__)
def test_loops_over_positions_are_rejected_with_the_diagnosis(answer):
    for case in Q.make_cases() + Q.probe_cases():  # the values are right: only the work differs
        assert Q.compare(Q.reference(*case.args), answer(*case.args)) is None
    result = Q.evaluate(answer)
    assert result.status == "failed" and result.points == 0, result.text()
    assert result.mistake is LOOP_OVER_POSITIONS
    text = result.text()
    assert "as much work at T = 32 as at T = 4" in text
    assert "loops over them" in text and "Likely mistake: a loop over positions." in text


def test_the_diagnosis_reports_the_measured_growth():
    result = Q.evaluate(for_loop)
    ratio = float(result.detail.split("your function does ")[1].split("x as much")[0])
    assert 4.0 < ratio < 9.0, result.detail  # 8x the positions, plus the work outside the loop


def test_vectorised_work_does_not_depend_on_the_length():
    counts = []
    for case in Q.probe_cases():
        counter = _WorkCounter()
        counter.run(lambda case=case: vectorised(*case.args))
        counts.append((counter.lines, counter.tensor_ops))
    assert counts[0] == counts[1] and counts[0][1] > 0, counts


def test_a_loop_over_the_batch_axis_is_not_counted_as_a_loop_over_positions():
    counter = _WorkCounter()
    x = torch.randn(3, 32, 8)
    counter.run(lambda: helper_per_batch_row(x))
    per_sequence = counter.lines
    counter = _WorkCounter()
    counter.run(lambda: helper_per_batch_row(x[:, :4]))
    assert counter.lines == per_sequence


def test_switching_the_counter_off_is_noticed():
    def sneaky(x):
        sys.settrace(None)
        return for_loop(x)

    result = Q.evaluate(sneaky)
    assert result.status == "failed" and "sys.settrace" in result.text(), result.text()


def test_the_tracer_and_the_torch_mode_are_removed_after_the_check():
    before = sys.gettrace()
    Q.evaluate(for_loop)
    Q.evaluate(vectorised)
    assert sys.gettrace() is before
    assert not torch.overrides._get_current_function_mode_stack()


def test_only_questions_whose_task_says_no_loop_probe_the_work():
    from tfbook.exercises import chapters

    probed = [q.qid for ch in chapters() for q in load(ch) if q.loop_probe is not None]
    assert probed == ["ch01.q4", "ch09.q5"]


# --------------------------------------------------------------------------- graded


def judged(question, answer, monkeypatch):
    """``question`` checked as the grader does, without the sandbox: a judge (in a thread
    here) holds the reference and sends the cases over the wire; the stand-in question of
    ``tfbook_tools.sandbox_client`` runs ``answer`` and sends back what it did."""
    from tfbook_tools import sandbox_client
    from tfbook_tools.judge import Judge, Limits

    chapter = question.qid.split(".")[0]
    judge = Judge(chapter, Limits(cpu_seconds=600, memory_mb=0), lambda qid, result: None)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "judge.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(1)
        errors = []

        def serve():
            try:
                connection, _ = listener.accept()
                with connection:
                    judge.session(connection)
            except Exception as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)

        server = threading.Thread(target=serve, daemon=True)
        server.start()
        monkeypatch.setenv(sandbox_client.SOCKET_ENV, path)
        info = {"qid": question.qid, "title": question.title, "points": question.points}
        remote = sandbox_client.RemoteQuestion(info | {"hints": list(question.hints)})
        result = remote.evaluate(answer)
        server.join(60)
        listener.close()
    assert not errors, errors
    return result


@pytest.mark.parametrize("answer", [for_loop, stack_of_positions], ids=lambda f: f.__name__)
def test_the_judge_rejects_a_loop_sent_over_the_wire(answer, monkeypatch):
    result = judged(Q, answer, monkeypatch)
    assert result.status == "failed", result.text()
    assert result.mistake is not None and result.mistake.name == LOOP_OVER_POSITIONS.name
    assert "as much work at T = 32 as at T = 4" in result.text()


def test_the_judge_passes_the_vectorised_answer(monkeypatch):
    result = judged(Q, vectorised, monkeypatch)
    assert result.status == "passed", result.text()


def _submission(source: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import math\nimport torch\nfrom tfbook.exercises import ch01 as ex"
        ),
        nbformat.v4.new_code_cell(source),
        nbformat.v4.new_code_cell("ex.q4.check(my_attention_preview)"),
    ]
    return nb


LOOP_SOURCE = """def my_attention_preview(x):
    rows = []
    for t in range(x.shape[1]):
        scores = x[:, t : t + 1] @ x.transpose(-2, -1) / math.sqrt(x.shape[-1])
        rows.append(torch.softmax(scores, dim=-1) @ x)
    return torch.cat(rows, dim=1)"""

VECTORISED_SOURCE = """def my_attention_preview(x):
    return torch.softmax(x @ x.transpose(-2, -1) / math.sqrt(x.shape[-1]), dim=-1) @ x"""


@pytest.mark.slow
def test_tfbook_grade_in_the_sandbox_rejects_the_loop_and_passes_the_vectorised(tmp_path):
    from tfbook_tools.grading import grade_batch
    from tfbook_tools.sandbox import sandbox_problem

    if sandbox_problem() is not None:
        pytest.skip(f"no sandbox here: {sandbox_problem()}")
    paths = []
    for name, source in (("loop", LOOP_SOURCE), ("vectorised", VECTORISED_SOURCE)):
        paths.append(tmp_path / f"{name}.ipynb")
        nbformat.write(_submission(source), paths[-1])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    results = grade_batch(
        paths, tmp_path / "grades.csv", os.path.join(root, "book"), jobs=2, timeout=120
    )
    by_name = {os.path.basename(r.file): r for r in results}
    loop, right = by_name["loop.ipynb"], by_name["vectorised.ipynb"]
    assert loop.scores["ch01.q4"] == 0.0 and right.scores["ch01.q4"] == 1.0, (loop, right)
    assert "Likely mistake: a loop over positions." in loop.feedback["ch01.q4"]
    assert "as much work at T = 32 as at T = 4" in loop.feedback["ch01.q4"]
