"""GET /: a small page to try the service: choose a photo, see the skeletons drawn over it."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["page"])
_PAGE = files("service").joinpath("static/index.html").read_text()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index() -> HTMLResponse:
    return HTMLResponse(_PAGE)
