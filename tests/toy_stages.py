"""Small stages that exercise the runner: record failures of each class, flaky and dying records."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

from blift.errors import CredentialError, InvalidRecord, TransientError
from blift.ids import now_utc
from blift.stage import (
    RecordOutput,
    RecordStage,
    ShardInput,
    Stage,
    StageConfig,
    StageResult,
)


class ToyConfig(StageConfig):
    suffix: str = ""
    marker_dir: str = ""  # files here switch behaviours on/off between runs
    threads: int = 1


def _item(uid: str, title: str) -> dict[str, Any]:
    return {"uid": uid, "platform": "reddit", "item_id": uid.split(":")[1], "source": "api", "title": title,
            "collected_at": now_utc()}


class ToyFetch(RecordStage):
    """item_refs -> items. Record behaviour is chosen by the item id:
    ``bad*`` invalid; ``flaky*`` transient until marker ``heal`` exists; ``die*`` kills its worker
    process until marker ``die-done`` exists. Every processed key is appended to ``calls.log``."""

    name = "toy.fetch"
    inputs = {"item_refs": "item_refs"}
    outputs = {"items": "items"}
    Config = ToyConfig

    def records(self, shard: ShardInput) -> list[tuple[str, Any]]:
        return [(r["uid"], r) for r in shard.rows("item_refs")]

    def process_record(self, key: str, payload: Any) -> RecordOutput:
        markers = Path(self.config.marker_dir)
        with open(markers / "calls.log", "a") as fh:
            fh.write(key + "\n")
        item_id = payload["item_id"]
        time.sleep(float(os.environ.get("TOY_SLEEP", "0")))
        if item_id.startswith("hang"):
            time.sleep(3600)
        if item_id.startswith("cred"):
            raise CredentialError("set REDDIT_CLIENT_ID and REDDIT_CLIENT_SECRET")
        if item_id.startswith("bad"):
            raise InvalidRecord(f"item {key}: field 'title': malformed")
        if item_id.startswith("flaky") and not (markers / "heal").exists():
            raise TransientError(f"item {key}: server said 503")
        if item_id.startswith("die") and not (markers / "die-done").exists():
            (markers / "die-done").touch()
            os._exit(9)
        return RecordOutput(tables={"items": [_item(key, f"title {item_id}{self.config.suffix}")]},
                            counters={"fetched": 1})


class ToyFilter(Stage):
    """items -> items_clean, dropping titles that end in 7 (a pure stage with a drop reason)."""

    name = "toy.filter"
    inputs = {"items": "items"}
    outputs = {"items_clean": "items"}
    Config = ToyConfig

    def process(self, shard: ShardInput) -> StageResult:
        rows = shard.rows("items")
        kept = [r for r in rows if not r["item_id"].endswith("7")]
        dropped = [{"table": "items", "uid": r["uid"], "record_id": r["uid"], "reason": "ends_in_7", "detail": None}
                   for r in rows if r["item_id"].endswith("7")]
        return StageResult(tables={"items_clean": kept}, records_in=len(rows), dropped=dropped)


class ModelConfig(StageConfig):
    marker_dir: str = ""
    require_gpu: bool = False


class ToyModel(Stage):
    """items -> captions (as items): a "model stage". setup() leaves a marker per call (so tests
    count model loads per process); markers ``fail-once`` / ``die-once`` make the next shard raise /
    kill its worker process, exactly once across all workers; marker ``stall`` makes every shard
    sleep for a minute. ``TOY_SLEEP`` slows each shard."""

    name = "toy.model"
    inputs = {"items": "items"}
    outputs = {"captions": "items"}
    resources = "gpu"
    Config = ModelConfig

    def setup(self) -> None:
        markers = Path(self.config.marker_dir)
        (markers / f"setup-{os.getpid()}-{uuid.uuid4().hex[:8]}").write_text(
            os.environ.get("CUDA_VISIBLE_DEVICES", "unset"))

    def process(self, shard: ShardInput) -> StageResult:
        markers = Path(self.config.marker_dir)
        for name in ("fail-once", "die-once"):
            try:
                (markers / name).unlink()  # atomic: only one shard wins
            except FileNotFoundError:
                continue
            if name == "fail-once":
                raise RuntimeError("injected failure")
            os._exit(3)
        time.sleep(60 if (markers / "stall").exists() else float(os.environ.get("TOY_SLEEP", "0")))
        rows = [{**r, "title": r["title"].upper()} for r in shard.rows("items")]
        return StageResult(tables={"captions": rows}, records_in=len(rows))


TOY_STAGES = "toy.fetch=toy_stages:ToyFetch;toy.filter=toy_stages:ToyFilter;toy.model=toy_stages:ToyModel"
