"""Graded exercises of chapter 1: From RNNs to Transformers.

1. ``q1``: additive (Bahdanau) attention, the attention that first read an RNN's states.
2. ``q2``: the loop of a GRU (gated recurrent unit) over a batch-first sequence.
3. ``q3``: the Jacobian of a late state with respect to an early one (why gradients vanish
   or explode).
4. ``q4``: self-attention without learned weights, in one matrix product.
5. ``q5`` (derive): the longest context whose explicit attention weights fit a memory budget.
6. ``q6`` (predict, then run): Table 1's sequential operations and path length for stacks of
   RNN and attention layers (``tfbook.rnn.matmul_depth`` and ``matmul_path_length`` reveal them).
7. ``q7`` (debugging): the final state of a padded batch is not the state after the last step.
8. ``q8`` (build with the library): a bidirectional RNN from two ``tfbook.rnn.RNN``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from tfbook.exercises._engine import (
    Case,
    ExerciseSet,
    Frozen,
    Mistake,
    Question,
    compare_modules,
)
from tfbook.rnn import RNN, RNNCell, matmul_depth, matmul_path_length
from tfbook.rnn import attention_preview as attention_preview_lib


def _randn(*shape: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


# --------------------------------------------------------------------------- q1: additive attention


def additive_attention(q, k, v, W_q, W_k, w):
    """Bahdanau's additive attention: e_ij = w . tanh(W_q q_i + W_k k_j), softmax over j.

    q (B, T_q, d_q), k (B, T_k, d_k), v (B, T_k, d_v), W_q (d_a, d_q), W_k (d_a, d_k),
    w (d_a,) -> (B, T_q, d_v).
    """
    q_part = (q @ W_q.T)[:, :, None, :]  # (B, T_q, 1, d_a)
    k_part = (k @ W_k.T)[:, None, :, :]  # (B, 1, T_k, d_a)
    scores = torch.tanh(q_part + k_part) @ w  # (B, T_q, T_k): every query with every key
    return torch.softmax(scores, dim=-1) @ v  # each query's weights sum to 1 over the keys


def _additive_over_queries(q, k, v, W_q, W_k, w):
    scores = torch.tanh((q @ W_q.T)[:, :, None, :] + (k @ W_k.T)[:, None, :, :]) @ w
    return torch.softmax(scores, dim=-2) @ v


def _additive_tanh_outside(q, k, v, W_q, W_k, w):
    scores = torch.tanh(((q @ W_q.T)[:, :, None, :] + (k @ W_k.T)[:, None, :, :]) @ w)
    return torch.softmax(scores, dim=-1) @ v


def _additive_no_tanh(q, k, v, W_q, W_k, w):
    scores = ((q @ W_q.T)[:, :, None, :] + (k @ W_k.T)[:, None, :, :]) @ w
    return torch.softmax(scores, dim=-1) @ v


def _additive_scaled(q, k, v, W_q, W_k, w):
    scores = torch.tanh((q @ W_q.T)[:, :, None, :] + (k @ W_k.T)[:, None, :, :]) @ w
    return torch.softmax(scores / math.sqrt(w.shape[0]), dim=-1) @ v


def _additive_dot_product(q, k, v, W_q, W_k, w):
    scores = (q @ W_q.T) @ (k @ W_k.T).transpose(-2, -1)
    return torch.softmax(scores, dim=-1) @ v


def _additive_weights_keys(q, k, v, W_q, W_k, w):
    scores = torch.tanh((q @ W_q.T)[:, :, None, :] + (k @ W_k.T)[:, None, :, :]) @ w
    return torch.softmax(scores, dim=-1) @ k


def _additive_unshifted(q, k, v, W_q, W_k, w):
    scores = torch.tanh((q @ W_q.T)[:, :, None, :] + (k @ W_k.T)[:, None, :, :]) @ w
    e = scores.exp()
    return e / e.sum(dim=-1, keepdim=True) @ v


def _additive_unshifted_float64(q, k, v, W_q, W_k, w):
    scores = torch.tanh((q @ W_q.T)[:, :, None, :] + (k @ W_k.T)[:, None, :, :]) @ w
    e = scores.double().exp()  # float64 postpones the overflow to scores above 709
    return (e / e.sum(dim=-1, keepdim=True)).float() @ v


def _additive_cases() -> list[Case]:
    def case(name, b, t_q, t_k, d_q, d_k, d_v, d_a, seed, w_scale=1.0, w=None):
        return Case(
            name,
            (
                _randn(b, t_q, d_q, seed=seed),
                _randn(b, t_k, d_k, seed=seed + 1),
                _randn(b, t_k, d_v, seed=seed + 2),
                _randn(d_a, d_q, seed=seed + 3) / math.sqrt(d_q),
                _randn(d_a, d_k, seed=seed + 4) / math.sqrt(d_k),
                w_scale * _randn(d_a, seed=seed + 5) if w is None else torch.tensor(w),
            ),
        )

    return [
        case("random, T_q = T_k = 4, d_q = d_k = d_v = d_a = 6", 2, 4, 4, 6, 6, 6, 6, seed=10),
        case(
            "random, T_q = 3, T_k = 5, d_q = 4, d_k = 6, d_v = 2, d_a = 7",
            2,
            3,
            5,
            4,
            6,
            2,
            7,
            seed=20,
        ),
        case("one decoder query over 9 encoder states", 3, 1, 9, 5, 3, 4, 8, seed=30),
        case("one key: every weight is 1", 2, 3, 1, 2, 2, 3, 4, seed=40),
        case("w scaled by 60: scores in the hundreds", 2, 4, 6, 3, 3, 3, 16, seed=50, w_scale=60.0),
        case(
            "w = [800.0]: scores up to 757, beyond float64's exp (709)",
            *(2, 3, 5, 4, 4, 4, 1),
            seed=60,
            w=[800.0],
        ),
    ]


q1 = Question(
    "ch01.q1",
    "Additive (Bahdanau) attention",
    reference=additive_attention,
    cases=_additive_cases,
    mistakes=[
        Mistake(
            "softmax over the queries instead of the keys",
            _additive_over_queries,
            "Each query distributes its attention over the T_k keys: normalise along the keys' "
            "axis, the last axis of the (B, T_q, T_k) scores.",
        ),
        Mistake(
            "tanh applied after the product with w",
            _additive_tanh_outside,
            "The tanh is the hidden layer of a small network: apply it to W_q q_i + W_k k_j, "
            "then take the dot product with w.",
        ),
        Mistake(
            "tanh left out",
            _additive_no_tanh,
            "Without the tanh the score is w . W_q q_i + w . W_k k_j: the query's part is the "
            "same for every key and cancels in the softmax, so every query gets the same "
            "weights. Apply torch.tanh to the sum before the product with w.",
        ),
        Mistake(
            "scores divided by sqrt(d_a)",
            _additive_scaled,
            "The 1/sqrt(d) scale belongs to dot-product attention; additive scores are "
            "w . tanh(...) as they are.",
        ),
        Mistake(
            "dot-product scores (W_q q_i) . (W_k k_j)",
            _additive_dot_product,
            "Additive attention adds the two projections, squashes the sum with tanh and "
            "reads it with w; it never multiplies a query with a key.",
        ),
        Mistake(
            "keys averaged instead of values",
            _additive_weights_keys,
            "The weights average the values v (shape (B, T_k, d_v)), not the keys.",
        ),
        Mistake(
            "softmax without subtracting the maximum: exp overflows",
            _additive_unshifted,
            "exp of a score above about 88 is inf in float32, and inf / inf is nan. Subtract "
            "each row's maximum before exp (what torch.softmax does), or call torch.softmax.",
        ),
        Mistake(
            "exp in float64 without subtracting the maximum",
            _additive_unshifted_float64,
            "float64 only moves the overflow: exp of a score above about 709 is inf there too. "
            "Subtract each row's maximum before exp, or call torch.softmax.",
        ),
    ],
    hints=[
        "Project first: q @ W_q.T is (B, T_q, d_a) and k @ W_k.T is (B, T_k, d_a). To add "
        "every query to every key, give the first a new axis 2 and the second a new axis 1; "
        "broadcasting then makes (B, T_q, T_k, d_a).",
        "Apply tanh to that sum, multiply by w over the last axis to get (B, T_q, T_k) scores, "
        "normalise each query's row over the keys and average v with the weights.",
    ],
    kind="implement",
    library_note=(
        "none: tfbook implements dot-product attention only (chapter 4); additive attention "
        "is the variant the Transformer replaced"
    ),
)


# --------------------------------------------------------------------------- q2: the GRU loop


def _gates(W, H):
    """The three (H, ...) blocks of a stacked GRU weight or bias, in PyTorch's order r, z, n."""
    return W[:H], W[H : 2 * H], W[2 * H :]


