"""Graded exercises of chapter 9, "Fine-tuning a pre-trained Transformer".

1. predict, then run: what LoRA, a frozen body and a task head train on GPT-2 small
   (trainable parameters, their share, AdamW's state in bytes, the size after merging, and
   how much a fresh adapter changes the logits); ``tfbook.finetune`` reveals them;
2. derivation: the gradients of a LoRA adapter's ``A`` and ``B`` from the gradient of the
   layer's output, without autograd (and why a fresh adapter's ``A`` gets none);
3. debugging: folding the adapters of a saved state dict into plain weights, for a model
   without LoRA code, with three bugs;
4. build with the library: precision, recall and F1 of exact name spans for the tagging task,
   the gold spans from ``tfbook.tasks.tag_line`` (the library's ``name_f1`` scores characters);
5. pooling over the real tokens of any padding mask (left padding, holes), mean or last,
   without a loop over positions.

Usage: ``from tfbook.exercises import ch09 as ex; ex.q1.check(predicted)``.

Public API: ``q1`` .. ``q5``, ``EXERCISES``, ``progress()``; ``TINY_LORA_GPT``, the
configuration of the small GPT whose adapted state dicts exercise 9.3 hands out, and
``LORA_TARGETS``, the layers adapted there.
"""

from __future__ import annotations

import math

import torch

from tfbook.exercises._engine import Bugs, Case, ExerciseSet, Mistake, Question
from tfbook.finetune import SequenceClassifier, add_lora, merge_lora, trainable_parameters
from tfbook.model import GPT, PUBLISHED, TransformerConfig, meta_model
from tfbook.tasks import tag_line

# --------------------------------------------------------------------------- q1: predict

#: GPT-2 small's sizes, as the predictions of exercise 9.1 need them.
_GPT2 = {"d_model": 768, "d_ff": 3072, "n_layers": 12}
_GPT2_PARAMETERS = 124_439_808  # tfbook.model.PUBLISHED["gpt2-small"], output head tied

#: What exercise 9.1 asks for, in the order of the cases.
PREDICT_KINDS = (
    "trainable parameters: LoRA r=8 on q_proj and v_proj",
    "trainable share: LoRA r=8 on q_proj and v_proj",
    "trainable parameters: LoRA r=8 on linear1 and linear2",
    "parameters after merge_lora: LoRA r=8 on q_proj and v_proj",
    "trainable parameters: frozen body, 3-class head",
    "AdamW state bytes: full fine-tuning, 3-class head",
    "AdamW state bytes: LoRA r=8 on q_proj and v_proj, 3-class head",
    "largest change of a logit: right after add_lora",
)


def _predictions(
    *,
    per_layer=lambda d_in, d_out, r: r * (d_in + d_out),
    layers=12,
    share_of_original=False,
    merged_keeps_adapters=False,
    head_bias=True,
    ffn_square=False,
    moments=2,
    adam_over_frozen=False,
):
    """Every answer of exercise 9.1, with the reference's rules unless a keyword changes one."""
    d, d_ff, r = _GPT2["d_model"], _GPT2["d_ff"], 8
    attention = layers * 2 * per_layer(d, d, r)  # q_proj and v_proj: d_model -> d_model
    ffn_out = d if ffn_square else d_ff
    ffn = layers * (per_layer(d, ffn_out, r) + per_layer(ffn_out, d, r))
    head = d * 3 + (3 if head_bias else 0)  # nn.Linear(d_model, 3)
    total_with_adapters = _GPT2_PARAMETERS + attention
    share = attention / (_GPT2_PARAMETERS if share_of_original else total_with_adapters)
    merged = total_with_adapters if merged_keeps_adapters else _GPT2_PARAMETERS
    per_number = 4 * moments  # float32 moments of AdamW, for each trained parameter
    lora_trained = attention + head + (_GPT2_PARAMETERS if adam_over_frozen else 0)
    return dict(
        zip(
            PREDICT_KINDS,
            (
                attention,
                share,
                ffn,
                merged,
                head,
                per_number * (_GPT2_PARAMETERS + head),
                per_number * lora_trained,
                0.0,  # B starts at zero: the adapted model is the pre-trained one
            ),
            strict=True,
        )
    )


def _reference_predicted(kind):
    """The numbers of exercise 9.1, worked out by hand: r (d_in + d_out) per adapted layer."""
    return _predictions()[kind]


def _predicted_a_only(kind):
    return _predictions(per_layer=lambda d_in, d_out, r: r * d_in)[kind]


def _predicted_full_matrix(kind):
    return _predictions(per_layer=lambda d_in, d_out, r: d_in * d_out)[kind]


def _predicted_one_layer(kind):
    return _predictions(layers=1)[kind]


def _predicted_share_of_original(kind):
    return _predictions(share_of_original=True)[kind]


def _predicted_merged_keeps_adapters(kind):
    return _predictions(merged_keeps_adapters=True)[kind]


def _predicted_ffn_square(kind):
    return _predictions(ffn_square=True)[kind]


