"""Which database errors mean "the server is away" — and only those become
:class:`StoreUnavailable`.

A runner retries transient errors for minutes; retrying a constraint violation or a
broken query for minutes would only hide a bug, so the line is drawn narrowly:

* SQLAlchemy saw the connection die (``is_disconnect``), or a pool ``DisconnectionError``;
* PostgreSQL (psycopg) could not connect or lost the connection: an ``OperationalError``
  or ``InterfaceError`` with an SQLSTATE of class 08 (connection exception), 57P01 to
  57P03 (the server is shutting down, crashed, or still starting) or 53300 (too many
  connections); or without one (libpq's own failures: refused, reset, timed out, closed)
  unless the server answered the connection with a ``FATAL`` refusal that will not pass
  by itself (no such database or role, wrong password): only its starting, shutting
  down, recovering and too-many-clients refusals count;
* PostgreSQL ended a wait or a session on one of capataz's session timeouts
  (engine.py): 55P03 ``lock_timeout`` (another session holds the row, perhaps a frozen
  process), 57014 ``statement_timeout`` (or a cancel), 25P03
  ``idle_in_transaction_session_timeout`` and 57P05 ``idle_session_timeout`` (this
  session was ended). Each passes by itself, once the other session is gone or this one
  reconnects, so a runner retries the whole transaction instead of crashing;
* SQLite stayed busy ("database is locked") past the busy timeout of ``engine.py``.

Everything else stays the SQLAlchemy error it was and surfaces at once, except a
``DataError`` (a value the column cannot hold), which becomes
:class:`ValueRefusedError` so the API can answer 422 without importing SQLAlchemy.

The translation is a ``handle_error`` listener on every engine capataz creates, so it
covers every statement, commit and connect — migrations included — without touching the
code that issues them; the raw-sqlite3 fast paths call :func:`dbapi_error` themselves.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine, ExceptionContext

from capataz.store.errors import StoreUnavailable, ValueRefusedError

__all__ = ["dbapi_error", "install", "is_unavailable", "unavailable"]

_PG_UNAVAILABLE_STATES = frozenset({"57P01", "57P02", "57P03", "53300"})
# The session timeouts of engine.py: lock, statement, idle in transaction, idle.
_PG_TIMEOUT_STATES = frozenset({"55P03", "57014", "25P03", "57P05"})
# libpq reports a refused connection without an SQLSTATE; these FATAL texts pass by
# themselves (the server is starting, stopping, recovering or full).
_PG_PASSING_REFUSALS = (
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "the database system is not accepting connections",
    "sorry, too many clients already",
    "remaining connection slots are reserved",
)
_SQLITE_BUSY = 5  # SQLITE_BUSY; extended codes keep it in their low byte
_FIX = "the database is unreachable or busy; capataz runners retry by themselves"


def is_unavailable(error: BaseException, *, disconnect: bool = False) -> bool:
    """Whether ``error`` (a SQLAlchemy or driver exception) means the database is away
    for now rather than that the statement is wrong. ``disconnect``: SQLAlchemy already
    judged the connection dead."""
    if disconnect or isinstance(error, sa.exc.DisconnectionError):
        return True
    orig = error.orig if isinstance(error, sa.exc.DBAPIError) else error
    if isinstance(orig, psycopg.Error) and orig.sqlstate in _PG_TIMEOUT_STATES:
        return True  # 25P03 is an InternalError (class 25), the others OperationalErrors
    if isinstance(orig, psycopg.OperationalError | psycopg.InterfaceError):
        state = orig.sqlstate
        if state is not None:
            return state.startswith("08") or state in _PG_UNAVAILABLE_STATES
        text = str(orig)
        return "FATAL:" not in text or any(reason in text for reason in _PG_PASSING_REFUSALS)
    if isinstance(orig, sqlite3.OperationalError):
        code = getattr(orig, "sqlite_errorcode", None)
        if code is not None:
            return int(code) & 0xFF == _SQLITE_BUSY
        return "database is locked" in str(orig)
    return False


def unavailable(error: BaseException, url: sa.URL | None = None) -> StoreUnavailable:
    """The one-line StoreUnavailable for ``error``: which database (its URL without the
    password) and the driver's first line."""
    orig = error.orig if isinstance(error, sa.exc.DBAPIError) else error
    first = (str(orig).strip().splitlines() or [type(orig).__name__])[0][:200]
    where = f"database {url.render_as_string(hide_password=True)}" if url else "the database"
    return StoreUnavailable(f"{where} is unavailable: {first}", fix=_FIX)


def _translate(context: ExceptionContext) -> BaseException | None:
    if context.is_pre_ping:  # the pool is checking a connection: let it reconnect
        return None
    error = context.sqlalchemy_exception or context.original_exception
    if is_unavailable(context.original_exception, disconnect=context.is_disconnect):
        return unavailable(error, context.engine.url if context.engine else None)
    if isinstance(error, sa.exc.DataError):
        first = (str(context.original_exception).strip().splitlines() or ["?"])[0]
        return ValueRefusedError(first[:300], fix="send a value the field can hold")
    return None


def install(engine: Engine) -> None:
    """Translate ``engine``'s errors as the module docstring says."""
    event.listen(engine, "handle_error", _translate)


def dbapi_error(
    statement: str, params: Any, error: sqlite3.Error, url: sa.URL | None = None
) -> Exception:
    """For code that runs raw sqlite3 (the claim and context fast paths): what
    SQLAlchemy would have raised, translated like everything else."""
    if is_unavailable(error):
        return unavailable(error, url)
    return sa.exc.DBAPIError.instance(statement, params, error, sqlite3.Error)
