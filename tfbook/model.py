"""The encoder, the decoder and the three families of Transformers (chapter 6).

Chapter 6, "The encoder, the decoder and the three families", stacks the pieces of chapters 2-5
into whole models. The file reads top to bottom like nanoGPT's ``model.py``: a config, the
layers, the stacks, the output head, the three families; helpers and input checks sit at the
bottom. The chapter checks these models against ``torch.nn.Transformer`` and Hugging Face's BERT
and GPT-2 by copying their weights into ours: those conversions live in :mod:`tfbook.interop`,
which this module does not import.

Public API:

- :class:`TransformerConfig`: every size and switch of a model, validated on creation.
- :class:`Embeddings` ``(cfg)``: token (+ segment) + position vectors, ``(B, T)`` to
  ``(B, T, d_model)``.
- :class:`EncoderLayer` and :class:`DecoderLayer`: self-attention (+ cross-attention) + FFN,
  each sub-layer in a :class:`tfbook.norm.ResidualSublayer`.
- :class:`Encoder` and :class:`Decoder` ``(cfg)``: ``N`` layers and, for pre-LN, a final LayerNorm.
- :class:`LMHead`: hidden vectors to logits over the vocabulary, optionally tied to the embedding.
- The three families: :class:`BERT` (encoder-only, returns hidden vectors), :class:`GPT`
  (decoder-only, returns logits, causal) and :class:`EncoderDecoder` (the original Transformer).
- :func:`count_parameters`, :func:`meta_model` and :data:`PUBLISHED` (the published sizes).
- Incremental decoding (chapter 7): :class:`DecoderCache` (one :class:`LayerCache` per
  decoder layer, each holding :class:`tfbook.attention.KVCache` objects); ``GPT.forward``,
  ``EncoderDecoder.decode``, :class:`Decoder` and :class:`DecoderLayer` take an optional
  ``cache``, and ``new_cache()`` makes an empty one. With a cache the ids passed are only the
  new tokens; their positions continue after the cached ones.

Mask convention (as in chapter 4): boolean, ``True`` = may attend.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tfbook import _validate as check
from tfbook.attention import CrossAttention, KVCache, SelfAttention, causal_mask, padding_mask
from tfbook.embedding import TokenEmbedding
from tfbook.feedforward import ACTIVATIONS, PositionwiseFeedForward
from tfbook.norm import FusedLayerNorm, LayerNorm, ResidualSublayer
from tfbook.positional import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    sinusoidal_encoding,
)

__all__ = [
    "TransformerConfig",
    "Embeddings",
    "EncoderLayer",
    "DecoderLayer",
    "Encoder",
    "Decoder",
    "LMHead",
    "BERT",
    "GPT",
    "EncoderDecoder",
    "count_parameters",
    "meta_model",
    "fuse_layer_norms",
    "PUBLISHED",
    "LayerCache",
    "DecoderCache",
]

POSITIONALS: tuple[str, ...] = ("sinusoidal", "learned")


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
            :class:`EncoderDecoder` the source and target embeddings are shared as well).
        eps: every LayerNorm's epsilon (``1e-12`` in BERT).
        pad_id: the padding token; :class:`EncoderDecoder` masks it in the source.
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
        _check_config(self)

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
        self.norm = LayerNorm(d, eps=cfg.eps) if cfg.embed_norm else nn.Identity()
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, ids: Tensor, token_type_ids: Tensor | None = None, start: int = 0) -> Tensor:
        types = _check_embedding_inputs(self.cfg, ids, token_type_ids, start)
        x = self.token(ids)  # (B, T, d_model): a row of the embedding matrix per token
        if self.token_type is not None:
            x = x + self.token_type(types)  # (B, T, d_model): + segment A or B (BERT)
        x = _add_positions(self.position, x, start)  # (B, T, d_model): + positions start, ...
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

    Shape:
        - x: ``(B, T, d_model)``
        - mask: boolean, ``True`` = may attend: ``(T, T)``, ``(B, T, T)`` or ``(B, 1, T)``
        - output: ``(B, T, d_model)``

    Example:
        >>> layer = EncoderLayer(d_model=16, n_heads=4, d_ff=32)
        >>> layer(torch.randn(2, 5, 16)).shape
        torch.Size([2, 5, 16])
    """

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
        self.self_attn = ResidualSublayer(d_model, attention, norm_first, dropout, eps)
        self.ffn = ResidualSublayer(d_model, ffn, norm_first, dropout, eps)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        _check_layer_inputs(self.d_model, x, mask=mask)
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

    Shape:
        - x: ``(B, T, d_model)``; memory: ``(B, T_k, d_model)``
        - self_mask: ``(T, T)`` (usually :func:`tfbook.attention.causal_mask`) or ``(B, T, T)``;
          with a ``cache`` of ``P`` positions ``(T, P + T)`` (``causal_mask(T, past=P)``)
        - memory_mask: ``(B, 1, T_k)`` (the source padding) or ``(B, T, T_k)``
        - cache: a :class:`LayerCache` (incremental decoding, chapter 7), or ``None``
        - output: ``(B, T, d_model)``

    Note:
        No mask is applied unless one is given, as in PyTorch; :class:`Decoder` builds the
        causal mask itself.

    Example:
        >>> from tfbook.attention import causal_mask
        >>> layer = DecoderLayer(d_model=16, n_heads=4, d_ff=32)
        >>> y, memory = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
        >>> layer(y, memory, self_mask=causal_mask(5)).shape
        torch.Size([2, 5, 16])
    """

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
        self.self_attn = ResidualSublayer(d_model, attention, norm_first, dropout, eps)
        self.cross_attn = None
        if cross_attention:
            cross = CrossAttention(d_model, n_heads, dropout)
            self.cross_attn = ResidualSublayer(d_model, cross, norm_first, dropout, eps)
        self.ffn = ResidualSublayer(d_model, ffn, norm_first, dropout, eps)

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None = None,
        self_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        cache: LayerCache | None = None,
    ) -> Tensor:
        self_kv, memory_kv = _check_decoder_inputs(self, x, memory, self_mask, memory_mask, cache)
        x = self.self_attn(x, self_mask, cache=self_kv)  # (B, T, d_model): reads the tokens so far
        if self.cross_attn is not None:
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

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_encoder_layer(cfg) for _ in range(cfg.n_layers))
        self.norm = LayerNorm(cfg.d_model, eps=cfg.eps) if cfg.use_final_norm else nn.Identity()

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
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

    With a ``cache`` (a :class:`DecoderCache` from :meth:`new_cache`, chapter 7) ``x`` holds
    only the new positions; each layer appends their keys and values to its cache and attends
    over the cached past as well, and the default mask is ``causal_mask(T, past=len(cache))``.

    Shape:
        - x: ``(B, T, d_model)``; memory: ``(B, T_k, d_model)``
        - self_mask: ``(T, T)`` or ``(B, T, T)``, default :func:`tfbook.attention.causal_mask`
          (with a cache of ``P`` positions: ``(T, P + T)``)
        - memory_mask: ``(B, 1, T_k)`` or ``(B, T, T_k)``
        - output: ``(B, T, d_model)``

    Example:
        >>> cfg = TransformerConfig(vocab_size=10, d_model=16, n_heads=4, d_ff=32, n_layers=2)
        >>> Decoder(cfg)(torch.randn(2, 5, 16), memory=torch.randn(2, 7, 16)).shape
        torch.Size([2, 5, 16])
    """

    def __init__(self, cfg: TransformerConfig, cross_attention: bool = True) -> None:
        super().__init__()
        check.boolean("cross_attention", cross_attention)
        n = cfg.decoder_layers if cross_attention else cfg.n_layers
        self.d_model = cfg.d_model
        self.cross_attention = cross_attention
        self.layers = nn.ModuleList(_decoder_layer(cfg, cross_attention) for _ in range(n))
        self.norm = LayerNorm(cfg.d_model, eps=cfg.eps) if cfg.use_final_norm else nn.Identity()

    def new_cache(self) -> DecoderCache:
        """An empty :class:`DecoderCache` for this stack (one :class:`LayerCache` per layer)."""
        return DecoderCache(len(self.layers), self.cross_attention)

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None = None,
        self_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        cache: DecoderCache | None = None,
    ) -> Tensor:
        layer_caches = _layer_caches(self, cache)  # one LayerCache (or None) per layer
        self_mask = _default_causal(self.d_model, x, self_mask, cache)  # (T, P + T) unless given
        for layer, layer_cache in zip(self.layers, layer_caches, strict=True):
            x = layer(x, memory, self_mask, memory_mask, cache=layer_cache)  # (B, T, d_model)
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
        check.last_axis("h", h, self.d_model)
        return h @ self.weight.T  # (..., V): a score for every token of the vocabulary

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, vocab_size={self.vocab_size}, tied={self.tied}"


