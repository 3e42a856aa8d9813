"""Hugging Face BERT and GPT-2 weights in the chapter 6 models (chapter 6).

A trained model is a state dict: names to tensors. Loading Hugging Face's weights into
:class:`tfbook.model.BERT` and :class:`tfbook.model.GPT` is renaming (and, for GPT-2,
transposing); if the logits then agree, our model computes the same function as theirs.
This module never imports ``transformers``: it reads a config's attributes and a state dict.

Public API:

- :func:`gpt2_config` and :func:`bert_config`: a :class:`tfbook.model.TransformerConfig` from a
  Hugging Face ``GPT2Config`` / ``BertConfig``.
- :func:`gpt2_state_dict` and :func:`bert_state_dict`: a Hugging Face state dict renamed to
  ours (used by ``GPT.from_hf_state_dict`` and ``BERT.from_hf_state_dict``).

What differs from Hugging Face, by design: one dropout rate instead of separate ones for
attention and residuals (irrelevant in ``eval()`` mode), and no BERT pooler or pre-training
heads (their weights are dropped).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import Tensor

from tfbook.model import TransformerConfig

__all__ = ["gpt2_config", "bert_config", "gpt2_state_dict", "bert_state_dict"]

#: Hugging Face activation names -> ours (``gelu_new`` is GELU's tanh approximation).
HF_ACTIVATIONS: dict[str, str] = {
    "relu": "relu",
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
}


def gpt2_config(hf_config: object) -> TransformerConfig:
    """Our config for a Hugging Face ``GPT2Config``: pre-LN, learned positions, tied head.

    Raises:
        ValueError: for GPT-2 options our model does not have (cross-attention,
            attention scaled by the layer index, no scaling by ``sqrt(d_head)``).
    """
    _require(hf_config, "scale_attn_weights", True)
    _require(hf_config, "scale_attn_by_inverse_layer_idx", False)
    _require(hf_config, "add_cross_attention", False)
    d = hf_config.n_embd
    return TransformerConfig(
        vocab_size=hf_config.vocab_size,
        d_model=d,
        n_heads=hf_config.n_head,
        d_ff=hf_config.n_inner or 4 * d,
        n_layers=hf_config.n_layer,
        max_len=hf_config.n_positions,
        dropout=float(hf_config.resid_pdrop),
        activation=_activation(hf_config.activation_function),
        norm_first=True,
        positional="learned",
        tie_weights=bool(getattr(hf_config, "tie_word_embeddings", True)),
        eps=float(hf_config.layer_norm_epsilon),
        scale_embeddings=False,
    )


def bert_config(hf_config: object) -> TransformerConfig:
    """Our config for a Hugging Face ``BertConfig``: post-LN, learned positions, segments.

    Raises:
        ValueError: for BERT options our model does not have (relative positions, a
            decoder).
    """
    _require(hf_config, "position_embedding_type", "absolute")
    _require(hf_config, "is_decoder", False)
    return TransformerConfig(
        vocab_size=hf_config.vocab_size,
        d_model=hf_config.hidden_size,
        n_heads=hf_config.num_attention_heads,
        d_ff=hf_config.intermediate_size,
        n_layers=hf_config.num_hidden_layers,
        max_len=hf_config.max_position_embeddings,
        dropout=float(hf_config.hidden_dropout_prob),
        activation=_activation(hf_config.hidden_act),
        norm_first=False,
        positional="learned",
        tie_weights=False,
        eps=float(hf_config.layer_norm_eps),
        pad_id=hf_config.pad_token_id or 0,
        n_token_types=hf_config.type_vocab_size,
        embed_norm=True,
        scale_embeddings=False,
    )


def gpt2_state_dict(state_dict: Mapping[str, Tensor], cfg: TransformerConfig) -> dict[str, Tensor]:
    """A Hugging Face GPT-2 state dict (``GPT2LMHeadModel`` or ``GPT2Model``) in our names.

    GPT-2 stores its linear layers as ``Conv1D`` modules computing ``x W + b`` with ``W`` of
    shape ``(in, out)``; ``nn.Linear`` computes ``x W^T + b`` with ``W`` ``(out, in)``, so
    every matrix is transposed. ``c_attn`` holds ``W^Q, W^K, W^V`` side by side.

    Names, Hugging Face -> ours (``GPT``):

    - ``wte``, ``wpe`` -> ``embeddings.token``, ``embeddings.position``
    - ``h.i.ln_1`` -> ``decoder.layers.i.self_attn.norm``
    - ``h.i.attn.c_attn`` -> ``...self_attn.sublayer.{q,k,v}_proj`` (split, transposed)
    - ``h.i.attn.c_proj`` -> ``...self_attn.sublayer.out_proj`` (transposed)
    - ``h.i.ln_2`` -> ``decoder.layers.i.ffn.norm``
    - ``h.i.mlp.c_fc``, ``h.i.mlp.c_proj`` -> ``...ffn.sublayer.linear1``, ``linear2``
      (transposed)
    - ``ln_f`` -> ``decoder.norm``; ``lm_head`` -> ``head`` (the tensor of ``wte`` when tied)

    Raises:
        ValueError: a missing or unexpected entry, or an untied ``lm_head`` for a tied config.
    """
    sd = _strip_prefix(state_dict, "transformer.")
    take = _taker(sd, "GPT-2", cfg)

    def conv1d(name: str) -> tuple[Tensor, Tensor]:  # (in, out) -> nn.Linear's (out, in)
        return take(name + ".weight").T, take(name + ".bias")

    wte = take("wte.weight")
    out = {
        "embeddings.token.embedding.weight": wte,
        "embeddings.position.table.weight": take("wpe.weight"),
    }
    for i in range(cfg.n_layers):
        hf, ours = f"h.{i}.", f"decoder.layers.{i}."
        w, b = conv1d(hf + "attn.c_attn")  # (3 d_model, d_model): W^Q, W^K, W^V stacked
        for name, w_part, b_part in zip(("q", "k", "v"), w.chunk(3), b.chunk(3), strict=True):
            out |= _linear(f"{ours}self_attn.sublayer.{name}_proj", w_part, b_part)
        out |= _linear(ours + "self_attn.sublayer.out_proj", *conv1d(hf + "attn.c_proj"))
        out |= _linear(ours + "self_attn.norm", *_pair(take, hf + "ln_1"))
        out |= _linear(ours + "ffn.sublayer.linear1", *conv1d(hf + "mlp.c_fc"))
        out |= _linear(ours + "ffn.sublayer.linear2", *conv1d(hf + "mlp.c_proj"))
        out |= _linear(ours + "ffn.norm", *_pair(take, hf + "ln_2"))
    out |= _linear("decoder.norm", *_pair(take, "ln_f"))
    lm_head = sd.pop("lm_head.weight", None)
    if cfg.tie_weights:
        if lm_head is not None and not (lm_head is wte or lm_head.equal(wte)):
            raise ValueError(
                "state_dict's lm_head.weight differs from wte.weight, but cfg.tie_weights=True: "
                "use tie_weights=False for an untied GPT-2"
            )
        out["head.weight"] = wte
    else:
        out["head.weight"] = lm_head if lm_head is not None else take("lm_head.weight")
    _no_leftovers(sd, "GPT-2", ignore=(".attn.bias", ".attn.masked_bias"))
    return out


def bert_state_dict(state_dict: Mapping[str, Tensor], cfg: TransformerConfig) -> dict[str, Tensor]:
    """A Hugging Face BERT state dict (``BertModel``, or ``BertFor...`` with ``bert.``) in ours.

    BERT's linear layers are ordinary ``nn.Linear`` modules, so this is renaming only:

    Names, Hugging Face -> ours (``BERT``), with ``L = encoder.layer.i`` and
    ``l = encoder.layers.i``:

    - ``embeddings.{word,position,token_type}_embeddings`` ->
      ``embeddings.{token,position,token_type}``; ``embeddings.LayerNorm`` -> ``embeddings.norm``
    - ``L.attention.self.{query,key,value}`` -> ``l.self_attn.sublayer.{q,k,v}_proj``
    - ``L.attention.output.dense`` -> ``l.self_attn.sublayer.out_proj``
    - ``L.attention.output.LayerNorm`` -> ``l.self_attn.norm``
    - ``L.intermediate.dense``, ``L.output.dense`` -> ``l.ffn.sublayer.linear1``, ``linear2``
    - ``L.output.LayerNorm`` -> ``l.ffn.norm``

    The pooler (``pooler.*``) and pre-training heads (``cls.*``) are dropped.

    Raises:
        ValueError: a missing or unexpected entry.
    """
    sd = _strip_prefix(state_dict, "bert.")
    take = _taker(sd, "BERT", cfg)

    def pair(name: str) -> tuple[Tensor, Tensor]:
        return _pair(take, name)

    out = {
        "embeddings.token.embedding.weight": take("embeddings.word_embeddings.weight"),
        "embeddings.position.table.weight": take("embeddings.position_embeddings.weight"),
        "embeddings.token_type.weight": take("embeddings.token_type_embeddings.weight"),
    }
    out |= _linear("embeddings.norm", *pair("embeddings.LayerNorm"))
    for i in range(cfg.n_layers):
        hf, ours = f"encoder.layer.{i}.", f"encoder.layers.{i}."
        attn = ours + "self_attn.sublayer."
        for hf_name, name in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
            out |= _linear(attn + name, *pair(hf + "attention.self." + hf_name))
        out |= _linear(attn + "out_proj", *pair(hf + "attention.output.dense"))
        out |= _linear(ours + "self_attn.norm", *pair(hf + "attention.output.LayerNorm"))
        out |= _linear(ours + "ffn.sublayer.linear1", *pair(hf + "intermediate.dense"))
        out |= _linear(ours + "ffn.sublayer.linear2", *pair(hf + "output.dense"))
        out |= _linear(ours + "ffn.norm", *pair(hf + "output.LayerNorm"))
    dropped = [k for k in sd if k.startswith(("pooler.", "cls.")) or k.endswith("position_ids")]
    for key in dropped:
        del sd[key]
    _no_leftovers(sd, "BERT")
    return out


# ------------------------------------------------------------------------------------ helpers


def _activation(name: object) -> str:
    if name not in HF_ACTIVATIONS:
        raise ValueError(f"activation must be one of {tuple(HF_ACTIVATIONS)}, got {name!r}")
    return HF_ACTIVATIONS[name]


def _require(hf_config: object, name: str, value: object) -> None:
    got = getattr(hf_config, name, value)  # an attribute the config lacks has its default
    if got is None and name == "position_embedding_type":
        got = value
    if got != value:
        raise ValueError(f"{name} must be {value!r} to load into our model, got {got!r}")


def _strip_prefix(state_dict: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of names to tensors, got {state_dict!r}")
    return {k.removeprefix(prefix): v for k, v in state_dict.items()}


def _taker(sd: dict[str, Tensor], kind: str, cfg: TransformerConfig) -> Callable[[str], Tensor]:
    """``take(name)`` removes and returns ``sd[name]``, or explains that it is missing."""
    if not isinstance(cfg, TransformerConfig):
        raise TypeError(f"cfg must be a TransformerConfig, got {type(cfg).__name__}")

    def take(name: str) -> Tensor:
        if name not in sd:
            raise ValueError(
                f"state_dict has no entry {name!r}: is it a {kind} state dict matching "
                f"cfg (n_layers={cfg.n_layers})?"
            )
        return sd.pop(name)

    return take


def _no_leftovers(sd: dict[str, Tensor], kind: str, ignore: tuple[str, ...] = ()) -> None:
    left = sorted(k for k in sd if not k.endswith(ignore)) if ignore else sorted(sd)
    if left:
        raise ValueError(
            f"state_dict has entries a {kind} of this config does not use: {left[:5]}"
            f"{' ...' if len(left) > 5 else ''} (more layers than cfg.n_layers?)"
        )


def _pair(take: Callable[[str], Tensor], name: str) -> tuple[Tensor, Tensor]:
    """The weight and the bias stored under ``name``."""
    return take(name + ".weight"), take(name + ".bias")


def _linear(prefix: str, weight: Tensor, bias: Tensor) -> dict[str, Tensor]:
    """Our names for a weight and a bias (of an ``nn.Linear`` or a LayerNorm)."""
    return {f"{prefix}.weight": weight, f"{prefix}.bias": bias}
