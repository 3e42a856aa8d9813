"""Plausible wrong answers to chapter 9's exercises: every one must be rejected, with the
message a student would need.

They are written as a student would write them after reading the chapter: a count that
forgets a factor, a gradient with its scale or its sum wrong, a merge that transposes or
keeps the wrong keys, a span score that forgives, a pooling that trusts the padding to be on
the right, and the library or autograd reached under another name. Those marked "passed
before the question changed" were accepted until their question got a new case, a
requirement, a forbidden call or a named mistake; the phrase pins the message the others
get. Same path as tests/test_wrong_answers.py: ``Question.evaluate``.
"""

from __future__ import annotations

import math

import pytest
import torch
from _wrong_answers import assert_rejected

from tfbook.exercises import ch09
from tfbook.finetune import LoRALinear, merge_lora, name_f1
from tfbook.tasks import tag_line

# --------------------------------------------------------------------------- 9.1: predict

_D, _DFF, _L, _R = 768, 3072, 12, 8
_TOTAL = 124_439_808
_LORA_QV = _L * 2 * _R * (_D + _D)
_HEAD = 3 * _D + 3


def _right(kind):
    return {
        ch09.PREDICT_KINDS[0]: _LORA_QV,
        ch09.PREDICT_KINDS[1]: _LORA_QV / (_TOTAL + _LORA_QV),
        ch09.PREDICT_KINDS[2]: _L * _R * 2 * (_D + _DFF),
        ch09.PREDICT_KINDS[3]: _TOTAL,
        ch09.PREDICT_KINDS[4]: _HEAD,
        ch09.PREDICT_KINDS[5]: 8 * (_TOTAL + _HEAD),
        ch09.PREDICT_KINDS[6]: 8 * (_LORA_QV + _HEAD),
        ch09.PREDICT_KINDS[7]: 0.0,
    }[kind]


def _with(kind, index, value):
    return value if kind == ch09.PREDICT_KINDS[index] else _right(kind)


def _p_all_four_projections(kind):
    return _with(kind, 0, _L * 4 * _R * (_D + _D))


def _p_one_target(kind):
    return _with(kind, 0, _L * _R * (_D + _D))


def _p_share_percent(kind):
    return _with(kind, 1, 100 * _LORA_QV / (_TOTAL + _LORA_QV))


def _p_share_rounded(kind):
    return _with(kind, 1, 0.002364)  # four significant digits


def _p_share_untied_head(kind):
    untied = _TOTAL + 50257 * _D  # the output head counted apart from the embedding
    return _with(kind, 1, _LORA_QV / (untied + _LORA_QV))


def _p_ffn_both_d_ff(kind):
    return _with(kind, 2, _L * _R * 2 * (_DFF + _DFF))


def _p_merged_is_trainable(kind):
    return _with(kind, 3, _LORA_QV)


def _p_head_with_final_norm(kind):
    return _with(kind, 4, _HEAD + 2 * _D)  # "the head reads the final LayerNorm"


def _p_adam_with_gradients(kind):
    return _with(kind, 5, 12 * (_TOTAL + _HEAD))  # moments and gradients


def _p_adam_bits(kind):
    return _with(kind, 6, 64 * (_LORA_QV + _HEAD))


def _p_adam_lora_without_head(kind):
    return _with(kind, 6, 8 * _LORA_QV)


def _p_tiny_change(kind):
    return _with(kind, 7, 1e-7)  # "a little: A is random"


def _p_lora_with_bias(kind):
    return _with(kind, 0, _L * 2 * (_R * (_D + _D) + _D))  # a bias in B


# --------------------------------------------------------------------------- 9.2: derive


def _flat(x, grad_y):
    return x.reshape(-1, x.shape[-1]), grad_y.reshape(-1, grad_y.shape[-1])


def _g_grad_b_transposed(x, grad_y, A, B, alpha):
    X, G = _flat(x, grad_y)
    s = alpha / A.shape[0]
    return s * (G @ B).T @ X, s * (X @ A.T).T @ G  # (r, d_out)


