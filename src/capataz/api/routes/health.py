"""``GET /health``: the one endpoint without a token, for load balancers and the
runbook's first check (docs/runbook.md)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from capataz.api.deps import capataz_version, ok

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/health", summary="Is the server up")
def health() -> dict[str, Any]:
    return ok({"status": "ok", "version": capataz_version()})