def _predicted_head_without_bias(kind):
    return _predictions(head_bias=False)[kind]


def _predicted_one_moment(kind):
    return _predictions(moments=1)[kind]


def _predicted_adam_over_frozen(kind):
    return _predictions(adam_over_frozen=True)[kind]


def _predict_cases():
    return [Case(kind, (kind,)) for kind in PREDICT_KINDS]


def _gpt2_small():
    """GPT-2 small on the meta device: every parameter's shape, no memory."""
    return meta_model(*PUBLISHED["gpt2-small"][:2])


def _library_predicted(kind):
    """Each number measured with tfbook.finetune on GPT-2 small (meta device)."""
    if kind.startswith("largest change"):
        torch.manual_seed(0)
        gpt = GPT(TransformerConfig(vocab_size=20, d_model=16, n_heads=2, d_ff=32, n_layers=2))
        gpt.eval()  # no dropout: the same function twice
        ids = torch.randint(0, 20, (2, 7))
        with torch.no_grad():
            before = gpt(ids)
            add_lora(gpt, ("q_proj", "k_proj", "v_proj", "out_proj"), r=4, alpha=8)
            return (gpt(ids) - before).abs().max().item()
    if "3-class head" in kind:
        model = SequenceClassifier(_gpt2_small(), n_classes=3)
        if "LoRA" in kind:
            add_lora(model.body, ("q_proj", "v_proj"), r=8, alpha=16)
        elif "frozen body" in kind:
            model.body.requires_grad_(False)
        trainable = trainable_parameters(model)[0]
        return 8 * trainable if "bytes" in kind else trainable  # AdamW: two float32 each
    model = _gpt2_small()
    targets = ("linear1", "linear2") if "linear1" in kind else ("q_proj", "v_proj")
    add_lora(model, targets, r=8, alpha=16)
    trainable, total = trainable_parameters(model)
    if kind.startswith("parameters after merge_lora"):
        return trainable_parameters(merge_lora(model))[1]
    return trainable / total if kind.startswith("trainable share") else trainable


q1 = Question(
    "ch09.q1",
    "Predict: what LoRA trains on GPT-2 small",
    reference=_reference_predicted,
    cases=_predict_cases,
    mistakes=[
        Mistake(
            "only A counted: r d_in per adapted layer",
            _predicted_a_only,
            "An adapter has two matrices: A, r x d_in, and B, d_out x r, so r (d_in + d_out) "
            "numbers per adapted layer.",
        ),
        Mistake(
            "the full d_in x d_out matrix counted for each adapted layer",
            _predicted_full_matrix,
            "The adapter trains the two thin factors A (r x d_in) and B (d_out x r), not the "
            "d_out x d_in update B A they multiply to.",
        ),
        Mistake(
            "one layer counted instead of all 12",
            _predicted_one_layer,
            "add_lora wraps every layer whose name ends in the target: q_proj and v_proj in "
            "each of GPT-2 small's 12 decoder layers.",
        ),
        Mistake(
            "the share taken of the original parameter count",
            _predicted_share_of_original,
            "After add_lora the model holds its 124,439,808 frozen parameters and the "
            "adapters: divide by their sum, as trainable_parameters does.",
        ),
        Mistake(
            "the merged model still counts the adapters",
            _predicted_merged_keeps_adapters,
            "merge_lora folds W + (alpha / r) B A into one matrix of the original shape and "
            "drops A and B: the merged model is exactly as big as GPT-2 small.",
        ),
        Mistake(
            "linear1 and linear2 counted as d_model x d_model layers",
            _predicted_ffn_square,
            "linear1 maps d_model = 768 to d_ff = 3072 and linear2 maps 3072 back to 768: "
            "each costs r (768 + 3072).",
        ),
        Mistake(
            "the head's bias left out",
            _predicted_head_without_bias,
            "The head is nn.Linear(d_model, 3): a 3 x 768 weight and a bias of 3.",
        ),
        Mistake(
            "one AdamW moment per parameter instead of two",
            _predicted_one_moment,
            "AdamW keeps two float32 numbers for each trained parameter (exp_avg and "
            "exp_avg_sq): 8 bytes each.",
        ),
        Mistake(
            "AdamW state counted for the frozen weights too",
            _predicted_adam_over_frozen,
            "The optimizer is given only the parameters that require gradients: with LoRA, "
            "the adapters and the head. That is where LoRA saves memory.",
        ),
    ],
    hints=[
        "Write down the shapes of A and B for a layer nn.Linear(d_in, d_out), then find "
        "which layers of GPT-2 small are called q_proj, v_proj, linear1 and linear2, and how "
        "big each is.",
        "The share divides by every parameter of the adapted model, frozen ones included. "
        "merge_lora replaces each adapted layer by a plain layer of its original shape.",
        "AdamW's state is per trained parameter only. What does the adapted layer compute "
        "before its first update, when B is all zeros?",
    ],
    # An answer off by one parameter differs by more than 1e-9 (relative); the share of the
    # original count differs by 2.4e-3. The task text states the tolerance.
    atol=1e-12,
    rtol=1e-9,
    kind="predict",
    library=_library_predicted,
)


