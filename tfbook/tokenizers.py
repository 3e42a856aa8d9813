"""Tokenizers written from scratch (chapter 2: Tokens and embeddings).

A tokenizer maps text to a list of integer ids and back. Every tokenizer here has the
same interface: ``tokenize`` (text to token strings), ``encode`` (text to ids),
``decode`` (ids to text), a vocabulary that starts with the special tokens, ``save``
and ``load`` (JSON), and input it has never seen mapped to ``<unk>``.

Public API:

- :data:`SPECIAL_TOKENS`: ``<pad>``, ``<unk>``, ``<bos>``, ``<eos>``, ``<mask>``
  (ids 0 to 4 in every vocabulary).
- :class:`Tokenizer`: the shared base class (vocabulary, ids, save/load).
- :class:`WhitespaceTokenizer`: one token per space-separated word.
- :class:`CharTokenizer`: one token per character (a Hangul syllable is one character).
- :class:`BPETokenizer`: byte-pair encoding (Sennrich et al. 2016) over characters,
  trained from scratch; ``decode(encode(s)) == s`` for any text whose characters were
  seen in training.
- :func:`load_corpus`: the small Korean/English corpus shipped with ``tfbook``.
"""

from __future__ import annotations

import heapq
import json
import numbers
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

__all__ = [
    "SPECIAL_TOKENS",
    "PAD",
    "UNK",
    "BOS",
    "EOS",
    "MASK",
    "Tokenizer",
    "WhitespaceTokenizer",
    "CharTokenizer",
    "BPETokenizer",
    "load_corpus",
]

PAD, UNK, BOS, EOS, MASK = "<pad>", "<unk>", "<bos>", "<eos>", "<mask>"
#: The special tokens, in the order of their ids (0 to 4) in every vocabulary.
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, BOS, EOS, MASK)

_CORPUS_FILE = "corpus_ko_en.txt"


def load_corpus(language: str | None = None) -> list[str]:
    """The sentences of the corpus shipped in ``tfbook/data/corpus_ko_en.txt``.

    The corpus was written for this book: a few hundred short Korean and English
    sentences (no download). Each line of the file is a language tag, a tab and a sentence.

    Args:
        language: ``"ko"``, ``"en"`` or ``None`` for both (Korean first).

    Returns:
        The sentences, in file order.
    """
    if language not in (None, "ko", "en"):
        raise ValueError(f"language must be 'ko', 'en' or None, got {language!r}")
    text = resources.files("tfbook").joinpath("data", _CORPUS_FILE).read_text(encoding="utf-8")
    sentences = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        tag, sentence = line.split("\t", 1)
        if language is None or tag == language:
            sentences.append(sentence)
    return sentences


def _check_texts(texts: Iterable[str], name: str = "texts") -> list[str]:
    if isinstance(texts, str):
        raise TypeError(f"{name} must be a list of strings, got a single str")
    texts = list(texts)
    for t in texts:
        if not isinstance(t, str):
            raise TypeError(f"{name} must contain only str, got {type(t).__name__}")
    return texts


