"""The kinds of exercise: every chapter asks for more than re-typing (issue 14).

Each question has a ``kind``: ``implement`` (write a function the chapter describes),
``predict`` (commit to a number or a choice before the cell that reveals it), ``debug`` (fix a
realistic bug in a given implementation), ``derive`` (a numeric answer worked out on paper) or
``build`` (something new, made from library parts). Every chapter from 1 on has at least one
of each of the last four, and the preface's table of chapters and kinds lists them all.

The build and derive questions whose counterpart is not a ``tfbook`` function of their own
chapter (``library_note``) are checked here against what they claim to equal.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import nbformat
import pytest
import torch
from torch import nn

from tfbook.exercises import ch01, ch02, ch03, ch05, chapters, load

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("implement", "predict", "debug", "derive", "build")
BEYOND_RETYPING = ("predict", "debug", "derive", "build")
QUESTIONS = [q for ch in chapters() for q in load(ch)]


@pytest.mark.parametrize("question", QUESTIONS, ids=lambda q: q.qid)
def test_every_question_has_a_known_kind(question):
    assert question.kind in KINDS, f"{question.qid}: kind {question.kind!r} not in {KINDS}"


@pytest.mark.parametrize("chapter", [ch for ch in chapters() if int(ch[2:]) >= 1])
def test_every_chapter_asks_for_each_kind(chapter):
    present = {q.kind for q in load(chapter)}
    missing = [kind for kind in BEYOND_RETYPING if kind not in present]
    assert not missing, (
        f"{chapter} has no question of kind {missing}; set q.kind in tfbook/exercises/"
        f"{chapter}.py (kinds present: {sorted(present)})"
    )


def _preface_table() -> dict[str, tuple[int, set[str]]]:
    """Chapter -> (number of exercises, kinds) from the table in book/00_exercises.ipynb."""
    nb = nbformat.read(ROOT / "book" / "00_exercises.ipynb", as_version=4)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    rows = {}
    for match in re.finditer(r"^\|\s*(\d+)\s*\|[^|\n]*\|\s*(\d+)\s*\|([^|\n]*)\|\s*$", text, re.M):
        kinds = {k.strip() for k in match.group(3).split(",") if k.strip()}
        rows[f"ch{int(match.group(1)):02d}"] = (int(match.group(2)), kinds)
    return rows


def test_preface_table_lists_every_chapter_with_its_kinds():
    table = _preface_table()
    for chapter in chapters():
        questions = load(chapter)
        expected = (len(questions), {q.kind for q in questions})
        assert table.get(chapter) == expected, (
            f"book/00_exercises.ipynb, table of exercises: the row of {chapter} should read "
            f"{expected[0]} exercises, kinds {sorted(expected[1])}; it reads {table.get(chapter)}"
        )


# ----------------------------------------------------------------------- ch01.q8: bidirectional


def test_birnn_reference_is_torch_bidirectional_rnn():
    torch.manual_seed(0)
    ours = ch01._ReferenceBiRNN(3, 4).double().eval()
    theirs = nn.RNN(3, 4, batch_first=True, bidirectional=True).double().eval()
    with torch.no_grad():
        for suffix, rnn in (("l0", ours.forward_rnn), ("l0_reverse", ours.backward_rnn)):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(theirs, f"{name}_{suffix}").copy_(getattr(rnn.cell, name))
        x = torch.randn(2, 6, 3, dtype=torch.float64)
        torch.testing.assert_close(ours(x), theirs(x)[0])


# ----------------------------------------------------------------------- ch02.q8: RMS cosine


@pytest.mark.parametrize("d", [2, 16, 512])
def test_rms_cosine_matches_a_measurement(d):
    from tfbook.embedding import cosine_similarity_matrix

    g = torch.Generator().manual_seed(d)
    cos = cosine_similarity_matrix(torch.randn(1000, d, generator=g, dtype=torch.float64))
    off_diagonal = cos[~torch.eye(1000, dtype=torch.bool)]
    measured = off_diagonal.pow(2).mean().sqrt().item()
    assert math.isclose(measured, ch02._reference_rms_cosine(d), rel_tol=0.03), measured


# ----------------------------------------------------------------------- ch03.q8: input layer


@pytest.mark.parametrize("positional", ["sinusoidal", "learned"])
def test_input_layer_reference_is_model_embeddings(positional):
    from tfbook.model import Embeddings, TransformerConfig

    torch.manual_seed(1)
    cfg = TransformerConfig(
        vocab_size=11, d_model=8, n_heads=2, max_len=12, positional=positional, dropout=0.0
    )
    theirs = Embeddings(cfg).eval()
    ours = ch03._ReferenceInputLayer(11, 8, 12, positional).eval()
    ours.load_state_dict(theirs.state_dict())  # same parameter names, same shapes
    ids = torch.randint(0, 11, (3, 12))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), theirs(ids))


# ----------------------------------------------------------------------- ch05.q8: encoder layer


@pytest.mark.parametrize("norm_first", [True, False])
def test_encoder_layer_reference_is_model_encoder_layer(norm_first):
    from tfbook.attention import padding_mask
    from tfbook.model import EncoderLayer

    torch.manual_seed(2)
    theirs = EncoderLayer(8, 2, 32, norm_first=norm_first).eval()
    ours = ch05._ReferenceEncoderLayer(8, 2, 32, norm_first).eval()
    ours.load_state_dict(theirs.state_dict())
    x = 3.0 * torch.randn(2, 5, 8) + 1.0
    mask = padding_mask(torch.tensor([5, 3]), max_len=5)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, mask), theirs(x, mask))
