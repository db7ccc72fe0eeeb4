"""The replies benchmark's paired comparison and judges (the engine runs themselves are a benchmark, not a test)."""

import numpy as np
import pytest

from benchmarks.bench_replies import paired


def test_a_paired_difference_is_the_mean_over_every_context_with_its_standard_error():
    assert paired([1, 0, 1, 1], [0, 0, 1, 1]) == "+0.250 ± 0.250"  # one context of four moved
    assert paired([0.5, 0.2], [0.5, 0.2]) == "+0.000 ± 0.000"  # the same replies: no difference, no noise
    assert paired([0, 0, 0], [1, 1, 1]) == "-1.000 ± 0.000"
    assert paired([None, None], [1, 0]) == "—"  # nothing to pair: no figure, not a NaN


def test_mean_se_of_one_value_has_no_spread():
    from benchmarks.bench_replies import mean_se

    assert mean_se([0.25]) == (0.25, 0.0)
    assert mean_se([0, 1]) == (0.5, 0.5)
    assert mean_se([None, 0, None, 1]) == (0.5, 0.5)  # a measure with nothing to say of a reply skips it
    assert all(np.isnan(v) for v in mean_se([None]))


def test_the_text_measures_by_hand():
    from benchmarks.bench_replies import measures

    class Judge:  # a person writes lines of 4 words or fewer: enough to see the column follow the judge
        def logits(self, texts):
            return np.array([4.5 - len(t.split()) for t in texts])

    class Topic:  # every text the same direction: topic 1 for all
        def embed(self, texts, keep_end=False):
            return np.ones((len(texts), 4), dtype=np.float32), None

    cases = [(["hi", "Do you speak only English in the class?"], "true")] * 3 + [(["I speak English."], "true")]
    texts = ["do you speak besides english?",  # 2 of 3 content words taken, and a question: a mirror
             "Yes, I speak English at home.",  # 2 of 3 taken, no question
             "do you speak only english at home?",  # a run of 4 ("do you speak only") and a mirror
             "do you speak french?"]  # after no question: no mirror
    m = measures(texts, cases, Judge(), Topic())
    per = m["per_reply"]
    assert per["echo"] == [2 / 3, 2 / 3, 3 / 4, 1 / 2]
    assert per["parrots"] == [0.0, 0.0, 1.0, 0.0] and per["mirrors"] == [1.0, 0.0, 1.0, 0.0]
    assert per["human"] == [0.0, 0.0, 0.0, 1.0] and per["words"] == [5, 6, 7, 4] and per["parses"] is None
    assert np.allclose(per["topic"], 1.0) and m["mirrors"][0] == 0.5
    assert per["asks_back"] == [1.0, 0.0, 1.0, None] and m["asks_back"][0] == 2 / 3  # over the 3 replies to a question
    assert paired(per["asks_back"], [0.0, 0.0, 0.0, 1.0]).startswith("+0.667")  # the None pair left out
    assert per["follows"] == [0.0, 0.0, 0.0, None]  # as near the last line as the rest: not nearer; one line: None


def test_follows_is_whether_a_reply_is_nearer_the_last_line_than_the_lines_before_it():
    from benchmarks.bench_replies import measures

    axes = {"hiking": 0, "movies": 1}

    class Topic:  # a text points along the axis of the subject it names (both: between them)
        def embed(self, texts, keep_end=False):
            out = np.full((len(texts), 3), 1e-3, dtype=np.float32)
            for i, t in enumerate(texts):
                for word, axis in axes.items():
                    out[i, axis] += word in t
            return out, None

    class Judge:
        def logits(self, texts):
            return np.zeros(len(texts))

    cases = [(["do you like hiking?", "i love hiking", "what about movies?"], "true")] * 2
    per = measures(["i love hiking a lot", "movies are my thing"], cases, Judge(), Topic())["per_reply"]
    assert per["follows"] == [0.0, 1.0]


def test_switch_cases_end_on_another_documents_opening(tmp_path):
    from benchmarks.bench_replies import held_out_cases

    dialogues = [[f"d{d} line {i} here." for i in range(5)] for d in range(6)]
    path = tmp_path / "test.txt"
    path.write_text("\n\n".join("\n".join(d) for d in dialogues) + "\n", encoding="utf-8")
    cases = held_out_cases([str(path)], 40, seed=3, context_lines=3, switch=True)
    assert len(cases) == 40 and cases == held_out_cases([str(path)], 40, seed=3, context_lines=3, switch=True)
    for context, true in cases:
        old, new = context[0].split()[0], context[-1].split()[0]
        assert len(context) == 3 and context[1].split()[0] == old != new  # two lines of one, then another's
        assert context[-1] == f"{new} line 0 here." and true == f"{new} line 1 here."  # its opening, then its reply
        i = int(context[1].split()[2])
        assert context[0] == f"{old} line {i - 1} here."  # consecutive lines of the old one


def test_the_grammar_judge_passes_sentences_and_fails_no_reply():
    from benchmarks.bench_replies import grammar_parser

    parses = grammar_parser()
    if parses is None:
        pytest.skip("Link Grammar is not installed (apt install python3-link-grammar link-grammar-dictionaries-en)")
    assert parses("I like it. You do too!") == 1.0  # every sentence links
    assert parses("was your weekend is for right??") == 0.0  # word salad (a reply of the default, issue 18)
    # A turn with no reply has nothing that parses; Link Grammar itself aborts the process on an empty sentence.
    assert parses("") == 0.0 and parses("   ") == 0.0
