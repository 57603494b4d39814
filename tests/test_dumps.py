"""Dump ingestion (blift.collect.dumps) through the runner's BucketSink into a real run folder."""

from __future__ import annotations

import random
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest
import zstandard

from blift.collect.dumps import DumpConfig, DumpIngestStage, bucket_of, comment_depths
from blift.errors import ConfigError
from blift.ids import author_hash, unpack_raw
from blift.runner.bucket_sink import BucketSink
from blift.tables import read_dataset, read_shard, shard_paths

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from make_dump import comment, generate, submission, write_ndjson_zst  # noqa: E402

T0 = int(datetime(2023, 1, 10, tzinfo=timezone.utc).timestamp())
CHAIN = 40  # replies nested 40 deep


def _sub(n: int, sid: str, kind: str, sub: str = "pics", created: int = T0, **extra: Any) -> dict[str, Any]:
    rec = submission(random.Random(n), n, created=created, subreddit=sub, kind=kind)
    rec.update(id=sid, name=f"t3_{sid}", **extra)
    return rec


def _com(n: int, cid: str, link: str, parent: str | None, created: int, sub: str = "pics", **extra: Any) -> dict[str, Any]:
    rec = comment(random.Random(n), n, link, parent, sub, created)
    rec.update(id=cid, name=f"t1_{cid}", **extra)
    return rec


def dump_lines() -> tuple[list[Any], list[Any], dict[str, Any]]:
    """(submission lines, comment lines, expectations). Lines are dicts or raw bytes; 1-based numbers."""
    subs: list[Any] = [
        _sub(1, "aa1", "image", retrieved_on=T0 + 100, score=10, author="alice_photos"),  # 1
        _sub(2, "aa2", "gallery", sub="Art"),  # 2
        _sub(3, "aa3", "self"),  # 3
        _sub(4, "aa4", "image", over_18=True),  # 4
        b'{"id": "bad1", "title": ',  # 5 malformed JSON
        b"[1, 2, 3]",  # 6 a list
        orjson.dumps({"title": "no id here", "subreddit": "pics", "created_utc": T0}),  # 7 missing id
        _sub(5, "aa5", "image", score="lots"),  # 8 non-numeric score
        b'{"id": "aa6", "title": "caf\xff\xfe"}',  # 9 invalid UTF-8
        b"",  # 10 empty line
        _sub(1, "aa1", "image", retrieved_on=T0 + 5000, score=99, author="alice_photos"),  # 11 newer snapshot of aa1
        _sub(7, "aa7", "image", created=T0 - 400 * 86400),  # 12 old post (2022)
        _sub(8, "aa8", "link", sub="funny"),  # 13 other subreddit, link post
    ]
    for rec in subs:
        if isinstance(rec, dict) and rec["id"] != "aa1":
            rec.pop("retrieved_on", None)  # only aa1 carries a crawl time
    coms: list[Any] = []
    chain = [f"c{i:02d}" for i in range(CHAIN)]
    for i, cid in enumerate(chain):  # lines 1..40: c00 <- c01 <- ... (each replies to the previous)
        coms.append(_com(100 + i, cid, "aa1", chain[i - 1] if i else None, T0 + 60 * (i + 1), retrieved_on=T0 + 9000))
    coms += [
        _com(200, "c05", "aa1", "c04", T0 + 360, retrieved_on=T0 + 20000, score=777),  # 41 repeat of c05, newer
        _com(201, "d01", "aa2", None, T0 + 10, sub="Art", retrieved_on=T0 + 50),  # 42
        _com(202, "d02", "aa3", None, T0 + 20, retrieved_on=T0 + 50),  # 43
        _com(203, "d03", "zz9", None, T0 + 30, retrieved_on=T0 + 50),  # 44 item not in the dump
        _com(204, "d04", "aa1", "gone1", T0 + 40, retrieved_on=T0 + 50),  # 45 parent missing
        _com(205, "d05", "aa1", "d04", T0 + 45, retrieved_on=T0 + 50),  # 46 reply to the orphan
        b'{"id": "d06", "link_id": "t3_aa1", "body": "unterminated',  # 47 malformed
        orjson.dumps({"id": "d07", "body": "no link", "subreddit": "pics"}),  # 48 missing link_id
        _com(206, "d08", "aa4", None, T0 + 70, sub="pics"),  # 49 on the NSFW post, no retrieved_on
        _com(207, "d09", "aa8", None, T0 + 80, sub="funny", retrieved_on=T0 + 50),  # 50
    ]
    coms[-2].pop("retrieved_on", None)
    expect = {
        "sub_errors": {5: "JSONDecodeError", 6: "NotAnObject", 7: "InvalidRecord", 8: "InvalidRecord", 9: "InvalidUTF8"},
        "com_errors": {47: "JSONDecodeError", 48: "InvalidRecord"},
    }
    return subs, coms, expect


