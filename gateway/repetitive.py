"""Which cost collector a repetitive machine confirms on now (the service's side of repetitive mode).

A machine with ``order: none`` and ``product:`` has no order; its "current order" is the
number of the cost collector for its product, production version, line and the posting
period the gateway's clock is in (``gateway.domain.repetitive``). The service asks
``Collectors.current`` whenever it is about to count units for such a machine and at every
tick; when the number differs from the machine's order, the service treats it as an order
change (``Gateway._roll_period``): what the old collector has pending is confirmed to it,
new units go to the new one, and the change is committed with the machine's state, so a
restart resumes on the right side of the boundary.

The version is the mapping's ``version:``, else the product's only one. Period length and
time zone are the version's (master data ``periods:``); a product whose version is not
loaded yet gets a month in UTC and its units are held (unknown order) until it is.

Until the writer has created a collector (with the first change-set that uses it) the
ledger does not know it, so the directory the service refreshes from the ledger would not
either: every collector seen here is kept (``keys``) and put back into a refreshed
directory (``register``). Never here: I/O, a posting, or reading the clock (``now`` is given).
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from gateway.domain.repetitive import CollectorKey, Period, PeriodLength, period_of
from gateway.ledger.resume import OrderDirectory
from gateway.mapping.model import Machine


class Collectors:
    """The collectors the service has used, and the periods it is in, per length and time zone."""

    def __init__(self) -> None:
        self.keys: dict[str, CollectorKey] = {}  # number → key, every collector used since the start
        self._made: dict[tuple[str, str, str, str], CollectorKey] = {}  # (product, version, line, period) → key
        self._periods: dict[tuple[str, str], Period] = {}

    def current(self, machine: Machine, directory: OrderDirectory, now: datetime) -> CollectorKey:
        """The collector ``machine`` confirms on at ``now``; known to ``directory`` once its version is."""
        versions = directory.repetitive.versions.get(machine.product, {})
        version = machine.version or (next(iter(versions)) if len(versions) == 1 else "")
        found = versions.get(version)
        length, zone = (found.period, found.time_zone) if found else ("month", "UTC")
        fields = (machine.product, version, machine.collector_line, self._period(length, zone, now).key)
        key = self._made.get(fields)
        if key is None:  # once per collector: this runs for every reading and tick of the machine
            key = self._made[fields] = CollectorKey(*fields)
            self.keys[key.number] = key
            self._register(key, directory)
        return key

    def key(self, number: str, directory: OrderDirectory) -> CollectorKey | None:
        """The key of a collector by its number (None: an order, not a collector)."""
        return self.keys.get(number) or directory.repetitive.collectors.get(number)

    def register(self, directory: OrderDirectory) -> None:
        """Put the collectors used here into a directory just read from the ledger."""
        for key in self.keys.values():
            self._register(key, directory)

    @staticmethod
    def _register(key: CollectorKey, directory: OrderDirectory) -> None:
        if key.number in directory.closed or key.version not in directory.repetitive.versions.get(key.product, {}):
            return
        directory.uoms.setdefault(key.number, directory.product_uoms.get(key.product, ""))

    def _period(self, length: PeriodLength, zone: str, now: datetime) -> Period:
        cached = self._periods.get((length, zone))
        if cached is None or not cached.holds(now):
            cached = self._periods[(length, zone)] = period_of(now, length, ZoneInfo(zone))
        return cached
