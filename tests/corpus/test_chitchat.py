"""The embedded corpus as the default writer and editor read it: cleaned as every chat corpus is."""

from __future__ import annotations

from itertools import islice

from corpus.chitchat import cleaned_chitchat, read_chitchat
from corpus.report import Report
from corpus.text import words


def test_cleaned_chitchat_keeps_every_conversation_and_drops_empty_and_repeated_lines():
    report = Report()
    cleaned = list(islice(cleaned_chitchat(report), 300))
    raw = list(islice(read_chitchat(), 300))
    assert [d.source_id for d in cleaned] == [d.source_id for d in raw]  # the ids, so the splits, stay
    assert report.counts["documents_in"] == 300
    for doc in cleaned:  # no line is empty, and no line repeats the one before it
        texts = [line.text for line in doc.lines]
        assert all(words(t) for t in texts)
        assert all(a.casefold() != b.casefold() for a, b in zip(texts, texts[1:], strict=False))
    dropped = sum(len(d.lines) for d in raw) - sum(len(d.lines) for d in cleaned)
    assert dropped == report.counts["repeats"] + report.counts["empty_lines"] > 0  # these conversations hold some
