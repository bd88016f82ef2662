"""Deliveries for the ERP adapters' tests, and the worker's rule for what follows an outcome.

``settle`` does what the outbox's delivery worker does with one row, minus the ledger and the
backoff: send; after ``unknown`` ask ``find`` and send again only when it says "not there";
after ``retry`` send again; stop at ``delivered`` or ``park``. It returns every outcome seen,
so a test can assert the path as well as the end.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from gateway.outputs.base import Delivery, Outcome, Target, Verdict

CONFIRMATION_ID = "C-0123456789abcdef0123"


def confirmation_payload(*, order: str = "1000123", final: bool = True, lot: str = "") -> dict[str, Any]:
    """Order 1000123, operation 0010 on PRESS-01: 40 good and 2 scrap, two components issued and,
    at the final operation, the 40 received — shaped as ``gateway.ledger.posting.confirmation_body``
    inside the outbox's envelope (``gateway.ledger.outbox.enqueue``)."""
    movements = [
        {"type": "261", "material": "RM-STEEL", "location": "LS-PRESS", "qty": "-8.400", "uom": "KG", "lot": lot,
         "bom_item": "0010"},
        {"type": "261", "material": "RM-CLIP", "location": "LS-PRESS", "qty": "-84", "uom": "PC", "lot": "",
         "bom_item": "0020"},
    ]
    if final:
        movements.append({"type": "101", "material": "FG-100", "location": "FG-STORE", "qty": "40", "uom": "PC",
                          "lot": order, "bom_item": ""})
    return {
        "version": 1, "what": "confirmation", "document": CONFIRMATION_ID, "order": order, "machine": "PRESS-01",
        "operation": "0010", "yield_qty": "40", "scrap_qty": "2", "uom": "PC", "trigger": "every_units",
        "first_source_time": "2026-11-30T06:00:00+00:00", "last_source_time": "2026-11-30T06:10:00+00:00",
        "start": "good=0:1000", "end": "good=0:1040", "posted_at": "2026-11-30T06:10:01+00:00",
        "movements": movements,
        "activities": [{"operation": "0010", "work_center": "WC-PRESS", "activity": "machine", "hours": "0.7000",
                        "cost": "56.00", "currency": "EUR"}],
    }


def delivery(target: str, *, confirmation_id: str = CONFIRMATION_ID, what: str = "confirmation",
             **payload: Any) -> Delivery:
    body = confirmation_payload(**payload)
    body["document"], body["what"] = confirmation_id, what
    return Delivery(id=1, key=f"{confirmation_id}:{what}:{target}", target=target, what=what,
                    order=body["order"], machine="PRESS-01", payload=body)


async def settle(target: Target, d: Delivery, *, max_attempts: int = 6) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for attempt in range(max_attempts):
        d = dataclasses.replace(d, attempts=attempt)
        outcome = await target.deliver(d)
        outcomes.append(outcome)
        while outcome.verdict is Verdict.UNKNOWN:
            there = await target.find(d)
            if there is True:
                outcome = Outcome.delivered()
                outcomes.append(outcome)
            elif there is False:
                break  # not there: send again
            else:
                raise AssertionError("find() could not tell; a worker would ask again later")
        if outcome.verdict in (Verdict.DELIVERED, Verdict.PARK):
            return outcomes
    return outcomes
