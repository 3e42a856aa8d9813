"""tfbook.positional (chapter 3) against independent references.

References: the paper's formula evaluated entry by entry in float64 with Python's ``math``,
``torch.nn.Embedding`` with copied weights, and RoPE written as complex multiplication.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tfbook.positional import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    apply_rotary,
    sinusoidal_encoding,
)


def _formula_by_loops(seq_len: int, d_model: int, base: float = 10000.0) -> np.ndarray:
    """PE(k, 2i) = sin(k / base^(2i/d)), PE(k, 2i+1) = cos(k / base^(2i/d)), one entry at a time."""
    pe = np.zeros((seq_len, d_model), dtype=np.float64)
    for k in range(seq_len):
        for i in range(d_model // 2):
            angle = k / math.pow(base, 2 * i / d_model)
            pe[k, 2 * i] = math.sin(angle)
            pe[k, 2 * i + 1] = math.cos(angle)
    return pe


# --------------------------------------------------------------------------- sinusoidal


@pytest.mark.parametrize(
    ("seq_len", "d_model", "base"),
    [(1, 2, 10000.0), (50, 16, 10000.0), (37, 64, 10000.0), (20, 8, 100.0)],
)
def test_sinusoidal_matches_float64_formula(seq_len, d_model, base):
    expected = _formula_by_loops(seq_len, d_model, base)
    got64 = sinusoidal_encoding(seq_len, d_model, base, dtype=torch.float64)
    np.testing.assert_allclose(got64.numpy(), expected, rtol=0, atol=1e-12)
    got32 = sinusoidal_encoding(seq_len, d_model, base)
    assert got32.dtype == torch.float32
    assert tuple(got32.shape) == (seq_len, d_model)
    # float32 is the float64 table rounded once, not a float32 computation
    np.testing.assert_array_equal(got32.numpy(), expected.astype(np.float32))


def test_sinusoidal_position_zero_is_alternating_zero_one():
    pe = sinusoidal_encoding(1, 10)
    assert pe[0].tolist() == [0.0, 1.0] * 5


def test_sinusoidal_is_bounded_with_constant_row_norm():
    pe = sinusoidal_encoding(1000, 32, dtype=torch.float64)
    assert pe.abs().max() <= 1.0
    np.testing.assert_allclose(pe.norm(dim=1).numpy(), math.sqrt(16), atol=1e-12)


def test_shift_by_delta_is_the_same_rotation_for_every_position():
    d_model, delta = 16, 7
    pe = sinusoidal_encoding(200, d_model, dtype=torch.float64)
    omega = 10000.0 ** (-np.arange(0, d_model, 2) / d_model)
    rotation = np.zeros((d_model, d_model))
    for i, w in enumerate(omega):
        c, s = math.cos(delta * w), math.sin(delta * w)
        rotation[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = [[c, s], [-s, c]]
    shifted = pe[:-delta].numpy() @ rotation.T  # row k: M @ PE[k]
    np.testing.assert_allclose(shifted, pe[delta:].numpy(), atol=1e-10)


def test_dot_product_depends_only_on_distance():
    d_model = 32
    pe = sinusoidal_encoding(300, d_model, dtype=torch.float64).numpy()
    omega = 10000.0 ** (-np.arange(0, d_model, 2) / d_model)
    for delta in (0, 1, 5, 40):
        dots = np.einsum("kd,kd->k", pe[: 300 - delta], pe[delta:])
        np.testing.assert_allclose(dots, np.cos(delta * omega).sum(), atol=1e-10)


def test_all_positions_are_distinct():
    pe = sinusoidal_encoding(512, 16, dtype=torch.float64)
    dist = torch.cdist(pe, pe) + torch.eye(512) * 1e9
    assert float(dist.min()) > 0.1


def test_sinusoidal_rejects_odd_d_model_with_its_value():
    with pytest.raises(ValueError, match=r"d_model must be even .* got 7"):
        sinusoidal_encoding(4, 7)


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"seq_len": 0, "d_model": 8}, ValueError, r"seq_len must be a positive int, got 0"),
        ({"seq_len": 4.0, "d_model": 8}, TypeError, r"seq_len must be a positive int, got float"),
        ({"seq_len": 4, "d_model": 8, "base": 1.0}, ValueError, r"base must be > 1, got 1.0"),
        ({"seq_len": 4, "d_model": 0}, ValueError, r"d_model must be a positive int, got 0"),
    ],
)
def test_sinusoidal_rejects_bad_arguments(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        sinusoidal_encoding(**kwargs)


def test_sinusoidal_module_adds_the_table_to_every_batch_item():
    torch.manual_seed(0)
    x = torch.randn(3, 10, 8)
    out = SinusoidalPositionalEncoding(8)(x)
    expected = x.numpy() + _formula_by_loops(10, 8)[None].astype(np.float32)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)


def test_sinusoidal_module_works_past_its_cache():
    module = SinusoidalPositionalEncoding(8, cache_len=16)
    out = module(torch.zeros(1, 40, 8))
    np.testing.assert_allclose(out[0].numpy(), _formula_by_loops(40, 8), atol=1e-6)


def test_sinusoidal_module_has_no_parameters_and_no_saved_state():
    module = SinusoidalPositionalEncoding(8)
    assert list(module.parameters()) == []
    assert module.state_dict() == {}


def test_sinusoidal_module_rejects_wrong_width():
    with pytest.raises(ValueError, match=r"x must have shape \(B, T, d_model=8\), got \(2, 5, 6\)"):
        SinusoidalPositionalEncoding(8)(torch.zeros(2, 5, 6))


def test_sinusoidal_module_rejects_missing_batch_axis():
    with pytest.raises(ValueError, match=r"x must have shape \(B, T, d_model=8\), got \(5, 8\)"):
        SinusoidalPositionalEncoding(8)(torch.zeros(5, 8))


def test_sinusoidal_module_rejects_integer_input():
    with pytest.raises(TypeError, match="floating-point"):
        SinusoidalPositionalEncoding(8)(torch.zeros(1, 5, 8, dtype=torch.long))


def test_sinusoidal_module_rejects_odd_d_model():
    with pytest.raises(ValueError, match=r"d_model must be even"):
        SinusoidalPositionalEncoding(9)


# --------------------------------------------------------------------------- learned


def test_learned_matches_nn_embedding_with_copied_weights():
    torch.manual_seed(0)
    module = LearnedPositionalEmbedding(max_len=12, d_model=16)
    reference = torch.nn.Embedding(12, 16)
    reference.weight.data.copy_(module.table.weight.data)
    x = torch.randn(2, 5, 16)
    expected = x + reference(torch.tensor([[0, 1, 2, 3, 4]]))
    torch.testing.assert_close(module(x), expected)


def test_learned_accepts_exactly_max_len():
    module = LearnedPositionalEmbedding(max_len=6, d_model=4)
    out = module(torch.zeros(1, 6, 4))
    torch.testing.assert_close(out[0], module.table.weight)


def test_learned_past_max_len_is_a_clear_error():
    module = LearnedPositionalEmbedding(max_len=12, d_model=16)
    with pytest.raises(ValueError, match=r"sequence length 13 exceeds max_len=12.*position 12"):
        module(torch.zeros(1, 13, 16))


def test_learned_gradient_reaches_only_the_rows_used():
    module = LearnedPositionalEmbedding(max_len=10, d_model=4)
    module(torch.zeros(2, 3, 4)).sum().backward()
    grad = module.table.weight.grad
    assert torch.all(grad[:3] == 2.0)  # two batch items use each of rows 0, 1, 2
    assert torch.all(grad[3:] == 0.0)


def test_learned_rejects_wrong_width():
    with pytest.raises(
        ValueError, match=r"x must have shape \(B, T, d_model=16\), got \(1, 5, 8\)"
    ):
        LearnedPositionalEmbedding(12, 16)(torch.zeros(1, 5, 8))


# --------------------------------------------------------------------------- rotary


def _rope_complex(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0):
    """RoPE as complex multiplication: pair (x_2i, x_2i+1) is z_i, multiplied by e^(i m theta_i)."""
    d = x.shape[-1]
    theta = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    z = torch.view_as_complex(x.to(torch.float64).reshape(*x.shape[:-1], d // 2, 2).contiguous())
    phase = torch.polar(
        torch.ones(len(positions), d // 2, dtype=torch.float64),
        positions.to(torch.float64)[:, None] * theta[None, :],
    )
    return torch.view_as_real(z * phase).reshape(x.shape)


def test_rotary_matches_complex_multiplication():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7, 8, dtype=torch.float64)
    positions = torch.arange(7)
    torch.testing.assert_close(apply_rotary(x), _rope_complex(x, positions))
    shifted = torch.tensor([3, 4, 10, 11, 12, 40, 41])
    torch.testing.assert_close(apply_rotary(x, shifted), _rope_complex(x, shifted))


def test_rotary_dot_product_depends_only_on_relative_distance():
    torch.manual_seed(0)
    q = torch.randn(16, dtype=torch.float64)
    k = torch.randn(16, dtype=torch.float64)

    def score(m: int, n: int) -> float:
        qm = apply_rotary(q[None, :], torch.tensor([m]))[0]
        kn = apply_rotary(k[None, :], torch.tensor([n]))[0]
        return float(qm @ kn)

    for distance in (0, 1, 3, 17):
        scores = [score(n + distance, n) for n in (0, 5, 50, 1000)]
        np.testing.assert_allclose(scores, scores[0], atol=1e-9)
    assert (
        abs(score(3, 0) - score(0, 3)) > 1e-3
    )  # unlike the sinusoid's dot product, direction counts


def test_rotary_preserves_norm_and_leaves_position_zero_alone():
    torch.manual_seed(0)
    x = torch.randn(4, 9, 12)
    y = apply_rotary(x)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(y[:, 0], x[:, 0])
    assert y.dtype == x.dtype and y.shape == x.shape


def test_rotary_rejects_odd_width_and_bad_positions():
    with pytest.raises(ValueError, match=r"last dimension of x must be even, got 5"):
        apply_rotary(torch.zeros(3, 5))
    with pytest.raises(ValueError, match=r"positions must have shape \(3,\)"):
        apply_rotary(torch.zeros(3, 4), torch.arange(4))
    with pytest.raises(TypeError, match="floating-point"):
        apply_rotary(torch.zeros(3, 4, dtype=torch.long))


def test_sinusoidal_module_keeps_float64_input_exact():
    x = torch.zeros(2, 7, 6, dtype=torch.float64)
    out = SinusoidalPositionalEncoding(6)(x)
    assert out.dtype == torch.float64
    np.testing.assert_allclose(out[1].numpy(), _formula_by_loops(7, 6), rtol=0, atol=1e-12)


def test_sinusoidal_module_dropout_acts_only_in_training():
    torch.manual_seed(0)
    module = SinusoidalPositionalEncoding(8, dropout=0.5)
    x = torch.randn(4, 10, 8)
    expected = x + sinusoidal_encoding(10, 8)[None]
    torch.testing.assert_close(module.eval()(x), expected)
    train_out = module.train()(x)
    zeros = train_out == 0
    assert zeros.any()
    torch.testing.assert_close(train_out[~zeros], 2 * expected[~zeros])
