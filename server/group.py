"""Personas talking among themselves: who speaks next, and the running conversation a simulation appends to.

The engine answers one turn; a `Conversation` decides whose turn it is and keeps the history, with each line
under its speaker's display name (the `name: text` form a reranker trained with speakers expects). The REPL's
`/auto` and the HTTP `/simulate` drive the same object, one engine turn at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from server.engine import Engine, Turn, UnknownPersonaError
from server.limits import MAX_TURNS

Order = Literal["round_robin", "follows"]
ORDERS: tuple[str, ...] = ("round_robin", "follows")


def next_speaker(
    order: Sequence[str], previous: str | None, mode: str = "round_robin",
    follows: Mapping[str, Mapping[str, int]] | None = None,
) -> str:
    """Who speaks after `previous`: the next in `order`, or the persona who most often followed them in the export.

    With "follows", ties and speakers with no recorded followers fall back to round-robin order, and nobody
    follows themselves while someone else is in the conversation.
    """
    if not order:
        raise ValueError("a conversation needs at least one persona")
    at = order.index(previous) if previous in order else -1
    # Round-robin distance from the previous speaker: the tie-break for "follows".
    rotation = [order[(at + 1 + i) % len(order)] for i in range(len(order))]
    if mode == "round_robin" or previous is None:
        return rotation[0]
    if mode != "follows":
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {mode!r}")
    counts = (follows or {}).get(previous, {})
    choices = [p for p in rotation if p != previous] or rotation
    return max(choices, key=lambda p: counts.get(p, 0))  # max keeps the first of equals: round-robin order


class Conversation:
    """The history of a group chat and whose turn it is."""

    def __init__(
        self, engine: Engine, personas: Sequence[str] | None = None, *, mode: str = "round_robin",
        history: Sequence[Turn] = (),
    ):
        if mode not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {mode!r}")
        personas = list(dict.fromkeys(personas)) if personas else engine.speaking_personas
        unknown = [p for p in personas if p not in engine.personas]
        if unknown:
            raise UnknownPersonaError(
                f"unknown persona {unknown[0]!r}; known: {', '.join(engine.persona_names)}"
            )
        self.engine = engine
        self.personas = personas
        self.mode = mode
        self.history = list(history)
        by_name = {engine.names[p]: p for p in personas}
        # A history that ends with one of the personas continues from them.
        self.previous: str | None = by_name.get(self.history[-1].speaker) if self.history else None

    def next(self) -> str:
        """The persona whose turn it is."""
        return next_speaker(self.personas, self.previous, self.mode, self.engine.follows)

    def speaker(self, persona: str) -> str:
        """The persona's display name, as its lines appear in the history."""
        return self.engine.names.get(persona, persona)

    def record(self, persona: str, text: str | None) -> None:
        """Append what the persona said (nothing when it found nothing to say) and pass the turn on."""
        if text is not None:
            self.history = (self.history + [Turn(self.speaker(persona), text)])[-MAX_TURNS:]  # as a request may carry
        self.previous = persona
