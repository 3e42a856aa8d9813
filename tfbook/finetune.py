"""Fine-tuning: task heads, frozen bodies and LoRA written from scratch (chapter 9).

Chapter 9, "Fine-tuning a pre-trained Transformer", takes the models pre-trained in chapters 7
and 8 and adapts them to a labelled task (:mod:`tfbook.tasks`): a small *head* reads the body's
hidden vectors and is trained on the labels, with the body either trained too (full
fine-tuning), frozen, or frozen with low-rank adapters (LoRA, Hu et al. 2021) in some of its
linear layers.

**LoRA.** A frozen linear layer ``y = x W^T + b`` gets a trainable low-rank update,

    ``y = x W^T + b + (alpha / r) * x A^T B^T``,

with ``A`` of shape ``(r, d_in)`` (random) and ``B`` of shape ``(d_out, r)`` (zeros, so the
adapted model starts as the pre-trained one). Only ``A`` and ``B`` are trained:
``r * (d_in + d_out)`` numbers per layer instead of ``d_in * d_out``. After training,
``W + (alpha / r) B A`` is an ordinary weight matrix (:func:`merge_lora`): the merged model is as
big and as fast as the original. The ``peft`` library's LoRA computes the same function; the
chapter checks ours against it on the same weights.

Public API:

- :class:`LoRALinear` ``(base, r, alpha, dropout)``: a frozen ``nn.Linear`` plus ``A`` and ``B``.
- :func:`add_lora` ``(model, targets, r, alpha, dropout)``: freeze ``model`` and wrap its linear
  layers named in ``targets``; :func:`merge_lora` ``(model)``: fold every adapter back in.
- :func:`freeze` ``(module)`` and :func:`trainable_parameters` ``(model)``: (trainable, total).
- :class:`GPTBody` ``(gpt)``: a chapter 8 GPT without its language-model head (hidden vectors).
- :class:`SequenceClassifier` ``(body, n_classes, pooling)``: ``"first"`` ([CLS]), ``"last"``
  or ``"mean"`` pooling, then a linear head; :class:`TokenTagger` ``(body, n_tags)``: a linear
  head on every token. :data:`POOLINGS`.
- :func:`encode_texts` ``(tokenizer, texts, length, cls)``: right-padded ids;
  :func:`encode_tags` ``(tags, length, shift)``: tag ids aligned with character ids.
- :func:`fine_tune` ``(model, ids, labels, ...)``: AdamW on the trainable parameters, the
  per-step losses; :func:`predict` and :func:`accuracy`; :func:`name_f1`: F1 of the name
  characters of a tagging.
- The shipped measurements (``make capstone``, ``benchmarks/finetune_curve.py``):
  :func:`read_curve` ``(path)``, :func:`label_curve_points` ``(curve, way)``,
  :func:`plot_label_curve` ``(curve, ax)`` (test F1 against labelled lines, pre-trained vs
  scratch), :func:`cost_rows` ``(curve)`` (score, trainable share, time and bytes of each
  way); :func:`tfbook.tasks.capitalised_words` ``(line)``, the tagging rule that needs no training;
  :func:`saved_activation_bytes` ``(model, ids)``: the memory autograd keeps for a backward pass.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tfbook import _validate as check
from tfbook._model_checks import check_gpt_inputs
from tfbook.model import BERT, GPT
from tfbook.objectives import IGNORE_INDEX

__all__ = [
    "LoRALinear",
    "add_lora",
    "merge_lora",
    "freeze",
    "trainable_parameters",
    "GPTBody",
    "POOLINGS",
    "SequenceClassifier",
    "TokenTagger",
    "encode_texts",
    "encode_tags",
    "fine_tune",
    "predict",
    "accuracy",
    "name_f1",
    "CURVE_WAYS",
    "read_curve",
    "label_curve_points",
    "plot_label_curve",
    "cost_rows",
    "saved_activation_bytes",
]

#: How :class:`SequenceClassifier` turns ``(B, T, d_model)`` into one vector per sequence.
POOLINGS = ("first", "last", "mean")


# ------------------------------------------------------------------------------------ LoRA


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update ``(alpha / r) B A``.

    ``forward(x) = base(x) + (alpha / r) * dropout(x) A^T B^T``. ``A`` starts like an
    ``nn.Linear`` weight (Kaiming uniform, as in the LoRA paper's code and ``peft``), ``B`` at
    zero, so a new adapter leaves the outputs unchanged. The base layer's weight and bias are
    frozen (``requires_grad=False``); ``A`` and ``B`` are trainable.

    Args:
        base: the layer to adapt, ``nn.Linear(d_in, d_out)``; it is kept, not copied.
        r: the rank, ``1 <= r <= min(d_in, d_out)``.
        alpha: the scale numerator (``peft``'s ``lora_alpha``); the update is scaled by
            ``alpha / r``.
        dropout: dropout on the adapter's input (``peft``'s ``lora_dropout``).

    Attributes:
        lora_A: the down-projection ``A``, ``(r, d_in)``.
        lora_B: the up-projection ``B``, ``(d_out, r)``.
        scaling: ``alpha / r``.

    Shape:
        - x: ``(..., d_in)``; output: ``(..., d_out)``

    Example:
        >>> base = nn.Linear(8, 6)
        >>> lora = LoRALinear(base, r=2, alpha=4)
        >>> x = torch.randn(3, 8)
        >>> torch.equal(lora(x), base(x))  # B = 0: nothing changed yet
        True
        >>> [name for name, p in lora.named_parameters() if p.requires_grad]
        ['lora_A', 'lora_B']
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"base must be a torch.nn.Linear, got {type(base).__name__}")
        d_in, d_out = base.in_features, base.out_features
        self.r = check.int_in("r", r, 1, min(d_in, d_out))
        self.alpha = check.positive_float("alpha", alpha)
        self.scaling = self.alpha / self.r
        self.base = base
        base.requires_grad_(False)
        like = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(self.r, d_in, **like))
        self.lora_B = nn.Parameter(torch.zeros(d_out, self.r, **like))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(check.probability("dropout", dropout))

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def delta_weight(self) -> Tensor:
        """``(alpha / r) B A``, shape ``(d_out, d_in)``: what the adapter adds to ``W``."""
        return self.scaling * (self.lora_B @ self.lora_A)

    def forward(self, x: Tensor) -> Tensor:
        frozen = self.base(x)  # (..., d_out): x W^T + b, W frozen
        update = F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B)  # x A^T B^T
        return frozen + self.scaling * update  # (..., d_out)

    def merged(self) -> nn.Linear:
        """A new ``nn.Linear`` with weight ``W + (alpha / r) B A`` and the base's bias (frozen)."""
        base = self.base
        out = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None)
        out = out.to(device=base.weight.device, dtype=base.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(base.weight + self.delta_weight())
            if base.bias is not None:
                out.bias.copy_(base.bias)
        return out.requires_grad_(False)

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha:g}, scaling={self.scaling:g}"


