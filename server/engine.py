"""The reply engine: generate candidates, normalize, filter, order by a cheap prior, score within the budget, pick.

One turn reads top to bottom in `Engine.reply`. The wall-clock budget covers the whole turn, counted from the
instant the caller says the request arrived (`started`), so time spent queueing is charged too. Scoring goes
through one `ScoringScheduler` worker thread shared by every caller: it takes small slices round-robin across
the waiting turns, so a large request cannot starve a small one, and a caller stops waiting at its own
deadline whatever the scorer is doing.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

DEFAULT_PERSONA = "default"


class Scorer(Protocol):
    """What the engine needs from a reranker (see `reranker.Reranker`)."""

    def score(self, context: list[str], candidates: list[str]) -> np.ndarray: ...

    def score_until(
        self, context: list[str], candidates: list[str], deadline: float
    ) -> tuple[np.ndarray, np.ndarray]: ...


class UnknownPersonaError(ValueError):
    """A request named a persona the engine has no Markov model for."""


class ScoringError(RuntimeError):
    """The scorer raised while scoring one caller's candidates; only that caller fails."""


@dataclass(frozen=True)
class EngineConfig:
    """Everything that shapes a turn; request fields override the per-turn defaults."""

    budget_ms: int = 1000
    n_candidates: int = 1024
    top_k: int = 1  # 1 = argmax; >1 = sample among the top k by softmax(score / temperature)
    temperature: float = 1.0
    n_alternatives: int = 5
    min_words: int = 1
    max_words: int = 40
    max_chars: int = 300
    blocklist_words: tuple[str, ...] = ()
    blocklist_regexes: tuple[str, ...] = ()
    remove_urls: bool = True
    repeat_window: int = 3  # the bot's last N lines are never repeated
    bot_speakers: tuple[str, ...] = ("bot", "assistant")
    context_lines: int = 8  # only the newest lines reach the scorer; older ones would be truncated anyway
    overlap_weight: float = 1.0  # prior = mean log-prob per token + overlap_weight * overlap with the context
    generation_share: float = 0.4  # generation stops early once it has used this share of the budget
    prepare_share: float = 0.6  # ... and filtering once generation and filtering have used this share
    generation_chunk: int = 128
    scoring_slice: int = 32  # candidates per scorer call; smaller = fairer and closer to the deadline
    finish_margin_ms: float = 10.0  # kept back from the budget for picking and writing the response
    topic_share: float = 0.5  # with a topic, this share of the candidates is seeded with the topic words
    topic_weight: float = 1.0  # prior bonus for a candidate naming every topic word (pro rata for some)

    def __post_init__(self) -> None:
        if not 1 <= self.top_k:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.min_words > self.max_words:
            raise ValueError(f"min_words ({self.min_words}) is above max_words ({self.max_words})")
        if self.scoring_slice < 1 or self.generation_chunk < 1:
            raise ValueError("scoring_slice and generation_chunk must be >= 1")
        if not 0.0 <= self.topic_share <= 1.0:
            raise ValueError(f"topic_share must be within [0, 1], got {self.topic_share}")
        for pattern in self.blocklist_regexes:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"blocklist regex {pattern!r} does not compile: {exc}") from exc


@dataclass(frozen=True)
class Turn:
    """One line of the history and who said it."""

    speaker: str
    text: str


@dataclass(frozen=True)
class Scored:
    """A candidate with its reranker score (None when it was not scored) and its prior."""

    text: str
    score: float | None
    prior: float


@dataclass
class Reply:
    """The picked reply, the runners-up, and the funnel counts of the turn."""

    reply: str | None
    score: float | None
    alternatives: list[Scored]
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class PreparedTurn:
    """A turn between `Engine.prepare` and `Engine.finish`: candidates in prior order, ready to score."""

    context: list[str]
    candidates: list[str]
    priors: np.ndarray  # (n,) float64, descending
    started: float
    budget_ms: float
    deadline: float  # time.monotonic() instant by which scoring must stop
    persona: str
    top_k: int
    temperature: float
    n_alternatives: int
    rng: np.random.Generator
    stats: dict[str, Any]
    report: dict[str, int]


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


