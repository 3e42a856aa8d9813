"""Graded exercises of chapter 8, "Capstone: training and using a Transformer".

1. predict, then run: the loss and perplexity of equal logits over 65 characters (which a
   fresh character GPT's first loss is close to), and the learning rate of the warm-up +
   cosine schedule at four steps (``tfbook.objectives.lm_loss``, ``perplexity`` and
   ``tfbook.training.warmup_cosine`` reveal them);
2. derivation: the bytes of a checkpoint that holds AdamW's state, and how many passes over
   the corpus a run makes;
3. debugging: gradient accumulation over micro-batches (one process doing what the two
   processes of a DDP run do together) with three bugs; fixed, it gives the full-batch update;
4. build with the library: the held-out perplexity of a GPT on a long text, read in windows
   (``tfbook.objectives.causal_lm_targets``, ``lm_loss``, ``perplexity``);
5. the final exercise: the training step of an encoder-decoder (teacher forcing, padding
   ignored, gradients zeroed, global-norm clipping), checked update by update against the
   reference, then by training a model with it until it reads numbers in Korean.

Question 5's answer is a training step, not a function of plain inputs: the engine's
``"training step"`` driver (:func:`tfbook.exercises._engine.drive_training_step`) builds the
model and the optimizer each case describes, calls the step the way a training loop does and
returns the losses and the parameters (or the exact match after training).

Public API: ``q1`` .. ``q5``, ``EXERCISES``, ``progress()``; the plain-data configurations the
exercises use, ``CAPSTONE_GPT`` (a GPT of the capstone's size over nanoGPT's 65 characters)
and ``TINY_SEQ2SEQ`` (the encoder-decoder of 8.5's update-by-update cases);
``EXACT_MATCH_TARGET``, what 8.5's training run must reach; ``train_step``, the reference step
(``tests/test_exercise_kinds.py`` proves it is the step of ``tfbook.training.train``).

Usage: ``from tfbook.exercises import ch08 as ex; ex.q5.check(train_step)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tfbook.data import Seq2SeqData, collate_pairs, number_pairs, reverse_task, split_pairs
from tfbook.exercises._engine import (
    Bugs,
    Case,
    ExerciseSet,
    Frozen,
    Mistake,
    Question,
    compare,
)
from tfbook.exercises.ch07 import TINY, tiny_gpt_weights
from tfbook.model import GPT, PUBLISHED, TransformerConfig, count_parameters, meta_model
from tfbook.objectives import IGNORE_INDEX, causal_lm_targets, lm_loss, perplexity, teacher_forcing
from tfbook.training import train_step as library_train_step
from tfbook.training import warmup_cosine

#: A GPT of the capstone's size over nanoGPT's 65 characters (the capstone's own vocabulary has
#: 89 tokens), as plain data (``GPT(TransformerConfig(**CAPSTONE_GPT))``).
CAPSTONE_GPT = {
    "vocab_size": 65,
    "d_model": 128,
    "n_heads": 4,
    "d_ff": 512,
    "n_layers": 4,
    "max_len": 64,
    "dropout": 0.0,
    "norm_first": True,
    "positional": "learned",
}


def _tiny_gpt(seed: int) -> Frozen:
    """A frozen tiny GPT: ids ``(B, T)`` -> logits ``(B, T, V)``, no gradients."""
    model = GPT(TransformerConfig(**TINY))
    model.load_state_dict(tiny_gpt_weights(seed))
    return Frozen("<tiny GPT>", model.eval())


def _tokens(seed: int, *shape: int) -> torch.Tensor:
    """Token ids from 5 .. V-1 of the tiny GPT (no special ids, no padding)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(5, TINY["vocab_size"], shape, generator=g)


# --------------------------------------------------------------------------- q1: predict

#: The schedule of exercise 8.1: peak learning rate, warm-up steps, total steps.
PEAK_LR, WARMUP, TOTAL_STEPS = 1e-3, 100, 2000

#: What exercise 8.1 asks for, in the order of the cases.
PREDICT_KINDS = (
    "loss at step 1 if the logits are all equal (V=65)",
    "perplexity at step 1 if the logits are all equal (V=65)",
    "learning rate at step 50",
    "learning rate at step 100",
    "learning rate at step 1525",
    "learning rate at step 2000",
)


def _step_of(kind: str) -> int:
    return int(kind.rsplit(" ", 1)[1])