def run_gru(x, h0, W_ih, W_hh, b_ih, b_hh):
    """All states of a GRU; x (B, T, D), h0 (B, H), stacked weights (3H, D) and (3H, H) and
    biases (3H,) in the order reset, update, candidate -> outputs (B, T, H)."""
    H = h0.shape[-1]
    (W_ir, W_iz, W_in), (W_hr, W_hz, W_hn) = _gates(W_ih, H), _gates(W_hh, H)
    (b_ir, b_iz, b_in), (b_hr, b_hz, b_hn) = _gates(b_ih, H), _gates(b_hh, H)
    h, outputs = h0, []
    for t in range(x.shape[1]):  # time is axis 1 (batch first)
        x_t = x[:, t]  # (B, D)
        r = torch.sigmoid(x_t @ W_ir.T + b_ir + h @ W_hr.T + b_hr)  # reset gate (B, H)
        z = torch.sigmoid(x_t @ W_iz.T + b_iz + h @ W_hz.T + b_hz)  # update gate (B, H)
        n = torch.tanh(x_t @ W_in.T + b_in + r * (h @ W_hn.T + b_hn))  # candidate (B, H)
        h = (1 - z) * n + z * h  # keep a share z of the old state
        outputs.append(h)
    return torch.stack(outputs, dim=1)


