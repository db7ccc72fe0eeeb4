"""The reply-word table: what people name in reply to a word, learned from turn pairs."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from markov import MarkovConfig, MarkovModel
from markov.replies import RepliesConfig, ReplyWords, turn_pairs, with_pairs

# "pizza" is answered with "toppings" 4 times in 10 turn pairs; "great" answers half of all turns, so it tells
# nothing about pizza (lift 1); "crust" answers pizza only twice (below min_count 3).
PAIRS = (
    [("do you like pizza?", "yes, toppings are great")] * 2
    + [("pizza tonight", "which toppings?")] * 2
    + [("pizza or pasta", "crust matters")] * 2
    + [("how was your weekend?", "great, went hiking")] * 3
    + [("my weekend was great", "great to hear")]
)


def test_turn_pairs_answer_the_other_speakers_last_line_with_the_whole_turn():
    lines = [("A", "hi"), ("A", "how was your weekend?"), ("B", "fun"), ("B", "went hiking"), ("A", "nice"),
             ("", "narrator"), ("B", "so"), ("A", "yes")]
    assert list(turn_pairs(lines)) == [
        ("how was your weekend?", "fun went hiking", "B"),
        ("went hiking", "nice", "A"),
        # a line with no speaker breaks the chain: "so" answers nothing
        ("so", "yes", "A"),
    ]
    assert list(turn_pairs([("A", "alone"), ("A", "still me")])) == []


def test_reply_words_are_the_ones_a_word_is_answered_with_beyond_chance():
    table = ReplyWords.build(PAIRS)
    # toppings: 4 of the 6 pizza pairs, 4 of 10 replies overall -> lift 10 * 4 / (6 * 4) = 5/3 < 3: not kept
    assert table.of(["pizza"]) == []
    loose = ReplyWords.build(PAIRS, RepliesConfig(min_lift=1.5))
    assert loose.of(["pizza"]) == ["toppings"]  # crust: 2 pairs (< min_count); great: lift 10*2/(6*5) < 1.5
    lo, hi = loose.ptr[loose.vocab.index("pizza")], loose.ptr[loose.vocab.index("pizza") + 1]
    assert loose.score[lo:hi] == pytest.approx([4 * math.log(10 * 4 / (6 * 4))])  # count x log lift, by hand
    # a word is not its own reply, and excluded words are left out
    assert "weekend" not in loose.of(["weekend"])
    assert loose.of(["weekend"], k=1) == ["hiking"] and loose.of(["weekend"], exclude=["HIKING"], k=1) == ["went"]
    assert loose.of(["never-said"]) == []
    assert table.stats == {"pairs": 10, "words": len(table.vocab), "associations": len(table.to), "min_count": 3,
                           "min_lift": 3.0, "per_word": 32}
    # words in fewer than min_count pairs are not in the table at all ("pasta": 2 pairs; "hear": 1)
    assert "pasta" not in table.vocab and "hear" not in table.vocab and "pizza" in table.vocab
    assert loose.answers("pizza") and not loose.answers("toppings") and not loose.answers("never-said")


def test_the_table_is_the_same_whatever_order_the_pairs_come_in():
    shuffled = list(PAIRS)
    random.Random(3).shuffle(shuffled)
    config = RepliesConfig(min_lift=1.5)
    assert ReplyWords.build(shuffled, config) == ReplyWords.build(PAIRS, config)


def test_per_word_keeps_the_strongest():
    pairs = [("cats", "purr")] * 5 + [("cats", "meow")] * 3 + [("dogs", "bark")] * 8 + [("fish", "swim")] * 8
    full = ReplyWords.build(pairs, RepliesConfig(min_lift=1.0))
    assert full.of(["cats"]) == ["purr", "meow"]
    assert ReplyWords.build(pairs, RepliesConfig(min_lift=1.0, per_word=1)).of(["cats"]) == ["purr"]
    assert full.of(["cats", "dogs"])[0] == "bark"  # summed over the said words, the strongest first
    # a said word is never a reply word, even where another said word is answered with it
    both = ReplyWords.build([("cats", "dogs")] * 4 + [("dogs", "bark")] * 4, RepliesConfig(min_lift=1.0))
    assert both.of(["cats"]) == ["dogs"] and both.of(["cats", "dogs"]) == ["bark"]


def test_config_rejects_nonsense():
    with pytest.raises(ValueError):
        RepliesConfig(min_count=0)
    with pytest.raises(ValueError):
        RepliesConfig(min_lift=0.5)


LINES = ["do you like pizza with toppings?", "i love toppings on pizza", "hiking is fun on the weekend",
         "we went hiking last weekend", "toppings make the pizza", "great toppings here", "i went hiking today",
         "hiking with friends", "the weekend was great"]


def writer_with_replies() -> MarkovModel:
    model = MarkovModel.build([(line, 1.0) for line in LINES], MarkovConfig(order=1, max_overlap_ratio=None))
    model.replies = ReplyWords.build(PAIRS, RepliesConfig(min_lift=1.5))
    return model


def test_a_model_saves_and_loads_its_table(tmp_path):
    model = writer_with_replies()
    model.save(tmp_path / "m")
    loaded = MarkovModel.load(tmp_path / "m")
    assert loaded == model and loaded.replies == model.replies and loaded.replies is not None
    assert json.loads((tmp_path / "m" / "config.json").read_text())["riposte"]["format_version"] == 5
    # without a table it saves and loads without one, and two models differing only by it are not equal
    model.replies = None
    model.save(tmp_path / "plain")
    plain = MarkovModel.load(tmp_path / "plain")
    assert plain.replies is None and plain == model and plain != loaded


def test_a_damaged_table_is_a_clear_error(tmp_path):
    model = writer_with_replies()
    model.save(tmp_path / "m")
    words_file = tmp_path / "m" / "replies.txt"
    words_file.write_text("\n".join(words_file.read_text().split("\n")[:-3]) + "\n")  # two words lost
    with pytest.raises(ValueError, match="corrupt"):
        MarkovModel.load(tmp_path / "m")


def test_reply_words_of_a_model_are_ones_it_can_write_around_and_not_the_contexts():
    model = writer_with_replies()
    # the words, and the said words that have any ("tonight" answers nothing)
    assert model.reply_words(["pizza", "tonight"], ["pizza tonight?"], 4) == (["toppings"], ["pizza"])
    # the context already said it: not a reply word
    assert model.reply_words(["pizza"], ["pizza toppings tonight?"], 4) == ([], [])
    # "went" and "hiking" answer the weekend; the model can write both
    assert set(model.reply_words(["weekend"], ["how was your weekend?"], 4)[0]) >= {"hiking", "went"}
    assert model.reply_words(["weekend"], ["how was your weekend?"], 1)[0] == ["hiking"]
    model.replies = None
    assert model.reply_words(["weekend"], ["how was your weekend?"], 4) == ([], [])


def test_a_table_that_does_not_fit_together_is_refused():
    table = ReplyWords.build(PAIRS, RepliesConfig(min_lift=1.5))
    arrays = table.arrays()
    with pytest.raises(ValueError):
        ReplyWords.from_arrays(table.vocab[:-1], arrays, {})
    bad = dict(arrays, to=np.full_like(arrays["to"], len(table.vocab)))
    with pytest.raises(ValueError):
        ReplyWords.from_arrays(table.vocab, bad, {})
    with pytest.raises(ValueError, match="types"):
        ReplyWords.from_arrays(table.vocab, dict(arrays, ptr=arrays["ptr"].astype(np.float64)), {})
    with pytest.raises(ValueError, match="types"):
        ReplyWords.from_arrays(table.vocab, arrays, 5)


def test_a_damaged_config_or_a_lost_word_file_is_a_clear_error(tmp_path):
    model = writer_with_replies()
    model.save(tmp_path / "m")
    config = tmp_path / "m" / "config.json"
    meta = json.loads(config.read_text())
    meta["riposte"]["replies"] = 5
    config.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="corrupt"):
        MarkovModel.load(tmp_path / "m")
    model.save(tmp_path / "n")
    (tmp_path / "n" / "replies.txt").unlink()
    with pytest.raises(ValueError, match="corrupt"):
        MarkovModel.load(tmp_path / "n")


def test_with_pairs_passes_the_documents_through_and_collects_their_turn_pairs():
    from corpus.documents import Document, Line

    docs = [Document(source_id="a", lines=[Line(text="hi", speaker="A"), Line(text="hey you", speaker="B")]),
            Document(source_id="b", lines=[Line(text="plain line")])]
    pairs: list[tuple[str, str]] = []
    assert list(with_pairs(docs, pairs)) == docs
    assert pairs == [("hi", "hey you")]


def test_the_replies_command_prints_what_a_model_learned(tmp_path, capsys):
    from markov.__main__ import main as cli

    model = writer_with_replies()
    model.save(tmp_path / "m")
    cli(["replies", str(tmp_path / "m"), "weekend", "zork", "-k", "2"])
    out = capsys.readouterr()
    assert [line.split()[1] for line in out.out.splitlines()] == ["hiking", "went"]
    assert float(out.out.split()[0]) == pytest.approx(3 * math.log(10 * 3 / (4 * 3)), abs=0.05)
    assert "nothing learned for: zork" in out.err
    model.replies = None
    model.save(tmp_path / "plain")
    with pytest.raises(SystemExit, match="no reply-word table"):
        cli(["replies", str(tmp_path / "plain"), "weekend"])
    with pytest.raises(SystemExit, match="-k must be"):
        cli(["replies", str(tmp_path / "m"), "weekend", "-k", "0"])
