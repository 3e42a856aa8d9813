"""Graded exercises of chapter 2: Tokens and embeddings.

Five implementation questions: a whitespace vocabulary with special tokens, the pair counts
and the merge step of byte-pair encoding, encoding a word by replaying the learnt merges, and
analogies by vector arithmetic (3CosAdd, cosines of normalised rows); then four of other kinds:

6. predict, then run: what BPE learns from "aaabdaaabac" (``tfbook.tokenizers.BPETokenizer``
   reveals it);
7. debugging: an encoder that maps unknown words to <pad> and splits at single spaces;
8. derivation: the root-mean-square cosine of two random vectors in d dimensions;
9. build with the library: nearest neighbours in an embedding table, from
   ``tfbook.embedding.cosine_similarity_matrix``.

Each question lists the realistic mistakes its check can name.
"""

from __future__ import annotations

import math
import random
from collections import Counter

import torch

from tfbook.embedding import cosine_similarity_matrix
from tfbook.exercises._engine import Case, ExerciseSet, Mistake, Question, compare
from tfbook.tokenizers import BPETokenizer, WhitespaceTokenizer

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
    # runs of spaces, a tab and a newline are all white space (split(" ") would count ""), and
    # "The" and "the" are two words: nothing asks for lower-casing
    untidy = ["the cat  saw The\tcat", " the dog\n", "The end"]
    cases.append(Case("untidy white space, capitals, min_freq=1", (untidy, 1)))
    return cases


def _library_vocab(texts, min_freq):
    return dict(WhitespaceTokenizer.train(texts, min_freq=min_freq).vocab)


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
            "Sort the kept words by decreasing count, breaking ties in Python's string order "
            "(key=lambda w: (-count[w], w)).",
        ),
    ],
    hints=[
        "collections.Counter counts the words of all texts: Counter(w for t in texts "
        "for w in t.split()).",
        "The five special tokens come first, in the order <pad>, <unk>, <bos>, <eos>, <mask>.",
        "Then add the words with count >= min_freq, most frequent first, ties in the order "
        "sorted() puts them in, each with the next free id.",
    ],
    kind="implement",
    library=_library_vocab,
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
    # after some merges a symbol has several characters: pairs are of symbols, not characters
    merged = {("aa", "b", "aa"): 2, ("ab", "c"): 3, ("a", "ab"): 1}
    cases.append(Case("symbols of several characters (after merges)", (merged,)))
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
    kind="implement",
    library_note="counted inside tfbook.tokenizers.BPETokenizer.train (incrementally, no function)",
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


def _compare_merged(expected, got) -> str | None:
    """A new list is asked for: a tuple (or a string) of the right symbols is refused by name."""
    if not isinstance(got, list):
        return f"output: expected a new list of strings, got {type(got).__name__} {got!r}"
    return compare(expected, got)


def _library_merge(symbols, pair):
    """One merge applied by ``BPETokenizer.tokenize``: each distinct symbol becomes one
    private-use character (the tokenizer's alphabet), the pair the tokenizer's only merge."""
    distinct = list(dict.fromkeys([*symbols, *pair]))
    char = {symbol: chr(0xE000 + i) for i, symbol in enumerate(distinct)}
    back = {c: symbol for symbol, c in char.items()}
    bpe = BPETokenizer([(char[pair[0]], char[pair[1]])], alphabet=list(back))
    tokens = bpe.tokenize("".join(char[s] for s in symbols))
    return [back[t] if len(t) == 1 else pair[0] + pair[1] for t in tokens]


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
    compare_fn=_compare_merged,
    kind="implement",
    library=_library_merge,
)

# --------------------------------------------------------------------- q4: encode with merges


def _reference_segment(chunk, merges):
    """The symbols BPE gives ``chunk`` (a word, maybe with one space in front): start from its
    characters and replay the learnt ``merges`` in the order they were learnt, each one
    everywhere, scanning from left to right."""
    symbols = list(chunk)
    for a, b in merges:  # merge 1 everywhere, then merge 2 everywhere, ...
        out, i = [], 0
        while i < len(symbols):
            if i + 1 < len(symbols) and symbols[i] == a and symbols[i + 1] == b:
                out.append(a + b)
                i += 2
            else:
                out.append(symbols[i])
                i += 1
        symbols = out
    return symbols


def _merge_everywhere(symbols, a, b, *, first_only=False):
    out, i, done = [], 0, False
    while i < len(symbols):
        if not done and i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == (a, b):
            out.append(a + b)
            i += 2
            done = first_only
        else:
            out.append(symbols[i])
            i += 1
    return out


