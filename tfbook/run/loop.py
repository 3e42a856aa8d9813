"""One GPT training run from start to end: data, model, the loop, the end (chapter 8).

Part of :mod:`tfbook.run`, which re-exports the public names; import them from there. The
loop takes :func:`tfbook.training.train_step` at every step and adds what makes it a run:
the learning-rate schedule, the dropout seed of the step, one collective for the mean loss
and the stop flag, the log, evaluations, checkpoints and signals.

Public API:

- :func:`run_gpt` ``(cfg, out_dir, *, corpus_dir, resume, overwrite, progress, stop_after,
  device)`` returns a :class:`tfbook.run.RunResult`.
- :func:`sample_text` ``(model, tokenizer, prompt, max_new_tokens, ...)``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from tfbook import _validate as check
from tfbook.corpus import CorpusError, corpus_folder, split_by_play
from tfbook.data import lm_batches
from tfbook.generate import sample_next
from tfbook.model import GPT, count_parameters
from tfbook.objectives import lm_loss
from tfbook.run.config import (
    CHECKPOINT,
    FORMAT_VERSION,
    KIND,
    MODEL_WEIGHTS,
    PREVIOUS_CHECKPOINT,
    RUN_FILES,
    CheckpointError,
    GPTRunConfig,
    RunResult,
)
from tfbook.run.distributed import (
    Processes,
    StopSignal,
    env_int,
    global_batch,
    rank_slice,
    setup_processes,
    step_seed,
)
from tfbook.run.files import (
    RunLog,
    load_checkpoint,
    model_for,
    read_log,
    row_step,
    save_checkpoint,
    tokenizer_from_json,
    tokenizer_to_json,
    write_atomically,
)
from tfbook.tokenizers import SPECIAL_TOKENS, BPETokenizer, CharTokenizer, Tokenizer
from tfbook.training import TrainConfig, make_optimizer, progress_bar, train_step, warmup_cosine

__all__ = [
    "run_gpt",
    "sample_text",
]

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
        >>> from tfbook.model import TransformerConfig
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
    world = env_int("WORLD_SIZE", 1)
    if cfg.batch_size % world:  # checked before joining any process group
        raise ValueError(
            f"batch_size must be divisible by the number of processes WORLD_SIZE={world} (each "
            f"takes batch_size / WORLD_SIZE windows of every global batch), got "
            f"batch_size={cfg.batch_size}"
        )
    ctx = setup_processes(device)
    try:
        return _run(cfg, out, ctx, corpus_dir, resume, overwrite, progress, stop_after)
    finally:
        if ctx.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _resume_state(
    out: Path, cfg: GPTRunConfig, ctx: Processes, overwrite: bool
) -> tuple[dict | None, Path | None]:
    """The checkpoint to resume from, and a damaged newest checkpoint to set aside (if any)."""
    newest, prev = out / CHECKPOINT, out / PREVIOUS_CHECKPOINT
    if not newest.exists() and not prev.exists():
        existing = [name for name in RUN_FILES if (out / name).exists()]
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


def _check_same_start(start: int, out: Path, ctx: Processes) -> None:
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
    existing = [name for name in RUN_FILES if (out / name).exists()]
    if existing and not resuming and not overwrite:
        raise FileExistsError(
            f"{out} already holds a run ({', '.join(existing)}): resume it with --resume "
            "(resume=True), replace it with --overwrite (overwrite=True), or choose another "
            "folder"
        )
    return [] if resuming else existing


def _prepare_folder(out: Path, replaced: list[str], ctx: Processes) -> None:
    ctx.barrier()  # every process has read what it needs before rank 0 changes anything
    if ctx.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        for name in replaced:  # only with overwrite=True, once the new run is ready to start
            (out / name).unlink(missing_ok=True)


def _run(
    cfg: GPTRunConfig,
    out: Path,
    ctx: Processes,
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
        tokenizer = tokenizer_from_json(state["tokenizer"])
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
    model = GPT(cfg.model_config(tokenizer.vocab_size))
    if ctx.device.type != "cpu":  # copied into a model built there (.to() can untie the head)
        moved = {name: w.to(ctx.device) for name, w in model.state_dict().items()}
        model = model_for(moved, cfg, tokenizer)
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
        rows = [r for r in read_log(log_path) if (s := row_step(r)) is not None and s <= start]
    tokenizer_json = tokenizer_to_json(tokenizer)
    config_json = json.dumps(cfg.to_dict(), indent=1) + "\n"
    ctx.barrier()  # every process has read the old log before rank 0 rewrites it
    if ctx.rank == 0:
        if damaged is not None:
            os.replace(damaged, out / f"checkpoint.corrupt.{time.time_ns()}.pt")
        write_atomically(out / "config.json", lambda f: f.write(config_json.encode("utf-8")))
        write_atomically(out / "tokenizer.json", lambda f: f.write(tokenizer_json.encode("utf-8")))
    log = RunLog(log_path, rows, write=ctx.rank == 0)
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
        vx, vy, val_chars = _validation(cfg, val_ids, tokenizer)
        run = _RunState(
            cfg, out, ctx, model, trained, optimizer, tokenizer, tokenizer_json, train_ids, log,
            vx, vy, val_chars,
        )  # fmt: skip
        return _train_loop(run, start, seconds_before, progress, stop_after)
    finally:
        log.close()


@dataclass
class _RunState:
    """What the loop and its checkpoints work with, built once by :func:`_run`."""

    cfg: GPTRunConfig
    out: Path
    ctx: Processes
    model: GPT  # the model itself: saved, evaluated, returned
    trained: nn.Module  # what the step calls: the model, or DistributedDataParallel around it
    optimizer: torch.optim.Optimizer
    tokenizer: Tokenizer
    tokenizer_json: str
    train_ids: Tensor  # (N,)
    log: RunLog
    vx: Tensor  # (eval_batches * B, T): the fixed validation windows (:func:`_validation`)
    vy: Tensor  # (eval_batches * B, T): their targets
    val_chars: int  # the characters vy stands for


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


def _evaluate(run: _RunState) -> tuple[float, float]:
    """Validation loss in nats per token and per character; each process takes its share."""
    cfg, ctx, model, vx, vy = run.cfg, run.ctx, run.model, run.vx, run.vy
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
    return float(total[0] / total[1]), float(total[0] / run.val_chars)


def _next_token_loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    x, y = batch  # (B / W, T) each
    return lm_loss(model(x), y)  # this process's mean over its (B / W) * T tokens


class _Agreement:
    """What every process must agree on at each step, in one collective: the mean loss over
    the processes (logged, and checked, so that all stop at the same non-finite loss), and
    whether any of them received a stop signal. :func:`tfbook.training.train_step` calls it
    with the step's loss before the backward pass."""

    def __init__(self, ctx: Processes, stop: StopSignal) -> None:
        self.ctx, self.stop, self.stop_anywhere = ctx, stop, False

    def __call__(self, loss: Tensor) -> float:
        ctx = self.ctx
        shared = torch.tensor(
            [loss.item(), 1.0 if self.stop.name else 0.0], dtype=ctx.wide, device=ctx.device
        )
        ctx.all_sum(shared)
        self.stop_anywhere = bool(shared[1] > 0)
        return loss.item() if ctx.world == 1 else float(shared[0]) / ctx.world


