"""The OpenAI-compatible surface: `/v1/models` (the personas) and `/v1/chat/completions`, as vLLM and llama.cpp's
servers serve them, so the `openai` SDKs and tools built on them (Open WebUI and others) work unchanged.

What a Markov writer makes of OpenAI's fields:
- `model` names a persona (404 `model_not_found` otherwise).
- A system (or developer) message is used, not dropped: lines `persona: NAME` and `topic: WORDS` set those;
  a message that is only a persona's name picks that persona; any other text becomes the turn's topic.
- `max_tokens` (or `max_completion_tokens`): the best candidates that fit are picked; when none fits, the best
  one is cut at the limit and its `finish_reason` is "length".
- `stop`: a reply ends before the first stop string.
- `usage` is counted in the editor's tokenizer's tokens.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from server.api.deps import (
    OPENAI_ERRORS,
    ApiKey,
    EngineDep,
    StateDep,
    check_persona,
    received_at,
    serving,
    unprocessable,
)
from server.api.reply import stats_of
from server.api.schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    Choice,
    ChunkChoice,
    Delta,
    ModelCard,
    ModelList,
    Usage,
)
from server.api.tokens import TokenCounter
from server.engine import DEFAULT_PERSONA, Engine, Reply
from server.limits import MAX_NAME, MAX_TURNS

router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[ApiKey], responses=OPENAI_ERRORS)

# Extra runners-up asked of the engine when max_tokens or stop may rule some out.
SPARE_CANDIDATES = 32


def persona_named(name: str, engine: Engine) -> str | None:
    """The persona a system message names: exactly, else the one whose name matches ignoring case."""
    if name in engine.personas:
        return name
    matches = [p for p in engine.personas if p.casefold() == name.casefold()]
    return matches[0] if len(matches) == 1 else None


def system_settings(text: str, engine: Engine) -> tuple[str | None, str | None]:
    """(persona, topic) from a system message: `persona:`/`topic:` lines, a bare persona name, else the text as topic."""
    persona = topic = None
    rest = []
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if sep and key == "persona" and value:
            persona = persona_named(value, engine) or value  # an unknown name is reported by the caller
        elif sep and key == "topic" and value:
            topic = value
        elif line.strip():
            rest.append(line.strip())
    free = " ".join(rest)
    if persona is None and free and persona_named(free, engine):
        return persona_named(free, engine), topic
    if topic is None and free:
        topic = free
    return persona, (topic[:MAX_NAME] if topic else None)


def conversation(body: ChatRequest, engine: Engine) -> tuple[str, str | None, list[dict[str, str]]]:
    """The turn's persona, topic and history from OpenAI messages (the newest MAX_TURNS user/assistant lines)."""
    persona, topic = body.model, None
    for m in body.messages:
        if m.role in ("system", "developer"):
            asked, said = system_settings(m.text(), engine)
            topic = said or topic  # a later system message adds to what an earlier one set
            if asked is not None and body.model == DEFAULT_PERSONA:
                persona = asked
    if persona not in engine.personas:
        raise unprocessable("messages", f"the system message names unknown persona {persona!r}; "
                                        f"known: {', '.join(engine.persona_names)}")
    history = [{"speaker": "bot" if m.role == "assistant" else "user", "text": m.text()}
               for m in body.messages if m.role in ("user", "assistant")][-MAX_TURNS:]
    if not history:
        raise unprocessable("messages", "needs at least one user or assistant message")
    return persona, topic, history


def fit(texts: list[str], n: int, tokens: TokenCounter, max_tokens: int | None, stop: list[str]
        ) -> list[tuple[str, str]]:
    """n (text, finish_reason) pairs, best first: each text cut at `stop`, then the distinct ones within
    `max_tokens`; when too few fit, the best of the rest cut to max_tokens ("length"); "" pads the rest."""
    chosen: list[tuple[str, str]] = []
    seen: set[str] = set()
    too_long = []
    for text in texts:
        for s in stop:
            at = text.find(s)
            if at >= 0:
                text = text[:at]
        if max_tokens is not None and tokens.count(text) > max_tokens:
            too_long.append(text)
        elif text.strip() and text not in seen and len(chosen) < n:
            seen.add(text)
            chosen.append((text, "stop"))
    for text in too_long:
        cut = tokens.truncate(text, max_tokens)[0]
        if len(chosen) < n and cut.strip() and cut not in seen:
            seen.add(cut)
            chosen.append((cut, "length"))
    return chosen + [("", "stop")] * (n - len(chosen))  # a turn with nothing to say still has n choices