def _right_merge(symbols, a, b):
    out, i = [], len(symbols) - 1
    while i >= 0:
        if i >= 1 and (symbols[i - 1], symbols[i]) == (a, b):
            out.append(a + b)
            i -= 2
        else:
            out.append(symbols[i])
            i -= 1
    return out[::-1]


def _segment_greedy_longest(chunk, merges):
    vocab = set(chunk) | {a + b for a, b in merges}
    out, i = [], 0
    while i < len(chunk):
        j = max(j for j in range(i + 1, len(chunk) + 1) if chunk[i:j] in vocab or j == i + 1)
        out.append(chunk[i:j])
        i = j
    return out


def _segment_newest_first(chunk, merges):
    symbols = list(chunk)
    for a, b in reversed(merges):
        symbols = _merge_everywhere(symbols, a, b)
    return symbols


def _segment_first_occurrence(chunk, merges):
    symbols = list(chunk)
    for a, b in merges:
        symbols = _merge_everywhere(symbols, a, b, first_only=True)
    return symbols


def _segment_one_pass(chunk, merges):
    known = {tuple(m) for m in merges}
    out, i = [], 0
    while i < len(chunk):  # one scan of the characters: any known pair is merged at once
        if i + 1 < len(chunk) and (chunk[i], chunk[i + 1]) in known:
            out.append(chunk[i] + chunk[i + 1])
            i += 2
        else:
            out.append(chunk[i])
            i += 1
    return out


def _segment_from_the_right(chunk, merges):
    symbols = list(chunk)
    for a, b in merges:
        symbols = _right_merge(symbols, a, b)
    return symbols


def _segment_stops_at_missing(chunk, merges):
    symbols = list(chunk)
    for a, b in merges:
        if (a, b) not in zip(symbols, symbols[1:], strict=False):
            break  # a merge that does not apply ends the replay
        symbols = _merge_everywhere(symbols, a, b)
    return symbols


def _segment_space_apart(chunk, merges):
    head, word = ([" "], chunk[1:]) if chunk.startswith(" ") else ([], chunk)
    symbols = list(word)
    for a, b in merges:
        symbols = _merge_everywhere(symbols, a, b)
    return head + symbols


def _segment_last_dropped(chunk, merges):
    symbols = list(chunk)
    for a, b in merges:
        out, i = [], 0
        while i < len(symbols) - 1:  # the last symbol is only ever read as a right partner
            if (symbols[i], symbols[i + 1]) == (a, b):
                out.append(a + b)
                i += 2
            else:
                out.append(symbols[i])
                i += 1
        symbols = out
    return symbols


def _segment_cases() -> list[Case]:
    low = [("l", "o"), ("lo", "w"), ("e", "r"), ("low", "er")]
    # ("b", "c") was learnt first: "abc" is a + bc although the vocabulary also holds "abc"
    conflict = [("b", "c"), ("a", "b"), ("ab", "c")]
    corpus = [
        "나는 최근 파리 여행을 다녀왔다",
        "나는 파리 여행이 좋았다",
        "친구는 최근 제주 여행을 다녀왔다",
        "여행을 좋아하는 친구",
    ]
    learnt = BPETokenizer.train(corpus, 12, min_pair_freq=2).merges
    return [
        Case("two merges compete for the 'b' of 'abc'", ("abc", [("a", "b"), ("b", "c")])),
        Case("'lower' with 4 merges", ("lower", low)),
        Case("a merge learnt first wins: 'abc'", ("abc", conflict)),
        Case("'abab' with one merge", ("abab", [("a", "b")])),
        Case("'aaa' with ('a', 'a')", ("aaa", [("a", "a")])),
        Case("a merge that does not apply, then one that does", ("ab", [("x", "y"), ("a", "b")])),
        Case("' 여행을' with 12 merges learnt from 4 sentences", (" 여행을", learnt)),
        Case("'여행이다' (never seen) with the same merges", ("여행이다", learnt)),
        Case("no merges: the characters", ("파리", [])),
        Case("one character", ("a", [("a", "b")])),
        Case(
            "a word longer than any merge: 'lowerlower'",
            ("lowerlower", low),
        ),
    ]


def _compare_segments(expected, got) -> str | None:
    """A list is asked for: a tuple (or a string) of the right symbols is refused by name."""
    if not isinstance(got, list):
        return f"output: expected a list of strings, got {type(got).__name__} {got!r}"
    return compare(expected, got)


