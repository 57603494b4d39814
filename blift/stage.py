"""The stage contract (docs/architecture.md). Stages never import the runner; the runner imports stages.

Three shapes, one per kind of work:

* :class:`Stage` – a pure function of one input shard (cleaning, attributes, instructions).
  A crashed shard is simply redone.
* :class:`RecordStage` – per-record work that touches the network or a model (collectors,
  downloads, captioning). The runner journals every finished record, so a crash or ``kill -9``
  never fetches a successful record twice, and ``--retry-failed`` redoes only transient errors.
* :class:`StreamStage` – sources that stream far more rows than fit in memory (dump files) and
  bucket them into output shards by a hash of the item uid, keeping tables co-partitioned.

Shards are co-partitioned: shard ``part-00003`` of ``items``, ``comments`` and ``media`` are about
the same items, so a stage reading several tables reads the same shard id of each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from blift.errors import ErrorClass, PermanentError
from blift.storage import RunPath, local_file


class StageConfig(BaseModel):
    """Base of every stage config: unknown keys are errors (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class ShardInput:
    """One input shard: the same shard id of each input dataset, plus where the run lives."""

    shard_id: str
    tables: dict[str, pa.Table]
    run_dir: RunPath

    def rows(self, dataset: str) -> list[dict[str, Any]]:
        return self.tables[dataset].to_pylist()


@dataclass
class RecordFailure:
    """A record that failed; becomes a row of the ``errors`` table."""

    record_key: str
    error_class: ErrorClass
    error_type: str
    message: str
    attempts: int = 1


@dataclass
class Languages:
    """The languages of the texts a stage kept, recorded in ``stats.json`` so that a release can
    name them without identifying languages again.

    ``kept``: the stage filters by language and keeps these codes (its configured list).
    ``observed``: it does not filter; texts per language code identified among those it kept.
    """

    kept: list[str] = field(default_factory=list)
    observed: dict[str, int] = field(default_factory=dict)


@dataclass
class StageResult:
    """What a stage returns for one shard."""

    tables: dict[str, pa.Table | list[dict[str, Any]]]
    records_in: int
    dropped: list[dict[str, Any]] = field(default_factory=list)  # rows of the `dropped` schema
    errors: list[RecordFailure] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)  # extra stage-specific counts
    languages: Languages | None = None  # stages that filter or see texts: which languages they kept


@dataclass
class RecordOutput:
    """What a record stage returns for one record: rows per output dataset, and dropped rows."""

    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    dropped: list[dict[str, Any]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)