class Tokenizer:
    """Base class: a vocabulary of tokens and the mapping between tokens and ids.

    Subclasses define :meth:`tokenize` (text to token strings), ``_join``
    (token strings back to text) and how a vocabulary is learnt (a ``train``
    class method). Ids ``0 .. 4`` are always the :data:`SPECIAL_TOKENS`.

    Args:
        tokens: the ordinary (non-special) tokens, in id order; they get ids from 5.
    """

    kind: ClassVar[str] = "base"

    def __init__(self, tokens: Sequence[str] = ()) -> None:
        self.id_to_token: list[str] = list(SPECIAL_TOKENS)
        self.token_to_id: dict[str, int] = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
        for tok in tokens:
            if not isinstance(tok, str) or tok == "":
                raise ValueError(f"tokens must be non-empty strings, got {tok!r}")
            if tok in self.token_to_id:
                raise ValueError(f"token {tok!r} appears twice in the vocabulary")
            self.token_to_id[tok] = len(self.id_to_token)
            self.id_to_token.append(tok)

    # -- vocabulary
    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included."""
        return len(self.id_to_token)

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def vocab(self) -> dict[str, int]:
        """A copy of the token to id mapping."""
        return dict(self.token_to_id)

    pad_id = property(lambda self: self.token_to_id[PAD], doc="Id of ``<pad>`` (0).")
    unk_id = property(lambda self: self.token_to_id[UNK], doc="Id of ``<unk>`` (1).")
    bos_id = property(lambda self: self.token_to_id[BOS], doc="Id of ``<bos>`` (2).")
    eos_id = property(lambda self: self.token_to_id[EOS], doc="Id of ``<eos>`` (3).")
    mask_id = property(lambda self: self.token_to_id[MASK], doc="Id of ``<mask>`` (4).")

    # -- text <-> tokens (subclasses)
    def tokenize(self, text: str) -> list[str]:
        """Split ``text`` into token strings (unknown pieces become ``<unk>``)."""
        raise NotImplementedError

    def _join(self, tokens: list[str]) -> str:
        raise NotImplementedError

    # -- text <-> ids
    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        """Turn ``text`` into token ids.

        Args:
            text: the text to encode.
            add_special_tokens: wrap the ids in ``<bos>`` ... ``<eos>``.

        Returns:
            A list of ints in ``[0, vocab_size)``; unknown pieces map to ``unk_id``.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        unk = self.unk_id
        ids = [self.token_to_id.get(tok, unk) for tok in self.tokenize(text)]
        if add_special_tokens:
            ids = [self.bos_id, *ids, self.eos_id]
        return ids

    def decode(self, ids: Iterable[int], *, skip_special_tokens: bool = False) -> str:
        """Turn ids back into text.

        Args:
            ids: token ids (a list of ints or a 1-D tensor).
            skip_special_tokens: drop ``<pad>``, ``<bos>``, ``<eos>`` and ``<mask>``
                (``<unk>`` is kept, so lost information stays visible).

        Returns:
            The text; special tokens that are kept appear as their names (``<unk>``).
        """
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        tokens = []
        for i in ids:
            if isinstance(i, bool) or not isinstance(i, numbers.Integral):
                raise TypeError(f"ids must be ints, got {type(i).__name__}")
            i = int(i)
            if not 0 <= i < self.vocab_size:
                raise ValueError(
                    f"ids must lie in [0, {self.vocab_size - 1}] (vocab_size={self.vocab_size}), "
                    f"got {i}"
                )
            tok = self.id_to_token[i]
            if skip_special_tokens and tok in SPECIAL_TOKENS and tok != UNK:
                continue
            tokens.append(tok)
        return self._join(tokens)

    def __call__(self, text: str, **kwargs: Any) -> list[int]:
        return self.encode(text, **kwargs)

    # -- persistence
    def _state(self) -> dict[str, Any]:
        return {"tokens": self.id_to_token[len(SPECIAL_TOKENS) :]}

    def save(self, path: str | Path) -> None:
        """Write the tokenizer to a UTF-8 JSON file (readable by :meth:`load`)."""
        state = {"kind": self.kind, "special_tokens": list(SPECIAL_TOKENS), **self._state()}
        Path(path).write_text(json.dumps(state, ensure_ascii=False, indent=1), encoding="utf-8")

    @staticmethod
    def load(path: str | Path) -> Tokenizer:
        """Read a tokenizer written by :meth:`save`; returns an instance of the saved class."""
        state = json.loads(Path(path).read_text(encoding="utf-8"))
        kinds = {cls.kind: cls for cls in (WhitespaceTokenizer, CharTokenizer, BPETokenizer)}
        kind = state.get("kind")
        if kind not in kinds:
            raise ValueError(
                f"{path}: unknown tokenizer kind {kind!r}; expected one of {list(kinds)}"
            )
        if state.get("special_tokens") != list(SPECIAL_TOKENS):
            raise ValueError(
                f"{path}: special tokens {state.get('special_tokens')} differ from "
                f"{list(SPECIAL_TOKENS)}"
            )
        return kinds[kind]._from_state(state)

    @classmethod
    def _from_state(cls, state: dict[str, Any]) -> Tokenizer:
        return cls(state["tokens"])

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._state() == other._state()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


def _count_and_select(counts: Counter, min_freq: int, max_size: int | None) -> list[str]:
    if isinstance(min_freq, bool) or not isinstance(min_freq, int) or min_freq < 1:
        raise ValueError(f"min_freq must be an int >= 1, got {min_freq!r}")
    if max_size is not None and (not isinstance(max_size, int) or max_size < 0):
        raise ValueError(f"max_size must be an int >= 0 or None, got {max_size!r}")
    kept = [t for t, c in counts.items() if c >= min_freq and t not in SPECIAL_TOKENS]
    kept.sort(key=lambda t: (-counts[t], t))  # most frequent first, ties alphabetically
    return kept if max_size is None else kept[:max_size]


