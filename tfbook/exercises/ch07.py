"""Graded exercises of chapter 7, "Training objectives, the training loop and decoding".

1. predict, then run: the loss and perplexity of a uniform model, and the learning rate of
   the paper's warm-up schedule at three steps (``tfbook.objectives.perplexity`` and
   ``tfbook.training.noam_lr`` reveal them);
2. derivation: the size of the KV cache when several query heads share one key/value head
   (grouped-query attention), per token and for a batch;
3. debugging: a causal language-model training loop with three bugs (targets not shifted,
   loss over padding, gradients never zeroed); fix it;
4. build with the library: the loss of every token of a batch, from
   ``tfbook.objectives.causal_lm_targets``;
5. nucleus (top-p) filtering (``tfbook.generate.top_p_filter``);
6. BERT's own masking: a fixed number of chosen positions per sequence, then 80/10/10
   (``tfbook.objectives.mask_tokens`` chooses each position independently instead).

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
from tfbook.generate import top_p_filter
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


# --------------------------------------------------------------------------- q2: KV-cache size


def _reference_gqa_cache_bytes(
    n_layers, d_model, n_heads, n_kv_heads, tokens, batch=1, bytes_per_number=2
):
    """(bytes per token, bytes of the whole cache) of a decoder whose ``n_heads`` query heads
    share ``n_kv_heads`` key/value heads (grouped-query attention; multi-head when equal)."""
    d_head = d_model // n_heads  # every head, query or key/value, has d_head features
    per_token = 2 * n_layers * n_kv_heads * d_head * bytes_per_number  # one K and one V
    return per_token, batch * tokens * per_token


def _gqa_all_heads(n_layers, d_model, n_heads, n_kv_heads, tokens, batch=1, bytes_per_number=2):
    per_token = 2 * n_layers * d_model * bytes_per_number  # the multi-head formula
    return per_token, batch * tokens * per_token


def _gqa_full_width_heads(
    n_layers, d_model, n_heads, n_kv_heads, tokens, batch=1, bytes_per_number=2
):
    per_token = 2 * n_layers * n_kv_heads * d_model * bytes_per_number
    return per_token, batch * tokens * per_token


def _gqa_keys_only(n_layers, d_model, n_heads, n_kv_heads, tokens, batch=1, bytes_per_number=2):
    per_token = n_layers * n_kv_heads * (d_model // n_heads) * bytes_per_number
    return per_token, batch * tokens * per_token


def _gqa_queries_cached(
    n_layers, d_model, n_heads, n_kv_heads, tokens, batch=1, bytes_per_number=2
):
    d_head = d_model // n_heads
    per_token = n_layers * (n_heads + 2 * n_kv_heads) * d_head * bytes_per_number
    return per_token, batch * tokens * per_token


def _gqa_group_size(n_layers, d_model, n_heads, n_kv_heads, tokens, batch=1, bytes_per_number=2):
    group = n_heads // n_kv_heads  # query heads per key/value head, not the number of groups
    per_token = 2 * n_layers * group * (d_model // n_heads) * bytes_per_number
    return per_token, batch * tokens * per_token


def _gqa_default_float32(
    n_layers, d_model, n_heads, n_kv_heads, tokens, batch=1, bytes_per_number=4
):
    return _reference_gqa_cache_bytes(
        n_layers, d_model, n_heads, n_kv_heads, tokens, batch, bytes_per_number
    )


def _gqa_one_layer(n_layers, d_model, n_heads, n_kv_heads, tokens, batch=1, bytes_per_number=2):
    per_token = 2 * n_kv_heads * (d_model // n_heads) * bytes_per_number
    return per_token, batch * tokens * per_token


def _gqa_batch_ignored(n_layers, d_model, n_heads, n_kv_heads, tokens, batch=1, bytes_per_number=2):
    per_token = 2 * n_layers * n_kv_heads * (d_model // n_heads) * bytes_per_number
    return per_token, tokens * per_token


def _gqa_bits(n_layers, d_model, n_heads, n_kv_heads, tokens, batch=1, bytes_per_number=2):
    per_token, total = _reference_gqa_cache_bytes(
        n_layers, d_model, n_heads, n_kv_heads, tokens, batch, bytes_per_number
    )
    return 8 * per_token, 8 * total


def _gqa_cases():
    return [
        Case(
            "40 layers, d_model 5120, 40 query heads over 8 key/value heads, 4096 tokens, "
            "batch 2, float16",
            (40, 5120, 40, 8, 4096),
            {"batch": 2, "bytes_per_number": 2},
        ),
        Case(
            "only the required arguments: 32 layers, d_model 4096, 32 heads over 8, 8192 tokens",
            (32, 4096, 32, 8, 8192),
        ),
        Case(
            "GPT-2 small: 12 layers, d_model 768, 12 heads, n_kv_heads = n_heads, 1024 tokens, "
            "float32",
            (12, 768, 12, 12, 1024),
            {"batch": 1, "bytes_per_number": 4},
        ),
        Case(
            "80 layers, d_model 8192, 64 query heads over 8 key/value heads, 4096 tokens, "
            "batch 8, float16",
            (80, 8192, 64, 8, 4096),
            {"batch": 8, "bytes_per_number": 2},
        ),
        Case(
            "multi-query: 16 heads share one key/value head, 24 layers, d_model 2048, batch 4",
            (24, 2048, 16, 1, 2048),
            {"batch": 4},
        ),
        Case(
            "d_head 64 with 15 heads over 5 (d_model 960), batch 3, one byte per number",
            (6, 960, 15, 5, 500),
            {"batch": 3, "bytes_per_number": 1},
        ),
        Case("edge: one token, one layer, 4 heads over 2", (1, 64, 4, 2, 1)),
        Case(
            "a million tokens, batch 1024, float32 (about 10^15 bytes)",
            (126, 16384, 128, 8, 1_000_000),
            {"batch": 1024, "bytes_per_number": 4},
        ),
    ]


def _compare_cache_bytes(expected, got) -> str | None:
    if not isinstance(got, tuple) or len(got) != 2:
        return f"output: expected a tuple of two ints, got {type(got).__name__} {got!r}"
    for name, value in zip(("bytes per token", "bytes of the cache"), got, strict=True):
        if isinstance(value, bool) or not isinstance(value, int):
            return f"output: {name} must be an int, got {type(value).__name__} {value!r}"
    if got != expected:
        return (
            f"output: expected (bytes per token, bytes of the cache) = "
            f"({expected[0]:,}, {expected[1]:,}), got ({got[0]:,}, {got[1]:,})"
        )
    return None


q2 = Question(
    "ch07.q2",
    "The KV cache of grouped-query attention",
    reference=_reference_gqa_cache_bytes,
    cases=_gqa_cases,
    mistakes=[
        Mistake(
            "n_kv_heads ignored: the multi-head formula 2 n_layers d_model b",
            _gqa_all_heads,
            "Only the key/value heads are cached: n_kv_heads of them per layer, each of "
            "d_head = d_model / n_heads numbers, so a token costs 2 n_layers n_kv_heads d_head b "
            "bytes, not 2 n_layers d_model b.",
        ),
        Mistake(
            "each key/value head taken as d_model wide",
            _gqa_full_width_heads,
            "A key/value head is as wide as a query head, d_head = d_model / n_heads; "
            "d_model is the width of all n_heads query heads together.",
        ),
        Mistake(
            "only the keys counted",
            _gqa_keys_only,
            "Each layer caches a key and a value for every key/value head: the factor 2.",
        ),
        Mistake(
            "the queries cached too",
            _gqa_queries_cached,
            "A query is used once, at its own step, and never again: only keys and values "
            "are kept.",
        ),
        Mistake(
            "the number of query heads per group taken as the number of key/value heads",
            _gqa_group_size,
            "n_heads / n_kv_heads is how many query heads share one key/value head; the cache "
            "holds n_kv_heads key/value heads per layer.",
        ),
        Mistake(
            "bytes_per_number defaults to 4 (float32)",
            _gqa_default_float32,
            "When bytes_per_number is not given it is 2 (float16), as the signature says.",
        ),
        Mistake(
            "one layer counted",
            _gqa_one_layer,
            "Every layer attends with its own keys and values: multiply by n_layers.",
        ),
        Mistake(
            "batch ignored in the size of the cache",
            _gqa_batch_ignored,
            "The cache holds every sequence of the batch: bytes of the cache = batch x tokens "
            "x bytes per token.",
        ),
        Mistake(
            "bits instead of bytes",
            _gqa_bits,
            "bytes_per_number already counts bytes (2 for float16): do not multiply by 8.",
        ),
    ],
    hints=[
        "Count what one layer keeps for one token: which vectors, how many heads of them, how "
        "many numbers each.",
        "With n_kv_heads = n_heads your per-token answer must equal the chapter's "
        "2 n_layers d_model b.",
    ],
    compare_fn=_compare_cache_bytes,
    kind="derive",
    library_note=(
        "none: tfbook's attention has no grouped key/value heads; with n_kv_heads = n_heads it "
        "is the chapter's kv_cache_bytes, measured on GPT-2 small's meta-device cache"
    ),
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


# --------------------------------------------------------------------------- q6: BERT's masking

#: The special ids of exercise 7.6, as in the chapter's tokenizer: ``<pad>`` 0, ``<unk>`` 1,
#: ``<bos>`` 2, ``<eos>`` 3, ``<mask>`` 4; ordinary tokens from 5 on.
MLM_MASK_ID = 4
MLM_FIRST_ORDINARY = 5


def _reference_bert_mask(ids, vocab_size, max_predictions=20, generator=None):
    """BERT's own corruption: exactly k = min(max_predictions, max(1, round(0.15 n))) of the
    n ordinary tokens of each row are chosen (k = 0 when n = 0), then 80/10/10."""
    inputs, labels = ids.clone(), torch.full_like(ids, IGNORE_INDEX)
    for row in range(ids.shape[0]):
        ordinary = torch.nonzero(ids[row] >= MLM_FIRST_ORDINARY).flatten()  # positions
        n = len(ordinary)
        k = min(max_predictions, max(1, (15 * n + 50) // 100)) if n > 0 else 0  # halves up
        chosen = ordinary[torch.randperm(n, generator=generator)[:k]]  # k distinct, uniform
        labels[row, chosen] = ids[row, chosen]
        for position in chosen.tolist():
            u = torch.rand((), generator=generator).item()
            if u < 0.8:
                inputs[row, position] = MLM_MASK_ID
            elif u < 0.9:  # a random ordinary token, possibly the original one
                draw = torch.randint(MLM_FIRST_ORDINARY, vocab_size, (), generator=generator)
                inputs[row, position] = draw
            # else: kept as it is
    return inputs, labels


def _bert_mask_with(ids, vocab_size, max_predictions, generator, *, count):
    """The reference with another number of chosen positions per row: ``count(n)``."""
    inputs, labels = ids.clone(), torch.full_like(ids, IGNORE_INDEX)
    for row in range(ids.shape[0]):
        ordinary = torch.nonzero(ids[row] >= MLM_FIRST_ORDINARY).flatten()
        k = min(max_predictions, count(len(ordinary)), len(ordinary))
        chosen = ordinary[torch.randperm(len(ordinary), generator=generator)[:k]]
        labels[row, chosen] = ids[row, chosen]
        for position in chosen.tolist():
            u = torch.rand((), generator=generator).item()
            if u < 0.8:
                inputs[row, position] = MLM_MASK_ID
            elif u < 0.9:
                draw = torch.randint(MLM_FIRST_ORDINARY, vocab_size, (), generator=generator)
                inputs[row, position] = draw
    return inputs, labels


def _halves_up(n):
    return max(1, (15 * n + 50) // 100) if n > 0 else 0


def _mask_python_round(ids, vocab_size, max_predictions=20, generator=None):
    return _bert_mask_with(
        ids,
        vocab_size,
        max_predictions,
        generator,
        count=lambda n: max(1, round(0.15 * n)) if n > 0 else 0,
    )


def _mask_truncated(ids, vocab_size, max_predictions=20, generator=None):
    return _bert_mask_with(
        ids,
        vocab_size,
        max_predictions,
        generator,
        count=lambda n: max(1, int(0.15 * n)) if n > 0 else 0,
    )


def _mask_no_minimum(ids, vocab_size, max_predictions=20, generator=None):
    return _bert_mask_with(
        ids, vocab_size, max_predictions, generator, count=lambda n: (15 * n + 50) // 100
    )


def _mask_no_cap(ids, vocab_size, max_predictions=20, generator=None):
    return _bert_mask_with(ids, vocab_size, 10**9, generator, count=_halves_up)


def _mlm_batch(seed, lengths, width, vocab_size):
    """Rows of ``<bos>`` (2), ``n`` ordinary tokens, ``<eos>`` (3), then padding (0); the
    ordinary tokens cover 5 .. V-1, so V - 1 occurs in the batch (the check reads V from it)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, 0] = 2
        ids[row, 1 : n + 1] = torch.randint(MLM_FIRST_ORDINARY, vocab_size, (n,), generator=g)
        ids[row, n + 1] = 3
    ids[0, 1] = vocab_size - 1
    return ids


