"""Graded exercises of chapter 6, "The encoder, the decoder and the three families".

1. predict, then run: the parameter counts of an encoder layer, a decoder layer and a
   GPT-style decoder layer (``tfbook.model.count_parameters`` reveals them);
2. debugging: source 001's pre-LN decoder layer adds each residual to the normalised input;
   fix it (``tfbook.model.DecoderLayer`` with ``norm_first=True`` is the fixed layer);
3. build, from the chapter 4 and 5 parts, a decoder layer that reads two encoded sources
   (two cross-attentions in a row);
4. derivation: how many attention matrices, and how many attention weights, an N-layer
   encoder-decoder computes in one forward pass;
5. the gradient of a tied embedding matrix, used both by the look-up and by the output head
   (autograd through ``tfbook.model.LMHead`` with ``tied_to`` gives the same);
6. which input positions can change which outputs after n layers that share one attention
   mask (the perturbation test of the chapter, predicted from the mask).

Usage: ``from tfbook.exercises import ch06 as ex; ex.q1.check(predicted_params)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tfbook.attention import CrossAttention, SelfAttention, causal_mask, padding_mask
from tfbook.exercises._engine import (
    Bugs,
    Case,
    ExerciseSet,
    Mistake,
    Question,
    compare_modules,
)
from tfbook.feedforward import PositionwiseFeedForward
from tfbook.model import DecoderLayer, EncoderLayer, LMHead, count_parameters
from tfbook.norm import LayerNorm, ResidualSublayer

# --------------------------------------------------------------------------- q1: predict


#: The configuration of exercise 6.1.
PREDICT_CONFIG = {"d_model": 8, "n_heads": 2, "d_ff": 32}
KINDS = ("decoder layer", "encoder layer", "decoder-only layer")


def _count(kind, attn_one, ffn, norms_per_sublayer=2, d=8, cross=True):
    n_attn = {"encoder layer": 1, "decoder layer": 2 if cross else 1, "decoder-only layer": 1}
    n_sub = n_attn[kind] + 1
    return n_attn[kind] * attn_one + ffn + n_sub * norms_per_sublayer * d


def _reference_predicted_params(kind):
    """Parameters of one layer for d_model=8, n_heads=2, d_ff=32 (what
    ``count_parameters(EncoderLayer(8, 2, 32))`` and ``DecoderLayer`` report)."""
    d, d_ff = PREDICT_CONFIG["d_model"], PREDICT_CONFIG["d_ff"]
    attention = 4 * (d * d + d)  # W^Q, W^K, W^V, W^O, each with a bias
    ffn = d * d_ff + d_ff + d_ff * d + d  # W1, b1, W2, b2
    norm = 2 * d  # gamma and beta of one LayerNorm
    sublayers = {"decoder layer": 3, "encoder layer": 2, "decoder-only layer": 2}[kind]
    return (sublayers - 1) * attention + ffn + sublayers * norm


def _predict_no_attention_bias(kind):
    d, d_ff = 8, 32
    return _count(kind, 4 * d * d, 2 * d * d_ff + d_ff + d)


def _predict_no_layernorm(kind):
    d, d_ff = 8, 32
    return _count(kind, 4 * (d * d + d), 2 * d * d_ff + d_ff + d, norms_per_sublayer=0)


def _predict_no_output_projection(kind):
    d, d_ff = 8, 32
    return _count(kind, 3 * (d * d + d), 2 * d * d_ff + d_ff + d)


def _predict_full_projection_per_head(kind):
    d, d_ff, h = 8, 32, 2
    return _count(kind, h * 4 * (d * d + d), 2 * d * d_ff + d_ff + d)


def _predict_no_cross_attention(kind):
    d, d_ff = 8, 32
    return _count(kind, 4 * (d * d + d), 2 * d * d_ff + d_ff + d, cross=False)


def _predict_no_ffn_bias(kind):
    d, d_ff = 8, 32
    return _count(kind, 4 * (d * d + d), 2 * d * d_ff)


def _predict_cases():
    return [Case(f"{kind}, d_model=8, n_heads=2, d_ff=32", (kind,)) for kind in KINDS]


def _library_predicted_params(kind):
    d, h, d_ff = (PREDICT_CONFIG[k] for k in ("d_model", "n_heads", "d_ff"))
    layers = {
        "decoder layer": lambda: DecoderLayer(d, h, d_ff),
        "encoder layer": lambda: EncoderLayer(d, h, d_ff),
        "decoder-only layer": lambda: DecoderLayer(d, h, d_ff, cross_attention=False),
    }
    return count_parameters(layers[kind]())


q1 = Question(
    "ch06.q1",
    "Predict the parameter counts of three layers",
    reference=_reference_predicted_params,
    cases=_predict_cases,
    mistakes=[
        Mistake(
            "the biases of the four attention projections not counted",
            _predict_no_attention_bias,
            "Each of W^Q, W^K, W^V and W^O is an nn.Linear with a bias of d_model entries.",
        ),
        Mistake(
            "the LayerNorms' gain and shift not counted",
            _predict_no_layernorm,
            "Every sub-layer sits in a ResidualSublayer with its own LayerNorm: 2 * d_model "
            "parameters per sub-layer.",
        ),
        Mistake(
            "the output projection W^O forgotten",
            _predict_no_output_projection,
            "Multi-head attention has four projections: the concatenated heads go through W^O.",
        ),
        Mistake(
            "a full d_model x d_model projection per head",
            _predict_full_projection_per_head,
            "The heads share the projections: W^Q is one d_model x d_model matrix whose columns "
            "are split into h heads of d_model / h features, so the count does not depend on h.",
        ),
        Mistake(
            "the decoder layer counted without its cross-attention",
            _predict_no_cross_attention,
            "An encoder-decoder's decoder layer has two attention sub-layers (masked "
            "self-attention and cross-attention), each with its own LayerNorm.",
        ),
        Mistake(
            "the feed-forward biases not counted",
            _predict_no_ffn_bias,
            "The feed-forward network's two linear maps have biases of d_ff and d_model entries.",
        ),
    ],
    hints=[
        "Count one sub-layer at a time: an attention sub-layer, a feed-forward sub-layer, and "
        "the LayerNorm each sub-layer is wrapped with.",
        "A linear map from n to m features with a bias has n * m + m parameters; attention has "
        "four of them (queries, keys, values, output), all d_model to d_model.",
        "The number of heads does not change the count. A decoder-only (GPT) layer has no "
        "cross-attention, so compare it with the encoder layer: only the mask differs.",
    ],
    kind="predict",
    library=_library_predicted_params,
)


# --------------------------------------------------------------------------- q2: debugging


class _DecoderParts:
    """The sub-layers of one pre-LN decoder layer, as plain functions (for exercise 6.2).

    ``norm1``, ``norm2``, ``norm3``: LayerNorms (random gain and shift); ``self_attn(h, mask)``:
    multi-head self-attention; ``cross_attn(h, memory)``: queries from ``h``, keys and values
    from ``memory``; ``ffn(h)``: the feed-forward network.
    """

    def __init__(self, d_model: int, n_heads: int, seed: int) -> None:
        self.d_model, self.n_heads = d_model, n_heads
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self._sa = SelfAttention(d_model, n_heads).eval()
            self._ca = CrossAttention(d_model, n_heads).eval()
            self._ffn = PositionwiseFeedForward(d_model, 4 * d_model, activation="gelu").eval()
            self._norms = [LayerNorm(d_model) for _ in range(3)]
            with torch.no_grad():
                for norm in self._norms:
                    norm.weight.copy_(1.0 + 0.3 * torch.randn(d_model))
                    norm.bias.copy_(0.3 * torch.randn(d_model))

    def norm1(self, h):
        with torch.no_grad():
            return self._norms[0](h)

    def norm2(self, h):
        with torch.no_grad():
            return self._norms[1](h)

    def norm3(self, h):
        with torch.no_grad():
            return self._norms[2](h)

    def self_attn(self, h, mask=None):
        with torch.no_grad():
            return self._sa(h, mask)

    def cross_attn(self, h, memory):
        with torch.no_grad():
            return self._ca(h, memory)

    def ffn(self, h):
        with torch.no_grad():
            return self._ffn(h)

    def __repr__(self) -> str:
        return f"DecoderParts(d_model={self.d_model}, n_heads={self.n_heads})"

    def __deepcopy__(self, memo: dict) -> _DecoderParts:
        return self


def _reference_fixed_decoder_layer(x, memory, parts):
    """A pre-LN decoder layer: what ``tfbook.model.DecoderLayer(norm_first=True)`` computes."""
    future_hidden = causal_mask(x.shape[1])  # (T, T): position t sees 0..t
    x = x + parts.self_attn(parts.norm1(x), future_hidden)  # masked self-attention
    x = x + parts.cross_attn(parts.norm2(x), memory)  # Q from the decoder, K/V from memory
    return x + parts.ffn(parts.norm3(x))  # the residual stream is never normalised


def _buggy_decoder_layer(x, memory, parts):
    mask = causal_mask(x.shape[1])
    h = parts.norm1(x)
    h = h + parts.self_attn(h, mask)
    h = parts.norm2(h)
    h = h + parts.cross_attn(h, memory)
    h = parts.norm3(h)
    return h + parts.ffn(h)


def _decoder_only_ffn_fixed(x, memory, parts):
    mask = causal_mask(x.shape[1])
    h = parts.norm1(x)
    h = h + parts.self_attn(h, mask)
    h = parts.norm2(h)
    h = h + parts.cross_attn(h, memory)
    return h + parts.ffn(parts.norm3(h))


def _decoder_no_causal_mask(x, memory, parts):
    x = x + parts.self_attn(parts.norm1(x))
    x = x + parts.cross_attn(parts.norm2(x), memory)
    return x + parts.ffn(parts.norm3(x))


def _decoder_queries_from_memory(x, memory, parts):
    x = x + parts.self_attn(parts.norm1(x), causal_mask(x.shape[1]))
    x = x + parts.cross_attn(memory, parts.norm2(x))
    return x + parts.ffn(parts.norm3(x))


def _decoder_memory_normalised(x, memory, parts):
    x = x + parts.self_attn(parts.norm1(x), causal_mask(x.shape[1]))
    x = x + parts.cross_attn(parts.norm2(x), parts.norm2(memory))
    return x + parts.ffn(parts.norm3(x))


def _decoder_post_ln(x, memory, parts):
    x = parts.norm1(x + parts.self_attn(x, causal_mask(x.shape[1])))
    x = parts.norm2(x + parts.cross_attn(x, memory))
    return parts.norm3(x + parts.ffn(x))


def _decoder_with_bugs(x, memory, parts, *, self_attn, cross_attn, ffn):
    """The listing with each sub-layer's residual bug there (True: the residual is added to
    the normalised stream) or fixed (False)."""
    mask = causal_mask(x.shape[1])
    sublayers = (
        (self_attn, parts.norm1, lambda h: parts.self_attn(h, mask)),
        (cross_attn, parts.norm2, lambda h: parts.cross_attn(h, memory)),
        (ffn, parts.norm3, parts.ffn),
    )
    for bug, norm, sublayer in sublayers:
        if bug:
            x = norm(x)  # the stream itself overwritten by its normalised copy
            x = x + sublayer(x)
        else:
            x = x + sublayer(norm(x))
    return x


def _debug_cases():
    cases = []
    # the first case has as many target as source positions, so a layer that swaps the
    # roles of the two sequences in cross-attention still runs (and can be recognised)
    for seed, (b, t, s, d, h) in enumerate([(2, 4, 4, 8, 2), (1, 5, 7, 12, 3), (3, 3, 6, 8, 4)]):
        g = torch.Generator().manual_seed(seed)
        x = 3.0 * torch.randn(b, t, d, generator=g) + 1.0  # a residual stream of some size
        memory = torch.randn(b, s, d, generator=g)  # an encoder output (normalised scale)
        cases.append(
            Case(f"random, T={t}, S={s}, seed {seed}", (x, memory, _DecoderParts(d, h, seed)))
        )
    g = torch.Generator().manual_seed(9)
    x, memory = 3.0 * torch.randn(2, 1, 8, generator=g), torch.randn(2, 3, 8, generator=g)
    cases.append(Case("edge: a single target position", (x, memory, _DecoderParts(8, 2, 9))))
    return cases


def _library_fixed_decoder_layer(x, memory, parts):
    layer = DecoderLayer(
        parts.d_model, parts.n_heads, 4 * parts.d_model, activation="gelu", norm_first=True
    ).eval()
    subs = (layer.self_attn, layer.cross_attn, layer.ffn)
    for sub, part, norm in zip(subs, (parts._sa, parts._ca, parts._ffn), parts._norms, strict=True):
        sub.sublayer.load_state_dict(part.state_dict())
        sub.norm.load_state_dict(norm.state_dict())
    return layer(x, memory, self_mask=causal_mask(x.shape[1]))


q2 = Question(
    "ch06.q2",
    "Fix source 001's pre-LN decoder layer",
    reference=_reference_fixed_decoder_layer,
    cases=_debug_cases,
    mistakes=[
        Mistake(
            "source 001's listing unchanged: every residual added to the normalised input",
            _buggy_decoder_layer,
            "In pre-LN only the branch sees normalised vectors: each sub-layer adds its output "
            "to the raw stream x, never to norm(x).",
        ),
        Mistake(
            "only the feed-forward sub-layer fixed",
            _decoder_only_ffn_fixed,
            "The self-attention and cross-attention sub-layers have the same bug: keep the "
            "un-normalised stream for their residuals too.",
        ),
        Mistake(
            "no causal mask in the decoder's self-attention",
            _decoder_no_causal_mask,
            "The decoder's self-attention is masked: pass causal_mask(T) so position t cannot "
            "see the tokens after it.",
        ),
        Mistake(
            "cross-attention queries taken from the encoder output",
            _decoder_queries_from_memory,
            "In cross-attention the decoder asks the questions: the queries come from the "
            "(normalised) decoder stream, the keys and values from memory.",
        ),
        Mistake(
            "the encoder output normalised with the decoder's LayerNorm",
            _decoder_memory_normalised,
            "Only the decoder's stream is normalised before cross-attention; memory is used "
            "as the encoder produced it.",
        ),
        Mistake(
            "post-LN order instead of pre-LN",
            _decoder_post_ln,
            "That is the paper's post-LN order; the layer to fix is pre-LN: normalise the "
            "branch's input, add the branch's output to the raw stream.",
        ),
    ],
    hints=[
        "Compare each pair of lines of the listing with the pre-LN formula of chapter 5: "
        "new stream = old stream + sublayer(norm(old stream)).",
        "Keep one variable for the residual stream and never overwrite it with a normalised "
        "copy; the normalised copy is only the input of the branch.",
        "The masked self-attention and the cross-attention were right in the listing apart "
        "from the residual: keep the causal mask, and keep memory as the second argument "
        "of cross_attn.",
    ],
    bugs=Bugs(
        _decoder_with_bugs,
        {
            name: (
                f"the {what} residual is added to the normalised stream",
                f"Add the {what} branch's output to the raw stream; only the branch's input "
                "is normalised.",
            )
            for name, what in (
                ("self_attn", "self-attention"),
                ("cross_attn", "cross-attention"),
                ("ffn", "feed-forward"),
            )
        },
    ),
    kind="debug",
    library=_library_fixed_decoder_layer,
)


# --------------------------------------------------------------------------- q3: build a layer


class _ReferenceTwoSourceLayer(nn.Module):
    """A decoder layer that reads two encoded sources (multi-source translation, or a document
    and a question): masked self-attention, cross-attention to the first source, then to the
    second, then the feed-forward network, each in a ResidualSublayer."""

    def __init__(self, d_model, n_heads, d_ff, norm_first=True):
        super().__init__()
        self.self_attn = ResidualSublayer(d_model, SelfAttention(d_model, n_heads), norm_first)
        self.cross_a = ResidualSublayer(d_model, CrossAttention(d_model, n_heads), norm_first)
        self.cross_b = ResidualSublayer(d_model, CrossAttention(d_model, n_heads), norm_first)
        self.ffn = ResidualSublayer(d_model, PositionwiseFeedForward(d_model, d_ff), norm_first)

    def forward(self, x, memory_a, memory_b, self_mask=None, mask_a=None, mask_b=None):
        x = self.self_attn(x, self_mask)  # masked self-attention over the target
        x = self.cross_a(x, memory_a, mask_a)  # queries from x, keys/values from source A
        x = self.cross_b(x, memory_b, mask_b)  # then from source B
        return self.ffn(x)  # (B, T, d_model)


class _TwoSourceMasksSwapped(_ReferenceTwoSourceLayer):
    def forward(self, x, memory_a, memory_b, self_mask=None, mask_a=None, mask_b=None):
        x = self.self_attn(x, self_mask)
        x = self.cross_a(x, memory_a, mask_b)
        x = self.cross_b(x, memory_b, mask_a)
        return self.ffn(x)


class _TwoSourceSameMemory(_ReferenceTwoSourceLayer):
    def forward(self, x, memory_a, memory_b, self_mask=None, mask_a=None, mask_b=None):
        x = self.self_attn(x, self_mask)
        x = self.cross_a(x, memory_a, mask_a)
        x = self.cross_b(x, memory_a, mask_a)
        return self.ffn(x)


class _TwoSourceParallel(_ReferenceTwoSourceLayer):
    def forward(self, x, memory_a, memory_b, self_mask=None, mask_a=None, mask_b=None):
        x = self.self_attn(x, self_mask)
        x = self.cross_a(x, memory_a, mask_a) + self.cross_b(x, memory_b, mask_b) - x
        return self.ffn(x)


class _TwoSourceBThenA(_ReferenceTwoSourceLayer):
    def forward(self, x, memory_a, memory_b, self_mask=None, mask_a=None, mask_b=None):
        x = self.self_attn(x, self_mask)
        x = self.cross_b(x, memory_b, mask_b)
        x = self.cross_a(x, memory_a, mask_a)
        return self.ffn(x)


class _TwoSourceQueriesFromMemory(_ReferenceTwoSourceLayer):
    def forward(self, x, memory_a, memory_b, self_mask=None, mask_a=None, mask_b=None):
        x = self.self_attn(x, self_mask)
        x = self.cross_a(memory_a, x, mask_a)
        x = self.cross_b(memory_b, x, mask_b)
        return self.ffn(x)


class _TwoSourceIgnoresSelfMask(_ReferenceTwoSourceLayer):
    def forward(self, x, memory_a, memory_b, self_mask=None, mask_a=None, mask_b=None):
        x = self.self_attn(x)
        x = self.cross_a(x, memory_a, mask_a)
        x = self.cross_b(x, memory_b, mask_b)
        return self.ffn(x)


class _TwoSourceAlwaysPreLN(_ReferenceTwoSourceLayer):
    def __init__(self, d_model, n_heads, d_ff, norm_first=True):
        super().__init__(d_model, n_heads, d_ff, norm_first=True)


def _two_source_probes(d_model: int) -> list[tuple[str, tuple]]:
    """Inputs on which two two-source layers with the same weights are compared: sources of
    different lengths, each with its own padding, and calls that leave the masks out."""
    g = torch.Generator().manual_seed(1300 + d_model)

    def real(lengths, width):
        return padding_mask(torch.tensor(lengths), max_len=width)  # (B, 1, width)

    probes = []
    b, t, s_a, s_b = 2, 4, 6, 3
    x = 3.0 * torch.randn(b, t, d_model, generator=g) + 1.0
    mem_a = torch.randn(b, s_a, d_model, generator=g)
    mem_b = 2.0 * torch.randn(b, s_b, d_model, generator=g) - 1.0
    probes.append(
        (
            f"x {tuple(x.shape)}, memory_a {tuple(mem_a.shape)}, memory_b {tuple(mem_b.shape)}, "
            "causal self mask, each source padded differently",
            (x, mem_a, mem_b, causal_mask(t), real([6, 2], s_a), real([1, 3], s_b)),
        )
    )
    b, t, s = 2, 5, 4
    x = 3.0 * torch.randn(b, t, d_model, generator=g) + 1.0
    mem_a = torch.randn(b, s, d_model, generator=g)
    mem_b = torch.randn(b, s, d_model, generator=g)
    probes.append(
        (
            f"x {tuple(x.shape)}, two sources of the same shape {tuple(mem_a.shape)}, causal self "
            "mask, only source A padded",
            (x, mem_a, mem_b, causal_mask(t), real([4, 1], s), None),
        )
    )
    probes.append(
        (
            f"x {tuple(x.shape)}, sources {tuple(mem_a.shape)}: self_mask, mask_a and mask_b not "
            "given (their defaults are None: nothing hidden)",
            (x, mem_a, mem_b),
        )
    )
    return probes


def _compare_two_source_layers(expected, got) -> str | None:
    """Load the expected layer's weights into the answer and compare their outputs."""
    d_model = next(iter(expected.state_dict().values())).shape[-1]
    probes = [(f"forward({where})", args) for where, args in _two_source_probes(d_model)]
    naming = (
        "name the sub-layers self_attn, cross_a, cross_b and ffn, each a ResidualSublayer "
        "with its own attention"
    )
    return compare_modules(expected, got, probes, "layer", naming)


