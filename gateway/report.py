"""Human-readable tables of what the ledger holds (``gateway report``, ``gateway demo``).

Read-only presentation: it formats a ``LedgerSummary``; it computes nothing that a
posting depends on.
"""

from __future__ import annotations

from decimal import Decimal

from rich.console import Console
from rich.table import Table

from gateway.ledger.queries import LedgerSummary


def fmt(q: Decimal) -> str:
    """Plain decimal text without trailing zeros or exponent (25.500000 → 25.5)."""
    return format(q.normalize(), "f")


def make_console() -> Console:
    """A terminal's own width; 120 columns when piped, so tables stay readable in logs."""
    console = Console()
    return console if console.is_terminal else Console(width=120)


def print_summary(s: LedgerSummary, *, truth: dict[str, Decimal] | None = None, console: Console | None = None) -> None:
    console = console or make_console()
    t = Table(title="Machines: every unit counted is confirmed, pending, held or written off",
              caption="units counted (with the counter state) = confirmed yield + scrap + pending + held "
                      "+ written off (rejected anomalies)")
    for col in ("machine", "confirmations", "yield", "scrap", "pending", "held", "written off", "units counted",
                "balanced"):
        t.add_column(col, justify="right" if col != "machine" else "left", no_wrap=True)
    if truth is not None:
        t.add_column("simulator truth", justify="right")
        t.add_column("match")
    for name in sorted(set(s.machines) | set(truth or {})):
        m = s.machines.get(name)
        row = [name] + ([str(m.confirmations), fmt(m.confirmed_yield), fmt(m.confirmed_scrap), fmt(m.pending),
                         fmt(m.held), fmt(m.written_off), "by hand" if m.counted is None else fmt(m.counted),
                         "[green]yes[/]" if m.balanced else f"[red]NO: {fmt(m.accounted)} accounted[/]"]
                        if m else ["0", "0", "0", "0", "0", "0", "0", "yes"])
        if truth is not None:
            expected = truth.get(name, Decimal(0))
            got = m.accounted if m else Decimal(0)
            row += [fmt(expected), "[green]yes[/]" if got == expected else "[red]NO[/]"]
        t.add_row(*row)
    console.print(t)
    if s.unbalanced:
        console.print(f"[red]units counted differ from confirmed + pending + held + written off on: "
                      f"{', '.join(s.unbalanced)}[/]")

    g = Table(title="Goods movements posted by backflush",
              caption="issued = 261 − 262, received = 101 − 102")
    for col in ("material", "issued", "received", "uom"):
        g.add_column(col, justify="left" if col in ("material", "uom") else "right")
    for material, uom in sorted(set(s.issued) | set(s.received)):
        g.add_row(material, fmt(s.issued.get((material, uom), Decimal(0))),
                  fmt(s.received.get((material, uom), Decimal(0))), uom)
    console.print(g)

    if s.not_backflushed:
        n = Table(title="Not backflushed: manual, or WIP until order completion")
        for col in ("material", "rule", "planned", "uom"):
            n.add_column(col, justify="right" if col == "planned" else "left")
        for (material, rule, uom), qty in sorted(s.not_backflushed.items()):
            n.add_row(material, rule, fmt(qty), uom)
        console.print(n)

    a = Table(title="Activities")
    for col in ("work center", "activity", "hours", "cost"):
        a.add_column(col, justify="left" if col in ("work center", "activity") else "right")
    total: dict[str, Decimal] = {}
    for (wc, activity), (hours, cost, currency) in sorted(s.activities.items()):
        a.add_row(wc, activity, "" if activity == "overhead" else fmt(hours), f"{fmt(cost)} {currency}")
        total[currency] = total.get(currency, Decimal(0)) + cost
    for currency, cost in total.items():
        a.add_row("[b]total[/]", "", "", f"[b]{fmt(cost)} {currency}[/]")
    console.print(a)

    st = Table(title="Stock left")
    for col in ("material", "location", "lot", "quantity", "uom"):
        st.add_column(col, justify="right" if col == "quantity" else "left")
    for (material, location, lot, uom), qty in sorted(s.stock.items()):
        st.add_row(material, location, lot, fmt(qty), uom)
    console.print(st)
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
