"""Reading numbers in Korean: a sequence-to-sequence model trained to 99.5% (chapter 8).

Chapter 7 trained a one-layer :class:`tfbook.model.EncoderDecoder` to read numbers up to
99,999 aloud in Korean (``12345`` -> ``만 이천삼백사십오``) and reached about 98% exact
match. The capstone asks for the whole range :func:`tfbook.data.korean_number` covers,
``0 .. 99,999,999``, at least 99.5% of held-out numbers read exactly right by greedy
decoding, and a training run of under two minutes on a laptop CPU. Nothing new is needed
beyond chapters 2-7; what changes is the recipe:

- **the source shows the place values**: by default every number is written with eight
  digits (``"00012345"``), so the position of a digit *is* its place value and the
  encoder's learned positions do the rest (``source="plain"`` and ``"grouped"``, i.e.
  ``"1,2345"``, are there to compare);
- **the training numbers cover every length and the hard patterns**: a third are drawn
  uniformly from the whole range (most have eight digits), a third have a length drawn
  uniformly from 1 to 8, and a third also have half their digits set to 0, because zeros
  are what make the reading hard (a zero is not read and takes its unit with it:
  ``10020003`` is ``천이만 삼``);
- **the test set is held out and holds the hard cases**: :data:`HARD_CASES` (1, 10, 100,
  ..., 10,000,000, 99,999,999, 10,001, 11,000, 20,000,000, ...) and ``n_test - len(
  HARD_CASES)`` numbers drawn in three equal strata (uniform over the range; a length from
  3 to 8 drawn uniformly; the same with half the digits 0). No test number is ever a
  training number. (The numbers 0 and 2 .. 9 are left to training: ``영`` is the reading of
  0 alone, which no other number can teach.)
- a small model, two encoder and two decoder layers of width 64, pre-LN, trained for 600
  steps of 128 pairs with AdamW, a warm-up and a cosine decay (:func:`tfbook.training.train`).

Public API:

- :class:`NumbersConfig`: every knob of a run, validated; ``to_dict`` / ``from_dict``.
- :func:`run_numbers` ``(cfg, out_dir=None, *, progress=True)`` returns a
  :class:`NumbersResult` (the model, the data, the test pairs, the history, the exact-match
  accuracy with its 95% interval, the training seconds, some wrong readings). With
  ``out_dir`` it writes ``config.json`` and ``log.jsonl`` (the line format of
  :mod:`tfbook.run`: ``{"step", "loss", "lr", "grad_norm", "seconds"}`` per update,
  ``{"step", "accuracy"}`` per evaluation, then a ``{"done": true, ...}`` line).
- :func:`load_numbers` ``(folder)``: the trained model of a run folder (``model.pt``).
- :func:`exact_match` ``(model, data, pairs, batch_size=500)``: the share of ``pairs`` the
  model reads exactly right with greedy decoding.
- :func:`split_numbers` ``(n_train, n_test, seed)``: the training and test numbers.
- :func:`format_source` ``(n, source)``: a number as the model reads it.
- :func:`numbers_data` ``(cfg)``: the tokenizer-backed training data and the test pairs.
- :func:`numbers_model_config` ``(cfg, vocab_size)``: the model's
  :class:`tfbook.model.TransformerConfig`.
- :func:`wilson_interval` ``(successes, n, z=1.96)``: a 95% confidence interval.
- :data:`HARD_CASES`, :data:`SOURCES`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tfbook import _validate as check
from tfbook.data import MAX_KOREAN_NUMBER, Seq2SeqData, korean_number
from tfbook.generate import greedy_translate
from tfbook.model import EncoderDecoder, TransformerConfig
from tfbook.objectives import lm_loss, teacher_forcing
from tfbook.tokenizers import CharTokenizer
from tfbook.training import History, TrainConfig, train

__all__ = [
    "HARD_CASES",
    "SOURCES",
    "NumbersConfig",
    "NumbersResult",
    "format_source",
    "split_numbers",
    "numbers_data",
    "numbers_model_config",
    "exact_match",
    "load_numbers",
    "wilson_interval",
    "run_numbers",
]

#: How a number is written for the encoder, ``"plain"`` (``"12345"``), ``"grouped"`` (a comma
#: before the last four digits, the 만 group, ``"1,2345"``) or ``"padded"`` (eight digits,
#: ``"00012345"``).
SOURCES: tuple[str, ...] = ("plain", "grouped", "padded")

#: Numbers every test set holds and no training set holds, the single units (the silent 1 of
#: 십, 백, 천, 만), the largest number, 만 groups with zeros around them, and readings whose
#: second group is empty or a single syllable.
HARD_CASES: tuple[int, ...] = (
    1, 10, 11, 19, 20, 99,
    100, 101, 110, 111, 1000, 1001, 1010, 1100, 1111, 2005, 9999,
    10000, 10001, 10010, 10100, 11000, 11111, 20000, 99999,
    100000, 100001, 110000, 1000000, 1000001, 1010101, 10000000, 10000001, 10010001,
    10020003, 11000000, 11111111, 12340000, 20000000, 20000002, 99990000, 99999999,
)  # fmt: skip

_DIGITS = 8  # 99,999,999 has eight digits
_ALPHABET = ("0123456789,", "영일이삼사오육칠팔구십백천만 ")  # every character either side uses
_MAX_READING = len(korean_number(MAX_KOREAN_NUMBER))  # 16 characters: 구천구백구십구만 구천...


# -------------------------------------------------------------------------------- config


@dataclass
class NumbersConfig:
    """Every knob of :func:`run_numbers`; the defaults are the recipe that reaches 99.5%.

    Args:
        d_model: width of the model.
        n_heads: attention heads ``h``.
        d_ff: hidden width of the feed-forward networks.
        n_layers: encoder layers, and decoder layers.
        norm_first: pre-LN (``True``) or post-LN.
        dropout: one dropout rate (0: with 50,000 fresh examples there is little to overfit).
        steps: training updates.
        batch_size: pairs per update.
        lr: peak learning rate (AdamW).
        warmup: steps of linear warm-up before the cosine decay.
        weight_decay: AdamW's weight decay on the matrices.
        label_smoothing: :math:`\\varepsilon` of the loss (:func:`tfbook.objectives.lm_loss`).
        clip: the largest global gradient norm.
        seed: seeds the numbers, the initial weights and the batches.
        n_train: training examples drawn (a number may come up more than once, as short
            numbers do: there are only nine with one digit).
        n_test: held-out numbers, :data:`HARD_CASES` included.
        source: how the digits are written, one of :data:`SOURCES`.
        eval_every: evaluate on the test set every this many steps (0: only at the end).

    Raises:
        TypeError, ValueError: naming the field, the expected and the given value.

    Example:
        >>> NumbersConfig(steps=300, lr=3e-3).to_dict()["steps"]
        300
    """

    d_model: int = 64
    n_heads: int = 4
    d_ff: int = 256
    n_layers: int = 2
    norm_first: bool = True
    dropout: float = 0.0
    steps: int = 600
    batch_size: int = 128
    lr: float = 2e-3
    warmup: int = 60
    weight_decay: float = 0.01
    label_smoothing: float = 0.0
    clip: float = 1.0
    seed: int = 0
    n_train: int = 50_000
    n_test: int = 2_000
    source: str = "padded"
    eval_every: int = 0

    def __post_init__(self) -> None:
        check.positive_int("d_model", self.d_model)
        check.positive_int("n_heads", self.n_heads)
        check.divisible("d_model", self.d_model, "n_heads", self.n_heads)
        check.positive_int("d_ff", self.d_ff)
        check.positive_int("n_layers", self.n_layers)
        check.boolean("norm_first", self.norm_first)
        check.probability("dropout", self.dropout)
        check.positive_int("steps", self.steps)
        check.int_in("n_train", self.n_train, 1_000, 10_000_000)
        check.int_in("batch_size", self.batch_size, 1, self.n_train)
        check.positive_float("lr", self.lr)
        check.int_in("warmup", self.warmup, 0, self.steps)
        check.number_in("weight_decay", self.weight_decay, 0.0, math.inf, high_open=True)
        check.number_in("label_smoothing", self.label_smoothing, 0.0, 1.0, high_open=True)
        check.positive_float("clip", self.clip)
        check.nonneg_int("seed", self.seed)
        check.int_in("n_test", self.n_test, len(HARD_CASES), 1_000_000)
        check.one_of("source", self.source, SOURCES)
        check.nonneg_int("eval_every", self.eval_every)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (``config.json``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> NumbersConfig:
        """A config from :meth:`to_dict`'s output; an unknown key is an error, not ignored."""
        if not isinstance(values, dict):
            raise TypeError(f"values must be a dict, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"values has unknown NumbersConfig fields {unknown}")
        return cls(**values)


@dataclass
class NumbersResult:
    """What :func:`run_numbers` returns.

    Attributes:
        config: the :class:`NumbersConfig` of the run.
        model: the trained :class:`tfbook.model.EncoderDecoder` (in eval mode).
        data: the training :class:`tfbook.data.Seq2SeqData` (its tokenizers read and write).
        test_numbers: the held-out numbers; ``test_pairs``: ``(source text, reading)``.
        history: the :class:`tfbook.training.History` (``evals`` holds the accuracies).
        accuracy: greedy exact match on the test pairs; ``interval``: its 95% Wilson interval.
        seconds: wall-clock seconds of training (evaluations not included).
        eval_seconds: wall-clock seconds of the evaluations.
        wrong: up to 20 mistakes as ``(number, model's reading, correct reading)``.
    """

    config: NumbersConfig
    model: EncoderDecoder
    data: Seq2SeqData
    test_numbers: list[int]
    test_pairs: list[tuple[str, str]]
    history: History
    accuracy: float
    interval: tuple[float, float]
    seconds: float
    eval_seconds: float
    wrong: list[tuple[int, str, str]] = field(default_factory=list)

    def __repr__(self) -> str:
        lo, hi = self.interval
        return (
            f"NumbersResult(exact match {self.accuracy:.4f} on {len(self.test_pairs)} held-out "
            f"numbers, 95% interval [{lo:.4f}, {hi:.4f}], {self.config.steps} steps in "
            f"{self.seconds:.1f} s, {len(self.wrong)} wrong shown)"
        )


# ---------------------------------------------------------------------------------- data


def format_source(n: int, source: str = "padded") -> str:
    """The number ``n`` written as the encoder reads it (see :data:`SOURCES`).

    Example:
        >>> [format_source(12345, s) for s in SOURCES]
        ['12345', '1,2345', '00012345']
    """
    check.int_in("n", n, 0, MAX_KOREAN_NUMBER)
    check.one_of("source", source, SOURCES)
    digits = str(n)
    if source == "padded":
        return digits.zfill(_DIGITS)
    if source == "grouped" and len(digits) > 4:
        return f"{digits[:-4]},{digits[-4:]}"  # the 만 group, then the last four digits
    return digits


def _with_length(rng: random.Random, length: int, zero_rich: bool) -> int:
    """A number of exactly ``length`` digits; with ``zero_rich`` each later digit is 0 half
    the time (the first digit is never 0)."""
    if not zero_rich:
        return rng.randrange(10 ** (length - 1), 10**length) if length > 1 else rng.randrange(10)
    digits = [rng.randint(1, 9)]
    digits += [0 if rng.random() < 0.5 else rng.randint(1, 9) for _ in range(length - 1)]
    return int("".join(map(str, digits)))


def _draw(rng: random.Random, shortest: int) -> int:
    """One number from the three strata: uniform; uniform length; uniform length, zero-rich."""
    stratum = rng.randrange(3)
    if stratum == 0:
        return rng.randint(0, MAX_KOREAN_NUMBER)
    return _with_length(rng, rng.randint(shortest, _DIGITS), zero_rich=stratum == 2)


def split_numbers(n_train: int, n_test: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """The training examples and the held-out test numbers; no test number is trained on.

    The test set is :data:`HARD_CASES` plus distinct numbers drawn from three equal strata
    (uniform over ``0 .. 99,999,999``; a length from 3 to 8 digits drawn uniformly, then a
    number of that length; the same with each digit after the first 0 half the time).
    The training examples come from the same strata with lengths from 1 digit, minus every
    test number; they repeat (there are only ten one-digit numbers).

    Args:
        n_train: training examples (>= 1).
        n_test: test numbers, at least ``len(HARD_CASES)``.
        seed: the random seed (same seed, same split).

    Returns:
        ``(train, test)``: two lists of ints; ``test`` is sorted.

    Example:
        >>> train, test = split_numbers(1000, 100, seed=0)
        >>> len(train), len(test), set(train) & set(test), 10_000 in test
        (1000, 100, set(), True)
    """
    check.positive_int("n_train", n_train)
    check.int_in("n_test", n_test, len(HARD_CASES), 1_000_000)
    check.nonneg_int("seed", seed)
    rng = random.Random(f"tfbook.numbers test {seed}")
    test = set(HARD_CASES)
    while len(test) < n_test:
        test.add(_draw(rng, shortest=3))
    rng = random.Random(f"tfbook.numbers train {seed}")
    train_numbers = []
    while len(train_numbers) < n_train:
        n = _draw(rng, shortest=1)
        if n not in test:
            train_numbers.append(n)
    return train_numbers, sorted(test)


def _tokenizer() -> CharTokenizer:
    """One character vocabulary for both sides (so the model ties its embeddings)."""
    return CharTokenizer.train(list(_ALPHABET))


def numbers_data(cfg: NumbersConfig) -> tuple[Seq2SeqData, list[int], list[tuple[str, str]]]:
    """The training data, the test numbers and the test pairs of a run.

    Returns:
        ``(data, test_numbers, test_pairs)``: a :class:`tfbook.data.Seq2SeqData` of the
        training pairs (one shared character tokenizer), the held-out numbers and their
        ``(source text, reading)`` pairs.
    """
    if not isinstance(cfg, NumbersConfig):
        raise TypeError(f"cfg must be a NumbersConfig, got {type(cfg).__name__}")
    train_numbers, test_numbers = split_numbers(cfg.n_train, cfg.n_test, cfg.seed)
    tok = _tokenizer()
    readings: dict[int, str] = {}
    for n in (*train_numbers, *test_numbers):
        if n not in readings:
            readings[n] = korean_number(n)
    data = Seq2SeqData(
        [(format_source(n, cfg.source), readings[n]) for n in train_numbers], tok, tok
    )
    test_pairs = [(format_source(n, cfg.source), readings[n]) for n in test_numbers]
    return data, test_numbers, test_pairs


def numbers_model_config(cfg: NumbersConfig, vocab_size: int) -> TransformerConfig:
    """The :class:`tfbook.model.TransformerConfig` of the run's model (learned positions,
    tied embeddings, no scaling of the embeddings)."""
    return TransformerConfig(
        vocab_size=vocab_size,
        d_model=cfg.d_model,
        n_heads=cfg.n_heads,
        d_ff=cfg.d_ff,
        n_layers=cfg.n_layers,
        max_len=_MAX_READING + 4,  # <bos> + reading + <eos>, and the longest source (9)
        dropout=cfg.dropout,
        norm_first=cfg.norm_first,
        positional="learned",
        tie_weights=True,
        scale_embeddings=False,
    )


# ------------------------------------------------------------------------------ evaluation


def _readings(
    model: EncoderDecoder, data: Seq2SeqData, sources: Sequence[str], batch_size: int
) -> list[str]:
    """Greedy readings of ``sources``, ``batch_size`` at a time."""
    out: list[str] = []
    for i in range(0, len(sources), batch_size):
        src = data.encode_source(list(sources[i : i + batch_size]))  # (B, S)
        ids = greedy_translate(model, src, data.bos_id, data.eos_id, max_len=_MAX_READING + 1)
        out += data.decode_target(ids)
    return out


def exact_match(
    model: EncoderDecoder,
    data: Seq2SeqData,
    pairs: Sequence[tuple[str, str]],
    batch_size: int = 500,
) -> float:
    """The share of ``pairs`` whose reading greedy decoding gets exactly right.

    Args:
        model: an :class:`tfbook.model.EncoderDecoder` (put in eval mode while reading).
        data: a :class:`tfbook.data.Seq2SeqData` whose tokenizers the model was trained with.
        pairs: ``(source text, correct reading)`` pairs, e.g. ``result.test_pairs``.
        batch_size: sources decoded together.

    Returns:
        A float in ``[0, 1]``: right readings / ``len(pairs)``. A reading is right only if
        every character is (spaces included) and it stops where the correct one does.

    Raises:
        TypeError, ValueError: a wrong model, data or pair, naming the argument.
    """
    if not isinstance(model, EncoderDecoder):
        raise TypeError(f"model must be a tfbook.model.EncoderDecoder, got {type(model).__name__}")
    if not isinstance(data, Seq2SeqData):
        raise TypeError(f"data must be a tfbook.data.Seq2SeqData, got {type(data).__name__}")
    pairs = _check_pairs(pairs)
    check.positive_int("batch_size", batch_size)
    got = _readings(model, data, [s for s, _ in pairs], batch_size)
    return sum(g == want for g, (_, want) in zip(got, pairs, strict=True)) / len(pairs)


def _check_pairs(pairs: object) -> list[tuple[str, str]]:
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence):
        raise TypeError(
            f"pairs must be a list of (source, reading) pairs, got {type(pairs).__name__}"
        )
    for i, p in enumerate(pairs):
        if not (
            isinstance(p, (tuple, list)) and len(p) == 2 and all(isinstance(t, str) for t in p)
        ):
            raise TypeError(f"pairs[{i}] must be a (source str, reading str) pair, got {p!r}")
    if not pairs:
        raise ValueError("pairs must hold at least one (source, reading) pair, got none")
    return [(s, r) for s, r in pairs]


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% for ``z = 1.96``).

    Unlike the normal approximation it stays inside ``[0, 1]`` and is not empty at 100%:
    2,000 right out of 2,000 gives about ``[0.9981, 1]``.

    Example:
        >>> [round(v, 4) for v in wilson_interval(1990, 2000)]
        [0.9908, 0.9973]
    """
    check.nonneg_int("successes", successes)
    check.positive_int("n", n)
    if successes > n:
        raise ValueError(f"successes must be at most n={n}, got {successes}")
    check.positive_float("z", z)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


# ---------------------------------------------------------------------------------- the run


def _loss(label_smoothing: float, pad_id: int):
    def loss_fn(model: EncoderDecoder, batch: tuple[Tensor, Tensor]) -> Tensor:
        src, tgt = batch  # (B, S), (B, T): <bos> reading <eos>
        decoder_inputs, targets = teacher_forcing(tgt, pad_id=pad_id)  # (B, T - 1) each
        return lm_loss(model(src, decoder_inputs), targets, label_smoothing=label_smoothing)

    return loss_fn


def run_numbers(
    cfg: NumbersConfig | None = None,
    out_dir: str | Path | None = None,
    *,
    progress: bool = True,
) -> NumbersResult:
    """Train an :class:`tfbook.model.EncoderDecoder` to read numbers in Korean; evaluate it.

    Steps: draw the numbers (:func:`split_numbers`), build the model
    (:func:`numbers_model_config`), train it with teacher forcing and
    :func:`tfbook.training.train`, then read every test number with greedy decoding. Same
    config, same numbers, same initial weights and same batches (the losses agree bit for
    bit on one machine with one thread count).

    Args:
        cfg: the :class:`NumbersConfig` (default: ``NumbersConfig()``).
        out_dir: a folder for ``config.json`` and ``log.jsonl`` (created; existing files of
            those names are replaced), or ``None`` to write nothing.
        progress: show a progress bar (``tqdm``).

    Returns:
        A :class:`NumbersResult`.

    Raises:
        TypeError: ``cfg`` is not a :class:`NumbersConfig`.
        ValueError: ``out_dir`` exists and is not a folder.
    """
    cfg = NumbersConfig() if cfg is None else cfg
    if not isinstance(cfg, NumbersConfig):
        raise TypeError(f"cfg must be a NumbersConfig, got {type(cfg).__name__}")
    check.boolean("progress", progress)
    out = _prepare_out_dir(out_dir, cfg)
    data, test_numbers, test_pairs = numbers_data(cfg)
    torch.manual_seed(cfg.seed)  # the initial weights
    model = EncoderDecoder(numbers_model_config(cfg, data.vocab_size))

    starts: list[float] = []  # perf_counter at the start of every step
    eval_seconds: list[float] = []
    batch_at = data.batch_fn(cfg.batch_size, seed=cfg.seed)

    def timed_batch(step: int) -> tuple[Tensor, Tensor]:
        starts.append(time.perf_counter())
        return batch_at(step)

    def evaluate(m: EncoderDecoder) -> float:
        begin = time.perf_counter()
        value = exact_match(m, data, test_pairs)
        eval_seconds.append(time.perf_counter() - begin)
        return value

    train_cfg = TrainConfig(
        steps=cfg.steps,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        warmup=cfg.warmup,
        schedule="cosine",
        clip=cfg.clip,
        eval_every=cfg.eval_every or cfg.steps,  # 0: only after the last step
        seed=cfg.seed,
        progress=progress,
    )
    history = train(
        model, timed_batch, _loss(cfg.label_smoothing, data.pad_id), train_cfg, evaluate
    )
    end = time.perf_counter()
    seconds = _step_seconds(starts, end, history, eval_seconds)

    got = _readings(model, data, [s for s, _ in test_pairs], 500)
    right = [g == want for g, (_, want) in zip(got, test_pairs, strict=True)]
    accuracy = history.evals[-1][1]
    assert accuracy == sum(right) / len(right)  # the same model, read twice: same answer
    rows = zip(test_numbers, got, test_pairs, right, strict=True)
    wrong = [(n, g, want) for n, g, (_, want), ok in rows if not ok][:20]
    result = NumbersResult(
        config=cfg,
        model=model,
        data=data,
        test_numbers=test_numbers,
        test_pairs=test_pairs,
        history=history,
        accuracy=accuracy,
        interval=wilson_interval(sum(right), len(right)),
        seconds=seconds[-1],
        eval_seconds=sum(eval_seconds),
        wrong=wrong,
    )
    if out is not None:
        _write_log(out / "log.jsonl", history, seconds, result)
        torch.save(model.state_dict(), out / "model.pt")  # the weights alone (load_numbers)
    return result


def load_numbers(folder: str | Path) -> tuple[EncoderDecoder, Seq2SeqData, NumbersConfig]:
    """The trained model of a :func:`run_numbers` folder, ready to read numbers.

    Args:
        folder: a folder written by ``run_numbers(cfg, out_dir=folder)`` (``config.json``
            and ``model.pt``).

    Returns:
        ``(model in eval mode, data, cfg)``: ``data`` is the run's training
        :class:`tfbook.data.Seq2SeqData`, whose tokenizer encodes sources
        (``data.encode_source([format_source(n)])``) and decodes readings.

    Raises:
        FileNotFoundError: a file is missing (the message names it).
        ValueError: the files cannot be read or do not fit together.
    """
    folder = Path(folder)
    for name in ("config.json", "model.pt"):
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"{folder / name} is missing: run_numbers(cfg, out_dir) writes it"
            )
    try:
        cfg = NumbersConfig.from_dict(json.loads((folder / "config.json").read_text("utf-8")))
        data = Seq2SeqData([(format_source(1, cfg.source), korean_number(1))], *[_tokenizer()] * 2)
        model = EncoderDecoder(numbers_model_config(cfg, data.vocab_size))
        model.load_state_dict(torch.load(folder / "model.pt", weights_only=True))
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as err:
        raise ValueError(
            f"{folder} does not hold a readable numbers run ({type(err).__name__}: {err})"
        ) from err
    return model.eval(), data, cfg


def _step_seconds(
    starts: list[float], end: float, history: History, eval_seconds: list[float]
) -> list[float]:
    """Training seconds since the first step, at the end of every step (evaluations excluded).

    Step ``s`` lasts from its batch's draw to the next one's (or to the end of training);
    an evaluation that ran after step ``s`` is subtracted from it.
    """
    evals_after = {step: secs for (step, _), secs in zip(history.evals, eval_seconds, strict=True)}
    total, out = 0.0, []
    for i, step in enumerate(history.steps):
        stop = starts[i + 1] if i + 1 < len(starts) else end
        total += stop - starts[i] - evals_after.get(step, 0.0)
        out.append(total)
    return out


def _prepare_out_dir(out_dir: str | Path | None, cfg: NumbersConfig) -> Path | None:
    if out_dir is None:
        return None
    if not isinstance(out_dir, (str, Path)):
        raise TypeError(
            f"out_dir must be a path (str or Path) or None, got {type(out_dir).__name__}"
        )
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir must be a folder, got the file {out}: choose another path")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n", encoding="utf-8")
    return out


def _write_log(path: Path, history: History, seconds: list[float], result: NumbersResult) -> None:
    """``log.jsonl`` in the line format of :mod:`tfbook.run` (floats at full precision)."""
    evals = dict(history.evals)
    lines = []
    for i, step in enumerate(history.steps):
        lines.append(
            {
                "step": step,
                "loss": history.losses[i],
                "lr": history.lrs[i],
                "grad_norm": history.grad_norms[i],
                "seconds": seconds[i],
            }
        )
        if step in evals:
            lines.append({"step": step, "accuracy": evals[step]})
    lo, hi = result.interval
    lines.append(
        {
            "done": True,
            "steps": len(history.steps),
            "seconds": result.seconds,
            "eval_seconds": result.eval_seconds,
            "accuracy": result.accuracy,
            "interval": [lo, hi],
            "n_test": len(result.test_pairs),
            "torch_threads": torch.get_num_threads(),
        }
    )
    text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    path.write_text(text, encoding="utf-8")
