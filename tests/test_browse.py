"""``gateway browse``: against the simulated PLC over a real socket, against a secured asyncua
server (trust list, pin, a mapping's password file), and its pure rendering table by table.

The simulator runs in its own process for the whole module with its machines paused, so
every value the tests expect is the simulator's own truth at that moment. The secured
server and its certificate are the source security tests' (tests/sources).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from gateway.browse import Browse, BrowsedNode, describe_node, format_value, mapping_yaml, notes, parse_pick, \
    render_json, render_tree
from gateway.cli import app
from gateway.mapping.load import load_mapping
from gateway.pki import Pki, describe, load_certificate
from simulators.control import sim_command_sync
from tests.sources.conftest import URI as SECURE_NS
from tests.sources.test_opcua_security import GATEWAY_URI, PASSWORD, USER, SecurePlc, start_secure_plc, trust
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[1]
NSU = "nsu=urn:backflush-gateway:simulator;s="
runner = CliRunner()


@dataclass(frozen=True)
class Plc:
    endpoint: str
    truth: dict  # machine -> its truth when paused


@pytest.fixture(scope="module")
def plc():
    port = free_port()
    endpoint = f"opc.tcp://127.0.0.1:{port}"
    machines = ["PRESS-01,rate=20,order=1000123", "LATHE-16,rate=20,width=16,order=1000124",
                "MOLD-64,rate=20,width=64,order=1000125", "FAULTY,rate=20,order=1000126"]
    sim = subprocess.Popen([sys.executable, "-m", "simulators.opcua_plc", "--port", str(port),
                            *(arg for m in machines for arg in ("--machine", m))],
                           cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                time.sleep(0.3)  # some counts first, so that values are not all 0
                truth = sim_command_sync(endpoint, "*", "pause")
                if all(truth[m]["good_count"] > 0 for m in ("PRESS-01", "LATHE-16", "MOLD-64")) \
                        or time.monotonic() > deadline:
                    break
                # Paused as it came up (a busy machine), before every machine counted: let it count on.
                sim_command_sync(endpoint, "*", "resume")
            except OSError:
                if time.monotonic() > deadline or sim.poll() is not None:
                    raise
        yield Plc(endpoint, truth)
    finally:
        sim.kill()
        sim.wait(10)


def browse(*args: str, env: dict | None = None):
    return runner.invoke(app, ["browse", *args], env=env)


def one_line_error(result, text: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr == text + "\n"


# --- against the simulator ---------------------------------------------------------------


def test_tree_shows_the_counters_with_nsu_ids_data_types_and_values(plc):
    result = browse(plc.endpoint)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "Objects  Object  i=85"
    press, lathe, mold = plc.truth["PRESS-01"], plc.truth["LATHE-16"], plc.truth["MOLD-64"]
    assert press["good_count"] > 0
    for line in [
        f"├── PRESS-01  Object  {NSU}PRESS-01",
        f'│   ├── OrderNumber  Variable  String = "1000123"  {NSU}PRESS-01.OrderNumber',
        f"│   ├── GoodCount  Variable  UInt32 = {press['good_count']}  {NSU}PRESS-01.GoodCount",
        f"│   ├── ScrapCount  Variable  UInt32 = {press['scrap_count']}  {NSU}PRESS-01.ScrapCount",
        f"│   └── State  Variable  Int32 = 5  {NSU}PRESS-01.State",  # PackML 5: Suspended (paused)
        f"│   ├── GoodCount  Variable  UInt16 = {lathe['good_count']}  {NSU}LATHE-16.GoodCount",
        f"│   ├── GoodCount  Variable  UInt64 = {mold['good_count']}  {NSU}MOLD-64.GoodCount",
        "├── Server  Object  i=2253  (the server's own diagnostics: not browsed; --all or --node i=2253 to see it)",
        f"└── Sim  Object  {NSU}Sim",
        f"    └── Command  Method  {NSU}Sim.Command",
    ]:
        assert line in lines
    assert not any("ServerStatus" in line for line in lines)
    # The method's arguments are at depth 3, the last one shown; their values are the arguments' names.
    assert any(line.startswith('        ├── InputArguments  Variable  Argument[] = ["machine", "command", "argument"]')
               for line in lines)


def test_depth_limits_the_tree_and_says_how_to_go_deeper(plc):
    result = browse(plc.endpoint, "--node", f"{NSU}PRESS-01", "--depth", "0")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"PRESS-01  Object  {NSU}PRESS-01  (+4 below)",
        "1 node(s) at depth 0 have children not shown (4 in all): --depth 1, or --node ID to start at one",
    ]
    top = browse(plc.endpoint, "--depth", "1").stdout.splitlines()
    assert f"├── LATHE-16  Object  {NSU}LATHE-16  (+4 below)" in top
    assert not any("GoodCount" in line for line in top)
    assert top[-1].endswith("--depth 2, or --node ID to start at one")


def test_the_node_budget_stops_the_walk_with_a_line_saying_so(plc):
    result = browse(plc.endpoint, "--node", f"{NSU}MOLD-64", "--max-nodes", "3")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"MOLD-64  Object  {NSU}MOLD-64",
        f'├── OrderNumber  Variable  String = "1000125"  {NSU}MOLD-64.OrderNumber',
        f"└── GoodCount  Variable  UInt64 = {plc.truth['MOLD-64']['good_count']}  {NSU}MOLD-64.GoodCount",
        "stopped at 3 nodes (--max-nodes): 2 more found and not shown, nor anything below them; "
        "raise --max-nodes, or start lower with --node ID",
    ]


def test_the_server_object_is_browsed_when_asked_for(plc):
    for args in (["--all", "--depth", "2"], ["--node", "i=2253", "--depth", "1"]):
        result = browse(plc.endpoint, *args)
        assert result.exit_code == 0, result.output
        assert any("ServerStatus  Variable  ServerStatusDataType" in line for line in result.stdout.splitlines())
        assert "not browsed" not in result.stdout


def test_json_is_one_object_per_node(plc):
    result = browse(plc.endpoint, "--node", f"{NSU}LATHE-16", "--format", "json")
    assert result.exit_code == 0, result.output
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["name"] for o in objects] == ["LATHE-16", "OrderNumber", "GoodCount", "ScrapCount", "State"]
    good = objects[2]
    assert good == {"node_id": f"{NSU}LATHE-16.GoodCount", "name": "GoodCount", "node_class": "Variable",
                    "parent": f"{NSU}LATHE-16", "depth": 1, "data_type": "UInt16", "value_type": "UInt16",
                    "value": plc.truth["LATHE-16"]["good_count"], "status": None, "more": 0, "skipped": False}
    assert result.stderr == ""  # nothing cut off: no notes


def test_a_value_that_is_not_good_shows_its_status(plc):
    sim_command_sync(plc.endpoint, "FAULTY", "bad_value", "uncertain")
    result = browse(plc.endpoint, "--node", f"{NSU}FAULTY")
    assert f"├── GoodCount  Variable  UInt32 = 0  (UncertainLastUsableValue)  {NSU}FAULTY.GoodCount" \
        in result.stdout.splitlines()
    sim_command_sync(plc.endpoint, "FAULTY", "bad_value", "bad")
    result = browse(plc.endpoint, "--node", f"{NSU}FAULTY")
    assert f"├── GoodCount  Variable  BaseDataType  (BadSensorFailure)  {NSU}FAULTY.GoodCount" \
        in result.stdout.splitlines()
    yaml = browse(plc.endpoint, "--yaml", f"{NSU}FAULTY.GoodCount").stdout.splitlines()
    assert yaml[-1] == (f"    # GoodCount ({NSU}FAULTY.GoodCount) is declared BaseDataType and holds no value now "
                        f"(BadSensorFailure): its type shows once it holds one; browse it again")


def _paste(tmp_path: Path, printed: str) -> Path:
    """The printed lines under a machine of an otherwise complete mapping, as a user pastes them."""
    path = tmp_path / "plant.yaml"
    path.write_text("sources:\n"
                    "  line-1:\n"
                    "    opcua: {endpoint: 'opc.tcp://127.0.0.1:4840'}\n"
                    "machines:\n"
                    "  PRESS-01:\n"
                    "    source: line-1\n"
                    "    work_center: WC-PRESS\n" + printed)
    return path


def test_yaml_lines_validate_with_the_mapping_schema(plc, tmp_path):
    picks = [f"{NSU}PRESS-01.{tag}" for tag in ("GoodCount", "ScrapCount", "OrderNumber", "State")]
    result = browse(plc.endpoint, "--yaml", *picks)
    assert result.exit_code == 0, result.output
    press = plc.truth["PRESS-01"]
    assert result.stdout.splitlines() == [
        f"# read from {plc.endpoint}: paste under the machine's name in `machines:`",
        "    counters:",
        f'      good:  {{node: "{NSU}PRESS-01.GoodCount", type: uint32}}   # GoodCount: UInt32, now '
        f'{press["good_count"]}',
        f'      scrap: {{node: "{NSU}PRESS-01.ScrapCount", type: uint32}}  # ScrapCount: UInt32, now '
        f'{press["scrap_count"]}',
        f'    order: {{node: "{NSU}PRESS-01.OrderNumber"}}                 # OrderNumber: String, now "1000123"',
        f"    # State ({NSU}PRESS-01.State) is Int32, signed: cannot be a counter "
        f"(the gateway reads UInt16, UInt32 or UInt64)",
    ]
    machine = load_mapping(_paste(tmp_path, result.stdout)).machines["PRESS-01"]
    assert (machine.counters.good.node, machine.counters.good.type) == (f"{NSU}PRESS-01.GoodCount", "uint32")
    assert (machine.counters.scrap.node, machine.counters.scrap.type) == (f"{NSU}PRESS-01.ScrapCount", "uint32")
    assert machine.order.node == f"{NSU}PRESS-01.OrderNumber"


@pytest.mark.parametrize(("machine", "counter_type"), [("LATHE-16", "uint16"), ("MOLD-64", "uint64")])
def test_yaml_names_the_counter_width_from_the_data_type(plc, tmp_path, machine, counter_type):
    # Roles named explicitly, in another order than the mapping's.
    result = browse(plc.endpoint, "--yaml", f"scrap={NSU}{machine}.ScrapCount", f"good={NSU}{machine}.GoodCount")
    assert result.exit_code == 0, result.output
    counters = load_mapping(_paste(tmp_path, result.stdout + "    order: '1000123'\n")).machines["PRESS-01"].counters
    assert (counters.good.node, counters.good.type) == (f"{NSU}{machine}.GoodCount", counter_type)
    assert (counters.scrap.node, counters.scrap.type) == (f"{NSU}{machine}.ScrapCount", counter_type)


def test_an_unknown_node_is_one_line_and_exit_1(plc):
    one_line_error(browse(plc.endpoint, "--node", f"{NSU}PRESS-01.GodCount"),
                   f"error: node '{NSU}PRESS-01.GodCount' is not on the server (BadNodeIdUnknown): check the id; "
                   f"browse from the Objects folder (no --node) to find it")
    one_line_error(browse(plc.endpoint, "--yaml", f"{NSU}PRESS-01.GoodCount", "ns=2;s=Nope"),
                   "error: node 'ns=2;s=Nope' is not on the server (BadNodeIdUnknown): check the id; "
                   "browse from the Objects folder (no --node) to find it")
    result = browse(plc.endpoint, "--node", "nsu=urn:other:plc;s=Press.Good")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("error: node 'nsu=urn:other:plc;s=Press.Good': namespace URI 'urn:other:plc' "
                                    "is not on the server (it has [")
    assert len(result.stderr.splitlines()) == 1


def test_an_unreachable_endpoint_is_one_line_and_exit_1():
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}"
    one_line_error(browse(endpoint),
                   f"error: cannot connect to {endpoint}: nothing listens there; "
                   f"is the OPC UA server running, are host and port right?")


def test_a_refused_login_is_one_line_and_never_shows_the_password(plc, tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("hunter2\n")
    expected = (f"error: {plc.endpoint} refused user 'bob' (BadIdentityTokenRejected): check --username and the "
                f"password (--password-file or OPCUA_PASSWORD), or the user's rights on the server")
    one_line_error(browse(plc.endpoint, "--username", "bob", "--password-file", str(secret)), expected)
    from_env = browse(plc.endpoint, "--username", "bob", env={"OPCUA_PASSWORD": "hunter2"})
    one_line_error(from_env, expected)
    one_line_error(browse(plc.endpoint, env={"OPCUA_PASSWORD": "hunter2"}),
                   "error: a password needs a user: give --username")


def test_connects_the_way_a_mapping_source_does(plc, tmp_path):
    port = plc.endpoint.rsplit(":", 1)[1]
    path = tmp_path / "plant.yaml"
    # Being written: no machines yet, which the mapping refuses; its sources are fine.
    path.write_text("sources:\n"
                    f"  line-1: {{opcua: {{endpoint: 'opc.tcp://127.0.0.1:{port}'}}}}\n"
                    "  lathe: {modbus: {host: 127.0.0.1}}\n"
                    "  old: {opcua: {endpoint: 'opc.tcp://127.0.0.1:1', security: 'Basic256Sha256,Sign,c,k'}}\n"
                    "  anonymous: {opcua: {endpoint: 'opc.tcp://127.0.0.1:" + port + "', username: bob, "
                    "password: hunter2}}\n"
                    "  typo: {opcua: {endpoint: '127.0.0.1:4840'}}\n"
                    "  secure: {opcua: {endpoint: 'opc.tcp://127.0.0.1:" + port + "', "
                    "security: {policy: Basic256Sha256, mode: Sign}}}\n")
    result = browse("--mapping", str(path), "--source", "line-1", "--node", f"{NSU}PRESS-01", "--depth", "0")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == f"PRESS-01  Object  {NSU}PRESS-01  (+4 below)"
    yaml = browse("--mapping", str(path), "--source", "line-1", "--yaml", f"{NSU}PRESS-01.GoodCount")
    assert yaml.exit_code == 0 and f'good:  {{node: "{NSU}PRESS-01.GoodCount", type: uint32}}' in yaml.stdout
    one_line_error(browse("--mapping", str(path), "--source", "line-2"),
                   f"error: {path} has no source 'line-2'; it has: line-1, lathe, old, anonymous, typo, secure")
    typo = browse("--mapping", str(path), "--source", "typo")
    assert typo.exit_code == 1 and typo.stderr.splitlines() == [
        f"{path}:6: sources.typo.opcua.endpoint: must start with opc.tcp://, got '127.0.0.1:4840'",
        f"error: cannot use source 'typo' of {path}",
    ]
    one_line_error(browse("--mapping", str(path), "--source", "lathe"),
                   f"error: source 'lathe' of {path} is a modbus source; browse reads OPC UA servers")
    old = browse("--mapping", str(path), "--source", "old")
    assert old.exit_code == 1 and old.stderr.splitlines() == [
        f"{path}:4: sources.old.opcua.security: the security string is no longer read; write security: "
        f"{{policy: Basic256Sha256, mode: Sign}}, certificate: c, private_key: k (certificate and private_key are "
        f"optional: the gateway makes its own in the PKI folder)",
        f"error: cannot use source 'old' of {path}",
    ]
    # A secured source is tried as the gateway tries it: the gateway's certificate made in the
    # mapping's PKI folder (pki next to the mapping), the server asked for its endpoints.
    secure = browse("--mapping", str(path), "--source", "secure")
    assert secure.exit_code == 1 and secure.stdout == ""
    created, refused = secure.stderr.splitlines()
    own = describe(load_certificate(tmp_path / "pki" / "own" / "certs" / "gateway.der"))
    assert "opcua.own_certificate_created" in created and own.thumbprint in created
    assert refused == ("error: the server offers no endpoint with policy Basic256Sha256 and mode Sign (it offers "
                       "None/None); set `security` in the mapping to one of the offered policy/mode pairs")
    refused = browse("--mapping", str(path), "--source", "anonymous")
    one_line_error(refused, f"error: {plc.endpoint} refused user 'bob' (BadIdentityTokenRejected): check "
                            f"--username and the password (--password-file or OPCUA_PASSWORD), or the user's "
                            f"rights on the server")
    one_line_error(browse(plc.endpoint, "--mapping", str(path), "--source", "line-1"),
                   "error: give either the ENDPOINT or --mapping/--source, not both")


# --- a secured server (Basic256Sha256/SignAndEncrypt, user and password) ---------------------
# The server runs on the test's event loop; each command runs in a thread with its own
# (the CLI's asyncio.run), as it would in a shell.

PRESS = f"nsu={SECURE_NS};s=Press01"


@pytest.fixture
async def secure_plc(tmp_path: Path) -> AsyncIterator[SecurePlc]:
    server = await start_secure_plc(tmp_path)
    yield server
    await server.plc.stop()


async def in_thread(*args: str, env: dict | None = None) -> Result:
    return await asyncio.to_thread(runner.invoke, app, list(args), env=env)


def press_tree() -> list[str]:
    return [
        f"Press01  Object  {PRESS}",
        f"├── Good  Variable  UInt32 = 0  {PRESS}.Good",
        f"├── Scrap  Variable  UInt32 = 0  {PRESS}.Scrap",
        f'└── Order  Variable  String = ""  {PRESS}.Order',
    ]


async def test_a_secured_server_is_refused_until_its_certificate_is_trusted(secure_plc: SecurePlc,
                                                                           tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    # The gateway's certificate made beforehand (README: step 1), so that browse's only line is its refusal.
    assert (await in_thread("pki", "init", "--pki", str(pki))).exit_code == 0
    password = tmp_path / "password.txt"
    password.write_text(PASSWORD + "\n")
    endpoint, info = secure_plc.plc.endpoint, secure_plc.info
    args = (endpoint, "--security", "Basic256Sha256:SignAndEncrypt", "--pki", str(pki), "--username", USER,
            "--password-file", str(password), "--node", PRESS)

    refused = await in_thread("browse", *args)
    saved = pki / "rejected" / "certs" / f"Secure PLC [{info.thumbprint}].der"
    one_line_error(refused, f"error: BadCertificateUntrusted: the server's certificate is not trusted; {endpoint} "
                            f"presents CN=Secure PLC, SHA-1 thumbprint {info.thumbprint}, valid {info.validity}; "
                            f"saved as {saved}; compare the thumbprint with the one the server shows; if they "
                            f"match: gateway pki trust {info.thumbprint[:16]} --pki {pki}")
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]
    assert list((pki / "trusted" / "certs").iterdir()) == []  # nothing trusted by itself

    trusted = await in_thread("pki", "trust", info.thumbprint[:16], "--pki", str(pki))
    assert trusted.exit_code == 0, trusted.output
    result = await in_thread("browse", *args)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == press_tree()
    assert result.stderr == ""
    assert PASSWORD not in refused.output + result.output


async def test_a_server_that_requires_security_names_the_browse_option_to_give(secure_plc: SecurePlc) -> None:
    """Without a mapping, the hint is the command line's, not a mapping key."""
    refused = await in_thread("browse", secure_plc.plc.endpoint, "--depth", "1")
    one_line_error(refused, "error: the server offers no endpoint with policy None and mode None (it offers "
                            "Basic256Sha256/SignAndEncrypt): it requires security; browse with --security "
                            "Basic256Sha256:SignAndEncrypt; the server's certificate must then be trusted "
                            "(`gateway pki trust`)")


