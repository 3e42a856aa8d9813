"""Chapter 5 exercises: feed-forward network, GELU, layer normalisation, residual sub-layers,
dropout (chapter 5).

1. a gated feed-forward network, SwiGLU; 2. the derivative of GELU, without autograd;
3. RMSNorm; 4. debugging: a sub-layer whose dropout acts at evaluation time too;
5. inverted dropout; 6. derivation: the widest SwiGLU feed-forward network with no more
parameters than the ReLU one; 7. predict, then run: the mean, std and norm of a LayerNorm
output (``tfbook.norm.LayerNorm`` reveals them);
8. build with the library: the parallel block of GPT-J and PaLM from ``LayerNorm``,
``SelfAttention`` and ``PositionwiseFeedForward``.

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
from tfbook.exercises._compare import adopt_weights, compare, run_module
from tfbook.exercises._engine import (
    Bugs,
    Case,
    ExerciseSet,
    Frozen,
    Mistake,
    Question,
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


# --------------------------------------------------------------------------- q2: GELU's slope


def _reference_gelu_grad(x):
    cdf = 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))  # Phi(x)
    pdf = torch.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)  # phi(x) = Phi'(x)
    return cdf + x * pdf  # product rule on x * Phi(x)


def _gelu_grad_cdf_only(x):
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _gelu_grad_pdf_only(x):
    return torch.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _gelu_grad_unnormalised_pdf(x):
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0))) + x * torch.exp(-0.5 * x * x)


def _gelu_grad_minus(x):
    cdf = 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))
    return cdf - x * torch.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _gelu_grad_no_sqrt2(x):  # the slope of x * 0.5 * (1 + erf(x)), a different curve
    return 0.5 * (1.0 + torch.erf(x)) + x * torch.exp(-x * x) / math.sqrt(math.pi)


def _gelu_grad_tanh(x):  # the slope of the tanh approximation
    c = math.sqrt(2.0 / math.pi)
    th = torch.tanh(c * (x + 0.044715 * x**3))
    return 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * c * (1.0 + 3 * 0.044715 * x * x)


def _gelu_grad_sigmoid_approx(x):  # the slope of x * sigmoid(1.702 x)
    s = torch.sigmoid(1.702 * x)
    return s + 1.702 * x * s * (1.0 - s)


def _gelu_grad_silu(x):  # the slope of SiLU, x * sigmoid(x)
    s = torch.sigmoid(x)
    return s + x * s * (1.0 - s)


def _gelu_grad_float32_constant(x):  # sqrt(2 pi) rounded to float32 first
    cdf = 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))
    return cdf + x * torch.exp(-0.5 * x * x) / torch.tensor(math.sqrt(2.0 * math.pi))


def _gelu_grad_cases():
    g = torch.Generator().manual_seed(20)
    f64 = torch.float64
    return [
        Case("random normal, (4, 6), seed 20", (torch.randn(4, 6, generator=g, dtype=f64),)),
        Case("grid from -4 to 4 in steps of 0.5", (torch.linspace(-4.0, 4.0, 17, dtype=f64),)),
        Case(
            "around the slope's minimum, where it is negative (-3 to -1)",
            (torch.linspace(-3.0, -1.0, 9, dtype=f64),),
        ),
        Case("edge: zeros (the slope is 1/2 there)", (torch.zeros(2, 3, dtype=f64),)),
        Case(
            "large magnitudes: |x| from 9 to 300",
            (torch.tensor([-300.0, -40.0, -9.0, 9.0, 40.0, 300.0], dtype=f64),),
        ),
        Case(
            "random wide (std 3), (2, 3, 5), seed 20",
            (3 * torch.randn(2, 3, 5, generator=g, dtype=f64),),
        ),
    ]


def _library_gelu_grad(x):
    """Autograd through the library's GELU (the student may not use it; the test may)."""
    with torch.enable_grad():  # the check may run under no_grad
        x = x.detach().clone().requires_grad_(True)
        y = PositionwiseFeedForward(1, activation="gelu").activation(x)
        (grad,) = torch.autograd.grad(y.sum(), x)
    return grad


