"""The ablation ladder of chapter 8 (tfbook.ablation): each rung builds what its flags say,
the last rung is the capstone's GPT, a short run is deterministic, and the committed logs have
the schema the chapter reads and are reproduced from scratch.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from tests.test_run import make_corpus
from tfbook.ablation import (
    LADDER_CONFIG,
    RUNGS,
    LadderGPT,
    Rung,
    ladder_data,
    read_ladder,
    rung,
    train_rung,
)
from tfbook.attention import SelfAttention
from tfbook.corpus import corpus_folder
from tfbook.feedforward import PositionwiseFeedForward
from tfbook.model import GPT, TransformerConfig
from tfbook.norm import FusedLayerNorm
from tfbook.positional import LearnedPositionalEmbedding
from tfbook.run import GPTRunConfig, book_run

COMMITTED = Path(book_run(".")) / "ladder"
SMALL = TransformerConfig(
    vocab_size=11, d_model=16, n_heads=4, d_ff=32, n_layers=3, max_len=8, dropout=0.0,
    activation="gelu", norm_first=True, positional="learned", tie_weights=False,
    scale_embeddings=False,
)  # fmt: skip
TINY_RUN = dict(
    n_layers=2, n_heads=2, d_model=16, d_ff=32, context=16, batch_size=4, steps=6, warmup=2,
    eval_every=3, eval_batches=2, sample_tokens=0,
)  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus") / "shakespeare")


def large(model):
    """The model with every weight from N(0, 0.5^2): at GPT-2's initial scale (0.02) the logits
    are so small that a difference hides below any tolerance."""
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    return model


def count(model, kind) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


# ------------------------------------------------------------------------------ the rungs


def test_each_rung_adds_exactly_one_part_to_the_one_before():
    assert RUNGS[0].name == "bigram" and not any(RUNGS[0].flags().values())
    assert all(RUNGS[-1].flags().values())  # the last rung has every part
    for before, after in zip(RUNGS, RUNGS[1:], strict=False):
        changed = [k for k, v in after.flags().items() if before.flags()[k] != v]
        assert len(changed) == 1 and after.flags()[changed[0]], (before.name, after.name)
    assert len({r.name for r in RUNGS}) == len(RUNGS)


@pytest.mark.parametrize("r", RUNGS, ids=lambda r: r.name)
def test_the_flags_build_what_they_say(r: Rung):
    model = LadderGPT(r, SMALL)
    layers = SMALL.n_layers if r.deep else 1
    assert len(model.layers) == layers
    attentions = [m for m in model.modules() if isinstance(m, SelfAttention)]
    assert len(attentions) == (layers if r.attention else 0)
    assert all(a.n_heads == (SMALL.n_heads if r.several_heads else 1) for a in attentions)
    assert count(model, PositionwiseFeedForward) == (layers if r.feed_forward else 0)
    assert count(model, LearnedPositionalEmbedding) == int(r.positions)
    norms_per_layer = int(r.attention) + int(r.feed_forward)
    assert count(model, FusedLayerNorm) == ((layers * norms_per_layer + 1) if r.layer_norm else 0)
    assert model.head.weight is not model.token.weight  # never tied


def test_the_bigram_rung_reads_one_character_and_attention_without_positions_a_bag():
    torch.manual_seed(0)
    ids = torch.randint(0, SMALL.vocab_size, (2, 8))
    shuffled = torch.cat(
        [ids[:, :-1].flip(1), ids[:, -1:]], dim=1
    )  # same last token, earlier reordered
    other = ids.clone()
    other[:, :-1] = (ids[:, :-1] + 1) % SMALL.vocab_size  # other earlier tokens
    with torch.no_grad():
        bigram = large(LadderGPT("bigram", SMALL))
        assert torch.equal(bigram(ids)[:, -1], bigram(other)[:, -1])
        no_positions = large(LadderGPT("residual", SMALL))
        assert torch.allclose(no_positions(ids)[:, -1], no_positions(shuffled)[:, -1], atol=1e-6)
        assert not torch.allclose(no_positions(ids)[:, -1], no_positions(other)[:, -1])
        with_positions = large(LadderGPT("positions", SMALL))
        assert not torch.allclose(
            with_positions(ids)[:, -1], with_positions(shuffled)[:, -1], atol=1e-4
        )


def test_without_the_residual_the_attention_replaces_the_vector():
    """Switch the attention's output off (W^O = 0, bias 0): with the residual the model is its
    bigram part again; without it every position gets the same logits."""
    torch.manual_seed(0)
    ids = torch.randint(0, SMALL.vocab_size, (2, 8))
    with torch.no_grad():
        for name in ("attention", "residual"):
            model = LadderGPT(name, SMALL)
            model.layers[0].attn.out_proj.weight.zero_()
            model.layers[0].attn.out_proj.bias.zero_()
            logits = model(ids)
            bigram = model.head(model.token(ids))
            if name == "residual":
                assert torch.allclose(logits, bigram)
            else:
                assert torch.allclose(logits, torch.zeros_like(logits))


def test_the_last_rung_is_the_capstones_gpt_with_an_untied_head():
    torch.manual_seed(0)
    ladder = LadderGPT(RUNGS[-1], SMALL)
    gpt = GPT(SMALL)
    renamed = {}
    for name, value in ladder.state_dict().items():
        new = name.replace("token.", "embeddings.token.", 1) if name.startswith("token.") else name
        new = (
            new.replace("position.", "embeddings.position.", 1)
            if name.startswith("position.")
            else new
        )
        new = new.replace("layers.", "decoder.layers.", 1) if name.startswith("layers.") else new
        new = new.replace(".attn.", ".self_attn.sublayer.").replace(
            ".attn_norm.", ".self_attn.norm."
        )
        new = new.replace(".ffn.", ".ffn.sublayer.").replace(".ffn_norm.", ".ffn.norm.")
        new = "decoder.norm." + name[len("norm.") :] if name.startswith("norm.") else new
        renamed[new] = value
    gpt.load_state_dict(renamed)  # strict: every tensor of the GPT is set, none is left over
    ids = torch.randint(0, SMALL.vocab_size, (3, 8))
    with torch.no_grad():
        torch.testing.assert_close(ladder(ids), gpt(ids), rtol=1e-5, atol=1e-6)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="name must be one of"):
        rung("attention-only")
    with pytest.raises(TypeError, match="rung must be a Rung"):
        LadderGPT(3, SMALL)
    with pytest.raises(TypeError, match="cfg must be a TransformerConfig"):
        LadderGPT("bigram", {"vocab_size": 11})
    with pytest.raises(ValueError, match="tokenizer must be 'char'"):
        ladder_data(GPTRunConfig(tokenizer="bpe"))
    with pytest.raises(ValueError, match=r"T <= max_len=8"):
        LadderGPT("bigram", SMALL)(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="stop_after"):
        train_rung("bigram", GPTRunConfig(**TINY_RUN), stop_after=7, corpus_dir="/nonexistent")


# ------------------------------------------------------------------------------ training


def test_a_short_run_is_deterministic_and_stop_after_gives_its_first_steps(corpus):
    cfg = GPTRunConfig(**TINY_RUN)
    data = ladder_data(cfg, corpus)
    first = train_rung("feed-forward", cfg, data)
    second = train_rung("feed-forward", cfg, data)
    assert first["losses"] == second["losses"] and first["val"] == second["val"]
    assert len(first["losses"]) == cfg.steps and [s for s, _ in first["val"]] == [3, 6]
    assert first["final_val_loss"] == first["val"][-1][1]
    assert first["losses"][-1] < first["losses"][0]  # it learns
    head = train_rung("feed-forward", cfg, data, stop_after=2)
    assert head["losses"] == first["losses"][:2] and head["val"] == []
    other = train_rung("feed-forward", dataclasses.replace(cfg, seed=cfg.seed + 1), data)
    assert other["losses"] != first["losses"]  # the seed decides weights and batches


def test_the_data_are_the_capstone_runs(corpus):
    """The same training ids and fixed validation windows as run_gpt's (its private helper)."""
    from tfbook.corpus import split_by_play
    from tfbook.run.loop import _encode, _train_tokenizer, _validation

    cfg = GPTRunConfig(**TINY_RUN)
    data = ladder_data(cfg, corpus)
    train_text, val_text = split_by_play(corpus)
    tokenizer = _train_tokenizer(cfg, train_text)
    vx, vy, _ = _validation(cfg, _encode(tokenizer, val_text), tokenizer)
    assert torch.equal(data.train_ids, _encode(tokenizer, train_text))
    assert torch.equal(data.val_inputs, vx) and torch.equal(data.val_targets, vy)
    assert data.tokenizer.id_to_token == tokenizer.id_to_token


