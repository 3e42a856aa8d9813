"""Training objectives: what a Transformer is asked to predict (chapter 7).

The three families of chapter 6 are trained on three objectives (as the Korean vendor
explainer the book follows lists them):

- **masked language modelling** (MLM, BERT): hide some tokens, predict them from both sides;
- **causal language modelling** (CLM, GPT): predict every next token from the ones before it;
- **sequence-to-sequence** (the original Transformer, T5, BART): predict the target's next
  token from the source and the target so far ("teacher forcing").

All three end in the same loss: the cross-entropy between the model's distribution over the
vocabulary and the true token, averaged over the positions that have a label. Positions
without one carry :data:`IGNORE_INDEX` (``-100``, the value ``torch.nn.CrossEntropyLoss``
ignores by default).

Public API:

- :data:`IGNORE_INDEX`: the label of a position the loss skips.
- :func:`mask_tokens` ``(ids, vocab_size, mask_id, ...)``: BERT's 15% / 80-10-10 recipe.
- :func:`causal_lm_targets` ``(ids)``: inputs and next-token targets for a GPT.
- :func:`teacher_forcing` ``(tgt)``: decoder inputs and targets for an encoder-decoder.
- :func:`lm_loss` ``(logits, targets, label_smoothing)``: the cross-entropy, written out.
- :func:`perplexity` ``(mean_loss)``: ``exp`` of the mean loss per token.

Beyond the three basic objectives, the pre-training recipes of other members of the families:

- :func:`distillation_loss` ``(student_logits, teacher_logits, temperature, ...)``: knowledge
  distillation (Hinton et al. 2015; DistilBERT), soft targets at temperature ``T``.
- :func:`replaced_token_batch` ``(ids, labels, generator_logits, ...)``: ELECTRA's
  replaced-token detection, the discriminator's inputs and labels from a generator's samples.
- :func:`span_corruption` ``(ids, sentinel_ids, ...)``: T5's span corruption, sentinels in
  the input and the dropped spans as the target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from tfbook import _validate as check

__all__ = [
    "IGNORE_INDEX",
    "SPECIAL_IDS",
    "mask_tokens",
    "causal_lm_targets",
    "teacher_forcing",
    "lm_loss",
    "perplexity",
    "distillation_loss",
    "replaced_token_batch",
    "span_corruption",
]

#: The label of a position that has nothing to predict (PyTorch's ``ignore_index`` default).
IGNORE_INDEX = -100

#: The special ids of chapter 2's tokenizers, for <pad> <unk> <bos> <eos> <mask>.
SPECIAL_IDS: tuple[int, ...] = (0, 1, 2, 3, 4)


def mask_tokens(
    ids: Tensor,
    vocab_size: int,
    mask_id: int,
    pad_id: int = 0,
    special_ids: Sequence[int] = SPECIAL_IDS,
    p: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT's masked-language-model corruption of a batch (Devlin et al. 2019, section 3.1).

    Each position whose token is not special is *chosen* with probability ``p`` (15%), each
    independently, as Hugging Face's data collator does (BERT's own pre-training code chose
    exactly ``round(0.15 n)`` positions of a sequence of ``n`` tokens). A chosen token is
    then replaced by ``<mask>`` with probability 0.8, by a random token with probability 0.1,
    and left unchanged with probability 0.1; the label of a chosen position is its original
    token, every other label is :data:`IGNORE_INDEX`. The random and unchanged 20% keep the
    model from learning that only ``<mask>`` positions matter (there is no ``<mask>`` when
    the model is used later).

    The random replacements are drawn from the ordinary tokens (never a special one), and
    ``pad_id`` is never chosen even if it is missing from ``special_ids``.

    Args:
        ids: token ids.
        vocab_size: ``V``; every id must lie in ``[0, V)``.
        mask_id: the id of ``<mask>``.
        pad_id: the padding id.
        special_ids: ids that are never chosen (padding, ``<bos>``, ``<eos>`` ...).
        p: the probability of choosing a position, in ``(0, 1)``.
        generator: a ``torch.Generator`` for a reproducible corruption.

    Returns:
        ``(inputs, labels)``: the corrupted ids, and the labels for :func:`lm_loss`.

    Shape:
        - ids: ``(B, T)`` (any shape works)
        - inputs, labels: same shape as ``ids``

    Example:
        >>> g = torch.Generator().manual_seed(41)
        >>> ids = torch.tensor([[2, 7, 8, 9, 7, 8, 9, 7, 8, 9, 3, 0]])
        >>> inputs, labels = mask_tokens(ids, vocab_size=10, mask_id=4, p=0.3, generator=g)
        >>> inputs  # position 4: 7 -> a random 5; position 3 chosen but kept
        tensor([[2, 4, 8, 9, 5, 8, 4, 7, 8, 9, 3, 0]])
        >>> labels
        tensor([[-100,    7, -100,    9,    7, -100,    9, -100, -100, -100, -100, -100]])
    """
    check.token_ids("ids", ids, vocab_size)
    check.int_in("mask_id", mask_id, 0, vocab_size - 1)
    check.nonneg_int("pad_id", pad_id)
    check.number_in("p", p, 0.0, 1.0, low_open=True, high_open=True)
    special = torch.tensor(sorted({*special_ids, pad_id, mask_id}), device=ids.device)
    ordinary = _ordinary_ids(vocab_size, special)  # the ids a random replacement may take
    shape = ids.shape
    u_choose = torch.rand(shape, generator=generator).to(ids.device)
    u_action = torch.rand(shape, generator=generator).to(ids.device)
    r = torch.randint(len(ordinary), shape, generator=generator).to(ids.device)

    chosen = (u_choose < p) & ~torch.isin(ids, special)  # (B, T): the positions to predict
    to_mask = chosen & (u_action < 0.8)  # 80% of them: <mask>
    to_random = chosen & (u_action >= 0.8) & (u_action < 0.9)  # 10%: a random token
    # the last 10% keep their token: the model must predict it although it sees it
    inputs = ids.masked_fill(to_mask, mask_id)
    inputs = torch.where(to_random, ordinary[r], inputs)
    labels = ids.masked_fill(~chosen, IGNORE_INDEX)  # (B, T): original ids where chosen
    return inputs, labels


