"""Tests for tfbook.norm (chapter 5) against independent references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tfbook.feedforward import PositionwiseFeedForward
from tfbook.norm import FusedLayerNorm, LayerNorm, ResidualSublayer


def _randomise(ln: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        ln.weight.copy_(1.0 + 0.5 * torch.randn(ln.weight.shape, generator=g))
        ln.bias.copy_(0.5 * torch.randn(ln.bias.shape, generator=g))


# ----------------------------------------------------------------------------- LayerNorm


@pytest.mark.parametrize("shape", [(7,), (3, 7), (2, 5, 7), (2, 3, 4, 7)])
def test_layernorm_matches_torch_functional_layer_norm(shape):
    torch.manual_seed(0)
    ln = LayerNorm(7)
    _randomise(ln, 1)
    x = 3.0 * torch.randn(shape) + 2.0
    expected = F.layer_norm(x, (7,), ln.weight, ln.bias, eps=1e-5)
    torch.testing.assert_close(ln(x), expected)


def test_layernorm_matches_float64_numpy_formula():
    torch.manual_seed(2)
    ln = LayerNorm(16, eps=1e-3)
    _randomise(ln, 3)
    x = torch.randn(4, 6, 16)
    xn = x.double().numpy()
    mu = xn.mean(axis=-1, keepdims=True)
    var = ((xn - mu) ** 2).mean(axis=-1, keepdims=True)  # biased: divide by d
    expected = ln.weight.detach().double().numpy() * (xn - mu) / np.sqrt(var + 1e-3)
    expected += ln.bias.detach().double().numpy()
    np.testing.assert_allclose(ln(x).detach().double().numpy(), expected, atol=1e-5)


def test_layernorm_state_dict_loads_into_torch_layernorm_and_back():
    torch.manual_seed(4)
    ours = LayerNorm(10)
    _randomise(ours, 5)
    theirs = nn.LayerNorm(10)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(3, 10)
    torch.testing.assert_close(ours(x), theirs(x))
    back = LayerNorm(10)
    back.load_state_dict(theirs.state_dict())
    torch.testing.assert_close(back(x), theirs(x))


def test_layernorm_output_has_zero_mean_unit_variance_per_token_before_affine():
    torch.manual_seed(6)
    y = LayerNorm(32)(5.0 * torch.randn(4, 9, 32) - 3.0)
    torch.testing.assert_close(y.mean(-1), torch.zeros(4, 9), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(4, 9), atol=1e-3, rtol=0)


def test_constant_vector_gives_bias_not_nan():
    ln = LayerNorm(5)
    _randomise(ln, 7)
    y = ln(torch.full((2, 5), 3.5))
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, ln.bias.detach().expand(2, 5))


def test_layernorm_of_a_token_ignores_the_rest_of_the_batch():
    torch.manual_seed(8)
    ln = LayerNorm(8)
    x = torch.randn(4, 3, 8)
    y = x.clone()
    y[1:] = 100.0 * torch.randn(3, 3, 8)  # change every other sequence
    torch.testing.assert_close(ln(x)[0], ln(y)[0])
    torch.testing.assert_close(ln(x[:1]), ln(x)[:1])  # batch size does not matter


def test_layernorm_gradient_matches_torch():
    torch.manual_seed(9)
    x1 = torch.randn(3, 6, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    ours, theirs = LayerNorm(6), nn.LayerNorm(6)
    w = torch.randn(3, 6)
    (ours(x1) * w).sum().backward()
    (theirs(x2) * w).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad)
    torch.testing.assert_close(ours.weight.grad, theirs.weight.grad)


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        ((0,), ValueError, "d_model must be a positive int, got 0"),
        (("8",), TypeError, "d_model must be a positive int, got str"),
        ((8, 0.0), ValueError, "eps must be a float > 0, got 0.0"),
        ((8, None), TypeError, "eps must be a float > 0, got NoneType"),
    ],
)
def test_layernorm_bad_arguments_are_named(args, error, message):
    with pytest.raises(error, match=message):
        LayerNorm(*args)


def test_layernorm_wrong_last_axis_names_shapes():
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., d_model=8\), got \(2, 4\)"):
        LayerNorm(8)(torch.zeros(2, 4))
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got list"):
        LayerNorm(8)([0.0] * 8)


# ------------------------------------------------------------------------ FusedLayerNorm


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_layernorm_equals_the_written_out_formula_forward_and_backward(dtype):
    torch.manual_seed(10)
    explicit = LayerNorm(24, eps=1e-4).to(dtype)
    _randomise(explicit, 11)
    fused = FusedLayerNorm(24, eps=1e-4).to(dtype)
    fused.load_state_dict(explicit.state_dict())  # same names, same layout
    x1 = (4.0 * torch.randn(3, 7, 24) + 1.5).to(dtype).requires_grad_(True)
    x2 = x1.detach().clone().requires_grad_(True)
    w = torch.randn(3, 7, 24, dtype=dtype)
    y1, y2 = explicit(x1), fused(x2)
    (y1 * w).sum().backward()
    (y2 * w).sum().backward()
    tol = {} if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(y2, y1, **tol)
    torch.testing.assert_close(x2.grad, x1.grad, **tol)
    torch.testing.assert_close(fused.weight.grad, explicit.weight.grad, **tol)
    torch.testing.assert_close(fused.bias.grad, explicit.bias.grad, **tol)


def test_fused_layernorm_from_layer_norm_shares_the_parameters():
    explicit = LayerNorm(6, eps=1e-3)
    _randomise(explicit, 12)
    fused = FusedLayerNorm.from_layer_norm(explicit.eval())
    assert fused.weight is explicit.weight and fused.bias is explicit.bias
    assert fused.eps == 1e-3 and not fused.training
    assert list(fused.state_dict()) == list(explicit.state_dict()) == ["weight", "bias"]
    x = torch.randn(2, 6)
    torch.testing.assert_close(fused(x), explicit(x))
    with pytest.raises(TypeError, match="norm must be a tfbook.norm.LayerNorm, got LayerNorm"):
        FusedLayerNorm.from_layer_norm(nn.LayerNorm(6))


def test_fused_layernorm_checks_its_input_like_layernorm():
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., d_model=8\), got \(2, 4\)"):
        FusedLayerNorm(8)(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="eps must be a float > 0, got 0.0"):
        FusedLayerNorm(8, eps=0.0)


# ----------------------------------------------------------------------------- ResidualSublayer


def test_pre_ln_adds_the_branch_to_the_raw_input():
    torch.manual_seed(10)
    ffn = PositionwiseFeedForward(8, 16)
    block = ResidualSublayer(8, ffn, norm_first=True)
    _randomise(block.norm, 11)
    x = torch.randn(2, 5, 8)
    expected = x + ffn(F.layer_norm(x, (8,), block.norm.weight, block.norm.bias))
    torch.testing.assert_close(block(x), expected)
    # ... and not to the normalised input (source 001's listing)
    wrong = block.norm(x) + ffn(block.norm(x))
    assert not torch.allclose(block(x), wrong)


def test_post_ln_normalises_the_sum():
    torch.manual_seed(12)
    ffn = PositionwiseFeedForward(8, 16, activation="gelu")
    block = ResidualSublayer(8, ffn, norm_first=False)
    _randomise(block.norm, 13)
    x = torch.randn(2, 5, 8)
    expected = F.layer_norm(x + ffn(x), (8,), block.norm.weight, block.norm.bias)
    torch.testing.assert_close(block(x), expected)


class _SelfAttention(nn.Module):
    """torch's MultiheadAttention called as a one-input sub-layer."""

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        self.mha = mha

    def forward(self, x, key_padding_mask=None):
        return self.mha(x, x, x, key_padding_mask=key_padding_mask, need_weights=False)[0]


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_two_sublayers_equal_torch_transformer_encoder_layer(norm_first, activation):
    torch.manual_seed(14)
    d_model, n_heads, d_ff = 12, 3, 20
    ref = nn.TransformerEncoderLayer(
        d_model,
        n_heads,
        d_ff,
        dropout=0.0,
        activation=activation,
        batch_first=True,
        norm_first=norm_first,
    ).eval()
    attn = _SelfAttention(nn.MultiheadAttention(d_model, n_heads, batch_first=True))
    attn.mha.load_state_dict(ref.self_attn.state_dict())
    ffn = PositionwiseFeedForward(d_model, d_ff, activation=activation)
    ffn.linear1.load_state_dict(ref.linear1.state_dict())
    ffn.linear2.load_state_dict(ref.linear2.state_dict())
    first = ResidualSublayer(d_model, attn, norm_first=norm_first)
    second = ResidualSublayer(d_model, ffn, norm_first=norm_first)
    _randomise(ref.norm1, 15)
    _randomise(ref.norm2, 16)
    first.norm.load_state_dict(ref.norm1.state_dict())
    second.norm.load_state_dict(ref.norm2.state_dict())
    x = torch.randn(2, 7, d_model)
    with torch.no_grad():
        torch.testing.assert_close(second(first(x)), ref(x), atol=1e-5, rtol=1e-4)


