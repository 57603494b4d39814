"""`blift release` (minimal): HF layout, card front matter, load_dataset self-check, atomic replace."""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import datasets
import pyarrow.parquet as pq
import pytest
import yaml

from blift import schemas, tables
from blift.ids import pack_raw, split_of
from blift.instruct.stage import InstructStage
from blift.release.writer import ReleaseCheckError, ReleaseError, check_release, release
from blift.stage import ShardInput

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
SHARD_NAME = re.compile(r"^(train|validation|test)-(\d{5})-of-(\d{5})\.parquet$")


def _uids_covering_all_splits(per_split: dict[str, int]) -> list[str]:
    """Deterministic uids, enough of each split (found by hashing, not hard-coded)."""
    want, out, i = dict(per_split), [], 0
    while any(want.values()):
        uid = f"reddit:r{i}"
        split = split_of(uid)
        if want[split]:
            want[split] -= 1
            out.append(uid)
        i += 1
    return out


def _rows_for(uid: str, n_comments: int) -> tuple[dict, list[dict], dict, dict]:
    item_id = uid.split(":")[1]
    item = {"uid": uid, "platform": "reddit", "item_id": item_id, "source": "api", "title": f"Post {item_id}",
            "community": "pics", "collected_at": T0, "media_kind": "image", "score": len(uid) * 17,
            "upvote_ratio": 0.9, "num_comments": n_comments, "raw": pack_raw({"id": item_id, "author": "someone"})}
    comments = [{"uid": uid, "platform": "reddit", "comment_id": f"{item_id}c{j}", "depth": 0,
                 "text": f"comment {j} on {item_id}", "score": 10 - j, "collected_at": T0,
                 "raw": pack_raw({"body": j})} for j in range(n_comments)]
    media = {"uid": uid, "index": 0, "url": f"https://i.example/{item_id}.jpg", "status": "ok",
             "path": f"media/ab/{item_id}.jpg", "mime": "image/jpeg", "width": 640, "height": 480}
    attrs = {"uid": uid, "media_index": 0, "scene": None, "orientation": "landscape", "width": 640, "height": 480,
             "colors": [{"name": "Sky_Blue", "fraction": 0.6}], "tone": "cool", "complexity": "medium",
             "ocr_text": "", "caption": None}
    return item, comments, media, attrs


def build_run(run: Path, uids: list[str], shards: int = 2, **stage_config: Any) -> dict[str, Any]:
    """A run folder as the pipeline leaves it: items_clean, comments_clean, instructions, media files."""
    written: dict[str, list[dict]] = {"items": [], "comments": [], "instructions": []}
    for s in range(shards):
        part = [u for i, u in enumerate(uids) if i % shards == s]
        rows = [_rows_for(u, 1 + i % 4) for i, u in enumerate(part)]
        items = [r[0] for r in rows]
        comments = [c for r in rows for c in r[1]]
        tbl = {
            "items_clean": schemas.get("items").from_rows(items),
            "comments_clean": schemas.get("comments").from_rows(comments),
            "media": schemas.get("media").from_rows([r[2] for r in rows]),
            "attributes": schemas.get("attributes").from_rows([r[3] for r in rows]),
        }
        stage = InstructStage(InstructStage.Config(**{"top_k_comments": 3, **stage_config}), run)
        stage.setup()
        result = stage.process(ShardInput(f"part-{s:05d}", tbl, run))
        name = f"part-{s:05d}.parquet"
        tables.write_shard(run / "items_clean" / name, tbl["items_clean"], "items")
        tables.write_shard(run / "comments_clean" / name, tbl["comments_clean"], "comments")
        tables.write_shard(run / "instructions" / name, result.tables["instructions"], "instructions")
        for r in rows:
            (run / r[2]["path"]).parent.mkdir(parents=True, exist_ok=True)
            (run / r[2]["path"]).write_bytes(b"\xff\xd8\xff" + r[0]["uid"].encode())
        written["items"] += items
        written["comments"] += comments
        written["instructions"] += result.tables["instructions"].to_pylist()
    return written


def front_matter(readme: Path) -> dict[str, Any]:
    text = readme.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def load(out: Path, config: str) -> datasets.DatasetDict:
    return datasets.load_dataset(str(out), name=config, cache_dir=str(out.parent / "hf-cache"))


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    base = tmp_path_factory.mktemp("rel")
    uids = _uids_covering_all_splits({"train": 10, "validation": 2, "test": 2})
    written = build_run(base / "run", uids)
    report = release(base / "run", base / "out")
    return base / "out", written, report