def _ordinary_ids(vocab_size: int, special: Tensor) -> Tensor:
    all_ids = torch.arange(vocab_size, device=special.device)
    ordinary = all_ids[~torch.isin(all_ids, special)]
    if ordinary.numel() == 0:
        raise ValueError(
            f"vocab_size must leave at least one ordinary (non-special) token, got "
            f"vocab_size={vocab_size} with special ids {special.tolist()}"
        )
    return ordinary


def _check_pairs_input(name: str, ids: object) -> Tensor:
    check.tensor(name, ids)
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer token ids, got dtype {ids.dtype}")
    ok = ids.dim() == 2 and ids.shape[1] >= 2
    return check.shape(name, ids, "(B, T) with T >= 2", ok)


def causal_lm_targets(ids: Tensor, pad_id: int = 0) -> tuple[Tensor, Tensor]:
    """Inputs and next-token targets for causal language modelling (GPT).

    The model reads tokens ``0 .. T-2`` and must predict, at every position ``t``, the token
    ``t + 1``: ``inputs = ids[:, :-1]``, ``targets = ids[:, 1:]``. A padding target is
    :data:`IGNORE_INDEX`, so padding after a short sequence costs nothing.

    Args:
        ids: a batch of token sequences.
        pad_id: the padding id.

    Shape:
        - ids: ``(B, T)`` with ``T >= 2``
        - inputs, targets: ``(B, T - 1)``

    Example:
        >>> causal_lm_targets(torch.tensor([[2, 7, 8, 3, 0]]))
        (tensor([[2, 7, 8, 3]]), tensor([[   7,    8,    3, -100]]))
    """
    _check_pairs_input("ids", ids)
    check.nonneg_int("pad_id", pad_id)
    inputs = ids[:, :-1]  # (B, T-1): what the model reads
    targets = ids[:, 1:].masked_fill(ids[:, 1:] == pad_id, IGNORE_INDEX)  # (B, T-1): next token
    return inputs, targets


