"""Fault tolerance, the same suite for both executors (``local`` and ``ray``).

Each test runs a toy pipeline (a record stage, a pure stage, a "model" stage with resources="gpu")
or the real ``media.download`` stage, injects a fault, and checks what a data engineer relies on:

* the output equals a fault-free reference run (written by the local executor with one worker)
  byte for byte;
* the model is set up once per worker process, however many shards that worker runs;
* injected exceptions and worker deaths (``os._exit``) are retried until every shard is done;
* ``kill -9`` of the driver, then a rerun: identical output, no finished shard written again, no
  process of the killed run left running;
* a record stuck on a media server that never answers is stopped by the watchdog, recorded in
  ``errors``, and the job goes on.

The Ray runs use the session's Ray head on loopback (tests/ray_cluster.py: 4 CPUs, 2 logical GPUs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from blift import schemas, tables
from blift.errors import BliftError
from blift.pipeline import RunOptions, run_pipeline
from servers.media_server import MediaServer, Reply
from toy_runs import SHARDS, calls, digests, kill_9_mid_run, prepare, run

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("toy_env")]


@pytest.fixture(params=["local", "ray"])
def executor(request) -> tuple[str, str | None]:
    """(executor name, Ray address or None)."""
    if request.param == "ray":
        return "ray", request.getfixturevalue("ray_head")
    return "local", None


def setups(markers: Path) -> list[int]:
    """The process id of every model setup() call."""
    return [int(p.name.split("-")[1]) for p in markers.glob("setup-*")]


def test_output_digests_match_the_reference(tmp_path, executor, reference):
    run_dir, _, report = run(tmp_path, "run", executor)
    assert not report.failed
    d = digests(run_dir)
    assert {k.split("/")[0] for k in d} >= {"items", "items_clean", "captions", "dropped", "errors"}
    assert d == digests(reference)


def test_model_is_set_up_once_per_worker_process(tmp_path, executor):
    run_dir, markers, report = run(tmp_path, "run", executor)
    assert not report.failed
    pids = setups(markers)
    model_shards = len(list((run_dir / "captions").glob("*.parquet")))
    assert model_shards == len(SHARDS)
    assert 1 <= len(pids) <= 2 < model_shards  # 2 workers for 4 shards: each loads the model once
    assert len(set(pids)) == len(pids), f"a process set the model up twice: {pids}"


def test_injected_exceptions_and_worker_deaths_are_retried_to_completion(tmp_path, executor, reference):
    # die1 kills the record stage's worker once; fail-once / die-once hit the model stage.
    shards = {k: [*ids, "die1"] if k == "part-0" else ids for k, ids in SHARDS.items()}
    ref_dir, _, ref = run(tmp_path, "ref-die", ("local", None), workers=1, shards=shards,
                          markers=("die-done",))  # die-done: die1 succeeds the first time
    assert not ref.failed
    run_dir, markers, report = run(tmp_path, "run", executor, shards=shards, markers=("fail-once", "die-once"))
    assert not report.failed
    assert not (markers / "fail-once").exists() and not (markers / "die-once").exists()  # both were injected
    c = calls(markers)
    assert c["reddit:die1"] == 2  # the record whose process died is redone; journaled records are not...
    # ...except, locally, the one record the other worker had in flight when the pool broke.
    assert sum(n - 1 for key, n in c.items() if key != "reddit:die1") <= (1 if executor[0] == "local" else 0), c
    assert len(setups(markers)) >= 2  # the dead model worker was replaced and set up again
    assert digests(run_dir) == digests(ref_dir)


def test_retry_failed_redoes_only_transient_errors(tmp_path, executor):
    shards = {"part-0": ["ok1", "bad1", "flaky1", "ok2"], "part-1": ["ok3", "flaky2"]}
    run_dir, markers, report = run(tmp_path, "run", executor, shards=shards)
    assert report.stats["stages"]["toy.fetch"]["errors"] == {"invalid": 1, "transient": 2}
    pipe = tmp_path / "run.yaml"
    options = dict(out=run_dir, workers=2, progress=False, executor=executor[0], ray_address=executor[1])
    run_pipeline(pipe, RunOptions(**options))  # a plain rerun redoes nothing
    assert sum(calls(markers).values()) == 6
    (markers / "heal").touch()
    report = run_pipeline(pipe, RunOptions(**options, retry_failed=True))
    c = calls(markers)
    assert c["reddit:flaky1"] == c["reddit:flaky2"] == 2 and c["reddit:bad1"] == c["reddit:ok1"] == 1
    assert report.stats["stages"]["toy.fetch"]["errors"] == {"invalid": 1}
    ids = tables.read_dataset(run_dir / "items", "items").column("item_id").to_pylist()
    assert ids == ["ok1", "flaky1", "ok2", "ok3", "flaky2"]  # record order kept


def test_ray_run_with_no_progress_ends_with_an_error_and_stops_its_actors(tmp_path, ray_head):
    run_dir, markers, pipe = prepare(tmp_path, "run", {"part-0": ["a1"], "part-1": ["b1"]}, markers=("stall",))
    with pytest.raises(BliftError, match="no shard finished on the Ray cluster for 3 s"):
        run_pipeline(pipe, RunOptions(out=run_dir, workers=2, progress=False, executor="ray", ray_address=ray_head,
                                      ray_wait_timeout_s=3))
    deadline = time.monotonic() + 30
    while _our_ray_workers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _our_ray_workers(), "the stalled actors were left running"
    assert list((run_dir / "items_clean").glob("*.parquet")) and not (run_dir / "captions").exists()


def _blift_run(pipe: Path, run_dir: Path, executor: tuple[str, str | None], env: dict[str, str]) -> subprocess.Popen:
    args = [sys.executable, "-m", "blift.cli", "run", str(pipe), "--out", str(run_dir), "--workers", "2",
            "--executor", executor[0]]
    if executor[1]:
        args += ["--ray-address", executor[1]]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finished_outputs(run_dir: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) of every output file of every finished shard (one with a manifest, the
    shard's commit record): a shard redone is a new file."""
    out = {}
    for manifest in (run_dir / "_blift" / "manifests").rglob("*.json"):
        for rel in json.loads(manifest.read_text())["output_files"]:
            st = (run_dir / rel).stat()
            out[rel] = (st.st_ino, st.st_mtime_ns)
    return out


