"""Graded exercises of chapter 7, "Training objectives, the training loop and decoding".

1. predict, then run: the loss and perplexity of a uniform model, and the learning rate of
   the paper's warm-up schedule at three steps (``tfbook.objectives.perplexity`` and
   ``tfbook.training.noam_lr`` reveal them);
2. derivation: the target distribution of label smoothing and the lowest loss it allows
   (``tfbook.objectives.lm_loss`` with ``label_smoothing``);
3. debugging: a causal language-model training loop with three bugs (targets not shifted,
   loss over padding, gradients never zeroed); fix it;
4. build with the library: the loss of every token of a batch, from
   ``tfbook.objectives.causal_lm_targets``;
5. nucleus (top-p) filtering (``tfbook.generate.top_p_filter``);
6. the next-token distribution after temperature and top-k (``tfbook.generate.top_k_filter``).

Usage: ``from tfbook.exercises import ch07 as ex; ex.q1.check(predicted)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from tfbook.exercises._engine import (
    Bugs,
    Case,
    ExerciseSet,
    Frozen,
    Mistake,
    Question,
    compare,
)
from tfbook.generate import top_k_filter, top_p_filter
from tfbook.model import GPT, TransformerConfig
from tfbook.objectives import IGNORE_INDEX, causal_lm_targets, lm_loss, perplexity
from tfbook.training import noam_lr

#: The tiny GPT of exercises 7.3 and 7.4, as plain data (``GPT(TransformerConfig(**TINY))``).
TINY = {
    "vocab_size": 12,
    "d_model": 16,
    "n_heads": 2,
    "d_ff": 32,
    "n_layers": 1,
    "max_len": 16,
    "dropout": 0.0,
    "norm_first": True,
    "positional": "learned",
}


def _tiny_gpt(seed: int) -> GPT:
    """A freshly initialised tiny GPT, the same for the same seed (the global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT(TransformerConfig(**TINY))


def tiny_gpt_weights(seed: int) -> dict:
    """The initial weights of :func:`_tiny_gpt` as a plain dict of tensors (also used by the
    exercises of chapter 8)."""
    return {k: v.detach().clone() for k, v in _tiny_gpt(seed).state_dict().items()}


def _model_from(config, weights) -> GPT:
    model = GPT(TransformerConfig(**config))
    model.load_state_dict(weights)
    return model.train()


def _padded_batch(
    seed: int, batch: int, length: int, vocab_size: int = 12, pad_id: int = 0
) -> torch.Tensor:
    """Token ids ``(B, T)`` from 5 .. V-1, each row ending in a run of padding (``pad_id``)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab_size, (batch, length), generator=g)
    lengths = torch.randint(2, length + 1, (batch,), generator=g)
    lengths[0] = length  # one row without padding
    for row, n in enumerate(lengths.tolist()):
        ids[row, n:] = pad_id
    return ids


# --------------------------------------------------------------------------- q1: predict

#: What exercise 7.1 asks for, in the order of the cases.
PREDICT_KINDS = (
    "loss of a uniform model over V=40 tokens",
    "perplexity of a uniform model over V=40 tokens",
    "noam lr at step 1000 (d_model=512, warmup=4000)",
    "noam lr at step 4000 (d_model=512, warmup=4000)",
    "noam lr at step 16000 (d_model=512, warmup=4000)",
)


def _noam(step, d_model=512, warmup=4000):
    return d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)


def _reference_predicted(kind):
    """The numbers of exercise 7.1, worked out by hand."""
    values = {
        PREDICT_KINDS[0]: math.log(40),  # -log(1/V), in nats
        PREDICT_KINDS[1]: 40.0,  # exp(log V) = V
        PREDICT_KINDS[2]: _noam(1000),  # warm-up: grows linearly
        PREDICT_KINDS[3]: _noam(4000),  # the peak, at the end of the warm-up
        PREDICT_KINDS[4]: _noam(16000),  # then decays as 1/sqrt(step)
    }
    return values[kind]


def _predicted_bits(kind):
    return math.log2(40) if kind == PREDICT_KINDS[0] else _reference_predicted(kind)


def _predicted_probability(kind):
    return 1 / 40 if kind == PREDICT_KINDS[1] else _reference_predicted(kind)


def _predicted_no_model_factor(kind):
    if "noam" not in kind:
        return _reference_predicted(kind)
    step = int(kind.split("step ")[1].split(" ")[0])
    return min(step**-0.5, step * 4000**-1.5)


def _predicted_keeps_rising(kind):
    if "noam" not in kind:
        return _reference_predicted(kind)
    step = int(kind.split("step ")[1].split(" ")[0])
    return 512**-0.5 * step * 4000**-1.5


def _predict_cases():
    return [Case(kind, (kind,)) for kind in PREDICT_KINDS]


def _library_predicted(kind):
    if kind == PREDICT_KINDS[0]:  # the loss of uniform logits
        return lm_loss(torch.zeros(1, 1, 40), torch.tensor([[0]])).item()
    if kind == PREDICT_KINDS[1]:
        return perplexity(math.log(40))
    step = int(kind.split("step ")[1].split(" ")[0])
    return noam_lr(step, 512, 4000)


q1 = Question(
    "ch07.q1",
    "Predict: uniform loss, perplexity, warm-up learning rates",
    reference=_reference_predicted,
    cases=_predict_cases,
    mistakes=[
        Mistake(
            "loss in bits (log base 2) instead of nats",
            _predicted_bits,
            "Cross-entropy in PyTorch uses the natural logarithm: the loss of a uniform model "
            "is ln V.",
        ),
        Mistake(
            "perplexity given as a probability (1/V) instead of V",
            _predicted_probability,
            "Perplexity is exp(loss): for a uniform model, exp(ln V) = V, the number of "
            "equally likely choices.",
        ),
        Mistake(
            "the d_model^-0.5 factor left out of the schedule",
            _predicted_no_model_factor,
            "The paper's schedule multiplies min(step^-0.5, step * warmup^-1.5) by "
            "d_model^-0.5 (about 0.0442 for d_model = 512).",
        ),
        Mistake(
            "the learning rate keeps rising after the warm-up",
            _predicted_keeps_rising,
            "After the warm-up the smaller of the two terms is step^-0.5: the rate decays "
            "like 1/sqrt(step).",
        ),
    ],
    hints=[
        "A uniform model gives every token probability 1/V; the loss is minus the natural "
        "log of the probability of the right token.",
        "Perplexity is e raised to the mean loss.",
        "The paper's schedule is lr = d_model^-0.5 * min(step^-0.5, step * warmup^-1.5): "
        "which of the two terms is smaller before, at and after step = warmup?",
    ],
    # A schedule one step off differs by 3.1e-5 (relative) at step 16000: the tolerance is
    # below that, and the task text states it.
    atol=1e-12,
    rtol=1e-5,
    kind="predict",
    library=_library_predicted,
)


# --------------------------------------------------------------------------- q2: smoothing


def _entropy(p_true, p_other, vocab_size):
    """Entropy in nats of the distribution (p_true, p_other x (V - 1)), with 0 log 0 = 0."""

    def term(p):
        return -p * math.log(p) if p > 0 else 0.0

    return term(p_true) + (vocab_size - 1) * term(p_other)


def _reference_smoothing(eps, vocab_size):
    """Label smoothing as in PyTorch and the paper: mix the one-hot target with the uniform
    distribution over all V tokens, q = (1 - eps) * one_hot + eps / V."""
    p_other = eps / vocab_size  # every token gets its share of eps ...
    p_true = 1.0 - eps + p_other  # ... the right one on top of its 1 - eps
    lowest_loss = _entropy(p_true, p_other, vocab_size)  # cross-entropy H(q, p) >= H(q)
    return p_true, p_other, lowest_loss


def _smoothing_over_others(eps, vocab_size):
    p_true, p_other = 1.0 - eps, eps / (vocab_size - 1)
    return p_true, p_other, _entropy(p_true, p_other, vocab_size)


def _smoothing_true_share_forgotten(eps, vocab_size):
    p_true, p_other = 1.0 - eps, eps / vocab_size
    return p_true, p_other, _entropy(p_true, p_other, vocab_size)


def _smoothing_zero_floor(eps, vocab_size):
    p_true, p_other, _ = _reference_smoothing(eps, vocab_size)
    return p_true, p_other, 0.0


def _smoothing_floor_in_bits(eps, vocab_size):
    p_true, p_other, floor = _reference_smoothing(eps, vocab_size)
    return p_true, p_other, floor / math.log(2)


def _smoothing_cases():
    return [
        Case("the paper's eps=0.1, V=4", (0.1, 4)),
        Case("eps=0.1, V=40", (0.1, 40)),
        Case("eps=0.2, V=37000 (the paper's English-German vocabulary)", (0.2, 37000)),
        Case("edge: eps=0 is the one-hot target", (0.0, 10)),
        Case("edge: eps=1 is the uniform distribution", (1.0, 8)),
    ]


def _library_smoothing(eps, vocab_size):
    """Read lm_loss's target back from its gradient at uniform logits: grad = 1/V - q."""
    with torch.enable_grad():
        logits = torch.zeros(1, 1, vocab_size, dtype=torch.float64, requires_grad=True)
        target = torch.tensor([[0]])
        lm_loss(logits, target, label_smoothing=eps).backward()
    q = 1.0 / vocab_size - logits.grad[0, 0]  # (V,)
    best = torch.log(q.clamp_min(1e-300)).reshape(1, 1, vocab_size)  # the model that predicts q
    return q[0].item(), q[1].item(), lm_loss(best, target, label_smoothing=eps).item()


q2 = Question(
    "ch07.q2",
    "Label smoothing: the target and the lowest loss",
    reference=_reference_smoothing,
    cases=_smoothing_cases,
    mistakes=[
        Mistake(
            "eps spread over the V - 1 wrong tokens only",
            _smoothing_over_others,
            "PyTorch and the paper mix with the uniform distribution over all V tokens, the "
            "right one included: every token gets eps / V.",
        ),
        Mistake(
            "the right token's own share eps / V forgotten",
            _smoothing_true_share_forgotten,
            "The right token receives 1 - eps plus its eps / V share of the uniform part; "
            "check that your V probabilities add up to 1.",
        ),
        Mistake(
            "lowest loss taken to be 0, as without smoothing",
            _smoothing_zero_floor,
            "Cross-entropy with a target q is at least the entropy of q, reached when the "
            "model predicts q itself; a smoothed q has positive entropy.",
        ),
        Mistake(
            "lowest loss in bits instead of nats",
            _smoothing_floor_in_bits,
            "Use the natural logarithm, as PyTorch's cross-entropy does.",
        ),
    ],
    hints=[
        "Write the smoothed target as a mixture of two distributions: the one-hot vector with "
        "weight 1 - eps and the uniform distribution over V tokens with weight eps.",
        "The model minimising the expected cross-entropy against q predicts q itself; the "
        "loss it reaches is the entropy of q, a sum of -p ln p over all V tokens.",
        "Treat p = 0 in -p ln p as 0 (the limit), so eps = 0 gives a lowest loss of 0.",
    ],
    atol=1e-7,
    rtol=1e-6,
    kind="derive",
    library=_library_smoothing,
)


# --------------------------------------------------------------------------- q3: debugging


def _reference_train(config, weights, batches, lr, pad_id=0):
    """The fixed loop: shifted targets, padding ignored, gradients zeroed every step."""
    model = GPT(TransformerConfig(**config))
    model.load_state_dict(weights)  # the given initial weights
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for ids in batches:
        inputs, targets = ids[:, :-1], ids[:, 1:]  # position t predicts token t + 1
        logits = model(inputs)  # (B, T - 1, V)
        loss = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=pad_id
        )
        optimizer.zero_grad()  # forget the previous step's gradients
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def _train_variant(config, weights, batches, lr, pad_id, *, shift, ignore_pad, zero_grad):
    model = _model_from(config, weights)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for ids in batches:
        if shift == "right":
            inputs, targets = ids[:, :-1], ids[:, 1:]
        elif shift == "wrong way":
            inputs, targets = ids[:, 1:], ids[:, :-1]
        else:
            inputs, targets = ids, ids
        logits = model(inputs)
        loss = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            targets.reshape(-1),
            ignore_index=pad_id if ignore_pad else -100,
        )
        if zero_grad:
            optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def _train_not_shifted(config, weights, batches, lr, pad_id=0):
    return _train_variant(
        config, weights, batches, lr, pad_id, shift="none", ignore_pad=True, zero_grad=True
    )


