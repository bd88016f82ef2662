"""Liveness (``/health``) and readiness (``/ready``) of a running gateway, with the reasons.

* **Alive**: the event loop turns (a heartbeat task is not late by more than a limit) and
  the ledger writer thread runs and has not been failing to commit for longer than a limit.
  While the gateway is still starting (restoring its state from the ledger) it is alive.
  A supervisor restarts a gateway that is not alive.
* **Ready**: the gateway has started, the ledger answered a read recently, and every source
  is connected or has been disconnected for less than its retry budget. A gateway that is not
  ready is alive but not doing its work (a PLC unreachable for long, the database gone).

``StatusWatch`` is the heartbeat: every half second it notes how late it woke and which
sources are disconnected since when. Everything here reads; nothing changes the gateway.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

LOOP_BEAT_S = 0.5


@dataclass(frozen=True)
class Limits:
    loop_lag_s: float = 5.0  # the heartbeat woke this late: the loop was blocked
    writer_failing_s: float = 120.0  # the writer has failed to commit for this long: not alive
    source_budget_s: float = 60.0  # a source disconnected this long: not ready
    ledger_stale_s: float = 30.0  # no successful ledger read for this long: not ready


@dataclass
class StatusWatch:
    """Heartbeat of the event loop and, per source, since when it is disconnected."""

    gateway: object
    beat_s: float = LOOP_BEAT_S
    last_beat: float = field(default_factory=time.monotonic)
    lag_s: float = 0.0  # how late the last beat woke
    max_lag_s: float = 0.0  # the worst since start
    down_since: dict[str, float] = field(default_factory=dict)  # source → monotonic time first seen down

    async def run(self) -> None:
        while True:
            expected = time.monotonic() + self.beat_s
            await asyncio.sleep(self.beat_s)
            self.beat(time.monotonic() - expected)

    def beat(self, lag_s: float = 0.0) -> None:
        now = time.monotonic()
        self.last_beat, self.lag_s = now, max(0.0, lag_s)
        self.max_lag_s = max(self.max_lag_s, self.lag_s)
        for name, h in self.gateway.source_health().items():
            if h.connected:
                self.down_since.pop(name, None)
            else:
                self.down_since.setdefault(name, now)


def liveness(gw, watch: StatusWatch, limits: Limits) -> tuple[bool, dict]:
    now = time.monotonic()
    since_beat = now - watch.last_beat
    loop_ok = since_beat <= watch.beat_s + limits.loop_lag_s and watch.lag_s <= limits.loop_lag_s
    w = gw.writer
    failing_s = (time.time() - w.health.failing_since.timestamp()) if w.health.failing_since else 0.0
    starting = not gw.has_started  # restoring from the ledger: the writer is not started yet
    writer_ok = (w.alive or starting) and failing_s <= limits.writer_failing_s
    body = {
        "status": ("starting" if starting else "ok") if loop_ok and writer_ok else "failing",
        "event_loop": {"ok": loop_ok, "last_beat_s_ago": round(since_beat, 3), "lag_s": round(watch.lag_s, 3),
                       "max_lag_s": round(watch.max_lag_s, 3), "limit_s": limits.loop_lag_s},
        "writer": {"ok": writer_ok, "alive": w.alive, "failing_s": round(failing_s, 1),
                   "limit_s": limits.writer_failing_s, "last_error": w.health.last_error,
                   "queue_depth": w.queue_depth, "held_machines": list(w.health.held_machines)},
    }
    return loop_ok and writer_ok, body


def readiness(gw, watch: StatusWatch, ledger, limits: Limits) -> tuple[bool, dict]:
    """``ledger`` is the cached ``LedgerFigures`` (its read time says the ledger answered)."""
    now = time.monotonic()
    ledger_age = None if ledger.read_at is None else now - ledger.read_at
    ledger_ok = ledger_age is not None and ledger_age <= limits.ledger_stale_s
    sources, sources_ok = {}, True
    for name, h in sorted(gw.source_health().items()):
        down = watch.down_since.get(name)
        down_s = 0.0 if h.connected or down is None else now - down  # None: the watch has not seen it yet
        ok = h.connected or down_s <= limits.source_budget_s
        sources_ok &= ok
        sources[name] = {"ok": ok, "connected": h.connected, "disconnected_s": round(down_s, 1),
                         "budget_s": limits.source_budget_s, "reconnects": h.reconnects,
                         "last_error": h.last_error, "bad_tags": dict(h.bad_tags)}
    health = gw.source_health()
    machines = {name: {"owned": rt.owned, "source": rt.config.source,
                       "source_ok": sources.get(rt.config.source, {}).get("ok", False)}
                for name, rt in sorted(gw.machines.items())}
    started = gw.running
    ok = started and ledger_ok and sources_ok and bool(health)
    body = {
        "status": "ready" if ok else "not ready",
        "started": started,
        "ledger": {"ok": ledger_ok, "last_read_s_ago": None if ledger_age is None else round(ledger_age, 1),
                   "limit_s": limits.ledger_stale_s, "error": ledger.error},
        "sources": sources,
        "machines": machines,
    }
    return ok, body