# ---------------------------------------------------------------------------------- families


class BERT(nn.Module):
    """Encoder-only (BERT): every token reads the whole sequence, in both directions.

    Returns one hidden vector per token. There is **no** output head inside: the encoder's
    output is not a vector of logits over the vocabulary (the Korean "Transformer from a top
    view" article the book follows says otherwise); a task adds its own head on top (an
    :class:`LMHead` for masked language modelling, chapter 7).
    Hugging Face's ``BertModel`` also has a "pooler" for the first token, which we leave out.

    Args:
        cfg: a :class:`TransformerConfig`, typically post-LN, ``activation="gelu"``,
            ``positional="learned"``, ``n_token_types=2``, ``embed_norm=True``,
            ``scale_embeddings=False`` (see ``PUBLISHED["bert-base"]``).

    Shape:
        - ids: ``(B, T)``; token_type_ids: ``(B, T)`` (default all 0)
        - attention_mask: ``(B, T)``, 1/``True`` = real token, 0/``False`` = padding (as in
          Hugging Face), or a boolean ``(B, T, T)`` / ``(B, 1, T)`` mask; default: no mask
        - output: ``(B, T, d_model)``

    Example:
        >>> cfg = TransformerConfig(vocab_size=10, d_model=16, n_heads=4, d_ff=32, n_layers=2)
        >>> BERT(cfg)(torch.tensor([[1, 2, 3]])).shape
        torch.Size([1, 3, 16])
    """

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embeddings = Embeddings(cfg)
        self.encoder = Encoder(cfg)
        self.apply(_init_gpt_bert)

    def forward(
        self,
        ids: Tensor,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
    ) -> Tensor:
        mask = _encoder_mask(self.cfg, ids, attention_mask)  # (B, 1, T) or None
        x = self.embeddings(ids, token_type_ids)  # (B, T, d_model)
        return self.encoder(x, mask)  # (B, T, d_model): hidden vectors, not logits


