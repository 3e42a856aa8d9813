"""Chapter 9: the tasks cut from the plays, the task heads, and LoRA against PEFT's LoRA.

The tasks are checked on the real corpus (``make unit`` fetches it first): whole plays on each
side, labels of a line checked by hand, the same examples for the same seed. LoRA is checked
against its definition (zero ``B`` changes nothing, merging changes nothing, the count
``r (d_in + d_out)`` per layer) and against ``peft``'s LoRA on a Hugging Face BERT holding the
same weights.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tfbook import finetune as ft
from tfbook import tasks
from tfbook.corpus import CorpusError, fetch_shakespeare
from tfbook.model import BERT, GPT, TransformerConfig
from tfbook.objectives import IGNORE_INDEX


@pytest.fixture(scope="module")
def folder():
    return fetch_shakespeare()  # already fetched by `make corpus`: no download


@pytest.fixture(scope="module")
def genre(folder):
    return tasks.genre_task(folder, length=96, train_per_group=60, test_per_group=30, seed=3)


@pytest.fixture(scope="module")
def tagging(folder):
    return tasks.name_tagging_task(folder, train_lines=300, test_lines=100, seed=3)


def _spoken(folder, plays):
    return "\n".join(
        "\n".join(line for s in tasks.read_play(folder, p) for line in s.lines) for p in plays
    )


def _cfg(**kw):
    base = dict(vocab_size=12, d_model=16, n_heads=4, d_ff=32, n_layers=2, max_len=16, dropout=0.0)
    return TransformerConfig(**(base | kw))


# ---------------------------------------------------------------------------- the plays


def test_folio_groups_follow_the_first_folio(folder):
    counts = {g: sum(v == g for v in tasks.FOLIO_GROUPS.values()) for g in tasks.GROUPS}
    assert counts == {"comedy": 14, "history": 10, "tragedy": 12}  # the Folio's 36 plays
    assert tasks.FOLIO_GROUPS["tempest"] == "comedy"  # the Folio's first play
    assert tasks.FOLIO_GROUPS["winters_tale"] == "comedy"
    assert tasks.FOLIO_GROUPS["cymbeline"] == "tragedy"
    assert "pericles" not in tasks.FOLIO_GROUPS  # not in the First Folio
    for play in tasks.FOLIO_GROUPS:  # every play is in the corpus and parses into speeches
        assert len(tasks.read_play(folder, play)) > 400, play
    assert {tasks.FOLIO_GROUPS[p] for p in tasks.TEST_PLAYS} == set(tasks.GROUPS)


def test_parse_play_finds_headings_and_drops_stage_directions():
    text = (
        "ACT I.\n\nSCENE I. A wood.\n\n[Enter THESEUS and\nHERMIA\n\nTHESEUS\nWhat say you, "
        "Hermia?\n\nHERMIA. [Aside.] So is Lysander.\n\nHERMIA.\n[Kneels.]\nSo is "
        "Lysander. [Rises.]\n\n[Enter LYSANDER, with\nothers.]\n\nLys.\nHow now?\n"
    )
    speeches = tasks.parse_play(text)
    assert speeches == [
        # the direction missing its "]" ends at the blank line
        tasks.Speech("THESEUS", ("What say you, Hermia?",)),
        tasks.Speech("HERMIA", ("So is Lysander.",)),
        tasks.Speech("Lys", ("How now?",)),
    ]


def test_tag_line_on_a_hand_checked_line_of_macbeth(folder):
    speeches = tasks.read_play(folder, "macbeth")
    names = tasks.play_names(speeches)
    assert {"Macbeth", "Banquo", "Duncan", "Macduff", "Malcolm"} <= set(names)
    assert not {"Lady", "First", "Witch", "Macbeth's"} & set(names)
    line = "Our captains, Macbeth and Banquo?"
    assert any(line in s.lines for s in speeches)  # act I, scene 2
    tags = "".join(tasks.TAGS[t] for t in tasks.tag_line(line, names))
    #        Our captains, Macbeth and Banquo?
    assert tags == "OOOOOOOOOOOOOOBIIIIIIOOOOOBIIIIIO"
    assert tasks.tag_line("MACBETH's heart; macbeth", ("Macbeth",)) == [1] + [2] * 6 + [0] * 17


def test_capitalised_words_rule_on_hand_checked_lines():
    def tags(line):
        return "".join(tasks.TAGS[t] for t in tasks.capitalised_words(line))

    # the first word, "I" and "O" are never names; a possessive 's is left out; inner
    # apostrophes stay in the word; lower-case words are not names
    assert tags("Macbeth doth murder sleep") == "O" * 25
    assert tags("O Banquo, I am") == "OOBIIIIIOOOOOO"
    assert tags("and Duncan's horses") == "OOOOBIIIIIOOOOOOOOO"
    assert tags("hail to thee, Thane o' Cawdor") == "O" * 14 + "BIIII" + "OOOO" + "BIIIII"
    assert tasks.capitalised_words("") == []
    with pytest.raises(TypeError, match="line must be a str"):
        tasks.capitalised_words(["Macbeth"])


def test_abbreviated_headings_leave_a_play_out_of_tagging(folder, tagging):
    hamlet = tasks.read_play(folder, "hamlet")  # headings "Ham.", "Hor.": no names given
    assert tasks.names_cover(hamlet, tasks.play_names(hamlet)) < 0.5
    assert "hamlet" not in tagging.train_plays
    othello = tasks.read_play(folder, "othello")
    assert tasks.names_cover(othello, tasks.play_names(othello)) > 0.9


def test_genre_task_is_split_by_whole_plays_and_balanced(folder, genre):
    assert not set(genre.train_plays) & set(genre.test_plays)
    assert set(genre.train_plays) | set(genre.test_plays) == set(tasks.FOLIO_GROUPS)
    test_text, train_text = _spoken(folder, genre.test_plays), _spoken(folder, genre.train_plays)
    for text, _ in genre.test:
        assert len(text) == 96 and text in test_text and text not in train_text
    for text, _ in genre.train:
        assert text in train_text and text not in test_text
    for side, n in ((genre.train, 60), (genre.test, 30)):
        assert [sum(y == k for _, y in side) for k in range(3)] == [n, n, n]
    # a test passage's label is its play's group
    by_play = {p: _spoken(folder, [p]) for p in genre.test_plays}
    for text, label in genre.test:
        (play,) = [p for p, t in by_play.items() if text in t]
        assert tasks.GROUPS[label] == tasks.FOLIO_GROUPS[play]
    # no speaker heading leaks into a passage
    assert not any("MACBETH.\n" in t or "DUKE.\n" in t for t, _ in genre.test)


def test_tagging_task_is_split_by_whole_plays(folder, tagging):
    assert set(tagging.test_plays) == set(tasks.TEST_PLAYS)
    assert not set(tagging.train_plays) & set(tagging.test_plays)
    test_lines = set(_spoken(folder, tagging.test_plays).split("\n"))
    train_lines = set(_spoken(folder, tagging.train_plays).split("\n"))
    assert all(line in test_lines for line, _ in tagging.test)
    assert all(line in train_lines for line, _ in tagging.train)
    for side, n in ((tagging.train, 300), (tagging.test, 100)):
        assert len(side) == n and sum(any(t) for _, t in side) == n // 2
        assert all(len(t) == len(line) for line, t in side)


def test_tasks_are_deterministic(folder, genre, tagging):
    again = tasks.genre_task(folder, length=96, train_per_group=60, test_per_group=30, seed=3)
    assert again == genre
    other = tasks.genre_task(folder, length=96, train_per_group=60, test_per_group=30, seed=4)
    assert other.train != genre.train
    assert tasks.name_tagging_task(folder, train_lines=300, test_lines=100, seed=3) == tagging


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"length": 0}, ["length", "0"]),
        ({"train_per_group": -1}, ["train_per_group", "-1"]),
        ({"test_plays": ("nosuch",)}, ["test_plays", "nosuch"]),
        ({"test_plays": "macbeth"}, ["test_plays", "macbeth"]),
        ({"test_plays": ("macbeth", "tempest")}, ["test_plays", "history"]),
        ({"seed": 1.5}, ["seed", "1.5"]),
        ({"length": 10**9}, ["length", "1000000000"]),
    ],
)
def test_genre_task_bad_arguments_are_named(folder, kwargs, words):
    with pytest.raises((ValueError, TypeError)) as err:
        tasks.genre_task(folder, **kwargs)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_tagging_task_bad_arguments_are_named(folder, tmp_path):
    with pytest.raises(ValueError, match="named_share"):
        tasks.name_tagging_task(folder, named_share=1.5)
    with pytest.raises(ValueError, match="test_lines=100000"):
        tasks.name_tagging_task(folder, test_lines=100_000)
    with pytest.raises(ValueError, match="min_cover"):
        tasks.name_tagging_task(folder, test_plays=("hamlet",))
    with pytest.raises(CorpusError, match="make corpus"):
        tasks.genre_task(tmp_path)
    with pytest.raises(TypeError, match="names"):
        tasks.tag_line("Macbeth", "Macbeth")


# ---------------------------------------------------------------------------- heads


def test_padding_does_not_change_a_classifier_or_a_tagger():
    torch.manual_seed(0)
    ids = torch.tensor([[5, 6, 7, 8, 9], [5, 6, 7, 0, 0]])
    for body in (GPT(_cfg()), BERT(_cfg())):
        for pooling in ft.POOLINGS:
            clf = ft.SequenceClassifier(body, 3, pooling=pooling).eval()
            alone = clf(ids[1:, :3])
            torch.testing.assert_close(clf(ids)[1:], alone, rtol=1e-5, atol=1e-6)
        tagger = ft.TokenTagger(body, 3).eval()
        torch.testing.assert_close(tagger(ids)[1:, :3], tagger(ids[1:, :3]), rtol=1e-5, atol=1e-6)


def test_gpt_body_is_the_gpt_without_its_head():
    torch.manual_seed(0)
    gpt = GPT(_cfg()).eval()
    ids = torch.randint(5, 12, (2, 7))
    body = ft.GPTBody(gpt)
    torch.testing.assert_close(gpt.head(body(ids)), gpt(ids))
    assert body.gpt is gpt  # the weights are shared, not copied
    with pytest.raises(ValueError, match="ids"):
        body(torch.randint(0, 12, (2, 17)))  # longer than max_len=16


def test_pooling_reads_the_positions_it_names():
    torch.manual_seed(0)
    gpt = GPT(_cfg()).eval()
    ids = torch.tensor([[5, 6, 7, 0]])
    clf = ft.SequenceClassifier(gpt, 2, pooling="last").eval()
    hidden = gpt.decoder(gpt.embeddings(ids[:, :3]))  # (1, 3, d_model), written out
    torch.testing.assert_close(clf(ids), clf.head(hidden[:, 2]))
    clf.pooling = "mean"
    torch.testing.assert_close(clf(ids), clf.head(hidden.mean(dim=1)))
    clf.pooling = "first"
    torch.testing.assert_close(clf(ids), clf.head(hidden[:, 0]))


def test_frozen_body_trains_only_the_head():
    torch.manual_seed(0)
    body = ft.freeze(ft.GPTBody(GPT(_cfg())))
    clf = ft.SequenceClassifier(body, 2, pooling="mean")
    before = copy.deepcopy(clf.state_dict())
    ids = torch.randint(5, 12, (64, 6))
    labels = (ids[:, 0] > 8).long()
    losses = ft.fine_tune(clf, ids, labels, steps=5, batch_size=16, lr=1e-2)
    assert len(losses) == 5 and not clf.training
    after = clf.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("body."))
    assert not torch.equal(before["head.weight"], after["head.weight"])


@pytest.fixture
def one_thread():
    """Tiny models train faster on one thread than on two contended ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_fine_tune_learns_a_rule_and_is_repeatable(one_thread):
    torch.manual_seed(0)
    ids = torch.randint(5, 12, (64, 4))
    labels = (ids[:, 2] > 8).long()  # the class is the third token's
    model = ft.SequenceClassifier(BERT(_cfg(dropout=0.1)), 2, pooling="first")
    twin = copy.deepcopy(model)
    losses = ft.fine_tune(model, ids, labels, steps=150, batch_size=32, lr=3e-3, seed=1)
    assert ft.accuracy(model, ids, labels) > 0.9
    state = torch.get_rng_state()
    assert ft.fine_tune(twin, ids, labels, steps=150, batch_size=32, lr=3e-3, seed=1) == losses
    assert torch.equal(torch.get_rng_state(), state)


