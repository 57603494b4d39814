"""``blift eval``: every checkpoint on behavior prediction and every content task, one results table.

For each checkpoint in the config, in order: load it (:func:`blift.train.models.load_model_and_processor`,
LoRA output folders included), build the collator training used, then

- **behavior**: the config's behavior records (the ``test`` split by default), ``task ==
  "behavior"`` ones only, at most ``max_records``: generate, parse, score (:mod:`blift.eval.behavior`);
- **tasks**: each task file (:mod:`blift.eval.tasks`), at most ``max_records`` items:
  multiple choice by option likelihood, free text by generation (:mod:`blift.eval.content`).

Records and task items are loaded once and shared by every checkpoint, so all columns of the
table are scored on the same items. A record or item that cannot be turned into a batch (its
media are unreadable, its prompt longer than ``max_length``) is skipped with its reason, counted
in ``skipped``; one bad record never stops the run.

Written to ``output_dir``: ``results.json`` + ``results.md`` (:func:`blift.eval.report.write_results`,
rewritten after each checkpoint so a long run shows its progress and a crash keeps what was
done) and ``predictions/<checkpoint>/<task>.jsonl`` (every generated answer / option score).
"""

from __future__ import annotations

import gc
import json
import logging
import re
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from blift.errors import BliftError, InvalidRecord
from blift.eval import behavior as beh
from blift.eval import content
from blift.eval.config import CheckpointRef, EvalConfig
from blift.eval.report import to_jsonable, write_results
from blift.eval.tasks import TaskItem, load_task
from blift.models import devices
from blift.train.data import Example, open_examples

log = logging.getLogger("blift.eval")

PRECISION = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _dtype(precision: str) -> Any:
    """auto: bf16 on a GPU that supports it, fp32 otherwise (CPU matmuls in bf16 are slow and
    change the scores)."""
    if precision != "auto":
        return PRECISION[precision]
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def _device() -> torch.device:
    return torch.device(devices.pick_device("auto"))


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "checkpoint"


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(to_jsonable(row), ensure_ascii=False) + "\n")
    tmp.replace(path)


def load_behavior_examples(config: EvalConfig, skipped: Counter[str]) -> list[Example]:
    """The behavior records to score: ``task == "behavior"`` rows of the source (every row when
    the source sets ``kind: behavior``), at most ``max_records``, in file order; unreadable ones
    are counted in ``skipped``. Only the ``task`` column is read to choose them, so content
    records' media are never decoded."""
    assert config.behavior is not None
    dataset = open_examples(config.behavior, num_frames=config.num_frames)
    wanted = [i for i, kind in enumerate(dataset.kinds()) if kind == "behavior"]  # no media decoded
    examples: list[Example] = []
    for i in wanted:
        if config.max_records is not None and len(examples) >= config.max_records:
            break
        try:
            example = dataset[i]
        except (InvalidRecord, OSError, ValueError) as exc:
            log.warning("behavior record %d skipped: %s", i, exc)
            skipped[f"unreadable: {type(exc).__name__}"] += 1
            continue
        if not example.targets:
            skipped["no targets"] += 1
            continue
        examples.append(example)
    log.info("behavior: %d records from %s (split %s)", len(examples),
             config.behavior.path or config.behavior.hub_id, config.behavior.split)
    return examples


def load_tasks(config: EvalConfig) -> list[tuple[str, list[TaskItem]]]:
    """Every task file of the config, validated up front (before any model is loaded)."""
    tasks = []
    names: set[str] = set()
    for path in config.tasks:
        name, items = load_task(Path(path), num_frames=config.num_frames, limit=config.max_records)
        if name in names:
            raise BliftError(f"{path}: task name {name!r} is already used by another task file; rename one")
        names.add(name)
        tasks.append((name, items))
        log.info("task %s: %d items from %s", name, len(items), path)
    return tasks


def evaluate_checkpoint(ref: CheckpointRef, config: EvalConfig, behavior_examples: list[Example] | None,
                        tasks: list[tuple[str, list[TaskItem]]]) -> dict[str, Any]:
    """All metrics of one checkpoint: ``{"behavior": {...}, "<task>": {...}, ...}``."""
    from blift.train.collator import VlmCollator
    from blift.train.models import load_model_and_processor

    started = time.monotonic()
    model, processor, model_type = load_model_and_processor(ref.path, model_type=ref.model_type,
                                                            dtype=_dtype(config.precision))
    model.to(_device()).eval()
    collator = VlmCollator(processor, model_type, max_length=config.max_length, num_frames=config.num_frames,
                           model_config=getattr(model, "config", None))
    out_dir = Path(config.output_dir) / "predictions" / _slug(ref.name)
    metrics: dict[str, Any] = {}
    try:
        if behavior_examples is not None:
            log.info("[%s] behavior: %d records", ref.name, len(behavior_examples))
            preds, skipped = beh.predict_behavior(model, collator, behavior_examples,
                                                  max_new_tokens=config.max_new_tokens, batch_size=config.batch_size)
            metrics["behavior"] = beh.behavior_metrics(preds)
            if skipped:
                metrics["behavior"]["skipped"] = dict(Counter(reason for _, reason in skipped))
            _write_jsonl(out_dir / "behavior.jsonl", [p.to_json() for p in preds]
                         + [{"id": rid, "skipped": reason} for rid, reason in skipped])
        for name, items in tasks:
            log.info("[%s] task %s: %d items", ref.name, name, len(items))
            for result in content.evaluate_task(model, collator, name, items, max_new_tokens=config.max_new_tokens,
                                                batch_size=config.batch_size, num_frames=config.num_frames):
                metrics[result.name] = result.metrics
                _write_jsonl(out_dir / f"{_slug(result.name)}.jsonl", result.predictions)
    finally:
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    log.info("[%s] done in %.1f s", ref.name, time.monotonic() - started)
    return metrics


def evaluate(config: EvalConfig) -> dict[str, Any]:
    """Score every checkpoint of ``config``; writes ``results.json`` / ``results.md`` to
    ``output_dir`` and returns the results mapping (``{"checkpoints": {name: metrics}, ...}``)."""
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    skipped: Counter[str] = Counter()
    tasks = load_tasks(config)
    behavior_examples = load_behavior_examples(config, skipped) if config.behavior is not None else None
    results: dict[str, Any] = {
        "checkpoints": {},
        "models": {ref.name: {"path": ref.path, "model_type": ref.model_type} for ref in config.checkpoints},
        "data": {"behavior_records": len(behavior_examples) if behavior_examples is not None else None,
                 "behavior_skipped_on_load": dict(skipped),
                 "tasks": {name: len(items) for name, items in tasks}},
        "config": config.model_dump(mode="json"),
        "seconds": {},
    }
    for i, ref in enumerate(config.checkpoints, start=1):
        log.info("checkpoint %d/%d: %s (%s)", i, len(config.checkpoints), ref.name, ref.path)
        started = time.monotonic()
        results["checkpoints"][ref.name] = evaluate_checkpoint(ref, config, behavior_examples, tasks)
        results["seconds"][ref.name] = round(time.monotonic() - started, 3)
        json_path, md_path = write_results(output, results)
    log.info("results: %s, %s", json_path, md_path)
    return results
