"""Tests for tfbook.model and tfbook.interop (chapter 6) against independent references.

References we did not write: ``torch.nn.TransformerEncoderLayer`` / ``TransformerDecoderLayer`` /
``Transformer`` (weights copied, float64) and Hugging Face's ``GPT2LMHeadModel`` and
``BertModel`` (random weights from small configs, no network).
"""

from __future__ import annotations

import copy
import dataclasses
import warnings

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

from tfbook.attention import causal_mask, mask_from_torch
from tfbook.interop import (
    bert_config,
    bert_from_hf,
    bert_from_hf_state_dict,
    decoder_layer_from_torch,
    encoder_decoder_from_torch,
    encoder_layer_from_torch,
    gpt2_config,
    gpt_from_hf,
    gpt_from_hf_state_dict,
)
from tfbook.model import (
    BERT,
    GPT,
    PUBLISHED,
    Decoder,
    DecoderLayer,
    Encoder,
    EncoderDecoder,
    EncoderLayer,
    LMHead,
    TransformerConfig,
    count_parameters,
    fuse_layer_norms,
    meta_model,
    written_out_layer_norms,
)
from tfbook.norm import FusedLayerNorm, LayerNorm

F64 = torch.float64
TIGHT = dict(atol=1e-10, rtol=0.0)
V, D, H, D_FF, MAX_LEN = 50, 32, 4, 64, 16
ARCHITECTURES = [(False, "relu"), (True, "gelu")]  # post-LN + ReLU (paper), pre-LN + GELU
ARCH_IDS = ["post-LN-relu", "pre-LN-gelu"]


def small_config(**overrides) -> TransformerConfig:
    settings = dict(vocab_size=V, d_model=D, n_heads=H, d_ff=D_FF, n_layers=2, max_len=MAX_LEN)
    return TransformerConfig(**(settings | {"dropout": 0.0} | overrides))


def perturb_(module: nn.Module, seed: int) -> nn.Module:
    """Add noise to every parameter (LayerNorms start at 1 and 0, which would hide swaps)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def padded_batch(seed: int, b: int = 3, t: int = 7, lengths=(7, 5, 2)) -> tuple[torch.Tensor, ...]:
    """Token ids in [1, V) with pad_id=0 after each length, and the real-token mask (B, T)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, V, (b, t), generator=g)
    real = torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]  # (B, T)
    return ids.masked_fill(~real, 0), real


def torch_transformer(norm_first: bool, activation: str) -> nn.Transformer:
    with warnings.catch_warnings():
        # a pre-LN encoder warns at construction that it cannot use nested tensors
        warnings.filterwarnings("ignore", message="enable_nested_tensor is True")
        tr = nn.Transformer(
            D, H, 2, 3, D_FF, 0.1, activation, batch_first=True, norm_first=norm_first, dtype=F64
        )
    # With nested tensors PyTorch returns zeros at padded source positions (and warns that
    # nested tensors are a prototype); the plain path computes them like ours.
    tr.encoder.enable_nested_tensor = tr.encoder.use_nested_tensor = False
    return perturb_(tr, 3).eval()


# ------------------------------------------------------------------- layers vs torch.nn


@pytest.mark.parametrize(("norm_first", "activation"), ARCHITECTURES, ids=ARCH_IDS)
def test_encoder_layer_equals_torch_encoder_layer_with_masks(norm_first, activation):
    ref = nn.TransformerEncoderLayer(
        D, H, D_FF, 0.1, activation, batch_first=True, norm_first=norm_first, dtype=F64
    )
    ref = perturb_(ref, 0).eval()
    ours = encoder_layer_from_torch(ref)
    assert not ours.training and ours.self_attn.sublayer.q_proj.weight.dtype == F64
    x = torch.randn(3, 7, D, dtype=F64)
    ids, real = padded_batch(1)
    blocked = ~causal_mask(7)  # PyTorch's convention: True = may NOT attend
    with torch.no_grad():
        for attn_mask, key_padding in [
            (None, None),
            (blocked, None),
            (None, ~real),
            (blocked, ~real),
        ]:
            expected = ref(x, src_mask=attn_mask, src_key_padding_mask=key_padding)
            got = ours(x, mask=mask_from_torch(attn_mask, key_padding))
            torch.testing.assert_close(got, expected, **TIGHT)


