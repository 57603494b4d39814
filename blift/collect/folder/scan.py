"""``folder.scan``: a folder of the user's own images and videos -> ``items`` (+ ``videos``, and
``comments`` and ``behavior`` from a sidecar table).

Requests (paths relative to the pipeline file; ``~`` is the home folder)::

    requests:
      - {folder: ../my-media}
      - {folder: ../clips, include: ["*.mp4", "best/**"], exclude: ["drafts/**"]}
      - {folder: "../shots/*.png"}               # a glob: the folder part, then an include pattern
      - folder: ../memes
        sidecar: ../memes.csv                    # joined by file name (or join: relative_path)
        columns: {file: name, title: caption, author: user, comments: replies}
        behavior: {likes: {column: upvotes, kind: count, to: like_count}}

Each file under the folder (recursive, sorted by relative path; see
:mod:`blift.collect.folder.listing` for ``include`` / ``exclude`` / ``hidden``) is one record
and, when its bytes say image or video (:func:`blift.collect.media.local.identify`), one
``items`` row: ``platform`` from the config (default ``local``), ``item_id`` the path relative
to the folder, ``uid`` ``<platform>:<item_id>``, ``source`` ``folder``, ``title`` the file name
without its extension, ``created_at`` the file's modification time (UTC), ``media_kind`` image
or video. The file is copied once by content into the run's media store (the user's file is
never moved or changed); an image is referenced as ``run:<path>`` in ``media_urls``, a video
gets a ``videos`` row (``file_status: ok``, its stored path, hash and size, ``source_info:
folder``), so ``media.download`` checks the images and probes the videos with no network.

What is left out is counted, never silent: a file that is neither image nor video is dropped
as ``not_media`` (only its first 64 bytes are read); a symbolic link, file or folder, as
``symlink`` (never followed, its target never read: the folder is the only root the stage may
read, :class:`blift.collect.media.local.LocalRoots`); sockets and devices as ``not_a_file``; a
file that vanished since the listing as ``missing``; a name that is not UTF-8 as ``bad_name``;
a sub-folder that cannot be listed as ``unreadable_folder``. A file that cannot be read is an
error row (``unreadable``).

**Sidecar** (:mod:`blift.collect.folder.sidecar`): an optional table (CSV, TSV, JSON lines or
Parquet, as ``table.read`` reads them), joined by file name or relative path, read and mapped as
``table.read`` reads and maps a table: ``columns:`` and ``behavior:`` are its own (without
``id`` and ``media``, which the file gives; with ``file``, the join column), so a sidecar row
gives the file's item its title, text, date, community, author (salted hash only), typed counts
and ``raw`` (the columns nothing maps), and writes its ``comments`` and ``behavior`` rows. A
file without a row is still an item, with no comments or behavior rows; a row naming no listed
file is dropped as ``sidecar_unmatched``, a second row for the same file as
``sidecar_duplicate``, a row without a key as ``sidecar_no_key``. A sidecar row that cannot be
read, and where a sidecar stops (cut short), is an error keyed ``<sidecar>:<row>``; a bad value
in a joined row is an error of the file's record naming the sidecar, its row and the column.

**A folder that changed.** A request's shard id (``request_id``) comes from the folder and what
it selects (``include``, ``exclude``, ``hidden``); its row also carries the sidecar settings
(and the mapping they resolve to on the sidecar's columns) and a fingerprint of the folder's
listing (names, sizes, modification times, and the sidecar's; no file is read for it). Adding,
removing or rewriting a file, or editing the sidecar or its mapping, changes the row under the
same id; the runner rewrites a request shard whose row changed, so the next run redoes that
shard: new files are picked up, removed ones disappear, unchanged ones are hashed again but
never stored twice. The stages after it redo that shard too (one request is one
shard): split a very large folder into several requests of the same folder (``include:
["2023/**"]``, ``include: ["2024/**"]``) so a change redoes only its part. Changing a request's
selection makes it a new shard; as with any source, the old shard's rows stay in the run
folder until it is removed (or use a new run folder).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

from pydantic import Field, field_validator

from blift.collect.fields import relative_folder, request_error, request_spec
from blift.collect.folder import sidecar as sc
from blift.collect.folder.listing import (
    Entry,
    Selection,
    fingerprint,
    pattern_problem,
    printable,
    split_glob,
    walk,
)
from blift.collect.media.local import LocalFileRefused, LocalRoots, identify, run_ref, store_copy
from blift.collect.media.store import MediaStore
from blift.collect.table.inputs import BadRow
from blift.collect.table.mapping import MapContext, MappedRow, map_row
from blift.errors import ConfigError, ErrorClass, InvalidRecord, PermanentError, RecordError, TransientError
from blift.ids import canonical_json, now_utc, short_id
from blift.stage import RecordOutput, RecordStage, ShardInput, StageConfig

log = logging.getLogger(__name__)

KIND = "folder"
REQUEST_KEYS = ("folder", "include", "exclude", "hidden", "sidecar", "join", "columns", "behavior")
SIDECAR_KEYS = ("join", "columns", "behavior")
FAILURES: dict[ErrorClass, type[RecordError]] = {ErrorClass.INVALID: InvalidRecord,
                                                  ErrorClass.PERMANENT: PermanentError,
                                                  ErrorClass.TRANSIENT: TransientError}


_fail = request_error


def _patterns(entry: dict[str, Any], index: int, field: str) -> list[str]:
    value = entry.get(field)
    if value is None:
        return []
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values:
        raise _fail(index, field, f"expected a pattern or a non-empty list of patterns, got {value!r}")
    for pattern in values:
        problem = pattern_problem(pattern)
        if problem:
            raise _fail(index, field, problem)
    return values


def _sidecar_spec(entry: dict[str, Any], index: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The request's sidecar keys as given, and the mapping they resolve to on its columns."""
    value = entry["sidecar"]
    if not isinstance(value, str) or not value:
        raise _fail(index, "sidecar", f"expected a file path, got {value!r}")
    path = Path(value).expanduser().resolve()
    if not path.is_file():
        raise _fail(index, "sidecar", f"file {path} does not exist")
    join = entry.get("join", "file_name")
    if join not in sc.JOINS:
        raise _fail(index, "join", f"expected one of {', '.join(sc.JOINS)}, got {join!r}")
    try:
        table = sc.read_sidecar(path, columns_only=True)
        if table.stopped is not None and not table.columns:
            raise sc.SidecarError(f"{path.name}: cannot read it ({table.stopped})")
        resolved = sc.resolve(table.columns, join, entry.get("columns"), entry.get("behavior"), path.name)
    except sc.SidecarError as exc:
        raise _fail(index, exc.field, str(exc)) from None
    spec = {"sidecar": str(path), "join": join, "columns": entry.get("columns") or {},
            "behavior": entry.get("behavior") or {}}
    return spec, resolved


