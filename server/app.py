"""The HTTP API: `create_app(settings, engine=None)` builds a FastAPI app around one Engine.

Handlers are thin: they validate (pydantic), hand the turn to the engine on a worker thread, and shape the answer.
Models load in the lifespan on a background thread, so `/health` can say 503 while they load; a test or an
embedding program may inject a ready engine instead.
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from server.admission import Admission, AdmissionConfig, Overloaded
from server.api import web
from server.budget import Budget
from server.engine import DEFAULT_PERSONA, Engine, EngineConfig, Reply, Scored, Turn
from server.group import Conversation
from server.limits import (
    MAX_BODY_BYTES,
    MAX_BUDGET_MS,
    MAX_CANDIDATES,
    MAX_NAME,
    MAX_SIMULATED_TURNS,
    MAX_TEXT,
    MAX_TURNS,
    MIN_BUDGET_MS,
)
from server.metrics import Metrics
from server.scheduler import ScoringError


class Settings(BaseSettings):
    """Server settings, from RIPOSTE_* environment variables."""

    model_config = SettingsConfigDict(env_prefix="RIPOSTE_", protected_namespaces=())

    model_dir: Path = Path("models/default")
    budget_ms: int = Field(1000, ge=MIN_BUDGET_MS, le=MAX_BUDGET_MS)
    n_candidates: int = Field(1024, ge=1, le=MAX_CANDIDATES)
    # Loopback unless told otherwise: exposing the service on other interfaces must be a choice.
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65_535)
    max_body_bytes: int = MAX_BODY_BYTES
    # Threads for the CPU part of turns (generation, filtering). About the core count: more threads only fight
    # over the GIL, and a turn that waits here is charged for it and sheds work when it gets its turn.
    cpu_workers: int = Field(max(2, os.cpu_count() or 2), ge=1)
    require_reranker: bool = True
    # A client must send its whole body within this time (408 otherwise): a trickling client holds no worker.
    body_timeout_s: float = Field(15.0, gt=0, le=600)
    # Load shedding (server/admission.py): requests in flight, and candidates each must get scored in its budget.
    max_in_flight: int = Field(32, ge=1)
    min_scored: int = Field(0, ge=0)
    # /simulate runs turns x budget_ms, but never longer than this in all.
    simulate_max_ms: int = Field(30_000, ge=MIN_BUDGET_MS, le=600_000)

    def engine_config(self) -> EngineConfig:
        """The engine defaults these settings imply."""
        return EngineConfig(budget_ms=self.budget_ms, n_candidates=self.n_candidates)


class OrjsonResponse(Response):
    """JSON via orjson (NaN becomes null)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


# ---------------------------------------------------------------------------------------------------- schemas


