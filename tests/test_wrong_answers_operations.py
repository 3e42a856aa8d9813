"""Shortcuts to a forbidden function that once passed: each is refused now, by operation.

The forbidden-call watch used to know one Python name per function, so the same operation
reached under another name (``torch.special.softmax``, ``torch.ops.aten._softmax``), through a
wrapper (``functools.partial``, ``operator.methodcaller``) or through a neighbour
(``log_softmax(x).exp()``) computed the right values and passed. The questions now also forbid
the aten operations (``forbidden=("aten._softmax", ...)``), watched by a ``TorchDispatchMode``
while the student's function runs. Each test shows the answer's values are right, that it is
refused with a message naming what was refused, and that it would pass with the Python names
alone (so the operation watch is what rejects it). Same path as tests/test_wrong_answers.py:
``Question.evaluate``.
"""

from __future__ import annotations

import functools
import math
import operator

import pytest
import torch
import torch.nn.functional as F
from _wrong_answers import question

from tfbook.exercises import chapters, load
from tfbook.exercises._watch import OPERATIONS, _CallWatch, describe_operation

# --------------------------------------------------------------------------- 0.1 softmax


def _softmax_special(x, dim=-1):
    return torch.special.softmax(x, dim)


def _softmax_private(x, dim=-1):
    return torch._softmax(x, dim, False)


def _softmax_aten(x, dim=-1):
    return torch.ops.aten._softmax(x, dim, False)


def _softmax_via_log_softmax(x, dim=-1):
    return x.log_softmax(dim).exp()


def _softmax_partial(x, dim=-1):
    return functools.partial(torch.softmax, dim=dim)(x)


def _softmax_methodcaller(x, dim=-1):
    return operator.methodcaller("softmax", dim)(x)


def _softmax_caught(x, dim=-1):
    try:  # the refusal cannot be caught: the operation is noted, not stopped
        return torch.special.softmax(x, dim)
    except Exception:  # noqa: BLE001
        return None


# --------------------------------------------------------------------------- 4.1 attention


def _attention_private_math(q, k, v):
    out, weights = torch._scaled_dot_product_attention_math(q, k, v)
    return out, weights


def _attention_aten_math(q, k, v):
    out, weights = torch.ops.aten._scaled_dot_product_attention_math(q, k, v)
    return out, weights


# --------------------------------------------------------------------------- 4.2 masked attention


def _masked_attention_library_softmax(q, k, v, mask):
    from tfbook.attention import masked_softmax

    weights = masked_softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), mask)
    return weights @ v, weights


# --------------------------------------------------------------------------- 4.9 Jacobian


def _attention_output(q, k, v):
    return torch.softmax(k @ q / math.sqrt(q.shape[-1]), dim=-1) @ v  # (d_v,)


def _jacobian_jacrev(q, k, v):
    return torch.func.jacrev(lambda t: _attention_output(t, k, v))(q)


def _jacobian_autograd_rows(q, k, v):
    with torch.enable_grad():
        q = q.detach().requires_grad_()
        out = _attention_output(q, k, v)
        rows = [torch.autograd.grad(out[i], q, retain_graph=True)[0] for i in range(len(out))]
    return torch.stack(rows)


# --------------------------------------------------------------------------- 5.2, 5.3


def _gelu_grad_aten(x):
    return torch.ops.aten.gelu_backward(torch.ones_like(x), x)  # autograd's own formula


def _mirrored(x):
    """(x, -x) side by side: mean 0 and variance mean(x^2), so a layer norm of it is an
    RMSNorm of x."""
    return torch.cat([x, -x], dim=-1)


def _rms_norm_native_layer_norm(x, gamma, eps=1e-6):
    d = x.shape[-1]
    return torch.native_layer_norm(_mirrored(x), (2 * d,), None, None, eps)[0][..., :d] * gamma


def _rms_norm_aten_layer_norm(x, gamma, eps=1e-6):
    d = x.shape[-1]
    return torch.ops.aten.layer_norm(_mirrored(x), [2 * d], None, None, eps)[..., :d] * gamma


def _rms_norm_group_norm(x, gamma, eps=1e-6):
    d = x.shape[-1]
    flat = _mirrored(x).reshape(-1, 1, 2 * d)  # one group over the last axis: a layer norm
    return F.group_norm(flat, 1, eps=eps)[..., :d].reshape(x.shape) * gamma


SHORTCUTS = [
    ("ch00.q1", _softmax_special, "aten._softmax"),
    ("ch00.q1", _softmax_private, "aten._softmax"),
    ("ch00.q1", _softmax_aten, "aten._softmax"),
    ("ch00.q1", _softmax_via_log_softmax, "aten._log_softmax"),
    ("ch00.q1", _softmax_partial, "aten._softmax"),
    ("ch00.q1", _softmax_methodcaller, "aten._softmax"),
    ("ch00.q1", _softmax_caught, "aten._softmax"),
    ("ch04.q1", _attention_private_math, "aten._safe_softmax"),
    ("ch04.q1", _attention_aten_math, "aten._safe_softmax"),
    ("ch04.q2", _masked_attention_library_softmax, "tfbook.attention.masked_softmax"),
    ("ch04.q9", _jacobian_jacrev, "torch.func.jacrev"),
    ("ch04.q9", _jacobian_autograd_rows, "torch.autograd.grad"),
    ("ch05.q2", _gelu_grad_aten, "aten.gelu_backward"),
    ("ch05.q3", _rms_norm_native_layer_norm, "aten.native_layer_norm"),
    ("ch05.q3", _rms_norm_aten_layer_norm, "aten.native_layer_norm"),
    ("ch05.q3", _rms_norm_group_norm, "aten.native_group_norm"),
]
IDS = [f"{qid}-{fn.__name__}" for qid, fn, _ in SHORTCUTS]