q3 = Question(
    "ch06.q3",
    "A decoder layer that reads two sources",
    reference=_ReferenceTwoSourceLayer,
    cases=lambda: [
        Case("pre-LN, d_model=8, n_heads=2, d_ff=32", (8, 2, 32, True), seed=61),
        Case("post-LN, d_model=12, n_heads=3, d_ff=48", (12, 3, 48, False), seed=62),
        Case("pre-LN, d_model=8, n_heads=4, d_ff=16", (8, 4, 16, True), seed=63),
        Case("norm_first not given (pre-LN), d_model=8, n_heads=2, d_ff=16", (8, 2, 16), seed=64),
    ],
    mistakes=[
        Mistake(
            "the two source masks swapped",
            _TwoSourceMasksSwapped,
            "mask_a hides source A's padding and goes with memory_a into cross_a; mask_b "
            "goes with memory_b into cross_b.",
        ),
        Mistake(
            "both cross-attentions read source A",
            _TwoSourceSameMemory,
            "cross_b takes its keys and values from memory_b (with mask_b): otherwise the "
            "second source is never read.",
        ),
        Mistake(
            "the two cross-attentions run side by side on the same input",
            _TwoSourceParallel,
            "The sub-layers are a chain: cross_b reads the output of cross_a, as the "
            "feed-forward network reads the output of cross_b.",
        ),
        Mistake(
            "source B read before source A",
            _TwoSourceBThenA,
            "The order is masked self-attention, cross_a (memory_a), cross_b (memory_b), then "
            "the feed-forward network.",
        ),
        Mistake(
            "cross-attention queries taken from a source",
            _TwoSourceQueriesFromMemory,
            "The residual stream x asks the questions: x comes first, the source second.",
        ),
        Mistake(
            "self_mask not passed to the self-attention",
            _TwoSourceIgnoresSelfMask,
            "Pass self_mask on to the self-attention sub-layer: ResidualSublayer hands every "
            "argument after x to the sub-layer it wraps.",
        ),
        Mistake(
            "norm_first ignored (always pre-LN)",
            _TwoSourceAlwaysPreLN,
            "Pass norm_first on to each ResidualSublayer so post-LN layers can be built too.",
        ),
    ],
    hints=[
        "__init__ creates four ResidualSublayer objects: one around a SelfAttention, one "
        "around each of two separate CrossAttention modules, one around a "
        "PositionwiseFeedForward, all with the same norm_first.",
        "A ResidualSublayer normalises only its first argument and passes the others to the "
        "sub-layer unchanged: CrossAttention takes (x, memory, mask).",
    ],
    compare_fn=_compare_two_source_layers,
    kind="build",
    library_note=(
        "none: tfbook.model.DecoderLayer reads one source; tests/test_exercise_kinds.py checks "
        "that, pre-LN with cross_b's output projection zeroed, the reference equals it"
    ),
    forbidden=("tfbook.model.DecoderLayer.__init__",),
)


