"""A stand-in Hugging Face Hub on 127.0.0.1 that speaks the HTTP protocol ``huggingface_hub`` and ``datasets`` use.

It exists so push and load tests exercise the real client code (``HfApi.create_commit``,
``preupload_lfs_files``, the LFS batch + PUT upload, ``HfFileSystem``, ``load_dataset``) with no
patching: point the client at :attr:`HubServer.endpoint` through ``HF_ENDPOINT`` (and
``HF_HUB_DISABLE_XET=1``, or uploads go to the Xet protocol) or ``HfApi(endpoint=...)``.

What it models, and how faithfully:

* **Git-like history.** Every commit is a real git object id: blobs hash as
  ``sha1("blob <n>\\0" + content)``, LFS files as the blob of their pointer file, trees and commits
  in git's own object format. ``parentCommit`` in a commit header must be the branch head, or the
  commit is refused with **412**; a commit that arrives while another one on the same branch is
  being applied gets **409** (as the Hub answers concurrent writers).
* **Upload modes.** ``preupload`` says ``lfs`` for paths matched by the repo's ``.gitattributes``
  (a new dataset repo starts with the Hub's default patterns), binary samples and files of 10 MiB
  and more; ``regular`` otherwise. LFS objects go through ``.git/info/lfs/objects/batch`` and a
  ``PUT`` whose body is checked against its sha256 and size; a commit naming an LFS oid the store
  lacks is refused (422).
* **Reads.** Repo info (``siblings``, ``private``, ``sha``), revision info, tree listing (paginated
  with ``Link: rel="next"``), ``paths-info``, ``resolve`` with ``HEAD``/``GET``, ``Range`` (206)
  and a per-content ``ETag`` (``X-Linked-Etag``/``X-Linked-Size`` for LFS), ``validate-yaml``.
* **Auth.** Writes need ``Authorization: Bearer <token>`` with a token in :attr:`tokens`;
  private repos answer 401 "Repository Not Found" to anyone else, like the Hub.

For tests: every request lands in :attr:`requests` (method, path, action, status, detail), and
:meth:`inject` scripts faults on the Nth request of an action: an HTTP status, a dropped
connection half way through the request body, or a concurrent commit made just before the
request is handled (which makes the client's ``parentCommit`` stale, so the Hub's own 412 follows).
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

import yaml

from blift.replay.byte_range import byte_range

LFS_SIZE_THRESHOLD = 10 * 2**20
_COMMIT_OID = re.compile(r"^[0-9a-f]{40}$")
# what the Hub writes into a new dataset repo's .gitattributes (abridged to the patterns that matter here)
DEFAULT_GITATTRIBUTES = "\n".join(f"{p} filter=lfs diff=lfs merge=lfs -text" for p in (
    "*.7z", "*.arrow", "*.bin", "*.bz2", "*.gz", "*.h5", "*.joblib", "*.lz4", "*.model", "*.msgpack", "*.npy",
    "*.npz", "*.onnx", "*.parquet", "*.pb", "*.pickle", "*.pkl", "*.pt", "*.pth", "*.safetensors", "*.tar",
    "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*.mp3", "*.wav", "*.flac", "*.ogg",
    "*.jpg", "*.jpeg", "*.png", "*.webp", "*.gif", "*.mp4", "*.webm", "*.mkv",
)) + "\n"
_TYPE_OF_PREFIX = {"datasets": "dataset", "models": "model", "spaces": "space"}
FaultMode = Literal["status", "drop", "concurrent_commit"]


# --------------------------------------------------------------------------- git objects


def git_blob_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class Entry:
    """A file in a tree: its git blob oid, size and (for LFS files) the content's sha256."""

    blob_oid: str
    size: int
    lfs_sha256: str | None = None
    pointer_size: int | None = None
    last_commit: str | None = None


@dataclass
class Commit:
    oid: str
    parent: str | None
    tree: dict[str, Entry]
    title: str
    description: str
    date: datetime
    author: str


