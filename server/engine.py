"""The reply engine: one turn, read top to bottom.

    plan      the request, normalized, with its one `Budget` (server/budget.py)
    generate  the persona's Markov writer samples candidates until generation's share of the budget is spent: half
              of them whole lines written around the context's rarest words (or the topic's), half plain lines
    recall    with a reply index for the persona (reranker/index.py), its lines nearest the context join them: lines
              written, judged and embedded before the turn, found in milliseconds
    filter    every text rule in one place (`TextFilter`): URLs out, length, blocklists, no echo, no repeat, no
              parroting (a run of words of the newest lines), no mirrors (a question about the user's question),
              no duplicate
    prior     a cheap feature per candidate: the writer's mean log-prob + word overlap with the context + topic bonus
    order     the first stage: a learned model scores every filtered candidate and sets the order the editor reads
              them in (the prior breaks ties); without one, the prior sets it
    kept      the index's hits scored by the editor from the index's kept readings of them (no forward pass)
    read      the editor reads the other candidates in that order until the scoring deadline, on the shared
              scheduler (server/scheduler.py), which batches the reads of every turn in flight
    pick      argmax (or a top-k sample) of what the editor scored; by the order above when it scored nothing

`Engine.reply` runs a turn on the caller's thread (the REPL, scripts); `await Engine.areply` runs the CPU stages on
an executor and awaits the editor without holding a thread (the HTTP routes). `rank`/`arank` score a caller's own
candidates. Every deadline is read from one injectable clock, so tests can step time instead of sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol, get_args

import numpy as np

from corpus.modeldir import DEFAULT_PERSONA
from corpus.text import (
    LineFilter,
    LineRules,
    also_spelled,
    asks,
    content_words,
    dedupe_key,
    holds_run,
    mirrors,
    overlap,
    sentence_spans,
    word_runs,
    words,
)
from server.budget import DEFAULT_BUDGET_MS, FILTER_SHARE, FINISH_MARGIN_MS, GENERATION_SHARE, Budget
from server.scheduler import ROUND_MS, SLICE_SIZE, Editor, Scores, ScoringJob, ScoringScheduler, traits_of

log = logging.getLogger(__name__)

# A turn that wrote only lines around words and kept none writes at most this many plain ones (`Engine.prepare`).
PLAIN_RETRY_LINES = 128


class FirstStageScorer(Protocol):
    """What the engine needs from a first stage (see `reranker.first_stage.FirstStage`): higher is better."""

    def score(self, context: list[str], candidates: list[str], words: list[list[str]] | None = None) -> np.ndarray: ...


class ReplySource(Protocol):
    """What the engine needs from a reply index (see `reranker.index.ReplyIndex`): the k lines nearest a context.

    Optional: `.rows` on the answer, with `reads` (not None) and `kept(rows)` on the index, give the editor's kept
    readings of the hits (`Engine.score_kept`)."""

    def search(self, context: list[str], k: int = 256, last_line: float = 0.0) -> Any:
        """The k lines nearest the context, with `last_line` more weight on its last line: .texts, .logprob (mean
        log-prob per token)."""


class UnknownPersonaError(ValueError):
    """A request named a persona the engine has no Markov model for."""


SeedReplies = Literal["statements", "always", "never"]  # EngineConfig.seed_replies: when reply words seed a turn
SEED_REPLIES: tuple[str, ...] = get_args(SeedReplies)


@dataclass(frozen=True)
class EngineConfig(LineRules):
    """Everything that shapes a turn (the line rules of `corpus.text.LineRules` first); request fields override the
    per-turn defaults."""

    budget_ms: int = DEFAULT_BUDGET_MS
    n_candidates: int = 1024
    top_k: int = 1  # 1 = argmax; >1 = sample among the top k by softmax(score / temperature)
    temperature: float = 1.0
    n_alternatives: int = 5
    repeat_window: int = 3  # the speaker's last N lines are never repeated
    # No reply holds a run of this many words of the user's last line, of the speaker's last `repeat_window` lines or
    # of the conversation's newest `repeat_window`: a reply that re-says the question it answers ("do you have any
    # pets?" -> "Do you have any pets? What would you do?") is a parrot, not a reply. People do it rarely: 0.6% of
    # chitchat's replies share a run of 4 words with the line they answer, 1.4% with any of the 3 lines before (3
    # words: 1.8% and 4.5%; benchmarks/RESULTS.md, "Fifteenth pass"; with contractions spelled out, as runs are now
    # read, 1.14% of the whole train split's replies against 1.05% on surface words: "Sixteenth pass"). 0: off
    # (whole-line echoes and repeats are refused still); 1 or 2 refuse any shared word or pair of words.
    echo_run: int = 4
    # No mirrors: after a question, a reply that is itself a question takes under this share of its own content
    # words from it, sentence by sentence (`corpus.text.mirrors`). The engine's best lines answered "Do you like
    # cooking?" with "What do you like cooking?": on DailyDialog openings 25% of its replies to a question were such
    # mirrors, where chitchat's people make them in 1.2-1.8% of their replies to a question and DailyDialog's in 0-3%
    # (benchmarks/RESULTS.md, "Sixteenth pass" to "Eighteenth pass").
    # A question that asks something new ("what about you?", "how old is he?") passes. 0: off.
    mirror_share: float = 0.5
    bot_speakers: tuple[str, ...] = ("bot", "assistant")
    context_lines: int = 8  # only the newest lines reach the editor; older ones would be truncated anyway
    overlap_weight: float = 1.0  # prior = mean log-prob per token + overlap_weight * overlap with the context
    generation_share: float = GENERATION_SHARE  # generation stops early once it has used this share of the budget
    filter_share: float = FILTER_SHARE  # ... and filtering once generation and filtering have used this share
    generation_chunk: int = 512  # most per generate() call: 32 calls of 128 took 82 ms for 4,096, one call 27 ms
    scoring_slice: int = SLICE_SIZE  # candidates per scoring round, shared by the turns waiting; smaller = fairer
    scoring_round_ms: float = ROUND_MS  # a turn with less time left stays out of rounds shared with turns that have more
    finish_margin_ms: float = FINISH_MARGIN_MS  # kept back from the budget for picking and writing the response
    topic_share: float = 0.5  # with a topic, this share of the candidates is written around the topic words
    # Without a topic, this share is written around the most specific words of the newest context line that has any
    # (whole lines naming them, `MarkovModel.generate(around=...)`); the rest are the writer's plain lines.
    context_share: float = 0.5
    # At most this many of those words, the rarest in the writer's corpus first. This and `context_seed_lines` repeat
    # `markov.CONTEXT_SEED_*` (the engine does not import markov; a test holds them equal), which the recipes use to
    # write their lines "as a turn writes them".
    context_seed_words: int = 4
    # ... of the newest line that names a word the writer can write around, among the newest this many. The newest
    # alone, not the rarest of two pooled: pooled, a line about hiking went on seeding hiking after the user moved
    # on, and after a change of subject the replies were no nearer the new line than a random writer line (0.595
    # against 0.565; the newest line: 0.815, people 0.870), with the judges level (benchmarks/RESULTS.md,
    # "Seventeenth pass").
    context_seed_lines: int = 2
    # `seed_replies` "statements": where the newest line does not ask, those words are only what was said, and the
    # lines are written around the words people name in reply to them instead (the writer's reply-word table,
    # `markov.replies`: "weekend" -> "fun", "saturday"; "pizza" -> "toppings"); "always" after questions too (an
    # answer says a question's words back as people's do, and there reply words made the pick worse); "never" (the
    # default): around the context's own. Measured on 600 fresh held-out turns (clock-free, paired, the default
    # editor), "statements" against "never": echo 0.25 -> 0.13 (the true lines' 0.04-0.08), judged human +0.028 +- 0.019,
    # but parses -0.037 +- 0.022 and topic -0.040, so it is a choice, not the default (benchmarks/RESULTS.md,
    # "Nineteenth pass"). A writer with no table (its corpus did not say who spoke) writes around the context's.
    seed_replies: SeedReplies = "never"
    # Lines written around the words are kept with probability min(1, k / their tokens), undoing the length bias of
    # drawing an occurrence: `markov.AROUND_UNBIAS_ABOVE` says why and what it measured (the engine does not import
    # markov, so the value is repeated here and a test holds the two equal); 0: as drawn.
    around_unbias_above: int = 2
    # Centre the first stage's scores within each word count before they set the read order. The first stage reads
    # relevance alone, and a longer line holds more words near the context, so its best are long, and long lines
    # parse least. Where the editor reads little, its pick is the first stage's: at 16 clients x 500 ms (the editor
    # reads 0-3 lines a turn) the default's replies parsed 0.48-0.52, below a random writer line (0.58-0.61), and
    # centred they parse 0.58-0.61 (+0.095 +- 0.031 over 400 turns; judged human +0.018, topic 0.24-0.26 against
    # people's 0.21, echo +0.060). At one client, 1,000 ms, the editor reads ~130 lines and the judges did not move
    # (benchmarks/RESULTS.md, "Twenty-first pass"). Off: the first stage's order as it scores.
    order_within_length: bool = True
    # A candidate of several sentences is also offered as each run of its sentences ("Oh nice! What was good about
    # today? Can't go wrong with pizza." -> "Oh nice! What was good about today?", ...), where the run is new (no
    # corpus line verbatim): the writer's later sentences are glued on from other lines and drift, and a quarter of
    # the default's replies had two or more, parsing 0.49 against 0.70 for one. Off: offered, the editor took
    # shorter replies but neither judge moved beyond noise (over 400 turns, parses +0.015 +- 0.021 at one client,
    # +0.020 +- 0.017 at 16 clients; judged human +0.000 and +0.022; benchmarks/RESULTS.md, "Twenty-second pass").
    sentence_spans: bool = False
    # A reply is one sentence (`LineRules.max_sentences`; 0: any number; a break is ".", "!" or "?" then a space,
    # so "Wait... what?" is two). The writer's later sentences are glued on from other lines and drift ("Oh nice!
    # What was good about today? i can't keep up."): 0.15-0.27 of the replies at one client had two or more, and
    # those parsed 0.49-0.55 against 0.67-0.70 for one. Held to one (the editor picks among the one-sentence
    # lines; nothing is clipped), over 800 held-out turns at one client the replies parsed +0.052 +- 0.014
    # (0.660 -> 0.713), judged human +0.007 +- 0.013, topic -0.005; at 16 clients x 500 ms (400) parses +0.072
    # +- 0.023, judged human -0.037 +- 0.025 (benchmarks/RESULTS.md, "Twenty-third pass"). It costs the replies
    # that acknowledge, then ask ("That's cool. Do you enjoy studying history?"). Offering each sentence of a
    # longer line too (`sentence_spans`) added nothing beyond it.
    max_sentences: int = 1
    topic_weight: float = 1.0  # prior bonus for a candidate naming every topic word (pro rata for some)
    index_k: int = 256  # lines a persona's reply index adds to a turn, for the editor to read (0: no index)
    # ... from an index that keeps the editor's readings of its lines: they are scored without a read, so a turn
    # can take more. At 16 clients x 500 ms (1M entries) 512 lifted judged human 0.70-0.74 -> 0.77 and parses
    # 0.63-0.65 -> 0.73 over 256, where 768 and 1,024 fell back (benchmarks/RESULTS.md, "Sixteen clients").
    index_k_kept: int = 512
    # The index is searched by the first stage's context vector, which a first stage distilled from the sense model
    # takes from the joined context alone, while the editor's verdict also weighs the last line; this adds that
    # weight to the search (only: the same weight in the live lines' order cost their parse rate 0.048 +- 0.023 at
    # 16 clients without an index). With a first run's index at one client (600 turns) its replies followed the
    # last line more often (+0.080 +- 0.013: 0.86 -> 0.94 on held-out subtitles) and no judge moved beyond noise
    # (parses +0.022 +- 0.017, judged human +0.002), nor at 16 clients (benchmarks/RESULTS.md, "Twenty-second
    # pass"). 0: the first stage's own vector.
    index_last_line: float = 1.0
    # Under load a turn writes about this many candidates per one the editor will have time to read of it (at least
    # min_live_candidates): see `Engine.live_candidates`. 0 turns the scaling off.
    live_per_read: float = 8.0
    min_live_candidates: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.top_k:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.scoring_slice < 1 or self.generation_chunk < 1:
            raise ValueError("scoring_slice and generation_chunk must be >= 1")
        if not self.scoring_round_ms > 0:
            raise ValueError(f"scoring_round_ms must be > 0, got {self.scoring_round_ms}")
        if not 0.0 <= self.generation_share <= self.filter_share <= 1.0:
            raise ValueError(
                f"need 0 <= generation_share ({self.generation_share}) <= filter_share ({self.filter_share}) <= 1"
            )
        if not math.isfinite(self.index_last_line) or self.index_last_line < 0:
            raise ValueError(f"index_last_line must be a finite number >= 0, got {self.index_last_line}")
        if self.index_k < 0 or self.index_k_kept < 0:
            raise ValueError(f"index_k and index_k_kept must be >= 0, got {self.index_k}, {self.index_k_kept}")
        if self.live_per_read < 0 or self.min_live_candidates < 1:
            raise ValueError("live_per_read must be >= 0 and min_live_candidates >= 1")
        if not 0.0 <= self.topic_share <= 1.0 or not 0.0 <= self.context_share <= 1.0:
            raise ValueError(f"topic_share and context_share must be within [0, 1], got {self.topic_share} and "
                             f"{self.context_share}")
        if self.around_unbias_above < 0:
            raise ValueError(f"around_unbias_above must be >= 0, got {self.around_unbias_above}")
        if self.echo_run < 0:
            raise ValueError(f"echo_run must be >= 0, got {self.echo_run}")
        if not 0.0 <= self.mirror_share <= 1.0:
            raise ValueError(f"mirror_share must be within [0, 1], got {self.mirror_share}")
        if self.seed_replies not in SEED_REPLIES:
            raise ValueError(f"seed_replies must be one of {', '.join(SEED_REPLIES)}, got {self.seed_replies!r}")
        if self.context_seed_words < 0 or self.context_seed_lines < 1:
            raise ValueError(f"need context_seed_words >= 0 and context_seed_lines >= 1, got {self.context_seed_words} "
                             f"and {self.context_seed_lines}")

    def index_hits(self, keeps_readings: bool) -> int:
        """Lines a turn asks a reply index for: `index_k_kept` where it keeps readings, else `index_k` (0: none)."""
        return self.index_k_kept if self.index_k and keeps_readings else self.index_k


@dataclass(frozen=True)
class Turn:
    """One line of the history and who said it."""

    speaker: str
    text: str


@dataclass(frozen=True)
class Scored:
    """A candidate with its editor score (None when it was not read) and its prior."""

    text: str
    score: float | None
    prior: float
    index: int | None = None  # its place in the caller's list, for `rank`


@dataclass
class Reply:
    """The picked reply, the runners-up, and the funnel counts of the turn."""

    reply: str | None
    score: float | None
    alternatives: list[Scored]
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class Candidates:
    """A turn's candidates as they pass the stages: each text with its words and what the stages learned of it."""

    texts: list[str]
    words: list[list[str]]  # lower-cased word tokens of each text, split once and reused by every stage
    logprob: np.ndarray  # (n,) float64: the writer's mean log-prob per token
    prior: np.ndarray | None = None  # (n,) float64, set by the prior step
    first_stage: np.ndarray | None = None  # (n,) float32, set by the first stage when there is one
    from_index: np.ndarray | None = None  # (n,) bool: found in the reply index, not written in this turn
    index_rows: np.ndarray | None = None  # (n,) int64: its row in the reply index, -1 for a live one
    kept: np.ndarray | None = None  # (n,) float32: the editor's score from the index's kept reading, NaN for none

    def __len__(self) -> int:
        return len(self.texts)

    def sources(self) -> np.ndarray:
        """(n,) bool: True for a candidate from the reply index."""
        return np.zeros(len(self), dtype=bool) if self.from_index is None else self.from_index

    def rows(self) -> np.ndarray:
        """(n,) int64: each candidate's row in the reply index, -1 for one written in this turn."""
        return np.full(len(self), -1, dtype=np.int64) if self.index_rows is None else self.index_rows

    def __add__(self, other: Candidates) -> Candidates:
        """These candidates, then `other`'s (before the prior and the first stage, which see them all)."""
        return Candidates(self.texts + other.texts, self.words + other.words,
                          np.concatenate([self.logprob, other.logprob]),
                          from_index=np.concatenate([self.sources(), other.sources()]),
                          index_rows=np.concatenate([self.rows(), other.rows()]))

    def take(self, idx: Sequence[int] | np.ndarray) -> Candidates:
        """The candidates at `idx`, in that order."""
        idx = np.asarray(idx, dtype=np.int64)
        return Candidates(
            [self.texts[i] for i in idx], [self.words[i] for i in idx], self.logprob[idx],
            None if self.prior is None else self.prior[idx],
            None if self.first_stage is None else self.first_stage[idx],
            None if self.from_index is None else self.from_index[idx],
            None if self.index_rows is None else self.index_rows[idx],
            None if self.kept is None else self.kept[idx],
        )


