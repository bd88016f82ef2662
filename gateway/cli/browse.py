"""Command ``gateway browse``: see a PLC's OPC UA address space and pick counter tags.

Presentation only: reading is ``gateway.browse``'s. How to connect comes from a mapping's
source (``--mapping``/``--source``, loaded as the gateway loads it) or from the options,
which say what a source's ``opcua:`` says (``--security``, ``--server-certificate``) and
where the PKI is. The password comes from a file or the environment, never from the
command line (``ps`` would show it), and is never printed. Every failure is one line on
stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path

import typer

from gateway.cli.common import fail

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
    security: str | None = typer.Option(None, "--security", metavar="POLICY:MODE",
                                        help="Secure the connection as a source's `security:` does, e.g. "
                                             "Basic256Sha256:SignAndEncrypt (default: none; with --mapping: "
                                             "the source's)."),
    pki: Path | None = typer.Option(None, "--pki", help="PKI folder: the gateway's certificate and the server "
                                    "certificates it trusts (default: pki; with --mapping: the mapping's)."),
    application_uri: str | None = typer.Option(None, "--application-uri", help="What the gateway calls itself "
                                               "(default: urn:<host name>:backflush-gateway; with --mapping: "
                                               "the mapping's)."),
    server_certificate: str | None = typer.Option(None, "--server-certificate", metavar="PIN",
                                                  help="Trust only this server certificate (its SHA-256 or SHA-1 "
                                                       "thumbprint, or its file) instead of the PKI's trust list."),
    timeout: float = typer.Option(10.0, "--timeout", min=0.1, help="Seconds to wait for each answer."),
) -> None:
    """Show a PLC's OPC UA address space as a tree, to pick counter and order tags.

    Each node with its nsu= id (stable across server restarts: use it in the mapping), browse name and class;
    variables with data type and current value. With --yaml and node ids: mapping lines for a machine.
    """
    from gateway import browse as b

    args = list(args or [])
    endpoint = _endpoint(args, mapping, source, username, password_file, security, pki, application_uri,
                         server_certificate)
    picks = args if mapping is not None else args[1:]
    if picks and not yaml:
        fail("error: node ids after the endpoint are for --yaml; to browse below a node, give --node ID")
    if yaml and not picks:
        fail("error: --yaml needs the node ids to print, e.g. --yaml 'nsu=urn:…;s=Press01.GoodCount' "
             "(good=ID, scrap=ID, order=ID to name the role)")
    if yaml and fmt is not Format.tree:
        fail("error: --yaml prints YAML; leave out --format")
    log = _stderr_log()
    try:
        with _quiet("asyncua"):
            if yaml:
                roles_ids = [b.parse_pick(p) for p in picks]
                nodes = asyncio.run(b.describe(endpoint, [nid for _, nid in roles_ids], timeout, log))
            else:
                result = asyncio.run(b.browse(endpoint, node, depth=depth, max_nodes=max_nodes,
                                              include_server=all_, timeout_s=timeout, log=log))
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


def _stderr_log():
    """Where the one log line browse can cause goes: the gateway's certificate made on the
    first secured connect, with the thumbprint to trust on the server. On stderr, as stdout
    may be JSON; a logger of its own, as a command run in-process (tests, an embedding
    program) must not change how the process logs afterwards."""
    import structlog

    return structlog.wrap_logger(
        structlog.PrintLogger(sys.stderr),
        processors=[structlog.processors.add_log_level, structlog.dev.ConsoleRenderer(colors=False)],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def _endpoint(args: list[str], mapping: Path | None, source: str | None, username: str | None,
              password_file: Path | None, security: str | None, pki: Path | None, application_uri: str | None,
              server_certificate: str | None):
    """Where to connect, how and as whom: the ENDPOINT argument and the options, or a mapping's
    source; --username and the password override the source's."""
    from dataclasses import replace

    from pydantic import SecretStr

    if (mapping is None) != (source is None):
        fail("error: --mapping and --source go together: the mapping file and the name of its OPC UA source")
    if mapping is None:
        if not args:
            fail("error: give the ENDPOINT (opc.tcp://host:port), or --mapping FILE --source NAME")
        if not args[0].startswith("opc.tcp://"):
            fail(f"error: {args[0]!r} is not an endpoint: it must start with opc.tcp://")
        endpoint = _from_options(args[0], security, pki, application_uri, server_certificate)
    else:
        if args and args[0].startswith("opc.tcp://"):
            fail("error: give either the ENDPOINT or --mapping/--source, not both")
        options = {"--security": security, "--pki": pki, "--application-uri": application_uri,
                   "--server-certificate": server_certificate}
        given = [option for option, value in options.items() if value is not None]
        if given:
            fail(f"error: {', '.join(given)}: with --mapping/--source, browse connects as the source does (its "
                 f"`security:` and `server_certificate:`, the mapping's `pki:` and `application_uri:`); "
                 f"change the mapping, or give the ENDPOINT instead")
        endpoint = _from_mapping(mapping, source)
    config = endpoint.config
    password = _password(password_file)
    user = username or config.username
    if password is not None and not user:
        fail("error: a password needs a user: give --username")
    changes = {"username": user} | ({"password": SecretStr(password)} if password is not None else {})
    return replace(endpoint, config=config.model_copy(update=changes))