# --------------------------------------------------------------------------- q4: derivation


def _reference_attention_maps(n_layers, n_heads, src_len, tgt_len):
    """(number of attention weight matrices, number of attention weights) in one forward pass
    of an encoder-decoder with ``n_layers`` layers in each stack
    (``tfbook.model.EncoderDecoder``)."""
    encoder = src_len * src_len  # self-attention over the source: (S, S)
    decoder = tgt_len * tgt_len + tgt_len * src_len  # masked self (T, T) and cross (T, S)
    return 3 * n_layers * n_heads, n_layers * n_heads * (encoder + decoder)


def _maps_no_cross(n_layers, n_heads, src_len, tgt_len):
    return 2 * n_layers * n_heads, n_layers * n_heads * (src_len**2 + tgt_len**2)


def _maps_no_heads(n_layers, n_heads, src_len, tgt_len):
    return 3 * n_layers, n_layers * (src_len**2 + tgt_len**2 + tgt_len * src_len)


def _maps_cross_square(n_layers, n_heads, src_len, tgt_len):
    return 3 * n_layers * n_heads, n_layers * n_heads * (2 * src_len**2 + tgt_len**2)


def _maps_causal_triangle(n_layers, n_heads, src_len, tgt_len):
    tri = tgt_len * (tgt_len + 1) // 2
    return 3 * n_layers * n_heads, n_layers * n_heads * (src_len**2 + tri + tgt_len * src_len)


