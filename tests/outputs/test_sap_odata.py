"""SAP OData target against the S/4HANA stand-in over real HTTP: the CSRF handshake, one saved
confirmation per key (found by its ConfirmationText), COGI and refusals parked with SAP's text."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.outputs.base import Target, Verdict
from gateway.outputs.erp_common import read_confirmation
from gateway.outputs.sap_odata import SapODataConfig, SapODataTarget, confirmation_entity, confirmation_text
from tests.outputs.erp_support import delivery, settle
from tests.outputs.standins import SapStandIn

TARGET = "s4hana-plant"


def config(url: str, **extra) -> SapODataConfig:
    return SapODataConfig(**{"url": url, "user": "GATEWAY", "password": "sap-pw", **extra})


@pytest.fixture
async def sap():
    async with SapStandIn() as standin:
        yield standin


@pytest.fixture
async def target(sap):
    t = SapODataTarget(TARGET, config(sap.url, timeout_s=1.0, plant="1010", storage_locations={"LS-PRESS": "PR01"}))
    yield t
    await t.close()


def test_the_confirmation_entity_with_its_goods_movements():
    c = read_confirmation(delivery(TARGET).payload)
    body = confirmation_entity(c, "TEXT", config("http://s4", plant="1010"))
    assert body == {
        "OrderID": "1000123", "OrderOperation": "0010", "ConfirmationUnit": "PC",
        "ConfirmationYieldQuantity": "40", "ConfirmationScrapQuantity": "2", "ConfirmationText": "TEXT",
        "PostingDate": "/Date(1795996800000)/",  # 2026-11-30, the day of the last unit
        "OpConfirmedWorkQuantity2": "0.7000", "OpWorkQuantityUnit2": "H",
        "to_ProdnOrdConfMatlDocItm": {"results": [
            {"Material": "RM-STEEL", "GoodsMovementType": "261", "StorageLocation": "LS-PRESS",
             "QuantityInEntryUnit": "8.400", "EntryUnit": "KG", "OrderID": "1000123", "Plant": "1010"},
            {"Material": "RM-CLIP", "GoodsMovementType": "261", "StorageLocation": "LS-PRESS",
             "QuantityInEntryUnit": "84", "EntryUnit": "PC", "OrderID": "1000123", "Plant": "1010"},
            {"Material": "FG-100", "GoodsMovementType": "101", "StorageLocation": "FG-STORE",
             "QuantityInEntryUnit": "40", "EntryUnit": "PC", "OrderID": "1000123", "Plant": "1010",
             "Batch": "1000123"},
        ]},
    }


async def test_csrf_fetched_once_then_one_confirmation_per_key(sap, target):
    assert isinstance(target, Target)
    first, second = delivery(TARGET), delivery(TARGET, confirmation_id="C-99999999999999999999")
    for d in (first, second):
        assert [o.verdict for o in await settle(target, d)] == [Verdict.DELIVERED]
    assert sap.token_fetches == 1
    texts = [confirmation_text(first.key), confirmation_text(second.key)]
    assert sap.effects == {texts[0]: 1, texts[1]: 1}
    # The key (48 characters) does not fit ConfirmationText (40): a stable digest does.
    assert len(first.key) > 40 and texts[0].startswith("bg-") and len(texts[0]) == 40
    saved = sap.confirmations[0]
    assert saved["to_ProdnOrdConfMatlDocItm"]["results"][0]["StorageLocation"] == "PR01"
    assert await target.find(first) is True
    assert await target.find(delivery(TARGET, confirmation_id="C-00000000000000000000")) is False


async def test_an_expired_token_is_fetched_again_and_the_confirmation_saved_once(sap, target):
    assert (await target.deliver(delivery(TARGET))).verdict is Verdict.DELIVERED
    sap.expire_tokens()
    d = delivery(TARGET, confirmation_id="C-11111111111111111111")
    assert [o.verdict for o in await settle(target, d)] == [Verdict.DELIVERED]
    assert sap.token_fetches == 2 and sap.effects[confirmation_text(d.key)] == 1
    assert sap.calls["create"] == 2  # the refused POST never reached the service


async def test_committed_then_no_answer_is_unknown_and_found(sap, target):
    sap.fail("create", "hang")
    d = delivery(TARGET)
    outcomes = await settle(target, d)
    assert [o.verdict for o in outcomes] == [Verdict.UNKNOWN, Verdict.DELIVERED]
    assert outcomes[0].reason.startswith(f"{TARGET} (SAP) sent, no answer: ReadTimeout")
    assert sap.calls["create"] == 1 and sap.effects == {confirmation_text(d.key): 1}


async def test_a_resend_looks_first_and_never_posts_twice(sap, target):
    d = delivery(TARGET)
    assert (await target.deliver(d)).verdict is Verdict.DELIVERED
    # The worker died before it recorded the outcome; it sends the row again (attempt 2).
    again = await target.deliver(dataclasses.replace(d, attempts=1))
    assert again.verdict is Verdict.DELIVERED
    assert sap.calls["create"] == 1 and sap.calls["query"] == 1 and sap.effects == {confirmation_text(d.key): 1}


async def test_5xx_and_a_slow_answer_post_once(sap, target):
    sap.fail("create", "down")
    sap.fail("create", "error")
    sap.fail("create", "slow")
    d = delivery(TARGET)
    outcomes = await settle(target, d)
    assert [o.verdict for o in outcomes] == [Verdict.RETRY, Verdict.RETRY, Verdict.DELIVERED]
    assert outcomes[1].reason == f"{TARGET} (SAP) HTTP 500: Internal Server Error"
    assert sap.calls["create"] == 3 and sap.effects == {confirmation_text(d.key): 1}


async def test_failed_goods_movements_are_parked_with_saps_message(sap, target):
    sap.fail("create", "cogi", message="Deficit of SL Unrestricted-use 8.400 KG : RM-STEEL 1010 PR01")
    d = delivery(TARGET)
    outcomes = await settle(target, d)
    assert [(o.verdict, o.reason) for o in outcomes] == [(Verdict.PARK, (
        "SAP saved confirmation 0000000001/00000001 of order 1000123, but its goods movements were not posted "
        "(COGI): RU/505: Confirmation of order 1000123 saved; 3 goods movements failed (see transaction COGI); "
        "M7/021: Deficit of SL Unrestricted-use 8.400 KG : RM-STEEL 1010 PR01"))]
    assert len(sap.cogi) == 3 and sap.effects == {confirmation_text(d.key): 1}
    # Cleared in COGI, a person retries: found, not sent again.
    assert (await target.deliver(dataclasses.replace(d, attempts=1))).verdict is Verdict.DELIVERED
    assert sap.calls["create"] == 1 and sap.effects == {confirmation_text(d.key): 1}


async def test_a_business_refusal_is_parked_with_saps_message(sap, target):
    sap.fail("create", "refuse", code="RU/153", message="Order 1000123 is already finally confirmed")
    outcomes = await settle(target, delivery(TARGET))
    assert [(o.verdict, o.reason) for o in outcomes] == [(Verdict.PARK, (
        "SAP refused the confirmation of order 1000123 (HTTP 400): RU/153: Order 1000123 is already finally "
        "confirmed"))]
    assert sap.effects == {}


async def test_down_and_wrong_password_are_retried_without_effect(sap):
    for cfg, reason in [
        (config("http://127.0.0.1:9"), f"{TARGET} (SAP): no CSRF token: ConnectError: "),
        (config(sap.url, password="wrong"), f"{TARGET} (SAP): no CSRF token: HTTP 401: Logon failed"),
    ]:
        t = SapODataTarget(TARGET, cfg)
        try:
            outcome = await t.deliver(delivery(TARGET))
        finally:
            await t.close()
        assert outcome.verdict is Verdict.RETRY and outcome.reason.startswith(reason)
    assert sap.effects == {} and "wrong" not in repr(cfg)