def _reference_predicted(kind):
    """The numbers of exercise 8.1, worked out by hand."""
    if kind == PREDICT_KINDS[0]:
        return math.log(65)  # equal logits: a uniform guess over 65 characters
    if kind == PREDICT_KINDS[1]:
        return 65.0  # exp(ln V) = V
    step = _step_of(kind)
    if step <= WARMUP:
        return PEAK_LR * step / WARMUP  # linear warm-up
    progress = (step - WARMUP) / (TOTAL_STEPS - WARMUP)  # 0 -> 1 over the decay
    return PEAK_LR * 0.5 * (1.0 + math.cos(math.pi * progress))


def _predicted_bits(kind):
    return math.log2(65) if kind == PREDICT_KINDS[0] else _reference_predicted(kind)


def _predicted_probability(kind):
    return 1 / 65 if kind == PREDICT_KINDS[1] else _reference_predicted(kind)


def _predicted_no_warmup(kind):
    if "learning rate" in kind and _step_of(kind) <= WARMUP:
        return PEAK_LR
    return _reference_predicted(kind)


def _predicted_decay_from_zero(kind):
    if "learning rate" not in kind or _step_of(kind) < WARMUP:
        return _reference_predicted(kind)
    return PEAK_LR * 0.5 * (1.0 + math.cos(math.pi * _step_of(kind) / TOTAL_STEPS))


def _predicted_linear_decay(kind):
    if "learning rate" not in kind or _step_of(kind) <= WARMUP:
        return _reference_predicted(kind)
    return PEAK_LR * (1.0 - (_step_of(kind) - WARMUP) / (TOTAL_STEPS - WARMUP))


def _predict_cases():
    return [Case(kind, (kind,)) for kind in PREDICT_KINDS]


def _library_predicted(kind):
    if kind == PREDICT_KINDS[0]:  # the loss of equal logits over 65 characters
        return lm_loss(torch.zeros(1, 1, 65), torch.tensor([[0]])).item()
    if kind == PREDICT_KINDS[1]:
        return perplexity(lm_loss(torch.zeros(1, 1, 65), torch.tensor([[0]])))
    return PEAK_LR * warmup_cosine(_step_of(kind), TOTAL_STEPS, WARMUP)


q1 = Question(
    "ch08.q1",
    "Predict: the first loss and the learning-rate schedule",
    reference=_reference_predicted,
    cases=_predict_cases,
    mistakes=[
        Mistake(
            "loss in bits (log base 2) instead of nats",
            _predicted_bits,
            "PyTorch's cross-entropy uses the natural logarithm: a uniform guess over V "
            "characters costs ln V nats.",
        ),
        Mistake(
            "perplexity given as a probability (1/V) instead of V",
            _predicted_probability,
            "Perplexity is exp(loss): for a uniform guess, exp(ln V) = V equally likely "
            "characters.",
        ),
        Mistake(
            "the warm-up left out: the rate starts at its peak",
            _predicted_no_warmup,
            "During the warm-up the rate grows linearly from 0: step s of the warm-up gets "
            "peak * s / warmup.",
        ),
        Mistake(
            "the cosine measured from step 0 instead of from the end of the warm-up",
            _predicted_decay_from_zero,
            "The decay starts where the warm-up ends: its progress is (step - warmup) / "
            "(total - warmup), 0 at step 100 and 1 at step 2000.",
        ),
        Mistake(
            "a linear decay instead of a cosine",
            _predicted_linear_decay,
            "After the warm-up the rate follows half a cosine: peak * (1 + cos(pi * "
            "progress)) / 2, which is flat at both ends and steepest in the middle.",
        ),
    ],
    hints=[
        "What distribution is the softmax of equal logits, and what does it cost in nats to "
        "predict the right character with it?",
        "Perplexity is e raised to the mean loss.",
        "The warm-up multiplies the peak by step / warmup; after it, the progress through "
        "the decay runs from 0 at the end of the warm-up to 1 at the last step, and the "
        "multiplier is (1 + cos(pi * progress)) / 2.",
    ],
    # One step off: 6.8e-10 at step 2000 (where the answer is 0, hence the atol), 3e-3
    # (relative) at step 1525; the task text states the tolerance.
    atol=1e-12,
    rtol=1e-4,
    kind="predict",
    library=_library_predicted,
)


# --------------------------------------------------------------------------- q2: derive


