"""One training run of a GPT language model: a log, checkpoints, resume, several processes
(chapter 8).

Chapter 8, "Capstone: training and using a Transformer", trains a small GPT on Shakespeare
(:mod:`tfbook.corpus`) with nothing but the pieces of chapters 2-7: a tokenizer
(:mod:`tfbook.tokenizers`), :class:`tfbook.model.GPT`, random windows of the text
(:func:`tfbook.data.lm_batches`), the loss (:func:`tfbook.objectives.lm_loss`), AdamW with a
warm-up and a cosine decay (:mod:`tfbook.training`) and sampling (:mod:`tfbook.generate`).
This module adds what turns a training loop into a *run* that one can stop, resume, repeat
and spread over several processes:

- Everything the run does is decided by a :class:`GPTRunConfig`, written to ``config.json``.
- The data order is a pure function of ``(seed, step)``: step ``s`` draws its *global* batch
  of ``B`` windows from a generator seeded with ``(seed, s)`` (:func:`global_batch`). A
  resumed run therefore sees exactly the batches an uninterrupted one would have seen, and
  ``W`` processes together see exactly the batch one process sees: process ``r`` takes the
  contiguous slice ``r*B/W .. (r+1)*B/W`` of it. Dropout masks are drawn from the global
  generator re-seeded from ``(seed, step, rank)`` at every step, so a checkpoint needs no
  random-number state: ``seed`` (in the config) and ``step`` determine everything that follows.
- A log with one JSON object per line, losses at full precision (``repr`` of the float).
- Checkpoints written atomically (a temporary file in the same folder, ``fsync``,
  ``os.replace``), the previous one kept, loaded with ``torch.load(weights_only=True)`` (plain
  tensors, numbers, strings, lists and dicts: loading never runs code).
- Ctrl-C (SIGINT) or SIGTERM finish the current step, save a checkpoint and stop; a second
  Ctrl-C stops at once (the last checkpoint is kept).
- Under ``torchrun`` (``WORLD_SIZE > 1``) the same call trains data-parallel with
  ``DistributedDataParallel``: ``gloo`` on CPUs, ``nccl`` on GPUs (one per ``LOCAL_RANK``).
  The gradients are averaged over the processes, the logged loss is the mean over all of them,
  and only rank 0 writes files. A single process never creates a process group.

The files of a run folder ``out_dir``:

- ``config.json``: :meth:`GPTRunConfig.to_dict`.
- ``log.jsonl``: one row per line: ``{"session": {...}}`` when a process (re)starts (start
  step, world size, device, sizes, tokenizer and encoding seconds); ``{"step", "loss", "lr",
  "grad_norm", "seconds"}`` after every update (``loss``: the mean training loss of the step's
  global batch in nats per token, before the update; ``grad_norm``: before clipping;
  ``seconds``: wall-clock seconds since the run's first step, evaluations and checkpoints
  included, carried over a resume); ``{"step", "val_loss", "val_nats_per_char"}`` at every
  evaluation; ``{"interrupted", "signal", "seconds"}`` when stopped by a signal; and at the end
  ``{"done": true, "steps", "seconds", "final_val_loss", "peak_rss_mib", ...}``. On resume the
  log is cut back to the checkpoint's step, so no step appears twice.
- ``tokenizer.json``: :meth:`tfbook.tokenizers.Tokenizer.save`.
- ``checkpoint.pt`` and ``checkpoint.prev.pt`` (the one before), ``samples.txt``, and at the
  end ``model.pt``: the trained weights alone (what the book keeps; :func:`load_model` reads a
  folder that has it and no checkpoint).

Resuming (``resume=True``) loads ``checkpoint.pt``. If that file is missing, truncated or
corrupt and ``checkpoint.prev.pt`` is good, the run prints a warning, renames the damaged file
to ``checkpoint.corrupt.<time>.pt`` (nothing is deleted) and resumes from the previous one. A
checkpoint of another configuration or format is refused (:class:`CheckpointError`), and no
file is touched. ``resume=True`` in a folder with no checkpoint starts at step 0 if the folder
holds no run files either (or with ``overwrite=True``: "resume if possible, else start again",
what a scheduler that restarts a job with the same command wants); a folder with a log but no
checkpoint is refused, so its log is not lost.

Public API:

- :class:`GPTRunConfig`: every knob of a run (validated), ``to_dict``/``from_dict``,
  ``model_config(vocab_size)``.
- :func:`run_gpt` ``(cfg, out_dir, *, corpus_dir, resume, overwrite, progress, stop_after,
  device)`` returns a :class:`RunResult`.
- :func:`global_batch` ``(ids, context, batch_size, seed, step)``: the data order.
- :func:`load_checkpoint` ``(path, cfg=None, *, map_location="cpu")``, :func:`load_model`
  ``(path)``, :class:`CheckpointError`, :data:`FORMAT_VERSION`.
- :func:`read_log` ``(path)``, :func:`plot_log` ``(rows, ax, title)``, :func:`book_run`
  ``(name)``: the folder of one of the book's full runs (shipped in ``tfbook/data/capstone``).
- :func:`sample_text` ``(model, tokenizer, prompt, max_new_tokens, ...)``: sampling beyond
  the model's context window (the window slides over the text).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from tfbook import _validate as check
from tfbook._core import wide_float
from tfbook.corpus import CorpusError, corpus_folder, split_by_play
from tfbook.data import lm_batches
from tfbook.generate import sample_next
from tfbook.model import GPT, TransformerConfig, count_parameters, fuse_layer_norms
from tfbook.objectives import lm_loss
from tfbook.tokenizers import SPECIAL_TOKENS, BPETokenizer, CharTokenizer, Tokenizer
from tfbook.training import TrainConfig, _progress, make_optimizer, warmup_cosine

__all__ = [
    "GPTRunConfig",
    "RunResult",
    "run_gpt",
    "global_batch",
    "step_seed",
    "load_checkpoint",
    "load_model",
    "CheckpointError",
    "FORMAT_VERSION",
    "CHECKPOINT",
    "PREVIOUS_CHECKPOINT",
    "MODEL_WEIGHTS",
    "BOOK_RUNS",
    "book_run",
    "read_log",
    "plot_log",
    "sample_text",
    "RESUME_MAY_CHANGE",
]

#: Version of the checkpoint layout; a checkpoint of another version is refused.
FORMAT_VERSION = 1
#: The newest checkpoint of a run folder.
CHECKPOINT = "checkpoint.pt"
#: The checkpoint before it, kept so that a damaged newest one costs only a few steps.
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"
#: The runs of ``make capstone`` that ship with the package (:func:`book_run`).
BOOK_RUNS: tuple[str, ...] = ("gpt-char", "gpt-bpe", "numbers")
#: The weights of a finished run alone, without the optimiser state. :func:`load_model` reads
#: it when a folder has no checkpoint; the book keeps this file, not the checkpoints.
MODEL_WEIGHTS = "model.pt"
_KIND = "tfbook.run.gpt"
_RUN_FILES = (
    "config.json",
    "log.jsonl",
    "tokenizer.json",
    CHECKPOINT,
    PREVIOUS_CHECKPOINT,
    "model.pt",
)
_EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}  # 128 + the signal number, as a shell reports
TOKENIZERS: tuple[str, ...] = ("char", "bpe")
#: Config fields a resumed run may change, since they decide what is logged and when, not
#: the weights.
RESUME_MAY_CHANGE: tuple[str, ...] = (
    "eval_every",
    "checkpoint_every",
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


def _config_differences(saved: dict[str, Any], cfg: GPTRunConfig) -> list[str]:
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


# ---------------------------------------------------------------------------- data order


def step_seed(seed: int, step: int) -> int:
    """The seed of step ``step``'s batch: ``seed * 1_000_003 + step`` (step 0: validation).

    The same rule as :meth:`tfbook.data.Seq2SeqData.batch_fn`.
    """
    return check.nonneg_int("seed", seed) * 1_000_003 + check.nonneg_int("step", step)


def global_batch(
    ids: Tensor, context: int, batch_size: int, seed: int, step: int
) -> tuple[Tensor, Tensor]:
    """Step ``step``'s global batch: ``batch_size`` random windows drawn with
    :func:`step_seed` ``(seed, step)``.

    A pure function of its arguments: no state carries from one step to the next, which is
    what makes resuming and data-parallel training exact.

    Args:
        ids: the training text as token ids.
        context: ``T``.
        batch_size: ``B``, over all processes.
        seed, step: the run's seed and the step (from 1).

    Returns:
        ``(inputs, targets)`` as :func:`tfbook.data.lm_batches`.

    Shape:
        - ids: ``(N,)``; inputs, targets: ``(B, T)``

    Example:
        >>> ids = torch.arange(1000)
        >>> a, _ = global_batch(ids, context=8, batch_size=4, seed=1, step=7)
        >>> b, _ = global_batch(ids, context=8, batch_size=4, seed=1, step=7)
        >>> bool(torch.equal(a, b)), a.shape
        (True, torch.Size([4, 8]))
    """
    generator = torch.Generator().manual_seed(step_seed(seed, step))
    return lm_batches(ids, context, batch_size, generator)


def _rank_slice(x: Tensor, rank: int, world: int) -> Tensor:
    per = x.shape[0] // world
    return x[rank * per : (rank + 1) * per]  # (B / W, T): this process's contiguous share


# ----------------------------------------------------------------------- processes (DDP)


@dataclass
class _Dist:
    """Where this process stands: rank, world size, device, whether it made the group."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False

    @property
    def wide(self) -> torch.dtype:
        """float64 for sums and collectives (float32 on Apple's MPS, which has no float64)."""
        return wide_float(self.device)

    def all_sum(self, x: Tensor) -> Tensor:
        if self.world > 1:
            dist.all_reduce(x, op=dist.ReduceOp.SUM)
        return x

    def all_max(self, x: Tensor) -> Tensor:
        if self.world > 1:
            dist.all_reduce(x, op=dist.ReduceOp.MAX)
        return x

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an int, got {raw!r}") from None