@dataclass
class TurnPlan:
    """One turn's request, normalized: the history, who speaks, the options, the budget, and the stats so far."""

    turns: list[Turn]
    context: list[str]  # the newest lines as the editor expects them
    persona: str
    speaker: str | None  # who speaks now (their own recent lines are not repeated); None: the bot
    n_candidates: int
    topic_words: tuple[str, ...]
    top_k: int
    temperature: float
    n_alternatives: int
    budget: Budget
    generation_rng: np.random.Generator
    pick_rng: np.random.Generator
    stats: dict[str, Any] = field(default_factory=dict)
    stage_ms: dict[str, float] = field(default_factory=dict)
    written_plain: int = 0  # lines the writer wrote not around any word (`generate`)


def keep_best(table: dict[str, tuple[str, float, list[str]]], text: str, logprob: float,
              taken: Mapping[str, Any] | None = None) -> None:
    """Put `text` in `table` under its dedupe key (its words joined, as `dedupe_key` reads them), as (text, mean
    log-prob, words), unless the key holds a better log-prob already or is in `taken`."""
    ws = words(text)
    key = " ".join(ws)  # == dedupe_key(text), with the words kept for the filters
    if key and (taken is None or key not in taken) and (key not in table or logprob > table[key][1]):
        table[key] = (text, logprob, ws)


