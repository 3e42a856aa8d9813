"""Layer normalisation and the residual sub-layer around it (chapter 5).

Layer normalisation rescales each token vector to mean 0 and variance 1 over its
``d_model`` features, then applies a learned gain and bias:

.. math::

    \\mathrm{LN}(x) = \\gamma \\odot \\frac{x - \\mu}{\\sqrt{\\sigma^2 + \\epsilon}} + \\beta,
    \\qquad \\mu = \\frac{1}{d}\\sum_i x_i,\\quad \\sigma^2 = \\frac{1}{d}\\sum_i (x_i - \\mu)^2.

Every sub-layer of a Transformer (self-attention, cross-attention, feed-forward) is wrapped
in a residual connection with a layer normalisation, in one of two orders:

- post-LN (the original paper): ``norm(x + dropout(sublayer(x)))``;
- pre-LN (GPT-2 and later; the Korean lecture slides the book follows draw it):
  ``x + dropout(sublayer(norm(x)))``.

Public API:

- :class:`LayerNorm` ``(d_model, eps=1e-5)``: layer normalisation written out, with the same
  parameter names (``weight``, ``bias``) as ``torch.nn.LayerNorm``.
- :class:`FusedLayerNorm` ``(d_model, eps=1e-5)``: the same module computed by PyTorch's fused
  kernel (``F.layer_norm``), the fast path; :meth:`FusedLayerNorm.from_layer_norm` turns a
  :class:`LayerNorm` into one that shares its parameters. Chapter 5 teaches the written-out
  :class:`LayerNorm`; the models of :mod:`tfbook.layers` and :mod:`tfbook.model` (chapters 6-8:
  BERT, GPT, the encoder-decoder, the capstone's GPT and Korean-number reader) normalise with
  this one, which computes the same function faster.
- :class:`ResidualSublayer` ``(d_model, sublayer, norm_first=True, dropout=0.0, eps=1e-5)``:
  the wrapper chapter 6 builds its encoder and decoder layers from.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tfbook import _validate as check

__all__ = ["LayerNorm", "FusedLayerNorm", "ResidualSublayer"]


class LayerNorm(nn.Module):
    """Layer normalisation over the last axis, written out step by step.

    Each token vector is normalised with its *own* mean and (biased) variance over its
    ``d_model`` features; nothing is shared across the batch or across positions, so the
    result is the same in training and in evaluation and for any batch size.
    Numerically equal to ``torch.nn.LayerNorm(d_model, eps=eps)``; the parameters have the
    same names, so state dicts load into either.

    Args:
        d_model: number of features normalised together (the last axis).
        eps: added to the variance before the square root, so a constant vector gives
            ``bias`` instead of a division by zero.

    Attributes:
        check_inputs: check ``x`` on every call (a model that checked its own inputs
            switches it off).

    Shape:
        - Input: ``(..., d_model)``, typically ``(B, T, d_model)``.
        - Output: same shape as the input.

    Example:
        >>> ln = LayerNorm(4)
        >>> y = ln(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
        >>> [round(v, 4) for v in y[0].tolist()]
        [-1.3416, -0.4472, 0.4472, 1.3416]
    """

    check_inputs = True

    def __init__(self, d_model: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.d_model = check.positive_int("d_model", d_model)
        self.eps = check.positive_float("eps", eps)
        self.weight = nn.Parameter(torch.ones(self.d_model))  # gamma, the gain
        self.bias = nn.Parameter(torch.zeros(self.d_model))  # beta, the shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise every vector along the last axis.

        Args:
            x: token vectors, last axis ``d_model``.

        Returns:
            The normalised vectors, same shape as ``x``.

        Shape:
            - x: ``(..., d_model)``
            - output: ``(..., d_model)``
        """
        if self.check_inputs:
            check.last_axis("x", x, self.d_model)
        mu = x.mean(dim=-1, keepdim=True)  # (..., 1): one mean per token
        var = x.var(dim=-1, unbiased=False, keepdim=True)  # (..., 1): biased, divides by d
        x_hat = (x - mu) / torch.sqrt(var + self.eps)  # (..., d_model)
        return self.weight * x_hat + self.bias

    def extra_repr(self) -> str:
        return f"{self.d_model}, eps={self.eps}"


class FusedLayerNorm(LayerNorm):
    """:class:`LayerNorm` computed by PyTorch's fused kernel: the fast path.

    The same parameters (``weight``, ``bias``), the same state dict and the same function as
    :class:`LayerNorm`; only the arithmetic is done by ``torch.nn.functional.layer_norm``, one
    kernel forward and one backward, instead of the five tensor operations of the written-out
    formula (mean, variance, subtract, divide, scale and shift), each of which reads the
    whole activation again and keeps an intermediate for the backward pass. The results agree
    up to float rounding (``tests/test_norm.py`` checks it); ``benchmarks/bench_capstone.py``
    times a training step of the capstone's GPT both ways.

    Chapter 5 teaches :class:`LayerNorm`, whose ``forward`` is the formula; the models of
    chapters 6-8 normalise with this class (``ResidualSublayer(..., fused=True)``), and
    :func:`tfbook.model.fuse_layer_norms` swaps it into any other model.

    Args:
        d_model: number of features normalised together (the last axis).
        eps: added to the variance before the square root.

    Shape:
        - Input: ``(..., d_model)``.
        - Output: same shape as the input.

    Example:
        >>> explicit, fused = LayerNorm(4), FusedLayerNorm(4)
        >>> x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
        >>> torch.allclose(fused(x), explicit(x))
        True
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`LayerNorm.forward`, in one fused kernel.

        Shape:
            - x: ``(..., d_model)``
            - output: ``(..., d_model)``
        """
        if self.check_inputs:
            check.last_axis("x", x, self.d_model)
        # = weight * (x - mu) / sqrt(var + eps) + bias, mu and var over the last axis
        return F.layer_norm(x, (self.d_model,), self.weight, self.bias, self.eps)

    @classmethod
    def from_layer_norm(cls, norm: LayerNorm) -> FusedLayerNorm:
        """A :class:`FusedLayerNorm` sharing ``norm``'s parameters (the same ``nn.Parameter``
        objects, so a state dict, an optimizer or a tied weight sees no difference).

        Raises:
            TypeError: when ``norm`` is not a :class:`LayerNorm`.
        """
        if not isinstance(norm, LayerNorm):
            raise TypeError(f"norm must be a tfbook.norm.LayerNorm, got {type(norm).__name__}")
        fused = cls(norm.d_model, eps=norm.eps)
        fused.weight, fused.bias = norm.weight, norm.bias  # the same Parameters, not copies
        fused.check_inputs = norm.check_inputs
        return fused.train(norm.training)


class ResidualSublayer(nn.Module):
    """A sub-layer with its residual connection, dropout and layer normalisation.

    With ``norm_first=True`` (pre-LN) the output is ``x + dropout(sublayer(norm(x)))``;
    with ``norm_first=False`` (post-LN, the original paper) it is
    ``norm(x + dropout(sublayer(x)))``. The residual is always added to the *input* ``x``,
    never to its normalised copy. These are the two orders ``torch.nn.TransformerEncoderLayer``
    offers under the same argument name.

    Extra positional and keyword arguments of :meth:`forward` go to the sub-layer
    unchanged (a mask, or the encoder output for cross-attention); only ``x`` is normalised.

    Args:
        d_model: width of the token vectors.
        sublayer: an ``nn.Module`` mapping ``(B, T, d_model)`` to the same shape,
            called as ``sublayer(x_in, *args, **kwargs)``.
        norm_first: ``True`` for pre-LN, ``False`` for post-LN.
        dropout: probability of zeroing an entry of the sub-layer's output during training,
            before it is added to the residual stream.
        eps: the layer normalisation's epsilon.
        fused: normalise with :class:`FusedLayerNorm` (PyTorch's one kernel, what the models of
            chapter 6 on use) instead of the written-out :class:`LayerNorm` (the default).

    Attributes:
        check_inputs: check ``x`` and the sub-layer's output on every call (a model whose
            layers are all its own switches it off).

    Shape:
        - Input: ``(B, T, d_model)`` (any leading axes work).
        - Output: same shape as the input.

    Example:
        >>> from tfbook.feedforward import PositionwiseFeedForward
        >>> block = ResidualSublayer(16, PositionwiseFeedForward(16), norm_first=True)
        >>> block(torch.zeros(2, 5, 16)).shape
        torch.Size([2, 5, 16])
    """

    check_inputs = True

    def __init__(
        self,
        d_model: int,
        sublayer: nn.Module,
        norm_first: bool = True,
        dropout: float = 0.0,
        eps: float = 1e-5,
        *,
        fused: bool = False,
    ) -> None:
        super().__init__()
        self.d_model = check.positive_int("d_model", d_model)
        if not isinstance(sublayer, nn.Module):
            raise TypeError(
                f"sublayer must be a torch.nn.Module (so its parameters are registered), "
                f"got {type(sublayer).__name__}"
            )
        if not isinstance(norm_first, bool):
            raise TypeError(f"norm_first must be a bool, got {type(norm_first).__name__}")
        self.sublayer = sublayer
        norm = FusedLayerNorm if check.boolean("fused", fused) else LayerNorm
        self.norm = norm(self.d_model, eps=eps)
        self.dropout = nn.Dropout(check.probability("dropout", dropout))
        self.norm_first = norm_first

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Apply the sub-layer with its residual connection.

        Args:
            x: the residual stream.
            *args: passed to the sub-layer after the (normalised) ``x``.
            **kwargs: passed to the sub-layer.

        Returns:
            The updated residual stream, same shape as ``x``.

        Shape:
            - x: ``(B, T, d_model)``
            - output: ``(B, T, d_model)``
        """
        if self.check_inputs:
            check.last_axis("x", x, self.d_model)
        if self.norm_first:
            # pre-LN: only the branch sees normalised vectors; the stream x is untouched
            return x + self.dropout(self._sublayer(self.norm(x), *args, **kwargs))
        # post-LN: add first, then normalise the sum (the stream itself is renormalised)
        return self.norm(x + self.dropout(self._sublayer(x, *args, **kwargs)))

    def _sublayer(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The sub-layer's output, checked to be shaped like ``x`` (unless inside a model)."""
        out = self.sublayer(x, *args, **kwargs)
        if self.check_inputs and (not isinstance(out, torch.Tensor) or out.shape != x.shape):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"sublayer must return a tensor shaped like its input {tuple(x.shape)}, got {got}"
            )
        return out

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, norm_first={self.norm_first}"
