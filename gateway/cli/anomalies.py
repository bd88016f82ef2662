"""Commands for anomalies: ``gateway anomalies list | accept ID | reject ID | assign ID --order O``.

Presentation only: ``gateway.app.anomalies`` checks and decides. A refused decision
(unknown id, already decided, information-only anomaly) ends with one line on stderr and
exit code 1, never a traceback, and changes nothing.
"""

from __future__ import annotations

import typer

from gateway.cli.common import DbOption, Format, FormatOption, actor, age_text, emit, on_ledger

ReasonOption = typer.Option("", "--reason", help="Why: kept with the decision for the audit trail.")


def anomalies_list(all_: bool = typer.Option(False, "--all", help="Include decided and information-only ones."),
                   db: str = DbOption, format: Format = FormatOption) -> None:
    """Anomalies waiting for a decision (held units are not posted until accepted)."""
    from gateway.app.anomalies import list_anomalies
    from gateway.app.models import Anomaly
    from gateway.clock import utcnow
    from gateway.cli.tables import fmt

    def show(rows) -> None:
        if not rows:
            typer.echo("no open anomalies" if not all_ else "no anomalies")
        now = utcnow()
        for r in rows:
            decided = f" → {r.decision} {r.confirmation_id or ''}".rstrip() if r.decision else ""
            held = f"held {fmt(r.units_held)}"
            if r.held_since is not None:
                held += f" under order {r.order!r} for {age_text(now - r.held_since)} (assign: --order O)"
            typer.echo(f"{r.id:>6}  {r.source_time:%Y-%m-%d %H:%M:%S}  {r.machine}/{r.counter or '-'}  {r.kind}  "
                       f"{r.status}{decided}  {held}  {r.detail}")

    emit(on_ledger(db, list_anomalies, include_decided=all_), format, show, rows=Anomaly)


def anomalies_accept(anomaly_id: int = typer.Argument(..., help="Anomaly id (see `gateway anomalies list`)."),
                     reason: str = ReasonOption,
                     order: str | None = typer.Option(None, "--order", help="Post to this order instead of the "
                                                      "one running when the units were counted."),
                     operation: str | None = typer.Option(None, "--operation"),
                     db: str = DbOption) -> None:
    """Post the units an anomaly holds, once, as a confirmation with its backflush."""
    from gateway.app.anomalies import accept
    from gateway.app.models import AcceptAnomaly
    from gateway.cli.tables import fmt

    r = on_ledger(db, accept, AcceptAnomaly(anomaly_id=anomaly_id, reason=reason, order=order, operation=operation),
                  actor=actor())
    typer.echo(f"anomaly {anomaly_id} accepted: {fmt(r.units)} units confirmed on order {r.order} as "
               f"{r.confirmation_id}")


def anomalies_assign(anomaly_id: int = typer.Argument(..., help="Anomaly id of units held under an unknown order."),
                     order: str = typer.Option(..., "--order", help="The released order to post them to."),
                     operation: str | None = typer.Option(None, "--operation",
                                                          help="Default: the operation the machine ran."),
                     reason: str = ReasonOption, db: str = DbOption) -> None:
    """Post the units held under an unknown or empty order to an order, once."""
    from gateway.app.anomalies import assign
    from gateway.app.models import AssignAnomaly
    from gateway.cli.tables import fmt

    r = on_ledger(db, assign, AssignAnomaly(anomaly_id=anomaly_id, order=order, operation=operation, reason=reason),
                  actor=actor())
    typer.echo(f"anomaly {anomaly_id}: {fmt(r.units)} held units confirmed on order {r.order} as "
               f"{' '.join(r.confirmation_ids)}")


def anomalies_reject(anomaly_id: int = typer.Argument(..., help="Anomaly id (see `gateway anomalies list`)."),
                     reason: str = ReasonOption, db: str = DbOption) -> None:
    """Write off the units an anomaly holds: nothing is posted."""
    from gateway.app.anomalies import reject
    from gateway.app.models import RejectAnomaly
    from gateway.cli.tables import fmt

    r = on_ledger(db, reject, RejectAnomaly(anomaly_id=anomaly_id, reason=reason), actor=actor())
    typer.echo(f"anomaly {anomaly_id} rejected: {fmt(r.units)} held units written off, nothing posted")


def register(app: typer.Typer) -> None:
    """Add the ``anomalies`` group to the CLI."""
    anomalies_app = typer.Typer(no_args_is_help=True, help="Anomalies that hold units for a decision.")
    anomalies_app.command("list")(anomalies_list)
    anomalies_app.command("accept")(anomalies_accept)
    anomalies_app.command("reject")(anomalies_reject)
    anomalies_app.command("assign")(anomalies_assign)
    app.add_typer(anomalies_app, name="anomalies")
