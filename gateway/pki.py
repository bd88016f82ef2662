"""The gateway's OPC UA certificate store (PKI): its own certificate and whom it trusts.

Laid out as OPC UA applications lay it out (UA-.NETStandard, open62541, node-opcua), so
that an engineer who knows one knows this one::

    own/certs        the gateway's application instance certificate (gateway.der)
    own/private      its private key (gateway.pem)
    trusted/certs    server certificates (or CA certificates) the gateway trusts
    trusted/crl      revocation lists of those CAs
    issuers/certs    CA certificates that complete a chain, not trusted by themselves
    issuers/crl      their revocation lists
    rejected/certs   server certificates that were refused: `gateway pki trust` moves one to trusted

For: creating the folders and the own certificate (RSA 2048, SHA-256, the application
URI and host name in the subject alternative name, the key usages servers check);
listing, trusting, rejecting and removing certificates; and checking a server's
certificate against the trust list or a pin (``check_server_certificate``).

Certificates are named by their SHA-1 thumbprint, upper-case hex: the OPC UA thumbprint
(Part 6) and what server UIs show, so an engineer can compare it with the server's own
display. ``CertInfo.sha256`` is there too, for pins.

Must never: trust a certificate nobody put into ``trusted/certs`` (nothing is accepted
automatically, a refused one only lands in ``rejected/certs``), overwrite an existing
own certificate or key, or log or print a private key.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.mapping.model import is_thumbprint

__all__ = [
    "FOLDERS",
    "CertInfo",
    "CertificateRefused",
    "Pki",
    "PkiError",
    "default_application_uri",
    "describe",
    "load_certificate",
    "make_certificate",
    "own_certificate_problems",
]

FOLDERS = (
    "own/certs", "own/private", "trusted/certs", "trusted/crl",
    "issuers/certs", "issuers/crl", "rejected/certs",
)
# Where each listed folder's certificates are, by the name `gateway pki list` shows.
_CERT_FOLDERS = {"own": "own/certs", "trusted": "trusted/certs", "issuers": "issuers/certs", "rejected": "rejected/certs"}
OWN_CERT = "own/certs/gateway.der"
OWN_KEY = "own/private/gateway.pem"
OWN_VALID_DAYS = 5 * 365
_CERT_SUFFIXES = (".der", ".pem", ".crt", ".cer")
_HEX = re.compile(r"[0-9A-F]+\Z")


class PkiError(Exception):
    """A PKI operation that cannot be done; the message says why, for people."""


def default_application_uri(hostname: str | None = None) -> str:
    """``urn:<hostname>:backflush-gateway``: what the gateway calls itself unless the mapping says."""
    return f"urn:{hostname or socket.gethostname()}:backflush-gateway"


# --- reading certificates ---------------------------------------------------------------


def load_certificate(path: str | os.PathLike[str]) -> x509.Certificate:
    """A certificate from a DER or PEM file; PkiError (with the file) if it is not one."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise PkiError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise PkiError(f"{path} is not an X.509 certificate (DER or PEM)") from None


def thumbprint(cert: x509.Certificate) -> str:
    """SHA-1 of the DER encoding, upper-case hex: the OPC UA certificate thumbprint."""
    return hashlib.sha1(_der(cert)).hexdigest().upper()  # noqa: S324 - an identifier, not a signature


def sha256_thumbprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(_der(cert)).hexdigest().upper()


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True)
class CertInfo:
    """What an engineer needs to recognise a certificate."""

    folder: str  # own / trusted / issuers / rejected, or "" for a file outside the PKI
    path: Path
    subject: str
    thumbprint: str  # SHA-1, upper-case hex
    sha256: str
    not_before: datetime
    not_after: datetime
    application_uri: str | None
    hosts: tuple[str, ...]

    @property
    def validity(self) -> str:
        return f"{self.not_before:%Y-%m-%d} .. {self.not_after:%Y-%m-%d}"

    def expired(self, now: datetime | None = None) -> bool:
        now = now or datetime.now(UTC)
        return not self.not_before <= now <= self.not_after


