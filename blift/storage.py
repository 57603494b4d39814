"""Where a run folder lives: a local (or shared POSIX) path, or an fsspec URL such as ``s3://``.

A run folder given as a URL is a :class:`upath.UPath`, so the runner's path code
(``run_dir / "items" / "part.parquet"``, ``exists()``, ``glob()``) reads the same for both.
What differs is committing a file, and this module is the one place that knows how:

- **Local**: write a temporary name in the same folder, fsync, rename (POSIX rename is atomic).
- **Object store** (s3, gs, az, ...): one object PUT, or a multipart upload completed on close.
  Either is atomic: a reader sees the whole object or none, and a writer killed half way leaves
  nothing readable (an unfinished multipart upload is invisible). Object stores have no rename,
  so nothing is ever written under a temporary name there.

Files that must be local (an Arrow IPC bucket being appended, a Parquet file being written, a
video handed to ffprobe, PyAV or Whisper, a record journal) live in :func:`local_dir`: the run
folder itself when it is local, else a per-run scratch folder on this machine. Remote files that
a stage reads by path are fetched into :func:`cache_dir` once per object version (ETag).

Credentials and endpoints come from the usual places of each filesystem (``AWS_*`` variables,
``~/.aws``, ``FSSPEC_S3_ENDPOINT_URL``...); the Ray executor forwards ``AWS_*``/``FSSPEC_*``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, TypeGuard, TypeVar, Union, cast

from blift.errors import ConfigError
from blift.ids import file_sha256

if TYPE_CHECKING:
    from typing_extensions import TypeIs  # typing.TypeIs is Python 3.13+
    from upath import UPath

RunPath = Union[Path, "UPath"]
RunPathT = TypeVar("RunPathT", Path, "UPath")  # "the same kind of path as the argument"

URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
PATHLIB_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):/(?!/)")
# Protocols whose writes are atomic objects (no rename needed, none available).
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss"})
LOCAL_PROTOCOLS = frozenset({"file", "local"})


def run_path(where: str | PurePath | UPath) -> RunPath:
    """A run folder (or a file in one) from a path, a URL string or a UPath (returned as is).
    ``file://`` is a local path; a URL whose filesystem package is missing is a ConfigError
    naming the package."""
    if not isinstance(where, str):
        if not isinstance(where, PurePath):
            return where  # already a UPath
        text = str(where)
        m = PATHLIB_URL.match(text)
        if not m:
            return Path(where)
        where = f"{m.group(1)}://{text[m.end():]}"  # pathlib made s3://b/x into s3:/b/x
    m = URL.match(where)
    if not m:
        return Path(where)
    protocol = m.group(1).lower()
    if protocol in LOCAL_PROTOCOLS:
        return Path(where[m.end():] if where[m.end():].startswith("/") else "/" + where[m.end():])
    try:
        import fsspec
        from upath import UPath
    except ImportError as exc:  # pragma: no cover - core dependencies
        raise ConfigError(f"{where}: run folders on URLs need fsspec and universal_pathlib ({exc})") from exc
    try:
        fsspec.get_filesystem_class(protocol)
    except (ImportError, ValueError) as exc:
        hint = " (pip install 'blift[s3]')" if protocol in ("s3", "s3a") else ""
        raise ConfigError(f"{where}: no filesystem for {protocol}://: {exc}{hint}") from exc
    if protocol not in OBJECT_STORES:
        raise ConfigError(f"{where}: {protocol}:// is not supported for run folders; use an object store "
                          f"({', '.join(sorted(OBJECT_STORES))}) or a path every worker mounts")
    # Listings are never cached: workers in other processes add shards the driver then lists.
    return UPath(where.rstrip("/"), use_listings_cache=False)


def is_remote(path: RunPath) -> TypeIs[UPath]:
    """Whether a run path is on an fsspec filesystem (a UPath) rather than a local ``Path``."""
    return not isinstance(path, PurePath)


def relative(path: RunPath, root: RunPath) -> str:
    """``path`` relative to the run folder ``root``, POSIX style."""
    # path and root are of one kind: a local root for a remote path (or the reverse) is a TypeError.
    if is_remote(path):
        return str(path.relative_to(cast("UPath", root)))
    return Path(path).resolve().relative_to(Path(cast(Path, root)).resolve()).as_posix()


def _scratch_root() -> Path:
    return Path(os.environ.get("BLIFT_SCRATCH") or Path(tempfile.gettempdir()) / "blift-scratch")


def local_dir(run_dir: RunPath) -> Path:
    """Where this machine keeps a run's local working files: the run folder itself when it is
    local; for a URL, ``$BLIFT_SCRATCH`` (default ``$TMPDIR/blift-scratch``) / a hash of the URL."""
    if not is_remote(run_dir):
        return Path(run_dir)
    key = hashlib.sha256(str(run_dir).encode()).hexdigest()[:16]
    path = _scratch_root() / "runs" / key
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    return _scratch_root() / "cache"


def scratch_file(dest: RunPath, suffix: str = ".tmp") -> Path:
    """A fresh local temporary file to write ``dest``'s content into before committing it: next
    to ``dest`` when local (so the rename stays on one filesystem), else in the scratch folder."""
    if is_remote(dest):
        folder = _scratch_root() / "tmp"
        name = Path(dest.path).name
    else:
        folder, name = Path(dest).parent, Path(dest).name
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=suffix, dir=folder)
    os.close(fd)
    return Path(tmp)


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def commit_file(src: Path, dest: RunPath) -> None:
    """Move the finished local file ``src`` to ``dest`` atomically (``src`` is gone afterwards).

    Local: a rename (a copy to a temporary name first when ``src`` is on another filesystem).
    Remote: an upload (one PUT or a multipart upload completed at the end), then ``src`` is
    removed; a failed upload leaves ``dest`` as it was."""
    if is_remote(dest):
        try:
            dest.fs.put_file(str(src), dest.path)
        finally:
            Path(src).unlink(missing_ok=True)
        return
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _fsync(src)
    try:
        os.replace(src, dest)
        return
    except OSError as exc:
        import errno

        if exc.errno != errno.EXDEV:
            Path(src).unlink(missing_ok=True)
            raise
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        shutil.copyfile(src, tmp)
        _fsync(tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
        Path(src).unlink(missing_ok=True)


def write_bytes(dest: RunPath, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``dest`` atomically (see the module docstring)."""
    if is_remote(dest):
        dest.fs.pipe_file(dest.path, data)
        return
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _etag(info: dict[str, Any]) -> str | None:
    """The store's content hash from an object's info (S3 ``ETag``, GCS ``md5Hash``...), unquoted."""
    value = info.get("ETag") or info.get("etag") or info.get("md5Hash") or info.get("content_md5")
    return str(value).strip('"') if value else None


