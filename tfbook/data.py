"""Small data sets the package generates itself, and batching (chapter 7).

Chapter 7, "Training objectives, the training loop and decoding", trains real (small) models
on a CPU in seconds, so it needs data that costs nothing to make and has an exact answer.
Nothing here is downloaded:

- numbers and their Sino-Korean readings (``12345`` -> ``만 이천삼백사십오``), a translation
  task with a rule a model must discover (place values, the silent 1, the 만 groups);
- toy sequence-to-sequence tasks on token ids (copy, reverse);
- batching helpers: padding, target ``<bos>``/``<eos>``, random language-model windows.

Public API:

- :func:`korean_number` ``(n)``: the Sino-Korean reading of ``0 .. 99_999_999``.
- :func:`number_pairs` ``(count, seed, low, high)``: distinct ``("12345", "만 이천삼백사십오")``.
- :func:`split_pairs` ``(pairs, held_out, seed)``: train / held-out split, no source in both.
- :func:`copy_task` and :func:`reverse_task` ``(count, length, vocab_size, seed)``: id pairs.
- :func:`pad_batch` ``(seqs, pad_id, length)``: lists of ids to a ``(B, T)`` tensor.
- :func:`collate_pairs` ``(pairs)``: id pairs to ``(src, tgt)`` tensors, targets wrapped in
  ``<bos>`` ... ``<eos>``.
- :class:`Seq2SeqData`: text pairs, character tokenizers, batches, decoding of the output.
- :func:`lm_batches` ``(ids, context, batch_size, generator)``: one batch of random windows
  of a long id sequence and the same windows shifted by one (nanoGPT's ``get_batch``).

Special ids are the tokenizers' (chapter 2): ``0 <pad>``, ``1 <unk>``, ``2 <bos>``,
``3 <eos>``, ``4 <mask>``; the toy tasks draw their tokens from ``5 .. vocab_size - 1``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

from tfbook import _validate as check
from tfbook.tokenizers import SPECIAL_TOKENS, CharTokenizer, Tokenizer

__all__ = [
    "MAX_KOREAN_NUMBER",
    "korean_number",
    "number_pairs",
    "split_pairs",
    "copy_task",
    "reverse_task",
    "pad_batch",
    "collate_pairs",
    "Seq2SeqData",
    "lm_batches",
]

PAD_ID, BOS_ID, EOS_ID = 0, 2, 3
FIRST_ORDINARY_ID = len(SPECIAL_TOKENS)  # 5: the first id that is not a special token

#: The largest number :func:`korean_number` reads (two 만 groups: 9999만 9999).
MAX_KOREAN_NUMBER = 99_999_999

_DIGITS = "영일이삼사오육칠팔구"
_UNITS = ((1000, "천"), (100, "백"), (10, "십"), (1, ""))


# ------------------------------------------------------------------------ Korean numbers


def _read_group(n: int) -> str:
    """A group of four digits, 1..9999: 2305 -> 이천삼백오; a 1 before 천/백/십 is silent."""
    words = []
    for value, unit in _UNITS:
        digit = n // value % 10
        if digit == 0:
            continue  # zeros are not read: 2005 is 이천오
        silent = digit == 1 and unit != ""  # 천, not 일천; 십, not 일십
        words.append(("" if silent else _DIGITS[digit]) + unit)
    return "".join(words)


def korean_number(n: int) -> str:
    """The Sino-Korean reading of ``n`` (한자어 수사), from 영 to 구천구백구십구만 구천구백구십구.

    The digits are read in groups of four (만 = 10^4): ``12345`` is ``1 | 2345``, read
    ``만 이천삼백사십오``. Zeros are not read, and the digit 1 is silent before 십, 백, 천
    and 만 (``10`` is ``십``, ``10000`` is ``만``, ``11000`` is ``만 천``).

    Spacing: Korean writes numbers with a space after each 만 group and none inside a group
    (한글 맞춤법 제44항, "수를 적을 때에는 '만' 단위로 띄어 쓴다"), so ``10001`` is ``만 일``,
    ``20000000`` is ``이천만`` and ``99999999`` is ``구천구백구십구만 구천구백구십구``.

    Args:
        n: an int in ``[0, 99_999_999]`` (억 = 10^8 and beyond are not covered).

    Returns:
        The reading in Hangul.

    Raises:
        TypeError: ``n`` is not an int (a float or a bool).
        ValueError: ``n`` is outside ``[0, 99_999_999]``.

    Example:
        >>> [korean_number(n) for n in (0, 10, 12345, 20000000)]
        ['영', '십', '만 이천삼백사십오', '이천만']
    """
    check.int_in("n", n, 0, MAX_KOREAN_NUMBER)
    if n == 0:
        return "영"
    man, rest = divmod(n, 10_000)  # the 만 group and the last four digits
    groups = []
    if man:
        groups.append(("" if man == 1 else _read_group(man)) + "만")  # 만, not 일만
    if rest:
        groups.append(_read_group(rest))
    return " ".join(groups)


def number_pairs(
    count: int, seed: int, low: int = 0, high: int = MAX_KOREAN_NUMBER
) -> list[tuple[str, str]]:
    """``count`` distinct numbers drawn uniformly from ``[low, high]``, with their readings.

    Args:
        count: how many pairs (at most ``high - low + 1``).
        seed: the random seed (same seed, same pairs).
        low, high: the range of numbers, both included, within ``[0, 99_999_999]``.

    Returns:
        A list of ``(digits, reading)`` pairs, e.g. ``("12345", "만 이천삼백사십오")``.
        Drawn uniformly, most numbers have as many digits as ``high``: lower ``high`` (or
        call twice) for short ones.

    Example:
        >>> number_pairs(2, seed=0, low=10, high=99)
        [('59', '오십구'), ('63', '육십삼')]
    """
    check.positive_int("count", count)
    check.nonneg_int("seed", seed)
    check.int_in("low", low, 0, MAX_KOREAN_NUMBER)
    check.int_in("high", high, low, MAX_KOREAN_NUMBER)
    if count > high - low + 1:
        raise ValueError(
            f"count must be at most the {high - low + 1} numbers in [{low}, {high}], got {count}"
        )
    numbers = random.Random(seed).sample(range(low, high + 1), count)  # distinct
    return [(str(n), korean_number(n)) for n in numbers]


def split_pairs(
    pairs: Sequence[tuple], held_out: float = 0.1, seed: int = 0
) -> tuple[list[tuple], list[tuple]]:
    """Split pairs into a training part and a held-out part with no source in both.

    Pairs with the same source (first element) stay together, so a model is never tested
    on a number it was trained on. About ``held_out`` of the distinct sources are held out.

    Args:
        pairs: ``(source, target)`` pairs (any hashable source).
        held_out: fraction of the distinct sources to hold out, in ``[0, 1)``.
        seed: the random seed of the split.

    Returns:
        ``(train, held)``, two lists of pairs, each in the order of ``pairs``.

    Example:
        >>> train, test = split_pairs(number_pairs(100, seed=0), held_out=0.2)
        >>> len(train), len(test), set(s for s, _ in train) & set(s for s, _ in test)
        (80, 20, set())
    """
    pairs = list(pairs)
    if not pairs:
        raise ValueError("pairs must hold at least one (source, target) pair, got none")
    check.number_in("held_out", held_out, 0.0, 1.0, high_open=True)
    check.nonneg_int("seed", seed)
    sources = sorted({p[0] for p in pairs}, key=str)  # sorted: independent of set order
    random.Random(seed).shuffle(sources)
    held = set(sources[: round(held_out * len(sources))])
    return [p for p in pairs if p[0] not in held], [p for p in pairs if p[0] in held]


# ---------------------------------------------------------------------------- toy tasks


def _random_sequences(
    count: int, length: int | tuple[int, int], vocab_size: int, seed: int
) -> list[list[int]]:
    check.positive_int("count", count)
    check.nonneg_int("seed", seed)
    check.int_in("vocab_size", vocab_size, FIRST_ORDINARY_ID + 1, 10**9)
    if isinstance(length, tuple):
        lo, hi = length
        check.positive_int("length[0]", lo)
        check.int_in("length[1]", hi, lo, 10**9)
    else:
        lo = hi = check.positive_int("length", length)
    rng = random.Random(seed)
    return [
        [rng.randrange(FIRST_ORDINARY_ID, vocab_size) for _ in range(rng.randint(lo, hi))]
        for _ in range(count)
    ]


def copy_task(
    count: int, length: int | tuple[int, int], vocab_size: int, seed: int
) -> list[tuple[list[int], list[int]]]:
    """``count`` pairs ``(x, x)``: the target repeats the source.

    Args:
        count: number of pairs.
        length: the length of every sequence, or ``(shortest, longest)``, both included.
        vocab_size: ``V``; tokens are drawn uniformly from ``5 .. V - 1`` (no special ids).
        seed: the random seed.

    Returns:
        A list of ``(source, target)`` lists of ids, without ``<bos>``/``<eos>`` (see
        :func:`collate_pairs`).

    Example:
        >>> copy_task(2, length=3, vocab_size=9, seed=0)
        [([8, 5, 7], [8, 5, 7]), ([8, 7, 8], [8, 7, 8])]
    """
    return [(x, list(x)) for x in _random_sequences(count, length, vocab_size, seed)]


def reverse_task(
    count: int, length: int | tuple[int, int], vocab_size: int, seed: int
) -> list[tuple[list[int], list[int]]]:
    """``count`` pairs ``(x, reversed(x))``; arguments as :func:`copy_task`.

    Example:
        >>> reverse_task(1, length=4, vocab_size=9, seed=0)
        [([8, 5, 7, 8], [8, 7, 5, 8])]
    """
    return [(x, x[::-1]) for x in _random_sequences(count, length, vocab_size, seed)]


# ------------------------------------------------------------------------------ batching


def pad_batch(
    seqs: Sequence[Sequence[int]], pad_id: int = PAD_ID, length: int | None = None
) -> Tensor:
    """Lists of ids of different lengths as one tensor, padded on the right with ``pad_id``.

    Args:
        seqs: ``B`` sequences of token ids.
        pad_id: the padding id.
        length: ``T``, at least the longest sequence (default: the longest).

    Returns:
        A ``torch.long`` tensor.

    Shape:
        - output: ``(B, T)``

    Example:
        >>> pad_batch([[5, 6, 7], [8]])
        tensor([[5, 6, 7],
                [8, 0, 0]])
    """
    seqs = [list(s) for s in seqs]
    if not seqs:
        raise ValueError("seqs must hold at least one sequence, got none")
    check.nonneg_int("pad_id", pad_id)
    longest = max(len(s) for s in seqs)
    t = longest if length is None else check.nonneg_int("length", length)
    if t < longest:
        raise ValueError(f"length must be at least the longest sequence ({longest}), got {t}")
    out = torch.full((len(seqs), t), pad_id, dtype=torch.long)  # (B, T)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def collate_pairs(
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    bos_id: int = BOS_ID,
    eos_id: int = EOS_ID,
    pad_id: int = PAD_ID,
) -> tuple[Tensor, Tensor]:
    """Id pairs (e.g. from :func:`copy_task`) as a padded batch for an encoder-decoder.

    Returns:
        ``(src, tgt)``: the sources as they are, the targets as ``<bos> y <eos>``, both
        padded with ``pad_id`` (give ``tgt`` to :func:`tfbook.objectives.teacher_forcing`).

    Shape:
        - src: ``(B, S)``; tgt: ``(B, T)`` with ``T`` = longest target + 2

    Example:
        >>> collate_pairs([([5, 6], [6, 5]), ([7], [7])])
        (tensor([[5, 6],
                [7, 0]]), tensor([[2, 6, 5, 3],
                [2, 7, 3, 0]]))
    """
    pairs = list(pairs)
    if not pairs:
        raise ValueError("pairs must hold at least one (source, target) pair, got none")
    src = pad_batch([s for s, _ in pairs], pad_id)  # (B, S)
    tgt = pad_batch([[bos_id, *t, eos_id] for _, t in pairs], pad_id)  # (B, T)
    return src, tgt


class Seq2SeqData:
    """Text pairs for a sequence-to-sequence model, with character tokenizers (chapter 7).

    Each source is encoded as it is; each target as ``<bos> ... <eos>``. By default two
    :class:`tfbook.tokenizers.CharTokenizer` are trained on the pairs (one per side); with
    ``shared=True`` one tokenizer covers both sides (as the paper's shared BPE vocabulary,
    and then the model may tie its embeddings, ``tie_weights=True``). For held-out pairs,
    reuse the training tokenizers: ``Seq2SeqData(test, data.source_tokenizer,
    data.target_tokenizer)``.

    Args:
        pairs: ``(source text, target text)`` pairs.
        source_tokenizer, target_tokenizer: tokenizers to use instead of training new ones.
        shared: one tokenizer for both sides (``source_tokenizer`` if given, else trained on
            all texts).

    Attributes:
        sources: the encoded sources (lists of ids); targets: the encoded targets.
        vocab_size: the larger of the two vocabularies, the ``V`` of a model reading one and
            writing the other (with two tokenizers the ids mean different characters on the
            two sides: use ``tie_weights=False``).

    Example:
        >>> data = Seq2SeqData([("12", "십이"), ("3", "삼")], shared=True)
        >>> src, tgt = next(data.batches(batch_size=2, seed=0, shuffle=False))
        >>> src.shape, tgt.shape, data.decode_target(tgt)
        (torch.Size([2, 2]), torch.Size([2, 4]), ['십이', '삼'])
    """

    def __init__(
        self,
        pairs: Sequence[tuple[str, str]],
        source_tokenizer: Tokenizer | None = None,
        target_tokenizer: Tokenizer | None = None,
        shared: bool = False,
    ) -> None:
        pairs = _check_text_pairs(pairs)
        check.boolean("shared", shared)
        srcs, tgts = [s for s, _ in pairs], [t for _, t in pairs]
        if shared:
            tok = source_tokenizer or target_tokenizer or CharTokenizer.train(srcs + tgts)
            source_tokenizer = target_tokenizer = tok
        self.source_tokenizer = source_tokenizer or CharTokenizer.train(srcs)
        self.target_tokenizer = target_tokenizer or CharTokenizer.train(tgts)
        self.pairs = pairs
        self.sources = [self.source_tokenizer.encode(s) for s in srcs]
        self.targets = [self.target_tokenizer.encode(t, add_special_tokens=True) for t in tgts]

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def vocab_size(self) -> int:
        return max(self.source_tokenizer.vocab_size, self.target_tokenizer.vocab_size)

    pad_id = property(lambda self: self.target_tokenizer.pad_id, doc="``<pad>`` (0).")
    bos_id = property(lambda self: self.target_tokenizer.bos_id, doc="``<bos>`` (2).")
    eos_id = property(lambda self: self.target_tokenizer.eos_id, doc="``<eos>`` (3).")

    @property
    def max_source_len(self) -> int:
        """Longest encoded source ``S``."""
        return max(len(s) for s in self.sources)

    @property
    def max_target_len(self) -> int:
        """Longest encoded target ``T``, ``<bos>`` and ``<eos>`` included."""
        return max(len(t) for t in self.targets)

    def batch(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        """The pairs at ``indices`` as ``(src (B, S), tgt (B, T))``, padded with ``<pad>``."""
        src = pad_batch([self.sources[i] for i in indices], self.pad_id)  # (B, S)
        tgt = pad_batch([self.targets[i] for i in indices], self.pad_id)  # (B, T)
        return src, tgt

    def batches(
        self, batch_size: int, seed: int = 0, shuffle: bool = True, drop_last: bool = False
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """One pass over the data in batches: ``(src (B, S), tgt (B, T))``.

        ``S`` and ``T`` are the longest source and target of each batch. The order is a
        permutation drawn from ``seed`` (same seed, same batches), or the stored order when
        ``shuffle=False``; the last batch is smaller unless ``drop_last``.
        """
        check.positive_int("batch_size", batch_size)
        check.nonneg_int("seed", seed)
        order = list(range(len(self)))
        if shuffle:
            random.Random(seed).shuffle(order)
        stop = len(order) - len(order) % batch_size if drop_last else len(order)
        for i in range(0, stop, batch_size):
            yield self.batch(order[i : i + batch_size])

    def batch_fn(self, batch_size: int, seed: int = 0) -> Callable[[int], tuple[Tensor, Tensor]]:
        """A ``step -> (src, tgt)`` function for :func:`tfbook.training.train`.

        Step ``s`` draws ``batch_size`` distinct pairs at random with the seed ``(seed, s)``,
        so a run is reproducible and does not depend on earlier steps.
        """
        check.int_in("batch_size", batch_size, 1, len(self))
        check.nonneg_int("seed", seed)

        def batch_at(step: int) -> tuple[Tensor, Tensor]:
            rng = random.Random(seed * 1_000_003 + step)
            return self.batch(rng.sample(range(len(self)), batch_size))

        return batch_at

    def encode_source(self, texts: Sequence[str]) -> Tensor:
        """Source texts as a padded batch of ids ``(B, S)`` (unknown characters: ``<unk>``)."""
        if isinstance(texts, str):
            raise TypeError("texts must be a list of str, got one str: wrap it in a list")
        return pad_batch([self.source_tokenizer.encode(t) for t in texts], self.pad_id)

    def decode_target(self, ids: Tensor | Sequence[Sequence[int]]) -> list[str] | str:
        """Target ids back to text: stop at the first ``<eos>``, drop ``<bos>`` and padding.

        Args:
            ids: ``(B, T)`` (a tensor or lists of ids) -> a list of ``B`` strings; a single
                sequence ``(T,)`` -> one string.
        """
        rows = ids.tolist() if isinstance(ids, Tensor) else [list(r) for r in ids]
        single = bool(rows) and not isinstance(rows[0], list)
        texts = [self._decode_one(r) for r in ([rows] if single else rows)]
        return texts[0] if single else texts

    def _decode_one(self, row: list[int]) -> str:
        if self.eos_id in row:
            row = row[: row.index(self.eos_id)]
        return self.target_tokenizer.decode(row, skip_special_tokens=True)

    def __repr__(self) -> str:
        return (
            f"Seq2SeqData({len(self)} pairs, source V={self.source_tokenizer.vocab_size}, "
            f"target V={self.target_tokenizer.vocab_size})"
        )


def _check_text_pairs(pairs: object) -> list[tuple[str, str]]:
    out = []
    for i, p in enumerate(pairs):
        ok = isinstance(p, (tuple, list)) and len(p) == 2 and all(isinstance(t, str) for t in p)
        if not ok:
            raise TypeError(f"pairs[{i}] must be a (source str, target str) pair, got {p!r}")
        out.append((p[0], p[1]))
    if not out:
        raise ValueError("pairs must hold at least one (source, target) pair, got none")
    return out


# ------------------------------------------------------------------------ language model


def lm_batches(
    ids: Tensor, context: int, batch_size: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """One batch of random windows of a long token sequence, for next-token prediction.

    ``B`` start positions ``s`` are drawn uniformly; the inputs are ``ids[s : s + T]`` and
    the targets ``ids[s + 1 : s + T + 1]``, the same window shifted by one token, so the
    target at every position is the token that follows it (nanoGPT's ``get_batch``). Call it
    once per training step: ``batch_fn = lambda step: lm_batches(ids, 64, 16, g)``.

    Args:
        ids: the whole corpus as one sequence of token ids.
        context: ``T``, the window length (``T < N``).
        batch_size: ``B``.
        generator: a ``torch.Generator`` for reproducible windows (default: the global one).

    Returns:
        ``(inputs, targets)``, two ``torch.long`` tensors.

    Shape:
        - ids: ``(N,)``
        - inputs, targets: ``(B, T)``

    Example:
        >>> x, y = lm_batches(torch.arange(100), context=4, batch_size=2,
        ...                   generator=torch.Generator().manual_seed(0))
        >>> x.tolist(), y.tolist()
        ([[44, 45, 46, 47], [15, 16, 17, 18]], [[45, 46, 47, 48], [16, 17, 18, 19]])
    """
    check.tensor("ids", ids)
    if ids.dim() != 1 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ValueError(
            f"ids must be a 1-D tensor of token ids (N,), got shape {tuple(ids.shape)} "
            f"dtype {ids.dtype}"
        )
    check.positive_int("context", context)
    check.positive_int("batch_size", batch_size)
    if context >= ids.shape[0]:
        raise ValueError(
            f"context must be shorter than ids (T < N={ids.shape[0]}: a window and its next "
            f"token), got {context}"
        )
    starts = torch.randint(ids.shape[0] - context, (batch_size,), generator=generator)  # (B,)
    windows = ids.unfold(0, context + 1, 1)[starts]  # (B, T + 1): a window and one more
    return windows[:, :-1].long(), windows[:, 1:].long()  # (B, T), (B, T)
