"""Tests of tfbook.rnn against independent references.

References: ``torch.nn.RNNCell`` / ``torch.nn.RNN`` with copied weights,
``torch.nn.functional.scaled_dot_product_attention``, float64 NumPy products of step
Jacobians, and hand-built autograd graphs whose matrix-product counts are known.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tfbook.rnn import (
    RNN,
    RNNCell,
    attention_preview,
    gradient_norms_by_distance,
    matmul_depth,
    matmul_path_length,
)


def _copy_cell_from_torch(cell: RNNCell, ref: nn.RNNCell) -> None:
    with torch.no_grad():
        cell.weight_ih.copy_(ref.weight_ih)
        cell.weight_hh.copy_(ref.weight_hh)
        cell.bias_ih.copy_(ref.bias_ih)
        cell.bias_hh.copy_(ref.bias_hh)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_cell_matches_torch_rnncell_with_copied_weights(nonlinearity):
    torch.manual_seed(0)
    ref = nn.RNNCell(4, 6, nonlinearity=nonlinearity)
    cell = RNNCell(4, 6, nonlinearity=nonlinearity)
    _copy_cell_from_torch(cell, ref)
    x, h = torch.randn(3, 4), torch.randn(3, 6)
    torch.testing.assert_close(cell(x, h), ref(x, h))
    torch.testing.assert_close(cell(x), ref(x))  # zero initial state


def test_cell_parameters_have_torch_names_and_shapes():
    cell, ref = RNNCell(4, 6), nn.RNNCell(4, 6)
    ours = {name: tuple(p.shape) for name, p in cell.named_parameters()}
    theirs = {name: tuple(p.shape) for name, p in ref.named_parameters()}
    assert ours == theirs


def test_cell_initialisation_stays_within_pytorch_bound():
    torch.manual_seed(0)
    cell = RNNCell(5, 16)
    bound = 1 / math.sqrt(16)
    for p in cell.parameters():
        assert p.abs().max().item() <= bound


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("with_h0", [False, True])
def test_rnn_matches_torch_rnn_with_copied_weights(nonlinearity, with_h0):
    torch.manual_seed(1)
    ref = nn.RNN(3, 5, batch_first=True, nonlinearity=nonlinearity)
    ours = RNN.from_torch(ref)
    x = torch.randn(2, 7, 3)
    h0 = torch.randn(2, 5) if with_h0 else None
    out_ref, h_ref = ref(x, None if h0 is None else h0.unsqueeze(0))
    out, h_last = ours(x, h0)
    torch.testing.assert_close(out, out_ref)
    torch.testing.assert_close(h_last, h_ref.squeeze(0))


def test_rnn_gradients_match_torch_rnn():
    torch.manual_seed(2)
    ref = nn.RNN(3, 4, batch_first=True)
    ours = RNN.from_torch(ref)
    x = torch.randn(2, 6, 3)
    ref(x)[0].pow(2).sum().backward()
    ours(x)[0].pow(2).sum().backward()
    torch.testing.assert_close(ours.cell.weight_hh.grad, ref.weight_hh_l0.grad)
    torch.testing.assert_close(ours.cell.weight_ih.grad, ref.weight_ih_l0.grad)
    torch.testing.assert_close(ours.cell.bias_hh.grad, ref.bias_hh_l0.grad)


def test_rnn_without_bias_matches_torch_in_float64():
    torch.manual_seed(3)
    ref = nn.RNN(3, 4, bias=False, batch_first=True).double()
    ours = RNN.from_torch(ref)
    assert ours.cell.weight_ih.dtype == torch.float64
    x = torch.randn(1, 5, 3, dtype=torch.float64)
    torch.testing.assert_close(ours(x)[0], ref(x)[0])


def test_rnn_matches_float64_numpy_recurrence():
    torch.manual_seed(4)
    rnn = RNN(3, 4).double()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    w_ih, w_hh = rnn.cell.weight_ih.detach().numpy(), rnn.cell.weight_hh.detach().numpy()
    b = (rnn.cell.bias_ih + rnn.cell.bias_hh).detach().numpy()
    h = np.zeros((2, 4))
    expected = []
    for t in range(5):
        h = np.tanh(x[:, t].numpy() @ w_ih.T + h @ w_hh.T + b)
        expected.append(h)
    np.testing.assert_allclose(rnn(x)[0].detach().numpy(), np.stack(expected, 1), atol=1e-12)


def test_last_output_equals_last_state():
    rnn = RNN(3, 4)
    out, h_last = rnn(torch.randn(2, 5, 3))
    torch.testing.assert_close(out[:, -1], h_last)


def test_from_torch_rejects_stacked_or_bidirectional_rnn():
    with pytest.raises(ValueError, match="num_layers=1"):
        RNN.from_torch(nn.RNN(3, 4, num_layers=2))
    with pytest.raises(ValueError, match="bidirectional=True"):
        RNN.from_torch(nn.RNN(3, 4, bidirectional=True))
    with pytest.raises(TypeError, match="torch.nn.RNN, got LSTM"):
        RNN.from_torch(nn.LSTM(3, 4))


def test_bad_shapes_raise_value_errors_naming_the_argument():
    cell, rnn = RNNCell(3, 4), RNN(3, 4)
    with pytest.raises(ValueError, match=r"x must have shape \(B, input_size=3\), got \(2, 5\)"):
        cell(torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"h must have shape \(B=2, hidden_size=4\), got \(2, 3\)"):
        cell(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"x must have shape \(B, T, input_size=3\), got \(5, 3\)"):
        rnn(torch.zeros(5, 3))
    with pytest.raises(ValueError, match="at least one time step"):
        rnn(torch.zeros(2, 0, 3))
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got ndarray"):
        cell(np.zeros((2, 3)))


def test_constructor_validates_sizes_and_nonlinearity():
    with pytest.raises(ValueError, match="hidden_size must be a positive int, got 0"):
        RNNCell(3, 0)
    with pytest.raises(ValueError, match="nonlinearity must be one of"):
        RNNCell(3, 4, nonlinearity="sigmoid")


def test_attention_preview_matches_scaled_dot_product_attention():
    torch.manual_seed(5)
    x = torch.randn(2, 6, 8)
    torch.testing.assert_close(attention_preview(x), F.scaled_dot_product_attention(x, x, x))


def test_attention_preview_weights_are_row_stochastic_and_match_numpy():
    torch.manual_seed(6)
    x = torch.randn(5, 3, dtype=torch.float64)
    out, weights = attention_preview(x, return_weights=True)
    xn = x.numpy()
    scores = xn @ xn.T / np.sqrt(3)
    expected = np.exp(scores - scores.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(weights.numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(out.numpy(), expected @ xn, atol=1e-12)
    np.testing.assert_allclose(weights.sum(-1).numpy(), np.ones(5), atol=1e-12)


def test_attention_preview_rejects_vectors():
    with pytest.raises(ValueError, match=r"x must have shape \(..., T, d\)"):
        attention_preview(torch.zeros(4))


def test_gradient_norms_match_numpy_product_of_step_jacobians():
    torch.manual_seed(7)
    rnn = RNN(3, 4).double()
    x = torch.randn(6, 3, dtype=torch.float64)
    g = gradient_norms_by_distance(lambda s: rnn(s.unsqueeze(0))[0].squeeze(0), x)
    w_ih, w_hh = rnn.cell.weight_ih.detach().numpy(), rnn.cell.weight_hh.detach().numpy()
    hs = rnn(x.unsqueeze(0))[0].squeeze(0).detach().numpy()  # (T, H)
    T = 6
    for k in range(T):
        t = T - 1 - k  # input position
        jac = np.diag(1 - hs[t] ** 2) @ w_ih  # d h_t / d x_t
        for j in range(t + 1, T):
            jac = np.diag(1 - hs[j] ** 2) @ w_hh @ jac  # d h_j / d h_{j-1} times the rest
        assert g[k].item() == pytest.approx(np.linalg.norm(jac), rel=1e-10)


def test_gradient_norms_of_attention_do_not_vanish_with_distance():
    torch.manual_seed(8)
    x = torch.randn(64, 8, dtype=torch.float64)
    g = gradient_norms_by_distance(attention_preview, x)
    assert g.shape == (64,)
    assert g[1:].min() > 1e-3 * g[1:].max()


def test_gradient_norms_validates_fn_output():
    with pytest.raises(ValueError, match=r"fn must return shape \(T=4, d_out\)"):
        gradient_norms_by_distance(lambda s: s.sum(0), torch.randn(4, 3))


def test_matmul_depth_counts_chained_products():
    a = torch.randn(3, 3, requires_grad=True)
    x = torch.randn(2, 3, requires_grad=True)
    assert matmul_depth(x @ a) == 1
    assert matmul_depth(((x @ a) @ a).tanh() @ a) == 3
    # two products side by side are not a chain
    assert matmul_depth(x @ a + (x * 2) @ a) == 1


def test_matmul_depth_and_path_length_of_an_rnn_grow_with_length():
    torch.manual_seed(9)
    cell = RNNCell(4, 4)
    for n in (3, 10):
        xs = [torch.randn(1, 4, requires_grad=True) for _ in range(n)]
        h = None
        for x_t in xs:
            h = cell(x_t, h)
        assert matmul_depth(h) == n
        assert matmul_path_length(h, xs[0]) == n
        assert matmul_path_length(h, xs[-1]) == 1


def test_matmul_path_length_takes_the_shortest_route():
    a = torch.randn(3, 3, requires_grad=True)
    x = torch.randn(2, 3, requires_grad=True)
    y = ((x @ a) @ a) @ a + x  # a residual path with no product at all
    assert matmul_path_length(y, x) == 0
    assert matmul_depth(y) == 3


def test_matmul_path_length_errors():
    x = torch.randn(2, 3, requires_grad=True)
    other = torch.randn(2, 3, requires_grad=True)
    with pytest.raises(ValueError, match="does not depend on source"):
        matmul_path_length(x * 2, other)
    with pytest.raises(ValueError, match="leaf tensor"):
        matmul_path_length(x * 2, x * 3)
    with pytest.raises(ValueError, match="no autograd graph"):
        matmul_depth(torch.ones(2))