def _library_segment(chunk, merges):
    alphabet = sorted(set(chunk) | {ch for a, b in merges for ch in a + b})
    return BPETokenizer(merges, alphabet).tokenize(chunk)


q4 = Question(
    "ch02.q4",
    "BPE: encode a word with the learnt merges",
    reference=_reference_segment,
    cases=_segment_cases,
    mistakes=[
        Mistake(
            "the leading space kept apart from the merges",
            _segment_space_apart,
            "The space in front of a word is a character like any other: the merges learnt "
            "from the corpus join it to the word ((' ', '여행') makes ' 여행'), so replay "
            "them on list(chunk), space included.",
        ),
        Mistake(
            "the last symbol lost when it is not merged",
            _segment_last_dropped,
            "A loop that stops at len(symbols) - 1 never copies the last symbol when it is not "
            "the right half of a merged pair: after the loop, append what is left.",
        ),
        Mistake(
            "merged as far as the vocabulary allows, not in the order the merges were learnt",
            _segment_greedy_longest,
            "BPE neither looks for the longest token it knows nor merges the first known pair "
            "it meets in the word: it replays the merges in the order they were learnt, so a "
            "merge learnt earlier can split a word that also exists as one token.",
        ),
        Mistake(
            "one scan of the characters, merging any known pair",
            _segment_one_pass,
            "Merged symbols must be merged again ('lo' + 'w'), and which pair goes first is "
            "decided by the order the merges were learnt, not by the position in the word: "
            "go through the merges, not through the characters.",
        ),
        Mistake(
            "merges replayed newest first",
            _segment_newest_first,
            "Later merges are built from the symbols of earlier ones (('lo', 'w') needs 'lo'): "
            "replay them in the order they were learnt, first merge first.",
        ),
        Mistake(
            "each merge applied to its first occurrence only",
            _segment_first_occurrence,
            "A merge replaces every occurrence of its pair in the word, as in exercise 2.3.",
        ),
        Mistake(
            "pairs merged scanning from the right",
            _segment_from_the_right,
            "Scan from left to right, so 'aaa' with ('a', 'a') gives ['aa', 'a'].",
        ),
        Mistake(
            "replay stopped at the first merge that does not apply",
            _segment_stops_at_missing,
            "A merge that does not occur in this word is skipped, not the end: later merges "
            "may still apply.",
        ),
    ],
    hints=[
        "Start with list(chunk), one symbol per character, the space included.",
        "Go through merges in their order; each one rewrites the whole current list of symbols "
        "before the next merge is tried (your merge_pair of exercise 2.3 does one such step).",
    ],
    compare_fn=_compare_segments,
    kind="implement",
    library=_library_segment,
    forbidden=(
        "tfbook.tokenizers.BPETokenizer.tokenize",
        "tfbook.tokenizers.BPETokenizer.encode",
        "tfbook.tokenizers.BPETokenizer._segment",
        "tfbook.tokenizers._merge_symbols",
    ),
)


# --------------------------------------------------------------------- q5: analogies


def _unit_rows(weight):
    return weight / weight.norm(dim=1, keepdim=True)


def _reference_analogy(weight, a, b, c):
    """3CosAdd: for each query, the token d (not a, b or c) whose row is most similar in cosine
    to u_b - u_a + u_c, the rows normalised first ("a is to b as c is to d")."""
    unit = _unit_rows(weight)  # (V, d), rows of length 1
    target = unit[b] - unit[a] + unit[c]  # (Q, d)
    scores = target @ unit.T  # (Q, V): cosine up to the positive factor 1 / |target|
    queries = torch.arange(len(a))
    for ids in (a, b, c):  # the three given tokens are never the answer
        scores[queries, ids] = float("-inf")
    return scores.argmax(dim=1)  # (Q,) int64


def _analogy_parts(
    weight,
    a,
    b,
    c,
    *,
    normalise=True,
    sign=1.0,
    exclude=("a", "b", "c"),
    fill=float("-inf"),
    dot=False,
    pick=torch.argmax,
):
    unit = _unit_rows(weight) if normalise else weight
    target = sign * (unit[b] - unit[a]) + unit[c]
    rows = weight if dot else _unit_rows(weight)
    scores = target @ rows.T
    queries = torch.arange(len(a))
    for name, ids in (("a", a), ("b", b), ("c", c)):
        if name in exclude:
            scores[queries, ids] = fill if pick is torch.argmax else -fill
    return pick(scores, dim=1)


