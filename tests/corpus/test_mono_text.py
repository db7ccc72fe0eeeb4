"""OPUS mono text: streamed in pieces with bounded memory, each run split on its own, ids independent of place."""

import gzip
import shutil
from collections import Counter

import pytest

from corpus.dump import ReadConfig, iter_members, read_path
from corpus.opus import parse_text
from corpus.report import Report
from reranker.windows import split_of
from tests.corpus.archives import tar_gz_bytes, zip_bytes


def mono_text(n_lines: int) -> bytes:
    """Sentences with blank lines and whitespace-only lines mixed in, as real dumps have."""
    out = []
    for i in range(n_lines):
        out.append(f"Sentence number {i}, said {'loudly' if i % 3 else 'softly'}.\n")
        if i % 7 == 0:
            out.append("\n")
        if i % 11 == 0:
            out.append("   \t\n")
    return "".join(out).encode()


SMALL = ReadConfig(text_lines_per_document=10, text_piece_bytes=500)
BOUND = SMALL.text_piece_bytes + 10 * 60  # pieces end on run boundaries: at most one run (10 lines) over


def docs_of(path, config=SMALL, report=None):
    return [(d.source_id, d.texts()) for d in read_path(path, report or Report(), config)]


@pytest.mark.parametrize("name", ["en.txt", "en.txt.gz"])
def test_a_streamed_file_reads_as_the_whole_file_would(tmp_path, name):
    data = mono_text(1234)
    (tmp_path / name).write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    members = list(iter_members(tmp_path / name, Report(), SMALL))
    assert len(members) > 10  # really in pieces
    # Each piece is about the piece size: memory does not grow with the file.
    assert max(len(m.data) for m in members) < BOUND
    assert sum(m.disk_bytes for m in members) == (tmp_path / name).stat().st_size  # progress adds up
    whole = [(d.source_id, d.texts()) for d in parse_text(data, "en.txt", Report(), 10)]
    assert docs_of(tmp_path / name) == whole
    assert [i for i, _ in whole] == [f"en.txt@{k}" for k in range(len(whole))]
    assert all(len(texts) == 10 for _, texts in whole[:-1]) and len(whole[-1][1]) == 1234 % 10


def test_one_file_larger_than_the_member_cap_is_read_not_skipped(tmp_path):
    data = mono_text(3000)
    (tmp_path / "en.txt.gz").write_bytes(gzip.compress(data))
    report = Report()
    config = ReadConfig(text_lines_per_document=10, text_piece_bytes=1000, max_member_bytes=2000)
    docs = docs_of(tmp_path / "en.txt.gz", config, report)
    assert sum(len(t) for _, t in docs) == 3000 and report.n_problems == 0
    assert report.counts["text_files"] == 1  # one file, however many pieces


def test_runs_of_one_file_fill_every_split():
    # A dump is often one en.txt.gz: its runs must spread over train, val and test, not all land in one.
    ids = [d.source_id for d in parse_text(mono_text(20_000), "en.txt", Report(), 10)]
    splits = Counter(split_of(i) for i in ids)
    assert set(splits) == {"train", "val", "test"}
    assert 0.8 < splits["train"] / len(ids) < 0.97


def test_ids_do_not_depend_on_where_the_dump_lies(tmp_path):
    dump = tmp_path / "a" / "dump"
    (dump / "en" / "2001").mkdir(parents=True)
    (dump / "en" / "2001" / "part.txt").write_bytes(mono_text(50))
    (dump / "more.zip").write_bytes(zip_bytes({"x.txt": mono_text(30)}))
    moved = tmp_path / "elsewhere" / "renamed"
    shutil.copytree(dump, moved)
    first, second = docs_of(dump), docs_of(moved)
    assert first == second and first[0][0] == "en/2001/part.txt@0"
    assert {i.split("@")[0] for i, _ in first} == {"en/2001/part.txt", "more.zip!x.txt"}


def test_text_members_of_archives_are_streamed_too(tmp_path):
    data = mono_text(400)
    whole = [t for d in parse_text(data, "t", Report(), 10) for t in d.texts()]
    (tmp_path / "a.zip").write_bytes(zip_bytes({"en.txt": data, "en2.txt.gz": gzip.compress(data)}))
    (tmp_path / "b.tar.gz").write_bytes(tar_gz_bytes({"en.txt": data}))
    report = Report()
    members = list(iter_members(tmp_path, report, SMALL))
    assert len(members) > 3 * 10 and max(len(m.data) for m in members) < BOUND
    docs = docs_of(tmp_path, report=report)
    for source in ("a.zip!en.txt", "a.zip!en2.txt", "b.tar.gz!en.txt"):
        assert [t for i, texts in docs if i.split("@")[0] == source for t in texts] == whole
    assert report.n_problems == 0


def test_an_overlong_line_is_skipped_and_named_and_the_rest_kept(tmp_path):
    data = b"First line.\n" + b"x" * 5000 + b"\nLast line.\n"
    (tmp_path / "en.txt").write_bytes(data)
    report = Report()
    config = ReadConfig(text_lines_per_document=10, max_line_bytes=1000)
    assert [t for _, texts in docs_of(tmp_path / "en.txt", config, report) for t in texts] == ["First line.", "Last line."]
    assert report.n_problems == 1 and "over 1,000 bytes" in report.problems[0][1]


def test_a_text_bomb_stops_at_the_cap_keeping_what_came_before(tmp_path):
    (tmp_path / "en.txt.gz").write_bytes(gzip.compress(b"Real line.\n" * 20 + b"\n" * 1_000_000))
    report = Report()
    config = ReadConfig(text_lines_per_document=10, max_text_bytes=100_000, text_piece_bytes=1000)
    docs = docs_of(tmp_path / "en.txt.gz", config, report)
    assert sum(len(t) for _, t in docs) == 20
    assert report.n_problems == 1 and "cap" in report.problems[0][1]


def test_a_gzip_cut_midway_keeps_the_pieces_read_and_names_the_file(tmp_path):
    packed = gzip.compress(mono_text(2000))
    (tmp_path / "en.txt.gz").write_bytes(packed[: len(packed) // 2])
    report = Report()
    docs = docs_of(tmp_path / "en.txt.gz", report=report)
    assert 0 < sum(len(t) for _, t in docs) < 2000
    assert report.n_problems == 1 and report.problems[0][0] == "en.txt.gz"


def test_utf16_text_is_still_read(tmp_path):
    (tmp_path / "en.txt").write_bytes("Café au lait.\nNaïve.\n".encode("utf-16"))
    assert docs_of(tmp_path / "en.txt") == [("en.txt@0", ["Café au lait.", "Naïve."])]


def test_an_empty_text_file_is_reported(tmp_path):
    (tmp_path / "en.txt").write_bytes(b"\n  \n")
    report = Report()
    assert docs_of(tmp_path / "en.txt", report=report) == []
    assert report.n_problems == 1 and "no text lines" in report.problems[0][1]
