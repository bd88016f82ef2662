"""Deciding anomalies: accept posts the held units once, reject posts nothing, decisions are final."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import insert, select

from gateway.ledger import schema
from gateway.ledger.anomalies import DecisionRefused, accept, list_anomalies, reject
from gateway.ledger.masters import store_masterdata
from gateway.ledger.reports import summary
from gateway.ledger.schema import open_engine
from gateway.masterdata.load import load_masterdata, to_domain
from tests.integration.lines import MASTERDATA, ROOT
from tests.support import post_units

AT = datetime(2026, 11, 25, 6, 0, tzinfo=UTC)


@pytest.fixture
def engine(ledger_url):
    engine = open_engine(ledger_url)
    md = load_masterdata(ROOT / MASTERDATA)
    store_masterdata(engine, to_domain(md), md.stock)
    post_units(engine, 0, 10, order="1000123", at=AT, machine="PRESS-01")
    return engine


def _anomaly(engine, kind="implausible", status="open", start="0:10", end="0:500") -> int:
    with engine.begin() as conn:
        return conn.execute(insert(schema.anomalies).values(
            machine="PRESS-01", counter="good", kind=kind, detail="test", start_pos=start, end_pos=end,
            counts_held=490, units_held=Decimal(490), source_time=AT, status=status, created_at=AT,
        ).returning(schema.anomalies.c.id)).scalar_one()


def test_accept_posts_the_held_units_once_on_the_running_order(engine):
    aid = _anomaly(engine)
    assert [a.id for a in list_anomalies(engine)] == [aid]
    before = summary(engine).machines["PRESS-01"]
    confirmation, order, units = accept(engine, aid, reason="checked")
    after = summary(engine).machines["PRESS-01"]
    assert (order, units) == ("1000123", Decimal(490))
    assert after.confirmed_yield == before.confirmed_yield + 490 and after.held == before.held - 490
    assert after.accounted == before.accounted
    with pytest.raises(DecisionRefused, match="already accepted"):
        accept(engine, aid)
    with pytest.raises(DecisionRefused, match="already accepted"):
        reject(engine, aid)
    with engine.connect() as conn:
        assert len(conn.execute(select(schema.confirmations).where(schema.confirmations.c.id == confirmation)).all()) == 1
    assert list_anomalies(engine) == []


def test_reject_posts_nothing_and_is_final(engine):
    aid = _anomaly(engine)
    confirmed = summary(engine).machines["PRESS-01"].confirmed_yield
    assert reject(engine, aid, reason="sensor glitch") == Decimal(490)
    s = summary(engine).machines["PRESS-01"]
    assert s.confirmed_yield == confirmed and s.held == 0
    with pytest.raises(DecisionRefused, match="already rejected"):
        accept(engine, aid)


def test_only_open_implausible_anomalies_are_decided(engine):
    reset = _anomaly(engine, kind="reset", status="recorded")
    with pytest.raises(DecisionRefused, match="information only"):
        accept(engine, reset)
    with pytest.raises(DecisionRefused, match="no anomaly 999"):
        reject(engine, 999)


def test_without_a_neighbouring_confirmation_the_order_must_be_given(engine):
    aid = _anomaly(engine, start="3:10", end="3:500")
    with pytest.raises(DecisionRefused, match="--order"):
        accept(engine, aid)
    _, order, _ = accept(engine, aid, order="1000123", operation="0010")
    assert order == "1000123"
