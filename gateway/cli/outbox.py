"""``gateway outbox list|retry|park|skip``: the deliveries to the outputs, and a person's decisions on them.

Thin: parses, calls ``gateway.app.outbox``, renders. Never delivers anything.
"""

from __future__ import annotations

import typer

from gateway.cli.common import DbOption, Format, FormatOption, actor, emit, on_ledger

outbox_app = typer.Typer(no_args_is_help=True, help="Outbox: deliveries to the outputs (webhook, MQTT, ERPs).")


@outbox_app.command("list")
def outbox_list(status: str | None = typer.Option(None, "--status", help="pending, unknown, delivered, parked, "
                                                  "skipped or all (default: not delivered yet)"),
                target: str | None = typer.Option(None, "--target"), order: str | None = typer.Option(
                    None, "--order", help="an order's deliveries, and the goods issues posted for its error items"),
                last: int = typer.Option(500, "--last"), db: str = DbOption, format: Format = FormatOption) -> None:
    """Deliveries, newest first, with their state, attempts and the target's last message."""
    from gateway.app import outbox
    from gateway.cli.tables import make_console, table

    def show(rows) -> None:
        if not rows:
            typer.echo("nothing waits in the outbox" if status is None else "no deliveries that match")
            return
        make_console().print(table("Outbox", ("id", "target", "what", "document", "order", "status", "attempts",
                                              "created (UTC)", "message"),
                                   [(str(r.id), r.target, r.what, r.document, r.order or "", r.status, str(r.attempts),
                                     f"{r.created_at:%Y-%m-%d %H:%M:%S}", r.last_error) for r in rows],
                                   numeric=("id", "attempts")))

    emit(on_ledger(db, outbox.list_outbox, status=status, target=target, order=order, last=last), format, show,
         rows=outbox.OutboxRow)


def _act(verb: str, ids: list[int], reason: str, db: str) -> None:
    from gateway.app import outbox

    for r in on_ledger(db, outbox.act, verb, ids, reason, actor=actor()):
        typer.echo(f"delivery {r.id} ({r.key}): {r.status}")


@outbox_app.command("retry")
def outbox_retry(ids: list[int] = typer.Argument(...), db: str = DbOption) -> None:
    """Send parked (or waiting) deliveries again now, attempts from 0."""
    _act("retry", ids, "", db)


@outbox_app.command("park")
def outbox_park(ids: list[int] = typer.Argument(...), reason: str = typer.Option(..., "--reason"),
                db: str = DbOption) -> None:
    """Hold deliveries: not sent until retried; later ones of the same order wait behind them."""
    _act("park", ids, reason, db)


@outbox_app.command("skip")
def outbox_skip(ids: list[int] = typer.Argument(...), reason: str = typer.Option(..., "--reason"),
                db: str = DbOption) -> None:
    """Never deliver these (the target got them another way); the order's later ones go on."""
    _act("skip", ids, reason, db)