@pytest.mark.parametrize(("norm_first", "activation"), ARCHITECTURES, ids=ARCH_IDS)
def test_decoder_layer_equals_torch_decoder_layer_with_masks(norm_first, activation):
    ref = nn.TransformerDecoderLayer(
        D, H, D_FF, 0.1, activation, batch_first=True, norm_first=norm_first, dtype=F64
    )
    ref = perturb_(ref, 2).eval()
    ours = decoder_layer_from_torch(ref)
    y, memory = torch.randn(3, 5, D, dtype=F64), torch.randn(3, 7, D, dtype=F64)
    _, real = padded_batch(3)
    with torch.no_grad():
        expected = ref(y, memory, tgt_mask=~causal_mask(5), memory_key_padding_mask=~real)
        got = ours(y, memory, self_mask=causal_mask(5), memory_mask=real[:, None, :])
    torch.testing.assert_close(got, expected, **TIGHT)


@pytest.mark.parametrize(("norm_first", "activation"), ARCHITECTURES, ids=ARCH_IDS)
def test_encoder_decoder_equals_nn_transformer(norm_first, activation):
    tr = torch_transformer(norm_first, activation)
    model = encoder_decoder_from_torch(tr, vocab_size=V, max_len=MAX_LEN)
    # nn.Transformer ends both stacks with a LayerNorm even in post-LN (the paper does not):
    # encoder_decoder_from_torch says so in the config instead of hiding it
    assert model.cfg.final_norm is True and isinstance(model.encoder.norm, LayerNorm)
    src, real = padded_batch(4)
    tgt = torch.randint(1, V, (3, 5))
    with torch.no_grad():
        x, y = model.src_embed(src), model.tgt_embed(tgt)  # nn.Transformer has no embeddings
        memory = tr.encoder(x, src_key_padding_mask=~real)
        torch.testing.assert_close(model.encode(src), memory, **TIGHT)
        hidden = tr(
            x,
            y,
            tgt_mask=~causal_mask(5),
            src_key_padding_mask=~real,
            memory_key_padding_mask=~real,
        )
        torch.testing.assert_close(model(src, tgt), model.head(hidden), **TIGHT)


def test_paper_model_has_no_final_norm_but_pre_ln_does():
    assert isinstance(EncoderDecoder(small_config()).encoder.norm, nn.Identity)
    pre_ln = EncoderDecoder(small_config(norm_first=True))
    assert isinstance(pre_ln.encoder.norm, LayerNorm)
    assert isinstance(pre_ln.decoder.norm, LayerNorm)


def test_converting_from_torch_rejects_other_modules_and_activations():
    with pytest.raises(TypeError, match="layer must be nn.TransformerEncoderLayer, got Linear"):
        encoder_layer_from_torch(nn.Linear(2, 2))
    silu = nn.TransformerEncoderLayer(D, H, D_FF, activation=nn.SiLU(), batch_first=True)
    with pytest.raises(ValueError, match="activation must be relu, gelu"):
        encoder_layer_from_torch(silu)


# ------------------------------------------------------------------- Hugging Face weights


def test_gpt_matches_hugging_face_gpt2_logits():
    torch.manual_seed(5)
    hf_cfg = GPT2Config(
        vocab_size=V, n_positions=MAX_LEN, n_embd=D, n_layer=2, n_head=H,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    hf = GPT2LMHeadModel(hf_cfg).to(F64).eval()
    ours = gpt_from_hf(hf)
    assert ours.cfg.activation == "gelu_tanh" and ours.cfg.norm_first
    assert not ours.training and ours.head.weight is ours.embeddings.token.weight
    ids = torch.randint(0, V, (2, MAX_LEN))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf(ids).logits, **TIGHT)
    again = gpt_from_hf_state_dict(hf.state_dict(), gpt2_config(hf_cfg))  # the explicit route
    torch.testing.assert_close(again.eval()(ids), ours(ids), **TIGHT)


