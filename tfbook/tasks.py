"""Labelled tasks made from the capstone's plays: genre and character names (chapter 9).

Chapter 9, "Fine-tuning a pre-trained Transformer", adapts the models of chapters 7 and 8 to
the two kinds of task the sources name for encoders: classifying a text and tagging its
tokens (named-entity recognition). Both tasks are cut from the Shakespeare corpus of chapter 8
(:mod:`tfbook.corpus`, fetched once by ``make corpus``), so nothing is downloaded here and the
same arguments always give the same examples.

**Which group of the First Folio** (sentence classification). The First Folio (1623), the
first collected edition of the plays, sorts them into *Comedies*, *Histories* and *Tragedies*
(its "Catalogue"); :data:`FOLIO_GROUPS` copies that grouping. The late plays now called
romances are labelled as the Folio labels them: *The Tempest* and *The Winter's Tale* are
comedies, *Cymbeline* a tragedy; *Troilus and Cressida*, printed between the histories and the
tragedies and titled "The Tragedie of ...", is a tragedy. *Pericles* is not in the First Folio,
so it has no label and is left out. A passage is ``length`` characters of spoken lines, with
the speaker headings and stage directions removed (a heading such as ``KING HENRY.`` would give
the answer away). Every group gets the same number of passages, so guessing the majority
group scores 1/3.

**Which characters are character names** (token tagging). The labels come from the play itself:
the words of its speaker headings (``LADY MACBETH.`` gives *Macbeth*) are the play's names, and
every character of a spoken line is tagged ``B`` (first letter of a name), ``I`` (rest of the
name) or ``O`` (anything else). A heading word is kept as a name only if it is not a title, an
ordinal, a nationality or a place (``KING``, ``FIRST``, ``ROMAN``, the word after ``OF``) and
the play's lines hold it capitalised (other than as a line's first word, which is always
capitalised) at least as often as in lower case: *Page*, a surname in *The Merry Wives of
Windsor*, is a name; *Witch* in *Macbeth* is not. Plays whose headings are abbreviations
(``Ham.`` in *Hamlet*) give fewer names than speeches: a play is used only when at least half
of its speeches have a heading that yields a name (:func:`names_cover`); the others would
teach that *Hamlet* is not a name.

Both tasks are split by whole plays, as chapter 8 splits its corpus: the test plays default to
:data:`tfbook.corpus.VALIDATION_PLAYS` (*Macbeth*, *Twelfth Night*, *Richard II*: one play per
group), which chapter 8's GPT never saw in pre-training either. No line of a test play is in
the training examples.

Public API:

- :data:`FOLIO_GROUPS` (play -> ``"comedy"``, ``"history"`` or ``"tragedy"``), :data:`GROUPS`,
  :data:`TAGS` (``("O", "B", "I")``), :data:`TEST_PLAYS`.
- :class:`Speech` and :func:`parse_play` ``(text)``: a play's speeches (speaker, lines).
- :func:`play_names` ``(speeches)``: the character names its headings give;
  :func:`names_cover` ``(speeches, names)``: the share of speeches whose speaker is named.
- :func:`tag_line` ``(line, names)``: the ``B``/``I``/``O`` tag ids of every character;
  :func:`capitalised_words` ``(line)``: the same from a rule (every capitalised word but the
  first), the baseline a tagger must beat.
- :func:`read_play` ``(folder, play)``: parse one play of a corpus folder.
- :func:`genre_task` ``(folder, ...)`` and :func:`name_tagging_task` ``(folder, ...)``: a
  :class:`TaskSplit` of training and test examples.
"""

from __future__ import annotations

import functools
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tfbook import _validate as check
from tfbook.corpus import VALIDATION_PLAYS, CorpusError

__all__ = [
    "FOLIO_GROUPS",
    "GROUPS",
    "TAGS",
    "TEST_PLAYS",
    "Speech",
    "TaskSplit",
    "parse_play",
    "play_names",
    "names_cover",
    "tag_line",
    "capitalised_words",
    "read_play",
    "genre_task",
    "name_tagging_task",
]