def _gru_variant(
    x,
    h0,
    W_ih,
    W_hh,
    b_ih,
    b_hh,
    *,
    order=(0, 1, 2),
    swap_mix=False,
    reset_where="inside",
    carry=True,
    gate=torch.sigmoid,
    use_b_hh=True,
    previous=False,
):
    H = h0.shape[-1]
    wi, wh = _gates(W_ih, H), _gates(W_hh, H)
    bi, bh = _gates(b_ih, H), _gates(b_hh if use_b_hh else torch.zeros_like(b_hh), H)
    r_, z_, n_ = order
    h, outputs = h0, []
    for t in range(x.shape[1]):
        x_t, h_in = x[:, t], (h if carry else h0)
        r = gate(x_t @ wi[r_].T + bi[r_] + h_in @ wh[r_].T + bh[r_])
        z = gate(x_t @ wi[z_].T + bi[z_] + h_in @ wh[z_].T + bh[z_])
        if reset_where == "inside":
            hidden = r * (h_in @ wh[n_].T + bh[n_])
        elif reset_where == "outside the bias":
            hidden = r * (h_in @ wh[n_].T) + bh[n_]
        else:  # "before the product", as in Cho et al. (2014)
            hidden = (r * h_in) @ wh[n_].T + bh[n_]
        n = torch.tanh(x_t @ wi[n_].T + bi[n_] + hidden)
        new = z * n + (1 - z) * h_in if swap_mix else (1 - z) * n + z * h_in
        outputs.append(h_in if previous else new)
        h = new
    return torch.stack(outputs, dim=1)


def _gru_r_z_swapped(x, h0, W_ih, W_hh, b_ih, b_hh):
    return _gru_variant(x, h0, W_ih, W_hh, b_ih, b_hh, order=(1, 0, 2))


def _gru_mix_swapped(x, h0, W_ih, W_hh, b_ih, b_hh):
    return _gru_variant(x, h0, W_ih, W_hh, b_ih, b_hh, swap_mix=True)


def _gru_reset_outside_bias(x, h0, W_ih, W_hh, b_ih, b_hh):
    return _gru_variant(x, h0, W_ih, W_hh, b_ih, b_hh, reset_where="outside the bias")


def _gru_reset_before_product(x, h0, W_ih, W_hh, b_ih, b_hh):
    return _gru_variant(x, h0, W_ih, W_hh, b_ih, b_hh, reset_where="before the product")


def _gru_state_not_carried(x, h0, W_ih, W_hh, b_ih, b_hh):
    return _gru_variant(x, h0, W_ih, W_hh, b_ih, b_hh, carry=False)


def _gru_tanh_gates(x, h0, W_ih, W_hh, b_ih, b_hh):
    return _gru_variant(x, h0, W_ih, W_hh, b_ih, b_hh, gate=torch.tanh)


def _gru_b_hh_ignored(x, h0, W_ih, W_hh, b_ih, b_hh):
    return _gru_variant(x, h0, W_ih, W_hh, b_ih, b_hh, use_b_hh=False)


def _gru_previous_states(x, h0, W_ih, W_hh, b_ih, b_hh):
    return _gru_variant(x, h0, W_ih, W_hh, b_ih, b_hh, previous=True)


def _loop_cases() -> list[Case]:
    def case(name, batch, steps, d, h, seed, scale=1.0):
        return Case(
            name,
            (
                scale * _randn(batch, steps, d, seed=seed),
                _randn(batch, h, seed=seed + 1),
                _randn(3 * h, d, seed=seed + 2) / math.sqrt(d),
                _randn(3 * h, h, seed=seed + 3) / math.sqrt(h),
                0.5 * _randn(3 * h, seed=seed + 4),
                0.5 * _randn(3 * h, seed=seed + 5),
            ),
        )

    return [
        case("random, B = 3, T = 4, D = 2, H = 3", 3, 4, 2, 3, seed=40),
        case("random, B = 2, T = 6, D = 5, H = 4", 2, 6, 5, 4, seed=50),
        case("one time step", 2, 1, 3, 2, seed=60),
        case("one sequence, T = 12, H = 1", 1, 12, 2, 1, seed=70),
        case("inputs in the hundreds (saturated gates)", 2, 3, 3, 4, seed=80, scale=300.0),
    ]


def _library_gru(x, h0, W_ih, W_hh, b_ih, b_hh):
    """PyTorch's own GRU with these weights (the student may not call it; the test may)."""
    gru = torch.nn.GRU(W_ih.shape[1], h0.shape[-1], batch_first=True).to(x.dtype)
    with torch.no_grad():
        for name, value in (("ih", W_ih), ("hh", W_hh)):
            getattr(gru, f"weight_{name}_l0").copy_(value)
        gru.bias_ih_l0.copy_(b_ih)
        gru.bias_hh_l0.copy_(b_hh)
        return gru(x, h0[None])[0]