q2 = Question(
    "ch05.q2",
    "The gradient GELU passes back",
    reference=_reference_gelu_grad,
    cases=_gelu_grad_cases,
    mistakes=[
        Mistake(
            "Phi(x) only: the product rule's second term is missing",
            _gelu_grad_cdf_only,
            "GELU(x) = x * Phi(x) is a product of two functions of x: its derivative is "
            "Phi(x) + x * Phi'(x), and Phi'(x) is the normal density phi(x).",
        ),
        Mistake(
            "phi(x) only: the derivative of Phi, not of x * Phi(x)",
            _gelu_grad_pdf_only,
            "Differentiate the product x * Phi(x): Phi(x) * 1 + x * phi(x).",
        ),
        Mistake(
            "the density without its 1 / sqrt(2 pi)",
            _gelu_grad_unnormalised_pdf,
            "The standard normal density is phi(x) = exp(-x^2 / 2) / sqrt(2 pi); without the "
            "factor it does not integrate to 1 and is not the derivative of Phi.",
        ),
        Mistake(
            "Phi(x) - x phi(x): a sign lost",
            _gelu_grad_minus,
            "Both terms of the product rule are added: Phi(x) + x * phi(x). The slope dips "
            "below 0 for negative x because x itself is negative there.",
        ),
        Mistake(
            "erf(x) without dividing x by sqrt(2): the slope of another curve",
            _gelu_grad_no_sqrt2,
            "Phi(x) = 0.5 * (1 + erf(x / sqrt(2))); with erf(x) the curve is the CDF of "
            "N(0, 1/2), and its density exp(-x^2) / sqrt(pi) is not phi.",
        ),
        Mistake(
            "the slope of the tanh approximation",
            _gelu_grad_tanh,
            "The tanh formula only approximates GELU, and its derivative misses the exact one "
            "by about 1e-3: differentiate x * Phi(x) itself.",
        ),
        Mistake(
            "the slope of the sigmoid approximation x * sigmoid(1.702 x)",
            _gelu_grad_sigmoid_approx,
            "x * sigmoid(1.702 x) only approximates GELU, and its slope misses the exact one "
            "by up to about 0.03; the exact GELU uses the normal CDF Phi.",
        ),
        Mistake(
            "the slope of SiLU, x * sigmoid(x)",
            _gelu_grad_silu,
            "SiLU is a different activation: GELU weights x by the normal CDF Phi(x).",
        ),
        Mistake(
            "sqrt(2 pi) as a float32 tensor: 8 digits in a float64 computation",
            _gelu_grad_float32_constant,
            "torch.tensor(math.sqrt(2 * math.pi)) is float32 and is rounded to about 8 digits "
            "before it divides the float64 values; divide by the Python float itself.",
        ),
    ],
    hints=[
        "GELU(x) = x * Phi(x) is a product of x and Phi(x): use the product rule.",
        "The derivative of the normal CDF Phi is the normal density "
        "phi(x) = exp(-x^2 / 2) / sqrt(2 pi).",
        "Evaluate Phi with torch.erf, as for GELU itself, and keep every constant a Python "
        "float so the computation stays in float64.",
    ],
    atol=1e-13,
    rtol=1e-12,
    check_dtype=True,
    kind="implement",
    library=_library_gelu_grad,
    forbidden=(  # "from the formula, not autograd"
        "torch.nn.functional.gelu",
        "aten.gelu",
        "aten.gelu_backward",
        "torch.Tensor.backward",
        "torch.autograd.backward",
        "torch.autograd.grad",
        "torch.autograd.functional.jacobian",
        "torch.autograd.functional.vjp",
        "torch.func.jacrev",
        "torch.func.jacfwd",
        "torch.func.vjp",
        "torch.func.jvp",
        "torch.func.grad",
    ),
)


# --------------------------------------------------------------------------- q3: RMSNorm


def _reference_rms_norm(x, gamma, eps=1e-6):
    mean_square = (x * x).mean(dim=-1, keepdim=True)  # (B, T, 1): one per token, not centred
    return gamma * x / torch.sqrt(mean_square + eps)


def _rms_centred(x, gamma, eps=1e-6):  # LayerNorm without its shift
    mu = x.mean(dim=-1, keepdim=True)
    return gamma * (x - mu) / torch.sqrt(((x - mu) ** 2).mean(dim=-1, keepdim=True) + eps)


def _rms_divided_by_std(x, gamma, eps=1e-6):
    var = x.var(dim=-1, keepdim=True, unbiased=False)
    return gamma * x / torch.sqrt(var + eps)


def _rms_eps_outside(x, gamma, eps=1e-6):
    return gamma * x / ((x * x).mean(dim=-1, keepdim=True).sqrt() + eps)


def _rms_sum_not_mean(x, gamma, eps=1e-6):
    return gamma * x / torch.sqrt((x * x).sum(dim=-1, keepdim=True) + eps)


