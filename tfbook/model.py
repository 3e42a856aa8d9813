"""The three families of Transformers: BERT, GPT and the encoder-decoder (chapter 6).

Chapter 6, "The encoder, the decoder and the three families", stacks the pieces of chapters 2-5
into whole models. The parts (config, embeddings, layers, stacks, output head) live in
:mod:`tfbook.layers` and are re-exported here; this module assembles them into the three
families, whose ``forward`` methods read like nanoGPT's, one line per step. The chapter checks
these models against ``torch.nn.Transformer`` and Hugging Face's BERT and GPT-2 by copying
their weights into ours: those conversions live in :mod:`tfbook.interop`, which this module
does not import.

Public API:

- The three families: :class:`BERT` (encoder-only, returns hidden vectors), :class:`GPT`
  (decoder-only, returns logits, causal) and :class:`EncoderDecoder` (the original Transformer).
- :func:`count_parameters`, :func:`meta_model` and :data:`PUBLISHED` (the published sizes).
- :func:`fuse_layer_norms` and :func:`written_out_layer_norms`: a model's LayerNorms computed
  by PyTorch's fused kernel (what these models use) or by chapter 5's written-out formula.
- Re-exported from :mod:`tfbook.layers`: :class:`TransformerConfig`, :class:`Embeddings`,
  :class:`EncoderLayer`, :class:`DecoderLayer`, :class:`Encoder`, :class:`Decoder`,
  :class:`LMHead`; from :mod:`tfbook.caches`: :class:`LayerCache`, :class:`DecoderCache`.
- Incremental decoding (chapter 7): ``GPT.forward`` and ``EncoderDecoder.decode`` take an
  optional ``cache`` (a :class:`DecoderCache`), and ``new_cache()`` makes an empty one. With a
  cache the ids passed are only the new tokens; their positions continue after the cached ones.

Checked once, at the boundary: each model checks its inputs in its own ``forward``
(``if self.check_inputs:``, the checks in ``tfbook._model_checks``) and its layers trust it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from tfbook import _validate as check
from tfbook._model_checks import check_bert_inputs, check_decode_inputs, check_gpt_inputs, check_ids
from tfbook.attention import padding_mask
from tfbook.caches import DecoderCache, LayerCache
from tfbook.layers import (
    Decoder,
    DecoderLayer,
    Embeddings,
    Encoder,
    EncoderLayer,
    LMHead,
    TransformerConfig,
)
from tfbook.norm import FusedLayerNorm, LayerNorm

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
    "written_out_layer_norms",
    "PUBLISHED",
    "LayerCache",
    "DecoderCache",
]


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

    check_inputs = True

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embeddings = Embeddings(cfg)
        self.encoder = Encoder(cfg)
        self.apply(_init_gpt_bert)
        check.skip_inner_checks(self)  # forward checks its inputs once

    def forward(
        self,
        ids: Tensor,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
    ) -> Tensor:
        if self.check_inputs:
            check_bert_inputs(self.cfg, ids, token_type_ids, attention_mask)
        mask = _as_key_mask(attention_mask)  # (B, 1, T) from Hugging Face's (B, T), or None
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

    check_inputs = True

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embeddings = Embeddings(cfg)
        self.decoder = Decoder(cfg, cross_attention=False)
        tied = self.embeddings.token.weight if cfg.tie_weights else None
        self.head = LMHead(cfg.d_model, cfg.vocab_size, tied_to=tied)
        self.apply(_init_gpt_bert)
        _scale_residual_projections(self.decoder, cfg.n_layers)  # GPT-2's 1 / sqrt(2N)
        check.skip_inner_checks(self)  # forward checks its inputs once

    def new_cache(self) -> DecoderCache:
        """An empty :class:`DecoderCache` for incremental decoding (see ``forward``)."""
        return self.decoder.new_cache()

    def forward(self, ids: Tensor, cache: DecoderCache | None = None) -> Tensor:
        if self.check_inputs:
            check_gpt_inputs(self.cfg, ids, cache)
        past = 0 if cache is None else len(cache)  # P: positions already in the cache
        x = self.embeddings(ids, start=past)  # (B, T, d_model): positions P .. P + T - 1
        x = self.decoder(x, cache=cache)  # (B, T, d_model): causal, token t reads 0..t
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

    check_inputs = True

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.src_embed = Embeddings(cfg)
        self.tgt_embed = self.src_embed if cfg.tie_weights else Embeddings(cfg)
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg, cross_attention=True)
        tied = self.tgt_embed.token.weight if cfg.tie_weights else None
        self.head = LMHead(cfg.d_model, cfg.vocab_size, tied_to=tied)
        check.skip_inner_checks(self)  # encode, decode and forward check their inputs once

    def source_mask(self, src: Tensor) -> Tensor:
        """Key mask of the real (non-``pad_id``) source tokens, ``(B, S) -> (B, 1, S)``."""
        return padding_mask(src, self.cfg.pad_id)

    def encode(self, src: Tensor) -> Tensor:
        """The encoder's output ``memory`` ``(B, S, d_model)`` for the source ``(B, S)``."""
        if self.check_inputs:
            check_ids("src", src, self.cfg)
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
        if self.check_inputs:
            check_decode_inputs(self.cfg, tgt, memory, src_ids, cache)
        past = 0 if cache is None else len(cache)  # P: target positions already cached
        memory_mask = None if src_ids is None else self.source_mask(src_ids)  # (B, 1, S)
        y = self.tgt_embed(tgt, start=past)  # (B, T, d_model): positions P .. P + T - 1
        y = self.decoder(y, memory, memory_mask=memory_mask, cache=cache)  # (B, T, d_model)
        return self.head(y)  # (B, T, V)

    def forward(self, src: Tensor, tgt: Tensor) -> Tensor:
        if self.check_inputs:
            check_ids("src", src, self.cfg)
            check_ids("tgt", tgt, self.cfg)
        src_mask = self.source_mask(src)  # (B, 1, S): the source padding, a key mask
        memory = self.encoder(self.src_embed(src), src_mask)  # (B, S, d_model): as encode
        y = self.decoder(self.tgt_embed(tgt), memory, memory_mask=src_mask)  # (B, T, d_model)
        return self.head(y)  # (B, T, V): as decode


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