@pytest.mark.parametrize(("qid", "answer", "refused"), SHORTCUTS, ids=IDS)
def test_shortcut_computes_the_right_values(qid, answer, refused):
    q = question(qid)
    for case in q.make_cases():
        assert q.compare(q.call(q.reference, case), q.call(answer, case)) is None, case.name


@pytest.mark.parametrize(("qid", "answer", "refused"), SHORTCUTS, ids=IDS)
def test_shortcut_is_refused_naming_what_was_refused(qid, answer, refused):
    result = question(qid).evaluate(answer)
    assert result.status == "failed" and result.points == 0, result.text()
    assert f"your function calls {refused}" in result.text(), result.text()
    assert "this exercise asks you to compute it yourself" in result.text()
    if refused.startswith("aten."):  # the feedback says what the operation computes
        assert describe_operation(refused) in result.text()


# The ones that passed before: refused only because an operation, not a name, is watched.
OPERATION_ONLY = [(q, f, r) for q, f, r in SHORTCUTS if r.startswith("aten.")]


@pytest.mark.parametrize(
    ("qid", "answer", "refused"),
    OPERATION_ONLY,
    ids=[f"{q}-{f.__name__}" for q, f, _ in OPERATION_ONLY],
)
def test_shortcut_passes_a_watch_of_names_alone(qid, answer, refused, monkeypatch):
    q = question(qid)
    names = tuple(n for n in q.forbidden if not n.startswith("aten."))
    monkeypatch.setattr(q, "forbidden", names)
    assert q.evaluate(answer).status == "passed"


# --------------------------------------------------------------------------- the watch itself


def test_every_forbidden_operation_exists_and_is_described():
    for chapter in chapters():
        for q in load(chapter):
            for name in q.forbidden:
                if name.startswith("aten."):
                    assert name in OPERATIONS, f"{q.qid}: {name} has no description"
                    assert hasattr(torch.ops.aten, name.removeprefix("aten."))


def test_a_forbidden_operation_must_exist():
    from tfbook.exercises import Question

    with pytest.raises(ValueError, match=r"forbidden operation must name an aten operator"):
        Question("ch42.q1", "t", reference=lambda: 1, cases=lambda: [], forbidden=("aten.sofmax",))


def test_only_the_watched_call_is_refused():
    """The operations run freely outside the watch (the reference, the comparison), and a
    watch over other operations lets them through."""
    x = torch.randn(2, 3)
    watch = _CallWatch(("aten._softmax",))
    watch.run(lambda: x.exp())
    assert watch.seen is None
    torch.softmax(x, -1)  # outside the watch
    assert watch.seen is None
    watch.run(lambda: torch.softmax(x, -1))
    assert watch.seen == describe_operation("aten._softmax")


def test_removing_the_operation_watch_is_noticed():
    from torch.utils._python_dispatch import _get_current_dispatch_mode_stack, _pop_mode

    x = torch.randn(2, 3)
    watch = _CallWatch(("aten._softmax",))

    def escape():
        _pop_mode()  # the watch's dispatch mode, off the stack
        return torch.softmax(x, -1)

    watch.run(escape)
    assert watch.seen == "torch.utils._python_dispatch._pop_mode"
    assert not _get_current_dispatch_mode_stack()


# --------------------------------------------------------------------------- in the sandbox

SANDBOXED = {
    "right": "def softmax(x, dim=-1):\n"
    "    e = (x - x.amax(dim=dim, keepdim=True)).exp()\n"
    "    return e / e.sum(dim=dim, keepdim=True)\n",
    "special": "def softmax(x, dim=-1):\n    return torch.special.softmax(x, dim)\n",
    "aten": "def softmax(x, dim=-1):\n    return torch.ops.aten._softmax(x, dim, False)\n",
    "log_softmax": "def softmax(x, dim=-1):\n    return x.log_softmax(dim).exp()\n",
}


@pytest.mark.slow
def test_shortcuts_are_refused_in_the_sandbox_too(tmp_path):
    """``tfbook grade``: the answer runs in the sandbox, under the same operation watch; the
    judge, outside, names what was refused."""
    import os

    import nbformat

    from tfbook_tools.grading import grade_batch
    from tfbook_tools.sandbox import sandbox_problem

    if sandbox_problem() is not None:
        pytest.skip(f"no sandbox here: {sandbox_problem()}")

    def notebook(*sources):
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
        nb.metadata["kernelspec"]["language"] = "python"
        nb.cells = [nbformat.v4.new_code_cell(source) for source in sources]
        return nb

    head = ("import torch", "from tfbook.exercises import ch00 as ex")
    masters = tmp_path / "masters"
    masters.mkdir()
    nbformat.write(notebook(*head, "ex.q1.check(softmax)"), masters / "00_exercises.ipynb")
    paths = []
    for name, answer in SANDBOXED.items():
        paths.append(tmp_path / f"{name}.ipynb")
        nbformat.write(notebook(*head, answer, "ex.q1.check(softmax)"), paths[-1])
    results = grade_batch(paths, tmp_path / "grades.csv", masters, jobs=2, timeout=240)
    by_name = {os.path.basename(r.file)[: -len(".ipynb")]: r for r in results}
    assert by_name["right"].scores["ch00.q1"] == 1.0, by_name["right"]
    for name, refused in (("special", "_softmax"), ("aten", "_softmax"), ("log_softmax", "_log")):
        result = by_name[name]
        assert result.scores["ch00.q1"] == 0.0, result
        assert f"your function calls aten.{refused}" in result.feedback["ch00.q1"], result
