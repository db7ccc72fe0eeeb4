"""SubRip reader: every encoding and kind of damage, as bytes written by the test itself."""

from __future__ import annotations

import codecs

import pytest

from corpus.charset import decode_bytes, detect_encoding
from corpus.report import Report
from corpus.srt import parse_srt, read_srt

CLEAN = (
    "1\n00:00:01,000 --> 00:00:02,500\nCafé au lait, s'il vous plaît.\n\n"
    "2\n00:00:03,000 --> 00:00:04,000\n- Naïve?\n- Déjà vu.\n\n"
    "3\n00:00:05,000 --> 00:00:06,000\nThe end.\n"
)
CUES = ["Café au lait, s'il vous plaît.", "- Naïve?\n- Déjà vu.", "The end."]


@pytest.mark.parametrize(
    "encode, encoding",
    [
        (lambda t: t.encode("utf-8"), "utf-8"),
        (lambda t: codecs.BOM_UTF8 + t.encode("utf-8"), "utf-8"),
        (lambda t: t.encode("cp1252"), "cp1252"),
        (lambda t: t.encode("latin-1"), "cp1252"),
        (lambda t: t.encode("utf-16"), "utf-16-le"),  # with its BOM
        (lambda t: t.encode("utf-16-le"), "utf-16-le"),
        (lambda t: t.encode("utf-16-be"), "utf-16-be"),
    ],
    ids=["utf8", "utf8-bom", "cp1252", "latin1", "utf16-bom", "utf16le", "utf16be"],
)
def test_encodings(encode, encoding):
    data = encode(CLEAN)
    assert detect_encoding(data)[0] == encoding
    report = Report()
    doc = parse_srt(data, "f.srt", report)
    assert doc.texts() == CUES and doc.format == "srt"
    assert report.n_problems == 0


def test_mojibake_is_repaired():
    # UTF-8 bytes that were once decoded as cp1252 and saved again as UTF-8: "CafÃ© au lait".
    broken = CLEAN.encode("utf-8").decode("cp1252").encode("utf-8")
    report = Report()
    assert parse_srt(broken, "f.srt", report).texts() == CUES
    assert report.counts["mojibake_repaired"] == 1
    assert decode_bytes("rÃ©sumÃ©".encode(), "x", Report()) == "résumé"


@pytest.mark.parametrize("newline", ["\r\n", "\r", "mixed"])
def test_line_endings(newline):
    if newline == "mixed":
        text = "".join(line + ("\r\n" if i % 2 else "\n") for i, line in enumerate(CLEAN.split("\n")))
    else:
        text = CLEAN.replace("\n", newline)
    assert parse_srt(text.encode(), "f.srt", Report()).texts() == CUES


DAMAGED = {
    "no index": "00:00:01,000 --> 00:00:02,000\nFirst.\n\n00:00:03,000 --> 00:00:04,000\nSecond.\n",
    "index 0 and 9999": "0\n00:00:01,000 --> 00:00:02,000\nFirst.\n\n9999\n00:00:03,000 --> 00:00:04,000\nSecond.\n",
    "out of order": "1\n00:05:01,000 --> 00:05:02,000\nFirst.\n\n2\n00:00:03,000 --> 00:00:04,000\nSecond.\n",
    "malformed timestamp": "1\n00:00:01.000 -> 00:00:02\nFirst.\n\n2\n0:0:3,5 --> 0:0:4,0\nSecond.\n",
    "blank line inside a cue": "1\n00:00:01,000 --> 00:00:02,000\nFirst.\n\n\n2\n00:00:03,000 --> 00:00:04,000\nSec-\n\nond.\n",
    "dvd coordinates": (
        "1\n00:00:01,000 --> 00:00:02,000 X1:100 X2:600 Y1:50 Y2:80\nFirst.\n\n"
        "2\n00:00:03,000 --> 00:00:04,000  X1:100 X2:600 Y1:50 Y2:80\nSecond.\n"
    ),
    "garbage before and extra blank lines": "junk header\n\n\n\n1\n00:00:01,000 --> 00:00:02,000\nFirst.\n\n\n\n\n2\n00:00:03,000 --> 00:00:04,000\nSecond.\n\n\n",
    "missing final newline": "1\n00:00:01,000 --> 00:00:02,000\nFirst.\n\n2\n00:00:03,000 --> 00:00:04,000\nSecond.",
}


@pytest.mark.parametrize("name", list(DAMAGED))
def test_damaged_files_still_give_their_cues(name):
    report = Report()
    doc = parse_srt(DAMAGED[name].encode(), "f.srt", report)
    texts = [t.replace("\n", " ") for t in doc.texts()]
    expected = ["Sec- ond."] if name == "blank line inside a cue" else ["Second."]
    assert texts == ["First.", *expected]


def test_blank_line_inside_a_cue_loses_nothing_that_pysrt_would_drop():
    report = Report()
    parse_srt(DAMAGED["blank line inside a cue"].encode(), "f.srt", report)
    assert report.counts["srt_tolerant"] == 1


def test_out_of_order_is_counted_and_file_order_kept():
    report = Report()
    parse_srt(DAMAGED["out of order"].encode(), "f.srt", report)
    assert report.counts["srt_out_of_order_files"] == 1


@pytest.mark.parametrize(
    "data", [b"", b"\x00\x01\x02\xff" * 100, b"just some words\nno timings\n", "\ufeff".encode()]
)
def test_not_a_subtitle_is_reported_not_raised(data):
    report = Report()
    assert parse_srt(data, "bad.srt", report) is None
    assert report.n_problems == 1 and report.problems[0][0] == "bad.srt"


def test_read_srt_from_disk(tmp_path):
    path = tmp_path / "film.srt"
    path.write_bytes(CLEAN.encode("utf-16"))
    doc = read_srt(path, Report())
    assert doc.source_id == str(path) and doc.texts() == CUES