def _maps_encoder_on_target(n_layers, n_heads, src_len, tgt_len):
    return 3 * n_layers * n_heads, n_layers * n_heads * (2 * tgt_len**2 + tgt_len * src_len)


q4 = Question(
    "ch06.q4",
    "Counting attention maps in an encoder-decoder",
    reference=_reference_attention_maps,
    cases=lambda: [
        Case("the base Transformer: N=6, h=8, S=10, T=7", (6, 8, 10, 7)),
        Case("N=2, h=4, S=5, T=3", (2, 4, 5, 3)),
        Case("source shorter than target: N=3, h=2, S=2, T=9", (3, 2, 2, 9)),
        Case("edge: one layer, one head, one token each", (1, 1, 1, 1)),
    ],
    mistakes=[
        Mistake(
            "the decoder's cross-attention forgotten",
            _maps_no_cross,
            "Each decoder layer attends twice: masked self-attention over the target and "
            "cross-attention from the target to the source.",
        ),
        Mistake(
            "heads not counted",
            _maps_no_heads,
            "Every head computes its own weight matrix: multiply by the number of heads.",
        ),
        Mistake(
            "the cross-attention matrix taken as S x S",
            _maps_cross_square,
            "Cross-attention has one row per decoder position (query) and one column per "
            "encoder position (key): T x S.",
        ),
        Mistake(
            "the causal matrix counted as a triangle",
            _maps_causal_triangle,
            "The masked entries are still entries of the T x T weight matrix (they are "
            "exactly 0): count all T * T.",
        ),
        Mistake(
            "the encoder's self-attention taken over the target length",
            _maps_encoder_on_target,
            "The encoder reads the source: its self-attention matrices are S x S.",
        ),
    ],
    hints=[
        "List the attention sub-layers of one encoder layer and of one decoder layer, and the "
        "shape (queries x keys) of the weight matrix each head of each sub-layer produces.",
        "A query sequence of length a attending to a key sequence of length b gives an a x b "
        "matrix per head, whatever the mask.",
        "Return a tuple (matrices, weights) of two ints.",
    ],
    kind="derive",
    library_note=(
        "counted by forward hooks on tfbook.model.EncoderDecoder in tests/test_exercises_ch06.py"
    ),
)


