"""A real HTTP media host on 127.0.0.1 for download tests: routes are scripted per path.

Each route is a list of *responses* served in turn (the last one repeats), so "429 then 200" or
"503 twice then 200" are one line. Every request is logged with its arrival time
(``time.monotonic()``) so tests assert on what the server saw: retries, waits, request spacing.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal


@dataclass
class Reply:
    """One scripted response."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/octet-stream"
    headers: dict[str, str] = field(default_factory=dict)
    # how the body goes out: with Content-Length, chunked (no length), or not at all
    # "trickle" sends the body one byte per interval; "trickle_head" does that to the headers
    mode: Literal["length", "chunked", "hang", "trickle", "trickle_head"] = "length"
    trickle_interval_s: float = 0.2


@dataclass(frozen=True)
class Hit:
    path: str
    at: float  # time.monotonic() when the request line and headers had arrived
    headers: dict[str, str]


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that hang up mid-request (size cap, deadline) are expected here, not errors."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionResetError, BrokenPipeError, TimeoutError)):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class MediaServer:
    """``ThreadingHTTPServer`` in a daemon thread; use as a context manager."""

    def __init__(self) -> None:
        self._routes: dict[str, list[Reply]] = {}
        self._served: dict[str, int] = {}
        self.hits: list[Hit] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="media-server",
                                        daemon=True)

    # ---------------------------------------------------------------- setup

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def route(self, path: str, *replies: Reply) -> str:
        """Serve ``replies`` in turn at ``path`` (the last repeats); return its URL."""
        self._routes[path] = list(replies)
        return self.url(path)

    def image(self, path: str, body: bytes, content_type: str = "image/jpeg") -> str:
        return self.route(path, Reply(body=body, content_type=content_type))

    def hits_for(self, path: str) -> list[Hit]:
        with self._lock:
            return [h for h in self.hits if h.path == path]

    def __enter__(self) -> "MediaServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()  # wakes "hang" and "trickle" handlers
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # ---------------------------------------------------------------- serving

    def _next_reply(self, path: str) -> Reply | None:
        with self._lock:
            replies = self._routes.get(path)
            if not replies:
                return None
            n = self._served.get(path, 0)
            self._served[path] = n + 1
            return replies[min(n, len(replies) - 1)]

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as separate writes

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
                pass  # keep test output clean; the hit log is the record

            def do_GET(self) -> None:  # noqa: N802 - stdlib name
                path = self.path.split("?", 1)[0]
                with server._lock:
                    server.hits.append(Hit(path, time.monotonic(), dict(self.headers.items())))
                reply = server._next_reply(path)
                if reply is None:
                    reply = Reply(status=404, body=b"<html>not here</html>", content_type="text/html")
                try:
                    self._send(reply)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (size cap, deadline): expected in these tests

            def _send(self, reply: Reply) -> None:
                if reply.mode == "hang":  # accept, read the request, never answer
                    server._stop.wait(60)
                    self.close_connection = True
                    return
                if reply.mode == "trickle_head":  # a response head that never quite ends
                    head = (f"HTTP/1.1 {reply.status} OK\r\nContent-Type: {reply.content_type}\r\n"
                            + "X-Padding: " + "x" * 10_000 + "\r\n\r\n").encode()
                    for i in range(len(head)):
                        if server._stop.wait(reply.trickle_interval_s):
                            break
                        self.wfile.write(head[i : i + 1])
                        self.wfile.flush()
                    self.close_connection = True
                    return
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                if reply.mode == "chunked":
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for i in range(0, len(reply.body), 16 * 1024):
                        part = reply.body[i : i + 16 * 1024]
                        self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                    return
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if reply.mode == "trickle":
                    for i in range(len(reply.body)):
                        if server._stop.wait(reply.trickle_interval_s):
                            break
                        self.wfile.write(reply.body[i : i + 1])
                        self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(reply.body)

        return Handler