class WhitespaceTokenizer(Tokenizer):
    """One token per whitespace-separated word (``str.split()``).

    The simplest tokenizer, and the one in the chapter's source slides. In Korean a
    particle is written onto its noun (여행을, 여행은, 여행이), so every noun-particle
    pair becomes its own vocabulary entry, and a pair not seen in training is ``<unk>``.
    ``decode`` joins with single spaces, so runs of whitespace are not preserved.
    """

    kind = "whitespace"

    @classmethod
    def train(
        cls, texts: Iterable[str], *, min_freq: int = 1, max_size: int | None = None
    ) -> WhitespaceTokenizer:
        """Build the vocabulary from ``texts``.

        Args:
            texts: training sentences.
            min_freq: keep words seen at least this often.
            max_size: keep at most this many words (most frequent first; ties alphabetical).
        """
        texts = _check_texts(texts)
        counts = Counter(word for t in texts for word in t.split())
        return cls(_count_and_select(counts, min_freq, max_size))

    def tokenize(self, text: str) -> list[str]:
        return [w if w in self.token_to_id else UNK for w in text.split()]

    def _join(self, tokens: list[str]) -> str:
        return " ".join(tokens)


class CharTokenizer(Tokenizer):
    """One token per Unicode character (a precomposed Hangul syllable such as 여 is one).

    Spaces are characters too, so ``decode(encode(s)) == s`` whenever every character
    of ``s`` was seen in training. Text is used as given (no Unicode normalisation):
    a syllable and its decomposed jamo are different characters.
    """

    kind = "char"

    @classmethod
    def train(
        cls, texts: Iterable[str], *, min_freq: int = 1, max_size: int | None = None
    ) -> CharTokenizer:
        """Build the vocabulary of characters seen in ``texts`` (same options as words)."""
        texts = _check_texts(texts)
        counts = Counter(ch for t in texts for ch in t)
        return cls(_count_and_select(counts, min_freq, max_size))

    def tokenize(self, text: str) -> list[str]:
        return [ch if ch in self.token_to_id else UNK for ch in text]

    def _join(self, tokens: list[str]) -> str:
        return "".join(tokens)


#: Pre-tokenisation: a word with the single space before it, or one other whitespace char.
_CHUNK = re.compile(r" ?\S+|\s")


def _chunks(text: str) -> list[str]:
    """Split text into BPE training units: ``"나는 최근"`` -> ``["나는", " 최근"]``.

    The space stays attached to the front of the following word (as in GPT-2 and
    SentencePiece), so joining the chunks gives back the text exactly.
    """
    return _CHUNK.findall(text)


