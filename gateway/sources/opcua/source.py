"""OPC UA source: subscribes to a PLC's counter and order tags and hands on every value.

``OpcUaSource.run()`` keeps one subscription alive against one endpoint for as long as the
gateway runs and calls ``on_batch`` with the values of each publish response. It exists so
that every count a PLC reports reaches the consumer, across server restarts, network
outages and servers that go silent. What real plants taught us, and how
each lesson is handled, is in this folder's README.md.

This module must never drop, merge or reorder a tag's values, never invent a value, never
raise out of ``run()`` (except on cancellation), never accept a server certificate nobody
trusted, never log a password, and never know about orders, confirmations or stock: it
reports what the PLC said and nothing else.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args
from urllib.parse import urlsplit, urlunsplit

import structlog
from asyncua import Client, ua
from asyncua.crypto import security_policies
from asyncua.ua.uaerrors import UaStatusCodeError
from cryptography import x509

from gateway.sources.base import Quality
from gateway.mapping.model import OpcUaSource as OpcUaSourceConfig
from gateway.mapping.model import SecurityPolicyName
from gateway.pki import CertificateRefused, CertInfo, Pki, PkiError, default_application_uri, describe, \
    load_certificate, own_certificate_problems, thumbprint
from gateway.sources.base import ReconnectingSource, TagSpec, TagValue
from gateway.clock import utcnow

__all__ = [
    "CREDENTIALS_CODES", "ConnectRefused", "OpcUaSource", "connect_client", "connect_hint", "resolve_address",
    "secure_client", "without_credentials",
]

# Ten samples per item per publishing interval: a PLC that counts faster than we publish
# still loses nothing, and a cumulative counter survives even an overflow (its last value
# carries every count).
QUEUE_SIZE = 10
# Used when a server does not state MaxMonitoredItemsPerCall / MaxNodesPerRead.
DEFAULT_ITEMS_PER_CALL = 100
# Keep-alives are asked for three times per watchdog period, so one lost keep-alive does
# not tear down a healthy connection.
KEEPALIVES_PER_WATCHDOG = 3

BAD_TAG_HINT = "check the node id in the mapping; `gateway validate --live MAPPING` reads every tag from the server"

# Status codes that say "this tag is wrong" (mapping or server configuration), as opposed
# to "this value is bad right now" (sensor fault, PLC in stop), which is just BAD quality.
_TAG_ERROR_CODES = frozenset(
    {
        ua.StatusCodes.BadNodeIdUnknown,
        ua.StatusCodes.BadNodeIdInvalid,
        ua.StatusCodes.BadAttributeIdInvalid,
        ua.StatusCodes.BadNotReadable,
        ua.StatusCodes.BadUserAccessDenied,
        ua.StatusCodes.BadNotSupported,
        ua.StatusCodes.BadMonitoredItemFilterUnsupported,
        ua.StatusCodes.BadFilterNotAllowed,
    }
)
# StatusCode info bits (Part 4, 7.39.1): InfoType=DataValue plus Overflow.
_OVERFLOW_BITS = 0x0480

_NO_DEADBAND = ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValue, DeadbandType=ua.DeadbandType.None_)


def resolve_address(address: str, namespaces: Sequence[str]) -> ua.NodeId:
    """Turn a mapping address into a NodeId valid on this server, right now.

    Accepts every OPC UA node id string (``ns=2;s=…``, ``ns=2;i=…``, ``g=``, ``b=``) and
    ``nsu=<namespace uri>;s=…``, whose index is looked up in ``namespaces`` (the server's
    NamespaceArray, read on every connect because a restart can renumber it).
    Raises ``ValueError`` with a message for people when the address cannot be used.
    """
    try:
        parsed = ua.NodeId.from_string(address)
    except ua.UaStringParsingError as exc:
        raise ValueError(f"not a node id ({exc.args[0] if exc.args else exc})") from None
    uri = getattr(parsed, "NamespaceUri", None)
    if uri:
        if uri not in namespaces:
            raise ValueError(f"namespace URI {uri!r} is not on the server (it has {list(namespaces)})")
        return ua.NodeId(parsed.Identifier, namespaces.index(uri), parsed.NodeIdType)
    if parsed.NamespaceIndex >= len(namespaces):
        raise ValueError(f"namespace index {parsed.NamespaceIndex} is not on the server (it has {list(namespaces)})")
    return ua.NodeId(parsed.Identifier, parsed.NamespaceIndex, parsed.NodeIdType)


# --- building a configured client ---------------------------------------------------------


class ConnectRefused(Exception):
    """A connection refused for a reason people must act on (security, certificates,
    endpoints): ``str()`` says why in one line, ``hint`` what to do next."""

    def __init__(self, reason: str, hint: str, *, own_certificate: bool = False,
                 offered: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(reason)
        self.hint = hint
        self.own_certificate = own_certificate  # about the gateway's certificate: name it in the hint
        self.offered = offered  # (policy, mode) pairs the server offers, when no endpoint matched


# Mapping names → asyncua's classes and modes; the URIs servers list go back to the names.
_POLICIES = {name: getattr(security_policies, f"SecurityPolicy{name}") for name in get_args(SecurityPolicyName)}
_POLICY_BY_URI = {cls.URI: name for name, cls in _POLICIES.items()}
_MODES = {
    "None": ua.MessageSecurityMode.None_,
    "Sign": ua.MessageSecurityMode.Sign,
    "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt,
}
_MODE_NAMES = {mode: name for name, mode in _MODES.items()}


async def secure_client(
    config: OpcUaSourceConfig,
    pki: Pki,
    application_uri: str,
    *,
    name: str | None = None,
    timeout: float = 10.0,
    log: Any = None,
) -> Client:
    """A ``Client`` for one source, configured and ready to ``connect()`` (see ``connect_client``).

    The one place a client is built: user and password, the application URI (the same as
    in the gateway's certificate, or servers refuse the session with
    BadCertificateUriInvalid) and, for a secured source, the gateway's certificate (made
    in the PKI on first use) and a server certificate that passed the trust list or the
    pin. For that it asks the server for its endpoints first (one short unsecured
    connection, as every OPC UA client does): the endpoint with the mapping's policy and
    mode must be offered, and its certificate is checked before any secure channel is
    opened, so no password ever goes to an untrusted server.

    Raises ``ConnectRefused`` with a reason and a hint; network errors as they come.
    """
    log = log or structlog.get_logger(__name__)
    client = Client(
        config.endpoint,
        timeout=timeout,
        watchdog_intervall=config.watchdog_s,  # asyncua's ServerStatus probe
        auto_reconnect=False,  # we rebuild everything ourselves, see module docstring
    )
    client.application_uri = application_uri
    client.description = f"Backflush Gateway {name}" if name else "Backflush Gateway"
    # Orphaned sessions of a broken connection count against small PLC limits until
    # they time out; an hour (asyncua's default) is far too long.
    client.session_timeout = max(30_000, int(config.watchdog_s * 4_000))
    if config.username:
        client.set_user(config.username)
    if config.password:
        client.set_password(config.password.get_secret_value())
    if not config.secured:
        return client
    try:
        await _secure(client, config, pki, application_uri, log)
    except BaseException:
        client.disconnect_socket()
        raise
    return client


async def _secure(client: Client, config: OpcUaSourceConfig, pki: Pki, application_uri: str, log: Any) -> None:
    assert config.security is not None
    cert_path, key_path = _own_files(config, pki, application_uri, log)
    try:
        own = load_certificate(cert_path)
    except PkiError as exc:
        raise ConnectRefused(f"the gateway's certificate: {exc}", "fix `certificate:` in the mapping, or remove "
                             "it (and `private_key:`) to use the gateway's own") from None
    problems = own_certificate_problems(own, application_uri)
    if problems:
        raise ConnectRefused(
            f"the gateway's certificate {cert_path} would be refused by servers: {'; '.join(problems)}",
            "make `application_uri` in the mapping the URI in the certificate, or let the gateway make its own "
            "certificate (remove `certificate:`/`private_key:`)")
    policy, mode = config.security.policy, _MODES[config.security.mode]
    endpoints = await client.connect_and_get_server_endpoints()
    endpoint = next((ep for ep in endpoints if ep.SecurityPolicyUri == _POLICIES[policy].URI
                     and ep.SecurityMode == mode and ep.EndpointUrl.startswith("opc.tcp")), None)
    if endpoint is None:
        raise _no_endpoint(policy, config.security.mode, endpoints)
    server_der = _first_certificate(endpoint.ServerCertificate)
    if not server_der:
        raise ConnectRefused(f"the server offers {policy}/{config.security.mode} without a certificate",
                             "the server is misconfigured: it must send its certificate on a secured endpoint")
    try:
        await pki.check_server_certificate(
            x509.load_der_x509_certificate(server_der), endpoint.Server,
            endpoint=without_credentials(config.endpoint), host=urlsplit(config.endpoint).hostname,
            pin=config.server_certificate, cli_hint=f" --pki {pki.root}")
    except CertificateRefused as exc:
        raise ConnectRefused(exc.reason, exc.hint) from None
    except ValueError:
        raise ConnectRefused("the server's certificate cannot be read",
                             "the server is misconfigured: its certificate is not X.509 DER") from None
    # The certificate just checked is handed over: asyncua then refuses a session whose
    # server presents another one ("Server certificate mismatch").
    await client.set_security(_POLICIES[policy], str(cert_path), str(key_path), server_certificate=server_der,
                              mode=mode)


def _own_files(config: OpcUaSourceConfig, pki: Pki, application_uri: str, log: Any) -> tuple[Path, Path]:
    if config.certificate and config.private_key:
        return Path(config.certificate), Path(config.private_key)
    try:
        info, created = pki.ensure_own(application_uri)
    except (PkiError, OSError) as exc:
        raise ConnectRefused(f"no certificate for the gateway: {exc}",
                             f"check the PKI folder {pki.root} (`gateway pki init --pki {pki.root}`)") from None
    if created:
        log.warning("opcua.own_certificate_created", path=str(info.path), thumbprint_sha1=info.thumbprint,
                    application_uri=application_uri, valid=info.validity,
                    hint="the server must trust this certificate: accept it in the server's rejected list "
                         "after the first refused connect (compare the SHA-1 thumbprint) or copy the file into "
                         "the server's trusted folder")
    return pki.own_certificate, pki.own_key


def _first_certificate(der: bytes | None) -> bytes:
    # Servers sometimes send their certificate followed by its chain: the first DER
    # SEQUENCE is theirs (long-form length, as every certificate is longer than 255 bytes).
    if not der or len(der) < 4:
        return b""
    return der[: int.from_bytes(der[2:4], "big") + 4]


def _offered(endpoints: Sequence[ua.EndpointDescription]) -> str:
    pairs = [f"{_POLICY_BY_URI.get(ep.SecurityPolicyUri, ep.SecurityPolicyUri.rpartition('#')[2])}/"
             f"{_MODE_NAMES.get(ep.SecurityMode, ep.SecurityMode)}" for ep in endpoints
             if ep.EndpointUrl.startswith("opc.tcp")]
    return ", ".join(dict.fromkeys(pairs)) or "none"


def _no_endpoint(policy: str, mode: str, endpoints: Sequence[ua.EndpointDescription]) -> ConnectRefused:
    offered = _offered(endpoints)
    pairs = tuple(tuple(p.split("/", 1)) for p in offered.split(", ") if "/" in p)
    reason = f"the server offers no endpoint with policy {policy} and mode {mode} (it offers {offered})"
    if mode == "None":
        secured = [p for p in offered.split(", ") if not p.startswith("None/")]
        example = secured[0].split("/") if secured else ["Basic256Sha256", "SignAndEncrypt"]
        return ConnectRefused(
            reason + ": it requires security",
            f"set `security: {{policy: {example[0]}, mode: {example[1]}}}` for this source in the mapping; "
            "then the server's certificate must be trusted (`gateway pki list`, `gateway pki trust`)", offered=pairs)
    return ConnectRefused(reason, "set `security` in the mapping to one of the offered policy/mode pairs",
                          offered=pairs)


async def connect_client(client: Client, timeout: float) -> None:
    """``client.connect()`` with what asyncua does not say turned into ``ConnectRefused``.

    asyncua raises ``UaError("No matching endpoints …")`` when the session's endpoint is
    not offered (an unsecured source on a server that requires security), and an
    ``AssertionError`` when a server answers the OpenSecureChannel request with a fault
    (servers refuse a client certificate there: BadCertificateUseNotAllowed,
    BadCertificateUntrusted, BadSecurityChecksFailed…; asyncua drops the code).
    """
    config_endpoint = client.server_url.geturl()
    try:
        # Several round trips (hello, channel, session, activate), each with its timeout.
        await asyncio.wait_for(client.connect(), timeout)
    except AssertionError:
        raise ConnectRefused(
            "the server refused to open a secure channel with the gateway's certificate",
            "the server's log names the reason; usually it does not trust the gateway's certificate yet (trust it "
            "there) or refuses its key usages or application URI (`gateway pki show` lists them)",
            own_certificate=True) from None
    except ua.UaError as exc:
        if isinstance(exc, UaStatusCodeError) or "No matching endpoints" not in str(exc):
            raise
        probe = Client(config_endpoint, timeout=max(1.0, timeout / 3))
        try:
            endpoints = await asyncio.wait_for(probe.connect_and_get_server_endpoints(), timeout)
        except Exception:  # noqa: BLE001 - the original error still says what happened
            raise exc from None
        policy = client.security_policy
        raise _no_endpoint(_POLICY_BY_URI.get(policy.URI, policy.URI), _MODE_NAMES.get(policy.Mode, "None"),
                           endpoints) from None


def session_facts(client: Client, config: OpcUaSourceConfig) -> dict[str, Any]:
    """What the session log line says: policy, mode, user (never the password), server certificate."""
    policy = client.security_policy
    peer = policy.peer_certificate
    return {
        "policy": _POLICY_BY_URI.get(policy.URI, policy.URI),
        "mode": _MODE_NAMES.get(policy.Mode, str(policy.Mode)),
        "user": config.username or "anonymous",
        "server_certificate_sha1": thumbprint(x509.load_der_x509_certificate(peer)) if peer else None,
    }


def _own_certificate_text(config: OpcUaSourceConfig, pki: Pki) -> str:
    path = Path(config.certificate) if config.certificate else pki.own_certificate
    try:
        info: CertInfo = describe(load_certificate(path), path)
    except PkiError:
        return f"the gateway's certificate: {path}"
    return f"the gateway's certificate: {path}, SHA-1 thumbprint {info.thumbprint}, URI {info.application_uri}"


class _PublishFailureFilter(logging.Filter):
    """asyncua's publish loop logs a traceback every second after a server restart
    ("Publish iteration crashed … BadSessionClosed") until the session is torn down; the
    source already reports the lost connection, so each becomes one structured line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("close_session was called but connection is closed"):
            return False  # our own opcua.disconnected line says so, with a hint
        if not str(record.msg).startswith("Publish iteration crashed"):
            return True
        exc = record.exc_info[1] if record.exc_info else None
        structlog.get_logger(__name__).warning(
            "opcua.publish_failed", error=_describe(exc) if exc else "unknown",
            hint=_hint_for(exc) if exc else "the source reconnects")
        return False