# ---------------------------------------------------------------------------------------------------- text helpers

_URL = re.compile(r"(?:https?://|ftp://|www\.)\S+|\b[\w.-]+\.(?:com|org|net|io|gov|edu|co|ly|me)(?:/\S*)?\b", re.I)
# A cheap test first: the full URL pattern backtracks on every word.
_URL_HINT = re.compile(r"://|www\.|\.(?:com|org|net|io|gov|edu|co|ly|me)\b", re.I)
_WORD = re.compile(r"[\w']+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.!?;:])")
# Words too common to count as the candidate picking up on the context.
_STOPWORDS = frozenset(
    "a an the i you he she it we they me him her us them my your his its our their is are was were be been am "
    "do does did to of in on at for and or but so that this what not no yes i'm it's don't just".split()
)


def normalize(text: str) -> str:
    """Collapse whitespace and tidy spaces before punctuation."""
    return _SPACE_BEFORE_PUNCT.sub(r"\1", " ".join(text.split()))


def dedupe_key(text: str) -> str:
    """Case- and punctuation-insensitive identity of a line: 'Hi there!' and 'hi there' are the same reply."""
    return " ".join(_WORD.findall(text.casefold()))


def words(text: str) -> list[str]:
    """Lower-case word tokens."""
    return _WORD.findall(text.casefold())


def overlap(candidate_words: list[str], context_words: frozenset[str]) -> float:
    """Share of the candidate's content words that also occur in the context (0 when it has none)."""
    content = [w for w in candidate_words if w not in _STOPWORDS]
    if not content:
        return 0.0
    return sum(w in context_words for w in content) / len(content)


def topic_terms(topic: str | None) -> tuple[str, ...]:
    """The topic's content words, in order and deduped (all its words when every one is a stopword)."""
    ws = list(dict.fromkeys(words(topic or "")))[:8]  # a topic is a few words; more would only dilute the bonus
    content = [w for w in ws if w not in _STOPWORDS]
    return tuple(content or ws)


class TextFilter:
    """The outgoing-text rules: URL removal, length bounds, blocklist words and regexes."""

    def __init__(self, config: EngineConfig):
        self.config = config
        blocked = [re.escape(w.casefold()) for w in config.blocklist_words if w.strip()]
        self._words = re.compile(r"\b(?:" + "|".join(blocked) + r")\b", re.I) if blocked else None
        self._regexes = [re.compile(p, re.I) for p in config.blocklist_regexes]

    def __call__(self, text: str) -> str | None:
        """The cleaned text, or None when the candidate must not be said."""
        if self.config.remove_urls and _URL_HINT.search(text):
            text = normalize(_URL.sub(" ", text))
        return text if self.allows(text, words(text)) else None

    def allows(self, text: str, text_words: list[str]) -> bool:
        """Length bounds and blocklists, given the text's words."""
        cfg = self.config
        if not cfg.min_words <= len(text_words) <= cfg.max_words or len(text) > cfg.max_chars:
            return False
        if self._words is not None and self._words.search(text):
            return False
        return not any(r.search(text) for r in self._regexes)


# ---------------------------------------------------------------------------------------------------- scheduling


class ScoringJob:
    """One caller's candidates being scored slice by slice; wait on it, then `collect` what got scored."""

    def __init__(self, context: list[str], candidates: list[str], deadline: float | None):
        self.context = context
        self.candidates = candidates
        self.deadline = deadline
        self.next = 0
        self.scores = np.full(len(candidates), np.nan, dtype=np.float32)
        self.scored = np.zeros(len(candidates), dtype=bool)
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.abandoned = False
        self.error: BaseException | None = None
        self._callbacks: list[Callable[[], None]] = []

    def add_done_callback(self, fn: Callable[[], None]) -> None:
        """Call `fn` (from the worker thread) when the job finishes; at once if it already has."""
        with self.lock:
            if not self.done.is_set():
                self._callbacks.append(fn)
                return
        fn()

    def finish(self) -> None:
        """Mark the job done and run its callbacks."""
        with self.lock:
            self.done.set()
            callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            try:
                fn()
            except Exception:  # a caller that went away (closed event loop) must not kill the worker
                pass

    def wait(self) -> None:
        """Block until the job is done or its deadline passes."""
        timeout = None if self.deadline is None else max(0.0, self.deadline - time.monotonic())
        self.done.wait(timeout)

    def collect(self) -> tuple[np.ndarray, np.ndarray]:
        """Scores in the caller's order (NaN where unscored) and the scored mask; later slices are ignored."""
        with self.lock:
            self.abandoned = True  # the worker may still be inside a slice for this job
            if self.error is not None:
                raise ScoringError(f"scoring failed: {type(self.error).__name__}: {self.error}") from self.error
            return self.scores.copy(), self.scored.copy()