def _reference_budget(n_params, steps, global_batch, context, corpus_tokens):
    """Checkpoint bytes with AdamW's state in fp32, and passes over the corpus."""
    checkpoint = 4 * n_params * 3  # fp32: the weights and AdamW's two moments per weight
    predicted = steps * global_batch * context  # every position of every window is a target
    return checkpoint, predicted / corpus_tokens


def _budget_weights_only(n_params, steps, global_batch, context, corpus_tokens):
    return 4 * n_params, _reference_budget(n_params, steps, global_batch, context, corpus_tokens)[1]


def _budget_one_moment(n_params, steps, global_batch, context, corpus_tokens):
    return 8 * n_params, _reference_budget(n_params, steps, global_batch, context, corpus_tokens)[1]


def _budget_bits(n_params, steps, global_batch, context, corpus_tokens):
    return 96 * n_params, _reference_budget(n_params, steps, global_batch, context, corpus_tokens)[
        1
    ]


def _budget_sequences(n_params, steps, global_batch, context, corpus_tokens):
    return 12 * n_params, steps * global_batch / corpus_tokens


def _budget_cases():
    capstone = count_parameters(meta_model(GPT, TransformerConfig(**CAPSTONE_GPT)))
    gpt2 = count_parameters(meta_model(*PUBLISHED["gpt2-small"][:2]))
    return [
        Case(
            "a GPT of the capstone's size, V = 65: 2000 steps of 12 x 64 characters, "
            "1,115,394 characters",
            (capstone, 2000, 12, 64, 1_115_394),
        ),
        Case(
            "GPT-2 small: 600,000 steps of 480 x 1024 tokens, 9 billion tokens",
            (gpt2, 600_000, 480, 1024, 9_000_000_000),
        ),
        Case("edge: one window that is the whole corpus", (1000, 1, 1, 64, 64)),
    ]


q2 = Question(
    "ch08.q2",
    "A training run's budget: checkpoint bytes and passes over the corpus",
    reference=_reference_budget,
    cases=_budget_cases,
    mistakes=[
        Mistake(
            "the optimizer's state left out of the checkpoint",
            _budget_weights_only,
            "A checkpoint you can resume from holds AdamW's state too: for every weight a "
            "running mean of the gradient and one of its square.",
        ),
        Mistake(
            "only one of AdamW's two moments counted",
            _budget_one_moment,
            "AdamW keeps two numbers per weight, exp_avg (the first moment) and exp_avg_sq "
            "(the second), each the size of the weights.",
        ),
        Mistake(
            "bits counted instead of bytes",
            _budget_bits,
            "A float32 takes 4 bytes (32 bits).",
        ),
        Mistake(
            "passes counted in windows instead of tokens",
            _budget_sequences,
            "A window of the batch is context tokens, each of them a target: a step reads "
            "global_batch * context tokens of the corpus.",
        ),
    ],
    hints=[
        "Resuming a run needs the weights and everything AdamW remembers about each weight; "
        "look at optimizer.state_dict()['state'] of a model after one step.",
        "Every number is a float32 of 4 bytes.",
        "One step trains on global_batch windows of context tokens; a pass is as many "
        "tokens as the corpus holds.",
    ],
    atol=1e-9,
    rtol=1e-6,
    kind="derive",
    library_note=(
        "none: arithmetic on sizes; tests/test_exercise_kinds.py measures both numbers: the bytes "
        "torch.save writes for the capstone GPT and its AdamW state, and the tokens lm_batches "
        "hands out"
    ),
)


# --------------------------------------------------------------------------- q3: debug


def _reference_accumulated(config, weights, ids, lr, n_micro):
    """One SGD update from gradients accumulated over n_micro contiguous micro-batches."""
    model = GPT(TransformerConfig(**config))
    model.load_state_dict(weights)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    size = ids.shape[0] // n_micro  # sequences per micro-batch (per process, in DDP)
    losses = []
    optimizer.zero_grad()  # once: the micro-batches add their gradients up
    for i in range(n_micro):
        micro = ids[i * size : (i + 1) * size]  # micro-batch i: a contiguous slice
        inputs, targets = causal_lm_targets(micro)
        loss = lm_loss(model(inputs), targets)
        (loss / n_micro).backward()  # the mean over micro-batches, as DDP averages
        losses.append(loss.item())
    optimizer.step()  # one update for the whole batch
    return losses, {name: p.detach().clone() for name, p in model.named_parameters()}


