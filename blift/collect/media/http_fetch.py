"""Polite, bounded HTTP GETs for media files: the network half of the download stage.

Why this is more than ``requests.get``: the URLs come from strangers. So every fetch

* refuses private, loopback, link-local, multicast and reserved addresses (unless allowed),
  checking the *resolved* addresses before each hop of a redirect chain **and** the peer address
  of every new connection (a DNS answer that changes between the check and the connect, "DNS
  rebinding", is caught at the socket);
* waits its turn in a per-host rate limiter shared by every thread of the process;
* streams the body under a size cap and a total deadline, so a huge file, an endpoint that never
  answers, or one that trickles a byte a second cannot hold a worker;
* retries only what a retry can fix (timeouts, resets, 408/425/429/5xx), with exponential
  backoff and jitter, honouring ``Retry-After`` up to a cap.

Outcomes are split the way the runner needs them: :class:`FetchRejected` is a permanent fact
about the URL (404, 403, too large, blocked address...), :class:`blift.errors.TransientError`
is raised once the retries are spent on something that may work later.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import BinaryIO, Callable, Iterable
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from blift.errors import TransientError
from blift.retry import RetriesExhausted, backoff_delay, call_with_retries

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_RETRYABLE = frozenset({408, 425, 429, 500, 502, 503, 504})
_RETRY_AFTER_STATUSES = frozenset({429, 503})
_PERMANENT_REASONS = {404: "not_found", 410: "not_found", 401: "forbidden", 403: "forbidden"}
_CHUNK = 64 * 1024


class FetchRejected(Exception):
    """A permanent fact about a URL (``reason`` is a short stable name, the message says why)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class BlockedAddress(Exception):
    """A connection to a forbidden address was refused.

    Deliberately not an ``OSError``: urllib3 and requests wrap OSErrors into retryable connection
    errors, and a blocked address must surface as itself, not as a network hiccup.
    """


