"""How ``gateway dry-run`` prints its answer for people: per machine, or two mappings side by side.

Presentation only: it formats a ``DryRun``; it computes nothing a posting depends on.
"""

from __future__ import annotations

from rich.markup import escape

from gateway.commissioning.dryrun import DryRun, MachineOutcome, compare
from gateway.cli.tables import fmt, make_console, table


def print_dry_run(run: DryRun) -> None:
    console = make_console()
    console.print(f"dry-run of {escape(run.mapping)} on {escape(run.recording)}: {run.values} values replayed")
    for name, m in run.machines.items():
        console.print()
        console.print(f"[bold]{escape(name)}[/]: {_totals(m)}")
        for c in m.confirmations:
            console.print(f"  confirmation {c.id[:12]} {c.order}/{c.operation}: yield {fmt(c.yield_qty)}, "
                          f"scrap {fmt(c.scrap_qty)} {c.uom} ({c.trigger})")
            for g in c.issues:
                lot = f" lot {g.lot}" if g.lot else ""
                console.print(f"    issue {g.material} {fmt(-g.qty)} {g.uom} from {g.location}{escape(lot)}")
            for g in c.receipts:
                lot = f" lot {g.lot}" if g.lot else ""
                console.print(f"    receipt {g.material} {fmt(g.qty)} {g.uom} into {g.location}{escape(lot)}")
            for a in c.activities:
                console.print(f"    activity {a.work_center} {a.activity} {fmt(a.hours)} h, "
                              f"{fmt(a.cost)} {a.currency}")
            for e in c.errors:
                console.print(f"    [red]not issued[/] {e.material} {fmt(e.missing)} {e.uom} at {e.location}: "
                              f"{escape(e.reason)}", soft_wrap=True)
        for a in m.anomalies:
            held = f", {fmt(a.units_held)} units held" if a.units_held else ""
            console.print(f"  [red]anomaly[/] {a.kind}{' ' + a.counter if a.counter else ''}{held}: {escape(a.detail)}",
                          soft_wrap=True)  # one line per anomaly, for grep
    _print_problems(console, run)
    console.print()
    console.print("[green]no anomalies[/]" if run.clean else f"[red]{_verdict(run)}[/]")


def print_comparison(a: DryRun, b: DryRun) -> None:
    console = make_console()
    console.print(f"dry-run on {escape(a.recording)}: {escape(a.mapping)} against {escape(b.mapping)}")
    differing = 0
    for machine, rows in compare(a, b).items():
        differing += sum(1 for *_, differs in rows if differs)
        shown = [[("[bold red]≠ " if differs else "  ") + escape(line) + ("[/]" if differs else ""),
                  _mark(x, differs), _mark(y, differs)] for line, x, y, differs in rows]
        console.print(table(machine, ["", a.mapping, b.mapping], shown, numeric=[a.mapping, b.mapping]))
    for run in (a, b):
        for machine, m in run.machines.items():
            for x in m.anomalies:
                console.print(f"[red]{escape(run.mapping)}: {escape(machine)} anomaly[/] {x.kind}"
                              f"{' ' + x.counter if x.counter else ''}: {escape(x.detail)}", soft_wrap=True)
        _print_problems(console, run, prefix=f"{run.mapping}: ")
    console.print(f"{differing} line(s) differ" if differing else "the two mappings make the same")
    for run in (a, b):
        console.print(f"{escape(run.mapping)}: " + ("[green]no anomalies[/]" if run.clean
                                                    else f"[red]{_verdict(run)}[/]"))


def _mark(value: str, differs: bool) -> str:
    return f"[bold red]{escape(value)}[/]" if differs else escape(value)


def _totals(m: MachineOutcome) -> str:
    parts = [f"{fmt(m.counted)} units counted", f"yield {fmt(m.confirmed_yield)}", f"scrap {fmt(m.confirmed_scrap)}",
             f"{len(m.confirmations)} confirmation(s)"]
    if m.pending:
        parts.append(f"{fmt(m.pending)} pending")
    if m.held:
        parts.append(f"{fmt(m.held)} held")
    return ", ".join(parts)


def _print_problems(console, run: DryRun, prefix: str = "") -> None:
    for tag in run.not_recorded:
        console.print(f"[red]{escape(prefix)}not in the recording:[/] {escape(tag)}")
    for what in run.undecodable:
        console.print(f"[red]{escape(prefix)}cannot decode:[/] {escape(what)}")
    if not run.committed:
        console.print(f"[red]{escape(prefix)}the throwaway ledger did not commit everything (see --verbose)[/]")


def _verdict(run: DryRun) -> str:
    parts = []
    if run.anomalies:
        parts.append(f"{run.anomalies} anomaly(ies)")
    if run.not_recorded:
        parts.append(f"{len(run.not_recorded)} tag(s) not in the recording")
    if run.undecodable:
        parts.append(f"{len(run.undecodable)} undecodable value(s)")
    return ", ".join(parts) or "not committed"
