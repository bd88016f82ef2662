"""Human-readable tables of what the ledger holds (``gateway report``, ``gateway demo``), and the
table and console every command prints with.

Read-only presentation: it formats what the application layer returns; it computes
nothing that a posting depends on.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from decimal import Decimal

from rich.console import Console
from rich.table import Table

from gateway.app.models import LedgerSummary
from gateway.ledger import queries


def fmt(q: Decimal) -> str:
    """Plain decimal text without trailing zeros or exponent (25.500000 → 25.5)."""
    return format(q.normalize(), "f")


def make_console() -> Console:
    """A terminal's own width; when piped, ``COLUMNS`` if set, else 120 columns so tables stay readable in logs."""
    console = Console()
    return console if console.is_terminal or "COLUMNS" in os.environ else Console(width=120)


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[str]], *,
          numeric: Sequence[str] = (), caption: str | None = None, min_width: int | None = None,
          width: int | None = None) -> Table:
    """A table whose numeric columns are never cut or wrapped: when it is wider than the console
    (``width``, default ``make_console()``'s) the text columns wrap and numeric titles fold
    instead (a quantity cut to ``6.7…`` reads as another quantity)."""
    t = Table(title=title, caption=caption, min_width=min_width)
    widths = _fit(columns, rows, numeric, width or make_console().width)
    for i, col in enumerate(columns):
        # A numeric column is as wide as its widest value: only its title folds.
        t.add_column(col, justify="right" if col in numeric else "left", overflow="fold", width=widths[i])
    for r in rows:
        t.add_row(*r)
    return t


def _fit(columns: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[str],
         width: int) -> list[int | None]:
    """Column widths that fit ``width``, or all None (natural widths) when the table fits as it is.

    Shrinks the widest column first, in rounds: text columns down to 8 characters and
    numeric titles down to their values (at least 6), numeric titles down to 3, then text
    columns down to 3. A numeric column never gets narrower than its widest value."""
    values = [max((_cells(r[i]) for r in rows), default=0) for i in range(len(columns))]
    natural = [max(v, _cells(c)) for v, c in zip(values, columns)]
    room = width - (3 * len(columns) + 1)  # a border and two spaces of padding per column
    if sum(natural) <= room:
        return [None] * len(columns)
    widths = list(natural)
    text = [c not in numeric for c in columns]
    rounds = ([min(n, 8) if t else max(v, min(n, 6)) for t, v, n in zip(text, values, natural)],
              [min(n, 8) if t else max(v, min(n, 3)) for t, v, n in zip(text, values, natural)],
              [min(n, 3) if t else max(v, min(n, 3)) for t, v, n in zip(text, values, natural)])
    for floors in rounds:
        while sum(widths) > room:
            shrinkable = [i for i, w in enumerate(widths) if w > floors[i]]
            if not shrinkable:
                break
            widest = max(shrinkable, key=lambda i: widths[i])
            widths[widest] -= 1
    return list(widths)


def _cells(markup: str) -> int:
    from rich.text import Text

    return max((Text.from_markup(line).cell_len for line in markup.splitlines()), default=0)