def test_bert_matches_hugging_face_bert_with_padding():
    torch.manual_seed(6)
    hf_cfg = BertConfig(
        vocab_size=V, hidden_size=D, num_hidden_layers=2, num_attention_heads=H,
        intermediate_size=D_FF, max_position_embeddings=MAX_LEN,
    )  # fmt: skip
    hf = BertModel(hf_cfg).to(F64).eval()
    ours = bert_from_hf(hf)
    assert ours.cfg.eps == 1e-12 and ours.cfg.activation == "gelu" and not ours.cfg.norm_first
    ids, real = padded_batch(7)
    token_types = (torch.arange(7) >= 3).long().expand(3, 7)  # segments A and B
    attention_mask = real.long()  # Hugging Face style: 1 = real token
    with torch.no_grad():
        expected = hf(ids, attention_mask=attention_mask, token_type_ids=token_types)
        got = ours(ids, token_type_ids=token_types, attention_mask=attention_mask)
    torch.testing.assert_close(got, expected.last_hidden_state, **TIGHT)
    again = bert_from_hf_state_dict(hf.state_dict(), bert_config(hf_cfg)).eval()
    torch.testing.assert_close(again(ids, token_types, real), got, **TIGHT)  # a bool mask


def test_hf_state_dict_with_missing_or_extra_layers_is_refused():
    hf_cfg = GPT2Config(vocab_size=V, n_positions=MAX_LEN, n_embd=D, n_layer=2, n_head=H)
    state, cfg = GPT2LMHeadModel(hf_cfg).state_dict(), gpt2_config(hf_cfg)
    with pytest.raises(ValueError, match=r"state_dict has no entry 'h\.2\.attn\.c_attn\.weight'"):
        gpt_from_hf_state_dict(state, dataclasses.replace(cfg, n_layers=3))
    with pytest.raises(ValueError, match=r"does not use: \['h\.1\.attn\.c_attn\.bias'"):
        gpt_from_hf_state_dict(state, dataclasses.replace(cfg, n_layers=1))
    state["lm_head.weight"] = state["lm_head.weight"] + 1.0
    with pytest.raises(ValueError, match="lm_head.weight differs from wte.weight"):
        gpt_from_hf_state_dict(state, cfg)


# ------------------------------------------------------------------------ parameter counts


def hand_count(cls: type, cfg: TransformerConfig) -> int:
    """The parameter count from the formula, written out independently of the modules."""
    d, f = cfg.d_model, cfg.d_ff
    attention = 4 * (d * d + d)  # W^Q, W^K, W^V, W^O with biases
    ffn = d * f + f + f * d + d
    norm = 2 * d  # gain and bias
    encoder_layer = attention + ffn + 2 * norm
    decoder_layer = 2 * attention + ffn + 3 * norm
    embeddings = cfg.vocab_size * d + cfg.n_token_types * d
    embeddings += cfg.max_len * d if cfg.positional == "learned" else 0
    embeddings += norm if cfg.embed_norm else 0
    final = norm if cfg.use_final_norm else 0
    head = 0 if cfg.tie_weights else cfg.vocab_size * d
    if cls is BERT:
        return embeddings + cfg.n_layers * encoder_layer + final
    if cls is GPT:
        return embeddings + cfg.n_layers * encoder_layer + final + head
    n_embeddings = 1 if cfg.tie_weights else 2  # shared source/target embedding when tied
    return (
        n_embeddings * embeddings
        + cfg.n_layers * encoder_layer
        + cfg.decoder_layers * decoder_layer
        + 2 * final
        + head
    )


PUBLISHED_TOLERANCE = {"transformer-base": 0.035, "bert-base": 0.011, "gpt2-small": 0.004}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_parameter_counts(name):
    cls, cfg, published = PUBLISHED[name]
    model = meta_model(cls, cfg)
    assert all(p.is_meta for p in model.parameters())  # nothing allocated
    n = count_parameters(model)
    print(f"{name}: {n:,} vs published {published:,} ({n / published - 1:+.2%})")
    assert n == hand_count(cls, cfg)
    assert abs(n / published - 1) < PUBLISHED_TOLERANCE[name]