q2 = Question(
    "ch01.q2",
    "The GRU loop over a sequence",
    reference=run_gru,
    cases=_loop_cases,
    mistakes=[
        Mistake(
            "reset and update gates swapped: the blocks are r, z, n",
            _gru_r_z_swapped,
            "The stacked weights hold the reset gate's rows first (0 .. H-1), then the update "
            "gate's (H .. 2H-1), then the candidate's (2H .. 3H-1).",
        ),
        Mistake(
            "z n + (1 - z) h: the mix the other way round",
            _gru_mix_swapped,
            "Here z is the share of the old state that is kept: h_t = (1 - z) n + z h_(t-1). "
            "Some texts swap the roles; this task (and PyTorch) does not.",
        ),
        Mistake(
            "the reset gate applied before adding b_hn",
            _gru_reset_outside_bias,
            "The reset gate multiplies the whole recurrent term, bias included: "
            "r * (h W_hn^T + b_hn).",
        ),
        Mistake(
            "the reset gate applied to h before the product (the 2014 paper's variant)",
            _gru_reset_before_product,
            "This task (and PyTorch) applies r after the product: r * (h W_hn^T + b_hn), not "
            "(r * h) W_hn^T + b_hn. Both are GRUs, but they give different numbers.",
        ),
        Mistake(
            "state not carried between steps",
            _gru_state_not_carried,
            "Feed the state you just computed into the next step; h0 is used only at t = 0.",
        ),
        Mistake(
            "tanh for the gates",
            _gru_tanh_gates,
            "The gates r and z are shares between 0 and 1: use the sigmoid; tanh is for the "
            "candidate n only.",
        ),
        Mistake(
            "the recurrent biases b_hh left out",
            _gru_b_hh_ignored,
            "Each gate has two biases, b_ih and b_hh: add both (the candidate's b_hn inside "
            "the reset product).",
        ),
        Mistake(
            "outputs shifted by one step (h0 stored, last state dropped)",
            _gru_previous_states,
            "Append the new state after computing it, so outputs[:, t] is h_t, not h_(t-1).",
        ),
    ],
    hints=[
        "Cut each stacked weight and bias into three blocks of H rows: W[:H] for the reset "
        "gate, W[H:2H] for the update gate, W[2H:] for the candidate.",
        "Loop t over range(x.shape[1]) with a state h that starts at h0; compute r and z "
        "first, then the candidate n (it needs r), then the new h; collect every new h.",
    ],
    kind="implement",
    library=_library_gru,
    forbidden=(
        "torch.nn.GRU.forward",
        "torch.nn.GRUCell.forward",
        "torch.gru",
        "torch.gru_cell",
    ),
)


# --------------------------------------------------------------------------- q3: the Jacobian


def state_jacobian(hs, W_hh, k):
    """d h_(T-1) / d h_(T-1-k) of a tanh RNN with states hs (T, H); returns (H, H)."""
    T, H = hs.shape
    J = torch.eye(H, dtype=hs.dtype)
    for j in range(T - 1, T - 1 - k, -1):  # j = T-1, T-2, ..., T-k
        step = torch.diag(1 - hs[j] ** 2) @ W_hh  # d h_j / d h_(j-1)
        J = J @ step
    return J


def _jacobian_no_tanh_derivative(hs, W_hh, k):
    return torch.linalg.matrix_power(W_hh, k)


def _jacobian_one_minus_h(hs, W_hh, k):
    T, H = hs.shape
    J = torch.eye(H, dtype=hs.dtype)
    for j in range(T - 1, T - 1 - k, -1):
        J = J @ (torch.diag(1 - hs[j]) @ W_hh)
    return J


def _jacobian_reversed_order(hs, W_hh, k):
    T, H = hs.shape
    J = torch.eye(H, dtype=hs.dtype)
    for j in range(T - 1, T - 1 - k, -1):
        J = (torch.diag(1 - hs[j] ** 2) @ W_hh) @ J
    return J


def _jacobian_previous_state(hs, W_hh, k):
    T, H = hs.shape
    J = torch.eye(H, dtype=hs.dtype)
    for j in range(T - 1, T - 1 - k, -1):
        J = J @ (torch.diag(1 - hs[j - 1] ** 2) @ W_hh)
    return J


def _jacobian_cases() -> list[Case]:
    def case(name: str, steps: int, h: int, k: int, seed: int, scale: float = 1.5) -> Case:
        hs = torch.tanh(_randn(steps, h, seed=seed, dtype=torch.float64))
        w_hh = scale * _randn(h, h, seed=seed + 1, dtype=torch.float64) / math.sqrt(h)
        return Case(name, (hs, w_hh, k))

    return [
        case("random, T = 6, H = 3, k = 3", 6, 3, 3, seed=80),
        case("random, T = 8, H = 4, k = 5", 8, 4, 5, seed=90),
        case("k = 1: a single step", 5, 3, 1, seed=100),
        case("k = T - 1: back to the first state", 7, 2, 6, seed=110),
        case("k = 0: the identity", 4, 3, 0, seed=120),
    ]


q3 = Question(
    "ch01.q3",
    "Jacobian of a late state with respect to an early one",
    reference=state_jacobian,
    cases=_jacobian_cases,
    mistakes=[
        Mistake(
            "tanh derivative left out",
            _jacobian_no_tanh_derivative,
            "Each step contributes diag(1 - h_j**2) @ W_hh: the tanh derivative matters.",
        ),
        Mistake(
            "tanh derivative written as 1 - h",
            _jacobian_one_minus_h,
            "d tanh(a)/da = 1 - tanh(a)**2, so the diagonal is 1 - h_j**2 (squared).",
        ),
        Mistake(
            "step Jacobians multiplied in reverse order",
            _jacobian_reversed_order,
            "By the chain rule the latest step is leftmost: J = J_(T-1) @ J_(T-2) @ ...; "
            "multiply the running product on the right (J = J @ step).",
        ),
        Mistake(
            "tanh derivative taken at the previous state",
            _jacobian_previous_state,
            "h_j = tanh(a_j), so d h_j / d h_(j-1) uses the derivative at h_j itself: "
            "diag(1 - h_j**2) @ W_hh.",
        ),
    ],
    hints=[
        "One step: h_j = tanh(x_j W_ih^T + h_(j-1) W_hh^T + b), so d h_j / d h_(j-1) is "
        "diag(1 - h_j**2) @ W_hh (an H x H matrix).",
        "Begin with the identity matrix (size H, the dtype of hs) and multiply one step's "
        "Jacobian onto its right k times, walking from the last state backwards: the chain "
        "rule's order matters, since matrices do not commute.",
    ],
    atol=1e-10,
    rtol=1e-8,
    kind="implement",
    library_note="none: the Jacobian product is derived in the chapter, not kept in tfbook.rnn",
)


