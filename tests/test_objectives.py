"""Tests for tfbook.data and tfbook.objectives (chapter 7).

References we did not write: ``torch.nn.functional.cross_entropy`` (with ``ignore_index`` and
``label_smoothing``) for the loss, a hand table of Korean readings plus an independent reader
(Korean text back to a number, written here) for the numbers, and counting for BERT's masking
proportions.
"""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F

from tfbook.data import (
    MAX_KOREAN_NUMBER,
    Seq2SeqData,
    collate_pairs,
    copy_task,
    korean_number,
    lm_batches,
    number_pairs,
    pad_batch,
    reverse_task,
    split_pairs,
)
from tfbook.objectives import (
    IGNORE_INDEX,
    causal_lm_targets,
    lm_loss,
    mask_tokens,
    perplexity,
    teacher_forcing,
)

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread (and far steadier on a busy shared CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------- Korean numbers

KNOWN_READINGS = [
    (0, "영"),
    (1, "일"),
    (7, "칠"),
    (10, "십"),
    (11, "십일"),
    (20, "이십"),
    (100, "백"),
    (110, "백십"),
    (1000, "천"),
    (2005, "이천오"),
    (10000, "만"),
    (10001, "만 일"),
    (11000, "만 천"),
    (12345, "만 이천삼백사십오"),
    (100000, "십만"),
    (1010101, "백일만 백일"),
    (20000000, "이천만"),
    (30000200, "삼천만 이백"),
    (99999999, "구천구백구십구만 구천구백구십구"),
]


@pytest.mark.parametrize(("n", "reading"), KNOWN_READINGS)
def test_korean_number_known_readings(n, reading):
    assert korean_number(n) == reading


def _read_korean(text: str) -> int:
    """An independent reader: Sino-Korean text back to the number (spaces ignored)."""
    digits = {c: i for i, c in enumerate("영일이삼사오육칠팔구")}
    units = {"십": 10, "백": 100, "천": 1000}
    total, group, digit = 0, 0, None
    for ch in text.replace(" ", ""):
        if ch in digits:
            digit = digits[ch]
        elif ch in units:
            group += (1 if digit is None else digit) * units[ch]
            digit = None
        elif ch == "만":
            total += (group + (digit or 0) or 1) * 10_000
            group, digit = 0, None
        else:
            raise ValueError(ch)
    return total + group + (digit or 0)


def test_korean_number_reads_back_to_the_number():
    rng = random.Random(0)
    numbers = [rng.randint(0, MAX_KOREAN_NUMBER) for _ in range(3000)]
    numbers += [rng.randint(0, 10 ** rng.randint(1, 8)) for _ in range(3000)] + list(range(1200))
    for n in numbers:
        assert _read_korean(korean_number(n)) == n, (n, korean_number(n))


def test_korean_number_spacing_rule_one_space_after_each_man_group():
    for n in (10001, 12345, 99999999, 30000200):
        text = korean_number(n)
        assert text.count(" ") == 1 and text.split(" ")[0].endswith("만")
    for n in (9999, 10000, 20000000, 1234):
        assert " " not in korean_number(n)


@pytest.mark.parametrize(
    ("bad", "error", "words"),
    [
        (-1, ValueError, ["n must be an int in [0, 99999999]", "-1"]),
        (100_000_000, ValueError, ["n must be an int in [0, 99999999]", "100000000"]),
        (1.5, TypeError, ["n must be an int", "float"]),
        (True, TypeError, ["n must be an int", "bool"]),
        ("12", TypeError, ["n must be an int", "str"]),
    ],
)
def test_korean_number_rejects_bad_input(bad, error, words):
    with pytest.raises(error) as info:
        korean_number(bad)
    for word in words:
        assert word in str(info.value)


def test_number_pairs_distinct_seeded_and_in_range():
    pairs = number_pairs(500, seed=3, low=100, high=5000)
    numbers = [int(s) for s, _ in pairs]
    assert len(set(numbers)) == 500 and all(100 <= n <= 5000 for n in numbers)
    assert all(reading == korean_number(int(s)) for s, reading in pairs)
    assert pairs == number_pairs(500, seed=3, low=100, high=5000)
    assert pairs != number_pairs(500, seed=4, low=100, high=5000)
    assert len(number_pairs(11, seed=0, low=0, high=10)) == 11  # the whole range


def test_number_pairs_rejects_more_than_the_range_holds():
    with pytest.raises(ValueError, match=r"count must be at most the 11 numbers in \[0, 10\]"):
        number_pairs(12, seed=0, low=0, high=10)
    with pytest.raises(ValueError, match="high must be an int in"):
        number_pairs(5, seed=0, low=10, high=5)


def test_split_pairs_never_puts_a_source_on_both_sides():
    pairs = number_pairs(200, seed=0) + [("7", "칠"), ("7", "칠 (again)")]
    train, held = split_pairs(pairs, held_out=0.25, seed=1)
    assert not {s for s, _ in train} & {s for s, _ in held}
    assert sorted(train + held) == sorted(pairs)
    assert len({s for s, _ in held}) == round(0.25 * 201)
    assert (train, held) == split_pairs(pairs, held_out=0.25, seed=1)
    assert split_pairs(pairs, held_out=0.0)[1] == []
    with pytest.raises(ValueError, match=r"held_out must be a float in \[0, 1\)"):
        split_pairs(pairs, held_out=1.0)


# ---------------------------------------------------------------------------- toy tasks


def test_copy_and_reverse_tasks():
    copies = copy_task(50, (2, 6), vocab_size=9, seed=0)
    reverses = reverse_task(50, 4, vocab_size=9, seed=0)
    assert all(s == t for s, t in copies) and all(t == s[::-1] for s, t in reverses)
    assert {len(s) for s, _ in copies} == {2, 3, 4, 5, 6} and {len(s) for s, _ in reverses} == {4}
    tokens = {tok for s, _ in copies + reverses for tok in s}
    assert tokens == set(range(5, 9))  # never a special id
    assert copies == copy_task(50, (2, 6), vocab_size=9, seed=0)
    with pytest.raises(ValueError, match="vocab_size must be an int in"):
        copy_task(5, 3, vocab_size=5, seed=0)


def test_pad_batch_and_collate_pairs():
    assert pad_batch([[5, 6, 7], [8]], pad_id=1, length=4).tolist() == [[5, 6, 7, 1], [8, 1, 1, 1]]
    assert pad_batch([[5]]).dtype == torch.long
    with pytest.raises(ValueError, match="length must be at least the longest sequence"):
        pad_batch([[5, 6, 7]], length=2)
    with pytest.raises(ValueError, match="seqs must hold at least one sequence"):
        pad_batch([])
    src, tgt = collate_pairs([([5, 6], [6, 5]), ([7], [7])])
    assert src.tolist() == [[5, 6], [7, 0]]
    assert tgt.tolist() == [[2, 6, 5, 3], [2, 7, 3, 0]]


def test_seq2seq_data_batches_tokenizers_and_decoding():
    pairs = number_pairs(40, seed=0, low=0, high=99999)
    data = Seq2SeqData(pairs)
    assert len(data) == 40 and data.vocab_size >= data.target_tokenizer.vocab_size
    batches = list(data.batches(batch_size=16, seed=0))
    assert [b[0].shape[0] for b in batches] == [16, 16, 8]
    for _, tgt in batches:
        assert (tgt[:, 0] == data.bos_id).all()
        assert ((tgt == data.eos_id).sum(dim=1) == 1).all()
    assert len(list(data.batches(16, seed=0, drop_last=True))) == 2
    seen = [data.decode_target(t) for _, t in batches]
    assert sorted(x for texts in seen for x in texts) == sorted(t for _, t in pairs)
    src, tgt = data.batch([0, 1])
    assert data.decode_target(tgt) == [pairs[0][1], pairs[1][1]]
    assert data.decode_target(tgt[0]) == pairs[0][1]
    assert torch.equal(data.encode_source([pairs[0][0], pairs[1][0]]), src)
    # after <eos> nothing counts, whatever the model wrote there
    row = data.target_tokenizer.encode(pairs[0][1]) + [data.eos_id, 7, 8]
    assert data.decode_target([row]) == [pairs[0][1]]
    fn = data.batch_fn(8, seed=1)
    assert torch.equal(fn(5)[1], fn(5)[1]) and fn(5)[0].shape[0] == 8


def test_seq2seq_data_shared_tokenizer_and_reuse_on_held_out_pairs():
    train, held = split_pairs(number_pairs(60, seed=1, low=0, high=999), held_out=0.2)
    data = Seq2SeqData(train, shared=True)
    assert data.source_tokenizer is data.target_tokenizer
    test = Seq2SeqData(held, data.source_tokenizer, data.target_tokenizer)
    assert test.target_tokenizer is data.target_tokenizer
    with pytest.raises(TypeError, match=r"pairs\[1\] must be a \(source str, target str\) pair"):
        Seq2SeqData([("1", "일"), ("2", 2)])


def test_lm_batches_targets_are_the_inputs_shifted_by_one():
    ids = torch.arange(1000) % 97
    g = torch.Generator().manual_seed(0)
    x, y = lm_batches(ids, context=16, batch_size=8, generator=g)
    assert x.shape == y.shape == (8, 16) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert torch.equal((x + 1) % 97, y)  # contiguous windows of ids: each target is the next id
    x2, _ = lm_batches(ids, 16, 8, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)
    with pytest.raises(ValueError, match="context must be shorter than ids"):
        lm_batches(ids[:10], context=10, batch_size=2)
    with pytest.raises(ValueError, match=r"ids must be a 1-D tensor of token ids \(N,\)"):
        lm_batches(ids.view(10, 100), context=4, batch_size=2)


def test_lm_batches_covers_the_last_window():
    ids = torch.arange(12)
    g = torch.Generator().manual_seed(0)
    starts = {int(lm_batches(ids, 4, 64, g)[0][i, 0]) for i in range(64)}
    assert starts == set(range(8))  # every start 0 .. N - T - 1, so the last target is ids[-1]


# ------------------------------------------------------------------------------ masking


def test_mask_tokens_follows_berts_proportions():
    g = torch.Generator().manual_seed(0)
    v, mask_id = 60, 4
    ids = torch.randint(5, v, (256, 128), generator=g)
    ids[:, 0], ids[:, -1], ids[:, -20:-1] = 2, 3, 0  # <bos>, <eos> and padding
    inputs, labels = mask_tokens(ids, v, mask_id, generator=g)
    ordinary = ids >= 5
    chosen = labels != IGNORE_INDEX
    assert not (chosen & ~ordinary).any(), "a special or padding position was chosen"
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(inputs[~chosen], ids[~chosen])  # nothing else changes
    n = int(chosen.sum())
    assert abs(n / int(ordinary.sum()) - 0.15) < 0.01
    masked = (inputs == mask_id) & chosen
    kept = (inputs == ids) & chosen
    randomised = chosen & ~masked & ~kept
    assert abs(int(masked.sum()) / n - 0.8) < 0.02
    # a random token equals the original 1 time in 55: "kept" gets that share of the 10%
    assert abs(int(randomised.sum()) / n - 0.1 * 54 / 55) < 0.015
    assert abs(int(kept.sum()) / n - (0.1 + 0.1 / 55)) < 0.015
    assert (inputs[randomised] >= 5).all()  # random replacements are never special


def test_mask_tokens_is_deterministic_with_a_generator_and_respects_p():
    ids = torch.randint(5, 30, (64, 64), generator=torch.Generator().manual_seed(1))
    a = mask_tokens(ids, 30, 4, p=0.5, generator=torch.Generator().manual_seed(7))
    b = mask_tokens(ids, 30, 4, p=0.5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert abs(float((a[1] != IGNORE_INDEX).float().mean()) - 0.5) < 0.03
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match=r"p must be a float in \(0, 1\)"):
            mask_tokens(ids, 30, 4, p=bad)
    with pytest.raises(ValueError, match=r"ids must be token ids in \[0, V=20\)"):
        mask_tokens(ids, 20, 4)


def test_mask_tokens_never_chooses_padding_even_if_not_listed_as_special():
    ids = torch.full((8, 50), 9)
    ids[:, 25:] = 7  # pad_id=7, not in special_ids
    _, labels = mask_tokens(ids, 10, 4, pad_id=7, special_ids=(), p=0.9)
    assert (labels[:, 25:] == IGNORE_INDEX).all() and (labels[:, :25] != IGNORE_INDEX).any()


# ---------------------------------------------------------------------- shifted targets


def test_causal_lm_targets_shift_by_one_and_ignore_padding():
    ids = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 3, 0, 0]])
    inputs, targets = causal_lm_targets(ids)
    assert inputs.tolist() == [[2, 5, 6, 7], [2, 8, 3, 0]]
    assert targets.tolist() == [[5, 6, 7, 3], [8, 3, IGNORE_INDEX, IGNORE_INDEX]]
    with pytest.raises(ValueError, match=r"ids must have shape \(B, T\) with T >= 2"):
        causal_lm_targets(torch.tensor([[2]]))
    with pytest.raises(TypeError, match="ids must hold integer token ids"):
        causal_lm_targets(torch.zeros(2, 3))