def write_plain(path: Path, lines: list[Any]) -> Path:
    with open(path, "wb") as fh:
        for rec in lines:
            fh.write(rec if isinstance(rec, bytes) else orjson.dumps(rec))
            fh.write(b"\n")
    return path


@pytest.fixture()
def dump_pair(tmp_path: Path) -> tuple[Path, Path, dict[str, Any]]:
    subs, coms, expect = dump_lines()
    rs, rc = tmp_path / "dumps" / "RS_2023-01.zst", tmp_path / "dumps" / "RC_2023-01.zst"
    write_ndjson_zst(rs, subs)
    write_ndjson_zst(rc, coms)
    return rs, rc, expect


def ingest(run_dir: Path, submissions: list[Path] | None, comments: list[Path] | None, **config: Any) -> tuple[dict, dict]:
    """Run the stage the way the runner does: expand, stream into a BucketSink, close."""
    config.setdefault("workers", 0)
    entry = {k: [str(p) for p in v] for k, v in (("submissions", submissions), ("comments", comments)) if v}
    requests = DumpIngestStage.expand_requests([entry])
    stage = DumpIngestStage(DumpConfig(**config), run_dir)
    sink = BucketSink(run_dir, stage.name, stage.outputs, stage.buckets())
    try:
        counters = stage.stream(requests, sink)
        summary = sink.close(stage)
    except BaseException:
        sink.abort()
        raise
    return counters, summary


def by_id(table: pa.Table, key: str) -> dict[str, dict[str, Any]]:
    return {row[key]: row for row in table.to_pylist()}


