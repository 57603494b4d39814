"""Dump ingestion (blift.collect.reddit.dumps) through the runner's BucketSink into a real run folder."""

from __future__ import annotations

import random
import tempfile
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import orjson
import pyarrow as pa
import pytest
import zstandard

from blift import schemas
from blift.collect.reddit.dump_finalize import comment_depths
from blift.collect.reddit.dump_parse import bucket_of
from blift.collect.reddit.dumps import DumpConfig, DumpIngestStage
from blift.errors import ConfigError, SchemaError
from blift.ids import author_hash, unpack_raw
from blift.runner.bucket_sink import BucketSink, stream_into_buckets
from blift.synthetic.reddit_dumps import comment, generate, submission, write_ndjson_zst
from blift.tables import read_dataset, read_shard, shard_paths
from dump_files import CHAIN, T0, _com, _sub, dump_lines


def write_plain(path: Path, lines: list[Any]) -> Path:
    with open(path, "wb") as fh:
        for rec in lines:
            fh.write(rec if isinstance(rec, bytes) else orjson.dumps(rec))
            fh.write(b"\n")
    return path


def ingest(
    run_dir: Path, submissions: list[Path] | None, comments: list[Path] | None, **config: Any
) -> tuple[dict, dict]:
    """Run the stage the way the runner does: expand, stream into a BucketSink, close."""
    config.setdefault("workers", 0)
    entry = {k: [str(p) for p in v] for k, v in (("submissions", submissions), ("comments", comments)) if v}
    requests = DumpIngestStage.expand_requests([entry])
    return stream_into_buckets(DumpIngestStage(DumpConfig(**config), run_dir), requests, run_dir)


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
    assert (items["aa1"]["score"] == 99
            and items["aa1"]["collected_at"] == datetime.fromtimestamp(T0 + 5000, timezone.utc))
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
    want = ({f"{rs}:{n}": t for n, t in expect["sub_errors"].items()}
            | {f"{rc}:{n}": t for n, t in expect["com_errors"].items()})
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
    assert counters["in"] == (counters["blank"] + counters["invalid"] + counters["items"] + counters["comments"]
                              + dropped_total)
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
    rows = DumpIngestStage.expand_requests([{"submissions": str(tmp_path / "RS_*.zst"),
                                             "comments": [str(tmp_path / "RC_2023-01.zst")]}])
    assert len(rows) == 1 and rows[0]["kind"] == "dump"
    spec = orjson.loads(rows[0]["spec"])
    assert spec == {"submissions": [str(tmp_path / "RS_2023-01.zst"), str(tmp_path / "RS_2023-02.zst")],
                    "comments": [str(tmp_path / "RC_2023-01.zst")]}
    again = DumpIngestStage.expand_requests([{"comments": [str(tmp_path / "RC_2023-01.zst")],
                                              "submissions": str(tmp_path / "RS_*.zst")}])
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


# ------------------------------------------------------------- fast path == reference path
#
# ``ingest_batch`` builds columns directly (blift.collect.reddit.dump_rows); ``ingest_batch_reference``
# is the row-dict path through reddit_rows.item_row / comment_row and ids.pack_raw. Every result
# field must match: table (raw bytes, author hashes, every column), bucket ranges, error rows,
# dropped rows, counters, kept ids.

import glob as _glob  # noqa: E402

import numpy as np  # noqa: E402

from blift.collect.reddit import dump_finalize, dump_parse, dump_pool, dump_read  # noqa: E402
from blift.collect.reddit.dump_finalize import comment_depths_vectorized  # noqa: E402
from blift.collect.reddit.dump_rows import (  # noqa: E402
    _AUTHOR_KEY_RE,
    AuthorCache,
    _top_level_keys_only,
    pack_raw_inplace,
)
from blift.ids import _AUTHOR_KEY_BYTES, _AUTHOR_KEYS, pack_raw  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _filters(**kw: Any) -> Any:
    base = dict(stage="reddit.dumps", buckets=7, subreddits=None, since=None, until=None, image_only=False,
                drop_rows=True, fallback_collected_at=datetime.fromtimestamp(T0 + 123, timezone.utc))
    base.update(kw)
    return dump_parse._Filters(**base)