def test_extra_arguments_reach_the_sublayer():
    torch.manual_seed(17)
    attn = _SelfAttention(nn.MultiheadAttention(8, 2, batch_first=True))
    block = ResidualSublayer(8, attn, norm_first=True).eval()
    x = torch.randn(1, 4, 8)
    pad = torch.tensor([[False, False, True, True]])  # torch: True = ignore this key
    masked = block(x, key_padding_mask=pad)
    expected = x[:, :2] + attn(block.norm(x[:, :2]))  # keys 2, 3 ignored: only two exist
    torch.testing.assert_close(masked[:, :2], expected)


def test_dropout_hits_the_branch_never_the_residual_stream():
    class Zero(nn.Module):
        def forward(self, x):
            return torch.zeros_like(x)

    class One(nn.Module):
        def forward(self, x):
            return torch.ones_like(x)

    x = torch.randn(2, 50, 8)
    torch.manual_seed(18)
    block = ResidualSublayer(8, Zero(), norm_first=True, dropout=0.5).train()
    torch.testing.assert_close(block(x), x)  # nothing of x is ever dropped
    block = ResidualSublayer(8, One(), norm_first=True, dropout=0.5).train()
    branch = block(x) - x
    kept = branch[branch.abs() > 1e-6]
    torch.testing.assert_close(kept, torch.full_like(kept, 2.0))  # 1 / (1 - p)
    assert 0.4 < float((branch.abs() < 1e-6).float().mean()) < 0.6
    block.eval()
    torch.testing.assert_close(block(x), x + 1.0)


