"""Word runs (`corpus.text.word_runs`, `holds_run`) and mirrors: the engine's no-parroting and no-mirror rules rest
on them."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from corpus.text import also_spelled, asks, dedupe_key, holds_run, mirrors, sentence_spans, word_runs, words

WORDS = st.lists(st.sampled_from(["do", "you", "like", "dogs", "cats", "i"]), max_size=8)


def test_word_runs_and_holds_run_by_hand():
    assert word_runs(["do", "you", "like", "dogs"], 3) == {("do", "you", "like"), ("you", "like", "dogs")}
    assert word_runs(["do", "you"], 3) == set() and word_runs(["do", "you"], 0) == set()
    runs = word_runs(words("do you like dogs?"), 2)
    assert holds_run(words("why do you like cats"), runs) and not holds_run(words("do youth like"), runs)
    assert not holds_run(words("you do"), runs) and not holds_run(words("do you"), set())


@given(WORDS, WORDS, st.integers(1, 4))
def test_holds_run_is_a_shared_slice_of_n_words(line, candidate, n):
    shared = any(candidate[i : i + n] == line[j : j + n] for i in range(len(candidate) - n + 1)
                 for j in range(len(line) - n + 1))
    assert holds_run(candidate, word_runs(line, n)) == shared


def test_runs_read_contractions_spelled_out():
    runs = word_runs(words("what is your favorite movie?"), 4)
    assert holds_run(words("So what's your favorite movie?"), runs)
    assert word_runs(words("I'm sure they won't go"), 3) == word_runs(words("i am sure they will not go"), 3)
    assert holds_run(words("you can't do that"), word_runs(words("i can not do that today"), 4))
    assert not holds_run(words("is your favourite film?"), runs)  # another word is another run ...
    assert holds_run(words("is your favourite movie?"), runs)  # ... but not another spelling of one
    assert word_runs(["o'clock", "'s"], 1) == {("o'clock",), ("'s",)}  # no suffix to split: as written


def test_a_typographic_apostrophe_is_an_apostrophe():
    assert words("I’m sure it’s Bob’s") == ["i'm", "sure", "it's", "bob's"] == words("I'm sure it's Bob's")
    assert holds_run(words("So what’s your favorite movie?"), word_runs(words("what is your favorite movie?"), 4))


def test_a_contraction_typed_without_its_apostrophe_reads_as_one():
    assert words("i dont think thats right, im sure") == ["i", "don't", "think", "that's", "right", "i'm", "sure"]
    assert words("its well were ill") == ["its", "well", "were", "ill"]  # words of their own
    # the user types "dont", the writer (cleaned) says "don't": the text rules see the same words
    assert holds_run(words("I don't think that's a good idea at all"), word_runs(words("i dont think thats a good"), 4))
    assert dedupe_key("i dont think thats right") == dedupe_key("I don't think that's right")


def test_a_mirror_asks_back_with_the_questions_words():
    question = frozenset(words("Do you speak only English in the class?"))

    def mirrored(text: str, share: float = 0.5, asked: frozenset[str] | None = question) -> bool:
        return mirrors(text, words(text), asked, share)

    assert mirrored("do you speak besides english?")  # speak, besides, english: 2 of 3 taken
    assert not mirrored("do you speak besides english?", share=0.7) and not mirrored("x?", share=0)
    assert not mirrored("I speak English.") and not mirrored("what about you?")  # no question; a word of its own
    assert not mirrored("do you speak besides english?", asked=None)  # the line answered asked nothing
    # one sentence that mirrors, in a reply whose other sentences dilute its words
    favorite = frozenset(words("what is your favorite movie?"))
    assert mirrored("Its going great! How about you? What was your favorite movie?", asked=favorite)
    assert not mirrored("I loved Jaws as a kid. What about your sister?", asked=favorite)  # asks, but its own words
    # an answer in the question's words, then a question in its own: no mirror, though half the reply's words are taken
    assert not mirrored("My favorite movie is Jaws. What about you?", asked=favorite)
    assert mirrored("Jaws. What is your favorite movie?", asked=favorite)  # ... but a sentence that re-asks it is one


def test_a_question_typed_without_its_mark_still_asks():
    for line in ("hello?", "What's your dream job", "what’s up", "do you like hiking", "So where are you from",
                 "Nice. what do you do", "Hi! how about you", "does it hurt", "Don't you like it", "....is anyone there",
                 "don’t you like it", "so do you like it",
                 # typed without apostrophes, as chat is
                 "dont you like it", "whats up", "Hey whats up", "hows your day going", "whos your favorite avenger",
                 "isnt it", "why wouldnt we", "who doesnt love bacon", "wheres your favourite city"):
        assert asks(line), line
    for line in ("I am fine", "What a day", "Do it now", "Do you like hiking.", "When I think of it I smile",
                 "How are you! Fine.", "I wonder. How nice!", "", "   ", "so do i", "me too. so am I!", "...", "!!!",
                 "i dont know", "cant wait", "thats cool", "im fine", "whose turn it was, I forget", "so dont i"):
        assert not asks(line), line


def test_sentence_spans_by_hand():
    assert sentence_spans("Oh nice! What was good? Pizza.") == [
        "Oh nice!", "Oh nice! What was good?", "What was good?", "What was good? Pizza.", "Pizza."]
    assert sentence_spans("  yes.   no way  ") == ["yes.", "no way"]  # runs joined by one space; the last may lack its mark
    assert sentence_spans("one sentence, no break") == [] and sentence_spans("") == []
    assert sentence_spans("a. b. c. d. e.") == [] and len(sentence_spans("a. b. c. d. e.", most=5)) == 14
    assert sentence_spans("3.5 is a number. ok") == ["3.5 is a number.", "ok"]  # a decimal point is no break


@given(st.lists(st.sampled_from(["hi.", "how are you?", "great!", "so", "we went"]), min_size=1, max_size=5))
def test_sentence_spans_are_proper_runs_of_the_text(parts):
    text = " ".join(parts)
    k = 1 + sum(p[-1] in ".!?" for p in parts[:-1])  # sentences: a part ending in a mark breaks before the next
    spans = sentence_spans(text)
    assert len(spans) == (k * (k + 1) // 2 - 1 if 2 <= k <= 4 else 0)  # every run of sentences but the whole
    assert all(span in text and len(span) < len(text) for span in spans)


def test_british_and_american_spellings_meet_in_runs_and_questions():
    # the parrot `make chat` once gave: the user spells British, the writer American
    runs = word_runs(words("what's your favourite food?"), 4)
    assert holds_run(words("What is your favorite food Tristen?"), runs)
    assert holds_run(words("so what's your favourite food"), word_runs(words("What is your favorite food?"), 4))
    assert not holds_run(words("is your favorite drink"), runs)  # a word of its own is still its own
    assert word_runs(["i", "like", "it"], 2) == {("i", "like"), ("like", "it")}  # no variants: as before
    # every combination of spellings in a run: two variant words give four runs
    assert word_runs(["grey", "colour"], 2) == {("grey", "colour"), ("gray", "colour"), ("grey", "color"),
                                                ("gray", "color")}
    asked = also_spelled(words("What's your favourite colour?"))
    assert {"favourite", "favorite", "colour", "color"} <= asked and "gray" not in asked
    assert mirrors("what is your favorite color?", words("what is your favorite color?"), asked, 0.5)
    # the table: two disjoint sides, each word mapping back to itself
    from corpus.text import _BRITISH_AMERICAN, _OTHER_SPELLING

    assert not set(_BRITISH_AMERICAN) & set(_BRITISH_AMERICAN.values())
    assert len(set(_BRITISH_AMERICAN.values())) == len(_BRITISH_AMERICAN)
    assert all(_OTHER_SPELLING[_OTHER_SPELLING[w]] == w for w in _OTHER_SPELLING)
    # a run of many such words gets its other spelling whole, not 2^k mixes (echo_run has no upper bound)
    line = "grey colour favourite flavour neighbour theatre".split()
    runs = word_runs(line, 6)
    assert runs == {tuple(line), ("gray", "color", "favorite", "flavor", "neighbor", "theater")}
    assert not mirrors("what is your favorite color?", words("what is your favorite color?"),
                       frozenset(words("What's your favourite colour?")), 0.5)  # without it, the mirror slipped by