class GPT(nn.Module):
    """Decoder-only (GPT): a causal stack and a language-model head.

    Token ``t`` reads tokens ``0..t`` only, so the logits at position ``t`` score the token
    that comes *after* it and never depend on later tokens.

    Args:
        cfg: a :class:`TransformerConfig`, typically pre-LN, ``activation="gelu_tanh"``,
            ``positional="learned"``, ``scale_embeddings=False`` (``PUBLISHED["gpt2-small"]``).

    Attributes:
        head: the :class:`LMHead`, tied to the token embedding when ``cfg.tie_weights``.

    With ``cache=model.new_cache()`` (chapter 7) a call takes only the *new* tokens: the
    keys and values of the earlier ones are read from the cache, and the new tokens get the
    positions after them. Feeding a prompt and then one token at a time gives the same logits
    as running the whole sequence at once, with far less work per token.

    Shape:
        - ids: ``(B, T)`` with ``T <= max_len`` (with a cache of ``P`` positions:
          ``P + T <= max_len``)
        - output: ``(B, T, V)`` logits

    Example:
        >>> cfg = TransformerConfig(vocab_size=10, d_model=16, n_heads=4, d_ff=32, n_layers=2)
        >>> GPT(cfg)(torch.tensor([[1, 2, 3]])).shape
        torch.Size([1, 3, 10])
    """

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embeddings = Embeddings(cfg)
        self.decoder = Decoder(cfg, cross_attention=False)
        tied = self.embeddings.token.weight if cfg.tie_weights else None
        self.head = LMHead(cfg.d_model, cfg.vocab_size, tied_to=tied)
        self.apply(_init_gpt_bert)

    def new_cache(self) -> DecoderCache:
        """An empty :class:`DecoderCache` for incremental decoding (see ``forward``)."""
        return self.decoder.new_cache()

    def forward(self, ids: Tensor, cache: DecoderCache | None = None) -> Tensor:
        past = _check_cached_ids("ids", ids, self.cfg, cache)  # P: positions already cached
        x = self.embeddings(ids, start=past)  # (B, T, d_model): positions P .. P + T - 1
        mask = causal_mask(ids.shape[1], past=past, device=ids.device)  # (T, P + T): sees 0..t
        x = self.decoder(x, self_mask=mask, cache=cache)  # (B, T, d_model)
        return self.head(x)  # (B, T, V): logits for the next token at every position


