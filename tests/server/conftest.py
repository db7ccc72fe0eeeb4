"""Fixtures for the server tests: a tiny real Markov model and small fake scorers with the Reranker's signatures."""

from __future__ import annotations

import contextlib
import itertools
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from markov import MarkovConfig, MarkovModel
from server.engine import Engine, EngineConfig

SUBJECTS = ["i", "you", "we", "they", "my friend", "your sister"]
VERBS = ["like", "hate", "want", "need", "love"]
OBJECTS = ["dogs", "pizza", "the park", "music", "coffee", "rainy days", "old movies"]
TEMPLATES = ["{s} really {v} {o}.", "do {s} {v} {o}?", "{s} {v} {o} on sundays.", "why do {s} {v} {o}?"]


def tiny_lines() -> list[str]:
    """A few hundred short chat lines whose order-2 chain recombines into many new ones."""
    return [
        t.format(s=s, v=v, o=o)
        for t, s, v, o in itertools.product(TEMPLATES, SUBJECTS, VERBS, OBJECTS)
    ]


def build_tiny_markov() -> MarkovModel:
    """The tiny real Markov model."""
    return MarkovModel.build([(line, 1.0) for line in tiny_lines()], MarkovConfig(order=2))


_WORD = re.compile(r"[\w']+")


class OverlapScorer:
    """Deterministic stand-in for the Reranker: words shared with the context, a little penalty for length."""

    def __init__(self, delay_per_candidate: float = 0.0):
        self.delay = delay_per_candidate
        self.calls = 0

    def one(self, context: list[str], candidate: str) -> float:
        ctx = set(_WORD.findall(" ".join(context).lower()))
        words = _WORD.findall(candidate.lower())
        return float(sum(w in ctx for w in words) - 0.01 * len(words))

    def score(self, context: list[str], candidates: list[str]) -> np.ndarray:
        self.calls += 1
        time.sleep(self.delay * len(candidates))
        return np.asarray([self.one(context, c) for c in candidates], dtype=np.float32)

    def score_until(self, context, candidates, deadline):
        self.calls += 1
        scores = np.full(len(candidates), np.nan, dtype=np.float32)
        scored = np.zeros(len(candidates), dtype=bool)
        for i, c in enumerate(candidates):
            if time.monotonic() + self.delay >= deadline:
                break
            time.sleep(self.delay)
            scores[i] = self.one(context, c)
            scored[i] = True
        return scores, scored


class FakeIndex:
    """A reply index with fixed lines, as `reranker.index.ReplyIndex.search` answers."""

    def __init__(self, lines):
        self.lines, self.calls, self.last_lines = lines, [], []

    def search(self, context, k=256, last_line=0.0):
        self.calls.append((list(context), k))
        self.last_lines.append(last_line)
        lines = self.lines[:k]
        return SimpleNamespace(texts=lines, logprob=np.full(len(lines), -1.0))


class RudeScorer(OverlapScorer):
    """A scorer that ignores its deadline entirely: each call takes `seconds`."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def score_until(self, context, candidates, deadline):
        time.sleep(self.seconds)
        return self.score(context, candidates), np.ones(len(candidates), dtype=bool)


class FaultyScorer(OverlapScorer):
    """Raises inside scoring whenever a slice holds the marker candidate (a bug in the model, say)."""

    MARKER = "BOOM"

    def score_until(self, context, candidates, deadline):
        if self.MARKER in candidates:
            raise ValueError(f"cannot score the marker candidate {self.MARKER!r}")
        return super().score_until(context, candidates, deadline)


class FakeClock:
    """A clock that stands still until the test (or a fake model) moves it; binary-exact steps keep sums exact."""

    def __init__(self, start: float = 1024.0):
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class FixedCost:
    """A cost model with the scorer's API (`predict`, `per_token`, `overhead`) that never learns."""

    def __init__(self, per_token: float, overhead: float = 0.0):
        self.per_token = per_token
        self.overhead = overhead

    def predict(self, tokens: int) -> float:
        return self.overhead + self.per_token * tokens


class ClockedScorer(OverlapScorer):
    """Reads one candidate per `per_candidate` seconds of a fake clock (advancing it), batched like the editor.

    Records every candidate in the order it was read, and every batched call's requests.
    """

    def __init__(self, clock: FakeClock, per_candidate: float):
        super().__init__()
        self.clock = clock
        self.per_candidate = per_candidate
        self.read: list[str] = []
        self.batches: list[list[tuple[list[str], list[str]]]] = []

    def score_until(self, context, candidates, deadline):
        return self.score_many([(context, candidates)], deadline)[0]

    def score_many(self, requests, deadline=float("inf")):
        self.calls += 1
        self.batches.append([(list(c), list(x)) for c, x in requests])
        out = [(np.full(len(x), np.nan, np.float32), np.zeros(len(x), bool)) for _, x in requests]
        longest = max((len(x) for _, x in requests), default=0)
        for i in range(longest):  # round-robin over the requests, as the editor interleaves them
            for (context, candidates), (scores, scored) in zip(requests, out, strict=True):
                if i < len(candidates) and self.clock() + self.per_candidate <= deadline:
                    self.clock.advance(self.per_candidate)
                    scores[i], scored[i] = self.one(context, candidates[i]), True
                    self.read.append(candidates[i])
        return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_in_thread(app) -> Iterator[str]:
    """Run a real uvicorn server for `app` on a loopback port in a thread; yields the base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="session")
def tiny_markov() -> MarkovModel:
    return build_tiny_markov()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_markov) -> Path:
    """A riposte model dir with two personas and no reranker."""
    root = tmp_path_factory.mktemp("models")
    tiny_markov.save(root / "markov" / "default")
    MarkovModel.build([(line, 1.0) for line in tiny_lines()[::3]], MarkovConfig(order=1)).save(root / "markov" / "pirate")
    return root


@pytest.fixture
def engine(tiny_markov):
    eng = Engine({"default": tiny_markov, "pirate": tiny_markov}, OverlapScorer(), EngineConfig(n_candidates=256))
    yield eng
    eng.close()


def samples(text: str, name: str) -> list:
    """The samples called `name` in Prometheus exposition text, read by Prometheus' own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    return [s for family in text_string_to_metric_families(text) for s in family.samples if s.name == name]


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include those given (0 when there are none)."""
    return sum(s.value for s in samples(text, name) if all(s.labels.get(k) == v for k, v in labels.items()))


def error_message(response) -> str:
    """An error response's message: `detail` (or its `message`), or under /v1 OpenAI's `error.message`."""
    body = response.json()
    if "error" in body:
        return body["error"]["message"]
    detail = body["detail"]
    return detail["message"] if isinstance(detail, dict) else detail
