"""The engine: funnel, filters, prior and first-stage order, picking, seeds, personas, budget (a fake clock), scheduling."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from corpus.text import LineRules, holds_run, word_runs
from markov.personas import load_personas
from server.engine import (
    PLAIN_RETRY_LINES,
    Candidates,
    Engine,
    EngineConfig,
    TextFilter,
    Turn,
    TurnPlan,
    UnknownPersonaError,
    as_turns,
    dedupe_key,
    overlap,
    within_length,
    words,
)
from server.models import load_engine
from tests.server.conftest import ClockedScorer, FakeClock, OverlapScorer, RudeScorer

HISTORY = ["hello there", "hi, how are you?", "do you like dogs?"]


def test_reply_is_the_argmax_of_the_scorer_when_everything_is_scored(engine):
    result = engine.reply(HISTORY, seed=3, budget_ms=5000)
    s = result.stats
    assert s["generated"] >= s["unique"] >= s["filtered"] >= s["scored"] > 0
    assert s["scored"] == s["filtered"] and not s["timed_out"]
    scorer = engine.scorer
    best = max([result.reply] + [a.text for a in result.alternatives], key=lambda t: scorer.one(HISTORY, t))
    assert result.score == pytest.approx(scorer.one(HISTORY, best))
    assert result.score == pytest.approx(scorer.one(HISTORY, result.reply))
    assert all(a.score <= result.score for a in result.alternatives)
    assert [a.score for a in result.alternatives] == sorted((a.score for a in result.alternatives), reverse=True)
    assert len(result.alternatives) == 5


def test_same_seed_same_reply_and_sampling_varies_with_seed(engine):
    a = engine.reply(HISTORY, seed=7, top_k=10, temperature=5.0)
    b = engine.reply(HISTORY, seed=7, top_k=10, temperature=5.0)
    assert (a.reply, a.stats["filtered"]) == (b.reply, b.stats["filtered"])
    replies = {engine.reply(HISTORY, seed=s, top_k=10, temperature=50.0).reply for s in range(12)}
    assert len(replies) > 1


def test_negative_and_huge_seeds_are_accepted(engine):
    assert engine.reply(HISTORY, seed=-5).reply
    assert engine.reply(HISTORY, seed=2**80).reply


def test_never_echoes_the_user_or_repeats_its_own_last_lines(tiny_markov):
    eng = Engine({"default": tiny_markov}, OverlapScorer(), EngineConfig(n_candidates=512))
    try:
        first = eng.reply(HISTORY, seed=1)
        # The scorer loves the user's exact words, so without the rule the echo would win.
        echo = first.reply
        history = [Turn("user", "hi"), Turn("bot", echo), Turn("user", "hmm"), Turn("user", "do you like dogs?")]
        second = eng.reply(history, seed=1, n_alternatives=1000)
        said = {dedupe_key(t) for t in [second.reply] + [a.text for a in second.alternatives]}
        assert dedupe_key(echo) not in said
        assert dedupe_key("do you like dogs?") not in said
        assert second.reply is not None
    finally:
        eng.close()


def test_text_filter_refuses_runs_of_the_users_last_line_of_its_own_lines_and_of_the_newest():
    # A group chat: Ann speaks now, so her line is her own (the bot's are a bot's own in every chat).
    turns = [Turn("user", "my brother has two big dogs"), Turn("Ann", "I love my two cats so much"),
             Turn("user", "they bark loudly"), Turn("user", "that is a long story for later"),
             Turn("user", "Do you have any pets?")]
    texts = ["Do you have any pets? What would you do?",  # the question it answers, re-said
             "what do you have any pets?",  # a run of 5 of it inside
             "I love my two dogs too",  # a run of 4 of its own line, older than the newest 3
             "yes, that is a long story",  # ... of one of the newest 3 lines
             "yes, I have two cats",
             "you have any idea?",  # 3 words of the question
             "my brother has two big dogs too",  # a line of the user's older than the newest 3
             "that is a long story for later",  # a whole line of the newest 3, not the last: no echo, a run
             "they bark loudly"]  # ... shorter than a run

    def kept(speaker: str | None = "Ann", **config) -> list[str]:
        candidates = Candidates(texts, [words(t) for t in texts], np.zeros(len(texts)))
        # Mirrors off: "you have any idea?" is one (the next test), and these test runs alone (any number of
        # sentences too: the first text has two).
        return TextFilter(EngineConfig(**{"mirror_share": 0, "max_sentences": 0, **config})).apply(
            candidates, turns, speaker).texts

    assert kept() == [texts[4], texts[5], texts[6], texts[8]]  # the default: runs of 4
    assert kept(echo_run=3) == [texts[4], texts[6]]
    assert kept(repeat_window=0) == texts[2:]  # only the line it answers is checked
    assert kept(echo_run=0) == texts  # whole-line echoes and repeats only, and none of these is one
    # Spoken by another, Ann's line is someone else's, and older than the newest 3.
    assert kept(speaker=None) == [texts[2], texts[4], texts[5], texts[6], texts[8]]
    with pytest.raises(ValueError, match="echo_run must be >= 0"):
        EngineConfig(echo_run=-1)


def test_text_filter_refuses_a_question_made_of_the_users_question():
    texts = ["do you speak besides english?",  # speak, besides, english: 2 of its 3 content words are the user's
             "Yes, I speak English at home.",  # an answer made of the question's words is no mirror
             "what about you?",  # a question with a word of its own
             "where do you live?",
             "is english hard?",  # english, hard: half
             "English?"]
    candidates = Candidates(texts, [words(t) for t in texts], np.zeros(len(texts)))

    def kept(turns: list[Turn], **config) -> list[str]:
        return TextFilter(EngineConfig(**config)).apply(candidates, turns).texts

    asked = [Turn("user", "Do you speak only English in the class?")]
    assert kept(asked) == [texts[1], texts[2], texts[3]]
    assert kept(asked, mirror_share=0.6) == [texts[1], texts[2], texts[3], texts[4]]
    assert kept(asked, mirror_share=0) == texts
    assert kept([Turn("user", "I speak only English in the class.")]) == texts  # no question, no mirror
    # The user's question is the one that counts: the bot's own, after it, is not answered.
    assert kept([*asked, Turn("bot", "do you speak english?")]) == [texts[1], texts[2], texts[3]]
    assert kept([Turn("bot", "do you speak english?"), Turn("user", "a little")]) == texts
    for share in (-0.1, 1.5):
        with pytest.raises(ValueError, match="mirror_share must be within"):
            EngineConfig(mirror_share=share)


def test_a_question_spelled_british_is_not_parroted_or_mirrored_in_american():
    # The first replies of `make chat` once answered "what's your favourite food?" with "What is your favorite food
    # Tristen?": one letter let it past both rules.
    texts = ["Pizza is your favorite food, I bet.",  # parrots 4 words, spelled American, and asks nothing
             "And your favorite?",  # a mirror (no run of 4): its one content word is the question's, spelled American
             "Pizza for sure, and you?",
             "My favorite food is pizza."]  # answers in the question's words, asks nothing: no mirror
    candidates = Candidates(texts, [words(t) for t in texts], np.zeros(len(texts)))
    for question in ("what's your favourite food?", "What's your favorite food?"):
        assert TextFilter(EngineConfig()).apply(candidates, [Turn("user", question)]).texts == texts[2:]
    # each rule alone: a parrot that does not ask, a mirror too short to hold a run
    assert TextFilter(EngineConfig(mirror_share=0)).apply(
        candidates, [Turn("user", "what's your favourite food?")]).texts == texts[1:]
    assert TextFilter(EngineConfig(echo_run=0)).apply(
        candidates, [Turn("user", "what's your favourite food?")]).texts == [texts[0], *texts[2:]]
    # the other way round: the user spells American, the writer's corpus British
    british = Candidates(["Pizza is your favourite food, I bet."], [words("Pizza is your favourite food, I bet.")],
                         np.zeros(1))
    assert TextFilter(EngineConfig()).apply(british, [Turn("user", "what's your favorite food?")]).texts == []


def test_never_parrots_a_run_of_the_users_line_or_of_its_own(tiny_markov):
    history = [Turn("user", "hi"), Turn("bot", "i really love old movies."), Turn("user", "why do you like dogs?")]
    runs = word_runs(words("why do you like dogs?"), 3) | word_runs(words("i really love old movies."), 3)

    def parrots(text: str) -> bool:
        return holds_run(words(text), runs)

    replies = {}
    for run in (0, 3):
        eng = Engine({"default": tiny_markov}, OverlapScorer(), EngineConfig(n_candidates=512, echo_run=run))
        try:
            replies[run] = eng.reply(history, seed=1, budget_ms=5000, n_alternatives=1000)
        finally:
            eng.close()
    # The scorer loves the user's words, so without the rule lines re-saying the question are among its best few.
    best = [replies[0].reply] + [a.text for a in replies[0].alternatives]
    assert sum(map(parrots, best[:10])) >= 2
    said = [replies[3].reply] + [a.text for a in replies[3].alternatives]
    assert replies[3].reply and len(said) > 10 and not any(parrots(t) for t in said)


def test_text_filter_rules():
    f = TextFilter(EngineConfig(min_words=2, max_words=6, blocklist_words=("Pizza",), blocklist_regexes=(r"\bsun\w+",)))
    assert f("see https://example.com/x now please") == "see now please"
    assert f("go to www.spam.biz today") == "go to today"
    assert f("hello") is None  # too short
    assert f("one two three four five six seven") is None  # too long
    assert f("I love PIZZA a lot") is None
    assert f("pizzas are fine") == "pizzas are fine"  # whole words only
    assert f("see you on sundays") is None
    assert f("see you on monday") == "see you on monday"
    keep_urls = TextFilter(EngineConfig(remove_urls=False))
    assert keep_urls("see https://example.com") == "see https://example.com"
    one = TextFilter(EngineConfig(max_sentences=1))
    assert one("Oh nice! What was good?") is None
    assert one("Oh nice, what was good?  ") == "Oh nice, what was good?"
    assert one("It costs 3.50 dollars.") == "It costs 3.50 dollars."  # a point inside a number ends no sentence
    assert TextFilter(EngineConfig(max_sentences=2))("Oh nice! What was good?") == "Oh nice! What was good?"
    with pytest.raises(ValueError, match="max_sentences"):
        EngineConfig(max_sentences=-1)
    # what an index keeps of the rules it was built with: the line rules alone, as JSON values
    assert EngineConfig(max_sentences=2, blocklist_words=("a",)).record() == {
        **LineRules().record(), "max_sentences": 2, "blocklist_words": ["a"]}
    assert json.loads(json.dumps(LineRules().record())) == LineRules().record()


def test_blocklist_and_length_filters_apply_to_replies(tiny_markov):
    eng = Engine({"default": tiny_markov}, OverlapScorer(), EngineConfig(
        n_candidates=512, blocklist_words=("dogs",), blocklist_regexes=(r"\?$",), max_words=5))
    try:
        r = eng.reply(HISTORY, seed=2, n_alternatives=1000)
        texts = [r.reply] + [a.text for a in r.alternatives]
        assert texts and all("dogs" not in t and not t.endswith("?") and len(t.split()) <= 5 for t in texts)
        assert r.stats["filtered"] < r.stats["unique"]
    finally:
        eng.close()


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="regex"):
        EngineConfig(blocklist_regexes=("(",))
    with pytest.raises(ValueError, match="temperature"):
        EngineConfig(temperature=0)


def test_dedupe_and_overlap_helpers():
    assert dedupe_key("Hi there!") == dedupe_key("hi   THERE") == "hi there"
    assert overlap(["i", "like", "dogs"], frozenset({"dogs"})) == pytest.approx(0.5)
    assert overlap(["the", "a"], frozenset({"the"})) == 0.0  # stopwords only: no evidence either way


def test_as_turns_alternates_bare_strings_ending_with_the_user():
    turns = as_turns(["a", "b", "c"])
    assert [t.speaker for t in turns] == ["user", "bot", "user"]
    assert as_turns([{"speaker": "bot", "text": "x"}]) == [Turn("bot", "x")]


def test_unknown_persona_is_a_clear_error(engine):
    with pytest.raises(UnknownPersonaError, match="zork"):
        engine.reply(HISTORY, persona="zork")


def test_without_a_scorer_the_reply_is_the_best_by_prior(tiny_markov):
    eng = Engine({"default": tiny_markov}, None, EngineConfig(n_candidates=256))
    r = eng.reply(HISTORY, seed=4)
    assert r.stats["scored"] == 0 and not r.stats["timed_out"] and r.score is None
    assert r.stats["scorer"] == "prior"
    priors = [a.prior for a in r.alternatives]
    assert priors == sorted(priors, reverse=True)


@pytest.mark.realtime
def test_a_slow_scorer_is_cut_at_the_budget_and_scores_the_best_prior_first(tiny_markov):
    # 100 candidates/s: at most 49 fit even the larger budget, far fewer than the hundreds generated. The budgets
    # leave scoring at least 40% of themselves (70 ms and more) however slow generation is, so some always get
    # scored; a 60 ms budget left a busy machine nothing.
    scorer = OverlapScorer(delay_per_candidate=0.01)
    eng = Engine({"default": tiny_markov}, scorer, EngineConfig(n_candidates=512))
    try:
        for budget in (200, 500):
            start = time.monotonic()
            r = eng.reply(HISTORY, seed=5, budget_ms=budget, n_alternatives=1000)
            elapsed = (time.monotonic() - start) * 1000
            assert elapsed <= budget + 50, (budget, elapsed)
            assert 0 < r.stats["scored"] < r.stats["filtered"], r.stats
            scored = [a for a in r.alternatives if a.score is not None]
            unscored = [a for a in r.alternatives if a.score is None]
            # Scoring follows the prior: every scored candidate beats every unscored one by prior.
            assert unscored and min(a.prior for a in scored) >= max(a.prior for a in unscored)
    finally:
        eng.close()


@pytest.mark.realtime
def test_a_scorer_that_ignores_its_deadline_still_cannot_make_the_reply_late(tiny_markov):
    # A 400 ms budget gives generation 160 ms for its two chunks even on a busy machine, so both engines below
    # see the same candidates; the scorer answers only after 1 s.
    eng = Engine({"default": tiny_markov}, RudeScorer(seconds=1.0), EngineConfig(n_candidates=256))
    try:
        start = time.monotonic()
        r = eng.reply(HISTORY, seed=6, budget_ms=400)
        elapsed = (time.monotonic() - start) * 1000
        assert elapsed <= 400 + 50
        assert r.stats["timed_out"] and r.stats["scored"] == 0 and r.score is None
        best_prior = max([a.prior for a in r.alternatives])
        assert r.reply is not None and all(a.prior <= best_prior for a in r.alternatives)
        no_scorer = Engine({"default": tiny_markov}, None, EngineConfig(n_candidates=256))
        assert r.reply == no_scorer.reply(HISTORY, seed=6, budget_ms=400).reply  # the best by prior
    finally:
        eng.close()


@pytest.mark.realtime
def test_budget_counts_time_spent_before_the_engine_started(engine):
    started = time.monotonic() - 0.5  # the request has already queued for 500 ms of its 600
    r = engine.reply(HISTORY, seed=1, budget_ms=600, started=started)
    assert (time.monotonic() - started) * 1000 <= 650
    assert r.stats["elapsed_ms"] >= 500


# ---------------------------------------------------------------------------------------------------- fake clock


class FakeWriter:
    """A Markov stand-in: distinct lines, each chunk taking `seconds` of a fake clock."""

    def __init__(self, clock: FakeClock, seconds: float):
        self.clock, self.seconds, self.made = clock, seconds, 0

    def generate(self, n, rng, start=None):
        self.clock.advance(self.seconds)
        texts = [f"line number {self.made + i} about dogs" for i in range(n)]
        logprob = -np.arange(self.made, self.made + n, dtype=np.float32) / 1e4  # earlier lines are likelier
        self.made += n
        return SimpleNamespace(candidates=texts, logprob=logprob, report={}, reason=None)


def test_generation_stops_at_its_deadline_and_the_editor_reads_until_the_scoring_deadline():
    clock = FakeClock()
    writer = FakeWriter(clock, seconds=1 / 16)  # a chunk of 128 candidates takes 62.5 ms
    scorer = ClockedScorer(clock, per_candidate=1 / 128)
    config = EngineConfig(n_candidates=4096, generation_share=0.25, filter_share=0.5, finish_margin_ms=0,
                          scoring_round_ms=125, generation_chunk=128)
    eng = Engine({"default": writer}, scorer, config, clock=clock)
    try:
        r = eng.reply(["do you like dogs?"], budget_ms=1000, seed=1, n_alternatives=1000)
        # Generation passes its 250 ms deadline after exactly 4 chunks; filtering takes no fake time; the editor
        # then has 1000 - 250 = 750 ms at 1/128 s a candidate: exactly 96 candidates, in rounds of 125 ms.
        assert r.stats["generated"] == 512 and r.stats["filtered"] == 512
        assert r.stats["scored"] == 96 and not r.stats["timed_out"]
        assert clock() == 1024.0 + 1.0 and r.stats["elapsed_ms"] == 1000.0
        assert r.stats["stage_ms"] == {"queued": 0.0, "generate": 250.0, "filter": 0.0, "editor": 750.0,
                                       "editor_wait": 0.0}  # the scorer was idle: its first round began at once
        assert r.stats["editor_rounds"] == 3  # 96 read in slices of 32
        # The editor read the best by prior first.
        by_prior = sorted([r.reply, *(a.text for a in r.alternatives)], key=lambda t: int(t.split()[2]))
        assert scorer.read == by_prior[:96]
    finally:
        eng.close()


def test_generation_yields_its_thread_to_turns_waiting_for_one_once_it_has_a_chunk():
    clock = FakeClock()
    eng = Engine({"default": FakeWriter(clock, seconds=0.0)}, None, EngineConfig(n_candidates=1024), clock=clock)
    assert eng.reply(["hi"], seed=1).stats["generated"] == 1024  # nobody waiting: all of them
    eng._waiting_for_cpu.add(0)  # another turn queued for a thread
    r = eng.reply(["hi"], seed=1)
    assert r.stats["generated"] == 128 and r.stats["yielded"]
    assert eng.reply(["hi"], seed=1, budget_ms=math.inf).stats["generated"] == 1024  # no deadline, nothing to save


def test_a_turn_that_queued_past_its_scoring_deadline_is_ranked_by_prior_without_reading():
    clock = FakeClock()
    scorer = ClockedScorer(clock, per_candidate=1 / 128)
    eng = Engine({"default": FakeWriter(clock, seconds=0.0)}, scorer, EngineConfig(n_candidates=256), clock=clock)
    try:
        started = clock() - 0.995  # queued for 995 of its 1000 ms: only the 10 ms margin would be left
        r = eng.reply(["hi"], budget_ms=1000, started=started, seed=1)
        assert r.stats["scored"] == 0 and r.stats["timed_out"] and scorer.calls == 0
        assert r.reply == "line number 0 about dogs"  # the best by prior
    finally:
        eng.close()


def test_filtering_stops_at_its_deadline_keeping_what_passed():
    ticks = iter(range(10**6))
    candidates = Candidates([f"dogs are nice {i}" for i in range(1000)], [["dogs", "are", "nice", str(i)] for i in range(1000)],
                            np.zeros(1000))
    kept = TextFilter(EngineConfig()).apply(candidates, [Turn("user", "hi")], stop_at=3, clock=lambda: next(ticks))
    # The clock is read before every 64th candidate (0, 1, 2, then 3 = the deadline): 4 * 64 - 1 got through.
    assert len(kept) == 255 and kept.texts == candidates.texts[:255]


# ---------------------------------------------------------------------------------------------------- first stage


class SharedWords:
    """A fake first stage: the number of the context's words a candidate shares (higher = better)."""

    def __init__(self):
        self.calls = []

    def score(self, context, candidates, words=None):
        self.calls.append((list(context), list(candidates), words))
        ctx = {w for line in context for w in line.lower().split()}
        return np.asarray([len(ctx.intersection(ws)) for ws in words], dtype=np.float32)


