"""Tests for tfbook.embedding (chapter 2) against torch.nn and float64 NumPy references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tfbook.embedding import TokenEmbedding, cosine_similarity_matrix, one_hot_embed, pca_2d


def _ids(batch=2, seq=7, vocab=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, seq), generator=g)


def test_output_shape_is_batch_seq_d_model():
    emb = TokenEmbedding(11, 16)
    assert emb(_ids()).shape == (2, 7, 16)
    assert emb(torch.tensor([3, 4])).shape == (2, 16)


def test_matches_nn_embedding_with_copied_weights_times_sqrt_d_model():
    torch.manual_seed(0)
    emb = TokenEmbedding(11, 16)
    ref = nn.Embedding(11, 16)
    ref.weight.data.copy_(emb.weight.data)
    ids = _ids()
    torch.testing.assert_close(emb(ids), ref(ids) * 4.0)


def test_scale_off_returns_the_raw_rows_like_f_embedding():
    emb = TokenEmbedding(11, 9, scale=False)
    ids = _ids()
    torch.testing.assert_close(emb(ids), F.embedding(ids, emb.weight))
    assert emb.scale_factor == 1.0
    assert TokenEmbedding(11, 9).scale_factor == pytest.approx(3.0)


def test_matches_float64_numpy_one_hot_product():
    emb = TokenEmbedding(13, 8)
    ids = _ids(vocab=13, seed=3)
    w = emb.weight.detach().double().numpy()
    one_hot = np.eye(13)[ids.numpy()]  # (B, T, V)
    expected = one_hot @ w * math.sqrt(8)
    np.testing.assert_allclose(emb(ids).detach().double().numpy(), expected, rtol=1e-6)


def test_one_hot_embed_equals_row_lookup_exactly():
    w = torch.randn(10, 5, generator=torch.Generator().manual_seed(1))
    ids = _ids(vocab=10, seed=2)
    assert torch.equal(one_hot_embed(ids, w), w[ids])


def test_default_init_gives_unit_variance_after_scaling():
    torch.manual_seed(0)
    emb = TokenEmbedding(2000, 64)
    assert emb.weight.std().item() == pytest.approx(64**-0.5, rel=0.05)
    out = emb(torch.arange(2000))
    assert out.std().item() == pytest.approx(1.0, rel=0.05)
    assert TokenEmbedding(10, 4, init_std=0.02).weight.std().item() < 0.1


def test_padding_row_is_zero_and_gets_no_gradient():
    emb = TokenEmbedding(6, 4, padding_idx=0)
    assert torch.count_nonzero(emb.weight[0]) == 0
    out = emb(torch.tensor([[0, 1, 2]]))
    out.sum().backward()
    assert torch.count_nonzero(emb.weight.grad[0]) == 0
    assert torch.count_nonzero(emb.weight.grad[1]) == 4


def test_gradient_reaches_only_the_rows_used():
    emb = TokenEmbedding(6, 4)
    emb(torch.tensor([[1, 1, 3]])).sum().backward()
    used = emb.weight.grad.abs().sum(dim=1) > 0
    assert used.tolist() == [False, True, False, True, False, False]
    # row 1 was used twice: its gradient is twice that of row 3 (both all sqrt(d_model))
    torch.testing.assert_close(emb.weight.grad[1], 2 * emb.weight.grad[3])


def test_bad_ids_raise_clear_errors():
    emb = TokenEmbedding(5, 4)
    with pytest.raises(TypeError, match="integer token ids.*float32"):
        emb(torch.zeros(1, 3))
    with pytest.raises(
        ValueError, match=r"ids must be token ids in \[0, V=5\), got values from 1 to 5"
    ):
        emb(torch.tensor([[1, 5]]))
    with pytest.raises(ValueError, match="got values from -1 to 2"):
        emb(torch.tensor([[-1, 2]]))
    with pytest.raises(TypeError, match="torch.Tensor"):
        emb([[1, 2]])


def test_bad_constructor_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="vocab_size must be a positive int, got 0"):
        TokenEmbedding(0, 4)
    with pytest.raises(TypeError, match="d_model must be a positive int, got float"):
        TokenEmbedding(5, 4.0)
    with pytest.raises(ValueError, match="padding_idx"):
        TokenEmbedding(5, 4, padding_idx=5)


def test_cosine_similarity_matrix_matches_f_cosine_similarity():
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(4))
    expected = F.cosine_similarity(x[:, None, :], x[None, :, :], dim=-1)
    torch.testing.assert_close(cosine_similarity_matrix(x), expected)
    xn = x.double().numpy()
    ref = (xn @ xn.T) / np.outer(np.linalg.norm(xn, axis=1), np.linalg.norm(xn, axis=1))
    np.testing.assert_allclose(cosine_similarity_matrix(x).double().numpy(), ref, atol=1e-6)


def test_cosine_similarity_of_a_zero_vector_is_zero_not_nan():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    s = cosine_similarity_matrix(x)
    assert not torch.isnan(s).any() and s[0, 1] == 0


def test_pca_2d_matches_the_covariance_eigenvectors_up_to_sign():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 6)) * np.array([5.0, 3.0, 1.0, 0.5, 0.2, 0.1])
    got = pca_2d(x)
    centred = x - x.mean(axis=0)
    vals, vecs = np.linalg.eigh(np.cov(centred.T))
    top = vecs[:, np.argsort(vals)[::-1][:2]]
    expected = centred @ top
    np.testing.assert_allclose(np.abs(got), np.abs(expected), atol=1e-8)
    assert got[:, 0].var() >= got[:, 1].var()
    np.testing.assert_allclose(pca_2d(torch.tensor(x)), got)  # tensors give the same picture
    with pytest.raises(ValueError, match="shape"):
        pca_2d(np.zeros(3))
