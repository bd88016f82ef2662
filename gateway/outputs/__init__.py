"""Outputs: delivering the ledger's confirmations and goods movements to other systems (webhook, MQTT, ERPs)."""
