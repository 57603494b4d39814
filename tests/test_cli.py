"""The command line: dry run, one stage alone, stats, validate, and clear errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from blift import tables
from blift.cli import app
from toy_runs import make_refs
from toy_stages import TOY_STAGES

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_dry_run_lists_the_stages_without_running(tmp_path):
    res = runner.invoke(app, ["run", str(ROOT / "pipelines" / "sample.yaml"), "--out", str(tmp_path / "r"),
                              "--dry-run"])
    assert res.exit_code == 0, res.output
    for stage in ("reddit.list", "reddit.collect", "media.download", "clean", "attributes", "instruct"):
        assert stage in res.output
    assert "waits for its input" in res.output
    assert not (tmp_path / "r" / "items").exists()


@pytest.mark.slow
def test_stage_alone_then_stats(tmp_path, monkeypatch):
    monkeypatch.setenv("BLIFT_STAGES", TOY_STAGES)
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))
    run_dir, markers = tmp_path / "run", tmp_path / "m"
    markers.mkdir()
    make_refs(run_dir, {"part-0": ["a1", "a7", "a2"]})
    res = runner.invoke(app, ["stage", "toy.fetch", "--out", str(run_dir), "--set", f"marker_dir={markers}"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["stage", "toy.filter", "--out", str(run_dir), "--set", f"marker_dir={markers}"])
    assert res.exit_code == 0, res.output
    assert tables.read_dataset(run_dir / "items_clean", "items").num_rows == 2
    res = runner.invoke(app, ["stats", str(run_dir), "--json"])
    data = json.loads(res.output)
    assert data["stages"]["toy.filter"]["dropped"] == {"ends_in_7": 1}
    res = runner.invoke(app, ["stage", "toy.filter", "--out", str(run_dir), "--set", "colour=red"])
    assert res.exit_code == 2 and "'colour'" in res.output


def test_validate_names_the_bad_file_and_field(tmp_path):
    make_refs(tmp_path, {"part-0": ["x"]})
    res = runner.invoke(app, ["validate", str(tmp_path)])
    assert res.exit_code == 0 and "1 valid, 0 invalid" in res.output
    # a shard claiming a schema version this blift does not know
    table = tables.read_shard(tmp_path / "item_refs" / "part-0.parquet")
    meta = dict(table.schema.metadata)
    meta[b"blift.schema_version"] = b"99"
    pq.write_table(table.replace_schema_metadata(meta), tmp_path / "item_refs" / "part-1.parquet")
    # a shard with a wrong column type
    bad = table.set_column(table.schema.get_field_index("rank"), "rank", pa.array(["first"]))
    pq.write_table(bad.replace_schema_metadata(table.schema.metadata), tmp_path / "item_refs" / "part-2.parquet")
    (tmp_path / "item_refs" / "part-3.parquet").write_bytes(b"not parquet")
    res = runner.invoke(app, ["validate", str(tmp_path)])
    assert res.exit_code == 1
    out = " ".join(res.output.split())
    assert "part-1.parquet" in out and "v99" in out
    assert "part-2.parquet" in out and "'rank'" in out
    assert "part-3.parquet" in out and "not a readable Parquet file" in out


def test_release_of_a_file_url_reads_that_folder(tmp_path):
    """``file://`` names a local run folder (run_path); the writer gets that folder, not the URL
    (which it used to read as the relative path ``file:/...``)."""
    run = tmp_path / "run"
    run.mkdir()
    res = runner.invoke(app, ["release", f"file://{run}", str(tmp_path / "release"), "--no-check"])
    assert res.exit_code == 2
    out = " ".join(res.output.split())
    assert f"no shards in {run / 'instructions'}" in out


@pytest.mark.slow
def test_missing_reddit_credentials_name_the_variables(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDDIT_")}
    proc = subprocess.run([sys.executable, "-m", "blift.cli", "run", str(ROOT / "pipelines" / "reddit-images.yaml"),
                           "--out", str(tmp_path / "r"), "--stage", "reddit.list", "--workers", "1"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    err = " ".join(proc.stderr.split())
    assert "REDDIT_CLIENT_ID" in err and "REDDIT_CLIENT_SECRET" in err and "praw.ini" in err


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "pipelines").glob("*.yaml")))
def test_every_shipped_pipeline_validates(name, tmp_path):
    """The pipelines users copy from: every stage name, config key and request must check out."""
    path = ROOT / "pipelines" / name
    if name == "local-folder.yaml":  # its folder is a placeholder the user edits: give it one, beside a copy
        (tmp_path / "pipelines").mkdir()
        (tmp_path / "my-media").mkdir()
        path = Path(shutil.copy(path, tmp_path / "pipelines" / name))
    proc = subprocess.run([sys.executable, "-m", "blift.cli", "run", str(path), "--dry-run",
                           "--out", str(tmp_path / "r")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert re.search(r"shard\(s\): [1-9]\d* to run", first), proc.stdout  # the first stage has work