class _Retryable(Exception):
    """One attempt failed in a way a later attempt may not (internal to the retry loop)."""

    def __init__(self, kind: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after


# --------------------------------------------------------------------------- address guard


def blocked_kind(ip: IPAddress) -> str | None:
    """Why an address must not be fetched from (None when it is a public unicast address)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return blocked_kind(ip.ipv4_mapped)
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    )
    for kind, hit in checks:
        if hit:
            return kind
    if not ip.is_global:  # shared address space (100.64/10), documentation ranges, ...
        return "non-global"
    return None


class AddressGuard:
    """Decides which addresses may be fetched from: the SSRF guard of the downloader."""

    def __init__(self, allow_private: bool = False, deny_networks: Iterable[str] = ()) -> None:
        self.allow_private = allow_private
        self.deny_networks = tuple(ipaddress.ip_network(n, strict=False) for n in deny_networks)

    @property
    def active(self) -> bool:
        return not self.allow_private or bool(self.deny_networks)

    def why_blocked(self, ip: IPAddress) -> str | None:
        for net in self.deny_networks:
            if ip.version == net.version and ip in net:
                return f"in denied network {net}"
        if not self.allow_private:
            kind = blocked_kind(ip)
            if kind:
                return f"{kind} address"
        return None

    def check_ip(self, address: str, host: str, verb: str = "connects to") -> None:
        """Raise :class:`BlockedAddress` when ``address`` (resolved or connected) is forbidden."""
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        why = self.why_blocked(ip)
        if why:
            raise BlockedAddress(f"{host} {verb} {ip}, a {why}; fetching it is not allowed")

    def check_host(self, host: str, port: int) -> None:
        """Resolve ``host`` and raise :class:`BlockedAddress` if any of its addresses is forbidden.

        Every address must pass, not just the first: the connection may use any of them.
        """
        if not self.active:
            return
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
            addresses = [str(ip)]
        except ValueError:
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except socket.gaierror as exc:
                raise _Retryable("dns", f"cannot resolve {host}: {exc}") from exc
            addresses = sorted({str(info[4][0]) for info in infos})
        for address in addresses:
            self.check_ip(address, host, verb="is" if address == host.strip("[]") else "resolves to")


_deadline = threading.local()  # monotonic deadline of the attempt running on this thread


def _shutdown_socket(sock: socket.socket) -> None:
    """Wake a thread blocked reading ``sock`` (close() alone does not, shutdown() does)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _pool_classes(guard: AddressGuard) -> dict[str, type[HTTPConnectionPool]]:
    """urllib3 pool classes whose connections (a) check the peer address right after connecting
    and (b) give up waiting for the response head at the attempt's deadline.

    (b) matters because socket timeouts bound each read, not the whole head: a server sending a
    header byte every few seconds would otherwise hold the worker indefinitely.
    """

    def new_conn(conn: HTTPConnection, parent: type[HTTPConnection]) -> socket.socket:
        sock = parent._new_conn(conn)
        if guard.active:
            try:
                guard.check_ip(sock.getpeername()[0], conn.host)
            except BaseException:
                sock.close()
                raise
        return sock

    def get_response(conn: HTTPConnection, parent: type[HTTPConnection]) -> urllib3.response.HTTPResponse:
        deadline = getattr(_deadline, "at", None)
        sock = conn.sock
        if deadline is None or sock is None:
            return parent.getresponse(conn)
        timer = threading.Timer(max(0.0, deadline - time.monotonic()), _shutdown_socket, args=(sock,))
        timer.daemon = True
        timer.start()
        try:
            return parent.getresponse(conn)
        finally:
            timer.cancel()

    class GuardedHTTPConnection(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            return new_conn(self, HTTPConnection)

        def getresponse(self) -> urllib3.response.HTTPResponse:  # type: ignore[override]
            return get_response(self, HTTPConnection)

    class GuardedHTTPSConnection(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            return new_conn(self, HTTPSConnection)

        def getresponse(self) -> urllib3.response.HTTPResponse:  # type: ignore[override]
            return get_response(self, HTTPSConnection)

    class GuardedHTTPConnectionPool(HTTPConnectionPool):
        ConnectionCls = GuardedHTTPConnection

    class GuardedHTTPSConnectionPool(HTTPSConnectionPool):
        ConnectionCls = GuardedHTTPSConnection

    return {"http": GuardedHTTPConnectionPool, "https": GuardedHTTPSConnectionPool}


class GuardedAdapter(HTTPAdapter):
    """A requests adapter whose direct connections go through :class:`AddressGuard` and obey the
    attempt deadline.

    Connections through a proxy are to the proxy, so there only the pre-resolution check of the
    target host applies (the proxy resolves the name itself).
    """

    def __init__(self, guard: AddressGuard, **kwargs: object) -> None:
        self._guard = guard  # set before super().__init__, which builds the pool manager
        super().__init__(**kwargs)  # type: ignore[arg-type]

    def init_poolmanager(self, *args: object, **kwargs: object) -> None:
        super().init_poolmanager(*args, **kwargs)  # type: ignore[arg-type]
        self.poolmanager.pool_classes_by_scheme = _pool_classes(self._guard)


# --------------------------------------------------------------------------- rate limiting


class HostRateLimiter:
    """At most ``rps`` request starts per second per host, shared by all threads.

    Each caller reserves the next free slot under a lock and sleeps outside it, so threads queue
    fairly and the spacing holds however many threads there are. ``rps <= 0`` disables it.
    """

    def __init__(self, rps: float) -> None:
        self.interval = 1.0 / rps if rps > 0 else 0.0
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, host: str) -> float:
        """Block until ``host`` may be contacted again; return the seconds waited."""
        if self.interval <= 0:
            return 0.0
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next.get(host, now))
            self._next[host] = slot + self.interval
        delay = slot - now
        if delay > 0:
            time.sleep(delay)
        return delay


# --------------------------------------------------------------------------- retry timing


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


# --------------------------------------------------------------------------- the fetcher


@dataclass(frozen=True)
class FetchPolicy:
    """Limits of one fetch; the stage builds it from its config."""

    max_bytes: int = 20 * 1024 * 1024
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 30.0  # per socket read AND total per attempt (headers + body)
    retries: int = 3
    backoff_s: float = 1.0
    max_retry_after_s: float = 60.0
    max_redirects: int = 5
    user_agent: str = "blift"
    accept: str = "image/*,*/*;q=0.5"
    # total time per attempt (response head + body); None: read_timeout_s. Large files (videos)
    # need more than one socket read's worth, while each read still times out after read_timeout_s
    total_timeout_s: float | None = None

    @property
    def deadline_s(self) -> float:
        return self.total_timeout_s if self.total_timeout_s is not None else self.read_timeout_s


@dataclass
class Fetched:
    """A successful GET: the final URL after redirects and the whole body."""

    url: str
    final_url: str
    status: int
    content_type: str | None
    body: bytes
    attempts: int
    redirects: list[str] = field(default_factory=list)


@dataclass
class FetchedFile:
    """A successful GET streamed into a file: ``size`` bytes written at the file's position."""

    url: str
    final_url: str
    status: int
    content_type: str | None
    size: int
    attempts: int
    redirects: list[str] = field(default_factory=list)


HeadCheck = Callable[[bytes], None]


class Fetcher:
    """Thread-safe downloader: one ``requests.Session`` per thread, shared guard and limiter."""

    HEAD_BYTES = 32  # how much of the body ``head_check`` sees before the rest is fetched

    def __init__(self, policy: FetchPolicy, guard: AddressGuard, limiter: HostRateLimiter) -> None:
        self.policy = policy
        self.guard = guard
        self.limiter = limiter
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()

    def session(self) -> requests.Session:
        """This thread's session (requests sessions are not documented as thread-safe)."""
        sess = getattr(self._local, "session", None)
        if sess is None:
            sess = requests.Session()
            adapter = GuardedAdapter(self.guard, max_retries=0)
            sess.mount("http://", adapter)
            sess.mount("https://", adapter)
            # identity: a compressed body would bypass the byte cap's intent and sniffing order
            sess.headers.update(
                {"User-Agent": self.policy.user_agent, "Accept": self.policy.accept, "Accept-Encoding": "identity"}
            )
            self._local.session = sess
            with self._sessions_lock:
                self._sessions.append(sess)
        return sess

    def close(self) -> None:
        with self._sessions_lock:
            for sess in self._sessions:
                sess.close()
            self._sessions.clear()
        self._local = threading.local()

    def fetch(self, url: str, head_check: HeadCheck | None = None) -> Fetched:
        """GET ``url`` with retries. Raises FetchRejected (permanent) or TransientError."""
        fetched = self._with_retries(url, lambda: self._attempt(url, head_check, None, None))
        assert isinstance(fetched, Fetched)
        return fetched

    def fetch_into(self, url: str, out: BinaryIO, head_check: HeadCheck | None = None,
                   max_bytes: int | None = None) -> FetchedFile:
        """GET ``url`` with retries, streaming the body into ``out`` from its current position
        (a retry truncates back to it), so a large file never sits in memory. ``max_bytes``
        (default: the policy's) caps this body. Raises FetchRejected or TransientError; after a
        failure ``out`` holds whatever was written, the caller discards it."""
        start = out.tell()
        fetched = self._with_retries(url, lambda: self._attempt(url, head_check, out, start, max_bytes))
        assert isinstance(fetched, FetchedFile)
        return fetched

    def fetch_to_file(self, url: str, path: Path, head_check: HeadCheck | None = None,
                      max_bytes: int | None = None) -> FetchedFile:
        """:meth:`fetch_into` a new file at ``path`` (created or truncated)."""
        with open(path, "wb") as out:
            return self.fetch_into(url, out, head_check, max_bytes)

    def _with_retries(self, url: str, attempt_once: Callable[[], Fetched | FetchedFile]) -> Fetched | FetchedFile:
        def wait(attempt: int, exc: BaseException) -> float:
            asked = exc.retry_after if isinstance(exc, _Retryable) else None
            if asked is not None:
                return min(asked, self.policy.max_retry_after_s)
            return backoff_delay(attempt, self.policy.backoff_s, self.policy.max_retry_after_s)

        def told(attempt: int, exc: BaseException, delay: float) -> None:
            log.debug("retry %d/%d of %s in %.2fs: %s", attempt, self.policy.retries, url, delay, exc)

        try:
            fetched, attempt = call_with_retries(attempt_once,
                                                 attempts=self.policy.retries + 1,
                                                 retry_on=lambda e: isinstance(e, _Retryable), wait=wait, on_retry=told)
        except RetriesExhausted as gave_up:
            last = gave_up.last
            assert isinstance(last, _Retryable)
            tries = f"{gave_up.attempts} attempt{'s' if gave_up.attempts > 1 else ''}"
            raise TransientError(f"{url}: {last} (gave up after {tries})", error_type=last.kind) from None
        fetched.attempts = attempt
        return fetched

    # one attempt: follow redirects by hand so every hop passes the guard and the limiter
    def _attempt(self, url: str, head_check: HeadCheck | None, out: BinaryIO | None, start: int | None,
                 max_bytes: int | None = None) -> Fetched | FetchedFile:
        deadline: float | None = None  # starts once the first request may go (not while queued)
        current = url
        hops: list[str] = []
        for _ in range(self.policy.max_redirects + 1):
            host, port = _check_url(current)
            try:
                self.guard.check_host(host, port)
            except BlockedAddress as exc:
                raise FetchRejected("blocked_address", str(exc)) from exc
            self.limiter.wait(host)
            if deadline is None:
                deadline = time.monotonic() + self.policy.deadline_s
            resp = self._send(current, deadline)
            with resp:
                status = resp.status_code
                if status in _REDIRECTS and resp.headers.get("Location"):
                    hops.append(current)
                    current = urljoin(current, resp.headers["Location"])
                    continue
                if 200 <= status < 300:
                    if out is None:
                        body = self._read_body(resp, current, deadline, head_check, None, max_bytes)
                        return Fetched(url, current, status, resp.headers.get("Content-Type"), body, 1, hops)
                    out.seek(start or 0)
                    out.truncate()
                    self._read_body(resp, current, deadline, head_check, out, max_bytes)
                    size = out.tell() - (start or 0)
                    return FetchedFile(url, current, status, resp.headers.get("Content-Type"), size, 1, hops)
                self._raise_for_status(resp, current)
        raise FetchRejected("too_many_redirects", f"{url}: more than {self.policy.max_redirects} redirects")

    def _send(self, url: str, deadline: float) -> requests.Response:
        remaining = max(0.05, deadline - time.monotonic())
        timeout = (self.policy.connect_timeout_s, min(self.policy.read_timeout_s, remaining))
        _deadline.at = deadline
        try:
            return self.session().get(url, stream=True, allow_redirects=False, timeout=timeout)
        except BlockedAddress as exc:
            raise FetchRejected("blocked_address", str(exc)) from exc
        except requests.Timeout as exc:
            raise _Retryable("timeout", f"timed out ({_short(exc)})") from exc
        except requests.ConnectionError as exc:
            if time.monotonic() >= deadline:  # our watchdog cut a response head that never ended
                raise _Retryable("timeout", f"no complete response within the {self.policy.deadline_s:g}s "
                                            f"deadline ({_short(exc)})") from exc
            raise _Retryable("connection", f"connection failed ({_short(exc)})") from exc
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                requests.exceptions.MissingSchema, requests.exceptions.InvalidHeader) as exc:
            raise FetchRejected("bad_url", f"{url}: {exc}") from exc
        finally:
            _deadline.at = None

    def _raise_for_status(self, resp: requests.Response, url: str) -> None:
        status = resp.status_code
        if status in _RETRYABLE or status >= 500:
            retry_after = None
            if status in _RETRY_AFTER_STATUSES:
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            raise _Retryable(f"http_{status}", f"HTTP {status} {resp.reason or ''}".strip(), retry_after)
        reason = _PERMANENT_REASONS.get(status, f"http_{status}")
        raise FetchRejected(reason, f"{url}: HTTP {status} {resp.reason or ''}".strip())

    def _read_body(self, resp: requests.Response, url: str, deadline: float, head_check: HeadCheck | None,
                   out: BinaryIO | None = None, max_bytes: int | None = None) -> bytes:
        """Stream the body under the byte cap and the deadline; run ``head_check`` on its start.
        With ``out`` the body is written there and ``b""`` returned, else it is returned."""
        cap = self.policy.max_bytes if max_bytes is None else max_bytes
        limit_s = self.policy.deadline_s
        length = resp.headers.get("Content-Length")
        if length is not None and length.strip().isdigit() and int(length) > cap:
            raise FetchRejected("too_large", f"{url}: Content-Length {int(length)} exceeds the {cap}-byte cap")
        raw: urllib3.response.HTTPResponse = resp.raw
        buf = bytearray()  # the body, or (with ``out``) only its head for ``head_check``
        total = 0
        checked = head_check is None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Retryable("timeout", f"download exceeded the {limit_s:g}s deadline after {total} bytes")
            _set_read_timeout(raw, min(self.policy.read_timeout_s, remaining))
            try:
                data = raw.read1(_CHUNK, decode_content=True)
            except urllib3.exceptions.ReadTimeoutError as exc:
                if time.monotonic() >= deadline - 0.02:  # the socket timeout was shrunk to the deadline
                    raise _Retryable("timeout", f"download exceeded the {limit_s:g}s deadline "
                                                f"after {total} bytes") from exc
                raise _Retryable("timeout", f"read timed out after {total} bytes") from exc
            except urllib3.exceptions.DecodeError as exc:
                raise FetchRejected("bad_encoding", f"{url}: undecodable body ({exc})") from exc
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise _Retryable("connection", f"body read failed after {total} bytes ({_short(exc)})") from exc
            if not data:
                break
            total += len(data)
            if total > cap:
                raise FetchRejected("too_large", f"{url}: body exceeds the {cap}-byte cap (stopped reading)")
            if out is None:
                buf += data
            elif not checked:
                buf += data[: self.HEAD_BYTES - len(buf)]
            if not checked and len(buf) >= self.HEAD_BYTES:
                head_check(bytes(buf[: self.HEAD_BYTES]))  # type: ignore[misc]
                checked = True
            if out is not None:
                out.write(data)
        if not checked:
            head_check(bytes(buf))  # type: ignore[misc]
        return bytes(buf) if out is None else b""