def _accumulate_variant(
    config, weights, ids, lr, n_micro, *, zero_inside, rows, divide, step_inside
):
    model = GPT(TransformerConfig(**config))
    model.load_state_dict(weights)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    size = ids.shape[0] // n_micro
    losses = []
    optimizer.zero_grad()
    for i in range(n_micro):
        if zero_inside:
            optimizer.zero_grad()
        slices = {"own": ids[i * size : (i + 1) * size], "first": ids[:size], "all": ids}
        inputs, targets = causal_lm_targets(slices[rows])
        loss = lm_loss(model(inputs), targets)
        (loss / n_micro if divide else loss).backward()
        if step_inside:
            optimizer.step()
        losses.append(loss.item())
    if not step_inside:
        optimizer.step()
    return losses, {name: p.detach().clone() for name, p in model.named_parameters()}


def _accumulate_as_given(config, weights, ids, lr, n_micro):
    flags = dict(zero_inside=True, rows="first", divide=True, step_inside=True)
    return _accumulate_variant(config, weights, ids, lr, n_micro, **flags)


def _accumulate_zero_inside(config, weights, ids, lr, n_micro):
    flags = dict(zero_inside=True, rows="own", divide=True, step_inside=False)
    return _accumulate_variant(config, weights, ids, lr, n_micro, **flags)


def _accumulate_same_slice(config, weights, ids, lr, n_micro):
    flags = dict(zero_inside=False, rows="first", divide=True, step_inside=False)
    return _accumulate_variant(config, weights, ids, lr, n_micro, **flags)


def _accumulate_step_inside(config, weights, ids, lr, n_micro):
    flags = dict(zero_inside=False, rows="own", divide=True, step_inside=True)
    return _accumulate_variant(config, weights, ids, lr, n_micro, **flags)


def _accumulate_not_divided(config, weights, ids, lr, n_micro):
    flags = dict(zero_inside=False, rows="own", divide=False, step_inside=False)
    return _accumulate_variant(config, weights, ids, lr, n_micro, **flags)


def _accumulate_whole_batch(config, weights, ids, lr, n_micro):
    flags = dict(zero_inside=False, rows="all", divide=True, step_inside=False)
    return _accumulate_variant(config, weights, ids, lr, n_micro, **flags)


def _accumulate_with_bugs(config, weights, ids, lr, n_micro, *, zero, same_slice, step):
    """The given code with each of its three bugs there (True) or fixed (False)."""
    rows = "first" if same_slice else "own"
    flags = dict(zero_inside=zero, rows=rows, divide=True, step_inside=step)
    return _accumulate_variant(config, weights, ids, lr, n_micro, **flags)


def _accumulate_cases():
    cases = []
    for seed, (batch, length, lr, n_micro) in enumerate(
        [(8, 7, 0.5, 2), (6, 6, 1.0, 3), (8, 5, 0.3, 4), (4, 6, 0.5, 1)]
    ):
        ids = _tokens(30 + seed, batch, length)
        name = f"{batch} sequences of {length} tokens in {n_micro} micro-batches, lr={lr}"
        if n_micro == 1:
            name = "edge: " + name + " (nothing to accumulate)"
        cases.append(Case(name, (dict(TINY), tiny_gpt_weights(seed), ids, lr, n_micro)))
    return cases


def _library_full_batch_update(config, weights, ids, lr, n_micro):
    """The update accumulation must reproduce: one SGD step on the whole batch at once (and
    the micro-batches' losses, measured before it)."""
    model = GPT(TransformerConfig(**config))
    model.load_state_dict(weights)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    with torch.no_grad():
        losses = [
            lm_loss(model(x), y).item() for x, y in map(causal_lm_targets, ids.chunk(n_micro))
        ]
    with torch.enable_grad():
        inputs, targets = causal_lm_targets(ids)  # all sequences: no micro-batches
        lm_loss(model(inputs), targets).backward()
    optimizer.step()
    return losses, {name: p.detach().clone() for name, p in model.named_parameters()}


