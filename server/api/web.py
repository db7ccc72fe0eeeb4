"""The web chat page at `/`: one static page and its assets, shipped inside the package (no CDN, no build step).

The page is plain HTML; the only thing filled in on the way out is the limits it shows its inputs with
(`{{MIN_BUDGET_MS}}` and friends), so that they are the ones the API checks requests against.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, HTMLResponse

from server.engine import DEFAULT_PERSONA
from server.limits import MAX_BUDGET_MS, MAX_NAME, MAX_SIMULATED_TURNS, MAX_TEXT, MAX_TURNS, MIN_BUDGET_MS

WEB_DIR = Path(__file__).resolve().parent.parent / "web"

# Revalidate on every load: a redeployed server's page and script are picked up together, never half and half.
NO_CACHE = {"Cache-Control": "no-cache"}

PAGE_VALUES = {
    "MIN_BUDGET_MS": MIN_BUDGET_MS,
    "MAX_BUDGET_MS": MAX_BUDGET_MS,
    "MAX_TEXT": MAX_TEXT,
    "MAX_NAME": MAX_NAME,
    "MAX_TURNS": MAX_TURNS,
    "MAX_SIMULATED_TURNS": MAX_SIMULATED_TURNS,
    "DEFAULT_PERSONA": DEFAULT_PERSONA,
}

router = APIRouter(tags=["web"])


def render_page(template: str) -> str:
    """The page with its `{{NAME}}` placeholders replaced by the server's limits."""
    for name, value in PAGE_VALUES.items():
        template = template.replace("{{" + name + "}}", str(value))
    return template


@router.get("/", include_in_schema=False)
async def page() -> HTMLResponse:
    """The chat page."""
    return HTMLResponse(render_page((WEB_DIR / "index.html").read_text(encoding="utf-8")), headers=NO_CACHE)


@router.get("/static/{name}", include_in_schema=False)
async def asset(name: str) -> FileResponse:
    """A file of the page (script, style); only plain names inside the web directory."""
    path = (WEB_DIR / name).resolve()
    if path.parent != WEB_DIR or not path.is_file() or name == "index.html":
        raise HTTPException(404, detail=f"no such file: {name}")
    return FileResponse(path, headers=NO_CACHE)