def _matches(name: str, targets: tuple[str, ...]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def _check_targets(targets: object) -> tuple[str, ...]:
    if isinstance(targets, str) or not isinstance(targets, (tuple, list)):
        raise TypeError(
            f"targets must be a tuple of module names (e.g. ('out_proj',)), got {targets!r}"
        )
    if not targets or not all(isinstance(t, str) and t for t in targets):
        raise ValueError(f"targets must be a non-empty tuple of non-empty str, got {targets!r}")
    return tuple(targets)


def add_lora(
    model: nn.Module,
    targets: Sequence[str],
    r: int,
    alpha: float,
    dropout: float = 0.0,
) -> list[str]:
    """Freeze ``model`` and wrap each ``nn.Linear`` named in ``targets`` in a :class:`LoRALinear`.

    A module matches a target when its qualified name is the target or ends with ``"." +
    target``: ``"out_proj"`` matches every attention output projection,
    ``"decoder.layers.0.self_attn.sublayer.out_proj"`` only one. Every parameter of ``model``
    is frozen first, so afterwards only the adapters train (unfreeze a task head yourself, or
    call this on the body only).

    Args:
        model: the model to change in place.
        targets: names (or name endings) of linear layers.
        r, alpha, dropout: as :class:`LoRALinear`.

    Returns:
        The qualified names of the wrapped layers, in the model's order.

    Raises:
        ValueError: a target matches no module, or a module that is not an ``nn.Linear`` (or
            that already has an adapter).

    Example:
        >>> from tfbook.model import TransformerConfig
        >>> cfg = TransformerConfig(vocab_size=10, d_model=16, n_heads=4, d_ff=32, n_layers=2)
        >>> gpt = GPT(cfg)
        >>> for name in add_lora(gpt, ("out_proj",), r=2, alpha=4):
        ...     print(name)
        decoder.layers.0.self_attn.sublayer.out_proj
        decoder.layers.1.self_attn.sublayer.out_proj
        >>> trainable_parameters(gpt)[0] == 2 * 2 * (16 + 16)  # layers x r (d_in + d_out)
        True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    targets = _check_targets(targets)
    found = [(name, m) for name, m in model.named_modules() if name and _matches(name, targets)]
    for target in targets:
        if not any(_matches(name, (target,)) for name, _ in found):
            linears = sorted(
                {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
            )
            raise ValueError(
                f"targets must name nn.Linear modules of the model, got {target!r}, which "
                f"matches none (its linear layers end in {linears})"
            )
    for name, module in found:
        if type(module) is not nn.Linear:
            raise ValueError(
                f"targets must name nn.Linear modules, got {name!r}, a {type(module).__name__}"
            )
    freeze(model)
    for name, module in found:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(module, r, alpha, dropout))
    return [name for name, _ in found]


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every :class:`LoRALinear` of ``model`` by its merged ``nn.Linear``, in place.

    The merged model computes the same function (up to float rounding) with the original
    layer sizes and no adapter. Returns ``model``.

    Example:
        >>> lin = nn.Sequential(nn.Linear(4, 4))
        >>> _ = add_lora(lin, ("0",), r=1, alpha=1)
        >>> type(merge_lora(lin)[0]).__name__
        'Linear'
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    adapted = [(name, m) for name, m in model.named_modules() if isinstance(m, LoRALinear)]
    for name, module in adapted:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, module.merged())
    return model


def freeze(module: nn.Module) -> nn.Module:
    """Set ``requires_grad=False`` on every parameter of ``module``; returns it."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    return module.requires_grad_(False)


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts of ``model``, a shared parameter counted once."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


# ------------------------------------------------------------------------------- heads


class GPTBody(nn.Module):
    """A :class:`~tfbook.model.GPT` without its language-model head: hidden vectors.

    The body keeps the GPT (``self.gpt``, weights shared, not copied); its ``forward`` runs the
    embeddings and the causal decoder stack (with its final LayerNorm), so position ``t``
    summarises tokens ``0..t``.

    Shape:
        - ids: ``(B, T)``; output: ``(B, T, d_model)``
    """

    def __init__(self, gpt: GPT) -> None:
        super().__init__()
        if not isinstance(gpt, GPT):
            raise TypeError(f"gpt must be a tfbook.model.GPT, got {type(gpt).__name__}")
        self.gpt = gpt
        self.cfg = gpt.cfg

    def forward(self, ids: Tensor) -> Tensor:
        check_gpt_inputs(self.cfg, ids, None)
        x = self.gpt.embeddings(ids)  # (B, T, d_model)
        return self.gpt.decoder(x)  # (B, T, d_model): causal, token t reads 0..t


def _as_body(body: object) -> nn.Module:
    if isinstance(body, GPT):
        return GPTBody(body)
    if isinstance(body, (GPTBody, BERT)):
        return body
    raise TypeError(f"body must be a tfbook.model.GPT, GPTBody or BERT, got {type(body).__name__}")


def _hidden(body: nn.Module, ids: Tensor, real: Tensor) -> Tensor:
    if isinstance(body, BERT):  # bidirectional: padding must be masked as keys
        return body(ids, attention_mask=real)
    return body(ids)  # causal: right padding is never read by a real token


def _real_tokens(ids: object, pad_id: int) -> Tensor:
    ids = check.tensor("ids", ids)
    if ids.dim() != 2 or ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(
            f"ids must be integer token ids of shape (B, T), got {tuple(ids.shape)} {ids.dtype}"
        )
    real = ids != pad_id  # (B, T)
    lengths = real.sum(dim=1)  # (B,)
    if (lengths == 0).any():
        raise ValueError(f"ids must hold at least one token that is not pad_id={pad_id} per row")
    positions = torch.arange(ids.shape[1], device=ids.device)
    if not torch.equal(real, positions[None, :] < lengths[:, None]):
        raise ValueError(
            f"ids must be right-padded with pad_id={pad_id} (padding after the tokens)"
        )
    return real


class SequenceClassifier(nn.Module):
    """One label per sequence: a body, a pooling of its hidden vectors, a linear head.

    Pooling (:data:`POOLINGS`): ``"first"`` takes the first token's vector (BERT's ``[CLS]``:
    put a ``<bos>`` there, see :func:`encode_texts`), ``"last"`` the last real token's (for a
    GPT the only position that has read the whole text), ``"mean"`` the mean over the real
    tokens. Inputs are right-padded with ``pad_id``.

    Args:
        body: a :class:`~tfbook.model.GPT` (wrapped in a :class:`GPTBody`), a
            :class:`GPTBody` or a :class:`~tfbook.model.BERT`.
        n_classes: number of labels.
        pooling: one of :data:`POOLINGS`.
        pad_id: the padding id (the tokenizers' ``<pad>`` is 0).
        dropout: on the pooled vector before the head.

    Attributes:
        body: the body (a GPT is wrapped in a :class:`GPTBody`).
        head: ``nn.Linear(d_model, n_classes)``.

    Shape:
        - ids: ``(B, T)``; output: ``(B, n_classes)`` logits

    Example:
        >>> from tfbook.model import TransformerConfig
        >>> cfg = TransformerConfig(vocab_size=10, d_model=16, n_heads=4, d_ff=32, n_layers=2)
        >>> clf = SequenceClassifier(GPT(cfg), n_classes=3, pooling="last")
        >>> clf(torch.tensor([[5, 6, 7], [5, 6, 0]])).shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        body: nn.Module,
        n_classes: int,
        pooling: str = "last",
        pad_id: int = 0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.body = _as_body(body)
        self.n_classes = check.int_in("n_classes", n_classes, 2, 1_000_000)
        self.pooling = check.one_of("pooling", pooling, POOLINGS)
        self.pad_id = check.nonneg_int("pad_id", pad_id)
        self.dropout = nn.Dropout(check.probability("dropout", dropout))
        self.head = nn.Linear(self.body.cfg.d_model, self.n_classes)

    def forward(self, ids: Tensor) -> Tensor:
        real = _real_tokens(ids, self.pad_id)  # (B, T): True = a token, False = padding
        h = _hidden(self.body, ids, real)  # (B, T, d_model)
        pooled = _pool(h, real, self.pooling)  # (B, d_model)
        return self.head(self.dropout(pooled))  # (B, n_classes)


def _pool(h: Tensor, real: Tensor, pooling: str) -> Tensor:
    if pooling == "first":
        return h[:, 0]  # (B, d_model): the [CLS] position
    lengths = real.sum(dim=1)  # (B,)
    if pooling == "last":
        return h[torch.arange(h.shape[0], device=h.device), lengths - 1]  # (B, d_model)
    weights = real.to(h.dtype)[:, :, None]  # (B, T, 1)
    return (h * weights).sum(dim=1) / lengths[:, None].to(h.dtype)  # (B, d_model): mean


class TokenTagger(nn.Module):
    """One label per token: a body and a linear head on every hidden vector.

    With a character tokenizer the tokens are the characters, so the tags of
    :func:`tfbook.tasks.tag_line` line up with the ids (:func:`encode_tags`). A GPT body tags
    token ``t`` having read only ``0..t``; a BERT body has read the whole line.

    Args:
        body: as :class:`SequenceClassifier`.
        n_tags: number of tags.
        pad_id: the padding id.

    Shape:
        - ids: ``(B, T)``; output: ``(B, T, n_tags)`` logits

    Example:
        >>> from tfbook.model import TransformerConfig
        >>> cfg = TransformerConfig(vocab_size=10, d_model=16, n_heads=4, d_ff=32, n_layers=2)
        >>> TokenTagger(BERT(cfg), n_tags=3)(torch.tensor([[5, 6, 0]])).shape
        torch.Size([1, 3, 3])
    """

    def __init__(self, body: nn.Module, n_tags: int, pad_id: int = 0) -> None:
        super().__init__()
        self.body = _as_body(body)
        self.n_tags = check.int_in("n_tags", n_tags, 2, 1_000_000)
        self.pad_id = check.nonneg_int("pad_id", pad_id)
        self.head = nn.Linear(self.body.cfg.d_model, self.n_tags)

    def forward(self, ids: Tensor) -> Tensor:
        real = _real_tokens(ids, self.pad_id)  # (B, T)
        return self.head(_hidden(self.body, ids, real))  # (B, T, n_tags)


# ------------------------------------------------------------------------------ batches


def encode_texts(tokenizer, texts: Sequence[str], length: int, cls: bool = False) -> Tensor:
    """Token ids of ``texts``, cut to ``length`` and right-padded with ``<pad>``: ``(B, length)``.

    Args:
        tokenizer: a :class:`tfbook.tokenizers.Tokenizer`.
        texts: the texts (each must give at least one token).
        length: the number of positions ``T``.
        cls: put ``<bos>`` first, as BERT's ``[CLS]`` (then ``length - 1`` text tokens fit).

    Example:
        >>> from tfbook.tokenizers import CharTokenizer
        >>> tok = CharTokenizer.train(["abc"])
        >>> [tok.bos_id, *tok.encode("abc")]
        [2, 5, 6, 7]
        >>> encode_texts(tok, ["a", "cabcab"], length=4, cls=True).tolist()  # cut and padded
        [[2, 5, 0, 0], [2, 7, 5, 6]]
    """
    length = check.positive_int("length", length)
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise TypeError(f"texts must be a sequence of str, got {type(texts).__name__}")
    if cls and length < 2:
        raise ValueError(f"length must be >= 2 with cls=True (<bos> and a token), got {length}")
    rows = []
    for i, text in enumerate(texts):
        ids = ([tokenizer.bos_id] if cls else []) + tokenizer.encode(text)
        if len(ids) == int(cls):
            raise ValueError(f"texts[{i}] must give at least one token, got {text!r}")
        ids = ids[:length]
        rows.append(ids + [tokenizer.pad_id] * (length - len(ids)))
    return torch.tensor(rows, dtype=torch.long).reshape(len(rows), length)


def encode_tags(tags: Sequence[Sequence[int]], length: int, shift: int = 0) -> Tensor:
    """Tag ids aligned with character ids: ``(B, length)``, ``IGNORE_INDEX`` where none.

    Args:
        tags: one list of tag ids per text (one per character, :func:`tfbook.tasks.tag_line`).
        length: the number of positions, as given to :func:`encode_texts`.
        shift: positions before the first character (1 with ``cls=True``); they get
            ``IGNORE_INDEX``, as do the padding positions.

    Example:
        >>> encode_tags([[0, 1, 2], [1]], length=4, shift=1).tolist()
        [[-100, 0, 1, 2], [-100, 1, -100, -100]]
    """
    length = check.positive_int("length", length)
    shift = check.int_in("shift", shift, 0, length - 1)
    out = torch.full((len(tags), length), IGNORE_INDEX, dtype=torch.long)
    for i, row in enumerate(tags):
        row = list(row)[: length - shift]
        out[i, shift : shift + len(row)] = torch.tensor(row, dtype=torch.long)
    return out


# ------------------------------------------------------------------------------ training


def _check_pairs(ids: object, labels: object) -> tuple[Tensor, Tensor]:
    ids = check.tensor("ids", ids)
    labels = check.tensor("labels", labels)
    if ids.dim() != 2:
        raise ValueError(f"ids must have shape (B, T), got {tuple(ids.shape)}")
    if labels.shape[0] != ids.shape[0] or labels.dim() not in (1, 2):
        raise ValueError(
            f"labels must have shape (B,) or (B, T) with B={ids.shape[0]}, "
            f"got {tuple(labels.shape)}"
        )
    return ids, labels


def _loss(logits: Tensor, labels: Tensor) -> Tensor:
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX
    )


def fine_tune(
    model: nn.Module,
    ids: Tensor,
    labels: Tensor,
    *,
    steps: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> list[float]:
    """Train the trainable parameters of ``model`` on ``(ids, labels)``; the loss of each step.

    AdamW at a constant learning rate on random batches; the batches and the dropout masks
    come from ``seed``, so a run is repeatable (the caller's random state is left as it
    was). A frozen parameter (``requires_grad=False``) is not given to the optimiser. The
    model is left in ``eval()`` mode.

    Args:
        model: a :class:`SequenceClassifier` (labels ``(B,)``) or :class:`TokenTagger`
            (labels ``(B, T)``, ``IGNORE_INDEX`` where there is none).
        ids: ``(B, T)`` right-padded ids.
        labels: class ids ``(B,)`` or tag ids ``(B, T)``.
        steps, batch_size, lr, weight_decay, seed: the optimisation.

    Raises:
        ValueError: bad shapes or settings, or no trainable parameter.
    """
    ids, labels = _check_pairs(ids, labels)
    steps = check.positive_int("steps", steps)
    batch_size = check.positive_int("batch_size", batch_size)
    lr = check.positive_float("lr", lr)
    weight_decay = check.number_in("weight_decay", weight_decay, 0.0, math.inf)
    seed = check.nonneg_int("seed", seed)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model must have trainable parameters, got none (all frozen)")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    losses = []
    with torch.random.fork_rng(devices=[]):  # dropout masks from `seed`; the caller's RNG kept
        torch.manual_seed(seed)
        for _ in range(steps):
            pick = torch.randint(0, len(ids), (min(batch_size, len(ids)),), generator=generator)
            loss = _loss(model(ids[pick]), labels[pick])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    model.eval()
    return losses


@torch.no_grad()
def predict(model: nn.Module, ids: Tensor, batch_size: int = 256) -> Tensor:
    """The model's arg-max labels for ``ids``: ``(B,)`` or ``(B, T)``, in ``eval()`` mode."""
    ids = check.tensor("ids", ids)
    batch_size = check.positive_int("batch_size", batch_size)
    model.eval()
    return torch.cat(
        [model(ids[i : i + batch_size]).argmax(-1) for i in range(0, len(ids), batch_size)]
    )


def accuracy(model: nn.Module, ids: Tensor, labels: Tensor) -> float:
    """The share of labelled positions (not ``IGNORE_INDEX``) the model gets right."""
    ids, labels = _check_pairs(ids, labels)
    keep = labels != IGNORE_INDEX
    return (predict(model, ids)[keep] == labels[keep]).double().mean().item()


def name_f1(predicted: Tensor, gold: Tensor) -> float:
    """F1 of the name characters: a character counts as a name when its tag is not ``O`` (0).

    Positions whose gold tag is ``IGNORE_INDEX`` are skipped; 0.0 when neither side marks
    any name character.

    Example:
        >>> name_f1(torch.tensor([0, 1, 2, 0]), torch.tensor([0, 1, 2, 2]))  # P 1, R 2/3
        0.8
    """
    predicted, gold = check.tensor("predicted", predicted), check.tensor("gold", gold)
    if predicted.shape != gold.shape:
        raise ValueError(
            f"predicted must have the shape of gold {tuple(gold.shape)}, "
            f"got {tuple(predicted.shape)}"
        )
    keep = gold != IGNORE_INDEX
    p, g = predicted[keep] != 0, gold[keep] != 0
    hits = (p & g).sum().item()
    denominator = p.sum().item() + g.sum().item()
    return round(2 * hits / denominator, 12) if denominator else 0.0


# ------------------------------------------------------------------ the shipped measurements


#: The ways of :func:`read_curve`'s ``cost`` records, in the order of the table.
CURVE_WAYS = ("full", "frozen", "lora", "scratch")
_CURVE_KEYS = (
    "run",
    "task",
    "references",
    "steps",
    "batch_size",
    "lr",
    "lora",
    "cost_count",
    "curve",
    "cost",
    "machine",
)
_RECORD_KEYS = (
    "train_lines",
    "way",
    "seed",
    "test_f1",
    "test_accuracy",
    "seconds_per_step",
    "trainable",
    "total",
)
_COST_KEYS = ("weight_bytes", "gradient_bytes", "adamw_state_bytes", "activation_bytes")


def _shipped_curve() -> Path:
    return Path(str(resources.files("tfbook") / "data" / "capstone" / "finetune" / "curve.json"))


def _check_curve(curve: object) -> dict:
    if not isinstance(curve, dict):
        raise TypeError(f"curve must be the dict read_curve() returns, got {type(curve).__name__}")
    missing = [k for k in _CURVE_KEYS if k not in curve]
    if missing:
        raise ValueError(f"curve must hold the keys {list(_CURVE_KEYS)}, got one without {missing}")
    for part, keys in (("curve", _RECORD_KEYS), ("cost", _RECORD_KEYS + _COST_KEYS)):
        records = curve[part]
        if not isinstance(records, list) or not records:
            raise ValueError(
                f"curve[{part!r}] must be a non-empty list of records, got {records!r}"
            )
        for i, record in enumerate(records):
            lacking = [k for k in keys if not isinstance(record, dict) or k not in record]
            if lacking:
                raise ValueError(
                    f"curve[{part!r}][{i}] must hold the keys {list(keys)}, got one without "
                    f"{lacking}"
                )
    ways = {r["way"] for r in curve["curve"]}
    if ways != {"full", "scratch"}:
        raise ValueError(f"curve['curve'] must hold the ways full and scratch, got {sorted(ways)}")
    return curve


def read_curve(path: str | Path | None = None) -> dict:
    """The measurements of ``benchmarks/finetune_curve.py``: label curve and cost of each way.

    The book ships one run (``make capstone`` writes it): name tagging
    (:func:`tfbook.tasks.name_tagging_task`) with chapter 8's character GPT, F1 of the name
    characters on 400 lines of the held-out plays.

    Args:
        path: a JSON file the benchmark wrote; default the shipped
            ``tfbook/data/capstone/finetune/curve.json``.

    Returns:
        The run, a dictionary with ``curve`` (records of ``train_lines``, ``way`` ``"full"``
        or ``"scratch"``,
        ``seed``, ``test_f1``, ...), ``cost`` (the same at ``cost_count`` lines for every way
        of :data:`CURVE_WAYS`, with ``trainable``, ``total``, ``seconds_per_step`` and the bytes
        of weights, gradients, AdamW state and saved activations), ``references`` (F1 of
        tagging every character, and of :func:`tfbook.tasks.capitalised_words`), the settings
        and ``machine``.

    Raises:
        FileNotFoundError: no such file (the message says how to make it).
        ValueError: the file lacks a key of the schema.

    Example:
        >>> curve = read_curve()
        >>> curve["task"]["test_lines"], sorted({r["way"] for r in curve["curve"]})
        (400, ['full', 'scratch'])
    """
    path = _shipped_curve() if path is None else path
    if not isinstance(path, (str, Path)):
        raise TypeError(f"path must be a str or Path to a JSON file, got {type(path).__name__}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"path must be a JSON file of benchmarks/finetune_curve.py, got {path}, which does "
            "not exist: make capstone writes it"
        )
    return _check_curve(json.loads(path.read_text(encoding="utf-8")))


def _spread(values: list[float]) -> tuple[float, float, float]:
    return sum(values) / len(values), min(values), max(values)


def label_curve_points(curve: dict, way: str) -> list[tuple[int, float, float, float]]:
    """``(train_lines, mean, min, max)`` of the test F1 over the seeds, for one way.

    Args:
        curve: what :func:`read_curve` returns.
        way: ``"full"`` (pre-trained, fine-tuned in full) or ``"scratch"``.

    Example:
        >>> points = label_curve_points(read_curve(), "full")
        >>> [n for n, *_ in points]
        [25, 100, 400]
    """
    curve = _check_curve(curve)
    way = check.one_of("way", way, ("full", "scratch"))
    counts = sorted({r["train_lines"] for r in curve["curve"]})
    points = []
    for n in counts:
        f1 = [r["test_f1"] for r in curve["curve"] if r["way"] == way and r["train_lines"] == n]
        points.append((n, *_spread(f1)))
    return points


def plot_label_curve(curve: dict, ax=None):
    """Test F1 against the number of labelled lines: pre-trained vs the same GPT from scratch.

    One line per way through the mean over the seeds, a band from the lowest to the highest
    seed, on a logarithmic x axis; dashed horizontal lines for the two references that need no
    training (tagging every character as a name, and :func:`tfbook.tasks.capitalised_words`).

    Args:
        curve: what :func:`read_curve` returns.
        ax: a matplotlib ``Axes`` to draw on (default: a new figure).

    Returns:
        The ``Figure``.

    Example:
        >>> fig = plot_label_curve(read_curve())
        >>> [line.get_label() for line in fig.axes[0].get_lines()][:2]
        ['pre-trained GPT, full fine-tuning', 'same GPT from scratch']
    """
    curve = _check_curve(curve)
    import matplotlib.pyplot as plt

    from tfbook.plotting import COLORS, plain_log_ticks

    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4.0), constrained_layout=True)
    seeds = len({r["seed"] for r in curve["curve"]})
    for way, label, color in (
        ("full", "pre-trained GPT, full fine-tuning", COLORS[0]),
        ("scratch", "same GPT from scratch", COLORS[1]),
    ):
        n, mean, low, high = zip(*label_curve_points(curve, way), strict=True)
        ax.plot(n, mean, "o-", color=color, label=label)
        ax.fill_between(n, low, high, color=color, alpha=0.2, lw=0)
    refs = curve["references"]
    ax.axhline(refs["capital_rule"], ls="--", color="0.3", label="rule: capitalised word")
    ax.axhline(refs["every_character"], ls=":", color="0.5", label="every character a name")
    ax.set_xscale("log")
    plain_log_ticks(ax, "x")
    ax.set_xticks(sorted({r["train_lines"] for r in curve["curve"]}))
    ax.set_ylim(0, 1)
    ax.set_xlabel("labelled training lines")
    ax.set_ylabel("name F1 on held-out plays")
    ax.set_title(f"Name tagging: mean and range over {seeds} seeds")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return ax.figure