def _tree_oid(paths: dict[str, Entry], prefix: str = "") -> str:
    """Git tree object id of the folder ``prefix`` (recursive, in git's entry order)."""
    children: dict[str, tuple[bytes, str]] = {}
    for path, entry in paths.items():
        if not path.startswith(prefix):
            continue
        head, _, rest = path[len(prefix):].partition("/")
        if rest:
            if head not in children:
                children[head] = (b"40000", _tree_oid(paths, f"{prefix}{head}/"))
        else:
            children[head] = (b"100644", entry.blob_oid)
    # git sorts tree entries by name, folders compared as "name/"
    order = sorted(children, key=lambda n: n + "/" if children[n][0] == b"40000" else n)
    body = b"".join(children[n][0] + b" " + n.encode() + b"\0" + bytes.fromhex(children[n][1]) for n in order)
    return hashlib.sha1(b"tree %d\0" % len(body) + body).hexdigest()


def _commit_oid(tree: dict[str, Entry], parent: str | None, author: str, date: datetime, message: str) -> str:
    stamp = f"{int(date.timestamp())} +0000"
    text = f"tree {_tree_oid(tree)}\n"
    if parent:
        text += f"parent {parent}\n"
    text += f"author {author} <{author}@users.noreply.huggingface.co> {stamp}\n"
    text += f"committer {author} <{author}@users.noreply.huggingface.co> {stamp}\n\n{message}\n"
    body = text.encode()
    return hashlib.sha1(b"commit %d\0" % len(body) + body).hexdigest()


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    private: bool
    created_at: datetime
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit oid
    commits: dict[str, Commit] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)  # git blob oid -> content (regular files)
    lfs: dict[str, bytes] = field(default_factory=dict)  # sha256 -> content (LFS store)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def head(self, revision: str) -> Commit | None:
        rev = revision or "main"
        if rev in self.branches:
            return self.commits[self.branches[rev]]
        if _COMMIT_OID.match(rev) and rev in self.commits:
            return self.commits[rev]
        return None

    def content(self, entry: Entry) -> bytes:
        return self.lfs[entry.lfs_sha256] if entry.lfs_sha256 else self.blobs[entry.blob_oid]

    def files(self, revision: str = "main") -> dict[str, bytes]:
        """Path -> content at ``revision`` (for test assertions)."""
        commit = self.head(revision)
        assert commit is not None, f"{self.repo_id}: no revision {revision!r}"
        return {p: self.content(e) for p, e in commit.tree.items()}


# --------------------------------------------------------------------------- log and faults


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    action: str  # create, info, tree, paths-info, preupload, lfs-batch, lfs-upload, lfs-verify, commit, resolve...
    status: int
    repo_id: str | None = None
    detail: Any = None  # lfs-upload: the oid; commit: {"parent", "ops": [(key, path)], "oid"}
    at: float = 0.0


@dataclass
class Fault:
    action: str
    nth: int  # 1-based, counted over requests of `action` that arrive after the fault was added
    mode: FaultMode = "status"
    status: int = 503
    times: int | None = 1  # how many consecutive matching requests get it (None: all from the nth on)
    seen: int = 0

    def fires(self) -> bool:
        self.seen += 1
        if self.seen < self.nth:
            return False
        return self.times is None or self.seen < self.nth + self.times


class _Dropped(Exception):
    """The handler hung up on purpose (fault injection)."""


# --------------------------------------------------------------------------- server