def _line(rec: Any) -> bytes:
    return rec if isinstance(rec, bytes) else orjson.dumps(rec)


def assert_same_batches(kind: str, lines: list[bytes | None], f: Any, kept: np.ndarray | None,
                        batch: int = 97) -> dump_parse._Batch:
    """Run both paths over ``lines`` in batches; every result field must be equal. Returns the last."""
    out = None
    for start in range(0, len(lines), batch):
        part = lines[start:start + batch]
        ref = dump_parse.ingest_batch_reference(kind, "F", start + 1, part, f, kept, 1 << 20)
        fast = dump_parse.ingest_batch(kind, "F", start + 1, part, f, kept, 1 << 20)
        assert (ref.table is None) == (fast.table is None)
        if ref.table is not None:
            assert fast.table.schema.equals(ref.table.schema, check_metadata=True)
            for name in ref.table.column_names:  # column by column: a failure names the column
                assert fast.table[name].equals(ref.table[name]), (kind, start, name)
            assert fast.table["raw"].to_pylist() == ref.table["raw"].to_pylist()
        assert fast.ranges == ref.ranges
        assert fast.failures == ref.failures
        assert fast.dropped == ref.dropped
        assert fast.counts == ref.counts
        if kind == "submissions":
            assert fast.kept_ids.tolist() == ref.kept_ids.tolist()
        out = fast
    return out


def _kept(sub_lines: list[bytes | None], f: Any) -> np.ndarray:
    b = dump_parse.ingest_batch_reference("submissions", "F", 1, sub_lines, f, None, 1 << 20)
    return np.unique(b.kept_ids)


@pytest.mark.parametrize("filters", [
    {},
    {"subreddits": frozenset({"pics", "art", "aww"}), "image_only": True},
    {"since": float(1_672_531_200 + 5 * 86400), "until": float(1_672_531_200 + 20 * 86400), "drop_rows": False},
])
def test_fast_path_matches_reference_on_synthetic_dump(filters: dict[str, Any], monkeypatch) -> None:
    monkeypatch.setenv("BLIFT_AUTHOR_SALT", "test-salt")
    subs, coms = generate(150, 1500, seed=11)
    sub_lines, com_lines = [orjson.dumps(s) for s in subs], [orjson.dumps(c) for c in coms]
    f = _filters(**filters)
    assert_same_batches("submissions", sub_lines, f, None)
    kept = _kept(sub_lines, f)
    last = assert_same_batches("comments", com_lines, f, kept)
    assert last.table is not None and last.counts["comments"] > 0
    assert_same_batches("comments", com_lines, f, None)  # comments without submission files


def test_fast_path_matches_reference_on_the_sample() -> None:
    posts = [orjson.loads(Path(p).read_bytes()) for p in sorted(_glob.glob(str(ROOT / "samples/reddit/posts/*.json")))]
    assert len(posts) >= 30
    sub_lines = [orjson.dumps(p["post"]) for p in posts]
    com_lines = [orjson.dumps(c) for p in posts for c in p["comments"]]
    f = _filters()
    b = assert_same_batches("submissions", sub_lines, f, None, batch=1000)
    assert b.counts["items"] == len(posts)
    b = assert_same_batches("comments", com_lines, f, _kept(sub_lines, f), batch=1000)
    assert b.counts["comments"] == len(com_lines)


def test_fast_path_matches_reference_on_test_dump_lines(monkeypatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(T0 + 777_777))
    subs, coms, _ = dump_lines()
    sub_lines, com_lines = [_line(r) for r in subs], [_line(r) for r in coms]
    for f in (_filters(), _filters(subreddits=frozenset({"pics", "art"}), since=float(T0 - 86400), image_only=True)):
        assert_same_batches("submissions", sub_lines, f, None, batch=5)
        assert_same_batches("comments", com_lines, f, _kept(sub_lines, f), batch=7)
        assert_same_batches("comments", com_lines + [None], f, None, batch=1000)  # None: an over-long line


