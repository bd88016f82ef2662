"""The gateway's HTTP face: liveness, readiness, Prometheus metrics and the JSON API.

It is served by uvicorn on the running gateway's own event loop (``server``), reads the
gateway's live state without changing it, and reaches the ledger only from worker threads
(the loop that reads the PLCs never waits on a database). It never counts, confirms or
posts anything itself: ledger operations go through the application layer.
"""
