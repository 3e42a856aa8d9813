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
  with ``activation`` one of ``"relu"``, ``"gelu"``, ``"gelu_tanh"``
- :data:`ACTIVATIONS`: the activation names it accepts.

The residual connection and the layer normalisation around it live in :mod:`tfbook.norm`
(:class:`tfbook.norm.ResidualSublayer`).
"""

from __future__ import annotations

import torch
from torch import nn

from tfbook import _validate as check

__all__ = ["ACTIVATIONS", "PositionwiseFeedForward"]

#: Activation names accepted by :class:`PositionwiseFeedForward`: ``"relu"`` (the paper),
#: ``"gelu"`` (exact GELU, :math:`x \Phi(x)`, as in BERT) and ``"gelu_tanh"`` (GELU's tanh
#: approximation, the one GPT-2 was trained with).
ACTIVATIONS: tuple[str, ...] = ("relu", "gelu", "gelu_tanh")


class PositionwiseFeedForward(nn.Module):
    """Two linear maps with a non-linearity between them, applied to every position alike.

    The same weights act on each token vector separately: no information moves between
    positions here (that is attention's job), so permuting the positions of the input
    permutes the output in the same way.

    Args:
        d_model: width of the token vectors (input and output).
        d_ff: hidden width; ``None`` gives ``4 * d_model`` (2048 for 512 in the paper).
        activation: ``"relu"`` (paper), ``"gelu"`` (exact GELU, BERT) or ``"gelu_tanh"``
            (GPT-2's tanh approximation).
        dropout: probability of zeroing a hidden unit during training (after the
            activation, as ``torch.nn.TransformerEncoderLayer`` does); 0 disables it.

    Attributes:
        check_inputs: check ``x`` on every call (a model that checked its own inputs
            switches it off).

    Shape:
        - Input: ``(..., d_model)``, typically ``(B, T, d_model)``.
        - Output: same shape as the input.

    Example:
        >>> ffn = PositionwiseFeedForward(16, 64, activation="gelu")
        >>> ffn(torch.zeros(2, 5, 16)).shape
        torch.Size([2, 5, 16])
    """

    check_inputs = True

    def __init__(
        self,
        d_model: int,
        d_ff: int | None = None,
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.d_model = check.positive_int("d_model", d_model)
        self.d_ff = 4 * self.d_model if d_ff is None else check.positive_int("d_ff", d_ff)
        self.activation_name = check.one_of("activation", activation, ACTIVATIONS)
        self.linear1 = nn.Linear(self.d_model, self.d_ff)  # x W1 + b1
        self.activation = {
            "relu": nn.ReLU(),
            "gelu": nn.GELU(),
            "gelu_tanh": nn.GELU(approximate="tanh"),
        }[activation]
        self.dropout = nn.Dropout(check.probability("dropout", dropout))
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
        if self.check_inputs:
            check.last_axis("x", x, self.d_model)
        h = self.activation(self.linear1(x))  # (..., d_ff): the expanded hidden layer
        return self.linear2(self.dropout(h))  # (..., d_model)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_ff={self.d_ff}, activation={self.activation_name!r}, "
            f"dropout={self.dropout.p}"
        )
