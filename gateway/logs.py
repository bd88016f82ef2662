"""Structured logging setup: key=value on a console, JSON lines with ``--log-json``.

Every event carries machine / order / operation / confirmation_id where known (the
callers bind them); errors carry a ``hint`` saying what to do next.
"""

from __future__ import annotations

import logging
import sys

import structlog


class _CurrentStderr:
    """Whatever ``sys.stderr`` is when a line is written, not when logging was configured.

    A command run in-process (typer's CliRunner, an embedding program) swaps stderr and
    closes its stand-in afterwards; a logger holding the stand-in would fail on the next line.
    """

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


_settings: dict = {"json": False, "level": "info"}


def settings() -> dict:
    """The format and level last configured: a helper process (the outputs relay) logs alike."""
    return dict(_settings)


def configure(*, json: bool = False, level: str = "info", stream=None) -> None:
    stream = stream or _CurrentStderr()
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r} (use debug, info, warning, error)")
    _settings.update(json=json, level=level)
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # Libraries log through stdlib logging; asyncua is chatty at INFO.
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=stream,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("asyncua", "pymodbus"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    # asyncua logs a traceback at ERROR for every refused reconnect, pymodbus a frame dump for
    # every unanswered request; our sources report those themselves, with machine and hint.
    logging.getLogger("asyncua.client.ua_client").setLevel(logging.CRITICAL)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
