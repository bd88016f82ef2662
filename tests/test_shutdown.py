"""Stopping is bounded (a task or thread that ignores the stop cannot keep the gateway alive); the
gateway's own housekeeping tasks end on cancel."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time

from structlog.testing import capture_logs

from gateway.service import _cancel_all
from gateway.sources.base import ReconnectingSource


class SwallowingSource(ReconnectingSource):
    """Its teardown swallows a cancellation, as asyncua's ``Client._cancel_task`` does."""

    protocol = "test"

    def __init__(self) -> None:
        super().__init__("swallower", 0.01, 0.02, log=_NullLog())
        self.serves = 0
        self.in_teardown = asyncio.Event()

    async def _serve(self) -> None:
        self.serves += 1
        try:
            self.in_teardown.set()
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            pass  # the library's bug
        raise ConnectionError("connection reset")

    def _why(self, exc: Exception) -> tuple[str, str]:
        return str(exc), "reconnecting"


class _NullLog:
    def __getattr__(self, name):
        return lambda *a, **k: None


async def test_a_source_ends_even_when_a_library_swallows_the_cancellation():
    source = SwallowingSource()
    task = asyncio.create_task(source.run())
    await source.in_teardown.wait()
    task.cancel()
    await asyncio.wait([task], timeout=2)  # not wait_for: it would cancel again and hide the bug
    assert task.cancelled(), f"still running after cancel: {source.serves} connections served"
    assert source.serves == 1, "it reconnected after being cancelled"


async def test_cancel_all_gives_up_on_a_stuck_task_and_names_it():
    async def stubborn():
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue

    async def polite():
        await asyncio.sleep(10)

    stuck = asyncio.create_task(stubborn(), name="source:stubborn")
    fine = asyncio.create_task(polite(), name="source:polite")
    await asyncio.sleep(0)
    began = time.monotonic()
    with capture_logs() as logs:
        await _cancel_all([stuck, fine], 0.3)
    assert time.monotonic() - began < 2
    assert fine.cancelled()
    assert [e["task"] for e in logs if e["event"] == "task_did_not_stop"] == ["source:stubborn"]
    assert "stubborn" in logs[0]["stack"]
    stuck.get_coro().close()  # end the stubborn coroutine for good


def test_exit_guard_ends_a_process_that_a_thread_keeps_alive():
    program = textwrap.dedent("""
        import threading, time
        from gateway import diagnostics, logs
        logs.configure(json=True)
        threading.Thread(target=time.sleep, args=(60,)).start()  # not a daemon: holds the exit
        diagnostics.exit_guard(0, 0.5)
    """)
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=30)
    assert time.monotonic() - began < 20
    assert done.returncode == 0
    assert '"event": "exit_forced"' in done.stderr
    assert "Thread" in done.stderr  # every thread's stack follows the event


async def test_long_lived_objects_are_frozen_once_the_sources_are_up_and_the_task_stops_on_cancel():
    import gc

    from gateway.service import _freeze_long_lived_objects

    gc.unfreeze()
    task = asyncio.create_task(_freeze_long_lived_objects(early_s=(0.01, 0.05), every_s=60))
    try:
        for _ in range(100):  # an early freeze, long before the periodic one
            await asyncio.sleep(0.02)
            if gc.get_freeze_count():
                break
        assert gc.get_freeze_count() > 0
        task.cancel()
        await asyncio.wait([task], timeout=2)
        gc.unfreeze()
        task = asyncio.create_task(_freeze_long_lived_objects(early_s=(), every_s=0.05))
        for _ in range(100):  # the periodic full collection
            await asyncio.sleep(0.02)
            if gc.get_freeze_count():
                break
        assert gc.get_freeze_count() > 0
        task.cancel()
        await asyncio.wait([task], timeout=2)
        assert task.cancelled()
    finally:
        gc.unfreeze()  # the rest of the test session collects as usual