def print_summary(s: LedgerSummary | queries.LedgerSummary, *, truth: dict[str, Decimal] | None = None,
                  console: Console | None = None) -> None:
    if isinstance(s, queries.LedgerSummary):
        from gateway.app.reports import from_ledger

        s = from_ledger(s)
    console = console or make_console()
    machines = {m.machine: m for m in s.machines}
    rows = []
    for name in sorted(set(machines) | set(truth or {})):
        m = machines.get(name)
        row = [name] + ([str(m.confirmations), fmt(m.confirmed_yield), fmt(m.confirmed_scrap), fmt(m.pending),
                         fmt(m.held), fmt(m.written_off), "by hand" if m.counted is None else fmt(m.counted),
                         "[green]yes[/]" if m.balanced else f"[red]NO: {fmt(m.accounted)} accounted[/]"]
                        if m else ["0", "0", "0", "0", "0", "0", "0", "yes"])
        if truth is not None:
            expected = truth.get(name, Decimal(0))
            got = m.accounted if m else Decimal(0)
            row += [fmt(expected), "[green]yes[/]" if got == expected else "[red]NO[/]"]
        rows.append(row)
    numbers = ("confirmations", "yield", "scrap", "pending", "held", "written off", "units counted")
    console.print(table("Machines: every unit counted is confirmed, pending, held or written off",
                        ["machine", *numbers, "balanced", *(("simulator truth", "match") if truth is not None else ())],
                        rows, numeric=(*numbers, "simulator truth"),
                        caption="units counted (with the counter state) = confirmed yield + scrap + pending + held "
                                "+ written off (rejected anomalies)"))
    if s.unbalanced:
        console.print(f"[red]units counted differ from confirmed + pending + held + written off on: "
                      f"{', '.join(s.unbalanced)}[/]")

    console.print(table("Goods movements posted by backflush", ("material", "issued", "received", "uom"),
                        [(g.material, fmt(g.issued), fmt(g.received), g.uom) for g in s.goods],
                        numeric=("issued", "received"), caption="issued = 261 − 262, received = 101 − 102"))
    if s.not_backflushed:
        console.print(table("Not backflushed: manual, or WIP until order completion",
                            ("material", "rule", "planned", "uom"),
                            [(n.material, n.rule, fmt(n.planned), n.uom) for n in s.not_backflushed],
                            numeric=("planned",)))
    rows = [(a.work_center, a.activity, "" if a.activity == "overhead" else fmt(a.hours), f"{fmt(a.cost)} {a.currency}")
            for a in s.activities]
    total: dict[str, Decimal] = {}
    for a in s.activities:
        total[a.currency] = total.get(a.currency, Decimal(0)) + a.cost
    rows += [("[b]total[/]", "", "", f"[b]{fmt(cost)} {currency}[/]") for currency, cost in total.items()]
    console.print(table("Activities", ("work center", "activity", "hours", "cost"), rows, numeric=("hours", "cost")))
    console.print(table("Stock left", ("material", "location", "lot", "quantity", "uom"),
                        [(r.material, r.location, r.lot, fmt(r.qty), r.uom) for r in s.stock], numeric=("quantity",)))
    console.print(
        f"open backflush errors: {s.open_errors}   open anomalies: {s.open_anomalies}   "
        f"duplicate confirmation ids: {s.duplicate_confirmation_ids}"
    )


def journal_markdown(journal: dict[str, list[dict]], *, short_ids: bool = False,
                     aliases: dict[str, str] | None = None) -> str:
    """The journal as Markdown tables; ``short_ids`` names documents C1, R-C1, A1… in order of
    appearance (pass the same ``aliases`` to keep names across several calls)."""
    aliases = {} if aliases is None else aliases

    def name(doc: object) -> str:
        if not short_ids or not isinstance(doc, str) or not doc or doc[0] not in "CRAMO" or "-" not in doc:
            return "" if doc is None else str(doc)
        if doc.startswith("R-"):  # a reversal is named after what it reverses
            return "R-" + name(doc[2:])
        if doc not in aliases:
            prefix = doc.split("-")[0]
            aliases[doc] = f"{prefix}{sum(a.startswith(prefix) for a in aliases.values()) + 1}"
        return aliases[doc]

    out = []
    for title, rows in journal.items():
        if not rows:
            continue
        out.append(f"**{title}**\n")
        cols = list(rows[0])
        out.append("| " + " | ".join(cols) + " |")
        out.append("|" + "|".join("---" for _ in cols) + "|")
        for row in rows:
            cells = [name(v) if k in ("id", "document", "confirmation") else
                     fmt(v) if isinstance(v, Decimal) else str(v) for k, v in row.items()]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)