def _setup_processes(device: str | torch.device | None) -> _Dist:
    """One process, or join the group ``torchrun`` describes in the environment."""
    world = _env_int("WORLD_SIZE", 1)
    if device is not None:
        device = torch.device(device)
    if world <= 1:
        if device is None:
            device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return _Dist(device=device)
    if not dist.is_available():
        raise RuntimeError(
            f"WORLD_SIZE={world} asks for several processes, but this PyTorch build has no "
            "torch.distributed"
        )
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    use_cuda = torch.cuda.is_available() and (device is None or device.type == "cuda")
    if use_cuda:  # one GPU per process: the LOCAL_RANK-th of this machine
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend=backend)
    if dist.get_world_size() != world or dist.get_rank() != rank:
        raise RuntimeError(
            f"the process group (rank {dist.get_rank()} of {dist.get_world_size()}) disagrees "
            f"with RANK={rank}, WORLD_SIZE={world}"
        )
    return _Dist(rank, world, local_rank, device, owns)


class _StopSignal:
    """SIGINT and SIGTERM set a flag (the step finishes); a second SIGINT stops at once."""

    def __init__(self) -> None:
        self.name: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignal:
        if threading.current_thread() is threading.main_thread():  # handlers: main thread only
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt("second Ctrl-C: stopped without a new checkpoint")
        self.name = signal.Signals(signum).name

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# --------------------------------------------------------------------------- checkpoints