def test_layout_names_and_card(released):
    out, written, report = released
    expected = Counter(r["split"] for r in written["instructions"])
    assert set(expected) == {"train", "validation", "test"}
    for config in ("instructions", "items", "comments"):
        names = sorted(p.name for p in (out / "data" / config).iterdir())
        assert names and all(SHARD_NAME.match(n) for n in names), names
        assert {SHARD_NAME.match(n).group(1) for n in names} == {"train", "validation", "test"}
    assert sorted(p.name for p in (out / "data" / "instructions").iterdir()) == [
        "test-00000-of-00001.parquet", "train-00000-of-00001.parquet", "validation-00000-of-00001.parquet"]
    meta = front_matter(out / "README.md")
    assert meta["task_categories"] == ["image-text-to-text"] and meta["license"] and meta["pretty_name"]
    cfgs = {c["config_name"]: c for c in meta["configs"]}
    assert list(cfgs) == ["instructions", "items", "comments"]
    assert cfgs["instructions"].get("default") is True and "default" not in cfgs["items"]
    assert {"split": "train", "path": "data/instructions/train-*"} in cfgs["instructions"]["data_files"]
    assert report.rows["instructions"] == dict(expected)
    assert report.files["instructions"]["train"] == ["data/instructions/train-00000-of-00001.parquet"]
    body = (out / "README.md").read_text()
    assert "load_dataset" in body and f"{expected['train']:,}" in body
    # nothing but the release is left next to it (no temp, old or check-cache folders)
    assert not [p.name for p in out.parent.iterdir() if p.name not in ("out", "run", "hf-cache")]


def test_load_dataset_reads_every_config_and_nested_columns_round_trip(released):
    out, written, report = released
    assert report.check is not None and report.check.ok
    inst = load(out, "instructions")
    assert {s: d.num_rows for s, d in inst.items()} == dict(Counter(r["split"] for r in written["instructions"]))
    assert report.check.rows["instructions"] == {s: d.num_rows for s, d in inst.items()}
    source = {r["id"]: r for r in written["instructions"]}
    seen = 0
    for split, ds in inst.items():
        for rec in ds:
            src = source[rec["id"]]
            assert rec["split"] == split
            assert rec["conversations"] == src["conversations"]
            assert rec["targets"] == src["targets"]
            assert rec["media"] == src["media"]
            assert (out / rec["media"][0]).read_bytes() == (out.parent / "run" / src["media"][0]).read_bytes()
            seen += 1
    assert seen == len(written["instructions"])
    assert any(r["targets"] is None for r in written["instructions"])  # content records were in the mix
    items = load(out, "items")
    assert sum(d.num_rows for d in items.values()) == len(written["items"])
    assert "raw" not in items["train"].column_names  # dropped by default
    for split, ds in items.items():
        assert all(split_of(u) == split for u in ds["uid"])
    comments = load(out, "comments")
    assert sum(d.num_rows for d in comments.values()) == len(written["comments"])
    uid_split = {r["uid"]: r["split"] for r in written["instructions"]}
    for split, ds in comments.items():  # a comment shares its item's split
        assert {uid_split[u] for u in ds["uid"]} == {split}


def test_tiny_shards_are_numbered_and_raw_round_trips(tmp_path):
    uids = _uids_covering_all_splits({"train": 12, "validation": 0, "test": 0})
    written = build_run(tmp_path / "run", uids, shards=3)
    report = release(tmp_path / "run", tmp_path / "out", max_shard_bytes=1000, drop_raw=False,
                     configs={"instructions": "instructions", "items": "items_clean"}, check=False)
    for config, total in (("instructions", len(written["instructions"])), ("items", len(written["items"]))):
        files = sorted(p.name for p in (tmp_path / "out" / "data" / config).iterdir())
        assert len(files) > 2, files
        n = len(files)
        assert files == [f"train-{i:05d}-of-{n:05d}.parquet" for i in range(n)]
        assert sum(pq.read_metadata(tmp_path / "out" / "data" / config / f).num_rows for f in files) == total
        assert report.rows[config] == {"train": total}
    # the order of the rows is the run's order, across shards
    ids = load(tmp_path / "out", "instructions")["train"]["id"]
    assert ids == [r["id"] for r in written["instructions"]]
    items = load(tmp_path / "out", "items")["train"]
    assert items["raw"] == [r["raw"] for r in written["items"]]


