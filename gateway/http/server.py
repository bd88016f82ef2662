"""The HTTP server inside a running gateway: uvicorn on the gateway's own event loop.

The socket is bound beforehand (``gateway.http.listen.bind``: a port in use is one clear
line before anything else starts); ``start`` attaches the metrics to the gateway's writer,
reads the committed figures once, and serves the app as a task of the running loop; ``stop``
ends it. uvicorn installs no signal handlers here: SIGINT/SIGTERM belong to the gateway,
which stops the server after its own shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass

import anyio
import structlog
import uvicorn
from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.http import api, ledger_api, mapping_api, outbox_api, problems
from gateway.http.auth import Tokens
from gateway.http.health import Limits, StatusWatch, liveness, readiness
from gateway.http.metrics import GatewayMetrics, build_version
from gateway.http.security import viewer

log = structlog.get_logger("gateway.http")

@dataclass
class Context:
    """What the routes read: the gateway and its figures. Hung on ``app.state.ctx``."""

    gateway: object
    metrics: GatewayMetrics
    watch: StatusWatch
    tokens: Tokens
    limits: Limits
    auth_metrics: bool
    ledger_engine: object = None  # the API's own engine: its reads never take the writer's connections
    ledger_calls: object = None  # anyio.CapacityLimiter: ledger operations at once
    console: object = None  # the web console's board hub (gateway.console.live.Board)


def build_app(ctx: Context, *, console: dict | None = None) -> FastAPI:
    """The app; ``console``: the web console's board options (``gateway.console.live.Board``)."""
    app = FastAPI(title="Backflush Gateway", version=build_version(),
                  description="Live state of a running gateway and its ledger. Errors are RFC 9457 problems.",
                  docs_url=None, redoc_url=None)
    app.state.ctx = ctx
    problems.install(app)

    @app.get("/health", tags=["probes"], responses={503: {"description": "not alive"}})
    async def health() -> JSONResponse:
        """Liveness: the event loop turns; the ledger writer runs and is not failing for long."""
        ok, body = liveness(ctx.gateway, ctx.watch, ctx.limits)
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/ready", tags=["probes"], responses={503: {"description": "not ready"}})
    async def ready() -> JSONResponse:
        """Readiness: started, the ledger answers, every source connected or within its retry budget."""
        ok, body = readiness(ctx.gateway, ctx.watch, ctx.metrics.ledger, ctx.limits)
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["probes"], response_class=Response,
             dependencies=[Depends(viewer)] if ctx.auth_metrics else [],
             responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}})
    async def metrics() -> Response:
        """Prometheus metrics (names prefixed ``gateway_``)."""
        return Response(ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(api.router)
    app.include_router(ledger_api.router)
    app.include_router(mapping_api.router)
    app.include_router(outbox_api.router)
    from gateway.console import mount

    ctx.console = mount(app, ctx, **(console or {}))
    return app


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):
        # SIGINT/SIGTERM are the gateway's (loop.add_signal_handler in `gateway run`); uvicorn would
        # replace them with its own and re-raise them at its exit.
        yield


class HttpServer:
    """The server of one gateway on a bound socket: ``start``, ``stop``."""

    def __init__(self, sock: socket.socket, gateway, *, tokens: Tokens | None = None, auth_metrics: bool = False,
                 limits: Limits = Limits(), console: dict | None = None) -> None:
        self.sock = sock
        self.gateway = gateway
        self.metrics = GatewayMetrics(gateway)
        self.watch = StatusWatch(gateway)
        self.ctx = Context(gateway, self.metrics, self.watch, tokens or Tokens([]), limits, auth_metrics)
        self.app = build_app(self.ctx, console=console)
        self._server: _Server | None = None
        self._tasks: list[asyncio.Task] = []

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    async def start(self) -> None:
        """Attach the metrics hook and serve; call before ``gateway.run`` (the hook must see every commit)."""
        await asyncio.to_thread(self.metrics.seed, self.gateway.engine)
        self.ctx.ledger_engine = self.metrics.engine = await asyncio.to_thread(_own_engine, self.gateway.engine)
        self.ctx.ledger_calls = anyio.CapacityLimiter(ledger_api.LEDGER_CALLS)
        self.gateway.writer.after_commit.append(self.metrics.committed)
        config = uvicorn.Config(self.app, lifespan="off", log_config=None, access_log=False, server_header=False,
                                timeout_graceful_shutdown=2, timeout_keep_alive=5)
        self._server = _Server(config)
        self._tasks = [asyncio.create_task(self._server.serve(sockets=[self.sock]), name="http-server"),
                       asyncio.create_task(self.watch.run(), name="http-status-watch"),
                       asyncio.create_task(self.metrics.keep_ledger_figures(), name="http-ledger-figures"),
                       asyncio.create_task(self.ctx.console.run(), name="console-board")]
        while not self._server.started:
            if self._tasks[0].done():
                self._tasks[0].result()  # raises what stopped it
                raise RuntimeError("the HTTP server ended at start")
            await asyncio.sleep(0.01)
        log.info("http_serving", url=self.url, tokens=len(self.ctx.tokens), metrics_auth=self.ctx.auth_metrics)
        if not len(self.ctx.tokens):
            log.warning("http_no_tokens", hint="every /api/v1 request is refused (401); configure --tokens FILE or "
                                               "GATEWAY_TOKENS (`gateway token new`)")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        server, *helpers = self._tasks or [None]
        for task in helpers:
            task.cancel()
        pending = [t for t in self._tasks if t is not None]
        if pending:
            await asyncio.wait(pending, timeout=5)
        self.sock.close()
        if self.ctx.ledger_engine is not None:
            self.ctx.ledger_engine.dispose()


def _own_engine(engine):
    """Another engine on the gateway's ledger, with a pool of its own."""
    from gateway.ledger.schema import open_engine

    return open_engine(engine.url.render_as_string(hide_password=False), create=False, check_version=False)
