"""Schemathesis against ``/openapi.json`` of a real ``gateway run``: whatever it sends, never a 5xx,
and every refusal is a problem document.

The gateway runs as its own process on a ledger with the demo master data (its PLCs are
unreachable; the API does not need them). Examples are bounded per operation so the test
stays short; the operator token lets the generated writes reach the application layer.
"""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from gateway.http.auth import digest
from tests.http.served import OPERATOR, auth
from tests.integration.lines import MASTERDATA, ROOT, line_mapping
from tests.support import free_port

EXAMPLES_PER_OPERATION = 8
PLC_UNREACHABLE = {"urn:backflush-gateway:problem:browse-failed", "urn:backflush-gateway:problem:modbus-read-failed"}


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    db, port = f"sqlite:///{folder / 'ledger.sqlite'}", free_port()
    (folder / "mapping.yaml").write_text(line_mapping(free_port(), free_port()))
    (folder / "tokens.yaml").write_text(f"- {{name: fuzz, role: operator, sha256: {digest(OPERATOR)}}}\n")
    subprocess.run([sys.executable, "-m", "gateway.cli", "masterdata", "load", MASTERDATA, "--db", db], cwd=ROOT,
                   check=True, capture_output=True, timeout=60)
    log = (folder / "gateway.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "--mapping", str(folder / "mapping.yaml"),
                             "--db", db, "--http", f"127.0.0.1:{port}", "--tokens", str(folder / "tokens.yaml"),
                             "--log-json"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/api/v1/machines", headers=auth(OPERATOR), timeout=2).json():
                    break
            except (httpx.TransportError, ValueError):
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (folder / "gateway.log").read_text()[-3000:]
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    assert proc.returncode == 0, (folder / "gateway.log").read_text()[-3000:]
    assert b"http_unexpected_error" not in (folder / "gateway.log").read_bytes()


@pytest.mark.slow
def test_no_request_makes_a_server_error(gateway_url):
    schema = schemathesis.openapi.from_url(f"{gateway_url}/openapi.json")
    seen: dict[str, set[int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()

        browsing = "/browse/" in operation.path  # reads a PLC: none answers here

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            if browsing:
                response = case.call(headers=auth(OPERATOR))
                if response.status_code >= 500:  # the one 5xx it may give: a 502 naming the unreachable PLC
                    assert response.status_code == 502 and response.json()["type"] in PLC_UNREACHABLE, (
                        operation.label, response.status_code, response.text)
            else:
                response = case.call_and_validate(headers=auth(OPERATOR), checks=[not_a_server_error])
            seen.setdefault(operation.label, set()).add(response.status_code)
            if response.status_code >= 400:
                assert response.headers["content-type"] == ["application/problem+json"], (
                    operation.label, response.status_code, response.text)

        check()
    assert len(seen) >= 20, sorted(seen)  # every operation was exercised
    assert all(code < 500 or (code == 502 and "/browse/" in label) for label, codes in seen.items() for code in codes), seen
