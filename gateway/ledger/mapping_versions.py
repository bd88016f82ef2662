"""The history of the mapping as the workbench applied it: the ``mapping_versions`` table.

For: ``gateway.http.mapping_api`` — record a version after the gateway applied it, list the
versions, read one (to show or to restore it). A restore is a new version with the old
text, so the history only grows.

Must never: update or delete a row, or decide whether a mapping is valid (the reload does).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, func, select

from gateway.ledger import audit
from gateway.ledger import schema

_V = schema.mapping_versions.c
MAX_LISTED = 500  # newest first; older versions stay readable by id


@dataclass(frozen=True)
class MappingVersion:
    id: int
    applied_at: datetime
    actor: str
    comment: str
    hash: str
    diff_summary: str
    text: str | None = None  # left out of listings


def record(engine: Engine, *, applied_at: datetime, actor: str, comment: str, hash: str, text: str,
           diff_summary: str, unless_latest_is: str | None = None, action: audit.Action | None = None) -> int | None:
    """Append a version; its id. With ``unless_latest_is``: nothing (None) when the newest
    version already has that hash (the text found before an apply, recorded once). With
    ``action``: the person's action goes into the audit trail in the same transaction."""
    with engine.begin() as conn:
        if unless_latest_is is not None:
            newest = conn.execute(select(_V.hash).order_by(_V.id.desc()).limit(1)).scalar()
            if newest == unless_latest_is:
                return None
        version = conn.execute(schema.mapping_versions.insert().values(
            applied_at=applied_at, actor=actor, comment=comment, hash=hash, text=text,
            diff_summary=diff_summary)).inserted_primary_key[0]
        if action is not None:
            audit.write(conn, action, audit.Record(conn, changed={"mapping": diff_summary}, subject=f"mapping:{hash[:12]}",
                                                   postings=[f"mapping_version:{version}"]), [])
        return version


def listed(engine: Engine, limit: int = MAX_LISTED) -> list[MappingVersion]:
    """The newest ``limit`` versions, newest first, without their texts."""
    columns = [_V.id, _V.applied_at, _V.actor, _V.comment, _V.hash, _V.diff_summary]
    with engine.connect() as conn:
        rows = conn.execute(select(*columns).order_by(_V.id.desc()).limit(limit)).all()
    return [MappingVersion(**row._mapping) for row in rows]


def one(engine: Engine, version_id: int) -> MappingVersion | None:
    with engine.connect() as conn:
        row = conn.execute(select(schema.mapping_versions).where(_V.id == version_id)).first()
    return MappingVersion(**row._mapping) if row else None


def latest_with_hash(engine: Engine, hash: str) -> int | None:
    """The newest version whose text is ``hash`` (the running file's version), if any."""
    with engine.connect() as conn:
        return conn.execute(select(func.max(_V.id)).where(_V.hash == hash)).scalar()
