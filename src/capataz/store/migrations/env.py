"""Alembic environment for capataz. It never opens a connection of its own: capataz
passes one in ``config.attributes["connection"]`` (see ``capataz.store.migrate``), so
there is no alembic.ini and no second place where the database URL is decided."""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext

from capataz.store.schema import UTCDateTime, metadata


def _render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Render capataz's UTC type as the plain column type it wraps, so migrations do not
    import application code that may change after they are written."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("capataz migrations run through capataz.store.migrate.upgrade()")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_item=_render_item,
        render_as_batch=True,  # SQLite can only ALTER through table copies
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
