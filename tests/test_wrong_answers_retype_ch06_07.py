"""Plausible wrong answers to the questions of chapters 6 and 7 that replaced re-typing
questions: every one must be rejected, with the message a student would need.

Same form as tests/test_wrong_answers_retype.py: each entry names a phrase the feedback must
contain (the named mistake, or the comparison's own line when no known mistake matches).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _wrong_answers import assert_rejected, question

from tfbook.model import PUBLISHED, meta_model
from tfbook.objectives import mask_tokens

# --------------------------------------------------------------------------- 6.5 tied gradient


def _tied_autograd(ids, grad_embedded, h, grad_logits):
    weight = torch.zeros(grad_logits.shape[-1], h.shape[-1], dtype=h.dtype, requires_grad=True)
    with torch.enable_grad():
        loss = (weight[ids] * grad_embedded).sum() + ((h @ weight.T) * grad_logits).sum()
        loss.backward()
    return weight.grad


def _tied_loop_assign(ids, grad_embedded, h, grad_logits):
    v, d = grad_logits.shape[-1], h.shape[-1]
    grad = grad_logits.reshape(-1, v).T @ h.reshape(-1, d)
    lookup = torch.zeros(v, d, dtype=h.dtype)
    for b in range(ids.shape[0]):
        for s in range(ids.shape[1]):
            lookup[ids[b, s]] = grad_embedded[b, s]  # = instead of +=
    return grad + lookup


def _tied_head_transposed(ids, grad_embedded, h, grad_logits):
    v, d = grad_logits.shape[-1], h.shape[-1]
    lookup = torch.zeros(v, d, dtype=h.dtype).index_add(
        0, ids.flatten(), grad_embedded.reshape(-1, d)
    )
    return lookup + (h.reshape(-1, d).T @ grad_logits.reshape(-1, v)).reshape(v, d)


def _tied_float32_zeros(ids, grad_embedded, h, grad_logits):
    v, d = grad_logits.shape[-1], h.shape[-1]
    grad = torch.zeros(v, d)  # float32: index_add_ refuses float64 rows
    grad.index_add_(0, ids.flatten(), grad_embedded.reshape(-1, d))
    return grad + grad_logits.reshape(-1, v).T @ h.reshape(-1, d)


def _tied_scatter_add_column(ids, grad_embedded, h, grad_logits):
    v, d = grad_logits.shape[-1], h.shape[-1]
    grad = torch.zeros(v, d, dtype=h.dtype)
    grad.scatter_add_(0, ids.reshape(-1, 1), grad_embedded.reshape(-1, d))  # column 0 only
    return grad + grad_logits.reshape(-1, v).T @ h.reshape(-1, d)


def _tied_first_row_of_batch(ids, grad_embedded, h, grad_logits):
    v, d = grad_logits.shape[-1], h.shape[-1]
    lookup = torch.zeros(v, d, dtype=h.dtype).index_add(
        0, ids.flatten(), grad_embedded.reshape(-1, d)
    )
    return lookup + grad_logits[0].T @ h[0]  # the head's part of the first sequence only


def _tied_sqrt_d_scaled(ids, grad_embedded, h, grad_logits):
    v, d = grad_logits.shape[-1], h.shape[-1]
    lookup = torch.zeros(v, d, dtype=h.dtype).index_add(
        0, ids.flatten(), grad_embedded.reshape(-1, d)
    )
    return math.sqrt(d) * lookup + grad_logits.reshape(-1, v).T @ h.reshape(-1, d)


def _tied_vocab_from_ids(ids, grad_embedded, h, grad_logits):
    v, d = int(ids.max()) + 1, h.shape[-1]
    lookup = torch.zeros(v, d, dtype=h.dtype).index_add(
        0, ids.flatten(), grad_embedded.reshape(-1, d)
    )
    return lookup + grad_logits.reshape(-1, grad_logits.shape[-1])[:, :v].T @ h.reshape(-1, d)


# --------------------------------------------------------------------------- 6.6 reach


def _reach_step(mask):
    return (mask | torch.eye(mask.shape[0], dtype=torch.bool)).long()


def _reach_zero_layers_is_the_mask(mask, n_layers=1):
    reach = _reach_step(mask)  # starts from one layer, then n_layers - 1 more
    for _ in range(n_layers - 1):
        reach = (_reach_step(mask) @ reach > 0).long()
    return reach.bool()


def _reach_residual_added_at_the_end(mask, n_layers=1):
    reach = torch.eye(mask.shape[0], dtype=torch.long)
    for _ in range(n_layers):
        reach = (mask.long() @ reach > 0).long()
    return reach.bool() | torch.eye(mask.shape[0], dtype=torch.bool)


def _reach_long_result(mask, n_layers=1):
    reach = torch.eye(mask.shape[0], dtype=torch.long)
    for _ in range(n_layers):
        reach = (_reach_step(mask) @ reach > 0).long()
    return reach  # 0/1 as torch.long


def _reach_two_layers_by_default(mask, n_layers=2):
    reach = torch.eye(mask.shape[0], dtype=torch.long)
    for _ in range(n_layers):
        reach = (_reach_step(mask) @ reach > 0).long()
    return reach.bool()


def _reach_window_guessed(mask, n_layers=1):
    # assumes a contiguous causal window: reach = n_layers * (w - 1) positions back
    w = int(mask.sum(dim=1).max())
    i = torch.arange(mask.shape[0])
    back = i[:, None] - i[None, :]
    return (back >= 0) & (back <= n_layers * (w - 1))


def _reach_numpy(mask, n_layers=1):
    step = _reach_step(mask).numpy()
    reach = np.eye(mask.shape[0], dtype=np.int64)
    for _ in range(n_layers):
        reach = (step @ reach > 0).astype(np.int64)
    return reach.astype(bool)


def _reach_matrix_power_int(mask, n_layers=1):
    return torch.linalg.matrix_power(_reach_step(mask), n_layers).bool()  # counts wrap to 0


def _reach_in_place_diagonal(mask, n_layers=1):
    mask.fill_diagonal_(True)  # the residual, written into the caller's mask
    reach = torch.eye(mask.shape[0], dtype=torch.long)
    for _ in range(n_layers):
        reach = (mask.long() @ reach > 0).long()
    return reach.bool()


# --------------------------------------------------------------------------- 7.2 KV cache


def _cache_float_division(
    n_layers, d_model, n_heads, n_kv_heads, tokens, batch=1, bytes_per_number=2
):
    d_head = d_model / n_heads  # a float, so every product is one
    per_token = 2 * n_layers * n_kv_heads * d_head * bytes_per_number
    return per_token, batch * tokens * per_token


def _cache_default_float32(
    n_layers, d_model, n_heads, n_kv_heads, tokens, batch=1, bytes_per_number=4
):
    per_token = 2 * n_layers * n_kv_heads * (d_model // n_heads) * bytes_per_number
    return per_token, batch * tokens * per_token


def _cache_numpy_ints(n_layers, d_model, n_heads, n_kv_heads, tokens, batch=1, bytes_per_number=2):
    shape = np.array([2, n_layers, n_kv_heads, d_model // n_heads, bytes_per_number])
    per_token = np.prod(shape)  # numpy.int64
    return per_token, batch * tokens * per_token


def _cache_group_size_instead_of_groups(
    n_layers, d_model, n_heads, n_kv_heads, tokens, batch=1, bytes_per_number=2
):
    group = n_heads // n_kv_heads  # query heads per key/value head, taken as the count
    per_token = 2 * n_layers * group * (d_model // n_heads) * bytes_per_number
    return per_token, batch * tokens * per_token


def _cache_batch_in_per_token(
    n_layers, d_model, n_heads, n_kv_heads, tokens, batch=1, bytes_per_number=2
):
    per_token = batch * 2 * n_layers * n_kv_heads * (d_model // n_heads) * bytes_per_number
    return per_token, tokens * per_token


def _cache_last_token_not_stored(
    n_layers, d_model, n_heads, n_kv_heads, tokens, batch=1, bytes_per_number=2
):
    per_token = 2 * n_layers * n_kv_heads * (d_model // n_heads) * bytes_per_number
    return per_token, batch * (tokens - 1) * per_token  # "the newest token needs no cache"


def _cache_list(n_layers, d_model, n_heads, n_kv_heads, tokens, batch=1, bytes_per_number=2):
    per_token = 2 * n_layers * n_kv_heads * (d_model // n_heads) * bytes_per_number
    return [per_token, batch * tokens * per_token]


def _cache_chapter_formula(
    n_layers, d_model, n_heads, n_kv_heads, tokens, batch=1, bytes_per_number=2
):
    # the chapter's kv_cache_bytes, re-typed: every query head with its own key and value
    per_token = 2 * n_layers * d_model * bytes_per_number
    return per_token, batch * tokens * per_token


def _cache_kib(n_layers, d_model, n_heads, n_kv_heads, tokens, batch=1, bytes_per_number=2):
    per_token = 2 * n_layers * n_kv_heads * (d_model // n_heads) * bytes_per_number
    return per_token // 2**10, batch * tokens * per_token // 2**20  # KiB and MiB


def test_kv_cache_size_without_groups_is_what_gpt2_small_stores():
    """With n_kv_heads = n_heads the reference is the cache GPT-2 small really builds (meta)."""
    gpt2_class, config, _ = PUBLISHED["gpt2-small"]
    model = meta_model(gpt2_class, config)
    cache = model.new_cache()
    with torch.no_grad():
        model(torch.zeros(2, 100, dtype=torch.long, device="meta"), cache=cache)
    stored = sum(
        t.numel() * t.element_size()
        for layer in cache.layers
        for kv in layer.caches()
        for t in (kv.keys, kv.values)
    )
    per_token, total = question("ch07.q2").reference(
        config.n_layers,
        config.d_model,
        config.n_heads,
        config.n_heads,
        100,
        batch=2,
        bytes_per_number=4,
    )
    assert total == stored == 2 * 100 * per_token


# --------------------------------------------------------------------------- 7.6 BERT's masking


def _bert(
    ids,
    vocab_size,
    max_predictions,
    generator,
    *,
    count=None,
    mask=0.8,
    random=0.1,
    low=5,
    high=None,
    first=False,
    special=5,
):
    """A student's bert_mask with one thing changed (keyword arguments)."""
    inputs, labels = ids.clone(), torch.full_like(ids, -100)
    high = vocab_size if high is None else high
    for b in range(ids.shape[0]):
        candidates = (ids[b] >= special).nonzero().flatten()
        n = len(candidates)
        k = 0 if n == 0 else min(max_predictions, max(1, math.floor(0.15 * n + 0.5)))
        if count is not None:
            k = min(count(ids[b]), n)
        order = torch.arange(n) if first else torch.randperm(n, generator=generator)
        picked = candidates[order[:k]]
        labels[b, picked] = ids[b, picked]
        for t in picked.tolist():
            u = torch.rand(1, generator=generator).item()
            if u < mask:
                inputs[b, t] = 4
            elif u < mask + random:
                inputs[b, t] = torch.randint(low, high, (1,), generator=generator).item()
    return inputs, labels