def _train_shifted_wrong_way(config, weights, batches, lr, pad_id=0):
    return _train_variant(
        config, weights, batches, lr, pad_id, shift="wrong way", ignore_pad=True, zero_grad=True
    )


def _train_loss_over_padding(config, weights, batches, lr, pad_id=0):
    return _train_variant(
        config, weights, batches, lr, pad_id, shift="right", ignore_pad=False, zero_grad=True
    )


def _train_no_zero_grad(config, weights, batches, lr, pad_id=0):
    return _train_variant(
        config, weights, batches, lr, pad_id, shift="right", ignore_pad=True, zero_grad=False
    )


def _train_as_given(config, weights, batches, lr, pad_id=0):
    return _train_variant(
        config, weights, batches, lr, pad_id, shift="none", ignore_pad=False, zero_grad=False
    )


def _train_with_bugs(config, weights, batches, lr, pad_id=0, *, shift, padding, zero_grad):
    """The given loop with each of its three bugs there (True) or fixed (False)."""
    return _train_variant(
        config,
        weights,
        batches,
        lr,
        pad_id,
        shift="none" if shift else "right",
        ignore_pad=not padding,
        zero_grad=not zero_grad,
    )


def _train_cases():
    cases = []
    for seed, (n_steps, batch, length, lr) in enumerate([(3, 4, 8, 0.5), (4, 3, 6, 1.0)]):
        batches = [_padded_batch(10 * seed + i, batch, length) for i in range(n_steps)]
        name = f"{n_steps} steps of {batch} padded sequences of {length} tokens, lr={lr}"
        cases.append(Case(name, (dict(TINY), tiny_gpt_weights(seed), batches, lr)))
    batches = [_padded_batch(40 + i, 3, 7, pad_id=4) for i in range(2)]
    name = "2 steps of 3 sequences of 7 tokens padded with id 4 (pad_id=4), lr=0.5"
    cases.append(Case(name, (dict(TINY), tiny_gpt_weights(2), batches, 0.5), {"pad_id": 4}))
    return cases


