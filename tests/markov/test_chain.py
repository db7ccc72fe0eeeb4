"""The Markov writer: reproducibility, persistence, fidelity to the corpus, and clear errors."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from markov import MarkovConfig, MarkovModel, UnknownStartError, detokenize, tokenize
from markov.__main__ import main as cli
from markov.tokenize import tokenize_many

CHAT = [
    "hey, how are you?",
    "I'm good, thanks! and you?",
    "not bad. just got back from work",
    "how was work?",
    "work was long, but fine 😅",
    "haha I know that feeling",
    "are you going to the party tonight?",
    "maybe, I don't know yet",
    "you should come, it'll be fun!",
    "ok ok, I'll think about it",
    "how are things at home?",
    "things are good at home, thanks",
    "I don't know what to eat tonight",
    "you should eat pizza, it's always good",
    "pizza is always good, but I had it yesterday",
]


@pytest.fixture(scope="module")
def model() -> MarkovModel:
    return MarkovModel.build(((t, 1.0) for t in CHAT), MarkovConfig(order=2, min_tokens=1))


def padded_ngrams(lines: list[str], k: int) -> set[tuple[str, ...]]:
    """All (k+1)-grams of the BEGIN-padded, END-terminated token streams."""
    grams = set()
    for line in lines:
        seq = ["<s>"] * k + tokenize(line) + ["</s>"]
        grams.update(tuple(seq[i : i + k + 1]) for i in range(len(seq) - k))
    return grams


def test_same_seed_same_candidates(model):
    a = model.sample(200, np.random.default_rng(7))
    b = model.sample(200, np.random.default_rng(7))
    c = model.sample(200, np.random.default_rng(8))
    assert a == b
    assert a != c


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_every_ngram_of_every_candidate_is_in_the_corpus(order):
    corpus = CHAT + ["how are you doing today?", "are you doing anything fun today?", "I am doing fine today, thanks"]
    m = MarkovModel.build(((t, 1.0) for t in corpus), MarkovConfig(order=order, min_tokens=1, reject_verbatim=False))
    allowed = padded_ngrams(corpus, order)
    candidates = m.sample(500, np.random.default_rng(order))
    assert len(candidates) == 500
    for text in candidates:
        seq = ["<s>"] * order + tokenize(text) + ["</s>"]
        for i in range(len(seq) - order):
            assert tuple(seq[i : i + order + 1]) in allowed, (text, seq[i : i + order + 1])


def test_save_load_gives_equal_model_and_same_samples(model, tmp_path):
    model.save(tmp_path / "m")
    loaded = MarkovModel.load(tmp_path / "m")
    assert loaded == model
    assert loaded.stats == model.stats
    assert loaded.sample(300, np.random.default_rng(3)) == model.sample(300, np.random.default_rng(3))
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "tables.npz", "vocab.txt"]


def test_save_replaces_atomically_and_a_failed_save_keeps_the_old_model(model, tmp_path, monkeypatch):
    target = tmp_path / "m"
    model.save(target)
    other = MarkovModel.build([("a completely different corpus", 1.0)], MarkovConfig(min_tokens=1, reject_verbatim=False))

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        other.save(target)
    monkeypatch.undo()
    assert MarkovModel.load(target) == model
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary directory left behind
    other.save(target)
    assert MarkovModel.load(target) == other


def test_next_token_frequencies_match_counts():
    # From "the", the next token is cat 3 times, dog 2 times, end 1 time (out of 6).
    corpus = ["the cat", "the cat", "the cat", "the dog", "the dog", "the"]
    m = MarkovModel.build(((t, 1.0) for t in corpus), MarkovConfig(order=1, min_tokens=1, reject_verbatim=False))
    gen = m.generate(6000, np.random.default_rng(0), start="the")
    counts = Counter(gen.candidates)
    observed = [counts["the cat"], counts["the dog"], counts["the"]]
    assert sum(observed) == 6000
    result = chisquare(observed, f_exp=[3000, 2000, 1000])
    assert result.pvalue > 1e-3, (observed, result)


def test_weights_shift_the_distribution():
    corpus = [("the cat", 1.0), ("the dog", 1.0)]
    plain = MarkovModel.build(corpus, MarkovConfig(order=1, min_tokens=1, reject_verbatim=False))
    weighted = MarkovModel.build([("the cat", 1.0), ("the dog", 9.0)], MarkovConfig(order=1, min_tokens=1, reject_verbatim=False))
    share = {}
    for name, m in [("plain", plain), ("weighted", weighted)]:
        c = Counter(m.sample(4000, np.random.default_rng(1), start="the"))
        share[name] = c["the dog"] / 4000
    assert abs(share["plain"] - 0.5) < 0.05
    assert abs(share["weighted"] - 0.9) < 0.03
    # the mean log-prob per token reflects the weights too: "the dog" is the likelier walk
    gen = weighted.generate(200, np.random.default_rng(2), start="the")
    lp = {text: p for text, p in zip(gen.candidates, gen.logprob, strict=True)}
    assert lp["the dog"] > lp["the cat"]
    assert lp["the dog"] == pytest.approx(np.log(0.9) / 2, abs=1e-5)  # dog (0.9), then END (1.0): mean over 2


def test_verbatim_corpus_lines_are_rejected(model):
    gen = model.generate(2000, np.random.default_rng(5))
    normalized = {detokenize(tokenize(t)) for t in CHAT}
    assert not normalized & set(gen.candidates)
    assert gen.report["verbatim"] > 0
    assert model.is_novel(["hey, how are you?", "hey, how are things at home?"]).tolist() == [False, True]


def test_overlap_ratio_rejects_long_copied_runs():
    cfg = MarkovConfig(order=1, min_tokens=1, max_overlap_ratio=0.5, overlap_ngram=3)
    m = MarkovModel.build(((t, 1.0) for t in CHAT), cfg)
    gen = m.generate(500, np.random.default_rng(9), max_rounds=30)
    assert gen.report["overlap"] > 0
    corpus_grams = set()
    for line in CHAT:
        toks = tokenize(line)
        corpus_grams.update(tuple(toks[i : i + 3]) for i in range(len(toks) - 2))
    for text in gen.candidates:
        toks = tokenize(text)
        hits = [tuple(toks[i : i + 3]) in corpus_grams for i in range(len(toks) - 2)]
        best = run = 0
        for h in hits:
            run = run + 1 if h else 0
            best = max(best, run)
        covered = best + 2 if best else 0
        assert covered <= 0.5 * len(toks), text


def test_min_and_max_tokens_bound_the_candidates(model):
    gen = model.generate(300, np.random.default_rng(4), min_tokens=4, max_tokens=8)
    assert gen.candidates
    lengths = [len(tokenize(t)) for t in gen.candidates]
    assert min(lengths) >= 4 and max(lengths) <= 8
    assert gen.n_tokens.tolist() == lengths


def test_start_words_begin_every_candidate(model):
    out = model.sample(50, np.random.default_rng(0), start="how are")
    assert out and all(t.startswith("how are") for t in out)
    # mid-line start words work too: "always" never opens a line
    out = model.sample(20, np.random.default_rng(0), start="always")
    assert all(t.startswith("always") for t in out)
    # case is forgiven when only another casing is known
    assert all(t.startswith("pizza") for t in model.sample(5, np.random.default_rng(0), start="Pizza"))


def test_unknown_start_word_is_a_clear_error(model):
    with pytest.raises(UnknownStartError, match="start word 'zork' is not in the model's vocabulary"):
        model.sample(5, np.random.default_rng(0), start="zork")
    gen = model.generate(5, np.random.default_rng(0), start="zork")
    assert gen.candidates == [] and "zork" in gen.reason
    gen = model.generate(5, np.random.default_rng(0), start="pizza home")  # both known, never in sequence
    assert gen.candidates == [] and "never occur in this order" in gen.reason
    assert model.knows("pizza") and not model.knows("zork")


@pytest.mark.parametrize("order", [1, 2, 3])
def test_lines_written_around_a_word_name_it_and_are_whole_lines_of_corpus_ngrams(order):
    corpus = CHAT + ["how are you doing today?", "are you doing anything fun today?", "I am doing fine today, thanks"]
    m = MarkovModel.build(((t, 1.0) for t in corpus), MarkovConfig(order=order, min_tokens=1, reject_verbatim=False))
    allowed = padded_ngrams(corpus, order)
    gen = m.generate(300, np.random.default_rng(order), around=["home", "today"])
    assert len(gen.candidates) == 300 and gen.reason is None
    named = Counter()
    for text in gen.candidates:
        toks = tokenize(text)
        assert " home" in toks or " today" in toks, text
        named.update({" home", " today"} & set(toks))
        seq = ["<s>"] * order + toks + ["</s>"]  # BEGIN to END: a whole line, not a fragment
        for i in range(len(seq) - order):
            assert tuple(seq[i : i + order + 1]) in allowed, (text, seq[i : i + order + 1])
    assert named[" home"] > 60 and named[" today"] > 60  # each word drawn about half the time
    # "home" never opens a line, so every line naming it was written backward to a line's start as well
    assert any(not t.startswith("home") and "home" in t for t in gen.candidates)


def test_unbias_above_thins_long_lines_around_a_word_by_k_over_their_length():
    # "cat" occurs once in a short line and once in a long one, so lines around it are drawn half and half;
    # keeping each with probability min(1, k / tokens) leaves the long line k / its tokens as often as the short.
    short, long_ = "the cat", "my old cat likes to sleep all day long in the sun"
    m = MarkovModel.build(((t, 1.0) for t in [short, long_]), MarkovConfig(order=3, min_tokens=1, reject_verbatim=False))
    plain = m.generate(2000, np.random.default_rng(0), around=["cat"])
    assert set(plain.candidates) == {short, long_} and 0.8 < plain.candidates.count(long_) / plain.candidates.count(short) < 1.25
    assert "thinned" not in plain.report
    n_long = int(plain.n_tokens[plain.candidates.index(long_)])
    thinned = m.generate(2000, np.random.default_rng(0), around=["cat"], unbias_above=4)
    assert len(thinned.candidates) == 2000 and thinned.reason is None  # the rounds make up what was thinned
    ratio = thinned.candidates.count(long_) / thinned.candidates.count(short)
    assert abs(ratio - 4 / n_long) < 0.06, (ratio, 4 / n_long)
    assert thinned.report["thinned"] > 800 and thinned.report["unfinished"] == 0
    assert m.generate(50, np.random.default_rng(0), around=["cat"], unbias_above=4).candidates == \
        m.generate(50, np.random.default_rng(0), around=["cat"], unbias_above=4).candidates
    with pytest.raises(ValueError, match="unbias_above must be >= 0"):
        m.generate(5, np.random.default_rng(0), around=["cat"], unbias_above=-1)


def test_writing_around_words_is_reproducible_saved_and_reports_what_it_cannot(model, tmp_path):
    a = model.generate(40, np.random.default_rng(5), around=["pizza"])
    assert a.candidates == model.generate(40, np.random.default_rng(5), around=["pizza"]).candidates
    assert all("pizza" in t.casefold() for t in a.candidates)
    model.save(tmp_path / "m")
    loaded = MarkovModel.load(tmp_path / "m")
    assert loaded == model and loaded.backward is not None
    assert loaded.generate(40, np.random.default_rng(5), around=["pizza"]).candidates == a.candidates
    # unknown words are skipped; none known is an empty result with the reason, not an error
    assert all("pizza" in t.casefold() for t in model.generate(10, np.random.default_rng(0), around=["zork", "pizza"]).candidates)
    gen = model.generate(5, np.random.default_rng(0), around=["zork"])
    assert gen.candidates == [] and "zork" in gen.reason
    with pytest.raises(ValueError, match="start or around"):
        model.generate(5, np.random.default_rng(0), start="how", around=["pizza"])
    # a directory written before the backward table (format 3) loads, plain and start words work, around says why not
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    meta["riposte"]["format_version"] = 3
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    with np.load(tmp_path / "m" / "tables.npz") as npz:
        np.savez(tmp_path / "m" / "tables.npz", **{k: npz[k] for k in npz.files if not k.startswith("backward_")})
    old = MarkovModel.load(tmp_path / "m")
    assert old.backward is None and old.sample(5, np.random.default_rng(0))
    gen = old.generate(5, np.random.default_rng(0), around=["pizza"])
    assert gen.candidates == [] and "rebuild" in gen.reason


def test_specific_words_are_the_rarest_known_ones(model):
    # "pizza" occurs twice in CHAT, "good" four times, "home" twice, "zork" never; ties keep the order given
    assert model.specific_words(["good", "pizza", "zork", "home"], 2) == ["pizza", "home"]
    assert model.specific_words(["good", "pizza", "zork"], 5) == ["pizza", "good"]
    assert model.specific_words(["yesterday"], 3) == []  # seen once: below min_count 2


def test_empty_corpus_and_bad_weights_are_clear_errors():
    with pytest.raises(ValueError, match="corpus is empty"):
        MarkovModel.build([])
    with pytest.raises(ValueError, match="corpus is empty"):
        MarkovModel.build([("   ", 1.0), ("text", 0.0)])
    with pytest.raises(ValueError, match="line 2: weight"):
        MarkovModel.build([("ok", 1.0), ("bad", -1.0)])
    with pytest.raises(ValueError, match="order must be between 1 and 4"):
        MarkovConfig(order=5)


def test_corrupt_model_dirs_are_clear_errors(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        MarkovModel.load(tmp_path / "nowhere")
    model.save(tmp_path / "m")
    tables = tmp_path / "m" / "tables.npz"
    tables.write_bytes(tables.read_bytes()[:200])
    with pytest.raises(ValueError, match="corrupt"):
        MarkovModel.load(tmp_path / "m")
    model.save(tmp_path / "m")
    cfg = tmp_path / "m" / "config.json"
    meta = json.loads(cfg.read_text())
    meta["riposte"]["format_version"] = 99
    cfg.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format version 99"):
        MarkovModel.load(tmp_path / "m")
    cfg.write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        MarkovModel.load(tmp_path / "m")


@pytest.mark.parametrize(
    "text",
    [
        "hey, you?",
        "I don't know... really?!",
        "lol 😂😂 ok",
        'he said "no" (twice)',
        "it's 3.5% of U.S. sales",
        "check https://example.com/a?b=1, it's good",
        "@sam #tbt — the best :)",
        "café naïve résumé",
        "wait... what?!?",
    ],
)
def test_detokenization_round_trips_chat_text(text):
    assert detokenize(tokenize(text)) == text


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_tokenize_loses_nothing_but_extra_whitespace(text):
    assert detokenize(tokenize(text)) == " ".join(text.split())


def test_cli_build_and_sample(tmp_path, capsys):
    src = tmp_path / "lines.txt"
    src.write_text("\n".join(CHAT) + "\n3\tpizza is great, you should try it\n", encoding="utf-8")
    cli(["build", "--input", str(src), "--out", str(tmp_path / "m"), "--order", "2", "--min-tokens", "1"])
    m = MarkovModel.load(tmp_path / "m")
    assert m.stats["lines"] == len(CHAT) + 1
    assert m.replies is None  # plain lines do not say who answered whom
    assert "reply words: none" in capsys.readouterr().err
    cli(["sample", str(tmp_path / "m"), "-n", "5", "--seed", "1", "--start", "pizza"])
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 5 and all(line.startswith("pizza") for line in out)
    with pytest.raises(SystemExit, match="not in the model's vocabulary"):
        cli(["sample", str(tmp_path / "m"), "--start", "zork"])
    cli(["sample", str(tmp_path / "m"), "-n", "5", "--seed", "1", "--around", "home", "--around", "zork"])
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 5 and all("home" in line for line in out)
    with pytest.raises(SystemExit, match="none of the words"):
        cli(["sample", str(tmp_path / "m"), "--around", "zork"])
    with pytest.raises(SystemExit, match="start or around"):
        cli(["sample", str(tmp_path / "m"), "--start", "how", "--around", "home"])
    cli(["sample", str(tmp_path / "m"), "-n", "5", "--seed", "1", "--around", "home", "--unbias-above", "0", "-v"])
    assert "thinned" not in capsys.readouterr().err  # as drawn; the default (2) thins, as a turn does
    cli(["sample", str(tmp_path / "m"), "-n", "5", "--seed", "1", "--around", "home", "-v"])
    assert "'thinned'" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="unbias-above must be >= 0"):
        cli(["sample", str(tmp_path / "m"), "--around", "home", "--unbias-above", "-1"])
    with pytest.raises(SystemExit, match="neither `chitchat` nor a readable file"):
        cli(["build", "--input", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "x")])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=40).filter(lambda t: t.strip()), min_size=1, max_size=8))
def test_bulk_tokenizer_equals_line_by_line(texts):
    index: dict[str, int] = {}
    ids, lengths = tokenize_many(texts, index)
    pieces = {i: p for p, i in index.items()}
    expected = [tokenize(t.replace("\n", " ")) for t in texts]
    assert lengths.tolist() == [len(e) for e in expected]
    assert [pieces[i] for i in ids.tolist()] == [p for e in expected for p in e]


def test_context_words_are_those_of_the_newest_line_the_model_knows_words_of(model):
    # "pizza" and "home" occur twice in CHAT, "good" four times, "zork" never: the newest line's known words, rarest
    # first, never pooled with an older line's
    assert model.context_words(["home is good", "pizza is good"], 3) == ["pizza", "good"]
    assert model.context_words(["home is good", "zork?"], 3) == ["home", "good"]  # the newest knows none: the one before
    assert model.context_words(["zork", "zork zork"], 3) == [] and model.context_words([], 3) == []
