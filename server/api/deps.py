"""What routes depend on: the app's state (server/state.py) and engine, the API key, admission, and the
client-disconnect watch."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from server.api.schemas import ErrorResponse, OpenAIError
from server.budget import Budget
from server.engine import Engine
from server.state import State

log = logging.getLogger(__name__)


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
