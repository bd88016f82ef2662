"""Ledger tables (SQLAlchemy Core) and the engine they live in.

The ledger is the system of record: master data snapshots, stock, every goods
movement and activity posting, confirmations, the counter state the gateway resumes
from, units counted but not yet confirmed, anomalies and the error queue.

Two rules hold for every table:
* Quantities and money are exact. SQLite has no decimal type (SQLAlchemy would go
  through float), so ``Dec`` stores them as text there and as NUMERIC on PostgreSQL.
* History is appended, never edited: movements and postings are only inserted; a
  correction is a new, linked row (reversal / adjustment).

SQLite runs in WAL mode with ``synchronous=FULL`` and every transaction starts with
``BEGIN IMMEDIATE`` so the one writer never deadlocks with a reader upgrading its lock.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    create_engine,
    event,
)
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.types import TypeDecorator



class Dec(TypeDecorator):
    """Exact Decimal: NUMERIC on PostgreSQL, text on SQLite (never float)."""

    impl = String(48)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect):
        if dialect.name == "postgresql":
            return dialect.type_descriptor(Numeric(38, 12, asdecimal=True))
        return dialect.type_descriptor(String(48))

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"ledger quantities must be Decimal, got {type(value).__name__}")
        return value if dialect.name == "postgresql" else format(value, "f")

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return tidy(value if isinstance(value, Decimal) else Decimal(value))


def tidy(value: Decimal) -> Decimal:
    """Same value without the column's trailing zeros (NUMERIC(38,12) gives 6.000000000000)."""
    n = value.normalize()
    return n.quantize(Decimal(1)) if n.as_tuple().exponent > 0 else n


class UInt64(TypeDecorator):
    """Counter values up to 2^64 − 1: NUMERIC(20) on PostgreSQL, text on SQLite."""

    impl = String(20)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect):
        if dialect.name == "postgresql":
            return dialect.type_descriptor(Numeric(20, 0, asdecimal=True))
        return dialect.type_descriptor(String(20))

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        return Decimal(int(value)) if dialect.name == "postgresql" else str(int(value))

    def process_result_value(self, value, dialect):
        return None if value is None else int(value)


_MEMO = 4096  # texts of recent times each UtcDateTime bind processor keeps


class UtcDateTime(TypeDecorator):
    """Aware UTC datetimes in, aware UTC datetimes out, on every database."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the ledger; use UTC-aware times")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def bind_processor(self, dialect):
        """The conversion above, remembered for recent times (a transaction binds the same ``now`` into
        most of its rows, and a pending's first time and a counter's last time into every transaction
        until they change), and on SQLite turned into text with one ``isoformat`` instead of
        SQLAlchemy's formatting through a dict of fields (the same text,
        ``tests/ledger/test_schema_types.py``): every counter state and pending row the writer stores
        carries a time of its own, and each conversion was a few µs of Python in the writer's thread."""
        if dialect.name == "sqlite":
            def process(value):
                if value is None:
                    return None
                if value.tzinfo is UTC:  # most of them: the text less its "+00:00", no conversion
                    return value.isoformat(" ", "microseconds")[:-6]
                return self.process_bind_param(value, dialect).isoformat(" ", "microseconds")
        else:
            process = super().bind_processor(dialect)
        if process is None:
            return None
        # Equal datetimes are one instant, so one text: a value's text is kept (up to _MEMO values, then
        # forgotten all at once). Dict reads and writes are atomic: safe from any thread.
        memo: dict[datetime, object] = {}

        def cached(value):
            if value is None:
                return None
            out = memo.get(value)
            if out is None:
                if len(memo) >= _MEMO:
                    memo.clear()
                out = memo[value] = process(value)
            return out

        return cached


metadata = MetaData()


def _id() -> Column:
    return Column("id", Integer, primary_key=True, autoincrement=True)


