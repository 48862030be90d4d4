"""What routes share: the success envelope and the app's store and config."""

from __future__ import annotations

import functools
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any, Literal, TypedDict

from fastapi import Query, Request
from fastapi.encoders import jsonable_encoder

from capataz.config import Config
from capataz.redaction import redact_data
from capataz.store import Store

__all__ = [
    "MAX_OFFSET",
    "Answer",
    "Offset",
    "capataz_version",
    "config_of",
    "has_nul",
    "ok",
    "store_of",
]

# PostgreSQL binds LIMIT/OFFSET as a 32-bit INTEGER and SQLite's integers stop at 2**63:
# a bigger offset is refused as input (422) instead of failing in the database (5xx).
MAX_OFFSET = 2**31 - 1
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Rows to skip.")]


def has_nul(*values: str | None) -> bool:
    """PostgreSQL text cannot hold NUL characters (SQLite can): an id with one names
    nothing on either database, and routes answer so before asking the database."""
    return any(value is not None and "\x00" in value for value in values)


class Answer(TypedDict):
    """A success answer as a route returns it: the route's ``response_model``
    (``Envelope[...]``, :mod:`capataz.runner.protocol`) says what ``data`` holds, and
    FastAPI checks it against that before it leaves."""

    ok: Literal[True]
    data: Any


def ok(data: object) -> Answer:
    """``{"ok": true, "data": ...}`` with dataclasses, enums and times made JSON, and
    secret values masked (whatever a run printed or a human typed)."""
    return {"ok": True, "data": redact_data(jsonable_encoder(data))}


def store_of(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def config_of(request: Request) -> Config:
    config: Config = request.app.state.config
    return config


@functools.cache
def capataz_version() -> str:
    """The installed version, read once per process: ``importlib.metadata`` parses the
    package's METADATA on every call, which was most of what ``GET /health`` cost."""
    try:
        return version("capataz")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"
