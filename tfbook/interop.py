"""Other libraries' Transformers as ours: ``torch.nn`` and Hugging Face weights (chapter 6).

Chapter 6 checks its models against implementations we did not write: PyTorch's
``nn.TransformerEncoderLayer``, ``nn.TransformerDecoderLayer`` and ``nn.Transformer``, and
Hugging Face's GPT-2 and BERT. A trained model is a state dict, names to tensors, so loading
their weights into our modules is renaming (and, for GPT-2, transposing); if the outputs then
agree, our model computes the same function as theirs. Every conversion lives here, so
:mod:`tfbook.model` reads as the architecture only (it never imports this module). This module
never imports ``transformers`` either: it reads a config's attributes and a state dict.

Public API:

- ``torch.nn`` -> ours: :func:`encoder_layer_from_torch`, :func:`decoder_layer_from_torch`
  (an :class:`~tfbook.model.EncoderLayer` / :class:`~tfbook.model.DecoderLayer` with the
  weights of a PyTorch layer) and :func:`encoder_decoder_from_torch` (an
  :class:`~tfbook.model.EncoderDecoder` whose stacks hold an ``nn.Transformer``'s weights).
- Hugging Face -> ours: :func:`gpt_from_hf` and :func:`bert_from_hf` (a
  :class:`~tfbook.model.GPT` / :class:`~tfbook.model.BERT` from a ``transformers`` model);
  :func:`gpt_from_hf_state_dict` and :func:`bert_from_hf_state_dict` (from a state dict and our
  config); underneath, :func:`gpt2_config` / :func:`bert_config` (a
  :class:`~tfbook.model.TransformerConfig` from a ``GPT2Config`` / ``BertConfig``) and
  :func:`gpt2_state_dict` / :func:`bert_state_dict` (their state dict in our names);
  :data:`HF_ACTIVATIONS` maps their activation names to ours.

What differs from PyTorch: inputs are always batch-first, and masks mean "may attend" (convert
PyTorch's with :func:`tfbook.attention.mask_from_torch`). What differs from Hugging Face, by
design: one dropout rate instead of separate ones for attention and residuals (irrelevant in
``eval()`` mode), and no BERT pooler or pre-training heads (their weights are dropped).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tfbook.model import BERT, GPT, DecoderLayer, EncoderDecoder, EncoderLayer, TransformerConfig

__all__ = [
    "encoder_layer_from_torch",
    "decoder_layer_from_torch",
    "encoder_decoder_from_torch",
    "gpt_from_hf",
    "gpt_from_hf_state_dict",
    "bert_from_hf",
    "bert_from_hf_state_dict",
    "gpt2_config",
    "bert_config",
    "gpt2_state_dict",
    "bert_state_dict",
    "HF_ACTIVATIONS",
]


# ----------------------------------------------------------------------------- torch.nn -> ours


def encoder_layer_from_torch(layer: nn.TransformerEncoderLayer) -> EncoderLayer:
    """An :class:`~tfbook.model.EncoderLayer` with the weights of an ``nn.TransformerEncoderLayer``.

    Same dtype, device and train/eval mode as ``layer``. Inputs stay batch-first whatever
    ``layer.batch_first`` is; PyTorch's masks mean "blocked" where ours mean "may attend"
    (convert them with :func:`tfbook.attention.mask_from_torch`).

    Args:
        layer: the PyTorch layer (ReLU, GELU or tanh-GELU activation, with biases).

    Shape:
        As :class:`~tfbook.model.EncoderLayer`: ``(B, T, d_model)`` in and out.

    Raises:
        TypeError: ``layer`` is not an ``nn.TransformerEncoderLayer``.
        ValueError: an activation or option our layer does not have.

    Example:
        >>> theirs = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True)
        >>> ours = encoder_layer_from_torch(theirs)
        >>> x = torch.randn(2, 5, 16)
        >>> torch.allclose(ours(x), theirs(x), atol=1e-6)
        True
    """
    if not isinstance(layer, nn.TransformerEncoderLayer):
        raise TypeError(f"layer must be nn.TransformerEncoderLayer, got {type(layer).__name__}")
    ours = EncoderLayer(**_torch_layer_settings(layer))
    return _copy_torch(ours, _torch_layer_state(layer), layer)


def decoder_layer_from_torch(layer: nn.TransformerDecoderLayer) -> DecoderLayer:
    """A :class:`~tfbook.model.DecoderLayer` with the weights of an ``nn.TransformerDecoderLayer``.

    As :func:`encoder_layer_from_torch`: batch-first inputs, our mask convention, the same
    dtype, device and train/eval mode.

    Args:
        layer: the PyTorch layer (ReLU, GELU or tanh-GELU activation, with biases).

    Shape:
        As :class:`~tfbook.model.DecoderLayer`: x ``(B, T, d_model)``, memory
        ``(B, T_k, d_model)``, output ``(B, T, d_model)``.

    Raises:
        TypeError: ``layer`` is not an ``nn.TransformerDecoderLayer``.
        ValueError: an activation or option our layer does not have.

    Example:
        >>> from tfbook.attention import causal_mask
        >>> theirs = nn.TransformerDecoderLayer(16, 4, 32, dropout=0.0, batch_first=True)
        >>> ours = decoder_layer_from_torch(theirs)
        >>> y, memory = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
        >>> expected = theirs(y, memory, tgt_mask=~causal_mask(5))  # PyTorch: True = blocked
        >>> torch.allclose(ours(y, memory, self_mask=causal_mask(5)), expected, atol=1e-6)
        True
    """
    if not isinstance(layer, nn.TransformerDecoderLayer):
        raise TypeError(f"layer must be nn.TransformerDecoderLayer, got {type(layer).__name__}")
    ours = DecoderLayer(**_torch_layer_settings(layer))
    return _copy_torch(ours, _torch_layer_state(layer), layer)


def encoder_decoder_from_torch(
    transformer: nn.Transformer, vocab_size: int, **config
) -> EncoderDecoder:
    """An :class:`~tfbook.model.EncoderDecoder` whose stacks hold an ``nn.Transformer``'s weights.

    ``nn.Transformer`` has no embeddings and no output head: ours are freshly initialised
    (``vocab_size`` and ``**config``, e.g. ``max_len`` or ``pad_id``, configure them).
    The architecture is read from ``transformer``; note that ``nn.Transformer`` ends
    *both* stacks with a LayerNorm even in post-LN, unlike the paper, so the config gets
    ``final_norm=True``. Then ``model.encoder`` equals ``transformer.encoder`` and
    ``model.decoder`` equals ``transformer.decoder`` (batch-first; our mask convention).

    Args:
        transformer: the PyTorch model.
        vocab_size: the size of our embeddings and output head.
        **config: any other :class:`~tfbook.model.TransformerConfig` field that
            ``nn.Transformer`` does not define (``max_len``, ``pad_id``, ``positional``, ...).

    Shape:
        As :class:`~tfbook.model.EncoderDecoder`: src ``(B, S)``, tgt ``(B, T)``, output
        ``(B, T, V)``; ``model.encoder`` and ``model.decoder`` take the same
        ``(B, S, d_model)`` / ``(B, T, d_model)`` tensors as ``transformer``'s stacks.

    Raises:
        TypeError: ``transformer`` is not an ``nn.Transformer``.
        ValueError: an activation or option our model does not have, or a final norm on one
            stack only.

    Example:
        >>> theirs = nn.Transformer(16, 4, 2, 2, 32, dropout=0.0, batch_first=True)
        >>> model = encoder_decoder_from_torch(theirs, vocab_size=10, max_len=8)
        >>> model.cfg.final_norm, model.cfg.n_layers
        (True, 2)
        >>> src = torch.randn(2, 5, 16)
        >>> torch.allclose(model.encoder(src), theirs.encoder(src), atol=1e-6)
        True
    """
    if not isinstance(transformer, nn.Transformer):
        raise TypeError(f"transformer must be nn.Transformer, got {type(transformer).__name__}")
    settings = _torch_transformer_settings(transformer)
    model = EncoderDecoder(TransformerConfig(vocab_size=vocab_size, **settings, **config))
    _copy_torch(model, {}, transformer)  # dtype, device, mode; no weights yet
    _copy_torch(model.encoder, _torch_stack_state(transformer.encoder), transformer)
    _copy_torch(model.decoder, _torch_stack_state(transformer.decoder), transformer)
    return model


# ------------------------------------------------------------------------- Hugging Face -> ours

#: Hugging Face activation names -> ours (``gelu_new`` is GELU's tanh approximation).
HF_ACTIVATIONS: dict[str, str] = {
    "relu": "relu",
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
}


def gpt_from_hf(hf_model: nn.Module) -> GPT:
    """A :class:`~tfbook.model.GPT` with the weights of a Hugging Face GPT-2 model.

    :func:`gpt_from_hf_state_dict` with the config read from ``hf_model.config``
    (:func:`gpt2_config`); the model takes ``hf_model``'s dtype, device and train/eval mode.

    Args:
        hf_model: a ``transformers`` ``GPT2LMHeadModel`` or ``GPT2Model``.

    Shape:
        As :class:`~tfbook.model.GPT`: ids ``(B, T)``, logits ``(B, T, V)``, equal to
        ``hf_model(ids).logits``.

    Example:
        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> hf_config = GPT2Config(vocab_size=10, n_positions=8, n_embd=16, n_layer=2, n_head=4,
        ...                        bos_token_id=0, eos_token_id=0)
        >>> hf = GPT2LMHeadModel(hf_config).eval()
        >>> ours = gpt_from_hf(hf)
        >>> ids = torch.tensor([[1, 2, 3]])
        >>> torch.allclose(ours(ids), hf(ids).logits, atol=1e-5)
        True
    """
    cfg = gpt2_config(hf_model.config)
    return gpt_from_hf_state_dict(hf_model.state_dict(), cfg).train(hf_model.training)


def gpt_from_hf_state_dict(state_dict: Mapping[str, Tensor], cfg: TransformerConfig) -> GPT:
    """A :class:`~tfbook.model.GPT` holding the weights of a Hugging Face GPT-2 state dict.

    See :func:`gpt2_state_dict` for the name mapping (GPT-2's ``Conv1D`` weights are
    transposed). The model takes the weights' dtype and device.

    Args:
        state_dict: a ``GPT2LMHeadModel`` or ``GPT2Model`` state dict.
        cfg: our config for it, usually ``gpt2_config(hf_model.config)``.

    Shape:
        As :class:`~tfbook.model.GPT`: ids ``(B, T)``, logits ``(B, T, V)``.

    Raises:
        ValueError: a missing or unexpected entry (see :func:`gpt2_state_dict`).

    Example:
        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> hf_config = GPT2Config(vocab_size=10, n_positions=8, n_embd=16, n_layer=2, n_head=4,
        ...                        bos_token_id=0, eos_token_id=0)
        >>> state = GPT2LMHeadModel(hf_config).state_dict()  # e.g. from torch.load
        >>> model = gpt_from_hf_state_dict(state, gpt2_config(hf_config))
        >>> model(torch.tensor([[1, 2, 3]])).shape
        torch.Size([1, 3, 10])
    """
    return _load(GPT(cfg), gpt2_state_dict(state_dict, cfg))


def bert_from_hf(hf_model: nn.Module) -> BERT:
    """A :class:`~tfbook.model.BERT` with the weights of a Hugging Face BERT model.

    :func:`bert_from_hf_state_dict` with the config read from ``hf_model.config``
    (:func:`bert_config`); the model takes ``hf_model``'s dtype, device and train/eval mode.

    Args:
        hf_model: a ``transformers`` ``BertModel`` (or a ``BertFor...`` model: its pooler and
            heads are dropped).

    Shape:
        As :class:`~tfbook.model.BERT`: ids ``(B, T)``, hidden vectors ``(B, T, d_model)``,
        equal to ``hf_model(ids).last_hidden_state``.

    Example:
        >>> from transformers import BertConfig, BertModel
        >>> hf_config = BertConfig(vocab_size=10, hidden_size=16, num_hidden_layers=2,
        ...                        num_attention_heads=4, intermediate_size=32,
        ...                        max_position_embeddings=8)
        >>> hf = BertModel(hf_config).eval()
        >>> ours = bert_from_hf(hf)
        >>> ids = torch.tensor([[1, 2, 3]])
        >>> torch.allclose(ours(ids), hf(ids).last_hidden_state, atol=1e-5)
        True
    """
    cfg = bert_config(hf_model.config)
    return bert_from_hf_state_dict(hf_model.state_dict(), cfg).train(hf_model.training)


def bert_from_hf_state_dict(state_dict: Mapping[str, Tensor], cfg: TransformerConfig) -> BERT:
    """A :class:`~tfbook.model.BERT` holding the weights of a Hugging Face BERT state dict.

    See :func:`bert_state_dict` for the name mapping; the pooler and any pre-training heads
    are dropped. The model takes the weights' dtype and device.

    Args:
        state_dict: a ``BertModel`` state dict, or a ``BertFor...`` one (prefixed ``bert.``).
        cfg: our config for it, usually ``bert_config(hf_model.config)``.

    Shape:
        As :class:`~tfbook.model.BERT`: ids ``(B, T)``, hidden vectors ``(B, T, d_model)``.

    Raises:
        ValueError: a missing or unexpected entry (see :func:`bert_state_dict`).

    Example:
        >>> from transformers import BertConfig, BertModel
        >>> hf_config = BertConfig(vocab_size=10, hidden_size=16, num_hidden_layers=2,
        ...                        num_attention_heads=4, intermediate_size=32,
        ...                        max_position_embeddings=8)
        >>> state = BertModel(hf_config).state_dict()  # e.g. from torch.load
        >>> model = bert_from_hf_state_dict(state, bert_config(hf_config))
        >>> model(torch.tensor([[1, 2, 3]])).shape
        torch.Size([1, 3, 16])
    """
    return _load(BERT(cfg), bert_state_dict(state_dict, cfg))


def gpt2_config(hf_config: object) -> TransformerConfig:
    """Our config for a Hugging Face ``GPT2Config``: pre-LN, learned positions, tied head.

    Args:
        hf_config: a ``GPT2Config`` (only its attributes are read).

    Raises:
        ValueError: for GPT-2 options our model does not have (cross-attention,
            attention scaled by the layer index, no scaling by ``sqrt(d_head)``).

    Example:
        >>> from transformers import GPT2Config
        >>> cfg = gpt2_config(GPT2Config())  # GPT-2 small
        >>> cfg.d_model, cfg.n_layers, cfg.activation, cfg.norm_first
        (768, 12, 'gelu_tanh', True)
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

    Args:
        hf_config: a ``BertConfig`` (only its attributes are read).

    Raises:
        ValueError: for BERT options our model does not have (relative positions, a
            decoder).

    Example:
        >>> from transformers import BertConfig
        >>> cfg = bert_config(BertConfig())  # BERT-base
        >>> cfg.d_model, cfg.n_layers, cfg.norm_first, cfg.n_token_types, cfg.eps
        (768, 12, False, 2, 1e-12)
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

    Args:
        state_dict: the Hugging Face state dict (not changed).
        cfg: our config for it (its ``n_layers`` and ``tie_weights`` are read).

    Shape:
        ``c_attn.weight`` ``(d_model, 3 d_model)`` -> three ``(d_model, d_model)`` matrices;
        ``c_fc.weight`` ``(d_model, d_ff)`` -> ``linear1.weight`` ``(d_ff, d_model)``.

    Raises:
        ValueError: a missing or unexpected entry, or an untied ``lm_head`` for a tied config.

    Example:
        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> hf_config = GPT2Config(vocab_size=10, n_positions=8, n_embd=16, n_layer=2, n_head=4,
        ...                        bos_token_id=0, eos_token_id=0)
        >>> ours = gpt2_state_dict(GPT2LMHeadModel(hf_config).state_dict(), gpt2_config(hf_config))
        >>> ours["decoder.layers.0.ffn.sublayer.linear1.weight"].shape
        torch.Size([64, 16])
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

    Args:
        state_dict: the Hugging Face state dict (not changed).
        cfg: our config for it (its ``n_layers`` is read).

    Shape:
        Every tensor keeps its shape (``nn.Linear`` to ``nn.Linear``).

    Raises:
        ValueError: a missing or unexpected entry.

    Example:
        >>> from transformers import BertConfig, BertModel
        >>> hf_config = BertConfig(vocab_size=10, hidden_size=16, num_hidden_layers=2,
        ...                        num_attention_heads=4, intermediate_size=32,
        ...                        max_position_embeddings=8)
        >>> ours = bert_state_dict(BertModel(hf_config).state_dict(), bert_config(hf_config))
        >>> ours["encoder.layers.1.self_attn.sublayer.q_proj.weight"].shape
        torch.Size([16, 16])
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