def test_tags_line_up_with_character_ids():
    from tfbook.tokenizers import CharTokenizer

    tok = CharTokenizer.train(["Hail, Macbeth!"])
    line = "Hail, Macbeth!"
    tags = tasks.tag_line(line, ("Macbeth",))
    ids = ft.encode_texts(tok, [line], length=16, cls=True)
    y = ft.encode_tags([tags], length=16, shift=1)
    assert tok.decode(ids[0, 1:15].tolist()) == line
    named = [line[k - 1] for k in range(16) if y[0, k] in (1, 2)]
    assert "".join(named) == "Macbeth"
    assert y[0, 0] == IGNORE_INDEX and (y[0, 15:] == IGNORE_INDEX).all()


def test_name_f1_counts_name_characters():
    gold = torch.tensor([[0, 1, 2, 2, IGNORE_INDEX]])
    assert ft.name_f1(gold.clamp(min=0), gold) == 1.0
    assert ft.name_f1(torch.zeros_like(gold), gold) == 0.0
    # 2 hits, 1 false alarm, 1 miss: P = R = 2/3
    assert ft.name_f1(torch.tensor([[1, 2, 2, 0, 1]]), gold) == pytest.approx(2 / 3)


def test_head_and_training_bad_arguments_are_named():
    gpt = GPT(_cfg())
    with pytest.raises(ValueError, match="pooling"):
        ft.SequenceClassifier(gpt, 2, pooling="max")
    with pytest.raises(TypeError, match="body"):
        ft.SequenceClassifier(nn.Linear(2, 2), 2)
    with pytest.raises(ValueError, match="n_classes"):
        ft.SequenceClassifier(gpt, 1)
    clf = ft.SequenceClassifier(gpt, 2)
    with pytest.raises(ValueError, match="right-padded"):
        clf(torch.tensor([[0, 5, 6]]))
    with pytest.raises(ValueError, match="labels"):
        ft.fine_tune(clf, torch.tensor([[5, 6]]), torch.tensor([0, 1]), steps=1)
    with pytest.raises(ValueError, match="trainable"):
        ft.fine_tune(ft.freeze(clf), torch.tensor([[5, 6]]), torch.tensor([0]), steps=1)
    with pytest.raises(ValueError, match="steps"):
        ft.fine_tune(clf, torch.tensor([[5, 6]]), torch.tensor([0]), steps=0)


