"""SubRip (.srt) reader: pysrt where it copes, a tolerant parser where it does not; never raises on bad input."""

from __future__ import annotations

import re
from pathlib import Path

import pysrt

from corpus.charset import decode_bytes
from corpus.documents import Document, Line
from corpus.report import Report

# Hours optional, any of , . : before the milliseconds; whatever follows (DVD "X1:... Y2:...") is ignored.
_TIME = r"(?:(\d{1,3})\s*:\s*)?(\d{1,2})\s*:\s*(\d{1,2})(?:\s*[,.:]\s*(\d{1,3}))?"
_TIMING = re.compile(rf"^\s*{_TIME}\s*-+>\s*{_TIME}")
_ARROW = re.compile(r"-->")
_INDEX = re.compile(r"^\s*\d+\s*$")


def _ms(groups: tuple) -> int:
    hours, minutes, seconds, millis = groups
    return ((int(hours or 0) * 60 + int(minutes)) * 60 + int(seconds)) * 1000 + int(
        (millis or "0").ljust(3, "0")[:3]
    )


def parse_srt_text(text: str, source_id: str, report: Report) -> list[str]:
    """Cue texts in file order: pysrt first, then the tolerant parser if pysrt refuses the file."""
    try:
        items = pysrt.SubRipFile.from_string(text, error_handling=pysrt.SubRipFile.ERROR_RAISE)
        cues = [item.text for item in items]
        starts = [item.start.ordinal for item in items]
        report.count("srt_pysrt")
    except Exception:  # pysrt raises several kinds on damaged files; all mean "use the tolerant parser"
        cues, starts = _tolerant_cues(text)
        report.count("srt_tolerant")
    if any(b < a for a, b in zip(starts, starts[1:], strict=False)):
        # File order is kept: a file out of time order (joined parts, bad timing) is nearly always still
        # in dialogue order.
        report.count("srt_out_of_order_files")
    return cues


def _tolerant_cues(text: str) -> tuple[list[str], list[int]]:
    """Split on timing lines; an index line just before a timing line is dropped, blank lines inside a cue kept."""
    lines = text.split("\n")
    boundaries = [i for i, line in enumerate(lines) if _TIMING.match(line) or _ARROW.search(line)]
    cues, starts = [], []
    for k, i in enumerate(boundaries):
        end = boundaries[k + 1] if k + 1 < len(boundaries) else len(lines)
        body = lines[i + 1 : end]
        # Drop the next cue's index (and blank lines around it) from the end of this one.
        while body and not body[-1].strip():
            body.pop()
        if k + 1 < len(boundaries) and body and _INDEX.match(body[-1]):
            body.pop()
        cue = "\n".join(line for line in body if line.strip())
        match = _TIMING.match(lines[i])
        starts.append(_ms(match.groups()[:4]) if match else (starts[-1] if starts else 0))
        cues.append(cue)
    return cues, starts


def parse_srt(data: bytes, source_id: str, report: Report) -> Document | None:
    """A Document with one raw Line per cue, or None (reported) when the bytes hold no subtitle cues."""
    text = decode_bytes(data, source_id, report)
    cues = [c for c in parse_srt_text(text, source_id, report) if c.strip()]
    if not cues:
        report.problem(source_id, "no subtitle cues found")
        return None
    report.count("srt_files")
    return Document(source_id, [Line(c) for c in cues], "srt")


def read_srt(path: str | Path, report: Report) -> Document | None:
    """Read one .srt file (see parse_srt)."""
    return parse_srt(Path(path).read_bytes(), str(path), report)
