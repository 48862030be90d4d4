"""Applying the Alembic migrations that ship inside the package.

capataz upgrades its database on start (and by ``capataz db upgrade``); the scripts live
in ``capataz/store/migrations`` so an installed wheel carries them and no alembic.ini
is needed.

Runners of a fleet often start together on a new database, so every process may try to
migrate at the same instant. Without a lock both would run the same DDL and the second
would fail on "relation already exists" (PostgreSQL) halfway through a revision. So an
upgrade takes a lock that serialises migrators across processes and machines, then
reads the stamped revision again under it: the second opener finds the head and does
nothing.

* PostgreSQL: ``pg_advisory_xact_lock`` in the very transaction that runs the
  migrations (PostgreSQL's DDL is transactional), so the lock is released exactly when
  the new schema becomes visible, and a migrator that dies releases it with its
  session. The connection's ``lock_timeout`` and ``statement_timeout`` (engine.py) are
  lifted for that transaction only: waiting for another process's migration, or a long
  ALTER, is expected here.
* SQLite: the engine starts every write transaction with ``BEGIN IMMEDIATE``
  (engine.py), which takes the database's one write lock for the whole transaction and
  makes other processes' ``BEGIN IMMEDIATE`` wait (busy timeout). SQLite's DDL is
  transactional too, and Alembic, told that SQLite has no transactional DDL, starts no
  transaction of its own inside ours; so the whole upgrade is one locked transaction.

A database stamped with a revision this capataz does not ship was migrated by a newer
capataz: it is refused with :class:`SchemaTooNewError` before anything runs, never
half-migrated or "downgraded" by accident.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from capataz.store.errors import SchemaTooNewError, StoreError

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "HEAD",
    "alembic_config",
    "check_known",
    "current_revision",
    "head_revision",
    "stamped_revision",
    "upgrade",
]

MIGRATIONS = Path(__file__).with_name("migrations")
HEAD = "0009"  # the newest revision; a test keeps it equal to the scripts' head
# The revisions this capataz ships, read from the scripts' names ("0003_api_tokens.py")
# so the check costs no Alembic import; a test keeps it equal to Alembic's view.
KNOWN = frozenset(path.name[:4] for path in (MIGRATIONS / "versions").glob("[0-9]" * 4 + "_*.py"))
# Key of the advisory lock migrators take on PostgreSQL ("capataz" in ASCII, as a
# 64-bit number): one fixed key, so every capataz of every version agrees on it.
MIGRATION_LOCK_KEY = 0x63617061_74617A00


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
    about half a second; a database already at the head is recognised by two cheap
    queries (is there a version table, what does it say), without taking the lock."""
    with _opening(engine):
        stamped = stamped_revision(engine)
        check_known(stamped)
        if revision == "head" and stamped == HEAD:
            return
        from alembic import command

        config = alembic_config(engine)
        with engine.begin() as connection:
            _serialise(connection)
            # Another process may have migrated while this one waited for the lock.
            stamped = _stamped_on(connection)
            check_known(stamped)
            if revision == "head" and stamped == HEAD:
                return
            config.attributes["connection"] = connection
            command.upgrade(config, revision)


def _serialise(connection: sa.Connection) -> None:
    """Hold the migration lock until ``connection``'s transaction ends (see the module
    docstring); on SQLite its BEGIN IMMEDIATE already holds the write lock."""
    if connection.dialect.name != "postgresql":
        return
    connection.exec_driver_sql("SET LOCAL lock_timeout = 0")
    connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
    connection.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))


def check_known(revision: str | None) -> None:
    """Refuse a database a newer capataz migrated: this code cannot know what its
    schema means, and Alembic would only fail on the unknown revision."""
    if revision is not None and revision not in KNOWN:
        raise SchemaTooNewError(
            f"the database is at schema {revision}, newer than this capataz ({HEAD})",
            fix="upgrade capataz on this machine",
        )


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


def stamped_revision(engine: Engine) -> str | None:
    """The revision stamped in the database, None for a new one: one cheap query, no
    Alembic import (every command calls this on start)."""
    with engine.connect() as connection:
        reading = connection.execution_options(capataz_read_only=True)  # no write lock
        return _stamped_on(reading)


def _stamped_on(connection: sa.Connection) -> str | None:
    """The stamped revision as ``connection`` sees it. The version table's existence is
    asked first: on PostgreSQL a failed SELECT would abort the surrounding transaction."""
    if not sa.inspect(connection).has_table("alembic_version"):
        return None  # a new database
    found = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    return None if found is None else str(found)


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at; None for a database capataz never migrated."""
    from alembic.runtime.migration import MigrationContext

    with _opening(engine), engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
