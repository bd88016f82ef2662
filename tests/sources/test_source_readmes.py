"""Each source folder's README shows a sample configuration; it must stay a valid mapping.

Telegraf's rule: a plugin's sample config is read by its tests, so the documentation cannot
drift from the schema. Here the first ``yaml`` block of ``gateway/sources/<protocol>/README.md``
is loaded as a mapping file.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.mapping.load import load_mapping

SOURCES = Path(__file__).resolve().parents[2] / "gateway" / "sources"


def _sample(protocol: str) -> str:
    text = (SOURCES / protocol / "README.md").read_text(encoding="utf-8")
    found = re.search(r"```yaml\n(.*?)```", text, re.S)
    assert found, f"gateway/sources/{protocol}/README.md has no yaml sample"
    return found.group(1)


@pytest.mark.parametrize("protocol, kind", [("opcua", "opcua"), ("modbus", "modbus")])
def test_readme_sample_is_a_valid_mapping(protocol, kind, tmp_path, monkeypatch):
    monkeypatch.setenv("PLC_LINE1_PASSWORD", "not-a-real-password")
    file = tmp_path / "mapping.yaml"
    file.write_text(_sample(protocol), encoding="utf-8")
    mapping = load_mapping(file)
    (source,) = mapping.sources.values()
    assert getattr(source, kind) is not None
    machine = next(iter(mapping.machines.values()))
    assert machine.counters.good is not None and machine.counters.scrap is not None
    if kind == "modbus":  # the README explains word order with this very tag
        assert machine.counters.scrap.word_order == "little"
