"""The reply engine, the HTTP API (`server.app.create_app`) and the terminal chat (`python -m server`)."""

from server.engine import Engine, EngineConfig, Reply, Scored, Turn, UnknownPersonaError

__all__ = ["Engine", "EngineConfig", "Reply", "Scored", "Turn", "UnknownPersonaError"]
