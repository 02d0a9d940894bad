"""A loopback HTTP server recording webhook deliveries (any source's ``X-<SRC>-...`` headers)."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class HookReceiver:
    def __init__(self, fail_first: bool = False) -> None:
        """``fail_first``: answer 500 to the first delivery of each delivery id."""
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.failed: set[str] = set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                delivery = next((v for k, v in headers.items() if k.endswith("-delivery-id")), "")
                status = 200
                if fail_first and delivery not in receiver.failed:
                    receiver.failed.add(delivery)
                    status = 500
                receiver.received.append((headers, body))
                self.send_response(status)
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
