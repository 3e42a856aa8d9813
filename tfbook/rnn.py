"""A recurrent network written from scratch, and the tools chapter 1 measures it with.

Introduced in chapter 1 (From RNNs to Transformers). The chapter runs a recurrent cell step by
step over a sequence, previews self-attention on the same sequence as one matrix product, and
measures the difference: wall time, gradients over distance, memory and the counts of Table 1
of "Attention Is All You Need".

Public API:

- :class:`RNNCell`: one step of an Elman recurrent network,
  ``h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)``; parameter names and shapes
  match ``torch.nn.RNNCell``.
- :class:`RNN`: the cell looped over a batch-first sequence; ``RNN.from_torch`` copies the
  weights of a one-layer ``torch.nn.RNN``.
- :func:`attention_preview`: parameter-free self-attention,
  ``softmax(X X^T / sqrt(d)) X``, all positions in one matrix product (chapter 4 adds the
  learned projections and heads).
- :func:`gradient_norms_by_distance`: how strongly the last output depends on the input
  ``k`` steps back, for every ``k``.
- :func:`matmul_depth` and :func:`matmul_path_length`: the longest chain of matrix products in
  an autograd graph (sequential operations) and the fewest matrix products between an input
  and an output (path length).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

import torch
from torch import Tensor, nn

from tfbook import _validate as check

__all__ = [
    "RNNCell",
    "RNN",
    "attention_preview",
    "gradient_norms_by_distance",
    "matmul_depth",
    "matmul_path_length",
]

_NONLINEARITIES: dict[str, Callable[[Tensor], Tensor]] = {"tanh": torch.tanh, "relu": torch.relu}


class RNNCell(nn.Module):
    """One step of an Elman recurrent network (순환 신경망).

    The new hidden state mixes the current input with the previous state and squashes the sum:

    ``h_t = f(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)``, with ``f`` = tanh (default) or ReLU.

    Parameters are named and shaped as in ``torch.nn.RNNCell`` (``weight_ih``, ``weight_hh``,
    ``bias_ih``, ``bias_hh``), so weights copy across one to one, and they are initialised the
    same way, uniformly in ``[-1/sqrt(hidden_size), 1/sqrt(hidden_size)]``.

    Args:
        input_size: width ``D`` of each input vector.
        hidden_size: width ``H`` of the hidden state.
        bias: add the two bias vectors (default ``True``).
        nonlinearity: ``"tanh"`` or ``"relu"``.

    Shape:
        - x: ``(B, input_size)``, one time step of a batch.
        - h: ``(B, hidden_size)``, the previous state; ``None`` means zeros.
        - output: ``(B, hidden_size)``, the new state.

    Example:
        >>> cell = RNNCell(3, 5)
        >>> cell(torch.zeros(2, 3)).shape
        torch.Size([2, 5])
    """

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh"
    ) -> None:
        super().__init__()
        check.positive_int("input_size", input_size)
        check.positive_int("hidden_size", hidden_size)
        check.one_of("nonlinearity", nonlinearity, sorted(_NONLINEARITIES))
        self.input_size, self.hidden_size = input_size, hidden_size
        self.nonlinearity = nonlinearity
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size))  # (H, D)
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, hidden_size))  # (H, H)
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(hidden_size))  # (H,)
            self.bias_hh = nn.Parameter(torch.empty(hidden_size))  # (H,)
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw every parameter uniformly from ``[-1/sqrt(H), 1/sqrt(H)]`` (PyTorch's rule)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, nonlinearity={self.nonlinearity!r}"

    def forward(self, x: Tensor, h: Tensor | None = None) -> Tensor:
        """Advance the state by one step.

        Args:
            x: inputs of this time step, shape ``(B, input_size)``.
            h: previous hidden state, shape ``(B, hidden_size)``; zeros when ``None``.

        Returns:
            The new hidden state, shape ``(B, hidden_size)``.
        """
        x = check.tensor("x", x)
        if x.dim() != 2 or x.shape[1] != self.input_size:
            raise ValueError(
                f"x must have shape (B, input_size={self.input_size}), got {tuple(x.shape)}"
            )
        if h is None:
            h = x.new_zeros(x.shape[0], self.hidden_size)
        h = check.tensor("h", h)
        if tuple(h.shape) != (x.shape[0], self.hidden_size):
            raise ValueError(
                f"h must have shape (B={x.shape[0]}, hidden_size={self.hidden_size}), "
                f"got {tuple(h.shape)}"
            )
        pre = x @ self.weight_ih.T + h @ self.weight_hh.T  # (B, H)
        if self.bias_ih is not None:
            pre = pre + self.bias_ih + self.bias_hh
        return _NONLINEARITIES[self.nonlinearity](pre)


class RNN(nn.Module):
    """A one-layer recurrent network: :class:`RNNCell` applied at every time step, in order.

    Step ``t`` needs the state of step ``t - 1``, so the ``T`` steps run one after another:
    this loop is what the Transformer removes.

    Args:
        input_size: width ``D`` of each input vector.
        hidden_size: width ``H`` of the hidden state.
        bias: add the two bias vectors (default ``True``).
        nonlinearity: ``"tanh"`` or ``"relu"``.

    Shape:
        - x: ``(B, T, input_size)`` (batch first).
        - h0: ``(B, hidden_size)`` or ``None`` for zeros. (``torch.nn.RNN`` takes
          ``(num_layers, batch, hidden_size)``; with one layer that is ``h0.unsqueeze(0)``.)
        - outputs: ``(B, T, hidden_size)``, the state after every step.
        - h_last: ``(B, hidden_size)``, the state after the last step.

    Example:
        >>> rnn = RNN(3, 5)
        >>> outputs, h_last = rnn(torch.zeros(2, 7, 3))
        >>> outputs.shape, h_last.shape
        (torch.Size([2, 7, 5]), torch.Size([2, 5]))
    """

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh"
    ) -> None:
        super().__init__()
        self.cell = RNNCell(input_size, hidden_size, bias=bias, nonlinearity=nonlinearity)

    @property
    def input_size(self) -> int:
        return self.cell.input_size

    @property
    def hidden_size(self) -> int:
        return self.cell.hidden_size

    def forward(self, x: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Run the cell over the whole sequence.

        Args:
            x: input sequence, shape ``(B, T, input_size)``.
            h0: initial state, shape ``(B, hidden_size)``; zeros when ``None``.

        Returns:
            ``(outputs, h_last)`` with shapes ``(B, T, hidden_size)`` and
            ``(B, hidden_size)``.
        """
        x = check.tensor("x", x)
        if x.dim() != 3 or x.shape[2] != self.input_size:
            raise ValueError(
                f"x must have shape (B, T, input_size={self.input_size}), got {tuple(x.shape)}"
            )
        if x.shape[1] == 0:
            raise ValueError("x must contain at least one time step, got T = 0")
        h = h0
        outputs = []
        for t in range(x.shape[1]):  # sequential: step t waits for step t - 1
            h = self.cell(x[:, t], h)  # (B, H)
            outputs.append(h)
        return torch.stack(outputs, dim=1), h  # (B, T, H), (B, H)

    @classmethod
    def from_torch(cls, module: nn.RNN) -> RNN:
        """Build an :class:`RNN` with the weights of a one-layer, one-direction ``nn.RNN``.

        Args:
            module: a ``torch.nn.RNN`` with ``num_layers=1`` and ``bidirectional=False``
                (``batch_first`` does not matter: this class is always batch first).

        Returns:
            A new :class:`RNN` computing the same function.
        """
        if not isinstance(module, nn.RNN):
            raise TypeError(f"module must be a torch.nn.RNN, got {type(module).__name__}")
        if module.num_layers != 1 or module.bidirectional:
            raise ValueError(
                "module must have num_layers=1 and bidirectional=False, got "
                f"num_layers={module.num_layers}, bidirectional={module.bidirectional}"
            )
        if getattr(module, "proj_size", 0):
            raise ValueError(f"module must have proj_size=0, got {module.proj_size}")
        out = cls(module.input_size, module.hidden_size, module.bias, module.nonlinearity)
        with torch.no_grad():
            out.cell.weight_ih.copy_(module.weight_ih_l0)
            out.cell.weight_hh.copy_(module.weight_hh_l0)
            if module.bias:
                out.cell.bias_ih.copy_(module.bias_ih_l0)
                out.cell.bias_hh.copy_(module.bias_hh_l0)
        return out.to(module.weight_ih_l0.dtype)


