"""Applying the Alembic migrations that ship inside the package.

capataz upgrades its database on start (and by ``capataz db upgrade``); the scripts live
in ``capataz/store/migrations`` so an installed wheel carries them and no alembic.ini
is needed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from capataz.store.errors import StoreError

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["HEAD", "alembic_config", "current_revision", "head_revision", "upgrade"]

MIGRATIONS = Path(__file__).with_name("migrations")
HEAD = "0009"  # the newest revision; a test keeps it equal to the scripts' head


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
    with _opening(engine):
        if revision == "head" and _stamped(engine) == HEAD:
            return
        from alembic import command

        config = alembic_config(engine)
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)


_OPEN_FIX = (
    "check CAPATAZ_DATABASE_URL and that the database server is running "
    "(unset it to use .capataz/capataz.db)"
)


@contextmanager
def _opening(engine: Engine) -> Iterator[None]:
    """A database that cannot be opened or migrated (a wrong password, a file that is
    not a database, a schema newer than this capataz) is a setup problem, not a bug in
    capataz: one StoreError naming the database (never its password) instead of a
    driver traceback. A server that is away stays StoreUnavailable, which callers may
    retry."""
    try:
        yield
    except sa.exc.DBAPIError as exc:
        raise _open_problem(engine, exc) from exc
    except StoreError:
        raise
    except Exception as exc:
        from alembic.util import CommandError  # imported only when something failed

        if isinstance(exc, CommandError):
            raise _open_problem(engine, exc) from exc
        raise


def _open_problem(engine: Engine, exc: Exception) -> StoreError:
    cause = getattr(exc, "orig", None) or exc
    detail = " ".join(str(cause).split())[:300]
    where = engine.url.render_as_string(hide_password=True)
    return StoreError(f"database {where}: {detail}", fix=_OPEN_FIX)


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

    with _opening(engine), engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