materials = Table(
    "materials", metadata,
    Column("id", String(64), primary_key=True),
    Column("description", Text, nullable=False, default=""),
    Column("uom", String(8), nullable=False),
    Column("decimals", Integer, nullable=False),
    Column("lot_tracked", Boolean, nullable=False),
    Column("negative_stock_allowed", Boolean, nullable=False),
    Column("lot_selection", String(4), nullable=False, default="fifo"),
    # none | lot | serial; a serial-tracked material is lot_tracked too (a serial is a lot of one unit)
    Column("tracking", String(6), nullable=False, default="none"),
    Column("serial_pattern", String(64), nullable=False, default=""),
    # Standard price per one unit of measure, in ``currency``: what stock and its movements are valued at.
    Column("standard_price", Dec, nullable=False, default=Decimal(0)),
    Column("currency", String(3), nullable=False, default="EUR"),
    # Open backflush errors of this material are reprocessed by the posting that adds its stock.
    Column("auto_reprocess", Boolean, nullable=False, default=True),
)

lots = Table(
    "lots", metadata,
    Column("material", String(64), primary_key=True),
    Column("lot", String(64), primary_key=True),
    Column("received_at", UtcDateTime, nullable=False),
    Column("expires_on", Date),
    Column("produced_by_order", String(64)),  # set for lots this gateway received from an order
)

genealogy = Table(
    "genealogy", metadata,
    _id(),
    Column("confirmation_id", String(40), index=True),
    Column("order_no", String(64), nullable=False, index=True),
    Column("component", String(64), nullable=False),
    Column("component_lot", String(64), nullable=False, index=True),
    Column("qty", Dec, nullable=False),  # negative on a reversal
    Column("uom", String(8), nullable=False),
    Column("product", String(64), nullable=False),
    Column("product_lot", String(64), nullable=False, index=True),
    Column("posted_at", UtcDateTime, nullable=False),
)

