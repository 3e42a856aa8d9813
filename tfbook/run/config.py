"""What one GPT run is: its configuration, its result, the names of its files (chapter 8).

Part of :mod:`tfbook.run`, which re-exports the public names; import them from there.

Public API:

- :class:`GPTRunConfig`, :class:`RunResult`, :class:`CheckpointError`.
- :data:`FORMAT_VERSION`, :data:`CHECKPOINT`, :data:`PREVIOUS_CHECKPOINT`, :data:`MODEL_WEIGHTS`,
  :data:`BOOK_RUNS`, :data:`RESUME_MAY_CHANGE`.
- For the other parts of :mod:`tfbook.run`: :data:`KIND`, :data:`RUN_FILES`,
  :func:`config_differences`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfbook import _validate as check
from tfbook.model import GPT, TransformerConfig
from tfbook.tokenizers import SPECIAL_TOKENS, Tokenizer

__all__ = [
    "GPTRunConfig",
    "RunResult",
    "CheckpointError",
    "FORMAT_VERSION",
    "CHECKPOINT",
    "PREVIOUS_CHECKPOINT",
    "MODEL_WEIGHTS",
    "BOOK_RUNS",
    "RESUME_MAY_CHANGE",
    "TOKENIZERS",
    "KIND",
    "RUN_FILES",
    "config_differences",
]

# The public names below are documented where tfbook.run re-exports them (its __init__.py).
FORMAT_VERSION = 1
CHECKPOINT = "checkpoint.pt"
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"
BOOK_RUNS: tuple[str, ...] = ("gpt-char", "gpt-bpe", "numbers", "ladder", "finetune")
MODEL_WEIGHTS = "model.pt"
#: What a checkpoint of tfbook.run says it is (its ``"kind"``).
KIND = "tfbook.run.gpt"
#: The files of a run folder (what ``overwrite=True`` replaces).
RUN_FILES = (
    "config.json",
    "log.jsonl",
    "tokenizer.json",
    CHECKPOINT,
    PREVIOUS_CHECKPOINT,
    "model.pt",
)
_EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}  # 128 + the signal number, as a shell reports
TOKENIZERS: tuple[str, ...] = ("char", "bpe")
RESUME_MAY_CHANGE: tuple[str, ...] = (
    "eval_every",
    "checkpoint_every",
    "sample_every",
    "sample_tokens",
    "sample_temperature",
    "sample_prompt",
)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, damaged, of another format or of another configuration.

    Attributes:
        reason: ``"missing"``, ``"corrupt"``, ``"format"`` or ``"config"``.
        path: the checkpoint file.
    """

    def __init__(self, message: str, reason: str, path: Path) -> None:
        super().__init__(message)
        self.reason = reason
        self.path = path


# ------------------------------------------------------------------------------------ config


