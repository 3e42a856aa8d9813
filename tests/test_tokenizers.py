"""Tests for tfbook.tokenizers (chapter 2) against independent references."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from tfbook.tokenizers import (
    SPECIAL_TOKENS,
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    WhitespaceTokenizer,
    load_corpus,
)

KOREAN = "나는 최근 파리 여행을 다녀왔다"
ENGLISH = "I recently went on a trip to Paris."


def _naive_bpe_merges(texts, num_merges, min_pair_freq=2):
    """Slow reference: recount every pair from scratch before each merge."""
    chunks = Counter(c for t in texts for c in re.findall(r" ?\S+|\s", t))
    words = {chunk: list(chunk) for chunk in chunks}
    merges = []
    for _ in range(num_merges):
        counts = Counter()
        for chunk, symbols in words.items():
            for i in range(len(symbols) - 1):
                counts[(symbols[i], symbols[i + 1])] += chunks[chunk]
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        if counts[best] < min_pair_freq:
            break
        merges.append(best)
        for chunk, symbols in words.items():
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            words[chunk] = out
    return merges


@pytest.fixture(scope="module")
def corpus():
    return load_corpus()


@pytest.fixture(scope="module")
def bpe(corpus):
    return BPETokenizer.train(corpus, 400)


def test_corpus_has_korean_and_english_with_the_paper_sentence():
    ko, en = load_corpus("ko"), load_corpus("en")
    assert len(ko) >= 200 and len(en) >= 200
    assert ko[0] == KOREAN
    assert load_corpus() == ko + en
    with pytest.raises(ValueError, match="language"):
        load_corpus("fr")


def test_corpus_is_parallel_korean_sentence_i_translated_by_english_sentence_i():
    # Chapter 2 pairs load_corpus("ko")[i] with load_corpus("en")[i] (translation-pair contexts).
    ko, en = load_corpus("ko"), load_corpus("en")
    assert len(ko) == len(en) == 300
    assert (ko[0], en[0]) == (KOREAN, ENGLISH)
    assert len(set(ko)) == len(ko) and len(set(en)) == len(en)  # no duplicated sentences
    # Chapter 2 relies on this noun-particle pair being absent (it is the unseen example).
    assert not any("파리를" in s for s in ko)


@pytest.mark.parametrize("cls", [WhitespaceTokenizer, CharTokenizer])
def test_special_tokens_have_ids_zero_to_four(cls):
    tok = cls.train(["a b c"])
    assert tok.id_to_token[:5] == list(SPECIAL_TOKENS)
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id, tok.mask_id) == (0, 1, 2, 3, 4)


def test_bpe_special_tokens_have_ids_zero_to_four(bpe):
    assert bpe.id_to_token[:5] == list(SPECIAL_TOKENS)


def test_whitespace_tokenizer_maps_unseen_word_to_unk():
    tok = WhitespaceTokenizer.train([KOREAN])
    assert tok.tokenize("나는 최근 파리를 좋아한다") == ["나는", "최근", "<unk>", "<unk>"]
    ids = tok.encode("나는 여행은")
    assert ids[1] == tok.unk_id
    assert tok.decode(tok.encode(KOREAN)) == KOREAN


def test_whitespace_vocabulary_orders_by_frequency_then_alphabet_and_filters():
    tok = WhitespaceTokenizer.train(["b a a c", "c a d"], min_freq=2)
    assert tok.id_to_token[5:] == ["a", "c"]
    tok = WhitespaceTokenizer.train(["b a a c", "c a d"], max_size=3)
    assert tok.id_to_token[5:] == ["a", "c", "b"]


def test_char_tokenizer_treats_a_hangul_syllable_as_one_token_and_round_trips():
    tok = CharTokenizer.train([KOREAN])
    assert tok.tokenize("여행") == ["여", "행"]
    assert tok.decode(tok.encode(KOREAN)) == KOREAN
    assert tok.tokenize("여행!") == ["여", "행", "<unk>"]


def test_encode_adds_bos_and_eos_on_request_and_decode_can_skip_them():
    tok = CharTokenizer.train(["ab"])
    ids = tok.encode("ab", add_special_tokens=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id and len(ids) == 4
    assert tok.decode(ids) == "<bos>ab<eos>"
    assert tok.decode(ids + [tok.pad_id], skip_special_tokens=True) == "ab"
    assert tok.decode([tok.unk_id], skip_special_tokens=True) == "<unk>"


def test_bpe_merges_match_a_naive_recounting_reference(corpus):
    small = corpus[:60] + corpus[-60:]
    assert BPETokenizer.train(small, 150).merges == _naive_bpe_merges(small, 150)
    assert BPETokenizer.train(corpus, 120).merges == _naive_bpe_merges(corpus, 120)


def test_bpe_merges_match_reference_on_repeated_symbols():
    texts = ["aaaa aaa aa", "abab abab ab"] * 3
    assert BPETokenizer.train(texts, 20).merges == _naive_bpe_merges(texts, 20)


def test_bpe_round_trips_korean_and_english_text(bpe, corpus):
    for s in corpus:
        assert bpe.decode(bpe.encode(s)) == s
    text = "나는  파리에서 빵을 샀다.  We bought bread in Paris."
    assert bpe.decode(bpe.encode(text)) == text


def test_bpe_splits_an_unseen_noun_particle_pair_into_known_pieces(bpe):
    tokens = bpe.tokenize("나는 파리를 좋아한다")
    assert "<unk>" not in tokens
    assert "".join(tokens) == "나는 파리를 좋아한다"
    ws = WhitespaceTokenizer.train(load_corpus("ko"))
    assert ws.tokenize("파리를") == ["<unk>"]


def test_bpe_maps_unseen_characters_to_unk(bpe):
    tokens = bpe.tokenize("파리 ☃")
    assert tokens[-1] == "<unk>"
    assert bpe.encode("☃") == [bpe.unk_id]


def test_bpe_vocabulary_size_is_bounded_by_specials_alphabet_and_merges(bpe):
    assert bpe.vocab_size <= len(SPECIAL_TOKENS) + len(bpe.alphabet) + len(bpe.merges)
    assert len(bpe.merges) == 400


def test_bpe_training_is_deterministic(corpus):
    assert BPETokenizer.train(corpus, 200) == BPETokenizer.train(corpus, 200)


def test_more_merges_give_fewer_tokens(corpus):
    tokenizers = [BPETokenizer.train(corpus, m) for m in (0, 100, 400)]
    lengths = [sum(len(tok.encode(s)) for s in corpus) for tok in tokenizers]
    assert lengths[0] > lengths[1] > lengths[2]


@pytest.mark.parametrize("kind", ["whitespace", "char", "bpe"])
def test_save_and_load_give_an_equal_tokenizer(tmp_path, corpus, kind):
    cls = {"whitespace": WhitespaceTokenizer, "char": CharTokenizer, "bpe": BPETokenizer}[kind]
    tok = cls.train(corpus, 100) if kind == "bpe" else cls.train(corpus)
    path = tmp_path / "tok.json"
    tok.save(path)
    loaded = Tokenizer.load(path)
    assert type(loaded) is cls and loaded == tok
    assert loaded.encode(KOREAN + " " + ENGLISH) == tok.encode(KOREAN + " " + ENGLISH)
    assert "여" in path.read_text(encoding="utf-8")  # stored as readable UTF-8


def test_load_rejects_an_unknown_kind(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"kind": "wordpiece", "tokens": []}', encoding="utf-8")
    with pytest.raises(ValueError, match="unknown tokenizer kind 'wordpiece'"):
        Tokenizer.load(path)


def test_bad_inputs_raise_clear_errors(bpe):
    with pytest.raises(TypeError, match="text must be a str, got int"):
        bpe.encode(3)
    with pytest.raises(ValueError, match=r"ids must lie in \[0, .*got 100000"):
        bpe.decode([100000])
    with pytest.raises(TypeError, match="single str"):
        WhitespaceTokenizer.train("one sentence")
    with pytest.raises(ValueError, match="num_merges must be an int >= 0, got -1"):
        BPETokenizer.train(["ab"], -1)
    with pytest.raises(ValueError, match="min_freq"):
        CharTokenizer.train(["ab"], min_freq=0)


def test_decode_accepts_tensors_and_numpy_integers(bpe):
    import numpy as np
    import torch

    ids = bpe.encode(KOREAN)
    assert bpe.decode(torch.tensor(ids)) == KOREAN
    assert bpe.decode(list(np.array(ids))) == KOREAN  # NumPy integers work too
    with pytest.raises(TypeError, match="ids must be ints, got float"):
        bpe.decode([1.0])