class _SeededGenerator(torch.Generator):
    """A CPU ``torch.Generator`` seeded with ``seed`` that prints as the line making it (the
    feedback's call line stays readable and the same from run to run)."""

    def __new__(cls, seed: int) -> _SeededGenerator:
        return super().__new__(cls)

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.manual_seed(seed)
        self.seed_value = seed

    def __repr__(self) -> str:
        return f"torch.Generator().manual_seed({self.seed_value})"

    def __deepcopy__(self, memo: dict) -> _SeededGenerator:
        copied = _SeededGenerator(self.seed_value)
        copied.set_state(self.get_state())
        return copied

    def __reduce__(self):
        return _restore_generator, (self.seed_value, self.get_state())


def _restore_generator(seed: int, state: torch.Tensor) -> _SeededGenerator:
    generator = _SeededGenerator(seed)
    generator.set_state(state)
    return generator


def _bert_mask_cases():
    generator = _SeededGenerator

    many = [40] * 3000  # 18,000 chosen positions: the shares and the positions are measured
    return [
        Case(
            "rows of 40, 30, 10, 3, 13, 0, 8 and 17 ordinary tokens (0.15 n = 6, 4.5, 1.5, "
            "0.45, 1.95, 0, 1.2, 2.55), V = 25",
            (_mlm_batch(60, [40, 30, 10, 3, 13, 0, 8, 17], 44, 25), 25),
            {"max_predictions": 20, "generator": generator(0)},
        ),
        Case(
            "only the required arguments: rows of 150 and 70 tokens (22.5 and 10.5: the "
            "default cap of 20 applies to the first)",
            (_mlm_batch(61, [150, 70], 160, 1000), 1000),
        ),
        Case(
            "max_predictions=5: rows of 70 and 20 tokens (10.5 and 3)",
            (_mlm_batch(62, [70, 20], 80, 40), 40),
            {"max_predictions": 5, "generator": generator(1)},
        ),
        Case(
            "3000 rows of 40 tokens, V = 25: shares, replacement tokens and positions measured",
            (_mlm_batch(63, many, 42, 25), 25),
            {"generator": generator(2)},
        ),
    ]