@dataclass
class GPTRunConfig:
    """Every knob of one GPT training run; the defaults are nanoGPT's CPU Shakespeare run.

    The model is a pre-LN GPT with learned positions, GELU, tied input and output embeddings
    and no embedding scaling (:meth:`model_config`). The optimiser is AdamW with weight decay
    on the matrices only (:func:`tfbook.training.make_optimizer`); the learning rate warms up
    linearly to ``lr`` in ``warmup`` steps and then follows half a cosine down to ``min_lr`` at
    ``steps`` (:func:`tfbook.training.warmup_cosine`).

    Args:
        tokenizer: ``"char"`` (one token per character) or ``"bpe"`` (byte-pair encoding).
        bpe_vocab: the BPE vocabulary size ``V``, special tokens included (the number of
            merges is ``V - 5 - len(alphabet)``).
        bpe_train_chars: learn the BPE merges from only the first this many characters of the
            training text (``None``: all of it).
        n_layers, n_heads, d_model, d_ff: the model's sizes.
        context: ``T``, the window length in tokens (also the model's ``max_len``).
        dropout: one dropout rate for the whole model.
        batch_size: ``B``, the *global* batch: windows per step over all processes together
            (must be divisible by the number of processes).
        steps: number of updates.
        lr, min_lr: the peak and the final learning rate.
        warmup: steps of linear warm-up (``<= steps``).
        weight_decay: AdamW's decoupled weight decay (matrices only).
        beta1, beta2: AdamW's moment coefficients (nanoGPT's Shakespeare run: 0.9, 0.99).
        clip: the largest global gradient norm (``None``: no clipping).
        eval_every: evaluate every this many steps and after the last one.
        eval_batches: the validation set is ``eval_batches * batch_size`` fixed windows of the
            validation plays, the same at every evaluation.
        checkpoint_every: write a checkpoint every this many steps (and at the end, and when
            interrupted).
        seed: decides the initial weights, the batches and dropout.
        sample_tokens: tokens sampled after training (0: none), written to ``samples.txt``.
        sample_every: also sample ``sample_tokens`` tokens before the first step and every this
            many steps, into the log (0: never). Each of these samples draws from a generator
            of its own seeded with ``seed``, so the training's random numbers, and therefore
            its losses, are the same with or without them; their time is left out of the
            log's ``seconds``.
        sample_temperature: the sampling temperature (0: greedy).
        sample_prompt: the text the sample continues.

    Raises:
        TypeError, ValueError: naming the field, the expected and the given value.

    Example:
        >>> cfg = GPTRunConfig(steps=10, warmup=2)
        >>> GPTRunConfig.from_dict(cfg.to_dict()) == cfg
        True
        >>> cfg.model_config(vocab_size=89).max_len
        64
    """

    tokenizer: str = "char"
    bpe_vocab: int = 512
    bpe_train_chars: int | None = None
    n_layers: int = 4
    n_heads: int = 4
    d_model: int = 128
    d_ff: int = 512
    context: int = 64
    dropout: float = 0.0
    batch_size: int = 12
    steps: int = 2000
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    clip: float | None = 1.0
    eval_every: int = 250
    eval_batches: int = 20
    checkpoint_every: int = 250
    seed: int = 1337
    sample_tokens: int = 500
    sample_every: int = 0
    sample_temperature: float = 0.8
    sample_prompt: str = "\n"

    def __post_init__(self) -> None:
        check.one_of("tokenizer", self.tokenizer, TOKENIZERS)
        check.int_in("bpe_vocab", self.bpe_vocab, len(SPECIAL_TOKENS) + 1, 2**31 - 1)
        if self.bpe_train_chars is not None:
            check.positive_int("bpe_train_chars", self.bpe_train_chars)
        for name in ("n_layers", "n_heads", "d_model", "d_ff", "context", "batch_size", "steps"):
            check.positive_int(name, getattr(self, name))
        check.divisible("d_model", self.d_model, "n_heads", self.n_heads)
        check.probability("dropout", self.dropout)
        check.positive_float("lr", self.lr)
        check.number_in("min_lr", self.min_lr, 0.0, self.lr)
        check.nonneg_int("warmup", self.warmup)
        if self.warmup > self.steps:
            raise ValueError(f"warmup must be at most steps={self.steps}, got {self.warmup}")
        check.number_in("weight_decay", self.weight_decay, 0.0, math.inf, high_open=True)
        check.number_in("beta1", self.beta1, 0.0, 1.0, high_open=True)
        check.number_in("beta2", self.beta2, 0.0, 1.0, high_open=True)
        if self.clip is not None:
            check.positive_float("clip", self.clip)
        for name in ("eval_every", "eval_batches", "checkpoint_every"):
            check.positive_int(name, getattr(self, name))
        check.nonneg_int("seed", self.seed)
        check.nonneg_int("sample_tokens", self.sample_tokens)
        check.nonneg_int("sample_every", self.sample_every)
        check.number_in("sample_temperature", self.sample_temperature, 0.0, math.inf)
        if not isinstance(self.sample_prompt, str) or not self.sample_prompt:
            raise ValueError(f"sample_prompt must be a non-empty str, got {self.sample_prompt!r}")

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (numbers, strings, ``None``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GPTRunConfig:
        """The config a :meth:`to_dict` (or ``config.json``) describes; missing fields take
        their defaults.

        Raises:
            TypeError: ``data`` is not a dict.
            ValueError: an unknown field (naming it and the known ones) or a bad value.
        """
        if not isinstance(data, dict):
            raise TypeError(f"data must be a dict of config fields, got {type(data).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown GPTRunConfig fields {unknown}; the fields are {known}")
        return cls(**data)

    def model_config(self, vocab_size: int) -> TransformerConfig:
        """The :class:`tfbook.model.TransformerConfig` of the run's GPT for ``vocab_size``."""
        return TransformerConfig(
            vocab_size=vocab_size,
            d_model=self.d_model,
            n_heads=self.n_heads,
            d_ff=self.d_ff,
            n_layers=self.n_layers,
            max_len=self.context,
            dropout=self.dropout,
            activation="gelu",
            norm_first=True,
            positional="learned",
            tie_weights=True,
            scale_embeddings=False,
        )


def config_differences(saved: dict[str, Any], cfg: GPTRunConfig) -> list[str]:
    """``"d_model=128 vs 256"``-style descriptions of the fields that may not change."""
    wanted = cfg.to_dict()
    out = []
    for name, value in wanted.items():
        if name in RESUME_MAY_CHANGE:
            continue
        if name not in saved:
            out.append(f"checkpoint has no {name}, this run asks for {name}={value!r}")
        elif saved[name] != value:
            out.append(f"checkpoint has {name}={saved[name]!r}, this run asks for {name}={value!r}")
    return out


# -------------------------------------------------------------------------------- result


@dataclass
class RunResult:
    """What :func:`run_gpt` returns (on every process of a distributed run).

    Attributes:
        model: the trained :class:`tfbook.model.GPT` (not wrapped), in eval mode.
        tokenizer: the run's tokenizer.
        config: the run's :class:`GPTRunConfig`.
        log: the rows of ``log.jsonl`` (also on ranks other than 0, which write no file).
        step: the last step done.
        final_val_loss: the validation loss after the last step (``None`` if stopped early).
        seconds: wall-clock seconds of training (as in the log).
        samples: the sampled text (``""`` if none, or on ranks other than 0).
        stopped: ``None`` when finished; ``"SIGINT"``, ``"SIGTERM"`` or ``"stop_after"``.
        out_dir: the run folder.
    """

    model: GPT
    tokenizer: Tokenizer
    config: GPTRunConfig
    log: list[dict[str, Any]]
    step: int
    final_val_loss: float | None
    seconds: float
    samples: str = ""
    stopped: str | None = None
    out_dir: Path | None = None

    @property
    def losses(self) -> list[float]:
        """The training loss of every step, in order."""
        return [row["loss"] for row in self.log if "loss" in row]

    @property
    def val_losses(self) -> list[tuple[int, float]]:
        """``(step, validation loss)`` of every evaluation."""
        return [(row["step"], row["val_loss"]) for row in self.log if "val_loss" in row]

    @property
    def exit_code(self) -> int:
        """The exit status for a command, 0, or 130 / 143 after SIGINT / SIGTERM."""
        return _EXIT_CODES.get(self.stopped or "", 0)

    def __repr__(self) -> str:
        val = "" if self.final_val_loss is None else f", val loss {self.final_val_loss:.4f}"
        how = "" if self.stopped is None else f", stopped by {self.stopped}"
        return f"RunResult(step {self.step}/{self.config.steps}{val}, {self.seconds:.1f} s{how})"