def _analogy_raw_arithmetic(weight, a, b, c):
    return _analogy_parts(weight, a, b, c, normalise=False)


def _analogy_reversed(weight, a, b, c):
    return _analogy_parts(weight, a, b, c, sign=-1.0)


def _analogy_no_exclusion(weight, a, b, c):
    return _analogy_parts(weight, a, b, c, exclude=())


def _analogy_only_c_excluded(weight, a, b, c):
    return _analogy_parts(weight, a, b, c, exclude=("c",))


def _analogy_zero_fill(weight, a, b, c):
    return _analogy_parts(weight, a, b, c, fill=0.0)


def _analogy_dot_products(weight, a, b, c):
    return _analogy_parts(weight, a, b, c, dot=True)


def _analogy_argmin(weight, a, b, c):
    return _analogy_parts(weight, a, b, c, pick=torch.argmin)


def _analogy_cases():
    def table(seed, v, d, spread=0.0, dtype=torch.float32):
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(v, d, generator=g, dtype=torch.float64)
        if spread:  # row norms from 10^-spread to 10^spread
            w = w * 10.0 ** (spread * (2 * torch.rand(v, 1, generator=g, dtype=torch.float64) - 1))
        return w.to(dtype), g

    def ids(g, v, q):
        return [torch.randint(0, v, (q,), generator=g) for _ in range(3)]

    w1, g1 = table(70, 30, 8)
    w2, g2 = table(71, 40, 6, spread=2.0)
    w3, _ = table(72, 4, 3)
    w4, g4 = table(73, 25, 5, dtype=torch.float64)
    # c's own row is the nearest to b - a + c when b and a nearly cancel: exclusion matters
    w5, g5 = table(74, 20, 6)
    w5[1] = w5[0] + 0.01 * torch.randn(6, generator=g5)
    # b - a + c = (-1, 1, 1); the three other rows all point away from it (cosines < 0)
    w6 = torch.tensor(
        [
            [1.0, 0.0, 0.0],
            [0.0, 1.0, 0.0],
            [0.0, 0.0, 1.0],
            [1.0, -0.2, -0.1],
            [0.5, -1.0, 0.2],
            [0.3, 0.1, -1.0],
        ]
    )
    return [
        Case("random table V = 30, d = 8, 6 queries", (w1, *ids(g1, 30, 6))),
        Case("rows whose norms range from 0.01 to 100, V = 40, 8 queries", (w2, *ids(g2, 40, 8))),
        Case(
            "b and a almost the same row: c itself is the nearest (V = 20)",
            (w5, torch.tensor([0, 1]), torch.tensor([1, 0]), torch.tensor([7, 12])),
        ),
        Case(
            "a = c and a = b in some queries (V = 30)",
            (w1, torch.tensor([3, 5, 9]), torch.tensor([3, 8, 2]), torch.tensor([3, 5, 4])),
        ),
        Case(
            "every allowed cosine negative (V = 6): the best is the least negative",
            (w6, torch.tensor([0, 0]), torch.tensor([1, 2]), torch.tensor([2, 1])),
        ),
        Case(
            "V = 4 and a, b, c distinct: one token left",
            (w3, torch.tensor([0, 3]), torch.tensor([1, 2]), torch.tensor([2, 1])),
        ),
        Case("float64 table V = 25, d = 5, 5 queries", (w4, *ids(g4, 25, 5))),
    ]


def _library_analogy(weight, a, b, c):
    """The same search with the library's cosine matrix: the candidates' cosines with the
    target row, computed among all rows at once."""
    unit = _unit_rows(weight)
    target = unit[b] - unit[a] + unit[c]  # (Q, d)
    cos = cosine_similarity_matrix(torch.cat([target, weight]))[: len(a), len(a) :]  # (Q, V)
    queries = torch.arange(len(a))
    for ids in (a, b, c):
        cos[queries, ids] = float("-inf")
    return cos.argmax(dim=1)


