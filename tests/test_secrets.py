"""Secrets and input size: a password from the environment or a file, never shown; big files refused.

The error lines of each input are pinned by case folders in tests/mappings; this module
pins what crosses those: `gateway validate` as a user runs it, the config objects' repr,
a real asyncua server that checks user and password against what the mapping gave (from
``${OPCUA_PASSWORD}`` and from ``password_file``) with the gateway's whole run log read
for the password, and files above the size limit generated here (10 MB are not committed).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager

from gateway.inputfile.errors import InputFileError
from gateway.inputfile.read import MB
from gateway.mapping.load import load_mapping
from gateway.mapping.validate import validate_mapping
from gateway.masterdata.load import load_masterdata
from tests.sources.conftest import PlcServer
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "Kx7#vQ2-plant"  # what the server accepts
NUMERIC = "907315"  # written unquoted: a number, which `validate` used to echo


def gateway(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def opcua_source(endpoint: str, password_lines: str) -> str:
    return f"    opcua:\n      endpoint: \"{endpoint}\"\n      username: gateway\n{password_lines}"


# --- never shown ----------------------------------------------------------------------


def test_validate_shows_neither_a_numeric_nor_an_expanded_password(tmp_path: Path) -> None:
    (tmp_path / "plant.yaml").write_text(
        "sources:\n"
        "  line-1:\n" + opcua_source("opc.tcp://10.0.0.5:4840", f"      password: {NUMERIC}\n") +
        "  line-2:\n" + opcua_source("opc.tcp://10.0.0.6:4840", "      password: ${OPCUA_PASSWORD}\n"
                                     "      publishing_interval_ms: 5\n") +
        "machines: {}\n"
    )
    result = gateway("validate", "plant.yaml", cwd=tmp_path, env={"OPCUA_PASSWORD": PASSWORD})
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "plant.yaml:6: sources.line-1.opcua.password: expected text, got *** (write it in quotes to make it text)",
        "plant.yaml:12: sources.line-2.opcua.publishing_interval_ms: must be at least 10, got 5",
        "2 error(s) in plant.yaml",
    ]
    assert NUMERIC not in result.stderr and PASSWORD not in result.stderr


def test_the_config_objects_never_show_the_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPCUA_PASSWORD", PASSWORD)
    Path("plant.yaml").write_text(
        "sources:\n  line-1:\n" + opcua_source("opc.tcp://10.0.0.5:4840", "      password: ${OPCUA_PASSWORD}\n")
        + "machines: {}\n")
    mapping = load_mapping("plant.yaml")
    config = mapping.sources["line-1"].opcua
    assert config.password.get_secret_value() == PASSWORD
    for shown in (repr(mapping), str(mapping), repr(config), mapping.model_dump_json()):
        assert PASSWORD not in shown
    assert "password=SecretStr('**********')" in repr(config)


def test_a_hidden_value_is_masked_whatever_its_shape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("plant.yaml").write_text(
        "sources:\n  line-1:\n" + opcua_source("opc.tcp://10.0.0.5:4840", "      password: {x: 1}\n")
        + "machines: {}\n")
    assert [str(e) for e in validate_mapping("plant.yaml")] == [
        "plant.yaml:6: sources.line-1.opcua.password: expected text, got ***"]


# --- ${NAME} and password_file -------------------------------------------------------


def test_an_expanded_value_is_not_expanded_again_and_keys_stay_as_written(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPCUA_PASSWORD", "a${HOME}b$${c")
    monkeypatch.setenv("WC", "WC-PRESS")
    Path("plant.yaml").write_text(
        "sources:\n  line-1:\n" + opcua_source("opc.tcp://10.0.0.5:4840", "      password: ${OPCUA_PASSWORD}\n")
        + "machines:\n  ${WC}:\n    source: line-1\n    work_center: ${WC}\n"
          "    counters: {good: {node: 'ns=2;s=G'}}\n    order: '1'\n")
    mapping = load_mapping("plant.yaml")
    assert mapping.sources["line-1"].opcua.password.get_secret_value() == "a${HOME}b$${c"
    assert list(mapping.machines) == ["${WC}"]
    assert mapping.machines["${WC}"].work_center == "WC-PRESS"


def test_master_data_values_are_expanded_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    text = (ROOT / "mappings" / "demo-masterdata.yaml").read_text()
    Path("md.yaml").write_text(text.replace('labor_rate: 42.00', 'labor_rate: "${PRESS_LABOR_RATE}"', 1))
    monkeypatch.setenv("PRESS_LABOR_RATE", "43.25")
    assert str(load_masterdata("md.yaml").work_centers["WC-PRESS"].labor_rate) == "43.25"
    monkeypatch.delenv("PRESS_LABOR_RATE")
    with pytest.raises(InputFileError) as refused:
        load_masterdata("md.yaml")
    line = 1 + text[:text.index("labor_rate: 42.00")].count("\n")  # where the demo master data has it
    assert str(refused.value) == f"md.yaml:{line}: work_centers.WC-PRESS.labor_rate: environment variable " \
                                 "PRESS_LABOR_RATE is not set"


@pytest.mark.parametrize(("content", "password"), [
    (b"Pl4nt!\n", "Pl4nt!"),
    (b"Pl4nt!\r\n", "Pl4nt!"),
    (b"Pl4nt! ", "Pl4nt! "),  # a space may be part of a password; only the line end goes
    ("P\u00e4ss\n".encode(), "P\u00e4ss"),
])
def test_a_password_file_is_read_relative_to_the_mapping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         content: bytes, password: str) -> None:
    (tmp_path / "plant" / "secrets").mkdir(parents=True)
    (tmp_path / "plant" / "secrets" / "plc.txt").write_bytes(content)
    (tmp_path / "plant" / "plant.yaml").write_text(
        "sources:\n  line-1:\n" + opcua_source("opc.tcp://10.0.0.5:4840", "      password_file: secrets/plc.txt\n")
        + "machines: {}\n")
    monkeypatch.chdir(tmp_path)
    mapping = load_mapping("plant/plant.yaml")
    assert mapping.sources["line-1"].opcua.password.get_secret_value() == password


@pytest.mark.parametrize(("content", "message"), [
    (b"\n", "the password file is empty"),
    (b"x" * 4097, "the password file is larger than 4096 bytes: is it the right file?"),
    (b"\xff\xfe", "the password file is not UTF-8 text"),
])
def test_an_unusable_password_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               content: bytes, message: str) -> None:
    monkeypatch.chdir(tmp_path)
    Path("plc.txt").write_bytes(content)
    Path("plant.yaml").write_text(
        "sources:\n  line-1:\n" + opcua_source("opc.tcp://10.0.0.5:4840", "      password_file: plc.txt\n")
        + "machines: {}\n")
    assert [str(e) for e in validate_mapping("plant.yaml")] == [
        f"plant.yaml:6: sources.line-1.opcua.password_file: {message}"]


# --- a real server that checks the password --------------------------------------------


class Passwords(UserManager):
    """Accepts exactly these users with these passwords; remembers who tried."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users
        self.accepted: list[str] = []
        self.refused: list[str | None] = []

    def get_user(self, iserver, username=None, password=None, certificate=None) -> User | None:
        if username in self.users and password == self.users[username]:
            self.accepted.append(username)
            return User(role=UserRole.User)
        self.refused.append(username)
        return None