def as_turns(history: Sequence[Turn | str | Mapping[str, str]]) -> list[Turn]:
    """Normalize a history to Turns; bare strings alternate speakers ending with the user's line."""
    n = len(history)
    turns = []
    for i, item in enumerate(history):
        if isinstance(item, Turn):
            turns.append(item)
        elif isinstance(item, str):
            turns.append(Turn("user" if (n - 1 - i) % 2 == 0 else "bot", item))
        else:
            turns.append(Turn(str(item.get("speaker", "user")), str(item["text"])))
    return turns


# ---------------------------------------------------------------------------------------------------- text rules


def topic_terms(topic: str | None) -> tuple[str, ...]:
    """The topic's content words, in order and deduped (all its words when every one is a stopword)."""
    ws = list(dict.fromkeys(words(topic or "")))[:8]  # a topic is a few words; more would only dilute the bonus
    return tuple(content_words(ws) or ws)


class Forbidden(NamedTuple):
    """What no reply of a turn may say (`TextFilter.forbidden`)."""

    keys: set[str]  # dedupe keys: the user's last line (no echo) and the speaker's recent lines (no repeat)
    runs: set[tuple[str, ...]]  # runs of `echo_run` words of those and of the newest lines (no parroting)
    # the words of the user's last line (the newest line not the speaker's), and their other spellings, when it asks
    # something (no mirrors)
    question: frozenset[str] | None