# --------------------------------------------------------------------------- q5: tied gradient


def _reference_shared_grad(ids, grad_embedded, h, grad_logits):
    """The gradient of the tied matrix W_E (V, d_model): the look-up E = W_E[ids] and the
    head logits = h @ W_E^T both use it, so its gradient is the sum of the two paths'."""
    vocab_size, d_model = grad_logits.shape[-1], h.shape[-1]
    grad = torch.zeros(vocab_size, d_model, dtype=h.dtype)
    grad.index_add_(0, ids.reshape(-1), grad_embedded.reshape(-1, d_model))  # repeats add up
    grad += grad_logits.reshape(-1, vocab_size).T @ h.reshape(-1, d_model)  # (V, d_model)
    return grad


def _shared_grad_head_only(ids, grad_embedded, h, grad_logits):
    return grad_logits.reshape(-1, grad_logits.shape[-1]).T @ h.reshape(-1, h.shape[-1])


def _shared_grad_embedding_only(ids, grad_embedded, h, grad_logits):
    grad = torch.zeros(grad_logits.shape[-1], h.shape[-1], dtype=h.dtype)
    grad.index_add_(0, ids.reshape(-1), grad_embedded.reshape(-1, h.shape[-1]))
    return grad


def _shared_grad_repeats_overwrite(ids, grad_embedded, h, grad_logits):
    grad = torch.zeros(grad_logits.shape[-1], h.shape[-1], dtype=h.dtype)
    grad[ids.reshape(-1)] = grad_embedded.reshape(-1, h.shape[-1])  # a repeated id keeps one
    return grad + grad_logits.reshape(-1, grad_logits.shape[-1]).T @ h.reshape(-1, h.shape[-1])