# --------------------------------------------------------------------------- q4: attention


def attention_preview(x):
    """softmax(X X^T / sqrt(d)) X for x of shape (B, T, d); returns (B, T, d)."""
    d = x.shape[-1]
    scores = x @ x.transpose(-2, -1) / math.sqrt(d)  # (B, T, T)
    weights = torch.softmax(scores, dim=-1)  # each row sums to 1
    return weights @ x


def _attention_softmax_wrong_axis(x):
    scores = x @ x.transpose(-2, -1) / math.sqrt(x.shape[-1])
    return torch.softmax(scores, dim=-2) @ x


def _attention_no_scale(x):
    return torch.softmax(x @ x.transpose(-2, -1), dim=-1) @ x


def _attention_divided_by_d(x):
    return torch.softmax(x @ x.transpose(-2, -1) / x.shape[-1], dim=-1) @ x


def _attention_no_softmax(x):
    return (x @ x.transpose(-2, -1) / math.sqrt(x.shape[-1])) @ x


def _attention_cases() -> list[Case]:
    same = _randn(1, 1, 3, seed=150).expand(2, 4, 3).clone()
    return [
        Case("random, B = 2, T = 5, d = 4", (_randn(2, 5, 4, seed=130),)),
        Case("random, B = 1, T = 7, d = 9", (_randn(1, 7, 9, seed=140),)),
        Case("all tokens identical", (same,)),
        Case("one token", (_randn(3, 1, 4, seed=160),)),
        Case("large entries (scores in the hundreds)", (10.0 * _randn(2, 4, 4, seed=180),)),
    ]


q4 = Question(
    "ch01.q4",
    "Self-attention in one matrix product",
    reference=attention_preview,
    cases=_attention_cases,
    mistakes=[
        Mistake(
            "softmax over the wrong axis",
            _attention_softmax_wrong_axis,
            "Normalise each row (one query over all keys): torch.softmax(scores, dim=-1).",
        ),
        Mistake(
            "no 1/sqrt(d) scaling",
            _attention_no_scale,
            "Divide the scores by math.sqrt(d) before the softmax.",
        ),
        Mistake(
            "scores divided by d instead of sqrt(d)",
            _attention_divided_by_d,
            "The scale is 1/sqrt(d), not 1/d.",
        ),
        Mistake(
            "softmax left out",
            _attention_no_softmax,
            "Turn the scores into weights that sum to 1 with a softmax before multiplying by X.",
        ),
    ],
    hints=[
        "Scores: x @ x.transpose(-2, -1) has shape (B, T, T), one row per query position.",
        "Scale the scores by 1/sqrt(d), apply torch.softmax over the last axis, then multiply "
        "the weights by x.",
    ],
    kind="implement",
    library=attention_preview_lib,
    forbidden=("tfbook.rnn.attention_preview",),
    # "No loop over positions": the answer's work is counted at T = 4 and T = 32 and must not grow.
    loop_probe=lambda seq_len: Case(
        f"random, B = 2, T = {seq_len}, d = 8", (_randn(2, seq_len, 8, seed=170 + seq_len),)
    ),
)


# --------------------------------------------------------------------------- q5: memory


