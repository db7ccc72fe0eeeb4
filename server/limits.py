"""The limits every surface shares: the HTTP API, the REPL and the command line check requests against these.

One place, so that a budget the REPL accepts is one the API accepts too, and the docs can name one number.
"""

from __future__ import annotations

MIN_BUDGET_MS = 10  # below this a turn cannot even generate
MAX_BUDGET_MS = 30_000
MAX_CANDIDATES = 65_536  # n_candidates per turn, and candidates per /rank request
MAX_TURNS = 100  # history lines per request; the REPL and simulations keep the newest MAX_TURNS
MAX_SIMULATED_TURNS = 100  # turns per simulation, the same in the REPL (/auto) and over HTTP (/simulate)
MAX_TEXT = 2000  # characters per history line or candidate
MAX_NAME = 200  # characters of a persona name or a topic
MAX_BODY_BYTES = 1_048_576


def budget_in_range(budget_ms: float) -> bool:
    """Whether a budget (ms) is one a request may ask for."""
    return MIN_BUDGET_MS <= budget_ms <= MAX_BUDGET_MS


BUDGET_RANGE = f"between {MIN_BUDGET_MS} and {MAX_BUDGET_MS}"  # for error messages: "must be " + BUDGET_RANGE