def _library_train(config, weights, batches, lr, pad_id=0):
    model = _model_from(config, weights)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    with torch.enable_grad():
        for ids in batches:
            inputs, targets = causal_lm_targets(ids, pad_id=pad_id)
            loss = lm_loss(model(inputs), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return losses


q3 = Question(
    "ch07.q3",
    "Debug a training loop",
    reference=_reference_train,
    cases=_train_cases,
    mistakes=[
        Mistake(
            "the given loop unchanged: three bugs",
            _train_as_given,
            "Three things are wrong: the targets are the inputs themselves, the padding "
            "counts in the loss, and the gradients are never reset.",
        ),
        Mistake(
            "targets not shifted: every position predicts its own token",
            _train_not_shifted,
            "The model reads ids[:, :-1] and is scored against ids[:, 1:]: the output at "
            "position t predicts token t + 1. Without the shift a causal model only learns "
            "to copy its input.",
        ),
        Mistake(
            "targets shifted the wrong way (each position predicts the token before it)",
            _train_shifted_wrong_way,
            "The inputs are all tokens but the last, the targets all tokens but the first.",
        ),
        Mistake(
            "padding positions counted in the loss",
            _train_loss_over_padding,
            "Pass ignore_index=pad_id to the cross-entropy, so the padded target positions "
            "neither count in the mean nor send gradients.",
        ),
        Mistake(
            "gradients never zeroed: they accumulate over the steps",
            _train_no_zero_grad,
            "loss.backward() adds to .grad; call optimizer.zero_grad() once per step, before "
            "the backward pass.",
        ),
    ],
    hints=[
        "Print what the loss compares at one position: in a causal language model the "
        "output at position t is scored against the token at position t + 1.",
        "Look at the end of each row of a batch: what should the loss do with the "
        "positions whose target is padding?",
        "Run two steps and think about what .backward() does to a .grad that already holds "
        "the previous step's gradient.",
    ],
    bugs=Bugs(
        _train_with_bugs,
        {
            "shift": (
                "the targets are the inputs themselves (not shifted)",
                "Score the output at position t against token t + 1: the inputs are "
                "ids[:, :-1], the targets ids[:, 1:].",
            ),
            "padding": (
                "the padding counts in the loss",
                "Pass ignore_index=pad_id to F.cross_entropy.",
            ),
            "zero_grad": (
                "the gradients are never reset",
                "Call optimizer.zero_grad() once per step, before loss.backward().",
            ),
        },
    ),
    timeout=30.0,
    kind="debug",
    library=_library_train,
    # The text asks for F.cross_entropy, "not tfbook.objectives": its helpers build the
    # shifted, padding-ignoring targets and the loss that the three fixes are about.
    forbidden=(
        "tfbook.objectives.causal_lm_targets",
        "tfbook.objectives.teacher_forcing",
        "tfbook.objectives.lm_loss",
    ),
)


# --------------------------------------------------------------------------- q4: per-token loss


def _reference_per_token_loss(model, ids, pad_id=0):
    """Cross-entropy of every predicted token, 0 where the target is padding."""
    inputs, targets = causal_lm_targets(ids, pad_id=pad_id)  # (B, T - 1) each
    logits = model(inputs)  # (B, T - 1, V)
    return F.cross_entropy(
        logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none"
    )  # (B, T - 1)


def _per_token_not_shifted(model, ids, pad_id=0):
    logits = model(ids)
    targets = ids.masked_fill(ids == pad_id, IGNORE_INDEX)
    return F.cross_entropy(
        logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none"
    )


def _per_token_padding_counted(model, ids, pad_id=0):
    logits = model(ids[:, :-1])
    return F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")


def _per_token_log_prob(model, ids, pad_id=0):
    return -_reference_per_token_loss(model, ids, pad_id)


def _per_token_mean(model, ids, pad_id=0):
    inputs, targets = causal_lm_targets(ids, pad_id=pad_id)
    return lm_loss(model(inputs), targets)


def _per_token_cases():
    cases = []
    for seed, (batch, length) in enumerate([(3, 8), (2, 6)]):
        model = _tiny_gpt(100 + seed).eval()
        ids = _padded_batch(20 + seed, batch, length)
        name = f"tiny GPT, {batch} padded sequences of {length} tokens"
        cases.append(Case(name, (Frozen("<tiny GPT>", model), ids)))
    model = _tiny_gpt(102).eval()
    ids = torch.tensor([[7, 0, 0, 0], [9, 6, 0, 0]])
    cases.append(Case("edge: almost all padding", (Frozen("<tiny GPT>", model), ids)))
    ids = torch.tensor([[7, 3, 3, 3], [9, 3, 3, 3]])
    cases.append(
        Case(
            "edge: pad_id=3, every target is padding",
            (Frozen("<tiny GPT>", model), ids),
            {"pad_id": 3},
        )
    )
    return cases


def _library_per_token_loss(model, ids, pad_id=0):
    inputs, targets = causal_lm_targets(ids, pad_id=pad_id)
    logits = model(inputs)  # (B, T - 1, V)
    out = torch.zeros(targets.shape)
    for b, t in (targets != IGNORE_INDEX).nonzero().tolist():  # lm_loss of one token
        out[b, t] = lm_loss(logits[b : b + 1, t : t + 1], targets[b : b + 1, t : t + 1])
    return out


q4 = Question(
    "ch07.q4",
    "The loss of every token, with the library",
    reference=_reference_per_token_loss,
    cases=_per_token_cases,
    mistakes=[
        Mistake(
            "targets not shifted: the loss of each position's own token",
            _per_token_not_shifted,
            "Let causal_lm_targets make the pair: the model reads its inputs (all tokens but "
            "the last) and is scored against its targets (all tokens but the first).",
        ),
        Mistake(
            "padding positions not set to 0",
            _per_token_padding_counted,
            "Use the targets causal_lm_targets returns: padding is replaced by IGNORE_INDEX, "
            "and cross_entropy(..., ignore_index=IGNORE_INDEX) gives 0 there.",
        ),
        Mistake(
            "log-probability returned instead of the loss (wrong sign)",
            _per_token_log_prob,
            "The loss of a token is -log p(token): a positive number, small when the model is "
            "confident and right.",
        ),
        Mistake(
            "one mean over the batch instead of one loss per token",
            _per_token_mean,
            "Ask the cross-entropy for reduction='none' to keep one number per position, "
            "shape (B, T - 1).",
        ),
    ],
    hints=[
        "causal_lm_targets(ids, pad_id=pad_id) gives the model's inputs and the matching "
        "targets, with padding already marked as IGNORE_INDEX.",
        "F.cross_entropy wants the class axis second: move the vocabulary axis of the "
        "logits from last to second place (or flatten and reshape back).",
        "Keep one number per position (no reduction); ignored positions then come out as 0.",
    ],
    kind="build",
    library=_library_per_token_loss,
)


# --------------------------------------------------------------------------- q5: top-p


def _reference_top_p(logits, p):
    """Keep the smallest set of most likely tokens whose probability adds up to at least p."""
    if p >= 1.0:
        return logits.clone()
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True, stable=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = torch.cumsum(probs, dim=-1) - probs  # probability of the better tokens
    drop_sorted = mass_before >= p  # the nucleus is already complete without this token
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # original order
    return logits.masked_fill(drop, float("-inf"))


def _top_p_drops_crossing_token(logits, p):
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True, stable=True)
    cum = torch.cumsum(torch.softmax(sorted_logits, dim=-1), dim=-1)
    drop = torch.zeros_like(cum, dtype=torch.bool).scatter(-1, order, cum > p)
    return logits.masked_fill(drop, float("-inf"))