def _bert_independent_choice(ids, vocab_size, max_predictions=20, generator=None):
    # the chapter's mask_tokens: every ordinary position chosen with probability 0.15
    return mask_tokens(ids, vocab_size, 4, generator=generator)


def _bert_all_masked(ids, vocab_size, max_predictions=20, generator=None):
    return _bert(ids, vocab_size, max_predictions, generator, mask=1.0)


def _bert_no_kept_share(ids, vocab_size, max_predictions=20, generator=None):
    return _bert(ids, vocab_size, max_predictions, generator, random=0.2)


def _bert_random_from_every_id(ids, vocab_size, max_predictions=20, generator=None):
    return _bert(ids, vocab_size, max_predictions, generator, low=0)


def _bert_randint_excludes_last(ids, vocab_size, max_predictions=20, generator=None):
    return _bert(ids, vocab_size, max_predictions, generator, high=vocab_size - 1)


def _bert_first_positions(ids, vocab_size, max_predictions=20, generator=None):
    return _bert(ids, vocab_size, max_predictions, generator, first=True)


def _bert_bos_eos_counted(ids, vocab_size, max_predictions=20, generator=None):
    # n counts every non-padding token, <bos> and <eos> included (BERT's len(tokens))
    def count(row):
        n = int((row != 0).sum())
        return min(max_predictions, max(1, math.floor(0.15 * n + 0.5)))

    return _bert(ids, vocab_size, max_predictions, generator, count=count)