def _shared_grad_mean_over_batch(ids, grad_embedded, h, grad_logits):
    return _reference_shared_grad(ids, grad_embedded, h, grad_logits) / ids.shape[0]


def _shared_grad_float32(ids, grad_embedded, h, grad_logits):
    return _reference_shared_grad(
        ids, grad_embedded.float(), h.float(), grad_logits.float()
    ).float()


def _shared_grad_cases():
    def case(name, b, s, t, d, v, seed, ids=None, scale=1.0):
        g = torch.Generator().manual_seed(seed)
        if ids is None:
            ids = torch.randint(v, (b, s), generator=g)
        grad_embedded = torch.randn(b, s, d, generator=g, dtype=torch.float64)
        h = scale * torch.randn(b, t, d, generator=g, dtype=torch.float64)
        grad_logits = torch.randn(b, t, v, generator=g, dtype=torch.float64) / (b * t)
        return Case(name, (ids, grad_embedded, h, grad_logits))

    return [
        case(
            "source ids (2, 5) with repeats, target positions (2, 3), d_model 4, V 6",
            2,
            5,
            3,
            4,
            6,
            seed=70,
            ids=torch.tensor([[1, 3, 3, 0, 1], [5, 3, 2, 2, 2]]),
        ),
        case("random, S = T = 7, d_model 8, V 20", 3, 7, 7, 8, 20, seed=71),
        case(
            "every source position the same id", 2, 6, 4, 4, 5, seed=72, ids=torch.full((2, 6), 2)
        ),
        case("ids that never occur get only the head's gradient: V 50", 1, 3, 2, 4, 50, seed=73),
        case("one sequence, one position each side", 1, 1, 1, 3, 4, seed=74),
        case("hidden vectors in the thousands", 2, 4, 5, 6, 9, seed=75, scale=3000.0),
    ]


