"""The web panel: one HTML page, one stylesheet and a few ES modules shipped inside the
package, served by the API itself so there is nothing to build or deploy separately.

The page needs no token (it holds no data); every data call it makes goes to the JSON
API with the bearer token the person signed in with. The files are read from a fixed
list made at import time, so no request path ever reaches the file system, and they are
left out of the OpenAPI document: they are not part of the API contract."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response

from capataz.api.errors import ApiError

__all__ = ["PANEL_DIR", "router"]

PANEL_DIR = Path(__file__).resolve().parent.parent / "panel"

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
# The panel talks only to this origin and runs only its own scripts: API data can never
# become markup or code, even if a view forgot to escape it.
_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": _POLICY,
    "Referrer-Policy": "no-referrer",
}
ASSETS = {
    path.relative_to(PANEL_DIR).as_posix(): path
    for path in sorted(PANEL_DIR.rglob("*"))
    if path.is_file() and path.suffix in _TYPES
}

router = APIRouter(include_in_schema=False)


def _file(name: str) -> Response:
    path = ASSETS.get(name)
    if path is None:
        raise ApiError(404, f"no panel file {name}")
    return Response(path.read_bytes(), media_type=_TYPES[path.suffix], headers=_HEADERS)


@router.get("/")
def index() -> Response:
    return _file("index.html")


@router.get("/panel/{name:path}")
def asset(name: str) -> Response:
    return _file(name)