def _bert_padding_only_special(ids, vocab_size, max_predictions=20, generator=None):
    # only padding excluded: <bos> and <eos> may be chosen
    return _bert(ids, vocab_size, max_predictions, generator, special=1)


def _bert_labels_everywhere(ids, vocab_size, max_predictions=20, generator=None):
    inputs, _ = _bert(ids, vocab_size, max_predictions, generator)
    return inputs, ids.clone()


def _bert_in_place(ids, vocab_size, max_predictions=20, generator=None):
    inputs, labels = _bert(ids, vocab_size, max_predictions, generator)
    ids.copy_(inputs)
    return ids, labels


def _bert_mask_id_103(ids, vocab_size, max_predictions=20, generator=None):
    inputs, labels = _bert(ids, vocab_size, max_predictions, generator)
    return torch.where(inputs == 4, 103, inputs), labels  # BERT's [MASK] id


def _bert_float_labels(ids, vocab_size, max_predictions=20, generator=None):
    inputs, labels = _bert(ids, vocab_size, max_predictions, generator)
    return inputs, labels.float()


def _bert_cap_required(ids, vocab_size, max_predictions, generator=None):  # no default
    return _bert(ids, vocab_size, max_predictions, generator)


def _bert_cap_15_by_default(ids, vocab_size, max_predictions=15, generator=None):
    return _bert(ids, vocab_size, max_predictions, generator)


