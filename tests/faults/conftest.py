"""Options of the fault suite: ``--soak`` repeats and lengthens every scenario, by hand.

In CI each scenario runs once, short (the whole of tests/faults in a few minutes).
``pytest tests/faults --soak`` runs each scenario ``SOAK_ROUNDS`` times (default 5) with more
kills and longer outages; ``FAULTS_SEED`` changes the random moments.
"""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", default=False,
                     help="fault suite: repeat each scenario SOAK_ROUNDS times (default 5), longer outages")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "soak_round" in metafunc.fixturenames:
        rounds = int(os.environ.get("SOAK_ROUNDS", "5")) if metafunc.config.getoption("--soak") else 1
        metafunc.parametrize("soak_round", range(rounds), ids=[f"round{i}" for i in range(rounds)])


@pytest.fixture
def soak(request) -> bool:
    return request.config.getoption("--soak")


@pytest.fixture
def seed(soak_round) -> int:
    return int(os.environ.get("FAULTS_SEED", "20261125")) + soak_round