def longest_context(budget_bytes, batch, n_heads, n_layers, bytes_per_value=4):
    """The largest T whose explicit attention weights, kept by every layer for the backward
    pass, fit in ``budget_bytes``: batch * n_heads * n_layers * T * T * bytes_per_value."""
    per_square = batch * n_heads * n_layers * bytes_per_value  # bytes per unit of T^2
    return math.isqrt(budget_bytes // per_square)  # floor(sqrt(.)), exact for every int


def _context_rounded(budget_bytes, batch, n_heads, n_layers, bytes_per_value=4):
    return round(math.sqrt(budget_bytes / (batch * n_heads * n_layers * bytes_per_value)))


def _context_ceiling(budget_bytes, batch, n_heads, n_layers, bytes_per_value=4):
    return math.ceil(math.sqrt(budget_bytes / (batch * n_heads * n_layers * bytes_per_value)))


def _context_one_layer(budget_bytes, batch, n_heads, n_layers, bytes_per_value=4):
    return math.isqrt(budget_bytes // (batch * n_heads * bytes_per_value))


def _context_one_head(budget_bytes, batch, n_heads, n_layers, bytes_per_value=4):
    return math.isqrt(budget_bytes // (batch * n_layers * bytes_per_value))


def _context_causal_half(budget_bytes, batch, n_heads, n_layers, bytes_per_value=4):
    # only the T (T + 1) / 2 weights on and below the diagonal counted
    per_weight = batch * n_heads * n_layers * bytes_per_value
    t = 0
    while per_weight * (t + 1) * (t + 2) // 2 <= budget_bytes:
        t += 1
    return t


def _context_first_too_long(budget_bytes, batch, n_heads, n_layers, bytes_per_value=4):
    t = 0
    while batch * n_heads * n_layers * t * t * bytes_per_value <= budget_bytes:
        t += 1
    return t  # the first length that does not fit


def _context_float_sqrt(budget_bytes, batch, n_heads, n_layers, bytes_per_value=4):
    return int(math.sqrt(budget_bytes / (batch * n_heads * n_layers * bytes_per_value)))


def _context_cases() -> list[Case]:
    gib = 2**30
    return [
        Case(
            "exactly T = 1000 fits: 2 x 4 x 3 x 1000^2 x 4 bytes",
            (2 * 4 * 3 * 1000**2 * 4, 2, 4, 3),
        ),
        Case("1 GiB, batch 1, 8 heads, 6 layers, float16", (gib, 1, 8, 6, 2)),
        Case("80 GiB, batch 8, GPT-2 small (12 heads, 12 layers), float32", (80 * gib, 8, 12, 12)),
        Case("one byte short of T = 1000", (2 * 4 * 3 * 1000**2 * 4 - 1, 2, 4, 3)),
        Case("T = 999.5 on paper", (2 * 4 * 3 * 999_000 * 4 + 2 * 4 * 3, 2, 4, 3)),
        Case("not even T = 1 fits", (95, 2, 4, 3)),
        Case("1 PiB, batch 1, one head, one layer, float64", (2**50, 1, 1, 1, 8)),
        Case("one byte short of T = 10^8, one byte per value", (10**16 - 1, 1, 1, 1, 1)),
    ]


def _compare_context(expected, got) -> str | None:
    if isinstance(got, bool) or not isinstance(got, int):
        return f"output: expected an int, got {type(got).__name__} {got!r}"
    if got != expected:
        return f"output: expected T = {expected}, got T = {got}"
    return None


q5 = Question(
    "ch01.q5",
    "The longest context that fits in memory",
    reference=longest_context,
    cases=_context_cases,
    mistakes=[
        Mistake(
            "square root taken in floating point",
            _context_float_sqrt,
            "A float holds integers exactly only up to 2^53 (about 9e15): 10^16 - 1 becomes "
            "10^16, a perfect square, and the length one too long. Stay with integers: "
            "math.isqrt(budget_bytes // per_square) is the floor of the square root, exactly.",
        ),
        Mistake(
            "square root rounded to the nearest integer",
            _context_rounded,
            "A length that does not fit is no answer: round down (floor), never to the nearest "
            "integer; when not even T = 1 fits, the answer is 0.",
        ),
        Mistake(
            "square root rounded up",
            _context_ceiling,
            "The ceiling is the first length that may not fit: round down (floor).",
        ),
        Mistake(
            "one layer counted",
            _context_one_layer,
            "For the backward pass every layer keeps its own weights: multiply by n_layers.",
        ),
        Mistake(
            "one head counted",
            _context_one_head,
            "Every head has its own T x T weights: multiply by n_heads.",
        ),
        Mistake(
            "only the causal half, T (T + 1) / 2 weights, counted",
            _context_causal_half,
            "Explicit attention stores the whole T x T matrix, zeros above the diagonal included.",
        ),
        Mistake(
            "the first length that does not fit",
            _context_first_too_long,
            "Your loop stops one step too late: return the last T that fits, one less.",
        ),
    ],
    hints=[
        "Write the bytes as a function of T: a constant (batch, heads, layers, bytes per "
        "value) times T squared. The answer is the largest integer T with that at most the "
        "budget.",
        "Divide the budget by the constant and take the square root: a length that does not "
        "fit is no answer, so which way do you round?",
    ],
    compare_fn=_compare_context,
    kind="derive",
    library_note="none: arithmetic on tensor shapes",
)


# --------------------------------------------------------------------------- q6: predict


#: The stacks of exercise 1.6: every layer reads n = 12 positions of width d.
STACK_TOKENS = 12
STACK_KINDS = (
    "RNN, 1 layer",
    "attention, 1 layer",
    "RNN, 3 layers",
    "attention, 3 layers",
)


def _parse_stack(kind):
    layer, depth = kind.split(", ")
    return layer, int(depth.split()[0])


def _reference_predicted_counts(kind):
    """(sequential matrix products, path length from x_1 to the last output) of a stack of
    layers over n = 12 positions: what ``matmul_depth`` and ``matmul_path_length`` measure."""
    layer, n_layers = _parse_stack(kind)
    n = STACK_TOKENS
    if layer == "RNN":
        # state (layer l, step t) needs (l, t - 1) and (l - 1, t): a staircase of n + L - 1 steps
        return n + n_layers - 1, n + n_layers - 1
    # softmax(X X^T) X: two dependent products per layer; x_1 reaches y_n through one per layer
    return 2 * n_layers, n_layers


def _counts_layers_multiply(kind):
    layer, n_layers = _parse_stack(kind)
    if layer == "RNN":
        return STACK_TOKENS * n_layers, STACK_TOKENS * n_layers
    return _reference_predicted_counts(kind)


def _counts_one_product_per_attention(kind):
    layer, n_layers = _parse_stack(kind)
    if layer == "attention":
        return n_layers, n_layers
    return _reference_predicted_counts(kind)


def _counts_attention_path_is_depth(kind):
    layer, n_layers = _parse_stack(kind)
    if layer == "attention":
        return 2 * n_layers, 2 * n_layers
    return _reference_predicted_counts(kind)


def _counts_stacking_free(kind):
    layer, _ = _parse_stack(kind)
    return _reference_predicted_counts(f"{layer}, 1 layer")


def _library_predicted_counts(kind, d=4):
    """Build the stack with one leaf per position (as chapter 1 measures Table 1) and measure."""
    layer, n_layers = _parse_stack(kind)
    g = torch.Generator().manual_seed(0)
    leaves = [torch.randn(1, d, generator=g, requires_grad=True) for _ in range(STACK_TOKENS)]
    with torch.enable_grad():  # the measurement reads the autograd graph
        if layer == "RNN":
            states = leaves
            for _ in range(n_layers):
                cell, h, outputs = RNNCell(d, d), None, []
                for x_t in states:  # one cell call per position: no stacked tensor in between
                    h = cell(x_t, h)
                    outputs.append(h)
                states = outputs
            last = states[-1]
        else:
            y = torch.stack(leaves, dim=1)  # (1, n, d)
            for _ in range(n_layers):
                y = attention_preview_lib(y)
            last = y[:, -1]
    return matmul_depth(last), matmul_path_length(last, leaves[0])


q6 = Question(
    "ch01.q6",
    "Predict Table 1's counts for stacks of layers",
    reference=_reference_predicted_counts,
    cases=lambda: [Case(f"{kind}, n = {STACK_TOKENS}", (kind,)) for kind in STACK_KINDS],
    mistakes=[
        Mistake(
            "an RNN stack counted as L full passes one after another (n * L)",
            _counts_layers_multiply,
            "Layer 2 can take step 0 as soon as layer 1 has produced h_0; it does not wait for "
            "the whole sequence. Follow the longest chain through the grid of (layer, step) "
            "states: it climbs L - 1 layers and walks n steps.",
        ),
        Mistake(
            "one matrix product per attention layer",
            _counts_one_product_per_attention,
            "softmax(X X^T / sqrt(d)) X is two products, and the second needs the first's result "
            "(the weights): two sequential products per layer.",
        ),
        Mistake(
            "attention's path length taken to be its depth",
            _counts_attention_path_is_depth,
            "x_1 reaches the last output as a value, through the product A X alone; the scores "
            "X X^T lie on a longer route but the path length is the shortest one.",
        ),
        Mistake(
            "stacking ignored: one layer's counts for every depth",
            _counts_stacking_free,
            "Layers run one after another: each adds its own products to the chain and to the "
            "path from x_1 to the last output.",
        ),
    ],
    hints=[
        "Draw the RNN stack as a grid: one state per (layer, step). Each state needs the state "
        "to its left (same layer, previous step) and the one below it (previous layer, same "
        "step), each through one matrix product.",
        "The longest chain of the grid and the shortest route from x_1 to the top-right state "
        "have the same length for an RNN. Count the products on one of them, the product with "
        "W_ih of the first step included.",
        "An attention layer is a fixed number of products whatever n; the path from x_1 uses "
        "the value side only. Return a pair (sequential, path) of ints for each kind.",
    ],
    kind="predict",
    library=_library_predicted_counts,
)


# --------------------------------------------------------------------------- q7: debugging


def _reference_final_state(x, lengths, rnn):
    """The state after each sentence's last real token of a batch padded at the end."""
    states, _ = rnn(x)  # (B, T, H): the state after every step, padding steps included
    last_real = lengths - 1  # position of the last real token of each sentence
    return states[torch.arange(x.shape[0]), last_real]  # (B, H): one row per sentence


def _final_state_listing(x, lengths, rnn):
    _, h_last = rnn(x)
    return h_last


def _final_state_index_grid(x, lengths, rnn):
    states, _ = rnn(x)
    return states[:, lengths - 1]


def _final_state_off_by_one(x, lengths, rnn):
    states, _ = rnn(x)
    return states[torch.arange(x.shape[0]), lengths]


def _final_state_cases():
    cases = []
    for seed, (lengths, t, d, h) in enumerate(
        # the last batch holds one sentence: a .squeeze() that drops the batch axis shows there
        [
            ([4, 2, 5], 6, 3, 5),
            ([5, 3], 5, 2, 4),
            ([4, 4, 4], 4, 3, 3),
            ([1, 4], 4, 2, 3),
            ([3], 5, 2, 4),
        ]
    ):
        g = torch.Generator().manual_seed(700 + seed)
        x = torch.randn(len(lengths), t, d, generator=g)
        for b, n in enumerate(lengths):
            x[b, n:] = 0.0  # padding vectors after the sentence
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(700 + seed)
            rnn = RNN(d, h).eval()
        name = f"lengths {lengths}, T={t}" + (", no padding" if min(lengths) == t else "")
        cases.append(Case(name, (x, torch.tensor(lengths), Frozen(f"RNN({d}, {h})", rnn))))
    return cases


def _library_final_state(x, lengths, rnn):
    """Run tfbook.rnn.RNN on each sentence without its padding; keep its last state."""
    rows = [rnn(x[b : b + 1, : int(n)])[1][0] for b, n in enumerate(lengths)]
    return torch.stack(rows)  # (B, H)


q7 = Question(
    "ch01.q7",
    "Fix the final state of a padded batch",
    reference=_reference_final_state,
    cases=_final_state_cases,
    mistakes=[
        Mistake(
            "the listing unchanged: the state after the padding",
            _final_state_listing,
            "The loop does not stop at a sentence's end: zero input vectors still change the "
            "state (through W_hh and the bias). Take the state after each sentence's own last "
            "token from the per-step outputs.",
        ),
        Mistake(
            "states[:, lengths - 1] picks every length for every sentence",
            _final_state_index_grid,
            "Indexing with a slice and a tensor gives a (B, B, H) grid. Pair sentence b with "
            "its own position: index the batch axis with torch.arange(B) as well.",
        ),
        Mistake(
            "off by one: the state after the first padding vector",
            _final_state_off_by_one,
            "Positions count from 0, so a sentence of n tokens ends at position n - 1.",
        ),
    ],
    hints=[
        "Print rnn(x)[0] for a short sentence of the batch: which row holds the state after its "
        "last real token, and what happens to the state in the rows after it?",
        "The first output of rnn(x) holds the state after every step, (B, T, H). For sentence b "
        "you want the row at its last real position, which depends on lengths[b].",
        "Advanced indexing with two index tensors of length B, one for the batch axis and one "
        "for the time axis, picks one row per sentence.",
    ],
    kind="debug",
    library=_library_final_state,
)


# --------------------------------------------------------------------------- q8: build


class _ReferenceBiRNN(nn.Module):
    """A bidirectional RNN from two ``tfbook.rnn.RNN``: what ``torch.nn.RNN(...,
    bidirectional=True, batch_first=True)`` computes."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.forward_rnn = RNN(input_size, hidden_size)  # reads x_0, x_1, ..., x_(T-1)
        self.backward_rnn = RNN(input_size, hidden_size)  # reads x_(T-1), ..., x_1, x_0

    def forward(self, x):
        ahead, _ = self.forward_rnn(x)  # (B, T, H): position t has read x_0 .. x_t
        behind, _ = self.backward_rnn(x.flip(1))  # (B, T, H), in reversed time
        behind = behind.flip(1)  # back in reading order: position t has read x_t .. x_(T-1)
        return torch.cat([ahead, behind], dim=-1)  # (B, T, 2H)


class _BiRNNNotFlippedBack(_ReferenceBiRNN):
    def forward(self, x):
        ahead, _ = self.forward_rnn(x)
        behind, _ = self.backward_rnn(x.flip(1))
        return torch.cat([ahead, behind], dim=-1)


class _BiRNNNeverReversed(_ReferenceBiRNN):
    def forward(self, x):
        ahead, _ = self.forward_rnn(x)
        behind, _ = self.backward_rnn(x)
        return torch.cat([ahead, behind], dim=-1)


class _BiRNNBackwardFirst(_ReferenceBiRNN):
    def forward(self, x):
        ahead, _ = self.forward_rnn(x)
        behind, _ = self.backward_rnn(x.flip(1))
        return torch.cat([behind.flip(1), ahead], dim=-1)


class _BiRNNConcatOverTime(_ReferenceBiRNN):
    def forward(self, x):
        ahead, _ = self.forward_rnn(x)
        behind, _ = self.backward_rnn(x.flip(1))
        return torch.cat([ahead, behind.flip(1)], dim=1)


def _compare_birnn(expected, got) -> str | None:
    """Give the answer the expected module's weights and compare their outputs."""
    d_in = expected.state_dict()["forward_rnn.cell.weight_ih"].shape[1]
    g = torch.Generator().manual_seed(800 + d_in)
    probes = []
    for b, t in [(3, 5), (1, 1)]:
        x = torch.randn(b, t, d_in, generator=g)
        probes.append((f"forward(x {tuple(x.shape)})", (x,)))
    naming = "name the two RNNs forward_rnn and backward_rnn, each a tfbook.rnn.RNN"
    return compare_modules(expected, got, probes, "module", naming)


q8 = Question(
    "ch01.q8",
    "A bidirectional RNN from two library RNNs",
    reference=_ReferenceBiRNN,
    cases=lambda: [
        Case("input_size=3, hidden_size=4", (3, 4), seed=81),
        Case("input_size=2, hidden_size=5", (2, 5), seed=82),
    ],
    mistakes=[
        Mistake(
            "the backward states not flipped back into reading order",
            _BiRNNNotFlippedBack,
            "The backward RNN's output row t belongs to position T - 1 - t; flip it along the "
            "time axis again before you concatenate, so row t of both halves describes x_t.",
        ),
        Mistake(
            "the backward RNN reads the sentence forwards",
            _BiRNNNeverReversed,
            "Feed the second RNN the sequence in reversed time, so its state at x_t has read "
            "everything after x_t. x is batch first, (B, T, D): time is axis 1 (flipping axis "
            "0 only reorders the sentences).",
        ),
        Mistake(
            "the two halves concatenated in the other order",
            _BiRNNBackwardFirst,
            "Put the forward states first: features 0 .. H - 1 come from forward_rnn, as in "
            "torch.nn.RNN(bidirectional=True).",
        ),
        Mistake(
            "concatenated along the time axis",
            _BiRNNConcatOverTime,
            "Each position gets both directions side by side: concatenate the features (the "
            "last axis), giving (B, T, 2H).",
        ),
    ],
    hints=[
        "__init__ makes two tfbook.rnn.RNN(input_size, hidden_size) modules named forward_rnn "
        "and backward_rnn; RNN(x) returns (states of every step, last state).",
        "The backward direction is an ordinary RNN run on the sequence with its time axis "
        "reversed (torch.flip along axis 1).",
        "Before joining the two directions, make row t of both describe the same token x_t; "
        "then put the forward features first.",
    ],
    compare_fn=_compare_birnn,
    kind="build",
    library_note=(
        "none: tfbook.rnn has no bidirectional RNN; tests/test_exercise_kinds.py checks the "
        "reference against torch.nn.RNN(bidirectional=True)"
    ),
)


EXERCISES = ExerciseSet.collect(globals(), "Chapter 1 exercises")
progress = EXERCISES.progress
__all__ = [*EXERCISES.names, "EXERCISES", "progress"]
