"""SAP S/4HANA target: OData v2 ``API_PROD_ORDER_CONFIRMATION_2_SRV``. A confirmation becomes
one ``ProdnOrdConf2`` entity (yield, scrap, activities) with its goods movements as
``to_ProdnOrdConfMatlDocItm`` in the same request (deep insert).

Exactly once by key, without an idempotency key: SAP has none, so the delivery key (or a
digest of it: the field holds 40 characters) goes into ``ConfirmationText``, which the
confirmation keeps, and ``find`` asks for the order's confirmations with that text. Every
attempt after the first looks before it sends; a timeout after sending is ``unknown``.

Modifying requests need a CSRF token: fetched with ``GET <service>/`` and ``x-csrf-token:
Fetch``, bound to the session cookie the same answer sets (the client keeps it); a 403
"CSRF token validation failed" (the session expired) fetches a new one and sends again —
the 403 came before SAP did anything.

Failed goods movements: SAP saves the confirmation and keeps the movements it could not post
for transaction COGI, saying so in the ``sap-message`` header. They are not posted: the
delivery is parked with SAP's messages and the confirmation's number, never counted as
delivered. After they are cleared in COGI, ``gateway outbox retry`` finds the confirmation
and marks the delivery delivered without sending it again.

This module never touches the ledger and never raises for a failure SAP reports: it answers
an ``Outcome``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

import httpx
import structlog
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, HttpUrl, SecretStr

from gateway.outputs.base import Delivery, Outcome, target_message
from gateway.outputs.erp_common import (ConfirmationMessage, PayloadError, credential, read_confirmation,
                                        short_key, status_outcome, transport_outcome)

log = structlog.get_logger(__name__)

SERVICE = "/sap/opu/odata/sap/API_PROD_ORDER_CONFIRMATION_2_SRV"
TEXT_LENGTH = 40  # ConfirmationText (LTXA1)
# Standard value keys of a typical work center's standard values: 1 setup, 2 machine, 3 labor.
DEFAULT_ACTIVITIES = {"setup": 1, "machine": 2, "labor": 3}


def _sap_client(text: str) -> str:
    if not (len(text) == 3 and text.isdigit()):
        raise ValueError(f"a SAP client is three digits, such as 100; got '{text}'")
    return text


class SapODataConfig(BaseModel):
    """``outputs: <name>: sap_odata: {...}`` in the mapping."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: HttpUrl  # the S/4HANA host, e.g. https://s4.example.com:44300
    service: str = SERVICE
    sap_client: Annotated[str, AfterValidator(_sap_client)] | None = None
    user: str
    # ${SAP_PASSWORD} in the mapping: never logged or shown.
    password: SecretStr
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 30.0
    plant: str | None = None
    storage_locations: dict[str, str] = {}  # gateway location -> storage location
    materials: dict[str, str] = {}  # gateway material -> SAP material
    # Which OpConfirmedWorkQuantity<n> an activity's hours go to (overhead is SAP's costing, not confirmed).
    activities: dict[str, Annotated[int, Field(ge=1, le=6)]] = DEFAULT_ACTIVITIES


def _odata_date(iso: str) -> str | None:
    try:
        at = datetime.fromisoformat(iso)
    except ValueError:
        return None
    midnight = datetime(at.year, at.month, at.day)
    return f"/Date({int((midnight - datetime(1970, 1, 1)).total_seconds()) * 1000})/"


def confirmation_entity(c: ConfirmationMessage, text: str, config: SapODataConfig) -> dict[str, Any]:
    """The ``ProdnOrdConf2`` deep insert for one confirmation (Edm.Decimal values as text)."""
    body: dict[str, Any] = {
        "OrderID": c.order,
        "OrderOperation": c.operation,
        "ConfirmationUnit": c.uom,
        "ConfirmationYieldQuantity": str(c.yield_qty),
        "ConfirmationScrapQuantity": str(c.scrap_qty),
        "ConfirmationText": text,
    }
    if (posting := _odata_date(c.posted_at)) is not None:
        body["PostingDate"] = posting
    hours: dict[int, Any] = {}
    for a in c.activities:
        if (slot := config.activities.get(a.activity)) is not None:
            hours[slot] = hours.get(slot, 0) + a.hours
    for slot, total in sorted(hours.items()):
        body[f"OpConfirmedWorkQuantity{slot}"] = str(total)
        body[f"OpWorkQuantityUnit{slot}"] = "H"
    items = []
    for m in c.movements:
        if m.kind not in ("261", "101"):
            continue  # reversals and adjustments are deliveries of their own
        item = {"Material": config.materials.get(m.material, m.material), "GoodsMovementType": m.kind,
                "StorageLocation": config.storage_locations.get(m.location, m.location),
                "QuantityInEntryUnit": str(abs(m.qty)), "EntryUnit": m.uom, "OrderID": c.order}
        if config.plant:
            item["Plant"] = config.plant
        if m.lot:
            item["Batch"] = m.lot
        items.append(item)
    if items:
        body["to_ProdnOrdConfMatlDocItm"] = {"results": items}
    return body


def confirmation_text(key: str) -> str:
    """What ``ConfirmationText`` holds for a delivery key (the key, or its digest: 40 characters)."""
    return short_key(key, TEXT_LENGTH)