def _odd_comments() -> list[Any]:
    """Comments with every unusual shape the reference mapping accepts (or rejects) differently."""
    c = lambda n, **kw: {**_com(n, f"e{n:02d}", "aa1", None, T0 + n), **kw}  # noqa: E731
    return [
        c(1, created_utc=str(T0)), c(2, created_utc=T0 + 0.5), c(3, score="12"), c(4, score=True),
        c(5, author=12345), c(6, author=["x"]), c(7, retrieved_on=str(T0 + 9)),
        c(8, _meta={"retrieved_2nd_on": T0 + 99}),
        c(9, _meta={"retrieved_2nd_on": None}, retrieved_utc=T0 + 7), c(10, retrieved_on=-5),
        c(11, created_utc=10**12), c(12, author="[deleted]"), c(13, author=""), c(14, author=None),
        c(15, author="AutoModerator"), c(16, author="helpful_bot"),
        c(17, replies={"data": {"author": "hidden"}}),
        c(18, all_awardings=[{"author": "giver", "name": "gold"}]),
        c(19, **{'x"author': "quoted key"}), c(20, author_flair_richtext=[{"e": "text", "t": "flair"}]),
        c(21, author_fullname=None), c(22, body="line\nbreak \\ back\"slash é 😀"), c(23, body=None),
        c(24, body=123), c(25, parent_id="t1_"), c(26, parent_id=None), c(27, parent_id=5),
        c(28, is_submitter=1), c(29, stickied="yes"), c(30, distinguished="moderator"),
        c(31, id="t1_e31"), c(32, link_id="aa1"), c(33, created_utc=None), c(34, score=None),
        c(35, gildings={"gid_1": 2}), c(36, author_flair_text="flair", author_id="t2_x", uploader="u"),
        c(37, retrieved_on=""), c(38, created_utc=""), c(39, author_flair_richtext={"author": "n"}),
        c(40, nested={"deep": [{"x": [1, {"author_url": "http://a"}]}]}),
    ] + [
        {k: v for k, v in _com(41, "e41", "aa1", None, T0).items() if k != "id"},  # id from "name"
        _com(42, "E42", "aa1", None, T0),  # uppercase: not a reddit id
        b'{"id":"e43","link_id":"t3_aa1","nest":' + b"[" * 300 + b"]" * 300 + b"}",  # parses, too deep to dump
    ]


def _odd_submissions() -> list[Any]:
    s = lambda n, kind="image", **kw: {**_sub(n, f"s{n:02d}", kind), **kw}  # noqa: E731
    return [
        s(1, subreddit={"display_name": "pics"}), s(2, upvote_ratio=1), s(3, permalink="r/pics/x"), s(4, permalink=""),
        s(5, title=None), s(6, title=123), s(7, over_18="yes"), s(8, "gallery"),
        s(9, crosspost_parent_list=[{"author": "orig", "author_fullname": "t2_o", "title": "x"}]),
        s(10, created_utc=str(T0)), s(11, num_comments=None), s(12, "gallery", gallery_data="broken"),
        s(13, "self", author="[removed]"), s(14, "video"), s(15, "link", retrieved_utc=T0 + 3),
        s(16, upvote_ratio="0.5"), s(17, spoiler=None), s(18, selftext=None, url=None), s(19, score=2.5),
        s(20, _meta={"retrieved_2nd_on": str(T0)}), s(21, author=None, author_fullname=None),
        s(22, post_hint=None, link_flair_text="Flair &amp; more"), s(23, id="t3_s23"),
    ]