def _rms_over_d_minus_1(x, gamma, eps=1e-6):
    ms = (x * x).sum(dim=-1, keepdim=True) / (x.shape[-1] - 1)
    return gamma * x / torch.sqrt(ms + eps)


def _rms_mean_abs(x, gamma, eps=1e-6):
    return gamma * x / (x.abs().mean(dim=-1, keepdim=True) + eps)


def _rms_sequence_axes(x, gamma, eps=1e-6):
    return gamma * x / torch.sqrt((x * x).mean(dim=(-2, -1), keepdim=True) + eps)


def _rms_no_gain(x, gamma, eps=1e-6):
    return x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps)


def _rms_one_plus_gain(x, gamma, eps=1e-6):
    return (1.0 + gamma) * x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps)


def _rms_layer_norm_eps(x, gamma, eps=1e-5):  # LayerNorm's default, not RMSNorm's
    return gamma * x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps)


def _rms_cases():
    def gain(d, g):
        return 1.0 + 0.5 * torch.randn(d, generator=g)

    cases = []
    for seed, shape in [(30, (2, 3, 8)), (31, (4, 2, 6))]:
        g = torch.Generator().manual_seed(seed)
        x = 2.0 * torch.randn(shape, generator=g) + 0.5
        cases.append(
            Case(f"random {shape}, eps = 1e-6, seed {seed}", (x, gain(shape[-1], g), 1e-6))
        )
    g = torch.Generator().manual_seed(32)
    small = 1e-3 * torch.randn(2, 3, 6, generator=g)  # mean square about 1e-6: eps matters
    cases.append(
        Case("eps not given (its default is 1e-6), entries near 1e-3", (small, gain(6, g)))
    )
    cases.append(
        Case(
            "eps = 0.1 given by name, entries near 0.3",
            (0.3 * torch.randn(1, 4, 5, generator=g), gain(5, g)),
            {"eps": 0.1},
        )
    )
    far = 1e4 + 10.0 * torch.randn(2, 2, 8, generator=g)  # mean 10^4: centring would matter
    cases.append(Case("large entries with mean 10^4, eps not given", (far, gain(8, g))))
    const = torch.full((1, 2, 4), -3.0)
    cases.append(Case("edge: a constant vector of -3", (const, torch.arange(1.0, 5.0), 1e-6)))
    one = torch.tensor([[[2.0], [-0.5], [1e-3]]])
    cases.append(Case("edge: d = 1", (one, torch.tensor([1.5]), 1e-6)))
    x64 = torch.randn(2, 3, 7, generator=g, dtype=torch.float64)
    cases.append(Case("float64 input", (x64, gain(7, g).double(), 1e-6)))
    return cases


q3 = Question(
    "ch05.q3",
    "RMSNorm: normalising without the mean",
    reference=_reference_rms_norm,
    cases=_rms_cases,
    mistakes=[
        Mistake(
            "the mean subtracted: that is LayerNorm without its shift",
            _rms_centred,
            "RMSNorm does not centre: divide x itself by the root of the mean of x^2 "
            "(plus eps), and never subtract the mean.",
        ),
        Mistake(
            "divided by the standard deviation instead of the root mean square",
            _rms_divided_by_std,
            "The standard deviation measures the spread around the mean; RMSNorm divides by "
            "sqrt(mean(x^2) + eps), which is not centred.",
        ),
        Mistake(
            "eps added to the root instead of under it",
            _rms_eps_outside,
            "Divide by sqrt(mean(x^2) + eps), not by sqrt(mean(x^2)) + eps; the two differ "
            "when the mean square is close to eps.",
        ),
        Mistake(
            "the root of the sum of squares (the norm), not of their mean",
            _rms_sum_not_mean,
            "Divide the sum of squares by d: the norm of a vector grows with its length, the "
            "root mean square does not.",
        ),
        Mistake(
            "sum of squares divided by d - 1",
            _rms_over_d_minus_1,
            "The mean square divides by d, the number of features; there is no mean "
            "estimated here that would call for d - 1.",
        ),
        Mistake(
            "the mean absolute value instead of the root mean square",
            _rms_mean_abs,
            "Square, average, add eps, take the square root: mean(|x|) is a different size.",
        ),
        Mistake(
            "one statistic per sequence, over (T, d)",
            _rms_sequence_axes,
            "Each token vector is normalised on its own: average over the last axis only.",
        ),
        Mistake(
            "gamma not applied",
            _rms_no_gain,
            "After dividing by the root mean square, multiply by gamma, feature by feature.",
        ),
        Mistake(
            "scaled by 1 + gamma",
            _rms_one_plus_gain,
            "Some libraries store gamma - 1 and add 1 back; here gamma is the gain itself: "
            "multiply by gamma.",
        ),
        Mistake(
            "eps defaults to 1e-5 (LayerNorm's), not 1e-6",
            _rms_layer_norm_eps,
            "The signature is my_rms_norm(x, gamma, eps=1e-6): with eps left out the "
            "function must use 1e-6.",
        ),
    ],
    hints=[
        "Compute one number per token: the mean of x^2 over the last axis, with keepdim=True "
        "so it broadcasts back over the features.",
        "Add eps to that mean before the square root, divide x (not x minus anything) by the "
        "root, then apply gamma.",
    ],
    atol=1e-6,
    rtol=1e-5,
    check_dtype=True,
    kind="implement",
    library_note="none: tfbook.norm has LayerNorm only; tests compare with torch.nn.RMSNorm",
    forbidden=(
        "torch.nn.functional.rms_norm",
        "torch.rms_norm",
        "torch.nn.RMSNorm.forward",
        "torch.nn.functional.layer_norm",
        "torch.layer_norm",
        "tfbook.norm.LayerNorm",
        # a layer norm of (x, -x) side by side is an RMSNorm of x: the operations are refused
        "aten.native_layer_norm",
        "aten.native_group_norm",
        "aten.native_batch_norm",
    ),
)