def test_published_counts_equal_hugging_face_counts():
    with torch.device("meta"):
        hf_gpt2, hf_bert = GPT2LMHeadModel(GPT2Config()), BertModel(BertConfig())
    cls, cfg, _ = PUBLISHED["gpt2-small"]
    assert count_parameters(meta_model(cls, cfg)) == count_parameters(hf_gpt2) == 124_439_808
    cls, cfg, _ = PUBLISHED["bert-base"]
    pooler = 768 * 768 + 768  # BertModel's pooler, which our BERT leaves out
    assert count_parameters(meta_model(cls, cfg)) + pooler == count_parameters(hf_bert)


@pytest.mark.parametrize("cls", [BERT, GPT, EncoderDecoder])
@pytest.mark.parametrize(
    "overrides",
    [{}, {"tie_weights": False}, {"norm_first": True, "positional": "learned"},
     {"n_token_types": 2, "embed_norm": True, "n_decoder_layers": 3}],
)  # fmt: skip
def test_counts_of_small_models_match_the_formula(cls, overrides):
    cfg = small_config(**overrides)
    assert count_parameters(cls(cfg)) == hand_count(cls, cfg)


def test_count_parameters_trainable_only():
    model = GPT(small_config())
    model.embeddings.token.embedding.weight.requires_grad_(False)  # also the tied head
    assert count_parameters(model) == count_parameters(model, trainable_only=False) - V * D


# --------------------------------------------------------------------------- weight tying


def test_tied_head_shares_storage_with_the_embedding():
    model = GPT(small_config()).to(F64)  # a dtype change must not untie them
    assert model.head.weight is model.embeddings.token.weight
    assert model.head.weight.data_ptr() == model.embeddings.token.embedding.weight.data_ptr()
    with torch.no_grad():
        model.embeddings.token.weight[3].fill_(1.0)
    h = torch.zeros(1, 1, D, dtype=F64)
    h[..., 0] = 1.0
    assert model.head(h)[0, 0, 3] == 1.0  # the head sees the embedding's change


def test_tying_saves_v_times_d_model_parameters():
    tied, untied = GPT(small_config()), GPT(small_config(tie_weights=False))
    assert count_parameters(untied) - count_parameters(tied) == V * D
    assert untied.head.weight is not untied.embeddings.token.weight
    # the original Transformer shares source embedding, target embedding and output layer
    tied, untied = EncoderDecoder(small_config()), EncoderDecoder(small_config(tie_weights=False))
    assert tied.src_embed is tied.tgt_embed and tied.head.weight is tied.tgt_embed.token.weight
    assert count_parameters(untied) - count_parameters(tied) == 2 * V * D


def test_tied_gradient_collects_both_uses():
    model = GPT(small_config())
    model(torch.randint(0, V, (2, 6))).logsumexp(-1).sum().backward()
    grad = model.embeddings.token.weight.grad
    assert grad is model.head.weight.grad
    assert (grad.abs().sum(dim=1) > 0).all()  # every row: the head uses all of them


# --------------------------------------------------------------------------- the families


def test_decoder_only_is_causal_exactly():
    torch.manual_seed(8)
    model = GPT(small_config()).eval()
    ids = torch.randint(0, V, (2, 12))
    logits = model(ids)
    for t in range(11):
        changed = ids.clone()
        changed[:, t + 1 :] = (ids[:, t + 1 :] + 1 + t) % V  # a different later context
        new = model(changed)
        assert torch.equal(new[:, : t + 1], logits[:, : t + 1])
        assert not torch.allclose(new[:, t + 1 :], logits[:, t + 1 :])


def test_decoder_defaults_to_the_causal_mask():
    torch.manual_seed(9)
    decoder = Decoder(small_config(), cross_attention=False).eval()
    x = torch.randn(2, 6, D)
    torch.testing.assert_close(decoder(x), decoder(x, self_mask=causal_mask(6)), atol=0, rtol=0)


def test_encoder_only_is_bidirectional():
    torch.manual_seed(10)
    model = BERT(small_config(n_token_types=2, embed_norm=True)).eval()
    ids = torch.randint(0, V, (2, 8))
    changed = ids.clone()
    changed[:, -1] = (ids[:, -1] + 1) % V  # only the last token
    moved = (model(changed) - model(ids)).abs().amax(dim=-1)  # (B, T)
    assert (moved[:, 0] > 1e-4).all()  # the first token saw the change


