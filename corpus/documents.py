"""The one data shape every reader yields: a document of ordered lines."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Line:
    """One utterance: its text, the speaker where known, and a weight (1.0 unless a reader knows better).

    Chat readers also keep the raw reaction count, the message's own id and the id it replies to.
    """

    text: str
    speaker: str | None = None
    weight: float = 1.0
    reactions: int = 0
    message_id: str | None = None
    reply_to: str | None = None


@dataclass
class Document:
    """A source id (file path, archive member, conversation id) plus its lines in order.

    `format` names the reader ("srt", "opus", "text", "discord", "chitchat"); cleaning uses it to apply
    the subtitle-only rules (cue splitting and joining) only where they make sense.
    """

    source_id: str
    lines: list[Line] = field(default_factory=list)
    format: str = ""

    def texts(self) -> list[str]:
        """The lines' texts, in order."""
        return [line.text for line in self.lines]