def _g_autograd(x, grad_y, A, B, alpha):
    A, B = A.clone().requires_grad_(), B.clone().requires_grad_()
    y = (alpha / A.shape[0]) * x @ A.T @ B.T
    return torch.autograd.grad(y, (A, B), grad_y)


def _g_backward_through_library(x, grad_y, A, B, alpha):
    layer = LoRALinear(torch.nn.Linear(A.shape[1], B.shape[0]).double(), A.shape[0], alpha)
    with torch.no_grad():
        layer.lora_A.copy_(A)
        layer.lora_B.copy_(B)
    with torch.enable_grad():
        (layer(x) * grad_y).sum().backward()
    return layer.lora_A.grad, layer.lora_B.grad


def _g_vjp(x, grad_y, A, B, alpha):
    def f(a, b):
        return (alpha / a.shape[0]) * x @ a.T @ b.T

    return torch.func.vjp(f, A, B)[1](grad_y)


def _g_jacrev(x, grad_y, A, B, alpha):
    def loss(a, b):
        return ((alpha / a.shape[0]) * x @ a.T @ b.T * grad_y).sum()

    return torch.func.jacrev(loss, argnums=(0, 1))(A, B)


def _g_jacfwd(x, grad_y, A, B, alpha):
    def loss(a, b):
        return ((alpha / a.shape[0]) * x @ a.T @ b.T * grad_y).sum()

    return torch.func.jacfwd(loss, argnums=(0, 1))(A, B)  # forward mode: not autograd.grad


def _g_float32(x, grad_y, A, B, alpha):
    X, G = _flat(x.float(), grad_y.float())
    s = alpha / A.shape[0]
    return s * (G @ B.float()).T @ X, s * G.T @ (X @ A.float().T)


def _g_first_sequence_only(x, grad_y, A, B, alpha):
    if x.dim() == 3:
        x, grad_y = x[0], grad_y[0]
    X, G = _flat(x, grad_y)
    s = alpha / A.shape[0]
    return s * (G @ B).T @ X, s * G.T @ (X @ A.T)


def _g_mean_over_sequences(x, grad_y, A, B, alpha):
    s = alpha / A.shape[0]
    if x.dim() == 3:  # sum over positions, mean over the batch
        grads = [
            (s * (g @ B).T @ xx, s * g.T @ (xx @ A.T)) for xx, g in zip(x, grad_y, strict=True)
        ]
        return tuple(sum(p[k] for p in grads) / len(grads) for k in range(2))
    X, G = _flat(x, grad_y)
    return s * (G @ B).T @ X, s * G.T @ (X @ A.T)


def _g_batched_then_summed(x, grad_y, A, B, alpha):
    s = alpha / A.shape[0]
    if x.dim() == 2:
        return s * (grad_y @ B).T @ x, s * grad_y.T @ (x @ A.T)
    g_t = grad_y.transpose(-1, -2)  # one product per sequence, summed over the batch axis
    return (s * (grad_y @ B).transpose(-1, -2) @ x).sum(0), (s * g_t @ (x @ A.T)).sum(0)


def _g_scale_inplace(x, grad_y, A, B, alpha):
    X, G = _flat(x, grad_y)
    G.mul_(alpha / A.shape[0])  # a view of grad_y: the input changes
    return (G @ B).T @ X, G.T @ (X @ A.T)


def _g_scale_squared(x, grad_y, A, B, alpha):
    X, G = _flat(x, grad_y)
    s = alpha / A.shape[0]
    return s * s * (G @ B).T @ X, s * G.T @ (X @ A.T)  # "the chain rule passes s twice"


def _g_swapped(x, grad_y, A, B, alpha):
    X, G = _flat(x, grad_y)
    s = alpha / A.shape[0]
    return s * G.T @ (X @ A.T), s * (G @ B).T @ X