def cost_rows(curve: dict) -> list[dict]:
    """One row per way of fine-tuning at the shipped label count, in :data:`CURVE_WAYS` order.

    Each row: ``way``, ``f1_mean``, ``f1_min``, ``f1_max`` (over the seeds), ``vs_full``
    (mean F1 minus full fine-tuning's), ``trainable``, ``total``, ``trainable_share``,
    ``seconds_per_step`` (mean), ``training_bytes`` (gradients plus AdamW's two moments, for
    the trainable parameters only) and ``activation_bytes`` (kept for the backward pass of one
    batch).

    Args:
        curve: what :func:`read_curve` returns.

    Example:
        >>> rows = cost_rows(read_curve())
        >>> [row["way"] for row in rows]
        ['full', 'frozen', 'lora', 'scratch']
        >>> rows[0]["trainable_share"]
        1.0
    """
    curve = _check_curve(curve)
    records = curve["cost"]
    ways = [w for w in CURVE_WAYS if any(r["way"] == w for r in records)]
    if "full" not in ways:
        raise ValueError("curve['cost'] must hold records of the way 'full', got none")
    rows = []
    for way in ways:
        mine = [r for r in records if r["way"] == way]
        mean, low, high = _spread([r["test_f1"] for r in mine])
        first = mine[0]
        rows.append(
            {
                "way": way,
                "f1_mean": mean,
                "f1_min": low,
                "f1_max": high,
                "trainable": first["trainable"],
                "total": first["total"],
                "trainable_share": first["trainable"] / first["total"],
                "seconds_per_step": _spread([r["seconds_per_step"] for r in mine])[0],
                "training_bytes": first["gradient_bytes"] + first["adamw_state_bytes"],
                "activation_bytes": first["activation_bytes"],
            }
        )
    full = rows[0]["f1_mean"]
    for row in rows:
        row["vs_full"] = row["f1_mean"] - full
    return rows


