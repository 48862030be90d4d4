"""``GET /health``: the one endpoint without a token, for load balancers and the
runbook's first check (docs/runbook.md)."""

from __future__ import annotations

from fastapi import APIRouter

from capataz.api.deps import Answer, capataz_version, ok
from capataz.api.schemas import HealthOut
from capataz.runner.protocol import Envelope

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/health", summary="Is the server up", response_model=Envelope[HealthOut])
def health() -> Answer:
    return ok({"status": "ok", "version": capataz_version()})
