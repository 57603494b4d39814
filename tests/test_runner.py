"""The runner: resume, config changes, error classes, --retry-failed, dying workers, kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from blift import tables
from blift.errors import ConfigError, CredentialError
from blift.pipeline import RunOptions, run_pipeline
from toy_runs import calls, make_refs
from toy_runs import write_toy_pipeline as write_pipeline

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("toy_env")


@pytest.mark.slow
def test_rerun_skips_finished_shards_and_config_change_redoes(tmp_path):
    run_dir, markers = tmp_path / "run", tmp_path / "m"
    markers.mkdir()
    make_refs(run_dir, {f"part-{k}": [f"a{k}{i}" for i in range(10)] for k in range(3)})
    pipe = write_pipeline(tmp_path / "p.yaml", markers)
    report = run_pipeline(pipe, RunOptions(out=run_dir, workers=2, progress=False))
    assert report.stats["stages"]["toy.fetch"]["out"] == {"items": 30}
    assert report.stats["stages"]["toy.filter"]["dropped"] == {"ends_in_7": 3}
    assert sum(calls(markers).values()) == 30
    before = {p: p.read_bytes() for p in (run_dir / "items").glob("*.parquet")}

    report = run_pipeline(pipe, RunOptions(out=run_dir, workers=2, progress=False))
    assert sum(calls(markers).values()) == 30, "a finished shard was fetched again"
    assert report.plans[0].skipped == ["part-0", "part-1", "part-2"] and not report.plans[0].todo
    assert {p: p.read_bytes() for p in (run_dir / "items").glob("*.parquet")} == before
    assert report.stats["stages"]["toy.fetch"]["records_in"] == 30  # stats still cover skipped shards

    run_pipeline(write_pipeline(pipe, markers, suffix="!"), RunOptions(out=run_dir, workers=2, progress=False))
    titles = tables.read_dataset(run_dir / "items_clean", "items").column("title").to_pylist()
    assert len(titles) == 27 and all(t.endswith("!") for t in titles)


@pytest.mark.slow
def test_a_shard_written_before_its_stage_gained_an_output_is_redone(tmp_path):
    """No version bump for a new output (the old ones did not change): the manifests that do not
    list it are what make those shards run again."""
    run_dir, markers = tmp_path / "run", tmp_path / "m"
    markers.mkdir()
    make_refs(run_dir, {f"part-{k}": [f"b{k}{i}" for i in range(3)] for k in range(2)})
    pipe = write_pipeline(tmp_path / "p.yaml", markers)
    run_pipeline(pipe, RunOptions(out=run_dir, workers=1, progress=False))
    manifest = run_dir / "_blift" / "manifests" / "toy.filter" / "part-0.json"
    old = json.loads(manifest.read_text())
    old["output_files"] = [p for p in old["output_files"] if not p.startswith("items_clean/")]  # as if it were new
    manifest.write_text(json.dumps(old))
    report = run_pipeline(pipe, RunOptions(out=run_dir, workers=1, progress=False))
    plan = next(p for p in report.plans if p.stage == "toy.filter")
    assert [t.shard for t in plan.todo] == ["part-0"] and plan.skipped == ["part-1"]
    assert "items_clean/part-0.parquet" in json.loads(manifest.read_text())["output_files"]


@pytest.mark.slow
def test_error_classes_and_retry_failed_redo_only_transient(tmp_path):
    run_dir, markers = tmp_path / "run", tmp_path / "m"
    markers.mkdir()
    make_refs(run_dir, {"part-0": ["ok1", "bad1", "flaky1", "ok2"]})
    pipe = write_pipeline(tmp_path / "p.yaml", markers)
    report = run_pipeline(pipe, RunOptions(out=run_dir, workers=1, progress=False))
    assert report.stats["stages"]["toy.fetch"]["errors"] == {"invalid": 1, "transient": 1}
    errors = tables.read_shard(run_dir / "errors" / "toy.fetch" / "part-0.parquet", "errors").to_pylist()
    assert {e["record_key"]: e["error_class"] for e in errors} == {
        "reddit:bad1": "invalid", "reddit:flaky1": "transient"}
    assert "field 'title'" in next(e["message"] for e in errors if e["record_key"] == "reddit:bad1")

    run_pipeline(pipe, RunOptions(out=run_dir, workers=1, progress=False))  # plain rerun: nothing redone
    assert calls(markers)["reddit:flaky1"] == 1

    (markers / "heal").touch()
    report = run_pipeline(pipe, RunOptions(out=run_dir, workers=1, progress=False, retry_failed=True))
    c = calls(markers)
    assert c["reddit:flaky1"] == 2 and c["reddit:ok1"] == 1 and c["reddit:bad1"] == 1
    assert report.stats["stages"]["toy.fetch"]["errors"] == {"invalid": 1}
    ids = tables.read_dataset(run_dir / "items", "items").column("item_id").to_pylist()
    assert ids == ["ok1", "flaky1", "ok2"]  # record order kept


@pytest.mark.slow
def test_dying_worker_is_replaced_and_finished_records_are_not_redone(tmp_path):
    run_dir, markers = tmp_path / "run", tmp_path / "m"
    markers.mkdir()
    make_refs(run_dir, {"part-0": ["x1", "x2", "die1", "x3"], "part-1": ["y1", "y2"]})
    pipe = write_pipeline(tmp_path / "p.yaml", markers)
    # One worker: a broken pool also kills whatever record another worker had in flight (it is
    # redone, as it must be), which would make the exact call counts below depend on timing.
    report = run_pipeline(pipe, RunOptions(out=run_dir, workers=1, progress=False))
    assert not report.failed
    c = calls(markers)
    assert c["reddit:die1"] == 2  # the record whose process died is redone...
    assert all(n == 1 for k, n in c.items() if k != "reddit:die1")  # ...the journaled ones are not
    ids = tables.read_dataset(run_dir / "items", "items").column("item_id").to_pylist()
    assert ids == ["x1", "x2", "die1", "x3", "y1", "y2"]


def test_pipeline_typo_names_file_and_field(tmp_path):
    pipe = tmp_path / "typo.yaml"
    pipe.write_text(yaml.safe_dump({"name": "t", "stages": [{"stage": "toy.fetch", "config": {"sufix": "x"}}]}))
    with pytest.raises(ConfigError) as exc:
        run_pipeline(pipe, RunOptions(out=tmp_path / "r", progress=False))
    assert str(pipe) in str(exc.value) and "stages[0]" in str(exc.value) and "'sufix'" in str(exc.value)
    assert "suffix" in str(exc.value)  # the known fields are listed
    pipe.write_text(yaml.safe_dump({"name": "t", "stagess": []}))
    with pytest.raises(ConfigError, match=r"'stagess': unknown field \(did you mean 'stages'\?\)"):
        run_pipeline(pipe, RunOptions(out=tmp_path / "r", progress=False))
    pipe.write_text(yaml.safe_dump({"name": "t", "stages": [{"stage": "toy.fetc"}]}))
    with pytest.raises(ConfigError, match="did you mean 'toy.fetch'"):
        run_pipeline(pipe, RunOptions(out=tmp_path / "r", progress=False))


def _blift(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "blift.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_kill_9_mid_stage_then_rerun_is_byte_identical(tmp_path):
    """kill -9 of `blift run` mid-stage: workers die with it, the rerun finishes the job, the output
    equals an uninterrupted run byte for byte, and no finished record is processed twice."""
    ids = [f"s{i:02d}" for i in range(24)]
    env = {**os.environ, "TOY_SLEEP": "0.15"}
    ref_run, ref_m = tmp_path / "ref", tmp_path / "ref_m"
    ref_m.mkdir()
    make_refs(ref_run, {"part-0": ids[:12], "part-1": ids[12:]})
    pipe = write_pipeline(tmp_path / "ref.yaml", ref_m)
    proc = _blift("run", str(pipe), "--out", str(ref_run), "--workers", "2", env=env)
    assert proc.wait(120) == 0, proc.stdout.read()

    run_dir, markers = tmp_path / "run", tmp_path / "m"
    markers.mkdir()
    make_refs(run_dir, {"part-0": ids[:12], "part-1": ids[12:]})
    pipe = write_pipeline(tmp_path / "p.yaml", markers)
    proc = _blift("run", str(pipe), "--out", str(run_dir), "--workers", "2", env=env)
    deadline = time.monotonic() + 60
    while sum(calls(markers).values()) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children, "no worker processes seen"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"workers outlived their parent: {alive}"
    assert not (run_dir / "items" / "part-0.parquet").exists() or not (run_dir / "items" / "part-1.parquet").exists()

    proc = _blift("run", str(pipe), "--out", str(run_dir), "--workers", "2", env=env)
    assert proc.wait(120) == 0, proc.stdout.read()
    c = calls(markers)
    assert set(c) == {f"reddit:{i}" for i in ids}
    assert sum(n - 1 for n in c.values()) <= 2, f"finished records processed twice: {c}"  # at most the 2 in flight
    for dataset in ("items", "items_clean", "dropped/toy.filter", "errors/toy.fetch"):
        for ref in sorted((ref_run / dataset).glob("*.parquet")):
            assert (run_dir / dataset / ref.name).read_bytes() == ref.read_bytes(), f"{dataset}/{ref.name} differs"


def test_config_error_inside_a_worker_stops_the_run(tmp_path):
    """A BliftError (bad credentials, bad config) from a record stops the run with its message
    instead of becoming one error row per record."""
    run_dir, markers = tmp_path / "run", tmp_path / "m"
    markers.mkdir()
    make_refs(run_dir, {"part-0": ["ok1", "cred1", "ok2"]})
    pipe = write_pipeline(tmp_path / "p.yaml", markers)
    with pytest.raises(CredentialError, match="REDDIT_CLIENT_ID"):
        run_pipeline(pipe, RunOptions(out=run_dir, workers=1, progress=False))
    assert not (run_dir / "items" / "part-0.parquet").exists()


@pytest.mark.slow
def test_watchdog_fails_a_hung_record_and_the_job_goes_on(tmp_path):
    run_dir, markers = tmp_path / "run", tmp_path / "m"
    markers.mkdir()
    make_refs(run_dir, {"part-0": ["a1", "hang1", "a2"], "part-1": ["b1", "b2"]})
    pipe = write_pipeline(tmp_path / "p.yaml", markers)
    report = run_pipeline(pipe, RunOptions(out=run_dir, workers=2, progress=False, record_timeout_s=1.5))
    assert not report.failed
    errors = tables.read_shard(run_dir / "errors" / "toy.fetch" / "part-0.parquet", "errors").to_pylist()
    assert [(e["record_key"], e["error_class"]) for e in errors] == [("reddit:hang1", "transient")]
    assert "watchdog" in errors[0]["message"]
    ids = tables.read_dataset(run_dir / "items", "items").column("item_id").to_pylist()
    assert ids == ["a1", "a2", "b1", "b2"]
    c = calls(markers)
    assert c["reddit:a1"] == 1 and c["reddit:hang1"] == 1  # neither redone after the worker restart


@pytest.mark.parametrize(("out", "message"), [
    ("gs://b/r", "no filesystem for gs://"),  # gcsfs is not installed here
    ("hdfs://namenode/r", "hdfs:// is not supported for run folders"),
    ("memory://r", "memory:// is not supported for run folders"),  # one process's memory: workers would not see it
    ("nosuch://b/r", "no filesystem for nosuch://"),
])
def test_unsupported_run_folder_urls_are_refused_by_name(tmp_path, monkeypatch, out, message):
    monkeypatch.chdir(tmp_path)
    pipe = write_pipeline(tmp_path / "p.yaml", tmp_path)
    for given in (out, Path(out)):  # a URL that went through pathlib (one slash lost) is still a URL
        with pytest.raises(ConfigError, match=message):
            run_pipeline(pipe, RunOptions(out=given, progress=False))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml"]  # no local folder named "gs:" & co