def test_ingest_rows_buckets_depth_dedupe_and_errors(tmp_path: Path, dump_pair, monkeypatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(T0 + 777_777))
    rs, rc, expect = dump_pair
    run = tmp_path / "run"
    counters, summary = ingest(run, [rs], [rc], buckets=4)

    # every bucket has a shard, each one valid against its schema
    for dataset in ("items", "comments"):
        paths = shard_paths(run / dataset)
        assert [p.name for p in paths] == [f"part-{b:05d}.parquet" for b in range(4)]
        for p in paths:
            read_shard(p, dataset)
    assert not [p for p in run.rglob(".*") if p.is_file()], "temporary files left behind"

    items = by_id(read_dataset(run / "items", "items"), "item_id")
    assert sorted(items) == ["aa1", "aa2", "aa3", "aa4", "aa7", "aa8"]
    assert items["aa1"]["score"] == 99 and items["aa1"]["collected_at"] == datetime.fromtimestamp(T0 + 5000, timezone.utc)
    assert items["aa2"]["media_kind"] == "gallery" and len(items["aa2"]["media_urls"]) >= 2
    assert items["aa3"]["media_kind"] == "text" and items["aa4"]["over_18"] is True
    assert items["aa3"]["collected_at"] == datetime.fromtimestamp(T0 + 777_777, timezone.utc)  # no retrieved_on
    assert items["aa1"]["author_hash"] == author_hash("alice_photos")
    raw = unpack_raw(items["aa1"]["raw"])
    assert raw["author"] == author_hash("alice_photos") and raw["id"] == "aa1"
    assert b"alice_photos" not in items["aa1"]["raw"]

    comments_table = read_dataset(run / "comments", "comments")
    com = by_id(comments_table, "comment_id")
    assert len(com) == comments_table.num_rows, "a repeated comment id survived"
    assert com["c05"]["score"] == 777  # the newer snapshot won
    for i in range(CHAIN):
        assert com[f"c{i:02d}"]["depth"] == i
    assert com["d04"]["depth"] == 1 and com["d04"]["parent_id"] == "gone1"  # parent missing: lower bound
    assert com["d05"]["depth"] == 2
    assert com["d08"]["collected_at"] == datetime.fromtimestamp(T0 + 777_777, timezone.utc)
    assert "d03" not in com  # its item is not in the submission files

    # an item and its comments share a bucket: shard of every comment == shard of its item
    item_shard = {}
    for p in shard_paths(run / "items"):
        for uid in read_shard(p)["uid"].to_pylist():
            item_shard[uid] = p.name
            assert bucket_of(uid, 4) == int(p.stem.split("-")[1])
    for p in shard_paths(run / "comments"):
        rows = read_shard(p).to_pylist()
        assert all(item_shard[r["uid"]] == p.name for r in rows)
        keys = [(r["uid"], r["created_at"], r["comment_id"]) for r in rows]
        assert keys == sorted(keys)
    for p in shard_paths(run / "items"):
        uids = read_shard(p)["uid"].to_pylist()
        assert uids == sorted(uids)

    # each bad line is exactly one error row naming its file and line
    errors = read_dataset(run / "errors" / "reddit.dumps", "errors").to_pylist()
    want = {f"{rs}:{n}": t for n, t in expect["sub_errors"].items()} | {f"{rc}:{n}": t for n, t in expect["com_errors"].items()}
    assert Counter(e["record_key"] for e in errors) == Counter(want.keys())
    for e in errors:
        assert e["error_type"] == want[e["record_key"]] and e["error_class"] == "invalid"
        assert e["message"].startswith(e["record_key"] + ":")
    msgs = {e["record_key"]: e["message"] for e in errors}
    assert "'id'" in msgs[f"{rs}:7"] and "'score'" in msgs[f"{rs}:8"] and "'link_id'" in msgs[f"{rc}:48"]

    n_sub, n_com = 13, 50
    assert counters["in"] == n_sub + n_com and counters["blank"] == 1
    assert counters["invalid"] == len(want) and summary["errors"] == {"invalid": len(want)}
    assert counters["items"] == 7 and counters["comments"] == CHAIN + 1 + 6  # before dedupe
    assert counters["dropped:item_not_kept"] == 1
    dropped_total = sum(v for k, v in counters.items() if k.startswith("dropped:"))
    assert counters["in"] == counters["blank"] + counters["invalid"] + counters["items"] + counters["comments"] + dropped_total
    rows = {d: sum(s["rows"] for s in summary["datasets"][d].values()) for d in ("items", "comments")}
    assert rows == {"items": len(items), "comments": len(com)}
    dropped = read_dataset(run / "dropped" / "reddit.dumps", "dropped").to_pylist()
    assert [(d["record_id"], d["reason"], d["uid"]) for d in dropped] == [("d03", "item_not_kept", "reddit:zz9")]


def test_filters_are_counted_exactly(tmp_path: Path, dump_pair) -> None:
    rs, rc, _ = dump_pair
    counters, summary = ingest(tmp_path / "run", [rs], [rc], buckets=3, subreddits=["PICS", "r/art"],
                               since="2023-01-01", until="2023-02-01T00:00:00Z", image_only=True)
    items = by_id(read_dataset(tmp_path / "run" / "items", "items"), "item_id")
    assert sorted(items) == ["aa1", "aa2", "aa4"]  # aa3 self post, aa7 too old, aa8 other subreddit
    assert counters["dropped:subreddit"] == 1 + 1  # aa8 and its comment d09
    assert counters["dropped:date_range"] == 1  # aa7
    assert counters["dropped:not_image"] == 1  # aa3
    assert counters["dropped:item_not_kept"] == 2  # d02 (on aa3), d03 (item absent)
    dropped = read_dataset(tmp_path / "run" / "dropped" / "reddit.dumps", "dropped").to_pylist()
    assert Counter(d["reason"] for d in dropped) == {"date_range": 1, "not_image": 1, "item_not_kept": 2}
    assert summary["dropped"] == {"date_range": 1, "not_image": 1, "item_not_kept": 2}  # subreddit: counted only
    assert {d["record_id"]: d["detail"] for d in dropped if d["reason"] == "not_image"} == {"aa3": "text"}
    com = by_id(read_dataset(tmp_path / "run" / "comments", "comments"), "comment_id")
    assert {c["uid"] for c in com.values()} == {"reddit:aa1", "reddit:aa2", "reddit:aa4"}


