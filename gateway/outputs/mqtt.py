"""The MQTT output: every delivery published QoS 1 under a unified namespace, machine state retained.

Topics (``<site>/<area>`` from the output's settings, the line is the machine's source):

* ``<site>/<area>/<line>/<machine>/<what>`` — one message per document (confirmation,
  reversal, adjustment), QoS 1, not retained; the payload carries the ``key``.
* ``<site>/<area>/<line>/<machine>/state`` — retained: the machine's order and its last
  delivered document; ``…/counts`` — retained: the counter positions and quantities of the
  last confirmation. A dashboard that subscribes later sees the latest at once.
* ``<site>/<area>/stock`` — manual stock postings of no machine.

QoS 1 is at-least-once by the protocol: a publish is delivered when the broker's PUBACK
came back. A broker that is down or a connection lost mid-publish is ``retry``: the row is
published again after a reconnect, and a subscriber that saw it already recognises the key.
So ``find`` answers False (publish again; the key makes a duplicate harmless).

A round's deliveries are published pipelined (``deliver_batch``): every document message goes
out at once on the one connection and the PUBACKs are awaited together, not one by one; then
each machine's retained ``state`` (and ``counts``, for a confirmation) for the last of its
documents the broker acknowledged. A delivery is delivered when its document's PUBACK came,
and — for the one that carries its machine's retained state — those PUBACKs too; the rest are
``retry``. Publishes on one connection reach the broker in order, so an order's documents
arrive in posting order.

Must never: raise for a broker that is down, log the password, or touch the ledger.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import ssl
from urllib.parse import unquote, urlsplit

import aiomqtt
import orjson
import structlog

from gateway.mapping.model import MqttOutput
from gateway.outputs.base import Delivery, Outcome

log = structlog.get_logger("gateway.outputs")

BATCH = 1000  # deliveries per pipelined round
# QoS 1 publishes awaiting their PUBACK at once (paho's default is 20). Not more: aiomqtt counts
# its pending calls on every publish (a pass over all of them), so a deeper window costs more
# than it gains on a local network.
IN_FLIGHT = 100
PUBACK_TIMEOUT_S = 10.0  # a round's publishes not acknowledged by then are sent again


def topic_root(cfg: MqttOutput) -> str:
    return f"{cfg.site}/{cfg.area}"


class MqttTarget:
    batch_size = BATCH
    looks_up = False  # find() cannot tell: a document in flight at a crash is published again (deduped by key)

    def __init__(self, name: str, cfg: MqttOutput, lines: dict[str, str], *, client_id: str | None = None) -> None:
        self.name = name
        url = urlsplit(cfg.url)
        self._host = url.hostname or "127.0.0.1"
        self._tls = url.scheme == "mqtts"
        self._port = url.port or (8883 if self._tls else 1883)
        self._user = unquote(url.username) if url.username else None
        password = cfg.password.get_secret_value() if cfg.password else (unquote(url.password) if url.password else None)
        self._password = password
        self._ca = cfg.ca_file
        self._keepalive = cfg.keepalive_s
        # Unique per process by default: a broker drops a connection when another client connects with its
        # id, so two gateways (or a gateway and its successor's relay) sharing one would kick each other
        # off in turn. Sessions are clean, so a new id at each start loses nothing.
        self._client_id = cfg.client_id or client_id or f"backflush-{name}-{socket.gethostname()}-{os.getpid()}"
        self._root = topic_root(cfg)
        self._lines = lines  # machine → line (its source)
        self._client: aiomqtt.Client | None = None
        self._lock = asyncio.Lock()

    def topic(self, d: Delivery, leaf: str) -> str:
        if d.machine is None:
            return f"{self._root}/{leaf}"
        return f"{self._root}/{self._lines.get(d.machine, '_')}/{d.machine}/{leaf}"

    async def _connected(self) -> aiomqtt.Client:
        if self._client is None:
            tls = None
            if self._tls:
                tls = ssl.create_default_context(cafile=self._ca) if self._ca else ssl.create_default_context()
            client = aiomqtt.Client(self._host, self._port, username=self._user, password=self._password,
                                    identifier=self._client_id, keepalive=self._keepalive, tls_context=tls,
                                    timeout=10, max_inflight_messages=IN_FLIGHT)
            client.pending_calls_threshold = IN_FLIGHT + 10  # a full window is normal here, not a warning
            await client.__aenter__()
            self._client = client
            log.info("mqtt_connected", output=self.name, host=self._host, port=self._port, tls=self._tls)
        return self._client

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.__aexit__(None, None, None)
            except Exception:  # noqa: BLE001 — the connection is gone either way
                pass

    def _failure(self, exc: BaseException) -> Outcome:
        return Outcome.retry(f"broker {self._host}:{self._port}: {type(exc).__name__}: {exc}")

    async def deliver(self, d: Delivery) -> Outcome:
        [outcome] = await self.deliver_batch([d])
        return outcome

    async def _published(self, client: aiomqtt.Client, messages: list[tuple[str, str, bool]]) -> list[BaseException | None]:
        """Publish all at once (QoS 1) and wait for their PUBACKs together: None per acknowledged message,
        else what went wrong. Unacknowledged after ``PUBACK_TIMEOUT_S``: a timeout."""
        window = asyncio.Semaphore(IN_FLIGHT)  # taken in order: the publishes leave in the order given

        async def publish(topic: str, body: str, retain: bool) -> None:
            async with window:
                await client.publish(topic, body, qos=1, retain=retain, timeout=math.inf)

        tasks = [asyncio.ensure_future(publish(*m)) for m in messages]
        try:
            _, late = await asyncio.wait(tasks, timeout=PUBACK_TIMEOUT_S) if tasks else (set(), set())
        except asyncio.CancelledError:  # the worker stops: nothing left waiting for an acknowledgement
            for task in tasks:
                task.cancel()
            raise
        for task in late:
            task.cancel()
        if late:
            await asyncio.gather(*late, return_exceptions=True)
        return [(TimeoutError(f"no PUBACK within {PUBACK_TIMEOUT_S:g} s") if task in late else task.exception())
                for task in tasks]

    async def deliver_batch(self, ds: list[Delivery]) -> list[Outcome]:
        async with self._lock:  # one connection: publishes go out in the worker's order
            try:
                client = await self._connected()
            except (aiomqtt.MqttError, OSError, asyncio.TimeoutError) as exc:
                await self._drop()
                return [self._failure(exc)] * len(ds)
            docs = [(self.topic(d, d.what), orjson.dumps({**d.payload, "key": d.key},
                                                         option=orjson.OPT_SORT_KEYS), False) for d in ds]
            errors = await self._published(client, docs)
            # Each machine's retained state: the last of its documents the broker has.
            last: dict[str, int] = {}
            for i, (d, error) in enumerate(zip(ds, errors)):
                if d.machine is not None and error is None and (d.machine not in last or d.id > ds[last[d.machine]].id):
                    last[d.machine] = i
            retained, carrier = [], []
            for i in last.values():
                d = ds[i]
                state = {"order": d.order, "last": d.key, "what": d.what, "posted_at": d.payload.get("posted_at")}
                retained.append((self.topic(d, "state"), json.dumps(state, sort_keys=True), True))
                carrier.append(i)
                if d.what == "confirmation":
                    counts = {k: d.payload.get(k) for k in ("order", "operation", "yield_qty", "scrap_qty", "uom",
                                                            "end", "last_source_time")}
                    retained.append((self.topic(d, "counts"), json.dumps(counts, sort_keys=True), True))
                    carrier.append(i)
            for i, error in zip(carrier, await self._published(client, retained)):
                if error is not None and errors[i] is None:
                    errors[i] = error  # published again with its document next round (the key dedupes)
            if any(e is not None for e in errors):
                await self._drop()  # a lost connection, or a broker not acknowledging: start afresh
        return [Outcome.delivered() if e is None else self._failure(e) for e in errors]

    async def find(self, d: Delivery) -> bool | None:
        return False  # publish again: QoS 1 subscribers dedupe by key (module docstring)

    async def close(self) -> None:
        await self._drop()