# ---------------------------------------------------------------------------- LoRA


def _random_b(model, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, ft.LoRALinear):
                m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=generator) * 0.1)


def test_lora_starts_as_the_pretrained_model_and_trains_only_a_and_b():
    torch.manual_seed(0)
    gpt = GPT(_cfg()).eval()
    ids = torch.randint(5, 12, (2, 7))
    before = gpt(ids)
    names = ft.add_lora(gpt, ("q_proj", "v_proj", "linear2"), r=2, alpha=8)
    assert len(names) == 6
    torch.testing.assert_close(gpt(ids), before, rtol=0, atol=0)  # B = 0
    trainable = [n for n, p in gpt.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith(("lora_A", "lora_B")) for n in trainable)
    # r (d_in + d_out) per layer: q, v are 16 -> 16, linear2 is d_ff=32 -> 16
    assert ft.trainable_parameters(gpt)[0] == 2 * (2 * (16 + 16) + 2 * (16 + 16) + 2 * (32 + 16))


def test_lora_update_is_the_low_rank_formula():
    torch.manual_seed(0)
    base = nn.Linear(8, 6)
    lora = ft.LoRALinear(base, r=3, alpha=6)
    _random_b(lora)
    x = torch.randn(4, 8)
    expected = x @ base.weight.T + base.bias + (6 / 3) * x @ lora.lora_A.T @ lora.lora_B.T
    torch.testing.assert_close(lora(x), expected)
    assert torch.linalg.matrix_rank(lora.delta_weight()) == 3