def test_parameters_of_the_sublayer_are_registered():
    ffn = PositionwiseFeedForward(8, 16)
    block = ResidualSublayer(8, ffn)
    n = sum(p.numel() for p in block.parameters())
    assert n == sum(p.numel() for p in ffn.parameters()) + 2 * 8


def test_residual_sublayer_bad_arguments_are_named():
    ffn = PositionwiseFeedForward(8)
    with pytest.raises(TypeError, match="sublayer must be a torch.nn.Module"):
        ResidualSublayer(8, lambda x: x)
    with pytest.raises(TypeError, match="norm_first must be a bool, got str"):
        ResidualSublayer(8, ffn, norm_first="pre")
    with pytest.raises(ValueError, match=r"dropout must be a float in \[0, 1\), got 1.5"):
        ResidualSublayer(8, ffn, dropout=1.5)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., d_model=8\), got \(2, 3\)"):
        ResidualSublayer(8, ffn)(torch.zeros(2, 3))


def test_sublayer_returning_the_wrong_shape_is_reported():
    class Shrink(nn.Module):
        def forward(self, x):
            return x[..., :4]

    block = ResidualSublayer(8, Shrink())
    with pytest.raises(ValueError, match=r"shaped like its input \(2, 3, 8\), got \(2, 3, 4\)"):
        block(torch.zeros(2, 3, 8))
