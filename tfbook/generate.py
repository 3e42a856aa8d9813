"""Decoding: turning a model's next-token scores into text (chapter 7).

A trained GPT or encoder-decoder scores the *next* token. Generating a sequence repeats
"score, choose, append" until ``<eos>`` or a length limit. What differs is how a token is
chosen:

- **greedy**: always the most likely token (``temperature=0``);
- **sampling**: draw from the softmax of ``logits / temperature``, optionally only among the
  ``k`` most likely tokens (top-k) or the smallest set holding probability ``p`` (top-p,
  "nucleus" sampling, Holtzman et al. 2020);
- **beam search**: keep the ``beam_width`` best partial sequences, scored by their total
  log-probability with GNMT's length penalty (Wu et al. 2016).

Every step reuses the keys and values of the earlier tokens from a KV cache
(:class:`tfbook.model.DecoderCache`), so a step costs one token's work instead of the whole
prefix's; ``use_cache=False`` recomputes the prefix and gives the same tokens.

Public API:

- :func:`top_k_filter` ``(logits, k)`` and :func:`top_p_filter` ``(logits, p)``.
- :func:`sample_next` ``(logits, temperature, top_k, top_p, generator)``: one id per row.
- :func:`generate` ``(model: GPT, prompt, max_new_tokens, ...)``: continue prompts.
- :func:`greedy_translate` ``(model: EncoderDecoder, src, bos_id, eos_id, max_len)``.
- :func:`beam_search` ``(model, src_or_prompt, beam_width, max_len, bos_id, eos_id,
  length_penalty)``.
- :func:`gnmt_length_penalty` ``(length, alpha)``: ``((5 + length) / 6) ** alpha``.
- :func:`sequence_log_prob` ``(model, src_or_prompt, continuation, bos_id)``: the score a
  model gives a continuation (to compare decoders).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from tfbook import _validate as check
from tfbook._core import wide_float
from tfbook.model import GPT, DecoderCache, EncoderDecoder

__all__ = [
    "top_k_filter",
    "top_p_filter",
    "sample_next",
    "generate",
    "greedy_translate",
    "beam_search",
    "gnmt_length_penalty",
    "sequence_log_prob",
]


# ------------------------------------------------------------------------------- choosing


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Keep the ``k`` largest logits of each row; set the others to ``-inf``.

    After a softmax the removed tokens have probability exactly 0. Ties with the ``k``-th
    largest value are kept (so a row may keep more than ``k`` tokens); ``k >= V`` keeps all.

    Args:
        logits: scores over the vocabulary.
        k: how many tokens to keep, >= 1.

    Shape:
        - logits: ``(..., V)``; output: same shape

    Example:
        >>> top_k_filter(torch.tensor([1.0, 3.0, 2.0, 0.0]), k=2)
        tensor([-inf, 3., 2., -inf])
    """
    _check_logits(logits)
    check.positive_int("k", k)
    if k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (..., 1): the k-th largest
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Nucleus filtering: keep the smallest set of most likely tokens whose probability >= p.

    Sort the tokens by probability; keep a token when the probability of the tokens *before*
    it is still below ``p``. The most likely token is always kept; ``p = 1`` keeps all. Of
    tokens tied at the edge of the nucleus, the ones with lower indices are kept.

    Args:
        logits: scores over the vocabulary.
        p: the probability mass to keep, in ``(0, 1]``.

    Shape:
        - logits: ``(..., V)``; output: same shape, removed tokens at ``-inf``

    Example:
        >>> probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
        >>> top_p_filter(probs.log(), p=0.8).exp()  # 0.5 + 0.3 reaches 0.8
        tensor([0.5000, 0.3000, 0.0000, 0.0000])
    """
    _check_logits(logits)
    check.number_in("p", p, 0.0, 1.0, low_open=True)
    if p == 1.0:
        return logits
    # A stable sort: of tokens tied at the nucleus' edge the lower index is kept, every time.
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True, stable=True)  # (..., V)
    probs = torch.softmax(sorted_logits, dim=-1)  # (..., V), largest first
    before = probs.cumsum(dim=-1) - probs  # (..., V): the mass of the tokens ranked higher
    remove_sorted = before >= p  # the top token has before = 0 < p: always kept
    remove = remove_sorted.scatter(-1, order, remove_sorted)  # back to vocabulary order
    return logits.masked_fill(remove, float("-inf"))


def sample_next(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Choose one token per row from next-token logits.

    ``temperature = 0`` is greedy decoding (the argmax; ``top_k``/``top_p`` change nothing).
    Otherwise the logits are divided by the temperature (below 1: sharper, above 1:
    flatter), filtered by top-k and then top-p, and one token is drawn from the softmax.

    Args:
        logits: next-token scores.
        temperature: >= 0.
        top_k: keep only the ``k`` most likely tokens (``None``: all).
        top_p: keep only the nucleus of mass ``p`` (``None``: all).
        generator: a ``torch.Generator`` for reproducible draws.

    Shape:
        - logits: ``(B, V)``; output: ``(B,)`` token ids (``torch.long``)

    Example:
        >>> sample_next(torch.tensor([[0.1, 2.0, -1.0]]), temperature=0.0)
        tensor([1])
    """
    check.shape("logits", logits, "(B, V)", isinstance(logits, Tensor) and logits.dim() == 2)
    _check_logits(logits)
    _check_sampling(temperature, top_k, top_p)
    if temperature == 0.0:
        return logits.argmax(dim=-1)  # (B,): greedy
    scaled = logits / temperature  # (B, V)
    if top_k is not None:
        scaled = top_k_filter(scaled, top_k)
    if top_p is not None:
        scaled = top_p_filter(scaled, top_p)
    probs = torch.softmax(scaled.to(wide_float(scaled.device)), dim=-1)  # (B, V): no 0-sum
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (B,)