@pytest.fixture
async def plc() -> tuple[PlcServer, Passwords]:
    server = PlcServer(free_port())
    await server.start()
    users = Passwords({"gateway": PASSWORD})
    server.server.iserver.user_manager = users  # asked at every session activation
    yield server, users
    await server.stop()


def plant(plc: PlcServer, password_lines: str) -> str:
    return (
        "sources:\n  press-line:\n" + opcua_source(plc.endpoint, password_lines) +
        "machines:\n"
        "  PRESS-01:\n"
        "    source: press-line\n"
        "    work_center: WC-PRESS\n"
        f"    counters: {{good: {{node: '{plc.address('Good')}'}}}}\n"
        f"    order: {{node: '{plc.address('Order')}'}}\n"
    )


async def run_cli(*args: str, cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """The CLI in a subprocess that does not block this loop (the server answers on it)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", *args, cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode()


async def test_the_gateway_logs_in_with_the_password_from_the_environment_and_never_logs_it(
        plc: tuple[PlcServer, Passwords], tmp_path: Path) -> None:
    server, users = plc
    (tmp_path / "plant.yaml").write_text(plant(server, "      password: ${OPCUA_PASSWORD}\n"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "run", "--mapping", "plant.yaml", "--db",
        f"sqlite:///{tmp_path / 'ledger.sqlite'}", "--log-level", "debug", cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OPCUA_PASSWORD": PASSWORD},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    lines: list[str] = []  # every line up to the subscription: the log must be read whole
    try:
        while not lines or "opcua.subscribed" not in lines[-1]:
            lines.append((await asyncio.wait_for(proc.stdout.readline(), 60)).decode())
            assert lines[-1], "the gateway ended before it subscribed:\n" + "".join(lines)
        await server.write(("Order", "1000123"), ("Good", 5))
        await asyncio.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    log = "".join(lines) + rest.decode()
    assert proc.returncode == 0, log
    assert "source=press-line" in lines[-1] and "gateway_stopped" in log
    assert users.accepted == ["gateway"] and users.refused == []
    assert PASSWORD not in log


async def test_validate_live_logs_in_with_the_password_file_and_a_wrong_one_is_refused(
        plc: tuple[PlcServer, Passwords], tmp_path: Path) -> None:
    server, users = plc
    (tmp_path / "plant.yaml").write_text(plant(server, "      password_file: plc-password.txt\n"))
    (tmp_path / "plc-password.txt").write_text(PASSWORD + "\n")
    code, out = await run_cli("validate", "plant.yaml", "--live", cwd=tmp_path, env={})
    assert (code, out) == (0, "plant.yaml: ok (every tag read from the PLCs)\n")
    assert users.accepted == ["gateway"]

    wrong = "not-" + PASSWORD
    (tmp_path / "plc-password.txt").write_text(wrong + "\n")
    code, out = await run_cli("validate", "plant.yaml", "--live", cwd=tmp_path, env={})
    assert code == 1
    assert out.splitlines()[0].startswith("plant.yaml:2: sources.press-line: cannot read from the PLC: ")
    assert "BadUserAccessDenied" in out
    assert users.refused == ["gateway"]
    assert wrong not in out and PASSWORD not in out


# --- input size ------------------------------------------------------------------------


def padded(text: str, size: int) -> str:
    """``text`` after comment lines that make the whole file ``size`` bytes."""
    line = "# " + "x" * 97 + "\n"
    filler = line * ((size - len(text)) // len(line))
    return filler + "#" * (size - len(text) - len(filler) - 1) + "\n" + text


def test_a_mapping_and_master_data_above_the_default_limit_are_refused_before_parsing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GATEWAY_MAX_INPUT_MB", raising=False)
    Path("plant.yaml").write_text(padded("sources: {}\nmachines: {}\n", 10 * MB + 1))
    Path("md.yaml").write_text(padded((ROOT / "mappings" / "demo-masterdata.yaml").read_text(), 25 * MB))
    assert Path("plant.yaml").stat().st_size == 10 * MB + 1
    started = time.monotonic()
    with pytest.raises(InputFileError) as refused:
        load_mapping("plant.yaml")
    assert str(refused.value) == (
        "plant.yaml:1: the file is 10485761 bytes, above the limit of 10 MB for an input file; raise the limit "
        "with the environment variable GATEWAY_MAX_INPUT_MB (e.g. GATEWAY_MAX_INPUT_MB=12)")
    with pytest.raises(InputFileError) as refused:
        load_masterdata("md.yaml")
    assert str(refused.value) == (
        "md.yaml:1: the file is 25.0 MB, above the limit of 10 MB for an input file; raise the limit "
        "with the environment variable GATEWAY_MAX_INPUT_MB (e.g. GATEWAY_MAX_INPUT_MB=26)")
    assert time.monotonic() - started < 5  # parsing 10 MB alone takes far longer
    loaded = gateway("masterdata", "load", "md.yaml", "--db", f"sqlite:///{tmp_path / 'l.sqlite'}", cwd=tmp_path)
    assert loaded.returncode == 1
    assert loaded.stderr.splitlines()[1:] == ["nothing was loaded"]
    assert loaded.stderr.startswith("md.yaml:1: the file is 25.0 MB, above the limit of 10 MB")


def test_the_limit_is_raised_or_lowered_by_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("plant.yaml").write_text(padded("sources: {}\nmachines: {}\n", 2000))
    monkeypatch.setenv("GATEWAY_MAX_INPUT_MB", "0.001")
    assert [str(e) for e in validate_mapping("plant.yaml")] == [
        "plant.yaml:1: the file is 2000 bytes, above the limit of 0.001 MB for an input file; raise the limit "
        "with the environment variable GATEWAY_MAX_INPUT_MB (e.g. GATEWAY_MAX_INPUT_MB=2)"]
    monkeypatch.setenv("GATEWAY_MAX_INPUT_MB", "0.002")
    assert validate_mapping("plant.yaml") == []
    monkeypatch.setenv("GATEWAY_MAX_INPUT_MB", "ten")
    assert [str(e) for e in validate_mapping("plant.yaml")] == [
        "plant.yaml:1: GATEWAY_MAX_INPUT_MB must be a number of megabytes greater than 0, got 'ten'"]
