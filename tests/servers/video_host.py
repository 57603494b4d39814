"""A loopback HTTP host for video tests: files with HTTP Range support, scripted failures, a log.

yt-dlp's HTTP downloader asks for byte ranges (``Range: bytes=0-`` and, on resume, later
offsets) and checks ``Content-Range`` on a 206, so a plain ``200 with the whole body`` server does
not exercise what it does in production. Every request is logged (method, path, Range header) so
tests can prove what was and was not fetched: a video dropped by a rule must never be requested.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

from blift.replay.byte_range import byte_range


@dataclass
class Resource:
    """What one path serves. ``statuses`` are answered first, one per request, then the body."""

    body: bytes = b""
    content_type: str = "application/octet-stream"
    statuses: list[int] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    range: str | None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that hang up mid-body (size cap) are expected in these tests."""


class VideoHost:
    """``with VideoHost() as host: url = host.add("/v.mp4", data)``."""

    def __init__(self) -> None:
        self._resources: dict[str, Resource] = {}
        self.log: list[Request] = []
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True, name="video-host")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def add(self, path: str, body: bytes, content_type: str = "video/mp4", statuses: list[int] | None = None,
            headers: dict[str, str] | None = None) -> str:
        """Serve ``body`` at ``path`` (after answering ``statuses`` in turn); return its URL."""
        with self._lock:
            self._resources[path] = Resource(body, content_type, list(statuses or []), dict(headers or {}))
        return self.base + path

    def requests_to(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.log if r.path == path]

    def paths(self) -> Iterator[str]:
        with self._lock:
            return iter([r.path for r in self.log])

    def __enter__(self) -> "VideoHost":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        host = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
                pass

            def do_HEAD(self) -> None:  # noqa: N802 - stdlib name
                self._serve(head=True)

            def do_GET(self) -> None:  # noqa: N802 - stdlib name
                self._serve(head=False)

            def _serve(self, head: bool) -> None:
                path = self.path.split("?", 1)[0]
                rng = self.headers.get("Range")
                with host._lock:
                    host.log.append(Request(self.command, path, rng))
                    res = host._resources.get(path)
                    status = res.statuses.pop(0) if res is not None and res.statuses else None
                if res is None or status is not None:
                    code = 404 if res is None else status
                    body = f"<html>status {code}</html>".encode()
                    self.send_response(code)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(body)))
                    if code in (429, 503):
                        self.send_header("Retry-After", "0")
                    self.end_headers()
                    if not head:
                        self.wfile.write(body)
                    return
                answer = byte_range(rng, len(res.body))
                chunk = answer.slice(res.body)
                self.send_response(answer.status)
                if answer.status != 416:
                    self.send_header("Content-Type", res.content_type)
                for name, value in answer.headers().items():
                    self.send_header(name, value)
                if answer.status == 416:
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                for name, value in res.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(chunk)))
                self.end_headers()
                if not head:
                    try:
                        self.wfile.write(chunk)
                    except (BrokenPipeError, ConnectionResetError):
                        pass

        return Handler