def _valid_unicode(text: Any) -> Any:
    """Lone surrogates (JSON allows "\\ud800", e.g. from a client that cut an emoji in half) cannot be encoded
    or tokenized: they become U+FFFD, before pydantic would refuse the whole string."""
    if not isinstance(text, str):
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return "".join("\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in text)


Text = Annotated[str, Field(max_length=MAX_TEXT), BeforeValidator(_valid_unicode)]
Name = Annotated[str, Field(max_length=MAX_NAME), BeforeValidator(_valid_unicode)]


def _alternate_speakers(value: Any) -> Any:
    """Bare strings in a history alternate speakers, the last one being the user's."""
    if not isinstance(value, list):
        return value
    n = len(value)
    return [
        {"speaker": "user" if (n - 1 - i) % 2 == 0 else "bot", "text": item} if isinstance(item, str) else item
        for i, item in enumerate(value)
    ]


class HistoryTurn(BaseModel):
    """One line of the conversation."""

    model_config = ConfigDict(extra="forbid")
    speaker: Annotated[str, Field(max_length=100), BeforeValidator(_valid_unicode)] = "user"
    text: Text


History = Annotated[
    list[HistoryTurn], BeforeValidator(_alternate_speakers), Field(min_length=1, max_length=MAX_TURNS)
]
BudgetMs = Annotated[
    int, Field(ge=MIN_BUDGET_MS, le=MAX_BUDGET_MS, description="wall-clock budget for the whole request")
]


class ReplyRequest(BaseModel):
    """POST /reply."""

    model_config = ConfigDict(extra="forbid")
    history: History
    budget_ms: BudgetMs | None = None
    n_candidates: int | None = Field(None, ge=1, le=MAX_CANDIDATES)
    seed: int | None = None
    persona: Name = DEFAULT_PERSONA
    topic: Name | None = Field(None, description="steer the reply toward these words")
    top_k: int | None = Field(None, ge=1, le=1000)
    temperature: float | None = Field(None, gt=0, le=100)
    n_alternatives: int = Field(5, ge=0, le=100)


class SimulateRequest(BaseModel):
    """POST /simulate: personas talk among themselves for a number of turns."""

    model_config = ConfigDict(extra="forbid")
    personas: list[Name] | None = Field(
        None, min_length=1, max_length=50, description="who takes part; default: every persona except 'all'")
    turns: int = Field(10, ge=1, le=MAX_SIMULATED_TURNS)
    history: Annotated[list[HistoryTurn], BeforeValidator(_alternate_speakers), Field(max_length=MAX_TURNS)] = []
    topic: Name | None = None
    order: Literal["round_robin", "follows"] = Field(
        "round_robin", description="next speaker: in turn, or who most often followed whom in the export")
    budget_ms: BudgetMs | None = Field(None, description="per turn; the whole run is also capped by the server")
    n_candidates: int | None = Field(None, ge=1, le=MAX_CANDIDATES)
    seed: int | None = None


class SimulatedTurn(BaseModel):
    """One generated line of a simulation."""

    persona: str
    speaker: str
    text: str | None
    score: float | None
    elapsed_ms: float
    scored: int
    timed_out: bool


class SimulateResponse(BaseModel):
    """The generated turns, in order; `stopped` says why there are fewer than asked (else null)."""

    turns: list[SimulatedTurn]
    elapsed_ms: float
    budget_ms: float
    time_bound_ms: float
    stopped: str | None


class ScoredText(BaseModel):
    """A candidate and its score (null when the budget ran out before it was scored)."""

    text: str
    score: float | None


class ReplyStats(BaseModel):
    """The funnel of one turn."""

    generated: int
    unique: int
    filtered: int
    scored: int
    elapsed_ms: float
    budget_ms: float
    timed_out: bool


class ReplyResponse(BaseModel):
    """The reply, its score, the runners-up and the stats."""

    reply: str | None
    score: float | None
    alternatives: list[ScoredText]
    stats: ReplyStats


class RankRequest(BaseModel):
    """POST /rank."""

    model_config = ConfigDict(extra="forbid")
    history: History
    candidates: list[Text] = Field(min_length=1, max_length=MAX_CANDIDATES)
    budget_ms: BudgetMs | None = None


class RankResponse(BaseModel):
    """The candidates, best first."""

    ranked: list[ScoredText]
    scored: int
    elapsed_ms: float


class ContentPart(BaseModel):
    """One part of an OpenAI message content array; only text parts carry meaning here."""

    model_config = ConfigDict(extra="ignore")
    type: str = "text"
    text: Text = ""


class ChatMessage(BaseModel):
    """An OpenAI chat message."""

    model_config = ConfigDict(extra="ignore")
    role: str
    content: Text | list[ContentPart] | None = None


class ChatRequest(BaseModel):
    """POST /v1/chat/completions; unknown OpenAI fields (top_p, user, ...) are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")
    model: str = DEFAULT_PERSONA
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_TURNS)
    n: int = Field(1, ge=1, le=100)
    stream: bool = False
    seed: int | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    budget_ms: BudgetMs | None = None
    n_candidates: int | None = Field(None, ge=1, le=MAX_CANDIDATES)


# ---------------------------------------------------------------------------------------------------- middleware


class BodyLimitMiddleware:
    """413 for bodies over the limit, decided from Content-Length or while streaming, before any work;
    408 for a body that does not arrive in whole within `timeout_s`."""

    def __init__(self, app: Any, max_bytes: int, timeout_s: float = 15.0):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_bytes
            except ValueError:
                await _send_json(send, 400, {"detail": "Content-Length is not a number"})
                return
            if too_big:
                await _send_json(send, 413, {"detail": f"request body over {self.max_bytes} bytes"})
                return
        if scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        # Chunked or lying clients: read at most the limit plus one chunk, then replay what was read.
        messages, total = [], 0
        give_up = time.monotonic() + self.timeout_s
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, give_up - time.monotonic()))
            except TimeoutError:
                await _send_json(send, 408, {"detail": f"request body not received in whole within {self.timeout_s:g} s"})
                return
            messages.append(message)
            if message["type"] != "http.request":
                break
            total += len(message.get("body", b""))
            if total > self.max_bytes:
                await _send_json(send, 413, {"detail": f"request body over {self.max_bytes} bytes"})
                return
            if not message.get("more_body", False):
                break
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class MetricsMiddleware:
    """Counts every request and its latency."""

    def __init__(self, app: Any, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.monotonic()
        # Charged to the request's budget: everything from here on counts, queueing included.
        scope.setdefault("state", {})["received"] = start
        status = 500

        async def send_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe_request(scope["method"], scope["path"], status, time.monotonic() - start)


async def _send_json(send: Callable, status: int, content: dict) -> None:
    body = orjson.dumps(content)
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------------------------------------- state


class State:
    """The app's engine (once loaded), its executor and its metrics."""

    def __init__(self, settings: Settings, engine: Engine | None, metrics: Metrics):
        self.settings = settings
        self.engine = engine
        self.owns_engine = engine is None
        self.load_error: str | None = None
        self.metrics = metrics
        self.executor = ThreadPoolExecutor(max_workers=settings.cpu_workers, thread_name_prefix="riposte-turn")
        self.admission = Admission(
            AdmissionConfig(max_in_flight=settings.max_in_flight, min_scored=settings.min_scored),
            lambda: None if self.engine is None else self.engine.seconds_per_candidate,
        )

    def load(self) -> None:
        """Load the engine from the model dir (runs on a background thread)."""
        try:
            self.engine = Engine.load(
                self.settings.model_dir, self.settings.engine_config(),
                require_reranker=self.settings.require_reranker,
            )
        except Exception as exc:  # reported by /health, the process stays up to say so
            self.load_error = f"{type(exc).__name__}: {exc}"
            return
        # The models are hundreds of thousands of long-lived objects; freezing them keeps the garbage
        # collector's full passes (triggered by each request's short-lived candidate strings) from walking
        # them all, which showed as 100-200 ms stalls in the latency tail under load.
        gc.collect()
        gc.freeze()


def get_state(request: Request) -> State:
    """The app state."""
    return request.app.state.riposte


def get_engine(request: Request) -> Engine:
    """The engine, or 503 while it loads."""
    state = get_state(request)
    if state.engine is None:
        raise HTTPException(503, detail=state.load_error or "models are loading")
    return state.engine


StateDep = Annotated[State, Depends(get_state)]
EngineDep = Annotated[Engine, Depends(get_engine)]


def unprocessable(field: str, msg: str) -> HTTPException:
    """A 422 naming the field, shaped like the validation errors."""
    return HTTPException(422, detail={"message": f"{field}: {msg}", "errors": [{"field": field, "msg": msg}]})


def check_persona(engine: Engine, persona: str, field: str = "persona") -> None:
    """422 unless the engine knows the persona."""
    if persona not in engine.personas:
        raise unprocessable(field, f"unknown persona {persona!r}; known: {', '.join(engine.persona_names)}")


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


def received_at(request: Request) -> float:
    """When the request arrived (set by the outermost middleware)."""
    return request.scope.get("state", {}).get("received") or time.monotonic()


def scored_json(s: Scored) -> dict:
    """A candidate as JSON."""
    return {"text": s.text, "score": s.score}


# ---------------------------------------------------------------------------------------------------- routers

core = APIRouter(tags=["riposte"])


@core.post("/reply", response_model=ReplyResponse)
async def post_reply(body: ReplyRequest, request: Request, engine: EngineDep, state: StateDep) -> Response:
    """Generate, score within the budget and pick a reply."""
    check_persona(engine, body.persona)
    budget = engine.budget(body.budget_ms or state.settings.budget_ms, received_at(request))
    async with serving(request, state, budget) as watch:
        result: Reply = await watch.race(engine.areply(
            [Turn(t.speaker, t.text) for t in body.history], budget=budget, executor=state.executor,
            n_candidates=body.n_candidates, seed=body.seed, persona=body.persona, top_k=body.top_k,
            temperature=body.temperature, n_alternatives=body.n_alternatives, topic=body.topic,
        ))
    state.metrics.observe_reply(result.stats["scored"], result.stats["timed_out"])
    result.stats["elapsed_ms"] = round(budget.elapsed_ms(), 1)
    return OrjsonResponse({
        "reply": result.reply,
        "score": result.score,
        "alternatives": [scored_json(a) for a in result.alternatives],
        "stats": result.stats,
    })


@core.post("/rank", response_model=RankResponse)
async def post_rank(body: RankRequest, request: Request, engine: EngineDep, state: StateDep) -> Response:
    """Score any generator's candidates against the history, best first."""
    if engine.scorer is None:
        raise HTTPException(503, detail="this server has no reranker loaded")
    started = received_at(request)
    # Without a budget every candidate is read, however long that takes.
    budget = engine.budget(body.budget_ms or math.inf, started, generates=False)
    async with serving(request, state, budget) as watch:
        ranked = await watch.race(engine.arank([Turn(t.speaker, t.text) for t in body.history], body.candidates,
                                               budget=budget))
    return OrjsonResponse({
        "ranked": [scored_json(s) for s in ranked],
        "scored": sum(s.score is not None for s in ranked),
        "elapsed_ms": round(budget.elapsed_ms(), 1),
    })


@core.post("/simulate", response_model=SimulateResponse)
async def post_simulate(body: SimulateRequest, request: Request, engine: EngineDep, state: StateDep) -> Response:
    """Let personas talk among themselves for a number of turns, within an overall time bound."""
    for i, persona in enumerate(body.personas or []):
        check_persona(engine, persona, field=f"personas.{i}")
    history = [Turn(t.speaker, t.text) for t in body.history]
    convo = Conversation(engine, body.personas, mode=body.order, history=history)
    started = received_at(request)
    budget_ms = body.budget_ms or state.settings.budget_ms
    bound_ms = min(body.turns * budget_ms, state.settings.simulate_max_ms)
    # Every turn gets its share of the bound, so all of them fit (and none gets more than it asked for).
    per_turn = max(MIN_BUDGET_MS, min(budget_ms, bound_ms / body.turns))
    bound = engine.budget(bound_ms, started)  # the whole run; each turn gets its own budget inside it
    turns: list[dict[str, Any]] = []
    stopped = None
    async with serving(request, state, engine.budget(per_turn, started), until=bound.end) as watch:
        for i in range(body.turns):
            left_ms = bound.left_ms()
            if left_ms < MIN_BUDGET_MS:
                stopped = f"the {bound_ms:.0f} ms time bound ran out after {i} of {body.turns} turns"
                break
            persona = convo.next()
            turn_budget = engine.budget(min(per_turn, left_ms))
            result: Reply = await watch.race(engine.areply(
                convo.history, budget=turn_budget, executor=state.executor, n_candidates=body.n_candidates,
                seed=None if body.seed is None else body.seed + i, persona=persona, n_alternatives=0,
                topic=body.topic, speaker=convo.speaker(persona),
            ))
            state.metrics.observe_reply(result.stats["scored"], result.stats["timed_out"])
            convo.record(persona, result.reply)
            turns.append({
                "persona": persona,
                "speaker": convo.speaker(persona),
                "text": result.reply,
                "score": result.score,
                "elapsed_ms": round(turn_budget.elapsed_ms(), 1),
                "scored": result.stats["scored"],
                "timed_out": result.stats["timed_out"],
            })
    return OrjsonResponse({
        "turns": turns,
        "elapsed_ms": round(bound.elapsed_ms(), 1),
        "budget_ms": per_turn,
        "time_bound_ms": bound_ms,
        "stopped": stopped,
    })


service = APIRouter(tags=["service"])


@service.get("/health")
async def get_health(state: StateDep) -> Response:
    """200 when the models are ready, 503 while they load (or failed to)."""
    if state.engine is not None:
        return OrjsonResponse({"status": "ok"})
    if state.load_error:
        return OrjsonResponse({"status": "error", "detail": state.load_error}, status_code=503)
    return OrjsonResponse({"status": "loading"}, status_code=503)


@service.get("/metrics")
async def get_metrics(state: StateDep) -> Response:
    """Prometheus text: request counts, latency, turns."""
    return PlainTextResponse(state.metrics.render(), media_type="text/plain; version=0.0.4")


openai = APIRouter(prefix="/v1", tags=["openai"])


def _message_text(message: ChatMessage) -> str:
    if isinstance(message.content, list):
        return " ".join(part.text for part in message.content if part.type == "text")
    return message.content or ""


@openai.get("/models")
async def list_models(engine: EngineDep) -> Response:
    """The personas, as OpenAI models."""
    return OrjsonResponse({
        "object": "list",
        "data": [{"id": name, "object": "model", "created": 0, "owned_by": "riposte"} for name in engine.persona_names],
    })


@openai.post("/chat/completions")
async def chat_completions(body: ChatRequest, request: Request, engine: EngineDep, state: StateDep) -> Response:
    """OpenAI-compatible chat: messages in, n choices out, optionally streamed as server-sent events."""
    check_persona(engine, body.model, field="model")
    history = [
        {"speaker": "bot" if m.role == "assistant" else "user", "text": _message_text(m)}
        for m in body.messages
        if m.role not in ("system", "developer")  # instructions mean nothing to a Markov writer
    ]
    if not history:
        raise unprocessable("messages", "needs at least one user or assistant message")
    for i, turn in enumerate(history):
        if len(turn["text"]) > MAX_TEXT:
            raise unprocessable(f"messages.{i}.content", f"over {MAX_TEXT} characters")
    sample = body.temperature is not None and body.temperature > 0
    budget = engine.budget(body.budget_ms or state.settings.budget_ms, received_at(request))
    async with serving(request, state, budget) as watch:
        result: Reply = await watch.race(engine.areply(
            history, budget=budget, executor=state.executor, n_candidates=body.n_candidates, seed=body.seed,
            persona=body.model, top_k=8 if sample else 1, temperature=body.temperature if sample else 1.0,
            n_alternatives=body.n - 1,
        ))
    state.metrics.observe_reply(result.stats["scored"], result.stats["timed_out"])
    texts = ([result.reply] if result.reply is not None else []) + [a.text for a in result.alternatives]
    texts = (texts + [""] * body.n)[: body.n]
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    prompt_tokens = sum(len(t["text"].split()) for t in history)
    completion_tokens = sum(len(t.split()) for t in texts)
    result.stats["elapsed_ms"] = round(budget.elapsed_ms(), 1)

    if not body.stream:
        return OrjsonResponse({
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": body.model,
            "choices": [
                {"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop", "logprobs": None}
                for i, text in enumerate(texts)
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
            "riposte": result.stats,
        })

    def chunk(index: int, delta: dict, finish: str | None) -> bytes:
        payload = {
            "id": completion_id, "object": "chat.completion.chunk", "created": created, "model": body.model,
            "choices": [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
        return b"data: " + orjson.dumps(payload) + b"\n\n"

    async def events() -> AsyncIterator[bytes]:
        # The reply is whole before the first byte; it is streamed word by word for clients that render deltas.
        for i, text in enumerate(texts):
            yield chunk(i, {"role": "assistant", "content": ""}, None)
            pieces = text.split(" ")
            for j, piece in enumerate(pieces):
                yield chunk(i, {"content": piece if j == 0 else " " + piece}, None)
            yield chunk(i, {}, "stop")
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


# ---------------------------------------------------------------------------------------------------- the app


async def validation_error(request: Request, exc: RequestValidationError) -> Response:
    """422 with a readable message naming each bad field (and never echoing the input back)."""
    errors = []
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ()) if part != "body"]
        errors.append({"field": ".".join(loc) or "body", "msg": str(err.get("msg", "invalid")), "type": err.get("type")})
    message = "; ".join(f"{e['field']}: {e['msg']}" for e in errors)
    return error_response(request, 422, {"message": message, "errors": errors})


async def http_error(request: Request, exc: HTTPException) -> Response:
    """HTTP errors as JSON, in OpenAI's error shape too under /v1."""
    return error_response(request, exc.status_code, exc.detail, exc.headers)


async def overloaded(request: Request, exc: Overloaded) -> Response:
    """503 with Retry-After: the request was shed before any work."""
    return error_response(request, 503, exc.message, {"Retry-After": str(exc.retry_after)})


async def scoring_failed(request: Request, exc: ScoringError) -> Response:
    """500 naming the scorer's exception; only this request fails, the scorer keeps serving the others."""
    return error_response(request, 500, str(exc))


async def client_disconnected(request: Request, exc: ClientDisconnected) -> Response:
    """499 (nginx's "client closed request"), for the logs and metrics: nobody is there to read it."""
    return error_response(request, 499, str(exc))


async def internal_error(request: Request, exc: Exception) -> Response:
    """Any other bug: a 500 naming the exception type, never a bare 'Internal Server Error'."""
    return error_response(request, 500, f"internal error: {type(exc).__name__}: {str(exc)[:200]}")


def error_response(request: Request, status: int, detail: Any, headers: dict | None = None) -> Response:
    """{"detail": ...}; under /v1 also {"error": {"message", "type", "param"}} so OpenAI clients show the message."""
    content: dict[str, Any] = {"detail": detail}
    if request.url.path.startswith("/v1/"):
        message = detail.get("message", str(detail)) if isinstance(detail, dict) else str(detail)
        errors = detail.get("errors", []) if isinstance(detail, dict) else []
        content["error"] = {
            "message": message,
            "type": "invalid_request_error" if status < 500 else "server_error",
            "param": errors[0]["field"] if errors else None,
            "code": None,
        }
    return OrjsonResponse(content, status_code=status, headers=headers)


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

    app = FastAPI(title="riposte", version="0.1.0", lifespan=lifespan, default_response_class=OrjsonResponse)
    app.include_router(core)
    app.include_router(service)
    app.include_router(openai)
    app.include_router(web.router)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Overloaded, overloaded)
    app.add_exception_handler(ScoringError, scoring_failed)
    app.add_exception_handler(ClientDisconnected, client_disconnected)
    app.add_exception_handler(Exception, internal_error)
    metrics.endpoints = {route.path for router in (core, service, openai) for route in router.routes} | {
        "/docs", "/openapi.json"}
    # Added last = outermost. Metrics sees every request (413s included) and stamps its arrival; the body
    # limit then runs before anything reads the whole body or starts work.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, timeout_s=settings.body_timeout_s)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def create_app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` and worker processes: settings from the environment."""
    return create_app(Settings())

