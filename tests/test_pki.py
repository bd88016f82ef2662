"""The PKI folder and `gateway pki …`: layout, the own certificate, trust, reject, remove, chains."""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asyncua import ua
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID
from structlog.testing import capture_logs
from typer.testing import CliRunner

from gateway.cli import app
from gateway.pki import (
    FOLDERS,
    CertificateRefused,
    Pki,
    PkiError,
    describe,
    load_certificate,
    make_certificate,
    new_key,
    own_certificate_problems,
    write_certificate,
)

URI = "urn:test-host:backflush-gateway"


def server_description(uri: str = "urn:test:plc") -> ua.ApplicationDescription:
    return ua.ApplicationDescription(ApplicationUri=uri, ApplicationType=ua.ApplicationType.Server)


def server_cert(name: str = "PLC", **kw: object) -> x509.Certificate:
    return make_certificate(new_key(), name, "urn:test:plc", ["127.0.0.1"], client=False, **kw)


def test_init_makes_the_standard_layout_and_an_own_certificate_servers_accept(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    assert [p.relative_to(pki.root).as_posix() for p in pki.init()] == list(FOLDERS)
    assert pki.init() == []
    info, created = pki.ensure_own(URI, hostname="plant-pc")
    assert created and pki.ensure_own(URI)[1] is False  # never replaced
    cert = load_certificate(pki.own_certificate)
    assert (info.application_uri, info.hosts, info.subject) == (URI, ("plant-pc",), "CN=Backflush Gateway@plant-pc")
    assert cert.public_key().key_size == 2048 and isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert (ku.digital_signature, ku.content_commitment, ku.key_encipherment, ku.data_encipherment) == (True,) * 4
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}
    assert own_certificate_problems(cert, URI) == []
    assert os.stat(pki.own_key).st_mode & 0o077 == 0  # the key is the owner's alone


def test_a_certificate_made_for_another_tool_is_named_for_what_servers_refuse(tmp_path: Path) -> None:
    cert = make_certificate(new_key(), "openssl", "urn:example.org:FreeOpcUa:opcua-asyncio", client=False,
                            not_before=datetime.now(UTC) - timedelta(days=10), valid_days=5)
    assert own_certificate_problems(cert, URI) == [
        f"the application URI {URI} is not in the certificate (it has urn:example.org:FreeOpcUa:opcua-asyncio)",
        "extended key usage lacks clientAuth",
        f"not valid now (valid {describe(cert).validity})",
    ]


