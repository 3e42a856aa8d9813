"""The files of a GPT run's folder: atomic writes, checkpoints, weights, the log (chapter 8).

Part of :mod:`tfbook.run`, which re-exports the public names; import them from there.

Public API:

- :func:`load_checkpoint` ``(path, cfg=None, *, map_location="cpu")``, :func:`load_model`
  ``(path)``, :func:`book_run` ``(name)``.
- :func:`read_log` ``(path)``, :func:`plot_log` ``(rows, ax, title)``.
- For the loop (:mod:`tfbook.run.loop`): :func:`write_atomically`, :func:`save_checkpoint`,
  :func:`tokenizer_from_json`, :func:`tokenizer_json`, :func:`model_for`, :func:`row_step`,
  :class:`RunLog`.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tfbook import _validate as check
from tfbook.model import GPT
from tfbook.run.config import (
    BOOK_RUNS,
    CHECKPOINT,
    FORMAT_VERSION,
    KIND,
    MODEL_WEIGHTS,
    PREVIOUS_CHECKPOINT,
    CheckpointError,
    GPTRunConfig,
    config_differences,
)
from tfbook.tokenizers import Tokenizer

__all__ = [
    "load_checkpoint",
    "load_model",
    "book_run",
    "read_log",
    "plot_log",
    "write_atomically",
    "save_checkpoint",
    "tokenizer_from_json",
    "tokenizer_to_json",
    "model_for",
    "row_step",
    "RunLog",
]

# --------------------------------------------------------------------------- checkpoints


def _temp_next_to(path: Path) -> Path:
    """A new file's name in ``path``'s folder (created with the usual permissions)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{time.time_ns()}.tmp")


def write_atomically(path: Path, write: Any) -> None:
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


def save_checkpoint(out: Path, state: dict[str, Any]) -> None:
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
    if not isinstance(state, dict) or state.get("kind") != KIND:
        raise CheckpointError(
            f"{path} is not a checkpoint of tfbook.run (no kind={KIND!r}); {_prev_note(path)}",
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
        diffs = config_differences(state.get("config", {}), cfg)
        if diffs:
            raise CheckpointError(
                f"{path} comes from another configuration: {'; '.join(diffs)}. Resume with "
                f"the checkpoint's config.json (or start a new run in another folder)",
                "config",
                path,
            )
    return state


def tokenizer_from_json(text: str) -> Tokenizer:
    """A tokenizer from the JSON text :meth:`Tokenizer.save` writes (through a temp file)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokenizer.json"
        path.write_text(text, encoding="utf-8")
        return Tokenizer.load(path)


def tokenizer_to_json(tokenizer: Tokenizer) -> str:
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
    tokenizer = tokenizer_from_json(state["tokenizer"])
    return model_for(state["model"], cfg, tokenizer).eval(), tokenizer, cfg


def model_for(weights: dict[str, Tensor], cfg: GPTRunConfig, tokenizer: Tokenizer) -> GPT:
    """The run's GPT holding ``weights``, on the device ``map_location`` put them on."""
    with torch.device(next(iter(weights.values())).device):  # built there: ties kept
        model = GPT(cfg.model_config(tokenizer.vocab_size))
    model.load_state_dict(weights)
    return model


def book_run(name: str) -> Path:
    """The folder of one of the book's full runs, shipped inside the package.

    ``make capstone`` trains the runs chapter 8 reads and leaves them in
    ``tfbook/data/capstone/<name>`` (``config.json``, ``log.jsonl``, ``tokenizer.json``,
    ``samples.txt``, ``model.pt``; the checkpoints are not kept), so a notebook finds them
    wherever ``tfbook`` is installed, whatever its working folder.

    Args:
        name: ``"gpt-char"``, ``"gpt-bpe"``, ``"numbers"``, ``"ladder"`` (the rung logs of
            :mod:`tfbook.ablation`) or ``"finetune"`` (chapter 9's tagger and measurements),
            or ``"."`` for the folder holding them and the benchmark results.

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
        tokenizer = tokenizer_from_json((folder / "tokenizer.json").read_text("utf-8"))
        weights = torch.load(folder / MODEL_WEIGHTS, map_location=map_location, weights_only=True)
        model = model_for(weights, cfg, tokenizer)
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


def row_step(row: dict[str, Any]) -> int | None:
    """The step a log row belongs to (``None``: a ``done`` row, dropped on resume)."""
    if "done" in row:
        return None
    if "session" in row:
        return row["session"].get("start_step", 0)
    return row.get("step", row.get("interrupted"))


def _jsonl(rows: Sequence[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


class RunLog:
    """The rows in memory on every process; rank 0 appends them to ``log.jsonl`` too."""

    def __init__(self, path: Path, rows: list[dict[str, Any]], write: bool) -> None:
        self.path, self.rows, self.file = path, rows, None
        if write:
            write_atomically(path, lambda f: f.write(_jsonl(rows)))
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
