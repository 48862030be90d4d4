"""Applying the Alembic migrations that ship inside the package.

capataz upgrades its database on start (and by ``capataz db upgrade``); the scripts live
in ``capataz/store/migrations`` so an installed wheel carries them and no alembic.ini
is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Engine

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["HEAD", "alembic_config", "current_revision", "head_revision", "upgrade"]

MIGRATIONS = Path(__file__).with_name("migrations")
HEAD = "0005"  # the newest revision; a test keeps it equal to the scripts' head


def alembic_config(engine: Engine | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database of ``engine`` to ``revision`` (the newest by default).

    Every capataz command opens the store, and importing and running Alembic costs
    about half a second; a database already at the head is recognised with one query."""
    if revision == "head" and _stamped(engine) == HEAD:
        return
    from alembic import command

    config = alembic_config(engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def _stamped(engine: Engine) -> str | None:
    try:
        with engine.connect() as connection:
            reading = connection.execution_options(capataz_read_only=True)  # no write lock
            return reading.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    except sa.exc.DBAPIError:
        return None  # no version table yet: a new database


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at; None for a database capataz never migrated."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