# --------------------------------------------------------------------------- q4: debug


def _sublayer_with_bugs(x, norm, ffn, p, training, *, always_drops=True, rescales_eval=True):
    """The given code of exercise 5.4, each bug behind a switch (all False: the fixed code)."""
    branch = ffn(norm(x))
    branch = F.dropout(branch, p) if always_drops else F.dropout(branch, p, training=training)
    if rescales_eval and not training:
        branch = branch * (1 - p)  # the original dropout paper's test-time scaling
    return x + branch


def _reference_eval_sublayer(x, norm, ffn, p, training):
    branch = F.dropout(ffn(norm(x)), p, training=training)  # inverted: nothing to do at eval
    return x + branch


def _eval_no_dropout(x, norm, ffn, p, training):
    return x + ffn(norm(x))  # dropout removed, in training too


def _eval_dropout_on_sum(x, norm, ffn, p, training):
    return F.dropout(x + ffn(norm(x)), p, training=training)


def _eval_scaled_up(x, norm, ffn, p, training):
    branch = F.dropout(ffn(norm(x)), p, training=training)
    return x + (branch if training else branch / (1 - p))


def _eval_cases():
    cases = []
    for seed, (b, t, d), p, training in [
        (0, (2, 4, 8), 0.25, True),
        (1, (1, 6, 6), 0.5, False),
        (2, (3, 3, 4), 0.9, False),
        (3, (2, 2, 8), 0.0, False),
        (4, (2, 5, 4), 0.1, True),
    ]:
        g = torch.Generator().manual_seed(40 + seed)
        norm = nn.LayerNorm(d)
        ffn = PositionwiseFeedForward(d, 2 * d)
        with torch.no_grad():
            norm.weight.copy_(1.0 + 0.3 * torch.randn(d, generator=g))
            norm.bias.copy_(0.3 * torch.randn(d, generator=g))
            for param in ffn.parameters():
                param.copy_(torch.randn(param.shape, generator=g) / math.sqrt(d))
        x = 3.0 * torch.randn(b, t, d, generator=g) + 1.0
        args = (x, Frozen(f"LayerNorm({d})", norm), Frozen(f"FFN({d}, {2 * d})", ffn), p, training)
        mode = "training" if training else "evaluation"
        cases.append(Case(f"{mode}, p = {p}, seed {seed}", args, seed=100 + seed))
    return cases


def _library_eval_sublayer(x, norm, ffn, p, training):
    norm, ffn = norm.fn, ffn.fn  # the cases pass Frozen modules
    block = ResidualSublayer(x.shape[-1], ffn, norm_first=True, dropout=p).to(x.dtype)
    block.norm.load_state_dict(norm.state_dict())
    return block.train(training)(x)


