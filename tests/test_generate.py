"""Tests for tfbook.generate and the KV cache of tfbook.attention / tfbook.model (chapter 7).

References: the model's own full forward pass (the cached, token-by-token logits must equal
it at every position, float64), decoding without the cache, hand-computed filter cases, a
hand-built bigram model whose best sequence is known, and a real (tiny) training run.
"""

from __future__ import annotations

import pytest
import torch

from tfbook.attention import KVCache, MultiHeadAttention, causal_mask
from tfbook.data import collate_pairs, reverse_task
from tfbook.generate import (
    beam_search,
    generate,
    gnmt_length_penalty,
    greedy_translate,
    sample_next,
    sequence_log_prob,
    top_k_filter,
    top_p_filter,
)
from tfbook.model import GPT, DecoderCache, EncoderDecoder, TransformerConfig
from tfbook.objectives import lm_loss, teacher_forcing
from tfbook.training import TrainConfig, train

F64 = torch.float64
TIGHT = dict(atol=1e-12, rtol=0.0)
V, BOS, EOS, PAD = 23, 2, 3, 0
ARCHITECTURES = [
    dict(norm_first=True, positional="learned", activation="gelu_tanh"),
    dict(norm_first=False, positional="sinusoidal", activation="relu"),
]
ARCH_IDS = ["pre-LN-learned", "post-LN-sinusoidal"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread (and far steadier on a busy shared CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_config(**overrides) -> TransformerConfig:
    settings = dict(vocab_size=V, d_model=32, n_heads=4, d_ff=64, n_layers=2, max_len=24)
    return TransformerConfig(**(settings | {"dropout": 0.0} | overrides))


def perturbed(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """float64, eval mode, noise on every parameter (LayerNorms start at 1 and 0)."""
    g = torch.Generator().manual_seed(seed)
    model = model.double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def gpt(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return perturbed(GPT(small_config(**overrides)), seed)


def seq2seq(seed: int = 0, **overrides) -> EncoderDecoder:
    torch.manual_seed(seed)
    return perturbed(EncoderDecoder(small_config(**overrides)), seed)


def padded_sources(seed: int, lengths=(9, 6, 2)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(5, V, (len(lengths), max(lengths)), generator=g)
    real = torch.arange(src.shape[1])[None, :] < torch.tensor(lengths)[:, None]
    return src.masked_fill(~real, PAD)  # (B, S)


# ------------------------------------------------------------------------------ KV cache


def test_causal_mask_with_a_past_is_the_bottom_rows_of_the_full_mask():
    full = causal_mask(7)
    for past in range(7):
        assert torch.equal(causal_mask(7 - past, past=past), full[past:])
    assert causal_mask(1, past=4).tolist() == [[True] * 5]
    with pytest.raises(ValueError, match="past must be an int >= 0, got -1"):
        causal_mask(2, past=-1)


def test_kv_cache_appends_and_a_static_cache_is_filled_once():
    mha = MultiHeadAttention(16, 4).double().eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 16, generator=g, dtype=F64)
    memory = torch.randn(2, 5, 16, generator=g, dtype=F64)
    kv, cross = KVCache(), KVCache(static=True)
    steps, cross_steps = [], []
    for t in range(6):
        xt = x[:, t : t + 1]
        steps.append(mha(xt, xt, xt, causal_mask(1, past=t), cache=kv)[0])
        cross_steps.append(mha(xt, memory, memory, cache=cross)[0])
        assert len(kv) == t + 1 and len(cross) == 5
    torch.testing.assert_close(torch.cat(steps, 1), mha(x, x, x, causal_mask(6))[0], **TIGHT)
    torch.testing.assert_close(torch.cat(cross_steps, 1), mha(x, memory, memory)[0], **TIGHT)
    assert kv.keys.shape == (2, 4, 6, 4) and cross.keys.shape == (2, 4, 5, 4)
    x3 = torch.randn(3, 1, 16, dtype=F64)
    with pytest.raises(ValueError, match=r"cache must hold keys for the batch of query \(B=3\)"):
        mha(x3, x3, x3, cache=kv)


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=ARCH_IDS)
def test_cached_gpt_logits_equal_the_full_forward_at_every_position(arch):
    model = gpt(1, **arch)
    ids = torch.randint(0, V, (3, 20), generator=torch.Generator().manual_seed(2))
    full = model(ids)  # (B, T, V)
    for prompt_len in (1, 7):
        cache = model.new_cache()
        pieces = [model(ids[:, :prompt_len], cache=cache)]
        pieces += [model(ids[:, t : t + 1], cache=cache) for t in range(prompt_len, 20)]
        torch.testing.assert_close(torch.cat(pieces, dim=1), full, **TIGHT)
        assert len(cache) == 20
    cache = model.new_cache()  # several new tokens at once work too
    chunks = [model(ids[:, a:b], cache=cache) for a, b in ((0, 5), (5, 12), (12, 20))]
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, **TIGHT)


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=ARCH_IDS)
def test_cached_decoder_logits_equal_the_full_forward_with_padded_sources(arch):
    model = seq2seq(2, **arch)
    src = padded_sources(3)
    tgt = torch.randint(0, V, (3, 15), generator=torch.Generator().manual_seed(4))
    memory = model.encode(src)
    full = model.decode(tgt, memory, src)
    cache = model.new_cache()
    pieces = [model.decode(tgt[:, t : t + 1], memory, src, cache=cache) for t in range(15)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, **TIGHT)
    layer = cache.layers[0]
    assert len(layer.self_attn) == 15 and len(layer.cross_attn) == src.shape[1]


def test_the_memory_is_projected_once_per_decoding():
    model = seq2seq(0)
    calls = []
    for layer in model.decoder.layers:
        layer.cross_attn.sublayer.k_proj.register_forward_hook(lambda *args: calls.append(1))
    src = padded_sources(0)
    greedy_translate(model, src, BOS, EOS, max_len=10)
    assert len(calls) == len(model.decoder.layers)  # once per layer, not once per step
    calls.clear()
    greedy_translate(model, src, BOS, EOS, max_len=10, use_cache=False)
    assert len(calls) > len(model.decoder.layers)


def test_cache_misuse_is_reported():
    model = gpt(0)
    cache = model.new_cache()
    model(torch.tensor([[5, 6, 7]]), cache=cache)
    with pytest.raises(ValueError, match=r"ids must end by position max_len=24"):
        model(torch.full((1, 22), 5), cache=cache)
    with pytest.raises(ValueError, match=r"cache must hold keys for the batch of ids \(B=2\)"):
        model(torch.tensor([[5], [6]]), cache=cache)
    with pytest.raises(TypeError, match="cache must be a DecoderCache or None"):
        model(torch.tensor([[5]]), cache=KVCache())
    with pytest.raises(ValueError, match="cache must have one LayerCache per decoder layer"):
        model(torch.tensor([[5]]), cache=DecoderCache(5))


# ------------------------------------------------------------------------ greedy decoding


@pytest.mark.parametrize("new_tokens", [1, 5, 17])
def test_greedy_generation_is_the_same_with_and_without_the_cache(new_tokens):
    model = gpt(3)
    prompt = torch.randint(5, V, (3, 24 - 17), generator=torch.Generator().manual_seed(5))
    with_cache = generate(model, prompt, new_tokens)
    without = generate(model, prompt, new_tokens, use_cache=False)
    assert with_cache.shape == (3, prompt.shape[1] + new_tokens)
    assert torch.equal(with_cache, without) and torch.equal(with_cache[:, :7], prompt)
    by_hand = prompt
    for _ in range(new_tokens):  # the definition: argmax of the full forward, appended
        by_hand = torch.cat([by_hand, model(by_hand)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(with_cache, by_hand)


@pytest.mark.parametrize("max_len", [1, 6, 24])
@pytest.mark.parametrize("lengths", [(9, 9, 9), (9, 6, 2)], ids=["no-padding", "padding"])
def test_greedy_translation_is_the_same_with_and_without_the_cache(max_len, lengths):
    model = seq2seq(4)
    src = padded_sources(6, lengths)
    with_cache = greedy_translate(model, src, BOS, EOS, max_len)
    without = greedy_translate(model, src, BOS, EOS, max_len, use_cache=False)
    assert torch.equal(with_cache, without) and with_cache.shape[1] <= max_len


def test_a_padded_source_translates_like_the_unpadded_one():
    model = seq2seq(5)
    src = padded_sources(7, (9, 6, 2))
    batch = greedy_translate(model, src, BOS, EOS, 12)
    for i, n in enumerate((9, 6, 2)):
        alone = greedy_translate(model, src[i : i + 1, :n], BOS, EOS, 12)
        assert torch.equal(batch[i, : alone.shape[1]], alone[0])


def test_generation_stops_at_eos_and_pads_finished_rows():
    model = gpt(6)
    prompt = torch.randint(5, V, (4, 3), generator=torch.Generator().manual_seed(8))
    free = generate(model, prompt, 12)
    eos = int(free[0, 5])  # pretend the token row 0 writes third is <eos>
    out = generate(model, prompt, 12, eos_id=eos)
    for row, ref in zip(out, free, strict=True):
        new, ref_new = row[3:].tolist(), ref[3:].tolist()
        if eos in ref_new[: len(new)]:
            stop = ref_new.index(eos)
            assert new[: stop + 1] == ref_new[: stop + 1] and set(new[stop + 1 :]) <= {PAD}
        else:
            assert new == ref_new[: len(new)]
    assert out.shape[1] <= free.shape[1] and eos in out[0, 3:].tolist()


def test_generate_restores_the_training_mode():
    model = gpt(0).train()
    generate(model, torch.tensor([[5, 6]]), 3)
    assert model.training


# ----------------------------------------------------------------------------- sampling


def test_top_k_filter_hand_cases():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0], [5.0, 5.0, 1.0, 5.0]])
    inf = float("-inf")
    assert top_k_filter(logits, 1).tolist() == [[inf, 3.0, inf, inf], [5.0, 5.0, inf, 5.0]]
    assert top_k_filter(logits, 2)[0].tolist() == [inf, 3.0, 2.0, inf]
    assert torch.equal(top_k_filter(logits, 10), logits)
    with pytest.raises(ValueError, match="k must be a positive int, got 0"):
        top_k_filter(logits, 0)


