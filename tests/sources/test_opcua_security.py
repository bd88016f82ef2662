"""Secured OPC UA against a real asyncua server: trust, refusals, and what each says.

The server offers Basic256Sha256/SignAndEncrypt with a user name login; its certificate
is made here with ``cryptography`` (``gateway.pki.make_certificate``) into a tmp folder.
Each case runs the real source until it connects or logs its first refusal, and pins
the salient part of the message an engineer reads.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asyncua import Server, ua
from asyncua.crypto import security_policies
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from structlog.testing import capture_logs
from typer.testing import CliRunner

from gateway.cli import app
from gateway.mapping.model import SecurityPolicyName
from gateway.pki import (
    CertInfo,
    Pki,
    describe,
    load_certificate,
    make_certificate,
    new_key,
    write_certificate,
    write_key,
)
from gateway.sources.base import TagSpec
from gateway.sources.opcua.source import OpcUaSource

from .conftest import Collector, PlcServer, fast_config, free_port, running

SERVER_URI = "urn:test:secure-plc"
GATEWAY_URI = "urn:test:backflush-gateway"
USER, PASSWORD = "operator", "s3cret-pw"
SIGN_AND_ENCRYPT = {"policy": "Basic256Sha256", "mode": "SignAndEncrypt"}


class Users:
    """One user: a wrong password is refused (the server answers BadUserAccessDenied)."""

    def get_user(self, iserver, username=None, password=None, certificate=None):  # noqa: ANN001, ANN201
        if username == USER and password == PASSWORD:
            return User(role=UserRole.User)
        return None


@dataclass
class SecurePlc:
    plc: PlcServer
    cert_file: Path
    info: CertInfo


async def start_secure_plc(
    folder: Path,
    *,
    policies: tuple[ua.SecurityPolicyType, ...] = (ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,),
    cert_uri: str = SERVER_URI,
    not_before: datetime | None = None,
    valid_days: int = 365,
    trusted_clients: Path | None = None,
) -> SecurePlc:
    """A PlcServer that requires security; ``trusted_clients``: refuse client certificates
    not in that folder, as a server with a real trust list does."""
    key = new_key()
    cert = make_certificate(key, "Secure PLC", cert_uri, ["127.0.0.1"], client=False,
                            not_before=not_before, valid_days=valid_days)
    cert_file, key_file = folder / "server.der", folder / "server.pem"
    write_certificate(cert, cert_file)
    write_key(key, key_file)

    async def configure(server: Server) -> None:
        await server.set_application_uri(SERVER_URI)
        server.set_security_policy(list(policies))
        server.set_identity_tokens([ua.UserNameIdentityToken])
        await server.load_certificate(str(cert_file))
        await server.load_private_key(str(key_file))
        options = CertificateValidatorOptions.EXT_VALIDATION | CertificateValidatorOptions.PEER_CLIENT
        if trusted_clients is not None:
            options |= CertificateValidatorOptions.TRUSTED
            from asyncua.crypto.truststore import TrustStore

            store = TrustStore([trusted_clients], [])
            await store.load()
            server.set_certificate_validator(CertificateValidator(options, store))
        else:
            server.set_certificate_validator(CertificateValidator(options))

    plc = PlcServer(free_port())
    await plc.start(user_manager=Users(), configure=configure)
    return SecurePlc(plc, cert_file, describe(cert, cert_file))


@pytest.fixture
async def secure_plc(tmp_path: Path) -> AsyncIterator[SecurePlc]:
    plc = await start_secure_plc(tmp_path)
    yield plc
    await plc.plc.stop()


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    store = Pki(tmp_path / "pki")
    store.init()
    return store


def trust(pki: Pki, server: SecurePlc) -> None:
    shutil.copy(server.cert_file, pki.folder("trusted/certs") / "plc.der")


def make_source(plc: PlcServer, pki: Pki, got: Collector, **settings: object) -> OpcUaSource:
    config = fast_config(plc.endpoint, **{"security": SIGN_AND_ENCRYPT, "username": USER, "password": PASSWORD,
                                          **settings})
    tags = [TagSpec("PRESS-01", "good", plc.address("Good"))]
    return OpcUaSource("press-line", config, tags, got, pki=pki, application_uri=GATEWAY_URI)


async def first_refusal(source: OpcUaSource, logs: list[dict], timeout: float = 8.0) -> dict:
    """Run the source until it logs its first ``opcua.disconnected``; that event."""
    async with running(source):
        deadline = time.monotonic() + timeout
        while not any(e["event"] == "opcua.disconnected" for e in logs):
            assert time.monotonic() < deadline, f"no refusal within {timeout}s: {logs}"
            await asyncio.sleep(0.02)
    return next(e for e in logs if e["event"] == "opcua.disconnected")


async def counts(plc: PlcServer, got: Collector, value: int = 7) -> None:
    await got.wait_for(lambda tv: tv.value == 0, timeout=8)
    await plc.write(("Good", value))
    await got.wait_for(lambda tv: tv.value == value, timeout=8)


# --- trusted, untrusted, trusted by the CLI ------------------------------------------------


async def test_trusted_server_connects_and_counts(secure_plc: SecurePlc, pki: Pki) -> None:
    trust(pki, secure_plc)
    got = Collector()
    with capture_logs() as logs:
        source = make_source(secure_plc.plc, pki, got)
        async with running(source):
            await counts(secure_plc.plc, got)
    session = next(e for e in logs if e["event"] == "opcua.session")
    assert (session["policy"], session["mode"], session["user"], session["server_certificate_sha1"]) == (
        "Basic256Sha256", "SignAndEncrypt", USER, secure_plc.info.thumbprint)
    assert session["endpoint"] == secure_plc.plc.endpoint
    created = next(e for e in logs if e["event"] == "opcua.own_certificate_created")
    own = describe(load_certificate(pki.own_certificate))
    assert (created["thumbprint_sha1"], created["application_uri"]) == (own.thumbprint, GATEWAY_URI)
    assert own.application_uri == GATEWAY_URI
    assert not any(PASSWORD in repr(e) for e in logs)  # never in a log line


async def test_untrusted_server_is_refused_and_trusted_with_the_cli(secure_plc: SecurePlc, pki: Pki) -> None:
    got = Collector()
    info = secure_plc.info
    with capture_logs() as logs:
        source = make_source(secure_plc.plc, pki, got)
        refused = await first_refusal(source, logs)
    saved = pki.folder("rejected/certs") / f"Secure PLC [{info.thumbprint}].der"
    assert refused["error"] == (
        f"BadCertificateUntrusted: the server's certificate is not trusted; {secure_plc.plc.endpoint} presents "
        f"CN=Secure PLC, SHA-1 thumbprint {info.thumbprint}, valid {info.validity}; saved as {saved}")
    assert refused["hint"] == ("compare the thumbprint with the one the server shows; if they match: "
                               f"gateway pki trust {info.thumbprint[:16]} --pki {pki.root}")
    assert [p.name for p in pki.folder("rejected/certs").iterdir()] == [saved.name]
    assert list(pki.folder("trusted/certs").iterdir()) == []  # nothing trusted by itself
    assert got.values == []

    result = CliRunner().invoke(app, ["pki", "trust", info.thumbprint[:16], "--pki", str(pki.root)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == f"trusted: CN=Secure PLC, SHA-1 thumbprint {info.thumbprint}"
    assert list(pki.folder("rejected/certs").iterdir()) == []

    source = make_source(secure_plc.plc, pki, got)
    async with running(source):
        await counts(secure_plc.plc, got)


async def test_pinned_server_certificate_needs_no_trust_list(secure_plc: SecurePlc, pki: Pki) -> None:
    got = Collector()
    async with running(make_source(secure_plc.plc, pki, got, server_certificate=secure_plc.info.sha256)):
        await counts(secure_plc.plc, got)
    wrong = "AB" * 32
    with capture_logs() as logs:
        refused = await first_refusal(make_source(secure_plc.plc, pki, Collector(), server_certificate=wrong), logs)
    assert refused["error"].startswith("BadCertificateUntrusted: the server's certificate is not the pinned one; ")
    assert list(pki.folder("rejected/certs").iterdir()) == []  # a pin mismatch is no candidate for trust


# --- refusals --------------------------------------------------------------------------------


async def test_wrong_password(secure_plc: SecurePlc, pki: Pki) -> None:
    trust(pki, secure_plc)
    with capture_logs() as logs:
        refused = await first_refusal(make_source(secure_plc.plc, pki, Collector(), password="N0t-the-Pa55"), logs)
    assert refused["error"].startswith("BadUserAccessDenied")
    assert refused["hint"] == ("the server refused the user: wrong username or password, or the user may not log "
                               "in there; check username/password of this source in the mapping (user 'operator')")
    assert not any("N0t-the-Pa55" in repr(e) for e in logs)


async def test_own_certificate_with_another_application_uri_is_refused_before_connecting(
    secure_plc: SecurePlc, pki: Pki, tmp_path: Path
) -> None:
    trust(pki, secure_plc)
    key = new_key()  # as made with openssl for another tool: asyncua's default URI in it
    write_certificate(make_certificate(key, "gw", "urn:example.org:FreeOpcUa:opcua-asyncio", ["localhost"]),
                      tmp_path / "gw.der")
    write_key(key, tmp_path / "gw.pem")
    with capture_logs() as logs:
        source = make_source(secure_plc.plc, pki, Collector(), certificate=str(tmp_path / "gw.der"),
                             private_key=str(tmp_path / "gw.pem"))
        refused = await first_refusal(source, logs)
    assert refused["error"] == (
        f"the gateway's certificate {tmp_path / 'gw.der'} would be refused by servers: the application URI "
        f"{GATEWAY_URI} is not in the certificate (it has urn:example.org:FreeOpcUa:opcua-asyncio)")
    assert refused["hint"].startswith("make `application_uri` in the mapping the URI in the certificate")


async def test_server_certificate_without_the_servers_application_uri(tmp_path: Path, pki: Pki) -> None:
    server = await start_secure_plc(tmp_path, cert_uri="urn:somewhere:else")
    try:
        trust(pki, server)
        with capture_logs() as logs:
            refused = await first_refusal(make_source(server.plc, pki, Collector()), logs)
    finally:
        await server.plc.stop()
    assert refused["error"].startswith(
        "BadCertificateUriInvalid: the server's application URI is not in its certificate; "
        f"{server.plc.endpoint} presents CN=Secure PLC, SHA-1 thumbprint {server.info.thumbprint}")


async def test_expired_server_certificate(tmp_path: Path, pki: Pki) -> None:
    server = await start_secure_plc(tmp_path, not_before=datetime.now(UTC) - timedelta(days=400), valid_days=30)
    try:
        trust(pki, server)
        with capture_logs() as logs:
            refused = await first_refusal(make_source(server.plc, pki, Collector()), logs)
    finally:
        await server.plc.stop()
    assert refused["error"].startswith(
        "BadCertificateTimeInvalid: the server's certificate is expired or not yet valid; ")
    assert refused["hint"].startswith("check the clocks of server and gateway")


async def test_policy_and_mode_the_server_does_not_offer(secure_plc: SecurePlc, pki: Pki) -> None:
    with capture_logs() as logs:
        source = make_source(secure_plc.plc, pki, Collector(), security={"policy": "Basic256Sha256", "mode": "Sign"})
        refused = await first_refusal(source, logs)
    assert refused["error"] == ("the server offers no endpoint with policy Basic256Sha256 and mode Sign "
                                "(it offers Basic256Sha256/SignAndEncrypt)")
    assert refused["hint"] == "set `security` in the mapping to one of the offered policy/mode pairs"


async def test_server_requires_security_but_the_mapping_says_none(secure_plc: SecurePlc, pki: Pki) -> None:
    with capture_logs() as logs:
        refused = await first_refusal(make_source(secure_plc.plc, pki, Collector(), security=None), logs)
    assert refused["error"] == ("the server offers no endpoint with policy None and mode None "
                                "(it offers Basic256Sha256/SignAndEncrypt): it requires security")
    assert refused["hint"].startswith(
        "set `security: {policy: Basic256Sha256, mode: SignAndEncrypt}` for this source in the mapping")
    assert not pki.own_certificate.exists()  # an unsecured source never makes a certificate


async def test_server_that_does_not_trust_the_gateway(tmp_path: Path, pki: Pki) -> None:
    clients = tmp_path / "server-trusts"
    # Someone else's certificate: the server trusts a client, just not the gateway.
    write_certificate(make_certificate(new_key(), "other client", "urn:other:client"), clients / "other.der")
    server = await start_secure_plc(tmp_path, trusted_clients=clients)
    try:
        trust(pki, server)
        with capture_logs() as logs:
            refused = await first_refusal(make_source(server.plc, pki, Collector()), logs)
    finally:
        await server.plc.stop()
    own = describe(load_certificate(pki.own_certificate))
    assert refused["error"].startswith("BadCertificateUntrusted")
    assert refused["hint"] == (
        "the server does not trust the gateway's certificate yet: trust it on the server (its rejected list, or "
        f"copy it into its trusted folder) (the gateway's certificate: {pki.own_certificate}, SHA-1 thumbprint "
        f"{own.thumbprint}, URI {GATEWAY_URI})")


def test_the_mapping_offers_exactly_the_policies_asyncua_has() -> None:
    names = set(SecurityPolicyName.__args__)
    have = {name.removeprefix("SecurityPolicy") for name, cls in vars(security_policies).items()
            if isinstance(cls, type) and issubclass(cls, security_policies.SecurityPolicy)
            and cls is not security_policies.SecurityPolicy}
    assert names == have


async def test_server_refusing_the_secure_channel(tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    """Servers such as UA-.NET refuse a client certificate in the OpenSecureChannel response
    (BadCertificateUseNotAllowed for one made with openssl); asyncua then fails with a bare
    AssertionError, which must not be what the engineer reads."""
    from asyncua.server.uaprocessor import UaProcessor
    from asyncua.ua.ua_binary import struct_from_binary

    original = UaProcessor.open_secure_channel

    def refusing(self, algohdr, seqhdr, body):  # noqa: ANN001, ANN202
        if algohdr.SecurityPolicyURI == security_policies.SecurityPolicyNone.URI:
            return original(self, algohdr, seqhdr, body)  # GetEndpoints still works
        request = struct_from_binary(ua.OpenSecureChannelRequest, body)
        self._connection.select_policy(algohdr.SecurityPolicyURI, algohdr.SenderCertificate,
                                       request.Parameters.SecurityMode)
        fault = ua.ServiceFault()
        fault.ResponseHeader.ServiceResult = ua.StatusCode(ua.StatusCodes.BadCertificateUseNotAllowed)
        self.send_response(request.RequestHeader.RequestHandle, seqhdr, fault, ua.MessageType.SecureOpen)

    monkeypatch.setattr(UaProcessor, "open_secure_channel", refusing)
    server = await start_secure_plc(tmp_path)
    try:
        trust(pki, server)
        with capture_logs() as logs:
            refused = await first_refusal(make_source(server.plc, pki, Collector()), logs)
    finally:
        await server.plc.stop()
    assert refused["error"] == "the server refused to open a secure channel with the gateway's certificate"
    own = describe(load_certificate(pki.own_certificate))
    assert refused["hint"].endswith(f"(the gateway's certificate: {pki.own_certificate}, SHA-1 thumbprint "
                                    f"{own.thumbprint}, URI {GATEWAY_URI})")
    assert "AssertionError" not in repr(logs)