def _top_p_sorted_order(logits, p):
    sorted_logits, _ = torch.sort(logits, dim=-1, descending=True, stable=True)
    return _reference_top_p(sorted_logits, p)


def _top_p_no_special_case_for_one(logits, p):
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True, stable=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    drop_sorted = torch.cumsum(probs, dim=-1) - probs >= p  # rounds to 1.0 before the tail
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def _top_p_own_probability(logits, p):
    return logits.masked_fill(torch.softmax(logits, dim=-1) < p, float("-inf"))


def _top_p_zero_fill(logits, p):
    kept = _reference_top_p(logits, p)
    return kept.masked_fill(torch.isinf(kept), 0.0)


def _compare_filtered(expected, got):
    """The engine's comparison, without NumPy's warning about -inf - -inf in the difference."""
    with np.errstate(invalid="ignore"):
        return compare(expected, got)


def _top_p_cases():
    cases = []
    for seed, (shape, p) in enumerate([((2, 10), 0.9), ((3, 12), 0.5), ((2, 3, 8), 0.75)]):
        g = torch.Generator().manual_seed(seed)
        logits = 2.0 * torch.randn(shape, generator=g)
        cases.append(Case(f"random logits {shape}, p={p}", (logits, p)))
    cases += [
        Case("edge: p=1.0 keeps every token", (torch.tensor([[3.0, 1.0, 0.0, -2.0, -9.0]]), 1.0)),
        Case(
            "edge: p=1.0 with confident logits (float32 sums reach 1.0 before the last token)",
            (torch.tensor([[0.0, 20.0, -5.0, -20.0, -40.0], [9.0, -30.0, 25.0, 0.0, -8.0]]), 1.0),
        ),
        Case(
            "edge: the top token alone reaches p",
            (torch.tensor([[0.0, 4.0, 1.0, 0.5]]), 0.6),
        ),
        Case(
            "edge: tie at the boundary, lower index first",
            (torch.tensor([[1.0, 2.0, 1.0, 0.0, 1.0]]), 0.6),
        ),
        Case(
            "edge: two of four equally likely tokens reach p = 0.5 exactly",
            (torch.zeros(2, 4), 0.5),
        ),
        Case(
            "edge: 20 tokens tied at the boundary (V=40), lower indices first",
            (torch.tensor([[1.0, 0.0] * 20]), 0.5),
        ),
    ]
    return cases


