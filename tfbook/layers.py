"""The parts of a Transformer: config, embeddings, layers, stacks, output head (chapter 6).

Chapter 6, "The encoder, the decoder and the three families", stacks the pieces of chapters 2-5
into whole models. This module holds the parts, top to bottom like nanoGPT's ``model.py``: a
config, the embeddings, the encoder and decoder layers, the stacks and the output head;
:mod:`tfbook.model` assembles them into the three families (and re-exports every name here,
so ``from tfbook.model import EncoderLayer`` works).

Public API:

- :class:`TransformerConfig`: every size and switch of a model, validated on creation.
- :class:`Embeddings` ``(cfg)``: token (+ segment) + position vectors, ``(B, T)`` to
  ``(B, T, d_model)``.
- :class:`EncoderLayer` and :class:`DecoderLayer`: self-attention (+ cross-attention) + FFN,
  each sub-layer in a :class:`tfbook.norm.ResidualSublayer`.
- :class:`Encoder` and :class:`Decoder` ``(cfg)``: ``N`` layers and, for pre-LN, a final LayerNorm.
- :class:`LMHead`: hidden vectors to logits over the vocabulary, optionally tied to the embedding.

Mask convention (as in chapter 4): boolean, ``True`` = may attend. The causal mask of a
decoder is never built here: the self-attention is told ``is_causal=True`` and builds it only
where PyTorch's fused kernel cannot do without it
(:meth:`tfbook.attention.MultiHeadAttention.forward`).

Checked once, at the boundary: a part used on its own checks its inputs in its ``forward``
(``if self.check_inputs:``, the checks in ``tfbook._model_checks``) and the layers it built
trust it; inside a model it does not look again.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tfbook import _validate as check
from tfbook._model_checks import (
    check_config,
    check_decoder_inputs,
    check_embedding_inputs,
    check_layer_inputs,
    check_stack_inputs,
)
from tfbook.attention import CrossAttention, SelfAttention
from tfbook.caches import DecoderCache, LayerCache
from tfbook.embedding import TokenEmbedding
from tfbook.feedforward import PositionwiseFeedForward
from tfbook.norm import FusedLayerNorm, ResidualSublayer
from tfbook.positional import LearnedPositionalEmbedding, SinusoidalPositionalEncoding

__all__ = [
    "TransformerConfig",
    "Embeddings",
    "EncoderLayer",
    "DecoderLayer",
    "Encoder",
    "Decoder",
    "LMHead",
]


# ------------------------------------------------------------------------------------ config


@dataclass
class TransformerConfig:
    """Sizes and switches of a Transformer; the defaults are the paper's base model.

    Args:
        vocab_size: number of tokens ``V``.
        d_model: width of every token vector.
        n_heads: attention heads ``h`` per layer; must divide ``d_model``.
        d_ff: hidden width of the feed-forward networks.
        n_layers: encoder layers, or the layers of a decoder-only stack.
        n_decoder_layers: decoder layers of an encoder-decoder model (``None``: ``n_layers``).
        max_len: the longest sequence the model accepts (rows of a learned position table).
        dropout: one dropout rate for the embeddings, the attention weights, the sub-layer
            outputs and the FFN's hidden layer.
        activation: the FFN's non-linearity, ``"relu"`` (paper), ``"gelu"`` (BERT) or
            ``"gelu_tanh"`` (GPT-2).
        norm_first: pre-LN (``True``, GPT-2) or post-LN (``False``, the paper and BERT).
        positional: ``"sinusoidal"`` (paper) or ``"learned"`` (BERT, GPT-2).
        tie_weights: the output head reuses the input embedding matrix (for
            :class:`~tfbook.model.EncoderDecoder` the source and target embeddings are
            shared as well).
        eps: every LayerNorm's epsilon (``1e-12`` in BERT).
        pad_id: the padding token; :class:`~tfbook.model.EncoderDecoder` masks it in the source.
        n_token_types: rows of BERT's segment ("token type") table; 0 = no such table.
        embed_norm: a LayerNorm right after the embeddings (BERT).
        scale_embeddings: multiply token vectors by ``sqrt(d_model)`` (the paper, section 3.4);
            BERT and GPT-2 do not.
        final_norm: a LayerNorm at the end of each stack. ``None`` means "when pre-LN" (in a
            pre-LN stack nothing else normalises the last layer's output). ``nn.Transformer``
            adds one even in post-LN, which is not in the paper: ``True`` reproduces it.

    Raises:
        TypeError, ValueError: naming the field, the expected and the given value.

    Example:
        >>> cfg = TransformerConfig(vocab_size=100, d_model=64, n_heads=4, d_ff=256)
        >>> cfg.d_head, cfg.decoder_layers
        (16, 6)
    """

    vocab_size: int
    d_model: int = 512
    n_heads: int = 8
    d_ff: int = 2048
    n_layers: int = 6  # encoder layers, or the decoder-only stack
    n_decoder_layers: int | None = None  # encoder-decoder only; None -> n_layers
    max_len: int = 512  # the longest sequence; rows of a learned position table
    dropout: float = 0.1
    activation: str = "relu"  # "relu" | "gelu" | "gelu_tanh"
    norm_first: bool = False  # pre-LN (True) / post-LN (False, the paper)
    positional: str = "sinusoidal"  # "sinusoidal" | "learned"
    tie_weights: bool = True  # output head shares the input embedding matrix
    eps: float = 1e-5
    pad_id: int = 0
    n_token_types: int = 0  # BERT's segment embeddings (0 = none)
    embed_norm: bool = False  # LayerNorm after the embeddings (BERT)
    scale_embeddings: bool = True  # token vectors * sqrt(d_model) (the paper)
    final_norm: bool | None = None  # LayerNorm after each stack; None -> norm_first

    def __post_init__(self) -> None:
        check_config(self)

    @property
    def d_head(self) -> int:
        """Width of one head, ``d_model / h``."""
        return self.d_model // self.n_heads

    @property
    def decoder_layers(self) -> int:
        """Layers of an encoder-decoder model's decoder."""
        return self.n_layers if self.n_decoder_layers is None else self.n_decoder_layers

    @property
    def use_final_norm(self) -> bool:
        """Whether each stack ends with a LayerNorm (``final_norm``, default ``norm_first``)."""
        return self.norm_first if self.final_norm is None else self.final_norm


# -------------------------------------------------------------------------------- embeddings


class Embeddings(nn.Module):
    """Token ids to the vectors the first layer reads: token + (segment) + position.

    ``x = dropout(norm(E[ids] * s + S[token_type_ids] + P[:T]))`` with ``s = sqrt(d_model)``
    when ``cfg.scale_embeddings``, ``S`` only when ``cfg.n_token_types > 0`` (BERT) and
    ``norm`` only when ``cfg.embed_norm`` (BERT).

    Args:
        cfg: the model's :class:`TransformerConfig`.

    Shape:
        - ids: ``(B, T)`` integers in ``[0, V)`` with ``T <= max_len``
        - token_type_ids: ``(B, T)`` integers in ``[0, n_token_types)`` (default all 0)
        - start: the position of the first token (default 0; incremental decoding passes the
          number of positions already decoded), ``start + T <= max_len``
        - output: ``(B, T, d_model)``

    Example:
        >>> emb = Embeddings(TransformerConfig(vocab_size=10, d_model=8, n_heads=2))
        >>> emb(torch.tensor([[1, 2, 3]])).shape
        torch.Size([1, 3, 8])
    """

    check_inputs = True

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.token = TokenEmbedding(cfg.vocab_size, d, scale=cfg.scale_embeddings)
        if cfg.positional == "sinusoidal":
            self.position = SinusoidalPositionalEncoding(d, cache_len=cfg.max_len)
        else:
            self.position = LearnedPositionalEmbedding(cfg.max_len, d)
        self.token_type = nn.Embedding(cfg.n_token_types, d) if cfg.n_token_types else None
        self.norm = FusedLayerNorm(d, eps=cfg.eps) if cfg.embed_norm else nn.Identity()
        self.dropout = nn.Dropout(cfg.dropout)
        check.skip_inner_checks(self)  # forward checks the ids once

    def forward(self, ids: Tensor, token_type_ids: Tensor | None = None, start: int = 0) -> Tensor:
        if self.check_inputs:
            check_embedding_inputs(self.cfg, ids, token_type_ids, start)
        x = self.token(ids)  # (B, T, d_model): a row of the embedding matrix per token
        if self.token_type is not None:
            types = torch.zeros_like(ids) if token_type_ids is None else token_type_ids  # (B, T)
            x = x + self.token_type(types)  # (B, T, d_model): + segment A (0, default) or B
        x = self.position(x, start=start)  # (B, T, d_model): + positions start .. start + T - 1
        return self.dropout(self.norm(x))  # (B, T, d_model)


# ------------------------------------------------------------------------------------ layers


class EncoderLayer(nn.Module):
    """One encoder layer: self-attention, then the feed-forward network.

    Each sub-layer sits in a :class:`tfbook.norm.ResidualSublayer`: post-LN
    ``x = norm(x + sublayer(x))`` (the paper) or pre-LN ``x = x + sublayer(norm(x))``.
    Same arguments and same function as ``torch.nn.TransformerEncoderLayer``
    (``batch_first=True``); :func:`tfbook.interop.encoder_layer_from_torch` copies its weights.

    Args:
        d_model: width of the token vectors.
        n_heads: number of attention heads ``h``.
        d_ff: hidden width of the feed-forward network.
        dropout: on the attention weights, the FFN's hidden layer and each sub-layer output.
        activation: ``"relu"``, ``"gelu"`` or ``"gelu_tanh"``.
        norm_first: pre-LN (``True``) or post-LN (``False``).
        eps: the LayerNorms' epsilon.

    Attributes:
        self_attn: ``ResidualSublayer`` around a :class:`tfbook.attention.SelfAttention`.
        ffn: ``ResidualSublayer`` around a :class:`tfbook.feedforward.PositionwiseFeedForward`.
        check_inputs: check ``x`` and ``mask`` on every call; a model switches it off (its
            own ``forward`` checked them), see ``tfbook._validate.skip_inner_checks``.

    Shape:
        - x: ``(B, T, d_model)``
        - mask: boolean, ``True`` = may attend: ``(T, T)``, ``(B, T, T)`` or ``(B, 1, T)``
        - output: ``(B, T, d_model)``

    Example:
        >>> layer = EncoderLayer(d_model=16, n_heads=4, d_ff=32)
        >>> layer(torch.randn(2, 5, 16)).shape
        torch.Size([2, 5, 16])
    """

    check_inputs = True

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        activation: str = "relu",
        norm_first: bool = False,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.d_model, self.n_heads = d_model, n_heads
        attention = SelfAttention(d_model, n_heads, dropout)
        ffn = PositionwiseFeedForward(d_model, d_ff, activation, dropout)
        self.self_attn = ResidualSublayer(d_model, attention, norm_first, dropout, eps, fused=True)
        self.ffn = ResidualSublayer(d_model, ffn, norm_first, dropout, eps, fused=True)
        check.skip_inner_checks(self)  # forward checks x and the mask once

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if self.check_inputs:
            check_layer_inputs(self.d_model, x, mask=mask)
        x = self.self_attn(x, mask)  # (B, T, d_model): every token reads every (allowed) token
        return self.ffn(x)  # (B, T, d_model): then each token is transformed on its own


class DecoderLayer(nn.Module):
    """One decoder layer: masked self-attention, cross-attention to the encoder, FFN.

    The queries of the cross-attention come from the decoder, its keys and values from the
    encoder's output ``memory``. With ``cross_attention=False`` the middle sub-layer is left
    out: that is a GPT block (and then it computes the same function as an
    :class:`EncoderLayer` under a causal mask). Same function as
    ``torch.nn.TransformerDecoderLayer`` (``batch_first=True``); see
    :func:`tfbook.interop.decoder_layer_from_torch`.

    Args:
        d_model, n_heads, d_ff, dropout, activation, norm_first, eps: as :class:`EncoderLayer`.
        cross_attention: include the cross-attention sub-layer.

    Attributes:
        self_attn: ``ResidualSublayer`` around a :class:`tfbook.attention.SelfAttention`.
        cross_attn: ``ResidualSublayer`` around a :class:`tfbook.attention.CrossAttention`,
            or ``None`` when ``cross_attention=False``.
        ffn: ``ResidualSublayer`` around a :class:`tfbook.feedforward.PositionwiseFeedForward`.
        check_inputs: check the inputs on every call (a model switches it off).

    Shape:
        - x: ``(B, T, d_model)``; memory: ``(B, T_k, d_model)``
        - self_mask: ``(T, T)`` (e.g. :func:`tfbook.attention.causal_mask`) or ``(B, T, T)``;
          with a ``cache`` of ``P`` positions ``(T, P + T)`` (``causal_mask(T, past=P)``)
        - memory_mask: ``(B, 1, T_k)`` (the source padding) or ``(B, T, T_k)``
        - cache: a :class:`~tfbook.caches.LayerCache` (incremental decoding, chapter 7), or ``None``
        - is_causal: ``True`` instead of a causal ``self_mask`` (what :class:`Decoder` passes)
        - output: ``(B, T, d_model)``

    Note:
        No mask is applied unless one is given (or ``is_causal=True``), as in PyTorch;
        :class:`Decoder` asks for causal self-attention itself.

    Example:
        >>> from tfbook.attention import causal_mask
        >>> layer = DecoderLayer(d_model=16, n_heads=4, d_ff=32)
        >>> y, memory = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
        >>> layer(y, memory, self_mask=causal_mask(5)).shape
        torch.Size([2, 5, 16])
    """

    check_inputs = True

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        activation: str = "relu",
        norm_first: bool = False,
        eps: float = 1e-5,
        cross_attention: bool = True,
    ) -> None:
        super().__init__()
        self.d_model, self.n_heads = d_model, n_heads
        check.boolean("cross_attention", cross_attention)
        attention = SelfAttention(d_model, n_heads, dropout)
        ffn = PositionwiseFeedForward(d_model, d_ff, activation, dropout)
        self.self_attn = ResidualSublayer(d_model, attention, norm_first, dropout, eps, fused=True)
        self.cross_attn = None
        if cross_attention:
            cross = CrossAttention(d_model, n_heads, dropout)
            self.cross_attn = ResidualSublayer(d_model, cross, norm_first, dropout, eps, fused=True)
        self.ffn = ResidualSublayer(d_model, ffn, norm_first, dropout, eps, fused=True)
        check.skip_inner_checks(self)  # forward checks its inputs once

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None = None,
        self_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        cache: LayerCache | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        if self.check_inputs:
            check_decoder_inputs(self, x, memory, self_mask, memory_mask, cache, is_causal)
        self_kv = None if cache is None else cache.self_attn  # keys and values of the past
        x = self.self_attn(x, self_mask, cache=self_kv, is_causal=is_causal)  # (B, T, d_model)
        if self.cross_attn is not None:
            memory_kv = None if cache is None else cache.cross_attn  # the memory's, once
            x = self.cross_attn(x, memory, memory_mask, cache=memory_kv)  # reads the source
        return self.ffn(x)  # (B, T, d_model)


