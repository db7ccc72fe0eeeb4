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

from server.api.deps import ApiKey, EngineDep, StateDep, check_persona, received_at, serving, unprocessable
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
from server.limits import MAX_NAME, MAX_TEXT

router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[ApiKey])

# Extra runners-up asked of the engine when max_tokens or stop may rule some out.
SPARE_CANDIDATES = 32


def system_settings(text: str, engine: Engine) -> tuple[str | None, str | None]:
    """(persona, topic) from a system message: `persona:`/`topic:` lines, a bare persona name, else the text as topic."""
    persona = topic = None
    rest = []
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if sep and key == "persona" and value:
            persona = value
        elif sep and key == "topic" and value:
            topic = value
        elif line.strip():
            rest.append(line.strip())
    free = " ".join(rest)
    if persona is None and free in engine.personas:
        return free, topic
    if topic is None and free:
        topic = free
    return persona, (topic[:MAX_NAME] if topic else None)


def fit(texts: list[str], n: int, tokens: TokenCounter, max_tokens: int | None, stop: list[str] | None
        ) -> list[tuple[str, str]]:
    """n (text, finish_reason) pairs: the best texts within max_tokens, else the best cut to it; each cut at `stop`."""
    if max_tokens is not None:
        fitting = [t for t in texts if tokens.count(t) <= max_tokens]
        cut = [tokens.truncate(t, max_tokens)[0] for t in texts if tokens.count(t) > max_tokens]
        chosen = [(t, "stop") for t in fitting[:n]] + [(t, "length") for t in cut[: n - len(fitting[:n])]]
    else:
        chosen = [(t, "stop") for t in texts[:n]]
    chosen += [("", "stop")] * (n - len(chosen))  # a turn with nothing to say still has n choices
    out = []
    for text, reason in chosen:
        for s in stop or []:
            at = text.find(s)
            if at >= 0:
                text, reason = text[:at], "stop"
        out.append((text, reason))
    return out


@router.get("/models")
async def list_models(engine: EngineDep) -> ModelList:
    """The personas, as OpenAI models."""
    return ModelList(data=[ModelCard(id=name) for name in engine.persona_names])


@router.post("/chat/completions", response_model=ChatCompletion,
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "a ChatCompletion, or with stream=true ChatCompletionChunk events"}})
async def chat_completions(body: ChatRequest, request: Request, engine: EngineDep, state: StateDep):
    """OpenAI-compatible chat: messages in, n choices out, optionally streamed as server-sent events."""
    check_persona(engine, body.model, field="model", status=404)
    persona, topic = body.model, None
    for m in body.messages:
        if m.role in ("system", "developer"):
            asked, topic = system_settings(m.text(), engine)
            if asked is not None and body.model == DEFAULT_PERSONA:
                persona = asked
    if persona not in engine.personas:
        raise unprocessable("messages", f"the system message names unknown persona {persona!r}; "
                                        f"known: {', '.join(engine.persona_names)}")
    history = [{"speaker": "bot" if m.role == "assistant" else "user", "text": m.text()}
               for m in body.messages if m.role in ("user", "assistant")]
    if not history:
        raise unprocessable("messages", "needs at least one user or assistant message")
    for i, m in enumerate(body.messages):
        if len(m.text()) > MAX_TEXT:
            raise unprocessable(f"messages.{i}.content", f"over {MAX_TEXT} characters")
    max_tokens = body.max_completion_tokens or body.max_tokens
    sample = body.temperature is not None and body.temperature > 0
    budget = engine.budget(body.budget_ms or state.settings.budget_ms, received_at(request))
    spare = SPARE_CANDIDATES if max_tokens is not None or body.stop else 0
    async with serving(request, state, budget) as watch:
        result: Reply = await watch.race(engine.areply(
            history, budget=budget, executor=state.executor, n_candidates=body.n_candidates, seed=body.seed,
            persona=persona, top_k=8 if sample else 1, temperature=body.temperature if sample else 1.0,
            n_alternatives=body.n - 1 + spare, topic=topic,
        ))
    state.metrics.observe_reply(result.stats["scored"], result.stats["timed_out"])
    tokens = state.tokens
    ranked = ([result.reply] if result.reply is not None else []) + [a.text for a in result.alternatives]
    choices = fit(ranked, body.n, tokens, max_tokens, body.stop)
    prompt_tokens = sum(tokens.count(m.text()) for m in body.messages)
    completion_tokens = sum(tokens.count(text) for text, _ in choices)
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

    def event(choices: list[ChunkChoice], final_usage: Usage | None = None) -> bytes:
        chunk = ChatCompletionChunk(id=completion_id, created=created, model=body.model, choices=choices,
                                    usage=final_usage)
        payload = chunk.model_dump()
        for c in payload["choices"]:
            c["delta"] = {k: v for k, v in c["delta"].items() if v is not None}
        if not include_usage:
            del payload["usage"]  # OpenAI sends the key (null until the last chunk) only when asked for usage
        return b"data: " + orjson.dumps(payload) + b"\n\n"

    async def events() -> AsyncIterator[bytes]:
        # The reply is whole before the first byte; it is streamed word by word for clients that render deltas.
        for i, (text, reason) in enumerate(choices):
            yield event([ChunkChoice(index=i, delta=Delta(role="assistant", content=""))])
            for j, piece in enumerate(text.split(" ") if text else []):
                yield event([ChunkChoice(index=i, delta=Delta(content=piece if j == 0 else " " + piece))])
            yield event([ChunkChoice(index=i, delta=Delta(), finish_reason=reason)])
        if include_usage:
            yield event([], usage)
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

