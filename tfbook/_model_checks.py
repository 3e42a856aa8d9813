"""The input checks of :mod:`tfbook.model`, out of the reader's way (chapter 6, private).

A model checks what it is given once, in its own ``forward`` (``if self.check_inputs:``), and
then runs layers that trust it (:func:`tfbook._validate.skip_inner_checks`). Every function
here returns nothing: it raises a ``TypeError`` or ``ValueError`` naming the argument, what
was expected and what was given, or lets the call go on. What a forward needs (the number of
cached positions, the default token types, the masks) it computes itself, in view.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

from tfbook import _validate as check
from tfbook.caches import DecoderCache, LayerCache
from tfbook.feedforward import ACTIVATIONS

if TYPE_CHECKING:  # annotations only: tfbook.model imports this module
    from tfbook.model import Decoder, DecoderLayer, TransformerConfig

__all__ = [
    "POSITIONALS",
    "check_config",
    "check_ids",
    "check_embedding_inputs",
    "check_layer_inputs",
    "check_decoder_inputs",
    "check_stack_inputs",
    "check_bert_inputs",
    "check_gpt_inputs",
    "check_decode_inputs",
]

POSITIONALS: tuple[str, ...] = ("sinusoidal", "learned")


def check_config(cfg: TransformerConfig) -> None:
    """Every field of a :class:`tfbook.model.TransformerConfig`."""
    check.positive_int("vocab_size", cfg.vocab_size)
    check.positive_int("d_model", cfg.d_model)
    check.positive_int("n_heads", cfg.n_heads)
    check.divisible("d_model", cfg.d_model, "n_heads", cfg.n_heads)
    check.positive_int("d_ff", cfg.d_ff)
    check.positive_int("n_layers", cfg.n_layers)
    if cfg.n_decoder_layers is not None:
        check.positive_int("n_decoder_layers", cfg.n_decoder_layers)
    check.positive_int("max_len", cfg.max_len)
    check.probability("dropout", cfg.dropout)
    check.one_of("activation", cfg.activation, ACTIVATIONS)
    check.boolean("norm_first", cfg.norm_first)
    check.one_of("positional", cfg.positional, POSITIONALS)
    if cfg.positional == "sinusoidal" and cfg.d_model % 2:
        raise ValueError(
            "d_model must be even with positional='sinusoidal' (sine/cosine pairs), "
            f"got d_model={cfg.d_model}"
        )
    check.boolean("tie_weights", cfg.tie_weights)
    check.positive_float("eps", cfg.eps)
    check.nonneg_int("pad_id", cfg.pad_id)
    if cfg.pad_id >= cfg.vocab_size:
        raise ValueError(
            f"pad_id must be a token id in [0, vocab_size={cfg.vocab_size}), got {cfg.pad_id}"
        )
    check.nonneg_int("n_token_types", cfg.n_token_types)
    check.boolean("embed_norm", cfg.embed_norm)
    check.boolean("scale_embeddings", cfg.scale_embeddings)
    if cfg.final_norm is not None:
        check.boolean("final_norm", cfg.final_norm)


def check_ids(name: str, ids: object, cfg: TransformerConfig, start: object = 0) -> None:
    """Token ids ``(B, T)`` in ``[0, V)`` whose positions ``start .. start + T - 1`` fit."""
    check.token_ids(name, ids, cfg.vocab_size, dims=(2,), max_len=cfg.max_len)
    check.nonneg_int("start", start)
    if start + ids.shape[1] > cfg.max_len:
        raise ValueError(
            f"{name} must end by position max_len={cfg.max_len}: it holds T={ids.shape[1]} "
            f"positions after {start} already decoded (start + T <= max_len), got "
            f"start + T = {start + ids.shape[1]}"
        )


def check_embedding_inputs(
    cfg: TransformerConfig, ids: object, token_type_ids: object, start: object = 0
) -> None:
    """The ids and, for a model with segment embeddings, the token types."""
    check_ids("ids", ids, cfg, start)
    if cfg.n_token_types == 0:
        if token_type_ids is not None:
            raise ValueError(
                "token_type_ids must be None: this model has no segment embeddings "
                "(n_token_types=0), got a tensor"
            )
        return
    if token_type_ids is not None:
        check.token_ids("token_type_ids", token_type_ids, cfg.n_token_types, dims=(2,))
        ok = token_type_ids.shape == ids.shape
        check.shape("token_type_ids", token_type_ids, f"like ids {tuple(ids.shape)}", ok)


def _check_stream(name: str, x: object, d_model: int) -> None:
    ok = isinstance(x, Tensor) and x.dim() == 3 and x.shape[-1] == d_model
    check.shape(name, x, f"(B, T, d_model={d_model})", ok)


def check_layer_inputs(d_model: int, x: object, past: int = 0, **masks: object) -> None:
    """A stream ``x`` ``(B, T, d_model)`` and masks over ``past + T`` keys (``None``: no mask)."""
    _check_stream("x", x, d_model)
    for name, mask in masks.items():
        if mask is not None:
            check.attn_mask(name, mask, x.shape[0], x.shape[1], past + x.shape[1])


def _check_cache_batch(cache: DecoderCache | LayerCache, of: str, batch: int) -> None:
    caches = cache.layers[0].caches() if isinstance(cache, DecoderCache) else cache.caches()
    held = next((kv.keys.shape[0] for kv in caches if kv.keys is not None), None)
    if held is not None and held != batch:
        raise ValueError(f"cache must hold keys for the batch of {of} (B={batch}), got B={held}")


def check_decoder_inputs(
    layer: DecoderLayer,
    x: object,
    memory: object,
    self_mask: object,
    memory_mask: object,
    cache: object = None,
    is_causal: object = False,
) -> None:
    """A decoder layer's inputs: the stream, the memory, both masks and its cache."""
    if cache is not None and not isinstance(cache, LayerCache):
        raise TypeError(f"cache must be a LayerCache or None, got {type(cache).__name__}")
    if cache is not None and (cache.cross_attn is None) != (layer.cross_attn is None):
        raise ValueError(
            f"cache must match the layer: cross-attention {layer.cross_attn is not None}, "
            f"got a cache with cross-attention {cache.cross_attn is not None}"
        )
    check.boolean("is_causal", is_causal)
    if is_causal and self_mask is not None:
        raise ValueError("self_mask must be None with is_causal=True (one or the other)")
    past = 0 if cache is None else len(cache.self_attn)
    check_layer_inputs(layer.d_model, x, past, self_mask=self_mask)
    if cache is not None:
        _check_cache_batch(cache, "x", x.shape[0])
    if layer.cross_attn is None:
        if memory is not None or memory_mask is not None:
            raise ValueError(
                "memory and memory_mask must be None for a decoder without cross-attention "
                "(cross_attention=False, decoder-only), got a tensor"
            )
        return
    if memory is None:
        raise ValueError(
            "memory (the encoder's output, (B, T_k, d_model)) is required by a decoder with "
            "cross-attention, got None"
        )
    b, d = x.shape[0], layer.d_model
    ok = isinstance(memory, Tensor) and memory.dim() == 3 and memory.shape[::2] == (b, d)
    check.shape("memory", memory, f"(B={b}, T_k, d_model={d})", ok)
    if memory_mask is not None:
        check.attn_mask("memory_mask", memory_mask, b, x.shape[1], memory.shape[1])