def _from_options(url: str, security: str | None, pki: Path | None, application_uri: str | None,
                  server_certificate: str | None):
    """A source made from the command line, as a mapping's ``opcua:`` would say it."""
    from gateway.browse import Endpoint
    from gateway.mapping.model import OpcUaSource, is_thumbprint
    from gateway.pki import Pki, PkiError, default_application_uri, load_certificate

    if server_certificate is not None and not is_thumbprint(server_certificate):
        try:
            load_certificate(server_certificate)
        except PkiError as exc:
            fail(f"error: --server-certificate: {exc}; give the server's certificate file or its SHA-256 or SHA-1 "
                 f"thumbprint")
    config = OpcUaSource(endpoint=url, security=_security(security) if security else None,
                         server_certificate=server_certificate or None)
    return Endpoint(config, Pki(pki or "pki"), application_uri or default_application_uri())


def _security(text: str):
    """``POLICY:MODE`` as the mapping's ``security: {policy, mode}``, checked against the same names."""
    from typing import get_args

    from pydantic import ValidationError

    from gateway.mapping.model import Security, SecurityModeName, SecurityPolicyName

    policies, modes = get_args(SecurityPolicyName), get_args(SecurityModeName)
    policy, sep, mode = text.partition(":")
    where = f"error: --security {text!r}"
    if not sep:
        fail(f"{where}: write POLICY:MODE, e.g. Basic256Sha256:SignAndEncrypt")
    if policy not in policies:
        fail(f"{where}: unknown policy {policy!r}; the policies are {', '.join(policies)}")
    if mode not in modes:
        fail(f"{where}: unknown mode {mode!r}; the modes are {', '.join(modes)}")
    try:
        return Security(policy=policy, mode=mode)
    except ValidationError as exc:  # policy None with a mode, or a policy without one
        fail(f"{where}: {exc.errors()[0]['ctx']['error']}")


def _from_mapping(path: Path, name: str):
    """The mapping's source ``name`` as ``read_mapping`` loads it (password file read, ``${NAME}``
    expanded, paths relative to the mapping), with the mapping's PKI folder and application
    URI; the rest of the file may be unfinished."""
    from gateway.browse import Endpoint
    from gateway.mapping.load import read_mapping
    from gateway.pki import Pki, default_application_uri

    loaded = read_mapping(path, unfinished=True)
    if loaded.doc is None:  # not YAML at all
        fail([str(e) for e in loaded.errors] + [f"error: cannot use {path}"])
    data = loaded.doc.data if isinstance(loaded.doc.data, dict) else {}
    sources = data.get("sources") if isinstance(data.get("sources"), dict) else {}
    if name not in sources:
        fail(f"error: {path} has no source {name!r}; it has: {', '.join(map(str, sources)) or 'none'}")
    mapping = loaded.model
    config = mapping.sources.get(name) if mapping is not None else None
    # Only this source has to be right (and, when it is secured, where its certificates are
    # and what the gateway calls itself): the rest of a mapping being written may be unfinished.
    secured = config is not None and config.opcua is not None and config.opcua.secured
    keys = [f"sources.{name}"] + (["pki", "application_uri"] if secured else [])
    problems = [str(e) for e in loaded.errors if any(e.path == k or e.path.startswith(f"{k}.") for k in keys)]
    if problems or config is None:  # without problems of its own, a source is in the valid part; a net
        fail((problems or [str(e) for e in loaded.errors]) + [f"error: cannot use source {name!r} of {path}"])
    if config.opcua is None:
        fail(f"error: source {name!r} of {path} is a {config.protocol} source; browse reads OPC UA servers")
    return Endpoint(config.opcua, Pki(mapping.pki or "pki"), mapping.application_uri or default_application_uri(),
                    from_mapping=True)


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