#: The First Folio's three groups, in the Folio's order; a label is an index into this tuple.
GROUPS = ("comedy", "history", "tragedy")

_COMEDIES = (
    "tempest",
    "two_gentlemen_of_verona",
    "merry_wives_of_windsor",
    "measure_for_measure",
    "comedy_of_errors",
    "much_ado_about_nothing",
    "loves_labours_lost",
    "midsummer_nights_dream",
    "merchant_of_venice",
    "as_you_like_it",
    "taming_of_the_shrew",
    "alls_well_that_ends_well",
    "twelfth_night",
    "winters_tale",
)
_HISTORIES = (
    "john",
    "richard_ii",
    "henry_iv_part_1",
    "henry_iv_part_2",
    "henry_v",
    "henry_vi_part_1",
    "henry_vi_part_2",
    "henry_vi_part_3",
    "richard_iii",
    "henry_viii",
)
_TRAGEDIES = (
    "troilus_and_cressida",
    "coriolanus",
    "tragedy_of_titus_andronicus",
    "romeo_and_juliet",
    "timon_of_athens",
    "julius_caesar",
    "macbeth",
    "hamlet",
    "lear",
    "othello",
    "antony_and_cleopatra",
    "cymbeline",
)

#: Play (file name in the corpus) -> its First Folio group, in the Folio's order (36 plays).
FOLIO_GROUPS: dict[str, str] = (
    dict.fromkeys(_COMEDIES, "comedy")
    | dict.fromkeys(_HISTORIES, "history")
    | dict.fromkeys(_TRAGEDIES, "tragedy")
)

#: Tag names of :func:`tag_line`; a tag id is an index into this tuple.
TAGS = ("O", "B", "I")

#: The plays held out for testing (chapter 8's validation plays, one per group).
TEST_PLAYS = VALIDATION_PLAYS

# A speaker heading: a line of one to four capitalised words after a blank line, ending in a
# full stop, or without one when written in capitals (``THESEUS`` in the Dream).
_HEADING = re.compile(r"^([A-Z][A-Za-z'\-]*(?: [A-Za-z'\-]+){0,3})(\.?)$")
_NOT_A_SPEAKER = re.compile(
    r"^(ACT|SCENE|PROLOGUE|EPILOGUE|INDUCTION|THE END|FINIS)\b", re.IGNORECASE
)
_INLINE_DIRECTION = re.compile(r"\[[^\]]*\]")
# Heading words that are not names: titles, ordinals, connectives, nationalities.
_NOT_NAMES = frozenset(
    "FIRST SECOND THIRD FOURTH FIFTH SIXTH OF THE AND ALL BOTH OLD YOUNG KING QUEEN PRINCE "
    "PRINCESS DUKE DUCHESS LORD LADY SIR DON EARL COUNTESS MISTRESS MASTER CHIEF "
    "ENGLISH FRENCH ROMAN ATHENIAN GOTH GOTHS".split()
)


@dataclass(frozen=True)
class Speech:
    """One speech of a play: the speaker heading (without its full stop) and the spoken lines."""

    speaker: str
    lines: tuple[str, ...]


@dataclass(frozen=True)
class TaskSplit:
    """Training and test examples of a task, split by whole plays.

    Attributes:
        train: a list of ``(text, label)``; for :func:`genre_task` the label is an index into
            :data:`GROUPS`, for :func:`name_tagging_task` a list of tag ids (indices into
            :data:`TAGS`), one per character of the text.
        test: the same for the test plays.
        train_plays: the plays the training examples were cut from.
        test_plays: the plays the test examples were cut from.
        labels: the label names (:data:`GROUPS` or :data:`TAGS`).
    """

    train: list
    test: list
    train_plays: tuple[str, ...]
    test_plays: tuple[str, ...]
    labels: tuple[str, ...]


