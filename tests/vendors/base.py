"""A threaded HTTP server with fault injection, the base of every local vendor server."""

from __future__ import annotations

import itertools
import json
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Response:
    status: int
    body: Any = None  # dict or list as JSON, str as text
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Fault:
    """What to do instead of (or after) handling the next request whose path starts with ``path``.

    Kind ``status`` responds with ``status``, ``body`` and ``headers``. Kind
    ``drop`` closes the connection without a response. Kind ``slow`` applies the
    request and waits ``delay`` seconds before responding normally. With
    ``apply``, a ``status`` or ``drop`` fault comes after the request took
    effect, as when the vendor did the work but the response was lost.
    """

    kind: str
    status: int = 500
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    apply: bool = False
    path: str = ""


class QuietServer(ThreadingHTTPServer):
    """Drops the traceback that socketserver prints when a killed client resets its connection."""

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class VendorServer:
    """Serves ``handle(request)`` on 127.0.0.1 in background threads."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.faults: list[Fault] = []
        self.log: list[tuple[str, str, int]] = []
        self.latency = 0.0
        # Called with ("received" | "applied" | "responded", request number); the crash test kills from here.
        self.hook: Callable[[str, int], None] | None = None
        self.counter = itertools.count(1)
        self.httpd: ThreadingHTTPServer | None = None

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> VendorServer:
        vendor = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in separate writes; without this, Nagle's algorithm
                # and delayed ACKs add about 40 ms to every keep-alive request.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args: object) -> None:
                pass

            def _serve(self) -> None:
                vendor.serve(self)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

        self.httpd = QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()

    @property
    def url(self) -> str:
        assert self.httpd is not None
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def inject(self, *faults: Fault) -> None:
        with self.lock:
            self.faults.extend(faults)

    def statuses(self, path: str = "") -> list[int]:
        with self.lock:
            return [status for _, logged_path, status in self.log if logged_path.startswith(path)]

    # -- one request ------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        raise NotImplementedError

    def _take_fault(self, path: str) -> Fault | None:
        with self.lock:
            for index, fault in enumerate(self.faults):
                if path.startswith(fault.path):
                    return self.faults.pop(index)
        return None

    def serve(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        request = Request(handler.command, parts.path, parse_qs(parts.query),
                          {key: value for key, value in handler.headers.items()}, handler.rfile.read(length))
        number = next(self.counter)
        self._call_hook("received", number)
        fault = self._take_fault(request.path)
        if fault and not fault.apply and fault.kind != "slow":
            self._respond_with_fault(handler, request, fault)
            return
        with self.lock:
            response = self.handle(request)
        self._call_hook("applied", number)
        if fault and fault.kind == "slow":
            time.sleep(fault.delay)
        elif fault:
            self._respond_with_fault(handler, request, fault)
            return
        if self.latency:
            time.sleep(self.latency)
        self._write(handler, request, response)
        self._call_hook("responded", number)

    def _call_hook(self, phase: str, number: int) -> None:
        if self.hook is not None:
            self.hook(phase, number)

    def _respond_with_fault(self, handler: BaseHTTPRequestHandler, request: Request, fault: Fault) -> None:
        if fault.kind == "drop":
            with self.lock:
                self.log.append((request.method, request.path, 0))
            handler.close_connection = True
            return
        self._write(handler, request, Response(fault.status, fault.body, fault.headers))

    def _write(self, handler: BaseHTTPRequestHandler, request: Request, response: Response) -> None:
        if isinstance(response.body, (dict, list)):
            payload, content_type = json.dumps(response.body).encode(), "application/json"
        else:
            payload, content_type = (response.body or "").encode(), "text/plain"
        with self.lock:
            self.log.append((request.method, request.path, response.status))
        try:
            handler.send_response(response.status)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(payload)))
            for name, value in response.headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True
