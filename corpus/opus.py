"""OPUS OpenSubtitles readers: the XML corpus (tokenized <w> or raw form) and the mono text corpus.

The XML is parsed with defusedxml, which refuses DTDs and entity declarations, so an entity-expansion
bomb is reported as a bad file instead of eating the machine.

The mono text files (`en.txt(.gz)`) are one sentence per line with no document boundaries at all. We
treat each run of `lines_per_document` consecutive lines as one document, with source id
`PATH@RUN`, and each run is split (train/val/test) on its own: a dump is often one huge file. Windows
never cross runs, so no sample straddles train and test; neighbouring runs do share a scene now and then.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from xml.etree.ElementTree import ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import iterparse

from corpus.charset import decode_bytes
from corpus.documents import Document, Line
from corpus.report import Report

# Detokenization of the OPUS <w> form: "do n't" -> "don't", "word ." -> "word.", "( word )" -> "(word)".
_NO_SPACE_BEFORE = re.compile(r" (?=[.,!?;:%)\]}…]|n't\b|'(?:s|m|re|ve|ll|d)\b|\.\.\.)", re.IGNORECASE)
_NO_SPACE_AFTER = re.compile(r"(?<=[(\[{$#¿¡]) ")


def detokenize(tokens: list[str]) -> str:
    """Join OPUS word tokens into text: no space before punctuation and clitics, none inside quotes."""
    out: list[str] = []
    open_quote = False
    for tok in tokens:
        if tok == '"':
            # Straight double quotes alternate: an opening one sticks to the next word, a closing one to the last.
            if open_quote:
                if out:
                    out[-1] += '"'
                else:
                    out.append('"')
            else:
                out.append('"\u0000')
            open_quote = not open_quote
            continue
        out.append(tok)
    text = " ".join(out).replace("\u0000 ", "").replace("\u0000", "")
    text = _NO_SPACE_BEFORE.sub("", text)
    return _NO_SPACE_AFTER.sub("", text)


def parse_opus_xml(data: bytes, source_id: str, report: Report) -> Document | None:
    """One Document per OPUS XML file, one Line per <s> sentence; None (reported) for a bad or empty file."""
    lines: list[Line] = []
    try:
        for _event, elem in iterparse(io.BytesIO(data), events=("end",), forbid_dtd=True):
            if elem.tag != "s":
                continue
            words = [w.text or "" for w in elem.iter("w")]
            text = detokenize(words) if words else "".join(elem.itertext())
            text = " ".join(text.split())
            if text:
                lines.append(Line(text))
            elem.clear()  # bounded memory on long films
    except (ParseError, DefusedXmlException, ValueError) as exc:
        report.problem(source_id, f"bad OPUS XML: {type(exc).__name__}: {exc}")
        if not lines:
            return None
    if not lines:
        report.problem(source_id, "no <s> sentences found")
        return None
    report.count("opus_xml_files")
    return Document(source_id, lines, "opus")


def parse_text(
    data: bytes, source_id: str, report: Report, lines_per_document: int = 100, first_document: int = 0
) -> Iterator[Document]:
    """Mono text, one sentence per line: each run of `lines_per_document` lines is a Document `source_id@k`.

    Runs are numbered from `first_document`, for a large file read in pieces (corpus.dump streams those).
    The "@" keeps each run its own source for the train/val/test split: there are no document boundaries
    to keep together, and one file is often the whole dump (OPUS ships mono text as a single en.txt.gz).
    """
    if lines_per_document < 2:
        raise ValueError(f"lines_per_document must be at least 2, got {lines_per_document}")
    text = decode_bytes(data, source_id, report)
    run: list[Line] = []
    k = first_document
    for raw in text.split("\n"):
        if raw.strip():
            run.append(Line(raw.strip()))
        if len(run) == lines_per_document:
            yield Document(f"{source_id}@{k}", run, "text")
            run, k = [], k + 1
    if run:
        yield Document(f"{source_id}@{k}", run, "text")
    elif k == 0:
        report.problem(source_id, "no text lines found")
        return
    if first_document == 0:
        report.count("text_files")
