"""The budget: stage deadlines from one request, on a fake clock."""

from __future__ import annotations

import math

import pytest

from server.budget import Budget
from tests.server.conftest import FakeClock


def test_budget_deadlines_follow_the_shares():
    clock = FakeClock()
    b = Budget(started=1024.0, budget_ms=1000, generation_share=0.25, filter_share=0.5, finish_margin_ms=125,
               clock=clock)
    assert (b.generation_deadline, b.filter_deadline, b.scoring_deadline, b.end) == (1024.25, 1024.5, 1024.875, 1025.0)
    assert b.scoring_ms == 1000 * 0.75 - 125  # admission's figure: all but generation's share, less the margin
    clock.advance(0.5)
    assert b.elapsed_ms() == 500 and b.left() == 0.375 and b.left_ms() == 500 and b.passed(b.filter_deadline)
    unbounded = Budget(started=1024.0, budget_ms=math.inf, clock=clock)
    assert not unbounded.bounded and unbounded.scoring_deadline == unbounded.generation_deadline == math.inf
    assert unbounded.left() == math.inf
    with pytest.raises(ValueError, match="shares"):
        Budget(started=0.0, budget_ms=100, generation_share=0.7, filter_share=0.5)
    with pytest.raises(ValueError, match="budget_ms"):
        Budget(started=0.0, budget_ms=0)