class EncoderDecoder(nn.Module):
    """The original Transformer: the encoder reads the source, the decoder writes the target.

    ``encode`` turns the source into ``memory`` (one vector per source token), ``decode``
    reads the target so far (causally) and the memory (through cross-attention) and scores
    the next target token. Source padding (``cfg.pad_id``) is masked as a key in the
    encoder and in the cross-attention, so padding never changes the real positions. Target
    padding is not masked: it sits after the real tokens, which the causal mask already hides
    from them, and a training loss ignores the padded positions themselves.

    With ``cfg.tie_weights`` the source embedding, the target embedding and the output head
    share one matrix, as in the paper (one BPE vocabulary for both languages).

    Args:
        cfg: a :class:`TransformerConfig` (the defaults are the paper's base model).

    Shape:
        - src: ``(B, S)``; tgt: ``(B, T)``; memory: ``(B, S, d_model)``
        - output: ``(B, T, V)`` logits

    Example:
        >>> cfg = TransformerConfig(vocab_size=10, d_model=16, n_heads=4, d_ff=32, n_layers=2)
        >>> model = EncoderDecoder(cfg)
        >>> model(torch.tensor([[5, 6, 7, 0]]), torch.tensor([[1, 2]])).shape
        torch.Size([1, 2, 10])
    """

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.src_embed = Embeddings(cfg)
        self.tgt_embed = self.src_embed if cfg.tie_weights else Embeddings(cfg)
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg, cross_attention=True)
        tied = self.tgt_embed.token.weight if cfg.tie_weights else None
        self.head = LMHead(cfg.d_model, cfg.vocab_size, tied_to=tied)

    def source_mask(self, src: Tensor) -> Tensor:
        """Key mask of the real (non-``pad_id``) source tokens, ``(B, S) -> (B, 1, S)``."""
        return padding_mask(src, self.cfg.pad_id)

    def encode(self, src: Tensor) -> Tensor:
        """The encoder's output ``memory`` ``(B, S, d_model)`` for the source ``(B, S)``."""
        _check_ids("src", src, self.cfg)
        x = self.src_embed(src)  # (B, S, d_model)
        return self.encoder(x, self.source_mask(src))  # (B, S, d_model): the memory

    def new_cache(self) -> DecoderCache:
        """An empty :class:`DecoderCache` for incremental decoding (see :meth:`decode`)."""
        return self.decoder.new_cache()

    def decode(
        self,
        tgt: Tensor,
        memory: Tensor,
        src_ids: Tensor | None = None,
        cache: DecoderCache | None = None,
    ) -> Tensor:
        """Logits ``(B, T, V)`` for the target ``(B, T)`` given the ``memory``.

        ``src_ids`` ``(B, S)``, the source the memory came from, masks its padding in the
        cross-attention; without it every memory position is attended to.

        With ``cache=model.new_cache()`` (chapter 7) ``tgt`` holds only the new target
        tokens; the cache keeps the earlier ones' keys and values, and the memory's keys and
        values are projected on the first call only (pass the same ``memory`` every time).
        """
        memory_mask = _memory_mask(self, tgt, memory, src_ids, cache)  # (B, 1, S) or None
        past = 0 if cache is None else len(cache)  # P: target positions already cached
        self_mask = causal_mask(tgt.shape[1], past=past, device=tgt.device)  # (T, P + T)
        y = self.tgt_embed(tgt, start=past)  # (B, T, d_model): positions P .. P + T - 1
        y = self.decoder(y, memory, self_mask, memory_mask, cache=cache)  # (B, T, d_model)
        return self.head(y)  # (B, T, V)

    def forward(self, src: Tensor, tgt: Tensor) -> Tensor:
        memory = self.encode(src)  # (B, S, d_model)
        return self.decode(tgt, memory, src)  # (B, T, V)


