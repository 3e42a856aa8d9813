"""Tests for the pre-training recipes of other family members in tfbook.objectives (ch. 6-7).

References we did not write: ``torch.nn.functional.kl_div`` and a float64 NumPy formula for
knowledge distillation, Hinton et al.'s high-temperature limit of its gradient (the reason
for the T^2 factor), counting for ELECTRA's labels and T5's noise density, and a
reconstruction of the original sequence from span corruption's input and target.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tfbook.objectives import (
    IGNORE_INDEX,
    distillation_loss,
    lm_loss,
    mask_tokens,
    replaced_token_batch,
    span_corruption,
)

F64 = torch.float64

# --------------------------------------------------------------------------- distillation


def _numpy_distillation(student, teacher, temperature):
    """T^2 KL(q || p) averaged over positions, in float64 NumPy (q: teacher, p: student)."""
    s = np.asarray(student, dtype=np.float64) / temperature
    t = np.asarray(teacher, dtype=np.float64) / temperature
    log_p = s - s.max(-1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
    log_q = t - t.max(-1, keepdims=True)
    log_q -= np.log(np.exp(log_q).sum(-1, keepdims=True))
    kl = (np.exp(log_q) * (log_q - log_p)).sum(-1)
    return temperature**2 * kl.mean()


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 8.0])
def test_distillation_soft_term_matches_numpy_and_kl_div(temperature):
    g = torch.Generator().manual_seed(int(temperature * 10))
    student = torch.randn(3, 5, 11, generator=g, dtype=F64)
    teacher = 3 * torch.randn(3, 5, 11, generator=g, dtype=F64)
    ours = distillation_loss(student, teacher, temperature=temperature)
    expected = _numpy_distillation(student.numpy(), teacher.numpy(), temperature)
    assert ours.item() == pytest.approx(expected, rel=1e-12, abs=1e-14)
    # PyTorch's KL divergence: kl_div(log p, log q, log_target=True) sums q (log q - log p)
    flat_s, flat_t = student.reshape(-1, 11) / temperature, teacher.reshape(-1, 11) / temperature
    torch_kl = F.kl_div(
        F.log_softmax(flat_s, -1), F.log_softmax(flat_t, -1), reduction="batchmean", log_target=True
    )
    torch.testing.assert_close(ours, temperature**2 * torch_kl, rtol=1e-12, atol=1e-14)


def test_distillation_is_zero_only_when_the_student_matches_the_teacher():
    teacher = torch.randn(2, 4, 7, dtype=F64)
    assert distillation_loss(teacher.clone(), teacher, temperature=3.0).item() == pytest.approx(
        0.0, abs=1e-12
    )
    # a constant shift of the logits does not change a softmax
    shifted = distillation_loss(teacher + 5.0, teacher, temperature=3.0)
    assert shifted.item() == pytest.approx(0.0, abs=1e-12)
    assert distillation_loss(torch.zeros_like(teacher), teacher, temperature=3.0) > 0.01


def test_distillation_t_squared_keeps_the_gradient_size():
    # Hinton et al. (2015), section 2.1: for large T and zero-mean logits the gradient of
    # KL(q || p) with respect to the student's logit z_i is about (z_i - v_i) / (V T^2) per
    # position; the factor T^2 makes it (z_i - v_i) / V, independent of T.
    g = torch.Generator().manual_seed(0)
    v = 9
    student = torch.randn(4, v, generator=g, dtype=F64)
    teacher = torch.randn(4, v, generator=g, dtype=F64)
    student, teacher = (
        student - student.mean(-1, keepdim=True),
        teacher - teacher.mean(-1, keepdim=True),
    )
    limit = (student - teacher) / (v * student.shape[0])  # mean over the 4 positions
    for temperature in (100.0, 1000.0):  # the error of the limit shrinks like 1/T
        z = student.clone().requires_grad_(True)
        distillation_loss(z, teacher, temperature=temperature).backward()
        assert (z.grad - limit).norm() / limit.norm() < 2.0 / temperature
    # without the factor the gradient would be T^2 times smaller: measurably not the case
    z = student.clone().requires_grad_(True)
    distillation_loss(z, teacher, temperature=200.0).backward()
    assert z.grad.abs().max() > 100 * limit.abs().max() / 200.0**2


def test_distillation_mixes_the_hard_loss_over_labelled_positions():
    g = torch.Generator().manual_seed(1)
    student = torch.randn(2, 6, 8, generator=g, dtype=F64)
    teacher = torch.randn(2, 6, 8, generator=g, dtype=F64)
    targets = torch.randint(8, (2, 6), generator=g)
    targets[0, 4:] = IGNORE_INDEX
    counted = targets != IGNORE_INDEX
    soft = _numpy_distillation(student[counted].numpy(), teacher[counted].numpy(), 2.0)
    hard = F.cross_entropy(student.reshape(-1, 8), targets.reshape(-1), ignore_index=IGNORE_INDEX)
    for alpha in (0.0, 0.3, 1.0):
        got = distillation_loss(student, teacher, 2.0, targets=targets, alpha=alpha)
        assert got.item() == pytest.approx(alpha * soft + (1 - alpha) * hard.item(), rel=1e-12)
    assert distillation_loss(student, teacher, 2.0, targets, alpha=0.0).item() == pytest.approx(
        lm_loss(student, targets).item(), rel=1e-12
    )


def test_distillation_gives_no_gradient_to_the_teacher():
    student = torch.randn(1, 3, 5, requires_grad=True)
    teacher = torch.randn(1, 3, 5, requires_grad=True)
    distillation_loss(student, teacher, temperature=2.0).backward()
    assert student.grad is not None and teacher.grad is None


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"temperature": 0.0}, ValueError, "temperature must be a float in (0, inf), got 0"),
        ({"temperature": "2"}, TypeError, "temperature must be a float"),
        ({"alpha": 1.5}, ValueError, "alpha must be a float in [0, 1], got 1.5"),
        (
            {"teacher_logits": torch.zeros(2, 3, 4)},
            ValueError,
            "teacher_logits must have the shape",
        ),
        ({"student_logits": torch.zeros(2, 3, 5, dtype=torch.long)}, TypeError, "student_logits"),
        ({"targets": torch.zeros(2, 4, dtype=torch.long)}, ValueError, "targets must have shape"),
    ],
)
def test_distillation_bad_input_names_the_argument(kwargs, error, words):
    args = {"student_logits": torch.zeros(2, 3, 5), "teacher_logits": torch.zeros(2, 3, 5)}
    args.update(kwargs)
    with pytest.raises(error, match=re.escape(words)):
        distillation_loss(**args)


# ------------------------------------------------------------------- replaced-token detection


def _electra_setup(seed, batch=64, length=12, vocab=20):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (batch, length), generator=g)
    ids[:, 0] = 2
    ids[: batch // 2, -3:] = 0  # padding at the end of half the rows
    corrupted, labels = mask_tokens(ids, vocab, mask_id=4, p=0.3, generator=g)
    logits = torch.randn(batch, length, vocab, generator=g)
    return ids, corrupted, labels, logits


def test_replaced_tokens_come_from_the_generator_at_chosen_positions_only():
    ids, _, labels, logits = _electra_setup(0)
    inputs, replaced = replaced_token_batch(
        ids, labels, logits, generator=torch.Generator().manual_seed(1)
    )
    chosen = labels != IGNORE_INDEX
    assert torch.equal(inputs[~chosen], ids[~chosen])  # nothing else changes
    # a sample equal to the original counts as original, as in the ELECTRA paper
    real = ids != 0
    assert torch.equal(replaced[real], (inputs != ids)[real].long())
    assert (replaced[~real] == IGNORE_INDEX).all() and set(replaced[real].tolist()) <= {0, 1}
    # every real position has a label, not only the chosen ones
    assert int((replaced != IGNORE_INDEX).sum()) == int(real.sum()) > 3 * int(chosen.sum())


def test_replaced_samples_follow_the_generator_distribution():
    # one chosen position, sampled 20000 times: the frequencies match softmax(logits)
    vocab = 6
    ids = torch.full((20_000, 3), 5)
    labels = torch.full((20_000, 3), IGNORE_INDEX)
    labels[:, 1] = 5
    row = torch.tensor([0.0, -2.0, 1.0, 0.5, -1.0, 2.0])
    logits = row.expand(20_000, 3, vocab).clone()
    inputs, replaced = replaced_token_batch(
        ids, labels, logits, generator=torch.Generator().manual_seed(2)
    )
    freq = torch.bincount(inputs[:, 1], minlength=vocab).double() / 20_000
    torch.testing.assert_close(freq, torch.softmax(row.double(), 0), atol=0.01, rtol=0)
    # the share labelled "replaced" is 1 - p(original token): a sample equal to it is original
    share = replaced[:, 1].double().mean().item()
    assert share == pytest.approx(1 - torch.softmax(row, 0)[5].item(), abs=0.01)


def test_replaced_token_batch_is_reproducible_and_ignores_the_generator_gradient():
    ids, _, labels, logits = _electra_setup(3)
    logits.requires_grad_(True)
    a = replaced_token_batch(ids, labels, logits, generator=torch.Generator().manual_seed(7))
    b = replaced_token_batch(ids, labels, logits, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not a[0].requires_grad and not a[1].requires_grad


def test_replaced_token_batch_with_nothing_chosen_changes_nothing():
    ids = torch.tensor([[2, 5, 6, 3, 0]])
    labels = torch.full_like(ids, IGNORE_INDEX)
    inputs, replaced = replaced_token_batch(ids, labels, torch.zeros(1, 5, 8))
    assert torch.equal(inputs, ids) and replaced.tolist() == [[0, 0, 0, 0, IGNORE_INDEX]]


@pytest.mark.parametrize(
    ("change", "error", "words"),
    [
        ("labels_shape", ValueError, "labels must have shape like ids (2, 4)"),
        ("labels_wrong", ValueError, "labels must hold the original id"),
        ("logits_shape", ValueError, "generator_logits must have shape (B, T, V) = (2, 4, 7)"),
        ("ids_range", ValueError, "ids must be token ids in [0, V=7)"),
        ("ids_float", TypeError, "ids must hold integer token ids"),
        ("pad", TypeError, "pad_id must be an int >= 0"),
    ],
)
def test_replaced_token_batch_bad_input_names_the_argument(change, error, words):
    ids = torch.tensor([[2, 5, 6, 3], [2, 6, 3, 0]])
    labels = torch.tensor([[IGNORE_INDEX, 5, IGNORE_INDEX, IGNORE_INDEX]] * 2)
    labels[1, 1] = 6
    logits = torch.zeros(2, 4, 7)
    pad_id = 0
    if change == "labels_shape":
        labels = labels[:, :3]
    elif change == "labels_wrong":
        labels[0, 1] = 6
    elif change == "logits_shape":
        logits = torch.zeros(2, 5, 7)
    elif change == "ids_range":
        ids = ids + 5
    elif change == "ids_float":
        ids = ids.float()
    elif change == "pad":
        pad_id = -1.5
    with pytest.raises(error, match=re.escape(words)):
        replaced_token_batch(ids, labels, logits, pad_id=pad_id)


# ------------------------------------------------------------------------- span corruption

SENTINELS = list(range(1000, 1100))


def _reconstruct(inputs, targets):
    """The original sequence: each sentinel of the input replaced by its span in the target."""
    spans, current = {}, None
    for token in targets.tolist():
        if token in SENTINELS:
            current = token
            spans[current] = []
        else:
            spans[current].append(token)
    out = []
    for token in inputs.tolist():
        out.extend(spans[token] if token in SENTINELS else [token])
    return out


@pytest.mark.parametrize("seed", range(20))
def test_span_corruption_keeps_every_token_exactly_once(seed):
    g = torch.Generator().manual_seed(seed)
    n = 2 + seed * 7
    ids = torch.randint(5, 200, (n,), generator=g)
    inputs, targets = span_corruption(ids, SENTINELS, generator=g)
    assert _reconstruct(inputs, targets) == ids.tolist()
    # sentinels in order: 0, 1, ... in the input, and the same plus one more in the target
    in_sent = [t for t in inputs.tolist() if t in SENTINELS]
    out_sent = [t for t in targets.tolist() if t in SENTINELS]
    assert in_sent == SENTINELS[: len(in_sent)] and out_sent == SENTINELS[: len(in_sent) + 1]
    assert targets[0].item() == SENTINELS[0] and targets[-1].item() == SENTINELS[len(in_sent)]
    # no two sentinels next to each other in the target: every span has a token
    positions = [i for i, t in enumerate(targets.tolist()) if t in SENTINELS]
    assert all(b - a >= 2 for a, b in zip(positions, positions[1:], strict=False))


def test_span_corruption_density_and_span_length_over_many_draws():
    g = torch.Generator().manual_seed(0)
    noise = kept = spans = 0
    first_is_noise = last_is_noise = 0
    for _ in range(400):
        n = int(torch.randint(40, 120, (1,), generator=g))
        ids = torch.arange(10, 10 + n)
        inputs, targets = span_corruption(ids, SENTINELS, generator=g)
        k = sum(t in SENTINELS for t in inputs.tolist())
        spans += k
        noise += len(targets) - k - 1
        kept += len(inputs) - k
        first_is_noise += inputs[0].item() in SENTINELS
        last_is_noise += inputs[-1].item() in SENTINELS
    assert noise / (noise + kept) == pytest.approx(0.15, abs=0.005)
    assert noise / spans == pytest.approx(3.0, abs=0.2)
    assert 0 < first_is_noise < 100 and 0 < last_is_noise < 100  # spans may fall at either end


def test_span_corruption_other_settings_and_short_sequences():
    g = torch.Generator().manual_seed(5)
    ids = torch.arange(10, 110)
    inputs, targets = span_corruption(
        ids, SENTINELS, noise_density=0.5, mean_span_length=10, generator=g
    )
    k = sum(t in SENTINELS for t in inputs.tolist())
    assert k == 5 and len(targets) == 50 + 5 + 1 and len(inputs) == 50 + 5
    # two tokens: one is noise, one span, two sentinels
    inputs, targets = span_corruption(torch.tensor([7, 8]), SENTINELS, generator=g)
    assert len(targets) == 3 and _reconstruct(inputs, targets) == [7, 8]


def test_span_corruption_is_reproducible_with_a_seed():
    ids = torch.arange(5, 65)
    a = span_corruption(ids, SENTINELS, generator=torch.Generator().manual_seed(11))
    b = span_corruption(ids, SENTINELS, generator=torch.Generator().manual_seed(11))
    c = span_corruption(ids, SENTINELS, generator=torch.Generator().manual_seed(12))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not (torch.equal(a[0], c[0]) and torch.equal(a[1], c[1]))


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"ids": torch.tensor([5])}, ValueError, "ids must have shape (n,) with n >= 2, got (1,)"),
        ({"ids": torch.zeros(2, 5, dtype=torch.long)}, ValueError, "ids must have shape (n,)"),
        ({"ids": torch.ones(5)}, TypeError, "ids must hold integer token ids"),
        ({"noise_density": 1.0}, ValueError, "noise_density must be a float in (0, 1), got 1"),
        ({"mean_span_length": 0.5}, ValueError, "mean_span_length must be a float in [1, inf)"),
        ({"sentinel_ids": [1000]}, ValueError, "sentinel_ids must hold at least 2 ids"),
        ({"sentinel_ids": [7, 1000]}, ValueError, "sentinel_ids must not occur in ids, got [7]"),
        ({"sentinel_ids": [-1, 1000]}, ValueError, "sentinel_ids[i] must be an int >= 0, got -1"),
    ],
)
def test_span_corruption_bad_input_names_the_argument(kwargs, error, words):
    args = {"ids": torch.arange(5, 25), "sentinel_ids": SENTINELS}
    args.update(kwargs)
    with pytest.raises(error, match=re.escape(words)):
        span_corruption(**args)
