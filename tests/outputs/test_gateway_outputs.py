"""The running gateway (real OPC UA simulator, real ledger) delivers every confirmation it posts to a
webhook receiver exactly once by key, including those posted at shutdown — through its outbox relay
process, which it starts again when it dies."""

from __future__ import annotations

import os
import signal

from sqlalchemy import select

from gateway.demo import wait_until
from gateway.ledger import schema
from gateway.mapping.model import Mapping
from simulators.machine import SimMachineConfig
from simulators.opcua_plc import OpcUaPlc
from tests.integration.lines import Line
from tests.integration.test_service import mapping_for
from tests.outputs.standin import Standin
from tests.support import free_port


async def test_the_gateway_delivers_every_posted_confirmation_once(ledger_url):
    standin = Standin(free_port())
    port = free_port()
    base = mapping_for(port, "ASSY-03").model_dump(mode="json", exclude_none=True)
    mapping = Mapping.model_validate({**base, "outputs": {"hook": {"webhook": {"url": standin.url},
                                                                    "retry_min_s": 0.1, "retry_max_s": 0.5}}})
    try:
        line = Line(ledger_url, OpcUaPlc([SimMachineConfig("ASSY-03", rate_hz=60, order="1000124", seed=5)],
                                         port=port, tick_s=0.01), mapping)
        async with line as p:
            await p.produce(1.5)
            with p.engine.connect() as conn:
                posted_so_far = set(conn.execute(select(schema.confirmations.c.id)).scalars())
            await wait_until(lambda: {k.split(":")[0] for k in standin.effects} >= posted_so_far, 20,
                             "the receiver to get the confirmations")
        with p.engine.connect() as conn:
            posted = set(conn.execute(select(schema.confirmations.c.id)).scalars())
            statuses = dict(conn.execute(select(schema.outbox.c.key, schema.outbox.c.status)).all())
        assert len(posted) >= 2
        assert set(statuses) == {f"{c}:confirmation:hook" for c in posted}
        assert all(n == 1 for n in standin.effects.values())
        # those posted at shutdown wait in the outbox for the next start (never lost)
        assert {k for k, s in statuses.items() if s == "delivered"} == set(standin.effects)
        # (one the stop cut off in flight is unknown: the next start asks the receiver before sending it again)
        assert {s for k, s in statuses.items() if k not in standin.effects} <= {"pending", "unknown"}
    finally:
        standin.close()


async def test_a_relay_that_dies_is_started_again_and_nothing_is_lost_or_delivered_twice(ledger_url):
    standin = Standin(free_port())
    standin.mode, standin.delay_s = "slow", 0.3  # a kill lands while a request is on its way
    port = free_port()
    base = mapping_for(port, "ASSY-03").model_dump(mode="json", exclude_none=True)
    mapping = Mapping.model_validate({**base, "outputs": {"hook": {"webhook": {"url": standin.url, "batch": 20},
                                                                    "retry_min_s": 0.1, "retry_max_s": 0.5}}})
    try:
        line = Line(ledger_url, OpcUaPlc([SimMachineConfig("ASSY-03", rate_hz=60, order="1000124", seed=5)],
                                         port=port, tick_s=0.01), mapping)
        async with line as p:
            relay = p.gateway.outputs
            await wait_until(lambda: relay._proc is not None, 10, "the relay to start")
            first = relay._proc.pid
            await p.produce(1.0)
            await wait_until(lambda: standin.requests, 20, "a first delivery")
            os.kill(first, signal.SIGKILL)
            await p.produce(1.0)  # posted while the relay is down: they wait in the outbox
            await wait_until(lambda: relay._proc is not None and relay._proc.pid != first, 20,
                             "the gateway to start the relay again")
            with p.engine.connect() as conn:
                posted_so_far = set(conn.execute(select(schema.confirmations.c.id)).scalars())
            await wait_until(lambda: {k.split(":")[0] for k in standin.effects} >= posted_so_far, 30,
                             "the new relay to deliver what waited")
            assert relay.restarts == 1
        with p.engine.connect() as conn:
            statuses = dict(conn.execute(select(schema.outbox.c.key, schema.outbox.c.status)).all())
        assert posted_so_far and {f"{c}:confirmation:hook" for c in posted_so_far} <= set(statuses)
        assert all(n == 1 for n in standin.effects.values())  # each key's effect once, whatever was resent
        assert {k for k, s in statuses.items() if s == "delivered"} <= set(standin.effects)
    finally:
        standin.close()