def test_fast_path_matches_reference_on_odd_records(monkeypatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(T0 + 42))
    f = _filters(since=float(T0 - 10), image_only=False)
    sub_lines = [_line(r) for r in _odd_submissions()]
    com_lines = [_line(r) for r in _odd_comments()]
    b = assert_same_batches("submissions", sub_lines, f, None, batch=1000)
    assert b.failures and b.counts["items"] >= 15  # some rejected, most mapped
    assert_same_batches("submissions", sub_lines, _filters(image_only=True), None, batch=6)
    b = assert_same_batches("comments", com_lines, f, _kept([_line(_sub(0, "aa1", "image"))], f), batch=1000)
    assert b.failures and b.counts["comments"] >= 30
    assert_same_batches("comments", com_lines, f, None, batch=4)


@pytest.mark.parametrize("bad", [{"distinguished": 5}, {"score": 2**63 + 5}])
def test_unconvertible_batch_fails_like_the_reference(bad: dict[str, Any]) -> None:
    """A value Arrow cannot take fails the batch the same way on both paths."""
    lines = [_line(_com(1, "f01", "aa1", None, T0)), _line(_com(2, "f02", "aa1", None, T0, **bad))]
    errors = []
    for fn in (dump_parse.ingest_batch_reference, dump_parse.ingest_batch):
        with pytest.raises(Exception) as info:
            fn("comments", "F", 1, lines, _filters(), None, 1 << 20)
        errors.append((type(info.value), str(info.value)))
    assert errors[0] == errors[1]


def test_pack_raw_inplace_is_pack_raw() -> None:
    rng = random.Random(5)
    cache = AuthorCache()
    cache.use("salt-x")
    records = [c for c in _odd_comments() if isinstance(c, dict)] + [s for s in _odd_submissions()]
    records += [submission(rng, i) for i in range(50)] + [comment(rng, i, "aa1", None, "pics", T0) for i in range(50)]
    for rec in records:
        for drop in (True, False):
            copy = orjson.loads(orjson.dumps(rec))
            want = pack_raw(rec, drop_keys=("replies",) if drop else (), salt="salt-x")
            try:
                got = pack_raw_inplace(copy, cache, drop)
            except orjson.JSONEncodeError:
                with pytest.raises(orjson.JSONEncodeError):
                    pack_raw(rec, salt="salt-x")
                continue
            assert got == want


def test_top_level_check_never_misses_a_nested_author_key() -> None:
    """Where the shortcut says "top level only", pack_raw's regex count must be the top level's."""
    rng = random.Random(9)
    keys = ["author", "author_id", "name_author", "x", 'q"author', "a\\", "uploader_url", "{", 'k\\"author']
    values: list[Any] = ["{\"", "\\", 'x"author":', "author", 1, None, [], {}]

    def tree(depth: int) -> Any:
        if depth > 2 or rng.random() < 0.3:
            return rng.choice(values)
        if rng.random() < 0.5:
            return [tree(depth + 1) for _ in range(rng.randint(0, 3))]
        return {rng.choice(keys): tree(depth + 1) for _ in range(rng.randint(0, 3))}

    for key in sorted(_AUTHOR_KEYS):  # every key, its prefixes and extensions, at both levels
        rec = {key: 1, key + "x": 2, "x" + key: 3, key[:-1]: 4, "n": {key: 5, key + "_id": 6}, "l": [{key[:-1]: 7}]}
        raw = orjson.dumps(rec, option=orjson.OPT_SORT_KEYS)
        assert _AUTHOR_KEY_RE.findall(raw) == _AUTHOR_KEY_BYTES.findall(raw), key
    shortcuts = 0
    for _ in range(3000):
        top = {rng.choice(keys): tree(1) for _ in range(rng.randint(0, 4))}
        raw = orjson.dumps(top, option=orjson.OPT_SORT_KEYS)
        present = sum(1 for k in top if k in _AUTHOR_KEYS)
        assert _AUTHOR_KEY_RE.findall(raw) == _AUTHOR_KEY_BYTES.findall(raw), raw  # the trie regex is ids' regex
        if _top_level_keys_only(raw):
            shortcuts += 1
            assert len(_AUTHOR_KEY_BYTES.findall(raw)) == present, raw
    assert shortcuts > 300


