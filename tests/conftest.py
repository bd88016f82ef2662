"""Shared fixtures: ledgers on SQLite and PostgreSQL, free ports.

PostgreSQL tests use a schema of their own in the database named by
``GATEWAY_TEST_PG`` (default: the local server's ``test`` database). Without a
server they skip with the reason — except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

# Every `gateway run` / `gateway demo` the tests start would serve HTTP on 127.0.0.1:8080 by
# default; many run at once, so they serve nothing unless a test asks (tests/http).
os.environ.setdefault("GATEWAY_HTTP", "off")

PG_URL = os.environ.get("GATEWAY_TEST_PG", "postgresql+psycopg://127.0.0.1:5432/test")


@pytest.fixture(autouse=True)
def _logging_as_a_gateway_starts() -> None:
    """A command run in-process configures logging for itself (`validate` only criticals, the
    ledger commands only warnings); the next test must not inherit that level, or a test that
    captures log lines sees none of them."""
    from gateway import logs

    logs.configure(level="info")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# The fault scenarios (kill -9, outages, races against timeouts) are timed against the clock; run in
# parallel (pytest-xdist, ``-n 2`` in pyproject.toml) they stay in one lane, one after the other, as
# they ran serially, while the other lane takes the rest of the suite.
FAULT_LANE = ("tests/faults/", "tests/integration/test_kill9.py", "tests/integration/test_repetitive_kill9.py")


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if item.nodeid.startswith(FAULT_LANE):
            item.add_marker(pytest.mark.xdist_group("faults"))


def _pg_unavailable() -> str | None:
    try:
        engine = create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:  # noqa: BLE001 — any failure means "no server"
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"


@pytest.fixture(scope="session")
def pg_available() -> None:
    reason = _pg_unavailable()
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"PostgreSQL is required in CI but {PG_URL} is not reachable ({reason})")
    pytest.skip(f"PostgreSQL not reachable at {PG_URL} ({reason}); set GATEWAY_TEST_PG or start the server")


@pytest.fixture
def pg_url(pg_available) -> Iterator[str]:
    """URL of an empty schema of our own, dropped afterwards."""
    schema = f"bg_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.sqlite'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger_url(request) -> str:
    """Each test using this runs once per database."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
