"""Where a writer's line is spliced: hand-checked places, agreement with a plain n-gram set, and the edges."""

from __future__ import annotations

import numpy as np
import pytest

from markov import MarkovConfig, MarkovModel, Splice, Splices, tokenize

CORPUS = [
    "hey how was your weekend ?",
    "my weekend was great, thanks",
    "was your dog ok?",
    "how are you doing today?",
    "are you doing anything fun today?",
    "I am doing fine today, thanks",
    "you should eat pizza, it's always good",
    "pizza is always good, but I had it yesterday",
]


def reference(corpus: list[str], text: str, order: int) -> Splice:
    """The same answer from a Python set of padded (order+2)-grams: the definition, written plainly."""
    n = order + 2

    def padded(line: str) -> list[str]:
        return ["<s>"] * (n - 1) + tokenize(line) + ["</s>"]

    grams = {tuple(seq[i - n + 1 : i + 1]) for seq in map(padded, corpus) for i in range(n - 1, len(seq))}
    seq = padded(text)
    missing = [i - (n - 1) for i in range(n - 1, len(seq)) if tuple(seq[i - n + 1 : i + 1]) not in grams]
    tokens = tokenize(text)
    starts, pos = [], -1  # a token is its word with a leading space; the text has none before its first
    for token in tokens:
        starts.append(pos + len(token) - len(token.lstrip(" ")))
        pos += len(token)
    return Splice(tuple(starts[j] for j in missing if j < len(tokens)), len(tokens) in missing)


def test_a_corpus_line_is_never_spliced():
    found = Splices(CORPUS, order=2).find(CORPUS)
    assert all(splice == Splice((), False) for splice in found)


def test_the_word_where_a_line_leaves_the_one_it_followed_is_a_splice():
    text = "hey how was your weekend was great"
    splice = Splices(CORPUS, order=1).find([text])[0]
    # "your weekend was" is in no line: the chain left the first line there, for "weekend was great".
    assert splice.starts == (text.index("was great"),)
    assert splice.at_end  # no line ends after "was great": it goes on ", thanks"
    assert splice.count == 2
    # at order 2 the same line also breaks at "weekend was great" ("your weekend was great" is nowhere)
    assert Splices(CORPUS, order=2).find([text])[0] == reference(CORPUS, text, 2)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_the_writers_lines_are_spliced_where_a_plain_ngram_set_says(order):
    writer = MarkovModel.build(((t, 1.0) for t in CORPUS), MarkovConfig(order=order, min_tokens=1))
    lines = writer.sample(200, np.random.default_rng(order))
    assert lines
    found = Splices(CORPUS, order=order).find(lines)
    assert found == [reference(CORPUS, line, order) for line in lines]
    assert any(splice.count for splice in found)  # a novel line leaves its lines somewhere (at this order or above)


def test_a_line_begun_mid_sentence_is_marked_at_its_first_words():
    order = 2
    writer = MarkovModel.build(((t, 1.0) for t in CORPUS), MarkovConfig(order=order, min_tokens=1))
    lines = writer.generate(20, np.random.default_rng(0), start="weekend").candidates  # no line opens with it
    assert lines
    for line, splice in zip(lines, Splices(CORPUS, order=order).find(lines), strict=True):
        assert splice == reference(CORPUS, line, order)
        assert splice.starts[0] == 0  # its first word opens no line


def test_a_corpus_read_in_batches_holds_the_same_ngrams(monkeypatch):
    import markov.splices

    whole = Splices(CORPUS, order=2)
    monkeypatch.setattr(markov.splices, "_BATCH", 3)  # three lines a regex pass: batches meet inside the corpus
    batched = Splices(CORPUS, order=2)
    assert len(batched) == len(whole)
    texts = ["hey how was your dog ok?", "pizza is always good, thanks", "you should eat, it's good"]
    assert batched.find(texts) == whole.find(texts) == [reference(CORPUS, t, 2) for t in texts]


def test_words_apart_by_any_whitespace_are_placed_where_they_stand():
    plain = "hey how was your weekend was great"
    spaced = "hey\thow  was your\u00a0weekend   was great"
    splices = Splices(CORPUS, order=1)
    one, other = splices.find([plain, spaced])
    assert one.starts == (plain.rindex("was"),) and one.at_end  # (hand-checked in the test above)
    assert other.starts == (spaced.rindex("was"),) and other.at_end  # the same word, where it stands


def test_unknown_words_blank_lines_and_a_bad_order():
    splices = Splices(CORPUS, order=2)
    unknown, blank, spaced = splices.find(["zebras eat pizza", "   ", "  hey how was your weekend ?"])
    assert unknown.starts[0] == 0 and unknown.at_end
    assert splices.find(["zebras eat pizza"]) == [unknown]  # a word first met in a query stays unattested
    assert blank == Splice((), False)
    assert spaced == Splice((), False)  # leading spaces are not words
    assert splices.find([]) == []
    assert len(splices) > 0 and len(Splices([], order=2)) == 0
    with pytest.raises(ValueError, match="order"):
        Splices(CORPUS, order=0)
