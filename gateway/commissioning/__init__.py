"""Commissioning without the PLC: record what a PLC sends, replay it through the gateway's own
decisions (``gateway dry-run``), and serve a mapping's tags from a simulator (``gateway simulate``)."""
