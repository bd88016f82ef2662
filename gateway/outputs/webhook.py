"""The webhook output: one HTTP POST per delivery, JSON body, ``Idempotency-Key`` and HMAC signature.

The body is the delivery's payload (gateway/outputs/outputs.schema.json) with its ``key``; headers:
``Idempotency-Key: <key>``, ``X-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes>``
(with a secret), ``X-Outbox-Attempt``. The receiver dedupes by the key, so a resend is
harmless; ``find`` asks ``HEAD <url>/<key>`` when the receiver offers it (a 200 is there,
404 is not, anything else: cannot tell).

Answers: 2xx delivered; 409 delivered (the receiver already has that key); 408/425/429/5xx
and a refused connection: retry (it surely did not take it); other 4xx: parked with the
receiver's message (a business refusal, sending again will not help); a timeout or a
connection lost after the request went out: unknown.

Must never: raise for any of the above, log the secret, or touch the ledger.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from urllib.parse import quote

import httpx

from gateway.mapping.model import WebhookOutput
from gateway.outputs.base import Delivery, Outcome, target_message

RETRY_STATUSES = {408, 425, 429}


def body_of(d: Delivery) -> bytes:
    """The exact bytes sent and signed: the payload with the key, keys sorted, no spaces."""
    return json.dumps({**d.payload, "key": d.key}, sort_keys=True, separators=(",", ":")).encode()


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookTarget:
    def __init__(self, name: str, cfg: WebhookOutput) -> None:
        self.name = name
        self.url = cfg.url
        # `${NAME}` was expanded from the environment when the mapping was read (gateway.inputfile.read).
        self._secret = cfg.secret.get_secret_value() if cfg.secret else None
        self._headers = dict(cfg.headers)
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(cfg.timeout_s), follow_redirects=False)

    async def deliver(self, d: Delivery) -> Outcome:
        body = body_of(d)
        headers = {**self._headers, "Content-Type": "application/json", "Idempotency-Key": d.key,
                   "X-Outbox-Attempt": str(d.attempts + 1)}
        if self._secret is not None:
            headers["X-Signature"] = signature(self._secret, body)
        try:
            answer = await self._client.post(self.url, content=body, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            return Outcome.retry(f"not sent: {type(exc).__name__}: {exc}")
        except httpx.TransportError as exc:  # read timeout, connection lost after sending
            return Outcome.unknown(f"sent, no answer: {type(exc).__name__}: {exc}")
        status = answer.status_code
        if 200 <= status < 300 or status == 409:
            return Outcome.delivered()
        text = target_message(f"HTTP {status}: {answer.text}")
        if status >= 500 or status in RETRY_STATUSES:
            return Outcome.retry(text)
        return Outcome.park(text)

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