def _g_finite_differences(x, grad_y, A, B, alpha):
    def loss(a, b):
        return ((alpha / a.shape[0]) * x @ a.T @ b.T * grad_y).sum()

    grads = []
    for which in range(2):
        params = [A.clone(), B.clone()]
        grad = torch.zeros_like(params[which])
        for index in range(grad.numel()):
            up, down = [p.clone() for p in params], [p.clone() for p in params]
            up[which].view(-1)[index] += 1e-4
            down[which].view(-1)[index] -= 1e-4
            grad.view(-1)[index] = (loss(*up) - loss(*down)) / 2e-4
        grads.append(grad)
    return tuple(grads)


# --------------------------------------------------------------------------- 9.3: debug


def _adapted(state):
    return [k[: -len(".lora_A")] for k in state if k.endswith(".lora_A")]


def _others(state, merged):
    for key, value in state.items():
        if ".base." not in key and not key.endswith((".lora_A", ".lora_B")):
            merged[key] = value
    return merged


def _m_given(state, alpha):
    merged = {}
    for key, value in state.items():
        if key.endswith(".lora_A"):
            prefix = key[: -len(".lora_A")]
            A, B = value, state[prefix + ".lora_B"]
            W = state[prefix + ".base.weight"]
            merged[prefix + ".weight"] = W + alpha * (A.T @ B.T)
            merged[prefix + ".bias"] = state[prefix + ".base.bias"]
    return merged


def _m_fixed_orientation_only(state, alpha):
    merged = {}
    for p in _adapted(state):
        A, B = state[p + ".lora_A"], state[p + ".lora_B"]
        merged[p + ".weight"] = state[p + ".base.weight"] + alpha * (B @ A)
        merged[p + ".bias"] = state[p + ".base.bias"]
    return merged


def _m_fixed_keys_only(state, alpha):
    merged = _m_given(state, alpha)
    return _others(state, merged)


def _m_r_from_b(state, alpha):
    merged = {}
    for p in _adapted(state):
        A, B = state[p + ".lora_A"], state[p + ".lora_B"]
        merged[p + ".weight"] = state[p + ".base.weight"] + alpha / B.shape[0] * (B @ A)
        merged[p + ".bias"] = state[p + ".base.bias"]
    return _others(state, merged)


def _m_transposed_product(state, alpha):
    merged = {}
    for p in _adapted(state):
        A, B = state[p + ".lora_A"], state[p + ".lora_B"]
        merged[p + ".weight"] = state[p + ".base.weight"] + alpha / A.shape[0] * (B @ A).T
        merged[p + ".bias"] = state[p + ".base.bias"]
    return _others(state, merged)


def _m_integer_division(state, alpha):
    merged = {}
    for p in _adapted(state):
        A, B = state[p + ".lora_A"], state[p + ".lora_B"]
        merged[p + ".weight"] = state[p + ".base.weight"] + alpha // A.shape[0] * (B @ A)
        merged[p + ".bias"] = state[p + ".base.bias"]
    return _others(state, merged)


def _m_in_place(state, alpha):
    for p in _adapted(state):
        A, B = state[p + ".lora_A"], state[p + ".lora_B"]
        state[p + ".base.weight"] += alpha / A.shape[0] * (B @ A)
    merged = {k.replace(".base.", "."): v for k, v in state.items()}
    return {k: v for k, v in merged.items() if not k.endswith((".lora_A", ".lora_B"))}


def _m_through_lora_linear(state, alpha):
    merged = {}
    for p in _adapted(state):
        A, B = state[p + ".lora_A"], state[p + ".lora_B"]
        base = torch.nn.Linear(A.shape[1], B.shape[0]).double()
        layer = LoRALinear(base, A.shape[0], alpha)
        layer.load_state_dict(
            {k.split(p + ".", 1)[1]: v for k, v in state.items() if k.startswith(p + ".")}
        )
        plain = layer.merged()
        merged[p + ".weight"], merged[p + ".bias"] = plain.weight, plain.bias
    return _others(state, merged)


