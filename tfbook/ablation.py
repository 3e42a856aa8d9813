"""The ablation ladder: from a bigram model to the capstone's GPT, one part at a time (chapter 8).

Chapter 8 trains a GPT of 4 layers on Shakespeare. What does each of its parts buy? The
ladder starts from the smallest language model with the same input and output layers, a
*bigram* model (each character's vector read straight out as scores for the next one), and
adds the parts of a Transformer one by one, as Karpathy's "Let's build GPT" does:

================  =====================================================================
rung              what it adds to the rung before
================  =====================================================================
``bigram``        nothing: token vector -> output layer (one character of context)
``attention``     one layer of causal self-attention with **one** head, whose output
                  replaces the token vector
``residual``      the attention *adds* its output to its input: ``x + f(x)``
``positions``     learned position vectors added to the token vectors
``heads``         the same attention split into ``n_heads`` heads (same parameters)
``feed-forward``  the position-wise feed-forward network after the attention (residual too)
``layer-norm``    pre-LN: a LayerNorm before each sub-layer and one after the last layer
``depth``         ``n_layers`` such layers instead of one
================  =====================================================================

The last rung computes the same function as :class:`tfbook.model.GPT` with the run's
:meth:`tfbook.run.GPTRunConfig.model_config`, except that its output layer has its own matrix
(``tie_weights=False``) on every rung: a bigram model whose output matrix is its input matrix
would score ``c`` after ``b`` exactly as ``b`` after ``c``.

Every rung is built from the library's own layers (:class:`tfbook.embedding.TokenEmbedding`,
:class:`tfbook.positional.LearnedPositionalEmbedding`, :class:`tfbook.attention.SelfAttention`,
:class:`tfbook.feedforward.PositionwiseFeedForward`, :class:`tfbook.norm.FusedLayerNorm`,
:class:`tfbook.layers.LMHead`), initialised by GPT-2's rule, and trained exactly like a
:func:`tfbook.run.run_gpt` run of the same :class:`tfbook.run.GPTRunConfig`: the same batches
(:func:`tfbook.run.global_batch`), AdamW, warm-up and cosine schedule, clipping and fixed
validation windows, on the character tokenizer.

Public API:

- :class:`Rung`, :data:`RUNGS`, :func:`rung` ``(name)``.
- :class:`LadderGPT` ``(rung, cfg)``: the model of one rung.
- :data:`LADDER_CONFIG`: the ladder's short budget (a :class:`tfbook.run.GPTRunConfig`).
- :func:`ladder_data` ``(cfg, corpus_dir)``, :func:`train_rung` ``(rung, cfg, data, *,
  stop_after)``, :func:`run_ladder` ``(out_dir, cfg, ...)``, :func:`read_ladder` ``(folder)``.
- ``python -m tfbook.ablation --out DIR`` runs the whole ladder (``make capstone``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

import tfbook.layers
from tfbook import _validate as check
from tfbook.attention import SelfAttention
from tfbook.corpus import corpus_folder, split_by_play
from tfbook.data import lm_batches
from tfbook.embedding import TokenEmbedding
from tfbook.feedforward import PositionwiseFeedForward
from tfbook.layers import LMHead, TransformerConfig
from tfbook.model import count_parameters
from tfbook.norm import FusedLayerNorm
from tfbook.objectives import lm_loss
from tfbook.positional import LearnedPositionalEmbedding
from tfbook.run import GPTRunConfig, global_batch, step_seed
from tfbook.tokenizers import CharTokenizer
from tfbook.training import TrainConfig, make_optimizer, train_step, warmup_cosine

__all__ = [
    "Rung",
    "RUNGS",
    "rung",
    "LadderGPT",
    "LADDER_CONFIG",
    "LadderData",
    "ladder_data",
    "train_rung",
    "run_ladder",
    "read_ladder",
]


@dataclass(frozen=True)
class Rung:
    """One rung of the ladder: which parts of a GPT layer it has.

    Attributes:
        name: the rung's short name (also its log file, ``<name>.json``).
        adds: what it adds to the rung before, in words.
        attention: causal self-attention in every layer.
        several_heads: ``n_heads`` heads (else one head of width ``d_model``).
        positions: learned position vectors added to the token vectors.
        feed_forward: a position-wise feed-forward network after the attention.
        deep: ``n_layers`` layers (else one).
        residual: each sub-layer adds its output to its input (else it replaces it).
        layer_norm: pre-LN, a LayerNorm before each sub-layer and one after the last layer.
    """

    name: str
    adds: str
    attention: bool = False
    several_heads: bool = False
    positions: bool = False
    feed_forward: bool = False
    deep: bool = False
    residual: bool = False
    layer_norm: bool = False

    def flags(self) -> dict[str, bool]:
        """The six switches as a dict (what the rung's log records)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("name", "adds")
        }


