"""Where a running gateway is stuck, and a bound on how long it may be stuck on its way out.

``kill -USR1 <pid>`` prints every thread's stack and every asyncio task's stack to stderr
(the log stream). Thread stacks come from :mod:`faulthandler`, written from the signal
handler itself, so they appear even when the event loop is blocked; the task stacks come
a moment later from the loop, when it still runs.

``exit_guard`` is armed once the ledger holds everything counted: a library task that
ignores cancellation or a worker thread blocked in a socket must not keep a stopped
gateway alive (a service manager would wait for it, then kill it without a word). This
module never touches the ledger or counting.
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import signal
import sys
import threading

import structlog

log = structlog.get_logger("gateway.diagnostics")


def dump_tasks(file=None) -> None:
    """Print every asyncio task of the running loop with the stack it is awaiting in."""
    out = file or sys.stderr
    tasks = asyncio.all_tasks()
    print(f"--- {len(tasks)} asyncio tasks ---", file=out)
    for task in sorted(tasks, key=lambda t: t.get_name()):
        print(f"task {task.get_name()}: {task.get_coro()!r}", file=out)
        task.print_stack(limit=12, file=out)
    out.flush()


def install(loop: asyncio.AbstractEventLoop) -> None:
    """SIGUSR1 → thread stacks at once, then task stacks from the loop (POSIX only)."""
    if not hasattr(signal, "SIGUSR1"):
        return
    loop.add_signal_handler(signal.SIGUSR1, dump_tasks)
    # chain=True: after faulthandler's dump the loop's own handler still sees the signal.
    faulthandler.register(signal.SIGUSR1, all_threads=True, chain=True)


def exit_guard(code: int, grace_s: float) -> None:
    """End the process with ``code`` if it has not ended by itself ``grace_s`` from now.

    Called after the last commit: the interpreter's own exit (cancelling leftover tasks,
    joining worker threads) normally takes milliseconds; what still runs then is logged
    with every thread's stack before the process ends.
    """
    def expire() -> None:
        log.error("exit_forced", waited_s=grace_s, exit_code=code,
                  hint="something kept running after the gateway stopped; every thread's stack follows. "
                       + ("The ledger was committed before this." if code == 0 else
                          "The last changes were not committed; the next start recounts them from the PLC counters."))
        faulthandler.dump_traceback(all_threads=True)
        sys.stderr.flush()
        os._exit(code)

    timer = threading.Timer(grace_s, expire)
    timer.daemon = True
    timer.name = "exit-guard"
    timer.start()