# ------------------------------------------------------------------ incremental decoding


class LayerCache:
    """What one decoder layer keeps between decoding steps (chapter 7).

    Attributes:
        self_attn: a :class:`tfbook.attention.KVCache` of the target positions so far.
        cross_attn: a static :class:`tfbook.attention.KVCache` of the memory's keys and
            values (projected once), or ``None`` in a decoder-only stack.
    """

    def __init__(self, cross_attention: bool) -> None:
        self.self_attn = KVCache()
        self.cross_attn = KVCache(static=True) if cross_attention else None

    def caches(self) -> list[KVCache]:
        """The layer's :class:`~tfbook.attention.KVCache` objects."""
        return [c for c in (self.self_attn, self.cross_attn) if c is not None]


class DecoderCache:
    """Keys and values of a whole decoder stack, one :class:`LayerCache` per layer (chapter 7).

    Make one with ``model.new_cache()`` per generated batch and pass it to every call of
    ``GPT.forward`` / ``EncoderDecoder.decode``; it grows by the number of tokens fed.

    Args:
        n_layers: number of decoder layers.
        cross_attention: the layers have cross-attention (encoder-decoder).

    Shape:
        every cached tensor is ``(B, h, T_past, d_head)`` (``T_k`` source positions for the
        cross-attention caches)

    Example:
        >>> cfg = TransformerConfig(vocab_size=10, d_model=16, n_heads=4, d_ff=32, n_layers=2)
        >>> model, ids = GPT(cfg).eval(), torch.tensor([[1, 2, 3, 4]])
        >>> cache = model.new_cache()
        >>> first = model(ids[:, :3], cache=cache)  # the prompt: positions 0, 1, 2
        >>> last = model(ids[:, 3:], cache=cache)  # one new token: position 3
        >>> len(cache), torch.allclose(last[:, 0], model(ids)[:, 3], atol=1e-5)
        (4, True)
    """

    def __init__(self, n_layers: int, cross_attention: bool = False) -> None:
        check.positive_int("n_layers", n_layers)
        check.boolean("cross_attention", cross_attention)
        self.cross_attention = cross_attention
        self.layers = [LayerCache(cross_attention) for _ in range(n_layers)]

    def __len__(self) -> int:
        """Number of positions ``T_past`` decoded so far."""
        return len(self.layers[0].self_attn)

    def reorder(self, index: Tensor) -> None:
        """Keep the batch rows ``index`` in every layer (beam search: the surviving beams)."""
        for layer in self.layers:
            for kv in layer.caches():
                kv.reorder(index)

    def __repr__(self) -> str:
        return (
            f"DecoderCache(n_layers={len(self.layers)}, cross_attention={self.cross_attention}, "
            f"positions={len(self)})"
        )