def _library_shared_grad(ids, grad_embedded, h, grad_logits):
    """Autograd through a real tied pair: TokenEmbedding-like look-up and LMHead(tied_to=)."""
    vocab_size, d_model = grad_logits.shape[-1], h.shape[-1]
    weight = nn.Parameter(torch.zeros(vocab_size, d_model, dtype=h.dtype))
    head = LMHead(d_model, vocab_size, tied_to=weight)
    with torch.enable_grad():
        embedded = F.embedding(ids, weight)
        loss = (embedded * grad_embedded).sum() + (head(h) * grad_logits).sum()
        loss.backward()
    return weight.grad


q5 = Question(
    "ch06.q5",
    "One matrix, two gradients: the tied embedding",
    reference=_reference_shared_grad,
    cases=_shared_grad_cases,
    mistakes=[
        Mistake(
            "only the output head's gradient",
            _shared_grad_head_only,
            "The matrix is also the input embedding: add the gradients of the looked-up rows "
            "(grad_embedded) to the rows of their ids.",
        ),
        Mistake(
            "only the embedding's gradient",
            _shared_grad_embedding_only,
            "The head uses the same matrix (logits = h @ W_E^T): add grad_logits^T @ h, "
            "summed over every batch row and position.",
        ),
        Mistake(
            "a repeated id keeps one gradient instead of the sum",
            _shared_grad_repeats_overwrite,
            "grad[ids] = ... writes each row once, so a token that occurs twice keeps only "
            "one of its gradients; accumulate them (index_add_, or a loop with +=).",
        ),
        Mistake(
            "divided by the batch size",
            _shared_grad_mean_over_batch,
            "The gradients given are already those of the loss: sum the contributions, do "
            "not average them.",
        ),
        Mistake(
            "computed in float32",
            _shared_grad_float32,
            "The inputs are float64: keep the computation and the result in float64.",
        ),
    ],
    hints=[
        "Treat the two uses separately: which rows of W_E does the look-up touch, and what "
        "does the head's product h @ W_E^T contribute to every row?",
        "The head's part is a matrix product over all (batch, position) pairs; flatten them "
        "into one axis first.",
    ],
    atol=1e-9,
    rtol=1e-9,
    check_dtype=True,
    kind="implement",
    library=_library_shared_grad,
    forbidden=(
        "torch.Tensor.backward",
        "torch.autograd.backward",
        "torch.autograd.grad",
        "torch.func.grad",
        "torch.func.vjp",
        "torch.autograd.functional.vjp",
    ),
)


# --------------------------------------------------------------------------- q6: reach of a mask


def _reference_reachable(mask, n_layers=1):
    """Which inputs can change which outputs of ``n_layers`` attention layers that all use
    ``mask`` (``mask[i, j]``: query i may attend to key j), with residual connections."""
    t = mask.shape[0]
    own = torch.eye(t, dtype=torch.bool)
    step = mask | own  # one layer: the attended positions, and the residual's own position
    reach = own  # zero layers: every output is its own input
    for _ in range(n_layers):
        reach = (step.to(torch.int64) @ reach.to(torch.int64)) > 0  # compose, back to 0/1
    return reach


