"""Chapter 5 exercises: feed-forward network, GELU, layer normalisation, residual sub-layers,
dropout (chapter 5).

1. a gated feed-forward network, SwiGLU; 2. exact GELU; 3. layer normalisation;
4. debugging: source 001's pre-LN sub-layer; 5. inverted dropout; 6. derivation: the widest
SwiGLU feed-forward network with no more parameters than the ReLU one; 7. predict, then run:
the mean, std and norm of a LayerNorm output (``tfbook.norm.LayerNorm`` reveals them);
8. build with the library: an encoder layer from ``SelfAttention``,
``PositionwiseFeedForward`` and ``ResidualSublayer`` (``tfbook.model.EncoderLayer`` in chapter 6).

Usage in the notebook::

    from tfbook.exercises import ch05 as ex
    ex.q1.check(swiglu_ffn)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tfbook.attention import SelfAttention
from tfbook.exercises._engine import (
    Case,
    ExerciseSet,
    Frozen,
    Mistake,
    Question,
    compare_modules,
)
from tfbook.feedforward import PositionwiseFeedForward
from tfbook.norm import LayerNorm, ResidualSublayer

# --------------------------------------------------------------------------- q1: SwiGLU


def swiglu_ffn(x, w_gate, w_up, w_down, beta=1.0):
    """The gated feed-forward network (Swish_beta(x W) * x V) W2, without biases.

    Swish_beta(z) = z * sigmoid(beta * z); beta = 1 is SiLU, the SwiGLU of recent models.
    Shapes: x (B, T, d_model), w_gate and w_up (d_model, d_ff), w_down (d_ff, d_model).
    """
    gate = x @ w_gate  # (B, T, d_ff)
    swish = gate * torch.sigmoid(beta * gate)  # Swish_beta, elementwise
    return (swish * (x @ w_up)) @ w_down  # (B, T, d_model)


def _swiglu_swapped(x, w_gate, w_up, w_down, beta=1.0):
    up = x @ w_up
    return (up * torch.sigmoid(beta * up) * (x @ w_gate)) @ w_down


def _swiglu_sigmoid_gate(x, w_gate, w_up, w_down, beta=1.0):
    return (torch.sigmoid(beta * (x @ w_gate)) * (x @ w_up)) @ w_down


def _swiglu_gelu(x, w_gate, w_up, w_down, beta=1.0):
    return (F.gelu(x @ w_gate) * (x @ w_up)) @ w_down


def _swiglu_both_branches(x, w_gate, w_up, w_down, beta=1.0):
    gate, up = x @ w_gate, x @ w_up
    return (gate * torch.sigmoid(beta * gate) * up * torch.sigmoid(beta * up)) @ w_down


def _swiglu_swish_of_product(x, w_gate, w_up, w_down, beta=1.0):
    h = (x @ w_gate) * (x @ w_up)
    return (h * torch.sigmoid(beta * h)) @ w_down


def _swiglu_beta_ignored(x, w_gate, w_up, w_down, beta=1.0):
    gate = x @ w_gate
    return (gate * torch.sigmoid(gate) * (x @ w_up)) @ w_down


def _swiglu_beta_outside(x, w_gate, w_up, w_down, beta=1.0):
    gate = x @ w_gate
    return (beta * gate * torch.sigmoid(gate) * (x @ w_up)) @ w_down


def _swiglu_relu_gate(x, w_gate, w_up, w_down, beta=1.0):
    return (torch.relu(x @ w_gate) * (x @ w_up)) @ w_down


def _swiglu_silu_over_beta(x, w_gate, w_up, w_down, beta=1.0):
    gate = x @ w_gate
    return (F.silu(beta * gate) / beta * (x @ w_up)) @ w_down  # 0 / 0 when beta = 0


def _swiglu_cases():
    def case(name, b, t, d, d_ff, seed, beta=None, scale=1.0):
        g = torch.Generator().manual_seed(seed)
        x = scale * torch.randn(b, t, d, generator=g)
        w_gate = torch.randn(d, d_ff, generator=g) / math.sqrt(d)
        w_up = torch.randn(d, d_ff, generator=g) / math.sqrt(d)
        w_down = torch.randn(d_ff, d, generator=g) / math.sqrt(d_ff)
        if beta is None:  # the default: beta = 1
            return Case(name, (x, w_gate, w_up, w_down))
        return Case(name, (x, w_gate, w_up, w_down), {"beta": beta})

    return [
        case("random, d_model = 4, d_ff = 6, beta = 1", 2, 3, 4, 6, seed=50, beta=1.0),
        case("beta = 2.5", 1, 4, 3, 5, seed=51, beta=2.5),
        case("beta not given (its default is 1)", 2, 2, 4, 8, seed=52),
        case("beta = 0.5, d_ff = 3 < d_model = 5", 3, 2, 5, 3, seed=53, beta=0.5),
        case(
            "large inputs (gate values in the hundreds), beta not given",
            2,
            3,
            4,
            6,
            seed=54,
            scale=150.0,
        ),
        case("one token", 1, 1, 2, 4, seed=55, beta=1.0),
        case("beta = 0: Swish_0(z) = z / 2", 2, 2, 3, 4, seed=56, beta=0.0),
    ]


q1 = Question(
    "ch05.q1",
    "A gated feed-forward network: SwiGLU",
    reference=swiglu_ffn,
    cases=_swiglu_cases,
    mistakes=[
        Mistake(
            "the two branches swapped: Swish applied to x V",
            _swiglu_swapped,
            "The gate is the branch through w_gate: Swish_beta(x @ w_gate) multiplies the "
            "plain branch x @ w_up.",
        ),
        Mistake(
            "a sigmoid gate (GLU) instead of Swish",
            _swiglu_sigmoid_gate,
            "Swish_beta(z) = z * sigmoid(beta z): the sigmoid multiplies z itself before the "
            "product with x @ w_up.",
        ),
        Mistake(
            "GELU instead of Swish (GEGLU)",
            _swiglu_gelu,
            "SwiGLU uses Swish_beta(z) = z * sigmoid(beta z), not GELU.",
        ),
        Mistake(
            "ReLU instead of Swish (ReGLU)",
            _swiglu_relu_gate,
            "SwiGLU's gate is smooth: Swish_beta(z) = z * sigmoid(beta z), which lets a little "
            "of a negative z through, where ReLU gives 0.",
        ),
        Mistake(
            "SiLU(beta z) / beta: 0 / 0 when beta = 0",
            _swiglu_silu_over_beta,
            "z * sigmoid(beta z) equals SiLU(beta z) / beta only for beta != 0; at beta = 0 it is "
            "z / 2, but the division gives nan. Write z * torch.sigmoid(beta * z) itself.",
        ),
        Mistake(
            "Swish applied to both branches",
            _swiglu_both_branches,
            "Only the gate branch goes through Swish; x @ w_up enters the product as it is.",
        ),
        Mistake(
            "Swish applied after the product",
            _swiglu_swish_of_product,
            "Gate first, multiply second: Swish_beta(x @ w_gate) * (x @ w_up), then w_down.",
        ),
        Mistake(
            "beta ignored (always 1)",
            _swiglu_beta_ignored,
            "beta scales the argument of the sigmoid: z * sigmoid(beta * z).",
        ),
        Mistake(
            "beta multiplies the output instead of the sigmoid's argument",
            _swiglu_beta_outside,
            "Swish_beta(z) = z * sigmoid(beta * z): beta goes inside the sigmoid.",
        ),
    ],
    hints=[
        "Two branches from the same x: one through w_gate, one through w_up, both (B, T, d_ff).",
        "Swish the gate branch (z times the sigmoid of beta z), multiply elementwise with the "
        "other branch, then map back with w_down.",
    ],
    kind="implement",
    library_note="none: tfbook's PositionwiseFeedForward uses ReLU or GELU, not a gated unit",
)


# --------------------------------------------------------------------------- q2: GELU


def _reference_gelu(x):
    return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _gelu_tanh(x):
    c = math.sqrt(2.0 / math.pi)
    return 0.5 * x * (1.0 + torch.tanh(c * (x + 0.044715 * x**3)))


def _gelu_sigmoid(x):
    return x * torch.sigmoid(x)


def _gelu_no_sqrt2(x):
    return x * 0.5 * (1.0 + torch.erf(x))


def _gelu_cdf_only(x):
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _gelu_cases():
    g = torch.Generator().manual_seed(0)
    return [
        Case("random normal, seed 0", (torch.randn(4, 6, generator=g),)),
        Case("grid from -4 to 4", (torch.linspace(-4.0, 4.0, 17),)),
        Case("random wide, seed 0", (3.0 * torch.randn(2, 3, 5, generator=g),)),
        Case("edge: zeros", (torch.zeros(3),)),
    ]


def _library_gelu(x):
    return PositionwiseFeedForward(1, activation="gelu").activation(x)


q2 = Question(
    "ch05.q2",
    "Exact GELU",
    reference=_reference_gelu,
    cases=_gelu_cases,
    mistakes=[
        Mistake(
            "tanh approximation instead of the exact GELU",
            _gelu_tanh,
            "The tanh formula is only an approximation (off by up to about 5e-4); use the "
            "error function: Phi(x) = 0.5 * (1 + erf(x / sqrt(2))).",
        ),
        Mistake(
            "x * sigmoid(x) (that is SiLU/Swish, not GELU)",
            _gelu_sigmoid,
            "GELU weights x by the standard normal CDF Phi(x), not by the logistic sigmoid.",
        ),
        Mistake(
            "erf(x) without dividing x by sqrt(2)",
            _gelu_no_sqrt2,
            "The normal CDF is 0.5 * (1 + erf(x / sqrt(2))): divide by sqrt(2) inside erf.",
        ),
        Mistake(
            "returned Phi(x) without multiplying by x",
            _gelu_cdf_only,
            "GELU(x) = x * Phi(x): Phi(x) alone is the gate, not the output.",
        ),
    ],
    hints=[
        "GELU(x) = x * Phi(x), where Phi is the cumulative distribution function of N(0, 1).",
        "Phi(x) = 0.5 * (1 + erf(x / sqrt(2))); torch.erf is the error function.",
    ],
    atol=1e-6,
    rtol=1e-5,
    check_dtype=True,  # a float32 input gives a float32 output (no float64 detour)
    kind="implement",
    library=_library_gelu,
    forbidden=("torch.nn.functional.gelu", "aten.gelu"),
)


# --------------------------------------------------------------------------- q3: LayerNorm


def _reference_layer_norm(x, gamma, beta, eps=1e-5):
    mu = x.mean(dim=-1, keepdim=True)  # one mean per token
    var = ((x - mu) ** 2).mean(dim=-1, keepdim=True)  # biased variance
    return gamma * (x - mu) / torch.sqrt(var + eps) + beta


def _ln_batch_axes(x, gamma, beta, eps=1e-5):
    mu = x.mean(dim=(0, 1), keepdim=True)
    var = ((x - mu) ** 2).mean(dim=(0, 1), keepdim=True)
    return gamma * (x - mu) / torch.sqrt(var + eps) + beta


def _ln_sequence_axes(x, gamma, beta, eps=1e-5):
    mu = x.mean(dim=(-2, -1), keepdim=True)  # one mean per sequence, not per token
    var = ((x - mu) ** 2).mean(dim=(-2, -1), keepdim=True)
    return gamma * (x - mu) / torch.sqrt(var + eps) + beta


def _ln_unbiased(x, gamma, beta, eps=1e-5):
    mu = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, keepdim=True)  # torch's default: unbiased, divides by d - 1
    return gamma * (x - mu) / torch.sqrt(var + eps) + beta


def _ln_eps_outside(x, gamma, beta, eps=1e-5):
    mu = x.mean(dim=-1, keepdim=True)
    std = ((x - mu) ** 2).mean(dim=-1, keepdim=True).sqrt()
    return gamma * (x - mu) / (std + eps) + beta


def _ln_no_affine(x, gamma, beta, eps=1e-5):
    mu = x.mean(dim=-1, keepdim=True)
    var = ((x - mu) ** 2).mean(dim=-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps)


def _ln_cases():
    cases = []
    for seed, shape in [(0, (2, 3, 8)), (1, (4, 2, 6))]:
        g = torch.Generator().manual_seed(seed)
        x = 2.0 * torch.randn(shape, generator=g) + 1.0
        gamma = 1.0 + 0.5 * torch.randn(shape[-1], generator=g)
        beta = 0.5 * torch.randn(shape[-1], generator=g)
        cases.append(Case(f"random, seed {seed}", (x, gamma, beta)))
    g = torch.Generator().manual_seed(2)
    tiny = 1e-3 * torch.randn(1, 2, 5, generator=g)  # variance close to eps
    cases.append(Case("edge: nearly constant vectors", (tiny, torch.ones(5), torch.zeros(5))))
    const = torch.full((1, 2, 4), 7.0)
    cases.append(
        Case("edge: constant vectors give beta", (const, torch.ones(4), torch.arange(4.0)))
    )
    g = torch.Generator().manual_seed(3)
    small = 0.2 * torch.randn(2, 2, 6, generator=g)  # variance 0.04: eps = 0.1 matters
    cases.append(Case("eps=0.1 given", (small, torch.ones(6), torch.zeros(6)), {"eps": 0.1}))
    far = 100.0 + torch.randn(2, 3, 8, generator=g)  # E[x^2] - mu^2 loses the variance here
    cases.append(Case("edge: vectors far from 0 (mean 100)", (far, torch.ones(8), torch.zeros(8))))
    return cases


def _library_layer_norm(x, gamma, beta, eps=1e-5):
    ln = LayerNorm(x.shape[-1], eps=eps).to(x.dtype)
    with torch.no_grad():
        ln.weight.copy_(gamma)
        ln.bias.copy_(beta)
    return ln(x)


q3 = Question(
    "ch05.q3",
    "Layer normalisation from scratch",
    reference=_reference_layer_norm,
    cases=_ln_cases,
    mistakes=[
        Mistake(
            "statistics over the batch and positions (BatchNorm's axes)",
            _ln_batch_axes,
            "LayerNorm normalises each token vector on its own: take the mean and variance "
            "over the last axis (dim=-1, keepdim=True), not over the batch.",
        ),
        Mistake(
            "statistics over (T, d_model): one mean per sequence",
            _ln_sequence_axes,
            "Every token vector gets its own mean and variance: reduce over the last axis "
            "only, so a token's normalisation does not depend on the other tokens.",
        ),
        Mistake(
            "unbiased variance (divides by d - 1)",
            _ln_unbiased,
            "torch.var divides by d - 1 by default; LayerNorm uses the biased variance: "
            "pass unbiased=False (or correction=0), or compute ((x - mu) ** 2).mean(-1).",
        ),
        Mistake(
            "eps added to the standard deviation instead of the variance",
            _ln_eps_outside,
            "Divide by sqrt(var + eps), not by sqrt(var) + eps; the two differ for vectors "
            "whose variance is close to eps.",
        ),
        Mistake(
            "gamma and beta not applied",
            _ln_no_affine,
            "After normalising, scale by gamma and shift by beta (gamma * x_hat + beta).",
        ),
    ],
    hints=[
        "Compute mu and var along dim=-1 with keepdim=True so they broadcast back over "
        "the features.",
        "Use the biased variance (divide by d, not d - 1) and put eps inside the square root.",
        "Normalise first (subtract the mean, divide by the root of variance plus eps), and "
        "only then apply the learned gain and shift, element by element.",
    ],
    kind="implement",
    library=_library_layer_norm,
    forbidden=(
        "torch.nn.functional.layer_norm",
        "torch.layer_norm",
        "tfbook.norm.LayerNorm",
        # the operations, under whatever name (torch.native_layer_norm, torch.ops.aten ...)
        "aten.native_layer_norm",
        "aten.native_group_norm",
        "aten.native_batch_norm",
    ),
)


# --------------------------------------------------------------------------- q4: pre-LN block


def _reference_pre_ln(x, norm, sublayer, p):
    branch = F.dropout(sublayer(norm(x)), p, training=True)  # dropout on the branch only
    return x + branch  # residual: the raw input x


def _pre_ln_source_001(x, norm, sublayer, p):
    h = norm(x)
    return F.dropout(h + sublayer(h), p, training=True)


def _pre_ln_residual_of_norm(x, norm, sublayer, p):
    h = norm(x)
    return h + F.dropout(sublayer(h), p, training=True)


def _pre_ln_is_post_ln(x, norm, sublayer, p):
    return norm(x + F.dropout(sublayer(x), p, training=True))


def _pre_ln_dropout_on_sum(x, norm, sublayer, p):
    return F.dropout(x + sublayer(norm(x)), p, training=True)


def _pre_ln_cases():
    cases = []
    for seed, (b, t, d), p in [(0, (2, 4, 8), 0.25), (1, (1, 6, 6), 0.5), (2, (3, 3, 4), 0.0)]:
        g = torch.Generator().manual_seed(seed)
        norm = nn.LayerNorm(d)
        sublayer = nn.Linear(d, d)
        with torch.no_grad():
            norm.weight.copy_(1.0 + 0.3 * torch.randn(d, generator=g))
            norm.bias.copy_(0.3 * torch.randn(d, generator=g))
            sublayer.weight.copy_(torch.randn(d, d, generator=g) / math.sqrt(d))
            sublayer.bias.copy_(0.1 * torch.randn(d, generator=g))
        x = 3.0 * torch.randn(b, t, d, generator=g) + 1.0
        args = (x, Frozen(f"LayerNorm({d})", norm), Frozen(f"Linear({d}, {d})", sublayer), p)
        cases.append(Case(f"random, p={p}, seed {seed}", args, seed=100 + seed))
    return cases


def _library_pre_ln(x, norm, sublayer, p):
    norm, sublayer = norm.fn, sublayer.fn  # the cases pass Frozen modules
    block = ResidualSublayer(x.shape[-1], sublayer, norm_first=True, dropout=p).to(x.dtype)
    block.norm.load_state_dict(norm.state_dict())
    return block.train()(x)


q4 = Question(
    "ch05.q4",
    "Spot the difference: a pre-LN residual sub-layer",
    reference=_reference_pre_ln,
    cases=_pre_ln_cases,
    mistakes=[
        Mistake(
            "source 001's listing: residual added to the normalised input, dropout on the sum",
            _pre_ln_source_001,
            "Two fixes: keep the raw x for the residual (x + branch, not norm(x) + branch), "
            "and apply dropout to the branch before the addition, not to the whole sum.",
        ),
        Mistake(
            "residual added to the normalised input",
            _pre_ln_residual_of_norm,
            "The residual stream is the un-normalised x: return x + dropout(sublayer(norm(x))). "
            "Adding norm(x) renormalises the stream in every layer.",
        ),
        Mistake(
            "post-LN order instead of pre-LN",
            _pre_ln_is_post_ln,
            "That is the original paper's post-LN order. Pre-LN normalises the branch's input: "
            "x + dropout(sublayer(norm(x))).",
        ),
        Mistake(
            "dropout applied to the residual stream too",
            _pre_ln_dropout_on_sum,
            "Dropout goes on the sub-layer's output only; dropping entries of x itself throws "
            "away what earlier layers wrote into the residual stream.",
        ),
    ],
    hints=[
        "Only the branch sees normalised vectors; the residual stream itself is never "
        "normalised in pre-LN.",
        "Dropout acts on the branch's output alone, before the addition, in training mode.",
        "What gets added back is the raw input, not its normalised copy.",
    ],
    kind="debug",
    library=_library_pre_ln,
)


# --------------------------------------------------------------------------- q5: dropout


def _reference_dropout(x, u, p, training):
    if not training or p == 0.0:
        return x.clone()
    if p >= 1.0:
        return torch.zeros_like(x)
    keep = u >= p  # keep each entry with probability 1 - p
    return torch.where(keep, x / (1.0 - p), torch.zeros_like(x))


def _dropout_no_rescale(x, u, p, training):
    if not training:
        return x.clone()
    return torch.where(u >= p, x, torch.zeros_like(x))


def _dropout_times_keep(x, u, p, training):
    if not training:
        return x.clone()
    return torch.where(u >= p, x * (1.0 - p), torch.zeros_like(x))


def _dropout_also_in_eval(x, u, p, training):
    if p >= 1.0:
        return torch.zeros_like(x)
    return torch.where(u >= p, x / (1.0 - p), torch.zeros_like(x))


def _dropout_nan_at_one(x, u, p, training):
    if not training:
        return x.clone()
    return torch.where(u >= p, x, torch.zeros_like(x)) / (1.0 - p)


def _dropout_cases():
    cases = []
    for seed, shape, p, training in [
        (0, (2, 3, 8), 0.25, True),
        (1, (4, 5), 0.5, True),
        (2, (2, 3, 4), 0.3, False),
    ]:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(shape, generator=g)
        u = torch.rand(shape, generator=g)
        cases.append(Case(f"random, p={p}, training={training}", (x, u, p, training)))
    g = torch.Generator().manual_seed(3)
    x, u = torch.randn(3, 4, generator=g), torch.rand(3, 4, generator=g)
    cases.append(Case("edge: p=0 keeps everything", (x, u, 0.0, True)))
    cases.append(Case("edge: p=1 drops everything", (x, u, 1.0, True)))
    u = torch.tensor([[0.25, 0.1, 0.25, 0.7], [0.0, 0.25, 0.5, 0.25]])  # u = p: kept
    x = torch.randn(2, 4, generator=g)
    cases.append(Case("edge: entries with u exactly p", (x, u, 0.25, True)))
    return cases


q5 = Question(
    "ch05.q5",
    "Inverted dropout, train and eval",
    reference=_reference_dropout,
    cases=_dropout_cases,
    mistakes=[
        Mistake(
            "kept entries not rescaled by 1/(1-p)",
            _dropout_no_rescale,
            "Divide the kept entries by (1 - p) during training so every entry keeps its "
            "expected value; then evaluation needs no change.",
        ),
        Mistake(
            "kept entries multiplied by (1-p) instead of divided",
            _dropout_times_keep,
            "Scaling by (1 - p) at evaluation time is the original 2014 recipe; inverted "
            "dropout divides by (1 - p) during training instead.",
        ),
        Mistake(
            "dropout also applied in evaluation mode",
            _dropout_also_in_eval,
            "When training is False, return x unchanged: dropout is a training-time noise.",
        ),
        Mistake(
            "division by (1-p) gives NaN when p = 1",
            _dropout_nan_at_one,
            "At p = 1 everything is dropped: return zeros instead of computing 0 / 0.",
        ),
    ],
    hints=[
        "Keep an entry where u >= p (that happens with probability 1 - p); zero it elsewhere.",
        "Divide what you keep by (1 - p) when training; return x unchanged when not training.",
        "Treat p = 1 on its own (all zeros) so you never divide by zero.",
    ],
    kind="implement",
    library_note="none: tfbook uses torch.nn.Dropout, whose random draws are not exposed",
)


# --------------------------------------------------------------------------- q6: SwiGLU width


def swiglu_width(d_model, d_ff, multiple_of=1):
    """The widest SwiGLU hidden layer (a multiple of ``multiple_of``) with no more parameters
    than the ReLU feed-forward network of width ``d_ff``, biases included."""
    relu_ffn = 2 * d_model * d_ff + d_ff + d_model  # W1, W2, b1, b2
    widest = relu_ffn // (3 * d_model)  # three bias-free matrices of d_model x width
    return widest // multiple_of * multiple_of  # round down: rounding up would exceed


def _width_no_relu_biases(d_model, d_ff, multiple_of=1):
    return (2 * d_model * d_ff) // (3 * d_model) // multiple_of * multiple_of


def _width_rounded_up(d_model, d_ff, multiple_of=1):
    widest = (2 * d_model * d_ff + d_ff + d_model) // (3 * d_model)
    return -(-widest // multiple_of) * multiple_of


def _width_rounded_nearest(d_model, d_ff, multiple_of=1):
    widest = (2 * d_model * d_ff + d_ff + d_model) / (3 * d_model)
    return round(widest / multiple_of) * multiple_of


def _width_two_matrices(d_model, d_ff, multiple_of=1):
    widest = (2 * d_model * d_ff + d_ff + d_model) // (2 * d_model)
    return widest // multiple_of * multiple_of


def _width_swiglu_biases(d_model, d_ff, multiple_of=1):
    # three matrices with biases: 3 d_model h + 2 h + d_model
    widest = (2 * d_model * d_ff + d_ff) // (3 * d_model + 2)
    return widest // multiple_of * multiple_of


def _width_multiple_ignored(d_model, d_ff, multiple_of=1):
    return (2 * d_model * d_ff + d_ff + d_model) // (3 * d_model)


def _width_cases():
    return [
        Case("the paper's sizes, d_model = 512, d_ff = 2048", (512, 2048)),
        Case("d_ff not 4 x d_model: d_model = 6, d_ff = 10", (6, 10)),
        Case("d_model = 8, d_ff = 32", (8, 32)),
        Case("d_model = 4096, d_ff = 16384, multiples of 256", (4096, 16384, 256)),
        Case("d_model = 768, d_ff = 3072, multiples of 64", (768, 3072, 64)),
        Case("a multiple larger than the budget allows: 0", (4, 4, 64)),
    ]


def _library_swiglu_width(d_model, d_ff, multiple_of=1):
    """Count with real modules: the ReLU FFN's parameters, and a SwiGLU's per hidden unit."""
    budget = sum(p.numel() for p in PositionwiseFeedForward(d_model, d_ff).parameters())

    def swiglu_params(width):  # three bias-free linear maps, counted on modules
        maps = [nn.Linear(d_model, width, bias=False, device="meta") for _ in range(2)]
        maps.append(nn.Linear(width, d_model, bias=False, device="meta"))
        return sum(p.numel() for m in maps for p in m.parameters())

    per_unit = swiglu_params(1)  # the count grows by this much per hidden unit
    assert swiglu_params(7) == 7 * per_unit
    return budget // per_unit // multiple_of * multiple_of


q6 = Question(
    "ch05.q6",
    "The width of a SwiGLU feed-forward network",
    reference=swiglu_width,
    cases=_width_cases,
    mistakes=[
        Mistake(
            "the ReLU network's biases not counted (2 d_ff / 3)",
            _width_no_relu_biases,
            "The budget is the whole ReLU network: 2 d_model d_ff weights plus the biases, d_ff "
            "in b1 and d_model in b2.",
        ),
        Mistake(
            "rounded up to the multiple",
            _width_rounded_up,
            "Rounding up gives a network with more parameters than the budget; the task asks "
            "for the widest one that does not exceed it: round down.",
        ),
        Mistake(
            "rounded to the nearest multiple",
            _width_rounded_nearest,
            "A width above the budget is no answer: round down to the multiple, never to the "
            "nearest one.",
        ),
        Mistake(
            "SwiGLU counted with two matrices",
            _width_two_matrices,
            "SwiGLU has three matrices: the gate W and the value V (both d_model x width) and "
            "the output W2 (width x d_model).",
        ),
        Mistake(
            "SwiGLU given biases",
            _width_swiglu_biases,
            "The SwiGLU network of the task has no biases: 3 d_model width parameters.",
        ),
        Mistake(
            "multiple_of ignored",
            _width_multiple_ignored,
            "The width must be a multiple of multiple_of (hardware prefers such sizes): round "
            "down to one.",
        ),
    ],
    hints=[
        "Write both counts: the ReLU network has 2 d_model d_ff + d_ff + d_model parameters, "
        "the SwiGLU network 3 d_model h for a hidden width h.",
        "The largest integer h with 3 d_model h <= budget is an integer division; then go down "
        "to a multiple of multiple_of.",
    ],
    compare_fn=lambda expected, got: (
        f"output: expected an int, got {type(got).__name__} {got!r}"
        if isinstance(got, bool) or not isinstance(got, int)
        else (None if got == expected else f"output: expected width {expected}, got {got}")
    ),
    kind="derive",
    library=_library_swiglu_width,
)


# --------------------------------------------------------------------------- q7: predict

#: What exercise 5.7 asks about: y = LayerNorm(16)(x) for one token x (gain 1, bias 0 unless
#: said otherwise), with x = 3 * randn(16) + 1 (see ``layer_norm_token``).
LN_KINDS = (
    "y.mean()",
    "y.std()",
    "y.norm()",
    "y.std() with gamma = 2 and beta = 1",
    "y.std() for a constant token (every entry 5.0)",
)
LN_WIDTH = 16


def layer_norm_token() -> torch.Tensor:
    """The token of exercise 5.7: 16 numbers with mean about 1 and standard deviation about 3."""
    return 3.0 * torch.randn(LN_WIDTH, generator=torch.Generator().manual_seed(57)) + 1.0


def _reference_predicted_ln(kind):
    """Statistics of a LayerNorm output, as torch prints them (eps is negligible here)."""
    d = LN_WIDTH
    # y has mean 0 and *biased* variance 1: sum(y**2) = d. torch.std divides by d - 1.
    unbiased_std = math.sqrt(d / (d - 1))
    answers = {
        LN_KINDS[0]: 0.0,
        LN_KINDS[1]: unbiased_std,
        LN_KINDS[2]: math.sqrt(d),  # sqrt(sum(y**2))
        LN_KINDS[3]: 2.0 * unbiased_std,  # gamma stretches; beta only shifts
        LN_KINDS[4]: 0.0,  # x - mean is 0 everywhere: 0 / sqrt(0 + eps) = 0
    }
    return answers[kind]


def _ln_with(**changes):
    def wrong(kind):
        return changes.get(f"k{LN_KINDS.index(kind)}", _reference_predicted_ln(kind))

    return wrong


_UNBIASED = math.sqrt(LN_WIDTH / (LN_WIDTH - 1))
_ln_biased_std = _ln_with(k1=1.0, k3=2.0)
_ln_unit_length = _ln_with(k1=_UNBIASED / math.sqrt(LN_WIDTH), k2=1.0)
_ln_beta_widens = _ln_with(k3=2.0 * _UNBIASED + 1.0)
_ln_constant_unit = _ln_with(k4=_UNBIASED)


def _library_predicted_ln(kind):
    index = LN_KINDS.index(kind)
    norm = LayerNorm(LN_WIDTH).double()
    x = layer_norm_token().double()
    if index == 3:
        with torch.no_grad():
            norm.weight.fill_(2.0)
            norm.bias.fill_(1.0)
    if index == 4:
        x = torch.full((LN_WIDTH,), 5.0, dtype=torch.float64)
    y = norm(x)
    return {0: y.mean(), 2: y.norm()}.get(index, y.std()).item()


q7 = Question(
    "ch05.q7",
    "Predict what LayerNorm's output looks like",
    reference=_reference_predicted_ln,
    cases=lambda: [Case(kind, (kind,)) for kind in LN_KINDS],
    mistakes=[
        Mistake(
            "torch's std taken to be LayerNorm's (biased) one",
            _ln_biased_std,
            "LayerNorm makes the biased variance (divide by d) equal to 1; torch.std divides by "
            "d - 1 by default, so it prints sqrt(d / (d - 1)).",
        ),
        Mistake(
            "LayerNorm thought to give vectors of length 1",
            _ln_unit_length,
            "LayerNorm fixes the mean and the variance of the entries, not the length: a vector "
            "of d entries with mean 0 and variance 1 has length sqrt(d).",
        ),
        Mistake(
            "beta thought to change the spread",
            _ln_beta_widens,
            "Adding the same shift to every entry moves the mean, not the spread; only gamma "
            "stretches it.",
        ),
        Mistake(
            "a constant token thought to come out with unit spread",
            _ln_constant_unit,
            "A constant vector has x - mu = 0 everywhere, so the output is 0 * gamma + beta: "
            "eps avoids the division by zero, it does not create a spread.",
        ),
    ],
    hints=[
        "Write y = (x - mu) / sqrt(var + eps) with var the biased variance. Here var is about 9, "
        "so eps changes nothing you can see: y has mean 0 and (1/d) sum(y**2) = 1.",
        "torch.std and Tensor.norm are defined by sums of squares: work out sum(y**2) first. "
        "Check which denominator torch.std uses by default.",
        "Return exact expressions (math.sqrt(...)); the check allows a difference of 1e-4.",
    ],
    atol=1e-4,
    rtol=1e-4,
    kind="predict",
    library=_library_predicted_ln,
)


# --------------------------------------------------------------------------- q8: build


class _ReferenceEncoderLayer(nn.Module):
    """An encoder layer from library parts: what ``tfbook.model.EncoderLayer`` (chapter 6)
    computes with dropout 0."""

    def __init__(self, d_model, n_heads, d_ff, norm_first=True):
        super().__init__()
        attention = SelfAttention(d_model, n_heads)
        self.self_attn = ResidualSublayer(d_model, attention, norm_first=norm_first)
        feed_forward = PositionwiseFeedForward(d_model, d_ff)  # ReLU, as in the paper
        self.ffn = ResidualSublayer(d_model, feed_forward, norm_first=norm_first)

    def forward(self, x, mask=None):
        x = self.self_attn(x, mask)  # (B, T, d_model): tokens read each other
        return self.ffn(x)  # (B, T, d_model): then each token on its own


class _EncoderIgnoresMask(_ReferenceEncoderLayer):
    def forward(self, x, mask=None):
        return self.ffn(self.self_attn(x))


class _EncoderFfnFirst(_ReferenceEncoderLayer):
    def forward(self, x, mask=None):
        return self.self_attn(self.ffn(x), mask)


class _EncoderAlwaysPreLN(_ReferenceEncoderLayer):
    def __init__(self, d_model, n_heads, d_ff, norm_first=True):
        super().__init__(d_model, n_heads, d_ff, norm_first=True)


class _EncoderGelu(_ReferenceEncoderLayer):
    def __init__(self, d_model, n_heads, d_ff, norm_first=True):
        super().__init__(d_model, n_heads, d_ff, norm_first)
        self.ffn.sublayer = PositionwiseFeedForward(d_model, d_ff, activation="gelu")


def _compare_encoder_layers(expected, got) -> str | None:
    """Give the answer the expected layer's weights and compare them with masks."""
    d_model = expected.state_dict()["ffn.norm.weight"].shape[0]
    g = torch.Generator().manual_seed(580 + d_model)
    probes = []
    for b, t in [(2, 5), (3, 4)]:
        x = 3.0 * torch.randn(b, t, d_model, generator=g) + 1.0
        lengths = torch.tensor([t] + [t - 2] * (b - 1))
        keys_real = (torch.arange(t)[None, :] < lengths[:, None])[:, None, :]  # (B, 1, T)
        for mask, what in ((keys_real, "padding mask"), (None, "no mask")):
            probes.append((f"forward(x {tuple(x.shape)}, {what})", (x, mask)))
        where = f"forward(x {tuple(x.shape)}) with mask not given (its default is None)"
        probes.append((where, (x,)))
    naming = "name the sub-layers self_attn and ffn, each a ResidualSublayer"
    return compare_modules(expected, got, probes, "layer", naming)