class TextFilter(LineFilter):
    """Every rule a candidate must pass before anything scores it, in one place.

    The line's own rules (`corpus.text.LineFilter`: URLs out, length, blocklists), then the conversation's: not
    echo the user's last line, not repeat one of the speaker's last `repeat_window` lines, hold no run of
    `echo_run` words of those or of the conversation's newest `repeat_window` lines, not answer the user's question
    with a question made of its words (`mirror_share`), and not duplicate a candidate already kept. (The writer's own
    novelty test, "not a line of the corpus", runs inside the writer: it works on token ids and corpus hashes before
    the text exists. Its counts are in the turn's `generation` report.)
    """

    def __init__(self, config: EngineConfig):
        super().__init__(config)
        self.config = config

    def forbidden(self, turns: list[Turn], speaker: str | None = None) -> Forbidden:
        """What no reply may say: the user's last line and the speaker's recent lines whole, runs of `echo_run` words
        of those and of the conversation's newest lines (`corpus.text.word_runs`), and a mirror of the user's
        question."""
        cfg = self.config
        own = {s.casefold() for s in cfg.bot_speakers} | ({speaker.casefold()} if speaker else set())
        own_lines = [t.text for t in turns if t.speaker.casefold() in own]
        others = [t.text for t in turns if t.speaker.casefold() not in own]
        said = ([others[-1]] if others else []) + (own_lines[-cfg.repeat_window :] if cfg.repeat_window else [])
        newest = [t.text for t in turns[-cfg.repeat_window :]] if cfg.repeat_window else []
        runs = {run for text in dict.fromkeys(said + newest) for run in word_runs(words(text), cfg.echo_run)}
        asked = cfg.mirror_share > 0 and bool(others) and asks(others[-1])
        return Forbidden({dedupe_key(t) for t in said}, runs, also_spelled(words(others[-1])) if asked else None)

    def apply(
        self, candidates: Candidates, turns: list[Turn], speaker: str | None = None, *,
        stop_at: float = math.inf, clock: Callable[[], float] = time.monotonic, always: int = 0,
    ) -> Candidates:
        """The candidates that pass every rule, cleaned, in their order; stops at `stop_at` keeping what passed,
        but not within the first `always` candidates."""
        keys, runs, question = self.forbidden(turns, speaker)
        texts, kept_words, logprob, kept, seen = [], [], [], [], set()
        for n, (text, ws, lp) in enumerate(zip(candidates.texts, candidates.words, candidates.logprob, strict=True)):
            # Python work per candidate: under load it too must stop in time
            if n % 64 == 63 and n >= always and clock() >= stop_at:
                break
            text, ws = self.clean(text, ws)
            key = " ".join(ws)  # == dedupe_key(text)
            if (not key or key in keys or key in seen or not self.allows(text, ws) or holds_run(ws, runs)
                    or mirrors(text, ws, question, self.config.mirror_share)):
                continue
            seen.add(key)  # URL removal can make two candidates equal again
            texts.append(text)
            kept_words.append(ws)
            logprob.append(lp)
            kept.append(n)
        return Candidates(texts, kept_words, np.asarray(logprob, dtype=np.float64),
                          from_index=None if candidates.from_index is None else candidates.from_index[kept],
                          index_rows=None if candidates.index_rows is None else candidates.index_rows[kept])


def prior_scores(
    candidates: Candidates, context: list[str], topic_words: tuple[str, ...] = (), *,
    overlap_weight: float = 1.0, topic_weight: float = 1.0,
) -> np.ndarray:
    """The cheap prior, (n,) float64: the writer's mean log-prob per token, plus `overlap_weight` times the share of
    the candidate's content words found in the context, plus `topic_weight` pro rata for the topic words it names."""
    context_words = frozenset(w for line in context for w in words(line))
    topic = frozenset(topic_words)
    bonus = topic_weight / len(topic) if topic else 0.0
    out = np.asarray(candidates.logprob, dtype=np.float64).copy()
    for i, ws in enumerate(candidates.words):
        out[i] += overlap_weight * overlap(ws, context_words)
        if topic:
            out[i] += bonus * len(topic.intersection(ws))
    return out