def _m_through_merge_lora(state, alpha):
    from tfbook.finetune import add_lora
    from tfbook.model import GPT, TransformerConfig

    model = GPT(TransformerConfig(**ch09.TINY_LORA_GPT)).double()
    names = tuple(_adapted(state))
    add_lora(model, names, r=state[names[0] + ".lora_A"].shape[0], alpha=alpha)
    model.load_state_dict(state)
    return dict(merge_lora(model).state_dict())


def _m_base_keys_kept(state, alpha):
    merged = {}
    for p in _adapted(state):
        A, B = state[p + ".lora_A"], state[p + ".lora_B"]
        merged[p + ".base.weight"] = state[p + ".base.weight"] + alpha / A.shape[0] * (B @ A)
        merged[p + ".base.bias"] = state[p + ".base.bias"]
    return _others(state, merged)


def _m_bias_dropped(state, alpha):
    merged = {}
    for p in _adapted(state):
        A, B = state[p + ".lora_A"], state[p + ".lora_B"]
        merged[p + ".weight"] = state[p + ".base.weight"] + alpha / A.shape[0] * (B @ A)
    return _others(state, merged)


def _m_float32(state, alpha):
    merged = {}
    for p in _adapted(state):
        A, B = state[p + ".lora_A"].float(), state[p + ".lora_B"].float()
        merged[p + ".weight"] = state[p + ".base.weight"].float() + alpha / A.shape[0] * (B @ A)
        merged[p + ".bias"] = state[p + ".base.bias"]
    return _others(state, merged)


def _m_scale_sqrt_r(state, alpha):
    merged = {}
    for p in _adapted(state):
        A, B = state[p + ".lora_A"], state[p + ".lora_B"]
        s = alpha / math.sqrt(A.shape[0])  # rsLoRA's scale, not the chapter's
        merged[p + ".weight"] = state[p + ".base.weight"] + s * (B @ A)
        merged[p + ".bias"] = state[p + ".base.bias"]
    return _others(state, merged)


# --------------------------------------------------------------------------- 9.4: build


def _spans_of(tags, i_starts=True):
    spans, start = [], None
    for j, t in enumerate([*tags, 0]):
        if start is not None and t != 2:
            spans.append((start, j))
            start = None
        if t == 1 or (i_starts and t == 2 and start is None):
            start = j
    return spans


def _scores(gold, found):
    correct = len(gold & found)
    p = correct / len(found) if found else 0.0
    r = correct / len(gold) if gold else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def _s_name_f1_per_line(lines, names, predicted):
    values = [
        name_f1(torch.tensor(p), torch.tensor(tag_line(line, names)))
        for line, p in zip(lines, predicted, strict=True)
    ]
    f1 = sum(values) / len(values)
    return f1, f1, f1


def _s_names_as_written_only(lines, names, predicted):
    import re

    gold = set()
    for i, line in enumerate(lines):
        for name in names:  # "MACBETH" is missed: only the capitalised spelling
            gold |= {(i, m.start(), m.end()) for m in re.finditer(rf"\b{name}\b", line)}
    found = {(i, *s) for i, tags in enumerate(predicted) for s in _spans_of(tags)}
    return _scores(gold, found)


def _s_f1_only(lines, names, predicted):
    return ch09._reference_span_f1(lines, names, predicted)[2]


def _s_percent(lines, names, predicted):
    return tuple(100 * v for v in ch09._reference_span_f1(lines, names, predicted))


def _s_no_prediction_is_perfect_precision(lines, names, predicted):
    gold = {(i, *s) for i, line in enumerate(lines) for s in _spans_of(tag_line(line, names))}
    found = {(i, *s) for i, tags in enumerate(predicted) for s in _spans_of(tags)}
    p, r, f = _scores(gold, found)
    return (1.0 if not found else p), r, f