def _etag_fingerprint(info: dict[str, Any]) -> str | None:
    etag = _etag(info)
    return f"etag:{etag}:{info.get('size')}" if etag else None


def local_file(path: RunPath) -> Path:
    """A local path with ``path``'s content, for tools that only open local files (ffprobe,
    PyAV, Whisper, numpy memory maps). Remote files are downloaded once into :func:`cache_dir`
    (keyed by the object's ETag) under a temporary name, then renamed."""
    if not is_remote(path):
        return Path(path)
    info = path.fs.info(path.path)
    size = int(info.get("size") or 0)
    version = re.sub(r"[^A-Za-z0-9]", "", _etag(info) or "")[:32] or f"size{size}"
    # The object's ETag in the cache path: a rewritten object is fetched again, whatever its name.
    local = cache_dir() / path.protocol / version / path.path.lstrip("/")
    try:
        if local.stat().st_size == size:
            return local
    except FileNotFoundError:
        pass
    local.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{local.name}.", suffix=".part", dir=local.parent)
    os.close(fd)
    try:
        path.fs.get_file(path.path, tmp)
        os.replace(tmp, local)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return local


def fingerprint(path: RunPath) -> str | None:
    """A content fingerprint of a file, or None when it does not exist. Local: a hash of the
    bytes. Object stores: the object's ETag (a hash the store computed on upload; the same bytes
    written the same way give the same ETag), so a rerun does not download every input shard."""
    if is_remote(path):
        try:
            info = path.fs.info(path.path)
        except FileNotFoundError:
            return None
        found = _etag_fingerprint(info)
        if found:
            return found
        h = hashlib.sha256(path.fs.cat_file(path.path))
        return h.hexdigest()[:32]
    path = Path(path)
    if not path.exists():
        return None
    return file_sha256(path)[:32]


def change_key(path: RunPath) -> tuple[int, Any]:
    """(size, modification stamp) of a file: changes when the file is rewritten."""
    if is_remote(path):
        info = path.fs.info(path.path)
        return int(info.get("size") or 0), _etag(info) or info.get("LastModified") or info.get("mtime")
    st = Path(path).stat()
    return st.st_size, st.st_mtime_ns