def _sidecar_rel(spec: dict[str, Any], folder: Path) -> frozenset[str]:
    """The sidecar's path in the folder when it lives there (it is not a media file)."""
    if not spec.get("sidecar"):
        return frozenset()
    path = Path(spec["sidecar"])
    return frozenset({path.relative_to(folder).as_posix()}) if path.is_relative_to(folder) else frozenset()


def selection_of(spec: dict[str, Any], folder: Path) -> Selection:
    return Selection(include=tuple(spec.get("include") or ()), exclude=tuple(spec.get("exclude") or ()),
                     hidden=bool(spec.get("hidden")), skip=_sidecar_rel(spec, folder))


def expand_folder_requests(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pipeline ``requests:`` entries -> ``requests`` rows (see FolderScanStage.expand_requests)."""
    rows: dict[str, dict[str, Any]] = {}
    owners: dict[str, int] = {}  # item_id -> the request entry that lists it
    specs_seen: dict[str, tuple[int, dict[str, Any]]] = {}
    for index, entry in enumerate(specs):
        if not isinstance(entry, dict) or "folder" not in entry:
            raise ConfigError(f"requests[{index}]: expected a mapping with a 'folder' key, got {entry!r:.80}")
        unknown = sorted(set(entry) - set(REQUEST_KEYS))
        if unknown:
            raise _fail(index, unknown[0], f"unknown key; allowed: {', '.join(REQUEST_KEYS)}")
        value = entry["folder"]
        if not isinstance(value, str) or not value.strip():
            raise _fail(index, "folder", f"expected a folder path, got {value!r}")
        # a folder that exists is a folder, even with [ ] in its name; else the glob is split off
        base, glob = (value, None) if Path(value).expanduser().is_dir() else split_glob(value)
        include = _patterns(entry, index, "include")
        if glob is not None:
            if include:
                raise _fail(index, "include", "give either a glob in 'folder' or 'include' patterns, not both")
            problem = pattern_problem(glob)
            if problem:
                raise _fail(index, "folder", problem)
            include = [glob]
        folder = Path(base).expanduser().resolve()
        if not folder.is_dir():
            raise _fail(index, "folder", f"folder {folder} does not exist or is not a folder")
        hidden = entry.get("hidden", False)
        if not isinstance(hidden, bool):
            raise _fail(index, "hidden", f"expected true or false, got {hidden!r}")
        # The shard is the folder and what it selects: a new sidecar or mapping redoes the same shard.
        selected: dict[str, Any] = {"folder": str(folder), "include": sorted(set(include)),
                                    "exclude": sorted(set(_patterns(entry, index, "exclude"))), "hidden": hidden}
        spec = dict(selected)
        mapping: dict[str, Any] = {}
        if entry.get("sidecar") is not None:
            side, mapping = _sidecar_spec(entry, index)
            spec.update(side)
        else:
            extra = sorted(set(SIDECAR_KEYS) & set(entry))
            if extra:
                raise _fail(index, extra[0], "only applies with a 'sidecar' file")
        request_id = short_id(KIND, selected)
        if request_id in rows:
            first = specs_seen[request_id]
            if first[1] != spec:
                raise _fail(index, "folder", f"selects the same files as requests[{first[0]}] with another sidecar; "
                            "give one request per folder and selection")
            continue  # the same request twice
        specs_seen[request_id] = (index, spec)
        try:
            entries, _ = walk(folder, selection_of(spec, folder), stat=True)
        except OSError as exc:
            raise _fail(index, "folder", f"cannot list {folder} ({exc.strerror or exc})") from None
        for e in entries:
            other = owners.setdefault(e.rel, index)
            if other != index:
                raise _fail(index, "folder", f"{printable(e.rel)!r} is also listed by requests[{other}]: both would be "
                            f"item {printable(e.rel)!r}; list both from their common folder with include patterns, "
                            "or exclude it from one of them")
        extra_files = [Path(spec["sidecar"])] if "sidecar" in spec else []
        # Not part of the request_id either: the shard stays the folder's while its content changes.
        row_spec = {**spec, "listing": {"entries": len(entries), "sha256": fingerprint(entries, extra_files)}}
        if mapping:
            row_spec["mapping"] = mapping
        rows[request_id] = {"request_id": request_id, "kind": KIND, "spec": canonical_json(row_spec).decode()}
    return list(rows.values())


class FolderScanConfig(StageConfig):
    platform: str = Field("local", pattern=r"^[a-z0-9][a-z0-9_.-]{0,31}$",
                          description="the items' platform, and the prefix of their uids")
    store: str = Field("media_files", description="folder under the run folder the files are copied into")
    threads: int = Field(4, ge=1, le=64, description="files identified and copied concurrently per worker")

    @field_validator("store")
    @classmethod
    def _relative_store(cls, value: str) -> str:
        return relative_folder(value)


class FolderScanStage(RecordStage):
    """A folder of images and videos -> items (+ videos rows), files copied into the store."""

    name: ClassVar[str] = "folder.scan"
    version: ClassVar[int] = 1
    inputs: ClassVar[dict[str, str]] = {"requests": "requests"}
    outputs: ClassVar[dict[str, str]] = {name: name for name in ("items", "comments", "behavior", "videos")}
    request_paths: ClassVar[tuple[str, ...]] = ("folder", "sidecar")
    key_column: ClassVar[str] = "uid"
    Config = FolderScanConfig

    config: FolderScanConfig

    def __init__(self, config: StageConfig, run_dir: Any) -> None:
        super().__init__(config, run_dir)
        self._store: MediaStore | None = None
        self._roots: dict[str, LocalRoots] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config, "run_dir": self.run_dir}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"], state["run_dir"])  # type: ignore[misc]

    @classmethod
    def resolve_requests(cls, specs: list[dict[str, Any]], base: Path) -> list[dict[str, Any]]:
        """Relative ``folder`` and ``sidecar`` paths against the pipeline file's folder (``~`` first)."""
        expanded = []
        for spec in specs:
            spec = dict(spec) if isinstance(spec, dict) else spec
            if isinstance(spec, dict):
                for key in cls.request_paths:
                    if isinstance(spec.get(key), str) and spec[key].startswith("~"):
                        spec[key] = str(Path(spec[key]).expanduser())
            expanded.append(spec)
        return super().resolve_requests(expanded, base)

    @classmethod
    def expand_requests(cls, specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``{folder: PATH}`` (optionally ``include``, ``exclude``, ``hidden``, ``sidecar``, ``join``,
        ``columns``, ``behavior``) -> one ``folder`` row per folder. A missing folder or sidecar,
        a bad pattern, a bad mapping or one naming a sidecar column that does not exist, or a file
        two requests would both make an item of is a ConfigError naming ``requests[i]`` and the
        field."""
        return expand_folder_requests(specs)

    def setup(self) -> None:
        if self._store is None:
            self._store = MediaStore(self.run_dir, self.config.store)

    def describe(self) -> str:
        cfg = self.config
        return f"{self.name}: platform {cfg.platform!r}, store {cfg.store}/, {cfg.threads} threads"

    # ------------------------------------------------------------------ records

    def records(self, shard: ShardInput) -> list[tuple[str, Any]]:
        """One record per listed entry, keyed by uid, in sorted path order. Lists names only: no
        file is opened here (a 100k-file folder is read file by file, each record journaled)."""
        out: list[tuple[str, Any]] = []
        for row in shard.rows("requests"):
            out += self._folder_records(row["request_id"], row)
        return out

    def _folder_records(self, request_id: str, row: dict[str, Any]) -> list[tuple[str, Any]]:
        kind, spec = request_spec(request_id, row)
        if kind != KIND or not isinstance(spec, dict) or not isinstance(spec.get("folder"), str):
            raise InvalidRecord(f"request {request_id}: not a folder request (kind {kind!r})")
        folder = Path(spec["folder"])
        if not folder.is_dir():
            raise PermanentError(f"request {request_id}: folder {folder} does not exist (moved or unmounted?)",
                                 error_type="missing_folder")
        entries, counts = walk(folder, selection_of(spec, folder))
        join = spec.get("join", "file_name")
        by_key: dict[str, dict[str, Any]] = {}
        dropped: list[dict[str, Any]] = []
        failures: list[tuple[str, Any]] = []
        if spec.get("sidecar"):
            by_key, dropped, failures = self._sidecar(Path(spec["sidecar"]), join, spec.get("mapping") or {},
                                                      entries, counts)
        platform = self.config.platform
        out: list[tuple[str, Any]] = []
        for e in entries:
            payload: dict[str, Any] = {"folder": str(folder), "rel": e.rel, "kind": e.kind,
                                       "sidecar": by_key.get(sc.file_key(e.rel, join))}
            out.append((f"{platform}:{printable(e.rel)}", payload))
        counts["entries_listed"] = len(entries)
        if out:  # what the listing left out travels with the first record (journaled once)
            out[0][1]["listing"] = {"counters": dict(counts), "dropped": dropped}
        elif dropped or counts:
            log.warning("%s: request %s: folder %s lists no file (%s)", self.name, request_id, folder, dict(counts))
        return out + failures  # after the files: a failing record must not carry the listing

    def _sidecar(self, path: Path, join: str, mapping: dict[str, Any], entries: list[Entry], counts: Counter[str]
                 ) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]], list[tuple[str, Any]]]:
        """(join key -> the row joined to those files, the rows dropped, a record for each row that
        could not be read and for where the sidecar stopped)."""
        try:
            table = sc.read_sidecar(path)
            if table.stopped is not None and not table.columns:
                raise sc.SidecarError(f"{path.name}: cannot read it ({table.stopped})")
            sc.table_mapping(mapping, self.config.platform).check_columns(table.columns, path.name)
        except (sc.SidecarError, ConfigError) as exc:  # changed since the run started
            raise PermanentError(f"sidecar {exc}", error_type="bad_sidecar") from None
        column = mapping["columns"][sc.KEY]
        listed = {sc.file_key(e.rel, join) for e in entries}
        by_key: dict[str, dict[str, Any]] = {}
        dropped: list[dict[str, Any]] = []
        failures: list[tuple[str, Any]] = []
        for n, row in enumerate(table.rows, 1):
            if isinstance(row, BadRow):
                failures.append((f"{path}:{n}", {"failure": (ErrorClass.INVALID, row.error_type,
                                                             f"{path}: row {n}: {row.message}")}))
                continue
            key = sc.join_key(row.get(column), join)
            reason = ("sidecar_no_key" if key is None else "sidecar_duplicate" if key in by_key
                      else "sidecar_unmatched" if key not in listed else None)
            if reason is None:
                assert key is not None
                by_key[key] = {"path": str(path), "number": n, "row": row, "mapping": mapping}
                continue
            dropped.append({"table": "sidecar", "uid": None, "record_id": key or f"row {n}", "reason": reason,
                            "detail": f"{path.name} row {n}" + ("" if reason != "sidecar_unmatched" else
                                                                f": no listed file has this {join}")})
        if table.stopped is not None:
            n = len(table.rows)
            failures.append((f"{path}:{n + 1}", {"failure": (
                table.stopped.error_class, "input_stopped",
                f"{path}: unreadable after row {n}: {table.stopped}; the rest of the sidecar is skipped")}))
        counts["sidecar_rows"] = len(table.rows)
        counts["sidecar_matched"] = len(by_key)
        counts["sidecar_unmatched"] = sum(1 for d in dropped if d["reason"] == "sidecar_unmatched")
        return by_key, dropped, failures

    # ------------------------------------------------------------------ one file

    def _map(self, key: str, rel: str, side: dict[str, Any], now: datetime) -> MappedRow:
        """The file's sidecar row mapped as ``table.read`` maps a row; a bad value raises
        InvalidRecord naming the sidecar, its row and the column."""
        try:
            mapping = sc.table_mapping(side["mapping"], self.config.platform)
        except sc.SidecarError as exc:
            raise PermanentError(f"{key}: sidecar mapping {exc}", error_type="bad_sidecar") from None
        where = f"{key}: {side['path']}: row {side['number']}"
        return map_row(side["row"], mapping, MapContext(collected_at=now), where, item_id=rel)

    def _roots_for(self, folder: str) -> LocalRoots:
        roots = self._roots.get(folder)
        if roots is None:
            with self._lock:
                roots = self._roots.setdefault(folder, LocalRoots([folder]))
        return roots

    def process_record(self, key: str, payload: Any) -> RecordOutput:
        if self._store is None:
            self.setup()
        assert self._store is not None
        if "failure" in payload:  # a sidecar row that could not be read
            error_class, error_type, message = payload["failure"]
            raise FAILURES[error_class](message, error_type=error_type)
        listing = payload.get("listing") or {}
        counts: Counter[str] = Counter(listing.get("counters") or {})
        dropped: list[dict[str, Any]] = list(listing.get("dropped") or [])
        out = RecordOutput(dropped=dropped)
        rel, kind = payload["rel"], payload["kind"]
        shown = printable(rel)

        def drop(reason: str, detail: str) -> RecordOutput:
            dropped.append({"table": "files", "uid": key, "record_id": shown, "reason": reason, "detail": detail})
            out.counters = dict(counts)
            return out

        if kind == "bad_name":
            return drop("bad_name", f"{shown}: the file name is not UTF-8")
        if kind == "unreadable":
            return drop("unreadable_folder", f"{shown}/: the folder could not be listed")
        folder = payload["folder"]
        try:
            path = self._roots_for(folder).resolve(Path(folder) / rel)
        except LocalFileRefused as exc:
            detail = {"symlink": "a symbolic link; links are not followed",
                      "outside_roots": "outside the folder", "not_a_file": "not a regular file",
                      "missing": "gone since the folder was listed"}.get(exc.reason, exc.reason)
            return drop(exc.reason, f"{shown}: {detail}")
        try:
            media = identify(path)
        except OSError as exc:
            raise PermanentError(f"{shown}: cannot read ({exc.strerror or exc})", error_type="unreadable") from None
        if media is None:
            return drop("not_media", f"{shown}: neither an image nor a video (by its first bytes and its name)")

        now = now_utc()
        side: dict[str, Any] | None = payload.get("sidecar")
        mapped = None if side is None else self._map(key, rel, side, now)
        try:
            mtime = path.stat().st_mtime
            stored, size = store_copy(self._store, media)
        except OSError as exc:
            raise PermanentError(f"{shown}: cannot copy into the run's store ({exc.strerror or exc})",
                                 error_type="unreadable") from None
        counts[f"files_{media.kind}"] += 1
        counts["stored_new" if stored.created else "stored_existing"] += 1
        item: dict[str, Any] = {
            "uid": key, "platform": self.config.platform, "item_id": rel, "source": "folder",
            "title": PurePosixPath(rel).stem, "created_at": datetime.fromtimestamp(mtime, tz=timezone.utc),
            "collected_at": now, "media_kind": media.kind, "media_urls": [run_ref(stored.path)],
        }  # fmt: skip
        if mapped is not None:  # what the sidecar row gives wins; an empty cell keeps the file's own
            item.update({k: v for k, v in mapped.item.items() if v is not None})
            counts["sidecar_joined"] += 1
            for table, rows in (("comments", mapped.comments), ("behavior", mapped.behavior)):
                if rows:
                    out.tables[table] = rows
                    counts[table] += len(rows)
        out.tables["items"] = [item]
        if media.kind == "video":
            out.tables["videos"] = [{"uid": key, "file_status": "ok", "file_path": stored.path,
                                     "file_sha256": stored.sha256, "file_bytes": size, "source_info": "folder"}]
        out.counters = dict(counts)
        return out