def _s_i_at_line_start_ignored(lines, names, predicted):
    def spans(tags):
        out, start, previous = [], None, None
        for j, t in enumerate([*tags, 0]):
            if start is not None and t != 2:
                out.append((start, j))
                start = None
            if t == 1 or (t == 2 and start is None and previous == 0):
                start = j
            previous = t
        return out

    gold = {(i, *s) for i, line in enumerate(lines) for s in spans(tag_line(line, names))}
    found = {(i, *s) for i, tags in enumerate(predicted) for s in spans(tags)}
    return _scores(gold, found)


def _s_b_tags_counted(lines, names, predicted):
    gold = {
        (i, j)
        for i, line in enumerate(lines)
        for j, t in enumerate(tag_line(line, names))
        if t == 1
    }
    found = {(i, j) for i, tags in enumerate(predicted) for j, t in enumerate(tags) if t == 1}
    return _scores(gold, found)


def _s_lists_not_sets(lines, names, predicted):
    gold = [(i, *s) for i, line in enumerate(lines) for s in _spans_of(tag_line(line, names))]
    found = [(i, *s) for i, tags in enumerate(predicted) for s in _spans_of(tags)]
    correct = sum(1 for g, f in zip(gold, found, strict=False) if g == f)  # in order, pairwise
    p = correct / len(found) if found else 0.0
    r = correct / len(gold) if gold else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def _s_arithmetic_mean(lines, names, predicted):
    p, r, _ = ch09._reference_span_f1(lines, names, predicted)
    return p, r, (p + r) / 2


def _s_strict_and_merging(lines, names, predicted):
    def spans(tags):
        out, start = [], None
        for j, t in enumerate([*tags, 0]):
            if start is not None and t == 0:
                out.append((start, j))
                start = None
            if t == 1 and start is None:
                start = j
        return out

    gold = {(i, *s) for i, line in enumerate(lines) for s in spans(tag_line(line, names))}
    found = {(i, *s) for i, tags in enumerate(predicted) for s in spans(tags)}
    return _scores(gold, found)


def _s_two_end_conventions(lines, names, predicted):
    gold = {(i, *s) for i, line in enumerate(lines) for s in _spans_of(tag_line(line, names))}
    found = {  # the predicted spans' end is their last character, the gold ones' one past it
        (i, start, end - 1) for i, tags in enumerate(predicted) for start, end in _spans_of(tags)
    }
    return _scores(gold, found)


# --------------------------------------------------------------------------- 9.5: implement


def _pool_rows(h):
    return torch.arange(h.shape[0])


def _w_mean_over_all_real(h, real, how="mean"):
    if how == "last":
        last = torch.where(real, torch.arange(h.shape[1]), -1).max(dim=1).values
        return h[_pool_rows(h), last]
    return (h * real[..., None]).sum(dim=1) / real.sum()  # one count for the whole batch


def _w_last_by_loop(h, real, how="mean"):
    if how != "last":
        w = real.to(h.dtype)[..., None]
        return (h * w).sum(dim=1) / w.sum(dim=1)
    out = []
    for b in range(h.shape[0]):
        index = 0
        for t in range(h.shape[1]):  # a loop over positions
            if real[b, t]:
                index = t
        out.append(h[b, index])
    return torch.stack(out)


def _w_mean_by_loop(h, real, how="mean"):
    if how == "last":
        last = torch.where(real, torch.arange(h.shape[1]), -1).max(dim=1).values
        return h[_pool_rows(h), last]
    total, count = torch.zeros_like(h[:, 0]), torch.zeros_like(h[:, 0, :1])
    for t in range(h.shape[1]):  # a running sum over positions
        total = total + h[:, t] * real[:, t, None]
        count = count + real[:, t, None]
    return total / count


