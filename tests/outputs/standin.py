"""A webhook receiver for tests: a real HTTP server on a thread that counts effects per delivery key.

It behaves as a receiver should (dedupes by key: the first POST of a key takes effect, a later
one answers 200 without a second effect; ``HEAD /<key>`` says 200 when it has the key, 404
when not) and can be told to misbehave: ``down`` (connections refused: the listener closes),
``slow`` (answers after ``delay_s``), ``error`` (503), ``refuse`` (422 with a message, for keys
matching ``refuse_keys``), ``hang_keys`` / ``hang_all`` (takes the effect, then answers too late).

It takes the batch body too (docs/outputs.md, "Batches"): the deliveries in array order, each
deduped by its own key, answered with one result each; after a refused one, the later ones of
the same order are answered 424 and not acted on. A key of ``hang_keys`` in a batch is a
receiver that commits up to and including that delivery and then stalls: the deliveries after
it are received but not acted on, and the answer comes after ``delay_s`` (too late). With
``results = False`` it answers a batch 200 without results (it took the whole batch).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import Counter, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote


class Standin:
    def __init__(self, port: int, secret: str | None = None) -> None:
        self.port = port
        self.secret = secret
        self.mode = "up"
        self.delay_s = 0.0
        self.refuse_keys: set[str] = set()
        self.hang_keys: set[str] = set()  # commit, then answer after delay_s (once per key)
        self.hang_all = False  # every key as if in hang_keys
        self.effects: Counter[str] = Counter()  # key → effects taken (must end at 1 each)
        self.posts: Counter[str] = Counter()  # key → POSTs received
        self.lookups: Counter[str] = Counter()  # key → HEADs received (the worker asking "do you have it?")
        self.order: list[str] = []  # keys in the order their effect was taken
        self.bodies: dict[str, dict] = {}
        self.requests: list[int] = []  # deliveries per POST received, in arrival order
        self.batches: deque[tuple[str, dict]] = deque(maxlen=100)  # (Idempotency-Key, body) of the last batch POSTs
        self.results = True
        self.bad_signatures = 0
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def up(self) -> None:
        if self._server is not None:
            return
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                key = unquote(self.path.rsplit("/", 1)[-1])
                with standin.lock:
                    standin.lookups[key] += 1
                    have = standin.effects[key] > 0
                self.send_response(200 if have else 404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                key = self.headers.get("Idempotency-Key", "")
                if standin.secret is not None:
                    want = "sha256=" + hmac.new(standin.secret.encode(), body, hashlib.sha256).hexdigest()
                    if self.headers.get("X-Signature") != want:
                        standin.bad_signatures += 1
                        return self._answer(401, "bad signature")
                parsed = json.loads(body)
                if "deliveries" in parsed:
                    return self._batch(key, parsed)
                with standin.lock:
                    standin.requests.append(1)
                    standin.posts[key] += 1
                if standin.mode == "error":
                    return self._answer(503, "maintenance")
                if key in standin.refuse_keys:
                    return self._answer(422, f"order closed for {key}")
                if standin.mode == "slow":
                    time.sleep(standin.delay_s)
                with standin.lock:
                    if standin.effects[key] == 0:
                        standin.order.append(key)
                        standin.bodies[key] = json.loads(body)
                    standin.effects[key] += 0 if standin.effects[key] else 1
                    hang = key in standin.hang_keys or (standin.hang_all and standin.posts[key] == 1)
                    standin.hang_keys.discard(key)
                if hang:
                    time.sleep(standin.delay_s)
                self._answer(200, "ok")

            def _batch(self, batch_key: str, parsed: dict):
                items = parsed["deliveries"]
                with standin.lock:
                    standin.requests.append(len(items))
                    standin.batches.append((batch_key, parsed))
                    for item in items:
                        standin.posts[item["key"]] += 1
                if standin.mode == "error":
                    return self._answer(503, "maintenance")
                if standin.mode == "slow":
                    time.sleep(standin.delay_s)
                results, failed_orders, hang, stalled = [], set(), False, False
                with standin.lock:
                    for item in items:
                        key = item["key"]
                        if stalled:
                            continue  # received, never acted on: the receiver stalled before it
                        if item.get("order") in failed_orders:
                            results.append({"key": key, "status": 424, "message": "an earlier delivery of its order failed"})
                            continue
                        if key in standin.refuse_keys:
                            failed_orders.add(item.get("order"))
                            results.append({"key": key, "status": 422, "message": f"order closed for {key}"})
                            continue
                        first_post = standin.posts[key] == 1
                        if standin.effects[key] == 0:
                            standin.order.append(key)
                            standin.bodies[key] = item
                            standin.effects[key] = 1
                        results.append({"key": key, "status": 200, "message": "ok"})
                        if key in standin.hang_keys:
                            standin.hang_keys.discard(key)
                            hang = stalled = True
                        hang |= standin.hang_all and first_post
                if hang:
                    time.sleep(standin.delay_s)
                if standin.results:
                    return self._reply(200, {"results": results})
                self._answer(200, "ok")

            def _answer(self, status: int, text: str):
                self._reply(status, {"message": text})

            def _reply(self, status: int, answer: dict):
                data = json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # a worker's parallel lookups must not overflow the listen backlog

        self._server = Server(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def close(self) -> None:
        self.down()
