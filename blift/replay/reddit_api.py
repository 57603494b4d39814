"""A local Reddit API that serves a *store folder* over the protocol praw speaks.

Why: the collector must be tested with the real ``praw``/``prawcore`` stack (auth, paging,
``more`` stubs, rate-limit headers, retries), and the bundled sample pipeline must run with no
internet. So this server answers exactly the requests praw 8 / prawcore 4 make:

* ``POST /api/v1/access_token`` (HTTP basic auth, ``grant_type=client_credentials`` or the
  installed-client grant) -> ``{access_token, token_type: "bearer", expires_in, scope}``
* ``GET /r/{sub}/{top,hot,new,controversial}?t=&limit=&after=&raw_json=1`` -> ``Listing`` of ``t3``
  (100 per page at most, like Reddit; ``after`` is the last fullname of the previous page)
* ``GET /comments/{id}/?limit=&sort=&raw_json=1`` -> ``[Listing[t3], Listing[t1 | more]]``
* ``GET /comments/{id}/_/{comment}?limit=&sort=`` -> the "continue this thread" view praw loads
  for a ``more`` stub with ``count == 0``
* ``POST /api/morechildren/?raw_json=1`` (form ``api_type, children, link_id, sort``) ->
  ``{"json": {"errors": [], "data": {"things": [...]}}}`` (flat things, each with ``parent_id``)
* ``GET /api/info/?id=t3_a,t1_b`` and ``GET /r/{sub}/about`` (small extras)
* ``GET|HEAD /media/{file}`` -> the bytes of ``<root>/media/{file}`` with a Content-Type

Store folder::

    <root>/posts/<id>.json   {"post": <t3 data>, "comments": [<t1 data>, ...]}   (flat comments)
    <root>/media/<file>      served at /media/<file>

Every string ``{{BASE_URL}}`` in stored JSON is served as this server's base URL, so sample
image URLs point back at the server wherever it runs.

Test hooks: a request :attr:`ReplayServer.log`, :attr:`ReplayServer.fetch_counts` (how often
``/comments/{id}`` was served with 200), and :attr:`ReplayServer.faults` (429 / 5xx for the next
N requests matching a glob, slow answers). The same hooks are reachable over HTTP under
``/__replay__/`` for a server running in its own process (``python -m blift.replay.reddit_api``).
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
import json
import math
import mimetypes
import re
import secrets
import select
import signal
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import parse_qs, urlsplit

from blift.replay.byte_range import byte_range

BASE_URL_TOKEN = "{{BASE_URL}}"
LISTINGS = ("top", "hot", "new", "controversial")
TIME_FILTERS = {"hour": 3600, "day": 86400, "week": 7 * 86400, "month": 30 * 86400, "year": 365 * 86400, "all": None}
COMMENT_SORTS = ("confidence", "top", "best", "new", "old", "controversial", "q&a", "qa", "live", "random")
PAGE_MAX = 100  # Reddit returns at most 100 things per listing page, whatever ``limit`` asks
ADMIN_PREFIX = "/__replay__"
JSON = "application/json; charset=UTF-8"
CLIENT_GONE = 499  # logged status of a slow answer whose client had already hung up (nginx's code)
_ID = re.compile(r"^[0-9a-z]{1,16}$")
_SUB = re.compile(r"^[A-Za-z0-9_+]{1,64}$")


# --------------------------------------------------------------------------------------------
# The store


class StoreError(ValueError):
    """A store file is malformed; the message names the file and the field."""


class RedditStore:
    """The posts and comments of a store folder, indexed for serving (read-only after load)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.media_dir = self.root / "media"
        self.posts: dict[str, dict[str, Any]] = {}
        self.comments: dict[str, dict[str, Any]] = {}  # comment id -> data
        self.children: dict[str, list[dict[str, Any]]] = {}  # parent fullname -> comments
        self.by_subreddit: dict[str, list[str]] = {}  # lower-case name -> post ids
        self.post_of_comment: dict[str, str] = {}
        self._load()

    def _load(self) -> None:
        posts_dir = self.root / "posts"
        if not posts_dir.is_dir():
            raise StoreError(f"{self.root}: no 'posts' folder (expected <root>/posts/<id>.json)")
        for path in sorted(posts_dir.glob("*.json")):
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise StoreError(f"{path}: not readable JSON ({exc})") from exc
            self._add(path, doc)

    def _add(self, path: Path, doc: Any) -> None:
        if not isinstance(doc, dict) or not isinstance(doc.get("post"), dict):
            raise StoreError(f"{path}: expected an object with a 'post' object")
        post = dict(doc["post"])
        post_id = str(post.get("id") or "")
        if not _ID.match(post_id):
            raise StoreError(f"{path}: field 'post.id': expected a base36 id, got {post.get('id')!r}")
        if not isinstance(post.get("subreddit"), str) or not post["subreddit"]:
            raise StoreError(f"{path}: field 'post.subreddit': expected a subreddit name")
        if post_id in self.posts:
            raise StoreError(f"{path}: post id {post_id!r} is stored twice")
        comments = doc.get("comments", [])
        if not isinstance(comments, list):
            raise StoreError(f"{path}: field 'comments': expected a list")
        post.setdefault("name", f"t3_{post_id}")
        post.setdefault("subreddit_name_prefixed", f"r/{post['subreddit']}")
        post.setdefault("permalink", f"/r/{post['subreddit']}/comments/{post_id}/")
        post.setdefault("num_comments", len(comments))
        post.setdefault("created_utc", 0)
        post.setdefault("score", 0)
        self.posts[post_id] = post
        self.by_subreddit.setdefault(post["subreddit"].lower(), []).append(post_id)
        for i, comment in enumerate(comments):
            where = f"{path}: comments[{i}]"
            if not isinstance(comment, dict):
                raise StoreError(f"{where}: expected an object")
            cid = str(comment.get("id") or "")
            if not _ID.match(cid):
                raise StoreError(f"{where}: field 'id': expected a base36 id, got {comment.get('id')!r}")
            parent = comment.get("parent_id")
            if not isinstance(parent, str) or not parent.startswith(("t1_", "t3_")):
                raise StoreError(f"{where}: field 'parent_id': expected 't1_<id>' or 't3_<id>', got {parent!r}")
            if cid in self.comments:
                raise StoreError(f"{where}: comment id {cid!r} is stored twice")
            data = dict(comment)
            data.setdefault("name", f"t1_{cid}")
            data.setdefault("link_id", f"t3_{post_id}")
            data.setdefault("subreddit", post["subreddit"])
            data.setdefault("score", 0)
            data.setdefault("created_utc", 0)
            data.setdefault("permalink", f"{post['permalink'].rstrip('/')}/comment/{cid}/")
            self.comments[cid] = data
            self.post_of_comment[cid] = post_id
            self.children.setdefault(parent, []).append(data)
        for i, comment in enumerate(comments):
            parent = comment["parent_id"]
            if parent.startswith("t1_") and parent[3:] not in self.comments:
                raise StoreError(f"{path}: comments[{i}]: parent {parent!r} is not in the file")
            if parent.startswith("t3_") and parent[3:] != post_id:
                raise StoreError(f"{path}: comments[{i}]: parent {parent!r} is not this post")

    @property
    def newest(self) -> float:
        return max((float(p.get("created_utc") or 0) for p in self.posts.values()), default=0.0)

    def subtree_size(self, comment: dict[str, Any]) -> int:
        """Number of comments in a comment's subtree, itself included."""
        stack, n = [comment], 0
        while stack:
            node = stack.pop()
            n += 1
            stack.extend(self.children.get(node["name"], ()))
        return n