def test_top_p_filter_hand_cases():
    probs = torch.tensor([0.1, 0.5, 0.05, 0.35])
    kept = lambda p: (top_p_filter(probs.log(), p) > float("-inf")).tolist()  # noqa: E731
    assert kept(0.5) == [False, True, False, False]  # the top token alone holds 0.5
    assert kept(0.51) == [False, True, False, True]
    assert kept(0.85) == [False, True, False, True]  # 0.5 + 0.35 reaches 0.85
    assert kept(0.9) == [True, True, False, True]
    assert kept(1.0) == [True] * 4
    assert kept(0.01) == [False, True, False, False]  # the top token is always kept
    batch = torch.stack([probs, probs.flip(0)]).log()
    assert (top_p_filter(batch, 0.85) > float("-inf")).tolist()[1] == [True, False, True, False]
    for bad in (0.0, 1.5, -0.2):
        with pytest.raises(ValueError, match=r"^p must be a float in \(0, 1\], got"):
            top_p_filter(probs.log(), bad)


def test_top_p_filter_keeps_the_lower_indices_of_a_tie():
    logits = torch.zeros(3, 1024)  # every token holds 2**-10, so the sums are exact
    kept = top_p_filter(logits, 0.25) > float("-inf")
    assert kept[:, :256].all() and not kept[:, 256:].any()
    # the same rule as chapter 7's exercise on nucleus filtering
    from tfbook.exercises.ch07 import _reference_top_p

    g = torch.Generator().manual_seed(0)
    tied = torch.randint(0, 3, (4, 50), generator=g).float()  # many ties
    for p in (0.1, 0.3, 0.5, 0.9):
        assert torch.equal(top_p_filter(tied, p), _reference_top_p(tied, p))


