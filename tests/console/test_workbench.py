"""The mapping workbench in a real browser (Chromium, driven by Playwright) against a real gateway
on a simulated OPC UA PLC.

A controls engineer adds ASSY-03: names it, browses the PLC, expands the machine's folder and
picks its good, scrap and order tags; the page checks the text as it changes, shows the diff,
and applies it — the machine then counts what the simulator made. An invalid edit shows its
``file:line`` error at its line and Apply refuses it: the file and the running mapping stay.
The registers of a Modbus device read decoded in every order. A viewer sees no Apply button, and the action is refused to it. The screenshot of the page is
docs/console/workbench.png (written with GATEWAY_SCREENSHOTS=1).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.ledger.reports import summary
from gateway.mapping.load import load_mapping
from tests.console.browser import VIEWPORT, browser_page, chromium, login, shot
from tests.http.plant_file import NS, RUNNING, plcs, sha
from tests.http.served import OPERATOR, VIEWER, served
from tests.integration.lines import Line

pytestmark = pytest.mark.slow
ADDED = f"""\
  ASSY-03:
    source: line
    work_center: WC-ASSY
    counters:
      good: {{node: "{NS}ASSY-03.GoodCount", type: uint32}}
      scrap: {{node: "{NS}ASSY-03.ScrapCount", type: uint32}}
    order: {{node: "{NS}ASSY-03.OrderNumber"}}
"""


async def test_a_machine_added_by_browsing_counts_and_an_invalid_edit_is_refused_at_its_line(sqlite_url, tmp_path,
                                                                                             monkeypatch):
    chromium()  # or skip, saying why
    from playwright.async_api import expect

    opc, lathe = plcs()
    (tmp_path / "plant").mkdir()
    running = RUNNING.format(opc=opc.port, modbus=lathe.port, ns=NS)
    (tmp_path / "plant" / "plant.yaml").write_text(running)
    ln = Line(sqlite_url, opc, load_mapping(tmp_path / "plant" / "plant.yaml"))
    monkeypatch.chdir(tmp_path)  # the gateway runs on a relative name, as `gateway run --mapping plant/plant.yaml`
    file = ln.gateway.mapping_file = Path("plant", "plant.yaml")
    async with lathe, served(ln.gateway) as (server, _), ln, browser_page(server.url) as page:
        await login(page, OPERATOR, "/console/mapping")
        validity = page.locator("#wb-validity")
        await expect(validity).to_have_text("valid")

        # Name the machine on the OPC UA source, then fill its tags from the browsed address space.
        await page.select_option("#wb-source", "line")
        await page.fill("#wb-new-name", "ASSY-03")
        await page.fill("#wb-new-wc", "WC-ASSY")
        await page.click("#wb-add-machine")
        await expect(validity).to_have_text(re.compile(r"^\d+ error\(s\)$"))  # no counters yet
        await page.click("#wb-browse")
        machine = page.locator('#wb-tree > li[data-name="ASSY-03"]')
        await machine.locator(".wb-toggle").click()
        for role, node in (("good", "GoodCount"), ("scrap", "ScrapCount"), ("order", "OrderNumber")):
            await page.select_option("#wb-role", role)
            await machine.locator(f'li[data-name="{node}"] .wb-use').click()
        await expect(validity).to_have_text("valid")
        edited = await page.input_value("#wb-text")
        assert edited == running + ADDED
        assert file.read_text() == running  # nothing reaches the file before Apply

        await page.click("#wb-diff")
        await expect(page.locator("#wb-change")).to_contain_text("machines added: ASSY-03")
        await expect(page.locator("#wb-difftext .add").first).to_contain_text("+  ASSY-03:")
        await page.fill("#wb-comment", "ASSY-03 commissioned")
        await page.click("#wb-apply")
        result = page.locator("#wb-result")
        await expect(result).to_have_attribute("data-outcome", "applied")
        await expect(result).to_contain_text("machines added: ASSY-03")
        assert file.read_text() == edited and sorted(ln.gateway.machines) == ["ASSY-03", "PRESS-01"]

        # It counts: what the simulator made, in the ledger.
        await ln.settle()
        ln.starts["ASSY-03"] = ln.truth_units("ASSY-03")
        await ln.produce(1.0, "ASSY-03")
        assert ln.made("ASSY-03") > 0
        assert summary(ln.engine).machines["ASSY-03"].counted == ln.made("ASSY-03")

        # An invalid edit: the error at its line, in the gutter, on the line and in the list; Apply refuses it.
        lines = edited.splitlines(keepends=True)
        at = next(i for i, text in enumerate(lines, start=1) if "ASSY-03.GoodCount" in text)
        lines[at - 1] = lines[at - 1].replace("uint32", "uint33")
        await page.fill("#wb-text", "".join(lines))
        await expect(page.locator(f'#wb-gutter [data-line="{at}"]')).to_have_class("err")
        await expect(page.locator(f"#wb-backdrop > div:nth-child({at})")).to_have_class("err")
        first = page.locator("#wb-messages li").first
        await expect(first).to_contain_text(f"{file}:{at}: machines.ASSY-03.counters.good.type:")
        await first.click()  # brings its line into view
        await expect(page.locator(f'#wb-gutter [data-line="{at}"]')).to_have_attribute(
            "title", re.compile(r"^machines\.ASSY-03\.counters\.good\.type: .*uint33"))
        await page.click("#wb-apply")
        await expect(result).to_have_attribute("data-outcome", "refused")
        await expect(result).to_contain_text("the mapping has 1 error(s); the file is unchanged")
        await page.click('.wb-tabs [data-tab="browse"]')
        await page.evaluate("document.getElementById('toast').hidden = true")
        await shot(page, "workbench")
        assert file.read_text() == edited and sha(file.read_bytes()) == sha(edited)
        assert sorted(ln.gateway.machines) == ["ASSY-03", "PRESS-01"]

        # The Modbus device's registers, decoded every way: its word-swapped count reads right as CDAB.
        await page.select_option("#wb-source", "lathes")
        await page.fill("#wb-start", "100")
        await page.fill("#wb-count", "12")
        await page.click("#wb-read")
        cell = page.locator('#wb-registers .wb-cell[data-address="100"][data-type="uint32"][data-order="CDAB"]')
        await expect(cell).to_have_text(str(lathe.models["LATHE-04"].truth()["good_count"]))
        await expect(page.locator('#wb-registers .wb-cell[data-address="100"][data-type="uint32"][data-order="ABCD"]')
                     ).not_to_have_text("70000")

        # A viewer: no Apply button, and the action refused.
        viewer = await (await page.context.browser.new_context(viewport=VIEWPORT, base_url=server.url)).new_page()
        await login(viewer, VIEWER, "/console/mapping")
        await expect(viewer.locator("#wb-validity")).to_have_text("valid")
        assert await viewer.locator("#wb-apply").count() == 0
        refused = await viewer.request.post(f"{server.url}/console/actions/mapping/apply", headers={
            "Origin": server.url}, data={"text": running, "base_hash": sha(edited), "comment": ""})
        assert refused.status == 403 and (await refused.json())["detail"] == (
            "token 'board' has role viewer; this needs operator")
    assert file.read_text() == edited