# The straightforward line-by-line reader the block reader must agree with.
def _read_batches(path: Path, batch_rows: int, max_line_bytes: int) -> Iterator[tuple[int, list[bytes | None]]]:
    """(first line number, lines) batches of a ``.zst`` or plain NDJSON file, in constant memory.

    Lines stay bytes: orjson parses UTF-8 bytes directly and rejects invalid UTF-8 per line, which
    a text wrapper would turn into a whole-file failure. An over-long line comes out as ``None``
    (reported as an error) and its bytes are skipped, never held.
    """
    with open(path, "rb") as raw:
        if path.suffix == ".zst":
            stream: Any = zstandard.ZstdDecompressor(max_window_size=2**31).stream_reader(
                raw, read_size=dump_read._READ_CHUNK)
        else:
            stream = raw
        line_no, batch, first = 0, [], 1
        tail = b""
        skipping = False  # inside an over-long line
        while True:
            chunk = stream.read(dump_read._READ_CHUNK)
            if not chunk:
                break
            parts = chunk.split(b"\n")
            parts[0] = tail + parts[0]
            tail = parts.pop()
            for part in parts:
                line_no += 1
                if skipping:
                    skipping = False
                    batch.append(None)
                else:
                    batch.append(part if len(part) <= max_line_bytes else None)
                if len(batch) >= batch_rows:
                    yield first, batch
                    batch, first = [], line_no + 1
            if len(tail) > max_line_bytes:
                skipping, tail = True, b""
        if tail or skipping:
            line_no += 1
            batch.append(None if skipping else tail)
        if batch:
            yield first, batch