# --------------------------------------------------------------------------- generation


def generate(
    model: GPT,
    prompt: Tensor,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Continue each prompt by up to ``max_new_tokens`` tokens with a decoder-only model.

    The prompt is read once (filling the KV cache); then each step feeds only the token just
    chosen. With ``use_cache=False`` every step re-reads the whole sequence (the same tokens,
    much slower: see ``benchmarks/bench_generate.py``). A row that has produced ``eos_id``
    is finished: its later positions are filled with the model's ``pad_id``, and generation
    stops early once every row is finished. The model runs in eval mode without gradients
    (its mode is restored afterwards).

    Args:
        model: a :class:`tfbook.model.GPT`.
        prompt: the token ids to continue (all rows the same length: no padding).
        max_new_tokens: at most this many new tokens; ``T + max_new_tokens`` must not
            exceed the model's ``max_len`` (its position table).
        temperature, top_k, top_p, generator: as :func:`sample_next` (default: greedy).
        eos_id: the end-of-sequence id, or ``None`` to always generate ``max_new_tokens``.
        use_cache: reuse the keys and values of earlier tokens.

    Returns:
        The prompts followed by the new tokens.

    Shape:
        - prompt: ``(B, T)`` with ``T >= 1``
        - output: ``(B, T + n)`` with ``n <= max_new_tokens``

    Example:
        >>> from tfbook.model import TransformerConfig
        >>> cfg = TransformerConfig(vocab_size=10, d_model=16, n_heads=4, d_ff=32, n_layers=2)
        >>> out = generate(GPT(cfg), torch.tensor([[2, 5, 6]]), max_new_tokens=4)
        >>> out.shape
        torch.Size([1, 7])
    """
    _check_model("model", model, GPT)
    _check_prompt("prompt", prompt, model)
    check.positive_int("max_new_tokens", max_new_tokens)
    _check_fits("max_new_tokens", max_new_tokens, prompt.shape[1], model.cfg.max_len)
    _check_sampling(temperature, top_k, top_p)
    _check_optional_id("eos_id", eos_id, model.cfg.vocab_size)
    check.boolean("use_cache", use_cache)
    with _inference(model):
        cache = model.new_cache() if use_cache else None
        ids = prompt  # (B, T)
        logits = model(prompt, cache=cache)[:, -1]  # (B, V): the scores after the prompt
        finished = torch.zeros(prompt.shape[0], dtype=torch.bool, device=prompt.device)  # (B,)
        for step in range(max_new_tokens):
            new = sample_next(logits, temperature, top_k, top_p, generator)  # (B,)
            new = new.masked_fill(finished, model.cfg.pad_id)  # finished rows: padding
            ids = torch.cat([ids, new[:, None]], dim=1)  # (B, T + step + 1)
            if eos_id is not None:
                finished |= new == eos_id
            if step == max_new_tokens - 1 or bool(finished.all()):
                break
            fed = new[:, None] if use_cache else ids  # (B, 1) with a cache, else everything
            logits = model(fed, cache=cache)[:, -1]  # (B, V): the next token's scores
    return ids


def greedy_translate(
    model: EncoderDecoder,
    src: Tensor,
    bos_id: int,
    eos_id: int,
    max_len: int,
    use_cache: bool = True,
) -> Tensor:
    """Greedy decoding with an encoder-decoder: the most likely target, token by token.

    The source is encoded once; the decoder starts from ``<bos>`` and each step appends the
    argmax. With the KV cache a step feeds only the newest token and the memory's keys and
    values are projected once for the whole decoding. Source padding (``cfg.pad_id``) is
    masked, so a padded source gives the same translation as the unpadded one.

    Args:
        model: a :class:`tfbook.model.EncoderDecoder`.
        src: source ids, padded with the model's ``pad_id``.
        bos_id, eos_id: the target's start and end ids.
        max_len: at most this many target tokens (``<eos>`` included, ``<bos>`` not);
            at most the model's ``max_len``.
        use_cache: reuse the keys and values of earlier target tokens and of the memory.

    Returns:
        The target ids without ``<bos>``: each row stops at its ``<eos>`` (kept), later
        positions hold ``pad_id``; decoding stops when every row is finished.

    Shape:
        - src: ``(B, S)``
        - output: ``(B, L)`` with ``L <= max_len``
    """
    _check_model("model", model, EncoderDecoder)
    _check_prompt("src", src, model)
    vocab = model.cfg.vocab_size
    _check_optional_id("bos_id", bos_id, vocab, required=True)
    _check_optional_id("eos_id", eos_id, vocab, required=True)
    check.positive_int("max_len", max_len)
    _check_fits("max_len", max_len, 0, model.cfg.max_len)  # <bos> + max_len - 1 tokens are read
    check.boolean("use_cache", use_cache)
    b = src.shape[0]
    with _inference(model):
        memory = model.encode(src)  # (B, S, d_model): read the source once
        cache = model.new_cache() if use_cache else None
        tgt = torch.full((b, 1), bos_id, dtype=torch.long, device=src.device)  # (B, 1): <bos>
        finished = torch.zeros(b, dtype=torch.bool, device=src.device)  # (B,)
        for _ in range(max_len):
            fed = tgt[:, -1:] if use_cache else tgt  # (B, 1) with a cache, else all so far
            logits = model.decode(fed, memory, src, cache=cache)[:, -1]  # (B, V)
            new = logits.argmax(dim=-1).masked_fill(finished, model.cfg.pad_id)  # (B,)
            tgt = torch.cat([tgt, new[:, None]], dim=1)  # (B, 1 + tokens so far)
            finished |= new == eos_id
            if bool(finished.all()):
                break
    return tgt[:, 1:]  # (B, L): without <bos>


# --------------------------------------------------------------------------- beam search


def gnmt_length_penalty(length: int, alpha: float) -> float:
    r"""GNMT's length penalty :math:`lp(Y) = ((5 + |Y|) / 6)^\alpha` (Wu et al. 2016, eq. 14).

    A beam's score is :math:`\log P(Y) / lp(Y)`. Log-probabilities only go down as a
    sequence grows, so without the penalty (``alpha = 0``) beam search prefers short
    outputs; ``alpha`` between 0.6 and 1 compensates.

    Example:
        >>> gnmt_length_penalty(1, 0.6), round(gnmt_length_penalty(7, 0.6), 4)
        (1.0, 1.5157)
    """
    check.nonneg_int("length", length)
    check.number_in("length_penalty", alpha, 0.0, math.inf, high_open=True)
    return ((5.0 + length) / 6.0) ** alpha


def beam_search(
    model: EncoderDecoder | GPT,
    src_or_prompt: Tensor,
    beam_width: int,
    max_len: int,
    bos_id: int | None = None,
    eos_id: int | None = None,
    length_penalty: float = 0.6,
    use_cache: bool = True,
) -> Tensor:
    """Beam search: keep the ``beam_width`` best partial sequences at every step.

    At each step every live beam is extended by every token; of the extensions, ranked by
    total log-probability, those ending in ``eos_id`` among the best ``beam_width`` are
    finished hypotheses, and the best ``beam_width`` others are the next beams. The search
    ends when no live beam can beat the best finished hypothesis any more (a beam's total
    only falls as it grows, so ``score / lp(max_len)`` bounds what it can reach) or after
    ``max_len`` tokens; the answer is the finished hypothesis (or, if none finished, the beam)
    with the highest ``log P(Y) / lp(Y)`` (:func:`gnmt_length_penalty`, ``|Y|`` counting the
    generated tokens, ``<eos>`` included). Stopping at the first ``beam_width`` finished
    hypotheses instead (fairseq's rule) can end the search while the best beam is still
    running; chapter 7 measures the difference.

    The batch rows are searched one after the other (each row's beams form the batch of
    the model calls), which is simple and enough for the book's small examples.

    Args:
        model: a :class:`tfbook.model.EncoderDecoder` (``src_or_prompt`` is the source, the
            target starts with ``bos_id``) or a :class:`tfbook.model.GPT` (``src_or_prompt``
            is the prompt, continued as it is; ``bos_id`` is not used).
        src_or_prompt: ``(B, S)`` source ids or ``(B, T)`` prompt ids.
        beam_width: number of beams, >= 1.
        max_len: at most this many generated tokens (``<eos>`` included).
        bos_id: the target's start id (encoder-decoder only).
        eos_id: the end id (required).
        length_penalty: GNMT's ``alpha`` (0: the raw log-probability).
        use_cache: a :class:`tfbook.model.DecoderCache` reordered along with the beams.

    Returns:
        The best sequence of each row, padded with the model's ``pad_id``: for an
        encoder-decoder the target without ``<bos>`` (like :func:`greedy_translate`),
        for a GPT the prompt followed by the continuation (like :func:`generate`).

    Shape:
        - output: ``(B, L)`` with ``L <= max_len`` (encoder-decoder) or
          ``L <= T + max_len`` (GPT)
    """
    if not isinstance(model, (EncoderDecoder, GPT)):
        raise TypeError(f"model must be an EncoderDecoder or a GPT, got {type(model).__name__}")
    seq2seq = isinstance(model, EncoderDecoder)
    _check_prompt("src_or_prompt", src_or_prompt, model)
    check.positive_int("beam_width", beam_width)
    check.positive_int("max_len", max_len)
    vocab = model.cfg.vocab_size
    _check_optional_id("eos_id", eos_id, vocab, required=True)
    _check_optional_id("bos_id", bos_id, vocab, required=seq2seq)
    # the decoder reads <bos> + all but the last token (max_len), or the prompt + max_len
    _check_fits("max_len", max_len, 0 if seq2seq else src_or_prompt.shape[1], model.cfg.max_len)
    check.number_in("length_penalty", length_penalty, 0.0, math.inf, high_open=True)
    check.boolean("use_cache", use_cache)
    options = (beam_width, max_len, bos_id, eos_id, length_penalty, use_cache)
    with _inference(model):
        found = [_beam_search_row(model, row[None], *options) for row in src_or_prompt]
    if not seq2seq:  # a GPT's answer starts with its prompt, as generate's does
        found = [torch.cat([p, new]) for p, new in zip(src_or_prompt, found, strict=True)]
    return _pad_rows(found, model.cfg.pad_id)


def _beam_search_row(
    model: EncoderDecoder | GPT,
    src_or_prompt: Tensor,
    beam_width: int,
    max_len: int,
    bos_id: int | None,
    eos_id: int,
    alpha: float,
    use_cache: bool,
) -> Tensor:
    """Beam search for one row ``(1, S)``; returns the generated tokens ``(L,)``."""
    device = src_or_prompt.device
    step_fn = _NextLogits(model, src_or_prompt, bos_id, use_cache)
    beams = torch.empty(1, 0, dtype=torch.long, device=device)  # (n, t): generated so far
    wide = wide_float(device)  # float64 (float32 on MPS): sums of many log-probabilities
    scores = torch.zeros(1, dtype=wide, device=device)  # (n,): log P of each beam
    finished: list[tuple[float, Tensor]] = []  # (normalised score, tokens)
    for t in range(max_len):
        log_p = torch.log_softmax(step_fn(beams).to(wide), dim=-1)  # (n, V)
        total = (scores[:, None] + log_p).flatten()  # (n * V,): every extension
        n_cand = min(2 * beam_width, total.numel())  # enough that beam_width are not <eos>
        cand_scores, cand = torch.topk(total, n_cand)  # best first
        keep_beam, keep_tok, keep_score = [], [], []
        for rank, (score, c) in enumerate(zip(cand_scores.tolist(), cand.tolist(), strict=True)):
            beam, tok = divmod(c, log_p.shape[1])
            if tok == eos_id:
                if rank < beam_width:  # a finished hypothesis among the best
                    seq = torch.cat([beams[beam], beams.new_tensor([eos_id])])
                    finished.append((score / gnmt_length_penalty(t + 1, alpha), seq))
            elif len(keep_beam) < beam_width:
                keep_beam.append(beam)
                keep_tok.append(tok)
                keep_score.append(score)
        if not keep_beam:
            break
        if finished:
            # Stop only when no live beam can still win: a beam's log-probability only falls
            # as it grows, and the largest length penalty divides it least. (Stopping at the
            # first beam_width finished hypotheses, fairseq's rule, can end the search while the
            # best beam is still running: chapter 7 measures it.)
            best_live = max(keep_score) / gnmt_length_penalty(max_len, alpha)
            if max(score for score, _ in finished) >= best_live:
                break
        index = torch.tensor(keep_beam, device=device)  # (n',): the surviving parents
        step_fn.reorder(index)  # the cache follows its beams
        beams = torch.cat([beams[index], torch.tensor(keep_tok, device=device)[:, None]], 1)
        scores = torch.tensor(keep_score, dtype=wide, device=device)
    else:  # max_len reached: unfinished beams compete too
        lp = gnmt_length_penalty(max_len, alpha)
        finished += [(s / lp, b) for s, b in zip(scores.tolist(), beams, strict=True)]
    return max(finished, key=lambda item: item[0])[1]


class _NextLogits:
    """``beams (n, t) -> logits (n, V)`` of the token after each beam, with or without cache."""

    def __init__(
        self, model: EncoderDecoder | GPT, src_or_prompt: Tensor, bos_id: int | None, cache: bool
    ) -> None:
        self.model = model
        self.seq2seq = isinstance(model, EncoderDecoder)
        self.cache: DecoderCache | None = model.new_cache() if cache else None
        if self.seq2seq:
            self.src = src_or_prompt  # (1, S)
            self.memory = model.encode(src_or_prompt)  # (1, S, d_model)
            self.start = src_or_prompt.new_tensor([[bos_id]])  # (1, 1)
        else:
            self.start = src_or_prompt  # (1, T)

    def reorder(self, index: Tensor) -> None:
        if self.cache is not None:
            self.cache.reorder(index)

    def __call__(self, beams: Tensor) -> Tensor:
        n = beams.shape[0]
        full = torch.cat([self.start.expand(n, -1), beams], dim=1)  # (n, start + t)
        fed = full if self.cache is None or len(self.cache) == 0 else full[:, -1:]
        if not self.seq2seq:
            return self.model(fed, cache=self.cache)[:, -1]  # (n, V)
        memory = self.memory.expand(n, -1, -1)  # (n, S, d_model): every beam reads the source
        src = self.src.expand(n, -1)  # (n, S)
        return self.model.decode(fed, memory, src, cache=self.cache)[:, -1]  # (n, V)


def sequence_log_prob(
    model: EncoderDecoder | GPT,
    src_or_prompt: Tensor,
    continuation: Tensor,
    bos_id: int | None = None,
) -> float:
    """``log P(continuation | source or prompt)`` under the model, in nats.

    The sum of the log-probabilities of the continuation's tokens, each given the ones
    before it (for an encoder-decoder the target starts with ``bos_id``). Divide by
    :func:`gnmt_length_penalty` ``(len(continuation), alpha)`` for beam search's score.

    Shape:
        - src_or_prompt: ``(1, S)`` or ``(1, T)``; continuation: ``(L,)``
    """
    seq2seq = isinstance(model, EncoderDecoder)
    _check_prompt("src_or_prompt", src_or_prompt, model)
    check.token_ids("continuation", continuation, model.cfg.vocab_size, dims=(1,))
    if src_or_prompt.shape[0] != 1:
        raise ValueError(f"src_or_prompt must have shape (1, T), got {tuple(src_or_prompt.shape)}")
    with _inference(model):
        if seq2seq:
            _check_optional_id("bos_id", bos_id, model.cfg.vocab_size, required=True)
            tgt = torch.cat([continuation.new_tensor([bos_id]), continuation])[None]  # (1, L+1)
            logits = model(src_or_prompt, tgt[:, :-1])  # (1, L, V)
        else:
            ids = torch.cat([src_or_prompt[0], continuation])[None]  # (1, T + L)
            logits = model(ids[:, :-1])[:, src_or_prompt.shape[1] - 1 :]  # (1, L, V)
        log_p = torch.log_softmax(logits.to(wide_float(logits.device)), dim=-1)[0]  # (L, V)
    return log_p.gather(-1, continuation[:, None]).sum().item()


# ============================================================================================
# Helpers: checks, the inference context, padding.
# ============================================================================================


class _inference:
    """Eval mode and no gradients inside; the model's mode is restored afterwards."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.was_training = model, model.training
        self.no_grad = torch.no_grad()

    def __enter__(self) -> None:
        self.model.eval()
        self.no_grad.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.no_grad.__exit__(*exc)
        self.model.train(self.was_training)


def _check_model(name: str, model: object, cls: type) -> None:
    if not isinstance(model, cls):
        raise TypeError(f"{name} must be a tfbook.model.{cls.__name__}, got {type(model).__name__}")


def _check_prompt(name: str, ids: object, model: nn.Module) -> None:
    check.token_ids(name, ids, model.cfg.vocab_size, dims=(2,), max_len=model.cfg.max_len)
    if ids.shape[0] == 0 or ids.shape[1] == 0:
        raise ValueError(
            f"{name} must hold at least one token per row (B, T) with B, T >= 1, got "
            f"{tuple(ids.shape)}"
        )


def _check_fits(name: str, new: int, start: int, max_len: int) -> None:
    if start + new > max_len:
        raise ValueError(
            f"{name} must fit the model's position table: T={start} + {name}={new} = "
            f"{start + new} positions, more than max_len={max_len}; got {name}={new} "
            f"(at most {max_len - start})"
        )


def _check_optional_id(name: str, value: object, vocab_size: int, required: bool = False) -> None:
    if value is None and not required:
        return
    check.int_in(name, value, 0, vocab_size - 1)


def _check_sampling(temperature: object, top_k: object, top_p: object) -> None:
    check.number_in("temperature", temperature, 0.0, math.inf, high_open=True)
    if top_k is not None:
        check.positive_int("top_k", top_k)
    if top_p is not None:
        check.number_in("top_p", top_p, 0.0, 1.0, low_open=True)


def _check_logits(logits: object) -> None:
    ok = isinstance(logits, Tensor) and logits.dim() >= 1 and logits.shape[-1] >= 1
    check.shape("logits", logits, "(..., V)", ok)
    if not logits.dtype.is_floating_point:
        raise TypeError(f"logits must be floating point, got dtype {logits.dtype}")


def _pad_rows(rows: list[Tensor], pad_id: int) -> Tensor:
    longest = max(len(r) for r in rows)
    out = rows[0].new_full((len(rows), longest), pad_id)  # (B, L)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out