q8 = Question(
    "ch05.q8",
    "An encoder layer from library parts",
    reference=_ReferenceEncoderLayer,
    cases=lambda: [
        Case("pre-LN, d_model=8, n_heads=2, d_ff=32", (8, 2, 32, True), seed=81),
        Case("post-LN, d_model=12, n_heads=3, d_ff=24", (12, 3, 24, False), seed=82),
        Case("norm_first not given (pre-LN), d_model=8, n_heads=4, d_ff=16", (8, 4, 16), seed=83),
    ],
    mistakes=[
        Mistake(
            "the mask not passed to the self-attention",
            _EncoderIgnoresMask,
            "ResidualSublayer hands every argument after x to the sub-layer it wraps: "
            "call the attention sub-layer with (x, mask).",
        ),
        Mistake(
            "the feed-forward network before the attention",
            _EncoderFfnFirst,
            "The order is the paper's: self-attention (tokens exchange information), then the "
            "position-wise network.",
        ),
        Mistake(
            "norm_first ignored (always pre-LN)",
            _EncoderAlwaysPreLN,
            "Pass norm_first on to both ResidualSublayer objects so a post-LN layer can be "
            "built too.",
        ),
        Mistake(
            "a GELU feed-forward network",
            _EncoderGelu,
            "Use PositionwiseFeedForward's default activation, ReLU, as the paper's encoder does.",
        ),
    ],
    hints=[
        "Three library classes do all the work: chapter 4's SelfAttention, this chapter's "
        "PositionwiseFeedForward and ResidualSublayer around each of them.",
        "Name the two wrapped sub-layers self_attn and ffn (the check copies weights by name) "
        "and give both the same norm_first.",
        "forward calls the two wrapped sub-layers one after the other; only the attention "
        "needs the mask.",
    ],
    compare_fn=_compare_encoder_layers,
    kind="build",
    library_note=(
        "tfbook.model.EncoderLayer (chapter 6, later than this module may import); "
        "tests/test_exercise_kinds.py checks that the reference computes the same function"
    ),
    # The layer exercise 5.8 assembles is chapter 6's EncoderLayer: subclassing or calling it
    # would pass every comparison (the watch sees its constructor run).
    forbidden=("tfbook.model.EncoderLayer.__init__",),
)


EXERCISES = ExerciseSet.collect(globals(), "Chapter 5 exercises")
progress = EXERCISES.progress
__all__ = [*EXERCISES.names, "EXERCISES", "progress", "layer_norm_token"]
