"""The webhook output: an HTTP POST per delivery — or per batch of deliveries — with a JSON body,
an ``Idempotency-Key`` and an HMAC signature.

One delivery per request (``batch: 1``, the default): the body is the delivery's payload
(gateway/outputs/outputs.schema.json) with its ``key``; headers ``Idempotency-Key: <key>``,
``X-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes>`` (with a secret),
``X-Outbox-Attempt``. Answers: 2xx delivered; 409 delivered (the receiver already has that
key); 408/425/429/5xx and a refused connection: retry (it surely did not take it); other 4xx:
parked with the receiver's message (a business refusal, sending again will not help); a
timeout or a connection lost after the request went out: unknown.

A batch (``batch: N``): the body is ``{"batch": <batch key>, "deliveries": [<body>, …],
"version": 1}`` (``$defs/batch`` of the schema), each delivery with its own key, an
order's deliveries in posting order; ``Idempotency-Key`` is the batch key (the same for the
same deliveries: ``<output>:batch:<digest of their keys>``), ``X-Outbox-Batch`` the count.
The receiver dedupes each delivery by its key and answers 2xx with one result per delivery
(``$defs/batch_answer``: ``{"results": [{"key", "status", "message"}]}``), each status read
as the single answer above, plus 424 for a delivery it did not act on because an earlier one
of the same order failed (held: sent again behind it, no attempt spent). A 2xx without
results takes the whole batch as delivered; a result missing for a key is unknown. The
whole request failing (refused connection, 5xx, a timeout after sending, another 4xx) is that
outcome for every delivery in it.

``find`` asks ``HEAD <url>/<key>`` per delivery when the receiver offers it (a 200 is there,
404 is not, anything else: cannot tell).

Must never: raise for any of the above, log the secret, or touch the ledger.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import quote

import httpx
import orjson

from gateway.mapping.model import WebhookOutput
from gateway.outputs.base import Delivery, Outcome, target_message

RETRY_STATUSES = {408, 425, 429}
HELD_STATUS = 424  # batch: not acted on, an earlier delivery of the same order failed (Failed Dependency)
BATCH_VERSION = 1


def item_of(d: Delivery) -> dict:
    return {**d.payload, "key": d.key}


def _encode(body: dict) -> bytes:
    """The exact bytes sent and signed: keys sorted, no spaces, UTF-8."""
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def body_of(d: Delivery) -> bytes:
    """A single delivery's body: the payload with the key."""
    return _encode(item_of(d))


def batch_key(output: str, keys: list[str]) -> str:
    """The batch's Idempotency-Key: the same deliveries (in the same order) give the same key."""
    return f"{output}:batch:" + hashlib.sha256("\n".join(keys).encode()).hexdigest()[:32]


def batch_body_of(output: str, ds: list[Delivery]) -> tuple[str, bytes]:
    key = batch_key(output, [d.key for d in ds])
    return key, _encode({"version": BATCH_VERSION, "batch": key, "deliveries": [item_of(d) for d in ds]})


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def answered(status: int, message: str) -> Outcome:
    """The outcome of a receiver's HTTP status for a delivery (the whole request, or one result of a batch)."""
    if 200 <= status < 300 or status == 409:
        return Outcome.delivered()
    text = target_message(f"HTTP {status}: {message}")
    if status == HELD_STATUS:
        return Outcome.held(text)
    if status >= 500 or status in RETRY_STATUSES:
        return Outcome.retry(text)
    return Outcome.park(text)


class WebhookTarget:
    def __init__(self, name: str, cfg: WebhookOutput) -> None:
        self.name = name
        self.url = cfg.url
        self.batch_size = cfg.batch
        # `${NAME}` was expanded from the environment when the mapping was read (gateway.inputfile.read).
        self._secret = cfg.secret.get_secret_value() if cfg.secret else None
        self._headers = dict(cfg.headers)
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(cfg.timeout_s), follow_redirects=False)

    async def _post(self, body: bytes, headers: dict[str, str]) -> httpx.Response | Outcome:
        headers = {**self._headers, "Content-Type": "application/json", **headers}
        if self._secret is not None:
            headers["X-Signature"] = signature(self._secret, body)
        try:
            return await self._client.post(self.url, content=body, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            return Outcome.retry(f"not sent: {type(exc).__name__}: {exc}")
        except httpx.TransportError as exc:  # read timeout, connection lost after sending
            return Outcome.unknown(f"sent, no answer: {type(exc).__name__}: {exc}")

    async def deliver(self, d: Delivery) -> Outcome:
        answer = await self._post(body_of(d), {"Idempotency-Key": d.key, "X-Outbox-Attempt": str(d.attempts + 1)})
        if isinstance(answer, Outcome):
            return answer
        return answered(answer.status_code, answer.text)

    async def deliver_batch(self, ds: list[Delivery]) -> list[Outcome]:
        key, body = batch_body_of(self.name, ds)
        answer = await self._post(body, {"Idempotency-Key": key, "X-Outbox-Batch": str(len(ds)),
                                         "X-Outbox-Attempt": str(max(d.attempts for d in ds) + 1)})
        if isinstance(answer, Outcome):
            return [answer] * len(ds)
        status = answer.status_code
        if not 200 <= status < 300:
            return [answered(status, answer.text)] * len(ds)
        try:
            results = answer.json().get("results") if answer.content else None
        except (ValueError, AttributeError):
            results = None
        if not isinstance(results, list):
            return [Outcome.delivered()] * len(ds)  # a 2xx without results: the batch was taken whole
        by_key = {}
        for r in results:
            if isinstance(r, dict) and isinstance(r.get("key"), str) and isinstance(r.get("status"), int):
                by_key[r["key"]] = answered(r["status"], str(r.get("message", "")))
        missing = Outcome.unknown(target_message(f"HTTP {status}, but no result for this key in the answer"))
        return [by_key.get(d.key, missing) for d in ds]

    async def find(self, d: Delivery) -> bool | None:
        try:
            answer = await self._client.head(f"{self.url.rstrip('/')}/{quote(d.key, safe='')}")
        except httpx.TransportError:
            return None
        if answer.status_code == 200:
            return True
        if answer.status_code == 404:
            return False
        return None

    async def close(self) -> None:
        await self._client.aclose()