def describe(cert: x509.Certificate, path: Path | str = "", folder: str = "") -> CertInfo:
    uris, hosts = _san(cert)
    return CertInfo(
        folder=folder,
        path=Path(path),
        subject=cert.subject.rfc4514_string(),
        thumbprint=thumbprint(cert),
        sha256=sha256_thumbprint(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        application_uri=uris[0] if uris else None,
        hosts=tuple(hosts),
    )


def _san(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    hosts = san.get_values_for_type(x509.DNSName) + [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return san.get_values_for_type(x509.UniformResourceIdentifier), hosts


# --- making certificates ------------------------------------------------------------------


def make_certificate(
    key: rsa.RSAPrivateKey,
    common_name: str,
    application_uri: str | None,
    hosts: Sequence[str] = (),
    *,
    server: bool = True,
    client: bool = True,
    not_before: datetime | None = None,
    valid_days: int = OWN_VALID_DAYS,
    issuer: tuple[x509.Certificate, rsa.RSAPrivateKey] | None = None,
    ca: bool = False,
) -> x509.Certificate:
    """An OPC UA application instance certificate (self-signed unless ``issuer``), SHA-256.

    The key usages are those OPC UA peers check (Part 6, 6.2.2): digitalSignature,
    nonRepudiation, keyEncipherment, dataEncipherment; extended usages serverAuth and/or
    clientAuth; the application URI and the host names in the subject alternative name.
    ``ca=True`` makes a CA certificate instead (keyCertSign, cRLSign).
    """
    start = not_before or datetime.now(UTC) - timedelta(minutes=5)  # a peer's clock a little behind
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
        ), critical=True)
    else:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=True, key_encipherment=True, data_encipherment=True,
            key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
        ), critical=True)
        usages = [u for u, on in ((ExtendedKeyUsageOID.SERVER_AUTH, server), (ExtendedKeyUsageOID.CLIENT_AUTH, client))
                  if on]
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    alt: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri)] if application_uri else []
    for host in hosts:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt.append(x509.DNSName(host))
    if alt:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()), critical=False)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def write_certificate(cert: x509.Certificate, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_der(cert))


