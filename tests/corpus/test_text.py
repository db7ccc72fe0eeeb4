"""Word runs (`corpus.text.word_runs`, `holds_run`): the engine's no-parroting rule rests on them."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from corpus.text import holds_run, word_runs, words

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