def test_encoder_decoder_output_depends_on_the_source():
    torch.manual_seed(11)
    model = EncoderDecoder(small_config()).eval()
    src, tgt = torch.randint(1, V, (2, 7)), torch.randint(1, V, (2, 5))
    other = src.clone()
    other[:, 3] = (src[:, 3] + 1) % (V - 1) + 1
    assert not torch.allclose(model(src, tgt), model(other, tgt))
    # and the target side is causal, like GPT
    later = tgt.clone()
    later[:, 3:] = (tgt[:, 3:] + 1) % (V - 1) + 1
    torch.testing.assert_close(model(src, later)[:, :3], model(src, tgt)[:, :3], atol=0, rtol=0)


def test_source_padding_does_not_change_real_outputs():
    torch.manual_seed(12)
    model = EncoderDecoder(small_config()).to(F64).eval()
    src, tgt = torch.randint(1, V, (1, 5)), torch.randint(1, V, (1, 4))
    alone = model(src, tgt)
    padded = torch.cat([src, torch.zeros(1, 4, dtype=src.dtype)], dim=1)  # pad_id = 0
    torch.testing.assert_close(model(padded, tgt), alone, atol=1e-12, rtol=0)
    memory = model.encode(padded)
    torch.testing.assert_close(memory[:, :5], model.encode(src), atol=1e-12, rtol=0)
    longer = torch.randint(1, V, (1, 9))  # a batch: a long source next to the padded one
    batch = model(torch.cat([longer, padded]), torch.cat([tgt, tgt]))
    torch.testing.assert_close(batch[1:], alone, atol=1e-12, rtol=0)


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("family", ["gpt", "bert", "src", "tgt"])
def test_token_ids_out_of_range_are_named(family):
    cfg = small_config(n_token_types=2)
    good = torch.randint(1, V, (2, 5))
    too_big, negative = good.clone(), good.clone()
    too_big[1, 2], negative[0, 4] = V, -1
    for bad, got in ((too_big, f" to {V}"), (negative, "got values from -1 to")):
        with pytest.raises(ValueError) as info:
            if family == "gpt":
                GPT(cfg)(bad)
            elif family == "bert":
                BERT(cfg)(bad)
            elif family == "src":
                EncoderDecoder(cfg)(bad, good)
            else:
                EncoderDecoder(cfg)(good, bad)
        name = {"gpt": "ids", "bert": "ids"}.get(family, family)
        assert f"{name} must be token ids in [0, V={V})" in str(info.value)
        assert got in str(info.value)


def test_float_token_ids_are_refused():
    with pytest.raises(TypeError, match="ids must hold integer token ids, got dtype torch.float32"):
        GPT(small_config())(torch.zeros(1, 3))


@pytest.mark.parametrize("positional", ["sinusoidal", "learned"])
def test_sequence_longer_than_max_len_is_refused(positional):
    model = GPT(small_config(positional=positional))
    with pytest.raises(ValueError, match=r"ids must have at most max_len=16 positions.*got T=17"):
        model(torch.ones(1, MAX_LEN + 1, dtype=torch.long))
    assert model(torch.ones(1, MAX_LEN, dtype=torch.long)).shape == (1, MAX_LEN, V)