def test_teacher_forcing_feeds_the_true_previous_tokens():
    tgt = torch.tensor([[2, 5, 6, 3], [2, 7, 3, 0]])
    dec_in, targets = teacher_forcing(tgt)
    assert dec_in.shape == targets.shape == (2, 3)
    assert dec_in.tolist() == [[2, 5, 6], [2, 7, 3]]
    assert targets.tolist() == [[5, 6, 3], [7, 3, IGNORE_INDEX]]
    with pytest.raises(ValueError, match=r"tgt must start with <bos> \(bos_id=2\)"):
        teacher_forcing(tgt[:, 1:], bos_id=2)


# -------------------------------------------------------------------------------- loss


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5])
def test_lm_loss_equals_torch_cross_entropy(smoothing):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 11, generator=g, dtype=F64, requires_grad=True)
    targets = torch.randint(0, 11, (3, 7), generator=g)
    targets[0, 2:], targets[2, 5] = IGNORE_INDEX, IGNORE_INDEX
    ours = lm_loss(logits, targets, label_smoothing=smoothing)
    ref = F.cross_entropy(
        logits.reshape(-1, 11),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        label_smoothing=smoothing,
    )
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=0)
    (g_ours,) = torch.autograd.grad(ours, logits)
    (g_ref,) = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(g_ours, g_ref, atol=1e-12, rtol=0)