@router.get("/models")
async def list_models(engine: EngineDep) -> ModelList:
    """The personas, as OpenAI models."""
    return ModelList(data=[ModelCard(id=name) for name in engine.persona_names])


@router.post("/chat/completions", response_model=ChatCompletion,
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "a ChatCompletion, or with stream=true ChatCompletionChunk events"}})
async def chat_completions(body: ChatRequest, request: Request, engine: EngineDep, state: StateDep):
    """OpenAI-compatible chat: messages in, n choices out, optionally streamed as server-sent events."""
    check_persona(engine, body.model, field="model", status=404, code="model_not_found")
    persona, topic, history = conversation(body, engine)
    max_tokens = body.max_completion_tokens or body.max_tokens
    sample = body.temperature is not None and body.temperature > 0
    budget = engine.budget(body.budget_ms or state.settings.budget_ms, received_at(request))
    spare = SPARE_CANDIDATES if max_tokens is not None or body.stop else 0  # some may be ruled out below
    async with serving(request, state, budget) as watch:
        result: Reply = await watch.race(engine.areply(
            history, budget=budget, executor=state.executor, n_candidates=body.n_candidates, seed=body.seed,
            persona=persona, top_k=8 if sample else 1, temperature=body.temperature if sample else 1.0,
            n_alternatives=body.n - 1 + spare, topic=topic,
        ))
    state.metrics.observe_reply(result.stats["scored"], result.stats["timed_out"])
    tokens = state.tokens
    ranked = ([result.reply] if result.reply is not None else []) + [a.text for a in result.alternatives]
    choices = fit(ranked, body.n, tokens, max_tokens, body.stops())
    prompt_tokens = tokens.total([m.text() for m in body.messages])
    completion_tokens = tokens.total([text for text, _ in choices])
    usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                  total_tokens=prompt_tokens + completion_tokens)
    completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if not body.stream:
        return ChatCompletion(
            id=completion_id, created=created, model=body.model, usage=usage,
            choices=[Choice(index=i, message=AssistantMessage(content=text), finish_reason=reason)
                     for i, (text, reason) in enumerate(choices)],
            riposte=stats_of(result, budget.elapsed_ms()),
        )
    include_usage = body.stream_options is not None and body.stream_options.include_usage
    events = sse(ChatCompletionChunk(id=completion_id, created=created, model=body.model, choices=[]), choices,
                 usage if include_usage else None)
    return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def sse(head: ChatCompletionChunk, choices: list[tuple[str, str]], usage: Usage | None
              ) -> AsyncIterator[bytes]:
    """A whole reply as OpenAI's server-sent events: per choice a role chunk, its words, a finish chunk; with
    `usage`, a last chunk carrying it (and `usage: null` on every chunk before); then [DONE]."""

    def event(choice: ChunkChoice | None, final_usage: Usage | None = None) -> bytes:
        payload = head.model_copy(update={"choices": [choice] if choice else [], "usage": final_usage}).model_dump()
        for c in payload["choices"]:
            c["delta"] = {k: v for k, v in c["delta"].items() if v is not None}
        if usage is None:
            del payload["usage"]  # OpenAI sends the key (null until the last chunk) only when asked for usage
        return b"data: " + orjson.dumps(payload) + b"\n\n"

    # The reply is whole before the first byte; it is streamed word by word for clients that render deltas.
    for i, (text, reason) in enumerate(choices):
        yield event(ChunkChoice(index=i, delta=Delta(role="assistant", content="")))
        for j, piece in enumerate(text.split(" ") if text else []):
            yield event(ChunkChoice(index=i, delta=Delta(content=piece if j == 0 else " " + piece)))
        yield event(ChunkChoice(index=i, delta=Delta(), finish_reason=reason))
    if usage is not None:
        yield event(None, usage)
    yield b"data: [DONE]\n\n"


