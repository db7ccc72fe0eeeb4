"""Request counts, latency, turns and load for /metrics, kept by prometheus_client.

Each `Metrics` owns its own `CollectorRegistry`, so several apps in one process (the tests) never share a value.

Under `uvicorn --workers N` each worker is a process with its own `Metrics`, and a scrape reaches only one of
them. So when PROMETHEUS_MULTIPROC_DIR is set, prometheus_client writes every value to a per-process file in that
directory and `render()` sums the files of all workers (multiprocess mode). prometheus_client chooses between memory
and files once, when it is first imported, so the variable must be set before a worker imports it:
`prepare_multiprocess_dir` sets it in the parent before `uvicorn.run`, and the workers, which uvicorn spawns as
fresh interpreters that import the app, inherit it. In multiprocess mode keep one `Metrics` per process: two would
write the same keys in the same file.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Latency buckets in seconds: the budgets people pick run from tens of milliseconds to a few seconds.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# Any token is a valid HTTP method, so a scanner could mint labels with made-up ones.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# The files of gauges whose value dies with its process: gauge_<mode>_<pid>.db, mode one of the live* modes.
_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db")


class Metrics:
    """The service's Prometheus metrics: one process's registry, or every worker's files in multiprocess mode."""

    def __init__(self, endpoints: set[str] | None = None):
        self.endpoints = endpoints  # other paths collapse to "other", so scanners cannot blow up the labels
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV) or None
        if bool(self.multiprocess_dir) != bool(getattr(values.ValueClass, "_multiprocess", False)):
            raise RuntimeError(
                f"{MULTIPROC_ENV} was {'set' if self.multiprocess_dir else 'unset'} after prometheus_client was "
                f"imported, so this process's values would not reach {MULTIPROC_ENV}; set it before the process "
                "starts (server.metrics.prepare_multiprocess_dir before uvicorn.run)"
            )
        if self.multiprocess_dir and not Path(self.multiprocess_dir).is_dir():
            raise ValueError(f"{MULTIPROC_ENV}={self.multiprocess_dir} is not a directory; create it or unset it")
        self.registry = CollectorRegistry()
        if not self.multiprocess_dir:
            # In multiprocess mode these would describe only whichever worker answered the scrape.
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        r = self.registry
        self._requests = Counter(
            "riposte_requests", "HTTP requests by method, endpoint and status.",
            ["method", "endpoint", "status"], registry=r)
        self._latency = Histogram(
            "riposte_request_duration_seconds", "HTTP request latency by endpoint.",
            ["endpoint"], buckets=BUCKETS, registry=r)
        # live*: a worker's gauges leave the sum when it dies (close(), or render() noticing a crash).
        self._in_flight = Gauge(
            "riposte_requests_in_flight", "HTTP requests being served.", multiprocess_mode="livesum", registry=r)
        self._shed = Counter(
            "riposte_requests_shed", "Requests refused with 503 by admission control before any work, by reason.",
            ["reason"], registry=r)
        self._cancelled = Counter(
            "riposte_requests_cancelled", "Turns whose client left before the reply; their work was dropped.",
            registry=r)
        self._replies = Counter("riposte_replies", "Engine turns answered.", registry=r)
        self._timed_out = Counter(
            "riposte_replies_timed_out", "Turns where the budget ran out before any candidate was scored.",
            registry=r)
        self._scored = Counter("riposte_candidates_scored", "Candidates scored by the reranker.", registry=r)
        self._queue_jobs = Gauge(
            "riposte_scoring_queue_jobs", "Turns waiting for the editor.", multiprocess_mode="livesum", registry=r)
        self._queue_candidates = Gauge(
            "riposte_scoring_queue_candidates", "Candidates waiting for the editor.",
            multiprocess_mode="livesum", registry=r)
        # liveall: one sample per live worker (labelled pid), so a restarted worker shows.
        start = Gauge(
            "riposte_start_time_seconds", "Unix time the process started serving.",
            multiprocess_mode="liveall", registry=r)
        start.set(time.time())

    def endpoint(self, path: str) -> str:
        """The label for a request path."""
        return path if self.endpoints is None or path in self.endpoints else "other"

    def observe_request(self, method: str, path: str, status: int, seconds: float) -> None:
        """Count one finished request and its latency."""
        label = self.endpoint(path)
        self._requests.labels(method if method in METHODS else "other", label, str(status)).inc()
        self._latency.labels(label).observe(seconds)

    @contextlib.contextmanager
    def in_flight(self) -> Iterator[None]:
        """Count a request as in flight for the duration of the block, however it ends."""
        self._in_flight.inc()
        try:
            yield
        finally:
            self._in_flight.dec()

    def observe_shed(self, reason: str) -> None:
        """Count one request refused with 503 before any work; `reason` is a fixed word such as "queue_full"."""
        self._shed.labels(reason).inc()

    def observe_cancelled(self) -> None:
        """Count one turn whose client left, so its work was dropped."""
        self._cancelled.inc()

    def observe_reply(self, scored: int, timed_out: bool) -> None:
        """Count one engine turn."""
        self._replies.inc()
        self._scored.inc(scored)
        if timed_out:
            self._timed_out.inc()

    def set_queue(self, jobs: int, candidates: int) -> None:
        """Set the scoring queue's length: turns waiting for the editor and the candidates they carry."""
        self._queue_jobs.set(jobs)
        self._queue_candidates.set(candidates)

    def render(self) -> tuple[bytes, str]:
        """The exposition body and its content type."""
        if not self.multiprocess_dir:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        self._forget_dead_workers()
        # A fresh registry per scrape, as prometheus_client asks: the collector reads the files when collected.
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)
        return generate_latest(registry), CONTENT_TYPE_LATEST

    def close(self) -> None:
        """Take this process's live gauges out of the sum (multiprocess mode); call when the worker shuts down."""
        if self.multiprocess_dir:
            multiprocess.mark_process_dead(os.getpid(), self.multiprocess_dir)

    def _forget_dead_workers(self) -> None:
        # A worker that crashed never called close(); without this its last in-flight count would stay in the sum.
        for name in glob.glob(os.path.join(self.multiprocess_dir, "gauge_live*.db")):
            match = _LIVE_GAUGE_FILE.fullmatch(os.path.basename(name))
            if match and not _alive(int(match.group(1))):
                multiprocess.mark_process_dead(int(match.group(1)), self.multiprocess_dir)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: checks the process exists, sends nothing
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def prepare_multiprocess_dir(workers: int) -> Path | None:
    """For several workers, set PROMETHEUS_MULTIPROC_DIR to a fresh directory and return it for the caller to remove.

    Call in the parent before `uvicorn.run`: the spawned workers inherit the variable before they import
    prometheus_client. Returns None, changing nothing, for one worker (one process needs no files) or when the
    variable is already set (the operator's directory: they empty it between runs, stale files would be summed).
    """
    if workers <= 1 or os.environ.get(MULTIPROC_ENV):
        return None
    path = Path(tempfile.mkdtemp(prefix="riposte-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    return path