def mirror(run_dir: RunPath, *, skip: tuple[str, ...] = ("_blift/journal",)) -> tuple[Path, int, int]:
    """A local copy of a remote run folder for tools that read a whole run (``blift release``),
    in ``local_dir(run_dir) / "mirror"``. Files already there with the remote size are kept,
    others downloaded (temporary name, then rename), and local files the run no longer has are
    removed. Returns (folder, files downloaded, bytes downloaded); a local run is returned as is."""
    if not is_remote(run_dir):
        return Path(run_dir), 0, 0
    root = local_dir(run_dir) / "mirror"
    base = run_dir.path.rstrip("/") + "/"
    listing = run_dir.fs.find(run_dir.path, detail=True)
    wanted: dict[Path, tuple[str, int]] = {}
    for name, info in listing.items():
        rel = name[len(base):] if name.startswith(base) else name.split(base, 1)[-1]
        if info.get("type") == "directory" or not rel or any(rel == s or rel.startswith(s + "/") for s in skip):
            continue
        wanted[root / rel] = (name, int(info.get("size") or 0))
    fetched = fetched_bytes = 0
    for local, (name, size) in sorted(wanted.items()):
        try:
            if local.stat().st_size == size:
                continue
        except FileNotFoundError:
            pass
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.part")
        try:
            run_dir.fs.get_file(name, str(tmp))
            os.replace(tmp, local)
        finally:
            tmp.unlink(missing_ok=True)
        fetched, fetched_bytes = fetched + 1, fetched_bytes + size
    if root.is_dir():
        for path in root.rglob("*"):
            if path.is_file() and path not in wanted:
                path.unlink()
    root.mkdir(parents=True, exist_ok=True)
    return root, fetched, fetched_bytes


class Listing:
    """What exists under some folders of a run folder, with fingerprints, looked up once.

    Planning a stage asks, per shard, for input fingerprints, the manifest and whether each
    output exists. Locally those are stat calls; on an object store each would be a round trip
    (a HEAD or GET, ~20-50 ms), so a 10,000-shard stage would spend tens of minutes planning. A
    Listing reads each folder with one paged LIST (size and ETag come with it) and the manifests
    with concurrent GETs. Paths outside the listed folders fall back to direct calls."""

    def __init__(self, run_dir: RunPath, folders: list[str]) -> None:
        self.run_dir = run_dir
        self._info: dict[str, dict[str, Any]] | None = None
        self._folders: list[str] = []
        if is_remote(run_dir):
            self._info = {}
            for folder in dict.fromkeys(folders):
                base = (run_dir / folder).path.rstrip("/")
                self._folders.append(base + "/")
                try:
                    found = run_dir.fs.find(base, detail=True)
                except FileNotFoundError:
                    found = {}
                for name, info in found.items():
                    if info.get("type") != "directory":
                        self._info[name.rstrip("/")] = info

    def _listed(self, path: RunPath) -> TypeGuard[UPath]:
        return self._info is not None and is_remote(path) and any(path.path.startswith(f) for f in self._folders)

    def exists(self, path: RunPath) -> bool:
        if self._listed(path):
            assert self._info is not None  # _listed() checked it
            return path.path in self._info
        return path.exists()

    def fingerprint(self, path: RunPath) -> str | None:
        if self._listed(path):
            assert self._info is not None  # _listed() checked it
            info = self._info.get(path.path)
            if info is None:
                return None
            found = _etag_fingerprint(info)
            if found:
                return found
        return fingerprint(path)

    def read_texts(self, paths: list[RunPath]) -> list[str | None]:
        """The text of each file (None when missing or unreadable), in order."""
        if self._info is None or not paths:
            out: list[str | None] = []
            for p in paths:
                try:
                    out.append(p.read_text())
                except (OSError, UnicodeDecodeError):
                    out.append(None)
            return out
        # _info is set only for a remote run folder, whose files are remote too.
        run_dir = self.run_dir
        assert is_remote(run_dir)
        remote = cast("list[UPath]", paths)
        info = self._info
        wanted = [p.path for p in remote if not self._listed(p) or p.path in info]
        got = run_dir.fs.cat(wanted, on_error="omit") if wanted else {}
        texts: list[str | None] = []
        for p in remote:
            data = got.get(p.path)
            try:
                texts.append(data.decode() if isinstance(data, bytes) else None)
            except UnicodeDecodeError:
                texts.append(None)
        return texts