# ------------------------------------------------------------------------ torch.nn helpers


def _torch_activation(fn: object) -> str:
    if fn is F.relu or isinstance(fn, nn.ReLU):
        return "relu"
    if fn is F.gelu or (isinstance(fn, nn.GELU) and fn.approximate == "none"):
        return "gelu"
    if isinstance(fn, nn.GELU) and fn.approximate == "tanh":
        return "gelu_tanh"
    raise ValueError(f"activation must be relu, gelu or gelu(approximate='tanh'), got {fn!r}")


def _torch_layer_settings(layer: nn.Module) -> dict:
    """Our constructor arguments for an ``nn.TransformerEncoderLayer`` / ``DecoderLayer``."""
    if layer.linear1.bias is None or layer.norm1.bias is None:
        raise ValueError("layers built with bias=False are not supported (our layers have biases)")
    settings = dict(
        d_model=layer.self_attn.embed_dim,
        n_heads=layer.self_attn.num_heads,
        d_ff=layer.linear1.out_features,
        dropout=layer.dropout.p,
        activation=_torch_activation(layer.activation),
        norm_first=layer.norm_first,
        eps=layer.norm1.eps,
    )
    if isinstance(layer, nn.TransformerDecoderLayer):
        settings["cross_attention"] = True
    return settings


