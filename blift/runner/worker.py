"""What runs inside a worker process: stage setup once, then one shard per task.

Workers write their own outputs (temp name, rename) and the shard manifest last, so the parent
only receives a small summary, and a worker killed at any instant leaves either a finished shard
or nothing but temp files and a journal.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import traceback
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

from blift import schemas, storage, tables
from blift.errors import BliftError, ErrorClass, classify
from blift.processes import die_with_parent
from blift.registry import load_stage
from blift.runner import layout
from blift.runner.journal import Journal
from blift.runner.manifest import write_manifest
from blift.stage import (
    RecordFailure,
    RecordOutput,
    RecordStage,
    ShardInput,
    Stage,
    StageResult,
)
from blift.storage import RunPath, run_path


@dataclass(frozen=True)
class StageSpec:
    """Everything a worker needs to rebuild the stage (picklable)."""

    stage_name: str
    config: dict[str, Any]
    config_hash: str
    run_dir: str
    inputs: dict[str, str]  # declared dataset -> folder name in the run
    outputs: dict[str, str]
    record_timeout_s: float | None = None  # watchdog: a record running longer is failed, its worker stopped


@dataclass(frozen=True)
class ShardTask:
    shard: str
    input_fingerprints: dict[str, str | None]
    retry_failed: bool = False


@dataclass
class ShardSummary:
    shard: str
    records_in: int = 0
    out_rows: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    reused_records: int = 0
    describe: str = ""
    languages: dict[str, Any] | None = None  # the stage's Languages, as plain JSON


_STAGE: Stage | None = None
_SPEC: StageSpec | None = None
_INIT_ERROR: BaseException | None = None  # raised by every task: an initializer error would break the pool


def build_stage(spec: StageSpec) -> Stage:
    cls = load_stage(spec.stage_name)
    return cls(cls.Config.model_validate(spec.config), run_path(spec.run_dir))


def init_worker(spec: StageSpec, parent_pid: int, threads: int | None = None) -> None:
    """Build and set up the stage once per worker. ``threads``: the worker's share of the cores,
    given to OpenMP-based libraries (torch, CTranslate2) unless the user set OMP_NUM_THREADS."""
    global _STAGE, _SPEC, _INIT_ERROR
    die_with_parent(parent_pid)
    if threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C does
    _SPEC = spec
    try:
        _STAGE = build_stage(spec)
        _STAGE.setup()
    except Exception as exc:  # noqa: BLE001 - reported through the first task, with its message
        _INIT_ERROR = exc


def run_task(task: ShardTask) -> ShardSummary:
    if _INIT_ERROR is not None:
        raise _INIT_ERROR
    assert _STAGE is not None and _SPEC is not None, "worker not initialised"
    return run_shard(_STAGE, _SPEC, task)


def input_path(run_dir: RunPath, spec: StageSpec, dataset: str, shard: str) -> RunPath:
    """Where one input shard of a stage lives (source stages read their own requests folder)."""
    if dataset == "requests":
        return layout.requests_dir(run_dir, spec.stage_name) / f"{shard}{layout.SHARD_SUFFIX}"
    return layout.shard_path(run_dir, spec.inputs[dataset], shard)


def read_inputs(stage: Stage, spec: StageSpec, shard: str) -> ShardInput:
    run_dir = run_path(spec.run_dir)
    loaded: dict[str, pa.Table] = {}
    for dataset, schema_name in stage.inputs.items():
        path = input_path(run_dir, spec, dataset, shard)
        loaded[dataset] = tables.read_shard(path, schema_name) if path.exists() else schemas.get(schema_name).empty()
    return ShardInput(shard_id=shard, tables=loaded, run_dir=run_dir)


def run_shard(stage: Stage, spec: StageSpec, task: ShardTask) -> ShardSummary:
    started = time.monotonic()
    shard_input = read_inputs(stage, spec, task.shard)
    if isinstance(stage, RecordStage):
        result, reused = _run_records(stage, spec, task, shard_input)
    else:
        result, reused = stage.process(shard_input), 0
    summary = _write_outputs(stage, spec, task, result)
    summary.seconds = round(time.monotonic() - started, 3)
    summary.reused_records = reused
    summary.describe = stage.describe()
    _write_manifest(stage, spec, task, summary)
    if isinstance(stage, RecordStage):
        Journal(layout.journal_path(run_path(spec.run_dir), spec.stage_name, task.shard)).remove()
    return summary


# ---------------------------------------------------------------- record stages


def _failure_entry(key: str, exc: BaseException, attempts: int = 1) -> dict[str, Any]:
    return {
        "key": key,
        "status": "error",
        "error": RecordFailure(
            record_key=key,
            error_class=classify(exc),
            error_type=getattr(exc, "error_type", type(exc).__name__),
            message=str(exc) or type(exc).__name__,
            attempts=attempts,
        ),
    }


def _previous_entries(stage: RecordStage, spec: StageSpec, task: ShardTask) -> dict[str, dict[str, Any]]:
    """For ``--retry-failed``: the shard's finished records rebuilt from its existing outputs,
    except those whose error was transient (those are redone)."""
    run_dir = run_path(spec.run_dir)
    entries: dict[str, dict[str, Any]] = {}
    for dataset, schema_name in stage.outputs.items():
        path = layout.shard_path(run_dir, spec.outputs[dataset], task.shard)
        if not path.exists():
            continue
        for row in tables.read_shard(path, schema_name).to_pylist():
            entry = entries.setdefault(row[stage.key_column], {"key": row[stage.key_column], "status": "ok", "out": {}})
            entry["out"].setdefault(dataset, []).append(row)
    dpath = layout.dropped_path(run_dir, spec.stage_name, task.shard)
    if dpath.exists() and stage.key_column == "uid":
        for row in tables.read_shard(dpath, "dropped").to_pylist():
            entries.setdefault(row["uid"], {"key": row["uid"], "status": "ok",
                                            "out": {}}).setdefault("dropped", []).append(row)
    epath = layout.errors_path(run_dir, spec.stage_name, task.shard)
    if epath.exists():
        for row in tables.read_shard(epath, "errors").to_pylist():
            if row["error_class"] == ErrorClass.TRANSIENT.value or row["record_key"] == "*":
                entries.pop(row["record_key"], None)
                continue
            failure = RecordFailure(row["record_key"], ErrorClass(row["error_class"]), row["error_type"],
                                    row["message"], row["attempts"])
            entries[row["record_key"]] = {"key": row["record_key"], "status": "error", "error": failure}
    return entries


WATCHDOG_EXIT = 70


class _Watchdog:
    """Stops the worker when a record runs past ``timeout_s``: the record is journaled as a
    transient ``watchdog`` error first, so the retried shard skips it and the job goes on
    (a hung socket or a wedged model call cannot be interrupted from Python otherwise)."""

    def __init__(self, journal: Journal, timeout_s: float | None, stage: str) -> None:
        self.journal, self.timeout_s, self.stage = journal, timeout_s, stage
        self.running: dict[str, float] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        if timeout_s:
            threading.Thread(target=self._watch, daemon=True, name="blift-watchdog").start()

    def begin(self, key: str) -> None:
        with self.lock:
            self.running[key] = time.monotonic()

    def end(self, key: str) -> None:
        with self.lock:
            self.running.pop(key, None)

    def _watch(self) -> None:
        assert self.timeout_s
        while not self.stop.wait(min(1.0, self.timeout_s / 4)):
            now = time.monotonic()
            with self.lock:
                stuck = [k for k, t0 in self.running.items() if now - t0 > self.timeout_s]
            if stuck:
                for key in stuck:
                    exc = TimeoutError(f"watchdog: record made no progress for {self.timeout_s:g} s; worker stopped")
                    self.journal.append(_failure_entry(key, exc) | {"watchdog": True})
                logging.getLogger("blift.runner").error("%s: records %s stuck for %g s; stopping this worker",
                                                        self.stage, stuck, self.timeout_s)
                os._exit(WATCHDOG_EXIT)


def _run_records(stage: RecordStage, spec: StageSpec, task: ShardTask,
                 shard_input: ShardInput) -> tuple[StageResult, int]:
    records = stage.records(shard_input)
    keys = [k for k, _ in records]
    if len(set(keys)) != len(keys):
        raise ValueError(f"stage {stage.name}: duplicate record keys in shard {task.shard}")
    journal = Journal(layout.journal_path(run_path(spec.run_dir), spec.stage_name, task.shard))
    done = journal.load()
    if task.retry_failed:
        for key, entry in _previous_entries(stage, spec, task).items():
            done.setdefault(key, entry)
    reused = sum(1 for k in keys if k in done)
    todo = [(k, p) for k, p in records if k not in done]

    watchdog = _Watchdog(journal, spec.record_timeout_s, stage.name)

    def one(item: tuple[str, Any]) -> None:
        key, payload = item
        watchdog.begin(key)
        try:
            out: RecordOutput = stage.process_record(key, payload)
            entry: dict[str, Any] = {"key": key, "status": "ok", "out": out.tables, "dropped": out.dropped,
                                     "counters": out.counters}
        except BliftError:
            raise  # bad credentials or config: every record would fail the same way; stop the run
        except Exception as exc:  # noqa: BLE001 - one bad record never kills the shard
            entry = _failure_entry(key, exc)
            if entry["error"].error_class is ErrorClass.PERMANENT and not hasattr(exc, "error_class"):
                entry["error"].message = f"{entry['error'].message}\n{traceback.format_exc(limit=3)}"
        watchdog.end(key)
        journal.append(entry)
        done[key] = entry

    threads = max(1, stage.threads())
    if threads == 1 or len(todo) <= 1:
        for item in todo:
            one(item)
    else:
        with ThreadPoolExecutor(threads, thread_name_prefix=f"blift-{stage.name}") as pool:
            for fut in [pool.submit(one, item) for item in todo]:
                fut.result()
    watchdog.stop.set()
    journal.close()

    out_rows: dict[str, list[dict[str, Any]]] = {d: [] for d in stage.outputs}
    dropped: list[dict[str, Any]] = []
    errors: list[RecordFailure] = []
    counters: Counter[str] = Counter()
    for key in keys:
        entry = done[key]
        if entry["status"] == "ok":
            for dataset, rows in entry.get("out", {}).items():
                out_rows[dataset].extend(rows)
            dropped.extend(entry.get("dropped") or [])
            counters.update(entry.get("counters") or {})
        else:
            errors.append(entry["error"])
    return StageResult(tables=out_rows, records_in=len(keys), dropped=dropped, errors=errors,
                       counters=dict(counters)), reused


# ---------------------------------------------------------------- outputs


def _write_outputs(stage: Stage, spec: StageSpec, task: ShardTask, result: StageResult) -> ShardSummary:
    run_dir = run_path(spec.run_dir)
    summary = ShardSummary(shard=task.shard, records_in=result.records_in, counters=dict(result.counters),
                           languages=asdict(result.languages) if result.languages is not None else None)
    unknown = set(result.tables) - set(stage.outputs)
    if unknown:
        raise ValueError(f"stage {stage.name} returned undeclared output(s) {sorted(unknown)}")
    for dataset, schema_name in stage.outputs.items():
        data = result.tables.get(dataset, [])
        path = layout.shard_path(run_dir, spec.outputs[dataset], task.shard)
        if isinstance(data, list):
            table = tables.write_rows(path, data, schema_name)
        else:
            table = tables.write_shard(path, data, schema_name)
        summary.out_rows[dataset] = table.num_rows
    dropped_rows = [{"stage": stage.name, **row} if "stage" not in row else row for row in result.dropped]
    tables.write_rows(layout.dropped_path(run_dir, stage.name, task.shard), dropped_rows, "dropped")
    summary.dropped = dict(Counter(row["reason"] for row in dropped_rows))
    error_rows: list[dict[str, Any]] = [
        {
            "stage": stage.name,
            "shard": task.shard,
            "record_key": f.record_key,
            "error_class": ErrorClass(f.error_class).value,
            "error_type": f.error_type,
            "message": f.message,
            "attempts": f.attempts,
        }
        for f in result.errors
    ]
    tables.write_rows(layout.errors_path(run_dir, stage.name, task.shard), error_rows, "errors")
    summary.errors = dict(Counter(row["error_class"] for row in error_rows))
    return summary


def output_files(stage: Stage | type[Stage], spec: StageSpec, shard: str) -> list[str]:
    """The files one shard of the stage writes (its outputs, dropped and errors), run-relative."""
    run_dir = run_path(spec.run_dir)
    paths = [layout.shard_path(run_dir, spec.outputs[d], shard) for d in stage.outputs]
    paths += [layout.dropped_path(run_dir, stage.name, shard), layout.errors_path(run_dir, stage.name, shard)]
    return [storage.relative(p, run_dir) for p in paths]


def _write_manifest(stage: Stage, spec: StageSpec, task: ShardTask, summary: ShardSummary) -> None:
    run_dir = run_path(spec.run_dir)
    write_manifest(
        layout.manifest_path(run_dir, spec.stage_name, task.shard),
        {
            "stage": spec.stage_name,
            "stage_version": stage.version,
            "config_hash": spec.config_hash,
            "shard": task.shard,
            "inputs": task.input_fingerprints,
            "output_files": output_files(stage, spec, task.shard),
            "summary": summary.__dict__,
        },
    )