def hosted_on(url: str, hosts: list[str]) -> bool:
    """Whether ``url``'s host is one of ``hosts`` (a leading dot: that domain or any subdomain)."""
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    for want in hosts:
        want = want.lower().rstrip(".")
        if host == want.lstrip(".") or (want.startswith(".") and host.endswith(want)):
            return True
    return False


def _check_url(url: str) -> tuple[str, int]:
    """Host and port of an http(s) URL, or FetchRejected('bad_url')."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise FetchRejected("bad_url", f"{url!r}: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise FetchRejected("bad_url", f"{url!r}: only http and https URLs are fetched")
    if not parts.hostname:
        raise FetchRejected("bad_url", f"{url!r}: no host")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def _set_read_timeout(raw: urllib3.response.HTTPResponse, seconds: float) -> None:
    """Shrink the socket timeout to what is left of the deadline (best effort)."""
    conn = getattr(raw, "connection", None)
    sock = getattr(conn, "sock", None)
    if sock is not None:
        try:
            sock.settimeout(max(0.01, seconds))
        except OSError:
            pass


def _short(exc: BaseException) -> str:
    """Innermost cause of a wrapped requests/urllib3 error, kept short for the errors table."""
    while exc.__cause__ is not None or (exc.args and isinstance(exc.args[0], BaseException)):
        nxt = exc.__cause__ if exc.__cause__ is not None else exc.args[0]
        if nxt is exc:
            break
        exc = nxt
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 300 else text[:297] + "..."
