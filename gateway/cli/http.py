"""The HTTP server's command-line side: ``gateway token new``, and the ``--http`` options of
``gateway run`` and ``gateway demo`` turned into a bound socket before anything else starts.

A bad ``--http`` value, an unreadable tokens file or a port in use is one line on stderr and
exit 1, never a traceback.
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass
from pathlib import Path

import typer

from gateway.cli.common import fail
from gateway.http.auth import Role, TokenConfigError, Tokens, new_token
from gateway.http.listen import DEFAULT_LISTEN, Listen, PortInUse, bind

HttpOption = typer.Option(DEFAULT_LISTEN, "--http", envvar="GATEWAY_HTTP",
                          help="Serve /health, /ready, /metrics and the JSON API on HOST:PORT, or `off`.")
TokensOption = typer.Option(None, "--tokens", help="YAML/JSON list of {name, role, sha256} (`gateway token new`); "
                            "default: the GATEWAY_TOKENS variable. Without tokens the API refuses every request.")
AuthMetricsOption = typer.Option(False, "--http-auth-metrics", help="Require a viewer token for /metrics too.")


@dataclass
class HttpPlan:
    sock: socket.socket
    tokens: Tokens
    auth_metrics: bool


def prepare(http: str, tokens_file: Path | None, auth_metrics: bool, *,
            any_port_if_taken: bool = False) -> HttpPlan | None:
    """Parse, load the tokens and bind the port now (None: --http off); one line and exit 1 if not.

    ``any_port_if_taken``: the demo's default port may be taken by another program; a
    demo is for trying things, so it serves on a free port then (and prints the URL)."""
    try:
        listen = Listen.parse(http)
        tokens = Tokens.load(tokens_file)
        if listen is None:
            return None
        try:
            sock = bind(listen)
        except PortInUse:
            if not any_port_if_taken:
                raise
            sock = bind(Listen(listen.host, 0))
        return HttpPlan(sock, tokens, auth_metrics)
    except (ValueError, PortInUse) as exc:  # TokenConfigError is a ValueError
        fail(f"error: {exc}")


@contextlib.asynccontextmanager
async def serving(plan: HttpPlan | None, gateway):
    """Serve ``gateway`` over HTTP while the block runs (enter it before ``gateway.run``)."""
    if plan is None:
        yield None
        return
    from gateway.http.server import HttpServer

    server = HttpServer(plan.sock, gateway, tokens=plan.tokens, auth_metrics=plan.auth_metrics)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def register(app: typer.Typer) -> None:
    token_app = typer.Typer(no_args_is_help=True, help="Bearer tokens for the HTTP API.")
    app.add_typer(token_app, name="token")

    @token_app.command("new")
    def token_new(name: str = typer.Option(..., "--name", help="Who or what uses it (e.g. mes, shift-lead)."),
                  role: Role = typer.Option(Role.viewer, "--role", help="viewer: read; operator: also change.")
                  ) -> None:
        """Make a random token: printed once here, only its hash goes into the tokens file."""
        try:
            token, line = new_token(name, role)
            Tokens.parse(line, "the new entry")  # the line must load as written
        except TokenConfigError as exc:
            fail(f"error: {exc}")
        typer.echo(f"token (shown once, keep it secret): {token}")
        typer.echo("add this line to the tokens file (--tokens FILE) or to GATEWAY_TOKENS:")
        typer.echo(line)