def _w_keepdim(h, real, how="mean"):
    w = real.to(h.dtype)[..., None]
    if how == "last":
        last = torch.where(real, torch.arange(h.shape[1]), -1).max(dim=1, keepdim=True).values
        return h.gather(1, last[..., None].expand(-1, -1, h.shape[2]))  # (B, 1, d_model)
    return (h * w).sum(dim=1) / w.sum(dim=1)


def _w_flattened(h, real, how="mean"):
    if how == "last":
        return h[real][-1:].expand(h.shape[0], -1)
    return h[real].mean(dim=0).expand(h.shape[0], -1)


def _w_max_pooling(h, real, how="mean"):
    if how == "last":
        last = torch.where(real, torch.arange(h.shape[1]), -1).max(dim=1).values
        return h[_pool_rows(h), last]
    return h.masked_fill(~real[..., None], float("-inf")).max(dim=1).values


def _w_float32(h, real, how="mean"):
    h = h.float()
    w = real.float()[..., None]
    if how == "last":
        last = torch.where(real, torch.arange(h.shape[1]), -1).max(dim=1).values
        return h[_pool_rows(h), last]
    return (h * w).sum(dim=1) / w.sum(dim=1)


def _w_in_place(h, real, how="mean"):
    if how == "last":
        last = torch.where(real, torch.arange(h.shape[1]), -1).max(dim=1).values
        return h[_pool_rows(h), last]
    h.mul_(real[..., None])  # zero the padding, in the caller's tensor
    return h.sum(dim=1) / real.sum(dim=1, keepdim=True)


def _w_library(h, real, how="mean"):
    from tfbook.finetune import _pool

    return _pool(h, real, how)


def _w_right_padding_assumed(h, real, how="mean"):
    lengths = real.sum(dim=1)
    if how == "last":
        return h[_pool_rows(h), lengths - 1]
    return h.cumsum(dim=1)[_pool_rows(h), lengths - 1] / lengths[:, None]  # prefix mean


def _w_first_real(h, real, how="mean"):
    if how == "last":
        first = torch.where(real, torch.arange(h.shape[1]), h.shape[1]).min(dim=1).values
        return h[_pool_rows(h), first]
    w = real.to(h.dtype)[..., None]
    return (h * w).sum(dim=1) / w.sum(dim=1)


def _w_default_none(h, real, how=None):
    if how == "mean":
        w = real.to(h.dtype)[..., None]
        return (h * w).sum(dim=1) / w.sum(dim=1)
    last = torch.where(real, torch.arange(h.shape[1]), -1).max(dim=1).values
    return h[_pool_rows(h), last]


def _w_flipped_index(h, real, how="mean"):
    if how != "last":
        w = real.to(h.dtype)[..., None]
        return (h * w).sum(dim=1) / w.sum(dim=1)
    return h[_pool_rows(h), real.flip(1).int().argmax(dim=1)]  # counted from the end


