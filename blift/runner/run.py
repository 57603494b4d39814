"""Run a loaded pipeline's stages (or one stage) over a run folder, resumably.

For each stage: list its input shards, skip those whose manifest matches (same stage version,
config hash and input fingerprints), run the rest on the executor, then merge the manifests
into ``stats.json``. Nothing here knows what a stage does.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from blift import storage, tables
from blift.config import (
    Pipeline,
    StageEntry,
    stage_config_hash,
    substitute,
    validate_stage_config,
)
from blift.errors import ConfigError
from blift.registry import load_stage
from blift.runner import layout
from blift.runner.local import LocalExecutor, ShardFailure
from blift.runner.manifest import matches, read_manifest, read_manifests, write_manifest
from blift.runner.progress import Reporter, make_reporter
from blift.runner.stats import stage_stats, write_stats
from blift.runner.worker import (
    ShardSummary,
    ShardTask,
    StageSpec,
    build_stage,
    input_path,
    output_files,
)
from blift.stage import Stage, StreamStage
from blift.storage import RunPath, run_path

log = logging.getLogger("blift.runner")

STREAM_SHARD = "_stream"


@dataclass
class RunOptions:
    out: str | Path | None = None  # a path, or an object store URL (s3://bucket/run)
    workers: int | None = None
    dry_run: bool = False
    retry_failed: bool = False
    progress: bool | None = None  # None: rich bars on a TTY, log lines otherwise
    max_attempts: int = 3
    record_timeout_s: float | None = 900.0  # watchdog for record stages; None: off
    executor: str | None = None  # local | ray; None: the pipeline's choice, else local
    ray_address: str | None = None  # a Ray cluster to join (else RAY_ADDRESS, else a local Ray)
    ray_wait_timeout_s: float = 3600.0  # Ray: end the run when no shard finishes for this long
    forward_env: tuple[str, ...] | None = None  # Ray: env prefixes the stages declare (None: the stage's own)


@dataclass
class StagePlan:
    stage: str
    shards: list[str]
    todo: list[ShardTask]
    skipped: list[str]
    waiting: bool = False  # inputs not produced yet (dry run of a fresh pipeline)


@dataclass
class RunReport:
    run_dir: RunPath
    stats: dict[str, Any]
    plans: list[StagePlan] = field(default_factory=list)
    failed: list[tuple[str, ShardFailure]] = field(default_factory=list)
    pipeline: Pipeline | None = None  # the pipeline as read (set by blift.pipeline.run_pipeline)


def _write_requests(stage_cls: type[Stage], entry: StageEntry, run_dir: RunPath, base: Path) -> list[str]:
    """One shard per request, named by the request's content hash (same request, same shard).
    A request row whose spec changed under the same id (a source that fingerprints what it will
    read, such as a folder's listing) is rewritten, so its shard's input changes and is redone."""
    rows = stage_cls.expand_requests(stage_cls.resolve_requests(entry.requests or [], base))
    folder = layout.requests_dir(run_dir, stage_cls.name)
    shards = []
    for row in rows:
        path = folder / f"{row['request_id']}{layout.SHARD_SUFFIX}"
        old = tables.read_shard(path, "requests").to_pylist() if path.exists() else []
        if [(r["kind"], r["spec"]) for r in old] != [(row["kind"], row["spec"])]:
            tables.write_rows(path, [row], "requests")
        shards.append(row["request_id"])
    return sorted(set(shards))


def stage_listing(stage_cls: type[Stage], spec: StageSpec) -> storage.Listing:
    """One look at every folder a stage's plan reads: its inputs, outputs, manifests."""
    run_dir = run_path(spec.run_dir)
    folders = [storage.relative(layout.requests_dir(run_dir, spec.stage_name), run_dir) if d == "requests"
               else spec.inputs[d] for d in stage_cls.inputs]
    folders += [spec.outputs[d] for d in stage_cls.outputs]
    folders += [f"{side}/{spec.stage_name}" for side in ("dropped", "errors")]
    folders.append(storage.relative(layout.manifests_dir(run_dir, spec.stage_name), run_dir))
    return storage.Listing(run_dir, folders)


def plan_stage(stage_cls: type[Stage], spec: StageSpec, shards: list[str], retry_failed: bool) -> StagePlan:
    run_dir = run_path(spec.run_dir)
    todo, skipped = [], []
    listing = stage_listing(stage_cls, spec)
    manifests = read_manifests([layout.manifest_path(run_dir, spec.stage_name, s) for s in shards], listing)
    for shard, manifest in zip(shards, manifests):
        fps = {d: listing.fingerprint(input_path(run_dir, spec, d, shard)) for d in stage_cls.inputs}
        ok = matches(manifest, run_dir=run_dir, stage_version=stage_cls.version, config_hash=spec.config_hash,
                     inputs=fps, outputs=output_files(stage_cls, spec, shard), listing=listing)
        if ok and retry_failed and manifest and manifest["summary"]["errors"].get("transient"):
            todo.append(ShardTask(shard, fps, retry_failed=True))
        elif ok:
            skipped.append(shard)
        else:
            todo.append(ShardTask(shard, fps))
    return StagePlan(stage_cls.name, shards, todo, skipped)


def run_stage(entry: StageEntry, run_dir: RunPath, base: Path, variables: dict[str, str], opts: RunOptions,
              reporter: Reporter, where: str) -> tuple[StagePlan, dict[str, Any], list[ShardFailure]]:
    stage_cls = load_stage(entry.stage)
    config = validate_stage_config(stage_cls, substitute(entry.config, variables, where), f"{where} config")
    spec = StageSpec(
        stage_name=stage_cls.name,
        config=config.model_dump(mode="json"),
        config_hash=stage_config_hash(stage_cls, config),
        run_dir=str(run_dir),  # run_path() turns it back into the same folder in the worker
        inputs={d: entry.inputs.get(d, d) for d in stage_cls.inputs},
        outputs={d: entry.outputs.get(d, d) for d in stage_cls.outputs},
        record_timeout_s=entry.record_timeout_s or opts.record_timeout_s,
    )
    primary = next(iter(stage_cls.inputs))
    if primary == "requests":
        shards = _write_requests(stage_cls, entry, run_dir, base)
    else:
        shards = layout.shard_ids(layout.dataset_dir(run_dir, spec.inputs[primary]))
    if issubclass(stage_cls, StreamStage):
        return _run_stream(stage_cls, spec, shards, opts, reporter)
    plan = plan_stage(stage_cls, spec, shards, opts.retry_failed)
    if opts.dry_run:
        plan.waiting = not shards
        return plan, {}, []
    failures: list[ShardFailure] = []
    reporter.stage_start(stage_cls.name, len(plan.todo), len(plan.skipped))

    def failed(f: ShardFailure) -> None:
        failures.append(f)
        reporter.shard_failed(stage_cls.name, f)
        tables.write_rows(layout.errors_path(run_dir, stage_cls.name, f.shard), [{
            "stage": stage_cls.name, "shard": f.shard, "record_key": "*", "error_class": "transient",
            "error_type": f.error_type, "message": f.message, "attempts": f.attempts}], "errors")

    described: list[str] = []

    def done(summary: ShardSummary) -> None:
        # Workers log nothing themselves; the first summary says which backend/model/device the
        # stage's workers set up (after setup(), so "cuda" means a GPU was really found).
        if summary.describe and not described:
            described.append(summary.describe)
            log.info("stage %s: %s", stage_cls.name, summary.describe)
        reporter.shard_done(stage_cls.name, summary)

    workers = entry.workers or opts.workers
    if (opts.executor or "local") == "ray":
        from blift.runner.ray_executor import RayExecutor

        forward = stage_cls.forward_env if opts.forward_env is None else opts.forward_env
        RayExecutor(workers, max_attempts=opts.max_attempts, address=opts.ray_address,
                    wait_timeout_s=opts.ray_wait_timeout_s, forward_env=forward).run(
            spec, plan.todo, done, failed, resources=stage_cls.resources)
    else:
        LocalExecutor(workers, max_attempts=opts.max_attempts).run(spec, plan.todo, done, failed)
    stats = stage_stats(run_dir, stage_cls.name, shards)
    stats["shards_failed"] = len(failures)
    settings = stage_cls.settings(config)
    if settings:  # what decided the drops, for the card
        stats["settings"] = settings
    reporter.stage_end(stage_cls.name, stats)
    return plan, stats, failures


def _run_stream(stage_cls: type[StreamStage], spec: StageSpec, shards: list[str], opts: RunOptions,
                reporter: Reporter) -> tuple[StagePlan, dict[str, Any], list[ShardFailure]]:
    """A stream stage runs as one task over all its requests (it buckets its own output)."""
    from blift.runner.bucket_sink import stream_into_buckets

    run_dir = run_path(spec.run_dir)
    if any(spec.outputs[d] != d for d in spec.outputs):
        raise ConfigError(f"stage {stage_cls.name}: stream stages do not support renamed outputs")
    listing = stage_listing(stage_cls, spec)
    fps = {s: listing.fingerprint(input_path(run_dir, spec, "requests", s)) for s in shards}
    manifest = read_manifest(layout.manifest_path(run_dir, spec.stage_name, STREAM_SHARD))
    done = matches(manifest, run_dir=run_dir, stage_version=stage_cls.version, config_hash=spec.config_hash,
                   inputs=fps, listing=listing)
    plan = StagePlan(stage_cls.name, [STREAM_SHARD], [] if done else [ShardTask(STREAM_SHARD, fps)],
                     [STREAM_SHARD] if done else [])
    if opts.dry_run or done:
        if done:
            reporter.stage_start(stage_cls.name, 0, 1)
        return plan, ({} if opts.dry_run else stage_stats(run_dir, stage_cls.name, [STREAM_SHARD])), []
    stage = build_stage(spec)
    assert isinstance(stage, StreamStage)
    stage.setup()
    reporter.stage_start(stage_cls.name, 1, 0, stage.describe())
    requests = [row for s in shards
                for row in tables.read_shard(input_path(run_dir, spec, "requests", s), "requests").to_pylist()]
    t0 = time.monotonic()
    counters, result = stream_into_buckets(stage, requests, run_dir)
    summary = ShardSummary(
        shard=STREAM_SHARD,
        records_in=int(counters.get("in", 0)),
        out_rows={d: sum(v["rows"] for v in result["datasets"][d].values()) for d in stage_cls.outputs},
        dropped=dict(result.get("dropped", {})),
        errors=dict(result.get("errors", {})),
        counters={k: int(v) for k, v in counters.items() if k != "in"},
        seconds=round(time.monotonic() - t0, 3),
        describe=stage.describe(),
    )
    files = [v["file"] for d in result["datasets"].values() for v in d.values()]
    write_manifest(layout.manifest_path(run_dir, spec.stage_name, STREAM_SHARD), {
        "stage": spec.stage_name, "stage_version": stage_cls.version, "config_hash": spec.config_hash,
        "shard": STREAM_SHARD, "inputs": fps, "output_files": files, "summary": summary.__dict__})
    reporter.shard_done(stage_cls.name, summary)
    stats = stage_stats(run_dir, stage_cls.name, [STREAM_SHARD])
    reporter.stage_end(stage_cls.name, stats)
    return plan, stats, []


def run_stages(pipeline: Pipeline, source: Path | str, base: Path, variables: dict[str, str], opts: RunOptions,
               *, only: list[str] | None = None) -> RunReport:
    """Run a loaded pipeline's stages in order (``only``: just these) and write ``stats.json``.

    ``source`` names the pipeline in messages, ``base`` is the folder its relative paths start
    from, ``variables`` fill ``${...}`` in stage configs (the caller owns whatever provides them).
    """
    if opts.executor is None:  # the command line wins over the pipeline file
        opts = replace(opts, executor=pipeline.executor, ray_address=opts.ray_address or pipeline.ray_address)
    run_dir = run_path(opts.out or pipeline.out or f"runs/{pipeline.name}")
    if storage.is_remote(run_dir):
        log.info("run folder %s (local working files in %s)", run_dir, storage.local_dir(run_dir))
    else:
        run_dir = run_dir.resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
    entries = [(i, e) for i, e in enumerate(pipeline.stages) if not only or e.stage in only]
    if opts.forward_env is None:  # what Ray workers need: every stage of this run declares its own
        opts = replace(opts, forward_env=tuple(sorted({p for _, e in entries
                                                       for p in load_stage(e.stage).forward_env})))
    reporter = make_reporter(opts.progress) if not opts.dry_run else Reporter()
    report = RunReport(run_dir=run_dir, stats={})
    stage_stats_all: dict[str, dict[str, Any]] = {}
    t0 = time.monotonic()
    try:
        for i, entry in entries:
            where = f"{source}: stages[{i}] ({entry.stage})"
            plan, stats, failures = run_stage(entry, run_dir, base, variables, opts, reporter, where)
            report.plans.append(plan)
            report.failed += [(entry.stage, f) for f in failures]
            if stats:
                stage_stats_all[entry.stage] = stats
    finally:
        reporter.close()
    if not opts.dry_run:
        report.stats = write_stats(run_dir, pipeline.name, stage_stats_all,
                                   {"wall_seconds": round(time.monotonic() - t0, 3),
                                    "failed_shards": len(report.failed)})
    return report