def test_the_first_stage_scores_every_candidate_and_sets_the_editors_reading_order(tiny_markov):
    clock = FakeClock()
    scorer = ClockedScorer(clock, per_candidate=1 / 128)  # 240 ms of a 250 ms budget: 30 candidates read
    first = SharedWords()
    # the first stage's own order (the centred one, the default, is tested below)
    cfg = EngineConfig(n_candidates=256, order_within_length=False)
    eng = Engine({"default": tiny_markov}, scorer, cfg, first_stage=first, clock=clock)
    try:
        history = ["hello there", "do you like pizza and the park on sundays?"]
        r = eng.reply(history, budget_ms=250, seed=3, n_alternatives=1000)
        (context, texts, ws), = first.calls
        assert len(texts) == r.stats["filtered"] == r.stats["first_stage"]["scored"]  # every filtered candidate
        assert ws == [words(t) for t in texts] and context == history
        assert r.stats["scored"] == len(scorer.read) == 30 < r.stats["filtered"]
        # The editor read the first stage's best first; equal first-stage scores go by prior.
        fs = dict(zip(texts, first.score(context, texts, ws).tolist(), strict=True))
        read = [fs[t] for t in scorer.read]
        assert read == sorted(read, reverse=True)
        assert sorted(fs.values(), reverse=True)[: len(read)] == read  # a prefix of the first stage's order
        prior = {a.text: a.prior for a in r.alternatives}
        for a, b in zip(scorer.read, scorer.read[1:], strict=False):
            if fs[a] == fs[b] and a in prior and b in prior:
                assert prior[a] >= prior[b]
    finally:
        eng.close()