def test_comments_alone_are_kept_and_date_filtered(tmp_path: Path, dump_pair) -> None:
    _, rc, _ = dump_pair
    counters, _ = ingest(tmp_path / "run", None, [rc], until=datetime.fromtimestamp(T0 + 35, timezone.utc).isoformat())
    com = by_id(read_dataset(tmp_path / "run" / "comments", "comments"), "comment_id")
    assert sorted(com) == ["d01", "d02", "d03"]  # created before T0+35, item present or not
    # the chain, the repeat of c05, d04, d05, d08, d09 are later; d06 / d07 are invalid
    assert counters["dropped:date_range"] == CHAIN + 1 + 4 and counters["invalid"] == 2
    assert "dropped:item_not_kept" not in counters


def test_plain_ndjson_gives_the_same_tables(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(T0))  # lines without retrieved_on get the run time
    subs, coms, _ = dump_lines()
    rs_z, rc_z = tmp_path / "a" / "RS.zst", tmp_path / "a" / "RC.zst"
    write_ndjson_zst(rs_z, subs)
    write_ndjson_zst(rc_z, coms)
    rs_p, rc_p = write_plain(tmp_path / "RS.ndjson", subs), write_plain(tmp_path / "RC.jsonl", coms)
    c1, _ = ingest(tmp_path / "run_z", [rs_z], [rc_z])
    c2, _ = ingest(tmp_path / "run_p", [rs_p], [rc_p])
    assert c1 == c2
    for dataset in ("items", "comments"):
        a = read_dataset(tmp_path / "run_z" / dataset, dataset)
        b = read_dataset(tmp_path / "run_p" / dataset, dataset)
        assert a.drop(["raw"]).equals(b.drop(["raw"]))


def test_worker_processes_give_identical_shards(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(T0))
    subs, coms = generate(60, 600, seed=3)
    rs, rc = tmp_path / "RS.zst", tmp_path / "RC.zst"
    write_ndjson_zst(rs, subs)
    write_ndjson_zst(rc, coms)
    c0, s0 = ingest(tmp_path / "inline", [rs], [rc], batch_rows=64, workers=0)
    c2, s2 = ingest(tmp_path / "pool", [rs], [rc], batch_rows=64, workers=2)
    assert c0 == c2 and c0["comments"] == 600
    for dataset in ("items", "comments"):
        for name in s0["datasets"][dataset]:
            a = read_shard(Path(s0["datasets"][dataset][name]["path"]))
            b = read_shard(Path(s2["datasets"][dataset][name]["path"]))
            assert a.equals(b), (dataset, name)


def test_expand_requests_globs_and_missing_files(tmp_path: Path) -> None:
    for name in ("RS_2023-02.zst", "RS_2023-01.zst", "RC_2023-01.zst"):
        (tmp_path / name).write_bytes(b"")
    rows = DumpIngestStage.expand_requests([{"submissions": str(tmp_path / "RS_*.zst"), "comments": [str(tmp_path / "RC_2023-01.zst")]}])
    assert len(rows) == 1 and rows[0]["kind"] == "dump"
    spec = orjson.loads(rows[0]["spec"])
    assert spec == {"submissions": [str(tmp_path / "RS_2023-01.zst"), str(tmp_path / "RS_2023-02.zst")],
                    "comments": [str(tmp_path / "RC_2023-01.zst")]}
    again = DumpIngestStage.expand_requests([{"comments": [str(tmp_path / "RC_2023-01.zst")], "submissions": str(tmp_path / "RS_*.zst")}])
    assert again[0]["request_id"] == rows[0]["request_id"]
    with pytest.raises(ConfigError, match=r"requests\[1\]\.comments.*RC_2023-03\.zst"):
        DumpIngestStage.expand_requests([{"comments": str(tmp_path / "RC_2023-01.zst")},
                                         {"comments": [str(tmp_path / "RC_2023-03.zst")]}])
    with pytest.raises(ConfigError, match=r"requests\[0\]\.submissions: glob .*RS_1999.*matches no file"):
        DumpIngestStage.expand_requests([{"submissions": str(tmp_path / "RS_1999*.zst")}])
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['comment'\]"):
        DumpIngestStage.expand_requests([{"comment": "x"}])
    with pytest.raises(ConfigError, match="names no files"):
        DumpIngestStage.expand_requests([{"submissions": []}])