def _train_loop(
    run: _RunState, start: int, seconds_before: float, progress: bool, stop_after: int | None
) -> RunResult:
    cfg, ctx, model, optimizer, log = run.cfg, run.ctx, run.model, run.optimizer, run.log
    floor = cfg.min_lr / cfg.lr
    steps = range(start + 1, cfg.steps + 1)
    bar = progress_bar(steps, progress and ctx.rank == 0)
    clock = time.perf_counter() - seconds_before  # seconds carry over a resume
    step, stopped, val = start, None, None
    model.train()
    if start == 0:
        clock += _sample_along(run, 0)
    with StopSignal() as stop:
        agreement = _Agreement(ctx, stop)
        for step in bar:
            x, y = global_batch(run.train_ids, cfg.context, cfg.batch_size, cfg.seed, step)
            x = rank_slice(x, ctx.rank, ctx.world).to(ctx.device)  # (B / W, T)
            y = rank_slice(y, ctx.rank, ctx.world).to(ctx.device)  # (B / W, T)
            lr = cfg.lr * warmup_cosine(step, cfg.steps, cfg.warmup, 1.0, floor)
            for group in optimizer.param_groups:
                group["lr"] = lr
            torch.manual_seed(step_seed(cfg.seed, step) * 4096 + ctx.rank)  # dropout masks
            batch, loss_fn = (x, y), _next_token_loss
            value, norm = train_step(  # value: the mean loss over all processes
                run.trained, optimizer, batch, loss_fn, cfg.clip, step=step, reduce=agreement
            )
            row = {"step": step, "loss": value, "lr": lr, "grad_norm": norm}
            log.add({**row, "seconds": time.perf_counter() - clock})
            if step % cfg.eval_every == 0 or step == cfg.steps:
                val, per_char = _evaluate(run)
                log.add({"step": step, "val_loss": val, "val_nats_per_char": per_char})
            if cfg.sample_every and step % cfg.sample_every == 0:
                clock += _sample_along(run, step)  # its seconds are left out of the log's
            if hasattr(bar, "set_postfix"):
                shown = {"loss": f"{value:.3f}"} | ({} if val is None else {"val": f"{val:.3f}"})
                bar.set_postfix(shown, refresh=False)
            if agreement.stop_anywhere:
                stopped = stop.name or "SIGTERM"  # another process received the signal
            elif stop_after is not None and step >= stop_after and step < cfg.steps:
                stopped = "stop_after"
            if stopped or step % cfg.checkpoint_every == 0 or step == cfg.steps:
                _checkpoint(run, step, clock)
            if stopped:
                break
    if hasattr(bar, "close"):
        bar.close()
    seconds = time.perf_counter() - clock
    model.eval()
    if stopped:
        return _stopped(run, step, seconds, stopped)
    return _finish(run, step, seconds)