def _library_top_p(logits, p):
    return top_p_filter(logits, p)


q5 = Question(
    "ch07.q5",
    "Nucleus (top-p) filtering",
    reference=_reference_top_p,
    cases=_top_p_cases,
    mistakes=[
        Mistake(
            "the token that crosses p is dropped",
            _top_p_drops_crossing_token,
            "Keep a token when the probability of the tokens ranked above it is still below "
            "p: the token that makes the sum reach p belongs to the nucleus (otherwise a very "
            "likely first token would leave nothing).",
        ),
        Mistake(
            "filtered logits returned in sorted order",
            _top_p_sorted_order,
            "Sorting is only for finding the nucleus; put the decision back at each token's "
            "original index (scatter with the sort's indices) and filter the original logits.",
        ),
        Mistake(
            "p = 1 drops unlikely tokens",
            _top_p_no_special_case_for_one,
            "With confident logits the running sum of float32 probabilities reaches 1.0 "
            "before the last tokens, so `mass_before >= p` drops tokens that p = 1 must keep. "
            "Handle p >= 1 first: every token stays.",
        ),
        Mistake(
            "kept the tokens whose own probability is at least p",
            _top_p_own_probability,
            "Top-p looks at the cumulative probability of the best tokens, not at each "
            "token's probability on its own.",
        ),
        Mistake(
            "filtered logits set to 0 instead of -inf",
            _top_p_zero_fill,
            "A logit of 0 still has probability after the softmax; use float('-inf') so the "
            "filtered tokens get exactly 0.",
        ),
    ],
    hints=[
        "Sort each row from the most to the least likely token (torch.sort with "
        "descending=True, stable=True) and work with softmax probabilities in that order.",
        "For the token at rank r, compare p with the probability of the tokens ranked "
        "before it, not including itself.",
        "Turn the keep/drop decision back into the original order before filling the dropped "
        "logits with -inf; p = 1 keeps everything.",
    ],
    compare_fn=_compare_filtered,
    kind="implement",
    library=_library_top_p,
    forbidden=("tfbook.generate.top_p_filter",),
)