# ------------------------------------------------------------------------------------ stacks


class Encoder(nn.Module):
    """``cfg.n_layers`` encoder layers, then a LayerNorm when ``cfg.use_final_norm``.

    Args:
        cfg: the model's :class:`TransformerConfig`.

    Shape:
        - x: ``(B, T, d_model)``; mask: as :class:`EncoderLayer` (e.g. ``(B, 1, T)`` padding)
        - output: ``(B, T, d_model)``, one hidden vector per token (not logits)

    Example:
        >>> cfg = TransformerConfig(vocab_size=10, d_model=16, n_heads=4, d_ff=32, n_layers=2)
        >>> Encoder(cfg)(torch.randn(2, 5, 16)).shape
        torch.Size([2, 5, 16])
    """

    check_inputs = True

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.d_model = cfg.d_model
        self.layers = nn.ModuleList(_encoder_layer(cfg) for _ in range(cfg.n_layers))
        self.norm = (
            FusedLayerNorm(cfg.d_model, eps=cfg.eps) if cfg.use_final_norm else nn.Identity()
        )
        check.skip_inner_checks(self)  # forward checks x and the mask once

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if self.check_inputs:
            check_layer_inputs(self.d_model, x, mask=mask)
        for layer in self.layers:
            x = layer(x, mask)  # (B, T, d_model)
        return self.norm(x)  # (B, T, d_model): pre-LN leaves the last sum unnormalised


