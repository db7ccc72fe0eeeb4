"""`POST /v1/rerank` (and `/v2/rerank`) in the shape Cohere and Jina define and vLLM serves, so the rerank plug-ins
of LangChain, LlamaIndex and Open WebUI can use riposte's editor.

The query is the context: one history line per line of the query, the newest last. Documents are the candidates.
`relevance_score` is the sigmoid of the editor's score, so it lies in (0, 1) as those clients expect; the order is
the editor's. The `model` field is echoed back: one server has one editor, whatever a client calls it.
"""

from __future__ import annotations

import math
import uuid

from fastapi import APIRouter, Request

from server.api.deps import (
    OPENAI_ERRORS,
    ApiKey,
    EngineDep,
    StateDep,
    received_at,
    require_scorer,
    serving,
    unprocessable,
)
from server.api.schemas import RerankDocument, RerankRequest, RerankResponse, RerankResult, RerankUsage
from server.engine import Turn
from server.limits import MAX_TEXT, MAX_TURNS

router = APIRouter(tags=["rerank"], dependencies=[ApiKey], responses=OPENAI_ERRORS)


def relevance(score: float | None) -> float | None:
    """The editor's score squashed into (0, 1); None stays None (not read within the budget)."""
    if score is None:
        return None
    return 1.0 / (1.0 + math.exp(-score)) if score >= 0 else math.exp(score) / (1.0 + math.exp(score))


@router.post("/v1/rerank")
@router.post("/v2/rerank", include_in_schema=False)
async def rerank(body: RerankRequest, request: Request, engine: EngineDep, state: StateDep) -> RerankResponse:
    """Score documents against a query (the context), best first."""
    require_scorer(engine)
    # Long inputs are cut, as Cohere's and vLLM's servers cut them: the newest lines, each document's start.
    lines = [line.strip()[-MAX_TEXT:] for line in body.query.splitlines() if line.strip()][-MAX_TURNS:]
    if not lines:
        raise unprocessable("query", "has no text")
    texts = [(d if isinstance(d, str) else d.text)[:MAX_TEXT] for d in body.documents]
    budget = engine.budget(body.budget_ms or math.inf, received_at(request), generates=False)
    async with serving(request, state, budget) as watch:
        ranked = await watch.race(engine.arank([Turn("user", line) for line in lines], texts, budget=budget))
    tokens = state.tokens
    results = [
        RerankResult(index=s.index, relevance_score=relevance(s.score),
                     document=RerankDocument(text=s.text) if body.return_documents else None)
        for s in ranked[: body.top_n]
    ]
    total = tokens.total([body.query, *texts])
    return RerankResponse(id=f"rerank-{uuid.uuid4().hex}", model=body.model or "riposte", results=results,
                          usage=RerankUsage(total_tokens=total))