async def test_untrusted_goes_to_rejected_then_trust_reject_remove(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    pki.init()
    cert = server_cert()
    info = describe(cert)
    with pytest.raises(CertificateRefused) as refused:
        await pki.check_server_certificate(cert, server_description(), endpoint="opc.tcp://plc:4840", host="127.0.0.1")
    assert refused.value.status == "BadCertificateUntrusted"
    rejected = pki.folder("rejected/certs") / f"PLC [{info.thumbprint}].der"
    assert rejected.is_file()

    assert pki.trust(info.thumbprint[:6].lower()).path == pki.folder("trusted/certs") / rejected.name
    assert not rejected.exists()
    assert (await pki.check_server_certificate(cert, server_description(), endpoint="e", host="127.0.0.1")) == info

    pki.reject(rejected.name)  # by file name
    assert [c.folder for c in pki.certificates()] == ["rejected"]
    with pytest.raises(CertificateRefused):
        await pki.check_server_certificate(cert, server_description(), endpoint="e", host="127.0.0.1")
    pki.remove(info.sha256[:10])  # a SHA-256 prefix names it too
    assert pki.certificates() == []


def test_trust_a_file_and_refuse_unclear_references(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    pki.init()
    write_certificate(server_cert(), tmp_path / "from-the-plc.der")
    trusted = pki.trust(str(tmp_path / "from-the-plc.der"))
    assert trusted.folder == "trusted" and (tmp_path / "from-the-plc.der").is_file()  # copied, not moved
    with pytest.raises(PkiError, match=r"^no certificate with thumbprint 0000… in rejected, trusted, issuers"):
        pki.trust("0000")
    with pytest.raises(PkiError, match=r"give a file name or at least 4 hex digits"):
        pki.trust("ab")


async def test_a_server_signed_by_a_trusted_ca_is_trusted_unless_revoked(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    pki.init()
    ca_key = new_key()
    ca = make_certificate(ca_key, "Plant CA", None, ca=True)
    write_certificate(ca, pki.folder("trusted/certs") / "plant-ca.der")
    cert = server_cert(issuer=(ca, ca_key))
    assert pki.is_trusted(cert)
    assert not pki.is_trusted(server_cert())  # another self-signed one
    crl = (x509.CertificateRevocationListBuilder().issuer_name(ca.subject)
           .last_update(datetime.now(UTC)).next_update(datetime.now(UTC) + timedelta(days=1))
           .add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(cert.serial_number)
                                    .revocation_date(datetime.now(UTC)).build())
           .sign(ca_key, hashes.SHA256()))
    from cryptography.hazmat.primitives import serialization

    (pki.folder("trusted/crl") / "plant-ca.crl").write_bytes(crl.public_bytes(serialization.Encoding.DER))
    assert not pki.is_trusted(cert)


async def test_host_name_must_be_in_the_certificate_when_it_names_hosts(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    cert = server_cert()
    with pytest.raises(CertificateRefused) as refused:
        await pki.check_server_certificate(cert, server_description(), endpoint="opc.tcp://plc-7:4840",
                                           host="plc-7", pin=describe(cert).sha256)
    assert refused.value.reason.startswith(
        "BadCertificateHostNameInvalid: the endpoint's host plc-7 is not in the server's certificate "
        "(it names 127.0.0.1); opc.tcp://plc-7:4840 presents CN=PLC")


def test_cli_init_show_list_trust_with_the_mapping(tmp_path: Path) -> None:
    (tmp_path / "plant").mkdir()
    mapping = tmp_path / "plant" / "plant.yaml"
    mapping.write_text(f"pki: certificates\napplication_uri: {URI}\nsources: {{}}\nmachines: {{}}\n")
    run = CliRunner().invoke
    init = run(app, ["pki", "init", "--mapping", str(mapping)])
    assert init.exit_code == 0, init.output
    pki = Pki(tmp_path / "plant" / "certificates")  # next to the mapping, whatever the working directory
    own = describe(load_certificate(pki.own_certificate))
    assert f"  application URI:  {URI}" in init.output.splitlines()
    assert f"  SHA-1 thumbprint: {own.thumbprint}" in init.output.splitlines()
    show = run(app, ["pki", "show", "--pki", str(pki.root)])
    assert f"  SHA-256:          {own.sha256}" in show.output.splitlines()
    assert "problem" not in run(app, ["pki", "show", "--mapping", str(mapping)]).output
    assert "  problem:          the application URI" in show.output  # --pki: the default URI is not in it

    plc = server_cert()
    pki.save_rejected(plc)
    listed = run(app, ["pki", "list", "--mapping", str(mapping)]).output.splitlines()
    assert [line.split()[:2] for line in listed] == [["rejected", describe(plc).thumbprint],
                                                     ["own", own.thumbprint]]
    refused = run(app, ["pki", "trust", "00" * 20, "--pki", str(pki.root)])
    assert refused.exit_code == 1
    assert refused.output.strip() == (f"refused: no certificate with thumbprint {'00' * 20}… in rejected, trusted, "
                                      "issuers (`gateway pki list` shows them)")
    ok = run(app, ["pki", "trust", describe(plc).thumbprint[:8], "--mapping", str(mapping)])
    assert ok.exit_code == 0 and ok.output.startswith(f"trusted: CN=PLC, SHA-1 thumbprint {describe(plc).thumbprint}")


async def test_publish_loop_tracebacks_become_one_line() -> None:
    import gateway.sources.opcua.source  # noqa: F401 - installs the filter

    logger = logging.getLogger("asyncua.client.ua_session.UaSession")
    level = logger.level
    logger.setLevel(logging.WARNING)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        with capture_logs() as logs:
            try:
                raise ua.UaStatusCodeError(ua.StatusCodes.BadSessionClosed)
            except ua.UaStatusCodeError:
                logger.exception("Publish iteration crashed; retrying in 1s")
            await asyncio.sleep(0)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert records == []  # no traceback reaches the log
    assert [(e["event"], e["hint"]) for e in logs] == [
        ("opcua.publish_failed", "the server closed the session (restart or timeout); reconnecting")]
    assert logs[0]["error"].startswith("BadSessionClosed")