def _ladder() -> tuple[Rung, ...]:
    rungs = [Rung("bigram", "the bigram model: token vector, output layer")]
    steps = (
        ("attention", "+ self-attention (one head)", "attention"),
        ("residual", "+ residual connection", "residual"),
        ("positions", "+ positions", "positions"),
        ("heads", "+ several heads", "several_heads"),
        ("feed-forward", "+ feed-forward", "feed_forward"),
        ("layer-norm", "+ LayerNorm", "layer_norm"),
        ("depth", "+ depth (more layers)", "deep"),
    )
    for name, adds, flag in steps:
        rungs.append(dataclasses.replace(rungs[-1], name=name, adds=adds, **{flag: True}))
    return tuple(rungs)


#: The rungs in order, each with one part more than the one before.
RUNGS: tuple[Rung, ...] = _ladder()


def rung(name: str) -> Rung:
    """The rung called ``name`` (one of the names of :data:`RUNGS`).

    Raises:
        ValueError: an unknown name, naming the known ones.
    """
    names = [r.name for r in RUNGS]
    check.one_of("name", name, names)
    return RUNGS[names.index(name)]


# ------------------------------------------------------------------------------------ model


class _LadderLayer(nn.Module):
    """One layer of a rung: attention and/or feed-forward, each with or without its residual
    connection and its LayerNorm."""

    def __init__(self, r: Rung, cfg: tfbook.layers.TransformerConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.residual = r.residual
        heads = cfg.n_heads if r.several_heads else 1
        self.attn = SelfAttention(d, heads) if r.attention else None
        self.attn_norm = FusedLayerNorm(d, eps=cfg.eps) if r.attention and r.layer_norm else None
        self.ffn = PositionwiseFeedForward(d, cfg.d_ff, cfg.activation) if r.feed_forward else None
        self.ffn_norm = FusedLayerNorm(d, eps=cfg.eps) if r.feed_forward and r.layer_norm else None

    def _sublayer(self, x: Tensor, f: nn.Module, norm: nn.Module | None, **kwargs: Any) -> Tensor:
        out = f(x if norm is None else norm(x), **kwargs)  # (B, T, d_model)
        return x + out if self.residual else out

    def forward(self, x: Tensor) -> Tensor:
        if self.attn is not None:
            x = self._sublayer(x, self.attn, self.attn_norm, is_causal=True)  # token t reads 0..t
        if self.ffn is not None:
            x = self._sublayer(x, self.ffn, self.ffn_norm)
        return x  # (B, T, d_model)


class LadderGPT(nn.Module):
    """The language model of one rung of the ladder.

    ``logits = head(norm(layers(E[ids] + P[:T])))``, where ``P`` is there only with
    ``positions``, ``norm`` only with ``layer_norm``, and each of the ``n_layers`` layers has
    the sub-layers the rung asks for (:class:`Rung`). The bigram rung has no sub-layer at all:
    its logits at position ``t`` depend on the token at ``t`` alone.

    Initialised as :class:`tfbook.model.GPT` is (GPT-2's rule): linear and embedding weights
    from ``N(0, 0.02^2)``, biases 0, the two projections that write into the residual stream
    (attention's ``W^O``, the FFN's ``W_2``) from ``N(0, (0.02 / sqrt(2N))^2)``.

    Args:
        rung: a :class:`Rung` (or its name).
        cfg: a :class:`tfbook.layers.TransformerConfig`; its ``vocab_size``, ``d_model``,
            ``n_heads``, ``d_ff``, ``n_layers``, ``max_len``, ``activation`` and ``eps`` are
            used (no dropout; the output layer is never tied).

    Shape:
        - ids: ``(B, T)`` with ``T <= max_len``
        - output: ``(B, T, V)`` logits

    Example:
        >>> cfg = TransformerConfig(vocab_size=10, d_model=16, n_heads=4, d_ff=32, n_layers=2)
        >>> LadderGPT("heads", cfg)(torch.tensor([[1, 2, 3]])).shape
        torch.Size([1, 3, 10])
    """

    def __init__(self, rung: Rung | str, cfg: tfbook.layers.TransformerConfig) -> None:
        super().__init__()
        if isinstance(rung, str):
            rung = globals()["rung"](rung)
        if not isinstance(rung, Rung):
            raise TypeError(f"rung must be a Rung or a rung's name, got {type(rung).__name__}")
        if not isinstance(cfg, TransformerConfig):
            raise TypeError(f"cfg must be a TransformerConfig, got {type(cfg).__name__}")
        self.rung, self.cfg = rung, cfg
        d = cfg.d_model
        self.token = TokenEmbedding(cfg.vocab_size, d, scale=False)
        self.position = LearnedPositionalEmbedding(cfg.max_len, d) if rung.positions else None
        n_layers = cfg.n_layers if rung.deep else 1
        self.layers = nn.ModuleList(_LadderLayer(rung, cfg) for _ in range(n_layers))
        self.norm = FusedLayerNorm(d, eps=cfg.eps) if rung.layer_norm else None
        self.head = LMHead(d, cfg.vocab_size)
        self._init_weights()
        check.skip_inner_checks(self)  # forward checks the ids once

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding, LMHead)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, LearnedPositionalEmbedding):
                for p in module.parameters():
                    nn.init.normal_(p, mean=0.0, std=0.02)
        std = 0.02 / math.sqrt(2 * len(self.layers))
        for layer in self.layers:
            if layer.attn is not None:
                nn.init.normal_(layer.attn.out_proj.weight, mean=0.0, std=std)
            if layer.ffn is not None:
                nn.init.normal_(layer.ffn.linear2.weight, mean=0.0, std=std)

    def forward(self, ids: Tensor) -> Tensor:
        check.token_ids("ids", ids, self.cfg.vocab_size)
        if ids.dim() != 2 or ids.shape[1] > self.cfg.max_len:
            raise ValueError(
                f"ids must have shape (B, T) with T <= max_len={self.cfg.max_len}, "
                f"got {tuple(ids.shape)}"
            )
        x = self.token(ids)  # (B, T, d_model)
        if self.position is not None:
            x = self.position(x)  # (B, T, d_model): + P[0 .. T-1]
        for layer in self.layers:
            x = layer(x)  # (B, T, d_model)
        if self.norm is not None:
            x = self.norm(x)
        return self.head(x)  # (B, T, V)