def _torch_attention_state(prefix: str, mha: nn.MultiheadAttention) -> dict[str, Tensor]:
    if not mha._qkv_same_embed_dim:
        raise ValueError("attention with kdim/vdim != embed_dim is not supported")
    w_q, w_k, w_v = mha.in_proj_weight.detach().chunk(3)  # (d_model, d_model) each
    b_q, b_k, b_v = mha.in_proj_bias.detach().chunk(3)
    state = {"q_proj.weight": w_q, "k_proj.weight": w_k, "v_proj.weight": w_v}
    state |= {"q_proj.bias": b_q, "k_proj.bias": b_k, "v_proj.bias": b_v}
    state |= {"out_proj.weight": mha.out_proj.weight, "out_proj.bias": mha.out_proj.bias}
    return {f"{prefix}.{k}": v for k, v in state.items()}


def _torch_layer_state(layer: nn.Module) -> dict[str, Tensor]:
    """Our state dict for the weights of an ``nn.TransformerEncoderLayer`` / ``DecoderLayer``."""
    state = _torch_attention_state("self_attn.sublayer", layer.self_attn)
    state |= _linear("self_attn.norm", layer.norm1.weight, layer.norm1.bias)
    ffn_norm = layer.norm2
    if isinstance(layer, nn.TransformerDecoderLayer):  # norm2 follows the cross-attention
        state |= _torch_attention_state("cross_attn.sublayer", layer.multihead_attn)
        state |= _linear("cross_attn.norm", layer.norm2.weight, layer.norm2.bias)
        ffn_norm = layer.norm3
    for name in ("linear1", "linear2"):
        linear = getattr(layer, name)
        state |= _linear(f"ffn.sublayer.{name}", linear.weight, linear.bias)
    return state | _linear("ffn.norm", ffn_norm.weight, ffn_norm.bias)