class Decoder(nn.Module):
    """A stack of decoder layers, then a LayerNorm when ``cfg.use_final_norm``.

    With ``cross_attention=True`` (encoder-decoder) it has ``cfg.decoder_layers`` layers that
    read ``memory``; with ``cross_attention=False`` (decoder-only, GPT) it has
    ``cfg.n_layers`` layers and no memory. The self-attention is causal unless ``self_mask``
    says otherwise: a given ``self_mask`` replaces the causal mask (combine a target padding
    mask with it yourself: ``pad & causal_mask(T)``).

    Args:
        cfg: the model's :class:`TransformerConfig`.
        cross_attention: give every layer a cross-attention sub-layer.

    With a ``cache`` (a :class:`~tfbook.caches.DecoderCache` from :meth:`new_cache`, chapter 7)
    ``x`` holds only the new positions; each layer appends their keys and values to its cache
    and attends over the cached past as well (causally: new position ``i`` sees the past and
    ``0 .. i``).

    Shape:
        - x: ``(B, T, d_model)``; memory: ``(B, T_k, d_model)``
        - self_mask: ``(T, T)`` or ``(B, T, T)``; default ``None``, causal attention
          (with a cache of ``P`` positions a given mask is ``(T, P + T)``)
        - memory_mask: ``(B, 1, T_k)`` or ``(B, T, T_k)``
        - output: ``(B, T, d_model)``

    Example:
        >>> cfg = TransformerConfig(vocab_size=10, d_model=16, n_heads=4, d_ff=32, n_layers=2)
        >>> Decoder(cfg)(torch.randn(2, 5, 16), memory=torch.randn(2, 7, 16)).shape
        torch.Size([2, 5, 16])
    """

    check_inputs = True

    def __init__(self, cfg: TransformerConfig, cross_attention: bool = True) -> None:
        super().__init__()
        check.boolean("cross_attention", cross_attention)
        n = cfg.decoder_layers if cross_attention else cfg.n_layers
        self.d_model = cfg.d_model
        self.cross_attention = cross_attention
        self.layers = nn.ModuleList(_decoder_layer(cfg, cross_attention) for _ in range(n))
        self.norm = (
            FusedLayerNorm(cfg.d_model, eps=cfg.eps) if cfg.use_final_norm else nn.Identity()
        )
        check.skip_inner_checks(self)  # forward checks its inputs once

    def new_cache(self) -> DecoderCache:
        """An empty :class:`~tfbook.caches.DecoderCache` for this stack.

        It holds one :class:`~tfbook.caches.LayerCache` per layer.
        """
        return DecoderCache(len(self.layers), self.cross_attention)

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None = None,
        self_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        cache: DecoderCache | None = None,
    ) -> Tensor:
        if self.check_inputs:
            check_stack_inputs(self, x, memory, self_mask, memory_mask, cache)
        causal = self_mask is None  # the default: token t reads tokens 0..t (and the cached past)
        layer_caches = cache.layers if cache is not None else [None] * len(self.layers)
        for layer, layer_cache in zip(self.layers, layer_caches, strict=True):
            x = layer(x, memory, self_mask, memory_mask, layer_cache, is_causal=causal)  # (B, T, d)
        return self.norm(x)  # (B, T, d_model)


