"""The house rules of docs/architecture.md, checked on the import statements of the code.

* ``gateway/domain/`` is the pure core: it imports the standard library and itself, nothing
  else (no gateway module, no third-party package), so it can be tested and reasoned about
  without I/O, a clock or a database.
* ``gateway/sources/`` report what a PLC said: they import nothing from the domain (orders,
  counting, stock) or the ledger.
* The ledger never imports the sources, the service or the face (CLI, HTTP, console).

Imports inside functions count too: a rule broken lazily is still broken.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

GATEWAY = Path(__file__).resolve().parents[1] / "gateway"


def _imports(package: str) -> list[tuple[str, int, str]]:
    """(file, line, imported module) for every import in ``gateway/<package>/``."""
    found = []
    for file in sorted((GATEWAY / package).rglob("*.py")):
        tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [(file.relative_to(GATEWAY.parent).as_posix(), node.lineno, a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.append((file.relative_to(GATEWAY.parent).as_posix(), node.lineno, node.module))
            elif isinstance(node, ast.ImportFrom) and node.level > 0:
                raise AssertionError(f"{file}:{node.lineno}: relative import; the house writes absolute ones")
    return found


def _broken(package: str, allowed) -> list[str]:
    return [f"{file}:{line}: imports {module}" for file, line, module in _imports(package) if not allowed(module)]


def test_the_domain_imports_only_the_standard_library_and_itself():
    def allowed(module: str) -> bool:
        top = module.split(".")[0]
        return module == "gateway.domain" or module.startswith("gateway.domain.") or (
            top != "gateway" and top in sys.stdlib_module_names)

    assert _broken("domain", allowed) == []


@pytest.mark.parametrize("forbidden", ["gateway.domain", "gateway.ledger"])
def test_the_sources_know_no_orders_counting_or_stock(forbidden):
    assert _broken("sources", lambda m: not (m == forbidden or m.startswith(forbidden + "."))) == []


@pytest.mark.parametrize("forbidden", ["gateway.sources", "gateway.service", "gateway.machine", "gateway.cli",
                                       "gateway.http", "gateway.console"])
def test_the_ledger_never_reaches_out_to_sources_service_or_face(forbidden):
    assert _broken("ledger", lambda m: not (m == forbidden or m.startswith(forbidden + "."))) == []


def test_the_domain_reads_the_sources_quality_in_the_same_words():
    """The sources' ``Quality`` and the domain's ``ReadingQuality`` are one vocabulary in two homes."""
    from typing import get_args

    from gateway.domain.records import ReadingQuality
    from gateway.sources.base import Quality

    assert {q.value for q in Quality} == set(get_args(ReadingQuality))
