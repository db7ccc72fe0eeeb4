"""The web chat page at `/`: one static page and its assets, shipped inside the package (no CDN, no build step)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

WEB_DIR = Path(__file__).resolve().parent.parent / "web"

router = APIRouter(tags=["web"])


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    """The chat page."""
    return FileResponse(WEB_DIR / "index.html", media_type="text/html")


@router.get("/static/{name}", include_in_schema=False)
async def asset(name: str) -> FileResponse:
    """A file of the page (script, style); only plain names inside the web directory."""
    path = (WEB_DIR / name).resolve()
    if path.parent != WEB_DIR or not path.is_file():
        raise HTTPException(404, detail=f"no such file: {name}")
    return FileResponse(path)