def _torch_stack_state(stack: nn.Module) -> dict[str, Tensor]:
    """Our Encoder/Decoder state dict for an ``nn.TransformerEncoder`` / ``Decoder``."""
    state = {}
    for i, layer in enumerate(stack.layers):
        state |= {f"layers.{i}.{k}": v for k, v in _torch_layer_state(layer).items()}
    if stack.norm is not None:
        state |= _linear("norm", stack.norm.weight, stack.norm.bias)
    return state


def _torch_transformer_settings(transformer: nn.Transformer) -> dict:
    """Our config fields for the architecture of an ``nn.Transformer``."""
    enc, dec = transformer.encoder, transformer.decoder
    if (enc.norm is None) != (dec.norm is None):
        raise ValueError("the encoder and the decoder must both have a final norm, or neither")
    layer = _torch_layer_settings(enc.layers[0])
    del layer["d_model"], layer["n_heads"], layer["d_ff"]
    return dict(
        d_model=transformer.d_model,
        n_heads=transformer.nhead,
        d_ff=enc.layers[0].linear1.out_features,
        n_layers=len(enc.layers),
        n_decoder_layers=len(dec.layers),
        final_norm=enc.norm is not None,
        **layer,
    )


def _copy_torch(ours: nn.Module, state: dict[str, Tensor], theirs: nn.Module) -> nn.Module:
    """Load ``state`` into ``ours`` with the dtype, device and train/eval mode of ``theirs``."""
    ref = next(theirs.parameters())
    ours.to(device=ref.device, dtype=ref.dtype)
    if state:
        with torch.no_grad():
            ours.load_state_dict({k: v.detach() for k, v in state.items()}, strict=True)
    return ours.train(theirs.training)


# --------------------------------------------------------------------- Hugging Face helpers


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


def _load(model: nn.Module, state: dict[str, Tensor]) -> nn.Module:
    """Load a complete converted state dict; the model takes the weights' dtype and device."""
    first = next(iter(state.values()))
    model = model.to(device=first.device, dtype=first.dtype)
    model.load_state_dict(state, strict=True)
    return model
