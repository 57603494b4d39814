"""``cbc.read``: LCBM's Content Behavior Corpus (``behavior-in-the-wild/content-behavior-corpus``
on the Hugging Face Hub, or a local copy of its Parquet files) as blift tables, streamed.

The corpus holds YouTube brand videos with the behavior they drew (likes, views, the channel's
subscribers, the "most replayed" graph) and LCBM's annotations of each scene (BLIP-2 captions,
objects and actions, OCR, the speech). It holds no video files and no scene times. This stage
writes, per video, the ``items``, ``videos``, ``behavior``, ``transcripts``, ``captions``,
``attributes`` and ``video_refs`` rows that :mod:`~blift.collect.cbc.rows` describes, so the
instruction stage can build records from the annotations alone, or ``youtube.collect`` can
fetch the videos (from ``video_refs``) for blift's own scenes, ASR and captions.

Configuring it::

    - stage: cbc.read
      requests:
        - {dataset: behavior-in-the-wild/content-behavior-corpus, split: train}   # revision: <commit>
        - {path: data/cbc/test-00000-of-00001.parquet}                             # a local copy
      config:
        collected_at: 2023-06-01T00:00:00Z    # when the counts were read, if you know it

Reading is ``table.read``'s (:class:`~blift.collect.table.read.TableStreamStage`): files,
folders, globs, fsspec URLs or a Hub dataset streamed batch by batch at a pinned revision (kept
in each item's ``raw`` as ``_source``); every table bucketed by item; a row that cannot be read
(no ``video_id``, a number that is none, a struct that is not one) is an ``errors`` row of class
``invalid`` keyed ``<input>:<row>`` whose message names the input, the row and the column; a
repeated ``video_id`` keeps its first good row and drops the others as ``duplicate_id``; an
input that stops is one error row, the rows before it kept. An input without a ``video_id``
column is a :class:`~blift.errors.ConfigError` (not the corpus).

Counters: ``in == items + invalid + dropped:duplicate_id``; rows per table; and what the
mapping met: ``missing:<column>`` / ``negative:<column>`` / ``rounded:<column>`` (counts made
null or whole), ``unparsed:metadata.date``, ``no_heatmap``, ``heatmap_rescaled``,
``markers_dropped:<reason>``, ``heatmap_past_duration``, ``scene_lists_misaligned``,
``empty_caption``, ``transcript_ok`` / ``transcript_no_speech``.

Snapshot time: the corpus does not say when its counts were read. ``collected_at`` (a fixed
time) says it; by default it is the time of the run (``blift.ids.now_utc``, pinned by
``SOURCE_DATE_EPOCH``), as for ``table.read``.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime, timezone
from typing import Any, ClassVar

from pydantic import Field, field_validator

from blift.collect.cbc.rows import COLUMNS, TABLES, CbcRecord, cbc_rows
from blift.collect.table.mapping import MapContext
from blift.collect.table.read import RowAt, RowStream, TableStreamStage
from blift.errors import ConfigError
from blift.ids import now_utc
from blift.stage import ShardSink, StageConfig

log = logging.getLogger(__name__)

_SCHEMAS = {"video_refs": "item_refs"}


class CbcReadConfig(StageConfig):
    """Options of ``cbc.read``."""

    collected_at: datetime | None = Field(
        None, description="when the corpus's counts were read (a fixed time; the corpus does not say): "
                          "default: the time of the run")
    max_keywords: int = Field(16, ge=0, le=256, description="keywords kept per scene caption (from objects, actions)")
    buckets: int = Field(8, ge=1, le=65536, description="output shards per table; finishing holds one in memory")
    batch_rows: int = Field(500, ge=1, le=1_000_000, description="rows read and mapped at a time (a CBC row "
                            "holds a whole transcript: ~17 kB on average)")

    @field_validator("collected_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class CbcReadStage(TableStreamStage):
    """Stream the Content Behavior Corpus into items, videos, behavior, transcripts, captions,
    attributes and video_refs, co-partitioned by video."""

    name: ClassVar[str] = "cbc.read"
    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, str]] = {name: _SCHEMAS.get(name, name) for name in TABLES}
    request_paths: ClassVar[tuple[str, ...]] = ("path",)
    Config: ClassVar[type[StageConfig]] = CbcReadConfig

    config: CbcReadConfig

    def describe(self) -> str:
        return f"{self.name} ({self.buckets()} buckets)"

    @classmethod
    def expand_requests(cls, specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """As ``table.read``'s (``{path: ...}`` or ``{dataset: ...}``), without ``media_roots``:
        the corpus names no local media."""
        if isinstance(specs, list):
            for i, entry in enumerate(specs):
                if isinstance(entry, dict) and "media_roots" in entry:
                    raise ConfigError(f"{cls.name}: requests[{i}]: media_roots: the corpus names no media files")
        return super().expand_requests(specs)

    def row_stream(self, sink: ShardSink, counters: Counter[str]) -> RowStream[Any]:
        return _CbcRows(self, sink, counters)


class _CbcRows(RowStream[CbcRecord]):
    """One CBC stream: each row mapped by :func:`~blift.collect.cbc.rows.cbc_rows`."""

    def __init__(self, stage: CbcReadStage, sink: ShardSink, counters: Counter[str]) -> None:
        config = stage.config
        super().__init__(stage, sink, counters, config.collected_at or now_utc(), config.batch_rows)
        self.max_keywords = config.max_keywords

    def check_columns(self, columns: list[str], where: str) -> None:
        if "video_id" not in columns:
            raise ConfigError(f"{where}: no 'video_id' column, so not the Content Behavior Corpus; "
                              f"the input's columns are {sorted(columns)}")
        absent = [c for c in COLUMNS if c not in columns]
        if absent:
            log.warning("%s: the corpus's column(s) %s are absent; read as empty", where, absent)

    def map(self, row: dict[str, Any], at: RowAt, ctx: MapContext) -> tuple[str, str, CbcRecord]:
        record = cbc_rows(row, ctx, at.where, request_id=at.request_id, rank=at.number - 1,
                          max_keywords=self.max_keywords)
        return record.uid, record.video_id, record

    def tables(self, mapped: CbcRecord, at: RowAt) -> dict[str, list[dict[str, Any]]]:
        self.counters.update(mapped.counts)
        return mapped.tables