def write_post(root: str | Path, post: dict[str, Any], comments: Iterable[dict[str, Any]] = ()) -> Path:
    """Write one post and its flat comments into a store folder (sample and test builders)."""
    path = Path(root) / "posts" / f"{post['id']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    (Path(root) / "media").mkdir(exist_ok=True)
    text = json.dumps({"post": post, "comments": list(comments)}, ensure_ascii=False, indent=1, sort_keys=True)
    path.write_text(text + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# Ordering


def _hot(post: dict[str, Any]) -> float:
    """Reddit's published hot formula (log-score plus age)."""
    score = int(post.get("score") or 0)
    order = math.log10(max(abs(score), 1))
    sign = 1 if score > 0 else -1 if score < 0 else 0
    return round(sign * order + (float(post.get("created_utc") or 0) - 1134028003) / 45000, 7)


def _controversy(post: dict[str, Any]) -> float:
    """Approximates Reddit's controversy: many votes (comments as a proxy), balanced up/down."""
    upvote_ratio = post.get("upvote_ratio")
    ratio = float(upvote_ratio if upvote_ratio is not None else 1.0)
    balance = 1.0 - abs(2.0 * ratio - 1.0)
    return (int(post.get("num_comments") or 0) + 1) ** balance


def sort_posts(posts: Iterable[dict[str, Any]], listing: str) -> list[dict[str, Any]]:
    def created(p: dict[str, Any]) -> float:
        return float(p.get("created_utc") or 0)

    keys = {
        "top": lambda p: (-int(p.get("score") or 0), -created(p), p["id"]),
        "new": lambda p: (-created(p), p["id"]),
        "hot": lambda p: (-_hot(p), p["id"]),
        "controversial": lambda p: (-_controversy(p), -created(p), p["id"]),
    }
    return sorted(posts, key=keys[listing])


def sort_comments(comments: Iterable[dict[str, Any]], sort: str) -> list[dict[str, Any]]:
    def created(c: dict[str, Any]) -> float:
        return float(c.get("created_utc") or 0)

    if sort == "new":
        return sorted(comments, key=lambda c: (-created(c), c["id"]))
    if sort == "old":
        return sorted(comments, key=lambda c: (created(c), c["id"]))
    if sort == "controversial":
        return sorted(comments, key=lambda c: (abs(int(c.get("score") or 0)), c["id"]))
    # confidence / top / best / q&a: by score (the real "confidence" also weighs vote counts)
    return sorted(comments, key=lambda c: (-int(c.get("score") or 0), created(c), c["id"]))


# --------------------------------------------------------------------------------------------
# Rendering things


def listing(children: list[dict[str, Any]], after: str | None = None) -> dict[str, Any]:
    return {
        "kind": "Listing",
        "data": {"after": after, "dist": len(children), "modhash": None, "geo_filter": "",
                 "children": children, "before": None},
    }


def _t3(post: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "t3", "data": post}


class CommentRenderer:
    """Renders the flat stored comments as Reddit does: nested replies, cut by a comment budget
    (remaining siblings become a ``more`` stub listing their ids) and by depth (a ``more`` stub
    with ``count: 0``, Reddit's "continue this thread")."""

    def __init__(self, store: RedditStore, *, budget: int, depth_limit: int, sort: str) -> None:
        self.store = store
        self.budget = max(0, budget)
        self.depth_limit = max(1, depth_limit)
        self.sort = sort

    def _kids(self, fullname: str) -> list[dict[str, Any]]:
        return sort_comments(self.store.children.get(fullname, ()), self.sort)

    def _more(self, parent: str, depth: int, rest: list[dict[str, Any]]) -> dict[str, Any]:
        ids = [c["id"] for c in rest]
        count = sum(self.store.subtree_size(c) for c in rest)
        return {"kind": "more", "data": {"count": count, "name": f"t1_{ids[0]}", "id": ids[0],
                                         "parent_id": parent, "depth": depth, "children": ids}}

    @staticmethod
    def _continue(parent: str, depth: int) -> dict[str, Any]:
        return {"kind": "more", "data": {"count": 0, "name": "t1__", "id": "_", "parent_id": parent,
                                         "depth": depth, "children": []}}

    def render(self, comment: dict[str, Any], depth: int) -> dict[str, Any]:
        """One comment (budget already taken) with its replies rendered below it."""
        data = dict(comment)
        data["depth"] = depth
        if not self.store.children.get(comment["name"]):
            data["replies"] = ""
        elif depth + 1 >= self.depth_limit:
            data["replies"] = listing([self._continue(comment["name"], depth + 1)])
        else:
            data["replies"] = listing(self.children(comment["name"], depth + 1))
        return {"kind": "t1", "data": data}

    def children(self, parent: str, depth: int) -> list[dict[str, Any]]:
        return self.siblings(self._kids(parent), parent, depth)

    def siblings(self, comments: list[dict[str, Any]], parent: str, depth: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for i, comment in enumerate(comments):
            if self.budget <= 0:
                out.append(self._more(parent, depth, comments[i:]))
                break
            self.budget -= 1
            out.append(self.render(comment, depth))
        return out


def flatten(things: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pre-order flat list of rendered things with ``replies`` emptied (morechildren's shape)."""
    out: list[dict[str, Any]] = []
    for thing in things:
        data = dict(thing["data"])
        replies = data.get("replies")
        if thing["kind"] == "t1":
            data["replies"] = ""
        out.append({"kind": thing["kind"], "data": data})
        if isinstance(replies, dict):
            out.extend(flatten(replies["data"]["children"]))
    return out


# --------------------------------------------------------------------------------------------
# Faults and the request log


@dataclass
class Fault:
    """Answer requests whose path matches ``pattern`` (an ``fnmatch`` glob such as
    ``/comments/*``) with ``status`` and/or after ``delay_s`` seconds, for the next ``count``
    matching requests (``None``: for ever)."""

    pattern: str
    status: int | None = None
    count: int | None = 1
    delay_s: float = 0.0
    retry_after: int | None = None  # seconds, sent as Retry-After (429 defaults to 1)
    method: str | None = None  # only this HTTP method (GET, POST); None: any

    def matches(self, method: str, path: str) -> bool:
        if self.count is not None and self.count <= 0:
            return False
        if self.method and self.method.upper() != method.upper():
            return False
        return fnmatch.fnmatchcase(path, self.pattern)


class Faults:
    """Thread-safe, run-time changeable list of faults."""

    def __init__(self, faults: Iterable[Fault] = ()) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = list(faults)

    def add(self, pattern: str, *, status: int | None = None, count: int | None = 1, delay_s: float = 0.0,
            retry_after: int | None = None, method: str | None = None) -> Fault:
        fault = Fault(pattern, status=status, count=count, delay_s=delay_s, retry_after=retry_after, method=method)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def list(self) -> list[Fault]:
        with self._lock:
            return [Fault(**asdict(f)) for f in self._faults]

    def take(self, method: str, path: str) -> tuple[float, Fault | None]:
        """(delay seconds, the status fault to answer with or None) for one request; consumes counts."""
        delay, status_fault = 0.0, None
        with self._lock:
            for fault in self._faults:
                if not fault.matches(method, path):
                    continue
                if fault.status is not None and status_fault is not None:
                    continue  # one status per request; later status faults wait their turn
                if fault.count is not None:
                    fault.count -= 1
                delay += fault.delay_s
                if fault.status is not None:
                    status_fault = fault
        return delay, status_fault


@dataclass(frozen=True)
class LogEntry:
    """One request as the server saw it."""

    time: float  # epoch seconds when it arrived
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    status: int


class RateWindow:
    """Reddit's rate-limit accounting: ``budget`` requests per ``window_s`` window, reported in
    ``x-ratelimit-*`` headers (prawcore paces itself by them)."""

    def __init__(self, budget: int, window_s: int) -> None:
        self.budget = budget
        self.window_s = window_s
        self._start = time.monotonic()
        self._used = 0
        self._lock = threading.Lock()

    def hit(self) -> tuple[int, float, int]:
        """Count one request; (used, remaining, seconds to reset)."""
        with self._lock:
            now = time.monotonic()
            if now - self._start >= self.window_s:
                self._start, self._used = now, 0
            self._used += 1
            reset = max(1, int(self._start + self.window_s - now))
            return self._used, float(self.budget - self._used), reset

    def peek(self) -> tuple[int, float, int]:
        with self._lock:
            reset = max(1, int(self._start + self.window_s - time.monotonic()))
            return self._used, float(self.budget - self._used), reset


# --------------------------------------------------------------------------------------------
# The server


class _Reply(Exception):
    """Raised inside a handler to answer with a status and JSON body."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


def _error(status: int, message: str, **extra: Any) -> _Reply:
    return _Reply(status, {"message": message, "error": status, **extra})


class ReplayServer:
    """The fake Reddit API on ``127.0.0.1``; a context manager. See the module docstring."""

    def __init__(
        self,
        root: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        comment_limit: int = 200,
        depth_limit: int = 8,
        morechildren_limit: int = 100,
        rate_limit: tuple[int, int] = (100_000, 600),
        credentials: dict[str, str] | None = None,
        token_ttl_s: int = 3600,
        subreddit_status: dict[str, str] | None = None,
        now: float | None = None,
        faults: Iterable[Fault] = (),
        static: dict[str, str | Path] | None = None,
    ) -> None:
        """
        :param comment_limit: most comments rendered by ``/comments/{id}`` (Reddit caps too);
            the rest become ``more`` stubs.
        :param depth_limit: reply levels rendered; deeper replies sit behind "continue this
            thread" stubs.
        :param rate_limit: (requests, window seconds) reported in rate-limit headers; the
            generous default keeps praw from pacing local runs (Reddit's own is ~1000 / 600 s).
        :param credentials: ``{client_id: client_secret}`` to accept; None accepts any pair.
        :param subreddit_status: ``{name: "private" | "banned" | "quarantined"}``; unknown
            subreddits redirect to search (HTTP 302) like Reddit.
        :param now: the "current" epoch second for ``t=`` time filters; default: one hour
            after the newest stored post, so stored data of any age has a useful ``t=day``.
        :param static: ``{url_prefix: folder}`` of extra files to serve with HTTP Range support
            (the YouTube sample's videos at ``/youtube/media/``, which yt-dlp downloads).
        """
        self.store = RedditStore(root)
        self.host, self._port = host, port
        self.comment_limit = comment_limit
        self.depth_limit = depth_limit
        self.morechildren_limit = morechildren_limit
        self.rate = RateWindow(*rate_limit)
        self.credentials = credentials
        self.token_ttl_s = token_ttl_s
        self.subreddit_status = {k.lower(): v for k, v in (subreddit_status or {}).items()}
        self.now = now if now is not None else self.store.newest + 3600
        self.faults = Faults(faults)
        self.static = {"/" + k.strip("/") + "/": Path(v).resolve() for k, v in (static or {}).items()}
        self._log: list[LogEntry] = []
        self._counts: Counter[str] = Counter()
        self._tokens: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("ReplayServer is not started")
        host, port = self._httpd.server_address[:2]
        assert isinstance(host, str)  # server_bind() stores getsockname(): the host is a str, never bytes
        return f"http://{host}:{port}"

    def start(self) -> ReplayServer:
        if self._httpd is not None:
            return self
        handler = type("Handler", (_Handler,), {"app": self})
        self._httpd = ThreadingHTTPServer((self.host, self._port), handler)
        self._httpd.daemon_threads = True
        self._stopping.clear()
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="reddit-replay", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> ReplayServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Block until the server is stopped (the CLI's main loop)."""
        self.start()
        assert self._thread is not None
        while self._thread.is_alive():
            self._thread.join(timeout=0.5)

    # -- test hooks --------------------------------------------------------------------------

    @property
    def log(self) -> list[LogEntry]:
        with self._lock:
            return list(self._log)

    @property
    def fetch_counts(self) -> Counter[str]:
        """How many times ``/comments/{id}`` (the full post fetch) was answered with 200; a slow
        answer whose client had hung up is logged as 499 and not counted."""
        with self._lock:
            return Counter(self._counts)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()
            self._counts.clear()

    def requests_to(self, glob: str, method: str | None = None) -> list[LogEntry]:
        return [e for e in self.log if fnmatch.fnmatchcase(e.path, glob) and (method is None or e.method == method)]

    def _record(self, entry: LogEntry, post_fetch: str | None) -> None:
        with self._lock:
            self._log.append(entry)
            if post_fetch and entry.status == 200:
                self._counts[post_fetch] += 1

    def sleep(self, seconds: float) -> None:
        """A slow answer that still ends promptly when the server stops."""
        self._stopping.wait(seconds)

    # -- routing -----------------------------------------------------------------------------

    def route(self, method: str, path: str, query: dict[str, str], form: dict[str, str],
              headers: Any) -> tuple[int, Any, dict[str, str], str | None]:
        """(status, JSON body, extra headers, post id when this is a full post fetch)."""
        clean = path.rstrip("/") or "/"
        if clean.endswith(".json"):
            clean = clean[: -len(".json")]
        parts = [p for p in clean.split("/") if p]
        if method == "POST" and clean == "/api/v1/access_token":
            return 200, self._token(form, headers), {}, None
        self._check_bearer(headers)
        if method == "GET" and len(parts) == 3 and parts[0] == "r" and parts[2] in LISTINGS:
            return 200, self._listing(parts[1], parts[2], query), {}, None
        if method == "GET" and len(parts) == 3 and parts[0] == "r" and parts[2] == "about":
            return 200, self._about(parts[1]), {}, None
        if method == "GET" and len(parts) == 2 and parts[0] == "comments":
            return 200, self._post_page(parts[1], query), {}, parts[1]
        if method == "GET" and len(parts) >= 3 and parts[0] == "comments" and len(parts) <= 4:
            # /comments/{id}/{slug} (same as the plain page) or /comments/{id}/_/{comment}
            if len(parts) == 4:
                return 200, self._thread_page(parts[1], parts[3], query), {}, None
            return 200, self._post_page(parts[1], query), {}, parts[1]
        if method == "POST" and clean == "/api/morechildren":
            return 200, self._morechildren({**query, **form}), {}, None
        if method == "GET" and clean == "/api/info":
            return 200, self._info(query.get("id", "")), {}, None
        raise _error(404, "Not Found")

    def _token(self, form: dict[str, str], headers: Any) -> dict[str, Any]:
        auth = headers.get("Authorization", "")
        if not auth.startswith("Basic "):
            raise _error(401, "Unauthorized")
        try:
            client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise _error(401, "Unauthorized") from None
        if self.credentials is not None and self.credentials.get(client_id) != secret:
            raise _error(401, "Unauthorized")
        grant = form.get("grant_type", "")
        if grant not in ("client_credentials", "https://oauth.reddit.com/grants/installed_client", "password"):
            return {"error": "unsupported_grant_type"}  # Reddit answers this with 200
        token = secrets.token_hex(12)
        with self._lock:
            self._tokens[token] = time.monotonic() + self.token_ttl_s
        return {"access_token": token, "token_type": "bearer", "expires_in": self.token_ttl_s, "scope": "*"}

    def _check_bearer(self, headers: Any) -> None:
        auth = headers.get("Authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else ""
        with self._lock:
            expiry = self._tokens.get(token)
        if expiry is None or expiry < time.monotonic():
            raise _Reply(401, {"message": "Unauthorized", "error": 401},
                         {"www-authenticate": 'Bearer realm="reddit", error="invalid_token"'})

    def _subreddit_posts(self, name: str) -> list[dict[str, Any]]:
        if not _SUB.match(name):
            raise _error(404, "Not Found")
        posts: list[dict[str, Any]] = []
        for sub in name.lower().split("+"):
            status = self.subreddit_status.get(sub)
            if status == "private":
                raise _error(403, "Forbidden", reason="private")
            if status == "quarantined":
                raise _error(403, "Forbidden", reason="quarantined")
            if status == "banned":
                raise _error(404, "Not Found", reason="banned")
            if sub not in self.store.by_subreddit:
                # Reddit sends unknown subreddits to search; prawcore raises Redirect
                raise _Reply(302, {}, {"Location": f"/subreddits/search?q={sub}"})
            posts.extend(self.store.posts[i] for i in self.store.by_subreddit[sub])
        return posts

    def _listing(self, name: str, kind: str, query: dict[str, str]) -> dict[str, Any]:
        posts = self._subreddit_posts(name)
        if kind in ("top", "controversial"):
            t = query.get("t", "day")  # Reddit's default for top is "day"
            if t not in TIME_FILTERS:
                raise _error(400, "Bad Request", reason="BAD_TIME_FILTER")
            span = TIME_FILTERS[t]
            if span is not None:
                posts = [p for p in posts if self.now - span <= float(p.get("created_utc") or 0) <= self.now]
        ordered = sort_posts(posts, kind)
        try:
            limit = max(1, min(PAGE_MAX, int(query.get("limit", 25))))
        except ValueError:
            limit = 25
        start = 0
        after = query.get("after")
        if after:
            names = [p["name"] for p in ordered]
            start = names.index(after) + 1 if after in names else len(ordered)
        page = ordered[start: start + limit]
        more = start + limit < len(ordered)
        return listing([_t3(p) for p in page], after=page[-1]["name"] if page and more else None)

    def _about(self, name: str) -> dict[str, Any]:
        posts = self._subreddit_posts(name)
        sub = posts[0]["subreddit"] if posts else name
        subscribers = max((int(p.get("subreddit_subscribers") or 0) for p in posts), default=0)
        return {"kind": "t5", "data": {"display_name": sub, "display_name_prefixed": f"r/{sub}",
                                       "name": f"t5_{sub.lower()}", "subscribers": subscribers,
                                       "over18": False, "subreddit_type": "public"}}

    def _post(self, post_id: str) -> dict[str, Any]:
        post = self.store.posts.get(post_id)
        if post is None:
            raise _error(404, "Not Found")
        if self.subreddit_status.get(post["subreddit"].lower()) == "private":
            raise _error(403, "Forbidden", reason="private")
        return post

    def _renderer(self, query: dict[str, str]) -> CommentRenderer:
        try:
            asked = int(query.get("limit") or self.comment_limit)
        except ValueError:
            asked = self.comment_limit
        try:
            depth = int(query.get("depth") or self.depth_limit)
        except ValueError:
            depth = self.depth_limit
        sort = query.get("sort") or "confidence"
        if sort not in COMMENT_SORTS:
            raise _error(400, "Bad Request", reason="INVALID_OPTION")
        return CommentRenderer(self.store, budget=min(asked, self.comment_limit),
                               depth_limit=min(depth, self.depth_limit), sort=sort)

    def _post_page(self, post_id: str, query: dict[str, str]) -> list[Any]:
        post = self._post(post_id)
        renderer = self._renderer(query)
        comments = renderer.children(post["name"], 0)
        return [listing([_t3(post)]), listing(comments)]

    def _thread_page(self, post_id: str, comment_id: str, query: dict[str, str]) -> list[Any]:
        post = self._post(post_id)
        comment = self.store.comments.get(comment_id)
        if comment is None or self.store.post_of_comment.get(comment_id) != post_id:
            raise _error(404, "Not Found")
        renderer = self._renderer(query)
        renderer.budget = max(renderer.budget, 1)
        return [listing([_t3(post)]), listing(renderer.siblings([comment], comment["parent_id"], 0))]

    def _morechildren(self, args: dict[str, str]) -> dict[str, Any]:
        link = args.get("link_id", "")
        post_id = link[3:] if link.startswith("t3_") else link
        if post_id not in self.store.posts:
            return {"json": {"errors": [["INVALID_ID", "that link does not exist", "link_id"]]}}
        ids = [c.strip() for c in args.get("children", "").split(",") if c.strip()]
        wanted = [self.store.comments[c] for c in ids
                  if c in self.store.comments and self.store.post_of_comment.get(c) == post_id]
        renderer = CommentRenderer(self.store, budget=self.morechildren_limit, depth_limit=self.depth_limit,
                                   sort=args.get("sort") or "confidence")
        things: list[dict[str, Any]] = []
        # Group by parent so each stub keeps its parent; depth is absolute, as Reddit sends it.
        by_parent: dict[str, list[dict[str, Any]]] = {}
        for comment in sort_comments(wanted, renderer.sort):
            by_parent.setdefault(comment["parent_id"], []).append(comment)
        for parent, group in by_parent.items():
            depth = self._depth_of(parent)
            things.extend(flatten(renderer.siblings(group, parent, depth)))
        return {"json": {"errors": [], "data": {"things": things}}}

    def _depth_of(self, parent: str) -> int:
        depth = 0
        while parent.startswith("t1_"):
            depth += 1
            parent = self.store.comments[parent[3:]]["parent_id"]
        return depth

    def _info(self, ids: str) -> dict[str, Any]:
        things = []
        for name in (i.strip() for i in ids.split(",")):
            if name.startswith("t3_") and name[3:] in self.store.posts:
                things.append(_t3(self.store.posts[name[3:]]))
            elif name.startswith("t1_") and name[3:] in self.store.comments:
                data = dict(self.store.comments[name[3:]])
                data["replies"] = ""
                things.append({"kind": "t1", "data": data})
        return listing(things)

    # -- rate-limit headers ------------------------------------------------------------------

    def rate_headers(self, count: bool) -> dict[str, str]:
        used, remaining, reset = self.rate.hit() if count else self.rate.peek()
        return {"x-ratelimit-used": str(used), "x-ratelimit-remaining": f"{max(remaining, 0.0):.1f}",
                "x-ratelimit-reset": str(reset)}


class _Handler(BaseHTTPRequestHandler):
    app: ReplayServer
    protocol_version = "HTTP/1.1"
    server_version = "blift-reddit-replay/1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # the structured log is ReplayServer.log

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._handle("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._handle("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self, method: str) -> None:
        app = self.app
        split = urlsplit(self.path)
        path = split.path
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        body = self._body()
        if path.startswith(ADMIN_PREFIX):
            self._admin(method, path[len(ADMIN_PREFIX):], body)
            return
        form: dict[str, str] = {}
        if body and "form-urlencoded" in (self.headers.get("Content-Type") or ""):
            form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        delay, fault = app.faults.take(method, path)
        if delay:
            app.sleep(delay)
            if self._client_gone():  # it timed out while we dawdled: nothing was served
                app._record(LogEntry(time.time(), method, path, query, form, CLIENT_GONE), None)
                self.close_connection = True
                return
        status, payload, ctype, headers, post_fetch = self._answer(method, path, query, form, fault)
        # Logged before the answer goes out, so a client that has its answer sees it in the log.
        app._record(LogEntry(time.time(), method, path, query, form, status), post_fetch)
        try:
            self._send(status, payload, ctype, headers, method)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test); nothing to answer

    def _client_gone(self) -> bool:
        """True when the client closed its end (EOF pending on the socket)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _answer(self, method: str, path: str, query: dict[str, str], form: dict[str, str],
                fault: Fault | None) -> tuple[int, bytes, str, dict[str, str], str | None]:
        """(status, body, content type, headers, post id of a full post fetch) for one request."""
        app = self.app
        if fault is not None:
            status = int(fault.status or 500)
            headers = app.rate_headers(count=True)
            if status == 429:
                wait = str(fault.retry_after if fault.retry_after is not None else 1)
                headers.update({"x-ratelimit-remaining": "0.0", "retry-after": wait, "x-ratelimit-reset": wait})
            elif fault.retry_after is not None:
                headers["retry-after"] = str(fault.retry_after)
            return status, self._json({"message": f"injected fault {status}", "error": status}), JSON, headers, None
        if path.startswith("/media/"):
            return (*self._media(path), None)
        for prefix, folder in app.static.items():
            if path.startswith(prefix):
                return (*self._static(folder, path[len(prefix):]), None)
        is_token = path == "/api/v1/access_token"
        headers = app.rate_headers(count=not is_token)
        if float(headers["x-ratelimit-remaining"]) <= 0 and not is_token:
            headers["retry-after"] = headers["x-ratelimit-reset"]
            return 429, self._json({"message": "Too Many Requests", "error": 429}), JSON, headers, None
        try:
            status, payload, extra, post_fetch = app.route(method, path, query, form, self.headers)
        except _Reply as reply:
            status, payload, extra, post_fetch = reply.status, reply.body, reply.headers, None
        headers.update(extra)
        return status, self._json(payload), JSON, headers, post_fetch

    def _json(self, payload: Any) -> bytes:
        return json.dumps(payload, ensure_ascii=False).replace(BASE_URL_TOKEN, self.app.url).encode("utf-8")

    def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str], method: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        if (self.headers.get("Connection") or "").lower() == "close":
            self.send_header("Connection", "close")  # say so, or the client may reuse a closing socket
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(body)

    def _media(self, path: str) -> tuple[int, bytes, str, dict[str, str]]:
        headers = self.app.rate_headers(count=False)
        name = path[len("/media/"):]
        media_dir = self.app.store.media_dir
        target = (media_dir / name).resolve() if name and "/" not in name and not name.startswith(".") else None
        if target is None or target.parent != media_dir.resolve() or not target.is_file():
            return 404, self._json({"message": "Not Found", "error": 404}), JSON, headers
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        return 200, target.read_bytes(), ctype, headers

    def _static(self, folder: Path, name: str) -> tuple[int, bytes, str, dict[str, str]]:
        """A file of a static folder; honours a single ``Range: bytes=a-b`` like a CDN does."""
        target = (folder / name).resolve() if name and "/" not in name and not name.startswith(".") else None
        if target is None or target.parent != folder or not target.is_file():
            return 404, self._json({"message": "Not Found", "error": 404}), JSON, {}
        data = target.read_bytes()
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        answer = byte_range(self.headers.get("Range"), len(data))
        return answer.status, answer.slice(data), ctype, answer.headers()

    def _admin(self, method: str, sub: str, body: bytes) -> None:
        app = self.app
        if method == "GET" and sub == "/log":
            payload: Any = [asdict(e) for e in app.log]
        elif method == "GET" and sub == "/fetch_counts":
            payload = dict(app.fetch_counts)
        elif method == "GET" and sub == "/faults":
            payload = [asdict(f) for f in app.faults.list()]
        elif method == "POST" and sub == "/faults":
            spec = json.loads(body or b"{}")
            payload = asdict(app.faults.add(**spec))
        elif method == "DELETE" and sub == "/faults":
            app.faults.clear()
            payload = {"ok": True}
        elif method == "POST" and sub == "/clear_log":
            app.clear_log()
            payload = {"ok": True}
        elif sub == "/health":
            payload = {"ok": True, "posts": len(app.store.posts)}
        else:
            self._send(404, b'{"message": "Not Found", "error": 404}', "application/json", {}, method)
            return
        self._send(200, json.dumps(payload).encode(), "application/json", {}, method)


# --------------------------------------------------------------------------------------------
# CLI: python -m blift.replay.reddit_api ROOT --port N


def _parse_fault(text: str, *, delay: bool) -> Fault:
    """``PATTERN=STATUS[xCOUNT]`` (e.g. ``/comments/*=503x2``) or, for delays, ``PATTERN=SECONDS``."""
    pattern, sep, value = text.rpartition("=")
    if not sep or not pattern:
        raise argparse.ArgumentTypeError(f"expected PATTERN=VALUE, got {text!r}")
    if delay:
        return Fault(pattern, delay_s=float(value), count=None)
    status, _, count = value.partition("x")
    return Fault(pattern, status=int(status), count=int(count) if count else None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m blift.replay.reddit_api",
                                     description="Serve a Reddit store folder over Reddit's API protocol.")
    parser.add_argument("root", type=Path, help="store folder (posts/*.json, media/*)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--comment-limit", type=int, default=200)
    parser.add_argument("--depth-limit", type=int, default=8)
    parser.add_argument("--fault", action="append", default=[], type=lambda s: _parse_fault(s, delay=False),
                        help="PATTERN=STATUS[xCOUNT], e.g. '/comments/*=503x2' (no count: always)")
    parser.add_argument("--delay", action="append", default=[], type=lambda s: _parse_fault(s, delay=True),
                        help="PATTERN=SECONDS, a slow answer for every matching request")
    parser.add_argument("--url-file", type=Path, help="write the base URL here once serving")
    args = parser.parse_args(argv)
    try:
        server = ReplayServer(args.root, host=args.host, port=args.port, comment_limit=args.comment_limit,
                              depth_limit=args.depth_limit, faults=[*args.fault, *args.delay])
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start()
    if args.url_file:
        tmp = args.url_file.with_suffix(args.url_file.suffix + ".tmp")
        tmp.write_text(server.url + "\n")
        tmp.replace(args.url_file)
    print(f"serving {args.root} at {server.url}", flush=True)
    while not stop.wait(0.5):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