# ------------------------------------------------------------------------ committed logs


def test_the_committed_logs_have_the_schema_the_chapter_reads():
    logs = read_ladder(COMMITTED)
    assert [log["rung"] for log in logs] == [r.name for r in RUNGS]
    for log, r in zip(logs, RUNGS, strict=True):
        assert log["flags"] == r.flags() and log["adds"] == r.adds
        assert log["config"] == LADDER_CONFIG.to_dict()
        steps = LADDER_CONFIG.steps
        assert len(log["losses"]) == len(log["grad_norms"]) == steps
        evals = list(range(LADDER_CONFIG.eval_every, steps + 1, LADDER_CONFIG.eval_every))
        assert [s for s, _ in log["val"]] == evals
        assert log["final_val_loss"] == log["val"][-1][1]
        assert all(math.isfinite(x) and x > 0 for x in log["losses"] + [log["final_val_loss"]])
        assert log["seconds"] > 0 and log["parameters"] > 0


def test_the_committed_log_of_a_rung_is_reproduced_from_scratch():
    assert (corpus_folder() / "manifest.json").is_file(), (
        "the Shakespeare corpus is not fetched: run `make corpus` (make unit does it first)"
    )
    log = next(x for x in read_ladder(COMMITTED) if x["rung"] == "positions")
    again = train_rung("positions", LADDER_CONFIG, stop_after=5)
    # bit for bit on the machine and thread count that wrote the log; elsewhere float32 sums
    # in another order (see test_run's committed-log test)
    assert again["losses"] == pytest.approx(log["losses"][:5], rel=1e-5)