#: Exercise 7.6's tolerances, in standard deviations of what a correct answer measures: a share
#: p of N chosen positions has sigma = sqrt(p (1 - p) / N), a position chosen with probability
#: k / n in each of R rows is chosen R k/n times with sigma = sqrt(R (k/n)(1 - k/n)). Past 7
#: sigma a correct answer fails a check with probability below 3e-12 (normal tails; the 3 shares
#: and the 40 positions together below 2e-10), while the known wrong shares (80/20/0, all
#: <mask>) are off by 0.09 or more (over 30 sigma at N = 18,000: 0.8 has sigma 0.0030, 0.1 has
#: 0.0022).
MLM_SIGMAS = 7.0


def _compare_bert_mask(expected, got) -> str | None:
    """The rules of exercise 7.6 on ``got``; ``expected`` (the reference's output on the same
    ids) gives the original ids and, row by row, how many positions must be chosen."""
    if not isinstance(got, tuple) or len(got) != 2:
        return f"output: expected a tuple (inputs, labels), got {type(got).__name__}"
    exp_inputs, exp_labels = expected
    for name, tensor in zip(("inputs", "labels"), got, strict=True):
        if not isinstance(tensor, torch.Tensor):
            return f"output: {name} must be a tensor, got {type(tensor).__name__}"
        if tensor.shape != exp_inputs.shape or tensor.dtype != torch.long:
            return (
                f"output: {name} must be a torch.long tensor of shape "
                f"{tuple(exp_inputs.shape)}, got {tensor.dtype} {tuple(tensor.shape)}"
            )
    inputs, labels = got
    original = torch.where(exp_labels != IGNORE_INDEX, exp_labels, exp_inputs)
    vocab_size = int(original.max()) + 1  # the cases put the token V - 1 in every batch
    chosen = labels != IGNORE_INDEX
    if (chosen & (original < MLM_FIRST_ORDINARY)).any():
        row, pos = torch.nonzero(chosen & (original < MLM_FIRST_ORDINARY))[0].tolist()
        return (
            f"output: labels[{row}, {pos}] = {int(labels[row, pos])} marks position {pos} of "
            f"row {row} as chosen, but it holds the special token {int(original[row, pos])}; "
            f"only ordinary tokens (ids 5 and up) may be chosen, every other label is "
            f"{IGNORE_INDEX}"
        )
    wrong_label = chosen & (labels != original)
    if wrong_label.any():
        row, pos = torch.nonzero(wrong_label)[0].tolist()
        return (
            f"output: labels[{row}, {pos}] = {int(labels[row, pos])}, but the original token "
            f"there is {int(original[row, pos])}: a chosen position's label is its original "
            f"token, every other label is {IGNORE_INDEX}"
        )
    touched = ~chosen & (inputs != original)
    if touched.any():
        row, pos = torch.nonzero(touched)[0].tolist()
        return (
            f"output: inputs[{row}, {pos}] changed from {int(original[row, pos])} to "
            f"{int(inputs[row, pos])} although its label says it was not chosen"
        )
    want, have = (exp_labels != IGNORE_INDEX).sum(dim=1), chosen.sum(dim=1)
    if not torch.equal(want, have):
        row = int(torch.nonzero(want != have)[0])
        n = int((original[row] >= MLM_FIRST_ORDINARY).sum())
        return (
            f"output: row {row} has n = {n} ordinary tokens: expected k = {int(want[row])} "
            f"chosen positions, got {int(have[row])}"
        )
    replaced = inputs[chosen]
    bad = (replaced != MLM_MASK_ID) & ((replaced < MLM_FIRST_ORDINARY) | (replaced >= vocab_size))
    if bad.any():
        return (
            f"output: a chosen position holds {int(replaced[bad][0])}; a chosen token becomes "
            f"<mask> ({MLM_MASK_ID}), an ordinary token ({MLM_FIRST_ORDINARY} to "
            f"{vocab_size - 1}) or stays as it is"
        )
    if int(chosen.sum()) >= 10_000:
        return _bert_mask_statistics(original, inputs, chosen, vocab_size)
    return None