def test_without_an_editor_the_first_stage_order_picks_the_reply(tiny_markov):
    eng = Engine({"default": tiny_markov}, None, EngineConfig(n_candidates=256), first_stage=SharedWords())
    r = eng.reply(["pizza pizza pizza"], seed=2, n_alternatives=5)
    assert "pizza" in words(r.reply) and r.stats["scorer"] == "prior" and r.stats["first_stage"]["scored"] > 0


def test_engine_load_finds_the_first_stage_and_names_a_damaged_one(tmp_path, tiny_model_dir, monkeypatch):
    import shutil

    import reranker.first_stage as first_stage_module

    model_dir = tmp_path / "models"
    shutil.copytree(tiny_model_dir, model_dir)
    assert load_engine(model_dir, require_reranker=False).first_stage is None
    (model_dir / "first_stage").mkdir()
    (model_dir / "first_stage" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="first_stage: cannot load the first stage"):
        load_engine(model_dir, require_reranker=False)
    fake = SharedWords()
    monkeypatch.setattr(first_stage_module.FirstStage, "load", classmethod(lambda cls, directory: fake))
    eng = load_engine(model_dir, require_reranker=False)
    assert eng.first_stage is fake
    assert eng.reply(["do you like dogs?"], seed=1).stats["first_stage"]["scored"] > 0


