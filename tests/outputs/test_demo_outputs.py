"""``gateway demo --webhook URL --mqtt URL``: every confirmation of the demo reaches the webhook stand-in once
by key and is published once to the real Mosquitto at 127.0.0.1:1883; the demo says what each output got."""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter

import aiomqtt
import pytest
from sqlalchemy import select

from gateway.demo import DEMO_AREA, DEMO_SITE
from gateway.ledger import schema
from gateway.ledger.schema import open_engine
from tests.integration.lines import ROOT
from tests.outputs.standin import Standin
from tests.support import free_port

BROKER = "mqtt://127.0.0.1:1883"


@pytest.mark.slow
async def test_demo_delivers_every_confirmation_to_the_webhook_and_the_broker(tmp_path):
    standin = Standin(free_port())
    db = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    published: Counter[str] = Counter()
    subscribed = asyncio.Event()

    async def listen() -> None:
        async with aiomqtt.Client("127.0.0.1", 1883, identifier=f"demo-test-{free_port()}") as client:
            await client.subscribe(f"{DEMO_SITE}/{DEMO_AREA}/+/+/confirmation", qos=1)
            subscribed.set()
            async for message in client.messages:
                published[json.loads(message.payload)["key"]] += 1

    listener = asyncio.create_task(listen())
    try:
        await asyncio.wait_for(subscribed.wait(), 10)
        demo = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "demo", "--seconds", "11", "--db", db, "--port", str(free_port()),
            "--modbus-port", str(free_port()), "--http", "off", "--webhook", standin.url, "--mqtt", BROKER,
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out = (await asyncio.wait_for(demo.communicate(), 180))[0].decode()
        await asyncio.sleep(1.0)  # the last publishes on their way to this subscriber
    finally:
        listener.cancel()
        standin.close()
    engine = open_engine(db)
    with engine.connect() as conn:
        confirmed = list(conn.execute(select(schema.confirmations.c.id)).scalars())
    engine.dispose()
    assert demo.returncode == 0, out
    assert len(confirmed) >= 8, out  # every 5 s per machine, and the last ones at shutdown
    webhook_keys = {f"{c}:confirmation:webhook" for c in confirmed}
    mqtt_keys = {f"{c}:confirmation:mqtt" for c in confirmed}
    assert dict(standin.effects) == dict.fromkeys(webhook_keys, 1)
    # Another demo may publish on the same broker: this ledger's keys, each once.
    assert {k: n for k, n in published.items() if k in mqtt_keys} == dict.fromkeys(mqtt_keys, 1)
    assert f"output webhook: {len(confirmed)} delivered\n" in out and f"output mqtt: {len(confirmed)} delivered\n" in out
    assert "reconciled: every simulated unit is in the ledger exactly once" in out


def test_demo_refuses_an_output_url_it_cannot_use_before_anything_starts(tmp_path):
    import subprocess

    done = subprocess.run([sys.executable, "-m", "gateway.cli", "demo", "--webhook", "ftp://erp/hook", "--http", "off",
                           "--db", f"sqlite:///{tmp_path / 'ledger.sqlite'}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].endswith("--webhook: must start with http:// or https://, "
                                                         "got 'ftp://erp/hook'")
    assert not (tmp_path / "ledger.sqlite").exists()