work_centers = Table(
    "work_centers", metadata,
    Column("id", String(64), primary_key=True),
    Column("description", Text, nullable=False, default=""),
    Column("labor_rate", Dec, nullable=False),
    Column("machine_rate", Dec, nullable=False),
    Column("overhead_pct_of_labor", Dec, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("supply_location", String(64), nullable=False),
)

production_orders = Table(
    "production_orders", metadata,
    Column("number", String(64), primary_key=True),
    Column("material", String(64), nullable=False),
    Column("quantity", Dec, nullable=False),
    Column("base_qty", Dec, nullable=False),
    Column("receipt_location", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("produced_lot", String(64), nullable=False, default=""),
)

order_components = Table(
    "order_components", metadata,
    Column("order_no", String(64), primary_key=True),
    Column("item", String(64), primary_key=True),
    Column("material", String(64), nullable=False),
    Column("qty_per_base", Dec, nullable=False),
    Column("scrap_pct", Dec, nullable=False),
    Column("flushing", String(20), nullable=False),
    Column("flushing_source", String(80), nullable=False, default=""),
    Column("operation", String(64), nullable=False),
    Column("supply_location", String(64), nullable=False),
    Column("rework", Boolean, nullable=False, default=False),
    Column("selection", String(4), nullable=False, default=""),  # "": the material's lot_selection
    Column("basis", String(8), nullable=False, default="total"),  # total: yield + scrap; yield: good units only
    Column("basis_source", String(80), nullable=False, default=""),  # "BOM item" or "default"
)

order_operations = Table(
    "order_operations", metadata,
    Column("order_no", String(64), primary_key=True),
    Column("operation", String(64), primary_key=True),
    Column("work_center", String(64), nullable=False),
    Column("setup_hours", Dec, nullable=False),
    Column("machine_hours_per_base", Dec, nullable=False),
    Column("labor_hours_per_base", Dec, nullable=False),
    Column("final", Boolean, nullable=False),
)

stock = Table(
    "stock", metadata,
    Column("material", String(64), primary_key=True),
    Column("location", String(64), primary_key=True),
    Column("lot", String(64), primary_key=True, default=""),
    Column("qty", Dec, nullable=False),
)

goods_movements = Table(
    "goods_movements", metadata,
    _id(),
    Column("confirmation_id", String(40), index=True),
    Column("order_no", String(64), index=True),
    Column("kind", String(4), nullable=False),
    Column("material", String(64), nullable=False, index=True),
    Column("location", String(64), nullable=False),
    Column("lot", String(64), nullable=False, default=""),
    Column("qty", Dec, nullable=False),
    Column("uom", String(8), nullable=False),
    Column("bom_item", String(64), nullable=False, default=""),
    Column("posted_at", UtcDateTime, nullable=False),
    # qty × the material's standard price when posted (exact); NULL on rows from before version 7.
    Column("value", Dec),
)

activity_postings = Table(
    "activity_postings", metadata,
    _id(),
    Column("confirmation_id", String(40), nullable=False, index=True),
    Column("order_no", String(64), nullable=False),
    Column("operation", String(64), nullable=False),
    Column("work_center", String(64), nullable=False),
    Column("activity", String(16), nullable=False),
    Column("hours", Dec, nullable=False),
    Column("cost", Dec, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("posted_at", UtcDateTime, nullable=False),
)

confirmations = Table(
    "confirmations", metadata,
    Column("id", String(40), primary_key=True),
    Column("machine", String(64), nullable=False, index=True),
    Column("order_no", String(64), nullable=False, index=True),
    Column("operation", String(64), nullable=False),
    Column("yield_qty", Dec, nullable=False),
    Column("scrap_qty", Dec, nullable=False),
    Column("uom", String(8), nullable=False),
    Column("start_pos", Text, nullable=False),
    Column("end_pos", Text, nullable=False),
    Column("first_source_time", UtcDateTime, nullable=False),
    Column("last_source_time", UtcDateTime, nullable=False),
    Column("trigger", String(20), nullable=False),
    Column("posted_at", UtcDateTime, nullable=False),
    Column("serials", Text, nullable=False, default=""),  # from the serial tag, one a line
)

deferred_components = Table(
    "deferred_components", metadata,
    _id(),
    Column("confirmation_id", String(40), nullable=False, index=True),
    Column("order_no", String(64), nullable=False, index=True),
    Column("bom_item", String(64), nullable=False),
    Column("material", String(64), nullable=False),
    Column("qty", Dec, nullable=False),
    Column("uom", String(8), nullable=False),
    Column("rule", String(20), nullable=False),
)

error_queue = Table(
    "error_queue", metadata,
    _id(),
    Column("confirmation_id", String(40), nullable=False, index=True),
    Column("order_no", String(64), nullable=False),
    Column("bom_item", String(64), nullable=False, default=""),
    Column("material", String(64), nullable=False),
    Column("location", String(64), nullable=False),
    Column("missing_qty", Dec, nullable=False),
    Column("uom", String(8), nullable=False),
    Column("reason", Text, nullable=False),
    Column("status", String(12), nullable=False, default="open"),  # open | resolved | cancelled
    Column("created_at", UtcDateTime, nullable=False),
    Column("resolved_at", UtcDateTime),
    Column("attempts", Integer, nullable=False, default=0),
    # What cleared it: the posting that added the stock (``movement:12``, ``count:3``, ``R-C-…``, a
    # confirmation id, ``masterdata``) or ``errors reprocess`` when a person ran it.
    Column("resolved_by", String(64)),
)

anomalies = Table(
    "anomalies", metadata,
    _id(),
    Column("machine", String(64), nullable=False, index=True),
    Column("counter", String(32)),
    Column("kind", String(20), nullable=False),
    Column("detail", Text, nullable=False),
    Column("start_pos", String(64)),
    Column("end_pos", String(64)),
    Column("counts_held", UInt64, nullable=False, default=0),
    Column("units_held", Dec, nullable=False),
    Column("source_time", UtcDateTime, nullable=False),
    # open: needs a decision; recorded: information only (e.g. a PLC reset);
    # accepted / rejected: decided (see anomaly_decisions)
    Column("status", String(12), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    # unknown_order: the order number the units are pending under ("" = none on the machine)
    Column("order_no", String(64)),
)

# A person's decision on an open anomaly. The anomaly id is the key, so an anomaly is
# decided at most once even if two operators decide at the same moment.
anomaly_decisions = Table(
    "anomaly_decisions", metadata,
    Column("anomaly_id", Integer, primary_key=True),
    Column("decision", String(12), nullable=False),  # accepted | rejected | assigned
    Column("reason", Text, nullable=False),
    Column("confirmation_id", String(40)),  # what accepting posted
    Column("order_no", String(64)),
    Column("operation", String(64)),
    Column("decided_at", UtcDateTime, nullable=False),
)

counter_states = Table(
    "counter_states", metadata,
    Column("machine", String(64), primary_key=True),
    Column("counter", String(32), primary_key=True),
    Column("epoch", Integer, nullable=False),
    Column("raw", UInt64, nullable=False),
    Column("source_time", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

pending_units = Table(
    "pending_units", metadata,
    Column("machine", String(64), primary_key=True),
    Column("order_no", String(64), primary_key=True),
    Column("operation", String(64), primary_key=True),
    Column("yield_qty", Dec, nullable=False),
    Column("scrap_qty", Dec, nullable=False),
    Column("start_pos", Text, nullable=False),
    Column("end_pos", Text, nullable=False),
    Column("first_source_time", UtcDateTime, nullable=False),
    Column("last_source_time", UtcDateTime, nullable=False),
    Column("opened_at", UtcDateTime, nullable=False),
    Column("serials", Text, nullable=False, default=""),  # from the serial tag, one a line
)

machine_states = Table(
    "machine_states", metadata,
    Column("machine", String(64), primary_key=True),
    Column("order_no", String(64), nullable=False),
    # The counters (names, space-separated) that have not been read since the order changed:
    # their next value is the new job's (a job reset), also after a restart. Written in the
    # transaction of the order change, emptied in the one of each counter's first value.
    Column("job_reset_pending", Text, nullable=False, server_default=""),
    # Of those, the ones whose job change happened while the gateway was not reading.
    Column("job_change_unseen", Text, nullable=False, server_default=""),
    Column("updated_at", UtcDateTime, nullable=False),
)

# Units each machine's counters showed, cumulative: written in the same transaction as its
# counter state (never by a person), so it is independent of what became of the units.
# Every unit counted is confirmed, pending, held by an open anomaly or written off by a
# rejected one (``reports.summary`` checks it). Whole units (counts × units per count).
counted_units = Table(
    "counted_units", metadata,
    Column("machine", String(64), primary_key=True),
    Column("units", BigInteger, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

order_progress = Table(
    "order_progress", metadata,
    Column("order_no", String(64), primary_key=True),
    Column("operation", String(64), primary_key=True),
    Column("yield_qty", Dec, nullable=False),
    Column("scrap_qty", Dec, nullable=False),
)


reversals = Table(
    "reversals", metadata,
    Column("id", String(44), primary_key=True),  # "R-" + confirmation id; postings carry it
    Column("confirmation_id", String(40), nullable=False, unique=True),
    Column("reason", Text, nullable=False),
    Column("forced", Boolean, nullable=False, default=False),
    Column("force_reason", Text),  # why a reversal went ahead although its produced lot was used
    Column("created_at", UtcDateTime, nullable=False),
)

adjustments = Table(
    "adjustments", metadata,
    Column("id", String(40), primary_key=True),  # "A-…"; postings carry it as confirmation_id
    Column("order_no", String(64), nullable=False, index=True),
    Column("operation", String(64)),
    Column("kind", String(16), nullable=False),  # scrap | rework | substitution | consumption
    Column("reason_code", String(32), nullable=False),
    Column("note", Text, nullable=False, default=""),
    Column("material", String(64), index=True),  # the material mainly affected, if one
    Column("qty", Dec, nullable=False),
    Column("uom", String(8), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

order_carry = Table(
    "order_carry", metadata,
    # Cumulative planned quantity per order and plan key (component item, activity
    # hours/cost): the next confirmation posts round(plan) minus this, so rounding
    # never drifts, even after reversals.
    Column("order_no", String(64), primary_key=True),
    Column("key", String(80), primary_key=True),
    Column("planned", Dec, nullable=False),
)

# Repetitive production (``gateway.ledger.collectors``). How each product is made without
# orders, as the master data had it when last loaded: a cost collector copies ``snapshot``
# into its standing order when it is created, so a changed BOM applies from the next one.
production_versions = Table(
    "production_versions", metadata,
    Column("product", String(64), primary_key=True),
    Column("version", String(64), primary_key=True),
    Column("period", String(8), nullable=False),  # month | week | day
    Column("time_zone", String(64), nullable=False),  # IANA name: the plant's periods
    Column("snapshot", Text, nullable=False),  # JSON: BOM + routing as an order template
    Column("updated_at", UtcDateTime, nullable=False),
)

# One standing cost collector per product, version, line and period, created by the writer in
# the transaction of its first use. Its ``number`` is its order number: ``production_orders``
# holds its snapshot under it (once the version is known), and confirmations, movements and
# activities carry it as their order. Period close sets ``closed`` and the balance it settled.
cost_collectors = Table(
    "cost_collectors", metadata,
    Column("number", String(64), primary_key=True),
    Column("product", String(64), nullable=False),
    Column("version", String(64), nullable=False),
    Column("line", String(64), nullable=False),
    Column("period", String(16), nullable=False, index=True),
    Column("status", String(8), nullable=False),  # open | closed
    Column("created_at", UtcDateTime, nullable=False),
    Column("closed_at", UtcDateTime),
    # At close, in ``currency``: components issued and activities (actual) against the yield
    # received at standard (target); variance = actual − target.
    Column("materials_value", Dec),
    Column("activities_value", Dec),
    Column("target_value", Dec),
    Column("variance", Dec),
    Column("currency", String(3)),
    Index("ix_cost_collectors_key", "product", "version", "line", "period", unique=True),
)

stock_counts = Table(
    "stock_counts", metadata,
    _id(),
    Column("material", String(64), nullable=False, index=True),
    Column("location", String(64), nullable=False),
    Column("lot", String(64), nullable=False, default=""),
    Column("book_qty", Dec, nullable=False),
    Column("counted_qty", Dec, nullable=False),
    Column("uom", String(8), nullable=False),
    Column("counted_at", UtcDateTime, nullable=False),
)


# Ownership (``gateway.ledger.leases``). Times here are seconds since the epoch by the
# DATABASE's clock (every instance compares against the same clock, whatever its host's
# says); they decide nothing about quantities.
gateway_instances = Table(
    "gateway_instances", metadata,
    Column("name", String(64), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("process", String(32), nullable=False),  # the running process (``leases.Me.process``)
    Column("standby", Boolean, nullable=False),
    Column("ttl_s", Float, nullable=False),
    Column("machines", Integer, nullable=False),  # how many its mapping names
    Column("started_at", Float, nullable=False),
    Column("seen_at", Float, nullable=False),  # renewed with its leases
    Column("last_commit_at", Float),
    Column("stopped_at", Float),
)

# One row per machine: who may post for it, until when. ``token`` grows by one at every
# change of owner; every posting transaction checks it (the fencing token).
machine_leases = Table(
    "machine_leases", metadata,
    Column("machine", String(64), primary_key=True),
    Column("owner", String(64), nullable=False),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("process", String(32), nullable=False),  # random per process: the owner's identity
    Column("scope", String(96), nullable=False),  # boot and pid namespace, where ``pid`` can be checked
    Column("token", Integer, nullable=False),
    Column("acquired_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)


# Reloads of a running gateway's mapping (``gateway reload``, SIGHUP): a request made by the
# command, answered by the gateway with the outcome of the reload that read the mapping after
# it; a reload by a bare SIGHUP leaves a row of its own. Times by the database's clock.
mapping_reloads = Table(
    "mapping_reloads", metadata,
    _id(),
    Column("process", String(32), nullable=False),  # the gateway process asked (``leases.Me.process``)
    Column("instance", String(64), nullable=False),
    Column("requested_by", String(16), nullable=False),  # "command", "signal" or "workbench"
    Column("requested_at", Float, nullable=False),
    Column("finished_at", Float),
    Column("outcome", String(12)),  # NULL while open; "applied" or "refused"
    Column("detail", Text),
)


# Every mapping the workbench applied (``gateway.http.mapping_api``): who, when, why, the
# whole text and what the reload changed; a restore applies an old text again as a new
# row. Append-only: rows are inserted, never updated or deleted.
mapping_versions = Table(
    "mapping_versions", metadata,
    _id(),
    Column("applied_at", UtcDateTime, nullable=False),
    Column("actor", String(64), nullable=False),  # the token's name; "file" for the text found before
    Column("comment", Text, nullable=False),
    Column("hash", String(64), nullable=False),  # hex SHA-256 of the file's bytes (UTF-8)
    Column("text", Text, nullable=False),
    Column("diff_summary", Text, nullable=False),  # gateway.reloading.MappingChange.summary()
)


dead_letters = Table(
    "dead_letters", metadata,
    # Changes the database refused for their content; kept whole, with the error.
    _id(),
    Column("created_at", UtcDateTime, nullable=False),
    Column("error", Text, nullable=False),
    Column("content", Text, nullable=False),
    Column("status", String(12), nullable=False, default="open"),
)

# Every manual action (CLI, HTTP API, console): who, from where, when, why, and what it
# posted; written in the same transaction as the action's postings (``gateway.ledger.audit``).
# Append-only: no code updates or deletes a row, and the database itself refuses it (the
# triggers below, created with the table here and by migration 0005).
audit_log = Table(
    "audit_log", metadata,
    _id(),
    Column("at", UtcDateTime, nullable=False, index=True),
    Column("actor", String(128), nullable=False, index=True),  # the OS user (CLI) or the token's name (API)
    Column("actor_kind", String(8), nullable=False),  # cli | api | console
    Column("host", String(255), nullable=False),  # where from: the host of the command, the API client's address
    Column("via", Text, nullable=False),  # the command line (without secrets) or the method and endpoint
    Column("action", String(32), nullable=False),  # e.g. stock.receive, confirmations.reverse
    Column("reason", Text, nullable=False, default=""),
    Column("order_no", String(64), index=True),
    Column("subject", String(128), nullable=False, default=""),  # what it acted on: a confirmation, an anomaly, …
    Column("postings", Text, nullable=False, default=""),  # the ids of what it posted, space-separated
    Column("detail", Text, nullable=False, default="{}"),  # JSON: the ledger before, what changed
)

AUDIT_APPEND_ONLY = {
    "postgresql": [
        "CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION USING MESSAGE = 'audit_log is append-only: ' || TG_OP || ' refused'; END $$",
        "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()",
    ],
    "sqlite": [
        "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log "
        "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: UPDATE refused'); END",
        "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log "
        "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: DELETE refused'); END",
    ],
}


@event.listens_for(audit_log, "after_create")
def _audit_log_append_only(target, connection, **_kw) -> None:
    for statement in AUDIT_APPEND_ONLY.get(connection.dialect.name, []):
        connection.exec_driver_sql(statement)


# The transactional outbox (``gateway.ledger.outbox``): one row per document (confirmation,
# reversal, adjustment, manual stock posting) and configured target, inserted in the
# transaction that posts the document; the delivery workers (``gateway.outputs.worker``)
# move it to delivered or parked. ``key`` is what the target sees, so a resend is a no-op there.
outbox = Table(
    "outbox", metadata,
    _id(),
    Column("key", String(200), nullable=False, unique=True),  # "<document>:<what>:<target>"
    Column("target", String(64), nullable=False),
    Column("what", String(16), nullable=False),  # confirmation | reversal | adjustment | stock
    Column("document", String(96), nullable=False),
    Column("order_no", String(64)),
    Column("machine", String(64)),
    Column("payload", Text, nullable=False),  # JSON, gateway/outputs/outputs.schema.json
    # pending → delivered | parked | skipped; unknown = sent without an answer (ask the target first)
    Column("status", String(12), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", UtcDateTime, nullable=False),
    Column("next_at", UtcDateTime, nullable=False),  # not tried again before this (backoff)
    Column("updated_at", UtcDateTime, nullable=False),
    Column("delivered_at", UtcDateTime),
    Column("last_error", Text, nullable=False, default=""),  # the target's own message
    Index("ix_outbox_open", "target", "status", "id"),
)

# Which targets a machine's documents go to: written by the running gateway from its mapping's
# ``outputs:`` (a start, a reload), read by every transaction that posts a document. ``machine``
# "*" is every machine (and the documents of no machine: manual stock postings).
outbox_routes = Table(
    "outbox_routes", metadata,
    Column("target", String(64), primary_key=True),
    Column("machine", String(64), primary_key=True),
)


# -- schema version ------------------------------------------------------------------------
# One row: the version of the tables above. A fresh ledger is created from this module and
# stamped with SCHEMA_VERSION (and alembic's head revision); a ledger of another version is
# refused at open (``LedgerVersionError``) and upgraded by ``gateway db upgrade`` (alembic,
# ``gateway/ledger/migrations``). Changing a table above means: a new migration that sets
# this row to the new number, and SCHEMA_VERSION raised to it.
SCHEMA_VERSION = 11  # 1: the schema before version numbers (baseline); 2: counted_units; 3: leases;
# 4: mapping_reloads; 5: mapping_versions; 6: audit_log; 7: outbox, outbox_routes;
# 8: machine_states.job_reset_pending, job_change_unseen; 9: materials.tracking, serial_pattern,
# confirmations.serials, pending_units.serials, order_components.selection;
# 10: values, consumption basis, self-reprocessing; 11: production_versions, cost_collectors
UPGRADE_COMMAND = "gateway db upgrade --db URL"

schema_version = Table(
    "schema_version", metadata,
    Column("id", Integer, primary_key=True),  # always 1: one row
    Column("version", Integer, nullable=False),
)


class LedgerVersionError(Exception):
    """The ledger's tables are of another version than this gateway's; the message says what to do."""

    def __init__(self, where: str, found: int, expected: int) -> None:
        self.found, self.expected = found, expected
        if found < expected:
            todo = f"upgrade it with `{UPGRADE_COMMAND.replace('URL', where)}` (back up the ledger first)"
        else:
            todo = (f"it was written by a newer gateway; run that version (`{UPGRADE_COMMAND}` of this version "
                    "cannot go back)")
        super().__init__(f"the ledger at {where} has schema version {found}, this gateway needs version "
                         f"{expected}: {todo}")


def ledger_version(conn) -> int | None:
    """The ledger's schema version; 1 for a ledger from before version numbers; None if it holds no ledger."""
    from sqlalchemy import inspect, select

    tables = inspect(conn)
    if tables.has_table("schema_version"):
        return conn.execute(select(schema_version.c.version)).scalar()
    return 1 if tables.has_table("confirmations") else None


def _check_version(engine: Engine, *, create: bool) -> None:
    with engine.connect() as conn:  # a read: on SQLite it must not wait for the writer's lock
        found = ledger_version(conn.execution_options(read_only=True))
    if found is None and create:
        with engine.begin() as conn:
            found = ledger_version(conn)  # another process may have created it meanwhile
            if found is None:
                metadata.create_all(conn)
                conn.execute(schema_version.insert(), [{"id": 1, "version": SCHEMA_VERSION}])
                from gateway.ledger.migrate import stamp_head

                stamp_head(conn)
                return
    if found is not None and found != SCHEMA_VERSION:
        engine.dispose()
        raise LedgerVersionError(engine.url.render_as_string(hide_password=True), found, SCHEMA_VERSION)


SQLITE_BUSY_TIMEOUT_S = 3.0


def normalise_url(url: str) -> str:
    """Accept the URLs people type; the writer is synchronous, so PostgreSQL uses psycopg."""
    if "://" not in url:  # a bare path means a SQLite file
        return f"sqlite:///{url}"
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() != "psycopg":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def open_engine(url: str, *, create: bool = True, check_version: bool = True,
                idle_in_transaction_s: float | None = None, session_name: str | None = None) -> Engine:
    """Engine for the ledger at ``url``; creates the tables of an empty database unless told not to.

    A ledger of another schema version raises ``LedgerVersionError`` (only the upgrade
    itself opens one without the check). ``idle_in_transaction_s`` (PostgreSQL): the server
    ends a session that stays that long inside a transaction without a statement (a gateway
    stopped by SIGSTOP, a frozen VM), so the locks it holds on lease rows cannot keep a
    standby from taking over. ``session_name`` (PostgreSQL): every session's ``application_name``,
    by which a standby finds the sessions of an owner whose lease expired."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        # A short busy wait: a lock held longer becomes a failed commit, which the writer
        # retries with backoff and reports (log + health) instead of waiting in silence.
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
        _configure_sqlite(engine)
    else:
        engine = create_engine(url, pool_pre_ping=True)
        if idle_in_transaction_s or session_name:
            _configure_postgres_sessions(engine, idle_in_transaction_s, session_name)
    if check_version:
        _check_version(engine, create=create)
        engine.dispose()  # no pooled connection from before the caller's own event listeners
    return engine


def _configure_postgres_sessions(engine: Engine, idle_in_transaction_s: float | None, name: str | None) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        with dbapi_conn.cursor() as cursor:
            if idle_in_transaction_s:
                cursor.execute(f"SET idle_in_transaction_session_timeout = {max(1, int(idle_in_transaction_s * 1000))}")
            if name:
                cursor.execute("SELECT set_config('application_name', %s, false)", (name,))
        dbapi_conn.commit()


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # let SQLAlchemy's BEGIN below decide
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # ``read_only``: a read that must not take (or wait for) the write lock.
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("read_only") else "BEGIN IMMEDIATE")

