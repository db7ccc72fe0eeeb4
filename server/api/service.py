"""The service's own routes: `/health` for load balancers and the page, `/metrics` for Prometheus."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, Response

from server.api.deps import ApiKey, EngineDep, StateDep
from server.api.schemas import Health, ServerConfig

router = APIRouter(tags=["service"])


@router.get("/health", responses={503: {"model": Health, "description": "loading, building, or failed"}})
async def get_health(state: StateDep, response: Response) -> Health:
    """200 when the models are ready; 503 while they load or build (with the build's progress), or failed to."""
    if state.engine is not None:
        return Health(status="ok")
    response.status_code = 503
    response.headers["Retry-After"] = "5"
    if state.load_error:
        return Health(status="error", detail=state.load_error)
    if state.building is not None and state.building.total:
        progress = state.building.as_dict()
        return Health(status="building", detail=progress["stage"], build=progress)
    return Health(status="loading", detail="models are loading")


@router.get("/metrics", dependencies=[ApiKey], response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus exposition text"}})
async def get_metrics(state: StateDep) -> Response:
    """Prometheus text: requests, latency, turns, in-flight and queue gauges, process metrics."""
    if state.engine is not None:
        state.metrics.set_queue(*state.engine.queue)
    body, content_type = state.metrics.render()
    return Response(body, media_type=content_type)


@router.get("/config", dependencies=[ApiKey])
async def get_config(state: StateDep, engine: EngineDep) -> ServerConfig:
    """The server's defaults (budget, candidates), its personas and the request limits, for clients and the page."""
    return ServerConfig(budget_ms=state.settings.budget_ms, n_candidates=engine.config.n_candidates,
                        personas=engine.persona_names, speaking_personas=engine.speaking_personas,
                        scorer="reranker" if engine.scorer is not None else "prior")
