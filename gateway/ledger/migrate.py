"""Schema upgrades with alembic (``gateway db upgrade``).

The revisions live in ``gateway/ledger/migrations/versions``; each one ends by writing
its number into ``schema_version``, the row ``schema.open_engine`` checks. A fresh ledger
is created from ``schema.metadata`` and stamped with the head revision, so alembic takes
over from the baseline (version 1, the schema before version numbers) on. No
``alembic.ini``: the configuration is built here, and the connection is handed to
``migrations/env.py``.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Connection

from gateway.ledger.schema import SCHEMA_VERSION, ledger_version, open_engine

MIGRATIONS = Path(__file__).with_name("migrations")


def _config(conn: Connection):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    return config


def stamp_head(conn: Connection) -> None:
    """Record the head revision in a ledger just created at the current version."""
    from alembic import command

    command.stamp(_config(conn), "head")


def upgrade(url: str) -> tuple[int | None, int]:
    """Upgrade the ledger at ``url`` to this gateway's schema version; (version before, after)."""
    from alembic import command

    engine = open_engine(url, create=False, check_version=False)
    try:
        with engine.begin() as conn:
            before = ledger_version(conn)
            if before is None:
                raise ValueError("it holds no ledger; `gateway run` or `gateway masterdata load` creates one")
            if before > SCHEMA_VERSION:
                raise ValueError(f"it has schema version {before}, newer than this gateway's {SCHEMA_VERSION}; "
                                 "a newer gateway wrote it and this one cannot go back")
            if before < SCHEMA_VERSION:
                # A ledger from before version numbers has no alembic_version: alembic starts at
                # the baseline, which only adds the schema_version row.
                command.upgrade(_config(conn), "head")
            return before, ledger_version(conn)
    finally:
        engine.dispose()