# --------------------------------------------------------------------------- q2: derive


def _reference_lora_grads(x, grad_y, A, B, alpha):
    """dL/dA and dL/dB of y = x W^T + b + (alpha / r) x A^T B^T, given dL/dy."""
    scale = alpha / A.shape[0]  # alpha / r
    X = x.reshape(-1, x.shape[-1])  # (N, d_in): every position of every sequence
    G = grad_y.reshape(-1, grad_y.shape[-1])  # (N, d_out)
    H = X @ A.T  # (N, r): the adapter's hidden values
    grad_B = scale * G.T @ H  # (d_out, r): dL/dB = s G^T (X A^T)
    grad_A = scale * (G @ B).T @ X  # (r, d_in): dL/dA = s B^T G^T X, zero while B = 0
    return grad_A, grad_B


def _grads_with(x, grad_y, A, B, alpha, *, scale=None, mean=False, a_zero=False):
    s = alpha / A.shape[0] if scale is None else scale(alpha, A.shape[0])
    X, G = x.reshape(-1, x.shape[-1]), grad_y.reshape(-1, grad_y.shape[-1])
    grad_B, grad_A = s * G.T @ (X @ A.T), s * (G @ B).T @ X
    if mean:
        grad_A, grad_B = grad_A / X.shape[0], grad_B / X.shape[0]
    if a_zero:
        grad_A = torch.zeros_like(A)
    return grad_A, grad_B


def _grads_unscaled(x, grad_y, A, B, alpha):
    return _grads_with(x, grad_y, A, B, alpha, scale=lambda alpha, r: 1.0)


def _grads_scaled_by_alpha(x, grad_y, A, B, alpha):
    return _grads_with(x, grad_y, A, B, alpha, scale=lambda alpha, r: alpha)


def _grads_scaled_r_over_alpha(x, grad_y, A, B, alpha):
    return _grads_with(x, grad_y, A, B, alpha, scale=lambda alpha, r: r / alpha)


def _grads_mean(x, grad_y, A, B, alpha):
    return _grads_with(x, grad_y, A, B, alpha, mean=True)


def _grads_a_frozen(x, grad_y, A, B, alpha):
    return _grads_with(x, grad_y, A, B, alpha, a_zero=True)


def _lora_grad_case(name, seed, lead, d_in, d_out, r, alpha, *, scale=1.0, fresh=False):
    g = torch.Generator().manual_seed(seed)
    x = scale * torch.randn(*lead, d_in, generator=g, dtype=torch.float64)
    grad_y = torch.randn(*lead, d_out, generator=g, dtype=torch.float64)
    A = torch.randn(r, d_in, generator=g, dtype=torch.float64) / math.sqrt(d_in)
    B = torch.zeros(d_out, r, dtype=torch.float64)
    if not fresh:
        B = 0.1 * torch.randn(d_out, r, generator=g, dtype=torch.float64)
    return Case(name, (x, grad_y, A, B, alpha))


def _lora_grad_cases():
    return [
        _lora_grad_case(
            "x (5, 6), d_out 4, r 2, alpha 4 (a trained adapter)", 90, (5,), 6, 4, 2, 4
        ),
        _lora_grad_case(
            "x (2, 3, 8) (a batch of sequences), d_out 5, r 3, alpha 16", 91, (2, 3), 8, 5, 3, 16
        ),
        _lora_grad_case(
            "a fresh adapter (B = 0), x (4, 6), d_out 6, r 2, alpha 8",
            92,
            (4,),
            6,
            6,
            2,
            8,
            fresh=True,
        ),
        _lora_grad_case("r 1, alpha 1, x (3, 2, 5), d_out 7", 93, (3, 2), 5, 7, 1, 1),
        _lora_grad_case(
            "four axes: x (2, 2, 3, 5), d_out 4, r 2, alpha 3", 88, (2, 2, 3), 5, 4, 2, 3
        ),
        _lora_grad_case(
            "GPT-2 small's width: x (4, 64, 768), d_out 768, r 8, alpha 16",
            89,
            (4, 64),
            768,
            768,
            8,
            16,
        ),
        _lora_grad_case(
            "x in the thousands (2, 4, 6), d_out 3, r 2, alpha 2", 94, (2, 4), 6, 3, 2, 2, scale=3e3
        ),
    ]


def _library_lora_grads(x, grad_y, A, B, alpha):
    """Autograd through tfbook.finetune.LoRALinear carrying A and B."""
    from tfbook.finetune import LoRALinear

    r, d_in = A.shape
    layer = LoRALinear(torch.nn.Linear(d_in, B.shape[0]).double(), r=r, alpha=alpha)
    with torch.no_grad():
        layer.lora_A.copy_(A)
        layer.lora_B.copy_(B)
    with torch.enable_grad():
        layer(x).backward(grad_y)
    return layer.lora_A.grad, layer.lora_B.grad


