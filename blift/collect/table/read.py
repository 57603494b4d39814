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
from datetime import datetime, timezone
from typing import Any, ClassVar

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


class TableReadStage(StreamStage):
    """Stream tables (files or a Hub dataset) into co-partitioned items, comments, behavior, videos."""

    name: ClassVar[str] = "table.read"
    version: ClassVar[int] = 1
    inputs: ClassVar[dict[str, str]] = {"requests": "requests"}
    outputs: ClassVar[dict[str, str]] = {name: name for name in OUTPUTS}
    resources: ClassVar[str] = "io"
    request_paths: ClassVar[tuple[str, ...]] = ("path", "media_roots")
    Config: ClassVar[type[StageConfig]] = TableReadConfig

    config: TableReadConfig

    def describe(self) -> str:
        return f"{self.name} (platform {self.config.platform}, {self.buckets()} buckets)"

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

    # ------------------------------------------------------------------------------- stream

    def stream(self, requests: list[dict[str, Any]], sink: ShardSink) -> dict[str, int]:
        counters: Counter[str] = Counter({"in": 0, "invalid": 0, **{name: 0 for name in OUTPUTS}})
        fixed = self.config.fixed_time()
        run = _Run(self, sink, counters, SeenIds(), MediaResolver(self.run_dir, self.config.store),
                   fixed or now_utc())
        for request in requests:
            rid = request.get("request_id", "?")
            try:
                spec = orjson.loads(request["spec"])
            except (KeyError, TypeError, orjson.JSONDecodeError) as exc:
                raise ConfigError(f"{self.name}: request {rid}: unreadable spec ({exc})") from None
            where = f"{self.name}: request {rid} ({spec.get('path') or spec.get('dataset')})"
            for table in inputs_of(request.get("kind") or "path", spec, where):
                run.read(table, where)
        run.out.flush()
        counters.update(run.media.counts)
        return dict(counters)


class _Run:
    """One stream's state: the sink, the counters, the ids seen, the media store."""

    def __init__(self, stage: TableReadStage, sink: ShardSink, counters: Counter[str], seen: SeenIds,
                 media: MediaResolver, collected_at: datetime) -> None:
        self.stage, self.sink, self.counters, self.seen, self.media = stage, sink, counters, seen, media
        self.mapping = stage.config.mapping()
        self.mode = stage.config.columns.media_kind
        self.buckets = stage.buckets()
        self.collected_at = collected_at
        self.salt = author_salt()
        self.out = _Buffers(sink)

    def read(self, table: TableInput, where: str) -> None:
        """Every row of one input into the sink; a stop of the input is one error row."""
        ctx = MapContext(collected_at=self.collected_at, salt=self.salt, raw_extra=table.raw_extra)
        number, checked = 0, False
        self.counters["inputs"] += 1
        try:
            for batch in table.read(self.stage.config.batch_rows):
                if not checked and batch.columns is not None:
                    self.mapping.check_columns(batch.columns, f"{where}: {table.label}")
                    checked = True
                for row in batch.rows:
                    number += 1
                    self._row(row, number, table, ctx)
        except InputStopped as exc:
            self.counters["inputs_stopped"] += 1
            self.sink.fail(RecordFailure(
                record_key=f"{table.label}:{number + 1}", error_class=exc.error_class, error_type="input_stopped",
                message=f"{table.label}: unreadable after row {number}: {exc}; the rest of this input is skipped"))

    def _row(self, row: dict[str, Any] | BadRow, number: int, table: TableInput, ctx: MapContext) -> None:
        self.counters["in"] += 1
        where = f"{table.label}: row {number}"
        try:
            if isinstance(row, BadRow):
                raise InvalidRecord(f"{where}: {row.message}", error_type=row.error_type)
            mapped = map_row(row, self.mapping, ctx, where)
            h = uid_hash(mapped.uid)
            if h in self.seen:
                self.counters["dropped:duplicate_id"] += 1
                self.sink.drop([{"stage": self.stage.name, "table": "items", "uid": mapped.uid,
                                 "record_id": mapped.item["item_id"], "reason": "duplicate_id",
                                 "detail": f"{where}: id {mapped.item['item_id']!r} was read before; "
                                           "the first row is kept"}])
                return
            media = self.media.resolve(mapped.media, self.mode, table.roots, table.base, where)
        except InvalidRecord as exc:
            self.counters["invalid"] += 1
            self.counters[f"invalid:{exc.error_type}"] += 1
            self.sink.fail(RecordFailure(record_key=f"{table.label}:{number}", error_class=ErrorClass.INVALID,
                                         error_type=exc.error_type, message=str(exc)))
            return
        self.seen.add(h)
        item = mapped.item
        item["media_kind"] = media.kind or ("text" if item["title"] or item["text"] else "other")
        item["media_urls"] = media.urls
        item["url"] = media.first_url or item["permalink"]
        bucket = h % self.buckets
        self.out.add("items", bucket, [item])
        self.counters["items"] += 1
        if mapped.comments:
            self.out.add("comments", bucket, mapped.comments)
            self.counters["comments"] += len(mapped.comments)
        if mapped.behavior:
            self.out.add("behavior", bucket, mapped.behavior)
            self.counters["behavior"] += len(mapped.behavior)
        if media.video_file is not None:
            self.out.add("videos", bucket, [{"uid": mapped.uid, **media.video_file}])
            self.counters["videos"] += 1


class _Buffers:
    """Rows on their way to the sink, gathered per (dataset, bucket) and handed over as Arrow
    tables of ``flush_rows`` rows. A write costs the sink a schema check and a buffer entry, and
    row dicts cost it a check of every row's keys: one write per batch and bucket took ~26 us of
    a ~115 us row (CSV, one comment, three behavior values, 8 buckets), these take ~4. At most
    ``max_rows`` rows wait in all; the rows of a bucket keep the input order."""

    def __init__(self, sink: ShardSink, flush_rows: int = 4096, max_rows: int = 32768) -> None:
        self.sink, self.flush_rows, self.max_rows = sink, flush_rows, max_rows
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
            table = pa.Table.from_pylist(rows, schema=schemas.get(dataset).arrow)
            self.sink.write(dataset, bucket, table)
        else:
            self.sink.write(dataset, bucket, rows)