# ---------------------------------------------------------------------------- parameter counts


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of parameters of ``model``, a tied (shared) parameter counted once.

    Args:
        model: any module (also one on the ``"meta"`` device, see :func:`meta_model`).
        trainable_only: count only parameters with ``requires_grad``.

    Example:
        >>> count_parameters(nn.Linear(3, 2))
        8
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    # parameters() yields a Parameter shared by several modules only once
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def meta_model(cls: type[nn.Module], cfg: TransformerConfig) -> nn.Module:
    """``cls(cfg)`` built on PyTorch's ``"meta"`` device: shapes without memory.

    A meta tensor has a shape and a dtype but no storage, so even a 124M-parameter model
    costs nothing to build; it is good for :func:`count_parameters`, not for running.

    Example:
        >>> model = meta_model(*PUBLISHED["gpt2-small"][:2])
        >>> count_parameters(model), model.head.weight.device.type
        (124439808, 'meta')
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"cls must be an nn.Module subclass, got {cls!r}")
    if not isinstance(cfg, TransformerConfig):
        raise TypeError(f"cfg must be a TransformerConfig, got {type(cfg).__name__}")
    with torch.device("meta"):
        return cls(cfg)


# ============================================================================================
# Helpers, out of the reader's way: building layers from a config, initialisation, checks,
# and copying weights from torch.nn.
# ============================================================================================


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


def fuse_layer_norms(model: nn.Module) -> nn.Module:
    """Swap every :class:`tfbook.norm.LayerNorm` of ``model`` for a
    :class:`tfbook.norm.FusedLayerNorm`.

    The fast path, chosen explicitly: the new modules hold the *same* parameters under the
    same names (state dicts, tied weights and optimizers see no change) and compute the same
    function with one ``F.layer_norm`` kernel, equal up to float rounding
    (``tests/test_model.py`` checks a training step against the written-out formula). The
    capstone's runs (chapter 8: :mod:`tfbook.run`, :mod:`tfbook.numbers`) train with it; the
    models of chapters 6 and 7 keep chapter 5's explicit ``LayerNorm``, so their results do
    not move by a rounding error.

    Args:
        model: any module; changed in place.

    Returns:
        ``model``, for chaining: ``fuse_layer_norms(GPT(cfg))``.
    """
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is LayerNorm:
                setattr(parent, name, FusedLayerNorm.from_layer_norm(child))
    return model


def _init_gpt_bert(module: nn.Module) -> None:
    """GPT-2's and BERT's initialisation: weights from N(0, 0.02^2), biases 0."""
    if isinstance(module, (nn.Linear, nn.Embedding)) or (
        isinstance(module, LMHead) and not module.tied
    ):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def _check_config(cfg: TransformerConfig) -> None:
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


def _check_ids(name: str, ids: object, cfg: TransformerConfig, start: int = 0) -> Tensor:
    check.token_ids(name, ids, cfg.vocab_size, dims=(2,), max_len=cfg.max_len)
    check.nonneg_int("start", start)
    if start + ids.shape[1] > cfg.max_len:
        raise ValueError(
            f"{name} must end by position max_len={cfg.max_len}: it holds T={ids.shape[1]} "
            f"positions after {start} already decoded (start + T <= max_len), got "
            f"start + T = {start + ids.shape[1]}"
        )
    return ids


def _check_cached_ids(
    name: str, ids: object, cfg: TransformerConfig, cache: DecoderCache | None
) -> int:
    """Check the ids (and the cache); return how many positions the cache already holds."""
    if cache is not None and not isinstance(cache, DecoderCache):
        raise TypeError(f"cache must be a DecoderCache or None, got {type(cache).__name__}")
    past = 0 if cache is None else len(cache)
    _check_ids(name, ids, cfg, start=past)
    return past


def _add_positions(position: nn.Module, x: Tensor, start: int) -> Tensor:
    """``x`` plus the position vectors of ``start .. start + T - 1`` (``start=0``: the module)."""
    if start == 0:
        return position(x)
    t = x.shape[1]
    if isinstance(position, LearnedPositionalEmbedding):
        rows = torch.arange(start, start + t, device=x.device)  # (T,)
        return x + position.table(rows).to(x.dtype)[None, :, :]  # (B, T, d_model)
    if x.dtype == torch.float64:  # as the module does: the cached table is float32
        pe = sinusoidal_encoding(start + t, position.d_model, position.base, dtype=torch.float64)
    else:
        pe = position.encoding(start + t)  # (start + T, d_model)
    return position.dropout(x + pe[start:].to(device=x.device, dtype=x.dtype)[None, :, :])


def _check_embedding_inputs(
    cfg: TransformerConfig, ids: object, token_type_ids: object, start: int = 0
) -> Tensor | None:
    """Check the ids; return the token types to look up (zeros by default), or None."""
    _check_ids("ids", ids, cfg, start)
    if cfg.n_token_types == 0:
        if token_type_ids is not None:
            raise ValueError(
                "token_type_ids must be None: this model has no segment embeddings "
                "(n_token_types=0), got a tensor"
            )
        return None
    if token_type_ids is None:
        return torch.zeros_like(ids)
    check.token_ids("token_type_ids", token_type_ids, cfg.n_token_types, dims=(2,))
    ok = token_type_ids.shape == ids.shape
    return check.shape("token_type_ids", token_type_ids, f"like ids {tuple(ids.shape)}", ok)


def _check_stream(name: str, x: object, d_model: int) -> Tensor:
    ok = isinstance(x, Tensor) and x.dim() == 3 and x.shape[-1] == d_model
    return check.shape(name, x, f"(B, T, d_model={d_model})", ok)


def _check_layer_inputs(d_model: int, x: object, past: int = 0, **masks: Tensor | None) -> None:
    _check_stream("x", x, d_model)
    for name, mask in masks.items():
        if mask is not None:
            check.attn_mask(name, mask, x.shape[0], x.shape[1], past + x.shape[1])


def _check_decoder_inputs(
    layer: DecoderLayer,
    x: object,
    memory: object,
    self_mask: Tensor | None,
    memory_mask: Tensor | None,
    cache: LayerCache | None = None,
) -> tuple[KVCache | None, KVCache | None]:
    """Check a decoder layer's inputs; return its self- and cross-attention caches (or None)."""
    if cache is not None and not isinstance(cache, LayerCache):
        raise TypeError(f"cache must be a LayerCache or None, got {type(cache).__name__}")
    if cache is not None and (cache.cross_attn is None) != (layer.cross_attn is None):
        raise ValueError(
            f"cache must match the layer: cross-attention {layer.cross_attn is not None}, "
            f"got a cache with cross-attention {cache.cross_attn is not None}"
        )
    past = 0 if cache is None else len(cache.self_attn)
    _check_layer_inputs(layer.d_model, x, past, self_mask=self_mask)
    kv = (None, None) if cache is None else (cache.self_attn, cache.cross_attn)
    if layer.cross_attn is None:
        if memory is not None or memory_mask is not None:
            raise ValueError(
                "memory and memory_mask must be None for a decoder without cross-attention "
                "(cross_attention=False, decoder-only), got a tensor"
            )
        return kv
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
    return kv