def test_merge_gives_the_same_outputs():
    torch.manual_seed(0)
    gpt = GPT(_cfg()).eval()
    ft.add_lora(gpt, ("out_proj", "linear1"), r=4, alpha=4)
    _random_b(gpt)
    ids = torch.randint(5, 12, (3, 9))
    adapted = gpt(ids)
    n_params = sum(p.numel() for p in GPT(_cfg()).parameters())
    ft.merge_lora(gpt)
    assert not any(isinstance(m, ft.LoRALinear) for m in gpt.modules())
    assert sum(p.numel() for p in gpt.parameters()) == n_params  # the original size
    assert (gpt(ids) - adapted).abs().max() < 1e-5


def test_lora_bad_arguments_are_named():
    gpt = GPT(_cfg())
    with pytest.raises(ValueError, match=r"r must be .*got 0"):
        ft.LoRALinear(nn.Linear(4, 4), r=0, alpha=1)
    with pytest.raises(ValueError, match=r"r must be .*got 5"):
        ft.LoRALinear(nn.Linear(4, 4), r=5, alpha=1)
    with pytest.raises(ValueError, match="alpha"):
        ft.LoRALinear(nn.Linear(4, 4), r=1, alpha=0)
    with pytest.raises(TypeError, match="base"):
        ft.LoRALinear(nn.Conv1d(4, 4, 1), r=1, alpha=1)
    with pytest.raises(ValueError, match="got 'qkv', which matches none"):
        ft.add_lora(gpt, ("qkv",), r=1, alpha=1)
    with pytest.raises(ValueError, match="'decoder.layers.0.ffn', a ResidualSublayer"):
        ft.add_lora(gpt, ("ffn",), r=1, alpha=1)
    with pytest.raises(TypeError, match="targets"):
        ft.add_lora(gpt, "out_proj", r=1, alpha=1)
    ft.add_lora(gpt, ("out_proj",), r=1, alpha=1)
    with pytest.raises(ValueError, match="LoRALinear"):
        ft.add_lora(gpt, ("out_proj",), r=1, alpha=1)