WRONG = {
    "ch09.q1": [
        (_p_all_four_projections, "expected 294912, got 589824"),
        (_p_one_target, "only A counted"),  # r (2 d) for one target equals r d for two
        (_p_share_percent, "relative error"),
        (_p_share_rounded, "allowed 1e-9"),
        (_p_share_untied_head, "relative error"),
        (_p_ffn_both_d_ff, "expected 737280, got 1179648"),
        (_p_merged_is_trainable, "expected 124439808, got 294912"),
        (_p_head_with_final_norm, "expected 2307, got 3843"),
        (_p_adam_with_gradients, "expected 995536920, got 1493305380"),
        (_p_adam_bits, "expected 2377752, got 19022016"),
        (_p_adam_lora_without_head, "expected 2377752, got 2359296"),
        (_p_tiny_change, "allowed 1e-12"),
        (_p_lora_with_bias, "expected 294912, got 313344"),
    ],
    "ch09.q2": [
        (_g_grad_b_transposed, "output[1]: wrong shape: expected (4, 2), got (2, 4)"),
        (_g_autograd, "calls torch.autograd.grad"),
        (_g_backward_through_library, "calls torch.Tensor.backward"),
        (_g_vjp, "calls torch.func.vjp"),
        (_g_jacrev, "calls torch.func.jacrev"),
        (_g_jacfwd, "calls torch.func.jacfwd"),
        (_g_float32, "wrong dtype: expected torch.float64, got torch.float32"),
        (_g_first_sequence_only, "x (2, 3, 8)"),
        (_g_mean_over_sequences, "x (2, 3, 8)"),
        (_g_batched_then_summed, "four axes"),  # passed before the question changed
        (_g_scale_inplace, "modified its input argument 'grad_y' in place"),
        (_g_scale_squared, "output[0]: values differ"),
        (_g_swapped, "output[0]: wrong shape: expected (2, 6), got (4, 2)"),
        (_g_finite_differences, "GPT-2 small's width"),
    ],
    "ch09.q3": [
        (_m_given, "none of the three bugs fixed yet"),
        (_m_fixed_orientation_only, "one of the three bugs is fixed, but still"),
        (_m_fixed_keys_only, "one of the three bugs is fixed, but still"),
        (_m_r_from_b, "output['decoder.layers.0.self_attn.sublayer.q_proj.weight']"),
        (_m_transposed_product, "A.T @ B.T is the transpose of the update"),
        (_m_integer_division, "r 1, alpha 0.5"),
        (_m_in_place, "modified its input argument 'state' in place"),
        (_m_through_lora_linear, "calls tfbook.finetune.LoRALinear.merged"),
        (_m_through_merge_lora, "calls tfbook.finetune.merge_lora"),
        (_m_base_keys_kept, "wrong keys"),
        (_m_bias_dropped, "wrong keys (missing ['decoder.layers.0.self_attn.sublayer.q_proj.bias'"),
        (_m_float32, "values differ"),
        (_m_scale_sqrt_r, "values differ"),
    ],
    "ch09.q4": [
        (_s_name_f1_per_line, "output[0]"),
        (_s_names_as_written_only, "output[1]"),
        (_s_f1_only, "expected a tuple, got float"),
        (_s_percent, "output[0]"),
        (_s_no_prediction_is_perfect_precision, "no predicted name"),
        (_s_i_at_line_start_ignored, "start with I"),
        (_s_b_tags_counted, "output[0]"),
        (_s_lists_not_sets, "output[0]"),
        (_s_arithmetic_mean, "output[2]"),
        (_s_strict_and_merging, "output[0]"),
        (_s_two_end_conventions, "output[0]"),
    ],
    "ch09.q5": [
        (_w_mean_over_all_real, "how='mean'"),
        (_w_last_by_loop, "loops over them"),
        (_w_mean_by_loop, "loops over them"),  # passed before the question changed
        (_w_keepdim, "wrong shape: expected (3, 4), got (3, 1, 4)"),
        (_w_flattened, "output: values differ"),
        (_w_max_pooling, "how='mean'"),
        (_w_float32, "wrong dtype: expected torch.float64, got torch.float32"),
        (_w_in_place, "modified its input argument 'h' in place"),
        (_w_library, "calls tfbook.finetune._pool"),
        (_w_right_padding_assumed, "left padding"),
        (_w_first_real, "output: values differ"),
        (_w_default_none, "its default is 'mean'"),
        (_w_flipped_index, "how='last'"),
    ],
}
PAIRS = [(qid, fn, phrase) for qid, found in WRONG.items() for fn, phrase in found]


@pytest.mark.parametrize(
    ("qid", "wrong", "phrase"), PAIRS, ids=[f"{q}-{fn.__name__}" for q, fn, _ in PAIRS]
)
def test_wrong_answer_is_rejected_with_a_useful_message(qid, wrong, phrase):
    assert_rejected(qid, wrong, phrase)


def test_at_least_ten_wrong_answers_per_question():
    assert {qid: len(found) >= 10 for qid, found in WRONG.items()} == {
        q.qid: True for q in ch09.EXERCISES
    }
