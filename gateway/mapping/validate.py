"""Check a mapping file against the master data it names: ``gateway validate FILE``.

For: everything ``load_mapping`` checks, plus the references into master data — each
machine's work center exists; a fixed ``order:`` exists; that order's routing has the
machine's operation and runs it on the machine's work center. Problems in the master-data
file itself are reported too, under that file's own name. And the files OPC UA security
names (offline, see ``_security``): certificates and keys exist and belong together, the
gateway's certificate carries its ``application_uri``; a secured source without a pin
and with nothing in the trust list is a warning (its first connect will be refused).

Must never: raise for bad input (it returns the problems), connect to a PLC, create or
change anything in the PKI folder, or load anything into the ledger. Without master
data it checks the mapping alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from gateway.inputfile.errors import FileError, by_line
from gateway.inputfile.messages import unknown
from gateway.inputfile.read import YamlDoc
from gateway.inputfile.validate import Loaded
from gateway.mapping.load import read_mapping
from gateway.mapping.model import Machine, Mapping, is_thumbprint
from gateway.masterdata.load import read_masterdata
from gateway.masterdata.model import MasterData


def validate_mapping(
    path: str | os.PathLike[str],
    masterdata_path: str | os.PathLike[str] | None = None,
    warnings: list[FileError] | None = None,
) -> list[FileError]:
    """Every problem of the mapping (and of its master data, when there is one).

    ``warnings``, if given, receives what is not wrong but will not work yet (e.g. a
    secured source whose server nobody trusted so far), each message starting "warning:".
    """
    mapping = read_mapping(path)
    if mapping.doc is None:
        return mapping.errors
    security, cautions = _security(mapping) if mapping.model else ([], [])
    if warnings is not None:
        warnings.extend(by_line(cautions))
    md_file, missing = _masterdata_file(mapping.doc, masterdata_path)
    if md_file is None:
        return by_line(mapping.errors + missing + security)
    masterdata = read_masterdata(md_file)
    references = _references(mapping, masterdata) if mapping.model and masterdata.model else []
    return by_line(mapping.errors + references + security) + masterdata.errors


def _security(loaded: Loaded[Mapping]) -> tuple[list[FileError], list[FileError]]:
    """(errors, warnings) about the certificates and keys the OPC UA sources use."""
    from gateway.pki import Pki, default_application_uri, own_certificate_problems

    doc, mapping = loaded.doc, loaded.model
    assert doc is not None and mapping is not None
    pki = Pki(mapping.pki or "pki")
    uri = mapping.application_uri or default_application_uri()
    errors: list[FileError] = []
    warnings: list[FileError] = []
    own_checked = False
    for name, source in mapping.sources.items():
        ua = source.opcua
        if ua is None:
            continue
        at = ("sources", name, "opcua")
        if ua.certificate and ua.private_key:
            cert = _certificate(doc, at + ("certificate",), ua.certificate, errors)
            if cert is not None:
                errors += [doc.error(at + ("certificate",), f"{ua.certificate}: {p}")
                           for p in own_certificate_problems(cert, uri)]
            _private_key(doc, at + ("private_key",), ua.private_key, cert, errors)
        elif ua.secured and not own_checked and pki.own_certificate.is_file():
            own_checked = True  # one PKI, one own certificate: said once
            cert = _certificate(doc, ("pki",), str(pki.own_certificate), errors)
            if cert is not None:
                where = ("application_uri",) if mapping.application_uri else ("pki",)
                errors += [doc.error(where, f"{pki.own_certificate}: {p}") for p in own_certificate_problems(cert, uri)]
        pin = ua.server_certificate
        if pin and not is_thumbprint(pin):
            _certificate(doc, at + ("server_certificate",), pin, errors)
        if ua.secured and not pin and not pki.certificates(("trusted",)):
            warnings.append(doc.error(at + ("security",), (
                f"warning: no server certificate is trusted yet ({pki.folder('trusted/certs')} is empty or missing) "
                f"and there is no `server_certificate` pin: the first connect will be refused and the server's "
                f"certificate saved in {pki.folder('rejected/certs')}; compare its thumbprint with the server's, "
                "then `gateway pki trust`")))
    return errors, warnings


def _certificate(doc: YamlDoc, loc: tuple[str, ...], path: str, errors: list[FileError]):  # noqa: ANN202
    from gateway.pki import PkiError, load_certificate

    if not os.path.isfile(path):
        errors.append(doc.error(loc, f"certificate file '{path}' does not exist"))
        return None
    try:
        return load_certificate(path)
    except PkiError as exc:
        errors.append(doc.error(loc, str(exc)))
        return None


def _private_key(doc: YamlDoc, loc: tuple[str, ...], path: str, cert, errors: list[FileError]) -> None:  # noqa: ANN001
    from cryptography.hazmat.primitives import serialization

    if not os.path.isfile(path):
        errors.append(doc.error(loc, f"private key file '{path}' does not exist"))
        return
    data = open(path, "rb").read()  # noqa: SIM115 - a small file, read once
    try:
        key = serialization.load_pem_private_key(data, None) if data.lstrip().startswith(b"-----") \
            else serialization.load_der_private_key(data, None)
    except (ValueError, TypeError) as exc:
        reason = "it is protected by a password" if isinstance(exc, TypeError) else "not a private key (PEM or DER)"
        errors.append(doc.error(loc, f"cannot use '{path}': {reason}"))
        return
    if cert is not None and key.public_key().public_numbers() != cert.public_key().public_numbers():
        errors.append(doc.error(loc, f"'{path}' is not the key of the certificate"))


def _masterdata_file(doc: YamlDoc, given: str | os.PathLike[str] | None) -> tuple[str | None, list[FileError]]:
    """The master-data file to check against, resolved like the service resolves it."""
    if given is not None:
        return os.fspath(given), []
    named = doc.data.get("masterdata") if isinstance(doc.data, dict) else None
    if not isinstance(named, str) or not named:
        return None, []
    # Relative to the mapping file, so a plant folder can be moved as a whole.
    file = os.path.join(os.path.dirname(doc.file), named)
    if not os.path.isfile(file):
        return None, [doc.error(("masterdata",), f"master-data file '{file}' does not exist")]
    return file, []


def _references(mapping: Loaded[Mapping], masterdata: Loaded[MasterData]) -> list[FileError]:
    assert mapping.doc and mapping.model and masterdata.doc and masterdata.model
    checker = _Checker(mapping.doc, masterdata.doc, masterdata.model)
    return [e for name, m in mapping.model.machines.items() for e in checker.machine(name, m)]


class _Checker:
    """References of one mapping into one master-data file."""

    def __init__(self, doc: YamlDoc, md_doc: YamlDoc, md: MasterData) -> None:
        self.doc, self.md_doc, self.md = doc, md_doc, md

    def machine(self, name: str, machine: Machine) -> Iterator[FileError]:
        yield from self._work_center(name, machine)
        if isinstance(machine.order, str):
            yield from self._fixed_order(name, machine, machine.order)

    def _unknown(self, loc: tuple[str, ...], what: str, value: str, section: str) -> FileError:
        known = self.md_doc.keys_at((section,))
        return self.doc.error(loc, unknown(what, value, known, where=self.md_doc.file))

    def _work_center(self, name: str, machine: Machine) -> Iterator[FileError]:
        if machine.work_center not in self.md_doc.keys_at(("work_centers",)):
            loc = ("machines", name, "work_center")
            yield self._unknown(loc, "work center", machine.work_center, "work_centers")

    def _fixed_order(self, name: str, machine: Machine, number: str) -> Iterator[FileError]:
        if number not in self.md_doc.keys_at(("orders",)):
            yield self._unknown(("machines", name, "order"), "order", number, "orders")
            return
        order = self.md.orders.get(number)
        routing = self.md.routings.get(order.routing_key) if order else None
        if order is None or routing is None:  # broken in the master data: reported there
            return
        loc = ("machines", name, "operation")
        op = next((o for o in routing.operations if o.operation == machine.operation), None)
        if op is None:
            ops = ", ".join(dict.fromkeys(o.operation for o in routing.operations))
            has = f"its routing '{order.routing_key}' has {ops}"
            yield self.doc.error(loc, f"order {number} has no operation '{machine.operation}' ({has})")
        elif op.work_center != machine.work_center:
            message = (
                f"operation '{op.operation}' of order {number} runs on work center '{op.work_center}', "
                f"not on this machine's '{machine.work_center}'"
            )
            yield self.doc.error(loc, message)
