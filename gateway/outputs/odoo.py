"""Odoo target (JSON-RPC ``/jsonrpc``, ``execute_kw``): a final-operation confirmation becomes
one manufacturing order (``mrp.production``) for its yield, created through ``load()`` under an
external id made from the delivery key, confirmed, given its produced quantity and marked done.

Exactly once by key: Odoo has been seen executing one RPC twice (odoo#65876, #137797), and a
timeout tells nothing, so creation goes through ``load()``, Odoo's import, whose ``id`` column
is an external id (``ir.model.data``): a second load with the same id updates the same record
instead of creating another. Before anything, the adapter looks the external id up: a
production already ``done`` is delivered, one that exists is continued, not created again.

``button_mark_done`` may answer with a wizard action (``mrp.production.backorder``: less was
produced than planned; ``mrp.consumption.warning``: components consumed differ from the BOM;
``mrp.immediate.production``) instead of finishing. Odoo did not finish the order: that is a
refusal, parked with the wizard's name and title, never counted as delivered.

Confirmations of earlier operations carry nothing for Odoo (it consumes an order's components
when the order is marked done) and are delivered without a request. This module never
touches the ledger and never raises for a failure Odoo reports: it answers an ``Outcome``.
"""

from __future__ import annotations

import itertools
import re
from typing import Annotated, Any

import httpx
import structlog
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, SecretStr

from gateway.outputs.base import Delivery, Outcome, target_message
from gateway.outputs.erp_common import PayloadError, credential, read_confirmation, status_outcome, transport_outcome

log = structlog.get_logger(__name__)

MODEL = "mrp.production"


class OdooConfig(BaseModel):
    """``outputs: <name>: odoo: {...}`` in the mapping."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: HttpUrl  # the Odoo server, e.g. https://odoo.example.com
    database: str
    user: str
    # ${ODOO_API_KEY} in the mapping (an API key or the user's password): never logged or shown.
    password: SecretStr
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 30.0
    # The module part of the external ids the adapter creates: <module>.<delivery key>.
    module: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")] = "backflush_gateway"
    products: dict[str, str] = {}  # gateway material -> Odoo product (internal reference or name)


def external_id(module: str, key: str) -> str:
    """``module.name``: ir.model.data names keep to letters, digits and ``_``."""
    return f"{module}.{re.sub(r'[^A-Za-z0-9_]', '_', key)}"


class _RpcError(Exception):
    """Odoo answered with a JSON-RPC error object."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name, self.message = name, message