def _sample_along(run: _RunState, step: int) -> float:
    """Log a sample of the model as it is after ``step`` steps (``cfg.sample_every``); return
    the seconds it took. Its own generator, seeded with the run's seed at every sample: the
    training's random numbers are untouched, and two samples differ only by the weights."""
    cfg = run.cfg
    if not cfg.sample_every or not cfg.sample_tokens or run.ctx.rank != 0:
        return 0.0
    tick = time.perf_counter()
    generator = torch.Generator(device=run.ctx.device).manual_seed(cfg.seed)
    run.model.eval()
    text = sample_text(
        run.model,
        run.tokenizer,
        cfg.sample_prompt,
        cfg.sample_tokens,
        temperature=cfg.sample_temperature,
        generator=generator,
    )
    run.model.train()
    run.log.add({"step": step, "sample": text})
    return time.perf_counter() - tick


def _checkpoint(run: _RunState, step: int, clock: float) -> None:
    if run.ctx.rank == 0:
        run.log.sync()  # the log on disk holds every step the checkpoint holds
        state = {
            "format": FORMAT_VERSION,
            "kind": KIND,
            "step": step,
            "config": run.cfg.to_dict(),
            "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "tokenizer": run.tokenizer_json,
            "seconds": time.perf_counter() - clock,
            "world_size": run.ctx.world,
        }
        save_checkpoint(run.out, state)
    run.ctx.barrier()


def _stopped(run: _RunState, step: int, seconds: float, stopped: str) -> RunResult:
    out, log = run.out, run.log
    if stopped != "stop_after":
        log.add({"interrupted": step, "signal": stopped, "seconds": seconds})
        if run.ctx.rank == 0:
            print(
                f"interrupted at step {step} by {stopped}; checkpoint {out / CHECKPOINT}; "
                f"resume with `tfbook train gpt --out {out} --resume` "
                "(or run_gpt(cfg, out_dir, resume=True))",
                flush=True,
            )
    return RunResult(
        run.model, run.tokenizer, run.cfg, log.rows, step, None, seconds, "", stopped, out
    )


def _finish(run: _RunState, step: int, seconds: float) -> RunResult:
    cfg, out, ctx, model, log = run.cfg, run.out, run.ctx, run.model, run.log
    evals = [r for r in log.rows if "val_loss" in r and r["step"] == step]
    if evals:
        final_val = evals[-1]["val_loss"]
    else:  # a resumed run that was already complete
        final_val, per_char = _evaluate(run)
        log.add({"step": step, "val_loss": final_val, "val_nats_per_char": per_char})
    peak = _peak_rss_mib()
    peak_all = ctx.all_max(torch.tensor([peak or 0.0], dtype=ctx.wide, device=ctx.device))
    samples = ""
    if ctx.rank == 0 and cfg.sample_tokens:
        generator = torch.Generator(device=ctx.device).manual_seed(cfg.seed)
        samples = sample_text(
            model,
            run.tokenizer,
            cfg.sample_prompt,
            cfg.sample_tokens,
            temperature=cfg.sample_temperature,
            generator=generator,
        )
        write_atomically(out / "samples.txt", lambda f: f.write(samples.encode("utf-8")))
    if ctx.rank == 0:  # the trained weights alone: small enough to keep with the run's log
        write_atomically(out / MODEL_WEIGHTS, lambda f: torch.save(model.state_dict(), f))
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
    return RunResult(
        model, run.tokenizer, cfg, log.rows, step, final_val, seconds, samples, None, out
    )
