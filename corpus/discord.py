"""DiscordChatExporter JSON reader (for Markov corpora): one Document per exported file, one Line per message.

A channel exported in parts (the exporter's --partition) is many files; each is read and yielded on its
own, so memory holds one part at a time. All parts share the source id `discord/CHANNEL_ID#PART`,
and the split ignores the `#PART`, so a channel stays in one split.

Only ordinary messages and replies are dialogue; joins, pins, calls and other system messages are not.
A message's weight is 1 plus its reaction count, and the raw count is kept in Line.reactions.
"""

from __future__ import annotations

import json
from pathlib import Path

from corpus.documents import Document, Line
from corpus.report import Report

DIALOGUE_TYPES = frozenset({"Default", "Reply"})


def parse_discord(
    data: bytes | dict, source_id: str, report: Report, *, include_bots: bool = False
) -> Document | None:
    """A Document of the export's messages in order; None (reported) when it is not a DiscordChatExporter file."""
    try:
        export = json.loads(data) if isinstance(data, bytes | bytearray) else data
        messages = export["messages"]
        if not isinstance(messages, list):
            raise TypeError("'messages' is not a list")
    except (ValueError, KeyError, TypeError) as exc:
        report.problem(source_id, f"not a DiscordChatExporter JSON file: {exc}")
        return None
    channel = export.get("channel") or {}
    channel_id = str((channel.get("id") if isinstance(channel, dict) else None) or source_id)
    lines: list[Line] = []
    for msg in messages:
        try:
            line = _message_line(msg, report, include_bots)
        except (AttributeError, TypeError, ValueError, KeyError, OverflowError):  # one bad message must not lose the file
            line = None
            report.count("discord_bad_messages")
        if line is not None:
            lines.append(line)
    report.count("discord_files")
    if not lines:
        return None
    return Document(f"discord/{channel_id}#{Path(source_id).name}", lines, "discord")


def _message_line(msg: object, report: Report, include_bots: bool) -> Line | None:
    """The Line of one exported message, or None (counted) for system, bot and empty messages."""
    if not isinstance(msg, dict):
        raise TypeError("a message is not a JSON object")
    if msg.get("type", "Default") not in DIALOGUE_TYPES:
        report.count("discord_system_messages")
        return None
    author = msg.get("author") or {}
    if author.get("isBot") and not include_bots:
        report.count("discord_bot_messages")
        return None
    content = msg.get("content") or ""
    if not isinstance(content, str) or not content.strip():
        report.count("discord_empty_messages")
        return None
    # Clamped at zero: a negative count in a damaged export would make a negative Markov weight.
    reactions = max(0, sum(int(r.get("count", 0) or 0) for r in msg.get("reactions") or [] if isinstance(r, dict)))
    reference = msg.get("reference") or {}
    speaker = author.get("name") or author.get("nickname")
    return Line(
        text=content,
        speaker=str(speaker) if speaker is not None else None,
        weight=1.0 + reactions,
        reactions=reactions,
        message_id=str(msg["id"]) if msg.get("id") is not None else None,
        reply_to=str(reference["messageId"]) if reference.get("messageId") else None,
    )


def is_discord_export(data: dict) -> bool:
    """True when a parsed JSON object looks like a DiscordChatExporter export."""
    return isinstance(data, dict) and isinstance(data.get("messages"), list)