# --------------------------------------------------------------------------------- training

#: The ladder's budget, the capstone character run's settings (sizes, batch, learning rates,
#: warm-up, seed, data, validation windows) for 600 steps instead of 2000, evaluated every 100.
LADDER_CONFIG = GPTRunConfig(
    tokenizer="char",
    steps=600,
    eval_every=100,
    checkpoint_every=600,
    sample_tokens=0,
)


class LadderData(NamedTuple):
    """What every rung trains and is evaluated on (:func:`ladder_data`)."""

    #: The training plays as character ids, ``(N,)``.
    train_ids: Tensor
    #: The fixed validation windows and their targets, ``(eval_batches * B, T)`` each.
    val_inputs: Tensor
    val_targets: Tensor
    #: The character tokenizer (89 tokens on the book's corpus).
    tokenizer: CharTokenizer


def ladder_data(
    cfg: GPTRunConfig = LADDER_CONFIG, corpus_dir: str | Path | None = None
) -> LadderData:
    """The training ids and the fixed validation windows, as :func:`tfbook.run.run_gpt` makes
    them: the plays split by :func:`tfbook.corpus.split_by_play`, the character tokenizer, and
    ``eval_batches * batch_size`` windows of the validation plays drawn with
    :func:`tfbook.run.step_seed` ``(seed, 0)``.

    Raises:
        ValueError: ``cfg`` asks for another tokenizer than ``"char"``.
    """
    if not isinstance(cfg, GPTRunConfig):
        raise TypeError(f"cfg must be a GPTRunConfig, got {type(cfg).__name__}")
    if cfg.tokenizer != "char":
        raise ValueError(f"cfg.tokenizer must be 'char' for the ladder, got {cfg.tokenizer!r}")
    folder = Path(corpus_dir) if corpus_dir is not None else corpus_folder()
    train_text, val_text = split_by_play(folder)
    tokenizer = CharTokenizer.train([train_text])
    train_ids = torch.tensor(tokenizer.encode(train_text), dtype=torch.int32)  # (N,)
    val_ids = torch.tensor(tokenizer.encode(val_text), dtype=torch.int32)  # (N_val,)
    generator = torch.Generator().manual_seed(step_seed(cfg.seed, 0))
    vx, vy = lm_batches(val_ids, cfg.context, cfg.eval_batches * cfg.batch_size, generator)
    return LadderData(train_ids, vx, vy, tokenizer)


