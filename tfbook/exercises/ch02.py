"""Graded exercises of chapter 2: Tokens and embeddings.

Five questions: a whitespace vocabulary with special tokens, the pair counts and the
merge step of byte-pair encoding, the scaled embedding look-up and the cosine
similarity matrix. Each question lists the realistic mistakes its check can name.
"""

from __future__ import annotations

import math
import random
from collections import Counter

import torch

from tfbook.embedding import TokenEmbedding, cosine_similarity_matrix
from tfbook.exercises._engine import Case, ExerciseSet, Mistake, Question
from tfbook.tokenizers import WhitespaceTokenizer, _merge_symbols

__all__ = ["q1", "q2", "q3", "q4", "q5", "EXERCISES", "progress"]

_SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>", "<mask>"]

# --------------------------------------------------------------------- q1: vocabulary


def _reference_vocab(texts, min_freq):
    counts = Counter(word for text in texts for word in text.split())
    words = [w for w, c in counts.items() if c >= min_freq]
    words.sort(key=lambda w: (-counts[w], w))
    vocab = {tok: i for i, tok in enumerate(_SPECIALS)}
    for w in words:
        vocab[w] = len(vocab)
    return vocab


def _vocab_no_specials(texts, min_freq):
    counts = Counter(word for text in texts for word in text.split())
    words = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
    return {w: i for i, w in enumerate(words)}


def _vocab_strict_min_freq(texts, min_freq):
    counts = Counter(word for text in texts for word in text.split())
    words = sorted((w for w, c in counts.items() if c > min_freq), key=lambda w: (-counts[w], w))
    vocab = {tok: i for i, tok in enumerate(_SPECIALS)}
    for w in words:
        vocab[w] = len(vocab)
    return vocab


def _vocab_first_seen_order(texts, min_freq):
    counts = Counter(word for text in texts for word in text.split())
    vocab = {tok: i for i, tok in enumerate(_SPECIALS)}
    for w, c in counts.items():  # Counter keeps first-seen order
        if c >= min_freq:
            vocab[w] = len(vocab)
    return vocab


_KO_WORDS = [
    "나는",
    "파리",
    "여행을",
    "여행은",
    "다녀왔다",
    "친구가",
    "빵을",
    "먹었다",
    "최근",
    "도시",
]


def _vocab_cases():
    cases = []
    for seed in range(3):
        rng = random.Random(seed)
        texts = [" ".join(rng.choices(_KO_WORDS, k=rng.randint(3, 6))) for _ in range(6)]
        cases.append(Case(f"random sentences, seed {seed}, min_freq=2", (texts, 2)))
    cases.append(Case("the slide sentence, min_freq=1", (["나는 최근 파리 여행을 다녀왔다"], 1)))
    cases.append(Case("no text at all", ([], 1)))
    return cases


q1 = Question(
    "ch02.q1",
    "A whitespace vocabulary with special tokens",
    reference=_reference_vocab,
    cases=_vocab_cases,
    mistakes=[
        Mistake(
            "special tokens left out",
            _vocab_no_specials,
            "Start the vocabulary with <pad>, <unk>, <bos>, <eos>, <mask> at ids 0 to 4; "
            "the words get ids from 5.",
        ),
        Mistake(
            "min_freq compared with > instead of >=",
            _vocab_strict_min_freq,
            "Keep a word seen exactly min_freq times: the test is count >= min_freq.",
        ),
        Mistake(
            "words kept in first-seen order",
            _vocab_first_seen_order,
            "Sort the kept words by decreasing count, breaking ties alphabetically "
            "(key=lambda w: (-count[w], w)).",
        ),
    ],
    hints=[
        "collections.Counter counts the words of all texts: Counter(w for t in texts "
        "for w in t.split()).",
        "The five special tokens come first, in the order <pad>, <unk>, <bos>, <eos>, <mask>.",
        "Then add the words with count >= min_freq, most frequent first, ties in "
        "alphabetical order, each with the next free id.",
    ],
)

# --------------------------------------------------------------------- q2: pair counts


def _reference_pair_counts(word_freqs):
    counts = {}
    for symbols, freq in word_freqs.items():
        for pair in zip(symbols, symbols[1:], strict=False):
            counts[pair] = counts.get(pair, 0) + freq
    return counts


def _pairs_ignore_freq(word_freqs):
    counts = {}
    for symbols in word_freqs:
        for pair in zip(symbols, symbols[1:], strict=False):
            counts[pair] = counts.get(pair, 0) + 1
    return counts


def _pairs_skip_last(word_freqs):
    counts = {}
    for symbols, freq in word_freqs.items():
        for i in range(len(symbols) - 2):
            pair = (symbols[i], symbols[i + 1])
            counts[pair] = counts.get(pair, 0) + freq
    return counts


def _pairs_once_per_word(word_freqs):
    counts = {}
    for symbols, freq in word_freqs.items():
        for pair in set(zip(symbols, symbols[1:], strict=False)):
            counts[pair] = counts.get(pair, 0) + freq
    return counts