q3 = Question(
    "ch08.q3",
    "Debug gradient accumulation (a DDP step on one process)",
    reference=_reference_accumulated,
    cases=_accumulate_cases,
    mistakes=[
        Mistake(
            "the given code unchanged: three bugs",
            _accumulate_as_given,
            "Three things are wrong: the gradients are reset for every micro-batch, every "
            "micro-batch is the same slice, and the optimizer steps after every micro-batch.",
        ),
        Mistake(
            "gradients zeroed inside the loop: only the last micro-batch counts",
            _accumulate_zero_inside,
            "backward() adds to .grad, which is what accumulation needs: zero the gradients "
            "once, before the first micro-batch.",
        ),
        Mistake(
            "every micro-batch is the same slice (each rank reads the same data)",
            _accumulate_same_slice,
            "Micro-batch i is rows i * size to (i + 1) * size of the batch, as rank i of a DDP "
            "run takes its own contiguous part.",
        ),
        Mistake(
            "an optimizer step after every micro-batch instead of one at the end",
            _accumulate_step_inside,
            "Accumulate first, update once: optimizer.step() comes after the loop.",
        ),
        Mistake(
            "losses not divided by the number of micro-batches: the update is too large",
            _accumulate_not_divided,
            "The full-batch loss is the mean of the micro-batch means: divide each micro-batch "
            "loss by n_micro before backward() (DDP averages the ranks' gradients).",
        ),
        Mistake(
            "every micro-batch is the whole batch: the right update, but nothing saved",
            _accumulate_whole_batch,
            "Accumulation exists to keep only one micro-batch in memory at a time: feed the "
            "model rows i * size to (i + 1) * size in round i.",
        ),
    ],
    hints=[
        "Write down what the full-batch update uses: the gradient of the mean loss over all "
        "sequences. Which lines of the given loop throw gradients away or update too early?",
        "Print the rows each micro-batch reads for n_micro = 2 and a batch of 8.",
        "With equal micro-batches, the mean over the batch is the mean of the micro-batch "
        "means; gradients add up over backward() calls.",
    ],
    bugs=Bugs(
        _accumulate_with_bugs,
        {
            "zero": (
                "the gradients are reset for every micro-batch",
                "Zero the gradients once, before the first micro-batch.",
            ),
            "same_slice": (
                "every micro-batch is the same slice",
                "Micro-batch i is rows i * size to (i + 1) * size.",
            ),
            "step": (
                "the optimizer steps after every micro-batch",
                "Call optimizer.step() once, after the loop.",
            ),
        },
    ),
    timeout=30.0,
    kind="debug",
    library=_library_full_batch_update,
)


# --------------------------------------------------------------------------- q4: build


def _reference_heldout_perplexity(model, ids, context):
    """Perplexity of model on the text ids, every token after the first predicted once."""
    total, count = 0.0, 0
    for start in range(0, ids.shape[0] - 1, context):  # windows overlap by one token
        window = ids[start : start + context + 1][None]  # (1, <= context + 1)
        inputs, targets = causal_lm_targets(window)  # (1, n) each: n predictions
        n = targets.shape[1]
        total += lm_loss(model(inputs), targets).item() * n  # the window's summed loss
        count += n
    return perplexity(total / count)  # exp of the mean over all predicted tokens


def _windows(ids, context, stride):
    for start in range(0, ids.shape[0] - 1, stride):
        window = ids[start : start + context + 1][None]
        if window.shape[1] >= 2:
            yield causal_lm_targets(window)


def _perplexity_window_mean(model, ids, context):
    losses = [lm_loss(model(x), y).item() for x, y in _windows(ids, context, context)]
    return perplexity(sum(losses) / len(losses))


def _perplexity_disjoint_windows(model, ids, context):
    total, count = 0.0, 0
    for x, y in _windows(ids, context, context + 1):
        total += lm_loss(model(x), y).item() * y.shape[1]
        count += y.shape[1]
    return perplexity(total / count)


def _perplexity_mean_of_perplexities(model, ids, context):
    values = [perplexity(lm_loss(model(x), y)) for x, y in _windows(ids, context, context)]
    return sum(values) / len(values)


def _perplexity_returns_loss(model, ids, context):
    return math.log(_reference_heldout_perplexity(model, ids, context))


def _perplexity_cases():
    return [
        Case(
            "a text of 50 tokens, context 8 (the last window is short)",
            (_tiny_gpt(40), _tokens(41, 50), 8),
        ),
        Case("a text of 30 tokens, context 12", (_tiny_gpt(42), _tokens(43, 30), 12)),
        Case(
            "edge: the text is one full window (9 tokens, context 8)",
            (_tiny_gpt(44), _tokens(45, 9), 8),
        ),
        Case("edge: two tokens, one prediction", (_tiny_gpt(46), _tokens(47, 2), 4)),
    ]


