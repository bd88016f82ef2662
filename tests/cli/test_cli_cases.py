"""Every folder next to this file is one command as a user types it, with its exact answer.

A case folder holds ``args`` (the command line after ``gateway``, split like a shell
does), ``expected.out`` (what the command printed: stdout, then stderr) and
``expected.code`` (its exit code); optionally ``setup`` (the ledger it runs on: ``none``,
the default, is an empty folder; ``demo`` holds mappings/demo-masterdata.yaml; ``lots``
holds lot-tracked stock and one confirmation that used lot R1; ``shafts`` is ``demo`` with 3
serial-tracked shafts turned on LATHE-04 from bar of heat H-24117), ``env`` (KEY=VALUE lines)
and ``needs`` (``postgres``: skipped without a server). In ``args``, ``env`` and the
output, ``$DB`` is the ledger's URL and ``$TMP`` the case's own folder. Commands run
in-process at 80 columns; no output may hold a traceback.
"""

from __future__ import annotations

import os
import shlex
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli import app

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
CASES = sorted(p.name for p in HERE.iterdir() if (p / "args").is_file())


def _build(kind: str, folder: Path) -> None:
    """Write the ledger of a setup to ``folder/ledger.sqlite``."""
    from tests.support import ledger_with_masterdata, masterdata_fixture, post_units

    url = f"sqlite:///{folder / 'ledger.sqlite'}"
    if kind == "demo":
        engine = ledger_with_masterdata(url, (ROOT / "mappings/demo-masterdata.yaml").read_text(), folder)
    elif kind == "lots":
        engine = ledger_with_masterdata(url, masterdata_fixture("cap_from_resin_lots"), folder)
        post_units(engine, 0, 30, order="7000001", at=datetime.now(UTC))
    elif kind == "shafts":
        engine = ledger_with_masterdata(url, (ROOT / "mappings/demo-masterdata.yaml").read_text(), folder)
        post_units(engine, 0, 3, order="1000125", at=datetime.now(UTC), machine="LATHE-04")
    else:
        raise ValueError(f"unknown setup {kind!r}")
    engine.dispose()
    (folder / "md.yaml").unlink()


@pytest.fixture(scope="module")
def ledgers(tmp_path_factory) -> dict[str, Path]:
    """Each setup's ledger, built once; a case works on a copy."""
    built = {}
    for kind in ("demo", "lots", "shafts"):
        folder = tmp_path_factory.mktemp(kind)
        _build(kind, folder)
        built[kind] = folder / "ledger.sqlite"
    return built


def _read(case: Path, name: str, default: str = "") -> str:
    path = case / name
    return path.read_text() if path.is_file() else default


@pytest.mark.parametrize("name", CASES)
def test_case(name: str, tmp_path: Path, ledgers: dict[str, Path], request) -> None:
    case = HERE / name
    if _read(case, "needs").strip() == "postgres":
        request.getfixturevalue("pg_available")
    setup = _read(case, "setup", "none").strip()
    if setup != "none":
        shutil.copy(ledgers[setup], tmp_path / "ledger.sqlite")
    db = f"sqlite:///{tmp_path / 'ledger.sqlite'}"

    def expand(text: str) -> str:
        return text.replace("$DB", db).replace("$TMP", str(tmp_path)).replace("$ROOT", str(ROOT))

    env = {"COLUMNS": "80", "GATEWAY_DB": None}
    for line in _read(case, "env").splitlines():
        if line.strip():
            key, value = line.split("=", 1)
            env[key.strip()] = expand(value.strip())
    args = [expand(a) for a in shlex.split(_read(case, "args"))]
    cwd = os.getcwd()
    os.chdir(tmp_path)  # a relative --db lands in the case's folder, never in the repository
    try:
        result = CliRunner().invoke(app, args, env=env)
    finally:
        os.chdir(cwd)
    output = (result.stdout + result.stderr).replace(str(tmp_path), "$TMP").replace(str(ROOT), "$ROOT")
    assert "Traceback" not in output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    # Nothing but the case's own ledger appears: no file named like a bad URL, no empty ledger for a read.
    assert {p.name for p in tmp_path.iterdir()} <= {"ledger.sqlite", "ledger.sqlite-wal", "ledger.sqlite-shm"}
    expected = _read(case, "expected.out")
    if os.environ.get("GATEWAY_BLESS"):  # write what the command answers now; read every diff before committing
        (case / "expected.out").write_text(output)
        (case / "expected.code").write_text(f"{result.exit_code}\n")
        return
    assert (result.exit_code, output) == (int(_read(case, "expected.code")), expected)
