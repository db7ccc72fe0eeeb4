"""riposte's own surface: `/reply` (generate and pick), `/rank` (score anyone's candidates), `/simulate`."""

from __future__ import annotations

import math

from fastapi import APIRouter, Request

from server.api.deps import (
    ERRORS,
    ApiKey,
    EngineDep,
    StateDep,
    check_persona,
    received_at,
    require_scorer,
    serving,
)
from server.api.schemas import (
    RankedText,
    RankRequest,
    RankResponse,
    ReplyRequest,
    ReplyResponse,
    ReplyStats,
    ScoredText,
    SimulatedTurn,
    SimulateRequest,
    SimulateResponse,
)
from server.engine import Reply, Turn
from server.group import Conversation
from server.limits import MIN_BUDGET_MS

router = APIRouter(tags=["riposte"], dependencies=[ApiKey], responses=ERRORS)


def stats_of(result: Reply, elapsed_ms: float) -> ReplyStats:
    """The turn's stats, with the request's whole time (queueing included) as elapsed_ms."""
    return ReplyStats.model_validate({**result.stats, "elapsed_ms": round(elapsed_ms, 1)})


@router.post("/reply")
async def post_reply(body: ReplyRequest, request: Request, engine: EngineDep, state: StateDep) -> ReplyResponse:
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
    return ReplyResponse(
        reply=result.reply,
        score=result.score,
        alternatives=[ScoredText(text=a.text, score=a.score) for a in result.alternatives],
        stats=stats_of(result, budget.elapsed_ms()),
    )


@router.post("/rank")
async def post_rank(body: RankRequest, request: Request, engine: EngineDep, state: StateDep) -> RankResponse:
    """Score any generator's candidates against the history, best first."""
    require_scorer(engine)
    # Without a budget every candidate is read, however long that takes.
    budget = engine.budget(body.budget_ms or math.inf, received_at(request), generates=False)
    async with serving(request, state, budget) as watch:
        ranked = await watch.race(engine.arank([Turn(t.speaker, t.text) for t in body.history], body.candidates,
                                               budget=budget))
    return RankResponse(
        ranked=[RankedText(text=s.text, score=s.score, index=s.index) for s in ranked],
        scored=sum(s.score is not None for s in ranked),
        elapsed_ms=round(budget.elapsed_ms(), 1),
    )


@router.post("/simulate")
async def post_simulate(body: SimulateRequest, request: Request, engine: EngineDep, state: StateDep
                        ) -> SimulateResponse:
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
    turns: list[SimulatedTurn] = []
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
            turns.append(SimulatedTurn(
                persona=persona, speaker=convo.speaker(persona), text=result.reply, score=result.score,
                elapsed_ms=round(turn_budget.elapsed_ms(), 1), scored=result.stats["scored"],
                timed_out=result.stats["timed_out"],
            ))
    return SimulateResponse(turns=turns, elapsed_ms=round(bound.elapsed_ms(), 1), budget_ms=per_turn,
                            time_bound_ms=bound_ms, stopped=stopped)