def _library_heldout_perplexity(model, ids, context):
    """All windows' logits and targets side by side, one lm_loss over every predicted token."""
    logits, targets = [], []
    for start in range(0, ids.shape[0] - 1, context):
        inputs, target = causal_lm_targets(ids[start : start + context + 1][None])
        logits.append(model(inputs)[0])  # (n, V)
        targets.append(target[0])  # (n,)
    return perplexity(lm_loss(torch.cat(logits), torch.cat(targets)))


q4 = Question(
    "ch08.q4",
    "Held-out perplexity of a long text, with the library",
    reference=_reference_heldout_perplexity,
    cases=_perplexity_cases,
    mistakes=[
        Mistake(
            "the mean of the windows' losses: a short window weighs as much as a full one",
            _perplexity_window_mean,
            "lm_loss gives each window's mean; weight it by the number of tokens the window "
            "predicts, so that every token counts once and equally.",
        ),
        Mistake(
            "windows that share no token: the first token of every window is never predicted",
            _perplexity_disjoint_windows,
            "Start a window every context tokens and give it context + 1 tokens: the last "
            "token of one window is the first input of the next, so every token after the "
            "first is predicted exactly once.",
        ),
        Mistake(
            "the perplexities of the windows averaged",
            _perplexity_mean_of_perplexities,
            "Average the losses over the tokens first, then take one exponential: the mean of "
            "exponentials is larger than the exponential of the mean.",
        ),
        Mistake(
            "the mean loss returned instead of the perplexity",
            _perplexity_returns_loss,
            "Finish with tfbook.objectives.perplexity(mean_loss), e raised to the mean loss.",
        ),
    ],
    hints=[
        "A model reads at most context tokens, so cut the text into windows; a window of "
        "context + 1 tokens gives context (input, target) pairs through causal_lm_targets.",
        "Let consecutive windows share one token, so that each token after the first is "
        "predicted exactly once (the last window may be shorter).",
        "lm_loss returns a mean over a window's targets: turn it back into a sum before "
        "averaging over the whole text, and take the perplexity of that average.",
    ],
    kind="build",
    library=_library_heldout_perplexity,
)


# --------------------------------------------------------------------------- q5: train_step

#: Exact match the final exercise's training run must reach on held-out numbers.
EXACT_MATCH_TARGET = 0.9
_TRAIN_STEPS, _HELD_OUT = 200, 200

#: The tiny encoder-decoder of the update-by-update cases, as plain data.
TINY_SEQ2SEQ = {
    "vocab_size": 12,
    "d_model": 16,
    "n_heads": 2,
    "d_ff": 32,
    "n_layers": 1,
    "max_len": 16,
    "dropout": 0.0,
}


def train_step(model, optimizer, src, tgt, pad_id, clip):
    """One update of an encoder-decoder with teacher forcing; returns the loss before it."""
    decoder_inputs, targets = teacher_forcing(tgt, pad_id)  # read <bos> y, predict y <eos>
    loss = lm_loss(model(src, decoder_inputs), targets)  # padded targets are IGNORE_INDEX
    optimizer.zero_grad()  # nothing left over from the previous step
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)  # global norm, before the step
    optimizer.step()
    return loss.item()


def _step_variant(model, optimizer, src, tgt, pad_id, clip, *, zero="before", clip_at="before"):
    if zero == "before":
        optimizer.zero_grad()
    decoder_inputs, targets = teacher_forcing(tgt, pad_id)
    loss = lm_loss(model(src, decoder_inputs), targets)
    loss.backward()
    if zero == "after backward":
        optimizer.zero_grad()
    if clip_at == "before":
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    elif clip_at == "by value":
        torch.nn.utils.clip_grad_value_(model.parameters(), clip)
    optimizer.step()
    if clip_at == "after":
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    return loss.item()


def _step_never_zeroed(model, optimizer, src, tgt, pad_id, clip):
    return _step_variant(model, optimizer, src, tgt, pad_id, clip, zero="never")


def _step_zeroed_after_backward(model, optimizer, src, tgt, pad_id, clip):
    return _step_variant(model, optimizer, src, tgt, pad_id, clip, zero="after backward")


def _step_clipped_after_update(model, optimizer, src, tgt, pad_id, clip):
    return _step_variant(model, optimizer, src, tgt, pad_id, clip, clip_at="after")


def _step_clipped_by_value(model, optimizer, src, tgt, pad_id, clip):
    return _step_variant(model, optimizer, src, tgt, pad_id, clip, clip_at="by value")


