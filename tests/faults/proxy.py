"""A small TCP proxy for fault tests: between the gateway and a PLC or the database.

Modes, switchable at any time from the test's thread:

* ``pass``: bytes flow both ways;
* ``blackhole``: connections stay open but nothing flows (a cable pulled, a firewall
  dropping packets); new connections are accepted and left hanging;
* ``reset``: every open connection is reset (RST) and new ones are reset at once;
* ``delay``: bytes flow, each chunk ``delay_s`` late (a slow link or a slow database).

It listens on 127.0.0.1 only and runs its own event loop in a daemon thread. What it
holds is bounded: at most ``max_connections`` connections, chunks of 64 KiB, and in
``blackhole`` a reader simply stops reading, so the kernel's socket buffers (not this
process) hold what the peer sends. It must never listen beyond loopback nor outlive the
test that started it.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading

MODES = ("pass", "blackhole", "reset", "delay")
CHUNK = 64 * 1024


class TcpProxy:
    def __init__(self, target_port: int, *, target_host: str = "127.0.0.1", max_connections: int = 64) -> None:
        self.target = (target_host, target_port)
        self.max_connections = max_connections
        self.mode = "pass"
        self.delay_s = 0.0
        self.port = 0
        self.connections_total = 0
        self._loop = asyncio.new_event_loop()
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter | None]] = set()
        self._resume = asyncio.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name=f"proxy->{target_port}", daemon=True)

    # -- control (from the test's thread) -------------------------------------------------

    def start(self) -> TcpProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("proxy did not start")
        return self

    def set_mode(self, mode: str, delay_s: float = 0.0) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self._loop.call_soon_threadsafe(self._apply_mode, mode, delay_s)

    def stop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._shutdown)
        self._thread.join(10)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- the loop's side ------------------------------------------------------------------

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._resume.set()
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()

    def _shutdown(self) -> None:
        self._server.close()
        for pair in list(self._pairs):
            for w in pair:
                if w is not None:
                    _abort(w)
        for task in asyncio.all_tasks(self._loop):
            task.cancel()
        self._loop.call_later(0.1, self._loop.stop)

    def _apply_mode(self, mode: str, delay_s: float) -> None:
        self.mode, self.delay_s = mode, delay_s
        if mode == "blackhole":
            self._resume.clear()
        else:
            self._resume.set()
        if mode == "reset":
            for pair in list(self._pairs):
                for w in pair:
                    if w is not None:
                        _reset(w)
            self._pairs.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections_total += 1
        if self.mode == "reset" or len(self._pairs) >= self.max_connections:
            _reset(writer)
            return
        pair_key = (writer, None)
        self._pairs.add(pair_key)
        try:
            await self._resume.wait()  # a blackhole leaves the connect hanging too
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                _reset(writer)
                return
            self._pairs.discard(pair_key)
            pair_key = (writer, up_writer)
            self._pairs.add(pair_key)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer),
                                 return_exceptions=True)
        finally:
            self._pairs.discard(pair_key)
            for w in pair_key:
                if w is not None:
                    _abort(w)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await self._resume.wait()
            data = await reader.read(CHUNK)
            if not data:
                break
            await self._resume.wait()  # read before the cut: held until the link is back
            if self.mode == "delay" and self.delay_s > 0:
                await asyncio.sleep(self.delay_s)
            writer.write(data)
            await writer.drain()  # backpressure: never more than one chunk in memory per direction
        writer.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as a middlebox resetting the connection does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    _abort(writer)


def _abort(writer: asyncio.StreamWriter) -> None:
    try:
        writer.transport.abort()
    except Exception:  # noqa: BLE001 — already closed
        pass