class _Failed(Exception):
    """An exchange that ended the delivery with ``outcome``."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome


class OdooTarget:
    """Delivers final-operation confirmations as manufacturing orders with external ids."""

    def __init__(self, name: str, config: OdooConfig, *, transport: httpx.AsyncBaseTransport | None = None):
        self.name = name
        self.config = config
        self._client = httpx.AsyncClient(base_url=str(config.url).rstrip("/"), timeout=config.timeout_s,
                                         transport=transport)
        self._password = credential(config.password, f"{name}.password")
        self._uid: int | None = None
        self._ids = itertools.count(1)

    # --- JSON-RPC -------------------------------------------------------------------------------

    async def _call(self, service: str, method: str, *args: Any) -> Any:
        body = {"jsonrpc": "2.0", "method": "call", "id": next(self._ids),
                "params": {"service": service, "method": method, "args": list(args)}}
        where = f"{self.name} (Odoo)"
        try:
            response = await self._client.post("/jsonrpc", json=body)
        except httpx.HTTPError as exc:
            raise _Failed(transport_outcome(exc, where)) from exc
        if (other := status_outcome(response, where, response.text.strip()[:200])) is not None:
            raise _Failed(other)
        if response.status_code >= 400:
            raise _Failed(Outcome.retry(target_message(f"{where} HTTP {response.status_code}: {response.text}")))
        answer = response.json()
        if "error" in answer:
            data = answer["error"].get("data") or {}
            raise _RpcError(data.get("name") or "odoo", data.get("message") or answer["error"].get("message", ""))
        return answer.get("result")

    async def _execute(self, method: str, args: list[Any], model: str = MODEL, **kwargs: Any) -> Any:
        if self._uid is None:
            uid = await self._call("common", "login", self.config.database, self.config.user,
                                   self._password)
            if not uid:
                raise _Failed(Outcome.retry(f"{self.name} (Odoo) refused the login of {self.config.user} "
                                            f"on database {self.config.database}"))
            self._uid = uid
        return await self._call("object", "execute_kw", self.config.database, self._uid,
                                self._password, model, method, args, kwargs)

    def _refused(self, exc: _RpcError, doing: str) -> Outcome:
        if exc.name == "odoo.exceptions.AccessDenied":
            self._uid = None  # log in again next time
            return Outcome.retry(target_message(f"{self.name} (Odoo) {doing}: {exc.name}: {exc.message}"))
        if exc.name.startswith("psycopg2."):  # a serialization failure, a lock timeout: nothing committed
            return Outcome.retry(target_message(f"{self.name} (Odoo) {doing}: {exc.name}: {exc.message}"))
        return Outcome.park(target_message(f"Odoo refused {doing}: {exc.name}: {exc.message}"))

    # --- the production order --------------------------------------------------------------------

    async def _lookup(self, xmlid: str) -> tuple[int, str] | None:
        """(record id, state) of the production behind ``xmlid``, None if there is none."""
        module, name = xmlid.split(".", 1)
        rows = await self._execute("search_read", [[["module", "=", module], ["name", "=", name]]],
                                   model="ir.model.data", fields=["res_id", "model"])
        if not rows:
            return None
        record_id = rows[0]["res_id"]
        read = await self._execute("read", [[record_id], ["state", "name"]])
        return (record_id, read[0]["state"]) if read else None

    async def deliver(self, d: Delivery) -> Outcome:
        if d.what != "confirmation":
            return Outcome.park(f"{self.name}: Odoo gets confirmations only; a {d.what} is posted there by hand")
        try:
            c = read_confirmation(d.payload, order=d.order)
        except PayloadError as exc:
            return Outcome.park(target_message(f"{self.name}: {exc}"))
        receipt = c.receipt
        if receipt is None:
            log.info("odoo_nothing_to_post", target=self.name, key=d.key, operation=c.operation)
            return Outcome.delivered()
        xmlid = external_id(self.config.module, d.key)
        doing = f"creating the production of {xmlid}"
        try:
            found = await self._lookup(xmlid)
            if found is not None and found[1] == "done":
                log.info("odoo_already_done", target=self.name, key=d.key, production=found[0])
                return Outcome.delivered()
            if found is None:
                loaded = await self._execute("load", [
                    ["id", "product_id", "product_qty", "origin"],
                    [[xmlid, self.config.products.get(receipt.material, receipt.material), str(receipt.qty),
                      f"{c.order} {c.id}"]]])
                problems = [m.get("message", "") for m in loaded.get("messages") or () if m.get("type") == "error"]
                if problems or not loaded.get("ids"):
                    return Outcome.park(target_message(f"Odoo refused {doing}: {'; '.join(problems)}"))
                found = (loaded["ids"][0], "draft")
            record_id, state = found
            if state == "draft":
                doing = f"confirming production {record_id} ({xmlid})"
                await self._execute("action_confirm", [[record_id]])
            doing = f"recording {receipt.qty} produced on production {record_id} ({xmlid})"
            await self._execute("write", [[record_id], {"qty_producing": str(receipt.qty)}])
            doing = f"marking production {record_id} ({xmlid}) done"
            answer = await self._execute("button_mark_done", [[record_id]])
        except _Failed as failed:
            return failed.outcome
        except _RpcError as exc:
            return self._refused(exc, doing)
        if isinstance(answer, dict) and answer.get("res_model"):
            return Outcome.park(target_message(
                f"Odoo did not finish production {record_id} ({xmlid}): button_mark_done answered with the wizard "
                f"{answer['res_model']} ({answer.get('name', '')})"))
        return Outcome.delivered()

    async def find(self, d: Delivery) -> bool | None:
        """True when the key's production is done; False when there is none, or it is not done
        yet (sending again continues it: the load is an upsert, the steps after it idempotent)."""
        try:
            found = await self._lookup(external_id(self.config.module, d.key))
        except (_Failed, _RpcError) as exc:
            log.warning("odoo_find_failed", target=self.name, key=d.key, error=str(exc)[:200])
            return None
        return found is not None and found[1] == "done"

    async def close(self) -> None:
        await self._client.aclose()
