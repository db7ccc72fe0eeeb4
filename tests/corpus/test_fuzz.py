"""Corpus readers under hostile input: random and truncated bytes, huge lines, bad encodings, XML and zip bombs,
hostile archive paths and symlinks. Nothing may crash the run; every bad file is skipped, counted and named."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import random
import sys
import tarfile
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corpus.__main__ import main as corpus_cli
from corpus.clean import CleanConfig, clean_document
from corpus.dump import Member, ReadConfig, dump_size, iter_members, parse_member, read_path
from corpus.report import Report
from reranker.__main__ import main as reranker_cli
from tests.corpus.archives import tar_gz_bytes, zip_bytes

SRT = "1\n00:00:01,000 --> 00:00:02,000\n{text}\n\n2\n00:00:03,000 --> 00:00:04,000\nBye now.\n"
XML = '<?xml version="1.0"?><document><s id="1"><w id="1.1">{word}</w><w id="1.2">!</w></s></document>'
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def srt(text: str) -> bytes:
    return SRT.format(text=text).encode()




def no_reader_crash(report: Report) -> None:
    """The catch-all in parse_member is a last resort: a reader reaching it has a bug worth fixing."""
    crashed = [(s, m) for s, m in report.problems if m.startswith("reader failed")]
    assert not crashed, crashed


def problem_for(report: Report, suffix: str) -> str:
    """The message recorded for the one source ending with `suffix` (fails if it was not named)."""
    hits = [m for s, m in report.problems if s.endswith(suffix)]
    assert len(hits) == 1, (suffix, report.problems)
    return hits[0]


# ---------------------------------------------------------------------------------------------- writes anywhere

_WRITE_EVENTS = {"os.rename", "os.replace", "os.remove", "os.rmdir", "os.mkdir", "os.symlink", "os.link",
                 "os.truncate", "os.chmod", "os.utime", "shutil.copyfile", "shutil.move", "tarfile.extractall"}
_watch: list[list] = []  # the active recorders; the audit hook itself cannot be removed once added


def _audit(event: str, args: tuple) -> None:
    if not _watch:
        return
    write = event in _WRITE_EVENTS
    if event == "open":
        _path, mode, flags = args
        write = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) != 0
        )
    if write:
        _watch[-1].append((event, args))


sys.addaudithook(_audit)


@contextlib.contextmanager
def no_writes():
    """Fail if anything in this process opens a file for writing, or creates, moves or deletes one."""
    seen: list = []
    _watch.append(seen)
    try:
        yield
    finally:
        _watch.remove(seen)
    assert not seen, f"the reader wrote to disk: {seen[:5]}"


def test_the_write_guard_can_fail(tmp_path):
    with pytest.raises(AssertionError, match="wrote to disk"), no_writes():
        (tmp_path / "x").write_bytes(b"x")


# ---------------------------------------------------------------------------------------------- random bytes

SRT_PIECES = [b"1\n", b"00:00:01,000 --> 00:00:02,000\n", b"\n", b"\r\n", b"-->", b"Hi there. ", b"<i>", b"</i>",
              b"\x00", b"\xff\xfe", b"\xef\xbb\xbf", b"\xe9", b"99:99:99,999", b"- ", b"\xc3"]
XML_PIECES = [b"<document>", b"</document>", b'<s id="1">', b"</s>", b"<w>", b"</w>", b"word", b"&amp;", b"&lol;",
              b"<!DOCTYPE d [", b"]>", b'<?xml version="1.0" encoding="latin-1"?>', b"\x00", b"\xe9", b"<", b">"]
JSON_PIECES = [b'{"messages": [', b'{"id": "1", "content": "hi", "author": {"name": "a"}}', b'"channel": {"id": 3}',
               b"{", b"}", b"[", b"]", b",", b":", b'"', b"null", b"1e999", b"-5", b'"reactions": [{"count": -3}]']


def structured(pieces: list[bytes]) -> st.SearchStrategy[bytes]:
    return st.lists(st.sampled_from(pieces), max_size=60).map(b"".join)


BYTES = {
    ".srt": st.one_of(st.binary(max_size=400), structured(SRT_PIECES)),
    ".xml": st.one_of(st.binary(max_size=400), structured(XML_PIECES)),
    ".txt": st.one_of(st.binary(max_size=400), structured(SRT_PIECES)),
    ".json": st.one_of(st.binary(max_size=400), structured(JSON_PIECES)),
}


@pytest.mark.parametrize("suffix", sorted(BYTES))
def test_random_bytes_never_crash_and_every_file_is_read_or_named(suffix):
    @FUZZ
    @given(BYTES[suffix])
    def check(data):
        report = Report()
        docs = list(parse_member(Member(f"dump/f{suffix}", data), report))
        no_reader_crash(report)
        for doc in docs:
            assert doc.lines and all(isinstance(line.text, str) and line.text.strip() for line in doc.lines)
        if suffix == ".json":  # a valid export whose messages are all system or empty ones yields nothing, unflagged
            assert docs or report.problems or report.counts["discord_files"]
        else:
            assert docs or any(source == f"dump/f{suffix}" for source, _ in report.problems)

    check()


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
DISCORD_KEYS = ["id", "type", "content", "author", "reactions", "reference", "isBot", "name", "count", "messageId"]
MESSAGE_NOISE = st.dictionaries(st.sampled_from(DISCORD_KEYS), JSON_VALUES, max_size=6) | JSON_VALUES


@FUZZ
@given(st.lists(st.tuples(st.booleans(), MESSAGE_NOISE), max_size=12), JSON_VALUES)
def test_damaged_discord_messages_lose_only_themselves(messages, channel):
    good, export = [], []
    for i, (is_good, noise) in enumerate(messages):
        if is_good:
            good.append(f"good message {i}")
            export.append({"id": str(i), "type": "Default", "content": good[-1], "author": {"name": f"u{i % 3}"}})
        else:
            export.append(noise)
    data = json.dumps({"channel": channel, "messages": export}).encode()
    report = Report()
    docs = list(parse_member(Member("dump/chat.json", data), report))
    no_reader_crash(report)
    texts = [line.text for doc in docs for line in doc.lines]
    assert [t for t in texts if t.startswith("good message")] == good
    assert all(line.weight >= 1.0 for doc in docs for line in doc.lines)  # never a negative Markov weight


@FUZZ
@given(st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=5))
def test_damaged_chitchat_conversations_lose_only_themselves(noise):
    data = {"good": {"messages": [[{"text": "hello there", "sender": "x"}], [{"text": "hi", "sender": "y"}]]}}
    data.update({f"bad{k}": v for k, v in noise.items()})
    report = Report()
    docs = list(parse_member(Member("dump/dataset.json", json.dumps(data).encode()), report))
    no_reader_crash(report)
    assert {"chitchat/good": ["hello there", "hi"]}.items() <= {d.source_id: d.texts() for d in docs}.items()


# ---------------------------------------------------------------------------------------------- truncated files


def valid_files() -> dict[str, bytes]:
    return {
        "a.zip": zip_bytes({f"z{i}.srt": srt(f"Zip member {i}. " * 30) for i in range(4)}),
        "b.tar.gz": tar_gz_bytes({f"t{i}.srt": srt(f"Tar member {i}. " * 30) for i in range(4)}),
        "c.srt.gz": gzip.compress(srt("Gzipped. " * 50)),
        "d.xml": "".join(['<?xml version="1.0"?><document>'] + [f'<s id="{i}">Line {i}.</s>' for i in range(40)]
                         + ["</document>"]).encode(),
        "e.srt": b"\n".join(srt(f"Cue {i}.") for i in range(20)),
        "f.json": json.dumps({"messages": [{"id": str(i), "content": f"msg {i}"} for i in range(30)]}).encode(),
    }


VALID = valid_files()


@pytest.mark.parametrize("name", sorted(VALID))
def test_truncated_files_are_read_as_far_as_they_go_or_named(name, tmp_path_factory):
    whole = VALID[name]
    folder = tmp_path_factory.mktemp("cut")
    full = sum(len(d.lines) for d in read_path(_write(folder / "whole", name, whole), Report()))

    @FUZZ
    @given(st.integers(0, len(whole) - 1))
    def check(cut):
        report = Report()
        path = _write(folder / "part", name, whole[:cut])
        docs = list(read_path(path, report))
        no_reader_crash(report)
        lines = sum(len(d.lines) for d in docs)
        assert lines <= full
        if name.endswith((".zip", ".gz", ".xml", ".json")) and lines < full:  # damage is visible in the report
            named = path.name.removesuffix(".gz")  # an empty .gz is a valid empty stream: its leaf is named
            assert any(source.startswith(named) for source, _ in report.problems), report.problems

    check()


def _write(folder: Path, name: str, data: bytes) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / name).write_bytes(data)
    return folder / name


# ---------------------------------------------------------------------------------------------- huge lines, NUL bytes


@pytest.mark.parametrize("suffix", [".srt", ".txt", ".xml", ".json"])
def test_a_10_mb_single_line_is_read_whole_and_fast(suffix):
    line = "word " * 2_000_000 + "end."
    data = {
        ".srt": srt(line),
        ".txt": line.encode(),
        ".xml": f"<document><s id='1'>{line}</s></document>".encode(),
        ".json": json.dumps({"messages": [{"id": "1", "content": line}]}).encode(),
    }[suffix]
    report = Report()
    start = time.monotonic()
    docs = list(parse_member(Member(f"big{suffix}", data), report))
    assert time.monotonic() - start < 5.0
    no_reader_crash(report)
    assert len(docs[0].lines[0].text) >= 9_999_000 and docs[0].lines[0].text.endswith("end.")


def test_nul_bytes_are_survived_and_cleaned_away():
    report = Report()
    # Zero padding (a damaged download) on a UTF-8 file: still UTF-8, not taken for UTF-16.
    docs = list(parse_member(Member("nul.srt", srt("Hel\x00lo.") + b"\x00" * 200), report))
    assert report.counts["encoding_utf_8"] == 1
    assert clean_document(docs[0], CleanConfig(), report).texts() == ["Hello.", "Bye now."]
    assert list(parse_member(Member("nul.xml", b"<document><s>a\x00b</s></document>"), report)) == []
    assert "bad OPUS XML" in problem_for(report, "nul.xml")
    docs = list(parse_member(Member("nul.txt", b"\x00" * 4096), report))
    assert all(clean_document(doc, CleanConfig(), report) is None for doc in docs)
    chat = json.dumps({"messages": [{"id": "1", "content": "\x00\x07\x1b"}, {"id": "2", "content": "o\x00k"}]})
    docs = list(parse_member(Member("nul.json", chat.encode()), report))
    assert clean_document(docs[0], CleanConfig(), report).texts() == ["ok"]
    no_reader_crash(report)


# ---------------------------------------------------------------------------------------------- encodings, empty files


@pytest.mark.parametrize(
    "text, encoding",
    [
        ("Привет, как дела? Всё хорошо, спасибо.", "cp1251"),
        ("Ça va? Très bien, merci. Où est la gare?", "cp1252"),
        ("Γειά σου, τι κάνεις; Καλά, ευχαριστώ.", "cp1253"),
        ("Hello there, how are you today?", "utf-16-le"),
        ("Hello there, how are you today?", "utf-16-be"),
        ("Hello there, how are you today?", "utf-16"),  # with a BOM
        ("こんにちは、元気ですか。", "shift_jis"),
    ],
)
def test_legacy_encodings_are_decoded(text, encoding):
    report = Report()
    docs = list(parse_member(Member("x.srt", SRT.format(text=text).encode(encoding)), report))
    assert docs[0].texts()[0] == text and report.n_problems == 0


def test_xml_that_lies_about_its_encoding_is_named():
    report = Report()
    data = '<?xml version="1.0" encoding="utf-8"?><document><s>café</s></document>'.encode("latin-1")
    assert list(parse_member(Member("liar.xml", data), report)) == []
    assert "bad OPUS XML" in problem_for(report, "liar.xml")


@pytest.mark.parametrize("content", [b"", b"   \n\r\n\t  \n"])
def test_empty_files_are_skipped_and_named(tmp_path, content):
    for name in ["e.srt", "e.xml", "e.txt", "e.json"]:
        (tmp_path / name).write_bytes(content)
    (tmp_path / "e2.srt.gz").write_bytes(gzip.compress(content))
    (tmp_path / "empty.zip").write_bytes(zip_bytes({}))
    (tmp_path / "ok.srt").write_bytes(srt("Still here."))
    report = Report()
    docs = list(read_path(tmp_path, report))
    assert [d.texts()[0] for d in docs] == ["Still here."]
    for name in ["e.srt", "e.xml", "e.txt", "e.json", "e2.srt"]:
        problem_for(report, name)
    assert report.n_problems == 5 and report.counts["archives_zip"] == 1


# ---------------------------------------------------------------------------------------------- XML bombs


def billion_laughs(levels: int = 10) -> bytes:
    ents = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, levels)
    ]
    return f'<?xml version="1.0"?><!DOCTYPE d [{"".join(ents)}]><document><s>&lol{levels - 1};</s></document>'.encode()


@pytest.mark.parametrize(
    "data",
    [
        billion_laughs(),
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY big "' + b"x" * 50_000 + b'">]><document><s>'
        + b"&big;" * 50_000 + b"</s></document>",  # quadratic blowup
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><document><s>&x;</s></document>',
        b'<?xml version="1.0"?><!DOCTYPE d SYSTEM "http://example.invalid/d.dtd"><document><s>a</s></document>',
    ],
    ids=["billion-laughs", "quadratic", "external-entity", "external-dtd"],
)
def test_xml_entity_bombs_are_refused_fast(data):
    report = Report()
    tracemalloc.start()
    start = time.monotonic()
    try:
        docs = list(parse_member(Member("bomb.xml", data), report))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert docs == [] and time.monotonic() - start < 2.0 and peak < 50_000_000
    assert "DTDForbidden" in problem_for(report, "bomb.xml")


@pytest.mark.parametrize("inside", [True, False], ids=["nested-sentence", "nested-document"])
def test_deeply_nested_xml_is_read_without_recursion(inside):
    depth = 200_000
    nest = (b"<a>" * depth, b"</a>" * depth)
    body = (b"<s>" + nest[0] + b"<w>deep</w>" + nest[1] + b"</s>") if inside else (nest[0] + b"<s><w>deep</w></s>" + nest[1])
    report = Report()
    start = time.monotonic()
    docs = list(parse_member(Member("deep.xml", b"<document>" + body + b"</document>"), report))
    assert time.monotonic() - start < 5.0 and docs[0].texts() == ["deep"]


def test_deeply_nested_json_is_named():
    report = Report()
    assert list(parse_member(Member("deep.json", b"[" * 200_000 + b"]" * 200_000), report)) == []
    assert "bad JSON" in problem_for(report, "deep.json")


# ---------------------------------------------------------------------------------------------- zip and gzip bombs

GIB = 1 << 30


@pytest.fixture(scope="module")
def zip_bomb() -> bytes:
    """One member of 1 GiB of zeros, about 1 MB compressed (streamed: the GiB is never in memory here)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("bomb.srt", "w", force_zip64=True) as w:
            chunk = bytes(1 << 22)
            for _ in range(GIB // len(chunk)):
                w.write(chunk)
    data = buf.getvalue()
    assert len(data) < 8_000_000
    return data


def measure(fn):
    """(result, seconds, peak traced bytes)."""
    tracemalloc.start()
    start = time.monotonic()
    try:
        result = fn()
        return result, time.monotonic() - start, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_zip_bomb_is_refused_without_inflating_it(tmp_path, zip_bomb):
    (tmp_path / "bomb.zip").write_bytes(zip_bomb)
    (tmp_path / "nested.zip").write_bytes(zip_bytes({"inner.zip": zip_bomb}, zipfile.ZIP_STORED))
    (tmp_path / "ok.srt").write_bytes(srt("Fine."))
    report = Report()
    # The default cap (512 MiB) is below the GiB: refused from the declared size, before any inflation.
    docs, seconds, peak = measure(lambda: list(read_path(tmp_path, report)))
    assert [d.texts()[0] for d in docs] == ["Fine."]
    assert "over the cap" in problem_for(report, "bomb.zip!bomb.srt")
    assert "over the cap" in problem_for(report, "nested.zip!inner.zip!bomb.srt")
    assert seconds < 2.0 and peak < 30_000_000  # the nested copy holds the ~1 MB bomb in memory, nothing more


def test_zip_member_lying_about_its_size_is_cut_at_the_declared_size(tmp_path):
    data = bytearray(zip_bytes({"liar.srt": bytes(50_000_000)}))
    # Patch the declared uncompressed size (local header +22, central directory +24) down to 1,000 bytes.
    local, central = data.index(b"PK\x03\x04"), data.index(b"PK\x01\x02")
    data[local + 22 : local + 26] = (1000).to_bytes(4, "little")
    data[central + 24 : central + 28] = (1000).to_bytes(4, "little")
    (tmp_path / "liar.zip").write_bytes(bytes(data))
    report = Report()
    docs, seconds, peak = measure(lambda: list(read_path(tmp_path, report, ReadConfig(max_member_bytes=10_000))))
    assert docs == [] and peak < 5_000_000
    assert "corrupt zip member" in problem_for(report, "liar.zip!liar.srt")  # zipfile's CRC check fails


@pytest.mark.slow
def test_gzip_bomb_inflates_no_further_than_the_cap(tmp_path):
    comp = zlib.compressobj(1, zlib.DEFLATED, 31)  # gzip framing
    chunk = bytes(1 << 22)
    parts = [comp.compress(chunk) for _ in range(256)] + [comp.flush()]  # 1 GiB of zeros
    (tmp_path / "bomb.srt.gz").write_bytes(b"".join(parts))
    cap = 16 << 20
    report = Report()
    docs, seconds, peak = measure(lambda: list(read_path(tmp_path, report, ReadConfig(max_member_bytes=cap))))
    assert docs == [] and "cap" in problem_for(report, "bomb.srt.gz")
    assert peak < 3 * cap and seconds < 2.0  # bounded by the cap, not by the GiB behind it


def test_tar_member_over_the_cap_is_skipped_from_its_header(tmp_path):
    (tmp_path / "t.tar.gz").write_bytes(
        tar_gz_bytes({"big.srt": bytes(20_000_000), "small.srt": srt("After the big one.")})
    )
    report = Report()
    docs, _, peak = measure(lambda: list(read_path(tmp_path, report, ReadConfig(max_member_bytes=1_000_000))))
    assert [d.texts()[0] for d in docs] == ["After the big one."] and peak < 10_000_000
    assert "over the cap" in problem_for(report, "t.tar.gz!big.srt")


# ---------------------------------------------------------------------------------------------- hostile paths


def tar_with_links() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, kind, target in [
            ("sym.srt", tarfile.SYMTYPE, "/etc/passwd"),
            ("hard.srt", tarfile.LNKTYPE, "../../etc/passwd"),
            ("fifo.srt", tarfile.FIFOTYPE, ""),
            ("dev.srt", tarfile.CHRTYPE, ""),
        ]:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tf.addfile(info)
        for name in ["../../../up.srt", "/abs/olute.srt", "ok/../../side.srt"]:
            data = srt(f"From {name}.")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_hostile_member_names_are_read_in_memory_and_nothing_is_written(tmp_path, monkeypatch):
    dump = tmp_path / "dump"
    dump.mkdir()
    names = ["../../escaped.srt", "/abs.srt", "..\\..\\win.srt", "C:/drive.srt", "a/../../../b.srt", "x/./../y.srt"]
    (dump / "evil.zip").write_bytes(zip_bytes({n: srt(f"Zip {i}.") for i, n in enumerate(names)}))
    (dump / "links.tar.gz").write_bytes(tar_with_links())
    monkeypatch.chdir(dump)  # a relative write would land here
    before = sorted(tmp_path.rglob("*"))
    report = Report()
    with no_writes():
        docs = list(read_path(dump, report))
    assert sorted(tmp_path.rglob("*")) == before
    texts = sorted(d.texts()[0] for d in docs)
    assert texts == sorted([f"Zip {i}." for i in range(len(names))]
                           + ["From ../../../up.srt.", "From /abs/olute.srt.", "From ok/../../side.srt."])
    assert not any("root:" in line for d in docs for line in d.texts())  # the link members were not followed


# ---------------------------------------------------------------------------------------------- symlinks


@pytest.mark.timeout(30)
def test_symlinks_are_never_followed_out_of_the_dump_and_loops_do_not_hang(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.srt").write_bytes(srt("Secret outside line."))
    dump = tmp_path / "dump"
    (dump / "sub").mkdir(parents=True)
    (dump / "sub" / "real.srt").write_bytes(srt("Real line."))
    (dump / "out.srt").symlink_to(outside / "secret.srt")
    (dump / "outdir").symlink_to(outside)
    (dump / "loop_a.srt").symlink_to(dump / "loop_b.srt")
    (dump / "loop_b.srt").symlink_to(dump / "loop_a.srt")
    (dump / "dangling.srt").symlink_to(tmp_path / "nowhere.srt")
    (dump / "sub" / "up").symlink_to(dump)  # a folder loop
    (dump / "twin.srt").symlink_to(dump / "sub" / "real.srt")  # inside, but the same film under a second name
    report = Report()
    with no_writes():
        docs = list(read_path(dump, report))
    assert [d.source_id for d in docs] == ["sub/real.srt"]
    assert "outside the dump" in problem_for(report, "out.srt")
    assert "outside the dump" in problem_for(report, "outdir")
    for name in ["loop_a.srt", "loop_b.srt", "dangling.srt"]:
        assert "broken or looping" in problem_for(report, name)
    assert report.counts["symlinks_skipped"] == 2  # sub/up and twin.srt
    assert dump_size(dump) == (dump / "sub" / "real.srt").stat().st_size


def test_a_file_that_vanishes_mid_walk_is_named(tmp_path):
    for name in ["a.srt", "b.srt", "c.srt"]:
        (tmp_path / name).write_bytes(srt(f"File {name}."))
    report = Report()
    seen = []
    for member in iter_members(tmp_path, report):
        seen.append(member.name)
        if member.name.endswith("a.srt"):
            (tmp_path / "b.srt").unlink()
    assert [Path(n).name for n in seen] == ["a.srt", "c.srt"]
    assert "cannot read" in problem_for(report, "b.srt")


# ---------------------------------------------------------------------------------------------- the CLI, end to end


@pytest.fixture
def bad_dump(tmp_path) -> Path:
    """One good film, and one of each kind of bad file."""
    dump = tmp_path / "dump"
    dump.mkdir()
    (dump / "good.srt").write_bytes(b"\n".join(srt(f"Good line number {i} here.") for i in range(30)))
    (dump / "bomb.xml").write_bytes(billion_laughs())
    (dump / "random.srt").write_bytes(random.Random(0).randbytes(2000).replace(b"-->", b"").replace(b":", b""))
    (dump / "empty.txt").write_bytes(b"")
    (dump / "broken.zip").write_bytes(zip_bytes({"x.srt": srt("x")})[:40])
    (dump / "deep.json").write_bytes(b"[" * 100_000)
    (dump / "big.zip").write_bytes(zip_bytes({"big.srt": bytes(3 << 20)}))
    outside = tmp_path / "outside.srt"
    outside.write_bytes(srt("Outside."))
    (dump / "link.srt").symlink_to(outside)
    return dump


BAD = ["bomb.xml", "empty.txt", "broken.zip", "deep.json", "big.zip!big.srt", "link.srt"]


def test_cli_clean_survives_a_dump_of_bad_files(bad_dump, capsys):
    assert corpus_cli(["clean", str(bad_dump), "--max-member-mb", "1"]) == 0
    out, err = capsys.readouterr()
    assert "Good line number 7 here." in out and "Outside." not in out
    for name in BAD:
        assert f"{name}:" in err, name


@pytest.mark.slow
def test_cli_prepare_and_stats_survive_a_dump_of_bad_files(bad_dump, tmp_path, capsys, minilm_path):
    out_dir = tmp_path / "prepared"
    argv = ["prepare", str(bad_dump), "--out", str(out_dir), "--workers", "1", "--quiet", "--max-member-mb", "1",
            "--tokenizer", minilm_path, "--val-fraction", "0", "--test-fraction", "0"]
    assert reranker_cli(argv) == 0  # prepare writes the editor's samples: `python -m reranker prepare`
    index = json.loads((out_dir / "index.json").read_text())
    named = {p["source"] for p in index["report"]["problems"]}
    for name in BAD:
        assert any(source.endswith(name) for source in named), (name, named)
    assert index["splits"]["train"]["samples"] > 0
    capsys.readouterr()
    assert corpus_cli(["stats", str(bad_dump), "--quiet", "--max-member-mb", "1", "--tokenizer", minilm_path]) == 0
    out = capsys.readouterr().out
    assert "documents             1" in out and "bomb.xml" in out
