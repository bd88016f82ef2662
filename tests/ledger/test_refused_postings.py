"""A posting that fails never takes its units with it (DESIGN §6.7).

The fault is injected by making backflush planning raise for one order (a stand-in for
any bug in planning or row building, or a value the database refuses); everything else
runs for real against SQLite and PostgreSQL, through the ``Gateway`` and its writer.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

import gateway.ledger.posting as posting
from gateway.sources.base import Quality
from gateway.ledger import schema as t
from gateway.ledger.masters import store_masterdata
from gateway.ledger.operations import list_errors, reprocess_errors
from gateway.ledger.queries import resume_state, summary
from gateway.ledger.schema import open_engine
from gateway.mapping.load import load_mapping
from gateway.masterdata.load import load_masterdata, to_domain
from gateway.service import Gateway
from gateway.sources.base import ORDER_ROLE, TagValue
from tests.integration.lines import MASTERDATA, ROOT, line_mapping

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PRESS, ASSY = "PRESS-01", "ASSY-03"  # orders 1000123 (the refused one) and 1000124


def _tv(machine: str, role: str, value, s: float) -> TagValue:
    return TagValue(machine, role, value, T0 + timedelta(seconds=s), Quality.GOOD, T0 + timedelta(seconds=s))


def _ledger(url: str, folder):
    engine = open_engine(url)
    md = load_masterdata(ROOT / MASTERDATA)
    store_masterdata(engine, to_domain(md), md.stock)
    (folder / "mapping.yaml").write_text(line_mapping(1, 2))
    return engine, load_mapping(folder / "mapping.yaml")


def _produce(engine, mapping) -> Gateway:
    """PRESS-01: 15 counts × 4 = 60 units (40 confirmed by count, 20 pending); ASSY-03: 30 units."""
    g = Gateway(mapping, engine)
    g._restore()
    g.writer.start()
    g.on_batch([_tv(PRESS, ORDER_ROLE, "1000123", 0), _tv(PRESS, "good", 1000, 0), _tv(ASSY, "good", 500, 0)])
    g.writer.barrier().result(20)
    g.on_batch([_tv(PRESS, "good", 1010, 1), _tv(ASSY, "good", 530, 1)])  # 40 units → a confirmation
    g.writer.barrier().result(20)
    g.on_batch([_tv(PRESS, "good", 1015, 2)])  # 20 more units, pending
    assert g.writer.stop(20)
    return g


def _postings(engine) -> dict[str, list[tuple]]:
    """Per confirmation: its goods movements and activity postings, in a comparable form."""
    out: dict[str, list[tuple]] = {}
    with engine.connect() as conn:
        for r in conn.execute(select(t.goods_movements).where(t.goods_movements.c.confirmation_id.is_not(None))):
            out.setdefault(r.confirmation_id, []).append(("gm", r.kind, r.material, r.location, r.lot, r.qty))
        for r in conn.execute(select(t.activity_postings)):
            out.setdefault(r.confirmation_id, []).append(("act", r.activity, r.work_center, r.hours, r.cost))
    return {k: sorted(v) for k, v in out.items()}


def test_a_confirmation_whose_postings_fail_keeps_its_units_and_is_posted_by_reprocess(
        ledger_url, tmp_path, monkeypatch, request):
    engine, mapping = _ledger(ledger_url, tmp_path)
    real_plan = posting.plan

    def broken_plan(c, *args, **kwargs):  # the injected fault: a bug that hits one order
        if c.order == "1000123":
            raise ValueError("planning bug")
        return real_plan(c, *args, **kwargs)

    monkeypatch.setattr(posting, "plan", broken_plan)
    g = _produce(engine, mapping)

    s = summary(engine)
    press = s.machines[PRESS]
    assert press.counted == 60
    assert (press.confirmed_yield, press.pending, press.confirmations) == (40, 20, 1)
    assert press.balanced and s.machines[ASSY].balanced and s.unbalanced == []
    assert s.machines[ASSY].confirmations == 1 and s.machines[ASSY].counted == 30  # the other order posts
    assert g.writer.health.dead_letters == 0 and g.writer.health.held_machines == []
    [error] = list_errors(engine)
    assert error.order == "1000123" and error.material == "" and error.missing_qty == 40
    assert error.reason.startswith("not posted: ValueError: planning bug")
    assert not _postings(engine).get(error.confirmation_id)  # nothing half-posted
    assert resume_state(engine).counter_states[(PRESS, "good")].position.raw == 1015

    monkeypatch.setattr(posting, "plan", real_plan)  # the fix
    result = reprocess_errors(engine)
    assert result.resolved == [error.id] and result.still_open == []
    s = summary(engine)
    assert s.open_errors == 0 and s.unbalanced == []
    assert s.machines[PRESS].counted == s.machines[PRESS].accounted == 60

    # postings = plan: the same as a ledger on which nothing ever failed
    reference_url = request.getfixturevalue("sqlite_url").replace("ledger.sqlite", "reference.sqlite")
    reference, _ = _ledger(reference_url, tmp_path)
    _produce(reference, mapping)
    assert _postings(engine) == _postings(reference)
    assert error.confirmation_id in _postings(engine)


def test_reprocess_keeps_the_entry_open_while_the_cause_is_not_fixed(sqlite_url, tmp_path, monkeypatch):
    engine, mapping = _ledger(sqlite_url, tmp_path)
    monkeypatch.setattr(posting, "plan", lambda *a, **k: (_ for _ in ()).throw(ValueError("still broken")))
    _produce(engine, mapping)
    errors = list_errors(engine)
    assert len(errors) == 2  # PRESS-01 and ASSY-03: every confirmation, none lost
    result = reprocess_errors(engine)
    assert result.resolved == [] and len(result.still_open) == 2
    assert all("not posted: ValueError: still broken" in why for _, why in result.still_open)
    s = summary(engine)
    assert s.open_errors == 2 and s.unbalanced == []
    assert _postings(engine) == {}


def test_reversing_a_confirmation_that_was_never_posted_undoes_nothing_and_cancels_its_entry(
        ledger_url, tmp_path, monkeypatch):
    from gateway.ledger.operations import reverse_confirmation
    from gateway.ledger.orders import progress_of

    engine, mapping = _ledger(ledger_url, tmp_path)

    def broken(*args, **kwargs):
        raise ValueError("a bug in planning")

    monkeypatch.setattr(posting, "plan", broken)
    _produce(engine, mapping)
    [item] = [e for e in list_errors(engine) if e.order == "1000123"]
    with engine.connect() as conn:
        stock_before = conn.execute(select(t.stock)).all()
    result = reverse_confirmation(engine, item.confirmation_id, "counted on the wrong order")
    assert result.movements == 0
    with engine.connect() as conn:
        assert progress_of(conn, "1000123") == {}  # never added, so nothing taken off
        assert sorted(conn.execute(select(t.stock)).all()) == sorted(stock_before)
        assert conn.execute(select(t.error_queue.c.status).where(t.error_queue.c.id == item.id)).scalar() \
            == "cancelled"
    assert list_errors(engine) == [e for e in list_errors(engine) if e.order != "1000123"]