class HubServer:
    """The stand-in Hub in a daemon thread; use as a context manager."""

    def __init__(self, *, tokens: dict[str, str] | None = None, page_size: int = 1000) -> None:
        self.tokens: dict[str, str] = dict(tokens or {"hf_test_token": "tester"})  # token -> user name
        self.page_size = page_size
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[Request] = []
        self.faults: list[Fault] = []
        self._lock = threading.Lock()
        self._clock = datetime(2026, 1, 1, tzinfo=timezone.utc)
        self._httpd = _QuietServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="hub-server", daemon=True)

    # ---------------------------------------------------------------- lifecycle

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> "HubServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # ---------------------------------------------------------------- test helpers

    def repo(self, repo_id: str, repo_type: str = "dataset") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def inject(self, action: str, *, nth: int = 1, mode: FaultMode = "status", status: int = 503,
               times: int | None = 1) -> Fault:
        """Script a fault on the ``nth`` next request of ``action`` (and ``times - 1`` after it)."""
        fault = Fault(action=action, nth=nth, mode=mode, status=status, times=times)
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def log(self, action: str | None = None, repo_id: str | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if (action is None or r.action == action)
                    and (repo_id is None or r.repo_id == repo_id)]

    def clear_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def commit_files(self, repo_id: str, files: dict[str, bytes], message: str = "concurrent edit",
                     repo_type: str = "dataset", branch: str = "main") -> str:
        """Commit ``files`` (regular blobs) directly, as another writer would; returns the commit oid."""
        repo = self.repo(repo_id, repo_type)
        with repo.lock:
            head = repo.head(branch)
            tree = dict(head.tree) if head else {}
            changed = {}
            for path, content in files.items():
                oid = git_blob_oid(content)
                repo.blobs[oid] = content
                changed[path] = Entry(blob_oid=oid, size=len(content))
            return self._new_commit(repo, branch, head, tree, changed, set(), message, "", "someone-else")

    # ---------------------------------------------------------------- internals used by the handler

    def _tick(self) -> datetime:
        with self._lock:
            self._clock += timedelta(seconds=1)
            return self._clock

    def _fault_for(self, action: str) -> Fault | None:
        with self._lock:
            fired = [f for f in self.faults if f.action == action and f.fires()]
        return fired[0] if fired else None

    def _record(self, req: Request) -> None:
        with self._lock:
            self.requests.append(req)

    def _create_repo(self, repo_id: str, repo_type: str, private: bool, author: str) -> Repo:
        repo = Repo(repo_id=repo_id, repo_type=repo_type, private=private, created_at=self._tick())
        content = DEFAULT_GITATTRIBUTES.encode()
        oid = git_blob_oid(content)
        repo.blobs[oid] = content
        self._new_commit(repo, "main", None, {}, {".gitattributes": Entry(blob_oid=oid, size=len(content))}, set(),
                         "initial commit", "", author)
        self.repos[(repo_type, repo_id)] = repo
        return repo

    def _new_commit(self, repo: Repo, branch: str, head: Commit | None, tree: dict[str, Entry],
                    changed: dict[str, Entry], deleted: set[str], title: str, description: str, author: str) -> str:
        """Apply ``changed``/``deleted`` to ``tree`` and move ``branch``; caller holds ``repo.lock``."""
        for path in deleted:
            tree.pop(path, None)
        date = self._tick()
        message = title + (f"\n\n{description}" if description else "")
        parent = head.oid if head else None
        oid = _commit_oid({**tree, **changed}, parent, author, date, message)
        for path, entry in changed.items():
            tree[path] = Entry(entry.blob_oid, entry.size, entry.lfs_sha256, entry.pointer_size, last_commit=oid)
        repo.commits[oid] = Commit(oid=oid, parent=parent, tree=tree, title=title, description=description,
                                   date=date, author=author)
        repo.branches[branch] = oid
        return oid

    def is_lfs(self, repo: Repo, head: Commit | None, path: str, size: int, sample: bytes) -> bool:
        if size >= LFS_SIZE_THRESHOLD or b"\0" in sample:
            return True
        attrs = repo.content(head.tree[".gitattributes"]).decode() if head and ".gitattributes" in head.tree else ""
        name = path.rsplit("/", 1)[-1]
        for line in attrs.splitlines():
            parts = line.split()
            if len(parts) >= 2 and "filter=lfs" in parts[1:]:
                pattern = parts[0]
                if fnmatch.fnmatch(path if "/" in pattern else name, pattern):
                    return True
        return False


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: object, client_address: object) -> None:
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionResetError, BrokenPipeError, TimeoutError, _Dropped)):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class _HttpError(Exception):
    def __init__(self, status: int, message: str, error_code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.error_code = status, message, error_code


def _handler_for(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        server_hub = hub

    return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_hub: HubServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output clean
        pass

    # ---------------------------------------------------------------- plumbing

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        hub = self.server_hub
        split = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        segments = [unquote(s) for s in split.path.split("/")[1:]]
        self.action, self.repo_id, self.detail = "unknown", None, None
        self._repo_type = "model"
        self._body: bytes | None = None
        status = 500
        try:
            route = self._route(method, segments)
            fault = hub._fault_for(self.action)
            if fault is not None:
                if fault.mode == "drop":
                    self._drop()
                elif fault.mode == "concurrent_commit" and self.repo_id:
                    hub.commit_files(self.repo_id, {f".concurrent/{time.monotonic_ns()}.txt": b"another writer\n"},
                                     repo_type=self._repo_type)
                else:
                    raise _HttpError(fault.status, f"injected fault ({fault.status})")
            status = route()
        except _Dropped:
            status = 0
            raise
        except _HttpError as err:
            status = err.status
            self._send_json(err.status, {"error": err.message}, error_code=err.error_code)
        finally:
            hub._record(Request(method, split.path, self.action, status, self.repo_id, self.detail, time.monotonic()))

    def body(self) -> bytes:
        if self._body is None:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        break
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self._body = b"".join(chunks)
            else:
                self._body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return self._body

    def _drop(self) -> None:
        """Read part of the request body, then hang up without an answer (a connection lost mid-upload)."""
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(max(1, length // 2))
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        raise _Dropped()

    def _send(self, status: int, body: bytes, content_type: str = "application/json",
              headers: dict[str, str] | None = None, error_code: str | None = None) -> int:
        if self._body is None and self.command in ("POST", "PUT"):
            self.body()  # drain what the client sent, so keep-alive stays in sync
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if error_code:
            self.send_header("X-Error-Code", error_code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        return status

    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None,
                   error_code: str | None = None) -> int:
        return self._send(status, json.dumps(obj).encode(), headers=headers, error_code=error_code)

    def _user(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return self.server_hub.tokens.get(auth[7:]) if auth.startswith("Bearer ") else None

    def _need_user(self) -> str:
        user = self._user()
        if user is None:
            raise _HttpError(401, "Invalid credentials in Authorization header")
        return user

    def _repo(self, *, write: bool = False) -> Repo:
        repo = self.server_hub.repos.get((self._repo_type, self.repo_id or ""))
        user = self._need_user() if write else self._user()
        if repo is None or (repo.private and user is None):
            raise _HttpError(401 if user is None else 404, "Repository Not Found", "RepoNotFound")
        return repo

    def _commit_at(self, repo: Repo, revision: str) -> Commit:
        commit = repo.head(revision)
        if commit is None:
            raise _HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    # ---------------------------------------------------------------- routing

    def _route(self, method: str, s: list[str]):  # noqa: C901 - one table of routes reads best in one place
        if s[:2] == ["api", "repos"] and len(s) == 3 and s[2] == "create" and method == "POST":
            self.action = "create"
            return self._create
        if s[:2] == ["api", "validate-yaml"] and method == "POST":
            self.action = "validate-yaml"
            return self._validate_yaml
        if s[:2] == ["api", "whoami-v2"]:
            self.action = "whoami"
            return lambda: self._send_json(200, {"type": "user", "name": self._need_user(), "auth": {}})
        if len(s) >= 4 and s[0] == "api" and s[1] in _TYPE_OF_PREFIX:
            self._repo_type, self.repo_id = _TYPE_OF_PREFIX[s[1]], f"{s[2]}/{s[3]}"
            rest = s[4:]
            if not rest:
                if method != "GET":
                    raise _HttpError(405, f"{method} not allowed on {self.path}")
                self.action = "info"
                return lambda: self._info(None)
            kind, args = rest[0], rest[1:]
            table = {("revision", "GET"): ("info", lambda: self._info(args[0])),
                     ("tree", "GET"): ("tree", lambda: self._tree(args[0], "/".join(args[1:]))),
                     ("paths-info", "POST"): ("paths-info", lambda: self._paths_info(args[0])),
                     ("preupload", "POST"): ("preupload", lambda: self._preupload(args[0])),
                     ("commit", "POST"): ("commit", lambda: self._commit(args[0])),
                     ("branch", "POST"): ("branch", lambda: self._branch(args[0])),
                     ("refs", "GET"): ("refs", self._refs)}
            if (kind, method) in table and (args or kind == "refs"):
                self.action, handler = table[(kind, method)]
                return handler
        if s and s[0] == "__lfs" and len(s) == 5:
            self._repo_type, self.repo_id = _TYPE_OF_PREFIX[s[1]], f"{s[2]}/{s[3]}"
            if method == "PUT":
                self.action = "lfs-upload"
                return lambda: self._lfs_put(s[4])
            if method == "POST":
                self.action = "lfs-verify"
                return lambda: self._lfs_verify(s[4])
        prefix = s[0] if s and s[0] in _TYPE_OF_PREFIX else None
        r = s[1:] if prefix else s
        self._repo_type = _TYPE_OF_PREFIX[prefix] if prefix else "model"
        if len(r) >= 2 and r[1].endswith(".git") and r[2:] == ["info", "lfs", "objects", "batch"] and method == "POST":
            self.action, self.repo_id = "lfs-batch", f"{r[0]}/{r[1][:-4]}"
            return self._lfs_batch
        if len(r) >= 5 and r[2] == "resolve" and method in ("GET", "HEAD"):
            self.action, self.repo_id = "resolve", f"{r[0]}/{r[1]}"
            return lambda: self._resolve(r[3], "/".join(r[4:]))
        self.action = "unknown"
        raise _HttpError(404, f"no route for {method} {self.path}")

    # ---------------------------------------------------------------- repos

    def _create(self) -> int:
        user = self._need_user()
        payload = json.loads(self.body() or b"{}")
        namespace = payload.get("organization") or user
        repo_type = payload.get("type") or "model"
        self._repo_type, self.repo_id = repo_type, f"{namespace}/{payload['name']}"
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        self.detail = {"private": private, "visibility": payload.get("visibility")}
        hub = self.server_hub
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{hub.endpoint}/{prefix}{self.repo_id}"
        with hub._lock:
            exists = (repo_type, self.repo_id) in hub.repos
        if exists:
            return self._send_json(409, {"error": "You already created this repo", "url": url})
        hub._create_repo(self.repo_id, repo_type, private, user)
        return self._send_json(200, {"url": url, "name": self.repo_id})

    def _info(self, revision: str | None) -> int:
        repo = self._repo()
        commit = self._commit_at(repo, revision or "main")
        blobs = self.query.get("blobs", "").lower() in ("1", "true")
        siblings = []
        for path, entry in sorted(commit.tree.items()):
            sib: dict[str, Any] = {"rfilename": path}
            if blobs:
                sib.update(size=entry.size, blobId=entry.blob_oid)
                if entry.lfs_sha256:
                    sib["lfs"] = {"size": entry.size, "sha256": entry.lfs_sha256, "pointerSize": entry.pointer_size}
            siblings.append(sib)
        card: dict[str, Any] | None = None
        if "README.md" in commit.tree:
            text = repo.content(commit.tree["README.md"]).decode("utf-8", "replace")
            if text.startswith("---\n") and "\n---" in text[4:]:
                try:
                    card = yaml.safe_load(text[4:text.index("\n---", 4)]) or None
                except yaml.YAMLError:
                    card = None
        info = {"_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id,
                "author": repo.repo_id.split("/")[0], "sha": commit.oid, "private": repo.private, "gated": False,
                "disabled": False, "downloads": 0, "likes": 0, "tags": [], "siblings": siblings,
                "createdAt": repo.created_at.isoformat().replace("+00:00", "Z"),
                "lastModified": commit.date.isoformat().replace("+00:00", "Z"), "usedStorage": 0}
        if card is not None:
            info["cardData"] = card
        return self._send_json(200, info)

    def _branch(self, branch: str) -> int:
        repo = self._repo(write=True)
        payload = json.loads(self.body() or b"{}")
        if branch in repo.branches:
            raise _HttpError(409, f"Branch {branch} already exists")
        start = self._commit_at(repo, payload.get("startingPoint") or "main")
        repo.branches[branch] = start.oid
        return self._send_json(200, {})

    def _refs(self) -> int:
        repo = self._repo()
        branches = [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": c} for b, c in repo.branches.items()]
        return self._send_json(200, {"branches": branches, "tags": [], "converts": []})

    # ---------------------------------------------------------------- listing

    def _entry_json(self, path: str, entry: Entry, expand: bool, repo: Repo) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "file", "oid": entry.blob_oid, "size": entry.size, "path": path}
        if entry.lfs_sha256:
            out["lfs"] = {"oid": entry.lfs_sha256, "size": entry.size, "pointerSize": entry.pointer_size}
        if expand and entry.last_commit:
            c = repo.commits[entry.last_commit]
            out["lastCommit"] = {"id": c.oid, "title": c.title, "date": c.date.isoformat().replace("+00:00", "Z")}
        return out

    def _folder_json(self, path: str, commit: Commit) -> dict[str, Any]:
        return {"type": "directory", "oid": _tree_oid(commit.tree, path + "/"), "size": 0, "path": path}

    def _tree(self, revision: str, folder: str) -> int:
        repo = self._repo()
        commit = self._commit_at(repo, revision)
        recursive = self.query.get("recursive", "").lower() in ("1", "true")
        expand = self.query.get("expand", "").lower() in ("1", "true")
        prefix = folder.strip("/") + "/" if folder.strip("/") else ""
        if prefix and not any(p.startswith(prefix) for p in commit.tree):
            raise _HttpError(404, f"Entry not found: {folder}", "EntryNotFound")
        entries: dict[str, dict[str, Any]] = {}
        for path, entry in commit.tree.items():
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix):].split("/")
            for depth in range(1, len(parts)):  # the folders on the way
                if depth > 1 and not recursive:
                    break
                sub = prefix + "/".join(parts[:depth])
                if sub not in entries:
                    entries[sub] = self._folder_json(sub, commit)
            if recursive or len(parts) == 1:
                entries[path] = self._entry_json(path, entry, expand, repo)
        listing = [entries[k] for k in sorted(entries)]
        size = min(self.server_hub.page_size, 50) if expand else self.server_hub.page_size
        start = int(self.query.get("cursor") or 0)
        page = listing[start:start + size]
        headers = {}
        if start + size < len(listing):
            query = dict(self.query, cursor=str(start + size))
            nxt = f"{self.server_hub.endpoint}{urlsplit(self.path).path}?{urlencode(query)}"
            headers["Link"] = f'<{nxt}>; rel="next"'
        self.detail = {"folder": folder, "recursive": recursive, "entries": len(page)}
        return self._send_json(200, page, headers=headers)

    def _paths_info(self, revision: str) -> int:
        repo = self._repo()
        commit = self._commit_at(repo, revision)
        ctype = self.headers.get("Content-Type", "")
        raw = self.body().decode()
        if "json" in ctype:
            payload = json.loads(raw or "{}")
            paths, expand = payload.get("paths", []), bool(payload.get("expand"))
        else:
            form = parse_qs(raw, keep_blank_values=True)
            paths, expand = form.get("paths", []), form.get("expand", ["false"])[-1].lower() in ("1", "true")
        out = []
        for path in paths:
            path = path.strip("/")
            if path in commit.tree:
                out.append(self._entry_json(path, commit.tree[path], expand, repo))
            elif any(p.startswith(path + "/") for p in commit.tree):
                out.append(self._folder_json(path, commit))
        self.detail = {"paths": len(paths)}
        return self._send_json(200, out)

    # ---------------------------------------------------------------- uploads

    def _preupload(self, revision: str) -> int:
        repo = self._repo(write=True)
        head = repo.head(revision)
        if head is None and revision != "main":
            raise _HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        files = json.loads(self.body())["files"]
        out = []
        for f in files:
            sample = base64.b64decode(f.get("sample") or "")
            lfs = self.server_hub.is_lfs(repo, head, f["path"], int(f["size"]), sample)
            entry = head.tree.get(f["path"]) if head else None
            oid = None if entry is None else (entry.lfs_sha256 or entry.blob_oid) if lfs else entry.blob_oid
            out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                        "oid": oid})
        self.detail = {"files": [f["path"] for f in files]}
        return self._send_json(200, {"files": out, "commitOid": head.oid if head else None})

    def _lfs_batch(self) -> int:
        repo = self._repo(write=True)
        payload = json.loads(self.body())
        if payload.get("operation") != "upload":
            raise _HttpError(400, "only uploads are supported here")
        base = f"{self.server_hub.endpoint}/__lfs/{repo.repo_type}s/{repo.repo_id}"
        objects = []
        for obj in payload["objects"]:
            oid, size = obj["oid"], int(obj["size"])
            if oid in repo.lfs and len(repo.lfs[oid]) == size:
                objects.append({"oid": oid, "size": size})  # already stored: no action, nothing to send
            else:
                objects.append({"oid": oid, "size": size, "authenticated": True, "actions": {
                    "upload": {"href": f"{base}/{oid}?size={size}", "header": {}},
                    "verify": {"href": f"{base}/{oid}", "header": {}}}})
        self.detail = {"oids": [o["oid"] for o in payload["objects"]],
                       "to_upload": [o["oid"] for o in objects if "actions" in o]}
        return self._send_json(200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                               headers={"Content-Type": "application/vnd.git-lfs+json"})

    def _lfs_put(self, oid: str) -> int:
        self.detail = oid
        repo = self.server_hub.repos.get((self._repo_type, self.repo_id or ""))
        if repo is None:
            raise _HttpError(404, "no such repo")
        data = self.body()
        expected = int(self.query.get("size", len(data)))
        if len(data) != expected or hashlib.sha256(data).hexdigest() != oid:
            raise _HttpError(400, f"uploaded content does not match oid {oid} / size {expected}")
        repo.lfs[oid] = data
        return self._send(200, b"")

    def _lfs_verify(self, oid: str) -> int:
        repo = self._repo(write=True)
        payload = json.loads(self.body() or b"{}")
        self.detail = oid
        if oid not in repo.lfs or len(repo.lfs[oid]) != int(payload.get("size", -1)):
            raise _HttpError(422, f"LFS object {oid} was not uploaded")
        return self._send_json(200, {})

    def _commit(self, revision: str) -> int:
        repo = self._repo(write=True)
        user = self._need_user()
        lines = [json.loads(line) for line in self.body().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise _HttpError(400, "commit payload must start with a header line")
        header = lines[0]["value"]
        ops = [(item["key"], item["value"]) for item in lines[1:]]
        self.detail = {"parent": header.get("parentCommit"), "ops": [(k, v.get("path")) for k, v in ops]}
        if revision not in repo.branches:
            raise _HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        if not repo.lock.acquire(blocking=False):
            raise _HttpError(409, "Another commit is in progress on this branch; retry later")
        try:
            head = repo.commits[repo.branches[revision]]
            parent = header.get("parentCommit")
            if parent is not None and parent != head.oid:
                raise _HttpError(412, "A commit has happened since. Please refresh and try again.")
            tree = dict(head.tree)
            changed: dict[str, Entry] = {}
            deleted: set[str] = set()
            for key, value in ops:
                path = value["path"].strip("/")
                if key == "file":
                    content = base64.b64decode(value["content"])
                    oid = git_blob_oid(content)
                    repo.blobs[oid] = content
                    changed[path] = Entry(blob_oid=oid, size=len(content))
                    deleted.discard(path)
                elif key == "lfsFile":
                    sha = value["oid"]
                    if sha not in repo.lfs:
                        raise _HttpError(422, f"Your push was rejected because an LFS pointer pointed to a file "
                                              f"that does not exist: {path} ({sha})")
                    size = len(repo.lfs[sha])
                    if "size" in value and int(value["size"]) != size:
                        raise _HttpError(422, f"{path}: LFS size {value['size']} does not match the stored object")
                    pointer = lfs_pointer(sha, size)
                    changed[path] = Entry(blob_oid=git_blob_oid(pointer), size=size, lfs_sha256=sha,
                                          pointer_size=len(pointer))
                    deleted.discard(path)
                elif key == "deletedFile":
                    if path not in tree and path not in changed:
                        raise _HttpError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                    changed.pop(path, None)
                    deleted.add(path)
                elif key == "deletedFolder":
                    inside = [p for p in {*tree, *changed} if p.startswith(path + "/")]
                    if not inside:
                        raise _HttpError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                    for p in inside:
                        changed.pop(p, None)
                        deleted.add(p)
                else:
                    raise _HttpError(400, f"unknown commit operation {key!r}")
            oid = self.server_hub._new_commit(repo, revision, head, tree, changed, deleted, header.get("summary", ""),
                                              header.get("description", ""), user)
        finally:
            repo.lock.release()
        self.detail["oid"] = oid
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        url = f"{self.server_hub.endpoint}/{prefix}{repo.repo_id}/commit/{oid}"
        return self._send_json(200, {"success": True, "commitOid": oid, "commitUrl": url, "pullRequestUrl": None})

    # ---------------------------------------------------------------- downloads

    def _resolve(self, revision: str, path: str) -> int:
        repo = self._repo()
        commit = self._commit_at(repo, revision)
        entry = commit.tree.get(path)
        self.detail = {"path": path, "range": self.headers.get("Range")}
        if entry is None:
            raise _HttpError(404, f"Entry not found: {path}", "EntryNotFound")
        content = repo.content(entry)
        etag = f'"{entry.lfs_sha256 or entry.blob_oid}"'
        headers = {"X-Repo-Commit": commit.oid, "ETag": etag, "Accept-Ranges": "bytes"}
        if entry.lfs_sha256:
            headers.update({"X-Linked-Etag": etag, "X-Linked-Size": str(entry.size)})
        if self.headers.get("If-None-Match") == etag:
            return self._send(304, b"", headers=headers)
        answer = byte_range(self.headers.get("Range"), len(content))
        return self._send(answer.status, answer.slice(content), content_type="application/octet-stream",
                          headers={**headers, **answer.headers()})

    def _validate_yaml(self) -> int:
        payload = json.loads(self.body() or b"{}")
        text = payload.get("content", "")
        errors: list[dict[str, str]] = []
        if text.startswith("---\n"):
            end = text.find("\n---", 4)
            if end < 0:
                errors.append({"message": "front matter is not closed by '---'"})
            else:
                try:
                    meta = yaml.safe_load(text[4:end])
                    if meta is not None and not isinstance(meta, dict):
                        errors.append({"message": "metadata must be a mapping"})
                except yaml.YAMLError as exc:
                    errors.append({"message": f"invalid YAML: {exc}"})
        self.detail = {"errors": len(errors)}
        if errors:
            return self._send_json(400, {"errors": errors, "warnings": []})
        return self._send_json(200, {"errors": [], "warnings": []})


def repo_url(endpoint: str, repo_id: str, repo_type: str = "dataset") -> str:
    prefix = "" if repo_type == "model" else f"{repo_type}s/"
    return f"{endpoint}/{prefix}{quote(repo_id)}"
