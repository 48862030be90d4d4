"""Intake tests that reach the store use its fixtures: both databases, a hand clock."""

from tests.store.conftest import (  # noqa: F401  (fixtures, registered by import)
    clock,
    db_url,
    migrated_pg_url,
    pg_admin_url,
    pg_template,
    sqlite_template,
    store,
)
