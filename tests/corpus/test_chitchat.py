"""The embedded corpus as the default writer and editor read it: cleaned as every chat corpus is."""

from __future__ import annotations

from itertools import islice

import pytest

from corpus.chitchat import cleaned_chitchat, parse_chitchat, read_chitchat
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


def test_a_line_naming_a_chitchat_user_is_dropped_and_counted():
    conv = {"messages": [
        [{"sender": "u1", "text": "Oh hi chitchatter23"}, {"sender": "u1", "text": "how was your day?"}],
        [{"sender": "u2", "text": "Good! I talked with a fellow Chitchatter."}],
        [{"sender": "u2", "text": "chitchatters are nice"}, {"sender": "u2", "text": "I like chitchat a lot"}],
    ]}
    report = Report()
    (doc,) = parse_chitchat({"c1": conv}, report)
    assert [line.text for line in doc.lines] == ["how was your day?", "I like chitchat a lot"]
    assert [line.speaker for line in doc.lines] == ["A", "B"]
    assert report.counts["chitchat_pseudonyms"] == 2 + 1


@pytest.mark.slow
def test_the_embedded_corpus_names_no_chitchat_user():
    report = Report()
    texts = [line.text.casefold() for doc in cleaned_chitchat(report) for line in doc.lines]
    assert len(texts) > 200_000 and not any("chitchatter" in t for t in texts)
    assert report.counts["chitchat_pseudonyms"] >= 30
