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
  evaluation; ``{"step", "sample"}`` before the first step and every ``sample_every`` steps
  (when ``sample_every > 0``); ``{"interrupted", "signal", "seconds"}`` when stopped by a
  signal; and at the end
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

The package has four parts, each with one job: ``tfbook.run.config`` (the configuration, the
result, the names of the files), ``tfbook.run.distributed`` (the data order, several processes,
signals), ``tfbook.run.files`` (atomic writes, checkpoints, weights, the log) and
``tfbook.run.loop`` (:func:`run_gpt`: the loop around :func:`tfbook.training.train_step`). Import
from ``tfbook.run`` itself: it re-exports the public API.

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

from tfbook.run import config
from tfbook.run.config import CheckpointError, GPTRunConfig, RunResult
from tfbook.run.distributed import global_batch, step_seed
from tfbook.run.files import book_run, load_checkpoint, load_model, plot_log, read_log
from tfbook.run.loop import run_gpt, sample_text

#: Version of the checkpoint layout; a checkpoint of another version is refused.
FORMAT_VERSION = config.FORMAT_VERSION
#: The newest checkpoint of a run folder.
CHECKPOINT = config.CHECKPOINT
#: The checkpoint before it, kept so that a damaged newest one costs only a few steps.
PREVIOUS_CHECKPOINT = config.PREVIOUS_CHECKPOINT
#: The runs of ``make capstone`` that ship with the package (:func:`book_run`).
BOOK_RUNS = config.BOOK_RUNS
#: The weights of a finished run alone, without the optimiser state. :func:`load_model` reads
#: it when a folder has no checkpoint; the book keeps this file, not the checkpoints.
MODEL_WEIGHTS = config.MODEL_WEIGHTS
#: Config fields a resumed run may change, since they decide what is logged and when, not
#: the weights.
RESUME_MAY_CHANGE = config.RESUME_MAY_CHANGE

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
