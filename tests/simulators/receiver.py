"""A loopback HTTP server recording webhook deliveries (any source's ``X-<SRC>-...`` headers)."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class HookReceiver:
    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def settle(sim: Any, timeout: float = 10) -> list[dict[str, Any]]:
    """Wait until the simulator's outbox has deliveries and none is pending; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deliveries: list[dict[str, Any]] = sim.admin("GET", "/webhooks/deliveries")["deliveries"]
        if deliveries and all(d["status"] != "pending" for d in deliveries):
            return deliveries
        time.sleep(0.05)
    raise AssertionError("webhook deliveries did not settle")