def test_config_rejects_bad_dates() -> None:
    with pytest.raises(ValueError, match="since"):
        DumpConfig(since="last tuesday")


def test_big_window_over_long_line_and_truncated_file(tmp_path: Path) -> None:
    recs = [_sub(i, f"b{i}", "image") for i in range(1, 4)]
    big = tmp_path / "RS_long.zst"
    write_ndjson_zst(big, [recs[0], b'{"id": "b9", "title": "' + b"x" * 20000 + b'"}', recs[1]], window_log=28)
    with pytest.raises(zstandard.ZstdError):  # the default decoder refuses Pushshift's big windows
        zstandard.ZstdDecompressor().stream_reader(open(big, "rb")).read(100)
    counters, _ = ingest(tmp_path / "run", [big], None, max_line_bytes=8192)
    assert counters["items"] == 2 and counters["invalid"] == 1
    err = read_dataset(tmp_path / "run" / "errors" / "reddit.dumps", "errors").to_pylist()
    assert [(e["record_key"], e["error_type"]) for e in err] == [(f"{big}:2", "LineTooLong")]

    whole = tmp_path / "RS_whole.zst"
    write_ndjson_zst(whole, [_sub(i, f"t{i}", "image") for i in range(1, 400)], level=1)
    cut = tmp_path / "RS_cut.zst"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    counters, _ = ingest(tmp_path / "run2", [cut], None, batch_rows=50)
    err = read_dataset(tmp_path / "run2" / "errors" / "reddit.dumps", "errors").to_pylist()
    assert [e["error_type"] for e in err] in (["ZstdError"], ["JSONDecodeError"])  # cut mid-frame or mid-line
    assert 0 < counters["items"] < 399


def test_comment_depths_cycles_and_long_chains() -> None:
    n = 5000  # deeper than Python's recursion limit
    ids = [f"x{i}" for i in range(n)]
    parents = [None] + ids[:-1]
    assert comment_depths(["u"] * n, ids[::-1], parents[::-1]) == list(range(n))[::-1]
    assert comment_depths(["u", "u", "u"], ["a", "b", "c"], ["b", "a", "zz"]) in ([0, 1, 1], [1, 0, 1])
    # the same comment id under two items is two comments
    assert comment_depths(["u", "v", "v"], ["a", "a", "b"], [None, "q", "a"]) == [0, 1, 2]


class _Exploding(DumpIngestStage):
    def stream(self, requests, sink):  # type: ignore[override]
        super().stream(requests, sink)
        raise RuntimeError("worker died")


def test_crash_leaves_no_shards_and_rerun_overwrites(tmp_path: Path, dump_pair) -> None:
    rs, rc, _ = dump_pair
    run = tmp_path / "run"
    stage = _Exploding(DumpConfig(workers=0, buckets=2), run)
    sink = BucketSink(run, stage.name, stage.outputs, 2, row_group_bytes=1)  # flush every write: temp files exist
    with pytest.raises(RuntimeError), sink:
        stage.stream(DumpIngestStage.expand_requests([{"submissions": [str(rs)], "comments": [str(rc)]}]), sink)
    assert not list(run.rglob("*.parquet")) and not [p for p in run.rglob("*") if p.is_file()]

    # a crash that could not clean up: leftover temp files, and shards of an earlier 5-bucket run
    (run / "items").mkdir(parents=True, exist_ok=True)
    (run / "items" / ".part-00001.parquet.0.stream.tmp").write_bytes(b"junk")
    (run / "items" / "part-00004.parquet").write_bytes(b"stale")
    counters, summary = ingest(run, [rs], [rc], buckets=2)
    names = sorted(p.name for p in (run / "items").iterdir())
    assert names == ["part-00000.parquet", "part-00001.parquet"]
    assert sum(s["rows"] for s in summary["datasets"]["items"].values()) == 6


def test_sink_rejects_unknown_dataset_and_bucket(tmp_path: Path) -> None:
    sink = BucketSink(tmp_path, "reddit.dumps", {"items": "items"}, 2)
    with pytest.raises(ConfigError, match="not one of its outputs"):
        sink.write("media", 0, [{"uid": "x"}])
    with pytest.raises(ConfigError, match="bucket 2 out of range"):
        sink.write("items", 2, [{"uid": "x"}])
    sink.abort()
