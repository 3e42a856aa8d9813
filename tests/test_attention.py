"""tfbook.attention against independent references (chapter 4).

References: ``torch.nn.functional.scaled_dot_product_attention``, ``torch.nn.MultiheadAttention``
with copied weights, and a float64 NumPy formula.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tfbook.attention import (
    KVCache,
    MultiHeadAttention,
    causal_mask,
    mask_from_torch,
    masked_softmax,
    merge_heads,
    padding_mask,
    scaled_dot_product_attention,
    split_heads,
)

TIGHT = {"atol": 1e-12, "rtol": 1e-10}


def _qkv(b=2, t_q=5, t_k=7, d_k=8, d_v=6, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, t_q, d_k, generator=g, dtype=dtype)
    k = torch.randn(b, t_k, d_k, generator=g, dtype=dtype)
    v = torch.randn(b, t_k, d_v, generator=g, dtype=dtype)
    return q, k, v


def _numpy_attention(q, k, v, mask=None):
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    m = np.max(scores, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(scores - m)
    s = e.sum(axis=-1, keepdims=True)
    w = e / np.where(s > 0, s, 1.0)
    return w @ v, w


# --------------------------------------------------------------- scaled dot-product


def test_sdpa_matches_numpy_formula_in_float64():
    q, k, v = _qkv()
    out, w = scaled_dot_product_attention(q, k, v)
    ref_out, ref_w = _numpy_attention(q, k, v)
    np.testing.assert_allclose(out.numpy(), ref_out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(w.numpy(), ref_w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["none", "causal", "padding", "random"])
def test_sdpa_matches_torch_functional(kind):
    q, k, v = _qkv(t_q=6, t_k=6)
    mask = {
        "none": None,
        "causal": causal_mask(6),
        "padding": padding_mask([6, 3]),
        "random": torch.rand(2, 6, 6, generator=torch.Generator().manual_seed(1)) > 0.4,
    }[kind]
    if mask is not None and kind == "random":
        mask[:, :, 0] = True  # keep every row non-empty for the comparison
    out, _ = scaled_dot_product_attention(q, k, v, mask)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(out, ref, **TIGHT)


def test_weights_are_a_probability_distribution_over_keys():
    q, k, v = _qkv()
    _, w = scaled_dot_product_attention(q, k, v)
    assert w.shape == (2, 5, 7)
    assert (w >= 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 5, dtype=w.dtype), **TIGHT)


def test_masked_positions_get_exactly_zero_weight():
    q, k, v = _qkv(t_q=4, t_k=4)
    _, w = scaled_dot_product_attention(q, k, v, causal_mask(4))
    assert torch.equal(w.triu(1), torch.zeros_like(w))


def test_fully_masked_row_gives_zero_not_nan():
    q, k, v = _qkv(t_q=3, t_k=4)
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[1] = False
    q.requires_grad_(True)
    out, w = scaled_dot_product_attention(q, k, v, mask)
    assert not torch.isnan(out).any() and not torch.isnan(w).any()
    assert torch.equal(out[:, 1], torch.zeros_like(out[:, 1]))
    assert torch.equal(w[:, 1], torch.zeros_like(w[:, 1]))
    out.sum().backward()
    assert torch.isfinite(q.grad).all()


def test_softmax_is_stable_for_huge_scores():
    scores = torch.tensor([[1000.0, 999.0, -1000.0]])
    w = masked_softmax(scores)
    assert torch.isfinite(w).all()
    torch.testing.assert_close(w, torch.softmax(scores.double(), -1).float())


def test_gradient_matches_torch_functional():
    q, k, v = _qkv(t_q=5, t_k=5)
    mask = causal_mask(5)
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    ref_leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    scaled_dot_product_attention(*leaves, mask)[0].pow(2).sum().backward()
    F.scaled_dot_product_attention(*ref_leaves, attn_mask=mask).pow(2).sum().backward()
    for a, b in zip(leaves, ref_leaves, strict=True):
        torch.testing.assert_close(a.grad, b.grad, **TIGHT)


def test_causal_output_at_t_does_not_depend_on_later_inputs():
    q, k, v = _qkv(b=1, t_q=6, t_k=6)
    out, _ = scaled_dot_product_attention(q, k, v, causal_mask(6))
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    t = 3
    for x in (q2, k2, v2):
        x[:, t + 1 :] = torch.randn_like(x[:, t + 1 :]) * 10
    out2, _ = scaled_dot_product_attention(q2, k2, v2, causal_mask(6))
    torch.testing.assert_close(out[:, : t + 1], out2[:, : t + 1], **TIGHT)
    assert not torch.allclose(out[:, t + 1 :], out2[:, t + 1 :])


def test_sdpa_rejects_mismatched_shapes_with_clear_messages():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="same last dimension d_k"):
        scaled_dot_product_attention(q, k[..., :3], v)
    with pytest.raises(ValueError, match="same number of positions T_k"):
        scaled_dot_product_attention(q, k, v[:, :4])
    with pytest.raises(ValueError, match=r"must broadcast.*\(2, 5, 7\), got \(5, 5\)"):
        scaled_dot_product_attention(q, k, v, torch.ones(5, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="boolean"):
        scaled_dot_product_attention(q, k, v, torch.ones(5, 7))


# --------------------------------------------------------------- masks


def test_causal_mask_is_lower_triangular_true_may_attend():
    m = causal_mask(4)
    assert m.dtype == torch.bool and m.shape == (4, 4)
    expected = torch.tensor([[i >= j for j in range(4)] for i in range(4)])
    assert torch.equal(m, expected)


def test_causal_mask_rejects_bad_length():
    with pytest.raises(ValueError, match="seq_len must be a positive int, got 0"):
        causal_mask(0)
    with pytest.raises(TypeError, match="seq_len must be a positive int, got float"):
        causal_mask(3.0)


def test_padding_mask_from_lengths_and_from_ids_agree():
    ids = torch.tensor([[5, 6, 7, 0, 0], [8, 9, 0, 0, 0]])
    by_ids = padding_mask(ids, pad_id=0)
    by_lengths = padding_mask(torch.tensor([3, 2]), max_len=5)
    assert by_ids.shape == (2, 1, 5)
    assert torch.equal(by_ids, by_lengths)
    assert by_ids[0, 0].tolist() == [True, True, True, False, False]


def test_padding_mask_errors_name_the_argument():
    with pytest.raises(ValueError, match="pad_id is required"):
        padding_mask(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="pad_id is only used"):
        padding_mask([2, 3], pad_id=0)
    with pytest.raises(ValueError, match="max_len=2 is shorter"):
        padding_mask([2, 3], max_len=2)
    with pytest.raises(TypeError, match="integers"):
        padding_mask(torch.ones(2, 3))


def test_mask_from_torch_inverts_pytorch_convention():
    blocked = torch.triu(torch.ones(3, 3, dtype=torch.bool), 1)  # PyTorch: True = blocked
    assert torch.equal(mask_from_torch(blocked), causal_mask(3))
    kpm = torch.tensor([[False, False, True]])  # PyTorch: True = padding
    assert torch.equal(mask_from_torch(key_padding_mask=kpm), padding_mask([2], max_len=3))
    both = mask_from_torch(blocked, kpm)
    assert both.shape == (1, 3, 3)
    assert mask_from_torch() is None


# --------------------------------------------------------------- heads


def test_split_and_merge_heads_are_inverse_and_cut_contiguous_slices():
    x = torch.arange(2 * 3 * 8, dtype=torch.float64).reshape(2, 3, 8)
    h = split_heads(x, 4)
    assert h.shape == (2, 4, 3, 2)
    torch.testing.assert_close(h[:, 1], x[..., 2:4])
    torch.testing.assert_close(merge_heads(h), x)


# --------------------------------------------------------------- multi-head module


def _torch_pair(d_model=16, n_heads=4, bias=True, seed=0):
    torch.manual_seed(seed)
    ref = nn.MultiheadAttention(d_model, n_heads, bias=bias, batch_first=True).double()
    with torch.no_grad():  # non-zero biases so that copying them is tested
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    ref.eval()
    ours = MultiHeadAttention.from_torch(ref).eval()
    return ours, ref


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("need_weights", [True, False])
def test_mha_matches_torch_self_attention(bias, need_weights):
    ours, ref = _torch_pair(bias=bias)
    x = torch.randn(3, 6, 16, dtype=torch.float64)
    out, w = ours(x, x, x, need_weights=need_weights)
    ref_out, ref_w = ref(x, x, x, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(out, ref_out, **TIGHT)
    if need_weights:
        torch.testing.assert_close(w, ref_w, **TIGHT)
    else:
        assert w is None


@pytest.mark.parametrize("need_weights", [True, False])
def test_mha_matches_torch_with_causal_and_padding_masks(need_weights):
    ours, ref = _torch_pair()
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    lengths = torch.tensor([5, 3])
    torch_causal = torch.triu(torch.ones(5, 5, dtype=torch.bool), 1)  # True = blocked
    torch_pad = ~padding_mask(lengths)[:, 0, :]  # True = padding
    ref_out, ref_w = ref(
        x, x, x, attn_mask=torch_causal, key_padding_mask=torch_pad, average_attn_weights=False
    )
    mask = mask_from_torch(torch_causal, torch_pad)
    torch.testing.assert_close(mask, causal_mask(5) & padding_mask(lengths))
    out, w = ours(x, x, x, mask=mask, need_weights=need_weights)
    torch.testing.assert_close(out, ref_out, **TIGHT)
    if need_weights:
        torch.testing.assert_close(w, ref_w, **TIGHT)


def test_mha_cross_attention_matches_torch():
    ours, ref = _torch_pair()
    tgt = torch.randn(2, 3, 16, dtype=torch.float64)
    memory = torch.randn(2, 7, 16, dtype=torch.float64)
    out, w = ours(tgt, memory, memory, need_weights=True)
    ref_out, ref_w = ref(tgt, memory, memory, average_attn_weights=True)
    assert out.shape == (2, 3, 16) and w.shape == (2, 4, 3, 7)
    torch.testing.assert_close(out, ref_out, **TIGHT)
    torch.testing.assert_close(w.mean(1), ref_w, **TIGHT)


def test_fast_path_equals_explicit_path_with_masks_and_gradients():
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4).double()
    x = torch.randn(2, 6, 16, dtype=torch.float64, requires_grad=True)
    mask = causal_mask(6) & padding_mask([6, 4])
    slow, _ = mha(x, x, x, mask, need_weights=True)
    (g_slow,) = torch.autograd.grad(slow.sum(), x)
    fast, _ = mha(x, x, x, mask)
    (g_fast,) = torch.autograd.grad(fast.sum(), x)
    torch.testing.assert_close(fast, slow, **TIGHT)
    torch.testing.assert_close(g_fast, g_slow, **TIGHT)


def test_mha_fully_masked_row_is_zero_on_both_paths():
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2, bias=False).double()
    x = torch.randn(1, 4, 8, dtype=torch.float64)
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[2] = False
    for need in (True, False):
        out, _ = mha(x, x, x, mask, need_weights=need)
        assert torch.isfinite(out).all()
        assert torch.equal(out[0, 2], torch.zeros(8, dtype=torch.float64))


def test_self_attention_without_positions_is_permutation_equivariant():
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4).double()
    x = torch.randn(2, 7, 16, dtype=torch.float64)
    perm = torch.randperm(7)
    out, _ = mha(x, x, x)
    out_perm, _ = mha(x[:, perm], x[:, perm], x[:, perm])
    torch.testing.assert_close(out_perm, out[:, perm], **TIGHT)


def test_mha_weights_per_head_sum_to_one():
    torch.manual_seed(0)
    mha = MultiHeadAttention(12, 3)
    x = torch.randn(2, 4, 12)
    _, w = mha(x, x, x, need_weights=True)
    assert w.shape == (2, 3, 4, 4)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 4))


def test_mha_parameter_count_equals_one_wide_head():
    d = 64
    for h in (1, 2, 8):
        n = sum(p.numel() for p in MultiHeadAttention(d, h).parameters())
        assert n == 4 * d * d + 4 * d


def test_mha_rejects_indivisible_d_model():
    with pytest.raises(ValueError, match=r"divisible by n_heads, got d_model=10, n_heads=3"):
        MultiHeadAttention(10, 3)


def test_mha_rejects_mismatched_shapes():
    mha = MultiHeadAttention(8, 2)
    x = torch.randn(2, 4, 8)
    with pytest.raises(
        ValueError, match=r"query must have shape \(B, T, d_model=8\), got \(2, 4, 6\)"
    ):
        mha(torch.randn(2, 4, 6), x, x)
    with pytest.raises(ValueError, match="key and value must have the same"):
        mha(x, x, torch.randn(2, 3, 8))
    with pytest.raises(ValueError, match="same batch size"):
        mha(torch.randn(3, 4, 8), x, x)
    with pytest.raises(
        ValueError,
        match=r"must broadcast to the attention scores' shape \(2, 2, 4, 4\), got \(3, 3\)",
    ):
        mha(x, x, x, mask=torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="boolean"):
        mha(x, x, x, mask=torch.ones(4, 4))


def test_from_torch_rejects_unsupported_modules():
    with pytest.raises(ValueError, match="kdim and vdim"):
        MultiHeadAttention.from_torch(nn.MultiheadAttention(8, 2, kdim=4, vdim=4))
    with pytest.raises(ValueError, match="add_bias_kv"):
        MultiHeadAttention.from_torch(nn.MultiheadAttention(8, 2, add_bias_kv=True))
    with pytest.raises(TypeError, match="nn.MultiheadAttention"):
        MultiHeadAttention.from_torch(nn.Linear(2, 2))


def test_dropout_only_in_training_mode():
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2, dropout=0.5)
    x = torch.randn(1, 6, 8)
    mha.eval()
    a, _ = mha(x, x, x)
    b, _ = mha(x, x, x, need_weights=True)
    torch.testing.assert_close(a, b)
    mha.train()
    c, _ = mha(x, x, x)
    assert not torch.allclose(a, c)


def test_scale_is_one_over_sqrt_dk():
    q = torch.zeros(1, 1, 4, dtype=torch.float64)
    q[..., 0] = 2.0
    k = torch.eye(4, dtype=torch.float64)[None, :2]  # scores 2 and 0 before scaling
    _, w = scaled_dot_product_attention(q, k, torch.zeros(1, 2, 1, dtype=torch.float64))
    expected = 1 / (1 + math.exp(-2 / math.sqrt(4)))
    assert abs(w[0, 0, 0].item() - expected) < 1e-12


@pytest.mark.parametrize("need_weights", [True, False])
def test_mha_causal_output_at_t_does_not_depend_on_later_tokens(need_weights):
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4).double()
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 4:] = torch.randn(2, 2, 16, dtype=torch.float64) * 10
    out, _ = mha(x, x, x, causal_mask(6), need_weights=need_weights)
    out2, _ = mha(x2, x2, x2, causal_mask(6), need_weights=need_weights)
    torch.testing.assert_close(out[:, :4], out2[:, :4], **TIGHT)
    assert not torch.allclose(out[:, 4:], out2[:, 4:])


def test_mask_from_torch_rejects_float_masks():
    with pytest.raises(TypeError, match="attn_mask must be boolean"):
        mask_from_torch(torch.zeros(3, 3))
    with pytest.raises(TypeError, match="key_padding_mask must be boolean"):
        mask_from_torch(key_padding_mask=torch.zeros(2, 3))


# ------------------------------------------------------------- is_causal: no mask is built


def test_is_causal_equals_the_causal_mask_on_both_paths_and_with_a_cache():
    torch.manual_seed(0)
    mha = MultiHeadAttention(d_model=16, n_heads=4).double()
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    masked = mha(x, x, x, causal_mask(6))[0]
    torch.testing.assert_close(mha(x, x, x, is_causal=True)[0], masked, **TIGHT)
    explicit, weights = mha(x, x, x, need_weights=True, is_causal=True)
    torch.testing.assert_close(explicit, masked, **TIGHT)
    assert not weights[..., 0, 1:].any()  # the first query reads the first key only
    kv = KVCache()  # a prompt of 4, then one token at a time: the past plus itself
    steps = [mha(x[:, :4], x[:, :4], x[:, :4], cache=kv, is_causal=True)[0]]
    steps += [mha(x[:, t : t + 1], x[:, t : t + 1], x[:, t : t + 1], cache=kv, is_causal=True)[0]
              for t in (4, 5)]  # fmt: skip
    torch.testing.assert_close(torch.cat(steps, dim=1), masked, **TIGHT)


def test_is_causal_with_a_mask_or_unequal_lengths_is_refused():
    mha = MultiHeadAttention(d_model=8, n_heads=2)
    x, memory = torch.randn(1, 3, 8), torch.randn(1, 5, 8)
    with pytest.raises(ValueError, match="mask must be None with is_causal=True"):
        mha(x, x, x, causal_mask(3), is_causal=True)
    with pytest.raises(ValueError, match=r"is_causal=True needs as many queries as keys.*T_k=5"):
        mha(x, memory, memory, is_causal=True)
    with pytest.raises(TypeError, match="is_causal must be a bool, got int 1"):
        mha(x, x, x, is_causal=1)


# ------------------------------------------- self-attention: Q, K and V from one product


def test_self_attention_stacks_the_three_projections_into_one_product():
    torch.manual_seed(0)
    mha = MultiHeadAttention(d_model=16, n_heads=4).double()
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    stacked = mha(x, x, x, is_causal=True)[0]  # query is key is value: one product
    separate = mha(x, x.clone(), x.clone(), is_causal=True)[0]  # three products
    torch.testing.assert_close(stacked, separate, **TIGHT)
    no_bias = MultiHeadAttention(d_model=16, n_heads=4, bias=False).double()
    torch.testing.assert_close(no_bias(x, x, x)[0], no_bias(x, x.clone(), x.clone())[0], **TIGHT)
    kv = KVCache()  # the cached path stacks too: prompt, then one token
    steps = [mha(x[:, :5], x[:, :5], x[:, :5], cache=kv, is_causal=True)[0]]
    last = x[:, 5:]
    steps.append(mha(last, last, last, cache=kv, is_causal=True)[0])
    torch.testing.assert_close(torch.cat(steps, dim=1), separate, **TIGHT)


class _Shifted(nn.Linear):
    """A projection that is not a plain nn.Linear (as an adapter would be): adds 1."""

    def forward(self, x):
        return super().forward(x) + 1.0


def test_a_replaced_projection_is_called_not_bypassed_by_the_stacked_product():
    torch.manual_seed(0)
    mha = MultiHeadAttention(d_model=8, n_heads=2).double()
    x = torch.randn(1, 4, 8, dtype=torch.float64)
    before = mha(x, x, x)[0]
    shifted = _Shifted(8, 8).double()
    shifted.load_state_dict(mha.v_proj.state_dict())
    mha.v_proj = shifted  # every value vector + 1: the output moves by out_proj(1)
    after = mha(x, x, x)[0]
    torch.testing.assert_close(after, before + mha.out_proj.weight.sum(dim=1), **TIGHT)


def test_a_hooked_projection_is_called_not_bypassed_by_the_stacked_product():
    mha = MultiHeadAttention(d_model=8, n_heads=2)
    x = torch.randn(1, 4, 8)
    seen = []
    hook = mha.k_proj.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    mha(x, x, x)
    hook.remove()
    assert seen == [torch.Size([1, 4, 8])]
