"""A turn's wall-clock budget: one object, made once per request, that every stage and admission control read.

The budget covers the whole request, counted from the instant it arrived (`started`), so time spent queueing is
charged too. The stages share it in order:

    started ─ generate ─┬─ filter, first stage ─┬─ editor ──────────────────┬─ pick ─ end
                generation_deadline      filter_deadline          scoring_deadline

Generation stops once `generation_share` of the budget has passed, filtering once `filter_share` has, and the
editor reads until the end less `finish_margin_ms` (kept for picking and writing the response). Each stage stops
at its own deadline however far it got, so a turn that waited in a queue sheds work instead of running late.
An infinite `budget_ms` means no deadline anywhere: everything is generated and read.

The clock is injected (`time.monotonic` in service), so tests of deadlines step a fake clock instead of sleeping.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

Clock = Callable[[], float]

# The defaults of every budget, written once (EngineConfig's and Settings' defaults are these).
DEFAULT_BUDGET_MS = 1000
GENERATION_SHARE = 0.4
FILTER_SHARE = 0.6
FINISH_MARGIN_MS = 10.0


@dataclass(frozen=True)
class Budget:
    """When a turn started, how long it may take, and when each of its stages must stop (clock seconds)."""

    started: float
    budget_ms: float
    generation_share: float = GENERATION_SHARE
    filter_share: float = FILTER_SHARE
    finish_margin_ms: float = FINISH_MARGIN_MS
    clock: Clock = field(default=time.monotonic, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.budget_ms > 0:
            raise ValueError(f"budget_ms must be > 0, got {self.budget_ms}")
        if not 0.0 <= self.generation_share <= self.filter_share <= 1.0:
            raise ValueError(
                "the stage shares must satisfy 0 <= generation_share <= filter_share <= 1, got "
                f"{self.generation_share} and {self.filter_share}"
            )
        if not self.finish_margin_ms >= 0:
            raise ValueError(f"finish_margin_ms must be >= 0, got {self.finish_margin_ms}")

    @property
    def bounded(self) -> bool:
        """False for an infinite budget (every deadline is then math.inf)."""
        return math.isfinite(self.budget_ms)

    def _at(self, share: float) -> float:
        return self.started + self.budget_ms / 1000.0 * share if self.bounded else math.inf

    @property
    def end(self) -> float:
        """The instant the whole request must be answered by."""
        return self._at(1.0)

    @property
    def generation_deadline(self) -> float:
        """The writer stops starting new chunks of candidates at this instant."""
        return self._at(self.generation_share)

    @property
    def filter_deadline(self) -> float:
        """Filtering stops here; what passed by then goes on to the first stage and the editor."""
        return self._at(self.filter_share)

    @property
    def scoring_deadline(self) -> float:
        """The editor stops reading here, leaving the finish margin to pick and answer."""
        return self.end - self.finish_margin_ms / 1000.0 if self.bounded else math.inf

    @property
    def scoring_ms(self) -> float:
        """The part of the budget the editor can count on (admission control's figure): all but generation's share."""
        return self.budget_ms * (1.0 - self.generation_share) - self.finish_margin_ms

    def now(self) -> float:
        """The clock's current reading."""
        return self.clock()

    def passed(self, deadline: float) -> bool:
        """Whether the clock has reached `deadline`."""
        return self.clock() >= deadline

    def left(self, deadline: float | None = None) -> float:
        """Seconds until `deadline` (default: the scoring deadline), never negative; inf when unbounded."""
        deadline = self.scoring_deadline if deadline is None else deadline
        return max(0.0, deadline - self.clock()) if math.isfinite(deadline) else math.inf

    def left_ms(self) -> float:
        """Milliseconds until the end of the budget."""
        return self.left(self.end) * 1000.0

    def elapsed_ms(self) -> float:
        """Milliseconds since the request arrived."""
        return (self.clock() - self.started) * 1000.0