def odata_error(response: httpx.Response) -> str:
    """SAP's message of an OData v2 error answer: the main text and each detail not repeating it."""
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return response.text.strip()[:300] or response.reason_phrase
    main = error.get("message", {})
    text = main.get("value", "") if isinstance(main, dict) else str(main)
    parts = [f"{error.get('code', '')}: {text}".strip(": ")]
    for detail in (error.get("innererror") or {}).get("errordetails") or ():
        if detail.get("message") and detail.get("message") != text:
            parts.append(f"{detail.get('code', '')}: {detail['message']}".strip(": "))
    return "; ".join(parts)


def failed_movements(header: str | None) -> str | None:
    """SAP's messages when ``sap-message`` reports goods movements not posted (COGI), else None."""
    if not header:
        return None
    try:
        message = json.loads(header)
    except ValueError:
        return None
    entries = [message, *(message.get("details") or ())]
    errors = [e for e in entries if e.get("severity") == "error"]
    if not errors and "COGI" not in json.dumps(message):
        return None
    return "; ".join(f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in entries)


class SapODataTarget:
    """Delivers confirmations to S/4HANA's production order confirmation API."""

    def __init__(self, name: str, config: SapODataConfig, *, transport: httpx.AsyncBaseTransport | None = None):
        self.name = name
        self.config = config
        params = {"sap-client": config.sap_client} if config.sap_client else {}
        self._client = httpx.AsyncClient(
            base_url=str(config.url).rstrip("/") + config.service.rstrip("/"), timeout=config.timeout_s,
            transport=transport, params=params,
            auth=(config.user, credential(config.password, f"{name}.password")),
            headers={"Accept": "application/json"})
        self._token: str | None = None
        self.where = f"{name} (SAP)"

    async def _fetch_token(self) -> str:
        try:
            response = await self._client.get("/", headers={"x-csrf-token": "Fetch"})
        except httpx.HTTPError as exc:
            raise _NoToken(f"{type(exc).__name__}: {exc}") from exc
        token = response.headers.get("x-csrf-token")
        if response.status_code != 200 or not token:
            raise _NoToken(f"HTTP {response.status_code}: {response.text.strip()[:200]}")
        self._token = token
        return token

    async def deliver(self, d: Delivery) -> Outcome:
        if d.what != "confirmation":
            return Outcome.park(f"{self.name}: SAP gets confirmations only; a {d.what} is posted there by hand")
        try:
            c = read_confirmation(d.payload, order=d.order)
        except PayloadError as exc:
            return Outcome.park(target_message(f"{self.name}: {exc}"))
        if d.attempts > 0:
            # No idempotency key: an earlier attempt may have been saved (a crash before its
            # outcome was recorded, a 5xx after the commit). Look before sending again.
            there = await self.find(d)
            if there is True:
                log.info("sap_already_there", target=self.name, key=d.key)
                return Outcome.delivered()
            if there is None:
                return Outcome.unknown(f"{self.where}: could not look for an earlier attempt; not sent")
        body = confirmation_entity(c, confirmation_text(d.key), self.config)
        try:
            response = await self._post(body)
        except _NoToken as exc:
            # Nothing was posted yet: whatever the reason, a later attempt may succeed.
            return Outcome.retry(target_message(f"{self.where}: no CSRF token: {exc}"))
        except httpx.HTTPError as exc:
            return transport_outcome(exc, self.where)
        if response.status_code == 201:
            saved = response.json().get("d", {})
            number = f"{saved.get('ConfirmationGroup', '?')}/{saved.get('ConfirmationCount', '?')}"
            if (failed := failed_movements(response.headers.get("sap-message"))) is not None:
                return Outcome.park(target_message(
                    f"SAP saved confirmation {number} of order {c.order}, but its goods movements were not posted "
                    f"(COGI): {failed}"))
            log.info("sap_confirmed", target=self.name, key=d.key, confirmation=number)
            return Outcome.delivered()
        message = odata_error(response)
        if (other := status_outcome(response, self.where, message)) is not None:
            return other
        return Outcome.park(target_message(f"SAP refused the confirmation of order {c.order} "
                                           f"(HTTP {response.status_code}): {message}"))

    async def _post(self, body: dict[str, Any]) -> httpx.Response:
        token = self._token or await self._fetch_token()
        response = await self._client.post("/ProdnOrdConf2", json=body, headers={"x-csrf-token": token})
        if response.status_code == 403 and (response.headers.get("x-csrf-token", "").lower() == "required"
                                             or "CSRF token validation failed" in response.text):
            log.info("sap_csrf_refetch", target=self.name)
            token = await self._fetch_token()
            response = await self._client.post("/ProdnOrdConf2", json=body, headers={"x-csrf-token": token})
        return response

    async def find(self, d: Delivery) -> bool | None:
        text = confirmation_text(d.key).replace("'", "''")
        order = str(d.order or d.payload.get("order") or "").replace("'", "''")
        try:
            response = await self._client.get("/ProdnOrdConf2", params={
                "$filter": f"OrderID eq '{order}' and ConfirmationText eq '{text}'",
                "$select": "ConfirmationGroup,ConfirmationCount", "$format": "json"})
        except httpx.HTTPError as exc:
            log.warning("sap_find_failed", target=self.name, key=d.key, error=type(exc).__name__)
            return None
        if response.status_code != 200:
            log.warning("sap_find_failed", target=self.name, key=d.key, status=response.status_code)
            return None
        return bool(response.json().get("d", {}).get("results"))

    async def close(self) -> None:
        await self._client.aclose()


class _NoToken(Exception):
    """The CSRF token fetch failed (before anything was posted)."""
