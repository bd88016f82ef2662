"""Where the HTTP server listens: ``--http HOST:PORT`` or ``off``, and taking the port.

Kept free of the web stack so that every CLI command can name the option without loading it.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

DEFAULT_LISTEN = "127.0.0.1:8080"


class PortInUse(Exception):
    """The address cannot be bound; the message is the one line to show."""


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Listen | None:
        """``HOST:PORT`` (``[::1]:8080`` for IPv6) or ``off`` (None)."""
        text = text.strip()
        if text.lower() in ("off", "no", "false", ""):
            return None
        host, sep, port = text.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"--http {text!r}: expected HOST:PORT (e.g. 127.0.0.1:8080) or off")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def bind(listen: Listen) -> socket.socket:
    """A listening socket on ``listen``, or ``PortInUse`` saying why not."""
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    try:
        return socket.create_server((listen.host, listen.port), family=family, backlog=128)
    except OSError as exc:
        why = ("the port is in use by another program" if exc.errno == errno.EADDRINUSE
               else exc.strerror or str(exc))
        raise PortInUse(f"cannot serve HTTP on {listen}: {why}; choose another with --http HOST:PORT, "
                        "or --http off") from None

