"""The HTTP API: `create_app(settings, engine=None)` builds a FastAPI app around one Engine.

The layer is split as FastAPI's own template splits it (server/api/): schemas, dependencies, middleware, errors,
and one router per surface: riposte's own (`/reply`, `/rank`, `/simulate`), OpenAI's (`/v1/...`), rerank
(`/v1/rerank`), the service (`/health`, `/metrics`) and the web page (`/`). Handlers are thin: they validate,
hand the turn to the engine and return a pydantic model.

Models load (and, with `build`, are first built) in the lifespan on a background thread, so the port is open at
once and `/health` says 503 with the build's progress until they are ready; a test or an embedding program may
inject a ready engine instead.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from server.api import openai, reply, rerank, service, web
from server.api.errors import add_error_handlers
from server.api.middleware import BodyLimitMiddleware, MetricsMiddleware
from server.engine import Engine
from server.metrics import Metrics
from server.settings import Settings, configure_logging
from server.state import State

__all__ = ["Settings", "create_app", "create_app_from_env"]

ROUTERS = (reply.router, openai.router, rerank.router, service.router, web.router)


def riposte_version() -> str:
    """The installed distribution's version."""
    try:
        return version("riposte-dialogue")
    except PackageNotFoundError:
        return "0+unknown"


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    """Build the service; models load in the lifespan from settings.model_dir unless `engine` is given."""
    settings = settings or Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = State(settings, engine, metrics)
        app.state.riposte = state
        if state.engine is None:
            threading.Thread(target=state.load, name="riposte-load", daemon=True).start()
        try:
            yield
        finally:
            state.executor.shutdown(wait=False, cancel_futures=True)
            if state.owns_engine and state.engine is not None:
                state.engine.close()
            metrics.close()

    app = FastAPI(title="riposte", version=riposte_version(), lifespan=lifespan,
                  description="Generate-and-rerank dialogue: a Markov writer, a trained editor, a time budget.")
    for router in ROUTERS:
        app.include_router(router)
    add_error_handlers(app)
    metrics.endpoints = {route.path for router in ROUTERS for route in router.routes} | {"/docs", "/openapi.json"}
    # Added last = outermost. Metrics sees every request (413s included) and stamps its arrival; the body
    # limit then runs before anything reads the whole body or starts work; CORS answers preflights first of all.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, timeout_s=settings.body_timeout_s)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    if settings.cors_origins:
        # Any request header: browser SDKs send their own (openai's X-Stainless-*); no cookies, so no credentials.
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["*"], max_age=600)
    return app


def create_app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` and worker processes: settings from the environment."""
    settings = Settings()
    configure_logging(settings.log_level)
    return create_app(settings)