def _pair_cases():
    cases = []
    for seed in range(3):
        rng = random.Random(10 + seed)
        words = {}
        while len(words) < 5:
            word = tuple(rng.choices("abc", k=rng.randint(2, 6)))
            words[word] = rng.randint(2, 9)
        cases.append(Case(f"random words, seed {seed}", (words,)))
    cases.append(Case("Korean syllables", ({("여", "행", "을"): 3, ("여", "행", "은"): 2},)))
    cases.append(Case("repeated pair in one word", ({("a", "a", "a"): 4},)))
    cases.append(Case("single-symbol word", ({("a",): 5},)))
    return cases


q2 = Question(
    "ch02.q2",
    "BPE: count adjacent symbol pairs",
    reference=_reference_pair_counts,
    cases=_pair_cases,
    mistakes=[
        Mistake(
            "word frequencies ignored",
            _pairs_ignore_freq,
            "A word that occurs f times contributes f to each of its pairs: add freq, not 1.",
        ),
        Mistake(
            "last pair of each word missed",
            _pairs_skip_last,
            "A word of n symbols has n - 1 adjacent pairs; zip(symbols, symbols[1:]) "
            "gives all of them.",
        ),
        Mistake(
            "a pair counted once per word",
            _pairs_once_per_word,
            "Do not deduplicate the pairs of a word: ('a', 'a', 'a') holds the pair "
            "('a', 'a') twice.",
        ),
    ],
    hints=[
        "word_freqs maps a tuple of symbols, e.g. ('여', '행', '을'), to how often the "
        "word occurs.",
        "Loop over the adjacent pairs of each word with zip(symbols, symbols[1:]).",
        "Add the word's frequency to counts[pair] for every occurrence of the pair.",
    ],
)

# --------------------------------------------------------------------- q3: merge step