def test_memory_of_the_wrong_width_is_refused():
    decoder = Decoder(small_config())
    x = torch.randn(2, 5, D)
    with pytest.raises(ValueError, match=r"memory must have shape \(B=2, T_k, d_model=32\), got "):
        decoder(x, memory=torch.randn(2, 7, D // 2))
    model = EncoderDecoder(small_config())
    with pytest.raises(ValueError, match=r"memory must have shape .*got \(2, 7, 16\)"):
        model.decode(torch.ones(2, 5, dtype=torch.long), torch.randn(2, 7, D // 2))
    with pytest.raises(ValueError, match=r"memory .* is required .* got None"):
        decoder(x)
    with pytest.raises(ValueError, match="memory and memory_mask must be None"):
        Decoder(small_config(), cross_attention=False)(x, memory=torch.randn(2, 7, D))


def test_masks_of_the_wrong_dtype_or_shape_are_refused():
    layer, x = EncoderLayer(D, H, D_FF), torch.randn(2, 6, D)
    with pytest.raises(TypeError, match=r"mask must be a boolean tensor .*got dtype torch.float32"):
        layer(x, mask=causal_mask(6).float())
    with pytest.raises(ValueError, match=r"mask must broadcast to .* \(2, 6, 6\), got \(7, 7\)"):
        layer(x, mask=causal_mask(7))
    with pytest.raises(ValueError, match=r"mask must have shape \(T_q=6, T_k=6\).*got \(6,\)"):
        layer(x, mask=torch.ones(6, dtype=torch.bool))
    decoder_layer, memory = DecoderLayer(D, H, D_FF), torch.randn(2, 4, D)
    with pytest.raises(TypeError, match="self_mask must be a boolean tensor"):
        decoder_layer(x, memory, self_mask=torch.zeros(6, 6))
    with pytest.raises(
        ValueError, match=r"memory_mask must broadcast .*\(2, 6, 4\), got \(2, 1, 6"
    ):
        decoder_layer(x, memory, memory_mask=torch.ones(2, 1, 6, dtype=torch.bool))
    bert, ids = BERT(small_config()), torch.ones(2, 6, dtype=torch.long)
    with pytest.raises(TypeError, match="attention_mask must be a boolean or 0/1 integer tensor"):
        bert(ids, attention_mask=torch.ones(2, 6))
    with pytest.raises(
        ValueError, match=r"attention_mask must have shape \(B=2, T=6\), got \(2, 5"
    ):
        bert(ids, attention_mask=torch.ones(2, 5, dtype=torch.long))


BAD_CONFIGS = [
    (
        {"d_model": 30},
        ValueError,
        "d_model must be divisible by n_heads, got d_model=30, n_heads=4",
    ),
    (
        {"activation": "swish"},
        ValueError,
        "activation must be one of ('relu', 'gelu', 'gelu_tanh')",
    ),
    ({"activation": "swish"}, ValueError, "got 'swish'"),
    ({"positional": "rotary"}, ValueError, "positional must be one of ('sinusoidal', 'learned')"),
    ({"n_heads": 0}, ValueError, "n_heads must be a positive int, got 0"),
    ({"dropout": 1.0}, ValueError, "dropout must be a float in [0, 1), got 1.0"),
    ({"n_layers": 2.0}, TypeError, "n_layers must be a positive int, got float 2.0"),
    ({"pad_id": V}, ValueError, f"pad_id must be a token id in [0, vocab_size={V}), got {V}"),
    ({"norm_first": "yes"}, TypeError, "norm_first must be a bool, got str 'yes'"),
    ({"d_model": 9, "n_heads": 3}, ValueError, "d_model must be even with positional='sinusoidal'"),
]


@pytest.mark.parametrize(("overrides", "error", "message"), BAD_CONFIGS)
def test_invalid_config_values_are_named(overrides, error, message):
    with pytest.raises(error) as info:
        small_config(**overrides)
    assert message in str(info.value)


def test_other_bad_arguments_are_named():
    ids = torch.ones(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="token_type_ids must be None: .*n_token_types=0"):
        BERT(small_config())(ids, token_type_ids=0 * ids)
    with pytest.raises(ValueError, match=r"token_type_ids must be token ids in \[0, V=2\)"):
        BERT(small_config(n_token_types=2))(ids, token_type_ids=2 * ids)
    with pytest.raises(ValueError, match=r"tied_to must have shape \(V=10, d_model=8\), got \(8, "):
        LMHead(8, 10, tied_to=nn.Parameter(torch.zeros(8, 10)))
    with pytest.raises(ValueError, match=r"h must have shape \(\.\.\., d_model=8\)"):
        LMHead(8, 10)(torch.zeros(2, 3, 7))
    with pytest.raises(TypeError, match="cfg must be a TransformerConfig"):
        meta_model(GPT, {"vocab_size": 10})
    with pytest.raises(ValueError, match=r"x must have shape \(B, T, d_model=32\), got \(2, 5, 1"):
        Encoder(small_config())(torch.zeros(2, 5, 16))


# ------------------------------------------------------------------------------- fast path


@pytest.mark.parametrize("cls", [BERT, GPT, EncoderDecoder])
def test_layer_norm_swaps_both_ways_keep_the_parameters(cls):
    cfg = small_config(n_token_types=2, embed_norm=True) if cls is BERT else small_config()
    model = cls(cfg)  # the fused kernel everywhere, by default
    norms = [m for m in model.modules() if isinstance(m, LayerNorm)]
    assert norms and all(type(m) is FusedLayerNorm for m in norms)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = [id(p) for p in model.parameters()]
    for swap, kind in ((written_out_layer_norms, LayerNorm), (fuse_layer_norms, FusedLayerNorm)):
        assert swap(model) is model
        norms = [m for m in model.modules() if isinstance(m, LayerNorm)]
        assert norms and all(type(m) is kind for m in norms)
        assert all(m.check_inputs is False for m in norms)  # still trusting the model
        assert [id(p) for p in model.parameters()] == params  # the same Parameter objects
        assert list(model.state_dict()) == list(before)
        assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def _explicit_copy(model: nn.Module) -> nn.Module:
    """The same model with every LayerNorm computing chapter 5's written-out formula."""
    return written_out_layer_norms(copy.deepcopy(model))


@pytest.mark.parametrize("norm_first", [True, False])
def test_fast_path_equals_the_written_out_layer_norm_in_training(norm_first):
    """Loss and every gradient of a training step agree with the explicit LayerNorm."""
    torch.manual_seed(13)
    model = EncoderDecoder(small_config(norm_first=norm_first))
    model = perturb_(model.double(), 14).train()
    slow = _explicit_copy(model)
    assert not any(isinstance(m, FusedLayerNorm) for m in slow.modules())
    assert list(slow.state_dict()) == list(model.state_dict())
    src, tgt = torch.randint(1, V, (3, 9)), torch.randint(1, V, (3, 6))
    losses = []
    for m in (model, slow):
        loss = nn.functional.cross_entropy(m(src, tgt).flatten(0, 1), tgt.flatten())
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[0], losses[1], **TIGHT)
    for (name, p), q in zip(model.named_parameters(), slow.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-10, rtol=1e-8, msg=name)


# ------------------------------------------------------------------------------ docstrings


# ------------------------------------------------------------- checked once, at the boundary


def _count_checks(monkeypatch) -> dict[str, int]:
    """Count the calls of the checks a layer makes on its inputs, wherever they come from."""
    from tfbook import _validate

    counts: dict[str, int] = {}
    for name in ("token_ids", "last_axis", "attn_mask", "bool_mask", "shape", "nonneg_int"):
        original = getattr(_validate, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            counts[_name] = counts.get(_name, 0) + 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(_validate, name, counted)
    return counts


@pytest.mark.parametrize("n_layers", [1, 4])
def test_a_model_checks_its_inputs_once_and_its_layers_trust_it(monkeypatch, n_layers):
    torch.manual_seed(0)
    model = GPT(small_config(n_layers=n_layers, norm_first=True, positional="learned"))
    counts = _count_checks(monkeypatch)
    model(torch.tensor([[1, 2, 3, 4]]))
    assert counts.get("token_ids") == 1  # the ids, once (their range was checked 3 times)
    assert "last_axis" not in counts and "attn_mask" not in counts and "bool_mask" not in counts
    # what is left: split_heads / merge_heads's own dimension check, 4 per attention layer
    assert counts.get("shape", 0) == 4 * n_layers


def test_a_layer_used_on_its_own_still_checks_its_inputs():
    layer = GPT(small_config(norm_first=True)).decoder.layers[0]
    assert layer.check_inputs is False  # inside the model it trusts the model
    standalone = DecoderLayer(D, H, D_FF, cross_attention=False)
    assert standalone.check_inputs and not standalone.self_attn.check_inputs
    with pytest.raises(
        ValueError, match=r"x must have shape \(B, T, d_model=32\), got \(2, 5, 8\)"
    ):
        standalone(torch.randn(2, 5, 8))


# ------------------------------------------------- GPT-2's initialisation (Radford et al. 2019)

INIT_LAYERS, INIT_D = 6, 256


def _init_gpt2_config() -> TransformerConfig:
    return TransformerConfig(
        vocab_size=500, d_model=INIT_D, n_heads=4, d_ff=4 * INIT_D, n_layers=INIT_LAYERS,
        max_len=64, activation="gelu_tanh", norm_first=True, positional="learned",
        scale_embeddings=False,
    )  # fmt: skip


def _weight_stds_ours(model: GPT) -> dict[str, list[float]]:
    layers = [(layer.self_attn.sublayer, layer.ffn.sublayer) for layer in model.decoder.layers]
    return {
        "attention out-projection": [a.out_proj.weight.std().item() for a, _ in layers],
        "FFN second linear": [f.linear2.weight.std().item() for _, f in layers],
        "attention in-projection": [a.q_proj.weight.std().item() for a, _ in layers],
        "FFN first linear": [f.linear1.weight.std().item() for _, f in layers],
        "token embedding": [model.embeddings.token.weight.std().item()],
        "position table": [model.embeddings.position.table.weight.std().item()],
    }


def _weight_stds_hf(hf: GPT2LMHeadModel) -> dict[str, list[float]]:
    blocks = hf.transformer.h
    return {
        "attention out-projection": [b.attn.c_proj.weight.std().item() for b in blocks],
        "FFN second linear": [b.mlp.c_proj.weight.std().item() for b in blocks],
        "attention in-projection": [b.attn.c_attn.weight.std().item() for b in blocks],
        "FFN first linear": [b.mlp.c_fc.weight.std().item() for b in blocks],
        "token embedding": [hf.transformer.wte.weight.std().item()],
        "position table": [hf.transformer.wpe.weight.std().item()],
    }


def _stds_agree(ours: dict[str, list[float]], theirs: dict[str, list[float]]) -> bool:
    """Every weight's standard deviation within 3% of GPT-2's (the sampling error of a std
    over 65,536 or more draws is about 0.3%; the wrong scalings are off by 41% or more)."""
    return all(
        abs(a / b - 1) < 0.03 for k in theirs for a, b in zip(ours[k], theirs[k], strict=True)
    )


@pytest.fixture(scope="module")
def fresh_gpt2_stds() -> dict[str, list[float]]:
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=500, n_embd=INIT_D, n_head=4, n_layer=INIT_LAYERS, n_positions=64)
    return _weight_stds_hf(GPT2LMHeadModel(cfg))


def test_gpt_initialisation_has_gpt2_weight_statistics(fresh_gpt2_stds):
    torch.manual_seed(1)
    ours = _weight_stds_ours(GPT(_init_gpt2_config()))
    assert _stds_agree(ours, fresh_gpt2_stds), (ours, fresh_gpt2_stds)
    residual = 0.02 / (2 * INIT_LAYERS) ** 0.5  # GPT-2's 1/sqrt(2N) for the residual writes
    for name in ("attention out-projection", "FFN second linear"):
        assert all(abs(s / residual - 1) < 0.03 for s in fresh_gpt2_stds[name])


@pytest.mark.parametrize(
    "factor", [1.0, INIT_LAYERS**-0.5], ids=["no scaling", "1/sqrt(N) instead of 1/sqrt(2N)"]
)
def test_a_wrong_residual_scaling_fails_the_comparison(fresh_gpt2_stds, factor):
    torch.manual_seed(1)
    model = GPT(_init_gpt2_config())
    with torch.no_grad():
        for layer in model.decoder.layers:
            nn.init.normal_(layer.self_attn.sublayer.out_proj.weight, std=0.02 * factor)
            nn.init.normal_(layer.ffn.sublayer.linear2.weight, std=0.02 * factor)
    assert not _stds_agree(_weight_stds_ours(model), fresh_gpt2_stds)


def test_bert_keeps_one_standard_deviation_for_every_linear_layer():
    torch.manual_seed(2)
    bert = BERT(small_config(d_model=128, d_ff=512, n_layers=4, positional="learned"))
    for layer in bert.encoder.layers:
        for linear in (layer.self_attn.sublayer.out_proj, layer.ffn.sublayer.linear2):
            assert abs(linear.weight.std().item() / 0.02 - 1) < 0.05
