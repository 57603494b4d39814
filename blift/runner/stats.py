"""Run statistics: per stage counts merged from the shard manifests into ``stats.json``."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from rich.console import Console
from rich.table import Table

from blift import __version__
from blift.ids import now_utc
from blift.runner import layout
from blift.runner.manifest import read_manifests
from blift.storage import Listing, RunPath, is_remote, relative
from blift.tables import atomic_write_bytes


def stage_stats(run_dir: RunPath, stage: str, shards: list[str] | None = None) -> dict[str, Any]:
    """Merge the manifests of ``shards`` (all of the stage's shards when None)."""
    folder = layout.manifests_dir(run_dir, stage)
    names = shards if shards is not None else sorted(p.stem for p in folder.glob("*.json"))
    out: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    counters: Counter[str] = Counter()
    languages: list[dict[str, Any]] = []
    records_in = 0
    seconds = 0.0
    done = 0
    listing = Listing(run_dir, [relative(folder, run_dir)]) if is_remote(run_dir) else None
    for manifest in read_manifests([layout.manifest_path(run_dir, stage, shard) for shard in names], listing):
        if not manifest:
            continue
        summary = manifest["summary"]
        done += 1
        records_in += summary["records_in"]
        out.update(summary["out_rows"])
        dropped.update(summary["dropped"])
        errors.update(summary["errors"])
        counters.update(summary.get("counters", {}))
        if summary.get("languages"):
            languages.append(summary["languages"])
        seconds += summary["seconds"]
    stats = {
        "shards": len(names),
        "shards_done": done,
        "records_in": records_in,
        "out": dict(sorted(out.items())),
        "dropped": dict(sorted(dropped.items(), key=lambda kv: -kv[1])),
        "errors": dict(sorted(errors.items())),
        "counters": dict(sorted(counters.items())),
        "seconds": round(seconds, 3),
        "seconds_per_record": round(seconds / records_in, 6) if records_in else None,
    }
    merged = merge_languages(languages)
    if merged:  # only stages that record languages get the key
        stats["languages"] = merged
    return stats


def merge_languages(shards: list[dict[str, Any]]) -> dict[str, Any]:
    """The stage's languages over its shards: ``kept`` lists joined in order (one config gives
    one list), ``observed`` counts summed, most frequent first; a key only when a shard has it."""
    kept = list(dict.fromkeys(code for s in shards for code in s.get("kept") or []))
    observed: Counter[str] = Counter()
    for s in shards:
        observed.update(s.get("observed") or {})
    out: dict[str, Any] = {}
    if kept:
        out["kept"] = kept
    if observed:
        out["observed"] = dict(sorted(observed.items(), key=lambda kv: (-kv[1], kv[0])))
    return out


def write_stats(run_dir: RunPath, pipeline: str, stages: dict[str, dict[str, Any]],
                extra: dict[str, Any] | None = None) -> dict[str, Any]:
    stats = {
        "pipeline": pipeline,
        "blift_version": __version__,
        "written_at": now_utc().isoformat(),
        "stages": stages,
        **(extra or {}),
    }
    atomic_write_bytes(layout.stats_path(run_dir), json.dumps(stats, indent=2).encode())
    return stats


def read_stats(run_dir: RunPath) -> dict[str, Any]:
    path = layout.stats_path(run_dir)
    if path.exists():
        return json.loads(path.read_text())
    names = sorted(p.name for p in layout.manifests_dir(run_dir).glob("*") if p.is_dir())
    stages = {name: stage_stats(run_dir, name) for name in names}
    return {"pipeline": None, "stages": stages}


def print_stats(stats: dict[str, Any], console: Console | None = None) -> None:
    """A table of stages (in, out, dropped, errors, speed), then the drop reasons per stage."""
    console = console or Console()
    table = Table(title=f"blift run: {stats.get('pipeline') or '?'}")
    for col in ("stage", "shards", "in", "out", "dropped", "errors", "ms/record"):
        table.add_column(col, overflow="fold", justify="left" if col in ("stage", "out", "errors") else "right")
    reasons = Table(title="dropped by reason")
    for col in ("stage", "reason", "records"):
        reasons.add_column(col, justify="right" if col == "records" else "left")
    for name, st in stats["stages"].items():
        spr = st.get("seconds_per_record")
        table.add_row(
            name,
            f"{st['shards_done']}/{st['shards']}",
            str(st["records_in"]),
            "\n".join(f"{k}={v}" for k, v in st["out"].items()),
            str(sum(st["dropped"].values())),
            ", ".join(f"{k}={v}" for k, v in st["errors"].items()) or "-",
            f"{spr * 1000:.2f}" if spr else "-",
        )
        for reason, n in st["dropped"].items():
            reasons.add_row(name, reason, str(n))
    console.print(table)
    if reasons.row_count:
        console.print(reasons)