# -------------------------------------------------------------------------------------- head


class LMHead(nn.Module):
    """Hidden vectors to logits over the vocabulary: ``logits = h W^T`` with ``W`` ``(V, d_model)``.

    With ``tied_to`` the head *is* the embedding matrix (the same ``nn.Parameter``, so the
    same storage and one gradient): the paper's "same weight matrix between the embedding
    layers and the pre-softmax linear transformation"; GPT-2 does the same. It saves
    ``V * d_model`` parameters. No bias, as in GPT-2.

    Args:
        d_model: width of the hidden vectors.
        vocab_size: number of tokens ``V``.
        tied_to: an embedding weight ``(V, d_model)`` to share, or ``None`` for a new matrix.

    Shape:
        - h: ``(..., d_model)``
        - output: ``(..., V)``, unnormalised logits (a softmax gives probabilities)

    Example:
        >>> emb = nn.Embedding(10, 16)
        >>> head = LMHead(16, 10, tied_to=emb.weight)
        >>> head.weight is emb.weight, head(torch.randn(2, 5, 16)).shape
        (True, torch.Size([2, 5, 10]))
    """

    check_inputs = True

    def __init__(self, d_model: int, vocab_size: int, tied_to: nn.Parameter | None = None) -> None:
        super().__init__()
        self.d_model = check.positive_int("d_model", d_model)
        self.vocab_size = check.positive_int("vocab_size", vocab_size)
        self.tied = tied_to is not None
        if tied_to is None:
            self.weight = nn.Parameter(torch.empty(vocab_size, d_model))
            nn.init.normal_(self.weight, std=d_model**-0.5)
        else:
            ok = isinstance(tied_to, nn.Parameter) and tuple(tied_to.shape) == (vocab_size, d_model)
            check.shape("tied_to", tied_to, f"(V={vocab_size}, d_model={d_model})", ok)
            self.weight = tied_to  # the same Parameter object: tied, counted once

    def forward(self, h: Tensor) -> Tensor:
        if self.check_inputs:
            check.last_axis("h", h, self.d_model)
        return h @ self.weight.T  # (..., V): a score for every token of the vocabulary

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, vocab_size={self.vocab_size}, tied={self.tied}"


# ------------------------------------------------------------------------------------ helpers


def _layer_kwargs(cfg: TransformerConfig) -> dict:
    return dict(
        d_model=cfg.d_model,
        n_heads=cfg.n_heads,
        d_ff=cfg.d_ff,
        dropout=cfg.dropout,
        activation=cfg.activation,
        norm_first=cfg.norm_first,
        eps=cfg.eps,
    )


def _encoder_layer(cfg: TransformerConfig) -> EncoderLayer:
    return EncoderLayer(**_layer_kwargs(cfg))


def _decoder_layer(cfg: TransformerConfig, cross_attention: bool) -> DecoderLayer:
    return DecoderLayer(**_layer_kwargs(cfg), cross_attention=cross_attention)
