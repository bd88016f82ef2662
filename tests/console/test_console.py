"""The web console in a real browser (Chromium via Playwright) against a real gateway: a simulated
OPC UA PLC over real sockets, uvicorn on a real port, a real SQLite ledger.

What a shift lead sees must be what the ledger holds: the board's counts rise while the machine
produces and end equal to the ledger's counted units; a counter jump the gateway would not believe
is an anomaly on the board and is accepted from the machine page; a backflush shortage is
reprocessed from the error queue once stock was received on the stock page; a viewer sees no
operator button and its POST is refused. Each test takes screenshots (saved to docs/console/ with GATEWAY_SCREENSHOTS=1).
"""

from __future__ import annotations

import asyncio
import re

import pytest
from sqlalchemy import select

from gateway.app.error_queue import list_errors
from gateway.demo import wait_until
from gateway.ledger import schema
from gateway.ledger.reports import summary
from gateway.mapping.model import Plausibility
from tests.console.browser import browser_page, login, shot
from tests.http.served import OPERATOR, VIEWER, auth, line, served

pytestmark = pytest.mark.slow  # a gateway, a simulated PLC and a browser each
FAST = {"tick_s": 0.2, "ledger_every_s": 0.5}  # the board's tick and ledger reads, quick for tests


def _counted(engine, machine: str) -> int:
    return int(summary(engine).machines[machine].counted)


async def test_the_board_shows_counts_rising_and_equal_to_the_ledger(sqlite_url):
    ln = line(sqlite_url)
    async with served(ln.gateway, console=FAST) as (server, _), ln, browser_page(server.url) as page:
        await login(page, OPERATOR)
        tile = page.locator('#board [data-machine="PRESS-01"]')
        counted = tile.locator("[data-f=counted]")
        await page.wait_for_function("document.querySelector('[data-machine=\"PRESS-01\"] [data-f=health]')"
                                     ".textContent === 'connected'")
        assert await tile.locator("[data-f=order]").inner_text() == "1000123"
        assert await counted.inner_text() == "0"

        await ln.plc.command("PRESS-01", "resume")
        seen: list[int] = []
        for _ in range(8):  # what the browser shows while the machine runs, without reloading the page
            await asyncio.sleep(0.25)
            seen.append(int(await counted.inner_text()))
        assert await tile.locator("[data-f=state]").text_content() == "running"
        await shot(page, "board")
        await ln.plc.command("PRESS-01", "pause")
        await ln.settle()

        assert seen == sorted(seen) and len(set(seen)) >= 3, seen  # rising, live
        ledger = _counted(ln.engine, "PRESS-01")
        assert ledger == ln.made("PRESS-01") > seen[0]
        await page.wait_for_function(f"document.querySelector('[data-machine=\"PRESS-01\"] [data-f=counted]')"
                                     f".textContent === '{ledger}'")
        assert await tile.locator("[data-f=today]").inner_text() == str(ledger)  # a fresh ledger: all of it today
        assert await page.locator('#board [data-machine="ASSY-03"] [data-f=counted]').inner_text() == "0"

        await page.select_option("#f-line", "WC-ASSY")  # the filter hides the other line's machines
        assert await tile.is_hidden() and await page.locator('[data-machine="ASSY-03"]').is_visible()
        await page.goto("/console/?kiosk")
        await page.wait_for_selector("body.kiosk")
        assert await page.locator("header.top").count() == 0
        await shot(page, "kiosk")
        await page.goto("/console/machines/PRESS-01")
        assert await page.locator("[data-f=counted]").inner_text() == str(ledger)
        assert re.fullmatch(r"\d+ s", await page.locator("[data-f=age]").inner_text())
        assert await page.locator('tr[data-counter="good"] .quality').inner_text() == "GOOD"
        assert "PRESS-01:" in await page.locator("pre.yaml").inner_text()
        await shot(page, "machine")


