"""Commands for adjustments: ``gateway adjust scrap | rework | substitute | consumption``.

Presentation only: the application layer (``gateway.app.adjustments``) checks the request
and ``gateway.ledger.adjustments`` decides what it posts. A refused adjustment (bad reason
code, unknown order or item, not enough stock or issued quantity) ends with one line on
stderr and exit code 1, never a traceback, and posts nothing.
"""

from __future__ import annotations

import typer

from gateway.cli.common import DbOption, actor, on_ledger, parsed

ReasonOption = typer.Option(..., "--reason", help="Reason code: 2 to 32 of A-Z, 0-9, '_', '-' (e.g. DAMAGED).")
NoteOption = typer.Option("", "--note", help="Free text for the audit trail.")


def _qty(text: str, what: str = "quantity"):
    from gateway.app import checks

    return parsed(checks.quantity, text, what)


def _post(db: str, adjust, request) -> None:
    """Run one adjustment and print what it posted, or its refusal as one line."""
    from gateway.cli.tables import fmt

    r = on_ledger(db, adjust, request, actor=actor())
    queued = f"; {r.queued} shortage(s) queued (`gateway errors list`)" if r.queued else ""
    typer.echo(f"{r.document}: {r.kind} of {fmt(r.qty)} {r.uom} {r.material} on order {r.order}, "
               f"{r.movements} goods movement(s){queued}")


def _at_operation(kind: str, done: str, summary: str):
    """``adjust scrap`` and ``adjust rework``: the same arguments, a different adjustment."""

    def command(
        order: str = typer.Argument(...),
        quantity: str = typer.Argument(..., help=f"Units {done}, in the product's unit of measure."),
        operation: str = typer.Option(..., "--operation", "--op", help=f"Routing operation where they were {done}."),
        reason: str = ReasonOption, note: str = NoteOption, db: str = DbOption,
    ) -> None:
        from gateway.app import adjustments
        from gateway.app.models import AdjustAtOperation

        _post(db, getattr(adjustments, kind), AdjustAtOperation(order=order, operation=operation, qty=_qty(quantity),
                                                                reason_code=reason, note=note))

    command.__doc__ = summary
    return command


adjust_scrap = _at_operation("scrap", "scrapped", "Scrap reported by hand: backflushed as a confirmation of scrap "
                             "(reverse it with `confirmations reverse`).")
adjust_rework = _at_operation("rework", "reworked", "Rework: issues the operation's `rework` BOM items and posts "
                              "the rework labor; no goods receipt.")


def adjust_substitute(
    order: str = typer.Argument(...),
    item: str = typer.Option(..., "--item", help="BOM item whose material was replaced."),
    with_material: str = typer.Option(..., "--with", help="The material used instead."),
    quantity: str = typer.Option(..., "--qty", help="Quantity of the planned material to give back."),
    with_quantity: str | None = typer.Option(None, "--with-qty", help="Quantity of the substitute (default --qty)."),
    reason: str = ReasonOption, note: str = NoteOption, db: str = DbOption,
) -> None:
    """Substitution: the planned material goes back to its lots, the substitute is issued for the item."""
    from gateway.app.adjustments import substitute
    from gateway.app.models import AdjustSubstitute

    with_qty = None if with_quantity is None else _qty(with_quantity, "--with-qty")
    _post(db, substitute, AdjustSubstitute(order=order, item=item, with_material=with_material, qty=_qty(quantity),
                                           with_qty=with_qty, reason_code=reason, note=note))


def adjust_consumption(
    order: str = typer.Argument(...),
    item: str = typer.Option(..., "--item", help="BOM item."),
    quantity: str = typer.Option(..., "--qty", help="+Q issues Q more (over-consumption), -Q gives Q back."),
    reason: str = ReasonOption, note: str = NoteOption, db: str = DbOption,
) -> None:
    """Over- or under-consumption of one component: an extra issue, or a return to the latest lots."""
    from gateway.app.adjustments import consumption
    from gateway.app.models import AdjustConsumption

    _post(db, consumption, AdjustConsumption(order=order, item=item, delta=_qty(quantity), reason_code=reason,
                                             note=note))


def register(app: typer.Typer) -> None:
    """Add the ``adjust`` group to the CLI."""
    adjust_app = typer.Typer(no_args_is_help=True, help="Adjustments with a reason code: scrap, rework, "
                             "substitution, over/under consumption. History is never edited.")
    adjust_app.command("scrap")(adjust_scrap)
    adjust_app.command("rework")(adjust_rework)
    adjust_app.command("substitute")(adjust_substitute)
    adjust_app.command("consumption")(adjust_consumption)
    app.add_typer(adjust_app, name="adjust")