_PUBLISH_FILTER = _PublishFailureFilter()
logging.getLogger("asyncua.client.ua_session.UaSession").addFilter(_PUBLISH_FILTER)


class _Lost(Exception):
    """The connection stopped being usable; ``hint`` tells people what to look at."""

    def __init__(self, reason: str, hint: str) -> None:
        super().__init__(reason)
        self.hint = hint


@dataclass
class _Item:
    """One monitored item: a node, and every tag (machine, role) that reads it."""

    node_id: ua.NodeId
    specs: list[TagSpec]


@dataclass
class _Connection:
    """State of one connection. Callbacks are bound to it, so a late callback from an old
    client can never mark a newer connection as lost."""

    watchdog_s: float
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    reason: _Lost | None = None
    last_alive: float = field(default_factory=time.monotonic)
    subscription_id: int | None = None
    items: dict[int, _Item] = field(default_factory=dict)  # client handle → item
    pending: list[TagValue] = field(default_factory=list)  # values of a split publish
    last_sequence: int | None = None
    reported: set[str] = field(default_factory=set)  # bad addresses already logged

    def mark_lost(self, reason: str, hint: str) -> None:
        if self.reason is None:
            self.reason = _Lost(reason, hint)
            self.lost.set()


@dataclass(frozen=True)
class _Limits:
    items_per_call: int
    nodes_per_read: int