q2 = Question(
    "ch09.q2",
    "The gradients of a LoRA adapter, derived",
    reference=_reference_lora_grads,
    cases=_lora_grad_cases,
    mistakes=[
        Mistake(
            "the scale alpha / r left out",
            _grads_unscaled,
            "The update term is (alpha / r) x A^T B^T: the factor alpha / r multiplies both "
            "gradients.",
        ),
        Mistake(
            "scaled by alpha instead of alpha / r",
            _grads_scaled_by_alpha,
            "LoRA scales the update by alpha / r (r = A.shape[0]), so that changing r does "
            "not change the size of the update at the start.",
        ),
        Mistake(
            "scaled by r / alpha",
            _grads_scaled_r_over_alpha,
            "The factor is alpha / r, alpha on top: alpha = 2 r doubles the update.",
        ),
        Mistake(
            "the gradients averaged over positions instead of summed",
            _grads_mean,
            "A and B are shared by every position: each position adds its contribution to the "
            "gradient, so sum over them (a mean, if any, is already inside grad_y).",
        ),
        Mistake(
            "A given no gradient",
            _grads_a_frozen,
            "A is trained too: dL/dA = (alpha / r) B^T G^T X. It is zero only while B is "
            "zero, at the first step.",
        ),
    ],
    hints=[
        "Flatten every leading axis: X = x.reshape(-1, d_in), G = grad_y.reshape(-1, d_out). "
        "Then y = ... + s (X A^T) B^T with s = alpha / r and H = X A^T of shape (N, r).",
        "For a product Y = H M^T, dL/dM = G^T H and dL/dH = G M. Apply it once for B, then "
        "once more through H = X A^T for A.",
        "Check the shapes: dL/dA has A's shape (r, d_in), dL/dB has B's shape (d_out, r).",
    ],
    # float64 inputs: a correct answer agrees to ~1e-15; the task text states rtol 1e-9.
    atol=1e-12,
    rtol=1e-9,
    check_dtype=True,
    # The formula takes milliseconds at GPT-2's width; perturbing each of the 12,288 entries
    # of A and B (finite differences) takes far longer than this.
    timeout=5.0,
    kind="derive",
    library=_library_lora_grads,
    forbidden=(
        "torch.Tensor.backward",
        "torch.autograd.backward",
        "torch.autograd.grad",
        "torch.func.grad",
        "torch.func.vjp",
        "torch.func.jacrev",
        "torch.func.jacfwd",
        "torch.func.jvp",
        "torch.autograd.functional.vjp",
        "torch.autograd.functional.jacobian",
    ),
)


# --------------------------------------------------------------------------- q3: debug

#: The small GPT whose adapted state dicts exercise 9.3 hands out (float64), as plain data.
TINY_LORA_GPT = {
    "vocab_size": 12,
    "d_model": 8,
    "n_heads": 2,
    "d_ff": 16,
    "n_layers": 2,
    "max_len": 8,
    "dropout": 0.0,
    "norm_first": True,
    "positional": "learned",
}

#: The layers adapted in exercise 9.3's cases: attention only, then every linear layer.
LORA_TARGETS = (
    ("q_proj", "v_proj"),
    ("q_proj", "k_proj", "v_proj", "out_proj", "linear1", "linear2"),
)


def _reference_merge(state, alpha):
    """A plain state dict: each adapter folded into its layer, W + (alpha / r) B A."""
    merged = {}
    for key, value in state.items():
        if key.endswith((".lora_A", ".lora_B")):
            continue  # folded into the weight below
        prefix, base, name = key.rpartition(".base.")
        if not base:  # not part of an adapted layer: kept as it is
            merged[key] = value
        elif name == "weight":
            A, B = state[prefix + ".lora_A"], state[prefix + ".lora_B"]
            merged[prefix + ".weight"] = value + (alpha / A.shape[0]) * (B @ A)  # (d_out, d_in)
        else:
            merged[prefix + "." + name] = value  # the bias is unchanged
    return merged


def _merge_with_bugs(state, alpha, *, scale, orientation, dropped):
    """The given merge with each of its three bugs there (True) or fixed (False)."""
    merged = {}
    for key, value in state.items():
        if key.endswith(".lora_A"):
            prefix = key[: -len(".lora_A")]
            A, B = value, state[prefix + ".lora_B"]
            s = alpha if scale else alpha / A.shape[0]
            delta = A.T @ B.T if orientation else B @ A
            merged[prefix + ".weight"] = state[prefix + ".base.weight"] + s * delta
            if prefix + ".base.bias" in state:
                merged[prefix + ".bias"] = state[prefix + ".base.bias"]
        elif not dropped and ".base." not in key and not key.endswith(".lora_B"):
            merged[key] = value
    return merged


def _merge_as_given(state, alpha):
    return _merge_with_bugs(state, alpha, scale=True, orientation=True, dropped=True)


def _merge_transposed(state, alpha):
    return _merge_with_bugs(state, alpha, scale=False, orientation=True, dropped=False)


