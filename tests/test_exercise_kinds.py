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

from tfbook.attention import causal_mask, padding_mask
from tfbook.exercises import ch01, ch02, ch03, ch05, ch06, ch08, chapters, load

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
        f"{chapter} has no question of kind {missing}; give a Question kind= in tfbook/exercises/"
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


# ----------------------------------------------------------------------- ch03.q8: stretching


def test_stretch_reference_is_interpolate_with_corners_aligned_on_every_case():
    """Exercise 3.8 has no tfbook counterpart (library_note): PyTorch's linear interpolation
    with align_corners=True computes the same rows, by its own code."""
    for case in ch03.q8.make_cases():
        weight = case.args[0]
        new_len = case.args[1] if len(case.args) > 1 else 2 * weight.shape[0]
        stretched = ch03.stretch_positions(*case.args)
        theirs = nn.functional.interpolate(
            weight.double().T[None], size=new_len, mode="linear", align_corners=True
        )[0].T
        assert stretched.max_len == new_len, case.name
        torch.testing.assert_close(
            stretched.table.weight.detach(), theirs.float(), rtol=1e-6, atol=1e-6, msg=case.name
        )


# ----------------------------------------------------------------------- ch06.q3: two sources


def test_two_source_layer_without_its_second_source_is_the_library_decoder_layer():
    """Exercise 6.3 has no tfbook counterpart (library_note). Pre-LN, a cross_b whose output
    projection is zero adds nothing, so the layer must then equal DecoderLayer with the same
    self_attn, cross_attn (= cross_a) and ffn weights."""
    from tfbook.model import DecoderLayer

    torch.manual_seed(6)
    ours = ch06._ReferenceTwoSourceLayer(8, 2, 16).eval()
    theirs = DecoderLayer(8, 2, 16, norm_first=True).eval()
    state = {
        key.replace("cross_attn.", "cross_a."): value for key, value in theirs.state_dict().items()
    }
    for name in ("weight", "bias"):
        state[f"cross_b.sublayer.out_proj.{name}"] = torch.zeros_like(
            ours.state_dict()[f"cross_b.sublayer.out_proj.{name}"]
        )
    ours.load_state_dict(state, strict=False)
    x, memory_a, memory_b = torch.randn(2, 5, 8), torch.randn(2, 4, 8), torch.randn(2, 3, 8)
    mask_a = padding_mask(torch.tensor([4, 2]), max_len=4)
    with torch.no_grad():
        torch.testing.assert_close(
            ours(x, memory_a, memory_b, causal_mask(5), mask_a),
            theirs(x, memory_a, self_mask=causal_mask(5), memory_mask=mask_a),
        )


# ----------------------------------------------------------------------- ch05.q3: RMSNorm


def test_rms_norm_reference_is_torch_rms_norm_on_every_case():
    """Exercise 5.3 has no tfbook counterpart (library_note): PyTorch's own RMSNorm is it."""
    for case in ch05.q3.make_cases():
        x, gamma = case.args[:2]
        eps = case.args[2] if len(case.args) > 2 else case.kwargs.get("eps", 1e-6)
        module = torch.nn.RMSNorm(x.shape[-1], eps=eps).to(x.dtype)
        with torch.no_grad():
            module.weight.copy_(gamma)
            theirs = module(x)
        ours = ch05.q3.reference(*case.args, **case.kwargs)
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6, msg=case.name)


# ----------------------------------------------------------------------- ch05.q8: parallel block


@pytest.mark.parametrize("mask_kind", ["padding", "causal", "none"])
def test_parallel_block_reference_is_the_formula_in_torch_modules(mask_kind):
    """x + Attention(LN(x)) + FFN(LN(x)), written with PyTorch's own LayerNorm, attention and
    GELU network, equals the reference block given the same weights."""
    from torch import nn

    from tfbook.attention import SelfAttention

    torch.manual_seed(2)
    d, h, d_ff, b, t = 8, 2, 20, 3, 5
    norm = nn.LayerNorm(d)
    mha = nn.MultiheadAttention(d, h, batch_first=True)
    ffn = nn.Sequential(nn.Linear(d, d_ff), nn.GELU(), nn.Linear(d_ff, d))
    with torch.no_grad():
        norm.weight.add_(0.3 * torch.randn(d))
        norm.bias.add_(0.3 * torch.randn(d))
    ours = ch05._ReferenceParallelBlock(d, h, d_ff).eval()
    with torch.no_grad():
        ours.norm.load_state_dict(norm.state_dict())
        ours.attn.load_state_dict(SelfAttention.from_torch(mha).state_dict())
        ours.ffn.linear1.load_state_dict(ffn[0].state_dict())
        ours.ffn.linear2.load_state_dict(ffn[2].state_dict())
    x = 3.0 * torch.randn(b, t, d) + 1.0
    if mask_kind == "padding":
        lengths = torch.tensor([5, 3, 4])
        ours_mask = (torch.arange(t)[None, :] < lengths[:, None])[:, None, :]  # (B, 1, T)
        torch_kwargs = {"key_padding_mask": ~ours_mask[:, 0, :]}  # torch: True = blocked
    elif mask_kind == "causal":
        ours_mask = torch.ones(t, t, dtype=torch.bool).tril()
        torch_kwargs = {"attn_mask": ~ours_mask}
    else:
        ours_mask, torch_kwargs = None, {}
    with torch.no_grad():
        n = norm(x)
        expected = x + mha(n, n, n, need_weights=False, **torch_kwargs)[0] + ffn(n)
        got = ours(x, ours_mask) if ours_mask is not None else ours(x)
    torch.testing.assert_close(got, expected)