def _model_config(cfg: GPTRunConfig, vocab_size: int) -> TransformerConfig:
    return dataclasses.replace(cfg.model_config(vocab_size), tie_weights=False, dropout=0.0)


def _evaluate(model: nn.Module, data: LadderData, batch_size: int) -> float:
    """Mean validation loss in nats per character over the fixed windows."""
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for lo in range(0, data.val_inputs.shape[0], batch_size):
            x, y = data.val_inputs[lo : lo + batch_size], data.val_targets[lo : lo + batch_size]
            total += lm_loss(model(x), y.long()).double().item() * y.numel()
            count += y.numel()
    model.train()
    return total / count


def train_rung(
    rung: Rung | str,
    cfg: GPTRunConfig = LADDER_CONFIG,
    data: LadderData | None = None,
    *,
    corpus_dir: str | Path | None = None,
    stop_after: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train one rung for ``cfg.steps`` steps as the capstone's run would, and return its log.

    The model is built after ``torch.manual_seed(cfg.seed)``; step ``s`` trains on
    :func:`tfbook.run.global_batch` ``(train_ids, T, B, seed, s)`` at the learning rate of
    :func:`tfbook.training.warmup_cosine`, with AdamW (decay on matrices only) and clipping,
    through :func:`tfbook.training.train_step`. Deterministic on a CPU: the same call gives
    the same losses.

    Args:
        rung: a :class:`Rung` or its name.
        cfg: the budget (default :data:`LADDER_CONFIG`); no dropout is used.
        data: from :func:`ladder_data` (made from ``corpus_dir`` when ``None``).
        stop_after: stop after this many steps, without any evaluation (the schedule is still
            the one of ``cfg.steps``): the first steps of the full rung, to reproduce its log.
        progress: print one line per evaluation.

    Returns:
        A JSON-ready dict with ``rung``, ``adds``, ``flags``, ``parameters``, ``config``,
        ``losses`` (the training loss of every step), ``grad_norms``, ``val`` (``[step,
        nats per character]`` at every evaluation), ``final_val_loss``, ``seconds`` (of
        training, evaluations included) and ``torch_threads``.
    """
    r = rung if isinstance(rung, Rung) else globals()["rung"](rung)
    if not isinstance(cfg, GPTRunConfig):
        raise TypeError(f"cfg must be a GPTRunConfig, got {type(cfg).__name__}")
    if stop_after is not None:
        check.int_in("stop_after", stop_after, 1, cfg.steps)
    if data is None:
        data = ladder_data(cfg, corpus_dir)
    torch.manual_seed(cfg.seed)
    model = LadderGPT(r, _model_config(cfg, data.tokenizer.vocab_size))
    optim_cfg = TrainConfig(
        steps=cfg.steps, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(cfg.beta1, cfg.beta2),
        warmup=cfg.warmup, clip=cfg.clip, progress=False,
    )  # fmt: skip
    optimizer = make_optimizer(model, optim_cfg)
    floor = cfg.min_lr / cfg.lr
    losses, norms, val = [], [], []
    last = cfg.steps if stop_after is None else stop_after
    model.train()
    tick = time.perf_counter()
    for step in range(1, last + 1):
        x, y = global_batch(data.train_ids, cfg.context, cfg.batch_size, cfg.seed, step)
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * warmup_cosine(step, cfg.steps, cfg.warmup, 1.0, floor)
        loss, norm = train_step(
            model, optimizer, (x, y), lambda m, b: lm_loss(m(b[0]), b[1].long()), cfg.clip,
            step=step,
        )  # fmt: skip
        losses.append(loss)
        norms.append(norm)
        if stop_after is None and (step % cfg.eval_every == 0 or step == cfg.steps):
            val.append([step, _evaluate(model, data, cfg.batch_size)])
            if progress:
                print(f"  {r.name:<13} step {step:>5}  val {val[-1][1]:.4f}", flush=True)
    seconds = time.perf_counter() - tick
    return {
        "rung": r.name,
        "adds": r.adds,
        "flags": r.flags(),
        "parameters": count_parameters(model),
        "config": cfg.to_dict(),
        "losses": losses,
        "grad_norms": norms,
        "val": val,
        "final_val_loss": val[-1][1] if val else None,
        "seconds": seconds,
        "torch_threads": torch.get_num_threads(),
    }


def run_ladder(
    out_dir: str | Path,
    cfg: GPTRunConfig = LADDER_CONFIG,
    *,
    corpus_dir: str | Path | None = None,
    rungs: tuple[str, ...] | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train every rung (or the named ones) with the same budget; write ``<rung>.json`` each.

    Returns:
        The logs, in ladder order.
    """
    names = [r.name for r in RUNGS] if rungs is None else [rung(n).name for n in rungs]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = ladder_data(cfg, corpus_dir)
    logs = []
    for name in names:
        log = train_rung(name, cfg, data, progress=progress)
        text = json.dumps(log, indent=1) + "\n"
        (out / f"{name}.json").write_text(text, encoding="utf-8")
        if progress:
            print(f"{name:<13} val {log['final_val_loss']:.4f}  {log['seconds']:.1f} s", flush=True)
        logs.append(log)
    return logs


def read_ladder(folder: str | Path) -> list[dict[str, Any]]:
    """The rung logs of a :func:`run_ladder` folder, in ladder order (missing rungs left out).

    Raises:
        FileNotFoundError: the folder holds no rung log.
    """
    folder = Path(folder)
    logs = [
        json.loads((folder / f"{r.name}.json").read_text(encoding="utf-8"))
        for r in RUNGS
        if (folder / f"{r.name}.json").is_file()
    ]
    if not logs:
        raise FileNotFoundError(f"{folder} holds no rung log (<rung>.json); run `make capstone`")
    return logs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tfbook.ablation", description="Train the ablation ladder (chapter 8)."
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR")
    parser.add_argument("--corpus", type=Path, default=None, metavar="DIR")
    parser.add_argument("--rungs", nargs="*", default=None, help="default: every rung")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads(N)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    tick = time.perf_counter()
    run_ladder(args.out, corpus_dir=args.corpus, rungs=args.rungs)
    print(f"ladder: {time.perf_counter() - tick:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
