"""Command ``gateway browse``: see a PLC's OPC UA address space and pick counter tags.

Presentation only: reading is ``gateway.browse``'s. The password comes from a file or the
environment, never from the command line (``ps`` would show it), and is never printed.
Every failure is one line on stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path

import typer

from gateway.cli_common import fail

PASSWORD_ENV = "OPCUA_PASSWORD"


class Format(str, Enum):
    tree = "tree"
    json = "json"


def browse(
    args: list[str] = typer.Argument(None, metavar="ENDPOINT NODE",
                                     help="opc.tcp://host:port (or --mapping/--source instead); then, with "
                                          "--yaml, the node ids to print mapping lines for (good=ID, scrap=ID, "
                                          "order=ID to name the role)."),
    node: str = typer.Option("i=85", "--node", help="Start here (default: the Objects folder). nsu=…, ns=…, i=…"),
    depth: int = typer.Option(3, "--depth", min=0, help="Levels below the start node."),
    max_nodes: int = typer.Option(2000, "--max-nodes", min=1, help="Stop after this many nodes."),
    all_: bool = typer.Option(False, "--all", help="Also browse the server's own Server object (i=2253)."),
    yaml: bool = typer.Option(False, "--yaml", help="Print mapping lines for the NODEs given after the endpoint, "
                                                    "to paste under a machine in the mapping."),
    fmt: Format = typer.Option(Format.tree, "--format", help="tree, or json: one object per node and line."),
    username: str | None = typer.Option(None, "--username", help="Log in as this user (default: anonymous, "
                                        "or the mapping source's username)."),
    password_file: Path | None = typer.Option(None, "--password-file", help="File holding the password "
                                              f"(or set {PASSWORD_ENV}); never give it on the command line."),
    mapping: Path | None = typer.Option(None, "--mapping", "-m", help="Connect the way this mapping's source "
                                        "does (with --source)."),
    source: str | None = typer.Option(None, "--source", help="The mapping's OPC UA source to connect as."),
    timeout: float = typer.Option(10.0, "--timeout", min=0.1, help="Seconds to wait for each answer."),
) -> None:
    """Show a PLC's OPC UA address space as a tree, to pick counter and order tags.

    Each node with its nsu= id (stable across server restarts: use it in the mapping), browse name and class;
    variables with data type and current value. With --yaml and node ids: mapping lines for a machine.
    """
    from gateway import browse as b

    args = list(args or [])
    endpoint = _endpoint(args, mapping, source, username, password_file)
    picks = args if mapping is not None else args[1:]
    if picks and not yaml:
        fail("error: node ids after the endpoint are for --yaml; to browse below a node, give --node ID")
    if yaml and not picks:
        fail("error: --yaml needs the node ids to print, e.g. --yaml 'nsu=urn:…;s=Press01.GoodCount' "
             "(good=ID, scrap=ID, order=ID to name the role)")
    if yaml and fmt is not Format.tree:
        fail("error: --yaml prints YAML; leave out --format")
    try:
        with _quiet("asyncua"):
            if yaml:
                roles_ids = [b.parse_pick(p) for p in picks]
                nodes = asyncio.run(b.describe(endpoint, [nid for _, nid in roles_ids], timeout))
            else:
                result = asyncio.run(b.browse(endpoint, node, depth=depth, max_nodes=max_nodes,
                                              include_server=all_, timeout_s=timeout))
    except b.BrowseError as exc:
        fail(f"error: {exc}")
    if yaml:
        typer.echo("\n".join(b.mapping_yaml([(role, n) for (role, _), n in zip(roles_ids, nodes)], endpoint.shown)))
    elif fmt is Format.json:
        typer.echo("\n".join(b.render_json(result)))
        for line in b.notes(result):
            typer.echo(line, err=True)  # stdout stays one object per line
    else:
        typer.echo("\n".join(b.render_tree(result) + b.notes(result)))


@contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """asyncua logs warnings and tracebacks of its own; what goes wrong is reported here, in one line."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def _endpoint(args: list[str], mapping: Path | None, source: str | None, username: str | None,
              password_file: Path | None):
    """Where to connect and as whom: the ENDPOINT argument, or a mapping's source; options override."""
    from gateway.browse import Endpoint

    if (mapping is None) != (source is None):
        fail("error: --mapping and --source go together: the mapping file and the name of its OPC UA source")
    if mapping is None:
        if not args:
            fail("error: give the ENDPOINT (opc.tcp://host:port), or --mapping FILE --source NAME")
        if not args[0].startswith("opc.tcp://"):
            fail(f"error: {args[0]!r} is not an endpoint: it must start with opc.tcp://")
        endpoint = Endpoint(args[0])
    else:
        if args and args[0].startswith("opc.tcp://"):
            fail("error: give either the ENDPOINT or --mapping/--source, not both")
        endpoint = _from_mapping(mapping, source)
    password = _password(password_file)
    user = username or endpoint.username
    if password is not None and not user:
        fail("error: a password needs a user: give --username")
    return Endpoint(endpoint.url, user, password if password is not None else endpoint.password)


def _from_mapping(path: Path, name: str):
    """The endpoint and credentials of the mapping's source ``name``; the rest of the file may be unfinished."""
    from gateway.browse import Endpoint
    from gateway.mapping.load import read_mapping
    from pydantic import ValidationError

    from gateway.mapping.model import SourceConfig

    loaded = read_mapping(path)
    if loaded.doc is None:  # not YAML at all
        fail([str(e) for e in loaded.errors] + [f"error: cannot use {path}"])
    data = loaded.doc.data if isinstance(loaded.doc.data, dict) else {}
    sources = data.get("sources") if isinstance(data.get("sources"), dict) else {}
    if name not in sources:
        fail(f"error: {path} has no source {name!r}; it has: {', '.join(map(str, sources)) or 'none'}")
    # Only this source has to be right: the rest of a mapping being written may be unfinished.
    problems = [str(e) for e in loaded.errors if e.path == f"sources.{name}" or e.path.startswith(f"sources.{name}.")]
    if problems:
        fail(problems + [f"error: cannot use source {name!r} of {path}"])
    try:
        config = SourceConfig.model_validate(sources[name])
    except ValidationError as exc:  # reported at file:line above in all cases met so far; a net
        fail(f"error: source {name!r} of {path}: {exc.errors()[0]['msg']}")
    if config.opcua is None:
        fail(f"error: source {name!r} of {path} is a {config.protocol} source; browse reads OPC UA servers")
    if config.opcua.security:
        fail(f"error: source {name!r} of {path} uses `security:`; browse cannot open a secured session yet "
             f"(browse the endpoint without security if the server offers it)")
    secret = config.opcua.password
    return Endpoint(config.opcua.endpoint, config.opcua.username, secret.get_secret_value() if secret else None)


def _password(password_file: Path | None) -> str | None:
    if password_file is not None:
        try:
            return password_file.read_text().rstrip("\r\n")
        except OSError as exc:
            fail(f"error: cannot read the password file {password_file}: {exc.strerror or exc}")
    return os.environ.get(PASSWORD_ENV) or None


def register(app: typer.Typer) -> None:
    """Add ``browse`` to the CLI."""
    app.command("browse")(browse)