def _our_ray_workers() -> list[psutil.Process]:
    """Ray worker processes busy with a blift shard task or actor (idle pooled workers are Ray's)."""
    busy = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if cmd.startswith(("ray::blift:", "ray::_StageActor")):  # task names are blift:<stage>
            busy.append(proc)
    return busy


def test_kill_9_of_the_driver_then_rerun_finishes_identically(tmp_path, executor, reference):
    env = {**os.environ, "TOY_SLEEP": "0.25", "BLIFT_RAY_ENV": "TOY_SLEEP"}
    run_dir, markers, pipe = prepare(tmp_path, "run")
    proc = _blift_run(pipe, run_dir, executor, env)
    kill_9_mid_run(proc, lambda: bool(list((run_dir / "items").glob("part-*.parquet"))))
    if executor[0] == "ray":  # Ray stops the tasks and actors of a driver that is gone
        deadline = time.monotonic() + 30
        while _our_ray_workers() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _our_ray_workers(), "Ray kept running the killed driver's shards"
    settled = sum(calls(markers).values())
    time.sleep(1.0)
    assert sum(calls(markers).values()) == settled, "records were still processed after the kill"
    finished = _finished_outputs(run_dir)
    assert finished, "the kill came before any shard finished"
    assert len(list((run_dir / "captions").glob("*.parquet"))) < len(SHARDS), "the kill came after the run ended"

    proc = _blift_run(pipe, run_dir, executor, env)
    assert proc.wait(180) == 0, proc.stdout.read()
    after = _finished_outputs(run_dir)
    assert {k: after[k] for k in finished} == finished, "a shard finished before the kill was written again"
    redone = {k: n for k, n in calls(markers).items() if n > 1}
    assert sum(n - 1 for n in redone.values()) <= 4, f"finished records processed again: {redone}"  # <= in flight
    assert set(calls(markers)) == {f"reddit:{i}" for ids in SHARDS.values() for i in ids}
    assert digests(run_dir) == digests(reference)


# --------------------------------------------------------------------------- watchdog

def _items(server: MediaServer) -> dict[str, list[dict[str, Any]]]:
    """Two shards of image posts; one post's image URL hangs forever."""
    good = server.image("/ok.png", _png())
    hang = server.route("/hang.jpg", *[Reply(mode="hang")] * 4)
    rows = {"part-0": [("p1", good), ("p2", hang), ("p3", good)], "part-1": [("q1", good), ("q2", good)]}
    when = datetime(2026, 11, 1, tzinfo=timezone.utc)
    return {shard: schemas.get("items").from_rows([
        {"uid": f"reddit:{i}", "platform": "reddit", "item_id": i, "source": "api", "url": url, "collected_at": when,
         "media_kind": "image", "media_urls": [url]} for i, url in items]).to_pylist() for shard, items in rows.items()}


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 12), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.timeout(240)
def test_watchdog_stops_a_record_stuck_on_a_server_that_never_answers(tmp_path, executor):
    with MediaServer() as server:
        run_dir = tmp_path / "run"
        for shard, rows in _items(server).items():
            tables.write_rows(run_dir / "items" / f"{shard}.parquet", rows, "items")
        pipe = tmp_path / "p.yaml"
        # The HTTP client would wait 120 s for the hanging server; the watchdog steps in at 2 s.
        pipe.write_text(yaml.safe_dump({"name": "dl", "stages": [{"stage": "media.download", "config": {
            "allow_private_addresses": True, "per_host_rps": 0, "read_timeout_s": 120, "retries": 0, "threads": 1},
            "record_timeout_s": 2}]}))
        report = run_pipeline(pipe, RunOptions(out=run_dir, workers=2, progress=False, executor=executor[0],
                                               ray_address=executor[1]))
    assert not report.failed
    errors = tables.read_dataset(run_dir / "errors" / "media.download", "errors").to_pylist()
    assert [(e["record_key"], e["error_class"]) for e in errors] == [("reddit:p2", "transient")]
    assert "watchdog" in errors[0]["message"]  # the watchdog, not the client's 120 s read timeout
    media = tables.read_dataset(run_dir / "media", "media").to_pylist()
    assert sorted(m["uid"] for m in media if m["status"] == "ok") == [
        "reddit:p1", "reddit:p3", "reddit:q1", "reddit:q2"]
