"""Admission control: shed a request with 503 + Retry-After when the server cannot serve it within its budget.

Every turn shares one scorer. Past some load a new turn would still keep its deadline (the engine stops
scoring in time) but would get nothing scored, and every turn already in flight would get less: the load
is better refused early, with a clear message and a hint of when to retry. Two rules, both decided before
any work is done:

- at most `max_in_flight` requests (reply, rank, chat, simulate) are in progress at once;
- the estimated time to score the request's first `min_scored` candidates, sharing the scorer round-robin
  with every request in flight, must fit the part of its budget left for scoring (a request arriving at an
  idle server is always admitted: alone, it gets what its budget allows).

Both figures come from elsewhere, so that each is computed once: the request's `Budget` (server/budget.py) says
how long scoring may take and when the request ends, and the scorer's own cost model says what a candidate
costs (`Engine.seconds_per_candidate`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from server.budget import Budget


class Overloaded(Exception):
    """The request was refused before any work; `retry_after` is a whole number of seconds."""

    def __init__(self, message: str, retry_after: int, reason: str = "in_flight"):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.reason = reason  # "in_flight" (too many requests) or "scorer" (the scorer could not read enough)


@dataclass(frozen=True)
class AdmissionConfig:
    """The shedding rules (see the module docstring); min_scored=0 turns the estimate off."""

    max_in_flight: int = 32
    min_scored: int = 0

    def __post_init__(self) -> None:
        if self.max_in_flight < 1 or self.min_scored < 0:
            raise ValueError("max_in_flight must be >= 1 and min_scored >= 0")


class Admission:
    """Counts the requests in flight, with their deadlines, and admits or refuses new ones."""

    def __init__(self, config: AdmissionConfig, seconds_per_candidate: Callable[[], float | None]):
        self.config = config
        self.seconds_per_candidate = seconds_per_candidate  # by the scorer's cost model; None when it has none
        self._lock = threading.Lock()
        self._deadlines: dict[int, float] = {}
        self._next = 0
        self.shed = 0

    @property
    def in_flight(self) -> int:
        """Requests admitted and not yet finished."""
        with self._lock:
            return len(self._deadlines)

    @contextmanager
    def admit(self, budget: Budget, until: float | None = None) -> Iterator[None]:
        """Hold a slot until the block ends, or raise Overloaded at once.

        The budget says how long scoring may take (`scoring_ms`) and when the request ends (`end`, for Retry-After);
        `until` replaces that end for a request longer than one budget (a simulation's turns).
        """
        now = budget.now()
        scoring_ms = budget.scoring_ms
        deadline = budget.end if until is None else until
        with self._lock:
            n = len(self._deadlines)
            spc = self.seconds_per_candidate() if self.config.min_scored else None
            reason, kind = None, "in_flight"
            if n >= self.config.max_in_flight:
                reason = f"{n} requests in flight, the limit is {self.config.max_in_flight}"
            elif spc is not None and n > 0:  # alone, a request is always served: the engine sheds its own work
                need_ms = (n + 1) * self.config.min_scored * spc * 1000.0
                if need_ms > scoring_ms:
                    kind = "scorer"
                    reason = (
                        f"{n} requests in flight share the scorer: scoring {self.config.min_scored} candidates "
                        f"would take about {need_ms:.0f} ms, over the {scoring_ms:.0f} ms this budget leaves for it"
                    )
            if reason is not None:
                self.shed += 1
                # The earliest request in flight ends by its deadline, freeing its share; never less than 1 s.
                # (A request with no budget has no deadline to wait for.)
                soonest = min((d for d in self._deadlines.values() if math.isfinite(d)), default=now + 1.0)
                retry = max(1, math.ceil(soonest - now))
                raise Overloaded(f"server overloaded: {reason}; retry after {retry} s", retry, kind)
            key = self._next
            self._next += 1
            self._deadlines[key] = deadline
        try:
            yield
        finally:
            with self._lock:
                del self._deadlines[key]