def _merge_scale_alpha(state, alpha):
    return _merge_with_bugs(state, alpha, scale=True, orientation=False, dropped=False)


def _merge_keeps_adapter_keys(state, alpha):
    merged = _reference_merge(state, alpha)
    merged.update({k: v for k, v in state.items() if k.endswith((".lora_A", ".lora_B"))})
    return merged


def _merge_rank_from_width(state, alpha):
    merged = _reference_merge(state, alpha)
    for key in [k for k in state if k.endswith(".lora_A")]:
        prefix = key[: -len(".lora_A")]
        A, B = state[key], state[prefix + ".lora_B"]
        merged[prefix + ".weight"] = state[prefix + ".base.weight"] + alpha / B.shape[0] * (B @ A)
    return merged


def _adapted_state(seed, targets, r, alpha):
    """The state dict of TINY_LORA_GPT (float64) after add_lora and a pretend training run:
    every A and B random, so every adapter changes its layer."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT(TransformerConfig(**TINY_LORA_GPT)).double()
        add_lora(model, targets, r=r, alpha=alpha)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith(("lora_A", "lora_B")):
                    p.copy_(0.3 * torch.randn_like(p))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _merge_cases():
    return [
        Case(
            "q_proj and v_proj adapted (square 8 x 8), r 2, alpha 8",
            (_adapted_state(95, LORA_TARGETS[0], 2, 8), 8.0),
        ),
        Case(
            "every linear layer adapted (linear1 is 8 -> 16, linear2 16 -> 8), r 4, alpha 4",
            (_adapted_state(96, LORA_TARGETS[1], 4, 4), 4.0),
        ),
        Case("r 1, alpha 0.5, out_proj only", (_adapted_state(97, ("out_proj",), 1, 0.5), 0.5)),
    ]


def _library_merge(state, alpha):
    """Load ``state`` into an adapted TINY_LORA_GPT, merge_lora it, return its state dict."""
    model = GPT(TransformerConfig(**TINY_LORA_GPT)).double()
    names = tuple(sorted(k[: -len(".lora_A")] for k in state if k.endswith(".lora_A")))
    r = state[names[0] + ".lora_A"].shape[0]
    add_lora(model, names, r=r, alpha=alpha)  # the full names: exactly these layers
    model.load_state_dict(state)
    return {k: v.detach().clone() for k, v in merge_lora(model).state_dict().items()}


q3 = Question(
    "ch09.q3",
    "Debug: fold the adapters of a saved state dict",
    reference=_reference_merge,
    cases=_merge_cases,
    mistakes=[
        Mistake(
            "the adapters' A and B kept in the merged state dict",
            _merge_keeps_adapter_keys,
            "A plain model has no lora_A or lora_B: once folded into the weight, drop them "
            "(load_state_dict would refuse the unexpected keys).",
        ),
        Mistake(
            "the rank read from the layer's width instead of A's first axis",
            _merge_rank_from_width,
            "A has shape (r, d_in) and B (d_out, r): r is A.shape[0] (or B.shape[1]), not a "
            "width of the layer.",
        ),
    ],
    hints=[
        "Write y = x W^T + s x A^T B^T as y = x W'^T: which matrix of shape (d_out, d_in) "
        "is W' - W? Test the given code on an adapter whose layer is not square.",
        "What is r for an adapter, and where can the function find it?",
        "Which entries of the state dict does the given loop write into the result, and "
        "which does a plain GPT of the same configuration need?",
    ],
    bugs=Bugs(
        _merge_with_bugs,
        {
            "scale": (
                "the update is scaled by alpha instead of alpha / r",
                "Scale B A by alpha / r, with r = A.shape[0].",
            ),
            "orientation": (
                "A.T @ B.T is the transpose of the update (d_in x d_out)",
                "x A^T B^T = x (B A)^T: add (alpha / r) * (B @ A), of W's shape (d_out, d_in).",
            ),
            "dropped": (
                "every entry that is not part of an adapted layer is dropped",
                "Copy the other entries (embeddings, norms, layers without an adapter) unchanged.",
            ),
        },
    ),
    # float64 state dicts: a correct merge agrees to ~1e-16.
    atol=1e-12,
    rtol=1e-9,
    kind="debug",
    library=_library_merge,
    forbidden=(
        "tfbook.finetune.merge_lora",
        "tfbook.finetune.LoRALinear.merged",
        "tfbook.finetune.LoRALinear.delta_weight",
    ),
)


# --------------------------------------------------------------------------- q4: build


def _spans(tags):
    """(start, end) of every name span in one line's tags: a B, or an I after an O (or at
    the start), then the I's that follow; end is one past the last character."""
    spans, start = [], None
    for i, tag in enumerate([*tags, 0]):  # a final O closes the last span
        if start is not None and tag != 2:  # anything but I ends the open span
            spans.append((start, i))
            start = None
        if tag == 1 or (tag == 2 and start is None):
            start = i
    return spans