def teacher_forcing(
    tgt: Tensor, pad_id: int = 0, bos_id: int | None = None
) -> tuple[Tensor, Tensor]:
    """Decoder inputs and targets for sequence-to-sequence training.

    The target ``<bos> y_1 .. y_n <eos>`` is split the same way as for a GPT: the decoder
    reads ``<bos> y_1 .. y_n`` and must predict ``y_1 .. y_n <eos>``. It reads the *true*
    previous tokens, not its own guesses ("teacher forcing"), so all positions are trained in
    one parallel pass; at inference it reads its own outputs (:mod:`tfbook.generate`).

    Args:
        tgt: targets that start with ``<bos>``, padded with ``pad_id``.
        pad_id: the padding id; padding targets become :data:`IGNORE_INDEX`.
        bos_id: when given, check that every target starts with it.

    Shape:
        - tgt: ``(B, T)`` with ``T >= 2``
        - decoder_inputs, targets: ``(B, T - 1)``

    Example:
        >>> teacher_forcing(torch.tensor([[2, 5, 6, 3], [2, 7, 3, 0]]))
        (tensor([[2, 5, 6],
                [2, 7, 3]]), tensor([[   5,    6,    3],
                [   7,    3, -100]]))
    """
    _check_pairs_input("tgt", tgt)
    if bos_id is not None and not bool((tgt[:, 0] == bos_id).all()):
        raise ValueError(
            f"tgt must start with <bos> (bos_id={bos_id}) in every row, got first tokens "
            f"{tgt[:, 0].tolist()}"
        )
    return causal_lm_targets(tgt, pad_id)


