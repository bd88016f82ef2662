"""``gateway reload``: make a running ``gateway run`` on this host read its mapping again.

The running instance is found in the ledger (``gateway_instances``: name, host, pid, as
``gateway status`` shows them). The command writes a request for that process into
``mapping_reloads``, sends it SIGHUP and waits for the gateway to answer the request with the
outcome of the reload that read the file after it: applied (what changed) or refused (why,
with every ``file:line: key: message``). Exit 0 when applied, 1 otherwise.

It never signals a process on another host, one that the ledger does not show as running,
or a pid that is not a ``gateway run`` (a pid reused since, or one of another pid namespace
under the same host name): SIGHUP would end most other programs.
"""

from __future__ import annotations

import os
import signal
import socket
import time

import typer

from gateway.cli.common import DbOption, fail, with_ledger


def _is_gateway_run(pid: int) -> bool:
    """Whether ``pid`` here runs ``gateway run`` (its command line, where /proc tells it)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except FileNotFoundError:
        return False
    except OSError:
        return True  # no /proc to ask: the ledger's word (running, this host) has to do
    return "run" in args and any("gateway" in a for a in args)


def reload_command(
    db: str = DbOption,
    instance: str = typer.Option(None, "--instance", envvar="GATEWAY_INSTANCE",
                                 help="The gateway to reload (default: the host name, as `gateway run`)."),
    timeout: float = typer.Option(60.0, "--timeout", min=1.0, help="Seconds to wait for the gateway's answer."),
) -> None:
    """Make the running gateway on this host read its mapping file again and apply it (SIGHUP).

    Prints whether the new mapping was applied (machines added, removed, changed, sources
    reconnected) or refused (why; the running mapping stays). Exit 1 unless applied.
    """
    from gateway.ledger import leases

    name = instance or socket.gethostname()
    here = socket.gethostname()

    def ask(engine) -> tuple[int, int]:
        with engine.begin() as conn:
            found = leases.instance(conn, name)
            if found is None:
                fail(f"no gateway instance {name!r} in this ledger; `gateway status` lists them "
                     "(--instance NAME)")
            row, running = found
            if not running:
                fail(f"gateway instance {name!r} is not running (host {row.host}, pid {row.pid})")
            if row.host != here:
                fail(f"gateway instance {name!r} runs on host {row.host}, not on this one ({here}): run "
                     f"`gateway reload` there, or send SIGHUP to pid {row.pid} on {row.host}")
            if leases.process_gone(row.pid) or not _is_gateway_run(row.pid):
                fail(f"gateway instance {name!r} is not running here: pid {row.pid} is not a `gateway run` "
                     "(stopped without a trace, or another pid namespace under the same host name)")
            return leases.request_reload(conn, row.process, name), row.pid

    def ask_and_wait(engine) -> tuple[str, str]:
        request, pid = ask(engine)
        try:
            os.kill(pid, signal.SIGHUP)
        except ProcessLookupError:
            fail(f"gateway instance {name!r} (pid {pid}) ended before it could be asked")
        deadline = time.monotonic() + timeout
        while True:
            with engine.connect() as conn:
                outcome = leases.reload_outcome(conn, request)
            if outcome is not None:
                return outcome
            if time.monotonic() > deadline:
                fail(f"no answer from gateway instance {name!r} (pid {pid}) within {timeout:g} s; its log says "
                     "whether the mapping was applied (`mapping_reloaded` / `mapping_reload_refused`)")
            if leases.process_gone(pid):
                fail(f"gateway instance {name!r} (pid {pid}) ended before it answered")
            time.sleep(0.2)

    result, detail = with_ledger(db, ask_and_wait)
    lines = detail.splitlines() or [""]
    if result == "applied":
        typer.echo(f"reload applied: {lines[0]}")
        return
    fail([f"reload refused: {lines[0]}", *lines[1:], "the gateway runs on with its previous mapping"])


def register(app: typer.Typer) -> None:
    """Add ``reload`` to the CLI."""
    app.command("reload")(reload_command)
