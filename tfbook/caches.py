"""The caches of incremental decoding: what a decoder keeps between steps (chapter 7).

A decoder that writes one token at a time would otherwise re-project the keys and values of
every earlier token at every step. :class:`tfbook.attention.KVCache` keeps them for one
attention module; this module groups those caches for whole decoder stacks:

- :class:`LayerCache`: one decoder layer's caches (self-attention, and cross-attention in an
  encoder-decoder model).
- :class:`DecoderCache`: one :class:`LayerCache` per layer of a stack; make one with
  ``model.new_cache()`` (:class:`tfbook.model.GPT`, :class:`tfbook.model.EncoderDecoder`) and
  pass it to every call. :mod:`tfbook.model` re-exports both names.
"""

from __future__ import annotations

from torch import Tensor

from tfbook import _validate as check
from tfbook.attention import KVCache

__all__ = ["LayerCache", "DecoderCache"]


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
        >>> import torch
        >>> from tfbook.model import GPT, TransformerConfig
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

    @property
    def batch_size(self) -> int | None:
        """The batch the cached keys belong to, or ``None`` while the cache is empty."""
        keys = self.layers[0].self_attn.keys
        if keys is None and self.cross_attention:
            keys = self.layers[0].cross_attn.keys
        return None if keys is None else keys.shape[0]

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
