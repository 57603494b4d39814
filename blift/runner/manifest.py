"""Shard manifests: the commit record of one finished shard of one stage.

A manifest is written last, after the shard's outputs were renamed into place. It records what
went in (a fingerprint of each input shard), which stage version and config hash produced it,
and what came out (rows, counts by reason and class). A rerun skips a shard whose manifest
matches; a changed config, stage version or input redoes it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from blift.tables import atomic_write_bytes


def file_fingerprint(path: Path) -> str | None:
    if not path.exists():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:32]


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    atomic_write_bytes(path, json.dumps(manifest, indent=1, sort_keys=True).encode())


def read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def matches(
    manifest: dict[str, Any] | None,
    *,
    run_dir: Path,
    stage_version: int,
    config_hash: str,
    inputs: dict[str, str | None],
) -> bool:
    """True when the shard was produced by this stage version and config from these inputs
    and every output it lists is still on disk."""
    if not manifest:
        return False
    if manifest.get("stage_version") != stage_version or manifest.get("config_hash") != config_hash:
        return False
    if manifest.get("inputs") != inputs:
        return False
    return all((run_dir / p).exists() for p in manifest.get("output_files", []))
