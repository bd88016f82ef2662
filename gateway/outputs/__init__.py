"""Outputs: delivering the ledger's confirmations and goods movements to other systems (webhook, MQTT, ERPs)."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources


@cache
def delivery_schema() -> dict:
    """The published JSON Schema of a delivery's body (webhook, MQTT), as installed with the package."""
    return json.loads(resources.files(__package__).joinpath("outputs.schema.json").read_text("utf-8"))