def test_lora_matches_peft_on_the_same_bert():
    peft = pytest.importorskip("peft")
    from transformers import BertConfig, BertModel

    from tfbook.interop import bert_from_hf

    torch.manual_seed(0)
    hf_config = BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=16,
    )
    hf = BertModel(hf_config, add_pooling_layer=False).eval()
    ours = bert_from_hf(hf).eval()
    ids = torch.randint(0, 50, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    keep = mask.bool()
    plain = ours(ids, attention_mask=mask)
    r, alpha = 4, 8
    # the attention output projection: one module in both models, whatever the Q/K/V layout
    names = ft.add_lora(ours, ("out_proj",), r=r, alpha=alpha)
    _random_b(ours)
    lora_config = peft.LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=["attention.output.dense"]
    )
    theirs = peft.get_peft_model(hf, lora_config).eval()
    with torch.no_grad():
        for i, name in enumerate(names):
            mine = ours.get_submodule(name)
            dense = theirs.base_model.model.encoder.layer[i].attention.output.dense
            dense.lora_A["default"].weight.copy_(mine.lora_A)
            dense.lora_B["default"].weight.copy_(mine.lora_B)
    ours_out = ours(ids, attention_mask=mask)
    theirs_out = theirs(input_ids=ids, attention_mask=mask).last_hidden_state
    assert (ours_out[keep] - theirs_out[keep]).abs().max() < 1e-5
    assert (ours_out[keep] - plain[keep]).abs().max() > 1e-2  # the adapters do change it
    trainable, total = theirs.get_nb_trainable_parameters()
    assert trainable == 2 * r * (32 + 32)  # 2 layers x r (d_in + d_out)
    assert ft.trainable_parameters(ours) == (trainable, total)