def write_key(key: rsa.RSAPrivateKey, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    # Created owner-only: the key never exists readable by others, not even for a moment.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)


def own_certificate_problems(cert: x509.Certificate, application_uri: str) -> list[str]:
    """Why a server would refuse this as the gateway's certificate; empty if it would not.

    What servers check (Part 4, 6.1.3; Part 6, 6.2.2): the application URI the client
    states is in the certificate, the key usages, clientAuth, the validity period.
    """
    problems = []
    info = describe(cert)
    uris, _ = _san(cert)
    if application_uri not in uris:
        has = f"it has {', '.join(uris)}" if uris else "it has no URI in its subject alternative name"
        problems.append(f"the application URI {application_uri} is not in the certificate ({has})")
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        missing = [n for n, on in (("digitalSignature", ku.digital_signature), ("nonRepudiation", ku.content_commitment),
                                   ("keyEncipherment", ku.key_encipherment), ("dataEncipherment", ku.data_encipherment))
                   if not on]
    except x509.ExtensionNotFound:
        missing = ["digitalSignature", "nonRepudiation", "keyEncipherment", "dataEncipherment"]
    if missing:
        problems.append(f"key usage lacks {', '.join(missing)}")
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
            problems.append("extended key usage lacks clientAuth")
    except x509.ExtensionNotFound:
        problems.append("extended key usage lacks clientAuth")
    if info.expired():
        problems.append(f"not valid now (valid {info.validity})")
    return problems


# --- the folder ------------------------------------------------------------------------------


class CertificateRefused(Exception):
    """A server certificate the gateway does not accept: ``status`` is the OPC UA status
    code name, ``reason`` the one-line why, ``hint`` what to do next."""

    def __init__(self, status: str, reason: str, hint: str, info: CertInfo) -> None:
        super().__init__(reason)
        self.status, self.reason, self.hint, self.info = status, reason, hint, info


class Pki:
    """One PKI folder (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def folder(self, name: str) -> Path:
        return self.root / name

    @property
    def own_certificate(self) -> Path:
        return self.root / OWN_CERT

    @property
    def own_key(self) -> Path:
        return self.root / OWN_KEY

    def init(self) -> list[Path]:
        """Create the folders that are missing; returns those it created."""
        created = []
        for name in FOLDERS:
            path = self.folder(name)
            if not path.is_dir():
                path.mkdir(parents=True, exist_ok=True)
                created.append(path)
        os.chmod(self.folder("own/private"), 0o700)
        return created

    def ensure_own(self, application_uri: str, hostname: str | None = None) -> tuple[CertInfo, bool]:
        """The own certificate, created (with its key) if there is none; True if created now."""
        if self.own_certificate.is_file():
            return describe(load_certificate(self.own_certificate), self.own_certificate, "own"), False
        if self.own_key.exists():
            raise PkiError(f"{self.own_key} exists without {self.own_certificate}: restore the certificate, "
                           "or remove the key to have a new pair made (the server must then trust the new one)")
        self.init()
        host = hostname or socket.gethostname()
        key = new_key()
        cert = make_certificate(key, f"Backflush Gateway@{host}", application_uri, [host], server=True, client=True)
        write_key(key, self.own_key)
        write_certificate(cert, self.own_certificate)
        return describe(cert, self.own_certificate, "own"), True

    def certificates(self, folders: Iterable[str] = _CERT_FOLDERS) -> list[CertInfo]:
        """Every certificate in the given folders (own, trusted, issuers, rejected), by folder and name."""
        found = []
        for folder in folders:
            base = self.folder(_CERT_FOLDERS[folder])
            if not base.is_dir():
                continue
            for path in sorted(base.iterdir()):
                if path.is_file() and path.suffix.lower() in _CERT_SUFFIXES:
                    try:
                        found.append(describe(load_certificate(path), path, folder))
                    except PkiError:
                        continue  # not a certificate: `pki list` must still show the others
        return found

    def find(self, ref: str, folders: Iterable[str] = ("rejected", "trusted", "issuers")) -> CertInfo:
        """The one certificate ``ref`` names: a file name, or a prefix of its SHA-1 or
        SHA-256 thumbprint (hex, colons and spaces ignored)."""
        candidates = self.certificates(folders)
        by_name = [c for c in candidates if ref in (c.path.name, c.path.stem)]
        if by_name:
            return by_name[0]
        prefix = re.sub(r"[\s:]", "", ref).upper()
        if len(prefix) < 4 or not _HEX.match(prefix):
            raise PkiError(f"no certificate named {ref!r} in {', '.join(folders)} (give a file name or at least "
                           "4 hex digits of the thumbprint; `gateway pki list` shows them)")
        hits = [c for c in candidates if c.thumbprint.startswith(prefix) or c.sha256.startswith(prefix)]
        unique = {c.thumbprint: c for c in hits}
        if not unique:
            raise PkiError(f"no certificate with thumbprint {prefix}… in {', '.join(folders)} "
                           "(`gateway pki list` shows them)")
        if len(unique) > 1:
            raise PkiError(f"thumbprint {prefix}… is ambiguous: {', '.join(sorted(unique))}; give more digits")
        return hits[0]

    def trust(self, ref: str) -> CertInfo:
        """Move a rejected certificate to trusted/certs, or copy a certificate file there."""
        if Path(ref).is_file() and not self._inside(Path(ref)):
            cert = load_certificate(ref)
            target = self._store(cert, "trusted/certs")
            return describe(cert, target, "trusted")
        info = self.find(ref)
        if info.folder == "trusted":
            return info
        cert = load_certificate(info.path)
        target = self._store(cert, "trusted/certs")
        if info.folder == "rejected":
            info.path.unlink()
        return describe(cert, target, "trusted")

    def reject(self, ref: str) -> CertInfo:
        """Move a trusted certificate to rejected/certs: the server is refused from the next connect on."""
        info = self.find(ref, ("trusted",))
        cert = load_certificate(info.path)
        target = self._store(cert, "rejected/certs")
        info.path.unlink()
        return describe(cert, target, "rejected")

    def remove(self, ref: str) -> CertInfo:
        """Delete a certificate from trusted, rejected or issuers."""
        info = self.find(ref)
        info.path.unlink()
        return info

    def save_rejected(self, cert: x509.Certificate) -> Path:
        """Keep a refused server certificate where `gateway pki trust` finds it."""
        return self._store(cert, "rejected/certs")

    def _store(self, cert: x509.Certificate, folder: str) -> Path:
        base = self.folder(folder)
        base.mkdir(parents=True, exist_ok=True)
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        name = re.sub(r"[^A-Za-z0-9._ @-]+", "_", str(cn[0].value) if cn else "certificate").strip() or "certificate"
        target = base / f"{name} [{thumbprint(cert)}].der"
        write_certificate(cert, target)
        return target

    def _inside(self, path: Path) -> bool:
        try:
            path.resolve().relative_to(self.root.resolve())
            return True
        except ValueError:
            return False

    # --- checking a server -----------------------------------------------------------------

    def _load_all(self, folder: str) -> list[x509.Certificate]:
        base = self.folder(folder)
        certs = []
        if base.is_dir():
            for path in sorted(base.iterdir()):
                if path.is_file() and path.suffix.lower() in _CERT_SUFFIXES:
                    try:
                        certs.append(load_certificate(path))
                    except PkiError:
                        continue
        return certs

    def _revoked_serials(self) -> set[int]:
        serials: set[int] = set()
        for folder in ("trusted/crl", "issuers/crl"):
            base = self.folder(folder)
            if not base.is_dir():
                continue
            for path in base.iterdir():
                data = path.read_bytes() if path.is_file() else b""
                try:
                    crl = x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----") \
                        else x509.load_der_x509_crl(data)
                except ValueError:
                    continue
                serials.update(r.serial_number for r in crl)
        return serials

    def is_trusted(self, cert: x509.Certificate) -> bool:
        """In trusted/certs itself, or issued by a CA there (through issuers/certs), and not revoked.

        The chain is verified with cryptography's X.509 verifier, as asyncua's TrustStore
        does, but with issuers/certs as intermediates and without a logged traceback
        for every untrusted certificate.
        """
        trusted = self._load_all("trusted/certs")
        if cert.serial_number in self._revoked_serials():
            return False
        if any(_der(t) == _der(cert) for t in trusted):
            return True
        anchors = [t for t in trusted if _is_ca(t)]
        if not anchors:
            return False
        from cryptography.x509 import verification

        builder = verification.PolicyBuilder().store(verification.Store(anchors)).extension_policies(
            ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
            ee_policy=verification.ExtensionPolicy.permit_all(),
        )
        try:
            builder.build_client_verifier().verify(cert, self._load_all("issuers/certs"))
            return True
        except (verification.VerificationError, ValueError):
            return False

    async def check_server_certificate(
        self,
        cert: x509.Certificate,
        server: object,
        *,
        endpoint: str,
        host: str | None,
        pin: str | None = None,
        cli_hint: str = "",
    ) -> CertInfo:
        """Accept the server's certificate or raise CertificateRefused.

        Validity, key usage, extended usage (serverAuth) and the server's application URI
        are checked by asyncua's CertificateValidator; trust is the trust list (or the
        ``pin``: a certificate file or a SHA-256 / SHA-1 thumbprint); the endpoint's host
        must be in the certificate when it names hosts at all. An untrusted certificate
        is copied into rejected/certs; nothing is ever trusted automatically.
        ``server`` is the endpoint's ``ua.ApplicationDescription``.
        """
        from asyncua import ua
        from asyncua.common.utils import ServiceError
        from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions

        info = describe(cert)
        what = f"{endpoint} presents {info.subject}, SHA-1 thumbprint {info.thumbprint}, valid {info.validity}"
        options = CertificateValidatorOptions.EXT_VALIDATION | CertificateValidatorOptions.PEER_SERVER
        try:
            await CertificateValidator(options)(cert, server)
        except ServiceError as exc:
            status = ua.StatusCode(exc.code).name
            raise CertificateRefused(status, f"{status}: {_VALIDATOR_REASONS.get(status, 'refused')}; {what}",
                                     _VALIDATOR_HINTS.get(status, "the server's certificate is unusable; "
                                                          "have its certificate renewed"), info) from None
        _, hosts = _san(cert)
        if host and hosts and host.lower() not in {h.lower() for h in hosts}:
            raise CertificateRefused(
                "BadCertificateHostNameInvalid",
                f"BadCertificateHostNameInvalid: the endpoint's host {host} is not in the server's certificate "
                f"(it names {', '.join(hosts)}); {what}",
                "use a host name the certificate names in the endpoint, or have the server's certificate "
                "reissued with this host", info)
        if pin is not None:
            if not _matches_pin(cert, pin):
                raise CertificateRefused(
                    "BadCertificateUntrusted",
                    f"BadCertificateUntrusted: the server's certificate is not the pinned one; {what}",
                    "the server presents another certificate than `server_certificate` pins: if it was renewed "
                    "on purpose, update the pin to the new thumbprint", info)
            return info
        if not self.is_trusted(cert):
            saved = self.save_rejected(cert)
            raise CertificateRefused(
                "BadCertificateUntrusted",
                f"BadCertificateUntrusted: the server's certificate is not trusted; {what}; saved as {saved}",
                f"compare the thumbprint with the one the server shows; if they match: "
                f"gateway pki trust {info.thumbprint[:16]}{cli_hint}", info)
        return info


_VALIDATOR_REASONS = {
    "BadCertificateTimeInvalid": "the server's certificate is expired or not yet valid",
    "BadCertificateUriInvalid": "the server's application URI is not in its certificate",
    "BadCertificateUseNotAllowed": "the server's certificate lacks a key usage OPC UA needs "
    "(digitalSignature, nonRepudiation, keyEncipherment, dataEncipherment, serverAuth)",
    "BadCertificateInvalid": "the server's certificate lacks a subject alternative name or key usage",
}
_VALIDATOR_HINTS = {
    "BadCertificateTimeInvalid": "check the clocks of server and gateway; renew the server's certificate if it expired",
    "BadCertificateUriInvalid": "the server's certificate was made for another application URI: have it reissued "
    "for the server's ApplicationUri",
    "BadCertificateUseNotAllowed": "have the server's certificate reissued with the OPC UA key usages",
}


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _matches_pin(cert: x509.Certificate, pin: str) -> bool:
    if is_thumbprint(pin):
        digits = re.sub(r"[\s:]", "", pin).upper()
        return digits in (thumbprint(cert), sha256_thumbprint(cert))
    try:
        return _der(load_certificate(pin)) == _der(cert)
    except PkiError:
        return False
