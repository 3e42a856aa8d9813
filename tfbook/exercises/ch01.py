"""Graded exercises of chapter 1: From RNNs to Transformers.

1. ``q1``: one step of a tanh recurrent cell.
2. ``q2``: the recurrent loop over a batch-first sequence.
3. ``q3``: the Jacobian of a late state with respect to an early one (why gradients vanish
   or explode).
4. ``q4``: self-attention without learned weights, in one matrix product.
5. ``q5``: memory of the attention weights against the states an RNN keeps for training.
"""

from __future__ import annotations

import math

import torch

from tfbook.exercises._engine import Case, ExerciseSet, Mistake, Question
from tfbook.rnn import RNN, RNNCell
from tfbook.rnn import attention_preview as attention_preview_lib

__all__ = ["EXERCISES", "progress", "q1", "q2", "q3", "q4", "q5"]


def _randn(*shape: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


# --------------------------------------------------------------------------- q1: one step


def rnn_step(x_t, h_prev, W_ih, W_hh, b):
    """h_t = tanh(x_t W_ih^T + h_prev W_hh^T + b); x_t (B, D), h_prev (B, H) -> (B, H)."""
    return torch.tanh(x_t @ W_ih.T + h_prev @ W_hh.T + b)


def _step_no_tanh(x_t, h_prev, W_ih, W_hh, b):
    return x_t @ W_ih.T + h_prev @ W_hh.T + b


def _step_not_transposed(x_t, h_prev, W_ih, W_hh, b):
    return torch.tanh(x_t @ W_ih + h_prev @ W_hh + b)


def _step_ignores_state(x_t, h_prev, W_ih, W_hh, b):
    return torch.tanh(x_t @ W_ih.T + b)


def _step_bias_outside(x_t, h_prev, W_ih, W_hh, b):
    return torch.tanh(x_t @ W_ih.T + h_prev @ W_hh.T) + b


def _step_cases() -> list[Case]:
    def case(name: str, batch: int, d: int, h: int, seed: int, zero_state: bool = False) -> Case:
        x = _randn(batch, d, seed=seed)
        h_prev = torch.zeros(batch, h) if zero_state else _randn(batch, h, seed=seed + 1)
        w_ih = _randn(h, d, seed=seed + 2) / math.sqrt(d)
        w_hh = _randn(h, h, seed=seed + 3) / math.sqrt(h)
        return Case(name, (x, h_prev, w_ih, w_hh, _randn(h, seed=seed + 4)))

    return [
        case("random, D = H = 4", 2, 4, 4, seed=10),
        case("random, D = 3, H = 5", 3, 3, 5, seed=20),
        case("first step: h_prev is zero", 1, 2, 3, seed=30, zero_state=True),
    ]


q1 = Question(
    "ch01.q1",
    "One step of a tanh RNN cell",
    reference=rnn_step,
    cases=_step_cases,
    mistakes=[
        Mistake(
            "no tanh",
            _step_no_tanh,
            "Squash the pre-activation with torch.tanh; without it the cell is linear.",
        ),
        Mistake(
            "weight matrices not transposed",
            _step_not_transposed,
            "W_ih has shape (H, D): multiply the row vectors by W_ih.T (and h_prev by W_hh.T).",
        ),
        Mistake(
            "previous state ignored",
            _step_ignores_state,
            "Add h_prev @ W_hh.T: the recurrent term is what carries memory between steps.",
        ),
        Mistake(
            "bias added after tanh",
            _step_bias_outside,
            "Add b inside the tanh, with the two matrix products.",
        ),
    ],
    hints=[
        "Shapes: x_t is (B, D) and W_ih is (H, D), so x_t @ W_ih.T is (B, H).",
        "Sum x_t @ W_ih.T, h_prev @ W_hh.T and b, then apply torch.tanh to the sum.",
    ],
)


# --------------------------------------------------------------------------- q2: the loop


def run_rnn(x, h0, W_ih, W_hh, b):
    """All states of a tanh RNN; x (B, T, D), h0 (B, H) -> outputs (B, T, H)."""
    h = h0
    outputs = []
    for t in range(x.shape[1]):  # time is axis 1 (batch first)
        h = torch.tanh(x[:, t] @ W_ih.T + h @ W_hh.T + b)
        outputs.append(h)
    return torch.stack(outputs, dim=1)


def _loop_over_batch_axis(x, h0, W_ih, W_hh, b):
    h = h0
    outputs = []
    for x_t in x:  # iterates over axis 0, the batch
        h = torch.tanh(x_t @ W_ih.T + h @ W_hh.T + b)
        outputs.append(h)
    return torch.stack(outputs, dim=1)


def _state_not_carried(x, h0, W_ih, W_hh, b):
    outputs = [torch.tanh(x[:, t] @ W_ih.T + h0 @ W_hh.T + b) for t in range(x.shape[1])]
    return torch.stack(outputs, dim=1)


def _returns_previous_states(x, h0, W_ih, W_hh, b):
    h = h0
    outputs = []
    for t in range(x.shape[1]):
        outputs.append(h)
        h = torch.tanh(x[:, t] @ W_ih.T + h @ W_hh.T + b)
    return torch.stack(outputs, dim=1)


def _stacked_time_first(x, h0, W_ih, W_hh, b):
    h = h0
    outputs = []
    for t in range(x.shape[1]):
        h = torch.tanh(x[:, t] @ W_ih.T + h @ W_hh.T + b)
        outputs.append(h)
    return torch.stack(outputs, dim=0)


def _loop_cases() -> list[Case]:
    def case(name: str, batch: int, steps: int, d: int, h: int, seed: int) -> Case:
        return Case(
            name,
            (
                _randn(batch, steps, d, seed=seed),
                _randn(batch, h, seed=seed + 1),
                _randn(h, d, seed=seed + 2) / math.sqrt(d),
                _randn(h, h, seed=seed + 3) / math.sqrt(h),
                _randn(h, seed=seed + 4),
            ),
        )

    return [
        case("random, B = T = 3", 3, 3, 2, 4, seed=40),
        case("random, B = 2, T = 6", 2, 6, 3, 5, seed=50),
        case("one time step", 2, 1, 3, 2, seed=60),
        case("one sequence, T = 9", 1, 9, 2, 3, seed=70),
    ]


q2 = Question(
    "ch01.q2",
    "The recurrent loop over a sequence",
    reference=run_rnn,
    cases=_loop_cases,
    mistakes=[
        Mistake(
            "looped over the batch axis",
            _loop_over_batch_axis,
            "The input is batch first, (B, T, D): step through time with x[:, t], not over x.",
        ),
        Mistake(
            "state not carried between steps",
            _state_not_carried,
            "Feed the state you just computed into the next step; h0 is used only at t = 0.",
        ),
        Mistake(
            "outputs shifted by one step (h0 stored, last state dropped)",
            _returns_previous_states,
            "Append the new state after computing it, so outputs[:, t] is h_t, not h_(t-1).",
        ),
        Mistake(
            "stacked along the time-first axis",
            _stacked_time_first,
            "Stack the T states with dim=1 so the result is (B, T, H), batch first.",
        ),
    ],
    hints=[
        "Keep a variable h, start it at h0, and loop t over range(x.shape[1]).",
        "Inside the loop reuse the one-step formula of Exercise 1.1 with x[:, t] and h; "
        "collect every new h and torch.stack the list with dim=1.",
    ],
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
)


# --------------------------------------------------------------------------- q5: memory


def memory_bytes(batch, n_heads, seq_len, d_model, bytes_per_value=4):
    """(attention-weight bytes of one layer, RNN hidden-state bytes kept for training)."""
    attention = batch * n_heads * seq_len * seq_len * bytes_per_value  # (B, h, T, T)
    rnn_states = batch * seq_len * d_model * bytes_per_value  # (B, T, H) with H = d_model
    return attention, rnn_states


def _memory_no_heads(batch, n_heads, seq_len, d_model, bytes_per_value=4):
    return batch * seq_len * seq_len * bytes_per_value, batch * seq_len * d_model * bytes_per_value


def _memory_attention_as_output(batch, n_heads, seq_len, d_model, bytes_per_value=4):
    return batch * seq_len * d_model * bytes_per_value, batch * seq_len * d_model * bytes_per_value


def _memory_rnn_last_state_only(batch, n_heads, seq_len, d_model, bytes_per_value=4):
    attention = batch * n_heads * seq_len * seq_len * bytes_per_value
    return attention, batch * d_model * bytes_per_value


def _memory_cases() -> list[Case]:
    return [
        Case("B = 2, h = 8, T = 512, d_model = 64, float32", (2, 8, 512, 64)),
        Case("B = 1, h = 12, T = 1024, d_model = 768, float16", (1, 12, 1024, 768, 2)),
        Case("B = 4, h = 1, T = 100, d_model = 32, float64", (4, 1, 100, 32, 8)),
        Case("a single token", (1, 1, 1, 16)),
    ]


q5 = Question(
    "ch01.q5",
    "Memory: attention weights against RNN states",
    reference=memory_bytes,
    cases=_memory_cases,
    mistakes=[
        Mistake(
            "attention heads forgotten",
            _memory_no_heads,
            "Every head stores its own T x T weight matrix: multiply by n_heads.",
        ),
        Mistake(
            "attention counted as T x d_model",
            _memory_attention_as_output,
            "The attention weights are T x T per head (every query against every key), not "
            "T x d_model like the output.",
        ),
        Mistake(
            "only the last RNN state counted",
            _memory_rnn_last_state_only,
            "Backpropagation through time needs every state h_1 .. h_T, so training keeps "
            "B x T x d_model values; only inference can keep just the last one.",
        ),
    ],
    hints=[
        "Attention: one weight per (query, key) pair, per head, per sequence in the batch.",
        "RNN: training keeps the state after every step, one vector of d_model values each.",
    ],
)


# --------------------------------------------------------------------------- library counterparts
# Each reference above is a second copy of a tfbook function; tests/test_exercise_library.py runs
# every case through both and requires them to agree.
def _library_cell(x_t, h_prev, W_ih, W_hh, b):
    cell = RNNCell(W_ih.shape[1], W_ih.shape[0]).to(W_ih.dtype)
    with torch.no_grad():
        cell.weight_ih.copy_(W_ih)
        cell.weight_hh.copy_(W_hh)
        cell.bias_ih.copy_(b)
        cell.bias_hh.zero_()
    return cell(x_t, h_prev)


def _library_rnn(x, h0, W_ih, W_hh, b):
    rnn = RNN(W_ih.shape[1], W_ih.shape[0]).to(W_ih.dtype)
    with torch.no_grad():
        rnn.cell.weight_ih.copy_(W_ih)
        rnn.cell.weight_hh.copy_(W_hh)
        rnn.cell.bias_ih.copy_(b)
        rnn.cell.bias_hh.zero_()
    return rnn(x, h0)[0]


q1.library = _library_cell
q2.library = _library_rnn
q3.library_note = "none: the Jacobian product is derived in the chapter, not kept in tfbook.rnn"
q4.library = attention_preview_lib
q5.library_note = "none: arithmetic on tensor shapes"

EXERCISES = ExerciseSet("ch01", "Chapter 1 exercises", [q1, q2, q3, q4, q5])
progress = EXERCISES.progress
