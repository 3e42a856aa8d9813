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
