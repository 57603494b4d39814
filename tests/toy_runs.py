"""Toy pipelines for the runner, fault and executor tests (a pytest plugin: see conftest.py).

The toy stages (``toy_stages.py``) stand in for a record stage, a pure stage and a model stage;
these helpers lay out their inputs, write their pipeline files, run them and compare outputs.
Take the ``toy_env`` fixture (``pytestmark = pytest.mark.usefixtures("toy_env")``) before
running a toy pipeline.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from blift import tables
from blift.pipeline import RunOptions, run_pipeline
from toy_stages import TOY_STAGES

TESTS = Path(__file__).resolve().parent

#: Four shards of five good records and one invalid one: the fault suite's standard input.
SHARDS = {f"part-{k}": [f"a{k}{i}" for i in range(5)] + [f"bad{k}"] for k in range(4)}


@pytest.fixture
def toy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The toy stages registered, reproducible timestamps, tests/ importable in workers."""
    monkeypatch.setenv("BLIFT_STAGES", TOY_STAGES)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1732406400")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))


def make_refs(run_dir: Path, shards: dict[str, list[str]]) -> None:
    """``item_refs`` shards holding the given item ids (an id's prefix picks the toy behaviour)."""
    for shard, ids in shards.items():
        rows = [{"uid": f"reddit:{i}", "platform": "reddit", "item_id": i, "request_id": "r", "rank": n, "url": None}
                for n, i in enumerate(ids)]
        tables.write_rows(run_dir / "item_refs" / f"{shard}.parquet", rows, "item_refs")


def write_toy_pipeline(path: Path, marker_dir: Path, suffix: str = "", threads: int = 1) -> Path:
    """toy.fetch (a record stage) then toy.filter (a pure stage)."""
    cfg = {"marker_dir": str(marker_dir), "suffix": suffix, "threads": threads}
    path.write_text(yaml.safe_dump({"name": "toy", "stages": [
        {"stage": "toy.fetch", "config": cfg},
        {"stage": "toy.filter", "config": {"marker_dir": str(marker_dir)}},
    ]}))
    return path


def write_model_pipeline(path: Path, markers: Path, *, require_gpu: bool = False) -> Path:
    """toy.fetch, toy.filter, then toy.model (a "model" stage with resources="gpu")."""
    path.write_text(yaml.safe_dump({"name": "toy", "stages": [
        {"stage": "toy.fetch", "config": {"marker_dir": str(markers)}},
        {"stage": "toy.filter", "config": {"marker_dir": str(markers)}},
        {"stage": "toy.model", "config": {"marker_dir": str(markers), "require_gpu": require_gpu},
         "inputs": {"items": "items_clean"}},
    ]}))
    return path


def calls(marker_dir: Path) -> Counter[str]:
    """How often each record key was processed (toy.fetch logs every call)."""
    log = marker_dir / "calls.log"
    return Counter(log.read_text().split()) if log.exists() else Counter()


def digests(run_dir: Path) -> dict[str, str]:
    """Every data file of a run (shards, dropped, errors) by relative path; manifests hold
    timings, so they are left out."""
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*.parquet")) if ".blift" not in p.parts}


def prepare(tmp_path: Path, name: str, shards: dict[str, list[str]] = SHARDS,
            markers: tuple[str, ...] = ()) -> tuple[Path, Path, Path]:
    """(run folder with item_refs, marker folder with ``markers`` touched, model pipeline file)."""
    run_dir, marker_dir = tmp_path / name, tmp_path / f"{name}-m"
    marker_dir.mkdir()
    make_refs(run_dir, shards)
    for marker in markers:
        (marker_dir / marker).touch()
    return run_dir, marker_dir, write_model_pipeline(tmp_path / f"{name}.yaml", marker_dir)


def run(tmp_path: Path, name: str, executor: tuple[str, str | None], *, workers: int = 2,
        shards: dict[str, list[str]] = SHARDS, markers: tuple[str, ...] = ()) -> tuple[Path, Path, Any]:
    """The model pipeline on ``executor`` (name, Ray address or None): (run folder, markers, report)."""
    run_dir, marker_dir, pipe = prepare(tmp_path, name, shards, markers)
    report = run_pipeline(pipe, RunOptions(out=run_dir, workers=workers, progress=False,
                                           executor=executor[0], ray_address=executor[1]))
    return run_dir, marker_dir, report


@pytest.fixture
def reference(tmp_path: Path, toy_env: None) -> Path:
    """The fault-free output of the model pipeline: local executor, one worker."""
    run_dir, _, report = run(tmp_path, "reference", ("local", None), workers=1)
    assert not report.failed
    return run_dir


def kill_9_mid_run(proc: subprocess.Popen, started: Callable[[], bool]) -> None:
    """Once ``started()`` (a first output is there) and a moment later, so the kill lands
    mid-shard: ``kill -9`` of the driver ``proc``; its local worker processes must die with it."""
    deadline = time.monotonic() + 120
    while not started() and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else proc.returncode
        time.sleep(0.05)
    time.sleep(0.3)  # let more records start
    children = psutil.Process(proc.pid).children(recursive=True)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    _, alive = psutil.wait_procs(children, timeout=15)
    assert not alive, f"processes outlived the killed driver: {alive}"