class BPETokenizer(Tokenizer):
    """Byte-pair encoding over characters, learnt from a corpus (Sennrich et al. 2016).

    Training starts from single characters and repeatedly merges the most frequent
    adjacent pair of symbols into a new symbol, ``num_merges`` times. Merges never
    cross a chunk boundary; a chunk is a word with the space in front of it, so a
    token such as ``" 여행"`` carries its leading space and decoding is plain
    concatenation. Encoding replays the learnt merges in the order they were learnt.
    Characters never seen in training become ``<unk>``.

    Args:
        merges: the learnt merges, in order, as pairs of strings.
        alphabet: the base characters, in id order (ids start after the special tokens).
    """

    kind = "bpe"

    def __init__(self, merges: Sequence[tuple[str, str]], alphabet: Sequence[str]) -> None:
        merges = [tuple(m) for m in merges]
        for m in merges:
            if len(m) != 2 or not all(isinstance(s, str) and s for s in m):
                raise ValueError(f"each merge must be a pair of non-empty strings, got {m!r}")
        alphabet = list(alphabet)
        for ch in alphabet:
            if not isinstance(ch, str) or len(ch) != 1:
                raise ValueError(f"alphabet must hold single characters, got {ch!r}")
        merged = [a + b for a, b in merges]
        super().__init__(alphabet + [t for t in dict.fromkeys(merged) if t not in alphabet])
        self.merges: list[tuple[str, str]] = merges
        self.alphabet: list[str] = alphabet
        self.merge_rank: dict[tuple[str, str], int] = {}
        for rank, m in enumerate(merges):
            self.merge_rank.setdefault(m, rank)
        self._cache: dict[str, tuple[str, ...]] = {}

    @classmethod
    def train(
        cls, texts: Iterable[str], num_merges: int, *, min_pair_freq: int = 2
    ) -> BPETokenizer:
        """Learn ``num_merges`` merges from ``texts``.

        Pair counts are updated incrementally (only the chunks containing the merged
        pair are revisited) and the best pair comes from a heap, so training on a few
        hundred sentences takes well under a second. Ties between equally frequent
        pairs go to the pair that sorts first, so training is deterministic.

        Args:
            texts: training sentences.
            num_merges: how many merges to learn (the vocabulary then has at most
                ``5 + len(alphabet) + num_merges`` tokens).
            min_pair_freq: stop early when the best pair occurs fewer times than this.
        """
        texts = _check_texts(texts)
        if isinstance(num_merges, bool) or not isinstance(num_merges, int) or num_merges < 0:
            raise ValueError(f"num_merges must be an int >= 0, got {num_merges!r}")
        chunk_freq = Counter(c for t in texts for c in _chunks(t))
        char_freq: Counter = Counter()
        for chunk, f in chunk_freq.items():
            for ch in chunk:
                char_freq[ch] += f
        alphabet = sorted(char_freq, key=lambda ch: (-char_freq[ch], ch))
        words = [list(chunk) for chunk in chunk_freq]  # symbols of each distinct chunk
        freqs = list(chunk_freq.values())
        pair_count: Counter = Counter()
        where: defaultdict[tuple[str, str], set[int]] = defaultdict(set)
        for w, (symbols, f) in enumerate(zip(words, freqs, strict=True)):
            for pair in zip(symbols, symbols[1:], strict=False):
                pair_count[pair] += f
                where[pair].add(w)
        heap = [(-c, pair) for pair, c in pair_count.items()]
        heapq.heapify(heap)
        merges: list[tuple[str, str]] = []
        while len(merges) < num_merges and heap:
            neg, pair = heapq.heappop(heap)
            if pair_count.get(pair, 0) != -neg:  # stale heap entry
                continue
            if -neg < min_pair_freq:
                break
            merges.append(pair)
            new = pair[0] + pair[1]
            changed: set[tuple[str, str]] = set()
            for w in sorted(where.pop(pair, ())):
                symbols, f = words[w], freqs[w]
                for p in zip(symbols, symbols[1:], strict=False):  # remove old pairs
                    pair_count[p] -= f
                    changed.add(p)
                symbols = _merge_symbols(symbols, pair, new)
                words[w] = symbols
                for p in zip(symbols, symbols[1:], strict=False):  # add new pairs
                    pair_count[p] += f
                    where[p].add(w)
                    changed.add(p)
            for p in changed:
                c = pair_count[p]
                if c > 0:
                    heapq.heappush(heap, (-c, p))
                else:
                    del pair_count[p]
                    where.pop(p, None)
        return cls(merges, alphabet)

    def _segment(self, chunk: str) -> tuple[str, ...]:
        cached = self._cache.get(chunk)
        if cached is not None:
            return cached
        symbols = [ch if ch in self.token_to_id else UNK for ch in chunk]
        while len(symbols) > 1:
            ranks = [
                self.merge_rank.get(p, len(self.merges))
                for p in zip(symbols, symbols[1:], strict=False)
            ]
            best = min(ranks)
            if best == len(self.merges):
                break
            pair = self.merges[best]
            symbols = _merge_symbols(symbols, pair, pair[0] + pair[1])
        result = tuple(symbols)
        if len(self._cache) < 100_000:
            self._cache[chunk] = result
        return result

    def tokenize(self, text: str) -> list[str]:
        tokens: list[str] = []
        for chunk in _chunks(text):
            tokens.extend(self._segment(chunk))
        return tokens

    def _join(self, tokens: list[str]) -> str:
        return "".join(tokens)

    def _state(self) -> dict[str, Any]:
        return {"alphabet": self.alphabet, "merges": [list(m) for m in self.merges]}

    @classmethod
    def _from_state(cls, state: dict[str, Any]) -> BPETokenizer:
        return cls([tuple(m) for m in state["merges"]], state["alphabet"])

    def __repr__(self) -> str:
        return (
            f"BPETokenizer(vocab_size={self.vocab_size}, alphabet={len(self.alphabet)}, "
            f"merges={len(self.merges)})"
        )


def _merge_symbols(symbols: Sequence[str], pair: tuple[str, str], new: str) -> list[str]:
    """Replace every non-overlapping occurrence of ``pair``, scanning left to right."""
    out: list[str] = []
    i = 0
    n = len(symbols)
    while i < n:
        if i + 1 < n and symbols[i] == pair[0] and symbols[i + 1] == pair[1]:
            out.append(new)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out
