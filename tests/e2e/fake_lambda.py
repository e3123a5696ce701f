"""A fake AWS Lambda Runtime API (2018-06-01) for `tgllm lambda`.

Hands out queued events from GET /2018-06-01/runtime/invocation/next with the
Lambda-Runtime-Aws-Request-Id and Lambda-Runtime-Deadline-Ms headers, and
records what the runtime POSTs to .../invocation/<id>/response or /error.
When no event is queued, `next` waits (as the real API does) up to a bound,
then answers 500 so the runtime under test stops.
"""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PREFIX = "/2018-06-01/runtime/invocation/"


class FakeLambda:
    def __init__(self, idle_limit: float = 5.0):
        self.events = []          # (request_id, event dict, deadline seconds from now)
        self.responses = {}       # request_id -> ("response" | "error", parsed body)
        self.idle_limit = idle_limit
        self.cond = threading.Condition()
        self._server = None

    def start(self) -> "FakeLambda":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, code, body=b"", headers=()):
                self.send_response(code)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except BrokenPipeError:
                    pass  # the runtime under test was stopped while waiting for an event

            def do_GET(self):
                if self.path != PREFIX + "next":
                    return self._send(404)
                with fake.cond:
                    fake.cond.wait_for(lambda: fake.events, timeout=fake.idle_limit)
                    if not fake.events:
                        return self._send(500, b'{"errorMessage":"no more events"}')
                    rid, event, deadline = fake.events.pop(0)
                deadline_ms = int((time.time() + deadline) * 1000)
                self._send(200, json.dumps(event).encode(), [
                    ("Lambda-Runtime-Aws-Request-Id", rid),
                    ("Lambda-Runtime-Deadline-Ms", str(deadline_ms)),
                    ("Content-Type", "application/json")])

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                parts = self.path[len(PREFIX):].split("/") if self.path.startswith(PREFIX) else []
                if len(parts) != 2 or parts[1] not in ("response", "error"):
                    return self._send(404)
                with fake.cond:
                    fake.responses[parts[0]] = (parts[1], json.loads(body or b"null"))
                    fake.cond.notify_all()
                self._send(202, b'{"status":"OK"}')

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def push(self, request_id: str, event: dict, deadline: float = 30.0):
        with self.cond:
            self.events.append((request_id, event, deadline))
            self.cond.notify_all()

    def wait_response(self, request_id: str, timeout: float = 15.0):
        with self.cond:
            if not self.cond.wait_for(lambda: request_id in self.responses, timeout=timeout):
                raise AssertionError(f"no response for invocation {request_id} within {timeout} s")
            return self.responses[request_id]

    def stop(self):
        if self._server:
            self._server.shutdown()
            self._server.server_close()