def _check_decoder_cache(cache: object, n_layers: int, cross_attention: bool) -> None:
    if cache is None:
        return
    if not isinstance(cache, DecoderCache):
        raise TypeError(f"cache must be a DecoderCache or None, got {type(cache).__name__}")
    if len(cache.layers) != n_layers or cache.cross_attention != cross_attention:
        raise ValueError(
            f"cache must have one LayerCache per decoder layer ({n_layers}, cross-attention "
            f"{cross_attention}), got {len(cache.layers)} (cross-attention "
            f"{cache.cross_attention}): make it with model.new_cache()"
        )


def check_stack_inputs(
    decoder: Decoder,
    x: object,
    memory: object,
    self_mask: object,
    memory_mask: object,
    cache: object,
) -> None:
    """A decoder stack's inputs: as its first layer's, with a :class:`DecoderCache`."""
    _check_decoder_cache(cache, len(decoder.layers), decoder.cross_attention)
    first = None if cache is None else cache.layers[0]
    check_decoder_inputs(decoder.layers[0], x, memory, self_mask, memory_mask, first)


def check_bert_inputs(
    cfg: TransformerConfig, ids: object, token_type_ids: object, attention_mask: object
) -> None:
    """BERT's ids, token types and ``attention_mask`` (Hugging Face's ``(B, T)`` 0/1 or ours)."""
    check_embedding_inputs(cfg, ids, token_type_ids)
    if attention_mask is None:
        return
    b, t = ids.shape
    if isinstance(attention_mask, Tensor) and attention_mask.dim() == 3:
        check.attn_mask("attention_mask", attention_mask, b, t, t)
    else:
        check.key_mask("attention_mask", attention_mask, b, t)


def check_gpt_inputs(cfg: TransformerConfig, ids: object, cache: object) -> None:
    """GPT's ids and cache: the new positions must fit after the cached ones."""
    _check_decoder_cache(cache, cfg.n_layers, cross_attention=False)
    check_ids("ids", ids, cfg, start=0 if cache is None else len(cache))
    if cache is not None:
        _check_cache_batch(cache, "ids", ids.shape[0])


def check_decode_inputs(
    cfg: TransformerConfig, tgt: object, memory: object, src_ids: object, cache: object
) -> None:
    """An encoder-decoder's target ids, memory, source ids and cache."""
    _check_decoder_cache(cache, cfg.decoder_layers, cross_attention=True)
    check_ids("tgt", tgt, cfg, start=0 if cache is None else len(cache))
    b, d = tgt.shape[0], cfg.d_model
    ok = isinstance(memory, Tensor) and memory.dim() == 3 and memory.shape[::2] == (b, d)
    check.shape("memory", memory, f"(B={b}, T_k, d_model={d})", ok)
    if cache is not None:
        _check_cache_batch(cache, "tgt", b)
    if src_ids is not None:
        check_ids("src_ids", src_ids, cfg)
        if src_ids.shape != memory.shape[:2]:
            raise ValueError(
                f"src_ids must have shape (B, S) = memory's {tuple(memory.shape[:2])}, "
                f"got {tuple(src_ids.shape)}"
            )