def _reference_merge(symbols, pair):
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and symbols[i] == pair[0] and symbols[i + 1] == pair[1]:
            out.append(pair[0] + pair[1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def _merge_first_only(symbols, pair):
    for i in range(len(symbols) - 1):
        if symbols[i] == pair[0] and symbols[i + 1] == pair[1]:
            return list(symbols[:i]) + [pair[0] + pair[1]] + list(symbols[i + 2 :])
    return list(symbols)


def _merge_from_the_right(symbols, pair):
    out, i = [], len(symbols) - 1
    while i >= 0:
        if i >= 1 and symbols[i - 1] == pair[0] and symbols[i] == pair[1]:
            out.append(pair[0] + pair[1])
            i -= 2
        else:
            out.append(symbols[i])
            i -= 1
    return out[::-1]


def _merge_drops_last(symbols, pair):
    out, i = [], 0
    while i < len(symbols) - 1:
        if symbols[i] == pair[0] and symbols[i + 1] == pair[1]:
            out.append(pair[0] + pair[1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def _merge_cases():
    cases = []
    for seed in range(3):
        rng = random.Random(20 + seed)
        symbols = rng.choices("ab", k=9)
        cases.append(Case(f"random symbols, seed {seed}", (symbols, ("a", "b"))))
    cases.append(Case("overlapping pair", (["a", "a", "a"], ("a", "a"))))
    cases.append(Case("Korean: 여 + 행", (["여", "행", "을", " 여", "행"], ("여", "행"))))
    cases.append(Case("pair absent", (["x", "y"], ("a", "b"))))
    cases.append(Case("empty word", ([], ("a", "b"))))
    return cases


q3 = Question(
    "ch02.q3",
    "BPE: apply one merge",
    reference=_reference_merge,
    cases=_merge_cases,
    mistakes=[
        Mistake(
            "only the first occurrence merged",
            _merge_first_only,
            "A merge rule replaces every occurrence of the pair, not just the first: keep "
            "scanning after a merge.",
        ),
        Mistake(
            "overlaps resolved from the right",
            _merge_from_the_right,
            "Scan from left to right: in ['a', 'a', 'a'] the pair ('a', 'a') gives "
            "['aa', 'a'], as in training.",
        ),
        Mistake(
            "last symbol dropped",
            _merge_drops_last,
            "Your loop stops one symbol early; the last symbol must be copied when it is "
            "not part of a merge (loop while i < len(symbols)).",
        ),
    ],
    hints=[
        "Walk through the list with an index i; you need to look at symbols[i] and symbols[i + 1].",
        "When the two match the pair, append the merged string and jump by 2; otherwise "
        "append symbols[i] and move by 1.",
        "Check i + 1 < len(symbols) before reading symbols[i + 1], and return a new list.",
    ],
)

# --------------------------------------------------------------------- q4: scaled embedding


def _reference_embed(ids, weight):
    d_model = weight.shape[1]
    return weight[ids] * math.sqrt(d_model)


def _embed_no_scale(ids, weight):
    return weight[ids]


def _embed_sqrt_vocab(ids, weight):
    return weight[ids] * math.sqrt(weight.shape[0])


def _embed_divide(ids, weight):
    return weight[ids] / math.sqrt(weight.shape[1])


def _embed_no_sqrt(ids, weight):
    return weight[ids] * weight.shape[1]


def _embed_cases():
    cases = []
    for seed, (v, d, b, t) in enumerate([(10, 16, 2, 5), (7, 9, 1, 4), (12, 4, 3, 2)]):
        g = torch.Generator().manual_seed(30 + seed)
        weight = torch.randn(v, d, generator=g)
        ids = torch.randint(0, v, (b, t), generator=g)
        cases.append(Case(f"random, V={v}, d_model={d}", (ids, weight)))
    g = torch.Generator().manual_seed(40)
    cases.append(
        Case("one token, repeated id", (torch.tensor([[3, 3]]), torch.randn(5, 25, generator=g)))
    )
    return cases


q4 = Question(
    "ch02.q4",
    "Scaled embedding look-up",
    reference=_reference_embed,
    cases=_embed_cases,
    mistakes=[
        Mistake(
            "no sqrt(d_model) scaling",
            _embed_no_scale,
            "Multiply the looked-up rows by sqrt(d_model), as the paper does (section 3.4).",
        ),
        Mistake(
            "scaled by sqrt(vocab_size)",
            _embed_sqrt_vocab,
            "d_model is the number of columns of weight (weight.shape[1]), not the number "
            "of rows (the vocabulary size).",
        ),
        Mistake(
            "divided by sqrt(d_model)",
            _embed_divide,
            "The embeddings are multiplied by sqrt(d_model); dividing is what attention "
            "does to its scores (chapter 4).",
        ),
        Mistake(
            "scaled by d_model without the square root",
            _embed_no_sqrt,
            "The factor is math.sqrt(d_model), not d_model.",
        ),
    ],
    hints=[
        "weight has shape (vocab_size, d_model); indexing weight[ids] looks up one row per id.",
        "The result has shape (B, T, d_model); then multiply by math.sqrt(d_model).",
    ],
)

# --------------------------------------------------------------------- q5: cosine matrix


def _reference_cosine(x):
    unit = x / x.norm(dim=1, keepdim=True)
    return unit @ unit.T


def _cosine_no_norm(x):
    return x @ x.T


def _cosine_wrong_axis(x):
    unit = x / x.norm(dim=0, keepdim=True)
    return unit @ unit.T


def _cosine_one_side(x):
    unit = x / x.norm(dim=1, keepdim=True)
    return unit @ x.T


def _cosine_cases():
    cases = []
    for seed, (n, d) in enumerate([(5, 8), (4, 3), (6, 16)]):
        g = torch.Generator().manual_seed(50 + seed)
        cases.append(Case(f"random, N={n}, d={d}", (torch.randn(n, d, generator=g),)))
    x = torch.tensor([[1.0, 2.0, 0.0], [100.0, 200.0, 0.0], [-2.0, 1.0, 0.0]])
    cases.append(Case("parallel, scaled and orthogonal rows", (x,)))
    return cases


q5 = Question(
    "ch02.q5",
    "Cosine similarity matrix",
    reference=_reference_cosine,
    cases=_cosine_cases,
    mistakes=[
        Mistake(
            "dot products, not cosines",
            _cosine_no_norm,
            "Divide each row by its length first; a raw dot product grows with the norms.",
        ),
        Mistake(
            "normalised over the wrong axis",
            _cosine_wrong_axis,
            "Each vector is a row: take the norm over dim=1 (x.norm(dim=1, keepdim=True)).",
        ),
        Mistake(
            "only one side normalised",
            _cosine_one_side,
            "Both vectors of every pair must have length 1: use unit @ unit.T.",
        ),
    ],
    hints=[
        "cos(a, b) = a . b / (|a| |b|). With unit-length rows it is just the dot product.",
        "Divide every row by its own length; keep the length's axis so the division "
        "broadcasts over the features.",
        "One matrix product of the unit-length rows with their transpose gives every pair's "
        "cosine at once, an (N, N) matrix.",
    ],
)


# --------------------------------------------------------------------------- library counterparts
def _library_vocab(texts, min_freq):
    return dict(WhitespaceTokenizer.train(texts, min_freq=min_freq).vocab)


def _library_embed(ids, weight):
    emb = TokenEmbedding(weight.shape[0], weight.shape[1], scale=True).to(weight.dtype)
    with torch.no_grad():
        emb.weight.copy_(weight)
    return emb(ids)


def _library_merge(symbols, pair):
    return _merge_symbols(symbols, pair, pair[0] + pair[1])


q1.library = _library_vocab
q2.library_note = "counted inside tfbook.tokenizers.BPETokenizer.train (incrementally, no function)"
q3.library = _library_merge
q4.library = _library_embed
q5.library = cosine_similarity_matrix

EXERCISES = ExerciseSet("ch02", "Chapter 2 exercises", [q1, q2, q3, q4, q5])
progress = EXERCISES.progress