def parse_play(text: str) -> list[Speech]:
    """The speeches of a play in the corpus's layout, stage directions removed.

    A speaker heading is a line after a blank line holding one to four capitalised words and a
    full stop (``MACBETH.``, ``Ham.``, ``LADY MACBETH.``), or the same in capitals without the
    stop; the speech is the non-blank lines after it, up to the next blank line. Stage
    directions in square brackets are dropped, on their own lines (a missing ``]`` ends at
    the next blank line) and inside a line. Act and scene headings, prologues and any text
    before the first heading are not speeches.

    Args:
        text: a play's text.

    Example:
        >>> play = "ACT I.\\n\\nSCENE I. A heath.\\n\\n[Enter three Witches.]\\n\\n"
        >>> play += "FIRST WITCH.\\nWhen shall we three meet again?\\n\\nALL.\\nFair is foul.\\n"
        >>> parse_play(play)
        [Speech(speaker='FIRST WITCH', lines=('When shall we three meet again?',)), \
Speech(speaker='ALL', lines=('Fair is foul.',))]
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str (a play's text), got {type(text).__name__}")
    lines = [line.strip() for line in text.split("\n")]
    speeches: list[tuple[str, list[str]]] = []
    current: list[str] | None = None
    in_direction = False
    for i, line in enumerate(lines):
        if in_direction:  # a stage direction over several lines
            in_direction = bool(line) and not line.endswith("]")
            if not line:
                current = None
            continue
        if line.startswith("["):
            in_direction = not line.endswith("]")
            continue
        if not line:
            current = None
            continue
        heading = _HEADING.match(line)
        if (
            heading
            and (i == 0 or not lines[i - 1])
            and (heading.group(2) or line.isupper())
            and not _NOT_A_SPEAKER.match(line)
            and i + 1 < len(lines)
            and lines[i + 1]
        ):
            current = []
            speeches.append((heading.group(1), current))
            continue
        if current is not None:
            spoken = _INLINE_DIRECTION.sub("", line).strip()
            if spoken:
                current.append(spoken)
    return [Speech(speaker, tuple(spoken)) for speaker, spoken in speeches if spoken]


_WORD = re.compile(r"[A-Za-z]+(?:-[A-Za-z]+)*")  # a word; an apostrophe ends it (Banquo's)


@functools.lru_cache(maxsize=64)
def _names_pattern(names: tuple[str, ...]) -> re.Pattern:
    """Any of ``names``, as written or in capitals, as a whole word (longest first)."""
    forms = sorted({form for name in names for form in (name, name.upper())}, key=len, reverse=True)
    return re.compile(r"(?<![A-Za-z\-])(?:" + "|".join(map(re.escape, forms)) + r")(?![A-Za-z\-])")


def _heading_words(speaker: str) -> list[str]:
    words, after_of = [], False
    for word in speaker.split():
        upper = word.upper()
        if not after_of and upper not in _NOT_NAMES and len(word) >= 2:
            words.append(word[0].upper() + word[1:].lower())  # MACBETH -> Macbeth
        after_of = upper == "OF"  # ANTIPHOLUS OF SYRACUSE: Syracuse is a place
    return words


def play_names(speeches: list[Speech]) -> tuple[str, ...]:
    """The character names a play's speaker headings give, sorted.

    Every word of every heading (``LADY MACBETH`` -> *Macbeth*), except titles, ordinals and
    nationalities (``KING``, ``LADY``, ``FIRST``, ``ROMAN``, ...) and the place after ``OF``,
    written with a capital and lower-case letters, and kept only if the spoken lines hold it
    capitalised at least as often as in lower case, and at least once, not counting the first
    word of a line (every verse line starts with a capital).

    Args:
        speeches: a play's speeches (:func:`parse_play`).

    Example:
        >>> speeches = [Speech("MACBETH", ("Where is Banquo?",)), Speech("BANQUO", ("Here.",)),
        ...             Speech("FIRST WITCH", ("Hail, Macbeth!",)), Speech("PORTER", ("Knock.",))]
        >>> play_names(speeches)
        ('Banquo', 'Macbeth')
    """
    # a verse line starts with a capital whatever its first word: count the words after it
    counts = Counter(
        w for speech in speeches for line in speech.lines for w in _WORD.findall(line)[1:]
    )
    candidates = {word for speech in speeches for word in _heading_words(speech.speaker)}
    return tuple(sorted(w for w in candidates if counts[w] >= max(counts[w.lower()], 1)))


def names_cover(speeches: list[Speech], names: tuple[str, ...]) -> float:
    """The share of speeches whose speaker heading holds one of ``names``.

    Low for a play with abbreviated headings (``Ham.``), whose names the headings do not give.
    """
    if not speeches:
        return 0.0
    wanted = set(names)
    named = sum(any(w in wanted for w in _heading_words(s.speaker)) for s in speeches)
    return named / len(speeches)


def tag_line(line: str, names: tuple[str, ...] | list[str]) -> list[int]:
    """The tag id of every character of ``line``: ``B`` = 1, ``I`` = 2, anything else ``O`` = 0.

    A name is tagged where it stands as a whole word, spelt as in ``names`` (capitalised) or
    all in capitals; a possessive ``'s`` is not part of it.

    Args:
        line: a line of text.
        names: the names to mark (:func:`play_names`).

    Example:
        >>> line = "Hail, Macbeth! Banquo's here"
        >>> "".join(TAGS[t] for t in tag_line(line, ("Banquo", "Macbeth")))
        'OOOOOOBIIIIIIOOBIIIIIOOOOOOO'
    """
    if not isinstance(line, str):
        raise TypeError(f"line must be a str, got {type(line).__name__}")
    if isinstance(names, str) or not all(isinstance(n, str) and n for n in names):
        raise TypeError(f"names must be a sequence of non-empty str, got {names!r}")
    tags = [0] * len(line)
    if not names:
        return tags
    for match in _names_pattern(tuple(names)).finditer(line):
        tags[match.start()] = 1
        tags[match.start() + 1 : match.end()] = [2] * (match.end() - match.start() - 1)
    return tags


def capitalised_words(line: str) -> list[int]:
    """``B``/``I``/``O`` tags from a rule, not a model: every capitalised word is a name.

    The baseline a tagger has to beat. A word (letters, joined by hyphens; an apostrophe ends
    it, so a possessive ``'s`` is left out) is tagged as a name when its first letter is a
    capital, except the line's first word (verse capitalises it whatever it is) and the
    pronouns ``I`` and ``O``.

    Args:
        line: a line of text.

    Example:
        >>> line = "Hail, Macbeth! Banquo's here, I say"
        >>> "".join(TAGS[t] for t in capitalised_words(line))
        'OOOOOOBIIIIIIOOBIIIIIOOOOOOOOOOOOOO'
    """
    if not isinstance(line, str):
        raise TypeError(f"line must be a str, got {type(line).__name__}")
    tags = [0] * len(line)
    for i, match in enumerate(_WORD.finditer(line)):
        word = match.group()
        if i == 0 or not word[0].isupper() or word in ("I", "O"):
            continue
        tags[match.start()] = 1
        tags[match.start() + 1 : match.end()] = [2] * (len(word) - 1)
    return tags


def read_play(folder: Path | str, play: str) -> list[Speech]:
    """The speeches of ``<folder>/<play>.txt`` (a corpus folder of :mod:`tfbook.corpus`).

    Raises:
        CorpusError: the file is missing; the message says how to fetch the corpus.
    """
    path = Path(folder) / f"{play}.txt"
    if not path.is_file():
        raise CorpusError(
            f"{path} is missing: fetch the corpus with `make corpus` "
            "(or `python -m tfbook.corpus fetch`)"
        )
    stat = path.stat()
    return list(_parsed(str(path), stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=64)
def _parsed(path: str, mtime_ns: int, size: int) -> tuple[Speech, ...]:
    """A play parsed once per version of its file (the speeches are immutable)."""
    return tuple(parse_play(Path(path).read_text(encoding="utf-8")))


def _check_folder(folder: object) -> Path:
    if not isinstance(folder, (str, Path)):
        raise TypeError(
            f"folder must be a corpus folder (str or Path), got {type(folder).__name__}"
        )
    if not (Path(folder) / "manifest.json").is_file():
        raise CorpusError(
            f"folder must be a corpus folder holding manifest.json, got {folder} (not fetched "
            "there): run `make corpus` or `python -m tfbook.corpus fetch` first"
        )
    return Path(folder)


def _check_test_plays(test_plays: object, allowed: tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(test_plays, str) or not isinstance(test_plays, (tuple, list)):
        raise TypeError(f"test_plays must be a tuple of play names, got {test_plays!r}")
    unknown = [p for p in test_plays if p not in allowed]
    if unknown or not test_plays:
        raise ValueError(
            f"test_plays must be a non-empty tuple of plays of the First Folio "
            f"(tfbook.tasks.FOLIO_GROUPS), got {tuple(test_plays)!r}"
            + (f"; unknown: {unknown}" if unknown else "")
        )
    return tuple(test_plays)


def _passages(lines: list[str], length: int, count: int, rng: random.Random) -> list[str]:
    """``count`` passages of ``length`` characters, each from a random line start onwards."""
    text = "\n".join(lines)
    starts = [0]
    for line in lines[:-1]:
        starts.append(starts[-1] + len(line) + 1)
    usable = [s for s in starts if s + length <= len(text)]
    if not usable:
        raise ValueError(f"length={length} is longer than the plays' text ({len(text)} characters)")
    return [text[s : s + length] for s in (rng.choice(usable) for _ in range(count))]


def genre_task(
    folder: Path | str,
    *,
    length: int = 128,
    train_per_group: int = 200,
    test_per_group: int = 100,
    test_plays: tuple[str, ...] = TEST_PLAYS,
    seed: int = 0,
) -> TaskSplit:
    """Passages labelled with their play's First Folio group, split by whole plays.

    Each group contributes the same number of passages, drawn from random line starts of the
    group's plays' spoken lines (headings and stage directions removed), the lines joined
    with ``"\\n"`` and cut to ``length`` characters. A longer play gives more passages than a
    shorter one of the same group; passages may overlap. Training passages come from every
    play of :data:`FOLIO_GROUPS` except ``test_plays``; test passages from ``test_plays`` only.

    Args:
        folder: the corpus folder (:func:`tfbook.corpus.fetch_shakespeare`).
        length: characters per passage.
        train_per_group, test_per_group: passages per group on each side.
        test_plays: the held-out plays; every group needs at least one on each side.
        seed: the same seed gives the same passages.

    Returns:
        A :class:`TaskSplit` whose labels are indices into :data:`GROUPS`, shuffled.

    Raises:
        CorpusError: the folder is not a fetched corpus.
        ValueError: a bad argument.
    """
    folder = _check_folder(folder)
    length = check.positive_int("length", length)
    train_per_group = check.positive_int("train_per_group", train_per_group)
    test_per_group = check.positive_int("test_per_group", test_per_group)
    test_plays = _check_test_plays(test_plays, tuple(FOLIO_GROUPS))
    seed = check.nonneg_int("seed", seed)
    for group in GROUPS:
        plays = [p for p, g in FOLIO_GROUPS.items() if g == group]
        if all(p in test_plays for p in plays) or not any(p in test_plays for p in plays):
            raise ValueError(
                f"test_plays must hold at least one {group} and leave one for training, "
                f"got {test_plays!r}"
            )
    rng = random.Random(seed)
    sides: dict[bool, list[tuple[str, int]]] = {False: [], True: []}
    for label, group in enumerate(GROUPS):
        for held_out, count in ((False, train_per_group), (True, test_per_group)):
            lines = [
                line
                for play, g in FOLIO_GROUPS.items()
                if g == group and (play in test_plays) == held_out
                for speech in read_play(folder, play)
                for line in speech.lines
            ]
            sides[held_out] += [(p, label) for p in _passages(lines, length, count, rng)]
    rng.shuffle(sides[False])
    rng.shuffle(sides[True])
    train_plays = tuple(p for p in FOLIO_GROUPS if p not in test_plays)
    return TaskSplit(sides[False], sides[True], train_plays, test_plays, GROUPS)


def name_tagging_task(
    folder: Path | str,
    *,
    train_lines: int = 2000,
    test_lines: int = 500,
    named_share: float = 0.5,
    test_plays: tuple[str, ...] = TEST_PLAYS,
    min_cover: float = 0.5,
    seed: int = 0,
) -> TaskSplit:
    """Spoken lines with a ``B``/``I``/``O`` tag per character marking the play's names.

    Each play's names come from its own headings (:func:`play_names`); plays whose headings
    name fewer than ``min_cover`` of their speeches (:func:`names_cover`: abbreviated headings)
    are left out. A share ``named_share`` of the lines on each side holds at least one name,
    the rest none (at random otherwise; a line repeated within a play is used
    at most once).

    Args:
        folder: the corpus folder (:func:`tfbook.corpus.fetch_shakespeare`).
        train_lines, test_lines: lines on each side.
        named_share: the share of lines holding a name, in ``[0, 1]``.
        test_plays: the held-out plays (of :data:`FOLIO_GROUPS`).
        min_cover: the least :func:`names_cover` a play needs to be used, in ``[0, 1]``.
        seed: the same seed gives the same lines.

    Returns:
        A :class:`TaskSplit` of ``(line, tag ids)`` pairs (labels :data:`TAGS`), shuffled;
        ``train_plays`` and ``test_plays`` list only the plays used.

    Raises:
        CorpusError: the folder is not a fetched corpus.
        ValueError: a bad argument, or fewer lines of a kind than asked for.
    """
    folder = _check_folder(folder)
    train_lines = check.positive_int("train_lines", train_lines)
    test_lines = check.positive_int("test_lines", test_lines)
    named_share = check.probability("named_share", named_share)
    test_plays = _check_test_plays(test_plays, tuple(FOLIO_GROUPS))
    min_cover = check.probability("min_cover", min_cover)
    seed = check.nonneg_int("seed", seed)
    pools: dict[bool, tuple[list, list]] = {False: ([], []), True: ([], [])}
    used: dict[bool, list[str]] = {False: [], True: []}
    for play in FOLIO_GROUPS:
        speeches = read_play(folder, play)
        names = play_names(speeches)
        if names_cover(speeches, names) < min_cover:
            continue
        held_out = play in test_plays
        used[held_out].append(play)
        for line in dict.fromkeys(line for s in speeches for line in s.lines):
            tags = tag_line(line, names)
            pools[held_out][1 if any(tags) else 0].append((line, tags))
    if not used[True]:
        raise ValueError(
            f"no play of test_plays={test_plays!r} has names_cover >= min_cover={min_cover}"
        )
    rng = random.Random(seed)
    sides = {}
    for held_out, count, name in (
        (False, train_lines, "train_lines"),
        (True, test_lines, "test_lines"),
    ):
        n_named = round(count * named_share)
        plain, named = pools[held_out]
        for pool, want, kind in ((named, n_named, "with"), (plain, count - n_named, "without")):
            if want > len(pool):
                raise ValueError(
                    f"{name}={count} with named_share={named_share} needs {want} lines {kind} "
                    f"a name, but the plays hold {len(pool)}"
                )
        chosen = rng.sample(named, n_named) + rng.sample(plain, count - n_named)
        rng.shuffle(chosen)
        sides[held_out] = chosen
    return TaskSplit(sides[False], sides[True], tuple(used[False]), tuple(used[True]), TAGS)
