"""What routes share: the success envelope and the app's store and config."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder

from capataz.config import Config
from capataz.store import Store

__all__ = ["capataz_version", "config_of", "ok", "store_of"]


def ok(data: Any) -> dict[str, Any]:
    """``{"ok": true, "data": ...}`` with dataclasses, enums and times made JSON."""
    return {"ok": True, "data": jsonable_encoder(data)}


def store_of(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def config_of(request: Request) -> Config:
    config: Config = request.app.state.config
    return config


def capataz_version() -> str:
    try:
        return version("capataz")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"
