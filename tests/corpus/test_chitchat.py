"""The embedded corpus as the default writer and editor read it: cleaned as every chat corpus is."""

from __future__ import annotations

from itertools import islice

from corpus.chitchat import cleaned_chitchat, read_chitchat
from corpus.report import Report
from corpus.text import APOSTROPHE_LESS, words


def typed_without_apostrophes(text: str) -> list[str]:
    """Such words, but not in capitals: "IM" in a line of mixed case may be an instant message, and stays."""
    return [w for w in text.split() if w.strip(".,!?").lower() in APOSTROPHE_LESS and not w.isupper()]


def test_cleaned_chitchat_keeps_every_conversation_and_drops_repeats_and_apostrophe_less_words():
    report = Report()
    cleaned = list(islice(cleaned_chitchat(report), 300))
    raw = list(islice(read_chitchat(), 300))
    assert [d.source_id for d in cleaned] == [d.source_id for d in raw]  # the ids, so the splits, stay
    assert any(typed_without_apostrophes(line.text) for d in raw for line in d.lines)  # these conversations type some
    assert report.counts["apostrophes_restored"] > 0
    for doc in cleaned:  # ... and none is left, no line is empty, and no line repeats the one before it
        texts = [line.text for line in doc.lines]
        assert not [w for t in texts for w in typed_without_apostrophes(t)]
        assert all(words(t) for t in texts)
        assert all(a.casefold() != b.casefold() for a, b in zip(texts, texts[1:], strict=False))
    assert sum(len(d.lines) for d in cleaned) <= sum(len(d.lines) for d in raw)
