"""One settings class for every way riposte serves: `serve`, `chat` and the app read `Settings`.

Values come from, in order of precedence: command-line flags (passed as keyword arguments), `RIPOSTE_*` environment
variables, a `.env` file in the working directory, then the defaults below. `serve` hands the resolved settings
to its worker processes as environment variables (`to_env`), so every worker sees the same ones.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from server.engine import EngineConfig, SeedReplies
from server.limits import MAX_BODY_BYTES, MAX_BUDGET_MS, MAX_CANDIDATES, MIN_BUDGET_MS

LogLevel = Literal["critical", "error", "warning", "info", "debug"]
# The packages whose loggers `--log-level` sets (uvicorn's own loggers get it from uvicorn).
RIPOSTE_LOGGERS = ("server", "reranker", "markov", "corpus")


def _json_list(value: str) -> list | None:
    """The value as a JSON list of strings, or None when it is not one."""
    try:
        parsed = json.loads(value)
    except ValueError:
        return None
    return parsed if isinstance(parsed, list) else None


def _comma_list(value: Any) -> Any:
    """A JSON list, or "a, b" (from the environment or a flag) as ["a", "b"]; a list stays a list."""
    if isinstance(value, str):
        parsed = _json_list(value)
        return parsed if parsed is not None else [part.strip() for part in value.split(",") if part.strip()]
    return value


def _one_or_list(value: Any) -> Any:
    """A JSON list, or one string as a list of one (a regex may hold commas, or start with "[")."""
    if isinstance(value, str):
        parsed = _json_list(value)
        return parsed if parsed is not None else [value]
    return value


CommaList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    """Server and chat settings, from flags, RIPOSTE_* environment variables or a .env file."""

    model_config = SettingsConfigDict(env_prefix="RIPOSTE_", env_file=".env", extra="ignore",
                                      protected_namespaces=())

    model_dir: Path = Field(Path("models/default"), description="riposte model dir (markov/ + editor/)")
    budget_ms: int = Field(EngineConfig.budget_ms, ge=MIN_BUDGET_MS, le=MAX_BUDGET_MS, description="default time budget per reply")
    n_candidates: int = Field(EngineConfig.n_candidates, ge=1, le=MAX_CANDIDATES, description="candidates the writer makes per turn")
    echo_run: int = Field(EngineConfig.echo_run, ge=0, description="no parroting: a reply holds no run of this many "
                          "words of the user's last line, its own last lines or the conversation's newest (0: off)")
    mirror_share: float = Field(EngineConfig.mirror_share, ge=0.0, le=1.0, description="no mirrors: a reply to a "
                                "question is no question taking this share of its own content words from it (0: off)")
    seed_replies: SeedReplies = Field(EngineConfig.seed_replies, description="write a turn around the words people "
                                      "answer the context's words with, not around the context's own: after a line "
                                      "that does not ask (statements), always, or never")
    order_within_length: bool = Field(EngineConfig.order_within_length, description="read each word count's best "
                                      "lines first: the first stage's scores centred within each word count, so no "
                                      "line is read first for being long")
    max_sentences: int = Field(EngineConfig.max_sentences, ge=0, le=10, description="the most sentences a reply may "
                               "have (0: any); the writer's later sentences drift from its first")
    # Loopback unless told otherwise: exposing the service on other interfaces must be a choice.
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65_535)
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes; each loads its own models")
    log_level: LogLevel = "info"
    # Build what the model dir lacks (Markov from chitchat, the default editor) when the app starts; `serve` and
    # `chat` turn this on unless told --no-build. Off for a bare app, so pointing one at a wrong dir builds nothing.
    build: bool = False
    max_body_bytes: int = Field(MAX_BODY_BYTES, ge=1024)
    # Threads for the CPU part of turns (generation, filtering). About the core count: more threads only fight
    # over the GIL, and a turn that waits here is charged for it and sheds work when it gets its turn.
    cpu_workers: int = Field(max(2, os.cpu_count() or 2), ge=1)
    # Refuse to serve without a reranker (else replies are ranked by the first stage or the prior alone).
    require_reranker: bool = True
    # A client must send its whole body within this time (408 otherwise): a trickling client holds no worker.
    body_timeout_s: float = Field(15.0, gt=0, le=600)
    # Load shedding (server/admission.py): requests in flight, and candidates each must get scored in its budget.
    max_in_flight: int = Field(32, ge=1)
    min_scored: int = Field(0, ge=0)
    # /simulate runs turns x budget_ms, but never longer than this in all.
    simulate_max_ms: int = Field(30_000, ge=MIN_BUDGET_MS, le=600_000)
    # Off by default: with a key, every API route wants `Authorization: Bearer <key>` (the page and /health do not).
    api_key: SecretStr | None = None
    # Origins a browser page may call the API from (CORS); none by default. "*" allows any.
    cors_origins: CommaList = []
    # Replies never contain these words, nor match these regexes; a file adds one per line ("re:" marks a regex).
    blocklist_words: CommaList = []
    blocklist_regexes: CommaList = []
    blocklist_file: Path | None = None

    _split = field_validator("cors_origins", "blocklist_words", mode="before")(_comma_list)
    _regexes = field_validator("blocklist_regexes", mode="before")(_one_or_list)

    @field_validator("api_key", mode="before")
    @classmethod
    def _check_key(cls, value: Any) -> Any:
        """RIPOSTE_API_KEY= (empty) means no key; a key must be printable ASCII, as HTTP headers carry it."""
        if value in ("", None):
            return None
        text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        if not (text.isascii() and text.isprintable()) or any(ch.isspace() for ch in text):
            raise ValueError("the API key must be printable ASCII without spaces (an HTTP header carries it)")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.lower()
            return "warning" if value == "warn" else value
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.blocklist_file is not None and not self.blocklist_file.is_file():
            raise ValueError(f"blocklist_file {self.blocklist_file} is not a file")
        self.engine_config()  # a regex that does not compile is named now, not at the first request
        return self

    def blocklist(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The blocklisted words and regexes: from the settings, then from `blocklist_file`."""
        words, regexes = list(self.blocklist_words), list(self.blocklist_regexes)
        if self.blocklist_file is not None:
            for line in self.blocklist_file.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                if line.startswith("re:"):
                    regexes.append(line[3:].strip())
                else:
                    words.append(line)
        return tuple(words), tuple(regexes)

    def engine_config(self) -> EngineConfig:
        """The engine defaults these settings imply."""
        words, regexes = self.blocklist()
        return EngineConfig(budget_ms=self.budget_ms, n_candidates=self.n_candidates, echo_run=self.echo_run,
                            mirror_share=self.mirror_share, seed_replies=self.seed_replies,
                            order_within_length=self.order_within_length, max_sentences=self.max_sentences,
                            blocklist_words=words, blocklist_regexes=regexes)

    def to_env(self) -> dict[str, str]:
        """These settings as RIPOSTE_* variables, for worker processes that build their own `Settings()`."""
        env = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, list):
                value = json.dumps(value)
            elif isinstance(value, bool):
                value = "true" if value else "false"
            env[f"RIPOSTE_{name.upper()}"] = str(value)
        return env


def configure_logging(level: str = "info") -> None:
    """Send riposte's own loggers to stderr at `level` (uvicorn configures its own)."""
    numeric = getattr(logging, level.upper())
    for name in RIPOSTE_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(numeric)
        if not any(getattr(h, "_riposte", False) for h in logger.handlers):
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            handler._riposte = True  # type: ignore[attr-defined]
            logger.addHandler(handler)
        logger.propagate = False