# --------------------------------------------------------------------------- q6: temperature, top-k


def _reference_distribution(logits, temperature, k=None):
    """The distribution a sampler draws from: scale by 1/temperature, keep the k best."""
    scaled = logits / temperature  # (..., V)
    if k is not None and k < logits.shape[-1]:
        kth_best = torch.topk(scaled, k, dim=-1).values[..., -1:]  # (..., 1)
        scaled = scaled.masked_fill(scaled < kth_best, float("-inf"))  # ties with it stay
    return torch.softmax(scaled, dim=-1)


def _distribution_softmax_first(logits, temperature, k=None):
    probs = torch.softmax(logits, dim=-1)
    return _reference_distribution(probs, temperature, k)


def _distribution_times_temperature(logits, temperature, k=None):
    return _reference_distribution(logits * temperature, 1.0, k)


def _distribution_not_renormalised(logits, temperature, k=None):
    probs = torch.softmax(logits / temperature, dim=-1)
    if k is None or k >= logits.shape[-1]:
        return probs
    kth_best = torch.topk(probs, k, dim=-1).values[..., -1:]
    return probs.masked_fill(probs < kth_best, 0.0)


def _distribution_exactly_k(logits, temperature, k=None):
    scaled = logits / temperature
    if k is None or k >= logits.shape[-1]:
        return torch.softmax(scaled, dim=-1)
    best = torch.topk(scaled, k, dim=-1).indices
    keep = torch.zeros_like(scaled, dtype=torch.bool).scatter(-1, best, True)
    return torch.softmax(scaled.masked_fill(~keep, float("-inf")), dim=-1)