def test_lm_loss_ignores_the_logits_of_ignored_positions():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 9, generator=g, dtype=F64)
    targets = torch.tensor([[1, 2, 3, IGNORE_INDEX, IGNORE_INDEX], [4, 5, 6, 7, IGNORE_INDEX]])
    changed = logits.clone()
    changed[0, 3:] = 1e3 * torch.randn(2, 9, generator=g, dtype=F64)
    changed[1, 4] = -50.0
    assert lm_loss(logits, targets).item() == lm_loss(changed, targets).item()


def test_lm_loss_names_an_out_of_vocabulary_target():
    logits = torch.zeros(2, 3, 10)
    targets = torch.tensor([[1, 2, 3], [4, 12, IGNORE_INDEX]])
    with pytest.raises(ValueError) as info:
        lm_loss(logits, targets)
    message = str(info.value)
    assert "targets" in message and "[0, V=10)" in message and "12" in message
    assert "(1, 1)" in message  # where it is
    with pytest.raises(ValueError, match="-1"):
        lm_loss(logits, torch.tensor([[1, 2, 3], [4, -1, 5]]))


def test_lm_loss_rejects_mismatched_shapes_and_nothing_to_predict():
    with pytest.raises(ValueError, match=r"targets must have shape logits.shape\[:-1\]"):
        lm_loss(torch.zeros(2, 3, 10), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="at least one position to predict"):
        lm_loss(torch.zeros(2, 3, 10), torch.full((2, 3), IGNORE_INDEX))
    with pytest.raises(ValueError, match=r"label_smoothing must be a float in \[0, 1\]"):
        lm_loss(torch.zeros(2, 3, 10), torch.zeros(2, 3, dtype=torch.long), label_smoothing=2)


def test_perplexity_of_a_uniform_guess_is_the_vocabulary_size():
    v = 37
    loss = lm_loss(torch.zeros(4, 6, v), torch.randint(0, v, (4, 6)))
    assert perplexity(loss) == pytest.approx(v, rel=1e-6)
    assert perplexity(0.0) == 1.0 and perplexity(math.log(2.5)) == pytest.approx(2.5)
    assert perplexity(1e6) == math.inf
    with pytest.raises(ValueError, match="mean_loss must be a float in"):
        perplexity(-0.5)