async def test_a_pinned_server_certificate_needs_no_trust_list(secure_plc: SecurePlc, tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    args = (secure_plc.plc.endpoint, "--security", "Basic256Sha256:SignAndEncrypt", "--pki", str(pki),
            "--username", USER, "--node", PRESS)
    env = {"OPCUA_PASSWORD": PASSWORD}
    for pin in (str(secure_plc.cert_file), secure_plc.info.sha256):
        result = await in_thread("browse", *args, "--server-certificate", pin, env=env)
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines() == press_tree()
    other = await in_thread("browse", *args, "--server-certificate", "AB" * 32, env=env)
    assert other.exit_code == 1 and len(other.stderr.splitlines()) == 1
    assert other.stderr.startswith("error: BadCertificateUntrusted: the server's certificate is not the pinned one; ")
    assert list((pki / "rejected" / "certs").iterdir()) == []  # a pin mismatch is no candidate for trust


async def test_a_mapping_source_is_browsed_with_its_password_file_pki_and_application_uri(
        secure_plc: SecurePlc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plant = tmp_path / "plant"
    (plant / "secrets").mkdir(parents=True)
    (plant / "secrets" / "press.txt").write_text(PASSWORD + "\n")
    (plant / "secrets" / "wrong.txt").write_text("N0t-the-Pa55\n")
    monkeypatch.setenv("PLC_ENDPOINT", secure_plc.plc.endpoint)
    secured = "security: {policy: Basic256Sha256, mode: SignAndEncrypt}, username: operator"
    # No machines yet: the mapping is being written. Every path is relative to the mapping.
    mapping = plant / "plant.yaml"
    mapping.write_text(f"pki: certs\n"
                       f"application_uri: {GATEWAY_URI}\n"
                       f"sources:\n"
                       f"  press: {{opcua: {{endpoint: '${{PLC_ENDPOINT}}', {secured}, "
                       f"password_file: secrets/press.txt}}}}\n"
                       f"  wrong: {{opcua: {{endpoint: '${{PLC_ENDPOINT}}', {secured}, "
                       f"password_file: secrets/wrong.txt}}}}\n")
    pki = Pki(plant / "certs")
    pki.init()
    trust(pki, secure_plc)

    result = await in_thread("browse", "--mapping", str(mapping), "--source", "press", "--node", PRESS)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == press_tree()
    # Made on this first secured connect, in the mapping's folder, for the mapping's application URI.
    own = describe(load_certificate(pki.own_certificate))
    assert own.application_uri == GATEWAY_URI
    (created,) = result.stderr.splitlines()
    assert "opcua.own_certificate_created" in created and own.thumbprint in created

    one_line_error(await in_thread("browse", "--mapping", str(mapping), "--source", "wrong", "--node", PRESS),
                   f"error: {secure_plc.plc.endpoint} refused user 'operator' (BadUserAccessDenied): check "
                   f"--username and the password (--password-file or OPCUA_PASSWORD), or the user's rights on "
                   f"the server")


@pytest.mark.parametrize(("args", "error"), [
    (["--security", "Basic256Sha256"], "error: --security 'Basic256Sha256': write POLICY:MODE, "
                                       "e.g. Basic256Sha256:SignAndEncrypt"),
    (["--security", "Basic512:Sign"], "error: --security 'Basic512:Sign': unknown policy 'Basic512'; the policies "
                                      "are None, Basic256Sha256, Aes128Sha256RsaOaep, Aes256Sha256RsaPss, Basic256, "
                                      "Basic128Rsa15"),
    (["--security", "Basic256Sha256:Encrypt"], "error: --security 'Basic256Sha256:Encrypt': unknown mode 'Encrypt'; "
                                               "the modes are None, Sign, SignAndEncrypt"),
    (["--security", "None:Sign"], "error: --security 'None:Sign': policy None with mode Sign: policy None goes with "
                                  "mode None only, and a policy other than None needs mode Sign or SignAndEncrypt"),
    (["--server-certificate", "plc.der"], "error: --server-certificate: cannot read plc.der: No such file or "
                                          "directory; give the server's certificate file or its SHA-256 or SHA-1 "
                                          "thumbprint"),
])
def test_security_options_are_checked_before_connecting(args, error):
    one_line_error(browse("opc.tcp://127.0.0.1:4840", *args), error)


def test_security_options_belong_to_the_mapping_with_a_source(tmp_path):
    one_line_error(browse("--mapping", str(tmp_path / "plant.yaml"), "--source", "line-1", "--pki", "certs",
                          "--security", "Basic256Sha256:Sign"),
                   "error: --security, --pki: with --mapping/--source, browse connects as the source does (its "
                   "`security:` and `server_certificate:`, the mapping's `pki:` and `application_uri:`); change the "
                   "mapping, or give the ENDPOINT instead")


def test_node_ids_without_yaml_are_refused():
    one_line_error(browse("opc.tcp://127.0.0.1:4840", f"{NSU}PRESS-01"),
                   "error: node ids after the endpoint are for --yaml; to browse below a node, give --node ID")


# --- pure rendering ---------------------------------------------------------------------

ID = "nsu=urn:x;s="


def var(name: str, data_type: str | None, value=None, *, status: str | None = None, value_type: str | None = None,
        node_class: str = "Variable", **kw) -> BrowsedNode:
    return BrowsedNode(f"{ID}{name}", name, node_class, data_type=data_type, value=value, status=status,
                       value_type=value_type or (data_type if value is not None else None), **kw)


@pytest.mark.parametrize(("value", "shown"), [
    (None, "null"),
    (True, "true"),
    (0, "0"),
    (18446744073709551615, "18446744073709551615"),
    (1234.5, "1234.5"),
    ("1000123", '"1000123"'),
    ('say "hi"', '"say \\"hi\\""'),
    ("x" * 80, '"' + "x" * 58 + "…"),
    ([1, 2, "…"], "[1, 2, …]"),
    (["a", None], '["a", null]'),
])
def test_format_value(value, shown):
    assert format_value(value) == shown


@pytest.mark.parametrize(("node", "line"), [
    (var("Good", "UInt32", 7), f"Good  Variable  UInt32 = 7  {ID}Good"),
    (var("Good", "UInt32", 0, status="UncertainLastUsableValue"),
     f"Good  Variable  UInt32 = 0  (UncertainLastUsableValue)  {ID}Good"),
    (var("Good", "BaseDataType", None, status="BadSensorFailure"),
     f"Good  Variable  BaseDataType  (BadSensorFailure)  {ID}Good"),
    (var("Good", "Number", 5, value_type="UInt32"), f"Good  Variable  Number (UInt32) = 5  {ID}Good"),
    (var("Empty", "String", None), f"Empty  Variable  String = null  {ID}Empty"),
    (var("Line", None, node_class="Object", more=12), f"Line  Object  {ID}Line  (+12 below)"),
    (BrowsedNode("i=2253", "Server", "Object", skipped=True),
     "Server  Object  i=2253  (the server's own diagnostics: not browsed; --all or --node i=2253 to see it)"),
    (var("Locked", None, node_class="Object", status="cannot browse: BadUserAccessDenied"),
     f"Locked  Object  (cannot browse: BadUserAccessDenied)  {ID}Locked"),
])
def test_describe_node(node, line):
    assert describe_node(node) == line


def _tree(*nodes: BrowsedNode, not_shown: int = 0) -> Browse:
    return Browse("opc.tcp://plc:4840", nodes, depth=2, max_nodes=100, not_shown=not_shown)


def test_render_tree_draws_branches_in_the_servers_order():
    objects = BrowsedNode("i=85", "Objects", "Object")
    line, press, weld = (BrowsedNode(f"{ID}{n}", n, "Object", parent=p, depth=d)
                         for n, p, d in (("Line", "i=85", 1), ("Press", f"{ID}Line", 2), ("Weld", f"{ID}Line", 2)))
    server = BrowsedNode("i=2253", "Server", "Object", parent="i=85", depth=1, skipped=True)
    good = BrowsedNode(f"{ID}Press.Good", "Good", "Variable", parent=f"{ID}Press", depth=3, data_type="UInt16",
                       value=3)
    assert render_tree(_tree(objects, line, server, press, weld, good)) == [
        "Objects  Object  i=85",
        f"├── Line  Object  {ID}Line",
        f"│   ├── Press  Object  {ID}Press",
        f"│   │   └── Good  Variable  UInt16 = 3  {ID}Press.Good",
        f"│   └── Weld  Object  {ID}Weld",
        "└── Server  Object  i=2253  (the server's own diagnostics: not browsed; --all or --node i=2253 to see it)",
    ]
    assert [json.loads(line)["name"] for line in render_json(_tree(objects, line, server))] == \
        ["Objects", "Line", "Server"]


@pytest.mark.parametrize(("result", "lines"), [
    (_tree(BrowsedNode("i=85", "Objects", "Object")), []),
    (_tree(BrowsedNode("i=85", "Objects", "Object"), not_shown=7),
     ["stopped at 100 nodes (--max-nodes): 7 more found and not shown, nor anything below them; "
      "raise --max-nodes, or start lower with --node ID"]),
    (_tree(BrowsedNode("i=85", "Objects", "Object"), var("A", None, node_class="Object", more=2),
           var("B", None, node_class="Object", more=3)),
     ["2 node(s) at depth 2 have children not shown (5 in all): --depth 3, or --node ID to start at one"]),
])
def test_notes(result, lines):
    assert notes(result) == lines


@pytest.mark.parametrize(("text", "pick"), [
    ("nsu=urn:x;s=Good", (None, "nsu=urn:x;s=Good")),
    ("good=nsu=urn:x;s=Good", ("good", "nsu=urn:x;s=Good")),
    ("scrap=ns=2;i=7", ("scrap", "ns=2;i=7")),
    ("order=i=2258", ("order", "i=2258")),
    ("i=2258", (None, "i=2258")),
])
def test_parse_pick(text, pick):
    assert parse_pick(text) == pick


COUNTER = "the gateway reads UInt16, UInt32 or UInt64"


@pytest.mark.parametrize(("node", "expected"), [
    (var("C", "UInt16", 1), '      good:  {node: "nsu=urn:x;s=C", type: uint16}  # C: UInt16, now 1'),
    (var("C", "UInt32", 1), '      good:  {node: "nsu=urn:x;s=C", type: uint32}  # C: UInt32, now 1'),
    (var("C", "UInt64", 1), '      good:  {node: "nsu=urn:x;s=C", type: uint64}  # C: UInt64, now 1'),
    (var("C", "Number", 1, value_type="UInt32"),
     '      good:  {node: "nsu=urn:x;s=C", type: uint32}  # C: declared Number, holds UInt32, now 1'),
    (var("C", "Int32", -1), f"    # C (nsu=urn:x;s=C) is Int32, signed: cannot be a counter ({COUNTER})"),
    (var("C", "Int64", 1), f"    # C (nsu=urn:x;s=C) is Int64, signed: cannot be a counter ({COUNTER})"),
    (var("C", "Double", 1.5), f"    # C (nsu=urn:x;s=C) is Double, floating point: cannot be a counter ({COUNTER})"),
    (var("C", "Float", 1.5), f"    # C (nsu=urn:x;s=C) is Float, floating point: cannot be a counter ({COUNTER})"),
    (var("C", "Boolean", True), f"    # C (nsu=urn:x;s=C) is Boolean: cannot be a counter ({COUNTER})"),
    (var("C", "Byte", 1), f"    # C (nsu=urn:x;s=C) is Byte: cannot be a counter ({COUNTER})"),
    (var("C", "UInt32[]", [1]), "    # C (nsu=urn:x;s=C) is an array (UInt32[]): a counter is one value"),
    (var("C", None, node_class="Object"),
     "    # C (nsu=urn:x;s=C) is an Object, not a variable: browse it (--node nsu=urn:x;s=C) to find its counters"),
    (var("O", "String", "1000123"), '    order: {node: "nsu=urn:x;s=O"}  # O: String, now "1000123"'),
])
def test_mapping_yaml_one_node(node, expected):
    lines = mapping_yaml([(None, node)], "opc.tcp://plc:4840")
    assert lines[0] == "# read from opc.tcp://plc:4840: paste under the machine's name in `machines:`"
    assert expected in lines


@pytest.mark.parametrize(("picks", "lines"), [
    # Two counters and an order tag, in any order: good first, then scrap.
    ([(None, var("O", "String", "A")), (None, var("G", "UInt32", 5)), (None, var("S", "UInt32", 1))], [
        "    counters:",
        '      good:  {node: "nsu=urn:x;s=G", type: uint32}  # G: UInt32, now 5',
        '      scrap: {node: "nsu=urn:x;s=S", type: uint32}  # S: UInt32, now 1',
        '    order: {node: "nsu=urn:x;s=O"}                  # O: String, now "A"',
    ]),
    # Roles named: scrap given first stays scrap; a whole number can be the order tag.
    ([("scrap", var("S", "UInt16", 1)), ("good", var("G", "UInt16", 2)), ("order", var("N", "Int32", 7))], [
        "    counters:",
        '      good:  {node: "nsu=urn:x;s=G", type: uint16}  # G: UInt16, now 2',
        '      scrap: {node: "nsu=urn:x;s=S", type: uint16}  # S: UInt16, now 1',
        '    order: {node: "nsu=urn:x;s=N"}                  # N: Int32, now 7',
    ]),
    # A third counter and a second order tag have no place.
    ([(None, var("A", "UInt32", 1)), (None, var("B", "UInt32", 1)), (None, var("C", "UInt32", 1)),
      (None, var("O", "String", "x")), (None, var("P", "String", "y"))], [
        "    counters:",
        '      good:  {node: "nsu=urn:x;s=A", type: uint32}  # A: UInt32, now 1',
        '      scrap: {node: "nsu=urn:x;s=B", type: uint32}  # B: UInt32, now 1',
        '    order: {node: "nsu=urn:x;s=O"}                  # O: String, now "x"',
        "    # C (nsu=urn:x;s=C): a machine has two counters, good and scrap, and both are taken",
        "    # P (nsu=urn:x;s=P): a machine has one order tag, and it is taken",
    ]),
    # No counter at all: said, with what a machine needs.
    ([(None, var("O", "String", "x")), ("order", var("F", "Double", 1.0))], [
        '    order: {node: "nsu=urn:x;s=O"}  # O: String, now "x"',
        "    # no counter among these nodes: a machine needs `counters: good:` (UInt16, UInt32, UInt64)",
        "    # F (nsu=urn:x;s=F) is Double: an order tag holds text or a whole number",
    ]),
    ([("good", var("G", "Int16", 1))], [
        "    # no counter among these nodes: a machine needs `counters: good:` (UInt16, UInt32, UInt64)",
        f"    # G (nsu=urn:x;s=G) is Int16, signed: cannot be a counter ({COUNTER})",
    ]),
])
def test_mapping_yaml_roles(picks, lines):
    assert mapping_yaml(picks, "opc.tcp://plc:4840")[1:] == lines


def test_mapping_yaml_quotes_node_ids_so_that_yaml_reads_them_back(tmp_path):
    awkward = BrowsedNode('ns=3;s=Line #1: "Good" Count', "Good", "Variable", data_type="UInt32", value=1)
    printed = "\n".join(mapping_yaml([(None, awkward)], "opc.tcp://plc:4840")) + "\n    order: '1'\n"
    machine = load_mapping(_paste(tmp_path, printed)).machines["PRESS-01"]
    assert machine.counters.good.node == 'ns=3;s=Line #1: "Good" Count'