q5 = Question(
    "ch02.q5",
    "Analogies by vector arithmetic",
    reference=_reference_analogy,
    cases=_analogy_cases,
    mistakes=[
        Mistake(
            "b - a + c on the raw rows, not on the normalised ones",
            _analogy_raw_arithmetic,
            "Normalise every row to length 1 first, then form u_b - u_a + u_c: with raw rows a "
            "long vector dominates the sum.",
        ),
        Mistake(
            "a - b + c: the offset the wrong way round",
            _analogy_reversed,
            "'a is to b as c is to d' means d - c = b - a, so the target is u_b - u_a + u_c.",
        ),
        Mistake(
            "a, b and c not excluded",
            _analogy_no_exclusion,
            "The nearest row to u_b - u_a + u_c is often b or c itself; the answer must be "
            "another token: exclude a, b and c before taking the argmax.",
        ),
        Mistake(
            "only c excluded",
            _analogy_only_c_excluded,
            "Exclude all three given tokens, a and b as well as c.",
        ),
        Mistake(
            "the excluded tokens given a finite score (such as 0 or -1), not -inf",
            _analogy_zero_fill,
            "Scores can be negative, and below -1 too (the target is not of length 1): when "
            "every allowed token scores below the fill value, an excluded one is picked. Use "
            "float('-inf').",
        ),
        Mistake(
            "dot products with the raw rows instead of cosines",
            _analogy_dot_products,
            "Compare the target with the normalised rows: a dot product with a raw row favours "
            "long rows whatever their direction.",
        ),
        Mistake(
            "argmin: the least similar token",
            _analogy_argmin,
            "The answer is the most similar remaining token: argmax of the cosine.",
        ),
    ],
    hints=[
        "Normalise the table's rows once (each divided by its norm, keepdim=True), then index "
        "it with a, b and c to get three (Q, d) tensors.",
        "One matrix product of the (Q, d) targets with the normalised table's transpose gives "
        "every query's scores against every token, (Q, V); dividing by the target's norm "
        "would not change the argmax.",
        "Before the argmax, set the scores of each query's own a, b and c to -inf "
        "(scores[torch.arange(Q), a] = ...).",
    ],
    compare_fn=lambda expected, got: (
        f"output: expected a torch.long tensor of token ids, got {type(got).__name__}"
        + (f" {got.dtype}" if isinstance(got, torch.Tensor) else "")
        if not isinstance(got, torch.Tensor) or got.dtype != torch.long
        else compare(expected, got)
    ),
    kind="implement",
    library=_library_analogy,
    forbidden=(
        "tfbook.embedding.cosine_similarity_matrix",
        "torch.nn.functional.cosine_similarity",
    ),
)


# --------------------------------------------------------------------- q6: predict BPE

#: The training text of exercise 2.6 (the classic example of byte-pair encoding).
BPE_TEXT = "aaabdaaabac"
BPE_KINDS = (
    "vocab_size with 0 merges",
    "tokens in the text after 3 merges",
    "vocab_size after 3 merges",
    "vocab_size when asked for 10 merges",
)


def _reference_predicted_bpe(kind):
    """Numbers about ``BPETokenizer.train(["aaabdaaabac"], k)`` (its vocabulary size, and the
    length of the training text once encoded)."""
    specials, alphabet = 5, 4  # <pad> <unk> <bos> <eos> <mask>; a, b, c, d
    # merges: a+a (3 times), a+b (2 times), aa+ab (2 times); after that every pair occurs once
    learnt = {"vocab_size with 0 merges": 0, "vocab_size after 3 merges": 3}
    if kind == "tokens in the text after 3 merges":
        return 5  # aaab | d | aaab | a | c
    if kind == "vocab_size when asked for 10 merges":
        return specials + alphabet + 3  # min_pair_freq=2 stops training after 3 merges
    return specials + alphabet + learnt[kind]


def _bpe_no_specials(kind):
    value = _reference_predicted_bpe(kind)
    return value if kind.startswith("tokens") else value - 5


def _bpe_merge_replaces_parts(kind):
    return 9 if kind.startswith("vocab_size") else _reference_predicted_bpe(kind)


def _bpe_one_token_per_merge(kind):
    return 11 - 3 if kind.startswith("tokens") else _reference_predicted_bpe(kind)


def _bpe_merges_taken_literally(kind):
    if kind == "vocab_size when asked for 10 merges":
        return 5 + 4 + 10
    return _reference_predicted_bpe(kind)


def _library_predicted_bpe(kind):
    merges = {"vocab_size with 0 merges": 0, "vocab_size when asked for 10 merges": 10}.get(kind, 3)
    tokenizer = BPETokenizer.train([BPE_TEXT], merges)
    if kind.startswith("tokens"):
        return len(tokenizer.tokenize(BPE_TEXT))
    return tokenizer.vocab_size