def _bert_mask_statistics(original, inputs, chosen, vocab_size) -> str | None:
    m = vocab_size - MLM_FIRST_ORDINARY  # ordinary ids a random draw can take
    before, after = original[chosen], inputs[chosen]
    shares = {
        "<mask>": ((after == MLM_MASK_ID).double().mean().item(), 0.8),
        "another token": (
            ((after != MLM_MASK_ID) & (after != before)).double().mean().item(),
            0.1 * (1 - 1 / m),
        ),
        "unchanged": ((after == before).double().mean().item(), 0.1 + 0.1 / m),
    }
    n_chosen = int(chosen.sum())
    for what, (share, target) in shares.items():
        allowed = MLM_SIGMAS * math.sqrt(target * (1 - target) / n_chosen)
        if abs(share - target) > allowed:
            return (
                f"output: share of chosen positions that became {what}: {share:.3f}, expected "
                f"{target:.3f} +- {allowed:.4f} (7 standard deviations of {n_chosen:,} chosen)"
            )
    drawn = after[(after != MLM_MASK_ID) & (after != before)]
    missing = sorted(set(range(MLM_FIRST_ORDINARY, vocab_size)) - set(drawn.tolist()))
    if missing:
        return (
            f"output: the random replacements never took the ids {missing} (of "
            f"{len(drawn):,} replacements): draw uniformly from {MLM_FIRST_ORDINARY} to "
            f"{vocab_size - 1}"
        )
    per_position = chosen.double().sum(dim=0)  # all rows alike: <bos>, 40 tokens, <eos>
    ordinary = (original >= MLM_FIRST_ORDINARY).all(dim=0)
    counts = per_position[ordinary]
    mean = counts.mean().item()
    rate = mean / original.shape[0]  # the chance that a row chooses a given position
    allowed = MLM_SIGMAS * math.sqrt(original.shape[0] * rate * (1 - rate))
    if (counts - mean).abs().max().item() > allowed:
        low, high = int(counts.min()), int(counts.max())
        return (
            f"output: positions are not chosen uniformly: over {original.shape[0]:,} rows a "
            f"position was chosen between {low} and {high} times (expected {mean:.0f} +- "
            f"{allowed:.0f} each, 7 standard deviations)"
        )
    return None


