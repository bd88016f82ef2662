"""Commands for the OPC UA certificate folder: ``gateway pki init | show | list | trust | reject | remove``.

Presentation only: the folder, its layout and what trusting means are
``gateway.pki``'s. The folder comes from ``--mapping M`` (its ``pki:`` key, default
``pki`` next to the mapping; and its ``application_uri``) or ``--pki DIR``. Thumbprints
shown are SHA-1, upper-case hex (what OPC UA servers display). A refused operation
(unknown or ambiguous certificate, unreadable mapping) is one line on stderr and exit
code 1, never a traceback. Nothing here ever prints a private key.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import typer

from gateway.cli.common import fail

MappingOption = typer.Option(None, "--mapping", "-m", help="Mapping file: its `pki:` folder and `application_uri`.")
PkiOption = typer.Option(None, "--pki", help="PKI folder (instead of --mapping).")


def _pki_and_uri(mapping: Path | None, pki: Path | None) -> tuple[object, str]:
    from gateway.pki import Pki, default_application_uri

    if mapping is not None and pki is not None:
        fail("give --mapping or --pki, not both")
    if mapping is None:
        return Pki(pki or "pki"), default_application_uri()
    from gateway.inputfile.errors import InputFileError
    from gateway.mapping.load import load_mapping

    try:
        loaded = load_mapping(mapping)
    except InputFileError as exc:
        fail(exc.lines())
    return Pki(loaded.pki or "pki"), loaded.application_uri or default_application_uri()


def _line(info) -> str:  # noqa: ANN001 - a gateway.pki.CertInfo
    state = "EXPIRED" if info.not_after < datetime.now(UTC) else f"expires {info.not_after:%Y-%m-%d}"
    return f"{info.folder:<9} {info.thumbprint}  {state}  {info.subject}  ({info.path.name})"


def pki_init(mapping: Path | None = MappingOption, pki: Path | None = PkiOption) -> None:
    """Create the PKI folders and the gateway's own certificate (if missing); show the certificate."""
    from gateway.pki import PkiError

    store, uri = _pki_and_uri(mapping, pki)
    created = store.init()
    try:
        own, new = store.ensure_own(uri)
    except PkiError as exc:
        fail(str(exc))
    typer.echo(f"{store.root}: {len(created)} folder(s) created" if created else f"{store.root}: folders exist")
    typer.echo(("created" if new else "kept") + f" the gateway's certificate {own.path}")
    _show(own)
    typer.echo("Next: trust this certificate on the OPC UA server (copy the file into its trusted folder, or "
               "accept it there after the first refused connect, comparing the SHA-1 thumbprint).")


def _show(info) -> None:  # noqa: ANN001 - a gateway.pki.CertInfo
    typer.echo(f"  subject:          {info.subject}")
    typer.echo(f"  application URI:  {info.application_uri or '-'}")
    typer.echo(f"  hosts:            {', '.join(info.hosts) or '-'}")
    typer.echo(f"  valid:            {info.validity}")
    typer.echo(f"  SHA-1 thumbprint: {info.thumbprint}")
    typer.echo(f"  SHA-256:          {info.sha256}")


def pki_show(mapping: Path | None = MappingOption, pki: Path | None = PkiOption) -> None:
    """Show the gateway's own certificate: what to compare on the server."""
    from gateway.pki import PkiError, describe, load_certificate, own_certificate_problems

    store, uri = _pki_and_uri(mapping, pki)
    if not store.own_certificate.is_file():
        fail(f"no certificate at {store.own_certificate} yet; `gateway pki init` makes one "
             "(the gateway also makes it on its first secured connect)")
    try:
        cert = load_certificate(store.own_certificate)
    except PkiError as exc:
        fail(str(exc))
    typer.echo(f"{store.own_certificate}")
    _show(describe(cert, store.own_certificate, "own"))
    for problem in own_certificate_problems(cert, uri):
        typer.echo(f"  problem:          {problem}")


def pki_list(mapping: Path | None = MappingOption, pki: Path | None = PkiOption) -> None:
    """Every certificate: folder, SHA-1 thumbprint, expiry, subject, file."""
    store, _ = _pki_and_uri(mapping, pki)
    if not store.root.is_dir():
        fail(f"no PKI folder at {store.root}; `gateway pki init` creates it")
    certs = store.certificates(("trusted", "rejected", "issuers", "own"))
    if not certs:
        typer.echo(f"{store.root}: no certificates")
    for info in certs:
        typer.echo(_line(info))


def _act(action: str, ref: str, mapping: Path | None, pki: Path | None) -> None:
    from gateway.pki import PkiError

    store, _ = _pki_and_uri(mapping, pki)
    try:
        info = getattr(store, action)(ref)
    except (PkiError, OSError) as exc:
        fail(f"refused: {exc}")
    done = {"trust": "trusted", "reject": "rejected", "remove": "removed"}[action]
    typer.echo(f"{done}: {info.subject}, SHA-1 thumbprint {info.thumbprint}")
    typer.echo(f"  {'was' if action == 'remove' else 'now'} {info.path}")


CertArgument = typer.Argument(..., help="File name or thumbprint prefix (SHA-1 or SHA-256, at least 4 hex digits); "
                                        "for trust also a certificate file anywhere.")


def pki_trust(certificate: str = CertArgument, mapping: Path | None = MappingOption,
              pki: Path | None = PkiOption) -> None:
    """Trust a server certificate: move it from rejected to trusted (or copy a file there)."""
    _act("trust", certificate, mapping, pki)


def pki_reject(certificate: str = CertArgument, mapping: Path | None = MappingOption,
               pki: Path | None = PkiOption) -> None:
    """Stop trusting a certificate: move it from trusted to rejected."""
    _act("reject", certificate, mapping, pki)


def pki_remove(certificate: str = CertArgument, mapping: Path | None = MappingOption,
               pki: Path | None = PkiOption) -> None:
    """Delete a certificate from trusted, rejected or issuers."""
    _act("remove", certificate, mapping, pki)


def register(app: typer.Typer) -> None:
    """Add the ``pki`` group to the CLI."""
    pki_app = typer.Typer(no_args_is_help=True, help="OPC UA certificates: the gateway's own and the servers' it trusts.")
    pki_app.command("init")(pki_init)
    pki_app.command("show")(pki_show)
    pki_app.command("list")(pki_list)
    pki_app.command("trust")(pki_trust)
    pki_app.command("reject")(pki_reject)
    pki_app.command("remove")(pki_remove)
    app.add_typer(pki_app, name="pki")
