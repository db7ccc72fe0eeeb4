"""DiscordChatExporter JSON reader."""

from __future__ import annotations

import json

from corpus.discord import parse_discord
from corpus.report import Report


def message(i, content, name="ann", bot=False, reactions=(), reply=None, kind="Default"):
    msg = {
        "id": str(i),
        "type": kind,
        "content": content,
        "author": {"id": "9", "name": name, "nickname": name.upper(), "isBot": bot},
        "reactions": [{"emoji": {"name": "x"}, "count": c} for c in reactions],
    }
    if reply:
        msg["reference"] = {"messageId": str(reply), "channelId": "7"}
    return msg


def export(messages):
    return json.dumps(
        {"guild": {"id": "1"}, "channel": {"id": "7", "name": "general"}, "messages": messages}
    ).encode()


def test_messages_authors_reactions_and_replies():
    data = export(
        [
            message(1, "hello all", reactions=[2, 3]),
            message(2, "beep", name="robot", bot=True),
            message(3, "Joined the server.", kind="GuildMemberJoin"),
            message(4, "", name="bob"),
            message(5, "hi ann", name="bob", reply=1, kind="Reply"),
        ]
    )
    report = Report()
    doc = parse_discord(data, "exports/general part 1.json", report)
    assert doc.source_id == "discord/7#general part 1.json" and doc.format == "discord"
    assert [(line.text, line.speaker, line.weight, line.reactions) for line in doc.lines] == [
        ("hello all", "ann", 6.0, 5),
        ("hi ann", "bob", 1.0, 0),
    ]
    assert doc.lines[1].reply_to == "1" and doc.lines[0].message_id == "1"
    assert report.counts["discord_bot_messages"] == 1
    assert report.counts["discord_system_messages"] == 1 and report.counts["discord_empty_messages"] == 1


def test_bots_can_be_included():
    doc = parse_discord(export([message(1, "beep", bot=True)]), "x.json", Report(), include_bots=True)
    assert doc.texts() == ["beep"]


def test_not_an_export_is_reported():
    for data in [b"{not json", b'{"foo": 1}', b'{"messages": 3}']:
        report = Report()
        assert parse_discord(data, "x.json", report) is None
        assert report.n_problems == 1
