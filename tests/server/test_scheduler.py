"""The scoring scheduler: the job as a Future, rounds that batch every waiting turn, deadlines, faults, fairness."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from concurrent.futures import Future

import numpy as np
import pytest

from server.scheduler import ScoringError, ScoringScheduler
from tests.server.conftest import ClockedScorer, FakeClock, FixedCost, OverlapScorer


@pytest.mark.realtime
def test_scheduler_is_fair_a_small_job_is_not_starved_by_a_big_one():
    scorer = OverlapScorer(delay_per_candidate=0.002)
    sched = ScoringScheduler(scorer, slice_size=16)
    try:
        big_done = {}

        def big():
            read = sched.score(["x"], [f"big {i}" for i in range(2000)], time.monotonic() + 1.2)
            big_done["t"] = time.monotonic()
            big_done["n"] = read.n_scored

        t = threading.Thread(target=big)
        t.start()
        time.sleep(0.05)
        start = time.monotonic()
        read = sched.score(["x"], [f"small {i}" for i in range(20)], start + 3.0)
        small_took = time.monotonic() - start
        t.join()
        assert read.scored.all() and not np.isnan(read.scores).any()
        # 20 candidates at 2 ms each, interleaved with 16-candidate slices of the big job: well under a second,
        # while the big job alone needs 4 s and is cut at its 1.2 s deadline.
        assert small_took < 0.5
        assert 0 < big_done["n"] < 2000
    finally:
        sched.close()


def test_scheduler_reports_scorer_errors_and_keeps_working():
    class Broken(OverlapScorer):
        def score_until(self, context, candidates, deadline):
            if candidates[0] == "boom":
                raise RuntimeError("kaput")
            return super().score_until(context, candidates, deadline)

    sched = ScoringScheduler(Broken(), slice_size=4)
    try:
        with pytest.raises(ScoringError, match="scoring failed: RuntimeError: kaput"):
            sched.score(["x"], ["boom"], time.monotonic() + 10)
        assert sched.score(["x"], ["fine"], time.monotonic() + 10).scored.all()
        assert sched.score(["x"], ["a", "b"]).scored.all()  # no deadline: read everything
    finally:
        sched.close()


def test_partial_scores_are_collected_at_the_deadline_while_the_worker_is_busy():
    clock = FakeClock()
    entered, release = threading.Event(), threading.Event()

    class Stuck(OverlapScorer):
        def score_many(self, requests, deadline):
            if self.calls:  # the second round never ends until the test says so
                entered.set()
                release.wait(10)
            self.calls += 1
            return [(np.arange(len(c), dtype=np.float32), np.ones(len(c), bool)) for _, c in requests]

    sched = ScoringScheduler(Stuck(), slice_size=4, clock=clock)
    try:
        job = sched.submit(["x"], [f"c{i}" for i in range(12)], deadline=clock() + 1.0)
        assert entered.wait(10)  # the first round (4 candidates) is recorded, the second is stuck in the scorer
        clock.advance(1.0)  # the deadline passes while the worker is mid-round
        read = sched.wait(job)
        assert read.n_scored == 4 and read.scored[:4].all() and job.done
        release.set()
        assert sched.wait(job).n_scored == 4  # what the stuck round returns later is dropped
    finally:
        release.set()
        sched.close()


def test_the_scoring_job_is_a_future_that_asyncio_can_await():
    clock = FakeClock()
    sched = ScoringScheduler(ClockedScorer(clock, per_candidate=1 / 128), clock=clock)
    try:
        job = sched.submit(["dogs"], ["dogs", "cats", "dogs and cats"], deadline=math.inf)
        read = asyncio.run(sched.wait_async(job))
        assert isinstance(job.future, Future) and job.future.done() and read.n_scored == 3
        assert read.scores[0] > read.scores[1]
    finally:
        sched.close()


def test_rounds_batch_the_candidates_of_every_waiting_job():
    clock = FakeClock()
    release = threading.Event()

    class Gate(ClockedScorer):
        def score_many(self, requests, deadline=math.inf):
            release.wait(10)  # hold the first round until every job is queued
            return super().score_many(requests, deadline)

    scorer = Gate(clock, per_candidate=1 / 1024)
    sched = ScoringScheduler(scorer, slice_size=32, clock=clock)
    try:
        jobs = [sched.submit([f"context {j}"], [f"job {j} line {i}" for i in range(40)], deadline=clock() + 10)
                for j in range(4)]
        release.set()
        results = [sched.wait(job) for job in jobs]
        assert all(r.n_scored == 40 for r in results)
        # After the first round (job 0 alone), every round read all waiting jobs in one call, 8 each (32 // 4).
        shared = [b for b in scorer.batches if len(b) == 4]
        assert shared and all(len(cands) == 8 for batch in shared for _, cands in batch)
        assert sorted(ctx[0] for ctx, _ in shared[0]) == [f"context {j}" for j in range(4)]
    finally:
        sched.close()


def test_a_failure_in_a_shared_round_fails_only_its_own_job():
    clock = FakeClock()

    class Picky(ClockedScorer):
        def score_many(self, requests, deadline=math.inf):
            if any("BOOM" in cands for _, cands in requests):
                if len(requests) > 1:
                    raise ValueError("one bad candidate spoils the batch")
                raise ValueError("cannot score BOOM")
            return super().score_many(requests, deadline)

    sched = ScoringScheduler(Picky(clock, per_candidate=1 / 1024), clock=clock)
    try:
        bad = sched.submit(["x"], ["fine", "BOOM"], deadline=clock() + 10)
        good = sched.submit(["x"], ["fine", "also fine"], deadline=clock() + 10)
        with pytest.raises(ScoringError, match="cannot score BOOM"):
            sched.wait(bad)
        assert sched.wait(good).n_scored == 2
    finally:
        sched.close()


def test_the_cost_model_is_the_scorers_own_and_a_job_with_no_time_for_one_candidate_is_not_read():
    clock = FakeClock()
    scorer = ClockedScorer(clock, per_candidate=1 / 128)
    scorer.cost = FixedCost(per_token=1 / 128 / 24)  # 24 tokens a candidate: 1/128 s a candidate
    sched = ScoringScheduler(scorer, clock=clock)
    try:
        assert sched.seconds_per_candidate == pytest.approx(1 / 128)
        assert sched.fits(100, 0.5) == int(0.9 * 0.5 * 128)
        # 5 ms left: not one candidate (7.8 ms) fits, so no round is run for it; its caller takes nothing.
        job = sched.submit(["x"], ["a", "b"], deadline=clock() + 0.005)
        assert sched.wait(job).n_scored == 0 and scorer.calls == 0
    finally:
        sched.close()


def test_editor_score_many_matches_each_request_scored_alone(tmp_path_factory):
    import torch

    from reranker.editor import Editor
    from tests.reranker.conftest import write_tiny_bert

    editor = Editor.from_backbone(write_tiny_bert(tmp_path_factory.mktemp("bert")), dtype=torch.float32)
    requests = [(["hello there", "how are you"], ["fine", "good thanks", "the cat sat", "fine"]),
                (["pizza?"], ["yes", "fine", "no pizza for me"]), ([], ["anything"])]
    many = editor.score_many(requests)
    for (context, candidates), (scores, scored) in zip(requests, many, strict=True):
        alone, _ = editor.score_until(context, candidates, math.inf)
        assert scored.all()
        np.testing.assert_allclose(scores, alone, rtol=1e-4, atol=1e-4)  # other batches, other padding
    assert editor.cost is editor.biencoder.cost
    late = editor.score_many(requests, time.monotonic() - 1.0)
    assert not any(scored.any() for _, scored in late)


def test_a_job_near_its_deadline_is_left_out_of_shared_rounds_but_read_when_alone():
    clock = FakeClock()
    scorer = ClockedScorer(clock, per_candidate=1 / 1024)
    sched = ScoringScheduler(scorer, slice_size=64, round_ms=128, clock=clock)
    try:
        near = sched.submit(["x"], [f"near {i}" for i in range(64)], deadline=clock() + 1 / 64)  # 15.6 ms left
        # Alone, it gets a short round of its own up to its deadline: 16 candidates at 1/1024 s.
        assert sched.wait(near).n_scored == 16
        far = sched.submit(["x"], [f"far {i}" for i in range(64)], deadline=clock() + 1.0)
        assert sched.wait(far).n_scored == 64
        assert all(len(batch) == 1 for batch in scorer.batches)
    finally:
        sched.close()


def test_an_approximate_scorer_is_refined_by_the_deadline_and_reading_stops_early_for_it():
    clock = FakeClock()

    class Approximate(ClockedScorer):
        refine_top = 2

        def refine(self, context, candidates, scores, top_k=None, deadline=math.inf):
            # The exact forward takes its cost model's time and reverses the order of the approximate best two.
            self.clock.advance(self.refine_cost.predict(int(self.refine_top * 24)))
            finite = np.flatnonzero(np.isfinite(scores))
            best = finite[np.argsort(-scores[finite], kind="stable")[: self.refine_top]]
            out = scores.copy()
            out[best] = scores[best][::-1]
            return out

    scorer = Approximate(clock, per_candidate=1 / 128)
    scorer.refine_cost = FixedCost(per_token=1 / 16 / 48)  # refining two candidates takes 1/16 s
    sched = ScoringScheduler(scorer, round_ms=125, clock=clock)
    try:
        assert sched.refine_seconds(0) == 1 / 32 and sched.refine_seconds(1) == 1 / 32 and sched.refine_seconds(5) == 1 / 16
        job = sched.submit(["dogs"], ["dogs dogs", "dogs"] + [f"cat {i}" for i in range(100)], deadline=clock() + 0.5)
        read = sched.wait(job)
        # Reading stops 1/16 s early (refining two), so the refine ends at the deadline: 0.4375 s of reading, 56 read.
        assert read.n_scored == 56 and clock() == 1024.5
        assert read.scores[1] > read.scores[0]  # the refined order: "dogs" now beats "dogs dogs"
    finally:
        sched.close()


def test_scores_from_kept_readings_are_never_read_nor_refined_and_a_job_of_them_alone_finishes_at_once():
    clock = FakeClock()

    class Approximate(ClockedScorer):
        refine_top = 2

        def refine(self, context, candidates, scores, top_k=None, deadline=math.inf):
            self.refined = scores.copy()
            return scores + 100.0  # every score it is given, moved

    scorer = Approximate(clock, per_candidate=1 / 128)
    scorer.refine_cost = FixedCost(per_token=1 / 16 / 48)
    sched = ScoringScheduler(scorer, round_ms=125, clock=clock)
    try:
        candidates = ["kept a", "dogs", "kept b", "cats"]
        kept = (np.array([True, False, True, False]), np.array([7.0, 9.0], np.float32))
        read = sched.wait(sched.submit(["dogs"], candidates, deadline=clock() + 0.5, kept=kept))
        assert read.scored.all() and read.kept.tolist() == [True, False, True, False]
        assert scorer.read == ["dogs", "cats"]  # only the live ones were read
        assert np.isnan(scorer.refined[[0, 2]]).all() and np.isfinite(scorer.refined[[1, 3]]).all()
        assert read.scores[0] == 7.0 and read.scores[2] == 9.0  # exact already: refine left them alone
        assert read.scores[1] == scorer.one(["dogs"], "dogs") + 100.0
        alone = sched.submit(["dogs"], ["kept a", "kept b"], deadline=clock() + 0.5,
                             kept=(np.array([True, True]), np.array([1.0, 2.0], np.float32)))
        assert alone.done and alone.close().scores.tolist() == [1.0, 2.0] and len(scorer.read) == 2
        with pytest.raises(ValueError, match="kept scores for 1 candidates"):
            sched.submit(["dogs"], ["a", "b"], kept=(np.array([True]), np.array([1.0], np.float32)))
    finally:
        sched.close()


def test_a_scorer_failure_is_logged_with_its_traceback(caplog):
    from tests.server.conftest import FaultyScorer

    scheduler = ScoringScheduler(FaultyScorer(), slice_size=8)
    try:
        with caplog.at_level("ERROR", logger="server.scheduler"), pytest.raises(ScoringError, match="BOOM"):
            scheduler.score(["hi"], ["fine", FaultyScorer.MARKER], deadline=time.monotonic() + 5)
    finally:
        scheduler.close()
    failures = [r for r in caplog.records if r.name == "server.scheduler" and r.levelname == "ERROR"]
    assert failures and failures[0].exc_info is not None and "cannot score the marker" in caplog.text
