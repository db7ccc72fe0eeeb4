"""Walking dumps: folders, nested archives, bad members skipped and reported, caps, no writes."""

from __future__ import annotations

import gzip
import json

import pytest

from corpus.dump import ReadConfig, iter_members, read_path
from corpus.report import Report
from tests.corpus.archives import tar_gz_bytes, zip_bytes

SRT = "1\n00:00:01,000 --> 00:00:02,000\n{text}\n\n2\n00:00:03,000 --> 00:00:04,000\nBye.\n"
XML = '<?xml version="1.0"?><document><s id="1"><w id="1.1">{word}</w><w id="1.2">!</w></s></document>'
DISCORD = {
    "channel": {"id": "5"},
    "messages": [{"id": "1", "type": "Default", "content": "yo", "author": {"name": "a"}}],
}


def srt(text: str) -> bytes:
    return SRT.format(text=text).encode()




def zip_with_corrupt_member() -> bytes:
    good = srt("Good one.")
    bad = srt("This member will be damaged. " * 20)
    data = bytearray(zip_bytes({"a_good.srt": good, "b_bad.srt": bad, "c_good.srt": srt("Also good.")}))
    header = data.index(b"b_bad.srt") + len(b"b_bad.srt")  # compressed data follows the local header name
    for i in range(header + 5, header + 25):
        data[i] ^= 0xFF
    return bytes(data)


def texts(docs):
    return {d.source_id.rsplit("/", 1)[-1]: d.texts() for d in docs}


def test_folder_of_nested_archives(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "plain.srt").write_bytes(srt("Plain."))
    inner = zip_bytes({"en/2001/77/1.xml.gz": gzip.compress(XML.format(word="Inner").encode())})
    (tmp_path / "outer.zip").write_bytes(
        zip_bytes({"nested.zip": inner, "x.srt": srt("Zipped."), "readme.md": b"#"})
    )
    (tmp_path / "chat.tar.gz").write_bytes(
        tar_gz_bytes({"d/ch.json": json.dumps(DISCORD).encode(), "t/en.txt": b"One.\nTwo.\n"})
    )
    (tmp_path / "single.srt.gz").write_bytes(gzip.compress(srt("Gzipped.")))
    (tmp_path / "notes.docx").write_bytes(b"ignored")
    report = Report()
    docs = list(read_path(tmp_path, report))
    by_id = {d.source_id: d.texts() for d in docs}
    # Named relative to the dump, so ids (and splits) do not depend on where it lies.
    assert by_id["outer.zip!nested.zip!en/2001/77/1.xml"] == ["Inner!"]
    assert by_id["outer.zip!x.srt"] == ["Zipped.", "Bye."]
    assert by_id["single.srt"] == ["Gzipped.", "Bye."]
    assert by_id["sub/plain.srt"] == ["Plain.", "Bye."]
    assert by_id["discord/5#ch.json"] == ["yo"]
    assert by_id["chat.tar.gz!t/en.txt@0"] == ["One.", "Two."]
    assert report.n_problems == 0 and report.counts["unsupported_files"] == 2


def test_corrupt_zip_member_is_skipped_and_reported(tmp_path):
    (tmp_path / "dump.zip").write_bytes(zip_with_corrupt_member())
    report = Report()
    docs = list(read_path(tmp_path, report))
    assert [d.source_id.rsplit("!", 1)[-1] for d in docs] == ["a_good.srt", "c_good.srt"]
    assert report.n_problems == 1
    source, message = report.problems[0]
    assert source.endswith("dump.zip!b_bad.srt") and "corrupt zip member" in message


@pytest.mark.parametrize(
    "name, data, reason",
    [
        ("broken.zip", b"PK\x03\x04 this is not really a zip", "corrupt zip"),
        ("broken.srt.gz", b"\x1f\x8b\x08\x00garbage", "corrupt gzip"),
        ("broken.tar.gz", b"\x1f\x8b\x08\x00garbage", "corrupt tar"),
        ("bad.json", b"{nope", "bad JSON"),
        ("other.json", b'{"a": 1}', "neither"),
        ("bad.xml", b"<document><s>", "bad OPUS XML"),
    ],
)
def test_bad_files_are_reported_and_the_walk_goes_on(tmp_path, name, data, reason):
    (tmp_path / name).write_bytes(data)
    (tmp_path / "z_good.srt").write_bytes(srt("Still read."))
    report = Report()
    docs = list(read_path(tmp_path, report))
    assert [d.texts()[0] for d in docs] == ["Still read."]
    assert report.n_problems == 1 and reason in report.problems[0][1]


def test_truncated_tar_gz_keeps_the_members_before_the_damage(tmp_path):
    members = {f"f{i}.srt": srt(f"File {i}. " + "padding " * 200) for i in range(6)}
    data = tar_gz_bytes(members)
    (tmp_path / "cut.tar.gz").write_bytes(data[: len(data) * 2 // 3])
    report = Report()
    docs = list(read_path(tmp_path, report))
    assert 1 <= len(docs) < 6
    assert [d.texts()[0].split(".")[0] for d in docs] == [f"File {i}" for i in range(len(docs))]
    assert report.n_problems == 1 and "corrupt tar" in report.problems[0][1]


def test_size_cap_defuses_bombs(tmp_path):
    bomb = gzip.compress(b"a" * 2_000_000)  # about 2 kB on disk
    (tmp_path / "bomb.srt.gz").write_bytes(bomb)
    (tmp_path / "bomb.zip").write_bytes(zip_bytes({"big.srt": b"b" * 2_000_000}))
    report = Report()
    assert list(read_path(tmp_path, report, ReadConfig(max_member_bytes=100_000))) == []
    assert report.n_problems == 2 and all("cap" in m for _, m in report.problems)


def test_nesting_depth_is_capped(tmp_path):
    data = zip_bytes({"x.srt": srt("Deep.")})
    for i in range(4):
        data = zip_bytes({f"level{i}.zip": data})
    (tmp_path / "deep.zip").write_bytes(data)
    report = Report()
    assert list(read_path(tmp_path, report, ReadConfig(max_depth=2))) == []
    assert "nested deeper" in report.problems[0][1]
    assert [d.texts()[0] for d in read_path(tmp_path, Report(), ReadConfig(max_depth=5))] == ["Deep."]


def test_hostile_member_names_write_nothing(tmp_path):
    dump = tmp_path / "dump"
    dump.mkdir()
    (dump / "evil.zip").write_bytes(zip_bytes({"../../escaped.srt": srt("Escape?"), "/abs.srt": srt("Abs?")}))
    (dump / "evil.tar.gz").write_bytes(tar_gz_bytes({"../up.srt": srt("Up?")}))
    before = sorted(p for p in tmp_path.rglob("*"))
    docs = list(read_path(dump, Report()))
    assert sorted(d.texts()[0] for d in docs) == ["Abs?", "Escape?", "Up?"]
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_members_come_in_a_stable_order_and_credit_the_disk_bytes(tmp_path):
    for name in ["b.srt", "a.srt", "c.zip"]:
        (tmp_path / name).write_bytes(srt(name) if name.endswith(".srt") else zip_bytes({"z.srt": srt("z")}))
    members = list(iter_members(tmp_path, Report()))
    assert [m.name.rsplit("/", 1)[-1] for m in members] == ["a.srt", "b.srt", "c.zip!z.srt"]
    assert all(m.disk_bytes > 0 for m in members)


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        list(read_path(tmp_path / "nope", Report()))


def test_chitchat_by_name():
    first = next(iter(read_path("chitchat", Report())))
    assert first.source_id.startswith("chitchat/") and first.lines[0].speaker == "A"