def test_sample_next_temperature_zero_and_near_zero_are_greedy():
    logits = torch.randn(64, V, generator=torch.Generator().manual_seed(0))
    greedy = logits.argmax(-1)
    assert torch.equal(sample_next(logits, temperature=0.0), greedy)
    g = torch.Generator().manual_seed(1)
    assert torch.equal(sample_next(logits, temperature=1e-4, generator=g), greedy)
    assert torch.equal(sample_next(logits, temperature=1.0, top_k=1, generator=g), greedy)
    with pytest.raises(ValueError, match=r"temperature must be a float in \[0, inf\)"):
        sample_next(logits, temperature=-1.0)
    with pytest.raises(ValueError, match=r"top_p must be a float in \(0, 1\]"):
        sample_next(logits, top_p=0.0)


def test_sample_next_draws_from_the_filtered_softmax():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -9.0]]).expand(20000, -1)
    g = torch.Generator().manual_seed(3)
    counts = torch.bincount(sample_next(logits, 1.0, top_k=3, generator=g), minlength=5)
    expected = torch.softmax(torch.tensor([2.0, 1.0, 0.0]), 0) * 20000
    assert counts[3:].sum() == 0
    assert torch.allclose(counts[:3].double(), expected.double(), rtol=0.05)
    a = sample_next(logits[:50], 1.0, generator=torch.Generator().manual_seed(9))
    b = sample_next(logits[:50], 1.0, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, b)