def _reach_no_residual(mask, n_layers=1):
    reach = torch.eye(mask.shape[0], dtype=torch.bool)
    for _ in range(n_layers):
        reach = (mask.to(torch.int64) @ reach.to(torch.int64)) > 0
    return reach


def _reach_one_layer(mask, n_layers=1):
    return mask | torch.eye(mask.shape[0], dtype=torch.bool)


def _reach_transposed(mask, n_layers=1):
    return _reference_reachable(mask, n_layers).T


def _reach_counts_overflow(mask, n_layers=1):
    step = (mask | torch.eye(mask.shape[0], dtype=torch.bool)).to(torch.int64)
    return torch.linalg.matrix_power(step, n_layers) > 0  # path counts wrap around in int64


def _reach_one_layer_too_many(mask, n_layers=1):
    return _reference_reachable(mask, n_layers + 1)


def _window_mask(t, w):
    """Sliding-window causal mask: query i attends to keys i - w + 1 .. i."""
    i = torch.arange(t)
    return (i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - w)


def _prefix_lm_mask(t, prefix):
    """Causal, except that the first ``prefix`` positions also see each other."""
    mask = causal_mask(t).clone()
    mask[:prefix, :prefix] = True
    return mask


def _reach_cases():
    i = torch.arange(20)
    strided = (i[None, :] <= i[:, None]) & ((i[:, None] - i[None, :]) % 4 == 0)
    strided |= (i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] < 2)
    earlier = torch.ones(7, 7, dtype=torch.bool).tril(-1)  # strictly earlier keys only
    return [
        Case("causal mask, T=6, 2 layers", (causal_mask(6), 2)),
        Case("sliding window of 3, T=12, 2 layers", (_window_mask(12, 3), 2)),
        Case("only the required arguments: sliding window of 3, T=10", (_window_mask(10, 3),)),
        Case("sliding window of 3, T=12, 4 layers", (_window_mask(12, 3), 4)),
        Case("no mask (all True), T=5, 1 layer", (torch.ones(5, 5, dtype=torch.bool), 1)),
        Case("strictly earlier keys (False on the diagonal), T=7, 3 layers", (earlier, 3)),
        Case(
            "strided: the 2 latest keys and every 4th earlier one, T=20, 2 layers",
            (strided, 2),
        ),
        Case("edge: 0 layers", (_window_mask(6, 2), 0)),
        Case("sliding window of 5, T=300, 50 layers", (_window_mask(300, 5), 50)),
        Case("no mask (all True), T=64, 30 layers", (torch.ones(64, 64, dtype=torch.bool), 30)),
        Case(
            "prefix-LM: 40 prefix positions see each other, the 24 after them are causal, "
            "T=64, 30 layers",
            (_prefix_lm_mask(64, 40), 30),
        ),
    ]


q6 = Question(
    "ch06.q6",
    "What a mask lets through, layer after layer",
    reference=_reference_reachable,
    cases=_reach_cases,
    mistakes=[
        Mistake(
            "the residual connection left out",
            _reach_no_residual,
            "Every sub-layer adds its input back (x + attention(x)), so each output always "
            "depends on its own position, even when the mask hides the diagonal.",
        ),
        Mistake(
            "one layer too many",
            _reach_one_layer_too_many,
            "Zero layers change nothing (the identity); each layer composes one more step.",
        ),
        Mistake(
            "one layer's reach returned whatever n_layers is",
            _reach_one_layer,
            "The second layer attends to outputs of the first, each of which already mixes "
            "several inputs: compose the one-layer reach n_layers times.",
        ),
        Mistake(
            "rows and columns swapped",
            _reach_transposed,
            "Row i is output position i and column j input position j, as in the mask "
            "(mask[i, j]: query i may read key j); a causal stack gives a lower triangle.",
        ),
        Mistake(
            "path counts in int64 (matrix power), which wrap around",
            _reach_counts_overflow,
            "The number of paths grows like T^n_layers and overflows int64 (with T = 64 and "
            "30 layers every count is 64^29, which is 0 modulo 2^64): turn the product back "
            "into booleans after every layer.",
        ),
    ],
    hints=[
        "Write one layer's reach as a boolean (T, T) matrix first: which inputs can the output "
        "at position i depend on after attention and the residual addition?",
        "Two layers: output i reads the first layer's outputs k, and each of those reads "
        "inputs j. That is a matrix product, read as booleans.",
    ],
    check_dtype=True,
    kind="implement",
    library_note=(
        "checked by perturbing stacks of tfbook.model.EncoderLayer with the same masks in "
        "tests/test_exercises_ch06.py"
    ),
)


EXERCISES = ExerciseSet.collect(globals(), "Chapter 6 exercises")
progress = EXERCISES.progress
__all__ = [*EXERCISES.names, "EXERCISES", "progress"]
