"""Builds the configured outputs' targets from the mapping: one ``Target`` per ``outputs.<name>``.

An adapter registers the kind it serves in ``BUILDERS`` (kind → builder); ``build`` refuses
a kind no adapter serves, naming it, rather than dropping its deliveries silently.

Must never: deliver anything or touch the ledger.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.mapping.model import Mapping
from gateway.outputs.base import Target

# kind → (output name, the kind's settings, the whole mapping) → Target
Builder = Callable[[str, object, Mapping], Target]


def _webhook(name: str, cfg, mapping: Mapping) -> Target:
    from gateway.outputs.webhook import WebhookTarget
    return WebhookTarget(name, cfg)


def _mqtt(name: str, cfg, mapping: Mapping) -> Target:
    from gateway.outputs.mqtt import MqttTarget
    return MqttTarget(name, cfg, {m: c.source for m, c in mapping.machines.items()})


def _erpnext(name: str, cfg, mapping: Mapping) -> Target:
    from gateway.outputs.erpnext import ErpNextTarget
    return ErpNextTarget(name, cfg)


def _odoo(name: str, cfg, mapping: Mapping) -> Target:
    from gateway.outputs.odoo import OdooTarget
    return OdooTarget(name, cfg)


def _sap_odata(name: str, cfg, mapping: Mapping) -> Target:
    from gateway.outputs.sap_odata import SapODataTarget
    return SapODataTarget(name, cfg)


BUILDERS: dict[str, Builder] = {"webhook": _webhook, "mqtt": _mqtt, "erpnext": _erpnext, "odoo": _odoo,
                                "sap_odata": _sap_odata}


def build(name: str, mapping: Mapping) -> Target:
    out = mapping.outputs[name]
    builder = BUILDERS.get(out.kind)
    if builder is None:
        raise ValueError(f"outputs.{name}: no adapter for {out.kind!r} in this gateway")
    return builder(name, out.settings, mapping)


def routes(mapping: Mapping) -> dict[str, list[str] | None]:
    """What ``gateway.ledger.outbox.set_routes`` writes: output → machines (None: every machine)."""
    return {name: mapping.output_machines(name) for name in mapping.outputs}
