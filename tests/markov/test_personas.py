"""Personas from chat exports: per-speaker builds, reaction weights, bots, cleaning, turn-taking."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from corpus.report import Report
from markov import MarkovModel
from markov.__main__ import main as cli
from markov.personas import PersonaConfig, clean_chat_text, collect, reaction_weight, read_chat_inputs, slug

ALICE = ["I love hiking in the mountains", "the mountains are calling, as always", "hiking boots on, let's go",
         "mountains at sunrise are the best"]
BOB = ["did you see the game last night?", "the game was wild, what a finish", "that finish though!!",
       "best game of the season"]


def export(messages: list[dict], channel: str = "42") -> dict:
    """A minimal DiscordChatExporter document."""
    return {"guild": {"id": "1", "name": "g"}, "channel": {"id": channel, "name": "general"}, "messages": messages}


def message(i: int, author: str, content: str, reactions: int = 0, bot: bool = False, reply_to: int | None = None) -> dict:
    m = {"id": str(1000 + i), "type": "Reply" if reply_to else "Default", "content": content,
         "author": {"id": author, "name": author, "isBot": bot},
         "reactions": [{"emoji": {"name": "👍"}, "count": reactions}] if reactions else []}
    if reply_to:
        m["reference"] = {"messageId": str(1000 + reply_to)}
    return m


@pytest.fixture
def chat_dir(tmp_path):
    msgs = []
    for i in range(4):
        msgs.append(message(2 * i, "alice", ALICE[i], reactions=i))
        msgs.append(message(2 * i + 1, "bob", BOB[i], reply_to=2 * i))
    msgs.append(message(20, "carol", "hi all <@123> see https://example.com/x"))
    msgs.append(message(21, "modbot", "Welcome! Read the rules.", bot=True))
    msgs.append(message(22, "alice", ""))  # attachment only
    # the channel is split in two files, as the exporter's --partition does
    d = tmp_path / "export"
    d.mkdir()
    (d / "general [42] part1.json").write_text(json.dumps(export(msgs[:5])), encoding="utf-8")
    (d / "general [42] part2.json").write_text(json.dumps(export(msgs[5:])), encoding="utf-8")
    return d


def test_reaction_weight_curve_is_soft_and_monotone():
    assert reaction_weight(0) == 1.0
    assert reaction_weight(1) == pytest.approx(1 + math.log(2))
    assert reaction_weight(2) == pytest.approx(1 + math.log(3))
    ws = [reaction_weight(r) for r in range(50)]
    assert all(a < b for a, b in zip(ws, ws[1:], strict=False))
    assert reaction_weight(100) < 6  # a viral message does not drown a chat
    assert reaction_weight(3, "linear") == 4.0 and reaction_weight(3, "none") == 1.0
    with pytest.raises(ValueError, match="weighting"):
        PersonaConfig(weighting="cubic")


def test_chat_cleaning_rules():
    cfg = PersonaConfig()
    assert clean_chat_text("hey <@!123> look https://x.co/a **now** <:kekw:999>", cfg) == "hey look now :kekw:"
    assert clean_chat_text("@sam did you see www.site.org", cfg) == "did you see"
    keep = PersonaConfig(remove_mentions=False, remove_urls=False)
    assert clean_chat_text("@sam see https://x.co", keep) == "@sam see https://x.co"
    assert clean_chat_text("mail me at a@b.com", cfg) == "mail me at a@b.com"  # not a mention


def test_collect_groups_by_speaker_folds_small_ones_and_skips_bots(chat_dir):
    report = Report()
    corpus = collect(read_chat_inputs([str(chat_dir)], report), PersonaConfig(min_messages=2))
    assert sorted(corpus.messages) == ["alice", "all", "bob"]
    assert [t for t, _ in corpus.messages["alice"]] == ALICE
    assert corpus.folded == {"carol": 1}
    assert "Welcome! Read the rules." not in [t for t, _ in corpus.messages["all"]]
    assert report.counts["discord_bot_messages"] == 1
    assert len(corpus.messages["all"]) == 9
    # alice's 3-reaction message weighs most; the weighting report says so
    assert corpus.report["top_weighted"][0]["text"] == ALICE[3]
    assert corpus.report["effective_messages"] < corpus.report["total_weight"]
    # turn-taking: bob always answers alice, and alice follows bob three times
    assert corpus.follows == {"alice": {"bob": 4}, "bob": {"alice": 3}}


def test_bots_can_be_included_and_min_reactions_filters(chat_dir):
    corpus = collect(read_chat_inputs([str(chat_dir)], Report(), include_bots=True), PersonaConfig(min_messages=1))
    assert "modbot" in corpus.messages
    bangers = collect(read_chat_inputs([str(chat_dir)], Report()), PersonaConfig(min_messages=1, min_reactions=2))
    assert [t for t, _ in bangers.messages["all"]] == ALICE[2:]


def test_speaker_log_input(tmp_path):
    log = tmp_path / "chat.txt"
    log.write_text("alice: hi there\n[10:02] bob: hey alice\nno speaker here\nalice: how are you?\n", encoding="utf-8")
    report = Report()
    corpus = collect(read_chat_inputs([str(log)], report), PersonaConfig(min_messages=1))
    assert [t for t, _ in corpus.messages["alice"]] == ["hi there", "how are you?"]
    assert [t for t, _ in corpus.messages["bob"]] == ["hey alice"]
    assert report.counts["log_lines_without_speaker"] == 1
    # who answered whom: each persona's turn pairs are the turns it spoke, `all` holds every one
    assert corpus.replies["bob"] == [("hi there", "hey alice")]
    assert corpus.replies["alice"] == [("hey alice", "how are you?")]
    assert corpus.replies["all"] == [("hi there", "hey alice"), ("hey alice", "how are you?")]


def test_cli_builds_one_persona_per_speaker(chat_dir, tmp_path, capsys):
    out = tmp_path / "models" / "gang"
    cli(["build", "--input", str(chat_dir), "--by-speaker", "--out", str(out), "--min-messages", "2",
         "--order", "1", "--min-tokens", "1"])
    err = capsys.readouterr().err
    assert "folded into `all`" in err and "carol (1)" in err
    meta = json.loads((out / "markov" / "personas.json").read_text())
    assert sorted(meta["personas"]) == ["alice", "all", "bob"]
    assert meta["personas"]["alice"]["messages"] == 4
    alice = MarkovModel.load(out / "markov" / "alice")
    bob = MarkovModel.load(out / "markov" / "bob")
    # each persona speaks only from its own lines
    alice_words = {w for t in ALICE for w in t.lower().split()}
    for text in alice.sample(30, np.random.default_rng(0)):
        assert "game" not in text
    assert alice.log_likelihood("hiking in the mountains") > bob.log_likelihood("hiking in the mountains")
    assert bob.log_likelihood("what a game") > alice.log_likelihood("what a game")
    assert alice_words  # the fixture is what the assertions above rely on
    # bob answered alice four times and alice bob three: each persona holds the words of its own answers
    assert bob.replies is not None and bob.replies.stats["pairs"] == 4
    assert alice.replies is not None and alice.replies.stats["pairs"] == 3


def test_cli_build_of_a_chat_learns_its_reply_words(chat_dir, tmp_path, capsys):
    cli(["build", "--input", str(chat_dir), "--out", str(tmp_path / "m"), "--order", "1", "--min-tokens", "1"])
    model = MarkovModel.load(tmp_path / "m")
    # alice and bob take turns (carol and the bot's lines come after): 7 turn pairs within the channel's two parts
    assert model.replies is not None and model.replies.stats["pairs"] >= 7
    assert "reply words: ReplyWords(" in capsys.readouterr().err


def test_missing_input_and_speakerless_inputs_are_clear_errors(tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        cli(["build", "--input", str(tmp_path / "nope.json"), "--by-speaker", "--out", str(tmp_path / "m")])
    empty = tmp_path / "empty.txt"
    empty.write_text("no speakers at all\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="no messages with a speaker"):
        cli(["build", "--input", str(empty), "--by-speaker", "--out", str(tmp_path / "m")])


def test_slugs_are_safe_names():
    assert slug("Not A Plant") == "not-a-plant"
    assert slug("../../etc") == "etc"
    assert slug("日本") == "speaker"


def test_persona_eval_tells_synthetic_speakers_apart(tmp_path):
    from benchmarks.persona_eval import run, synthetic_export

    result = run([str(synthetic_export(tmp_path / "chat.json", messages_per_speaker=60))], 3, 1, 0)
    assert result["personas"] == 4 and result["held_out"] == 48
    assert result["accuracy"] > 2 * result["chance"]