def lm_loss(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
    r"""Mean cross-entropy of the true next tokens, skipping :data:`IGNORE_INDEX` positions.

    For one position with target :math:`y` and predicted distribution
    :math:`p = \mathrm{softmax}(z)`:

    .. math:: \ell = -(1 - \varepsilon) \log p_y - \frac{\varepsilon}{V} \sum_{v=1}^{V} \log p_v

    With :math:`\varepsilon = 0` this is :math:`-\log p_y`, the number of nats the model
    "pays" for the true token. Label smoothing (the paper uses :math:`\varepsilon = 0.1`)
    mixes the one-hot target with a uniform distribution over the ``V`` tokens, as
    ``torch.nn.functional.cross_entropy(..., label_smoothing=eps)`` does. The loss is the
    mean over the positions whose target is not :data:`IGNORE_INDEX`.

    Args:
        logits: unnormalised scores over the vocabulary.
        targets: the true ids in ``[0, V)``, or :data:`IGNORE_INDEX`.
        label_smoothing: :math:`\varepsilon` in ``[0, 1]``.

    Returns:
        A scalar tensor (differentiable).

    Raises:
        ValueError: a target outside ``[0, V)`` (other than :data:`IGNORE_INDEX`), with the
            range and the bad value (instead of a device-side assert), mismatched shapes,
            or no position with a target at all.

    Shape:
        - logits: ``(B, T, V)`` (in general ``(..., V)``)
        - targets: ``(B, T)`` (``logits.shape[:-1]``)
        - output: ``()``

    Example:
        >>> logits = torch.tensor([[[0.0, 0.0], [2.0, 0.0]]])
        >>> round(lm_loss(logits, torch.tensor([[IGNORE_INDEX, 0]])).item(), 4)
        0.1269
    """
    _check_loss_inputs(logits, targets)
    eps = check.number_in("label_smoothing", label_smoothing, 0.0, 1.0)
    log_p = torch.log_softmax(logits, dim=-1)  # (B, T, V): log p_v at every position
    counted = targets != IGNORE_INDEX  # (B, T): positions with a label
    safe = targets.masked_fill(~counted, 0)  # (B, T): any valid id where there is no label
    nll = -log_p.gather(-1, safe.unsqueeze(-1)).squeeze(-1)  # (B, T): -log p_y
    uniform = -log_p.mean(dim=-1)  # (B, T): cross-entropy with the uniform distribution
    per_token = (1.0 - eps) * nll + eps * uniform  # (B, T)
    return per_token.masked_fill(~counted, 0.0).sum() / counted.sum()  # mean over the labels


def _check_loss_inputs(logits: object, targets: object) -> None:
    check.shape("logits", logits, "(B, T, V)", isinstance(logits, Tensor) and logits.dim() >= 1)
    if not logits.dtype.is_floating_point:
        raise TypeError(f"logits must be floating point, got dtype {logits.dtype}")
    check.tensor("targets", targets)
    if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
        raise TypeError(f"targets must hold integer token ids, got dtype {targets.dtype}")
    want = tuple(logits.shape[:-1])
    check.shape("targets", targets, f"logits.shape[:-1] = {want}", tuple(targets.shape) == want)
    v = logits.shape[-1]
    bad = (targets != IGNORE_INDEX) & ((targets < 0) | (targets >= v))
    if bool(bad.any()):
        value = int(targets[bad][0])
        raise ValueError(
            f"targets must be token ids in [0, V={v}) or IGNORE_INDEX={IGNORE_INDEX}, got "
            f"{value} at position {tuple(int(i) for i in bad.nonzero()[0])}"
        )
    if not bool((targets != IGNORE_INDEX).any()):
        raise ValueError(
            f"targets must have at least one position to predict, got only "
            f"IGNORE_INDEX={IGNORE_INDEX} (a batch with nothing to learn from)"
        )


def perplexity(mean_loss: float | Tensor) -> float:
    """``exp(mean_loss)``: the number of equally likely tokens the model hesitates between.

    A model that spreads its probability evenly over ``k`` tokens has a cross-entropy of
    ``log k`` nats per token and a perplexity of ``k``; a uniform guess over ``V`` tokens has
    perplexity ``V``, a perfect model 1.

    Args:
        mean_loss: the mean cross-entropy in nats per token (a float or a 0-d tensor), >= 0.

    Example:
        >>> round(perplexity(math.log(50.0)), 6)
        50.0
    """
    if isinstance(mean_loss, Tensor):
        if mean_loss.numel() != 1:
            raise ValueError(f"mean_loss must be a scalar, got shape {tuple(mean_loss.shape)}")
        mean_loss = mean_loss.item()
    loss = check.number_in("mean_loss", mean_loss, 0.0, math.inf)
    return math.exp(loss) if loss < 709.0 else math.inf  # exp overflows a float past ~709.78


# ------------------------------------------------------------------ other members of the families


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 2.0,
    targets: Tensor | None = None,
    alpha: float = 0.5,
) -> Tensor:
    r"""Knowledge distillation: a student trained on a teacher's softened distribution.

    Hinton, Vinyals and Dean (2015) soften both distributions with a temperature :math:`T`,
    :math:`q = \mathrm{softmax}(z^{\text{teacher}} / T)` and
    :math:`p = \mathrm{softmax}(z^{\text{student}} / T)`, and train the student to match
    :math:`q`: the *soft target* term is :math:`T^2\,\mathrm{KL}(q \,\|\, p)` per position.
    The gradient of the KL term with respect to the student's logits shrinks as
    :math:`1/T^2` for large :math:`T`; the factor :math:`T^2` restores its size, so that the
    balance with the hard loss does not change when :math:`T` does. With ``targets`` the
    result mixes in the usual cross-entropy on the true tokens (:func:`lm_loss`, at
    :math:`T = 1`):

    .. math:: \mathcal{L} = \alpha\, T^2\, \overline{\mathrm{KL}(q \,\|\, p)}
              + (1 - \alpha)\, \overline{-\log p^{(T=1)}_y}

    The bars are means over the positions that have a target (every position when
    ``targets`` is ``None``, and then the loss is the soft term alone). The teacher is a
    constant: no gradient flows into ``teacher_logits``. DistilBERT (Sanh et al. 2019)
    trains its student with such a soft term, the masked-LM loss and a cosine term on the
    hidden vectors, which this function leaves out.

    Args:
        student_logits: the student's logits.
        teacher_logits: the teacher's logits for the same positions.
        temperature: :math:`T > 0`; 1 is the plain distribution, larger is softer.
        targets: optional true ids in ``[0, V)`` or :data:`IGNORE_INDEX`.
        alpha: the weight of the soft term in ``[0, 1]`` (used only with ``targets``).

    Returns:
        A scalar tensor (differentiable with respect to ``student_logits``).

    Shape:
        - student_logits, teacher_logits: ``(B, T, V)`` (in general ``(..., V)``)
        - targets: ``student_logits.shape[:-1]``
        - output: ``()``

    Example:
        >>> s = torch.tensor([[[1.0, 0.0, -1.0]]])
        >>> round(distillation_loss(s, s.clone(), temperature=4.0).item(), 6)  # same: no loss
        0.0
    """
    _check_logits("student_logits", student_logits)
    _check_logits("teacher_logits", teacher_logits)
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(
            f"teacher_logits must have the shape of student_logits "
            f"{tuple(student_logits.shape)}, got {tuple(teacher_logits.shape)}"
        )
    t = check.number_in("temperature", temperature, 0.0, math.inf, low_open=True, high_open=True)
    a = check.number_in("alpha", alpha, 0.0, 1.0)
    log_q = torch.log_softmax(teacher_logits.detach() / t, dim=-1)  # (..., V): the teacher at T
    log_p = torch.log_softmax(student_logits / t, dim=-1)  # (..., V): the student at T
    kl = (log_q.exp() * (log_q - log_p)).sum(dim=-1)  # (...): KL(q || p) per position
    if targets is None:
        return t * t * kl.mean()
    _check_loss_inputs(student_logits, targets)
    counted = targets != IGNORE_INDEX  # (...): the positions with a target
    soft = kl.masked_fill(~counted, 0.0).sum() / counted.sum()
    return a * t * t * soft + (1.0 - a) * lm_loss(student_logits, targets)