def test_generate_samples_reproducibly_with_a_generator():
    model = gpt(7)
    prompt = torch.tensor([[5, 6, 7]])
    runs = []
    for seed in (1, 1, 2):
        g = torch.Generator().manual_seed(seed)
        runs.append(generate(model, prompt, 10, temperature=1.0, top_p=0.9, generator=g))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


# -------------------------------------------------------------------------- beam search


class BigramGPT(GPT):
    """A GPT whose next-token distribution depends only on the last token (a fixed table).

    From <bos> the likeliest first token A (0.55) leads to four equally weak continuations,
    while the runner-up B (0.45) leads to one strong one: greedy picks A, beam search B.
    """

    A, B = 5, 6

    def __init__(self) -> None:
        super().__init__(small_config(n_layers=1))
        probs = torch.full((V, V), 1e-6, dtype=F64)
        probs[BOS, self.A], probs[BOS, self.B] = 0.55, 0.45
        probs[self.A, 7:11] = torch.tensor([0.3, 0.25, 0.25, 0.2], dtype=F64)
        probs[self.B, 11], probs[self.B, 7] = 0.95, 0.05
        probs[7:12, EOS] = 1.0
        probs[12:, EOS] = 1.0
        probs[[PAD, 1, EOS, 4], EOS] = 1.0
        self.table = (probs / probs.sum(-1, keepdim=True)).log()  # (V, V) log-probabilities

    def forward(self, ids, cache=None):  # the cache stays empty: the prefix is re-read
        return self.table[ids]  # (B, T, V)


def test_beam_search_beats_greedy_on_a_constructed_case():
    model = BigramGPT()
    prompt = torch.tensor([[BOS]])
    greedy = generate(model, prompt, 5, eos_id=EOS)
    beam = beam_search(model, prompt, beam_width=2, max_len=5, eos_id=EOS, length_penalty=0.0)
    assert greedy.tolist() == [[BOS, 5, 7, EOS]]
    assert beam.tolist() == [[BOS, 6, 11, EOS]]
    score = lambda seq: sequence_log_prob(model, prompt, seq[0, 1:])  # noqa: E731
    table = model.table
    assert score(beam) == pytest.approx(float(table[BOS, 6] + table[6, 11] + table[11, EOS]))
    assert score(beam) > score(greedy) + 0.5
    assert torch.equal(beam_search(model, prompt, 1, 5, eos_id=EOS), greedy)  # width 1: greedy


@pytest.mark.parametrize("kind", ["gpt", "seq2seq"])
def test_beam_width_one_is_greedy_and_the_cache_changes_nothing(kind):
    if kind == "gpt":
        model, inputs = (
            gpt(8),
            torch.randint(5, V, (3, 4), generator=torch.Generator().manual_seed(0)),
        )
        greedy = generate(model, inputs, 12, eos_id=EOS)
        beam_kwargs = dict(eos_id=EOS)
    else:
        model, inputs = seq2seq(9), padded_sources(10)
        greedy = greedy_translate(model, inputs, BOS, EOS, 12)
        beam_kwargs = dict(bos_id=BOS, eos_id=EOS)
    assert torch.equal(beam_search(model, inputs, 1, 12, **beam_kwargs), greedy)
    wide = beam_search(model, inputs, 4, 12, **beam_kwargs)
    assert torch.equal(wide, beam_search(model, inputs, 4, 12, use_cache=False, **beam_kwargs))


def test_gnmt_length_penalty_values():
    assert gnmt_length_penalty(1, 0.6) == 1.0
    assert gnmt_length_penalty(10, 1.0) == pytest.approx(15 / 6)
    assert gnmt_length_penalty(10, 0.0) == 1.0


