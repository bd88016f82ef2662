"""A lease renewal that waits for a writer's fence: how much of the TTL the renewed lease keeps.

Usage: python bench/lease_wait.py --db postgresql+psycopg://127.0.0.1:5432/test [--hold 3] [--ttl 10]

A writer transaction runs the fence on 10 machines and holds their lease rows for ``--hold``
seconds (as a long posting transaction does); meanwhile the keeper's ``renew`` runs on the
same leases and waits for the rows. Printed: how long the renewal took and how long the
lease lasts after it, against ``--ttl``. PostgreSQL only (SQLite's writer holds the whole
database). It works in a schema of its own, which it drops.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select

from bench.e2e import isolated_url
from gateway.ledger import leases
from gateway.ledger import schema
from gateway.ledger.schema import metadata, open_engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True, help="a PostgreSQL URL")
    parser.add_argument("--hold", type=float, default=3.0, help="seconds the writer holds the lease rows")
    parser.add_argument("--ttl", type=float, default=leases.DEFAULT_TTL_S)
    args = parser.parse_args()
    url, drop = isolated_url(args.db)
    engine = open_engine(url)
    try:
        metadata.create_all(engine)
        me = leases.Me.here("bench-probe")
        with engine.begin() as conn:
            tokens, _ = leases.acquire(conn, me, [f"U{i:05d}" for i in range(10)], args.ttl, all_or_nothing=True)
        fenced = threading.Event()

        def writer() -> None:
            with engine.begin() as conn:
                leases.Fence(me, args.ttl)(conn, tokens)
                fenced.set()
                time.sleep(args.hold)

        thread = threading.Thread(target=writer)
        thread.start()
        fenced.wait()
        began = time.monotonic()
        with engine.begin() as conn:
            lost = leases.renew(conn, me, tokens, args.ttl)
        took = time.monotonic() - began
        with engine.connect() as conn:  # right after the renewal, while the writer may still hold the rows
            left = conn.execute(select(func.min(schema.machine_leases.c.expires_at))).scalar_one() - leases.db_now(conn)
        thread.join()
        print(f"writer held the lease rows {args.hold:g} s; renew took {took:.2f} s (lost: {len(lost)}); "
              f"the renewed leases expire {left:.2f} s after it, of a {args.ttl:g} s TTL")
    finally:
        engine.dispose()
        drop()


if __name__ == "__main__":
    main()
