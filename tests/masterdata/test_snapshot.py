"""One base quantity per order, rescaled exactly (gateway.masterdata.snapshot).

BOM and routing state quantities per their own base; the order states both per one
``base_qty``. Whatever the bases, the per-unit quantity must not change by a single
digit: qty_per_base / base_qty == BOM quantity / BOM base, as exact fractions.
"""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.masterdata.model import MasterData
from gateway.masterdata.snapshot import common_base, to_domain


@pytest.mark.parametrize(
    ("a", "b", "base"),
    [("100", "100", "100"), ("10", "100", "100"), ("3", "1", "3"), ("1.5", "100", "300"), ("0.25", "0.1", "0.5")],
)
def test_common_base(a: str, b: str, base: str) -> None:
    assert str(common_base(Decimal(a), Decimal(b))) == base


bases = st.decimals(min_value=Decimal("0.001"), max_value=Decimal(10_000), places=3)
quantities = st.decimals(min_value=Decimal(0), max_value=Decimal(100_000), places=6)


@given(bases, bases)
def test_common_base_is_the_least_common_multiple(a: Decimal, b: Decimal) -> None:
    c = Fraction(common_base(a, b))
    times_a, times_b = c / Fraction(a), c / Fraction(b)
    assert times_a.denominator == times_b.denominator == 1
    assert math.gcd(times_a.numerator, times_b.numerator) == 1  # no smaller common multiple


@given(bases, bases, quantities, quantities)
def test_per_unit_quantities_survive_exactly(
    bom_base: Decimal, routing_base: Decimal, qty: Decimal, hours: Decimal
) -> None:
    md = MasterData.model_validate(
        {
            "materials": {"P": {"uom": "PC"}, "C": {"uom": "KG", "decimals": 3}},
            "work_centers": {"W": {"labor_rate": 1, "machine_rate": 1, "supply_location": "LS"}},
            "boms": {
                "P": {
                    "base_quantity": str(bom_base),
                    "items": [{"item": "0010", "material": "C", "quantity": str(qty), "operation": "0010"}],
                }
            },
            "routings": {
                "P": {
                    "base_quantity": str(routing_base),
                    "operations": [{"operation": "0010", "work_center": "W", "machine_hours": str(hours)}],
                }
            },
            "orders": {"1": {"material": "P", "quantity": 1, "receipt_location": "FG"}},
        }
    )
    order = to_domain(md).orders["1"]
    base = Fraction(order.base_qty)
    assert Fraction(order.components[0].qty_per_base) / base == Fraction(qty) / Fraction(bom_base)
    assert Fraction(order.operations[0].machine_hours_per_base) / base == Fraction(hours) / Fraction(routing_base)
    assert order.components[0].supply_location == "LS"
    assert order.operations[0].final


def test_flushing_rule_cascades_material_then_work_center_then_bom_item(tmp_path) -> None:
    from gateway.masterdata.load import load_masterdata, to_domain

    path = tmp_path / "md.yaml"
    path.write_text(
        "materials:\n"
        "  P: {uom: PC}\n"
        "  GLUE: {uom: G, flushing: manual}\n"
        "  TAPE: {uom: M, flushing: manual}\n"
        "  BOLT: {uom: PC}\n"
        "  BOX: {uom: PC, flushing: order_completion}\n"
        "work_centers:\n"
        "  W1: {labor_rate: 1, machine_rate: 1, supply_location: L, flushing: order_completion}\n"
        "  W2: {labor_rate: 1, machine_rate: 1, supply_location: L}\n"
        "boms:\n"
        "  P:\n"
        "    items:\n"
        "      - {item: '10', material: GLUE, quantity: 1, operation: '0010'}\n"
        "      - {item: '20', material: TAPE, quantity: 1, operation: '0010', flushing: operation}\n"
        "      - {item: '30', material: BOLT, quantity: 1, operation: '0020'}\n"
        "      - {item: '40', material: BOX, quantity: 1, operation: '0020'}\n"
        "routings:\n"
        "  P:\n"
        "    operations:\n"
        "      - {operation: '0010', work_center: W1}\n"
        "      - {operation: '0020', work_center: W2}\n"
        "orders:\n"
        "  '1': {material: P, quantity: 1, receipt_location: FG}\n"
    )
    order = to_domain(load_masterdata(path)).orders["1"]
    assert [(c.material, c.flushing.value, c.flushing_source) for c in order.components] == [
        ("GLUE", "order_completion", "work center W1"),  # the work center beats the material
        ("TAPE", "operation", "BOM item"),  # the BOM item beats both
        ("BOLT", "operation", "default"),
        ("BOX", "order_completion", "material BOX"),
    ]
