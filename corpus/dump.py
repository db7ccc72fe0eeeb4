"""Dumps: walk folders and .zip / .tar(.gz) / .gz archives (nested too) and read every supported file in them.

`read_path(path, report)` is the one dispatcher: it yields Documents from a file, a folder, an archive,
or the word "chitchat" (the embedded dataset). Files are recognised by name:

    .srt -> corpus.srt   .xml -> OPUS XML   .json -> DiscordChatExporter or chitchat
    .txt -> a `Speaker: text` script, blank-line dialogue blocks, or OPUS mono text (corpus.dialogue tells which)

Archives are read in memory, member by member; nothing is ever extracted to disk, so a member named
"../../etc/passwd" cannot write anywhere. Each decompressed file is capped (`max_member_bytes`), which
also defuses zip and gzip bombs. A bad member (corrupt, truncated, too large, unparseable) is skipped
and recorded in the Report; it never stops the walk.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from corpus.charset import decode_bytes
from corpus.chitchat import chitchat_path, is_chitchat, parse_chitchat
from corpus.dialogue import BLOCKS, MONO, SCRIPT, SHAPES, parse_blocks, parse_script, text_shape
from corpus.discord import is_discord_export, parse_discord
from corpus.documents import Document
from corpus.opus import parse_opus_xml, parse_text
from corpus.report import Report
from corpus.srt import parse_srt

LEAF_SUFFIXES = (".srt", ".xml", ".txt", ".json")
_SHAPE_BYTES = 16384  # the head of a .txt that tells its shape (corpus.dialogue.text_shape)
_ARCHIVE_ERRORS = (
    zipfile.BadZipFile,
    tarfile.TarError,
    zlib.error,
    EOFError,
    OSError,
    NotImplementedError,
    RuntimeError,
)


@dataclass(frozen=True)
class ReadConfig:
    """Limits and reader options for walking a dump."""

    max_member_bytes: int = 512 * 1024 * 1024  # cap on any one decompressed file
    max_depth: int = 4  # archives inside archives
    text_lines_per_document: int = 100  # OPUS mono text has no document boundaries
    # Mono text is streamed in pieces (whole runs of lines) instead of read whole: one file is often the dump.
    text_piece_bytes: int = 4 * 1024 * 1024
    max_text_bytes: int = 64 * 1024**3  # cap on one decompressed text file (a gzip bomb of newlines ends here)
    max_line_bytes: int = 16 * 1024 * 1024  # a longer "line" is no sentence; skipped and reported
    include_bots: bool = False  # Discord bot messages
    # A .txt is a `Speaker: text` script, blank-line dialogue blocks or mono text; "auto" tells by its first lines.
    text_shape: str = "auto"

    def __post_init__(self) -> None:
        if self.max_member_bytes < 1 or self.max_depth < 0:
            raise ValueError("max_member_bytes must be positive and max_depth not negative")
        for name in ("text_piece_bytes", "max_text_bytes", "max_line_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.text_shape not in ("auto", *SHAPES):
            raise ValueError(f"text_shape must be 'auto' or one of {SHAPES}, got {self.text_shape!r}")


@dataclass
class Member:
    """One leaf file of a dump: its source id (path, or archive!member), its bytes, and the disk bytes it stands for."""

    name: str
    data: bytes
    disk_bytes: int = 0
    first_document: int = 0  # a piece of a streamed mono text file: the number of its first run
    shape: str | None = None  # a .txt's shape as `_text_pieces` read it (corpus.dialogue); None: not known yet


def _kind(name: str) -> str:
    lower = name.lower()
    if lower.endswith((".tar.gz", ".tgz", ".tar")):
        return "tar"
    if lower.endswith(".zip"):
        return "zip"
    if lower.endswith(".gz"):
        return "gz"
    if lower.endswith(LEAF_SUFFIXES):
        return "leaf"
    return "other"


def dump_size(path: str | os.PathLike) -> int:
    """Bytes on disk under a path (the total a progress bar counts towards)."""
    if str(path) == "chitchat" and not Path(path).exists():
        path = chitchat_path()
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in _dump_files(path))
    return path.stat().st_size if path.exists() else 0


def _dump_files(root: Path, report: Report | None = None) -> list[Path]:
    """Regular files under a folder, sorted; symbolic links are never followed (reported when they leave the dump).

    A link could point outside the dump (reading files the user never meant to feed in), loop, or make one
    film appear twice under two source ids (and so land in two splits); the real file is read under its own name.
    """
    files = []
    real_root = root.resolve()
    for p in root.rglob("*"):  # rglob does not descend into linked folders, so a link loop cannot hang it
        if p.is_symlink():
            if report is None:
                continue
            try:
                target = p.resolve(strict=True)
            except (OSError, RuntimeError):  # dangling, or a loop (RuntimeError before Python 3.13)
                report.problem(str(p), "broken or looping symbolic link; skipped")
                continue
            if target != real_root and real_root not in target.parents:
                report.problem(str(p), f"symbolic link to {target}, outside the dump; not followed")
            else:
                report.count("symlinks_skipped")
        elif p.is_file():
            files.append(p)
    return sorted(files)


def iter_members(
    path: str | os.PathLike, report: Report, config: ReadConfig = ReadConfig()
) -> Iterator[Member]:
    """Yield every supported leaf file under a path, in a stable (sorted) order, opening archives in memory."""
    if str(path) == "chitchat" and not Path(path).exists():
        path = chitchat_path()  # the embedded dataset, by name
    path = Path(path)
    # Members are named relative to the dump (the file's own name for a single file): source ids, and so
    # the train/val/test split, stay the same wherever the dump is moved.
    if path.is_dir():
        for child in _dump_files(path, report):
            yield from _from_file(child, child.relative_to(path).as_posix(), report, config)
    elif path.is_file():
        yield from _from_file(path, path.name, report, config)
    else:
        raise FileNotFoundError(f"no such file or folder: {path}")


def _is_text(name: str) -> bool:
    return name.lower().endswith((".txt", ".txt.gz"))


def _from_file(path: Path, name: str, report: Report, config: ReadConfig) -> Iterator[Member]:
    kind = _kind(path.name)
    if kind == "other":
        report.count("unsupported_files")
        return
    whole = kind == "leaf" and not _is_text(name)  # read at once; text and archives are streamed
    try:  # a file can vanish or be unreadable between the listing and the read
        size = path.stat().st_size
        if whole:
            if size > config.max_member_bytes:
                report.problem(name, f"{size:,} bytes is over the {config.max_member_bytes:,}-byte cap")
                return
            data = path.read_bytes()
        else:
            f = open(path, "rb")
    except OSError as exc:
        report.problem(name, f"cannot read: {type(exc).__name__}: {exc}")
        return
    if whole:
        yield Member(name, data, size)
        return
    with f:
        if _is_text(name):
            yield from _text_pieces(name, f, report, config, disk_bytes=size, raw=f)
        else:
            yield from _expand(name, f, kind, report, config, depth=0, disk_bytes=size)


def _text_pieces(
    name: str, f: BinaryIO, report: Report, config: ReadConfig, disk_bytes: int, raw: BinaryIO | None = None
) -> Iterator[Member]:
    """A mono text file (gzipped by name) as Members of about text_piece_bytes, each ending on a run boundary.

    A piece holds whole runs of `text_lines_per_document` non-blank lines and says which run it starts
    with, so its Documents carry the ids a whole read would give (bytes-blank lines are never fewer than
    the reader's). Memory is one piece plus one line, whatever the file's size. `raw`, the file on disk,
    measures progress in disk bytes; without it the first piece is credited with them all.
    """
    per_run = config.text_lines_per_document
    lines: list[bytes] = []
    size = non_blank = runs_done = 0
    total = 0
    credited = 0

    def piece(final: bool) -> Member:
        nonlocal lines, size, non_blank, runs_done, credited
        position = raw.tell() if raw is not None and not final else disk_bytes
        credit = max(0, min(position, disk_bytes) - credited)
        credited += credit
        member = Member(leaf, b"".join(lines), credit, first_document=runs_done, shape=MONO)
        runs_done += non_blank // per_run
        lines, size, non_blank = [], 0, 0
        return member

    packed = name.lower().endswith(".gz")
    stream = gzip.GzipFile(fileobj=f) if packed else f
    leaf = name[: -len(".gz")] if packed else name  # what the reader sees, as for any .gz
    yielded = False
    try:
        head = stream.peek(_SHAPE_BYTES)[:_SHAPE_BYTES]
        if head[:2] in (b"\xff\xfe", b"\xfe\xff"):  # UTF-16: b"\n" is no line end; read it whole
            data = _read_capped(stream, name, report, config)
            if data is not None:
                yield Member(leaf, data, disk_bytes)  # its shape is told once decoded
            return
        shape = config.text_shape if config.text_shape != "auto" else text_shape(head.decode("utf-8", "replace"))
        if shape != MONO:  # dialogue is cut only between dialogues: read whole, up to the text cap
            cap = min(config.max_member_bytes, config.max_text_bytes)
            data = stream.read(cap + 1)
            if len(data) > cap:
                report.problem(name, f"over the {cap:,}-byte cap when decompressed; the rest skipped")
                data = data[: data.rfind(b"\n", 0, cap) + 1]
            yield Member(leaf, data, disk_bytes, shape=shape)
            return
        while True:
            line = stream.readline(config.max_line_bytes + 1)
            if not line:
                break
            total += len(line)
            if total > config.max_text_bytes:
                report.problem(name, f"over the {config.max_text_bytes:,}-byte cap when decompressed; the rest skipped")
                break
            if len(line) > config.max_line_bytes and not line.endswith(b"\n"):
                while line and not line.endswith(b"\n"):  # drop the rest of the overlong line, in bounded reads
                    line = stream.readline(config.max_line_bytes + 1)
                    total += len(line)
                report.problem(name, f"a line over {config.max_line_bytes:,} bytes; skipped")
                continue
            lines.append(line)
            size += len(line)
            if line.strip():
                non_blank += 1
                if size >= config.text_piece_bytes and non_blank % per_run == 0:
                    yield piece(final=False)
                    yielded = True
    except _ARCHIVE_ERRORS as exc:
        report.problem(name, f"corrupt or unreadable text stream, rest skipped: {type(exc).__name__}: {exc}")
    if non_blank or not yielded:  # an empty file still reaches the reader, which reports it
        yield piece(final=True)


def _read_capped(f: BinaryIO, name: str, report: Report, config: ReadConfig) -> bytes | None:
    data = f.read(config.max_member_bytes + 1)
    if len(data) > config.max_member_bytes:
        report.problem(name, f"over the {config.max_member_bytes:,}-byte cap when decompressed; skipped")
        return None
    return data


def _child(
    name: str, data: bytes, report: Report, config: ReadConfig, depth: int, disk_bytes: int
) -> Iterator[Member]:
    kind = _kind(name)
    if kind == "leaf":
        yield Member(name, data, disk_bytes)
    elif kind in ("zip", "tar", "gz"):
        yield from _expand(name, io.BytesIO(data), kind, report, config, depth + 1, disk_bytes)
    else:
        report.count("unsupported_files")


def _expand(
    name: str, f: BinaryIO, kind: str, report: Report, config: ReadConfig, depth: int, disk_bytes: int
) -> Iterator[Member]:
    """Members of one archive; a damaged member is reported and skipped, a damaged archive ends early."""
    if depth > config.max_depth:
        report.problem(name, f"archive nested deeper than {config.max_depth}; skipped")
        return
    report.count(f"archives_{kind}")
    pending = disk_bytes  # credited to the first member yielded, so progress adds up to the dump size
    if kind == "gz":
        try:
            with gzip.GzipFile(fileobj=f) as gz:
                data = _read_capped(gz, name, report, config)
        except _ARCHIVE_ERRORS as exc:
            report.problem(name, f"corrupt gzip: {type(exc).__name__}: {exc}")
            return
        if data is not None:
            yield from _child(name[: -len(".gz")], data, report, config, depth, pending)
        return
    if kind == "zip":
        try:
            archive = zipfile.ZipFile(f)
            infos = archive.infolist()
        except _ARCHIVE_ERRORS as exc:
            report.problem(name, f"corrupt zip: {type(exc).__name__}: {exc}")
            return
        with archive:
            for info in sorted(infos, key=lambda i: i.filename):
                if info.is_dir():
                    continue
                member = f"{name}!{info.filename}"
                if _kind(info.filename) == "other":
                    report.count("unsupported_files")
                    continue
                if _is_text(info.filename):
                    credit = pending if depth else info.compress_size
                    pending = 0
                    try:
                        with archive.open(info) as mf:
                            yield from _text_pieces(member, mf, report, config, credit)
                    except _ARCHIVE_ERRORS as exc:
                        report.problem(member, f"corrupt zip member: {type(exc).__name__}: {exc}")
                    continue
                # The declared size bounds what zipfile will ever inflate (it stops there and checks the CRC),
                # so a bomb is refused here without decompressing a byte of it.
                if info.file_size > config.max_member_bytes:
                    report.problem(member, f"{info.file_size:,} bytes when decompressed is over the cap; skipped")
                    continue
                try:
                    with archive.open(info) as mf:
                        data = _read_capped(mf, member, report, config)
                except _ARCHIVE_ERRORS as exc:
                    report.problem(member, f"corrupt zip member: {type(exc).__name__}: {exc}")
                    continue
                if data is not None:
                    credit = pending if depth else info.compress_size
                    pending = 0
                    yield from _child(member, data, report, config, depth, credit)
        return
    # tar, tar.gz: read in archive order; a corrupt stream cannot be resynchronised, so it ends the archive.
    start = f.tell()
    try:
        with tarfile.open(fileobj=f, mode="r:*") as archive:
            for info in archive:
                if not info.isfile():
                    continue  # links, devices and folders carry no text and must not be followed
                member = f"{name}!{info.name}"
                if _kind(info.name) == "other":
                    report.count("unsupported_files")
                    continue
                if _is_text(info.name):  # streamed; its disk bytes are credited to the next member
                    mf = archive.extractfile(info)
                    if mf is not None:
                        yield from _text_pieces(member, mf, report, config, pending if depth else 0)
                        pending = 0
                    continue
                if info.size > config.max_member_bytes:
                    report.problem(member, f"{info.size:,} bytes is over the cap; skipped")
                    continue
                mf = archive.extractfile(info)
                data = mf.read() if mf is not None else None
                if data is None:
                    continue
                if depth:
                    credit, pending = pending, 0
                else:
                    pos = f.tell()
                    credit, start = pos - start, pos
                yield from _child(member, data, report, config, depth, credit)
    except _ARCHIVE_ERRORS as exc:
        report.problem(name, f"corrupt tar archive, rest skipped: {type(exc).__name__}: {exc}")


def parse_member(member: Member, report: Report, config: ReadConfig = ReadConfig()) -> Iterator[Document]:
    """Documents of one leaf file, by its name; a file that cannot be read is reported, never raised."""
    lower = member.name.lower()
    try:
        if lower.endswith(".srt"):
            doc = parse_srt(member.data, member.name, report)
            if doc:
                yield doc
        elif lower.endswith(".xml"):
            doc = parse_opus_xml(member.data, member.name, report)
            if doc:
                yield doc
        elif lower.endswith(".txt"):
            yield from _parse_txt(member, report, config)
        elif lower.endswith(".json"):
            try:
                data = json.loads(member.data)
            except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
                report.problem(member.name, f"bad JSON: {type(exc).__name__}: {exc}")
                return
            if is_discord_export(data):
                doc = parse_discord(data, member.name, report, include_bots=config.include_bots)
                if doc:
                    yield doc
            elif is_chitchat(data):
                yield from parse_chitchat(data, report)
            else:
                report.problem(member.name, "JSON that is neither a DiscordChatExporter export nor chitchat")
        else:
            report.count("unsupported_files")
    except Exception as exc:  # one odd file in a million must not end a long run; it is reported instead
        report.problem(member.name, f"reader failed: {type(exc).__name__}: {exc}")


def _parse_txt(member: Member, report: Report, config: ReadConfig) -> Iterator[Document]:
    """A .txt by its shape: a `Speaker: text` script, blank-line dialogue blocks, or OPUS mono text."""
    # The shape the stream was cut by, so a file read in mono pieces is never parsed as dialogue (or the reverse).
    shape = member.shape or (config.text_shape if config.text_shape != "auto" else None)
    if shape is None:
        shape = text_shape(decode_bytes(member.data[:_SHAPE_BYTES], member.name, Report()))
    if shape == SCRIPT:
        yield from parse_script(decode_bytes(member.data, member.name, report), member.name, report)
    elif shape == BLOCKS:
        yield from parse_blocks(decode_bytes(member.data, member.name, report), member.name, report)
    else:
        yield from parse_text(member.data, member.name, report, config.text_lines_per_document,
                              member.first_document)


def read_path(
    path: str | os.PathLike, report: Report, config: ReadConfig = ReadConfig()
) -> Iterator[Document]:
    """Yield the raw Documents of a file, folder, archive, or "chitchat" (the embedded dataset)."""
    for member in iter_members(path, report, config):
        yield from parse_member(member, report, config)