class Stage:
    """A pure shard-to-shard transformation."""

    name: ClassVar[str]
    version: ClassVar[int] = 1  # bump when output changes for the same input and config
    inputs: ClassVar[dict[str, str]]  # dataset -> schema; the first names the shards to run
    outputs: ClassVar[dict[str, str]]  # dataset -> schema
    Config: ClassVar[type[StageConfig]] = StageConfig
    resources: ClassVar[str] = "cpu"  # cpu | io | gpu: how the executor schedules it
    #: Source stages: request keys holding file paths (a string or a list of strings); a relative
    #: one is relative to the pipeline file, see :meth:`resolve_requests`.
    request_paths: ClassVar[tuple[str, ...]] = ()
    #: Prefixes of environment variables this stage's workers need (credentials, say) that a
    #: distributed executor must pass on; the core's own (BLIFT_, storage, model caches) always go.
    forward_env: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: StageConfig, run_dir: RunPath) -> None:
        self.config = config
        self.run_dir = run_dir

    def setup(self) -> None:
        """Load heavy things (models, clients) once per worker process."""

    def process(self, shard: ShardInput) -> StageResult:
        raise NotImplementedError

    def describe(self) -> str:
        """One line for logs (e.g. which backend / device it uses)."""
        return self.name

    @classmethod
    def settings(cls, config: StageConfig) -> dict[str, Any]:
        """The thresholds and switches that decide what this stage keeps, as short readable
        values ({setting: value}); the runner writes them into ``stats.json`` and the dataset card
        lists them next to the drop counts. {} (the default): nothing to state."""
        return {}

    @classmethod
    def fingerprint(cls, config: StageConfig) -> dict[str, Any]:
        """What else decides the output besides config and version (e.g. the content of template
        files); joins the config hash, so changing it redoes the shards."""
        return {}

    @classmethod
    def resolve_requests(cls, specs: list[dict[str, Any]], base: Path) -> list[dict[str, Any]]:
        """Source stages: the pipeline file's ``requests:`` entries with relative file paths made
        absolute against ``base`` (the pipeline file's folder), before :meth:`expand_requests`.
        The default resolves the keys named in :attr:`request_paths`; URLs are left as they are."""
        if not cls.request_paths:
            return specs

        def absolute(value: Any) -> Any:
            if not isinstance(value, str) or "://" in value or Path(value).is_absolute():
                return value
            return str((base / value).resolve())

        out = []
        for spec in specs:
            spec = dict(spec)
            for key in cls.request_paths:
                if isinstance(spec.get(key), str):
                    spec[key] = absolute(spec[key])
                elif isinstance(spec.get(key), list):
                    spec[key] = [absolute(v) for v in spec[key]]
            out.append(spec)
        return out

    @classmethod
    def expand_requests(cls, specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Source stages: turn the pipeline file's ``requests:`` entries into ``requests`` rows
        (``request_id``, ``kind``, ``spec`` as canonical JSON). Raise ConfigError on a bad entry,
        naming the entry and field. Each row becomes one input shard."""
        raise NotImplementedError(f"stage {cls.name!r} takes no requests")


class RecordStage(Stage):
    """Per-record stage; the runner drives it record by record and journals each result."""

    resources: ClassVar[str] = "io"
    key_column: ClassVar[str] = "uid"  # every output row carries its record key in this column

    def records(self, shard: ShardInput) -> list[tuple[str, Any]]:
        """The shard's records in output order: (key, payload). Keys are unique in a shard."""
        raise NotImplementedError

    def process_record(self, key: str, payload: Any) -> RecordOutput:
        """Do one record. Raise a RecordError subclass to classify a failure."""
        raise NotImplementedError

    def threads(self) -> int:
        """Records processed concurrently in one worker (I/O-bound stages use >1)."""
        return int(getattr(self.config, "threads", 1) or 1)


class ShardSink(Protocol):
    """Where a StreamStage writes: rows are appended to (dataset, bucket) shards."""

    def write(self, dataset: str, bucket: int, rows: list[dict[str, Any]]) -> None: ...

    def drop(self, rows: list[dict[str, Any]]) -> None: ...

    def fail(self, failure: RecordFailure) -> None: ...


class StreamStage(Stage):
    """A source that streams its input (e.g. dump files) into ``buckets`` output shards."""

    #: Buckets the sink finishes at once, each on its own thread (finalize_bucket must then be
    #: thread-safe); the finishing threads are never the main thread.
    finalize_threads: int = 1

    def buckets(self) -> int:
        return int(getattr(self.config, "buckets", 8))

    def stream(self, requests: list[dict[str, Any]], sink: ShardSink) -> dict[str, int]:
        """Stream every request into the sink; return counters (must include ``in``)."""
        raise NotImplementedError

    def finalize_bucket(self, dataset: str, table: pa.Table) -> pa.Table:
        """Last pass over one finished bucket (dedupe, sort, derive columns such as depth).
        Memory is one bucket, so pick enough buckets for the input size."""
        return table


def run_file(run_dir: RunPath, rel: str | None, what: str) -> Path:
    """The local file for a path a row names relative to the run folder (fetched into the local
    cache when the run folder is a URL); a row without a path or whose file is gone is a
    PermanentError (``missing_path`` / ``missing_file``) naming ``what`` ("uid#0: media")."""
    if not rel:
        raise PermanentError(f"{what} has no path", error_type="missing_path")
    path = run_dir / rel
    if not path.is_file():
        raise PermanentError(f"{what} file {rel} is missing from the run folder", error_type="missing_file")
    return local_file(path)