q6 = Question(
    "ch02.q6",
    "Predict what BPE learns from one word",
    reference=_reference_predicted_bpe,
    cases=lambda: [Case(kind, (kind,)) for kind in BPE_KINDS],
    mistakes=[
        Mistake(
            "the five special tokens not counted",
            _bpe_no_specials,
            "Every vocabulary of tfbook.tokenizers starts with <pad>, <unk>, <bos>, <eos> and "
            "<mask> (ids 0 to 4); the characters get ids after them.",
        ),
        Mistake(
            "a merge thought to replace its two parts in the vocabulary",
            _bpe_merge_replaces_parts,
            "A merge adds one token and removes nothing: 'a' is still needed, for example for "
            "the lone a before the c.",
        ),
        Mistake(
            "each merge thought to shorten the text by one token",
            _bpe_one_token_per_merge,
            "A merge replaces every occurrence of its pair, so it can remove several tokens; "
            "it also removes none where a pair overlaps one merged before. Apply the merges.",
        ),
        Mistake(
            "num_merges taken as the number of merges learnt",
            _bpe_merges_taken_literally,
            "Training stops early when the most frequent pair occurs fewer than min_pair_freq "
            "(2) times: count the pairs left after the third merge.",
        ),
    ],
    hints=[
        "Write the text as 11 single characters and count every adjacent pair. The most "
        "frequent pair is merged first, everywhere, from left to right; ties go to the pair "
        "that sorts first.",
        "After each merge count the pairs again. The vocabulary is the special tokens, then "
        "the alphabet, then one new token per merge.",
        "Look at the pair counts after three merges before you answer the last question: "
        "train() has a min_pair_freq of 2.",
    ],
    kind="predict",
    library=_library_predicted_bpe,
)

# --------------------------------------------------------------------- q7: debugging


def _reference_encode(text, vocab, add_special_tokens=False):
    """Ids of the whitespace words of ``text``; unknown words become <unk>
    (``WhitespaceTokenizer.encode``)."""
    unknown = vocab["<unk>"]
    ids = [vocab.get(word, unknown) for word in text.split()]  # split() drops empty strings
    if not add_special_tokens:
        return ids
    return [vocab["<bos>"], *ids, vocab["<eos>"]]


def _encode_listing(text, vocab, add_special_tokens=False):
    ids = [vocab.get(w, 0) for w in text.split(" ")]
    if add_special_tokens:
        ids = [vocab["<bos>"]] + ids + [vocab["<eos>"]]
    return ids


def _encode_unk_only(text, vocab, add_special_tokens=False):
    ids = [vocab.get(w, vocab["<unk>"]) for w in text.split(" ")]
    if add_special_tokens:
        ids = [vocab["<bos>"]] + ids + [vocab["<eos>"]]
    return ids


def _encode_split_only(text, vocab, add_special_tokens=False):
    ids = [vocab.get(w, 0) for w in text.split()]
    if add_special_tokens:
        ids = [vocab["<bos>"]] + ids + [vocab["<eos>"]]
    return ids


def _encode_drops_unknown(text, vocab, add_special_tokens=False):
    ids = [vocab[w] for w in text.split() if w in vocab]
    if add_special_tokens:
        ids = [vocab["<bos>"]] + ids + [vocab["<eos>"]]
    return ids


def _encode_cases():
    vocab = _reference_vocab(["나는 최근 파리 여행을 다녀왔다", "나는 빵을 먹었다"], 1)
    cases = [
        Case("two spaces and an unknown word", ("나는  파리를 좋아한다", vocab)),
        Case(
            "with <bos> and <eos>", ("나는 최근 빵을 먹었다", vocab), {"add_special_tokens": True}
        ),
    ]
    for seed in range(2):
        rng = random.Random(60 + seed)
        text = " ".join(rng.choices(_KO_WORDS, k=6))
        cases.append(Case(f"random sentence, seed {seed}", (text, vocab)))
    cases += [
        Case("spaces before and after", ("  나는 여행을 ", vocab)),
        Case("empty text with <bos> and <eos>", ("", vocab), {"add_special_tokens": True}),
        # split() also cuts at tabs and newlines; dropping split(" ")'s empty strings does not
        Case("a tab and a newline between words", ("나는\t파리\n여행을 먹었다", vocab)),
    ]
    return cases


def _library_encode(text, vocab, add_special_tokens=False):
    words = sorted((w for w, i in vocab.items() if i >= len(_SPECIALS)), key=vocab.get)
    return WhitespaceTokenizer(words).encode(text, add_special_tokens=add_special_tokens)


