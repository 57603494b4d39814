"""Shard manifests: the commit record of one finished shard of one stage.

A manifest is written last, after the shard's outputs were renamed into place. It records what
went in (a fingerprint of each input shard), which stage version and config hash produced it,
and what came out (rows, counts by reason and class). A rerun skips a shard whose manifest
matches; a changed config, stage version or input, or an output the stage gained, redoes it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from blift import storage
from blift.storage import RunPath
from blift.tables import atomic_write_bytes


def write_manifest(path: RunPath, manifest: dict[str, Any]) -> None:
    atomic_write_bytes(path, json.dumps(manifest, indent=1, sort_keys=True).encode())


def read_manifest(path: RunPath) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_manifests(paths: list[RunPath], listing: storage.Listing | None = None) -> list[dict[str, Any] | None]:
    """Many manifests at once (concurrent GETs on an object store through ``listing``)."""
    if listing is None:
        return [read_manifest(p) for p in paths]
    out: list[dict[str, Any] | None] = []
    for text in listing.read_texts(paths):
        try:
            out.append(json.loads(text) if text is not None else None)
        except ValueError:
            out.append(None)
    return out


def matches(
    manifest: dict[str, Any] | None,
    *,
    run_dir: RunPath,
    stage_version: int,
    config_hash: str,
    inputs: dict[str, str | None],
    outputs: Sequence[str] = (),
    listing: storage.Listing | None = None,
) -> bool:
    """True when the shard was produced by this stage version and config from these inputs,
    its manifest lists every file in ``outputs`` (what the stage writes now: a stage that gained
    an output redoes the shards written before it had it, without a version bump that would
    call its unchanged outputs changed) and every output it lists is still there (looked up in
    ``listing`` when given)."""
    if not manifest:
        return False
    if manifest.get("stage_version") != stage_version or manifest.get("config_hash") != config_hash:
        return False
    if manifest.get("inputs") != inputs:
        return False
    listed = manifest.get("output_files", [])
    if not set(outputs) <= set(listed):
        return False
    exists = listing.exists if listing is not None else (lambda path: path.exists())
    return all(exists(run_dir / p) for p in listed)
