"""Keeping this instance's machine leases: take them at start, renew them, take over, let go.

``LeaseKeeper`` is the service's side of ``gateway.ledger.leases``: at start it takes the
leases of every machine of the mapping (or refuses to start, naming the owner, unless
it is a standby), then renews them every third of the TTL and, for machines it does not
own, polls for leases that became free and takes them over. What it learns goes to the
service through two callbacks: ``on_taken`` (machine → token; the service loads the
machine's state from the ledger and starts counting it) and ``on_lost`` (the service
drops the machine's state; its units stay on the PLC counter for the new owner).

A reload of the mapping adds machines (``take``: their leases, as at start) and removes
them (``let_go``: no longer renewed, released once their last changes are committed). The
keeper's database steps run one at a time (``_lock``), so a renewal already under way cannot
extend a lease that a reload has just released.

The keeper never posts and never decides whether a posting may be made: that is the
fence in the writer's transaction. Its database work runs in threads, so a slow
database delays renewals, never the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from gateway.ledger import leases
from gateway.ledger.leases import LEDGER, Fence, MachinesOwned, Me

log = structlog.get_logger("gateway.ownership")


@dataclass(frozen=True)
class LeaseOptions:
    instance: str | None = None  # default: the host name
    ttl_s: float = leases.DEFAULT_TTL_S
    standby: bool = False
    me: Me | None = None  # default: ``Me.here(instance)``


class LeaseKeeper:
    def __init__(self, engine: Engine, machines: list[str], options: LeaseOptions,
                 *, last_commit: Callable[[], float | None] = lambda: None) -> None:
        self.engine = engine
        self.options = options
        self.me = options.me or Me.here(options.instance)
        self.names = leases.lease_names(engine, machines)
        # SQLite: one instance per ledger, so its leases are taken all together or not at all.
        self.whole = LEDGER in self.names
        self.tokens: dict[str, int] = {}
        self.fence = Fence(self.me, options.ttl_s)
        self._last_commit = last_commit  # monotonic time of the writer's last commit
        self._renewed_at = 0.0
        self._lock = asyncio.Lock()  # one database step at a time: renew, take over, take, let go

    @property
    def missing(self) -> list[str]:
        return [n for n in self.names if n not in self.tokens]

    # -- blocking steps (run in a thread) -----------------------------------------------

    def start(self) -> dict[str, int]:
        """Register and take what is free; ``MachinesOwned`` if not a standby and anything is held."""
        with self.engine.begin() as conn:
            taken, holders = leases.acquire(conn, self.me, self.names, self.options.ttl_s,
                                            all_or_nothing=self.whole or not self.options.standby)
            if holders and not self.options.standby:
                raise MachinesOwned(holders)
            leases.register(conn, self.me, standby=self.options.standby, ttl_s=self.options.ttl_s,
                            machines=len([n for n in self.names if n != LEDGER]))
        self.tokens.update(taken)
        self._renewed_at = time.monotonic()
        if holders:
            log.warning("standby", instance=self.me.instance, owned=len(self.machines(taken)),
                        waiting_for=sorted({h.machine for h in holders} - {LEDGER}) or [LEDGER],
                        owners=sorted({f"{h.instance}@{h.host} pid {h.pid}" for h in holders}),
                        hint="this instance takes each machine over when its owner's lease expires")
        return self.machines(taken)

    def _renew(self, tokens: dict[str, int]) -> set[str]:
        with self.engine.begin() as conn:
            lost = leases.renew(conn, self.me, tokens, self.options.ttl_s)
            leases.heartbeat(conn, self.me, self._last_commit_db(conn))
        return lost

    def _take_free(self) -> dict[str, int]:
        wanted = self.missing
        with self.engine.connect() as conn:
            free = leases.free_now(conn, self.me, wanted)
        if not free or (self.whole and len(free) < len(wanted)):
            return {}
        try:
            with self.engine.begin() as conn:
                taken, _ = leases.acquire(conn, self.me, free, self.options.ttl_s, all_or_nothing=self.whole,
                                          lock_wait_s=min(leases.TAKEOVER_LOCK_WAIT_S, self.options.ttl_s / 6))
            return taken
        except OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) != "55P03":  # not a lock wait: tried again at the next poll
                raise
        with self.engine.begin() as conn:
            ended = leases.end_sessions_of_expired(conn, self.me, free)
        log.warning("expired_owner_sessions_ended", instance=self.me.instance, owners=ended, machines=free,
                    hint="an owner whose lease expired held its lease rows in an open transaction (a stopped "
                         "or frozen process); its sessions were ended so that the takeover can go on")
        with self.engine.begin() as conn:
            taken, _ = leases.acquire(conn, self.me, free, self.options.ttl_s, all_or_nothing=self.whole)
        return taken

    def release(self) -> None:
        with self.engine.begin() as conn:
            count = leases.release(conn, self.me)
        self.tokens.clear()
        log.info("leases_released", instance=self.me.instance, leases=count)

    def _acquire(self, machines: list[str]) -> tuple[dict[str, int], list]:
        with self.engine.begin() as conn:
            return leases.acquire(conn, self.me, machines, self.options.ttl_s,
                                  all_or_nothing=self.whole or not self.options.standby)

    def _release_machines(self, machines: list[str]) -> int:
        with self.engine.begin() as conn:
            return leases.release(conn, self.me, machines)

    # -- a reload of the mapping ---------------------------------------------------------

    async def take(self, machines: list[str]) -> dict[str, int]:
        """Take the leases of machines added to the mapping, as at start: the machines taken.

        ``MachinesOwned`` (nothing taken) when another live instance owns any of them and this
        one is not a standby; a standby takes what is free and waits for the rest."""
        async with self._lock:
            taken, holders = await asyncio.to_thread(self._acquire, sorted(machines))
            if holders and not self.options.standby:
                raise MachinesOwned(holders)
            self.names = sorted({*self.names, *machines}, key=lambda n: (n != LEDGER, n))
            self.tokens.update(taken)
        return self.machines(taken)

    def drop(self, machines: list[str]) -> None:
        """Stop renewing and taking over these machines (taken out of the mapping); see ``let_go``."""
        gone = set(machines) - {LEDGER}
        self.names = [n for n in self.names if n not in gone]
        for m in gone:
            self.tokens.pop(m, None)

    async def let_go(self, machines: list[str]) -> None:
        """Release the leases of machines taken out of the mapping, after ``drop``. Call it only
        once their last changes are committed: a standby may take them over at once."""
        async with self._lock:  # after a renewal under way, which may still have named them
            self.drop(machines)
            count = await asyncio.to_thread(self._release_machines, sorted(machines))
        log.info("leases_released", instance=self.me.instance, machines=sorted(machines), leases=count)

    def _last_commit_db(self, conn) -> float | None:
        at = self._last_commit()
        return None if at is None else leases.db_now(conn) - (time.monotonic() - at)

    # -- the loop ----------------------------------------------------------------------

    def machines(self, tokens: dict[str, int]) -> dict[str, int]:
        return {m: tok for m, tok in tokens.items() if m != LEDGER}

    def forget(self, lost: dict[str, int]) -> set[str]:
        """Drop leases found lost (by the fence, under these tokens); the machines dropped now."""
        dropped = {m for m, tok in lost.items() if self.tokens.get(m) == tok}
        if self.whole and LEDGER in dropped:
            dropped |= set(self.tokens)  # SQLite: another instance has the ledger, so nothing here is ours
        for m in dropped:
            del self.tokens[m]
        return dropped - {LEDGER}

    async def keep(self, on_taken: Callable[[dict[str, int]], Awaitable[None]],
                   on_lost: Callable[[dict[str, int]], None]) -> None:
        ttl = self.options.ttl_s
        poll = min(1.0, ttl / 4)
        while True:
            await asyncio.sleep(poll)
            async with self._lock:
                await self._keep_once(ttl, on_taken, on_lost)

    async def _keep_once(self, ttl: float, on_taken: Callable[[dict[str, int]], Awaitable[None]],
                         on_lost: Callable[[dict[str, int]], None]) -> None:
        """One poll: renew what is held, take over what became free."""
        if time.monotonic() - self._renewed_at >= ttl / 3:  # a standby's heartbeat too
            began = time.monotonic()
            held = dict(self.tokens)
            try:
                lost = await asyncio.to_thread(self._renew, held)  # a copy: the loop may change tokens
                self._renewed_at = began
                log.debug("leases_renewed", instance=self.me.instance, leases=len(held),
                          ms=round(1000 * (time.monotonic() - began), 1))
            except Exception as exc:  # noqa: BLE001 — the database is away; the fence guards postings
                log.warning("lease_renewal_failed", instance=self.me.instance, error=str(exc).splitlines()[0],
                            hint="postings wait for the database; if another instance takes the machines "
                                 "over meanwhile, this one's changes are fenced off and it stands by")
                lost = set()
            if lost:
                on_lost({m: held[m] for m in lost})
        if self.missing:
            try:
                taken = await asyncio.to_thread(self._take_free)
            except Exception as exc:  # noqa: BLE001 — tried again at the next poll
                log.warning("lease_takeover_failed", instance=self.me.instance, error=str(exc).splitlines()[0])
                return
            if taken:
                self.tokens.update(taken)
                if self.whole and LEDGER in taken:
                    self._renewed_at = time.monotonic()
                try:
                    await on_taken(self.machines(taken))
                except Exception as exc:  # noqa: BLE001 — e.g. the database went away while loading
                    # Not renewed from here on: they expire and are taken again (by us or a standby).
                    for machine in taken:
                        self.tokens.pop(machine, None)
                    log.error("takeover_failed", machines=sorted(taken), error=str(exc).splitlines()[0],
                              hint=f"the leases lapse within {ttl:g} s and are taken over again")