q7 = Question(
    "ch02.q7",
    "Fix an encoder that loses unknown words",
    reference=_reference_encode,
    cases=_encode_cases,
    mistakes=[
        Mistake(
            "the listing unchanged",
            _encode_listing,
            "Two bugs: id 0 is <pad>, not <unk> (a padding mask would then hide the unknown "
            "word), and split(' ') makes an empty 'word' at every extra space.",
        ),
        Mistake(
            "<unk> fixed, split(' ') kept",
            _encode_unk_only,
            "split(' ') cuts at every single space: two spaces in a row, or a space at either "
            "end, give empty strings that become <unk>. Call split() without an argument.",
        ),
        Mistake(
            "split fixed, unknown words still mapped to id 0 (<pad>)",
            _encode_split_only,
            "Id 0 is <pad>. An unknown word must become vocab['<unk>'] so the model sees that "
            "a word was there.",
        ),
        Mistake(
            "unknown words dropped",
            _encode_drops_unknown,
            "Dropping a word changes the sentence's length and the positions of the words "
            "after it; keep a place for it with <unk>.",
        ),
    ],
    hints=[
        "Try the listing on '나는  파리를 좋아한다' (two spaces, and a word the vocabulary does "
        "not know) and decode the ids by hand: what does id 0 mean in every vocabulary of "
        "this chapter?",
        "Compare 'a  b'.split(' ') with 'a  b'.split() in Python.",
        "dict.get(key, default) returns default for a missing key; the default you want is the "
        "id of <unk>, looked up in vocab.",
    ],
    kind="debug",
    library=_library_encode,
)

# --------------------------------------------------------------------- q8: derivation


def _reference_rms_cosine(d):
    """Root-mean-square cosine of two independent random vectors with N(0, 1) entries in
    ``d`` dimensions: sqrt(E[cos^2]) = 1/sqrt(d)."""
    # Fix one vector (rotation invariance): cos is the first coordinate u_1 of a random unit
    # vector u. The d squared coordinates sum to 1 and are exchangeable: E[u_1^2] = 1/d.
    return 1.0 / math.sqrt(d)


def _rms_cosine_one_over_d(d):
    return 1.0 / d


def _rms_cosine_half_normal(d):
    return math.sqrt(2.0 / (math.pi * d))


def _rms_cosine_mean(d):
    return 0.0


def _rms_cosine_unnormalised(d):
    return math.sqrt(d)


q8 = Question(
    "ch02.q8",
    "How orthogonal are random embeddings?",
    reference=_reference_rms_cosine,
    cases=lambda: [
        Case("d = 16", (16,)),
        Case("d = 512", (512,)),
        Case("d = 2", (2,)),
        Case("edge: d = 1 (cos is always +1 or -1)", (1,)),
    ],
    mistakes=[
        Mistake(
            "E[cos^2] = 1/d without the square root",
            _rms_cosine_one_over_d,
            "1/d is the mean of cos^2; the root-mean-square is its square root.",
        ),
        Mistake(
            "sqrt(2 / (pi d)): the mean of |cos| of a normal approximation, not the RMS",
            _rms_cosine_half_normal,
            "For large d, cos is roughly N(0, 1/d) and E|cos| is about sqrt(2/(pi d)); the "
            "question asks for sqrt(E[cos^2]), which is exactly 1/sqrt(d) for every d.",
        ),
        Mistake(
            "the mean cosine (0) instead of the root-mean-square",
            _rms_cosine_mean,
            "The mean of cos is 0 by symmetry; the typical size of cos is measured by the "
            "square root of the mean of cos^2.",
        ),
        Mistake(
            "the dot product's size instead of the cosine's",
            _rms_cosine_unnormalised,
            "sqrt(d) is the RMS of the dot product a . b; the cosine divides it by |a| |b|, "
            "which is about d.",
        ),
    ],
    hints=[
        "The distribution of N(0, I) vectors does not change under rotations, so you may "
        "rotate until one of the two vectors points along the first axis.",
        "Then the cosine is the first coordinate of the other vector divided by its length: "
        "the first coordinate u_1 of a random unit vector u.",
        "The squares u_1^2, ..., u_d^2 add up to 1 and all have the same distribution. "
        "Return the square root of E[u_1^2].",
    ],
    atol=1e-9,
    rtol=1e-9,
    kind="derive",
    library_note=(
        "none: a derivation; tests/test_exercise_kinds.py compares it with a measurement made with "
        "tfbook.embedding.cosine_similarity_matrix"
    ),
)