# --------------------------------------------------------------------------- the test

# qid -> [(wrong answer, a phrase its feedback must contain)]
WRONG = {
    "ch06.q5": [
        (_tied_autograd, "calls torch.Tensor.backward"),
        (_tied_loop_assign, "a repeated id keeps one gradient instead of the sum"),
        (_tied_head_transposed, "output"),
        (_tied_float32_zeros, "raised"),
        (_tied_scatter_add_column, "output"),
        (_tied_first_row_of_batch, "output"),
        (_tied_sqrt_d_scaled, "output"),
        (_tied_vocab_from_ids, "wrong shape"),
    ],
    "ch06.q6": [
        (_reach_zero_layers_is_the_mask, "edge: 0 layers"),
        (_reach_residual_added_at_the_end, "strictly earlier keys"),
        (_reach_long_result, "wrong dtype: expected torch.bool, got torch.int64"),
        (_reach_two_layers_by_default, "only the required arguments"),
        (_reach_window_guessed, "no mask (all True), T=5"),
        (_reach_numpy, "ndarray"),
        (_reach_matrix_power_int, "path counts in int64"),
        (_reach_in_place_diagonal, "modified its input argument 'mask'"),
    ],
    "ch07.q2": [
        (_cache_float_division, "bytes per token must be an int, got float"),
        (_cache_default_float32, "bytes_per_number defaults to 4"),
        (_cache_numpy_ints, "bytes per token must be an int, got int64"),
        (_cache_group_size_instead_of_groups, "query heads per group taken as the number"),
        (_cache_batch_in_per_token, "expected (bytes per token, bytes of the cache)"),
        (_cache_last_token_not_stored, "expected (bytes per token, bytes of the cache)"),
        (_cache_list, "expected a tuple of two ints, got list"),
        (_cache_chapter_formula, "n_kv_heads ignored"),
        (_cache_kib, "expected (bytes per token, bytes of the cache)"),
    ],
    "ch07.q6": [
        (_bert_independent_choice, "expected k ="),
        (_bert_all_masked, "became <mask>: 1.000, expected 0.800"),
        (_bert_no_kept_share, "became another token"),
        (_bert_random_from_every_id, "a chosen position holds"),
        (_bert_randint_excludes_last, "never took the ids [24]"),
        (_bert_first_positions, "positions are not chosen uniformly"),
        (_bert_bos_eos_counted, "row 6 has n = 8 ordinary tokens: expected k = 1"),
        (_bert_padding_only_special, "but it holds the special token"),
        (_bert_labels_everywhere, "labels[0, 0] = 2 marks position 0 of row 0 as chosen"),
        (_bert_in_place, "modified its input argument 'ids'"),
        (_bert_mask_id_103, "a chosen position holds 103"),
        (_bert_float_labels, "labels must be a torch.long tensor"),
        (_bert_cap_required, "missing 1 required positional argument: 'max_predictions'"),
        (_bert_cap_15_by_default, "row 0 has n = 150 ordinary tokens: expected k = 20"),
    ],
}
PAIRS = [(qid, fn, phrase) for qid, found in WRONG.items() for fn, phrase in found]


@pytest.mark.parametrize(
    ("qid", "wrong", "phrase"), PAIRS, ids=[f"{q}-{fn.__name__}" for q, fn, _ in PAIRS]
)
def test_wrong_answer_is_rejected_with_a_useful_message(qid, wrong, phrase):
    assert_rejected(qid, wrong, phrase)