def test_read_blocks_gives_read_batches_lines(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(dump_read, "_READ_CHUNK", 64)  # lines and over-long lines across chunk ends
    rng = random.Random(3)
    lines = [b"x" * rng.choice([0, 1, 5, 30, 63, 64, 65, 100, 200, 500]) for _ in range(400)]
    lines[10] = b'{"a": 1}\r'
    for tail in (b"", b"last-no-newline", b"y" * 300):
        body = b"\n".join(lines) + b"\n" + tail
        for path in (tmp_path / "a.ndjson", tmp_path / "a.zst"):
            if path.suffix == ".zst":
                path.write_bytes(zstandard.ZstdCompressor().compress(body))
            else:
                path.write_bytes(body)
            for batch_rows, max_len in ((7, 120), (50, 64), (1000, 10_000)):
                want = [(first, batch) for first, batch in _read_batches(path, batch_rows, max_len)]
                flat_want = [ln for _, b in want for ln in b]
                got = list(dump_read.read_blocks(path, batch_rows, max_len))
                flat_got = [ln for _, _, p in got for ln in dump_read.lines_of(p, max_len)]
                assert flat_got == flat_want
                firsts, n = [], 1
                for first, count, pieces in got:
                    assert first == n and count == len(dump_read.lines_of(pieces, max_len))
                    firsts.append(first)
                    n += count
                assert all(c >= batch_rows for _, c, _ in got[:-1])


def test_vectorized_depths_match_the_walk() -> None:
    rng = random.Random(1)
    for trial in range(60):
        n = rng.randint(1, 300)
        uids = [f"u{rng.randint(0, 3)}" for _ in range(n)]
        ids = [f"c{i}" for i in range(n)]
        parents = [None if rng.random() < 0.2 else (f"c{rng.randint(0, i)}" if i and rng.random() < 0.9 else f"gone{i}")
                   for i in range(n)]
        parents = [None if p == ids[i] else p for i, p in enumerate(parents)]  # no self loops
        order = list(range(n))
        rng.shuffle(order)
        u, c, p = [uids[i] for i in order], [ids[i] for i in order], [parents[i] for i in order]
        got = comment_depths_vectorized(pa.array(u), pa.array(c), pa.array(p, pa.string()))
        assert got is not None and got.tolist() == comment_depths(u, c, p), trial
    # cycles and repeated keys: left to the reference walk
    assert comment_depths_vectorized(pa.array(["u"] * 3), pa.array(["a", "b", "c"]), pa.array(["b", "a", "zz"])) is None
    assert comment_depths_vectorized(pa.array(["u", "u"]), pa.array(["a", "a"]),
                                     pa.array([None, None], pa.string())) is None
    assert comment_depths_vectorized(pa.array([], pa.string()), pa.array([], pa.string()),
                                     pa.array([], pa.string())).tolist() == []


def test_finalize_matches_the_reference_finalize(tmp_path: Path) -> None:
    """One take instead of two, vectorized depths: the same table, duplicates and cycles included."""
    from blift import schemas as schemas_mod

    subs, coms = generate(40, 800, seed=2)
    coms = list(coms)
    coms += [dict(coms[5], score=12345, retrieved_on=coms[5]["retrieved_on"] + 10), dict(coms[9])]  # newer repeat, tie
    coms += [_com(900, "cy1", coms[0]["link_id"][3:], "cy2", T0), _com(901, "cy2", coms[0]["link_id"][3:], "cy1", T0)]
    f = _filters(buckets=1)
    tables = [dump_parse.ingest_batch("comments", "F", 1, [orjson.dumps(c) for c in coms], f, None, 1 << 20).table]
    items = dump_parse.ingest_batch("submissions", "F", 1, [orjson.dumps(s) for s in list(subs) * 2], f, None,
                                    1 << 20).table
    stage = DumpIngestStage(DumpConfig(), tmp_path)
    for dataset, table in (("comments", pa.concat_tables(tables)), ("items", items)):
        got = stage.finalize_bucket(dataset, table)
        keys = ["uid", "comment_id"] if dataset == "comments" else ["uid"]
        want = table.take(dump_finalize._newest_per_key(table, keys))
        if dataset == "comments":
            depth = comment_depths(want["uid"].to_pylist(), want["comment_id"].to_pylist(),
                                   want["parent_id"].to_pylist())
            want = want.set_column(want.schema.get_field_index("depth"), want.schema.field("depth"),
                                   pa.array(depth, pa.int32()))
            sort = [("uid", "ascending"), ("created_at", "ascending"), ("comment_id", "ascending")]
        else:
            sort = [("uid", "ascending")]
        want = want.take(pa.compute.sort_indices(want, sort_keys=sort))
        assert got.equals(want), dataset
        schemas_mod.get(dataset).validate(got)


def test_author_cache_hashes_like_author_hash() -> None:
    from blift.ids import author_hash, author_kind

    names = ["alice", "Bob_42", "[deleted]", "[removed]", "", "AutoModerator", "helpful_bot", "日本語のユーザー",
             "emoji😀name", "x" * 300, "t2_abc123"] + [f"user_{i}" for i in range(200)]
    for salt in ("blift-default-salt", "other salt", "ünïcode-salt"):
        cache = AuthorCache()
        cache.use(salt)
        for _ in range(2):  # misses, then hits
            for name in names:
                assert cache.hash(name) == author_hash(name, salt), (salt, name)
                assert cache.kind(name) == author_kind(name)
    cache.use("s1")
    first = cache.hash("alice")
    cache.use("s2")  # a new salt must not reuse the old hashes
    assert cache.hash("alice") == author_hash("alice", "s2") != first


def test_parse_workers_give_the_inline_results() -> None:
    """The pool path proper (workers up before the first batch): same batches as parsing inline."""
    subs, coms = generate(30, 400, seed=4)
    f = _filters(buckets=5)
    body = b"\n".join(orjson.dumps(c) for c in coms)
    pieces_batches = [(1 + 100 * i, [b"\n".join(body.split(b"\n")[100 * i:100 * (i + 1)])]) for i in range(4)]
    kept = _kept([orjson.dumps(s) for s in subs], f)
    parser = dump_pool._Parser(2, f, 1 << 20)
    try:
        for w in parser.starting:
            w.result(timeout=60)
        with tempfile.TemporaryDirectory() as tmp:
            kept_path = str(Path(tmp) / "kept.npy")
            np.save(kept_path, kept)
            pooled = list(parser.map("comments", "F", iter(pieces_batches), kept, kept_path))
    finally:
        parser.close()
    assert not parser.starting  # every batch went through the workers
    inline = [dump_parse.ingest_batch("comments", "F", first, dump_read.lines_of(p, 1 << 20), f, kept, 1 << 20)
              for first, p in pieces_batches]
    assert len(pooled) == len(inline) == 4
    for a, b in zip(pooled, inline):
        assert a.table.equals(b.table) and a.ranges == b.ranges and a.counts == b.counts
        assert a.failures == b.failures and a.dropped == b.dropped


def test_batches_in_flight_survive_a_corrupt_frame() -> None:
    """Reading fails after two batches went to the workers: both still come back, then the error."""
    f = _filters(buckets=3)
    lines = [orjson.dumps(_com(i, f"g{i:02d}", "aa1", None, T0 + i)) for i in range(40)]

    def batches():
        yield 1, [b"\n".join(lines[:20])]
        yield 21, [b"\n".join(lines[20:])]
        raise zstandard.ZstdError("corrupt frame")

    parser = dump_pool._Parser(2, f, 1 << 20)
    got = []
    try:
        for w in parser.starting:
            w.result(timeout=60)
        with pytest.raises(zstandard.ZstdError):
            for b in parser.map("comments", "F", batches(), None, None):
                got.append(b)
    finally:
        parser.close()
    assert [b.counts["comments"] for b in got] == [20, 20]


def _ingest_with(run_dir: Path, rs: Path, rc: Path, threads: int, **sink_opts: Any) -> tuple[dict, BucketSink]:
    """Ingest with a given number of finishing threads and sink options; returns the summary and
    the sink (closed)."""

    class Stage(DumpIngestStage):
        finalize_threads = threads  # type: ignore[assignment]

    stage = Stage(DumpConfig(workers=0, buckets=5, batch_rows=32), run_dir)
    sink = BucketSink(run_dir, stage.name, stage.outputs, stage.buckets(), **sink_opts)
    stage.stream(DumpIngestStage.expand_requests([{"submissions": [str(rs)], "comments": [str(rc)]}]), sink)
    reopened = any(len(f.starts) > 1 for f in sink._writers.values())
    summary = sink.close(stage)
    summary["reopened"] = reopened
    return summary, sink


def test_reopened_bucket_files_and_finishing_threads_give_the_same_bytes(tmp_path: Path, monkeypatch) -> None:
    """A bucket file closed and reopened many times (one open file, a flush per write) and buckets
    finished on several threads give shards identical byte for byte to the plain run."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(T0))
    subs, coms = generate(40, 400, seed=5)
    subs = list(subs)
    subs += subs[:5]  # repeated records: dedupe keeps the last of equal snapshots
    monkeypatch.setattr("blift.collect.reddit.dumps._WRITE_WINDOW", 1)  # a sink write per batch and bucket
    monkeypatch.setattr("blift.collect.reddit.dump_read._READ_CHUNK", 4096)  # many batches
    rs, rc = tmp_path / "RS.zst", tmp_path / "RC.zst"
    write_ndjson_zst(rs, subs)
    write_ndjson_zst(rc, coms)
    plain, _ = _ingest_with(tmp_path / "plain", rs, rc, 1)
    churn, _ = _ingest_with(tmp_path / "churn", rs, rc, 3, max_open_files=1, row_group_bytes=1)
    assert churn["reopened"] and not plain["reopened"]
    for dataset in ("items", "comments"):
        assert list(plain["datasets"][dataset]) == list(churn["datasets"][dataset])
        for name, shard in plain["datasets"][dataset].items():
            other = churn["datasets"][dataset][name]
            assert shard["rows"] == other["rows"]
            assert Path(shard["path"]).read_bytes() == Path(other["path"]).read_bytes(), (dataset, name)
    assert sum(s["rows"] for s in churn["datasets"]["comments"].values()) == 400
    assert sum(s["rows"] for s in churn["datasets"]["items"].values()) == 40
    assert not [p for p in (tmp_path / "churn").rglob("*.stream.tmp")]


class _FailingFinish(DumpIngestStage):
    finalize_threads = 2  # type: ignore[assignment]

    def finalize_bucket(self, dataset: str, table: pa.Table) -> pa.Table:
        if dataset == "comments" and table.num_rows:
            raise RuntimeError("finish failed")
        return super().finalize_bucket(dataset, table)


def test_failed_finishing_thread_leaves_no_temporary_files(tmp_path: Path, dump_pair) -> None:
    rs, rc, _ = dump_pair
    run = tmp_path / "run"
    stage = _FailingFinish(DumpConfig(workers=0, buckets=4), run)
    sink = BucketSink(run, stage.name, stage.outputs, 4)
    stage.stream(DumpIngestStage.expand_requests([{"submissions": [str(rs)], "comments": [str(rc)]}]), sink)
    with pytest.raises(RuntimeError, match="finish failed"):
        sink.close(stage)
    assert not [p for p in run.rglob("*") if p.is_file() and p.name.startswith(".")]
    assert len(list((run / "items").glob("part-*.parquet"))) == 4  # finished shards stay (abort)
    assert len(list((run / "comments").glob("part-*.parquet"))) < 4


def test_sink_rejects_a_null_in_a_required_column_of_a_conformed_table(tmp_path: Path) -> None:
    schema = schemas.get("items")
    row = {f.name: None for f in schema.arrow}
    row.update(uid="reddit:a", platform="reddit", item_id="a", source="dump", media_kind="none", media_urls=[],
               collected_at=datetime(2023, 1, 1, tzinfo=timezone.utc))
    table = schema.from_rows([row])
    required = [f.name for f in schema.arrow if not f.nullable]
    name = required[-1]
    i = table.schema.get_field_index(name)
    broken = table.set_column(i, table.schema.field(name), pa.nulls(1, table.schema.field(name).type))
    assert broken.schema.equals(schema.arrow, check_metadata=False)
    sink = BucketSink(tmp_path, "reddit.dumps", {"items": "items"}, 2)
    sink.write("items", 0, table)  # the good one passes
    with pytest.raises(SchemaError, match=f"field {name!r}: null"):
        sink.write("items", 1, broken)
    sink.abort()


def test_blift_run_ingests_dumps_and_a_rerun_skips_them(tmp_path: Path, dump_pair) -> None:
    """The stage through the runner (`blift run` with a reddit.dumps step), as the README shows:
    shards, stats and the stream manifest; a rerun with the same inputs does nothing."""
    import yaml

    from blift.pipeline import RunOptions, run_pipeline

    rs, rc, expect = dump_pair
    pipe = tmp_path / "dumps.yaml"
    pipe.write_text(yaml.safe_dump({"name": "dumps", "stages": [{
        "stage": "reddit.dumps", "requests": [{"submissions": [str(rs)], "comments": [str(rc)]}],
        "config": {"buckets": 3, "workers": 0}}]}))
    run_dir = tmp_path / "run"
    report = run_pipeline(pipe, RunOptions(out=run_dir, progress=False))
    assert not report.failed
    stats = report.stats["stages"]["reddit.dumps"]
    items = read_dataset(run_dir / "items", "items")
    comments = read_dataset(run_dir / "comments", "comments")
    assert stats["out"] == {"items": items.num_rows, "comments": comments.num_rows}
    assert sorted(p.name for p in (run_dir / "items").glob("*.parquet")) == [f"part-{b:05d}.parquet" for b in range(3)]
    before = {p: p.stat().st_mtime_ns for p in (run_dir / "items").glob("*.parquet")}
    run_pipeline(pipe, RunOptions(out=run_dir, progress=False))
    assert {p: p.stat().st_mtime_ns for p in (run_dir / "items").glob("*.parquet")} == before
