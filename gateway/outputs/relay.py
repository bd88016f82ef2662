"""The delivery workers in a process of their own, next to the gateway that posts: the outbox relay.

Why a process: the ledger writer is a Python thread that needs most of the gateway's one GIL
at 1 000 confirmations/s, and delivering costs CPU of its own (reading the rows, JSON, HTTP,
MQTT packets: 100–400 µs a delivery per output). In the gateway's process every delivery
stretched the writer's transactions, so the ingestion latency grew with the outputs; in a
process of its own the relay runs on another core and the counting does not notice it.

The relay runs at a lower CPU priority than the gateway (nice 10): on a machine short of CPU
the counting and posting come first and the deliveries lag, and catch up when there is time.

What stays in the gateway: the routes (written before the first posting, so no document misses
its rows) and the outbox rows, written with their postings. The relay reads its rows on a
connection of its own (a read, never the write lock) and commits its marks
(``gateway.outputs.worker``: the last round's outcomes and the rows about to be sent) in short
transactions of its own, on SQLite as on PostgreSQL. On SQLite such a transaction holds the one
write lock for a few milliseconds, which the ledger writer then waits for; the writer committing
the marks itself (as it did until 2026-11-30) cost the gateway's process ~35 µs of CPU per
confirmation and two outputs (with outputs the gateway's CPU rose by 11 points of a core, now by
5: bench/RESULTS.md, "Fifth round"). While the writer commits back to back (catching up a
backlog after the database was away), a round's marks may find no gap within SQLite's busy
timeout: the round fails, is logged (``outbox_round_failed``) and is tried again after a pause —
the deliveries lag, the counting does not, nothing is lost. The writer never touches an outbox
row after inserting it, so on PostgreSQL the two never wait for each other.

The pipe, JSON lines on the relay's stdin (its logs go to stderr): first ``{"config": …}`` (the
ledger URL, the mapping, the log settings, the owned machines), then ``{"wake": 1}`` after each
commit, ``{"owned": [...] | null}`` when the machines this instance owns change, ``{"stop": 1}``.

The end of the relay's stdin is the end of the gateway: a gateway killed (kill -9) closes the
pipe, and the relay stops at once — what it had in flight stays unknown in the outbox and the
next start asks the target before sending it again. A relay that dies is started again by the
gateway after a pause (nothing is lost: the rows wait in the outbox).

Must never: write anything but outbox marks, or deliver after its gateway is gone.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import pickle
import sys
from collections.abc import Callable

import structlog
from sqlalchemy import Engine

from gateway import logs
from gateway.backoff import Backoff
from gateway.ledger import outbox
from gateway.mapping.model import Mapping
from gateway.outputs import registry
from gateway.outputs.worker import STOP_GRACE_S, Outputs, reload_outputs

log = structlog.get_logger("gateway.outputs")

PIPE_LIMIT = 64 * 2**20  # the first line carries the mapping
STOP_TIMEOUT_S = 20.0  # a relay that has not written its last outcomes by then is killed (they stay unknown)


def _encode(message: dict) -> bytes:
    return (json.dumps(message, separators=(",", ":")) + "\n").encode()


# -- the gateway's side ---------------------------------------------------------------------


class OutputsProcess:
    """The outputs of a mapping, delivered by a relay process this gateway starts and watches.

    The same face as ``Outputs`` (start, wake, stop, reload).
    """

    def __init__(self, engine: Engine, mapping: Mapping, *, owned: Callable[[], set[str] | None] = lambda: None,
                 session: str | None = None) -> None:
        self.engine = engine
        self.mapping = mapping
        self.owned = owned
        self.session = session
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False
        self.restarts = 0

    async def start(self) -> None:
        if not self.mapping.outputs:
            return
        # Before the first posting: every document posted from now on gets its rows.
        await asyncio.to_thread(outbox.set_routes, self.engine, registry.routes(self.mapping))
        self._stopping = False
        self._task = asyncio.create_task(self._supervise(), name="outputs-relay")

    def wake(self) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None and not proc.stdin.is_closing():
            proc.stdin.write(_encode({"wake": 1}))

    async def stop(self) -> None:
        """Ask the relay to stop (it writes its last outcomes first); killed after
        ``STOP_TIMEOUT_S``."""
        self._stopping = True
        proc, task = self._proc, self._task
        if task is not None and proc is not None and proc.returncode is None and not proc.stdin.is_closing():
            proc.stdin.write(_encode({"stop": 1}))
            try:
                await asyncio.wait_for(asyncio.shield(task), STOP_TIMEOUT_S)
            except TimeoutError:
                log.error("outputs_relay_stop_timeout", timeout_s=STOP_TIMEOUT_S,
                          hint="the relay was killed; what it had in flight stays unknown and is asked about "
                               "at the next start")
        if task is not None and not task.done():
            task.cancel()  # kills a relay still running (see _run_once)
            await asyncio.gather(task, return_exceptions=True)
        self._task = self._proc = None

    async def reload(self, mapping: Mapping) -> None:
        await reload_outputs(self, mapping)

    async def _supervise(self) -> None:
        pause = Backoff(1.0, 30.0)
        while not self._stopping:
            code = await self._run_once()
            if self._stopping:
                break
            self.restarts += 1
            delay = pause.next()
            log.error("outputs_relay_ended", returncode=code, restart_in_s=round(delay, 1),
                      hint="the deliveries wait in the outbox; the relay is started again (its log lines above say "
                           "why it ended)")
            await asyncio.sleep(delay)

    async def _run_once(self) -> int | None:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway.outputs.relay",
                                                    stdin=asyncio.subprocess.PIPE)
        self._proc = proc
        config = {"url": self.engine.url.render_as_string(hide_password=False), "session": self.session,
                  "mapping": base64.b64encode(pickle.dumps(self.mapping)).decode(), "log": logs.settings(),
                  "owned": _listed(self.owned())}
        proc.stdin.write(_encode({"config": config}))
        watcher = asyncio.create_task(self._send_owned(proc, config["owned"]))
        try:
            return await proc.wait()
        finally:
            watcher.cancel()
            if proc.returncode is None:  # cancelled: the gateway stops without waiting (it was asked to)
                proc.kill()
                await proc.wait()

    async def _send_owned(self, proc: asyncio.subprocess.Process, sent: list[str] | None) -> None:
        while proc.returncode is None:
            await asyncio.sleep(0.5)
            now = _listed(self.owned())
            if now != sent and not proc.stdin.is_closing():
                proc.stdin.write(_encode({"owned": now}))
                sent = now


def _listed(machines: set[str] | None) -> list[str] | None:
    return None if machines is None else sorted(machines)


# -- the relay's side -----------------------------------------------------------------------


async def _relay() -> int:
    from gateway.ledger.schema import open_engine

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=PIPE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(0, "rb", buffering=0))
    first = await reader.readline()
    if not first:
        return 0
    config = json.loads(first)["config"]
    logs.configure(**config["log"])
    mapping: Mapping = pickle.loads(base64.b64decode(config["mapping"]))
    engine = open_engine(config["url"], create=False, check_version=False, session_name=config["session"])
    owned: list[set[str] | None] = [None if config["owned"] is None else set(config["owned"])]
    outputs = Outputs(engine, mapping, owned=lambda: owned[0], routes=False)
    await outputs.start()
    log.info("outputs_relay_started", pid=os.getpid(), outputs=sorted(mapping.outputs))
    stop = asyncio.Event()
    gateway_gone = False

    async def listen() -> None:
        nonlocal gateway_gone
        while line := await reader.readline():
            message = json.loads(line)
            if "wake" in message:
                outputs.wake()
            elif "owned" in message:
                owned[0] = None if message["owned"] is None else set(message["owned"])
            elif "stop" in message:
                stop.set()
        # The pipe closed: the gateway is gone (killed, or stopped without a word). Stop at once.
        gateway_gone = True
        stop.set()

    listening = asyncio.create_task(listen())
    await stop.wait()
    # Asked to stop: each worker ends its round and writes its outcomes. The gateway gone: nothing
    # more is sent, what is in flight stays in flight (asked about at the next start).
    await outputs.stop(grace_s=0 if gateway_gone else STOP_GRACE_S)
    listening.cancel()
    engine.dispose()
    log.info("outputs_relay_stopped", gateway_gone=gateway_gone)
    return 0


NICE = 10  # below the gateway: when the CPUs are short, counting and posting come first


def main() -> int:
    os.dup2(2, 1)  # anything printed goes with the logs, not into the gateway's own output
    try:
        os.nice(NICE)  # deliveries wait a little when the machine is busy; they are never lost
    except (AttributeError, OSError):
        pass
    return asyncio.run(_relay())


if __name__ == "__main__":
    raise SystemExit(main())
