"""The editor's reading room: one worker thread reads the candidates of every turn in flight, in shared rounds.

A turn hands its candidates, best first, to `ScoringScheduler.submit` and gets a `ScoringJob`, whose `future`
(a `concurrent.futures.Future`) resolves to the turn's `Scores` when the job is finished: every candidate read,
its deadline reached, or its caller gone. Sync callers wait with
`wait(job)`, async ones with `await wait_async(job)` (`asyncio.wrap_future`, no thread held); either way a
caller whose deadline comes while the worker is busy takes what was read so far (`ScoringJob.close`), so the
reply never waits for a round to end.

The worker runs rounds. A round takes the next few candidates of every waiting job (`slice_size` in all, shared
equally) and, when the editor can (`score_many`: the default editor embeds each candidate alone), reads them all
in one batched call, so sixteen turns in flight cost one forward pass instead of sixteen small ones, and a turn
that arrives meanwhile waits one round at most. Jobs that have been read least come first, then those whose
deadline is nearest, so none starves. A round ends by the earliest deadline among its jobs; a job with less than
`round_ms` left stays out of rounds shared with jobs that have more, so it cannot cut theirs short.

What still fits before a deadline is the editor's own call (its cost model, `editor.cost`: seconds from padded
tokens, learned from every batch it runs); admission control reads the same model (`seconds_per_candidate`), and
so does the worker before it starts a round for jobs about to end. An editor without one (a test fake, say) is read
to its deadline, and admission's estimate is off.

An approximate editor (the default editor on int8) has `refine`: its best few candidates rescored exactly, so the reply is
picked on exact scores. A job then stops reading early by what that editor's cost model (`refine_cost`) predicts
refining what it has read will take, and the worker refines it by its deadline; a caller whose deadline comes
first takes the scores unrefined.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

# Padded tokens of a typical writer candidate in the editor's batches (MiniLM wordpieces of chitchat Markov lines:
# 15 on average, plus [CLS]/[SEP] and the padding of a length-sorted batch), kept a little high so that a round
# planned with it fits. An editor that knows better says so with a `tokens_per_candidate` attribute.
DEFAULT_TOKENS_PER_CANDIDATE = 24.0

log = logging.getLogger(__name__)


# Defaults of the reading room, written once: EngineConfig's scoring_slice and scoring_round_ms start from these.
SLICE_SIZE = 32  # candidates per round, shared by the turns waiting; smaller = fairer, less efficient
ROUND_MS = 50.0  # a turn with less time left stays out of rounds shared with turns that have more
# ... or with less than the editor needs, by its cost model, to read this many candidates: a round that ends
# before its first batch fits reads nothing, and under load every round would (measured: 401 of 441 rounds at 16
# clients read nothing when the earliest turn's deadline, ~70 ms away, bounded them all).
MIN_ROUND_CANDIDATES = 8


@runtime_checkable
class Editor(Protocol):
    """What the engine needs from an editor: any kind `reranker.load` returns, or a test's fake.

    `score` and `score_until` are the contract. The rest is optional (a fake has none of it) and read only through
    `EditorTraits`: `score_many` (several turns in one pass), `refine` with `refine_cost` and `refine_top` (an
    approximate editor's exact rescoring), `cost` (its cost model), `tokens_per_candidate`, `context_speakers` and
    `tokenizer`; and `score_kept` (scores from a reply index's kept readings, which the engine calls from a turn's
    own thread).
    """

    def score(self, context: list[str], candidates: list[str]) -> np.ndarray: ...

    def score_until(
        self, context: list[str], candidates: list[str], deadline: float
    ) -> tuple[np.ndarray, np.ndarray]: ...


class EditorTraits:
    """The optional parts of an editor, probed in this one place; each is None (or a neutral value) when absent."""

    def __init__(self, editor: Editor) -> None:
        self.editor = editor

    @property
    def score_many(self) -> Callable | None:
        """Scores several turns' candidates in one pass, or None."""
        score_many = getattr(self.editor, "score_many", None)
        return score_many if callable(score_many) else None

    @property
    def read_contexts(self) -> Callable | None:
        """Embeds several contexts in one pass ahead of reading their candidates (`context_vectors_many`), or None."""
        read = getattr(self.editor, "context_vectors_many", None)
        return read if callable(read) else None

    @property
    def score_kept(self) -> Callable | None:
        """Scores candidates from their kept readings (`Editor.score_kept`: a reply index's hits), or None.

        Thread-safe where present: a turn's own thread calls it beside the scheduler's."""
        score_kept = getattr(self.editor, "score_kept", None)
        return score_kept if callable(score_kept) else None

    @property
    def refine(self) -> Callable | None:
        """Rescores an approximate editor's best candidates exactly, or None."""
        refine = getattr(self.editor, "refine", None)
        return refine if callable(refine) else None

    @property
    def cost(self) -> Any | None:
        """The cost model (`predict(tokens)` seconds, `per_token`, `overhead`), or None."""
        return getattr(self.editor, "cost", None)

    @property
    def refine_cost(self) -> Any | None:
        """The cost model of `refine`'s exact forward, or None where refining does nothing."""
        return getattr(self.editor, "refine_cost", None) if self.refine is not None else None

    @property
    def refine_top(self) -> int:
        """How many best candidates `refine` rescores (0 without it)."""
        return int(getattr(self.editor, "refine_top", 0) or 0) if self.refine is not None else 0

    @property
    def tokens_per_candidate(self) -> float:
        """Padded tokens of a typical candidate, for the cost model."""
        return float(getattr(self.editor, "tokens_per_candidate", DEFAULT_TOKENS_PER_CANDIDATE))

    @property
    def context_speakers(self) -> bool:
        """Whether the editor was trained on `name: text` context lines (else it reads the bare text)."""
        return bool(getattr(self.editor, "context_speakers", False))

    @property
    def tokenizer(self) -> Any | None:
        """The tokenizer the editor reads with (a callable HF tokenizer), or None."""
        tokenizer = getattr(self.editor, "tokenizer", None)
        return tokenizer if callable(tokenizer) else None


def traits_of(editor: Editor | None) -> EditorTraits | None:
    """The editor's optional parts (`EditorTraits`), or None without an editor."""
    return None if editor is None else EditorTraits(editor)


class ScoringError(RuntimeError):
    """The editor raised while reading one caller's candidates; only that caller fails."""


@dataclass(frozen=True)
class Scores:
    """What the editor scored of one job: scores in the caller's order (NaN where unscored), the scored mask (read,
    or scored from kept readings), and which were scored from kept readings."""

    scores: np.ndarray  # (n,) float32
    scored: np.ndarray  # (n,) bool
    kept: np.ndarray | None = None  # (n,) bool: scored from kept readings, not read (None: none were)

    @classmethod
    def unread(cls, n: int) -> Scores:
        """Nothing read of n candidates."""
        return cls(np.full(n, np.nan, dtype=np.float32), np.zeros(n, dtype=bool))

    @property
    def n_scored(self) -> int:
        """How many candidates the editor scored (read, or from kept readings)."""
        return int(self.scored.sum())


class ScoringJob:
    """One turn's candidates, read a few at a time in their order; `future` resolves to the job's `Scores`."""

    def __init__(self, context: list[str], candidates: list[str], deadline: float = math.inf,
                 kept: tuple[np.ndarray, np.ndarray] | None = None):
        self.context = context
        self.candidates = candidates
        self.deadline = deadline
        self.future: Future[Scores] = Future()
        # Running from the start, so that asyncio cancelling a waiter (a timeout, a client gone) cannot cancel the
        # job itself: only `finish` resolves it.
        self.future.set_running_or_notify_cancel()
        n = len(candidates)
        self._scores = np.full(n, np.nan, dtype=np.float32)
        self._scored = np.zeros(n, dtype=bool)
        self._pending = np.arange(n)  # the reading order; _pending[_next:] is still to read
        self._next = 0
        # Candidates the editor has scored already, from kept readings (mask, scores): never read.
        self._kept_scored: np.ndarray | None = None
        if kept is not None:
            mask, scores = kept
            self._scores[mask], self._scored[mask], self._kept_scored = scores, True, mask
            self._pending = np.flatnonzero(~mask)
        self.n_read = 0
        self.context_read = False  # the editor has embedded this job's context (`EditorTraits.read_contexts`)
        self.rounds = 0  # rounds of the worker that read some of this job
        self.first_round: float | None = None  # the clock when the first of them began (None: never read)
        self._lock = threading.Lock()

    @property
    def done(self) -> bool:
        """Whether the job's scores are final."""
        return self.future.done()

    @property
    def remaining(self) -> int:
        """Candidates not read yet."""
        return len(self._pending) - self._next

    def take(self, k: int) -> np.ndarray:
        """The indices of the next k candidates to read; `record` gives back those the editor did not reach."""
        with self._lock:
            idx = self._pending[self._next : self._next + k].copy()
            self._next += len(idx)
            return idx

    def record(self, idx: np.ndarray, scores: np.ndarray, read: np.ndarray) -> None:
        """Keep the scores read of `idx`; the unread go back to the front, in their order, for a later round."""
        with self._lock:
            if self.future.done():  # the caller has taken its scores: what arrives later is dropped
                return
            self._scores[idx[read]] = scores[read]
            self._scored[idx[read]] = True
            self.n_read += int(read.sum())
            unread = idx[~read]
            self._next -= len(unread)
            self._pending[self._next : self._next + len(unread)] = unread

    def scores(self, *, read_only: bool = False) -> np.ndarray:
        """The scores so far (NaN where unread), a copy; `read_only`: NaN for those from kept readings too."""
        with self._lock:
            out = self._scores.copy()
            if read_only and self._kept_scored is not None:
                out[self._kept_scored] = np.nan
            return out

    def rescore(self, scores: np.ndarray) -> None:
        """Replace the scores of the candidates read (the refine's exact ones); the read mask and the scores from
        kept readings (exact already) stay."""
        with self._lock:
            if not self.future.done():
                read = self._scored if self._kept_scored is None else self._scored & ~self._kept_scored
                self._scores[read] = scores[read]

    def finish(self, error: BaseException | None = None) -> None:
        """Resolve the future now, with the scores read so far or with the editor's error; later calls do nothing."""
        with self._lock:
            if self.future.done():
                return
            if error is None:
                self.future.set_result(Scores(self._scores.copy(), self._scored.copy(), self._kept_scored))
                return
            failure = ScoringError(f"scoring failed: {type(error).__name__}: {error}")
            failure.__cause__ = error
            self.future.set_exception(failure)

    def close(self) -> Scores:
        """The caller's last word: finish the job if the worker has not, and return its scores (ScoringError if it failed)."""
        self.finish()
        return self.future.result()


class ScoringScheduler:
    """One worker thread reading every job's candidates in rounds that share the editor's batches."""

    def __init__(
        self, editor: Editor, *, slice_size: int = SLICE_SIZE, min_slice: int = 4, round_ms: float = ROUND_MS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.editor = editor
        self.slice_size = slice_size  # candidates per round, shared by the waiting jobs
        self.min_slice = min(min_slice, slice_size)  # per job and call when the editor reads one job at a time
        self.round_s = round_ms / 1000.0  # a job with less time left stays out of rounds shared with others
        self.clock = clock
        self.traits = EditorTraits(editor)
        self.batched = self.traits.score_many is not None
        self.refines = self.traits.refine is not None
        self.cancelled = 0
        self.rounds = 0
        self._jobs: list[ScoringJob] = []
        self._cv = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="riposte-editor", daemon=True)
        self._thread.start()

    # ---- the cost model (the editor's own) ---------------------------------------------------------------

    @property
    def cost(self) -> Any | None:
        """The editor's cost model (`predict(tokens)` seconds, `per_token`, `overhead`), or None when it has none."""
        return self.traits.cost

    @property
    def tokens_per_candidate(self) -> float:
        """Padded tokens of a typical candidate, for the cost model."""
        return self.traits.tokens_per_candidate

    @property
    def seconds_per_candidate(self) -> float | None:
        """What one more candidate in a batch costs, by the editor's cost model (None without one)."""
        cost = self.cost
        return None if cost is None else float(cost.per_token) * self.tokens_per_candidate

    def refine_seconds(self, n_read: int) -> float:
        """What refining the best of `n_read` candidates is predicted to take (0 when the editor is exact)."""
        cost = self.traits.refine_cost
        k = min(self.traits.refine_top, max(n_read, 1))
        return 0.0 if cost is None or k < 1 else float(cost.predict(int(k * self.tokens_per_candidate)))

    def read_until(self, job: ScoringJob) -> float:
        """When the job stops reading: its deadline, less the time to refine what it has read by then."""
        return job.deadline - self.refine_seconds(job.n_read) if math.isfinite(job.deadline) else job.deadline

    def fits(self, n: int, seconds: float) -> int:
        """How many of n candidates the cost model says can be read in `seconds` (n when there is no model)."""
        cost = self.cost
        if cost is None or not math.isfinite(seconds):
            return n
        # 10% margin, as the editor keeps: the model predicts a typical batch, not a worst case.
        per = float(cost.per_token) * self.tokens_per_candidate
        return max(0, min(n, int((0.9 * seconds - float(cost.overhead)) / per))) if per > 0 else n

    # ---- submitting and waiting --------------------------------------------------------------------------

    def submit(self, context: list[str], candidates: list[str], deadline: float = math.inf,
               kept: tuple[np.ndarray, np.ndarray] | None = None) -> ScoringJob:
        """Queue candidates (best first) to be read until `deadline` (a clock instant; inf: read them all).

        `kept` (mask, scores): candidates the editor has scored already, from kept readings; they are not read.
        """
        if kept is not None and len(kept[0]) != len(candidates):
            raise ValueError(f"kept scores for {len(kept[0])} candidates, not {len(candidates)}")
        job = ScoringJob(list(context), list(candidates), deadline, kept)
        if job.remaining == 0 or self.clock() >= deadline:  # nothing to read (none, or all scored from kept readings)
            job.finish()
            return job
        with self._cv:
            if self._closed:
                raise RuntimeError("the scoring scheduler is closed")
            self._jobs.append(job)
            self._cv.notify()
        return job

    def wait(self, job: ScoringJob) -> Scores:
        """Block until the job is finished or its deadline passes; the scores read by then."""
        try:
            return job.future.result(timeout=self._timeout(job))
        except TimeoutError:
            return job.close()

    async def wait_async(self, job: ScoringJob) -> Scores:
        """Await the job without holding a thread, until it is finished or its deadline passes; the scores read by then."""
        try:
            return await asyncio.wait_for(asyncio.wrap_future(job.future), self._timeout(job))
        except TimeoutError:
            return job.close()

    def score(self, context: list[str], candidates: list[str], deadline: float = math.inf) -> Scores:
        """Submit and wait: the scores read by `deadline`."""
        return self.wait(self.submit(context, candidates, deadline))

    def cancel(self, job: ScoringJob) -> None:
        """Drop a job whose caller went away: out of the queue now, and nothing more is read for it."""
        with self._cv:
            if job in self._jobs:
                self._jobs.remove(job)
                self.cancelled += 1
        job.finish()

    @property
    def waiting(self) -> int:
        """Jobs not finished yet."""
        with self._cv:
            return len(self._jobs)

    def queue(self) -> tuple[int, int]:
        """Jobs not finished yet, and the candidates they still have to read."""
        with self._cv:
            return len(self._jobs), sum(job.remaining for job in self._jobs)

    def close(self) -> None:
        """Stop the worker after its current round; unfinished jobs resolve with what they have."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout=5)

    def _timeout(self, job: ScoringJob) -> float | None:
        return None if not math.isfinite(job.deadline) else max(0.0, job.deadline - self.clock())

    # ---- the worker --------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._jobs and not self._closed:
                    self._cv.wait()
                if self._closed:
                    jobs, self._jobs = self._jobs, []
                    for job in jobs:
                        job.finish()
                    return
                jobs = list(self._jobs)
            live = self._prune(jobs)
            self._read_contexts(live)
            now = self.clock()
            ready = self._ready(live, now)
            if ready:
                self._round(ready, now)
            elif live:  # nothing fits before any deadline: wait for a job to end, or for a new one to arrive
                with self._cv:
                    self._cv.wait(timeout=max(0.001, min(self.read_until(job) for job in live) - now))

    def _prune(self, jobs: list[ScoringJob]) -> list[ScoringJob]:
        """Finish the jobs with nothing left to read (all read, or past their reading time), refined first; the rest."""
        now = self.clock()
        live, ended = [], []
        for job in jobs:
            # Not "nothing more fits by the cost model": a job kept waiting lets the editor try, and an editor that
            # refuses relaxes its estimate; finishing jobs on a stale high estimate would starve it of evidence.
            if job.done or job.remaining == 0 or now >= self.read_until(job):
                ended.append(job)
            else:
                live.append(job)
        if ended:
            with self._cv:
                self._jobs = [job for job in self._jobs if job not in ended]
            for job in ended:
                self._refine(job)
                job.finish()
        return live

    def _refine(self, job: ScoringJob) -> None:
        """Rescore the job's best candidates exactly (an approximate editor's `refine`), by the job's deadline."""
        if not self.refines or job.done or not job.n_read or self.clock() >= job.deadline:
            return
        try:
            # Only what the editor read: scores from kept readings are exact already, and refining them would
            # spend the turn's last milliseconds reading index lines again.
            job.rescore(np.asarray(self.traits.refine(job.context, job.candidates, job.scores(read_only=True),
                                                      deadline=job.deadline), dtype=np.float32))
        except Exception:  # the approximate scores still make a reply: a failed refine fails nobody
            log.warning("the editor's refine failed; keeping its first scores", exc_info=True)
            return

    def _read_contexts(self, live: list[ScoringJob]) -> None:
        """Embed the contexts of the jobs new since the last round, in one batch, before a round is planned.

        Inside a round their forwards would spend the round's time before its deadline (the earliest of its
        jobs), and the cost model, which knows candidates, would not see them coming.
        """
        new = [job for job in live if not job.context_read]
        if not new or self.traits.read_contexts is None:
            return
        try:
            self.traits.read_contexts([job.context for job in new])
        except Exception:  # the round reads them again and fails the jobs it must, one by one
            log.warning("embedding %d contexts failed; the round will try again", len(new), exc_info=True)
        for job in new:
            job.context_read = True

    def _ready(self, live: list[ScoringJob], now: float) -> list[ScoringJob]:
        """The jobs this round serves.

        A round ends by the earliest deadline among its jobs, so a job due within `round_ms`, or too soon for the
        cost model to fit `MIN_ROUND_CANDIDATES` candidates, would cut a shared round short for everyone: it is
        left out while others have time (its caller takes what it has at its deadline). When every job is that
        close, those that can still fit one candidate get a round of their own.
        """
        far = [job for job in live if (left := self.read_until(job) - now) >= self.round_s
               and self.fits(MIN_ROUND_CANDIDATES, left) == MIN_ROUND_CANDIDATES]
        return far or [job for job in live if self.fits(1, self.read_until(job) - now) >= 1]

    def _round(self, live: list[ScoringJob], now: float) -> None:
        """Read the next candidates of the live jobs: one batched call, or one call per job."""
        self.rounds += 1
        plan, deadline = self._plan(live, now)
        for job, _ in plan:
            job.rounds += 1
            if job.first_round is None:
                job.first_round = now
        requests = [(job.context, [job.candidates[i] for i in idx]) for job, idx in plan]
        if self.batched:
            try:
                results: list[Any] = self.traits.score_many(requests, deadline)
            except Exception:  # read them one by one, so that a failure fails its own job alone
                log.warning("a batched scoring round failed; reading its jobs one by one", exc_info=True)
                results = [self._read_one(request, deadline) for request in requests]
        else:
            # One call per job, each to its own deadline (the round's would leave the later calls no time).
            results = [self._read_one(request, self.read_until(job)) for request, (job, _) in zip(requests, plan, strict=True)]
        n_read = 0
        for (job, idx), result in zip(plan, results, strict=True):
            if isinstance(result, BaseException):
                job.finish(result)
            else:
                scores, read = result
                job.record(idx, np.asarray(scores, dtype=np.float32), np.asarray(read, dtype=bool))
                n_read += int(np.count_nonzero(read))
        if log.isEnabledFor(logging.DEBUG):  # where a round's time goes, for a profile under load
            log.debug("round %d: %d jobs, %d offered, %d read in %.1f ms; it had %.1f ms", self.rounds, len(plan),
                      sum(len(idx) for _, idx in plan), n_read, (self.clock() - now) * 1000, (deadline - now) * 1000)

    def _plan(self, live: list[ScoringJob], now: float) -> tuple[list[tuple[ScoringJob, np.ndarray]], float]:
        """Which candidates of which jobs this round reads, and the instant it must end by.

        A round offers `slice_size` candidates in all, an equal share per job (at least one each), and ends by the
        earliest deadline among its jobs. The editor reads them front to back and stops at that deadline (its cost
        model decides what still fits); what it did not reach goes back to its job for the next round.
        """
        # The jobs read least so far first, then the nearest deadline: every turn gets its first candidates read.
        live = sorted(live, key=lambda job: (job.n_read, job.deadline))
        share = max(1 if self.batched else self.min_slice, self.slice_size // len(live))
        plan = [(job, job.take(share)) for job in live]
        return plan, min(self.read_until(job) for job, _ in plan)

    def _read_one(self, request: tuple[list[str], list[str]], deadline: float) -> tuple[np.ndarray, np.ndarray] | Exception:
        """One job's slice on its own; the editor's exception is returned, never raised, so the worker lives on."""
        context, candidates = request
        try:
            if not math.isfinite(deadline):
                return np.asarray(self.editor.score(context, candidates)), np.ones(len(candidates), dtype=bool)
            return self.editor.score_until(context, candidates, deadline)
        except Exception as exc:
            log.error("the editor failed on %d candidates; their turn fails, the others go on", len(candidates),
                      exc_info=exc)
            return exc