def _distribution_cases():
    cases = []
    for seed, (shape, temperature, k) in enumerate(
        [((2, 10), 0.7, 3), ((3, 12), 1.5, 5), ((2, 2, 8), 1.0, None)]
    ):
        g = torch.Generator().manual_seed(seed)
        logits = 2.0 * torch.randn(shape, generator=g)
        name = f"random logits {shape}, temperature={temperature}, k={k}"
        cases.append(Case(name, (logits, temperature, k)))
    cases += [
        Case("edge: k larger than V", (torch.tensor([[2.0, 0.5, -1.0]]), 0.5, 10)),
        Case(
            "edge: a tie at the k-th place keeps both",
            (torch.tensor([[3.0, 1.0, 2.0, 2.0, -1.0]]), 2.0, 2),
        ),
        Case(
            "edge: temperature 0.02 (scaled logits in the hundreds)",
            (torch.tensor([[3.0, 2.5, -1.0, 0.0], [-2.0, 1.0, 1.5, 0.5]]), 0.02, 3),
        ),
    ]
    g = torch.Generator().manual_seed(len(cases))
    logits = 2.0 * torch.randn(2, 9, generator=g)
    cases.append(Case("k not given (its default is None: no filtering)", (logits, 0.8)))
    return cases


def _library_distribution(logits, temperature, k=None):
    scaled = logits / temperature
    return torch.softmax(scaled if k is None else top_k_filter(scaled, k), dim=-1)


