"""The embedded default corpus: the chitchat-dataset wheel (MIT), 7,168 conversations, 258k utterances."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from corpus.clean import CleanConfig, clean_documents
from corpus.documents import Document, Line
from corpus.report import Report


def chitchat_path() -> Path:
    """Path of the dataset.json shipped inside the chitchat-dataset wheel."""
    try:
        import chitchat_dataset
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise RuntimeError("chitchat-dataset is not installed; run `make install`") from exc
    return Path(chitchat_dataset.__file__).resolve().parent / "dataset.json"


def read_chitchat(path: Path | None = None, report: Report | None = None) -> Iterator[Document]:
    """Yield each conversation as a Document, one Line per utterance, speakers named A and B by first turn."""
    with open(path or chitchat_path(), encoding="utf-8") as f:
        data = json.load(f)
    yield from parse_chitchat(data, report)


def cleaned_chitchat(report: Report | None = None) -> Iterator[Document]:
    """chitchat's conversations cleaned as every chat corpus is (`corpus.clean.clean_document`: empty lines and
    immediate repeats dropped): what the default writer and the default editor learn from, so the editor learns
    against the writer it will edit, whichever path built that writer."""
    report = report if report is not None else Report()
    yield from clean_documents(read_chitchat(report=report), CleanConfig(), report)


def is_chitchat(data: object) -> bool:
    """True when a parsed JSON object looks like chitchat-dataset's dataset.json."""
    if not isinstance(data, dict) or not data:
        return False
    first = next(iter(data.values()))
    return isinstance(first, dict) and isinstance(first.get("messages"), list)


def parse_chitchat(data: dict, report: Report | None = None) -> Iterator[Document]:
    """The conversations of an already parsed dataset.json (see read_chitchat)."""
    for conv_id, conv in data.items():
        try:
            lines = _conversation_lines(conv, report)
        except (AttributeError, TypeError, KeyError):  # a damaged conversation is dropped, not the whole file
            if report is not None:
                report.count("chitchat_bad_conversations")
            continue
        if lines:
            yield Document(source_id=f"chitchat/{conv_id}", lines=lines, format="chitchat")


# The dataset's pseudonyms for its users ("nice talking to you chitchatter23"). A writer that learns them says
# them to strangers ("I'm going to hire chitchatter23's company."), and cutting the name out leaves a broken line
# ("talk with instead?"), so the 40 lines that name one (of 258k) are dropped.
_PSEUDONYM = re.compile(r"\bchitchatters?\d*\b", re.IGNORECASE)


def _conversation_lines(conv: dict, report: Report | None = None) -> list[Line]:
    """The utterances of one conversation, speakers named A and B by first turn; a line naming a user dropped."""
    names: dict[str, str] = {}
    lines = []
    for turn in conv["messages"]:
        for utterance in turn:
            text = " ".join(str(utterance.get("text") or "").split())
            if not text:
                continue
            if _PSEUDONYM.search(text):
                if report is not None:
                    report.count("chitchat_pseudonyms")
                continue
            sender = str(utterance.get("sender", ""))
            speaker = names.setdefault(sender, chr(ord("A") + min(len(names), 25)))
            lines.append(Line(text=text, speaker=speaker))
    return lines
