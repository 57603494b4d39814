"""``table.read``: a table you already have (CSV, TSV, JSON lines, Parquet, or a Hugging Face
dataset; local or on any fsspec URL) as blift's ``items``, ``comments``, ``behavior`` and
``videos`` tables, streamed in constant memory.

Why a stream stage
  What img2dataset, video2dataset and datatrove users hold is a table of URLs (or paths) with
  whatever numbers came with them, often millions of rows. Like ``reddit.dumps``, this stage
  reads its inputs batch by batch (:mod:`~blift.collect.table.inputs`) and hands rows to a sink
  that buckets every table by ``uid_hash(uid) % buckets``: an item, its comments, its behavior
  values and its video row share a shard id, and the memory is one batch plus the sink's
  buffers, whatever the input size.

Configuring it (every field is described on :class:`TableReadConfig`)::

    - stage: table.read
      requests:
        - {path: data/posts.csv}                       # a file, folder, glob or URL
        - {dataset: org/name, split: train, revision: v1.0}
      config:
        platform: myforum                              # uid prefix: myforum:<id>
        columns: {id: post_id, media: image_url, title: caption, comments: replies, author: user}
        behavior:
          likes: {column: like_count, kind: count, to: like_count}
          ctr: {column: click_rate, kind: ratio}
          memorability: {column: mem, kind: score, scale: [0, 1]}

What a row becomes (:mod:`~blift.collect.table.mapping`, :mod:`~blift.collect.table.media`)
  an ``items`` row (``source: table``), its ``comments`` in published order, one ``behavior`` row
  per named value, and for a local video file a ``videos`` row. Local images and videos are
  copied into the run's media store (``media_files/``) and named as ``run:`` references, so
  ``media.download`` checks them with no network; URLs stay URLs for ``media.download`` to fetch.
  A remote *video* URL gives a video item without a ``videos`` row: ``media.download`` fetches
  it like any video it finds no collected file for (a file, or a DASH manifest whose tracks it
  muxes; :mod:`blift.collect.media.video_fetch`), under the same address guard, ``hosts``, size
  and ``max_duration_s`` rules.

Bad input never stops the stream
  * a bad row (no id, a value that is not a number or a time, a ratio outside 0..1, a media
    reference that is neither an http(s) URL nor an allowed local file, an unreadable comments
    list, a CSV row with the wrong number of fields, a JSON line that is not an object in
    UTF-8) is an ``errors`` row of class ``invalid``, keyed ``<input>:<row>``, whose message names
    the input, the row and the column; the rest goes on;
  * an input that cannot be read further (a CSV cut inside a quoted value, a broken Parquet
    footer or page, a truncated ``.gz``) is one ``errors`` row naming it and the last row read;
    the rows before were written;
  * a repeated id keeps its first good row; the others are ``dropped`` as ``duplicate_id``
    (ids are remembered in 8 bytes each, :mod:`~blift.collect.table.seen`);
  * a config naming a column an input lacks is a :class:`~blift.errors.ConfigError` at that
    input's first batch, naming the request, the column and the columns the input has: a typo
    is one message, not a million error rows.
  Counters: ``in == items + invalid + dropped:duplicate_id`` (rows read), rows per table, media
  by kind, inputs read and stopped.

Snapshot time
  ``collected_at`` (a column, or a fixed time) is when the behavior was observed; default: the
  time of the run (``blift.ids.now_utc``, pinned by ``SOURCE_DATE_EPOCH``). Every item and
  behavior row carries it.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, ClassVar, Generic, TypeVar

import orjson
import pyarrow as pa
from pydantic import Field, field_validator

from blift import schemas
from blift.collect.fields import relative_folder
from blift.collect.table.inputs import BadRow, InputStopped, TableInput, inputs_of, request_spec
from blift.collect.table.mapping import (
    BehaviorColumn,
    ColumnMap,
    MapContext,
    MappedRow,
    TableMapping,
    check_behavior_names,
    map_row,
)
from blift.collect.table.media import MediaResolver
from blift.collect.table.seen import SeenIds
from blift.errors import ConfigError, ErrorClass, InvalidRecord
from blift.ids import author_salt, canonical_json, now_utc, short_id, uid_hash
from blift.stage import RecordFailure, ShardSink, StageConfig, StreamStage

log = logging.getLogger(__name__)

OUTPUTS = ("items", "comments", "behavior", "videos")


class TableReadConfig(StageConfig):
    """Options of ``table.read``."""

    platform: str = Field("table", pattern=r"^[a-z][a-z0-9_]*$",
                          description="items.platform and the uid prefix (<platform>:<id>)")
    columns: ColumnMap = Field(description="which table column holds each field; id is required")
    behavior: dict[str, BehaviorColumn] = Field(
        default_factory=dict, description="named behavior values: {name: {column, kind, scale, to}}")
    collected_at: str | datetime | None = Field(
        None, description="when the behavior was observed: a column name, or a fixed ISO time; default: now")
    buckets: int = Field(8, ge=1, le=65536, description="output shards per table; finishing holds one in memory")
    batch_rows: int = Field(2000, ge=1, le=1_000_000, description="rows read and mapped at a time")
    store: str = Field("media_files", description="folder under the run folder for local media copied in")

    @field_validator("behavior")
    @classmethod
    def _behavior(cls, value: dict[str, BehaviorColumn]) -> dict[str, BehaviorColumn]:
        return check_behavior_names(value)

    @field_validator("collected_at")
    @classmethod
    def _collected_at(cls, value: str | datetime | None) -> str | datetime | None:
        if isinstance(value, str) and not value.strip():
            raise ValueError("collected_at: empty; give a column name or an ISO time")
        return value

    @field_validator("store")
    @classmethod
    def _store(cls, value: str) -> str:
        return relative_folder(value)

    def fixed_time(self) -> datetime | None:
        """The fixed snapshot time, when ``collected_at`` is one (not a column)."""
        value = self.collected_at
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value.strip())
            except ValueError:
                return None  # a column name
        if isinstance(value, datetime):
            return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
        return None

    def mapping(self) -> TableMapping:
        column = self.collected_at if isinstance(self.collected_at, str) and self.fixed_time() is None else None
        return TableMapping(platform=self.platform, columns=self.columns, behavior=dict(self.behavior),
                            collected_at_column=column)


class TableStreamStage(StreamStage):
    """A stream stage reading ``table.read``'s requests (files, folders, globs, URLs or a Hub
    dataset: :mod:`~blift.collect.table.inputs`) row by row into bucketed tables. What a row
    becomes is the subclass's :meth:`row_stream`; the reading, the error rows of bad rows and
    stopped inputs, the duplicate ids and the counters are the same for every such source
    (``table.read``, and ``cbc.read`` for LCBM's Content Behavior Corpus)."""

    inputs: ClassVar[dict[str, str]] = {"requests": "requests"}
    resources: ClassVar[str] = "io"
    request_paths: ClassVar[tuple[str, ...]] = ("path", "media_roots")

    @classmethod
    def expand_requests(cls, specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One ``requests`` row per entry: ``{path: ...}`` (its files listed now, with size and
        stamp) or ``{dataset: ...}``; see :mod:`blift.collect.table.inputs`."""
        if not isinstance(specs, list) or not specs:
            raise ConfigError(f"{cls.name}: requests: expected a non-empty list of {{path: ...}} or "
                              "{dataset: ...} entries")
        rows = []
        for i, entry in enumerate(specs):
            kind, spec = request_spec(entry, f"{cls.name}: requests[{i}]")
            rows.append({"request_id": short_id(cls.name, kind, spec), "kind": kind,
                         "spec": canonical_json(spec).decode()})
        return rows

    def row_stream(self, sink: ShardSink, counters: Counter[str]) -> RowStream[Any]:
        """The state of one stream: what each row becomes."""
        raise NotImplementedError

    def stream(self, requests: list[dict[str, Any]], sink: ShardSink) -> dict[str, int]:
        counters: Counter[str] = Counter({"in": 0, "invalid": 0, **dict.fromkeys(self.outputs, 0)})
        run = self.row_stream(sink, counters)
        for request in requests:
            rid = request.get("request_id", "?")
            try:
                spec = orjson.loads(request["spec"])
            except (KeyError, TypeError, orjson.JSONDecodeError) as exc:
                raise ConfigError(f"{self.name}: request {rid}: unreadable spec ({exc})") from None
            where = f"{self.name}: request {rid} ({spec.get('path') or spec.get('dataset')})"
            for table in inputs_of(request.get("kind") or "path", spec, where):
                run.read(table, where, str(rid))
        run.finish()
        return dict(counters)


class TableReadStage(TableStreamStage):
    """Stream tables (files or a Hub dataset) into co-partitioned items, comments, behavior, videos."""

    name: ClassVar[str] = "table.read"
    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, str]] = {name: name for name in OUTPUTS}
    Config: ClassVar[type[StageConfig]] = TableReadConfig

    config: TableReadConfig

    def describe(self) -> str:
        return f"{self.name} (platform {self.config.platform}, {self.buckets()} buckets)"

    def row_stream(self, sink: ShardSink, counters: Counter[str]) -> RowStream[Any]:
        return _TableRows(self, sink, counters)


@dataclass(frozen=True)
class RowAt:
    """Where a row was read: its input, its number there (from 1), the request it belongs to,
    and ``where`` ("<input>: row <n>") for messages."""

    table: TableInput
    number: int
    request_id: str
    where: str


MappedT = TypeVar("MappedT")


class RowStream(Generic[MappedT]):
    """One stream's state (the sink, the counters, the ids seen, the snapshot time) and the walk
    over an input's rows. A subclass says what a row is: :meth:`map` (pure; raises InvalidRecord
    naming the row and column) gives its uid, and :meth:`tables` (called only for a uid not seen
    before; may still raise InvalidRecord, e.g. for media) its rows per output table."""

    def __init__(self, stage: TableStreamStage, sink: ShardSink, counters: Counter[str], collected_at: datetime,
                 batch_rows: int) -> None:
        self.stage, self.sink, self.counters = stage, sink, counters
        self.seen = SeenIds()
        self.buckets = stage.buckets()
        self.collected_at = collected_at
        self.batch_rows = batch_rows
        self.salt = author_salt()
        self.out = _Buffers(sink, dict(stage.outputs))

    def check_columns(self, columns: list[str], where: str) -> None:
        """At an input's first batch: raise ConfigError when it lacks columns the stream needs."""

    def map(self, row: dict[str, Any], at: RowAt, ctx: MapContext) -> tuple[str, str, MappedT]:
        """(uid, record id, mapped row)."""
        raise NotImplementedError

    def tables(self, mapped: MappedT, at: RowAt) -> dict[str, list[dict[str, Any]]]:
        """The rows of each output table for one new item."""
        raise NotImplementedError

    def finish(self) -> None:
        """After the last input: hand every buffered row to the sink."""
        self.out.flush()

    def read(self, table: TableInput, where: str, request_id: str) -> None:
        """Every row of one input into the sink; a stop of the input is one error row."""
        ctx = MapContext(collected_at=self.collected_at, salt=self.salt, raw_extra=table.raw_extra)
        number, checked = 0, False
        self.counters["inputs"] += 1
        try:
            for batch in table.read(self.batch_rows):
                if not checked and batch.columns is not None:
                    self.check_columns(batch.columns, f"{where}: {table.label}")
                    checked = True
                for row in batch.rows:
                    number += 1
                    self._row(row, RowAt(table, number, request_id, f"{table.label}: row {number}"), ctx)
        except InputStopped as exc:
            self.counters["inputs_stopped"] += 1
            self.sink.fail(RecordFailure(
                record_key=f"{table.label}:{number + 1}", error_class=exc.error_class, error_type="input_stopped",
                message=f"{table.label}: unreadable after row {number}: {exc}; the rest of this input is skipped"))

    def _row(self, row: dict[str, Any] | BadRow, at: RowAt, ctx: MapContext) -> None:
        self.counters["in"] += 1
        try:
            if isinstance(row, BadRow):
                raise InvalidRecord(f"{at.where}: {row.message}", error_type=row.error_type)
            uid, record_id, mapped = self.map(row, at, ctx)
            h = uid_hash(uid)
            if h in self.seen:
                self.counters["dropped:duplicate_id"] += 1
                self.sink.drop([{"stage": self.stage.name, "table": "items", "uid": uid, "record_id": record_id,
                                 "reason": "duplicate_id",
                                 "detail": f"{at.where}: id {record_id!r} was read before; the first row is kept"}])
                return
            out = self.tables(mapped, at)
        except InvalidRecord as exc:
            self.counters["invalid"] += 1
            self.counters[f"invalid:{exc.error_type}"] += 1
            self.sink.fail(RecordFailure(record_key=f"{at.table.label}:{at.number}",
                                         error_class=ErrorClass.INVALID, error_type=exc.error_type, message=str(exc)))
            return
        self.seen.add(h)
        bucket = h % self.buckets
        for dataset, rows in out.items():
            if rows:
                self.out.add(dataset, bucket, rows)
                self.counters[dataset] += len(rows)


class _TableRows(RowStream[MappedRow]):
    """``table.read``'s rows: the column mapping, and the media each row names."""

    def __init__(self, stage: TableReadStage, sink: ShardSink, counters: Counter[str]) -> None:
        config = stage.config
        super().__init__(stage, sink, counters, config.fixed_time() or now_utc(), config.batch_rows)
        self.media = MediaResolver(stage.run_dir, config.store)
        self.mapping = config.mapping()
        self.mode = config.columns.media_kind

    def check_columns(self, columns: list[str], where: str) -> None:
        self.mapping.check_columns(columns, where)

    def map(self, row: dict[str, Any], at: RowAt, ctx: MapContext) -> tuple[str, str, MappedRow]:
        mapped = map_row(row, self.mapping, ctx, at.where)
        return mapped.uid, mapped.item["item_id"], mapped

    def tables(self, mapped: MappedRow, at: RowAt) -> dict[str, list[dict[str, Any]]]:
        media = self.media.resolve(mapped.media, self.mode, at.table.roots, at.table.base, at.where)
        item = mapped.item
        item["media_kind"] = media.kind or ("text" if item["title"] or item["text"] else "other")
        item["media_urls"] = media.urls
        item["url"] = media.first_url or item["permalink"]
        video = [{"uid": mapped.uid, **media.video_file}] if media.video_file is not None else []
        return {"items": [item], "comments": mapped.comments, "behavior": mapped.behavior, "videos": video}

    def finish(self) -> None:
        super().finish()
        self.counters.update(self.media.counts)


class _Buffers:
    """Rows on their way to the sink, gathered per (dataset, bucket) and handed over as Arrow
    tables of ``flush_rows`` rows. A write costs the sink a schema check and a buffer entry, and
    row dicts cost it a check of every row's keys: one write per batch and bucket took ~26 us of
    a ~115 us row (CSV, one comment, three behavior values, 8 buckets), these take ~4. At most
    ``max_rows`` rows wait in all; the rows of a bucket keep the input order."""

    def __init__(self, sink: ShardSink, outputs: dict[str, str], flush_rows: int = 4096,
                 max_rows: int = 32768) -> None:
        self.sink, self.flush_rows, self.max_rows = sink, flush_rows, max_rows
        self.schemas = outputs  # dataset -> schema name
        self.parts: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self.rows = 0
        self.tables = getattr(sink, "accepts_tables", False)

    def add(self, dataset: str, bucket: int, rows: list[dict[str, Any]]) -> None:
        part = self.parts.setdefault((dataset, bucket), [])
        part.extend(rows)
        self.rows += len(rows)
        if len(part) >= self.flush_rows:
            self._write((dataset, bucket))
        if self.rows > self.max_rows:
            self.flush()

    def flush(self) -> None:
        for key in sorted(self.parts):
            self._write(key)

    def _write(self, key: tuple[str, int]) -> None:
        rows = self.parts.pop(key)
        self.rows -= len(rows)
        dataset, bucket = key
        if self.tables:  # the rows are ours, complete and typed: no per-row key check needed
            table = pa.Table.from_pylist(rows, schema=schemas.get(self.schemas[dataset]).arrow)
            self.sink.write(dataset, bucket, table)
        else:
            self.sink.write(dataset, bucket, rows)
