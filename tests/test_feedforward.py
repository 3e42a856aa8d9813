"""Tests for tfbook.feedforward (chapter 5) against independent references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tfbook.feedforward import ACTIVATIONS, PositionwiseFeedForward

_erf = np.vectorize(math.erf)


def _numpy_ffn(x, ffn: PositionwiseFeedForward) -> np.ndarray:
    """float64 NumPy version of phi(x W1 + b1) W2 + b2 (nn.Linear stores W transposed)."""
    w1 = ffn.linear1.weight.detach().double().numpy().T  # (d_model, d_ff)
    b1 = ffn.linear1.bias.detach().double().numpy()
    w2 = ffn.linear2.weight.detach().double().numpy().T  # (d_ff, d_model)
    b2 = ffn.linear2.bias.detach().double().numpy()
    h = x.double().numpy() @ w1 + b1
    if ffn.activation_name == "relu":
        h = np.maximum(h, 0.0)
    elif ffn.activation_name == "gelu":
        h = h * 0.5 * (1.0 + _erf(h / math.sqrt(2.0)))
    else:  # GPT-2's tanh approximation of GELU
        h = 0.5 * h * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (h + 0.044715 * h**3)))
    return h @ w2 + b2


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_matches_float64_numpy_formula(activation):
    torch.manual_seed(0)
    ffn = PositionwiseFeedForward(8, 32, activation=activation)
    x = torch.randn(3, 5, 8)
    np.testing.assert_allclose(ffn(x).detach().double().numpy(), _numpy_ffn(x, ffn), atol=1e-5)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_matches_torch_functional_composition(activation):
    torch.manual_seed(1)
    ffn = PositionwiseFeedForward(6, 10, activation=activation)
    x = torch.randn(2, 4, 6)
    act = {
        "relu": F.relu,
        "gelu": F.gelu,
        "gelu_tanh": lambda h: F.gelu(h, approximate="tanh"),
    }[activation]
    expected = F.linear(
        act(F.linear(x, ffn.linear1.weight, ffn.linear1.bias)),
        ffn.linear2.weight,
        ffn.linear2.bias,
    )
    torch.testing.assert_close(ffn(x), expected)


def test_default_hidden_width_is_four_times_d_model():
    ffn = PositionwiseFeedForward(16)
    assert ffn.d_ff == 64
    assert ffn.linear1.weight.shape == (64, 16)
    assert ffn.linear2.weight.shape == (16, 64)


def test_parameter_count_is_two_matrices_and_two_biases():
    ffn = PositionwiseFeedForward(512, 2048)
    n = sum(p.numel() for p in ffn.parameters())
    assert n == 2 * 512 * 2048 + 2048 + 512


def test_each_position_is_transformed_independently():
    torch.manual_seed(2)
    ffn = PositionwiseFeedForward(8, 16, activation="gelu")
    x = torch.randn(2, 6, 8)
    full = ffn(x)
    one_by_one = torch.stack([ffn(x[:, t]) for t in range(6)], dim=1)
    torch.testing.assert_close(full, one_by_one)


def test_permuting_positions_permutes_outputs():
    torch.manual_seed(3)
    ffn = PositionwiseFeedForward(8, 16)
    x = torch.randn(1, 7, 8)
    perm = torch.randperm(7)
    torch.testing.assert_close(ffn(x[:, perm]), ffn(x)[:, perm])


def test_changing_one_position_leaves_the_others_unchanged():
    torch.manual_seed(4)
    ffn = PositionwiseFeedForward(8, 16)
    x = torch.randn(1, 5, 8)
    y = x.clone()
    y[0, 2] += 10.0
    out_x, out_y = ffn(x), ffn(y)
    keep = [0, 1, 3, 4]
    torch.testing.assert_close(out_x[:, keep], out_y[:, keep])
    assert not torch.allclose(out_x[:, 2], out_y[:, 2])


def test_works_on_unbatched_and_flat_inputs():
    ffn = PositionwiseFeedForward(4, 8)
    assert ffn(torch.randn(4)).shape == (4,)
    assert ffn(torch.randn(3, 4)).shape == (3, 4)


def test_dropout_is_identity_in_eval_mode():
    torch.manual_seed(5)
    ffn = PositionwiseFeedForward(8, 32, dropout=0.5)
    reference = PositionwiseFeedForward(8, 32, dropout=0.0)
    reference.load_state_dict(ffn.state_dict())
    ffn.eval()
    x = torch.randn(2, 3, 8)
    torch.testing.assert_close(ffn(x), reference(x))


def test_dropout_in_training_zeroes_hidden_units_and_rescales_the_rest():
    torch.manual_seed(6)
    ffn = PositionwiseFeedForward(4, 4000, dropout=0.25).train()
    with torch.no_grad():
        ffn.linear1.weight.fill_(0.0)
        ffn.linear1.bias.fill_(1.0)  # every hidden unit is relu(1) = 1
    hidden = ffn.dropout(ffn.activation(ffn.linear1(torch.zeros(4))))
    kept = hidden[hidden != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / 0.75))
    assert abs(float((hidden == 0).float().mean()) - 0.25) < 0.03


def test_matches_torch_encoder_layer_feed_forward_block():
    """torch.nn.TransformerEncoderLayer computes linear2(dropout(act(linear1(x))))."""
    torch.manual_seed(7)
    layer = torch.nn.TransformerEncoderLayer(8, 2, 24, dropout=0.0, batch_first=True)
    ffn = PositionwiseFeedForward(8, 24)
    ffn.linear1.load_state_dict(layer.linear1.state_dict())
    ffn.linear2.load_state_dict(layer.linear2.state_dict())
    x = torch.randn(2, 3, 8)
    torch.testing.assert_close(ffn(x), layer.linear2(layer.activation(layer.linear1(x))))


def test_unknown_activation_is_rejected_with_the_choices():
    with pytest.raises(
        ValueError, match=r"activation must be one of \('relu', 'gelu', 'gelu_tanh'\), got 'tanh'"
    ):
        PositionwiseFeedForward(8, activation="tanh")
    with pytest.raises(ValueError, match="activation must be one of .*, got None"):
        PositionwiseFeedForward(8, activation=None)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"d_model": 0}, ValueError, "d_model must be a positive int, got 0"),
        ({"d_model": 8.0}, TypeError, "d_model must be a positive int, got float"),
        ({"d_model": 8, "d_ff": -1}, ValueError, "d_ff must be a positive int, got -1"),
        (
            {"d_model": 8, "dropout": 1.0},
            ValueError,
            r"dropout must be a float in \[0, 1\), got 1.0",
        ),
        ({"d_model": 8, "dropout": "0.1"}, TypeError, "dropout must be a float"),
    ],
)
def test_bad_constructor_arguments_are_named(kwargs, error, message):
    with pytest.raises(error, match=message):
        PositionwiseFeedForward(**kwargs)


def test_wrong_last_axis_names_expected_and_actual_shape():
    ffn = PositionwiseFeedForward(8)
    with pytest.raises(
        ValueError, match=r"x must have shape \(\.\.\., d_model=8\), got \(2, 3, 5\)"
    ):
        ffn(torch.zeros(2, 3, 5))
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got ndarray"):
        ffn(np.zeros((2, 8)))