q6 = Question(
    "ch07.q6",
    "The sampling distribution: temperature and top-k",
    reference=_reference_distribution,
    cases=_distribution_cases,
    mistakes=[
        Mistake(
            "softmax before the temperature",
            _distribution_softmax_first,
            "Divide the logits by the temperature and only then take the softmax; scaling "
            "probabilities and taking a second softmax flattens everything.",
        ),
        Mistake(
            "logits multiplied by the temperature instead of divided",
            _distribution_times_temperature,
            "A temperature above 1 must flatten the distribution: divide the logits by it.",
        ),
        Mistake(
            "top-k probabilities not renormalised",
            _distribution_not_renormalised,
            "Filter the logits (set the others to -inf) before the softmax, so the kept "
            "probabilities add up to 1 again.",
        ),
        Mistake(
            "exactly k tokens kept when several tie for the k-th place",
            _distribution_exactly_k,
            "Keep every token whose scaled logit is at least the k-th largest value: tied "
            "tokens are equally likely and should be treated alike.",
        ),
    ],
    hints=[
        "Two steps on the logits, then one softmax: divide by the temperature, then hide "
        "everything below the k-th best value.",
        "torch.topk(x, k, dim=-1).values[..., -1:] is the k-th largest value of each row, "
        "kept as a column so it broadcasts.",
        "k = None, or k at least V, means no filtering.",
    ],
    kind="implement",
    library=_library_distribution,
    forbidden=("tfbook.generate.top_k_filter", "tfbook.generate.top_p_filter"),
)


EXERCISES = ExerciseSet.collect(globals(), "Chapter 7 exercises")
progress = EXERCISES.progress
__all__ = [*EXERCISES.names, "EXERCISES", "progress", "TINY"]
