"""Where things live in a run folder. One place, so every part agrees."""

from __future__ import annotations

from pathlib import Path

from blift.storage import RunPath, local_dir

SHARD_SUFFIX = ".parquet"


def dataset_dir(run_dir: RunPath, dataset: str) -> RunPath:
    return run_dir / dataset


def shard_path(run_dir: RunPath, dataset: str, shard: str) -> RunPath:
    return run_dir / dataset / f"{shard}{SHARD_SUFFIX}"


def requests_dir(run_dir: RunPath, stage: str) -> RunPath:
    """Source stages each get their own requests folder (two collectors may share a run)."""
    return run_dir / "requests" / stage


def dropped_path(run_dir: RunPath, stage: str, shard: str) -> RunPath:
    return run_dir / "dropped" / stage / f"{shard}{SHARD_SUFFIX}"


def errors_path(run_dir: RunPath, stage: str, shard: str) -> RunPath:
    return run_dir / "errors" / stage / f"{shard}{SHARD_SUFFIX}"


def manifest_path(run_dir: RunPath, stage: str, shard: str) -> RunPath:
    return run_dir / "_blift" / "manifests" / stage / f"{shard}.json"


def manifests_dir(run_dir: RunPath, stage: str | None = None) -> RunPath:
    base = run_dir / "_blift" / "manifests"
    return base / stage if stage else base


def journal_path(run_dir: RunPath, stage: str, shard: str) -> Path:
    """Journals are appended record by record, so they stay on the worker's local disk (in the
    run folder when it is local; in its scratch folder when the run folder is a URL, so a rerun on
    another machine redoes the records of an unfinished shard, never a finished shard)."""
    return local_dir(run_dir) / "_blift" / "journal" / stage / f"{shard}.journal"


def stats_path(run_dir: RunPath) -> RunPath:
    return run_dir / "stats.json"


def shard_ids(folder: RunPath) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(SHARD_SUFFIX)] for p in folder.glob(f"*{SHARD_SUFFIX}") if not p.name.startswith("."))