def test_release_replaces_an_existing_one_atomically(tmp_path):
    uids = _uids_covering_all_splits({"train": 4, "validation": 0, "test": 0})
    build_run(tmp_path / "run", uids)
    out = tmp_path / "out"
    release(tmp_path / "run", out, check=False)
    stale = out / "data" / "instructions" / "validation-00000-of-00001.parquet"
    stale.write_bytes(b"left over from an older release")
    release(tmp_path / "run", out, configs={"instructions": "instructions"}, check=False)
    assert not stale.exists() and not (out / "data" / "items").exists()
    assert [c["config_name"] for c in front_matter(out / "README.md")["configs"]] == ["instructions"]
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    # a release that fails half way leaves the old one untouched and no debris
    (tmp_path / "run" / "media" / "ab" / f"{uids[-1].split(':')[1]}.jpg").unlink()
    with pytest.raises(ReleaseError, match="media file .* not found"):
        release(tmp_path / "run", out, check=False)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "run"]


def test_check_names_config_and_split_on_a_mismatch(released):
    out, written, report = released
    wrong = {k: dict(v) for k, v in report.rows.items()}
    wrong["items"]["test"] += 1
    with pytest.raises(ReleaseCheckError, match=r"config 'items', split 'test'"):
        check_release(out, wrong)


def test_items_and_comments_follow_the_instruction_splits(tmp_path):
    """With non-default split fractions in the instruct stage, items/comments still match their records."""
    uids = [f"reddit:f{i}" for i in range(24)]
    written = build_run(tmp_path / "run", uids, split_validation=0.3, split_test=0.3)
    uid_split = {r["uid"]: r["split"] for r in written["instructions"]}
    assert any(uid_split[u] != split_of(u) for u in uids)  # the default fractions would disagree
    report = release(tmp_path / "run", tmp_path / "out", check=False)
    for config in ("items", "comments"):
        for split, ds in load(tmp_path / "out", config).items():
            assert {uid_split[u] for u in ds["uid"]} == {split}, config
    assert sum(report.rows["comments"].values()) == len(written["comments"])


def test_an_empty_config_is_left_out(tmp_path):
    uids = _uids_covering_all_splits({"train": 2, "validation": 0, "test": 0})
    build_run(tmp_path / "run", uids)
    tables.write_shard(tmp_path / "run" / "none" / "part-00000.parquet", schemas.get("comments").empty(), "comments")
    report = release(tmp_path / "run", tmp_path / "out", configs={"instructions": "instructions", "nothing": "none"},
                     check=False)
    assert "nothing" in report.skipped and "nothing" not in report.rows
    assert not (tmp_path / "out" / "data" / "nothing").exists()
    assert [c["config_name"] for c in front_matter(tmp_path / "out" / "README.md")["configs"]] == ["instructions"]
    with pytest.raises(ReleaseError, match="nothing to release"):
        release(tmp_path / "run", tmp_path / "out2", configs={"nothing": "none"}, check=False)


def test_refusals(tmp_path):
    uids = _uids_covering_all_splits({"train": 2, "validation": 0, "test": 0})
    build_run(tmp_path / "run", uids)
    with pytest.raises(ReleaseError, match="comments_nope"):
        release(tmp_path / "run", tmp_path / "out", configs={"comments": "comments_nope"}, check=False)
    with pytest.raises(ReleaseError, match="run folder"):
        release(tmp_path / "run", tmp_path / "run", check=False)
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(ReleaseError, match="not a release"):
        release(tmp_path / "run", tmp_path / "precious", check=False)
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"


def test_a_post_collected_by_two_requests_is_released_once(tmp_path):
    """The same post listed by two requests (top and hot) lands in two shards; the release keeps
    the first and reports how many repeats it left out."""
    uids = _uids_covering_all_splits({"train": 6, "validation": 0, "test": 0})
    build_run(tmp_path / "run", uids, shards=2)
    run = tmp_path / "run"
    for dataset, schema in (("instructions", "instructions"), ("items_clean", "items"), ("comments_clean", "comments")):
        first = tables.read_shard(run / dataset / "part-00000.parquet", schema)
        tables.write_shard(run / dataset / "part-00002.parquet", first, schema)  # a repeat of shard 0
    report = release(run, tmp_path / "out", check=False)
    n_inst = sum(report.rows["instructions"].values())
    assert n_inst == len(uids) * 2  # behavior + content per post, each once
    ids = load(tmp_path / "out", "instructions")["train"]["id"]
    assert len(ids) == len(set(ids))
    assert report.duplicates["instructions"] == tables.read_shard(run / "instructions" / "part-00000.parquet").num_rows
    assert report.duplicates["items"] == len(uids) - len(uids) // 2
