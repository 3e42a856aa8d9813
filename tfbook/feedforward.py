"""The position-wise feed-forward network of a Transformer layer (chapter 5).

Every Transformer layer ends with the same small two-layer network, applied to each token
vector on its own:

.. math::

    \\mathrm{FFN}(x) = \\phi(x W_1 + b_1) W_2 + b_2,

with :math:`W_1 \\in \\mathbb{R}^{d_{\\text{model}} \\times d_{\\text{ff}}}`,
:math:`W_2 \\in \\mathbb{R}^{d_{\\text{ff}} \\times d_{\\text{model}}}` and a non-linearity
:math:`\\phi`: ReLU in the original paper, GELU in BERT and GPT.

Public API:

- :class:`PositionwiseFeedForward` ``(d_model, d_ff=None, activation="relu", dropout=0.0)``
- :data:`ACTIVATIONS`: the activation names it accepts.

The residual connection and the layer normalisation around it live in :mod:`tfbook.norm`
(:class:`tfbook.norm.ResidualSublayer`).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ACTIVATIONS", "PositionwiseFeedForward"]

#: Activation names accepted by :class:`PositionwiseFeedForward`: ``"relu"`` (the paper)
#: and ``"gelu"`` (exact GELU, :math:`x \Phi(x)`, as in BERT and GPT-2).
ACTIVATIONS: tuple[str, ...] = ("relu", "gelu")


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return value


def _check_probability(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float in [0, 1), got {type(value).__name__}")
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return float(value)


class PositionwiseFeedForward(nn.Module):
    """Two linear maps with a non-linearity between them, applied to every position alike.

    The same weights act on each token vector separately: no information moves between
    positions here (that is attention's job), so permuting the positions of the input
    permutes the output in the same way.

    Args:
        d_model: width of the token vectors (input and output).
        d_ff: hidden width; ``None`` gives ``4 * d_model`` (2048 for 512 in the paper).
        activation: ``"relu"`` (paper) or ``"gelu"`` (exact GELU, BERT and GPT).
        dropout: probability of zeroing a hidden unit during training (after the
            activation, as ``torch.nn.TransformerEncoderLayer`` does); 0 disables it.

    Shape:
        - Input: ``(..., d_model)``, typically ``(batch, seq, d_model)``.
        - Output: same shape as the input.

    Example:
        >>> ffn = PositionwiseFeedForward(16, 64, activation="gelu")
        >>> ffn(torch.zeros(2, 5, 16)).shape
        torch.Size([2, 5, 16])
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int | None = None,
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.d_model = _check_positive_int("d_model", d_model)
        self.d_ff = 4 * self.d_model if d_ff is None else _check_positive_int("d_ff", d_ff)
        if not isinstance(activation, str):
            raise TypeError(f"activation must be a str, got {type(activation).__name__}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.activation_name = activation
        self.linear1 = nn.Linear(self.d_model, self.d_ff)  # x W1 + b1
        self.activation = nn.ReLU() if activation == "relu" else nn.GELU()
        self.dropout = nn.Dropout(_check_probability("dropout", dropout))
        self.linear2 = nn.Linear(self.d_ff, self.d_model)  # h W2 + b2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the network to every position of ``x``.

        Args:
            x: token vectors, last axis ``d_model``.

        Returns:
            The transformed vectors, same shape as ``x``.

        Shape:
            - x: ``(..., d_model)``
            - output: ``(..., d_model)``
        """
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() == 0 or x.shape[-1] != self.d_model:
            raise ValueError(
                f"x must have shape (..., d_model={self.d_model}), got {tuple(x.shape)}"
            )
        h = self.activation(self.linear1(x))  # (..., d_ff): the expanded hidden layer
        return self.linear2(self.dropout(h))  # (..., d_model)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_ff={self.d_ff}, activation={self.activation_name!r}, "
            f"dropout={self.dropout.p}"
        )