def saved_activation_bytes(model: nn.Module, ids: Tensor) -> int:
    """Bytes of the tensors autograd keeps from ``model(ids)`` for the backward pass.

    Every tensor a layer saves for its gradient is counted once (``saved_tensors_hooks``),
    except the model's own parameters, which exist whether or not it trains. A frozen body
    keeps nothing for a head trained on top of it; full fine-tuning and LoRA keep the
    activations of every layer, because the gradient must flow back through them. The model
    is run in ``train()`` mode and left in ``eval()`` mode.

    Example:
        >>> from tfbook.model import TransformerConfig
        >>> cfg = TransformerConfig(vocab_size=10, d_model=16, n_heads=4, d_ff=32, n_layers=2)
        >>> ids = torch.full((2, 8), 5)
        >>> frozen = TokenTagger(freeze(GPTBody(GPT(cfg))), n_tags=3)
        >>> saved_activation_bytes(frozen, ids)  # the head's input only: 2 x 8 x 16 floats
        1024
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    ids = check.tensor("ids", ids)
    params = {p.data_ptr() for p in model.parameters()}
    saved: dict[tuple[int, int], int] = {}

    def pack(t: Tensor) -> Tensor:
        if t.data_ptr() not in params:
            saved[(t.data_ptr(), t.numel())] = t.numel() * t.element_size()
        return t

    model.train()
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(ids)
    finally:
        model.eval()
    return sum(saved.values())