class ScoringScheduler:
    """A single worker thread that scores small slices round-robin across callers, so none starves."""

    def __init__(self, scorer: Scorer, slice_size: int = 32, min_slice: int = 4):
        self.scorer = scorer
        self.slice_size = slice_size
        self.min_slice = min(min_slice, slice_size)
        self._queue: deque[ScoringJob] = deque()
        self._cv = threading.Condition()
        self._closed = False
        # Seconds per candidate, a moving average over slices; admission control reads it (None until measured).
        self.seconds_per_candidate: float | None = None
        self.cancelled = 0
        self._thread = threading.Thread(target=self._run, name="riposte-scorer", daemon=True)
        self._thread.start()

    def submit(self, context: list[str], candidates: list[str], deadline: float | None) -> ScoringJob:
        """Queue candidates for scoring until `deadline` (None or infinite: score them all)."""
        if deadline is not None and not math.isfinite(deadline):
            deadline = None
        job = ScoringJob(context, candidates, deadline)
        if not candidates or (deadline is not None and time.monotonic() >= deadline):
            job.finish()
            return job
        with self._cv:
            if self._closed:
                raise RuntimeError("the scoring scheduler is closed")
            self._queue.append(job)
            self._cv.notify()
        return job

    def score(
        self, context: list[str], candidates: list[str], deadline: float | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores in the caller's order (NaN where unscored) and the scored mask; returns by `deadline`."""
        job = self.submit(context, candidates, deadline)
        job.wait()
        return job.collect()

    def cancel(self, job: ScoringJob) -> None:
        """Drop a job whose caller went away: out of the queue now, and no further slice is scored for it."""
        with job.lock:
            job.abandoned = True
        with self._cv:
            try:
                self._queue.remove(job)
                self.cancelled += 1
            except ValueError:  # being scored right now or already done: the worker drops it after the slice
                pass
        job.finish()

    @property
    def waiting(self) -> int:
        """Jobs queued for their next slice."""
        with self._cv:
            return len(self._queue)

    def close(self) -> None:
        """Stop the worker after its current slice."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    self._cv.wait()
                if self._closed:
                    for job in self._queue:
                        job.finish()
                    return
                job = self._queue.popleft()
                # Smaller slices when more callers wait, so a full round stays short and each gets a first slice
                # well before its deadline; one caller alone gets full-size (efficient) batches.
                size = max(self.min_slice, self.slice_size // (len(self._queue) + 1))
            if job.abandoned or (job.deadline is not None and time.monotonic() >= job.deadline):
                job.finish()
                continue
            start = job.next
            chunk = job.candidates[start : start + size]
            began = time.monotonic()
            try:
                if job.deadline is None:
                    scores = np.asarray(self.scorer.score(job.context, chunk), dtype=np.float32)
                    mask = np.ones(len(chunk), dtype=bool)
                else:
                    scores, mask = self.scorer.score_until(job.context, chunk, job.deadline)
                    scores = np.asarray(scores, dtype=np.float32)
                    mask = np.asarray(mask, dtype=bool)
            except Exception as exc:  # reported to the caller, never kills the worker
                with job.lock:
                    job.error = exc
                job.finish()
                continue
            n_done = int(mask.sum())
            if n_done:
                per = (time.monotonic() - began) / n_done
                ema = self.seconds_per_candidate
                self.seconds_per_candidate = per if ema is None else 0.8 * ema + 0.2 * per
            with job.lock:
                if not job.abandoned:
                    job.scores[start : start + len(chunk)][mask] = scores[mask]
                    job.scored[start : start + len(chunk)] = mask
                job.next = start + len(chunk)
            finished = job.next >= len(job.candidates) or not mask.all() or job.abandoned
            if finished:
                job.finish()
            else:
                with self._cv:
                    self._queue.append(job)


# ---------------------------------------------------------------------------------------------------- the engine


def load_personas(markov_dir: str | Path) -> dict[str, Any]:
    """Load `markov/`: one MarkovModel dir (persona 'default') or a folder of persona subdirs."""
    from markov import MarkovModel

    markov_dir = Path(markov_dir)
    if not markov_dir.is_dir():
        raise FileNotFoundError(f"no Markov models at {markov_dir}: build them with `python -m markov build`")
    if (markov_dir / "config.json").is_file():
        return {DEFAULT_PERSONA: MarkovModel.load(markov_dir)}
    personas = {
        sub.name: MarkovModel.load(sub)
        for sub in sorted(markov_dir.iterdir())
        if sub.is_dir() and not sub.name.startswith(".") and (sub / "config.json").is_file()
    }
    if not personas:
        raise FileNotFoundError(f"{markov_dir} holds neither a Markov model nor persona subdirectories")
    if DEFAULT_PERSONA not in personas:
        # A group-chat folder (one per speaker plus 'all') still needs a default: prefer 'all'.
        personas[DEFAULT_PERSONA] = personas.get("all", next(iter(personas.values())))
    return personas


def load_persona_meta(markov_dir: str | Path) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """Display names and who-follows-whom counts from `markov/personas.json` (empty when there is none)."""
    path = Path(markov_dir) / "personas.json"
    if not path.is_file():
        return {}, {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); rebuild the personas with `python -m markov build`") from exc
    names = {p: str(info.get("name", p)) for p, info in (meta.get("personas") or {}).items() if isinstance(info, dict)}
    follows = {
        a: {b: int(n) for b, n in nexts.items() if isinstance(n, int | float)}
        for a, nexts in (meta.get("follows") or {}).items()
        if isinstance(nexts, dict)
    }
    return names, follows


class Engine:
    """Turns a history into a reply within a wall-clock budget."""

    def __init__(
        self, personas: Mapping[str, Any], scorer: Scorer | None, config: EngineConfig | None = None, *,
        names: Mapping[str, str] | None = None, follows: Mapping[str, Mapping[str, int]] | None = None,
    ):
        if not personas:
            raise ValueError("the engine needs at least one Markov model")
        self.personas = dict(personas)
        self.names = {p: (names or {}).get(p, p) for p in self.personas}  # persona -> display name (speaker)
        self.follows = {a: dict(b) for a, b in (follows or {}).items()}  # persona -> next persona -> count
        self.scorer = scorer
        self.config = config or EngineConfig()
        self._filter = TextFilter(self.config)
        self._scheduler = ScoringScheduler(scorer, self.config.scoring_slice) if scorer is not None else None

    @classmethod
    def load(cls, model_dir: str | Path, config: EngineConfig | None = None, *, require_reranker: bool = True) -> Engine:
        """Load `model_dir/markov` (personas) and `model_dir/reranker`; without a reranker, rank by prior only."""
        model_dir = Path(model_dir)
        personas = load_personas(model_dir / "markov")
        names, follows = load_persona_meta(model_dir / "markov")
        scorer = None
        if (model_dir / "reranker").is_dir():
            from reranker import Reranker

            scorer = Reranker.load(model_dir / "reranker")
        elif require_reranker:
            raise FileNotFoundError(f"no reranker at {model_dir / 'reranker'}: train one with `python -m reranker`")
        return cls(personas, scorer, config, names=names, follows=follows)

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
        """Whether the scorer was trained on `name: text` context lines (else it sees the bare text)."""
        return bool(getattr(self.scorer, "context_speakers", False))

    def context_of(self, turns: list[Turn]) -> list[str]:
        """The newest history lines as the scorer expects them."""
        recent = turns[-self.config.context_lines :]
        if self.context_speakers:
            return [f"{t.speaker}: {t.text}" for t in recent]
        return [t.text for t in recent]

    def cancel(self, job: ScoringJob | None) -> None:
        """Stop scoring a job whose caller went away."""
        if job is not None and self._scheduler is not None:
            self._scheduler.cancel(job)

    @property
    def seconds_per_candidate(self) -> float | None:
        """The scorer's measured cost per candidate (None without a scorer or before the first slice)."""
        return None if self._scheduler is None else self._scheduler.seconds_per_candidate

    def reply(self, history: Sequence[Turn | str | Mapping[str, str]], **options) -> Reply:
        """One turn: generate, normalize, dedupe, filter, order by prior, score within the budget, pick.

        `options` are those of `prepare` (budget_ms, n_candidates, seed, persona, top_k, temperature, ...).
        """
        turn = self.prepare(history, **options)
        job = self.submit(turn)
        if job is not None:
            job.wait()
        return self.finish(turn, job)

    def prepare(
        self,
        history: Sequence[Turn | str | Mapping[str, str]],
        *,
        budget_ms: float | None = None,
        n_candidates: int | None = None,
        seed: int | None = None,
        persona: str = DEFAULT_PERSONA,
        top_k: int | None = None,
        temperature: float | None = None,
        n_alternatives: int | None = None,
        started: float | None = None,
        topic: str | None = None,
        speaker: str | None = None,
    ) -> PreparedTurn:
        """The CPU part of a turn: generate, dedupe, filter and order the candidates by prior.

        `topic` seeds part of the candidates with its words and gives candidates naming them a prior bonus;
        `speaker` names who talks now, so that speaker's own recent lines are not repeated.
        """
        cfg = self.config
        started = time.monotonic() if started is None else started
        budget_ms = cfg.budget_ms if budget_ms is None else budget_ms
        top_k = cfg.top_k if top_k is None else top_k
        temperature = cfg.temperature if temperature is None else temperature
        if persona not in self.personas:
            raise UnknownPersonaError(f"unknown persona {persona!r}; known: {', '.join(self.persona_names)}")
        if top_k < 1 or not temperature > 0:
            raise ValueError("top_k must be >= 1 and temperature > 0")
        turns = as_turns(history)
        # Negative or huge seeds (OpenAI clients send any int) map onto numpy's unsigned seed space.
        root = np.random.default_rng(None if seed is None else seed & (2**64 - 1))
        gen_rng, pick_rng = root.spawn(2)

        n_candidates = cfg.n_candidates if n_candidates is None else n_candidates
        topic_words = topic_terms(topic)
        generated, unique, report = self._generate(persona, n_candidates, gen_rng, started, budget_ms, topic_words)
        # Filtering is Python work per candidate: under load it too must stop in time (what is done is kept).
        candidates, priors = self._clean(
            turns, unique, stop_at=started + budget_ms / 1000.0 * cfg.prepare_share, topic_words=topic_words,
            speaker=speaker,
        )
        order = np.argsort(-priors, kind="stable")  # most promising first, so a tight budget scores them
        stats: dict[str, Any] = {"generated": generated, "unique": len(unique), "filtered": len(candidates)}
        if topic_words:
            stats["topic"] = {"words": list(topic_words), "seeded": report.pop("topic_seeded", 0)}
        return PreparedTurn(
            context=self.context_of(turns),
            candidates=[candidates[i] for i in order],
            priors=priors[order],
            started=started,
            budget_ms=budget_ms,
            deadline=started + budget_ms / 1000.0 - cfg.finish_margin_ms / 1000.0,
            persona=persona,
            top_k=top_k,
            temperature=temperature,
            n_alternatives=cfg.n_alternatives if n_alternatives is None else n_alternatives,
            rng=pick_rng,
            stats=stats,
            report=report,
        )

    def submit(self, turn: PreparedTurn) -> ScoringJob | None:
        """Queue the turn's candidates with the shared scorer (None when there is no scorer)."""
        if self._scheduler is None:
            return None
        return self._scheduler.submit(turn.context, turn.candidates, turn.deadline)

    def finish(self, turn: PreparedTurn, job: ScoringJob | None) -> Reply:
        """Pick the reply from whatever got scored by now."""
        n = len(turn.candidates)
        if job is not None:
            scores, scored = job.collect()
        else:
            scores, scored = np.full(n, np.nan, np.float32), np.zeros(n, bool)
        reply, score, alternatives = self._pick(
            turn.candidates, turn.priors, scores, scored, turn.top_k, turn.temperature, turn.n_alternatives, turn.rng
        )
        n_scored = int(scored.sum())
        stats: dict[str, Any] = {
            **turn.stats,
            "scored": n_scored,
            "elapsed_ms": round((time.monotonic() - turn.started) * 1000.0, 1),
            "budget_ms": turn.budget_ms,
            # True when the reranker had candidates to score but the budget ran out before the first one.
            "timed_out": job is not None and n > 0 and n_scored == 0,
            "scorer": "reranker" if self._scheduler is not None else "prior",
            "persona": turn.persona,
        }
        if turn.report:
            stats["generation"] = turn.report
        if reply is None:
            stats["reason"] = "no candidate passed the filters"
        return Reply(reply, score, alternatives, stats)

    def rank(
        self, history: Sequence[Turn | str | Mapping[str, str]], candidates: list[str], *,
        budget_ms: float | None = None, started: float | None = None,
    ) -> list[Scored]:
        """Score given candidates (any generator's drafts), best first; unscored ones (budget) last, in order."""
        job = self.submit_rank(history, candidates, budget_ms=budget_ms, started=started)
        job.wait()
        return self.ranked(candidates, job)

    def submit_rank(
        self, history: Sequence[Turn | str | Mapping[str, str]], candidates: list[str], *,
        budget_ms: float | None = None, started: float | None = None,
    ) -> ScoringJob:
        """Queue given candidates with the shared scorer, in their order; no budget means score them all."""
        if self._scheduler is None:
            raise RuntimeError("this engine has no reranker to rank with")
        started = time.monotonic() if started is None else started
        deadline = None if budget_ms is None else started + budget_ms / 1000.0 - self.config.finish_margin_ms / 1000.0
        return self._scheduler.submit(self.context_of(as_turns(history)), list(candidates), deadline)

    @staticmethod
    def ranked(candidates: list[str], job: ScoringJob) -> list[Scored]:
        """The candidates by score, best first, then the unscored ones in their order."""
        scores, scored = job.collect()
        order = sorted((i for i in range(len(candidates)) if scored[i]), key=lambda i: (-float(scores[i]), i))
        out = [Scored(candidates[i], float(scores[i]), math.nan) for i in order]
        out += [Scored(candidates[i], None, math.nan) for i in range(len(candidates)) if not scored[i]]
        return out

    # ------------------------------------------------------------------------------------------- the steps

    def _generate(
        self, persona: str, n: int, rng: np.random.Generator, started: float, budget_ms: float,
        topic_words: tuple[str, ...] = (),
    ) -> tuple[int, dict[str, tuple[str, float, list[str]]], dict[str, int]]:
        """Markov candidates in chunks, deduped as they come; stops once generation has used its share of the budget.

        With topic words, `topic_share` of the chunks start from them (the whole phrase, then each word alone);
        starts the persona does not know are dropped at their first try, and their chunks go unseeded.
        Returns the number generated, {dedupe key: (text, best mean log-prob, words)} and the generator's report.
        """
        cfg = self.config
        model = self.personas[persona]
        stop_at = started + budget_ms / 1000.0 * cfg.generation_share
        starts = [" ".join(topic_words)] if len(topic_words) > 1 else []
        starts += list(topic_words)
        seeded_n = int(round(n * cfg.topic_share)) if starts else 0
        unique: dict[str, tuple[str, float, list[str]]] = {}
        report: dict[str, int] = {}
        generated = seeded = 0
        turn = 0
        while generated < n:
            size = min(n - generated, cfg.generation_chunk)
            # Seeded and plain chunks alternate, so a budget cut short still leaves both kinds.
            start = None
            if starts and seeded < seeded_n and (turn % 2 == 0 or generated - seeded >= n - seeded_n):
                start = starts[(seeded // cfg.generation_chunk) % len(starts)]
            turn += 1
            gen = model.generate(size, rng, start=start)
            if start is not None:
                if not gen.candidates and gen.reason:  # unknown to this persona, or never in this order
                    starts.remove(start)
                    report["topic_unusable"] = report.get("topic_unusable", 0) + 1
                    continue
                seeded += size
                report["topic_seeded"] = report.get("topic_seeded", 0) + len(gen.candidates)
            generated += size
            for text, lp in zip(gen.candidates, gen.logprob.tolist(), strict=True):
                ws = words(text)
                key = " ".join(ws)  # == dedupe_key(text), with the words kept for the filters
                lp = lp if math.isfinite(lp) else -1e3
                if key and (key not in unique or lp > unique[key][1]):
                    unique[key] = (text, lp, ws)
            for key, value in (gen.report or {}).items():
                if isinstance(value, int | np.integer) and key != "unknown_start":
                    report[key] = report.get(key, 0) + int(value)
            if time.monotonic() >= stop_at:
                break
        return generated, unique, report

    def _clean(
        self, turns: list[Turn], unique: dict[str, tuple[str, float, list[str]]], stop_at: float = math.inf,
        topic_words: tuple[str, ...] = (), speaker: str | None = None,
    ) -> tuple[list[str], np.ndarray]:
        """Filter the unique candidates and compute their priors (one word split per candidate, reused)."""
        cfg = self.config
        own = {s.casefold() for s in cfg.bot_speakers} | ({speaker.casefold()} if speaker else set())
        bot_lines = [t.text for t in turns if t.speaker.casefold() in own]
        user_lines = [t.text for t in turns if t.speaker.casefold() not in own]
        forbidden = {dedupe_key(user_lines[-1])} if user_lines else set()  # never echo the user's last line
        forbidden.update(dedupe_key(t) for t in bot_lines[len(bot_lines) - cfg.repeat_window :] if cfg.repeat_window)
        context_words = frozenset(w for t in turns[-cfg.context_lines :] for w in words(t.text))
        topic = frozenset(topic_words)
        topic_bonus = cfg.topic_weight / len(topic) if topic else 0.0

        candidates, priors, seen = [], [], set()
        for n, (key, (text, lp, ws)) in enumerate(unique.items()):
            if n % 64 == 63 and time.monotonic() >= stop_at:
                break
            if cfg.remove_urls and _URL_HINT.search(text):
                text = normalize(_URL.sub(" ", text))
                ws = words(text)
                key = " ".join(ws)
            elif "  " in text or text != text.strip():
                text = normalize(text)
            if key in forbidden or key in seen or not self._filter.allows(text, ws):
                continue
            seen.add(key)  # URL removal can make two candidates equal again
            candidates.append(text)
            prior = lp + cfg.overlap_weight * overlap(ws, context_words)
            if topic:
                prior += topic_bonus * len(topic.intersection(ws))
            priors.append(prior)
        return candidates, np.asarray(priors, dtype=np.float64)

    @staticmethod
    def _pick(
        candidates: list[str], priors: np.ndarray, scores: np.ndarray, scored: np.ndarray,
        top_k: int, temperature: float, n_alternatives: int, rng: np.random.Generator,
    ) -> tuple[str | None, float | None, list[Scored]]:
        """Argmax (or top-k softmax sample) over the scored candidates; by prior when none was scored."""
        if not candidates:
            return None, None, []
        idx = np.flatnonzero(scored)
        # Scored candidates by score, then the unscored ones in prior order (the order they arrive in).
        ranked = np.concatenate([idx[np.argsort(-scores[idx], kind="stable")], np.flatnonzero(~scored)])
        pool = ranked[: len(idx)] if len(idx) else ranked  # only scored candidates compete when there are any
        choice = int(pool[0])
        if top_k > 1 and len(pool) > 1:
            top = pool[:top_k]
            values = scores[top].astype(np.float64) if len(idx) else priors[top]
            logits = values / temperature
            p = np.exp(logits - logits.max())
            choice = int(rng.choice(top, p=p / p.sum()))

        def scored_of(i: int) -> Scored:
            return Scored(candidates[i], float(scores[i]) if scored[i] else None, float(priors[i]))

        alternatives = [scored_of(int(i)) for i in ranked[: n_alternatives + 1] if int(i) != choice][:n_alternatives]
        return candidates[choice], scored_of(choice).score, alternatives