def _span_scores(gold_spans, predicted_spans):
    """Micro precision, recall and F1 over sets of (line, start, end)."""
    correct = len(gold_spans & predicted_spans)
    precision = correct / len(predicted_spans) if predicted_spans else 0.0
    recall = correct / len(gold_spans) if gold_spans else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def _reference_span_f1(lines, names, predicted):
    """Exact-span precision, recall and F1 of predicted B/I/O tags, gold from tag_line."""
    gold = {(i, *s) for i, line in enumerate(lines) for s in _spans(tag_line(line, names))}
    found = {(i, *s) for i, tags in enumerate(predicted) for s in _spans(tags)}
    return _span_scores(gold, found)


def _spans_strict(tags):
    """Only a B starts a span; an I after an O is ignored."""
    spans, start = [], None
    for i, tag in enumerate([*tags, 0]):
        if start is not None and tag != 2:
            spans.append((start, i))
            start = None
        if tag == 1:
            start = i
    return spans


def _spans_merging(tags):
    """Runs of non-O characters: a B right after a name continues it."""
    spans, start = [], None
    for i, tag in enumerate([*tags, 0]):
        if start is not None and tag == 0:
            spans.append((start, i))
            start = None
        if tag != 0 and start is None:
            start = i
    return spans


def _span_f1_with(lines, names, predicted, spans):
    gold = {(i, *s) for i, line in enumerate(lines) for s in spans(tag_line(line, names))}
    found = {(i, *s) for i, tags in enumerate(predicted) for s in spans(tags)}
    return _span_scores(gold, found)


def _span_f1_strict(lines, names, predicted):
    return _span_f1_with(lines, names, predicted, _spans_strict)


def _span_f1_merging(lines, names, predicted):
    return _span_f1_with(lines, names, predicted, _spans_merging)


def _span_f1_characters(lines, names, predicted):
    gold = {
        (i, j) for i, line in enumerate(lines) for j, t in enumerate(tag_line(line, names)) if t
    }
    found = {(i, j) for i, tags in enumerate(predicted) for j, t in enumerate(tags) if t}
    return _span_scores(gold, found)


def _span_f1_without_line(lines, names, predicted):
    gold = {s for line in lines for s in _spans(tag_line(line, names))}
    found = {s for tags in predicted for s in _spans(tags)}
    return _span_scores(gold, found)


def _span_f1_overlap(lines, names, predicted):
    gold = {(i, *s) for i, line in enumerate(lines) for s in _spans(tag_line(line, names))}
    found = {(i, *s) for i, tags in enumerate(predicted) for s in _spans(tags)}
    hits_p = sum(any(g[0] == p[0] and g[1] < p[2] and p[1] < g[2] for g in gold) for p in found)
    hits_r = sum(any(g[0] == p[0] and g[1] < p[2] and p[1] < g[2] for p in found) for g in gold)
    precision = hits_p / len(found) if found else 0.0
    recall = hits_r / len(gold) if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def _span_f1_per_line(lines, names, predicted):
    per_line = [
        _reference_span_f1([line], names, [tags])
        for line, tags in zip(lines, predicted, strict=True)
    ]
    return tuple(sum(s[k] for s in per_line) / len(per_line) for k in range(3))


_NAMES = ("Banquo", "Macbeth", "Macduff", "Ross")

_LINES = (
    "Hail, Macbeth! Banquo's here",  # two names, a possessive
    "Thou art Macduff, not MACBETH.",  # capitals count too
    "Ross and Banquo and Macduff.",
    "No name in this one.",
    "Macbeth",  # the whole line is a name
    "Banquo, Ross!",
)


def _tags(text):
    return [{"O": 0, "B": 1, "I": 2}[c] for c in text]