def test_areply_is_the_same_turn_as_reply(engine):
    sync = engine.reply(HISTORY, seed=11, budget_ms=5000)
    async_ = asyncio.run(engine.areply(HISTORY, seed=11, budget_ms=5000))
    assert (async_.reply, async_.score, async_.stats["filtered"]) == (sync.reply, sync.score, sync.stats["filtered"])
    assert not engine._waiting_for_cpu
    ranked = asyncio.run(engine.arank(HISTORY, ["dogs", "i like dogs do you", "cats"]))
    assert [s.text for s in ranked] == [s.text for s in engine.rank(HISTORY, ["dogs", "i like dogs do you", "cats"])]


def test_cancelling_areply_drops_its_candidates_from_the_editor(tiny_markov):
    started, release = threading.Event(), threading.Event()

    class Slow(OverlapScorer):
        def score_until(self, context, candidates, deadline):
            started.set()
            release.wait(10)
            return super().score_until(context, candidates, deadline)

    eng = Engine({"default": tiny_markov}, Slow(), EngineConfig(n_candidates=256, scoring_slice=4))

    async def main():
        task = asyncio.ensure_future(eng.areply(HISTORY, budget_ms=30_000, seed=1))
        while not started.is_set():
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        asyncio.run(main())
        assert eng._scheduler.waiting == 0 and eng._scheduler.cancelled == 1 and not eng._waiting_for_cpu
    finally:
        release.set()
        eng.close()