q6 = Question(
    "ch07.q6",
    "BERT's own masking: a fixed number per sequence",
    reference=_reference_bert_mask,
    cases=_bert_mask_cases,
    mistakes=[
        Mistake(
            "Python's round(), which rounds halves to the even neighbour",
            _mask_python_round,
            "round(4.5) is 4 in Python; here halves go up (4.5 -> 5): use (15 * n + 50) // 100 "
            "or math.floor(0.15 * n + 0.5).",
        ),
        Mistake(
            "0.15 n truncated instead of rounded",
            _mask_truncated,
            "int() drops the fraction (4.5 -> 4, 1.95 -> 1); round to the nearest integer, "
            "halves up.",
        ),
        Mistake(
            "no minimum of one chosen position",
            _mask_no_minimum,
            "A row with at least one ordinary token gets at least one chosen position, even "
            "when 0.15 n rounds to 0.",
        ),
        Mistake(
            "max_predictions ignored",
            _mask_no_cap,
            "No row gets more than max_predictions chosen positions (20 when not given).",
        ),
    ],
    hints=[
        "Work row by row: find the positions of the ordinary tokens, compute k from their "
        "number n, and pick k of those positions at random (a random permutation helps).",
        "For each chosen position draw one uniform number u: u < 0.8, 0.8 <= u < 0.9 and "
        "u >= 0.9 are the three outcomes.",
    ],
    compare_fn=_compare_bert_mask,
    timeout=30.0,
    kind="implement",
    library_note=(
        "none: tfbook.objectives.mask_tokens chooses each position independently (probability "
        "0.15), as Hugging Face's collator does; this is BERT's original fixed count"
    ),
)


EXERCISES = ExerciseSet.collect(globals(), "Chapter 7 exercises")
progress = EXERCISES.progress
__all__ = [*EXERCISES.names, "EXERCISES", "progress", "TINY"]
