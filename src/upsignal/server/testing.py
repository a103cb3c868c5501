"""Helpers for tests and benchmarks: the server in a background thread on 127.0.0.1, and ingest log entries."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import orjson
import uvicorn

from upsignal.server.ingest import RequestEntry, check_request


class ServerThread:
    """A uvicorn server for an ASGI app on a free loopback port, in a daemon thread."""

    def __init__(self, app: Any):
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False,
                                lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="upsignal-test-server", daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the test server stopped during startup; see its log")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the test server did not start within {timeout} s")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)


@contextlib.contextmanager
def serve_in_thread(app: Any) -> Iterator[ServerThread]:
    """Serve ``app`` until the block ends."""
    server = ServerThread(app)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def batch_entry(messages: list[Any], received_at: datetime, source: str = "test",
                future_tolerance: timedelta = timedelta(hours=1)) -> RequestEntry:
    """Return the ingest log entry of a /v1/batch request carrying ``messages``."""
    body = orjson.dumps({"batch": messages})
    checked = check_request(body, "batch", received_at, future_tolerance)
    return checked.entry(body, "batch", received_at, source, future_tolerance)
