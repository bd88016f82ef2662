"""Stand-in ERP servers for the adapters' tests: real HTTP servers on real sockets (Starlette
served by uvicorn on the test's loop) that answer the way the ERPs' documentation says.

* ``ErpNextStandIn`` — Frappe REST: ``token key:secret`` auth; ``POST /api/resource/<DocType>``
  keeps the client's ``name`` when the doctype's naming is "Set by user" (Prompt) and ignores
  it under a naming series (as Frappe's ``set_new_name`` does); an existing name is HTTP 409
  ``DuplicateEntryError``; validation failures are HTTP 417 with ``_server_messages``.
* ``OdooStandIn`` — ``/jsonrpc`` ``call``: ``common.login``, ``object.execute_kw`` with
  ``load`` (external ids in ``ir.model.data``: a second load of the same id updates),
  ``read``, ``write``, ``action_confirm``, ``button_mark_done`` (done, or a wizard action),
  errors as JSON-RPC ``error`` objects with HTTP 200; it can execute one call twice
  (odoo#65876, #137797).
* ``SapStandIn`` — OData v2 ``API_PROD_ORDER_CONFIRMATION_2_SRV``: basic auth; a CSRF token
  fetched with ``x-csrf-token: Fetch`` and bound to the session cookie; a POST without a
  valid one is 403 ``CSRF token validation failed``; ``ProdnOrdConf2`` with a deep insert of
  ``to_ProdnOrdConfMatlDocItm``; ``$filter`` on ``OrderID`` and ``ConfirmationText``; failed
  goods movements saved as COGI entries with a ``sap-message`` header saying so.

Each counts its *effects* per key (a document created, a production order marked done, a
confirmation saved) and takes faults on command for its next requests of one operation:
``down`` (503, nothing done), ``error`` (500, nothing done), ``slow`` (answers late, done),
``hang`` (commits, then never answers in time), ``timeout504`` (commits, then a proxy's 504),
and each ERP's own business refusals.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.support import free_port


@dataclass
class Fault:
    kind: str
    detail: dict[str, Any] = field(default_factory=dict)


class StandIn:
    """A real HTTP server on 127.0.0.1 for the duration of ``async with``."""

    slow_s = 0.3  # "slow": later than usual, sooner than the adapters' timeouts in the tests
    hang_s = 30.0  # "hang": later than any adapter waits

    def __init__(self) -> None:
        self.port = free_port()
        self.effects: Counter[str] = Counter()  # key -> times the ERP's state changed for it
        self.calls: Counter[str] = Counter()  # operation -> requests received
        self._faults: dict[str, deque[Fault]] = defaultdict(deque)
        self._closing = asyncio.Event()
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def routes(self) -> list[Route]:
        raise NotImplementedError

    def fail(self, op: str, kind: str, times: int = 1, **detail: Any) -> None:
        """The next ``times`` requests of operation ``op`` meet fault ``kind``."""
        for _ in range(times):
            self._faults[op].append(Fault(kind, detail))

    def _take(self, op: str) -> Fault | None:
        self.calls[op] += 1
        return self._faults[op].popleft() if self._faults[op] else None

    async def _before(self, fault: Fault | None) -> Response | None:
        """Faults that strike before the ERP does anything."""
        if fault is None:
            return None
        if fault.kind == "down":
            return PlainTextResponse("Service Unavailable", status_code=503)
        if fault.kind == "error":
            return PlainTextResponse("Internal Server Error", status_code=500)
        if fault.kind == "slow":
            await asyncio.sleep(self.slow_s)
        return None

    async def _after(self, fault: Fault | None, response: Response) -> Response:
        """Faults that strike after the ERP committed: the client never hears of it."""
        if fault is not None and fault.kind == "hang":
            try:
                await asyncio.wait_for(self._closing.wait(), self.hang_s)
            except TimeoutError:
                pass
        if fault is not None and fault.kind == "timeout504":
            return PlainTextResponse("Gateway Time-out", status_code=504)
        return response

    async def __aenter__(self) -> StandIn:
        config = uvicorn.Config(Starlette(routes=self.routes()), host="127.0.0.1", port=self.port,
                                log_level="warning", lifespan="off", timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        for _ in range(500):
            if self._server.started:
                return self
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        raise RuntimeError(f"stand-in did not start on port {self.port}")

    async def __aexit__(self, *exc: object) -> None:
        self._closing.set()
        assert self._server is not None and self._task is not None
        self._server.should_exit = True
        await self._task


# --- ERPNext / Frappe ------------------------------------------------------------------------


def _frappe_error(status: int, exc_type: str, message: str, exception: str = "") -> JSONResponse:
    # Frappe's error body: the exception's class in exc_type, the user-facing messages in
    # _server_messages (a JSON list of JSON-encoded {"message": …} objects).
    messages = json.dumps([json.dumps({"message": message, "title": "Message", "indicator": "red"})])
    return JSONResponse({"exc_type": exc_type, "exception": exception or f"frappe.exceptions.{exc_type}: {message}",
                         "_server_messages": messages}, status_code=status)


class ErpNextStandIn(StandIn):
    def __init__(self, *, api_key: str = "k1", api_secret: str = "s1", naming: str = "prompt") -> None:
        super().__init__()
        self.token = f"token {api_key}:{api_secret}"
        self.naming = naming  # "prompt": the client's name is kept; "naming_series": it is ignored
        self.docs: dict[tuple[str, str], dict[str, Any]] = {}
        self._series = 0

    def routes(self) -> list[Route]:
        return [Route("/api/resource/{doctype}", self._create, methods=["POST"]),
                Route("/api/resource/{doctype}/{name}", self._get, methods=["GET"])]

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == self.token

    async def _create(self, request: Request) -> Response:
        if not self._authorized(request):
            return _frappe_error(401, "AuthenticationError", "Invalid API key or secret")
        fault = self._take("create")
        if (early := await self._before(fault)) is not None:
            return early
        doctype = request.path_params["doctype"]
        body = await request.json()
        if fault is not None and fault.kind == "refuse":
            return _frappe_error(417, fault.detail.get("exc_type", "ValidationError"), fault.detail["message"])
        if self.naming == "prompt":
            name = body.get("name")
            if not name:
                return _frappe_error(417, "ValidationError", "Name not set via prompt")
        else:
            self._series += 1
            name = f"MAT-STE-2026-{self._series:05d}"
        if (doctype, name) in self.docs:
            return _frappe_error(
                409, "DuplicateEntryError", f"{doctype} {name} already exists",
                f"frappe.exceptions.DuplicateEntryError: ('{doctype}', '{name}', IntegrityError(1062, "
                f"\"Duplicate entry '{name}' for key 'PRIMARY'\"))")
        doc = {**body, "name": name, "doctype": doctype, "docstatus": int(body.get("docstatus", 0))}
        self.docs[(doctype, name)] = doc
        self.effects[name] += 1
        return await self._after(fault, JSONResponse({"data": doc}))

    async def _get(self, request: Request) -> Response:
        if not self._authorized(request):
            return _frappe_error(401, "AuthenticationError", "Invalid API key or secret")
        fault = self._take("get")
        if (early := await self._before(fault)) is not None:
            return early
        doctype, name = request.path_params["doctype"], request.path_params["name"]
        doc = self.docs.get((doctype, name))
        if doc is None:
            return _frappe_error(404, "DoesNotExistError", f"{doctype} {name} not found")
        return JSONResponse({"data": doc})


# --- Odoo ------------------------------------------------------------------------------------


class OdooStandIn(StandIn):
    """One database, one user; ``mrp.production`` records and their external ids."""

    WIZARDS = {
        "backorder": {"type": "ir.actions.act_window", "res_model": "mrp.production.backorder",
                      "name": "You produced less than initial demand", "view_mode": "form", "target": "new"},
        "consumption": {"type": "ir.actions.act_window", "res_model": "mrp.consumption.warning",
                        "name": "Consumption Warning", "view_mode": "form", "target": "new"},
    }

    def __init__(self, *, db: str = "plant", login: str = "gateway", password: str = "odoo-pw",
                 products: tuple[str, ...] = ("FG-100",)) -> None:
        super().__init__()
        self.db, self.login, self.password, self.uid = db, login, password, 7
        self.products = set(products)
        self.productions: dict[int, dict[str, Any]] = {}
        self.xmlids: dict[str, int] = {}  # "module.name" -> mrp.production id (ir.model.data)
        self.done: Counter[str] = Counter()  # external id -> times its production was marked done
        self._next_id = 100

    def routes(self) -> list[Route]:
        return [Route("/jsonrpc", self._jsonrpc, methods=["POST"])]

    def _xmlid_of(self, record_id: int) -> str:
        return next((x for x, i in self.xmlids.items() if i == record_id), f"__export__.{record_id}")

    async def _jsonrpc(self, request: Request) -> Response:
        body = await request.json()
        params, rpc_id = body.get("params", {}), body.get("id")
        service, method, args = params.get("service"), params.get("method"), params.get("args", [])
        if service == "common" and method == "login":
            ok = args[:3] == [self.db, self.login, self.password]
            return JSONResponse({"jsonrpc": "2.0", "id": rpc_id, "result": self.uid if ok else False})
        if service != "object" or method != "execute_kw":
            return self._error(rpc_id, "odoo.exceptions.UserError", f"unknown {service}.{method}")
        db, uid, password, model, kw_method, kw_args = args[:6]
        kwargs = args[6] if len(args) > 6 else {}
        if (db, uid, password) != (self.db, self.uid, self.password):
            return self._error(rpc_id, "odoo.exceptions.AccessDenied", "Access Denied")
        op = f"{model}.{kw_method}"
        fault = self._take(op)
        if (early := await self._before(fault)) is not None:
            return early
        if fault is not None and fault.kind == "refuse":
            return self._error(rpc_id, fault.detail.get("name", "odoo.exceptions.UserError"), fault.detail["message"])
        try:
            result = self._execute(model, kw_method, kw_args, kwargs, fault)
            if fault is not None and fault.kind == "twice":  # the same RPC executed again (odoo#65876)
                result = self._execute(model, kw_method, kw_args, kwargs, fault)
        except _OdooError as exc:
            return self._error(rpc_id, exc.name, exc.message)
        return await self._after(fault, JSONResponse({"jsonrpc": "2.0", "id": rpc_id, "result": result}))

    def _error(self, rpc_id: Any, name: str, message: str) -> JSONResponse:
        # Odoo answers HTTP 200 with a JSON-RPC error object; data.message is the user's text.
        return JSONResponse({"jsonrpc": "2.0", "id": rpc_id, "error": {
            "code": 200, "message": "Odoo Server Error",
            "data": {"name": name, "debug": f"Traceback (most recent call last):\n{name}: {message}",
                     "message": message, "arguments": [message], "context": {}}}})

    def _execute(self, model: str, method: str, args: list, kwargs: dict, fault: Fault | None) -> Any:
        if model == "ir.model.data" and method == "search_read":
            wanted = {c[0]: c[2] for c in args[0]}
            xmlid = f"{wanted.get('module')}.{wanted.get('name')}"
            if xmlid not in self.xmlids:
                return []
            return [{"id": 1, "module": wanted["module"], "name": wanted["name"], "model": "mrp.production",
                     "res_id": self.xmlids[xmlid]}]
        if model != "mrp.production":
            raise _OdooError("odoo.exceptions.UserError", f"model {model} not in this stand-in")
        if method == "load":
            return self._load(args[0], args[1])
        ids = args[0]
        missing = [i for i in ids if i not in self.productions]
        if missing:
            raise _OdooError("odoo.exceptions.MissingError", f"Record does not exist or has been deleted. "
                                                              f"(Record: mrp.production({missing[0]},))")
        records = [self.productions[i] for i in ids]
        if method == "read":
            fields = args[1] if len(args) > 1 else kwargs.get("fields") or list(records[0])
            return [{"id": r["id"], **{f: r.get(f) for f in fields}} for r in records]
        if method == "write":
            for r in records:
                r.update(args[1])
            return True
        if method == "action_confirm":
            for r in records:
                if r["state"] == "draft":
                    r["state"] = "confirmed"
            return True
        if method == "button_mark_done":
            if fault is not None and fault.kind == "wizard":
                return {**self.WIZARDS[fault.detail["wizard"]], "context": {"default_mrp_production_ids": ids}}
            for r in records:
                if r["state"] == "done":
                    continue  # Odoo posts a done order's moves once: a second call changes nothing
                if r["state"] == "draft":
                    raise _OdooError("odoo.exceptions.UserError", "You must confirm the order first")
                r["state"] = "done"
                self.done[self._xmlid_of(r["id"])] += 1
            return True
        raise _OdooError("odoo.exceptions.UserError", f"mrp.production.{method} not in this stand-in")

    def _load(self, fields: list[str], rows: list[list[Any]]) -> dict[str, Any]:
        ids: list[int] = []
        for n, row in enumerate(rows):
            values = dict(zip(fields, row, strict=True))
            product = values.get("product_id")
            if product not in self.products:
                return {"ids": False, "messages": [{
                    "type": "error", "record": n, "field": "product_id", "rows": {"from": n, "to": n},
                    "message": f"No matching record found for name '{product}' in field 'Product'"}]}
            xmlid = values.pop("id")
            if "." not in xmlid:
                xmlid = f"__import__.{xmlid}"
            record_id = self.xmlids.get(xmlid)
            if record_id is None:  # create, and remember the external id
                record_id = self._next_id
                self._next_id += 1
                self.productions[record_id] = {"id": record_id, "name": f"WH/MO/{record_id:05d}",
                                               "state": "draft", "qty_producing": 0}
                self.xmlids[xmlid] = record_id
                self.effects[xmlid] += 1
            self.productions[record_id].update(values)  # an upsert: the same id updates
            ids.append(record_id)
        return {"ids": ids, "messages": []}


class _OdooError(Exception):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name, self.message = name, message


# --- SAP S/4HANA OData v2 ---------------------------------------------------------------------

SAP_SERVICE = "/sap/opu/odata/sap/API_PROD_ORDER_CONFIRMATION_2_SRV"


class SapStandIn(StandIn):
    def __init__(self, *, user: str = "GATEWAY", password: str = "sap-pw",
                 orders: tuple[str, ...] = ("1000123",)) -> None:
        super().__init__()
        self.basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.orders = set(orders)
        self.sessions: dict[str, str] = {}  # session cookie -> its CSRF token
        self.confirmations: list[dict[str, Any]] = []
        self.cogi: list[dict[str, Any]] = []  # goods movements that failed (transaction COGI)
        self.token_fetches = 0

    def routes(self) -> list[Route]:
        return [Route(f"{SAP_SERVICE}/", self._root, methods=["GET"]),
                Route(f"{SAP_SERVICE}/ProdnOrdConf2", self._confirmations, methods=["GET", "POST"])]

    def expire_tokens(self) -> None:
        """Sessions time out on the SAP side: every token fetched so far is no longer valid."""
        self.sessions.clear()

    def _odata_error(self, status: int, code: str, message: str) -> JSONResponse:
        return JSONResponse({"error": {"code": code, "message": {"lang": "en", "value": message},
                                       "innererror": {"errordetails": [{"code": code, "message": message,
                                                                        "severity": "error", "target": ""}]}}},
                            status_code=status)

    async def _root(self, request: Request) -> Response:
        if request.headers.get("authorization") != self.basic:
            return PlainTextResponse("Logon failed", status_code=401)
        response = JSONResponse({"d": {"EntitySets": ["ProdnOrdConf2", "ProdnOrdConfMatlDocItm"]}})
        if request.headers.get("x-csrf-token", "").lower() == "fetch":
            self.token_fetches += 1
            session = request.cookies.get("SAP_SESSIONID_S4H_100") or secrets.token_hex(8)
            self.sessions[session] = secrets.token_urlsafe(16)
            response.headers["x-csrf-token"] = self.sessions[session]
            response.set_cookie("SAP_SESSIONID_S4H_100", session, path="/")
        return response

    async def _confirmations(self, request: Request) -> Response:
        if request.headers.get("authorization") != self.basic:
            return PlainTextResponse("Logon failed", status_code=401)
        if request.method == "GET":
            return self._query(request)
        session = request.cookies.get("SAP_SESSIONID_S4H_100", "")
        token = request.headers.get("x-csrf-token")
        if not token or self.sessions.get(session) != token:
            return PlainTextResponse("CSRF token validation failed", status_code=403,
                                     headers={"x-csrf-token": "Required"})
        fault = self._take("create")
        if (early := await self._before(fault)) is not None:
            return early
        body = await request.json()
        order = body.get("OrderID")
        if fault is not None and fault.kind == "refuse":
            return self._odata_error(400, fault.detail.get("code", "RU/000"), fault.detail["message"])
        if order not in self.orders:
            return self._odata_error(400, "RU/000", f"Order {order} does not exist")
        group = f"{len(self.confirmations) + 1:010d}"
        items = body.get("to_ProdnOrdConfMatlDocItm", {}).get("results", [])
        saved = {**{k: v for k, v in body.items() if k != "to_ProdnOrdConfMatlDocItm"},
                 "ConfirmationGroup": group, "ConfirmationCount": "00000001",
                 "to_ProdnOrdConfMatlDocItm": {"results": items}}
        self.confirmations.append(saved)
        self.effects[body.get("ConfirmationText", "")] += 1
        headers = {"location": f"{self.url}{SAP_SERVICE}/ProdnOrdConf2(ConfirmationGroup='{group}',"
                               f"ConfirmationCount='00000001')"}
        if fault is not None and fault.kind == "cogi":
            # The confirmation is saved; its goods movements are not posted but kept for COGI.
            self.cogi.extend({**item, "ConfirmationGroup": group} for item in items)
            failed = fault.detail["message"]
            headers["sap-message"] = json.dumps({
                "code": "RU/505", "message": f"Confirmation of order {order} saved; {len(items)} goods movements "
                                             f"failed (see transaction COGI)", "severity": "warning", "target": "",
                "details": [{"code": "M7/021", "message": failed, "severity": "error", "target": ""}]})
        return await self._after(fault, JSONResponse({"d": saved}, status_code=201, headers=headers))

    def _query(self, request: Request) -> Response:
        fault = self._take("query")
        if fault is not None and fault.kind in ("down", "error"):
            return PlainTextResponse("Service Unavailable", status_code=503 if fault.kind == "down" else 500)
        wanted = dict(re.findall(r"(\w+) eq '((?:[^']|'')*)'", request.query_params.get("$filter", "")))
        wanted = {k: v.replace("''", "'") for k, v in wanted.items()}
        found = [c for c in self.confirmations if all(c.get(k) == v for k, v in wanted.items())]
        return JSONResponse({"d": {"results": found}})