# ----------------------------------------------------------------------- ch08.q2: the budget


def test_checkpoint_bytes_match_what_torch_save_writes():
    """12 bytes per parameter: the capstone GPT and its AdamW state after one step, saved."""
    import io

    from tfbook.model import GPT, TransformerConfig, count_parameters

    torch.manual_seed(3)
    model = GPT(TransformerConfig(**ch08.CAPSTONE_GPT))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, 65, (2, 17))
    model(ids[:, :-1]).sum().backward()
    optimizer.step()  # creates exp_avg and exp_avg_sq
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    n = count_parameters(model)
    derived = ch08._reference_budget(n, 1, 1, 1, 1)[0]
    # the file also holds every tied name, the position table's key and pickled metadata
    assert math.isclose(len(buffer.getvalue()), derived, rel_tol=0.02), (len(buffer.getvalue()), n)


def test_passes_count_the_tokens_lm_batches_hands_out():
    from tfbook.data import lm_batches

    corpus = torch.randint(5, 65, (5000,), generator=torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(5)
    steps, batch, context = 7, 3, 16
    targets = sum(lm_batches(corpus, context, batch, g)[1].numel() for _ in range(steps))
    passes = ch08._reference_budget(1000, steps, batch, context, corpus.numel())[1]
    assert passes == targets / corpus.numel()


# ----------------------------------------------------------------------- ch08.q5: train_step


@pytest.fixture
def one_thread():
    """Tiny models train faster on one thread (much faster on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_train_step_reference_is_the_step_of_tfbook_training_train(one_thread):
    """Driven with train's optimizer and schedule, the reference step gives train's losses."""
    import copy

    from tfbook.data import Seq2SeqData, number_pairs
    from tfbook.model import EncoderDecoder, TransformerConfig
    from tfbook.objectives import lm_loss, teacher_forcing
    from tfbook.training import TrainConfig, lr_multiplier, make_optimizer, train

    data = Seq2SeqData(number_pairs(64, seed=1, low=0, high=999), shared=True)
    cfg = TransformerConfig(
        vocab_size=data.vocab_size, d_model=16, n_heads=2, d_ff=32, n_layers=1, dropout=0.0
    )
    torch.manual_seed(6)
    # float64: a key bias has a zero gradient up to rounding, which AdamW would blow up to +-lr
    ours, theirs = EncoderDecoder(cfg).double(), EncoderDecoder(cfg).double()
    theirs.load_state_dict(copy.deepcopy(ours.state_dict()))
    run = TrainConfig(steps=6, lr=3e-3, warmup=2, clip=0.5, progress=False)
    batch_fn = data.batch_fn(8, seed=0)

    def loss_fn(model, batch):
        decoder_inputs, targets = teacher_forcing(batch[1], data.pad_id)
        return lm_loss(model(batch[0], decoder_inputs), targets)

    history = train(theirs, batch_fn, loss_fn, run)
    torch.manual_seed(run.seed)
    optimizer = make_optimizer(ours, run)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: lr_multiplier(run, i + 1))
    ours.train()
    losses = []
    for step in range(1, run.steps + 1):
        losses.append(ch08.train_step(ours, optimizer, *batch_fn(step), data.pad_id, run.clip))
        schedule.step()
    torch.testing.assert_close(losses, history.losses, rtol=1e-9, atol=1e-12)
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12, msg=name)


def test_train_step_target_is_reached_by_the_reference_only_after_training():
    """The run of the last case is a real test: untrained, the model reads no number."""
    from tfbook.exercises._drivers import _build_model, _exact_match

    case = ch08.q5.make_cases()[-1]
    run = case.args[0]
    untrained = _exact_match(_build_model(run), *run["test"], run["pad_id"])
    assert untrained < 0.05 < ch08.EXACT_MATCH_TARGET
    result = ch08.q5.call(ch08.q5.reference, case)
    assert result["exact match"] >= ch08.EXACT_MATCH_TARGET, result