def attention_preview(x: Tensor, *, return_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Self-attention without learned weights: every position reads every other in one product.

    ``A = softmax(X X^T / sqrt(d))`` (row-wise), output ``A X``. Each output row is a weighted
    average of all input rows, with weights from dot-product similarity. There is no loop over
    positions. Chapter 4 adds the learned projections ``W^Q, W^K, W^V`` and several heads.

    Args:
        x: token vectors, shape ``(..., T, d)`` (for example ``(B, T, d_model)``).
        return_weights: also return the attention matrix ``A``.

    Returns:
        The output, same shape as ``x``; with ``return_weights`` also ``A`` of shape
        ``(..., T, T)`` whose rows sum to 1.

    Example:
        >>> y = attention_preview(torch.randn(2, 5, 4))
        >>> y.shape
        torch.Size([2, 5, 4])
    """
    x = check.tensor("x", x)
    if x.dim() < 2 or x.shape[-1] == 0 or x.shape[-2] == 0:
        raise ValueError(f"x must have shape (..., T, d) with T, d >= 1, got {tuple(x.shape)}")
    scores = x @ x.transpose(-2, -1) / math.sqrt(x.shape[-1])  # (..., T, T)
    weights = torch.softmax(scores, dim=-1)  # each row: how much query i reads key j
    out = weights @ x  # (..., T, d)
    return (out, weights) if return_weights else out


def gradient_norms_by_distance(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """Norm of the Jacobian of the last output with respect to the input ``k`` steps back.

    ``g[k] = || d y_{T-1} / d x_{T-1-k} ||_F`` for ``k = 0 .. T-1``: how much a small change of
    an input ``k`` steps before the end moves the last output. For a recurrent network it is a
    product of ``k`` step Jacobians, so it shrinks or grows geometrically with ``k``; for
    attention every input is one step away.

    Args:
        fn: maps one sequence ``(T, d_in)`` to its outputs ``(T, d_out)``.
        x: the sequence, shape ``(T, d_in)``.

    Returns:
        ``g``, shape ``(T,)``, indexed by the distance ``k`` (``g[0]``: the last input).
    """
    x = check.tensor("x", x)
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"x must have shape (T, d_in) with T >= 1, got {tuple(x.shape)}")
    x = x.detach()

    def last_output(inp: Tensor) -> Tensor:
        y = fn(inp)
        if y.dim() != 2 or y.shape[0] != inp.shape[0]:
            raise ValueError(
                f"fn must return shape (T={inp.shape[0]}, d_out), got {tuple(y.shape)}"
            )
        return y[-1]  # (d_out,)

    jac = torch.autograd.functional.jacobian(last_output, x)  # (d_out, T, d_in)
    norms = jac.pow(2).sum(dim=(0, 2)).sqrt()  # (T,), indexed by position t
    return norms.flip(0)  # indexed by distance k = T - 1 - t


_MATMUL_NODES = ("MmBackward", "AddmmBackward", "BmmBackward", "MvBackward", "AddmvBackward")


def _is_matmul(node: object) -> bool:
    return type(node).__name__.startswith(_MATMUL_NODES)


def _graph_root(y: Tensor) -> object:
    y = check.tensor("y", y)
    if y.grad_fn is None:
        raise ValueError("y has no autograd graph: compute it from tensors with requires_grad")
    return y.grad_fn


def _children(node: object) -> list[object]:
    return [child for child, _ in getattr(node, "next_functions", ()) if child is not None]


def matmul_depth(y: Tensor) -> int:
    """The largest number of matrix products on one chain of the autograd graph behind ``y``.

    Products on one chain must run one after another (each needs the previous result), so this
    counts the *sequential operations* of Table 1 of the paper: it grows with the sequence
    length for an RNN and stays constant for attention.

    Args:
        y: a tensor computed with autograd recording (some input had ``requires_grad``).

    Returns:
        The number of matrix-product nodes (``mm``, ``addmm``, ``bmm``, ``mv``, ``addmv``) on
        the longest chain from ``y`` to a leaf.
    """
    root = _graph_root(y)
    # Iterative post-order traversal (graphs of long RNNs are too deep for recursion).
    depth: dict[int, int] = {}
    stack: list[tuple[object, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        key = id(node)
        if key in depth:
            continue
        children = _children(node)
        if expanded:
            below = max((depth[id(c)] for c in children), default=0)
            depth[key] = below + int(_is_matmul(node))
            continue
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in depth)
    return depth[id(root)]


def matmul_path_length(y: Tensor, source: Tensor) -> int:
    """The fewest matrix products on any path from the leaf ``source`` to ``y``.

    This is the *maximum path length* of Table 1 when ``source`` is the first input position
    and ``y`` the last output: how many weight multiplications a signal crosses between them.

    The graph has one node per operation, not per slice: after ``torch.stack`` every slice of
    the stacked tensor is reachable from every read of it. To measure the path from one
    position, build ``y`` from one leaf per position (as chapter 1 does).

    Args:
        y: an output tensor with an autograd graph.
        source: a leaf tensor with ``requires_grad=True`` that ``y`` depends on.

    Returns:
        The smallest number of matrix-product nodes on a path from ``y`` back to ``source``.

    Raises:
        ValueError: when ``source`` is not a leaf requiring grad or ``y`` does not depend on it.
    """
    root = _graph_root(y)
    source = check.tensor("source", source)
    if not (source.is_leaf and source.requires_grad):
        raise ValueError("source must be a leaf tensor with requires_grad=True")
    # 0-1 breadth-first search: matrix-product nodes cost 1, every other node 0.
    best: dict[int, int] = {id(root): int(_is_matmul(root))}
    dq: deque[tuple[int, object]] = deque([(best[id(root)], root)])
    while dq:
        cost, node = dq.popleft()
        if cost > best.get(id(node), cost):
            continue
        if getattr(node, "variable", None) is source:
            return cost
        for child in _children(node):
            step = int(_is_matmul(child))
            new = cost + step
            if new < best.get(id(child), math.inf):
                best[id(child)] = new
                if step:
                    dq.append((new, child))
                else:
                    dq.appendleft((new, child))
    raise ValueError("y does not depend on source (no path in the autograd graph)")