def _check_logits(name: str, logits: object) -> Tensor:
    check.shape(name, logits, "(B, T, V)", isinstance(logits, Tensor) and logits.dim() >= 1)
    if not logits.dtype.is_floating_point:
        raise TypeError(f"{name} must be floating point, got dtype {logits.dtype}")
    return logits


def replaced_token_batch(
    ids: Tensor,
    labels: Tensor,
    generator_logits: Tensor,
    pad_id: int = 0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """ELECTRA's replaced-token detection: the discriminator's inputs and labels.

    Clark et al. (2020) train two encoders together. A small *generator*, a masked language
    model, reads the batch corrupted by :func:`mask_tokens` and predicts the chosen
    positions; at each of them a token is **sampled** from its distribution. The
    *discriminator* reads the original batch with those samples in place and must tell, at
    every position, whether the token is the original or a replacement. A sample equal to
    the original token counts as **original** (as in the paper): the label says whether the
    token differs, not whether it was sampled. Padding gets :data:`IGNORE_INDEX`; every other
    position has a label, which is ELECTRA's point: all positions train the discriminator,
    not the 15% that were chosen. The samples are drawn without gradient (the paper does not
    back-propagate through the sampling).

    Args:
        ids: the original batch.
        labels: the labels of :func:`mask_tokens` for it: the original id at a chosen
            position, :data:`IGNORE_INDEX` elsewhere.
        generator_logits: the generator's logits on the corrupted batch.
        pad_id: the padding id (its positions get no label).
        generator: a ``torch.Generator`` for reproducible samples.

    Returns:
        ``(inputs, replaced)``: the ids with the samples at the chosen positions, and the
        discriminator's labels (1 = replaced, 0 = original, :data:`IGNORE_INDEX` at padding).

    Shape:
        - ids, labels: ``(B, T)``
        - generator_logits: ``(B, T, V)``
        - inputs, replaced: ``(B, T)``

    Example:
        >>> ids = torch.tensor([[2, 5, 6, 7, 3, 0]])
        >>> labels = torch.tensor([[-100, 5, -100, 7, -100, -100]])  # positions 1 and 3 chosen
        >>> logits = torch.full((1, 6, 8), -1e9)
        >>> logits[0, 1, 6] = logits[0, 3, 7] = 0.0  # the generator is sure: 6 at 1, 7 at 3
        >>> replaced_token_batch(ids, labels, logits)
        (tensor([[2, 6, 6, 7, 3, 0]]), tensor([[   0,    1,    0,    0,    0, -100]]))
    """
    _check_logits("generator_logits", generator_logits)
    v = generator_logits.shape[-1]
    check.token_ids("ids", ids, v, dims=(2,))
    check.tensor("labels", labels)
    check.shape("labels", labels, f"like ids {tuple(ids.shape)}", labels.shape == ids.shape)
    want = (*ids.shape, v)
    ok = tuple(generator_logits.shape) == want
    check.shape("generator_logits", generator_logits, f"(B, T, V) = {want}", ok)
    check.nonneg_int("pad_id", pad_id)
    chosen = labels != IGNORE_INDEX  # (B, T): the positions the generator fills
    if not bool((labels[chosen] == ids[chosen]).all()):
        raise ValueError(
            "labels must hold the original id (ids) at every chosen position and "
            f"IGNORE_INDEX={IGNORE_INDEX} elsewhere, as mask_tokens returns them; got labels "
            "that differ from ids at a chosen position"
        )
    probs = torch.softmax(generator_logits.detach()[chosen].double(), dim=-1)  # (N, V)
    inputs = ids.clone()
    if probs.shape[0]:
        samples = torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (N,)
        inputs[chosen] = samples.to(ids.dtype)
    replaced = (inputs != ids).long().masked_fill(ids == pad_id, IGNORE_INDEX)  # (B, T)
    return inputs, replaced


def span_corruption(
    ids: Tensor,
    sentinel_ids: Sequence[int],
    noise_density: float = 0.15,
    mean_span_length: float = 3.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """T5's span corruption: drop random spans, mark them with sentinels, predict them.

    Raffel et al. (2020) corrupt a sequence of ``n`` tokens as follows: ``round(noise_density
    * n)`` tokens are noise (at least 1, at most ``n - 1``), grouped into ``round(noise /
    mean_span_length)`` spans (at least 1); the noise tokens are cut into that many non-empty
    runs at random places, and so are the kept tokens, which surround them. In the input each
    noise span is replaced by one sentinel, the ``i``-th span by ``sentinel_ids[i]``; the
    target lists every sentinel followed by the span it replaced, and ends with one more
    sentinel (the paper's Figure 2: input ``Thank you <X> me to your party <Y> week.``,
    target ``<X> for inviting <Y> last <Z>``). Every original token appears exactly once, in
    the input or in the target, and the target is short: about ``noise_density * n`` tokens
    plus the sentinels. (T5's own code alternates kept and noise runs starting with a kept
    run, so its last token is always noise; here the runs of kept tokens before the first
    span and after the last may be empty, so a span may fall anywhere.)

    Args:
        ids: one sequence of token ids (no padding; any ``<bos>``/``<eos>`` is treated like
            any other token, so pass the text alone).
        sentinel_ids: the sentinel ids, in order; none may occur in ``ids``, and there must
            be one more than the number of spans (T5 reserves 100).
        noise_density: the share of tokens to drop, in ``(0, 1)`` (15% in T5).
        mean_span_length: the mean length of a dropped span, >= 1 (3 in T5).
        generator: a ``torch.Generator`` for a reproducible corruption.

    Returns:
        ``(inputs, targets)``: the 1-D id tensors of the encoder input and the decoder target.

    Shape:
        - ids: ``(n,)`` with ``n >= 2``
        - inputs: ``(n - noise + spans,)``; targets: ``(noise + spans + 1,)``

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> inputs, targets = span_corruption(torch.arange(5, 25), [100, 101, 102], generator=g)
        >>> inputs  # 3 tokens of 20 dropped, in one span
        tensor([  5,   6,   7,   8,   9,  10,  11,  12,  13, 100,  17,  18,  19,  20,
                 21,  22,  23,  24])
        >>> targets
        tensor([100,  14,  15,  16, 101])
    """
    check.tensor("ids", ids)
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise TypeError(f"ids must hold integer token ids, got dtype {ids.dtype}")
    check.shape("ids", ids, "(n,) with n >= 2", ids.dim() == 1 and ids.shape[0] >= 2)
    density = check.number_in(
        "noise_density", noise_density, 0.0, 1.0, low_open=True, high_open=True
    )
    mean_len = check.number_in("mean_span_length", mean_span_length, 1.0, math.inf, high_open=True)
    sentinels = [check.nonneg_int("sentinel_ids[i]", int_id) for int_id in sentinel_ids]
    n = ids.shape[0]
    num_noise = min(max(round(density * n), 1), n - 1)
    num_spans = min(max(round(num_noise / mean_len), 1), num_noise, n - num_noise + 1)
    if len(sentinels) < num_spans + 1:
        raise ValueError(
            f"sentinel_ids must hold at least {num_spans + 1} ids ({num_spans} spans + 1 to end "
            f"the target) for n={n} tokens, got {len(sentinels)}"
        )
    clash = sorted(set(sentinels) & set(ids.tolist()))
    if clash:
        raise ValueError(f"sentinel_ids must not occur in ids, got {clash} in both")
    noise_lengths = _random_segments(num_noise, num_spans, generator)  # (spans,), each >= 1
    # spans + 1 runs of kept tokens: the inner ones non-empty, the first and the last maybe empty
    keep_lengths = _random_segments(n - num_noise + 2, num_spans + 1, generator)  # each >= 1
    keep_lengths[0] -= 1
    keep_lengths[-1] -= 1
    inputs: list[Tensor] = []
    targets: list[Tensor] = []
    start = 0
    for i in range(num_spans):  # a run of kept tokens, then a noise span
        keep, noise = int(keep_lengths[i]), int(noise_lengths[i])
        sentinel = ids.new_tensor([sentinels[i]])
        inputs += [ids[start : start + keep], sentinel]
        targets += [sentinel, ids[start + keep : start + keep + noise]]
        start += keep + noise
    inputs.append(ids[start:])  # the last run of kept tokens
    targets.append(ids.new_tensor([sentinels[num_spans]]))  # the target ends with a sentinel
    return torch.cat(inputs), torch.cat(targets)


def _random_segments(total: int, parts: int, generator: torch.Generator | None) -> Tensor:
    """``parts`` positive lengths adding up to ``total``, cut at random places."""
    cuts = torch.randperm(total - 1, generator=generator)[: parts - 1] + 1  # (parts - 1,)
    edges = torch.cat([torch.tensor([0]), cuts.sort().values, torch.tensor([total])])
    return edges.diff()  # (parts,)
