"""Request counts and latency in the Prometheus text format, kept by hand: a few counters need no dependency."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

# Latency buckets in seconds: the budgets people pick run from tens of milliseconds to a few seconds.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """Thread-safe counters and histograms for one process."""

    def __init__(self, endpoints: set[str] | None = None):
        self.endpoints = endpoints  # other paths collapse to "other", so scanners cannot blow up the labels
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self._latency_buckets: dict[str, list[int]] = defaultdict(lambda: [0] * len(BUCKETS))
        self._latency_sum: dict[str, float] = defaultdict(float)
        self._latency_count: dict[str, int] = defaultdict(int)
        self._replies = 0
        self._timed_out = 0
        self._scored = 0
        self._started = time.time()

    def endpoint(self, path: str) -> str:
        """The label for a request path."""
        return path if self.endpoints is None or path in self.endpoints else "other"

    def observe_request(self, method: str, path: str, status: int, seconds: float) -> None:
        """Count one finished request and its latency."""
        label = self.endpoint(path)
        with self._lock:
            self._requests[(method, label, status)] += 1
            buckets = self._latency_buckets[label]
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    buckets[i] += 1
            self._latency_sum[label] += seconds
            self._latency_count[label] += 1

    def observe_reply(self, scored: int, timed_out: bool) -> None:
        """Count one engine turn."""
        with self._lock:
            self._replies += 1
            self._scored += scored
            self._timed_out += int(timed_out)

    def render(self) -> str:
        """The exposition text."""
        out = [
            "# HELP riposte_requests_total HTTP requests by method, endpoint and status.",
            "# TYPE riposte_requests_total counter",
        ]
        with self._lock:
            for (method, label, status), n in sorted(self._requests.items()):
                out.append(f'riposte_requests_total{{method="{method}",endpoint="{label}",status="{status}"}} {n}')
            out += [
                "# HELP riposte_request_duration_seconds HTTP request latency by endpoint.",
                "# TYPE riposte_request_duration_seconds histogram",
            ]
            for label in sorted(self._latency_count):
                for bound, n in zip(BUCKETS, self._latency_buckets[label], strict=True):
                    out.append(f'riposte_request_duration_seconds_bucket{{endpoint="{label}",le="{bound}"}} {n}')
                count = self._latency_count[label]
                out.append(f'riposte_request_duration_seconds_bucket{{endpoint="{label}",le="+Inf"}} {count}')
                out.append(f'riposte_request_duration_seconds_sum{{endpoint="{label}"}} {self._latency_sum[label]:.6f}')
                out.append(f'riposte_request_duration_seconds_count{{endpoint="{label}"}} {count}')
            out += [
                "# HELP riposte_replies_total Engine turns answered.",
                "# TYPE riposte_replies_total counter",
                f"riposte_replies_total {self._replies}",
                "# HELP riposte_replies_timed_out_total Turns where the budget ran out before any candidate was scored.",
                "# TYPE riposte_replies_timed_out_total counter",
                f"riposte_replies_timed_out_total {self._timed_out}",
                "# HELP riposte_candidates_scored_total Candidates scored by the reranker.",
                "# TYPE riposte_candidates_scored_total counter",
                f"riposte_candidates_scored_total {self._scored}",
                "# HELP riposte_start_time_seconds Unix time the process started serving.",
                "# TYPE riposte_start_time_seconds gauge",
                f"riposte_start_time_seconds {self._started:.3f}",
            ]
        return "\n".join(out) + "\n"