# --------------------------------------------------------------------- q9: build


def _reference_nearest(weight, ids, k):
    """The k tokens whose rows are most cosine-similar to each row of ``ids`` (itself excluded),
    most similar first; built on ``tfbook.embedding.cosine_similarity_matrix``."""
    similar = cosine_similarity_matrix(weight)[ids]  # (N, V): each query against every token
    similar[torch.arange(len(ids)), ids] = float("-inf")  # a token is not its own neighbour
    return similar.topk(k, dim=-1).indices  # (N, k)


def _nearest_includes_itself(weight, ids, k):
    return cosine_similarity_matrix(weight)[ids].topk(k, dim=-1).indices


def _nearest_by_dot_product(weight, ids, k):
    similar = (weight @ weight.T)[ids]
    similar[torch.arange(len(ids)), ids] = float("-inf")
    return similar.topk(k, dim=-1).indices


def _nearest_farthest_first(weight, ids, k):
    similar = cosine_similarity_matrix(weight)[ids]
    similar[torch.arange(len(ids)), ids] = float("inf")
    return similar.topk(k, dim=-1, largest=False).indices


def _nearest_returns_similarities(weight, ids, k):
    similar = cosine_similarity_matrix(weight)[ids]
    similar[torch.arange(len(ids)), ids] = float("-inf")
    return similar.topk(k, dim=-1).values


def _nearest_cases():
    cases = []
    for seed, (v, d, n, k) in enumerate([(12, 6, 3, 4), (20, 8, 2, 3), (9, 4, 4, 2)]):
        g = torch.Generator().manual_seed(90 + seed)
        # rows of very different lengths: a dot product ranks long rows first, a cosine does not
        lengths = torch.exp(1.5 * torch.randn(v, 1, generator=g))
        weight = lengths * torch.randn(v, d, generator=g)
        ids = torch.randperm(v, generator=g)[:n]
        cases.append(Case(f"random, V={v}, d={d}, k={k}, seed {seed}", (weight, ids, k)))
    g = torch.Generator().manual_seed(95)
    weight = torch.randn(5, 3, generator=g)
    cases.append(Case("edge: k = V - 1 (every other token)", (weight, torch.tensor([0, 4]), 4)))
    cases.append(Case("edge: the same query twice", (weight, torch.tensor([2, 2]), 1)))
    # rows 1 and 4 identical: the query ties with its twin at cos = 1, so dropping the first
    # column of topk(k + 1) drops the twin for one of the two queries and keeps the query itself
    twins = weight.clone()
    twins[4] = twins[1]
    cases.append(Case("edge: two identical rows, both queried", (twins, torch.tensor([1, 4]), 2)))
    return cases


q9 = Question(
    "ch02.q9",
    "Nearest neighbours in an embedding table",
    reference=_reference_nearest,
    cases=_nearest_cases,
    mistakes=[
        Mistake(
            "each token listed as its own nearest neighbour",
            _nearest_includes_itself,
            "A row's cosine with itself is 1, the largest possible: exclude the query's own "
            "column (set it to -inf) before ranking.",
        ),
        Mistake(
            "ranked by dot product instead of cosine",
            _nearest_by_dot_product,
            "A dot product prefers long rows whatever their direction; rank by the cosine "
            "(cosine_similarity_matrix), which compares directions only.",
        ),
        Mistake(
            "the least similar tokens first",
            _nearest_farthest_first,
            "Nearest means the largest cosine: topk picks the largest values by default.",
        ),
        Mistake(
            "the similarities returned instead of the token ids",
            _nearest_returns_similarities,
            "Return the ids of the neighbours, the .indices of topk, not its .values.",
        ),
    ],
    hints=[
        "cosine_similarity_matrix(weight) is the (V, V) table of every pair's cosine; the rows "
        "of the queries are the ones you need.",
        "Before ranking, make sure a query cannot choose itself (its own cosine is 1).",
        "torch.topk(values, k, dim=-1) returns the k largest values of every row and their "
        "positions, largest first. Return a (len(ids), k) tensor of ids.",
    ],
    kind="build",
    library_note=(
        "none: tfbook ranks no neighbours; the reference is built on "
        "tfbook.embedding.cosine_similarity_matrix"
    ),
)


EXERCISES = ExerciseSet.collect(globals(), "Chapter 2 exercises")
progress = EXERCISES.progress
__all__ = [*EXERCISES.names, "EXERCISES", "progress"]