class OpcUaSource(ReconnectingSource):
    """One OPC UA endpoint: keeps a subscription to ``tags`` and calls ``on_batch``.

    ``on_batch`` is called from the event loop with the values of one publish response
    (initial values after every (re)subscribe included), in source-time order. It
    must not block; if it raises, the connection is rebuilt so that the consumer gets the
    current values again instead of silently missing a batch.
    """

    protocol = "opcua"

    def __init__(
        self,
        name: str,
        config: OpcUaSourceConfig,
        tags: Sequence[TagSpec],
        on_batch: Callable[[list[TagValue]], None],
        log: Any = None,
        *,
        request_timeout_s: float | None = None,
        pki: Pki | None = None,
        application_uri: str | None = None,
    ) -> None:
        self._endpoint_for_logs = without_credentials(config.endpoint)
        log = (log or structlog.get_logger(__name__)).bind(source=name, endpoint=self._endpoint_for_logs)
        super().__init__(name, config.reconnect_min_s, config.reconnect_max_s, log)
        self.config = config
        self.tags = list(tags)
        self._on_batch = on_batch
        # A dead server must not hold any request (or shutdown) for long; a slow embedded
        # one still needs a second or so.
        self._request_timeout_s = request_timeout_s or min(10.0, max(1.0, config.watchdog_s))
        # Used by secured connections only: an unsecured source never touches the folder.
        self._pki = pki or Pki("pki")
        self._application_uri = application_uri or default_application_uri()

    # --- public -----------------------------------------------------------------------
    # run() and health come from ReconnectingSource: subscribe, deliver, and rebuild the
    # connection whenever it fails, until cancelled.

    async def read_once(self) -> list[TagValue]:
        """Connect, read every tag once, disconnect; one value per tag, in ``tags`` order.

        For ``gateway validate --live``: a tag that cannot be read comes back with BAD
        quality and ``value=None``, and ``health.bad_tags`` says why. Connection errors
        are raised, not retried.
        """
        conn = _Connection(self.config.watchdog_s)
        client = await self._connect(conn)
        try:
            items = await self._resolve(client, conn)
            limits = await _read_limits(client)
            by_tag = await self._read_items(client, conn, items, limits.nodes_per_read)
        finally:
            await self._close(client, conn)
        now = utcnow()
        unread = TagValue("", "", None, now, Quality.BAD, now)
        return [by_tag.get(spec) or replace(unread, machine=spec.machine, role=spec.role) for spec in self.tags]

    # --- one connection ---------------------------------------------------------------

    async def _serve(self) -> None:
        """One connection from connect to loss; returns only by raising why it ended."""
        conn = _Connection(self.config.watchdog_s)
        client = await self._connect(conn)
        try:
            items = await self._resolve(client, conn)
            await self._subscribe(client, conn, items)
            self._connected = True
            self._connects += 1
            self._backoff.reset()
            await _watch(conn)
        finally:
            self._connected = False
            await self._close(client, conn)

    async def _connect(self, conn: _Connection) -> Client:
        client = await asyncio.wait_for(
            secure_client(self.config, self._pki, self._application_uri, name=self.name,
                          timeout=self._request_timeout_s, log=self._log),
            self._request_timeout_s * 3,
        )
        client.connection_lost_callback = functools.partial(_on_connection_lost, conn)
        try:
            await connect_client(client, self._request_timeout_s * 3)
        except BaseException:
            await self._close(client, conn)
            raise
        self._log.info("opcua.session", **session_facts(client, self.config))
        return client

    async def _resolve(self, client: Client, conn: _Connection) -> list[_Item]:
        """Group tags by the node they read, resolving ``nsu=`` against today's namespaces."""
        namespaces = await client.get_namespace_array()
        self._bad_tags = {}
        items: dict[str, _Item] = {}
        for spec in self.tags:
            try:
                node_id = resolve_address(spec.address, namespaces)
            except ValueError as exc:
                self._mark_bad(conn, [spec], str(exc))
                continue
            items.setdefault(node_id.to_string(), _Item(node_id, [])).specs.append(spec)
        return list(items.values())

    async def _subscribe(self, client: Client, conn: _Connection, items: list[_Item]) -> None:
        limits = await _read_limits(client)
        interval = float(self.config.publishing_interval_ms)
        keepalive = max(1, math.floor(self.config.watchdog_s * 1000 / KEEPALIVES_PER_WATCHDOG / interval))
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=interval,
            RequestedMaxKeepAliveCount=keepalive,
            # Spec: lifetime ≥ 3 × keep-alive. The server drops the subscription after
            # this many intervals without a publish request (our client is gone).
            RequestedLifetimeCount=keepalive * 10,
            MaxNotificationsPerPublish=0,  # no limit: keep one write in one response
            PublishingEnabled=True,
            Priority=0,
        )
        # The raw service (not asyncua's Subscription) so that one publish response is
        # one callback: asyncua's handler path splits it into one task per value and its
        # iterator path drops values when its queue is full.
        result = await client.uaclient.create_subscription(params, functools.partial(self._on_publish, conn))
        conn.subscription_id = result.SubscriptionId
        self._fit_watchdog(conn, result)
        await self._create_items(client, conn, items, limits.items_per_call)
        conn.last_alive = time.monotonic()
        self._log.info(
            "opcua.subscribed",
            items=len(conn.items),
            bad_tags=len(self._bad_tags),
            publishing_interval_ms=result.RevisedPublishingInterval,
            keepalive_s=round(result.RevisedPublishingInterval * result.RevisedMaxKeepAliveCount / 1000, 2),
            watchdog_s=conn.watchdog_s,
        )

    def _fit_watchdog(self, conn: _Connection, result: ua.CreateSubscriptionResult) -> None:
        """Never let the watchdog fire between two keep-alives the server promised."""
        keepalive_s = result.RevisedPublishingInterval * result.RevisedMaxKeepAliveCount / 1000
        needed = keepalive_s * 1.5
        if needed > conn.watchdog_s:
            self._log.warning(
                "opcua.watchdog_raised",
                watchdog_s=self.config.watchdog_s,
                used_s=round(needed, 2),
                server_keepalive_s=round(keepalive_s, 2),
                hint="the server sends keep-alives less often than watchdog_s; raise watchdog_s in the mapping",
            )
            conn.watchdog_s = needed

    async def _create_items(self, client: Client, conn: _Connection, items: list[_Item], per_call: int) -> None:
        """Create monitored items in batches the server accepts; check each one's status."""
        handle = 0
        start = 0
        while start < len(items):
            chunk = items[start : start + per_call]
            handles = list(range(handle + 1, handle + 1 + len(chunk)))
            # Registered before the call: initial values can arrive before its response.
            conn.items.update(zip(handles, chunk))
            try:
                request = _item_requests(conn.subscription_id, handles, chunk, self.config)
                results = await client.uaclient.create_monitored_items(request)
            except UaStatusCodeError as exc:
                for h in handles:
                    del conn.items[h]
                if exc.code == ua.StatusCodes.BadTooManyOperations and len(chunk) > 1:
                    per_call = max(1, len(chunk) // 2)  # the server's limit is lower than it says
                    continue
                raise
            for h, item, res in zip(handles, chunk, results):
                if not res.StatusCode.is_good():
                    del conn.items[h]
                    self._mark_bad(conn, item.specs, res.StatusCode.name)
            handle += len(chunk)
            start += len(chunk)

    async def _read_items(
        self, client: Client, conn: _Connection, items: list[_Item], per_call: int
    ) -> dict[TagSpec, TagValue]:
        values: dict[TagSpec, TagValue] = {}
        for start in range(0, len(items), per_call):
            chunk = items[start : start + per_call]
            params = ua.ReadParameters(
                NodesToRead=[ua.ReadValueId(NodeId=i.node_id, AttributeId=ua.AttributeIds.Value) for i in chunk],
                TimestampsToReturn=ua.TimestampsToReturn.Both,
            )
            results = await client.uaclient.read(params)
            received_at = utcnow()
            for item, dv in zip(chunk, results):
                values.update(zip(item.specs, self._tag_values(conn, item, dv, received_at)))
        return values

    async def _close(self, client: Client, conn: _Connection) -> None:
        """Say goodbye if the server still listens; never wait on a dead one."""
        client.uaclient.request_disconnect()  # stops asyncua's supervisor loops whatever happens next
        try:
            if conn.subscription_id is not None and conn.reason is None:
                await asyncio.wait_for(
                    client.uaclient.delete_subscriptions([conn.subscription_id]), self._request_timeout_s
                )
        except Exception as exc:  # noqa: BLE001 - the session close below deletes it too
            self._log.debug("opcua.delete_subscription_failed", error=_describe(exc))
        try:
            await asyncio.wait_for(client.disconnect(), self._request_timeout_s)
        except Exception as exc:  # noqa: BLE001 - nothing left to save; the socket goes below
            self._log.debug("opcua.disconnect_incomplete", error=_describe(exc))
        finally:
            client.uaclient.disconnect_socket()
            # Last: the publish loop is gone now, so nothing can land in `pending` after
            # this and the values of a split publish response are not lost.
            self._flush_pending(conn)

    def _why(self, exc: Exception) -> tuple[str, str]:
        return _explain(exc)[0], connect_hint(exc, self.config, self._pki)

    # --- notifications ----------------------------------------------------------------

    def _on_publish(self, conn: _Connection, result: ua.PublishResult) -> None:
        """Called by asyncua's publish loop for every publish response, keep-alives too.

        Synchronous on purpose: asyncua acknowledges the response only after this returns,
        and nothing else runs on the loop in between.
        """
        conn.last_alive = time.monotonic()
        message = result.NotificationMessage
        received_at = utcnow()
        for notification in message.NotificationData or ():
            if isinstance(notification, ua.DataChangeNotification):
                self._check_sequence(conn, message.SequenceNumber)
                self._data_changes(conn, notification.MonitoredItems, received_at)
            elif isinstance(notification, ua.StatusChangeNotification):
                conn.mark_lost(
                    f"subscription status {notification.Status.name}",
                    "the server ended the subscription (restart, timeout or shutdown); resubscribing",
                )
        if not result.MoreNotifications:
            self._flush_pending(conn)

    def _data_changes(
        self, conn: _Connection, notifications: list[ua.MonitoredItemNotification], received_at: datetime
    ) -> None:
        """The values of one DataChangeNotification onto ``conn.pending``, in the server's order.

        This runs for every value a PLC sends: one loop, and what a status code means is
        looked up once per status code (``_status``), not worked out for every value.
        """
        items, pending = conn.items, conn.pending
        for mi in notifications:
            item = items.get(mi.ClientHandle)
            if item is None:
                self._log.warning("opcua.unknown_handle", handle=mi.ClientHandle)
                continue
            dv = mi.Value or _NO_VALUE
            status = _status(dv.StatusCode)
            if status.overflow:
                for spec in item.specs:
                    self._log.warning(
                        "opcua.queue_overflow",
                        machine=spec.machine,
                        role=spec.role,
                        address=spec.address,
                        hint="the server dropped samples between publishes; counters stay exact, "
                        "intermediate values are lost: lower publishing_interval_ms",
                    )
            self._add_values(conn, item, dv, status, received_at, pending)

    def _tag_values(self, conn: _Connection, item: _Item, dv: ua.DataValue, received_at: datetime) -> list[TagValue]:
        values: list[TagValue] = []
        self._add_values(conn, item, dv, _status(dv.StatusCode), received_at, values)
        return values

    def _add_values(self, conn: _Connection, item: _Item, dv: ua.DataValue, status: _Status, received_at: datetime,
                    into: list[TagValue]) -> None:
        """One value of a monitored item, for every tag that reads its node, appended to ``into``."""
        quality = status.quality
        if status.tag_error:
            self._mark_bad(conn, item.specs, status.name)
        value = dv.Value.Value if dv.Value is not None and quality is not Quality.BAD else None
        server_time = dv.ServerTimestamp
        if server_time is not None and server_time.tzinfo is not UTC:  # asyncua's are aware UTC already
            server_time = _aware(server_time)
        source_time = dv.SourceTimestamp
        if source_time is None or source_time.tzinfo is not UTC:
            source_time = _aware(source_time) or server_time or received_at
        for s in item.specs:
            into.append(TagValue(s.machine, s.role, value, source_time, quality, received_at, server_time,
                                 status.name))

    def _flush_pending(self, conn: _Connection) -> None:
        if not conn.pending:
            return
        batch = _in_time_order(conn.pending)
        conn.pending = []
        self._last_data_at = batch[-1].received_at
        try:
            self._on_batch(batch)
        except Exception:  # noqa: BLE001 - a consumer bug must not kill the source
            self._log.exception("opcua.consumer_failed", values=len(batch))
            conn.mark_lost(
                "the consumer raised on a batch",
                "bug in the consumer; resubscribing so it gets the current values again",
            )

    def _check_sequence(self, conn: _Connection, sequence: int) -> None:
        # Data messages are numbered 1, 2, 3, … per subscription; a gap means the server
        # dropped a message. Cumulative counters recover with the next value, but the
        # intermediate values (and their timestamps) are gone, so say so.
        if conn.last_sequence is not None and sequence not in (conn.last_sequence, conn.last_sequence + 1):
            self._log.warning("opcua.sequence_gap", expected=conn.last_sequence + 1, got=sequence)
        conn.last_sequence = sequence

    def _mark_bad(self, conn: _Connection, specs: list[TagSpec], reason: str) -> None:
        for spec in specs:
            self._bad_tags[spec.address] = reason
            if spec.address in conn.reported:
                continue
            conn.reported.add(spec.address)
            self._log.error(
                "opcua.bad_tag",
                machine=spec.machine,
                role=spec.role,
                address=spec.address,
                reason=reason,
                hint=BAD_TAG_HINT,
            )


# --- helpers ------------------------------------------------------------------------


async def _watch(conn: _Connection) -> None:
    """Wait until the connection is lost or silent for longer than the watchdog."""
    while conn.reason is None:
        remaining = conn.watchdog_s - (time.monotonic() - conn.last_alive)
        if remaining <= 0:
            conn.mark_lost(
                f"no data or keep-alive for {conn.watchdog_s:g}s",
                "the server keeps the connection open but stopped publishing (PLC runtime stalled "
                "or overloaded?); reconnecting",
            )
            break
        try:
            await asyncio.wait_for(conn.lost.wait(), remaining)
        except TimeoutError:
            pass
    raise conn.reason


def _in_time_order(values: list[TagValue]) -> list[TagValue]:
    """Interleave the tags by source time without ever reordering one tag's values.

    A plain sort would put a counter's values out of order when the PLC clock steps back
    (NTP sync after a PLC start) between two samples, and the consumer would see a reset
    that never happened. So each tag's values stay in the order the server queued them,
    and only the tags are merged by timestamp; on equal timestamps the server's order wins.
    """
    per_tag: dict[tuple[str, str], list[TagValue]] = {}
    for tv in values:
        per_tag.setdefault((tv.machine, tv.role), []).append(tv)
    tags = list(per_tag.values())
    if all(_time_ordered(tag) for tag in tags):
        # The usual case: every tag's own values in time order. Merging them is then the
        # stable sort of the tags one after the other (equal times: the earlier tag first,
        # as in the merge), and the sort runs in C.
        return sorted([tv for tag in tags for tv in tag], key=_source_time)
    return list(heapq.merge(*tags, key=_source_time))


def _source_time(tv: TagValue) -> datetime:
    return tv.source_time


def _time_ordered(values: list[TagValue]) -> bool:
    return all(a.source_time <= b.source_time for a, b in zip(values, values[1:]))


async def _on_connection_lost(conn: _Connection, exc: Exception) -> None:
    # asyncua's supervisor calls this when the socket closes or its ServerStatus probe fails.
    conn.mark_lost(f"connection lost: {_describe(exc)}", _hint_for(exc))


async def _read_limits(client: Client) -> _Limits:
    """The server's operation limits; 0 or unreadable means "not stated"."""
    ids = (
        ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
        ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
    )
    nodes = [ua.ReadValueId(NodeId=ua.NodeId(i), AttributeId=ua.AttributeIds.Value) for i in ids]
    params = ua.ReadParameters(NodesToRead=nodes)
    try:
        results = await client.uaclient.read(params)
    except UaStatusCodeError:
        results = []
    stated = [_positive_int(dv) for dv in results] + [None, None]
    return _Limits(stated[0] or DEFAULT_ITEMS_PER_CALL, stated[1] or DEFAULT_ITEMS_PER_CALL)


def _positive_int(dv: ua.DataValue) -> int | None:
    value = dv.Value.Value if dv.Value is not None and (dv.StatusCode is None or dv.StatusCode.is_good()) else None
    return value if isinstance(value, int) and value > 0 else None


def _item_requests(
    subscription_id: int | None, handles: list[int], items: list[_Item], config: OpcUaSourceConfig
) -> ua.CreateMonitoredItemsParameters:
    requests = [
        ua.MonitoredItemCreateRequest(
            ItemToMonitor=ua.ReadValueId(NodeId=item.node_id, AttributeId=ua.AttributeIds.Value),
            MonitoringMode=ua.MonitoringMode.Reporting,
            RequestedParameters=ua.MonitoringParameters(
                ClientHandle=handle,
                SamplingInterval=float(config.publishing_interval_ms),
                Filter=_NO_DEADBAND,  # explicit: a server default deadband would hide counts
                QueueSize=QUEUE_SIZE,
                # On overflow keep the older samples (the newest still replaces the last
                # slot, per spec): the values nearest the previous reading matter most
                # when an order change and a counter reset happen close together.
                DiscardOldest=False,
            ),
        )
        for handle, item in zip(handles, items)
    ]
    return ua.CreateMonitoredItemsParameters(
        SubscriptionId=subscription_id, ItemsToCreate=requests, TimestampsToReturn=ua.TimestampsToReturn.Both
    )


@dataclass(frozen=True, slots=True)
class _Status:
    """What one status code means to the source (``_status``)."""

    quality: Quality
    name: str
    tag_error: bool  # the tag is wrong (mapping or server configuration), see _TAG_ERROR_CODES
    overflow: bool  # the server's queue for the item overflowed (info bits)


_NO_VALUE = ua.DataValue()
_STATUSES: dict[int, _Status] = {}  # status code value → what it means, filled as codes are seen
_STATUSES_KEPT = 4096  # a server sending ever new codes (info bits) does not grow it beyond this


def _status(code: ua.StatusCode | None) -> _Status:
    value = code.value if code is not None else ua.StatusCodes.Good
    known = _STATUSES.get(value)
    if known is None:
        status = code if code is not None else ua.StatusCode()
        known = _Status(_quality(status), status.name, (value & 0xFFFF0000) in _TAG_ERROR_CODES,
                        (value & _OVERFLOW_BITS) == _OVERFLOW_BITS)
        if len(_STATUSES) < _STATUSES_KEPT:
            _STATUSES[value] = known
    return known


def _quality(status: ua.StatusCode) -> Quality:
    if status.is_good():
        return Quality.GOOD
    if status.is_uncertain():
        return Quality.UNCERTAIN
    return Quality.BAD


def _aware(ts: datetime | None) -> datetime | None:
    if ts is None or ts.tzinfo is UTC:  # asyncua decodes timestamps as aware UTC already
        return ts
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)



