"""Fixtures of the outputs tests: a ledger with the webhook tests' master data routed to the output
``hook``, and a webhook receiver stand-in checking the HMAC signature."""

from __future__ import annotations

import pytest

from gateway.ledger import outbox
from tests.outputs.standin import Standin
from tests.outputs.test_webhook_delivery import MASTERDATA, SECRET
from tests.support import free_port, ledger_with_masterdata


@pytest.fixture
def engine(ledger_url, tmp_path):
    e = ledger_with_masterdata(ledger_url, MASTERDATA, tmp_path)
    outbox.set_routes(e, {"hook": None})
    yield e
    e.dispose()


@pytest.fixture
def standin():
    s = Standin(free_port(), secret=SECRET)
    yield s
    s.close()