def _layer_caches(decoder: Decoder, cache: DecoderCache | None) -> list[LayerCache | None]:
    if cache is None:
        return [None] * len(decoder.layers)
    if not isinstance(cache, DecoderCache):
        raise TypeError(f"cache must be a DecoderCache or None, got {type(cache).__name__}")
    if len(cache.layers) != len(decoder.layers):
        raise ValueError(
            f"cache must have one LayerCache per decoder layer ({len(decoder.layers)}), "
            f"got {len(cache.layers)}: make it with model.new_cache()"
        )
    return cache.layers


def _default_causal(
    d_model: int, x: object, self_mask: Tensor | None, cache: DecoderCache | None = None
) -> Tensor:
    _check_stream("x", x, d_model)
    if self_mask is not None:
        return self_mask
    past = 0 if cache is None else len(cache)
    return causal_mask(x.shape[1], past=past, device=x.device)  # (T, P + T)


def _encoder_mask(cfg: TransformerConfig, ids: object, attention_mask: object) -> Tensor | None:
    """BERT's ``attention_mask``: HF-style ``(B, T)`` 0/1, or one of our boolean masks."""
    _check_ids("ids", ids, cfg)
    if attention_mask is None:
        return None
    b, t = ids.shape
    if isinstance(attention_mask, Tensor) and attention_mask.dim() == 3:
        return check.attn_mask("attention_mask", attention_mask, b, t, t)
    return check.key_mask("attention_mask", attention_mask, b, t)  # (B, 1, T)


