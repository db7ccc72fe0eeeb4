"""What routes depend on: the app's state and engine, the API key, admission, and the client-disconnect watch."""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from server.admission import Admission, AdmissionConfig
from server.api.schemas import ErrorResponse, OpenAIError
from server.api.tokens import TokenCounter
from server.bootstrap import BuildStatus, ensure_models
from server.budget import Budget
from server.engine import Engine
from server.metrics import Metrics
from server.settings import Settings

log = logging.getLogger(__name__)


class State:
    """The app's engine (once loaded or built), its executor, its metrics and its admission control."""

    def __init__(self, settings: Settings, engine: Engine | None, metrics: Metrics):
        self.settings = settings
        self.engine = engine
        self.owns_engine = engine is None
        self.load_error: str | None = None
        self.building: BuildStatus | None = None
        self._tokens: TokenCounter | None = None
        self.metrics = metrics
        self.executor = ThreadPoolExecutor(max_workers=settings.cpu_workers, thread_name_prefix="riposte-turn")
        self.admission = Admission(
            AdmissionConfig(max_in_flight=settings.max_in_flight, min_scored=settings.min_scored),
            lambda: None if self.engine is None else self.engine.seconds_per_candidate,
        )

    @property
    def tokens(self) -> TokenCounter:
        """Counts tokens in the loaded editor's tokenizer (for `usage` and `max_tokens`)."""
        if self._tokens is None:
            self._tokens = TokenCounter(self.engine)
        return self._tokens

    def load(self) -> None:
        """Build what the model dir lacks (when allowed), then load the engine; runs on a background thread."""
        settings = self.settings
        try:
            status = BuildStatus()
            self.building = status
            ensure_models(settings.model_dir, build=settings.build, status=status)
            self.building = None
            engine = Engine.load(settings.model_dir, settings.engine_config(),
                                 require_reranker=settings.require_reranker)
        except Exception as exc:  # reported by /health; the process stays up to say so
            log.exception("could not load the models from %s", settings.model_dir)
            self.building = None
            self.load_error = f"{type(exc).__name__}: {exc}"
            return
        if engine.scorer is None:
            log.warning("no reranker in %s: replies are ranked without the editor", settings.model_dir)
        # The models are hundreds of thousands of long-lived objects; freezing them keeps the garbage
        # collector's full passes (triggered by each request's short-lived candidate strings) from walking
        # them all, which showed as 100-200 ms stalls in the latency tail under load.
        gc.collect()
        gc.freeze()
        self.engine = engine
        log.info("models loaded from %s; personas: %s", settings.model_dir, ", ".join(engine.persona_names))


def get_state(request: Request) -> State:
    """The app state."""
    return request.app.state.riposte


def get_engine(request: Request) -> Engine:
    """The engine, or 503 while it loads or builds."""
    state = get_state(request)
    if state.engine is None:
        detail = state.load_error or ("models are being built" if state.building else "models are loading")
        raise HTTPException(503, detail=detail, headers={"Retry-After": "5"})
    return state.engine


_bearer = HTTPBearer(auto_error=False, description="RIPOSTE_API_KEY, when the server sets one")


def check_api_key(request: Request,
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """401 unless the request carries the server's API key (when one is set) as a bearer token."""
    key = get_state(request).settings.api_key
    if key is None:
        return
    given = credentials.credentials if credentials is not None else ""
    # Constant-time: how long the comparison takes says nothing about how much of the key was right.
    if not hmac.compare_digest(given.encode(), key.get_secret_value().encode()):
        reason = "invalid API key" if credentials is not None else "this server needs an API key"
        raise HTTPException(401, detail=f"{reason}: send `Authorization: Bearer <RIPOSTE_API_KEY>`",
                            headers={"WWW-Authenticate": "Bearer"})


StateDep = Annotated[State, Depends(get_state)]
EngineDep = Annotated[Engine, Depends(get_engine)]
ApiKey = Depends(check_api_key)


# What the OpenAPI schema says errors look like: riposte's shape, and OpenAI's under /v1 (see server/api/errors.py).
ERRORS: dict = {"4XX": {"model": ErrorResponse, "description": "a bad request, named"},
                "5XX": {"model": ErrorResponse, "description": "loading, overloaded (Retry-After), or failed"}}
OPENAI_ERRORS: dict = {"4XX": {"model": OpenAIError, "description": "OpenAI's error object"},
                       "5XX": {"model": OpenAIError, "description": "OpenAI's error object"}}


def unprocessable(field: str, msg: str, status: int = 422, code: str | None = None) -> HTTPException:
    """A 422 (or `status`) naming the field, shaped like the validation errors; `code` is OpenAI's error code."""
    detail: dict = {"message": f"{field}: {msg}", "errors": [{"field": field, "msg": msg}]}
    if code is not None:
        detail["code"] = code
    return HTTPException(status, detail=detail)


def check_persona(engine: Engine, persona: str, field: str = "persona", status: int = 422,
                  code: str | None = None) -> None:
    """422 (or `status`, with OpenAI's `code`) unless the engine knows the persona."""
    if persona not in engine.personas:
        msg = f"unknown persona {persona!r}; known: {', '.join(engine.persona_names)}"
        raise unprocessable(field, msg, status, code)


def require_scorer(engine: Engine) -> None:
    """503 unless the engine has an editor to rank with."""
    if engine.scorer is None:
        raise HTTPException(503, detail="this server has no reranker loaded")


class ClientDisconnected(Exception):
    """The client went away before its answer was ready; its work has been dropped."""


class DisconnectWatch:
    """Races a request's work against its client going away (after the body, `receive` waits for that)."""

    def __init__(self, request: Request):
        self._task = asyncio.ensure_future(self._watch(request))

    @staticmethod
    async def _watch(request: Request) -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    async def race(self, awaitable: Any) -> Any:
        """The awaitable's result; if the client leaves first, the work is cancelled and ClientDisconnected raised.

        The engine's entry points drop their candidates from the editor when cancelled, so nothing more is read.
        """
        step = asyncio.ensure_future(awaitable)
        await asyncio.wait({step, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if step.done():
            return step.result()
        step.cancel()
        await asyncio.gather(step, return_exceptions=True)  # let it drop its work before answering
        raise ClientDisconnected("client disconnected")

    def close(self) -> None:
        """Stop watching."""
        self._task.cancel()


@asynccontextmanager
async def serving(request: Request, state: State, budget: Budget, until: float | None = None
                  ) -> AsyncIterator[DisconnectWatch]:
    """Admit the request by its budget (or 503 with Retry-After, before any work) and watch for its client leaving.

    `until` is when the whole request ends, when that is later than the budget's end (a simulation's turns).
    """
    with state.admission.admit(budget, until):
        watch = DisconnectWatch(request)
        try:
            yield watch
        finally:
            watch.close()
            if state.engine is not None:
                state.metrics.set_queue(*state.engine.queue)


def received_at(request: Request) -> float:
    """When the request arrived (set by the outermost middleware)."""
    return request.scope.get("state", {}).get("received") or time.monotonic()