@pytest.mark.parametrize("alpha", [0.0, 0.6, 2.0])
def test_a_beam_as_wide_as_the_vocabulary_finds_the_exhaustive_best(alpha):
    """With every token in the beam and two steps, beam search must return the best of all
    V + V * V candidates ([eos], [a, eos], [a, b]) under log P / lp; computed here directly."""
    model = seq2seq(11)
    src = padded_sources(12)[:1]
    memory = model.encode(src)
    lp1 = torch.log_softmax(model.decode(torch.tensor([[BOS]]), memory, src)[0, -1], -1)  # (V,)
    prefixes = torch.stack([torch.full((V,), BOS), torch.arange(V)], dim=1)  # (V, 2)
    logits2 = model.decode(prefixes, memory.expand(V, -1, -1), src.expand(V, -1))[:, -1]
    lp2 = torch.log_softmax(logits2, -1)  # (V, V): second token given the first
    candidates = [(lp1[EOS].item() / gnmt_length_penalty(1, alpha), [EOS])]
    for a in range(V):
        if a != EOS:
            for b in range(V):
                score = (lp1[a] + lp2[a, b]).item() / gnmt_length_penalty(2, alpha)
                candidates.append((score, [a, b]))
    best = max(candidates, key=lambda c: c[0])[1]
    found = beam_search(model, src, V, 2, BOS, EOS, length_penalty=alpha)
    assert found[0].tolist() == best
    assert sequence_log_prob(model, src, torch.tensor(best), bos_id=BOS) == pytest.approx(
        max(candidates)[0] * gnmt_length_penalty(len(best), alpha)
    )


# ---------------------------------------------------------------------------- bad input


def test_bad_arguments_are_named():
    model, ed = gpt(0), seq2seq(0)
    prompt = torch.tensor([[5, 6, 7, 8]])
    with pytest.raises(ValueError, match=r"max_new_tokens must fit the model's position table"):
        generate(model, prompt, 21)  # 4 + 21 > max_len=24
    assert generate(model, prompt, 20).shape == (1, 24)
    with pytest.raises(ValueError, match=r"top_p must be a float in \(0, 1\], got 1.5"):
        generate(model, prompt, 3, temperature=1.0, top_p=1.5)
    with pytest.raises(ValueError, match="beam_width must be a positive int, got 0"):
        beam_search(ed, padded_sources(0), 0, 5, BOS, EOS)
    with pytest.raises(ValueError, match=r"prompt must hold at least one token per row"):
        generate(model, torch.zeros(1, 0, dtype=torch.long), 3)
    with pytest.raises(ValueError, match=r"src must hold at least one token per row"):
        greedy_translate(ed, torch.zeros(2, 0, dtype=torch.long), BOS, EOS, 5)
    with pytest.raises(ValueError, match="max_len must fit the model's position table"):
        greedy_translate(ed, padded_sources(0), BOS, EOS, 25)
    with pytest.raises(TypeError, match="model must be a tfbook.model.GPT"):
        generate(ed, prompt, 3)
    with pytest.raises(ValueError, match=r"eos_id must be an int in \[0, 22\], got 23"):
        generate(model, prompt, 3, eos_id=V)
    with pytest.raises(TypeError, match=r"bos_id must be an int in \[0, 22\], got NoneType"):
        beam_search(ed, padded_sources(0), 2, 5, bos_id=None, eos_id=EOS)
    with pytest.raises(ValueError, match=r"prompt must be token ids in \[0, V=23\)"):
        generate(model, torch.tensor([[5, 99]]), 3)


# ---------------------------------------------------------------- the pieces fit together


def test_a_tiny_encoder_decoder_learns_to_reverse_sequences():
    """Objectives + training loop + decoding: a real run of a few seconds, seeded."""
    torch.manual_seed(0)
    cfg = TransformerConfig(
        vocab_size=12,
        d_model=32,
        n_heads=4,
        d_ff=64,
        n_layers=1,
        max_len=8,
        dropout=0.0,
        norm_first=True,
        scale_embeddings=False,
    )
    model = EncoderDecoder(cfg)
    train_pairs = reverse_task(4000, 5, vocab_size=12, seed=1)  # 7 symbols: 7^5 = 16807 inputs
    test_pairs = [p for p in reverse_task(300, 5, vocab_size=12, seed=2) if p not in train_pairs]

    def batch_fn(step):
        g = torch.Generator().manual_seed(step)
        return collate_pairs([train_pairs[i] for i in torch.randint(4000, (32,), generator=g)])

    def loss_fn(m, batch):
        src, tgt = batch
        dec_in, targets = teacher_forcing(tgt)
        return lm_loss(m(src, dec_in), targets)

    cfg = TrainConfig(steps=120, lr=1e-2, warmup=12, progress=False)  # 100 steps suffice
    history = train(model, batch_fn, loss_fn, cfg)
    src, tgt = collate_pairs(test_pairs)
    out = greedy_translate(model, src, BOS, EOS, max_len=6)
    exact = (out == tgt[:, 1:]).all(dim=1).float().mean().item()
    assert len(test_pairs) > 200 and history.losses[-1] < 0.1 * history.losses[0]
    assert exact >= 0.95, f"exact match {exact:.3f} on {len(test_pairs)} held-out sequences"