def without_credentials(endpoint: str) -> str:
    """The endpoint as logs may show it: ``opc.tcp://user:secret@host`` loses the userinfo."""
    parts = urlsplit(endpoint)
    if "@" not in parts.netloc:
        return endpoint
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _explain(exc: Exception) -> tuple[str, str]:
    """(error, hint) for the reconnect log line."""
    if isinstance(exc, (_Lost, ConnectRefused)):
        return str(exc), exc.hint
    return _describe(exc), _hint_for(exc)


_CREDENTIALS_HINT = "check username/password of this source in the mapping"
_OWN_CERTIFICATE_HINT = "the server refuses the gateway's certificate"
_STATUS_HINTS = {
    ua.StatusCodes.BadUserAccessDenied: "the server refused the user: wrong username or password, or the user "
    "may not log in there; " + _CREDENTIALS_HINT,
    ua.StatusCodes.BadIdentityTokenInvalid: "the server does not accept this kind of login (anonymous or "
    "username) on this endpoint; " + _CREDENTIALS_HINT,
    ua.StatusCodes.BadIdentityTokenRejected: "the server rejected the login (a password sent without "
    "encryption, or an unknown user); " + _CREDENTIALS_HINT + ", and use security SignAndEncrypt",
    ua.StatusCodes.BadCertificateUntrusted: "the server does not trust the gateway's certificate yet: trust it "
    "on the server (its rejected list, or copy it into its trusted folder)",
    ua.StatusCodes.BadSecurityChecksFailed: "the server refused the gateway's certificate or signature: trust "
    "the gateway's certificate on the server and check `security` in the mapping",
    ua.StatusCodes.BadCertificateUseNotAllowed: "the server refuses the gateway's certificate for its key usages: "
    "it needs digitalSignature, nonRepudiation, keyEncipherment, dataEncipherment and clientAuth; let the "
    "gateway make its own (remove `certificate:`/`private_key:` from the mapping)",
    ua.StatusCodes.BadCertificateUriInvalid: "the application URI in the gateway's certificate is not the one "
    "the gateway states: `application_uri` in the mapping must be the URI in the certificate",
    ua.StatusCodes.BadCertificateTimeInvalid: "the server finds the gateway's certificate expired or not yet "
    "valid: check the clocks of gateway and server, or make a new certificate (`gateway pki init`)",
    ua.StatusCodes.BadCertificateHostNameInvalid: "the server checks the host name in the gateway's certificate: "
    "make a new certificate on this host (`gateway pki init`)",
    ua.StatusCodes.BadCertificateRevoked: "the server has revoked the gateway's certificate; make a new one and "
    "have it trusted",
    ua.StatusCodes.BadCertificateInvalid: "the server cannot use the gateway's certificate; let the gateway make "
    "its own (remove `certificate:`/`private_key:` from the mapping)",
    ua.StatusCodes.BadSecurityPolicyRejected: "the server refuses this security policy; set `security` in the "
    "mapping to a policy and mode the server offers",
    ua.StatusCodes.BadSecurityModeRejected: "the server refuses this security mode; set `security` in the "
    "mapping to a policy and mode the server offers",
    ua.StatusCodes.BadTooManySessions: "the server's session limit is reached (other clients, or old sessions "
    "that have not timed out yet)",
    ua.StatusCodes.BadTooManySubscriptions: "the server's subscription limit is reached",
    ua.StatusCodes.BadSessionClosed: "the server closed the session (restart or timeout); reconnecting",
}
# Refusals that name the gateway's certificate: its thumbprint goes with the hint.
_OWN_CERTIFICATE_CODES = frozenset({
    ua.StatusCodes.BadCertificateUntrusted, ua.StatusCodes.BadSecurityChecksFailed,
    ua.StatusCodes.BadCertificateUseNotAllowed, ua.StatusCodes.BadCertificateUriInvalid,
    ua.StatusCodes.BadCertificateTimeInvalid, ua.StatusCodes.BadCertificateHostNameInvalid,
    ua.StatusCodes.BadCertificateRevoked, ua.StatusCodes.BadCertificateInvalid,
})
# Refusals of the login (user, password): the user goes with the hint.
CREDENTIALS_CODES = frozenset({
    ua.StatusCodes.BadUserAccessDenied, ua.StatusCodes.BadIdentityTokenInvalid,
    ua.StatusCodes.BadIdentityTokenRejected,
})