async def test_a_counter_jump_is_an_anomaly_accepted_from_the_machine_page(sqlite_url):
    ln = line(sqlite_url)
    press = ln.gateway.mapping.machines["PRESS-01"]  # believe at most 200 units in one reading
    ln.gateway.mapping.machines["PRESS-01"] = press.model_copy(
        update={"plausibility": Plausibility(max_units_per_reading=200)})
    async with served(ln.gateway, console=FAST) as (server, _), ln:
        # The count node shows a negative number for 2 s while the press makes ~320 units: when
        # the count shows again, its jump is more than the gateway believes in one reading.
        await ln.plc.command("PRESS-01", "resume")
        await ln.plc.bad_value("PRESS-01", "negative")
        await asyncio.sleep(2.0)
        await ln.plc.bad_value("PRESS-01", "none")
        await asyncio.sleep(0.3)
        await ln.plc.command("PRESS-01", "pause")
        await ln.settle()
        held = [a for a in ln.anomalies() if a.status == "open"]
        assert [a.kind for a in held] == ["implausible"], [(a.kind, a.status, a.detail) for a in ln.anomalies()]
        first = held[0]
        assert first.units_held > 200
        async with browser_page(server.url) as page:
            await login(page, OPERATOR)
            await page.wait_for_function("document.querySelector('[data-machine=\"PRESS-01\"] [data-f=anomalies]')"
                                         f".textContent === '{len(held)}'")
            await page.click('[data-machine="PRESS-01"] a')
            await page.wait_for_url("**/console/machines/PRESS-01")
            row = page.locator(f'tr[data-anomaly="{first.id}"]')
            await row.locator("button[value=accept]").click()  # without a reason: the form does not send
            assert await row.locator("input[name=reason]:invalid").count() == 1
            assert await row.locator(".status").inner_text() == "open"
            await row.locator("input[name=reason]").fill("burst confirmed by the press operator")
            await shot(page, "machine-anomaly")
            await row.locator("button[value=accept]").click()
            result = row.locator(".result.good")
            await result.wait_for()
            units = f"{first.units_held.normalize():f}"
            assert re.fullmatch(rf"accepted: {units} units → C-\w+", await result.inner_text())
            assert await row.locator(".status").inner_text() == "accepted"
    with ln.engine.connect() as conn:
        decision = conn.execute(select(schema.anomaly_decisions).where(schema.anomaly_decisions.c.anomaly_id == first.id)).one()
        status = conn.execute(select(schema.anomalies.c.status).where(schema.anomalies.c.id == first.id)).scalar_one()
        posted = conn.execute(select(schema.confirmations).where(schema.confirmations.c.id == decision.confirmation_id)).one()
    assert (status, decision.decision, decision.reason) == ("accepted", "accepted", "burst confirmed by the press operator")
    assert posted.yield_qty + posted.scrap_qty == first.units_held and posted.machine == "PRESS-01"


async def test_an_error_is_reprocessed_after_stock_is_received_and_a_viewer_cannot_act(sqlite_url):
    ln = line(sqlite_url)
    async with served(ln.gateway, console=FAST) as (server, client), ln:
        # The press's steel is counted empty: what it makes next cannot be backflushed.
        r = await client.post("/api/v1/stock/count", headers=auth(OPERATOR),
                              json={"material": "STEEL-COIL", "counted": "0", "location": "LS-PRESS"})
        assert r.status_code == 200, r.text
        await ln.produce(1.0, "PRESS-01")
        await wait_until(lambda: not any(p.yield_qty or p.scrap_qty for p in ln.gateway.machines["PRESS-01"].pendings
                                         .values()), 5, "the last units to be confirmed")  # no new error after this
        await ln.gateway.committed()
        errors = list_errors(ln.engine)
        assert errors and {e.material for e in errors} == {"STEEL-COIL"}

        async with browser_page(server.url) as page:  # a viewer sees, and cannot act
            await login(page, VIEWER, "/console/errors")
            assert await page.locator("#errors tr[data-error]").count() == len(errors)
            assert await page.locator("button.reprocess, #reprocess-all").count() == 0
            status = await page.evaluate("""() => fetch('/console/actions/errors/reprocess', {method: 'POST',
                headers: {'Content-Type': 'application/json'}, body: '{}'}).then(r => r.status)""")
            assert status == 403
            await page.goto("/console/stock")
            assert await page.locator("#receive").count() == 0
            await page.goto("/console/orders?number=1000123")
            assert await page.locator("#complete").count() == 0
        assert len(list_errors(ln.engine)) == len(errors)  # the refused POST changed nothing

        async with browser_page(server.url) as page:
            await login(page, OPERATOR, "/console/errors")
            await shot(page, "errors")
            one = page.locator(f'tr[data-error="{errors[0].id}"]')
            await one.locator("button.reprocess").click()
            await page.locator(f'tr[data-error="{errors[0].id}"] .result.bad').wait_for()
            assert (await one.locator(".result").inner_text()).startswith("still open: ")

            await page.goto("/console/stock?material=STEEL-COIL")
            await page.fill("#receive input[name=material]", "STEEL-COIL")
            await page.fill("#receive input[name=qty]", "5000")
            await page.fill("#receive input[name=location]", "LS-PRESS")
            await page.click("#receive button[type=submit]")
            await page.locator("#receive-result.good").wait_for()
            assert await page.locator("#receive-result").inner_text() == (
                "received 5000 KG of STEEL-COIL at LS-PRESS — reload to see the stock")
            await page.goto("/console/stock?material=STEEL-COIL&lot=")
            await shot(page, "stock")

            # The receipt itself issued what was missing (the error queue clears itself): nothing is left
            # to reprocess, and each item names the receipt's movement as what cleared it.
            await page.goto("/console/errors")
            assert list_errors(ln.engine) == []
            assert await page.locator("#errors tr[data-error]").count() == 0
            cleared = {e.id: e for e in list_errors(ln.engine, include_closed=True)}
            for e in errors:
                assert cleared[e.id].status == "resolved" and cleared[e.id].resolved_by.startswith("movement:")

            await page.goto("/console/orders?number=1000123")
            assert await page.locator("#components tr").count() >= 2
            await shot(page, "orders")
            await page.goto("/console/accuracy")
            assert await page.locator('#accuracy tr[data-material="STEEL-COIL"]').count() == 1
            await shot(page, "accuracy")