# ------------------------------------------------------------------------------------ helpers


def fuse_layer_norms(model: nn.Module) -> nn.Module:
    """Swap every :class:`tfbook.norm.LayerNorm` of ``model`` for a
    :class:`tfbook.norm.FusedLayerNorm`.

    The models of this module already normalise with the fused kernel; this puts it into any
    other module built from chapter 5's written-out ``LayerNorm`` (a ``ResidualSublayer`` of
    your own, say). The new modules hold the *same* parameters under the same names (state
    dicts, tied weights and optimizers see no change) and compute the same function with one
    ``F.layer_norm`` kernel, equal up to float rounding (``tests/test_model.py`` checks a
    training step against the written-out formula). :func:`written_out_layer_norms` undoes it.

    Args:
        model: any module; changed in place.

    Returns:
        ``model``, for chaining.
    """
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is LayerNorm:
                setattr(parent, name, FusedLayerNorm.from_layer_norm(child))
    return model


def written_out_layer_norms(model: nn.Module) -> nn.Module:
    """Swap every :class:`tfbook.norm.FusedLayerNorm` of ``model`` for chapter 5's written-out
    :class:`tfbook.norm.LayerNorm`, sharing the same parameters (the inverse of
    :func:`fuse_layer_norms`): the same model, its normalisation computed step by step.

    Args:
        model: any module; changed in place.

    Returns:
        ``model``, for chaining: ``written_out_layer_norms(GPT(cfg))``.
    """
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is FusedLayerNorm:
                plain = LayerNorm(child.d_model, eps=child.eps)
                plain.weight, plain.bias = child.weight, child.bias  # the same Parameters
                plain.check_inputs = child.check_inputs
                setattr(parent, name, plain.train(child.training))
    return model


def _init_gpt_bert(module: nn.Module) -> None:
    """GPT-2's and BERT's initialisation: weights from N(0, 0.02^2), biases 0 (GPT then scales
    its residual projections down, :func:`_scale_residual_projections`)."""
    if isinstance(module, (nn.Linear, nn.Embedding)) or (
        isinstance(module, LMHead) and not module.tied
    ):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def _scale_residual_projections(stack: Decoder, n_layers: int) -> None:
    """GPT-2's initialisation of the two projections that write into the residual stream in
    each layer (attention's ``W^O``, the FFN's ``W_2``): N(0, (0.02 / sqrt(2N))^2), N layers.

    The stream is a sum of 2N such writes; scaling each by 1/sqrt(2N) keeps the variance of
    that sum at initialisation the same for any depth (Radford et al. 2019, section 2.3:
    "scale the weights of residual layers at initialization by a factor of 1/sqrt(N) where N
    is the number of residual layers"). Hugging Face's ``GPT2LMHeadModel`` does the same to
    its ``c_proj`` weights; ``tests/test_model.py`` compares the two.
    """
    std = 0.02 / math.sqrt(2 * n_layers)
    for layer in stack.layers:
        nn.init.normal_(layer.self_attn.sublayer.out_proj.weight, mean=0.0, std=std)
        nn.init.normal_(layer.ffn.sublayer.linear2.weight, mean=0.0, std=std)


def _as_key_mask(attention_mask: Tensor | None) -> Tensor | None:
    """BERT's ``attention_mask`` as the book's boolean mask: Hugging Face's ``(B, T)`` 0/1
    (1 = real token) becomes a key mask ``(B, 1, T)``; a 3-D boolean mask is used as given."""
    if attention_mask is None or attention_mask.dim() == 3:
        return attention_mask
    return attention_mask.bool()[:, None, :]  # (B, 1, T): shared by every query


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