def _perturbed(seed, lines, names, flips):
    """Gold tags with ``flips`` characters of each line changed at random (seeded)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for line in lines:
        tags = list(tag_line(line, names))
        for _ in range(flips):
            if tags:
                j = int(torch.randint(0, len(tags), (1,), generator=g))
                tags[j] = int(torch.randint(0, 3, (1,), generator=g))
        out.append(tags)
    return out


def _span_cases():
    lines, names = list(_LINES), _NAMES
    handmade = [
        # "Hail, Macbeth! Banquo's here": Banquo starts with an I after an O
        _tags("OOOOOOBIIIIIIOOIIIIIIOOOOOOO"),
        # "Thou art Macduff, not MACBETH.": MACBETH cut in two by a B
        _tags("OOOOOOOOOBIIIIIIOOOOOOBIIBIIIO"),
        # "Ross and Banquo and Macduff.": Macduff one character too long
        _tags("BIIIOOOOOBIIIIIOOOOOBIIIIIII"),
        # "No name in this one.": a name where there is none
        _tags("BIOOOOOOOOOOOOOOOOOO"),
        # "Macbeth"
        _tags("BIIIIII"),
        # "Banquo, Ross!": Banquo one character too short
        _tags("BIIIIOOOBIIIO"),
    ]
    return [
        Case(
            "six lines, hand-made predictions (I after O, B inside a name, spans too long, short)",
            (lines, names, handmade),
        ),
        Case(
            "six lines, the gold tags with 2 characters per line changed (seed 98)",
            (lines, names, _perturbed(98, lines, names, 2)),
        ),
        Case(
            "edge: the predictions are the gold tags",
            (lines, names, _perturbed(0, lines, names, 0)),
        ),
        Case(
            "edge: no predicted name (precision 0 by convention)",
            (lines, names, [[0] * len(line) for line in lines]),
        ),
        Case(
            "edge: no name in the lines (recall 0 by convention), two predicted",
            (["No name here.", "Nor here"], names, [_tags("BIOOOOOOOOOOO"), _tags("OOOOIIII")]),
        ),
        Case(
            "a line whose tags start with I (it begins a span)",
            (
                ["Macbeth, Ross.", "Hail, Banquo"],
                names,
                [_tags("IIIIIIIOOBIIIO"), _tags("OOOOOOIIIIII")],
            ),
        ),
        Case(
            "the same two spans in different lines: only the right line counts",
            (
                ["Ross, Banquo", "Banquo, Ross"],
                names,
                [_tags("BIIIIIOOOOOO"), _tags("OOOOOOOOBIII")],
            ),
        ),
    ]


q4 = Question(
    "ch09.q4",
    "Exact-span F1 for the name tagger, with the library",
    reference=_reference_span_f1,
    cases=_span_cases,
    mistakes=[
        Mistake(
            "characters scored instead of spans",
            _span_f1_characters,
            "Score whole names: a predicted span counts only when a gold span has the same "
            "line, first character and end. tfbook.finetune.name_f1 is the character score.",
        ),
        Mistake(
            "an I after an O ignored instead of starting a span",
            _span_f1_strict,
            "The task's rule: an I that follows an O (or starts the line) begins a span, as a "
            "B does.",
        ),
        Mistake(
            "a B right after a name continues it instead of starting a new span",
            _span_f1_merging,
            "A B always starts a new span, even right after an I: B I I B I is two names.",
        ),
        Mistake(
            "spans matched without their line",
            _span_f1_without_line,
            "Identify a span by (line, start, end): the same characters in another line are "
            "another name.",
        ),
        Mistake(
            "overlapping spans counted as correct",
            _span_f1_overlap,
            "Exact match only: a span one character too long or too short is wrong.",
        ),
        Mistake(
            "scores averaged over lines instead of counted over all spans",
            _span_f1_per_line,
            "Count correct, predicted and gold spans over all lines together, then divide "
            "once (a line without names would otherwise weigh as much as one with three).",
        ),
    ],
    hints=[
        "tag_line(line, names) gives each line's gold tags; turn gold and predicted tags into "
        "the same kind of span with one helper.",
        "Walk a line's tags once, with the start of the open span: which tags close it, and "
        "which open a new one?",
        "Collect spans as (line, start, end) in two sets; the correct ones are their intersection.",
    ],
    atol=1e-12,
    rtol=1e-9,
    kind="build",
    library_note=(
        "none: tfbook.finetune.name_f1 scores name characters, not whole names; "
        "tests/test_exercises_ch09.py checks that every gold span reads a name tag_line marks "
        "and that a perfect prediction scores 1 on spans and on characters"
    ),
)


# --------------------------------------------------------------------------- q5: implement


def _reference_pool(h, real, how="mean"):
    """One vector per row: the mean of the real positions' vectors, or the last real one."""
    if how == "last":
        positions = torch.arange(h.shape[1], device=h.device)  # (T,)
        last = torch.where(real, positions, -1).max(dim=1).values  # (B,): last True
        return h[torch.arange(h.shape[0], device=h.device), last]  # (B, d_model)
    weights = real.to(h.dtype)[:, :, None]  # (B, T, 1)
    return (h * weights).sum(dim=1) / weights.sum(dim=1)  # (B, d_model)


def _pool_all_positions(h, real, how="mean"):
    if how == "last":
        return _reference_pool(h, real, how)
    return h.mean(dim=1)


def _pool_divided_by_t(h, real, how="mean"):
    if how == "last":
        return _reference_pool(h, real, how)
    return (h * real[:, :, None]).sum(dim=1) / h.shape[1]


def _pool_index_minus_one(h, real, how="mean"):
    return h[:, -1] if how == "last" else _reference_pool(h, real, how)


def _pool_count_minus_one(h, real, how="mean"):
    if how != "last":
        return _reference_pool(h, real, how)
    return h[torch.arange(h.shape[0]), real.sum(dim=1) - 1]


def _pool_argmax_first(h, real, how="mean"):
    if how != "last":
        return _reference_pool(h, real, how)
    return h[torch.arange(h.shape[0]), real.int().argmax(dim=1)]  # the first True


def _pool_default_last(h, real, how="last"):
    return _reference_pool(h, real, how)