def _memory_mask(
    model: EncoderDecoder,
    tgt: object,
    memory: object,
    src_ids: object,
    cache: DecoderCache | None = None,
) -> Tensor | None:
    _check_cached_ids("tgt", tgt, model.cfg, cache)
    if src_ids is None:
        return None
    _check_ids("src_ids", src_ids, model.cfg)
    if isinstance(memory, Tensor) and memory.dim() == 3 and src_ids.shape != memory.shape[:2]:
        raise ValueError(
            f"src_ids must have shape (B, S) = memory's {tuple(memory.shape[:2])}, "
            f"got {tuple(src_ids.shape)}"
        )
    return model.source_mask(src_ids)  # (B, 1, S)


# ------------------------------------------------------------------------- published models

#: Three published models, each ``name -> (class, config, published parameter count)``.
#:
#: ``count_parameters(meta_model(cls, cfg))`` against the published figure:
#:
#: - ``"transformer-base"`` (Vaswani et al. 2017, Table 3: "65M"): with the shared
#:   37,000-token BPE vocabulary of WMT English-German tied to both embeddings and the output
#:   layer we count 63,082,496 = 63.1M, 3% less. The paper does not say how it counted; the
#:   gap of 1.9M is the size of about 3,700 more vocabulary rows (the vocabulary is "about
#:   37000 tokens") and no detail of the architecture accounts for it. Untying the target
#:   embedding and the output layer would add 2 x 18.9M, far more than the gap: the figure
#:   confirms the three-way sharing.
#: - ``"bert-base"`` (Devlin et al. 2019: "110M"): our encoder with token, position and
#:   segment embeddings counts 108,891,648; Hugging Face's ``BertModel`` adds a pooler
#:   (768 x 768 + 768 = 590,592) for 109,482,240 = 109.5M, which the paper rounds to 110M.
#: - ``"gpt2-small"`` (Radford et al. 2019): 124,439,808 with the output head tied to the
#:   50,257-token embedding: the "124M" of OpenAI's release. The paper's table says 117M, a
#:   figure the openai/gpt-2 README calls wrong ("our original parameter counts were wrong
#:   due to an error").
PUBLISHED: dict[str, tuple[type[nn.Module], TransformerConfig, int]] = {
    "transformer-base": (
        EncoderDecoder,
        TransformerConfig(vocab_size=37000, d_model=512, n_heads=8, d_ff=2048, n_layers=6),
        65_000_000,
    ),
    "bert-base": (
        BERT,
        TransformerConfig(
            vocab_size=30522,
            d_model=768,
            n_heads=12,
            d_ff=3072,
            n_layers=12,
            max_len=512,
            activation="gelu",
            norm_first=False,
            positional="learned",
            tie_weights=False,
            eps=1e-12,
            n_token_types=2,
            embed_norm=True,
            scale_embeddings=False,
        ),
        110_000_000,
    ),
    "gpt2-small": (
        GPT,
        TransformerConfig(
            vocab_size=50257,
            d_model=768,
            n_heads=12,
            d_ff=3072,
            n_layers=12,
            max_len=1024,
            activation="gelu_tanh",
            norm_first=True,
            positional="learned",
            tie_weights=True,
            eps=1e-5,
            scale_embeddings=False,
        ),
        124_000_000,
    ),
}
