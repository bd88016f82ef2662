"""ERPNext (Frappe REST) target: a confirmation becomes one submitted Stock Entry whose
``name`` is the delivery key.

Exactly once by key: Frappe keeps a client-supplied ``name`` when the doctype's naming is
"Set by user" (autoname Prompt; Customize Form → Stock Entry → Naming Rule) and answers a
second creation with HTTP 409 ``DuplicateEntryError`` — so a resend after an unknown outcome
cannot post twice, and a conflict on our own key means an earlier attempt went through.
Under a naming series Frappe silently replaces the name (``frappe.model.naming.set_new_name``);
the adapter notices (the answer's name is not the key) and parks the delivery, because from
then on a resend *could* post twice.

Stock Entry purpose ``Manufacture`` (component issues + receipt of the yield) when the
confirmation receives the product, ``Material Consumption for Manufacture`` when it only
issues components (an operation before the last). Created with ``docstatus: 1``: inserted
and submitted in one request, one database transaction.

This module never touches the ledger and never raises for a failure the ERP reports: it
answers an ``Outcome`` (see gateway/outputs/base.py).
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import structlog
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, SecretStr

from gateway.outputs.base import Delivery, Outcome, target_message
from gateway.outputs.erp_common import (ConfirmationMessage, PayloadError, credential, read_confirmation,
                                        status_outcome, transport_outcome)

log = structlog.get_logger(__name__)

DOCTYPE = "Stock Entry"


class ErpNextConfig(BaseModel):
    """``outputs: <name>: erpnext: {...}`` in the mapping."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: HttpUrl  # the site, e.g. https://erp.example.com
    api_key: str
    # ${ERPNEXT_API_SECRET} in the mapping: never in a repr, a log line or an error message.
    api_secret: SecretStr
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 30.0
    # The gateway's order number is the ERPNext Work Order's name (null: entries without one).
    work_order: bool = True
    company: str | None = None
    # Names on the ERPNext side where they differ from the gateway's master data.
    items: dict[str, str] = {}  # material -> Item code
    warehouses: dict[str, str] = {}  # location -> Warehouse


def _num(value: Any) -> str:
    # Frappe casts Float fields from text (flt()); text keeps the Decimal exact on the wire.
    return str(abs(value))


def stock_entry(c: ConfirmationMessage, name: str, config: ErpNextConfig) -> dict[str, Any] | None:
    """The Stock Entry for one confirmation, or None when it moves no stock."""
    rows: list[dict[str, Any]] = []
    for m in c.movements:
        if m.kind not in ("261", "101"):
            continue  # reversals and adjustments are deliveries of their own
        row: dict[str, Any] = {"item_code": config.items.get(m.material, m.material), "qty": _num(m.qty)}
        if m.uom:
            row["uom"] = m.uom
        warehouse = config.warehouses.get(m.location, m.location)
        if m.kind == "101":
            row.update(t_warehouse=warehouse, is_finished_item=1)
        else:
            row["s_warehouse"] = warehouse
        if m.lot:
            row["batch_no"] = m.lot
        rows.append(row)
    if not rows:
        return None
    receipt = c.receipt
    body: dict[str, Any] = {
        "doctype": DOCTYPE,
        "name": name,
        "stock_entry_type": "Manufacture" if receipt else "Material Consumption for Manufacture",
        "purpose": "Manufacture" if receipt else "Material Consumption for Manufacture",
        "fg_completed_qty": _num(receipt.qty if receipt else c.yield_qty + c.scrap_qty),
        "remarks": f"Backflush Gateway confirmation {c.id}: machine {c.machine}, operation {c.operation}, "
                   f"yield {c.yield_qty} scrap {c.scrap_qty} {c.uom}",
        "items": rows,
        "docstatus": 1,
    }
    if config.work_order:
        body["work_order"] = c.order
    if config.company:
        body["company"] = config.company
    return body


def frappe_message(response: httpx.Response) -> str:
    """The user-facing text of a Frappe error answer (``_server_messages``), else its exception."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    messages: list[str] = []
    try:
        for item in json.loads(body.get("_server_messages") or "[]"):
            text = json.loads(item).get("message", "") if isinstance(item, str) else str(item)
            messages.append(re.sub(r"<[^>]+>", "", text))  # Frappe links item names in HTML
    except (ValueError, AttributeError):
        pass
    exc_type = body.get("exc_type") or ""
    text = "; ".join(m for m in messages if m) or body.get("exception") or body.get("message") or response.text
    return f"{exc_type}: {text}" if exc_type else str(text)


class ErpNextTarget:
    """Delivers confirmations as Stock Entries named by their delivery key."""

    def __init__(self, name: str, config: ErpNextConfig, *, transport: httpx.AsyncBaseTransport | None = None):
        self.name = name
        self.config = config
        secret = credential(config.api_secret, f"{name}.api_secret")
        self._client = httpx.AsyncClient(
            base_url=str(config.url).rstrip("/"), timeout=config.timeout_s, transport=transport,
            headers={"Authorization": f"token {config.api_key}:{secret}", "Accept": "application/json"})

    def document_name(self, d: Delivery) -> str:
        return d.key  # Frappe names hold 140 characters and any of ours ('/' is never in a key)

    async def deliver(self, d: Delivery) -> Outcome:
        if d.what != "confirmation":
            return Outcome.park(f"{self.name}: ERPNext gets confirmations only; a {d.what} is posted there by hand")
        try:
            body = stock_entry(read_confirmation(d.payload, order=d.order), self.document_name(d), self.config)
        except PayloadError as exc:
            return Outcome.park(target_message(f"{self.name}: {exc}"))
        if body is None:
            log.info("erpnext_nothing_to_post", target=self.name, key=d.key)
            return Outcome.delivered()
        try:
            response = await self._client.post(f"/api/resource/{quote(DOCTYPE)}", json=body)
        except httpx.HTTPError as exc:
            return transport_outcome(exc, f"{self.name} (ERPNext)")
        message = frappe_message(response) if response.status_code >= 400 else ""
        if (other := status_outcome(response, f"{self.name} (ERPNext)", message)) is not None:
            return other
        if response.status_code == 409 and "DuplicateEntryError" in message:
            # Our key is already a Stock Entry: an earlier attempt created it.
            log.info("erpnext_already_there", target=self.name, key=d.key)
            return Outcome.delivered()
        if response.status_code >= 400:
            return Outcome.park(target_message(f"ERPNext refused Stock Entry {body['name']} "
                                               f"(HTTP {response.status_code}): {message}"))
        created = (response.json().get("data") or {}).get("name")
        if created != body["name"]:
            return Outcome.park(target_message(
                f"ERPNext named the Stock Entry {created}, not {body['name']}: its naming ignores the client's name, "
                f"so a resend could post twice; set Stock Entry's naming rule to 'Set by user' (Customize Form), "
                f"then `gateway outbox skip` this delivery (it was posted as {created})"))
        return Outcome.delivered()

    async def find(self, d: Delivery) -> bool | None:
        try:
            response = await self._client.get(f"/api/resource/{quote(DOCTYPE)}/{quote(self.document_name(d), safe='')}")
        except httpx.HTTPError as exc:
            log.warning("erpnext_find_failed", target=self.name, key=d.key, error=type(exc).__name__)
            return None
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        log.warning("erpnext_find_failed", target=self.name, key=d.key, status=response.status_code)
        return None

    async def close(self) -> None:
        await self._client.aclose()
