"""Bytes to text for subtitle and text files: BOMs, UTF-8, detected legacy encodings, repaired mojibake."""

from __future__ import annotations

import codecs

import charset_normalizer
import ftfy
from ftfy.badness import is_bad

from corpus.report import Report

_BOMS = [
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
]


def detect_encoding(data: bytes) -> tuple[str, int]:
    """The encoding of `data` and the length of its byte-order mark (0 if none)."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            return name, len(bom)
    sample = data[:4096]
    # UTF-16 without a BOM: ASCII text leaves every other byte zero. The zeros must sit on one parity: a UTF-8
    # file padded with a run of NULs (a damaged download) has them on both, and is not UTF-16.
    even_zeros = sample[0::2].count(0)
    odd_zeros = sample[1::2].count(0)
    if len(sample) >= 4 and max(even_zeros, odd_zeros) > len(sample) // 4 and min(even_zeros, odd_zeros) * 4 < max(
        even_zeros, odd_zeros
    ):
        return ("utf-16-be" if even_zeros > odd_zeros else "utf-16-le"), 0
    try:
        data.decode("utf-8")
        return "utf-8", 0
    except UnicodeDecodeError:
        pass
    # Non-UTF-8 subtitles are nearly always cp1252. Statistical detection is unreliable on short Western
    # text (it picks cp1257 for "plaît"), so cp1252 is taken whenever it reads the bytes as mostly ASCII
    # words with a few accented letters; a Cyrillic or Greek code page read as cp1252 gives nearly all
    # non-ASCII letters, and goes to charset-normalizer.
    try:
        as_cp1252 = data.decode("cp1252")
    except UnicodeDecodeError:
        as_cp1252 = None
    if as_cp1252 is not None:
        letters = [c for c in as_cp1252 if c.isalpha()]
        foreign = sum(1 for c in letters if not c.isascii())
        if foreign <= 0.3 * len(letters):
            return "cp1252", 0
    matches = list(charset_normalizer.from_bytes(data))
    if not matches:
        return "cp1252", 0  # decodes any byte except five: the last resort
    best = min(matches, key=lambda m: m.chaos)
    return best.encoding, 0


def decode_bytes(data: bytes, source: str, report: Report) -> str:
    """Decode subtitle bytes to text with LF line endings, repairing mojibake such as "rÃ©sumÃ©"."""
    encoding, skip = detect_encoding(data)
    report.count(f"encoding_{encoding.replace('-', '_').lower()}")
    try:
        text = data[skip:].decode(encoding)
    except (UnicodeDecodeError, LookupError):
        report.problem(source, f"could not decode as {encoding}; read as cp1252 with replacements")
        text = data[skip:].decode("cp1252", errors="replace")
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\ufeff", "")
    if not text.isascii() and is_bad(text):  # pure ASCII cannot be mojibake
        fixed = ftfy.fix_text(text, uncurl_quotes=False, fix_line_breaks=False)
        if fixed != text:
            report.count("mojibake_repaired")
            text = fixed
    return text
