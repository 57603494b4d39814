"""The Ray executor against a real Ray head on loopback (2 logical GPUs): same bytes as the local
executor, model set up once per actor, retries of exceptions and of dying workers/actors,
CUDA_VISIBLE_DEVICES pinning, and a clear error for a request no node can satisfy."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from blift.errors import CredentialError
from blift.pipeline import RunOptions, run_pipeline
from toy_runs import calls, digests, make_refs
from toy_runs import write_model_pipeline as write_pipeline

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("toy_env")]


def setups(markers: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in markers.glob("setup-*")}


SHARDS = {f"part-{k}": [f"a{k}{i}" for i in range(6)] + [f"bad{k}"] for k in range(4)}


def run(tmp_path: Path, name: str, executor: str, address: str | None = None, shards: dict[str, list[str]] = SHARDS,
        **kw: Any) -> tuple[Path, Path, Any]:
    run_dir, markers = tmp_path / name, tmp_path / f"{name}-m"
    markers.mkdir()
    make_refs(run_dir, shards)
    for marker in kw.pop("markers", ()):
        (markers / marker).touch()
    report = run_pipeline(write_pipeline(tmp_path / f"{name}.yaml", markers),
                          RunOptions(out=run_dir, workers=2, progress=False, executor=executor,
                                     ray_address=address, **kw))
    return run_dir, markers, report


def test_same_bytes_as_local_and_model_set_up_once_per_gpu_actor(tmp_path, ray_head):
    local_dir, _, local = run(tmp_path, "local", "local")
    ray_dir, markers, report = run(tmp_path, "ray", "ray", ray_head)
    assert not report.failed and not local.failed
    d = digests(ray_dir)
    assert any(k.startswith("captions/") for k in d) and any(k.startswith("errors/toy.fetch") for k in d)
    assert d == digests(local_dir)
    for stage, stats in local.stats["stages"].items():
        assert {k: report.stats["stages"][stage].get(k) for k in ("records_in", "out", "dropped", "errors")} == \
            {k: stats.get(k) for k in ("records_in", "out", "dropped", "errors")}, stage
    # 4 model shards on 2 actors: the model is set up once per actor, each actor pinned to its own GPU.
    loads = setups(markers)
    assert len(loads) == 2, loads
    assert len({name.split("-")[1] for name in loads}) == 2  # two processes
    assert sorted(loads.values()) == ["0", "1"]


def test_injected_exception_and_worker_deaths_are_retried(tmp_path, ray_head):
    shards = {"part-0": ["x1", "die1", "x2"], "part-1": ["y1", "y2"], "part-2": ["z1"]}
    ray_dir, markers, report = run(tmp_path, "ray", "ray", ray_head, shards=shards, markers=("fail-once", "die-once"))
    assert not report.failed
    assert not (markers / "fail-once").exists() and not (markers / "die-once").exists()  # both were injected
    c = calls(markers)
    assert c["reddit:die1"] == 2 and all(n == 1 for k, n in c.items() if k != "reddit:die1")
    # the dead actor was replaced (one more model load), every shard finished
    assert len(setups(markers)) == 3
    local_dir, _, _ = run(tmp_path, "local", "local", shards=shards)
    assert digests(ray_dir) == digests(local_dir)


def test_gpu_required_on_a_cluster_without_gpus_fails_fast(tmp_path):
    """A local Ray started by the executor (no address) on a machine whose GPUs are hidden."""
    markers = tmp_path / "m"
    markers.mkdir()
    make_refs(tmp_path / "run", {"part-0": ["a1"]})
    pipe = write_pipeline(tmp_path / "p.yaml", markers, require_gpu=True)
    script = textwrap.dedent(f"""
        from pathlib import Path
        from blift.errors import BliftError
        from blift.pipeline import RunOptions, run_pipeline
        try:
            run_pipeline(Path({str(pipe)!r}), RunOptions(out=Path({str(tmp_path / "run")!r}), workers=1,
                         progress=False, executor="ray"))
        except BliftError as exc:
            print("ERROR:", exc)
            raise SystemExit(2)
    """)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "requires a GPU" in proc.stdout and "GPU=0" in proc.stdout
    assert calls(markers)["reddit:a1"] == 1  # the CPU stages before it did run on the local Ray


def test_blift_error_in_a_shard_stops_the_run(tmp_path, ray_head):
    """Bad credentials fail every record the same way: the run ends with the error, unwrapped."""
    with pytest.raises(CredentialError, match="REDDIT_CLIENT_ID"):
        run(tmp_path, "ray", "ray", ray_head, shards={"part-0": ["cred1"], "part-1": ["ok1"]})