def _step_not_shifted(model, optimizer, src, tgt, pad_id, clip):
    optimizer.zero_grad()
    logits = model(src, tgt)  # reads the token it must predict
    loss = lm_loss(logits, tgt.masked_fill(tgt == pad_id, IGNORE_INDEX))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return loss.item()


def _step_padding_counted(model, optimizer, src, tgt, pad_id, clip):
    optimizer.zero_grad()
    logits = model(src, tgt[:, :-1])
    loss = F.cross_entropy(logits.flatten(0, 1), tgt[:, 1:].flatten())
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return loss.item()


def _reverse_batch(seed: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded pairs of the reversal task: ``(src (B, S), tgt (B, T))``."""
    return collate_pairs(reverse_task(count, (2, 6), TINY_SEQ2SEQ["vocab_size"], seed))


def _update_run(
    seed: int,
    optimizer: str,
    lr: float,
    clip: float,
    n_batches: int,
    pad_id: int = 0,
    dropout: float = 0.0,
) -> dict:
    batches = [_reverse_batch(10 * seed + i, 6) for i in range(n_batches)]
    if pad_id != 0:  # the same pairs padded with another id (4, <mask>, appears nowhere else)
        batches = [tuple(b.masked_fill(b == 0, pad_id) for b in batch) for batch in batches]
    return {
        "model": "tfbook.model.EncoderDecoder",
        "config_class": "tfbook.model.TransformerConfig",
        "config": {**TINY_SEQ2SEQ, "pad_id": pad_id, "dropout": dropout},
        "init_seed": seed,
        "dtype": "float64",  # two correct steps then agree to ~1e-15, AdamW included
        "optimizer": optimizer,
        "optimizer_args": {"lr": lr},
        "pad_id": pad_id,
        "clip": clip,
        "batches": batches,
    }


def _numbers_run() -> dict:
    """200 AdamW updates on Korean readings of 0 .. 999, tested on 200 held-out numbers."""
    train, held = split_pairs(number_pairs(1000, seed=0, low=0, high=999), _HELD_OUT / 1000)
    data = Seq2SeqData(train, shared=True)
    test = Seq2SeqData(held, data.source_tokenizer, data.target_tokenizer)
    config = {
        "vocab_size": data.vocab_size,
        "d_model": 32,
        "n_heads": 4,
        "d_ff": 64,
        "n_layers": 1,
        "max_len": 16,
        "dropout": 0.0,
        "norm_first": True,
    }
    return {
        "model": "tfbook.model.EncoderDecoder",
        "config_class": "tfbook.model.TransformerConfig",
        "config": config,
        "init_seed": 0,
        "dtype": "float32",
        "optimizer": "AdamW",
        "optimizer_args": {"lr": 3e-3},
        "pad_id": data.pad_id,
        "clip": 1.0,
        "train": data.batch(range(len(data))),
        "steps": _TRAIN_STEPS,
        "batch_size": 32,
        "seed": 0,
        "test": test.batch(range(len(test))),
    }


def _train_step_cases():
    return [
        Case(
            "one SGD update (lr 0.5, clip 0.05), 6 padded pairs",
            (_update_run(1, "SGD", 0.5, 0.05, 1),),
        ),
        Case("two SGD updates, a new batch each", (_update_run(2, "SGD", 0.5, 0.05, 2),)),
        Case(
            "two AdamW updates (lr 0.01, clip 1.0), the capstone's optimizer",
            (_update_run(3, "AdamW", 0.01, 1.0, 2),),
        ),
        Case(
            "edge: clip far above the gradient norm (nothing to clip)",
            (_update_run(4, "SGD", 0.5, 1e6, 2),),
        ),
        Case(
            "edge: padding id 4 (pad_id=4, not 0), two SGD updates",
            (_update_run(5, "SGD", 0.5, 0.05, 2, pad_id=4),),
        ),
        Case(
            "dropout 0.1 (the model in training mode, the dropout masks drawn from the seed "
            "set before the loop), two SGD updates",
            (_update_run(6, "SGD", 0.5, 0.05, 2, dropout=0.1),),
            seed=86,
        ),
        Case(
            f"{_TRAIN_STEPS} AdamW updates on Korean numbers 0..999: exact match on "
            f"{_HELD_OUT} held-out numbers at least {EXACT_MATCH_TARGET:.2f}",
            (_numbers_run(),),
        ),
    ]


def _compare_training(expected, got):
    """Updates: the same losses and parameters. The training run: reach the target."""
    if "exact match" not in expected:
        problem = compare(expected, got, atol=1e-8, rtol=1e-6)
        params = got.get("parameters") if isinstance(got, dict) else None
        if problem is None or "['parameters']" not in problem or not isinstance(params, dict):
            return problem
        gap = max(  # one entry is shown: say how far apart the updates are over all of them
            (
                (e - g).abs().max().item()
                for key, e in expected["parameters"].items()
                if isinstance(g := params.get(key), torch.Tensor) and g.shape == e.shape
            ),
            default=None,
        )
        if gap is None:
            return problem
        return f"{problem} (the largest difference over all parameters is {gap:.1e})"
    reached = got.get("exact match") if isinstance(got, dict) else None
    if not isinstance(reached, float):
        return f"output: expected a dict with the exact match, got {type(got).__name__}"
    if reached >= EXACT_MATCH_TARGET:
        return None
    return (
        f"exact match on the {_HELD_OUT} held-out numbers after {_TRAIN_STEPS} updates: "
        f"expected at least {EXACT_MATCH_TARGET:.2f} (the reference step reaches "
        f"{expected['exact match']:.3f}), got {reached:.3f}"
    )


def _library_train_step(model, optimizer, src, tgt, pad_id, clip):
    """tfbook.training.train_step (the step of train and of the capstone's run) with the
    teacher-forcing loss."""

    def loss_fn(model, batch):
        decoder_inputs, targets = teacher_forcing(batch[1], pad_id)
        return lm_loss(model(batch[0], decoder_inputs), targets)

    with torch.enable_grad():
        return library_train_step(model, optimizer, (src, tgt), loss_fn, clip).loss


q5 = Question(
    "ch08.q5",
    "The training step of an encoder-decoder",
    reference=train_step,
    cases=_train_step_cases,
    mistakes=[
        Mistake(
            "gradients never zeroed: each update adds the previous gradients",
            _step_never_zeroed,
            "backward() adds to .grad; call optimizer.zero_grad() once per step, before "
            "loss.backward().",
        ),
        Mistake(
            "gradients zeroed between backward() and step(): the update has no gradient",
            _step_zeroed_after_backward,
            "Clear the old gradients before the backward pass, not after it: the order is "
            "zero_grad, backward, clip, step.",
        ),
        Mistake(
            "the update not clipped (no clipping, or clipping after optimizer.step())",
            _step_clipped_after_update,
            "Clip with torch.nn.utils.clip_grad_norm_(model.parameters(), clip) between "
            "loss.backward() and optimizer.step(), so the update uses the clipped gradients.",
        ),
        Mistake(
            "each gradient entry clipped instead of the global norm",
            _step_clipped_by_value,
            "Clip the norm of all gradients together with torch.nn.utils.clip_grad_norm_: it "
            "shrinks them by one common factor and keeps the direction.",
        ),
        Mistake(
            "targets not shifted: the decoder reads the token it must predict",
            _step_not_shifted,
            "Teacher forcing: the decoder reads <bos> y (all but the last target token) and "
            "is scored on y <eos> (all but the first); tfbook.objectives.teacher_forcing "
            "makes the pair.",
        ),
        Mistake(
            "padding counted in the loss",
            _step_padding_counted,
            "Padded target positions must not count: use the targets teacher_forcing returns "
            "(padding is IGNORE_INDEX) with lm_loss, or ignore_index=pad_id.",
        ),
    ],
    hints=[
        "A step has five parts, in this order: the loss of the batch, forget the old "
        "gradients, backpropagate, clip, update. Return the loss as a float with .item().",
        "teacher_forcing(tgt, pad_id) gives the decoder's inputs and its targets; "
        "model(src, decoder_inputs) gives the logits.",
        "Clip the global norm of all gradients after the backward pass and before the "
        "optimizer's step.",
    ],
    points=2.0,
    timeout=120.0,
    compare_fn=_compare_training,
    driver="training step",
    kind="implement",
    library=_library_train_step,
    forbidden=("tfbook.training.train_step",),
)


EXERCISES = ExerciseSet.collect(globals(), "Chapter 8 exercises")
progress = EXERCISES.progress
__all__ = [
    *EXERCISES.names,
    "EXERCISES",
    "progress",
    "CAPSTONE_GPT",
    "TINY_SEQ2SEQ",
    "EXACT_MATCH_TARGET",
    "train_step",
]
