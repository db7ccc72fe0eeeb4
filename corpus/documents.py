"""The one data shape every reader yields: a document of ordered lines."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Line:
    """One utterance: its text, the speaker where known, and a weight (1.0 unless a reader knows better)."""

    text: str
    speaker: str | None = None
    weight: float = 1.0


@dataclass
class Document:
    """A source id (file path, archive member, conversation id) plus its lines in order."""

    source_id: str
    lines: list[Line] = field(default_factory=list)

    def texts(self) -> list[str]:
        """The lines' texts, in order."""
        return [line.text for line in self.lines]