def _pool_batch(seed, b, t, d, masks, *, scale=1.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    h = scale * torch.randn(b, t, d, generator=g).to(dtype)
    return h, torch.tensor(masks, dtype=torch.bool)


def _pool_cases():
    right = [[1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]]
    left = [[0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1], [0, 1, 1, 1, 1, 1]]
    holes = [[1, 0, 1, 1, 0, 1, 0, 0], [0, 1, 1, 0, 0, 0, 1, 0], [1, 0, 0, 0, 0, 0, 0, 0]]
    long_mask = [[1] * 200 + [0] * 100, [0] * 250 + [1] * 50]
    return [
        Case("right padding, how='last'", _pool_batch(70, 3, 6, 4, right), {"how": "last"}),
        Case("left padding, how='last'", _pool_batch(71, 3, 6, 4, left), {"how": "last"}),
        Case("left padding, how='mean'", _pool_batch(72, 3, 6, 4, left), {"how": "mean"}),
        Case(
            "real tokens with holes (special tokens masked out), how='last'",
            _pool_batch(73, 3, 8, 5, holes),
            {"how": "last"},
        ),
        Case(
            "real tokens with holes, how not given (its default is 'mean')",
            _pool_batch(74, 3, 8, 5, holes),
        ),
        Case(
            "hidden vectors in the millions, float64, how='mean'",
            _pool_batch(75, 3, 8, 5, holes, scale=1e6, dtype=torch.float64),
            {"how": "mean"},
        ),
        Case("T = 300, how='last'", _pool_batch(76, 2, 300, 3, long_mask), {"how": "last"}),
        Case("edge: one position", _pool_batch(77, 2, 1, 3, [[1], [1]]), {"how": "last"}),
    ]


def _pool_probe(length):
    """Inputs with ``length`` positions, holes in the mask: one case per mode."""
    g = torch.Generator().manual_seed(78)
    real = torch.rand(3, length, generator=g) < 0.6
    real[:, 0] = True
    h = torch.randn(3, length, 4, generator=g)
    return [Case(f"T = {length}, how={how!r}", (h, real), {"how": how}) for how in ("mean", "last")]


def _library_pool(h, real, how="mean"):
    """tfbook.finetune's pooling of SequenceClassifier on each row's real vectors, gathered to
    the front (its 'last' reads the last of the first lengths positions)."""
    from tfbook.finetune import _pool

    order = torch.argsort((~real).to(torch.int8), dim=1, stable=True)  # real positions first
    gathered = h.gather(1, order[:, :, None].expand_as(h))
    packed = real.gather(1, order)
    return _pool(gathered, packed, how)


q5 = Question(
    "ch09.q5",
    "Pooling over the real tokens of any padding mask",
    reference=_reference_pool,
    cases=_pool_cases,
    mistakes=[
        Mistake(
            "the mean over every position, padding included",
            _pool_all_positions,
            "Average only the positions where real is True: weight each vector by the mask "
            "and divide by the number of real positions of its row.",
        ),
        Mistake(
            "the masked sum divided by T instead of by the number of real positions",
            _pool_divided_by_t,
            "Divide each row's masked sum by its own count of real positions, real.sum(dim=1).",
        ),
        Mistake(
            "the last position taken, padding or not",
            _pool_index_minus_one,
            "With left padding or holes the last position may be padding; take the last "
            "position where real is True.",
        ),
        Mistake(
            "the last real position computed as (number of real positions) - 1",
            _pool_count_minus_one,
            "That index is right only for right padding without holes. Find the largest "
            "position where real is True (e.g. positions where real, -1 elsewhere, then max).",
        ),
        Mistake(
            "argmax of the mask: the first real position, not the last",
            _pool_argmax_first,
            "argmax returns the first of equal maxima, so on a 0/1 mask it finds the first "
            "True. Take the maximum of the real positions' indices instead.",
        ),
        Mistake(
            "how defaults to 'last'",
            _pool_default_last,
            "When how is not given it is 'mean', as the signature in the task says.",
        ),
    ],
    hints=[
        "Turn the mask into weights of h's dtype with shape (B, T, 1): the mean is a weighted "
        "sum over dim 1 divided by the sum of the weights.",
        "For 'last', build a (B, T) tensor holding each position's index where real is True "
        "and something smaller elsewhere; its maximum over dim 1 is the index you need.",
        "Pick one vector per row with advanced indexing: h[rows, index], rows = torch.arange(B).",
    ],
    atol=1e-6,
    rtol=1e-6,
    check_dtype=True,
    kind="implement",
    library=_library_pool,
    loop_probe=_pool_probe,
    forbidden=("tfbook.finetune._pool", "tfbook.finetune.SequenceClassifier.forward"),
)


EXERCISES = ExerciseSet.collect(globals(), "Chapter 9 exercises")
progress = EXERCISES.progress
__all__ = [
    *EXERCISES.names,
    "EXERCISES",
    "progress",
    "PREDICT_KINDS",
    "TINY_LORA_GPT",
    "LORA_TARGETS",
]