q4 = Question(
    "ch05.q4",
    "Fix a sub-layer that drops out at evaluation time",
    reference=_reference_eval_sublayer,
    cases=_eval_cases,
    mistakes=[
        Mistake(
            "dropout removed altogether",
            _eval_no_dropout,
            "Keep the dropout in training; only at evaluation must the branch pass unchanged: "
            "F.dropout(..., p, training=training).",
        ),
        Mistake(
            "dropout applied to the whole sum",
            _eval_dropout_on_sum,
            "Dropout belongs on the sub-layer's output only, before the residual addition.",
        ),
        Mistake(
            "the branch divided by 1 - p at evaluation",
            _eval_scaled_up,
            "F.dropout already divides the kept values by 1 - p in training (inverted "
            "dropout); at evaluation the branch passes as it is, with no scaling at all.",
        ),
    ],
    bugs=Bugs(
        _sublayer_with_bugs,
        {
            "always_drops": (
                "dropout still drops entries at evaluation (F.dropout's training argument "
                "defaults to True)",
                "Pass the mode on: F.dropout(branch, p, training=training).",
            ),
            "rescales_eval": (
                "the branch is still multiplied by 1 - p at evaluation",
                "Inverted dropout already scaled the training values up by 1 / (1 - p); remove "
                "the test-time scaling.",
            ),
        },
    ),
    hints=[
        "Read F.dropout's signature: which value does its training argument take when the "
        "call does not give one?",
        "torch.nn.functional.dropout is inverted dropout: in training it zeroes entries and "
        "divides the rest by 1 - p, so the expected value needs no correction later.",
    ],
    kind="debug",
    library=_library_eval_sublayer,
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
    # three matrices with biases: 3 d_model m + 2 m + d_model
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
        "the SwiGLU network 3 d_model m for a hidden width m.",
        "The largest integer m with 3 d_model m <= budget is an integer division; then go down "
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


class _ReferenceParallelBlock(nn.Module):
    """The parallel block of GPT-J and PaLM: attention and feed-forward network read the same
    normalised input, side by side, and both add to the residual stream."""

    def __init__(self, d_model, n_heads, d_ff=None):
        super().__init__()
        self.norm = LayerNorm(d_model)  # one LayerNorm, shared by both branches
        self.attn = SelfAttention(d_model, n_heads)
        self.ffn = PositionwiseFeedForward(d_model, d_ff, activation="gelu")

    def forward(self, x, mask=None):
        h = self.norm(x)  # (B, T, d_model), read by both branches
        return x + self.attn(h, mask) + self.ffn(h)  # (B, T, d_model)


class _ParallelSequential(_ReferenceParallelBlock):
    def forward(self, x, mask=None):
        x = x + self.attn(self.norm(x), mask)
        return x + self.ffn(self.norm(x))


class _ParallelMaskIgnored(_ReferenceParallelBlock):
    def forward(self, x, mask=None):
        h = self.norm(x)
        return x + self.attn(h) + self.ffn(h)


class _ParallelFfnOnRaw(_ReferenceParallelBlock):
    def forward(self, x, mask=None):
        return x + self.attn(self.norm(x), mask) + self.ffn(x)


class _ParallelAttnOnRaw(_ReferenceParallelBlock):
    def forward(self, x, mask=None):
        return x + self.attn(x, mask) + self.ffn(self.norm(x))


class _ParallelNoResidual(_ReferenceParallelBlock):
    def forward(self, x, mask=None):
        h = self.norm(x)
        return self.attn(h, mask) + self.ffn(h)


class _ParallelPostNorm(_ReferenceParallelBlock):
    def forward(self, x, mask=None):
        return self.norm(x + self.attn(x, mask) + self.ffn(x))


class _ParallelRelu(_ReferenceParallelBlock):
    def __init__(self, d_model, n_heads, d_ff=None):
        super().__init__(d_model, n_heads, d_ff)
        self.ffn = PositionwiseFeedForward(d_model, d_ff)  # the default activation, ReLU


def _compare_parallel_blocks(expected, got) -> str | None:
    """Give the answer the expected block's weights and compare them with and without masks,
    in evaluation mode and in training mode (the block has no dropout, so the two agree)."""
    problem = adopt_weights(
        expected,
        got,
        "block",
        "name the parts norm (LayerNorm), attn (SelfAttention) and ffn (PositionwiseFeedForward)",
    )
    if problem:
        return problem
    d_model = expected.state_dict()["norm.weight"].shape[0]
    g = torch.Generator().manual_seed(580 + d_model)
    probes = []
    for b, t in [(2, 5), (3, 4)]:
        x = 3.0 * torch.randn(b, t, d_model, generator=g) + 1.0
        lengths = torch.tensor([t] + [t - 2] * (b - 1))
        keys_real = (torch.arange(t)[None, :] < lengths[:, None])[:, None, :]  # (B, 1, T)
        causal = torch.ones(t, t, dtype=torch.bool).tril()
        for mask, what in ((keys_real, "padding mask (B, 1, T)"), (causal, "causal mask (T, T)")):
            probes.append((f"forward(x {tuple(x.shape)}, {what})", (x, mask), False))
        where = f"forward(x {tuple(x.shape)}) with mask not given (its default is None)"
        probes.append((where, (x,), False))
    probes.append((f"in training mode, {probes[0][0]}", probes[0][1], True))
    for where, args, training in probes:
        out_expected, err_expected = _run_block(expected, args, training)
        out_got, err_got = _run_block(got, args, training)
        if err_expected or err_got:
            if err_expected and err_got and err_expected.split(":")[0] == err_got.split(":")[0]:
                continue  # both fail the same way (a known mistake being recognised)
            return (
                f"{where} raised {err_got}" if err_got else f"{where} should raise {err_expected}"
            )
        diff = compare(out_expected, out_got, atol=1e-6, rtol=1e-5, where=where)
        if diff:
            return diff
    return None


def _run_block(module, args, training):
    """``(output, None)`` of the module in the given mode without gradients, or
    ``(None, "Type: message")``; the same seed for both modules, in case one draws."""
    if not training:
        return run_module(module, *args)
    torch.manual_seed(0)
    try:
        with torch.no_grad():
            return module.train()(*args), None
    except Exception as exc:  # noqa: BLE001 - the student's bug, reported as text
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return None, f"{type(exc).__name__}: {message}"


q8 = Question(
    "ch05.q8",
    "A parallel block from library parts",
    reference=_ReferenceParallelBlock,
    cases=lambda: [
        Case("d_model=8, n_heads=2, d_ff=32", (8, 2, 32), seed=81),
        Case("d_model=12, n_heads=3, d_ff=6 (narrower than d_model)", (12, 3, 6), seed=82),
        Case(
            "d_ff not given (the network's default, 4 * d_model), d_model=8, n_heads=4",
            (8, 4),
            seed=83,
        ),
    ],
    mistakes=[
        Mistake(
            "the ordinary pre-LN layer: the feed-forward network reads the attention's result",
            _ParallelSequential,
            "In the parallel block both branches read the same normalised input LN(x) and "
            "their outputs are added together: x + attn(LN(x)) + ffn(LN(x)).",
        ),
        Mistake(
            "the mask not passed to the attention",
            _ParallelMaskIgnored,
            "Call the attention with (h, mask); only the attention needs the mask.",
        ),
        Mistake(
            "the feed-forward network reads x, not LN(x)",
            _ParallelFfnOnRaw,
            "Both branches read the normalised input: compute h = norm(x) once and give it to "
            "the attention and to the feed-forward network.",
        ),
        Mistake(
            "the attention reads x, not LN(x)",
            _ParallelAttnOnRaw,
            "Both branches read the normalised input h = norm(x), the attention too.",
        ),
        Mistake(
            "no residual: x is not added back",
            _ParallelNoResidual,
            "The block adds both branches to its input: x + attn(h, mask) + ffn(h).",
        ),
        Mistake(
            "LayerNorm after the sum (post-LN) instead of before the branches",
            _ParallelPostNorm,
            "The block is pre-LN: normalise the input of the branches, and leave the sum "
            "x + ... unnormalised.",
        ),
        Mistake(
            "a ReLU feed-forward network",
            _ParallelRelu,
            "The block's network uses GELU: PositionwiseFeedForward(d_model, d_ff, "
            'activation="gelu").',
        ),
    ],
    hints=[
        "Three library classes: LayerNorm (chapter 5), SelfAttention (chapter 4) and "
        'PositionwiseFeedForward with activation="gelu"; the names norm, attn and ffn make '
        "the parameter names the check copies.",
        "forward normalises x once; the two branches both read that result, and the block "
        "returns x plus both branch outputs.",
    ],
    compare_fn=_compare_parallel_blocks,
    kind="build",
    library_note="none: tfbook's layers (chapter 6) run their sub-layers one after the other",
)


EXERCISES = ExerciseSet.collect(globals(), "Chapter 5 exercises")
progress = EXERCISES.progress
__all__ = [*EXERCISES.names, "EXERCISES", "progress", "layer_norm_token"]