def test_load_personas_single_dir_and_folder(tmp_path, tiny_markov, tiny_model_dir):
    tiny_markov.save(tmp_path / "markov")
    assert list(load_personas(tmp_path / "markov")) == ["default"]
    personas = load_personas(tiny_model_dir / "markov")
    assert set(personas) == {"default", "pirate"}
    with pytest.raises(FileNotFoundError, match="markov"):
        load_personas(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither"):
        load_personas(tmp_path / "empty")


def test_engine_load_without_reranker(tiny_model_dir):
    with pytest.raises(FileNotFoundError, match="reranker"):
        load_engine(tiny_model_dir)
    eng = load_engine(tiny_model_dir, require_reranker=False)
    assert eng.persona_names == ["default", "pirate"]
    assert eng.reply(["hi"], persona="pirate", seed=1).stats["persona"] == "pirate"


def test_a_tiny_temperature_samples_the_best_not_nan(engine):
    history = ["hello there", "do you like dogs?"]
    best = engine.reply(history, seed=4, n_candidates=128, budget_ms=5000)
    for temperature in (5e-324, 1e-300):
        tiny = engine.reply(history, seed=4, n_candidates=128, budget_ms=5000, top_k=8, temperature=temperature)
        assert tiny.reply == best.reply  # the limit of a softmax as the temperature goes to zero is the argmax


def test_under_load_a_turn_writes_about_eight_candidates_per_editor_read(tiny_markov):
    cost = SimpleNamespace(per_token=1e-3 / 24, overhead=0.0, predict=lambda tokens: tokens * 1e-3 / 24)
    scorer = OverlapScorer()
    scorer.cost = cost  # 1 ms a candidate, by the editor's own cost model
    eng = Engine({"default": tiny_markov}, scorer, EngineConfig(n_candidates=1024))
    try:
        assert eng.seconds_per_candidate == pytest.approx(1e-3)
        assert eng.plan(HISTORY, budget_ms=500).n_candidates == 1024  # alone: all it asked for
        eng._scheduler.queue = lambda: (15, 0)  # 15 turns reading: this one's share is 375 ms / 16 turns / 1 ms
        plan = eng.plan(HISTORY, budget_ms=500)
        reads = plan.budget.scoring_ms / 1000 / (1e-3 * 16)
        assert plan.n_candidates == int(8 * reads) < 1024
        assert plan.stats["load_scaled"] == {"requested": 1024, "written": plan.n_candidates}
        eng._scheduler.queue = lambda: (400, 0)
        assert eng.plan(HISTORY, budget_ms=500).n_candidates == 64  # never under min_live_candidates
        assert eng.plan(HISTORY, budget_ms=500, n_candidates=40).n_candidates == 40  # a small request stands
        assert eng.plan(HISTORY).budget.bounded and eng.reply(HISTORY, seed=1).stats["generated"] <= 64
    finally:
        eng.close()
    off = Engine({"default": tiny_markov}, scorer, EngineConfig(n_candidates=1024, live_per_read=0))
    try:
        off._scheduler.queue = lambda: (400, 0)
        assert off.plan(HISTORY, budget_ms=500).n_candidates == 1024
    finally:
        off.close()


def test_a_turn_whose_lines_around_the_words_all_fail_writes_plain_ones(tiny_markov):
    from server.api.reply import stats_of

    # Every candidate is written around "dogs" (context_share 1, as a loaded turn's single chunk is), and echo_run 1
    # refuses any line sharing a word with the user's: not one passes, so the turn writes plain lines for its reply.
    eng = Engine({"default": tiny_markov}, OverlapScorer(), EngineConfig(n_candidates=256, context_share=1.0, echo_run=1))
    try:
        r = eng.reply(["dogs"], seed=3, budget_ms=5000)
    finally:
        eng.close()
    assert r.stats["seeded"]["words"] == ["dogs"] and r.stats["seeded"]["candidates"] > 0
    assert r.stats["plain_retry"] is True and r.stats["generated"] == 256 + PLAIN_RETRY_LINES  # one chunk, counted
    assert r.reply and "dogs" not in words(r.reply)
    assert r.stats["scored"] > 0 and "reason" not in r.stats
    assert stats_of(r, 1.0).plain_retry is True  # and the API's stats say so


def test_a_turn_whose_writer_wrote_nothing_around_the_words_writes_plain_lines(tiny_markov):
    from markov.chain import Generation

    class CopiesOnly:  # the tiny writer, but it can write no new line around any word (it could only copy them)
        def __getattr__(self, name):
            return getattr(tiny_markov, name)

        def generate(self, n, rng, around=(), **kwargs):
            if around:
                return Generation([], np.zeros(0, np.float32), np.zeros(0, np.int32), reason="only copies")
            return tiny_markov.generate(n, rng, **kwargs)

    eng = Engine({"default": CopiesOnly()}, OverlapScorer(), EngineConfig(n_candidates=64))
    try:
        r = eng.reply(["ding ding ding ding dogs!"], seed=3, budget_ms=5000)
    finally:
        eng.close()
    assert r.stats["seeded"]["candidates"] == 0 and r.stats["plain_retry"] is True  # a loaded turn: all seeded
    assert r.reply and r.stats["generated"] == 64 + 64


@pytest.mark.parametrize("share", [1.0, 0.5])
def test_no_plain_retry_where_plain_lines_were_written_or_nothing_could_pass(tiny_markov, share):
    # A blocklist that refuses every line: with half the lines plain (share 0.5) they were tried already and no retry
    # is made; with every line seeded the retry is made once, and still nothing passes.
    cfg = EngineConfig(n_candidates=256, context_share=share, blocklist_regexes=(".",))
    eng = Engine({"default": tiny_markov}, OverlapScorer(), cfg)
    try:
        r = eng.reply(["do you like dogs?"], seed=3, budget_ms=5000)
    finally:
        eng.close()
    assert r.reply is None and r.stats["reason"] == "no candidate passed the filters"
    assert r.stats.get("plain_retry", False) is (share == 1.0)
    assert r.stats["generated"] == 256 + (PLAIN_RETRY_LINES if share == 1.0 else 0)


def test_a_turn_past_its_end_makes_no_plain_retry(tiny_markov):
    clock = FakeClock()

    class SlowWriter:  # the tiny writer, but each call takes 2 s of the fake clock: the turn ends while it writes
        def __getattr__(self, name):
            return getattr(tiny_markov, name)

        def generate(self, *args, **kwargs):
            clock.advance(2.0)
            return tiny_markov.generate(*args, **kwargs)

    cfg = EngineConfig(n_candidates=64, context_share=1.0, echo_run=1)
    eng = Engine({"default": SlowWriter()}, OverlapScorer(), cfg, clock=clock)
    try:
        r = eng.reply(["dogs"], seed=3, budget_ms=1000)
    finally:
        eng.close()
    assert r.reply is None and "plain_retry" not in r.stats and r.stats["generated"] == 64  # late: no more writing


def test_within_length_centres_each_word_count_on_its_own_mean():
    ws = [["a"], ["b"], ["c", "d"], ["e"], ["f", "g"], list("abcdefgh")]
    out = within_length(np.array([1.0, 3.0, 10.0, np.nan, 5.0, 7.0]), ws, longest=4)
    # one word: 1 and 3 (NaN left out of the mean, and kept NaN); two words: 10 and 5; 8 words counts as 4: alone
    np.testing.assert_allclose(out, [-1.0, 1.0, 2.5, np.nan, -2.5, 0.0])
    assert out.dtype == np.float32
    with pytest.raises(ValueError, match="2 word lists for 3 scores"):
        within_length(np.zeros(3), [["a"], ["b"]])


class LongerIsBetter:
    """A fake first stage that reads length alone: a candidate's score is its word count."""

    def score(self, context, candidates, words=None):
        return np.asarray([len(ws) for ws in words], dtype=np.float32)


@pytest.mark.parametrize("within", [False, True])
def test_order_within_length_keeps_a_long_favouring_first_stage_from_reading_only_long_lines(tiny_markov, within):
    clock = FakeClock()
    scorer = ClockedScorer(clock, per_candidate=1 / 128)  # 30 candidates read
    eng = Engine({"default": tiny_markov}, scorer, EngineConfig(n_candidates=256, order_within_length=within),
                 first_stage=LongerIsBetter(), clock=clock)
    try:
        r = eng.reply(["hello there", "do you like pizza and the park on sundays?"], budget_ms=250, seed=3,
                      n_alternatives=1000)
        lengths = [len(words(t)) for t in scorer.read]
        assert len(lengths) == 30
        if not within:  # the longest first
            assert lengths == sorted(lengths, reverse=True)
        else:  # every centred score is 0, so the prior alone sets the order, and it reads lines of many lengths
            prior = {a.text: a.prior for a in r.alternatives}  # the reply itself is not among its alternatives
            read_priors = [prior[t] for t in scorer.read if t in prior]
            assert len(read_priors) >= 29 and read_priors == sorted(read_priors, reverse=True)
            assert len(set(lengths)) > 1
            assert r.stats["first_stage"]["scored"] > 30
    finally:
        eng.close()


def test_sentence_spans_offer_each_new_run_of_a_lines_sentences(tiny_markov):
    from markov.chain import Generation

    lines = ["i really like dogs. do you like pizza?", "why do we need coffee? music on sundays. i like old movies."]

    class Writes:  # the tiny writer, but it writes these two lines of several sentences and nothing else
        def __getattr__(self, name):
            return getattr(tiny_markov, name)

        def generate(self, n, rng, **kwargs):
            return Generation(list(lines), np.array([-1.0, -2.0], np.float32), np.array([9, 13], np.int32))

    def candidates(spans: bool) -> tuple[set[str], TurnPlan]:
        eng = Engine({"default": Writes()}, OverlapScorer(), EngineConfig(n_candidates=2, context_share=0.0,
                                                                           sentence_spans=spans))
        plan = eng.plan(["hello"], seed=1, budget_ms=5000)
        try:
            return set(eng.generate(plan).texts), plan
        finally:
            eng.close()

    off, plan = candidates(False)
    assert off == set(lines) and "spans" not in plan.stats
    on, plan = candidates(True)
    assert plan.stats["unique"] == 2  # the lines written; the runs are counted apart
    # "i really like dogs." and "do you like pizza?" are corpus lines (tiny_lines): never said verbatim
    assert not tiny_markov.is_novel(["i really like dogs.", "do you like pizza?"]).any()
    # and "why do we need coffee?" too; the other runs are new
    assert on - off == {"why do we need coffee? music on sundays.", "music on sundays. i like old movies.",
                        "music on sundays.", "i like old movies."}
    assert plan.stats["spans"] == len(on - off) > 0
    lines[:] = ["i like music! ... you like coffee.", "do you like dogs?"]
    on, _ = candidates(True)  # runs opening mid-punctuation ("...", "... you like coffee.") are not offered
    # ("i like music! ..." says the words of "i like music!": one candidate)
    assert on - set(lines) == {"i like music!", "you like coffee."}

    class Unchecked(Writes):  # a writer with no novelty test: a run of its line could be a corpus line verbatim
        is_novel = None

    eng = Engine({"default": Unchecked()}, OverlapScorer(), EngineConfig(n_candidates=2, context_share=0.0,
                                                                         sentence_spans=True))
    try:
        plan = eng.plan(["hello"], seed=1, budget_ms=5000)
        assert set(eng.generate(plan).texts) == set(lines) and plan.stats["spans"] == 0
    finally:
        eng.close()


def test_a_reply_is_one_sentence_unless_told_otherwise():
    from markov import MarkovConfig, MarkovModel

    things = ["pizza", "dogs", "rain", "music", "tea", "chess", "trains", "soup"]
    lines = [f"I like {a}. Do you like {b}?" for a in things for b in things] + [f"we both like {a} a lot" for a in things]
    writer = MarkovModel.build([(line, 1.0) for line in lines], MarkovConfig(order=2))
    history = ["do you like pizza?"]
    said = {}
    for most in (EngineConfig.max_sentences, 0):
        eng = Engine({"default": writer}, OverlapScorer(), EngineConfig(n_candidates=512, max_sentences=most))
        try:
            r = eng.reply(history, seed=3, n_alternatives=1000)
        finally:
            eng.close()
        said[most] = [r.reply] + [a.text for a in r.alternatives]
    assert EngineConfig.max_sentences == 1
    assert said[1] and not any(". " in t or "? " in t or "! " in t for t in said[1])
    assert any(". " in t for t in said[0])  # the writer does write lines of two, and they are said where allowed