def _temp_next_to(path: Path) -> Path:
    """A new file's name in ``path``'s folder (created with the usual permissions)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{time.time_ns()}.tmp")


def _write_atomically(path: Path, write: Any) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, fsync, rename onto ``path``."""
    tmp = _temp_next_to(path)
    try:
        with tmp.open("xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows cannot open a folder
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse
        pass
    finally:
        os.close(fd)


def _save_checkpoint(out: Path, state: dict[str, Any]) -> None:
    """Write ``checkpoint.pt`` atomically; the one it replaces becomes ``checkpoint.prev.pt``.

    A hard link keeps a complete ``checkpoint.pt`` on disk at every moment; where hard links
    are not supported the old file is renamed, and a crash right then leaves only
    ``checkpoint.prev.pt`` (which resume falls back to).
    """
    newest, prev = out / CHECKPOINT, out / PREVIOUS_CHECKPOINT
    tmp = _temp_next_to(newest)
    try:
        with tmp.open("xb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        if newest.exists():
            link = out / f".{PREVIOUS_CHECKPOINT}.link"
            try:
                link.unlink(missing_ok=True)
                os.link(newest, link)
                os.replace(link, prev)
            except OSError:
                os.replace(newest, prev)
        os.replace(tmp, newest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(out)


def _prev_note(path: Path) -> str:
    prev = path.with_name(PREVIOUS_CHECKPOINT)
    if path.name == CHECKPOINT and prev.is_file():
        return (
            f"the previous checkpoint {prev} is kept untouched; resuming (--resume) falls back "
            "to it"
        )
    return "no earlier checkpoint is kept next to it; start a new run (without --resume)"


def load_checkpoint(
    path: str | Path, cfg: GPTRunConfig | None = None, *, map_location: Any = "cpu"
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`run_gpt`, refusing anything else.

    Loading uses ``torch.load(weights_only=True)``: a checkpoint holds only tensors, numbers,
    strings, lists and dicts, so loading one cannot execute code.

    Args:
        path: a ``checkpoint.pt`` (or ``checkpoint.prev.pt``).
        cfg: when given, the checkpoint's config must equal it (except the fields in
            :data:`RESUME_MAY_CHANGE`).
        map_location: as ``torch.load`` (e.g. the process's GPU).

    Returns:
        A dict with ``format``, ``kind``, ``step``, ``config`` (a dict), ``model`` and
        ``optimizer`` (state dicts), ``tokenizer`` (the JSON text of the tokenizer),
        ``seconds``, ``world_size``.

    Raises:
        CheckpointError: the file is missing (``reason="missing"``), truncated, corrupt or not
            a run checkpoint (``"corrupt"``), of another format version (``"format"``), or of
            another configuration (``"config"``, listing every differing field, e.g.
            ``checkpoint has d_model=128, this run asks for d_model=256``). The message names
            the file and where the last good checkpoint is; nothing is modified.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}", "missing", path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # any failure to read is the same fact for the user
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise CheckpointError(
            f"{path} is truncated or corrupt (torch.load failed: {type(exc).__name__}: "
            f"{detail}); {_prev_note(path)}",
            "corrupt",
            path,
        ) from exc
    if not isinstance(state, dict) or state.get("kind") != _KIND:
        raise CheckpointError(
            f"{path} is not a checkpoint of tfbook.run (no kind={_KIND!r}); {_prev_note(path)}",
            "corrupt",
            path,
        )
    if state.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {state.get('format')!r}, this tfbook reads format "
            f"{FORMAT_VERSION}: use the tfbook version that wrote it, or start a new run",
            "format",
            path,
        )
    if cfg is not None:
        diffs = _config_differences(state.get("config", {}), cfg)
        if diffs:
            raise CheckpointError(
                f"{path} comes from another configuration: {'; '.join(diffs)}. Resume with "
                f"the checkpoint's config.json (or start a new run in another folder)",
                "config",
                path,
            )
    return state


def _tokenizer_from_json(text: str) -> Tokenizer:
    """A tokenizer from the JSON text :meth:`Tokenizer.save` writes (through a temp file)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokenizer.json"
        path.write_text(text, encoding="utf-8")
        return Tokenizer.load(path)


def _tokenizer_json(tokenizer: Tokenizer) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokenizer.json"
        tokenizer.save(path)
        return path.read_text(encoding="utf-8")


def load_model(path: str | Path, map_location: Any = "cpu") -> tuple[GPT, Tokenizer, GPTRunConfig]:
    """The trained model, its tokenizer and its config from a run's checkpoint.

    Args:
        path: a ``checkpoint.pt``, or a run folder holding one.
        map_location: as ``torch.load``.

    Returns:
        ``(model in eval mode, tokenizer, config)``.

    Raises:
        CheckpointError: as :func:`load_checkpoint`.
    """
    path = Path(path)
    if path.is_dir() and not (path / CHECKPOINT).is_file() and (path / MODEL_WEIGHTS).is_file():
        return _load_weights_folder(path, map_location)
    if path.is_dir():
        path = path / CHECKPOINT
    state = load_checkpoint(path, map_location=map_location)
    cfg = GPTRunConfig.from_dict(state["config"])
    tokenizer = _tokenizer_from_json(state["tokenizer"])
    return _model_for(state["model"], cfg, tokenizer).eval(), tokenizer, cfg


def _model_for(weights: dict[str, Tensor], cfg: GPTRunConfig, tokenizer: Tokenizer) -> GPT:
    """The run's GPT holding ``weights``, on the device ``map_location`` put them on."""
    with torch.device(next(iter(weights.values())).device):  # built there: ties kept
        model = fuse_layer_norms(GPT(cfg.model_config(tokenizer.vocab_size)))
    model.load_state_dict(weights)
    return model


def book_run(name: str) -> Path:
    """The folder of one of the book's full runs, shipped inside the package.

    ``make capstone`` trains the runs chapter 8 reads and leaves them in
    ``tfbook/data/capstone/<name>`` (``config.json``, ``log.jsonl``, ``tokenizer.json``,
    ``samples.txt``, ``model.pt``; the checkpoints are not kept), so a notebook finds them
    wherever ``tfbook`` is installed, whatever its working folder.

    Args:
        name: ``"gpt-char"``, ``"gpt-bpe"`` or ``"numbers"`` (or ``"."`` for the folder
            holding them and the benchmark results).

    Raises:
        FileNotFoundError: no such run; the message lists the runs there are.
    """
    check.one_of("name", name, (".", *BOOK_RUNS))
    folder = Path(str(resources.files("tfbook") / "data" / "capstone")) / name
    if not folder.is_dir():
        there = sorted(p.name for p in folder.parent.iterdir()) if folder.parent.is_dir() else []
        raise FileNotFoundError(
            f"the book's run {name!r} is not at {folder} (runs there: {there}); "
            "make capstone writes it"
        )
    return folder


def _load_weights_folder(folder: Path, map_location: Any) -> tuple[GPT, Tokenizer, GPTRunConfig]:
    """A finished run folder without checkpoints: ``config.json``, ``tokenizer.json``, weights."""
    try:
        cfg = GPTRunConfig.from_dict(json.loads((folder / "config.json").read_text("utf-8")))
        tokenizer = _tokenizer_from_json((folder / "tokenizer.json").read_text("utf-8"))
        weights = torch.load(folder / MODEL_WEIGHTS, map_location=map_location, weights_only=True)
        model = _model_for(weights, cfg, tokenizer)
    except (OSError, ValueError, TypeError, KeyError, RuntimeError, pickle.UnpicklingError) as err:
        raise CheckpointError(
            f"run folder {folder} has {MODEL_WEIGHTS} but it, config.json or tokenizer.json "
            f"cannot be read or do not fit together ({type(err).__name__}: {err}); "
            f"run the training again (make capstone)",
            reason="corrupt",
            path=folder / MODEL_WEIGHTS,
        ) from err
    return model.eval(), tokenizer, cfg


# ------------------------------------------------------------------------------------- log


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``log.jsonl``.

    A last line cut short (a process killed in the middle of writing it) is dropped; any
    other line that is not a JSON object is an error.

    Raises:
        FileNotFoundError: no such file. ValueError: a damaged line (naming it).
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            if i == len(lines) - 1:  # a torn last line: the write was interrupted
                break
            raise ValueError(f"{path}:{i + 1} is not a JSON line: {line[:80]!r}") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{i + 1} is not a JSON object: {line[:80]!r}")
        rows.append(row)
    return rows


def _row_step(row: dict[str, Any]) -> int | None:
    """The step a log row belongs to (``None``: a ``done`` row, dropped on resume)."""
    if "done" in row:
        return None
    if "session" in row:
        return row["session"].get("start_step", 0)
    return row.get("step", row.get("interrupted"))


def _jsonl(rows: Sequence[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


class _Log:
    """The rows in memory on every process; rank 0 appends them to ``log.jsonl`` too."""

    def __init__(self, path: Path, rows: list[dict[str, Any]], write: bool) -> None:
        self.path, self.rows, self.file = path, rows, None
        if write:
            _write_atomically(path, lambda f: f.write(_jsonl(rows)))
            self.file = path.open("a", encoding="utf-8")

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if self.file is not None:
            self.file.write(json.dumps(row, ensure_ascii=False) + "\n")
            self.file.flush()  # visible to a reader at once (and after a crash)

    def sync(self) -> None:
        if self.file is not None:
            os.fsync(self.file.fileno())

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


# -------------------------------------------------------------------------------- sampling


def sample_text(
    model: GPT,
    tokenizer: Tokenizer,
    prompt: str,
    max_new_tokens: int,
    *,
    temperature: float = 0.8,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> str:
    """Continue ``prompt`` by ``max_new_tokens`` tokens, however long the model's context.

    :func:`tfbook.generate.generate` stops at the model's ``max_len``; here the model reads
    only the last ``max_len`` tokens at every step (the window slides along the text, as
    nanoGPT's ``generate`` crops its input). No KV cache: learned positions are absolute, so
    the cached keys would carry positions that shift with the window. The special tokens
    (``<pad>``, ``<unk>``, ``<bos>``, ``<eos>``, ``<mask>``) never occur in the training text
    and are never sampled.

    Args:
        model: a :class:`tfbook.model.GPT`.
        tokenizer: the tokenizer the model was trained with.
        prompt: the text to continue (at least one token).
        max_new_tokens: how many tokens to add.
        temperature, top_k, top_p, generator: as :func:`tfbook.generate.sample_next`.

    Returns:
        The prompt followed by the sampled text.

    Example:
        >>> tok = CharTokenizer.train(["abc"])
        >>> cfg = TransformerConfig(vocab_size=tok.vocab_size, d_model=8, n_heads=2, d_ff=16,
        ...                         n_layers=1, max_len=4)
        >>> text = sample_text(GPT(cfg), tok, "ab", 10, temperature=0.0)
        >>> len(tok.encode(text))
        12
    """
    if not isinstance(model, GPT):
        raise TypeError(f"model must be a tfbook.model.GPT, got {type(model).__name__}")
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    if not isinstance(tokenizer, Tokenizer):
        raise TypeError(f"tokenizer must be a tfbook Tokenizer, got {type(tokenizer).__name__}")
    if tokenizer.vocab_size != model.cfg.vocab_size:
        raise ValueError(
            f"tokenizer must have the model's vocabulary (V={model.cfg.vocab_size}), got "
            f"vocab_size={tokenizer.vocab_size}: use the run's own tokenizer"
        )
    check.nonneg_int("max_new_tokens", max_new_tokens)
    ids = tokenizer.encode(prompt)
    if not ids:
        raise ValueError(f"prompt must encode to at least one token, got {prompt!r}")
    device = next(model.parameters()).device
    window = model.cfg.max_len
    special = [tokenizer.token_to_id[t] for t in SPECIAL_TOKENS]
    seq = torch.tensor([ids], dtype=torch.long, device=device)  # (1, T0)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = model(seq[:, -window:])[:, -1]  # (1, V): the next token's scores
            logits[:, special] = float("-inf")  # plain text only
            new = sample_next(logits, temperature, top_k, top_p, generator)  # (1,)
            seq = torch.cat([seq, new[:, None].to(device)], dim=1)  # (1, T + 1)
    model.train(was_training)
    return tokenizer.decode(seq[0].tolist())


# ------------------------------------------------------------------------------ the run


def _train_tokenizer(cfg: GPTRunConfig, train_text: str) -> Tokenizer:
    if cfg.tokenizer == "char":
        return CharTokenizer.train([train_text])
    text = train_text if cfg.bpe_train_chars is None else train_text[: cfg.bpe_train_chars]
    alphabet = len(set(text))
    merges = cfg.bpe_vocab - len(SPECIAL_TOKENS) - alphabet
    if merges < 0:
        raise ValueError(
            f"bpe_vocab must be at least {len(SPECIAL_TOKENS)} special tokens + {alphabet} "
            f"characters = {len(SPECIAL_TOKENS) + alphabet} for this text, got {cfg.bpe_vocab}"
        )
    return BPETokenizer.train([text], merges)


def _encode(tokenizer: Tokenizer, text: str) -> Tensor:
    return torch.tensor(tokenizer.encode(text), dtype=torch.int32)  # (N,)


def _check_long_enough(name: str, ids: Tensor, cfg: GPTRunConfig, folder: Path) -> None:
    if ids.shape[0] <= cfg.context:
        raise CorpusError(
            f"the {name} text of {folder} is {ids.shape[0]} tokens long, too short for "
            f"context={cfg.context} (it needs more than context tokens: a window and the "
            "token after it); fetch the full corpus with `make corpus` or use a smaller context"
        )


def _check_run_args(cfg: object, out_dir: object, stop_after: object) -> Path:
    if not isinstance(cfg, GPTRunConfig):
        raise TypeError(f"cfg must be a GPTRunConfig, got {type(cfg).__name__}")
    if not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"out_dir must be a path, got {type(out_dir).__name__}")
    if stop_after is not None:
        check.positive_int("stop_after", stop_after)
    return Path(out_dir)


def _peak_rss_mib() -> float | None:
    """This process's peak resident memory in MiB (``None`` where it cannot be read).

    Linux: ``VmHWM`` of ``/proc/self/status``, the high-water mark of *this* program.
    ``getrusage``'s ``ru_maxrss`` is not used there: a process started by a large parent
    (``fork`` then ``exec``) inherits the parent's peak in it, which once reported 4 GiB for
    a run that never used more than 0.4 GiB.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text(encoding="ascii", errors="replace").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB -> MiB
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def run_gpt(
    cfg: GPTRunConfig,
    out_dir: str | Path,
    *,
    corpus_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    device: str | torch.device | None = None,
) -> RunResult:
    """Train a GPT on the corpus as ``cfg`` says, writing the run folder ``out_dir``.

    Run it as it is in one process (a notebook, ``tfbook train gpt``), or under
    ``torchrun --nproc_per_node=N``: every process calls it with the same arguments, each
    trains on its slice of every global batch, and rank 0 writes the files.

    Args:
        cfg: the run's :class:`GPTRunConfig`.
        out_dir: the run folder (created if needed).
        corpus_dir: a folder of :mod:`tfbook.corpus` (default
            :func:`tfbook.corpus.corpus_folder`).
        resume: continue from ``out_dir``'s checkpoint (see the module docstring for the
            fall-back to the previous checkpoint and for a folder without a checkpoint).
        overwrite: start afresh in a folder that already holds a run (its run files are
            replaced). Without it such a folder is refused, so no run is lost by accident.
        progress: a ``tqdm`` progress bar with the loss and the validation loss (rank 0).
        stop_after: stop (with a checkpoint) after this step, as if interrupted there.
        device: ``"cpu"``, ``"cuda"`` ... (default: CUDA when available; under ``torchrun``
            with CUDA, the GPU ``LOCAL_RANK``).

    Returns:
        A :class:`RunResult`. When stopped by SIGINT/SIGTERM, ``stopped`` names the signal
        and a line ``interrupted at step N ...; resume with ...`` has been printed.

    Raises:
        tfbook.corpus.CorpusError: the corpus is missing, empty, or its validation text is
            shorter than one window (the message names the folder and ``make corpus``).
        CheckpointError: ``resume=True`` and no usable checkpoint of this configuration.
        FileExistsError: ``out_dir`` holds a run and neither ``resume`` nor ``overwrite``.
        FloatingPointError: a non-finite loss (the step is named; nothing is updated).
        ValueError: ``batch_size`` not divisible by the number of processes, or a bad
            argument.
    """
    out = _check_run_args(cfg, out_dir, stop_after)
    check.boolean("resume", resume)
    check.boolean("overwrite", overwrite)
    check.boolean("progress", progress)
    world = _env_int("WORLD_SIZE", 1)
    if cfg.batch_size % world:  # checked before joining any process group
        raise ValueError(
            f"batch_size must be divisible by the number of processes WORLD_SIZE={world} (each "
            f"takes batch_size / WORLD_SIZE windows of every global batch), got "
            f"batch_size={cfg.batch_size}"
        )
    ctx = _setup_processes(device)
    try:
        return _run(cfg, out, ctx, corpus_dir, resume, overwrite, progress, stop_after)
    finally:
        if ctx.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _resume_state(
    out: Path, cfg: GPTRunConfig, ctx: _Dist, overwrite: bool
) -> tuple[dict | None, Path | None]:
    """The checkpoint to resume from, and a damaged newest checkpoint to set aside (if any)."""
    newest, prev = out / CHECKPOINT, out / PREVIOUS_CHECKPOINT
    if not newest.exists() and not prev.exists():
        existing = [name for name in _RUN_FILES if (out / name).exists()]
        if existing and not overwrite:
            raise CheckpointError(
                f"no checkpoint in {out} to resume from, but it holds a run ({', '.join(existing)}"
                "): start it again with --overwrite (overwrite=True), or choose another folder",
                "missing",
                newest,
            )
        if ctx.rank == 0:
            print(f"no checkpoint in {out}: starting at step 0", file=sys.stderr)
        return None, None
    try:
        return load_checkpoint(newest, cfg, map_location=ctx.device), None
    except CheckpointError as exc:
        if exc.reason not in ("missing", "corrupt") or not prev.is_file():
            raise
        state = load_checkpoint(prev, cfg, map_location=ctx.device)
        if ctx.rank == 0:
            print(
                f"warning: {exc}. Resuming from the previous checkpoint {prev} (step "
                f"{state['step']}) instead"
                + ("; the damaged file is set aside, not deleted" if newest.exists() else ""),
                file=sys.stderr,
            )
        return state, (newest if newest.exists() else None)


def _check_same_start(start: int, out: Path, ctx: _Dist) -> None:
    """Every process must resume from the same step (one collective; no-op for one process)."""
    if ctx.world == 1:
        return
    span = ctx.all_max(torch.tensor([start, -start], dtype=ctx.wide, device=ctx.device))
    if int(span[0]) != -int(span[1]):
        raise CheckpointError(
            f"the processes found different checkpoints in {out} (steps {-int(span[1])} to "
            f"{int(span[0])}; this one: {start}): on several machines the run folder must be "
            "on a file system every machine reads",
            "missing",
            out / CHECKPOINT,
        )


def _existing_run(out: Path, resuming: bool, overwrite: bool) -> list[str]:
    """The run files in ``out`` that a new run replaces; refused without ``overwrite``."""
    existing = [name for name in _RUN_FILES if (out / name).exists()]
    if existing and not resuming and not overwrite:
        raise FileExistsError(
            f"{out} already holds a run ({', '.join(existing)}): resume it with --resume "
            "(resume=True), replace it with --overwrite (overwrite=True), or choose another "
            "folder"
        )
    return [] if resuming else existing


def _prepare_folder(out: Path, replaced: list[str], ctx: _Dist) -> None:
    ctx.barrier()  # every process has read what it needs before rank 0 changes anything
    if ctx.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        for name in replaced:  # only with overwrite=True, once the new run is ready to start
            (out / name).unlink(missing_ok=True)


def _run(
    cfg: GPTRunConfig,
    out: Path,
    ctx: _Dist,
    corpus_dir: str | Path | None,
    resume: bool,
    overwrite: bool,
    progress: bool,
    stop_after: int | None,
) -> RunResult:
    # 1. What to start from: a checkpoint (checked before any file is touched) or nothing.
    state, damaged = _resume_state(out, cfg, ctx, overwrite) if resume else (None, None)
    _check_same_start(0 if state is None else int(state["step"]), out, ctx)
    replaced = _existing_run(out, state is not None, overwrite)
    # 2. The corpus, the tokenizer, the token ids (an old run is replaced only after this).
    folder = Path(corpus_dir) if corpus_dir is not None else corpus_folder()
    train_text, val_text = split_by_play(folder)
    tick = time.perf_counter()
    if state is not None:
        tokenizer = _tokenizer_from_json(state["tokenizer"])
    else:
        tokenizer = _train_tokenizer(cfg, train_text)  # every process: deterministic
    tokenizer_seconds = time.perf_counter() - tick
    tick = time.perf_counter()
    train_ids, val_ids = _encode(tokenizer, train_text), _encode(tokenizer, val_text)  # (N,)
    encode_seconds = time.perf_counter() - tick
    _check_long_enough("training", train_ids, cfg, folder)
    _check_long_enough("validation", val_ids, cfg, folder)
    _prepare_folder(out, replaced, ctx)
    # 3. The model and the optimiser (the same initial weights on every process).
    torch.manual_seed(cfg.seed)
    # chapter 6's GPT with the fused LayerNorm kernel (the same function, faster), initialised
    # on the CPU: the same weights on every device
    model = fuse_layer_norms(GPT(cfg.model_config(tokenizer.vocab_size)))
    if ctx.device.type != "cpu":  # copied into a model built there (.to() can untie the head)
        moved = {name: w.to(ctx.device) for name, w in model.state_dict().items()}
        model = _model_for(moved, cfg, tokenizer)
    optim_cfg = TrainConfig(
        steps=cfg.steps,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        betas=(cfg.beta1, cfg.beta2),
        warmup=cfg.warmup,
        clip=cfg.clip,
        progress=False,
    )
    optimizer = make_optimizer(model, optim_cfg)
    start, seconds_before = 0, 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, seconds_before = int(state["step"]), float(state["seconds"])
    trained = model
    if ctx.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [ctx.local_rank] if ctx.device.type == "cuda" else None
        trained = DistributedDataParallel(model, device_ids=ids)
    # 4. The files: rank 0 writes, every process keeps the rows.
    log_path = out / "log.jsonl"
    rows: list[dict[str, Any]] = []
    if state is not None and log_path.is_file():
        rows = [r for r in read_log(log_path) if (s := _row_step(r)) is not None and s <= start]
    tokenizer_json = _tokenizer_json(tokenizer)
    config_json = json.dumps(cfg.to_dict(), indent=1) + "\n"
    ctx.barrier()  # every process has read the old log before rank 0 rewrites it
    if ctx.rank == 0:
        if damaged is not None:
            os.replace(damaged, out / f"checkpoint.corrupt.{time.time_ns()}.pt")
        _write_atomically(out / "config.json", lambda f: f.write(config_json.encode("utf-8")))
        _write_atomically(out / "tokenizer.json", lambda f: f.write(tokenizer_json.encode("utf-8")))
    log = _Log(log_path, rows, write=ctx.rank == 0)
    session = {
        "start_step": start,
        "world_size": ctx.world,
        "device": str(ctx.device),
        "torch_threads": torch.get_num_threads(),
        "vocab_size": tokenizer.vocab_size,
        "parameters": count_parameters(model),
        "train_tokens": int(train_ids.shape[0]),
        "val_tokens": int(val_ids.shape[0]),
        "train_chars": len(train_text),
        "val_chars": len(val_text),
        "tokenizer_seconds": tokenizer_seconds,
        "encode_seconds": encode_seconds,
    }
    log.add({"session": session})
    try:
        return _train_loop(
            cfg, out, ctx, model, trained, optimizer, tokenizer, tokenizer_json, train_ids,
            val_ids, log, start, seconds_before, progress, stop_after,
        )  # fmt: skip
    finally:
        log.close()


def _validation(
    cfg: GPTRunConfig, val_ids: Tensor, tokenizer: Tokenizer
) -> tuple[Tensor, Tensor, int]:
    """The fixed validation windows (drawn with step 0's seed) and their characters."""
    n = cfg.eval_batches * cfg.batch_size
    generator = torch.Generator().manual_seed(step_seed(cfg.seed, 0))
    vx, vy = lm_batches(val_ids, cfg.context, n, generator)  # (n, T), (n, T)
    chars = torch.tensor(
        [1 if t in SPECIAL_TOKENS else len(t) for t in tokenizer.id_to_token], dtype=torch.long
    )  # (V,): characters each token stands for
    return vx, vy, int(chars[vy].sum())


def _evaluate(
    model: GPT, vx: Tensor, vy: Tensor, chars: int, cfg: GPTRunConfig, ctx: _Dist
) -> tuple[float, float]:
    """Validation loss in nats per token and per character; each process takes its share."""
    per = cfg.batch_size // ctx.world
    total = torch.zeros(2, dtype=ctx.wide, device=ctx.device)  # nats, tokens
    model.eval()
    with torch.no_grad():
        for b in range(cfg.eval_batches):
            lo = b * cfg.batch_size + ctx.rank * per
            x, y = vx[lo : lo + per].to(ctx.device), vy[lo : lo + per].to(ctx.device)
            loss = lm_loss(model(x), y.long())  # mean over (per, T) tokens
            total[0] += loss.to(ctx.wide) * y.numel()
            total[1] += y.numel()
    model.train()
    ctx.all_sum(total)
    return float(total[0] / total[1]), float(total[0] / chars)


def _train_loop(
    cfg: GPTRunConfig,
    out: Path,
    ctx: _Dist,
    model: GPT,
    trained: nn.Module,
    optimizer: torch.optim.Optimizer,
    tokenizer: Tokenizer,
    tokenizer_json: str,
    train_ids: Tensor,
    val_ids: Tensor,
    log: _Log,
    start: int,
    seconds_before: float,
    progress: bool,
    stop_after: int | None,
) -> RunResult:
    vx, vy, val_chars = _validation(cfg, val_ids, tokenizer)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    max_norm = math.inf if cfg.clip is None else cfg.clip
    floor = cfg.min_lr / cfg.lr
    steps = range(start + 1, cfg.steps + 1)
    bar = _progress(steps, progress and ctx.rank == 0)
    clock = time.perf_counter() - seconds_before  # seconds carry over a resume
    step, stopped, val = start, None, None
    model.train()
    with _StopSignal() as stop:
        for step in bar:
            x, y = global_batch(train_ids, cfg.context, cfg.batch_size, cfg.seed, step)
            x = _rank_slice(x, ctx.rank, ctx.world).to(ctx.device)  # (B / W, T)
            y = _rank_slice(y, ctx.rank, ctx.world).to(ctx.device)  # (B / W, T)
            lr = cfg.lr * warmup_cosine(step, cfg.steps, cfg.warmup, 1.0, floor)
            for group in optimizer.param_groups:
                group["lr"] = lr
            torch.manual_seed(step_seed(cfg.seed, step) * 4096 + ctx.rank)  # dropout masks
            loss = lm_loss(trained(x), y)  # this process's mean over its (B / W) * T tokens
            # one collective for two facts: the global mean loss, and whether anyone must stop
            shared = torch.tensor(
                [loss.item(), 1.0 if stop.name else 0.0], dtype=ctx.wide, device=ctx.device
            )
            ctx.all_sum(shared)
            value = loss.item() if ctx.world == 1 else float(shared[0]) / ctx.world
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"loss is {value} at step {step}: training stopped before the update (try "
                    "a lower lr, a longer warmup or gradient clipping)"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # under DDP: gradients averaged over the processes here
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm)  # the norm before clipping
            optimizer.step()
            row = {"step": step, "loss": value, "lr": lr, "grad_norm": norm.item()}
            log.add({**row, "seconds": time.perf_counter() - clock})
            if step % cfg.eval_every == 0 or step == cfg.steps:
                val, per_char = _evaluate(model, vx, vy, val_chars, cfg, ctx)
                log.add({"step": step, "val_loss": val, "val_nats_per_char": per_char})
            if hasattr(bar, "set_postfix"):
                shown = {"loss": f"{value:.3f}"} | ({} if val is None else {"val": f"{val:.3f}"})
                bar.set_postfix(shown, refresh=False)
            if shared[1] > 0:
                stopped = stop.name or "SIGTERM"  # another process received the signal
            elif stop_after is not None and step >= stop_after and step < cfg.steps:
                stopped = "stop_after"
            if stopped or step % cfg.checkpoint_every == 0 or step == cfg.steps:
                _checkpoint(cfg, out, ctx, model, optimizer, tokenizer_json, log, step, clock)
            if stopped:
                break
    if hasattr(bar, "close"):
        bar.close()
    seconds = time.perf_counter() - clock
    model.eval()
    if stopped:
        return _stopped(cfg, out, ctx, model, tokenizer, log, step, seconds, stopped)
    return _finish(cfg, out, ctx, model, tokenizer, log, step, seconds, vx, vy, val_chars)


def _checkpoint(
    cfg: GPTRunConfig,
    out: Path,
    ctx: _Dist,
    model: GPT,
    optimizer: torch.optim.Optimizer,
    tokenizer_json: str,
    log: _Log,
    step: int,
    clock: float,
) -> None:
    if ctx.rank == 0:
        log.sync()  # the log on disk holds every step the checkpoint holds
        state = {
            "format": FORMAT_VERSION,
            "kind": _KIND,
            "step": step,
            "config": cfg.to_dict(),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "tokenizer": tokenizer_json,
            "seconds": time.perf_counter() - clock,
            "world_size": ctx.world,
        }
        _save_checkpoint(out, state)
    ctx.barrier()


def _stopped(
    cfg: GPTRunConfig,
    out: Path,
    ctx: _Dist,
    model: GPT,
    tokenizer: Tokenizer,
    log: _Log,
    step: int,
    seconds: float,
    stopped: str,
) -> RunResult:
    if stopped != "stop_after":
        log.add({"interrupted": step, "signal": stopped, "seconds": seconds})
        if ctx.rank == 0:
            print(
                f"interrupted at step {step} by {stopped}; checkpoint {out / CHECKPOINT}; "
                f"resume with `tfbook train gpt --out {out} --resume` "
                "(or run_gpt(cfg, out_dir, resume=True))",
                flush=True,
            )
    return RunResult(model, tokenizer, cfg, log.rows, step, None, seconds, "", stopped, out)


def _finish(
    cfg: GPTRunConfig,
    out: Path,
    ctx: _Dist,
    model: GPT,
    tokenizer: Tokenizer,
    log: _Log,
    step: int,
    seconds: float,
    vx: Tensor,
    vy: Tensor,
    val_chars: int,
) -> RunResult:
    evals = [r for r in log.rows if "val_loss" in r and r["step"] == step]
    if evals:
        final_val = evals[-1]["val_loss"]
    else:  # a resumed run that was already complete
        final_val, per_char = _evaluate(model, vx, vy, val_chars, cfg, ctx)
        log.add({"step": step, "val_loss": final_val, "val_nats_per_char": per_char})
    peak = _peak_rss_mib()
    peak_all = ctx.all_max(torch.tensor([peak or 0.0], dtype=ctx.wide, device=ctx.device))
    samples = ""
    if ctx.rank == 0 and cfg.sample_tokens:
        generator = torch.Generator(device=ctx.device).manual_seed(cfg.seed)
        samples = sample_text(
            model,
            tokenizer,
            cfg.sample_prompt,
            cfg.sample_tokens,
            temperature=cfg.sample_temperature,
            generator=generator,
        )
        _write_atomically(out / "samples.txt", lambda f: f.write(samples.encode("utf-8")))
    if ctx.rank == 0:  # the trained weights alone: small enough to keep with the run's log
        _write_atomically(out / MODEL_WEIGHTS, lambda f: torch.save(model.state_dict(), f))
    log.add(
        {
            "done": True,
            "steps": step,
            "seconds": seconds,
            "final_val_loss": final_val,
            "peak_rss_mib": None if peak is None else float(peak_all[0]),
            "world_size": ctx.world,
            "tokens_per_step": cfg.batch_size * cfg.context,
        }
    )
    ctx.barrier()
    return RunResult(model, tokenizer, cfg, log.rows, step, final_val, seconds, samples, None, out)


# ------------------------------------------------------------------------------- figure


def plot_log(rows: Sequence[dict[str, Any]], ax=None, title: str = "GPT training run"):
    """The training loss of every step and the validation loss of every evaluation.

    Args:
        rows: the rows of a ``log.jsonl`` (:func:`read_log`) or ``RunResult.log``.
        ax: a matplotlib ``Axes`` (default: a new figure).
        title: the axes' title.

    Returns:
        The ``Axes``.
    """
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    if not train:
        raise ValueError("rows must hold at least one training step, got none")
    import matplotlib.pyplot as plt

    from tfbook.plotting import COLORS

    if ax is None:
        _, ax = plt.subplots(figsize=(6.0, 3.5))
    ax.plot(*zip(*train, strict=True), color=COLORS[0], lw=0.8, alpha=0.8, label="training")
    if val:
        ax.plot(*zip(*val, strict=True), "o-", color=COLORS[1], ms=4, label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return ax