def connect_hint(exc: BaseException, config: OpcUaSourceConfig, pki: Pki) -> str:
    """What to do about ``exc``, a failed connect of ``config``: the hint the source logs,
    naming the gateway's certificate (thumbprint, URI) or the user when they are the cause."""
    hint = _hint_for(exc)
    code = exc.code if isinstance(exc, UaStatusCodeError) else None
    if (code in _OWN_CERTIFICATE_CODES or getattr(exc, "own_certificate", False)) and config.secured:
        hint += f" ({_own_certificate_text(config, pki)})"
    elif code in CREDENTIALS_CODES:
        hint += f" (user {config.username!r})" if config.username else " (no username: anonymous)"
    return hint


def _hint_for(exc: BaseException) -> str:
    if isinstance(exc, ConnectRefused):
        return exc.hint
    if isinstance(exc, UaStatusCodeError):
        return _STATUS_HINTS.get(exc.code, "the server refused a request; see error")
    if isinstance(exc, ConnectionRefusedError):
        return "nothing listens at the endpoint: is the OPC UA server running, are host and port right?"
    if isinstance(exc, ConnectionError):
        return "the connection dropped (server restart or network); reconnecting"
    if isinstance(exc, TimeoutError):
        return "no answer in time: check the network path and firewall, or the server is overloaded"
    if isinstance(exc, OSError):
        return "network error: check host name, network path and that the server is running"
    return "unexpected error; the source keeps retrying"
