"""Where things live in a run folder. One place, so every part agrees."""

from __future__ import annotations

from pathlib import Path

SHARD_SUFFIX = ".parquet"


def dataset_dir(run_dir: Path, dataset: str) -> Path:
    return run_dir / dataset


def shard_path(run_dir: Path, dataset: str, shard: str) -> Path:
    return run_dir / dataset / f"{shard}{SHARD_SUFFIX}"


def requests_dir(run_dir: Path, stage: str) -> Path:
    """Source stages each get their own requests folder (two collectors may share a run)."""
    return run_dir / "requests" / stage


def dropped_path(run_dir: Path, stage: str, shard: str) -> Path:
    return run_dir / "dropped" / stage / f"{shard}{SHARD_SUFFIX}"


def errors_path(run_dir: Path, stage: str, shard: str) -> Path:
    return run_dir / "errors" / stage / f"{shard}{SHARD_SUFFIX}"


def manifest_path(run_dir: Path, stage: str, shard: str) -> Path:
    return run_dir / "_blift" / "manifests" / stage / f"{shard}.json"


def manifests_dir(run_dir: Path, stage: str | None = None) -> Path:
    base = run_dir / "_blift" / "manifests"
    return base / stage if stage else base


def journal_path(run_dir: Path, stage: str, shard: str) -> Path:
    return run_dir / "_blift" / "journal" / stage / f"{shard}.journal"


def stats_path(run_dir: Path) -> Path:
    return run_dir / "stats.json"


def shard_ids(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(SHARD_SUFFIX)] for p in folder.glob(f"*{SHARD_SUFFIX}") if not p.name.startswith("."))
