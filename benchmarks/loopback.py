"""What the loopback server benchmarks share: sample histories and a free port."""

from __future__ import annotations

import socket

HISTORIES = [
    ["hey, how was your weekend?", "pretty good, went hiking. you?", "i mostly slept. do you hike a lot?"],
    ["what kind of music do you like?"],
    ["i just got a new puppy!", "no way, what breed?", "a golden retriever, she is so fluffy"],
    ["it has been raining all week here", "same here, i miss the sun"],
]


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