def within_length(scores: np.ndarray, candidate_words: Sequence[Sequence[str]], longest: int = 25) -> np.ndarray:
    """(n,) float32: each score minus the mean score of the candidates with as many words (`longest` words or more
    count as one length), so an order by them draws every length as the pool holds it. NaN stays NaN."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(candidate_words) != len(scores):
        raise ValueError(f"{len(candidate_words)} word lists for {len(scores)} scores")
    lengths = np.clip(np.fromiter((len(ws) for ws in candidate_words), dtype=np.int64, count=len(scores)), 0, longest)
    finite = np.isfinite(scores)
    sums = np.bincount(lengths[finite], weights=scores[finite], minlength=longest + 1)
    counts = np.bincount(lengths[finite], minlength=longest + 1)
    means = sums / np.maximum(counts, 1)
    return (scores - means[lengths]).astype(np.float32)


# ---------------------------------------------------------------------------------------------------- the engine


class Engine:
    """Turns a history into a reply within a wall-clock budget."""

    def __init__(
        self, personas: Mapping[str, Any], editor: Editor | None, config: EngineConfig | None = None, *,
        names: Mapping[str, str] | None = None, follows: Mapping[str, Mapping[str, int]] | None = None,
        first_stage: FirstStageScorer | None = None, indexes: Mapping[str, ReplySource] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not personas:
            raise ValueError("the engine needs at least one Markov model")
        self.personas = dict(personas)
        self.names = {p: (names or {}).get(p, p) for p in self.personas}  # persona -> display name (speaker)
        self.follows = {a: dict(b) for a, b in (follows or {}).items()}  # persona -> next persona -> count
        self.editor = editor
        self.traits = traits_of(editor)
        self.first_stage = first_stage
        self.indexes = dict(indexes or {})  # persona -> its reply index
        self.config = config or EngineConfig()
        self.clock = clock
        self.text_filter = TextFilter(self.config)
        self._waiting_for_cpu: set[int] = set()  # async turns (by id) queued for a thread for their CPU stages
        self._waiting_lock = threading.Lock()
        self._scheduler = (
            ScoringScheduler(editor, slice_size=self.config.scoring_slice, round_ms=self.config.scoring_round_ms,
                             clock=clock)
            if editor is not None else None
        )

    @property
    def scorer(self) -> Editor | None:
        """The editor, under the name this attribute had before (kept so callers keep working)."""
        return self.editor

    def close(self) -> None:
        """Stop the scoring worker."""
        if self._scheduler is not None:
            self._scheduler.close()

    @property
    def persona_names(self) -> list[str]:
        """The personas a request may name."""
        return sorted(self.personas)

    @property
    def speaking_personas(self) -> list[str]:
        """The personas that are someone: not `all`, nor `default` when it only stands in for another persona."""
        out = []
        for name in self.persona_names:
            alias = name == DEFAULT_PERSONA and any(
                self.personas[other] is self.personas[name] for other in self.personas if other != name
            )
            if name != "all" and not alias:
                out.append(name)
        return out or self.persona_names

    @property
    def context_speakers(self) -> bool:
        """Whether the editor was trained on `name: text` context lines (else it sees the bare text)."""
        return self.traits is not None and self.traits.context_speakers

    def context_of(self, turns: list[Turn]) -> list[str]:
        """The newest history lines as the editor expects them."""
        recent = turns[-self.config.context_lines :]
        if self.context_speakers:
            return [f"{t.speaker}: {t.text}" for t in recent]
        return [t.text for t in recent]

    @property
    def queue(self) -> tuple[int, int]:
        """Turns waiting for the editor, and the candidates they still have to read."""
        return (0, 0) if self._scheduler is None else self._scheduler.queue()

    @property
    def seconds_per_candidate(self) -> float | None:
        """What one more candidate costs the editor, by its own cost model (None without an editor)."""
        return None if self._scheduler is None else self._scheduler.seconds_per_candidate

    def budget(self, budget_ms: float | None = None, started: float | None = None, *, generates: bool = True) -> Budget:
        """A turn's budget from a request: `budget_ms` (default: the config's) from `started` (default: now).

        `generates=False` is for ranking given candidates: no generation or filtering share, the editor has it all.
        """
        cfg = self.config
        return Budget(
            started=self.clock() if started is None else started,
            budget_ms=cfg.budget_ms if budget_ms is None else budget_ms,
            generation_share=cfg.generation_share if generates else 0.0,
            filter_share=cfg.filter_share if generates else 0.0,
            finish_margin_ms=cfg.finish_margin_ms,
            clock=self.clock,
        )

    # ------------------------------------------------------------------------------------------- entry points

    def reply(self, history: Sequence[Turn | str | Mapping[str, str]], **options: Any) -> Reply:
        """One turn on this thread: plan, generate, filter, prior, first stage, editor within the budget, pick.

        `options` are those of `plan` (budget_ms or budget, n_candidates, seed, persona, top_k, temperature, ...).
        """
        plan = self.plan(history, **options)
        candidates = self.prepare(plan)
        scores = self.read(plan, candidates)
        return self.pick(plan, candidates, scores)

    async def areply(
        self, history: Sequence[Turn | str | Mapping[str, str]], *, executor: Executor | None = None, **options: Any
    ) -> Reply:
        """One turn for async callers: the CPU stages on `executor`, the editor awaited without holding a thread.

        Cancelling the awaiting task (a client that went away) drops the turn's candidates from the editor at once.
        """
        plan = self.plan(history, **options)
        self._queue_for_cpu(plan, waiting=True)
        try:
            candidates = await asyncio.get_running_loop().run_in_executor(executor, self._prepare_queued, plan)
        finally:  # cancelled before a thread took it: no longer waiting either
            self._queue_for_cpu(plan, waiting=False)
        scores = await self.aread(plan, candidates)
        return self.pick(plan, candidates, scores)

    def rank(
        self, history: Sequence[Turn | str | Mapping[str, str]], candidates: list[str], *,
        budget_ms: float | None = None, started: float | None = None, budget: Budget | None = None,
    ) -> list[Scored]:
        """Score given candidates (any generator's drafts), best first; unread ones (budget) last, in order.

        No budget means every candidate is read.
        """
        job = self._submit_rank(history, candidates, budget_ms=budget_ms, started=started, budget=budget)
        return ranked(candidates, self._scheduler.wait(job))

    async def arank(
        self, history: Sequence[Turn | str | Mapping[str, str]], candidates: list[str], *,
        budget_ms: float | None = None, started: float | None = None, budget: Budget | None = None,
    ) -> list[Scored]:
        """`rank` for async callers; cancelling the awaiting task stops the reading."""
        job = self._submit_rank(history, candidates, budget_ms=budget_ms, started=started, budget=budget)
        return ranked(candidates, await self._await(job))

    # ------------------------------------------------------------------------------------------- the stages, in order

    def plan(
        self,
        history: Sequence[Turn | str | Mapping[str, str]],
        *,
        budget_ms: float | None = None,
        started: float | None = None,
        budget: Budget | None = None,
        n_candidates: int | None = None,
        seed: int | None = None,
        persona: str = DEFAULT_PERSONA,
        top_k: int | None = None,
        temperature: float | None = None,
        n_alternatives: int | None = None,
        topic: str | None = None,
        speaker: str | None = None,
    ) -> TurnPlan:
        """The request, checked and normalized, with its budget (`budget`, or one made from budget_ms and started).

        `topic`: half the candidates are written around its words (instead of the context's), and candidates naming
        them get a prior bonus;
        `speaker` names who talks now, so that speaker's own recent lines are not repeated.
        """
        cfg = self.config
        budget = budget or self.budget(budget_ms, started)
        top_k = cfg.top_k if top_k is None else top_k
        temperature = cfg.temperature if temperature is None else temperature
        if persona not in self.personas:
            raise UnknownPersonaError(f"unknown persona {persona!r}; known: {', '.join(self.persona_names)}")
        if top_k < 1 or not temperature > 0:
            raise ValueError("top_k must be >= 1 and temperature > 0")
        turns = as_turns(history)
        # Negative or huge seeds (OpenAI clients send any int) map onto numpy's unsigned seed space.
        root = np.random.default_rng(None if seed is None else seed & (2**64 - 1))
        generation_rng, pick_rng = root.spawn(2)
        requested = cfg.n_candidates if n_candidates is None else n_candidates
        plan = TurnPlan(
            turns=turns,
            context=self.context_of(turns),
            persona=persona,
            speaker=speaker,
            n_candidates=self.live_candidates(requested, budget),
            topic_words=topic_terms(topic),
            top_k=top_k,
            temperature=temperature,
            n_alternatives=cfg.n_alternatives if n_alternatives is None else n_alternatives,
            budget=budget,
            generation_rng=generation_rng,
            pick_rng=pick_rng,
        )
        if plan.n_candidates < requested:  # the load cut it (`live_candidates`): the stats say so
            plan.stats["load_scaled"] = {"requested": requested, "written": plan.n_candidates}
        return plan

    def live_candidates(self, requested: int, budget: Budget) -> int:
        """How many candidates a turn writes: all it asked for while it is the editor's only turn; under load
        about `live_per_read` times what the editor will have time to read of it, at least `min_live_candidates`.

        Every turn's CPU stages (writing, filtering, the first stage: Python, holding the GIL) share the two cores
        with the editor's forward passes, which take the GIL back after every operator. At 16 clients x 500 ms,
        1,024 candidates a turn left the editor 12-16 reads/s of the 136 it makes for one client; 64 a turn left it
        105 (benchmarks/RESULTS.md, "Sixteen users"). A turn cannot use what the editor will not read: past the
        first stage's best few, the rest only slowed everyone's editor.
        """
        cfg = self.config
        if self._scheduler is None or cfg.live_per_read <= 0 or not budget.bounded or requested <= cfg.min_live_candidates:
            return requested
        jobs, _ = self._scheduler.queue()
        turns = jobs + len(self._waiting_for_cpu)  # turns reading, and turns waiting for their CPU stages
        per_candidate = self.seconds_per_candidate
        if turns < 2 or not per_candidate:
            return requested
        reads = budget.scoring_ms / 1000.0 / (per_candidate * (turns + 1))  # this turn's share of the editor
        return int(min(requested, max(cfg.min_live_candidates, cfg.live_per_read * reads)))

    def _prepare_queued(self, plan: TurnPlan) -> Candidates:
        self._queue_for_cpu(plan, waiting=False)
        return self.prepare(plan)

    def _queue_for_cpu(self, plan: TurnPlan, waiting: bool) -> None:
        with self._waiting_lock:
            (self._waiting_for_cpu.add if waiting else self._waiting_for_cpu.discard)(id(plan))

    def prepare(self, plan: TurnPlan) -> Candidates:
        """The CPU stages: recall, generate, filter, prior, first stage, kept; the candidates in the order the editor
        reads them, the index's hits scored already where the index keeps the editor's readings."""
        plan.stage_ms["queued"] = round(plan.budget.elapsed_ms(), 1)  # from the request's arrival to a free thread
        # The index's lines first: under load the filter stops at its deadline keeping what it passed, and the
        # index's lines are the turn's likeliest best (it holds the first stage's top of all a writer wrote).
        candidates = self.filter(plan, self.recall(plan) + self.generate(plan))
        if (not len(candidates) and not plan.written_plain and "seeded" in plan.stats
                and not plan.budget.passed(plan.budget.end)):
            # Every line was to be written around the words and none passed: under load a turn writes one chunk, all
            # of it around them, and after "Ding ding ding ding ding!" the writer wrote no new line around "ding"
            # at all (it could only copy its corpus's), and one turn in 200 at 16 clients had no reply; lines around
            # a word can also all fail a rule. One chunk of plain lines, at most 128 (a few ms), gives the turn a
            # reply where it had none; a turn already past its end gets none.
            plan.stats["plain_retry"] = True
            candidates = self.filter(plan, self.generate(plan, write_around=False,
                                                         n=min(plan.n_candidates, PLAIN_RETRY_LINES)))
        candidates.prior = self.prior(plan, candidates)
        candidates = self.order(plan, candidates)
        candidates.kept = self.score_kept(plan, candidates)
        return candidates

    def seed_words(self, plan: TurnPlan) -> tuple[list[str], list[str], str | None, list[str]]:
        """The words a turn's seeded candidates are written around, the topic words the persona does not know, where
        the words came from, and the context words they answer (with source "replies").

        The source is the topic's words, else (no topic, or none of its words known) the context's: the content words
        of its newest line that has any the persona's writer knows (looking back `context_seed_lines`), the rarest in
        its corpus first (`MarkovModel.context_words`: "hiking" before "going"), as the recipes' lines written around
        a context are seeded too. With `seed_replies` on ("statements": where the newest line does not ask) and a
        writer that has a reply-word table, the words people name in reply to those instead ("replies";
        `MarkovModel.reply_words`), none of them said in the context already.
        """
        model = self.personas[plan.persona]
        if getattr(model, "backward", None) is None:  # a writer that cannot write around words: plain candidates only
            return [], [], None, []
        known = [w for w in plan.topic_words if model.knows(w)]
        unknown = [w for w in plan.topic_words if w not in known]
        if known:
            return known, unknown, "topic", []
        picked = []
        if self.config.context_share and self.config.context_seed_words:
            cfg = self.config
            picked = model.context_words([turn.text for turn in plan.turns[-cfg.context_seed_lines:]],
                                         cfg.context_seed_words)
            answers = getattr(model, "reply_words", None)
            if picked and answers is not None and cfg.seed_replies != "never" and (
                    cfg.seed_replies == "always" or not asks(self._said(plan, picked))):
                replied, answering = answers(picked, [turn.text for turn in plan.turns[-cfg.context_lines:]],
                                             cfg.context_seed_words)
                if replied:
                    return replied, unknown, "replies", answering
        # a topic none of whose words the persona knows is still reported, with its unknown words
        return picked, unknown, ("context" if picked else "topic" if unknown else None), []

    @staticmethod
    def _said(plan: TurnPlan, picked: list[str]) -> str:
        """The line a turn's context words came from (the newest naming any): the one that asks or not."""
        return next((turn.text for turn in reversed(plan.turns) if set(picked) & set(words(turn.text))), "")

    def generate(self, plan: TurnPlan, write_around: bool = True, n: int | None = None) -> Candidates:
        """Markov candidates in chunks, deduped as they come; stops at the budget's generation deadline.

        A share of the chunks (`topic_share` with a topic, else `context_share`) are whole lines written around the
        seed words (`seed_words`); a persona that cannot write around them (none known, or a writer saved before
        the backward table) gets plain chunks instead, as does `write_around=False`. A candidate sampled twice keeps
        its best mean log-prob. `n`: how many to write (default the plan's); a second call on the same plan adds to
        its counts and time.
        """
        cfg, budget, began = self.config, plan.budget, self.clock()
        model = self.personas[plan.persona]
        n = plan.n_candidates if n is None else n
        seeds, unknown, source, answering = self.seed_words(plan) if write_around else ([], [], None, [])
        share = cfg.topic_share if source == "topic" else cfg.context_share
        chunk = max(1, min(cfg.generation_chunk, max(128, n // 8)))
        # A turn that writes a single chunk (under load: 64 to 128 candidates, and the editor reads almost none)
        # writes it all around the words: at 16 clients x 500 ms its replies parsed 0.65 against 0.54 for half
        # and half (benchmarks/RESULTS.md, "Fifth pass").
        seeded_n = max(int(round(n * share)), n if n <= chunk and share > 0 else 0) if seeds else 0
        unique: dict[str, tuple[str, float, list[str]]] = {}  # dedupe key -> (text, best mean log-prob, words)
        report: dict[str, int] = {}
        generated = seeded = chunks = 0
        # Large turns in up to 8 chunks of at most generation_chunk (few calls, the deadline still checked often);
        # small ones in chunks of 128, so a turn that yields its thread after one chunk still has a choice.
        while generated < n:
            # Seeded and plain chunks alternate, so a budget cut short still leaves both kinds; neither kind's chunk
            # outgrows its quota.
            plain_left = n - seeded_n - (generated - seeded)
            around = seeds if seeded < seeded_n and (chunks % 2 == 0 or plain_left <= 0) else ()
            size = min(chunk, seeded_n - seeded if around else plain_left)
            chunks += 1
            if around:  # few rounds: a word whose lines the writer can only copy must not hold the turn up
                gen = model.generate(size, plan.generation_rng, around=around, max_rounds=3,
                                     unbias_above=cfg.around_unbias_above)
                seeded += size
                report["seeded"] = report.get("seeded", 0) + len(gen.candidates)
            else:
                gen = model.generate(size, plan.generation_rng)
            generated += size
            for text, lp in zip(gen.candidates, gen.logprob.tolist(), strict=True):
                keep_best(unique, text, lp if math.isfinite(lp) else -1e3)
            for key, value in (gen.report or {}).items():
                if isinstance(value, int | np.integer) and key != "unknown_start":
                    report[key] = report.get(key, 0) + int(value)
            if budget.passed(budget.generation_deadline):
                break
            # Under load the CPU stages queue for a thread: a turn that has a chunk yields its thread to the next,
            # so every turn gets to its editor in time instead of the first few generating everything (a turn with
            # no deadline has no time to save, and generates all it was asked for).
            if self._waiting_for_cpu and len(unique) >= chunk and budget.bounded:
                plan.stats["yielded"] = True
                break
        plan.written_plain += generated - seeded
        plan.stats.update(generated=plan.stats.get("generated", 0) + generated,
                          unique=plan.stats.get("unique", 0) + len(unique))
        if cfg.sentence_spans and not budget.passed(budget.generation_deadline):  # counted apart from the written
            plan.stats["spans"] = plan.stats.get("spans", 0) + self._add_spans(model, unique)
        if source:
            plan.stats["seeded"] = {"source": source, "words": seeds, "candidates": report.pop("seeded", 0)}
            if answering:
                plan.stats["seeded"]["answering"] = answering
            if unknown:
                plan.stats["seeded"]["unknown"] = unknown
        if report:
            earlier = plan.stats.get("generation", {})
            plan.stats["generation"] = {k: earlier.get(k, 0) + report.get(k, 0) for k in dict.fromkeys([*earlier, *report])}
        plan.stage_ms["generate"] = round(plan.stage_ms.get("generate", 0.0) + self._ms_since(began), 1)
        values = list(unique.values())
        return Candidates([v[0] for v in values], [v[2] for v in values], np.asarray([v[1] for v in values], np.float64))

    @staticmethod
    def _add_spans(model, unique: dict[str, tuple[str, float, list[str]]]) -> int:
        """Add to `unique` each new run of sentences of its lines of several (`sentence_spans`) that the writer's
        novelty test passes, with its line's mean log-prob; how many were added (none from a writer without one:
        a run of a new line can be a corpus line verbatim)."""
        novel = getattr(model, "is_novel", None)
        if novel is None:
            return 0
        spans: dict[str, tuple[str, float, list[str]]] = {}
        for text, lp, _ in unique.values():
            for span in sentence_spans(text):
                if span[0].isalnum():  # not "... ok" or ", we all thank you": a run that opens mid-punctuation
                    keep_best(spans, span, lp, taken=unique)
        if not spans:
            return 0
        keys = list(spans)
        ok = novel([spans[k][0] for k in keys])
        added = [k for k, good in zip(keys, ok, strict=True) if good]
        unique.update((k, spans[k]) for k in added)
        return len(added)

    def recall(self, plan: TurnPlan) -> Candidates:
        """The persona's reply index's `index_k` lines nearest the context (`index_k_kept` where the index keeps
        the editor's readings; none without an index, or with `index_k` 0).

        They were judged and embedded when the index was built; here they only join the live candidates, to pass
        the same text rules and be ordered by the same first stage.
        """
        index = self.indexes.get(plan.persona)
        keeps = self._keeps_readings(index)
        k = self.config.index_hits(keeps)
        if k and not keeps:  # hits the editor must read are scaled under load as the live ones
            k = min(k, max(plan.n_candidates, self.config.min_live_candidates))
        none = Candidates([], [], np.zeros(0))
        if index is None or k < 1:
            return none
        began = self.clock()
        try:
            hits = index.search([t.text for t in plan.turns[-self.config.context_lines :]], k,
                                last_line=self.config.index_last_line)
        except Exception as exc:  # the index is optional: a failing search leaves the turn its live candidates
            log.warning("the %s reply index failed (%s: %s); this turn uses live candidates", plan.persona,
                        type(exc).__name__, exc)
            plan.stats["index"] = {"hits": 0, "ms": self._ms_since(began), "error": type(exc).__name__}
            return none
        rows = getattr(hits, "rows", None)  # a source without rows (a test's fake) has no kept readings either
        found = Candidates(list(hits.texts), [words(t) for t in hits.texts], np.asarray(hits.logprob, np.float64),
                           from_index=np.ones(len(hits.texts), dtype=bool),
                           index_rows=None if rows is None else np.asarray(rows, np.int64))
        plan.stage_ms["index"] = self._ms_since(began)
        plan.stats["index"] = {"hits": len(found), "ms": plan.stage_ms["index"]}
        return found

    def score_kept(self, plan: TurnPlan, candidates: Candidates) -> np.ndarray | None:
        """The editor's scores of the index hits from the index's kept readings of them (`Editor.score_kept`), NaN
        for the rest; None when there are none (no index, no readings, an editor that cannot).

        The verdict the editor would give by reading them, for the cost of embedding the context (which the editor
        then keeps for its reads): in this turn's own thread, so that when the editor reads nothing the reply is
        still the editor's best of the index's hits. A turn that reaches this stage past its scoring deadline skips
        it (under heavy load most do, and reply in the first stage's order: README, "The reply index").
        """
        index = self.indexes.get(plan.persona)
        rows = candidates.rows()
        mask = rows >= 0
        if not mask.any() or not self._keeps_readings(index) or self.clock() >= plan.budget.scoring_deadline:
            return None
        began = self.clock()
        try:
            texts = [t for t, hit in zip(candidates.texts, mask, strict=True) if hit]
            scores = np.asarray(self.traits.score_kept(plan.context, index.kept(rows[mask]), texts), dtype=np.float32)
            if scores.shape != (int(mask.sum()),):
                raise ValueError(f"{scores.shape} scores for {int(mask.sum())} readings")
        except Exception as exc:  # bad readings cost their lines a read by the editor, nothing more
            log.warning("scoring the %s reply index's kept readings failed (%s: %s); the editor reads its hits",
                        plan.persona, type(exc).__name__, exc)
            return None
        out = np.full(len(candidates), np.nan, dtype=np.float32)
        out[mask] = scores
        plan.stage_ms["kept"] = self._ms_since(began)
        return out

    def _keeps_readings(self, index) -> bool:
        """Whether the editor can score this index's hits from its kept readings (then they cost no reading)."""
        return (index is not None and getattr(index, "reads", None) is not None and self.traits is not None
                and self.traits.score_kept is not None)

    def filter(self, plan: TurnPlan, candidates: Candidates) -> Candidates:
        """Every text rule (`TextFilter`); stops at the budget's filter deadline, keeping what passed by then, but
        never before the reply index's hits (they come first, at most `index_k_kept`) are through."""
        began = self.clock()
        hits = np.flatnonzero(candidates.sources())
        # A turn that waited for a thread reaches its filter past the deadline. Cut at its first chunk, it kept 63
        # of 256 hits whose scores cost nothing (the index's kept readings): at 16 clients, judged and parsed
        # replies from a quarter of what the index offered. The hits are a few hundred cheap checks.
        kept = self.text_filter.apply(
            candidates, plan.turns, plan.speaker, stop_at=plan.budget.filter_deadline, clock=self.clock,
            always=int(hits[-1]) + 1 if len(hits) else 0,
        )
        plan.stats["filtered"] = len(kept)
        plan.stage_ms["filter"] = round(plan.stage_ms.get("filter", 0.0) + self._ms_since(began), 1)
        return kept

    def prior(self, plan: TurnPlan, candidates: Candidates) -> np.ndarray:
        """The prior of each candidate (see `prior_scores`), against the newest context lines and the topic."""
        cfg = self.config
        context = [t.text for t in plan.turns[-cfg.context_lines :]]
        return prior_scores(candidates, context, plan.topic_words, overlap_weight=cfg.overlap_weight,
                            topic_weight=cfg.topic_weight)

    def order(self, plan: TurnPlan, candidates: Candidates) -> Candidates:
        """The first stage: the order the editor reads candidates in, best first.

        With a first stage, it scores every candidate and its score sets the order (the prior breaks ties);
        without one, the prior does.
        """
        prior_key = -candidates.prior
        if self.first_stage is None:
            return candidates.take(np.argsort(prior_key, kind="stable"))
        began = self.clock()
        context = [t.text for t in plan.turns[-self.config.context_lines :]]
        scores = np.zeros(0, dtype=np.float32)
        if len(candidates):
            scores = np.asarray(self.first_stage.score(context, candidates.texts, candidates.words), dtype=np.float32)
        if scores.shape != (len(candidates),):
            raise ValueError(f"the first stage returned {scores.shape} scores for {len(candidates)} candidates")
        if self.config.order_within_length and len(scores):
            scores = within_length(scores, candidates.words)
        candidates.first_stage = scores  # the order's own scores: they rank the unread when the editor reads none
        ms = self._ms_since(began)
        plan.stage_ms["first_stage"] = ms
        plan.stats["first_stage"] = {"scored": len(candidates), "ms": ms}
        # lexsort's last key is the primary one; NaN (a broken score) sorts last.
        first = np.where(np.isnan(scores), np.inf, -scores.astype(np.float64))
        return candidates.take(np.lexsort((prior_key, first)))

    def read(self, plan: TurnPlan, candidates: Candidates) -> Scores:
        """The editor: reads the candidates in order until the budget's scoring deadline (blocks this thread)."""
        began, job = self.clock(), self._submit(plan, candidates)
        scores = Scores.unread(len(candidates)) if job is None else self._scheduler.wait(job)
        self._time_editor(plan, began, job)
        return scores

    async def aread(self, plan: TurnPlan, candidates: Candidates) -> Scores:
        """The editor, awaited: reads the candidates in order until the budget's scoring deadline."""
        began, job = self.clock(), self._submit(plan, candidates)
        scores = Scores.unread(len(candidates)) if job is None else await self._await(job)
        self._time_editor(plan, began, job)
        return scores

    def _time_editor(self, plan: TurnPlan, began: float, job: ScoringJob | None) -> None:
        """The editor stage's time, split into waiting for the scorer's first round with this turn, and reading."""
        plan.stage_ms["editor"] = self._ms_since(began)
        if job is not None:
            first = job.first_round
            plan.stage_ms["editor_wait"] = plan.stage_ms["editor"] if first is None else \
                round(max(0.0, first - began) * 1000.0, 1)
            plan.stats["editor_rounds"] = job.rounds

    def pick(self, plan: TurnPlan, candidates: Candidates, scores: Scores) -> Reply:
        """The reply: argmax (or a top-k softmax sample) over what the editor read; by reading order when it read nothing."""
        n = len(candidates)
        read = scores.scored
        idx = np.flatnonzero(read)
        # Read candidates by score, then the unread ones in reading order (first stage, else prior).
        ranking = np.concatenate([idx[np.argsort(-scores.scores[idx], kind="stable")], np.flatnonzero(~read)])
        pool = ranking[: len(idx)] if len(idx) else ranking  # only read candidates compete when there are any
        reply = score = None
        alternatives: list[Scored] = []
        if n:
            choice = int(pool[0])
            if plan.top_k > 1 and len(pool) > 1:
                top = pool[: plan.top_k]
                values = scores.scores[top].astype(np.float64) if len(idx) else self._fallback_values(candidates)[top]
                # Shift before dividing: with a tiny temperature (5e-324 is a valid float) values / temperature
                # overflows to inf and inf - inf is NaN; the shifted form tends to argmax instead.
                with np.errstate(over="ignore"):  # -inf for all but the best is the intended limit
                    p = np.exp((values - values.max()) / plan.temperature)
                choice = int(plan.pick_rng.choice(top, p=p / p.sum()))

            def scored_of(i: int) -> Scored:
                return Scored(candidates.texts[i], float(scores.scores[i]) if read[i] else None, float(candidates.prior[i]))

            reply, score = candidates.texts[choice], scored_of(choice).score
            alternatives = [scored_of(int(i)) for i in ranking[: plan.n_alternatives + 1] if int(i) != choice]
            alternatives = alternatives[: plan.n_alternatives]
        from_index = candidates.sources()
        stats = {
            **plan.stats,
            "scored": len(idx),
            # Where the candidates came from: written in this turn ("live") or found in the reply index.
            "sources": {"index": int(from_index.sum()), "live": int(n - from_index.sum()),
                        "index_read": int(from_index[idx].sum()), "live_read": int(len(idx) - from_index[idx].sum()),
                        "index_kept": 0 if scores.kept is None else int((scores.kept & read).sum())},
            "elapsed_ms": round(plan.budget.elapsed_ms(), 1),
            "budget_ms": plan.budget.budget_ms,
            # True when the editor had candidates to read but the budget ran out before the first one.
            "timed_out": self._scheduler is not None and n > 0 and len(idx) == 0,
            "scorer": "reranker" if self._scheduler is not None else "prior",
            "persona": plan.persona,
            "stage_ms": dict(plan.stage_ms),
        }
        if reply is None:
            stats["reason"] = "no candidate passed the filters"
        else:
            stats["source"] = "index" if from_index[choice] else "live"
        return Reply(reply, score, alternatives, stats)

    # ------------------------------------------------------------------------------------------- plumbing

    def _fallback_values(self, candidates: Candidates) -> np.ndarray:
        """What ranks candidates when the editor read none: the first stage's score, else the prior."""
        if candidates.first_stage is not None:
            return np.nan_to_num(candidates.first_stage.astype(np.float64), nan=-1e9)
        return candidates.prior

    def _submit(self, plan: TurnPlan, candidates: Candidates) -> ScoringJob | None:
        if self._scheduler is None:
            return None
        kept = None
        if candidates.kept is not None:
            mask = ~np.isnan(candidates.kept)
            kept = (mask, candidates.kept[mask])
        return self._scheduler.submit(plan.context, candidates.texts, plan.budget.scoring_deadline, kept=kept)

    async def _await(self, job: ScoringJob) -> Scores:
        try:
            return await self._scheduler.wait_async(job)
        except asyncio.CancelledError:
            self._scheduler.cancel(job)
            raise

    def _submit_rank(
        self, history: Sequence[Turn | str | Mapping[str, str]], candidates: list[str], *,
        budget_ms: float | None, started: float | None, budget: Budget | None,
    ) -> ScoringJob:
        if self._scheduler is None:
            raise RuntimeError("this engine has no reranker to rank with")
        if budget is None:
            budget = self.budget(math.inf if budget_ms is None else budget_ms, started, generates=False)
        return self._scheduler.submit(self.context_of(as_turns(history)), list(candidates), budget.scoring_deadline)

    def _ms_since(self, began: float) -> float:
        return round((self.clock() - began) * 1000.0, 1)


def ranked(candidates: list[str], scores: Scores) -> list[Scored]:
    """The candidates by score, best first, then the unread ones in their order."""
    read = scores.scored
    order = sorted((i for i in range(len(candidates)) if read[i]), key=lambda i: (-float(scores.scores[i]), i))
    out = [Scored(candidates[i], float(scores.scores[i]), math.nan, i) for i in order]
    out += [Scored(candidates[i], None, math.nan, i) for i in range(len(candidates)) if not read[i]]
    return out
