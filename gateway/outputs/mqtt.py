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

Must never: raise for a broker that is down, log the password, or touch the ledger.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from urllib.parse import unquote, urlsplit

import aiomqtt
import structlog

from gateway.mapping.model import MqttOutput
from gateway.outputs.base import Delivery, Outcome

log = structlog.get_logger("gateway.outputs")


def topic_root(cfg: MqttOutput) -> str:
    return f"{cfg.site}/{cfg.area}"


class MqttTarget:
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
        self._client_id = cfg.client_id or client_id or f"backflush-{name}"
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
                                    timeout=10)
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

    async def deliver(self, d: Delivery) -> Outcome:
        message = json.dumps({**d.payload, "key": d.key}, sort_keys=True, separators=(",", ":"))
        async with self._lock:  # one connection, publishes in the worker's order
            try:
                client = await self._connected()
                await client.publish(self.topic(d, d.what), message, qos=1, timeout=10)
                if d.machine is not None:
                    state = {"order": d.order, "last": d.key, "what": d.what, "posted_at": d.payload.get("posted_at")}
                    await client.publish(self.topic(d, "state"), json.dumps(state, sort_keys=True), qos=1,
                                         retain=True, timeout=10)
                    if d.what == "confirmation":
                        counts = {k: d.payload.get(k) for k in ("order", "operation", "yield_qty", "scrap_qty",
                                                                "uom", "end", "last_source_time")}
                        await client.publish(self.topic(d, "counts"), json.dumps(counts, sort_keys=True), qos=1,
                                             retain=True, timeout=10)
            except (aiomqtt.MqttError, OSError, asyncio.TimeoutError) as exc:
                await self._drop()
                return Outcome.retry(f"broker {self._host}:{self._port}: {type(exc).__name__}: {exc}")
        return Outcome.delivered()

    async def find(self, d: Delivery) -> bool | None:
        return False  # publish again: QoS 1 subscribers dedupe by key (module docstring)

    async def close(self) -> None:
        await self._drop()
