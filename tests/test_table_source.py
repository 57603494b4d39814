"""``table.read`` (blift.collect.table): tables a user already has (CSV, TSV, JSON lines, Parquet,
local, on an fsspec URL, or a Hub dataset) streamed into items, comments, behavior and videos.

Every input is made here; nothing is downloaded. The Hub is the stand-in of
tests/servers/hub_server.py (reached by the real ``datasets`` client in a child process, since
huggingface_hub reads HF_ENDPOINT at import and this session is offline on purpose), S3 is the
moto endpoint of tests/servers/s3_server.py.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import subprocess
import sys
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image
from pydantic import ValidationError

from blift.collect.table.mapping import MapContext, TableMapping, map_row, parse_time
from blift.collect.table.read import TableReadConfig, TableReadStage
from blift.errors import ConfigError, InvalidRecord
from blift.ids import author_hash, unpack_raw
from blift.pipeline import RunOptions, run_pipeline
from blift.registry import load_stage
from blift.runner.bucket_sink import stream_into_buckets
from blift.tables import read_dataset

ROOT = Path(__file__).resolve().parents[1]
UTC = timezone.utc
EPOCH = 1_790_000_000  # SOURCE_DATE_EPOCH of these tests: the snapshot time when no column gives one
COLUMNS = ["post_id", "image", "caption", "user", "likes", "ctr", "mem", "posted", "replies", "lang", "note"]
POSTED = [datetime(2024, 5, 1, 10, 0, tzinfo=UTC), datetime(2024, 5, 2, 8, 30, tzinfo=UTC),
          datetime(2024, 5, 3, tzinfo=UTC)]
ROWS: list[dict[str, Any]] = [
    {"post_id": "p1", "image": "https://img.example/p1.jpg", "caption": "A red barn", "user": "alice_photos",
     "likes": 120, "ctr": 0.25, "mem": 0.8, "posted": POSTED[0],
     "replies": [{"text": "lovely", "score": 5, "author": "bob", "id": "c1", "parent_id": None},
                 {"text": "agreed", "score": 2, "author": "carol", "id": "c2", "parent_id": "c1"},
                 {"text": "me too", "score": 1, "author": "bob", "id": "c3", "parent_id": "c2"}],
     "lang": "en", "note": "from export 3"},
    {"post_id": "p2", "image": "https://img.example/p2.mp4", "caption": "Night sky", "user": "dave",
     "likes": 7, "ctr": 0.5, "mem": 0.1, "posted": POSTED[1],
     "replies": [{"text": "wow", "score": None, "author": None, "id": "c9", "parent_id": "gone"}],
     "lang": "de", "note": None},
    {"post_id": "p3", "image": None, "caption": "Just text", "user": None, "likes": None, "ctr": None,
     "mem": 0.5, "posted": POSTED[2], "replies": [], "lang": "en", "note": "x"},
]
CONFIG: dict[str, Any] = {
    "platform": "forum",
    "columns": {"id": "post_id", "media": "image", "title": "caption", "author": "user", "created_at": "posted",
                "comments": "replies"},
    "behavior": {"likes": {"column": "likes", "kind": "count", "to": "like_count"},
                 "ctr": {"column": "ctr", "kind": "ratio"},
                 "memorability": {"column": "mem", "kind": "score", "scale": [0, 1]}},
    "buckets": 3,
}


@pytest.fixture(autouse=True)
def _pinned_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(EPOCH))


# --------------------------------------------------------------------------------------- writers


def _cell(value: Any, posted: str) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return {"iso": value.isoformat().replace("+00:00", "Z"),
                "ms": str(int(value.timestamp() * 1000))}[posted]
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def write_csv(path: Path, rows: list[dict[str, Any]], delimiter: str = ",", posted: str = "iso") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh, delimiter=delimiter)
        out.writerow(COLUMNS)
        for row in rows:
            out.writerow([_cell(row.get(c), posted) for c in COLUMNS])
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        for row in rows:  # times as epoch seconds: the same instants as the other formats' text
            fh.write(orjson.dumps({k: int(v.timestamp()) if isinstance(v, datetime) else v for k, v in row.items()}))
            fh.write(b"\n")
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    comment = pa.struct([("text", pa.string()), ("score", pa.int64()), ("author", pa.string()),
                         ("id", pa.string()), ("parent_id", pa.string())])
    schema = pa.schema([("post_id", pa.string()), ("image", pa.string()), ("caption", pa.string()),
                        ("user", pa.string()), ("likes", pa.int64()), ("ctr", pa.float64()), ("mem", pa.float64()),
                        ("posted", pa.timestamp("us", tz="UTC")), ("replies", pa.list_(comment)),
                        ("lang", pa.string()), ("note", pa.string())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def ingest(run: Path, specs: list[dict[str, Any]], base: Path, **config: Any) -> tuple[dict[str, int], dict]:
    """The stage as the runner drives it: resolve and expand the requests, stream into a sink, close."""
    requests = TableReadStage.expand_requests(TableReadStage.resolve_requests(specs, base))
    return stream_into_buckets(TableReadStage(TableReadConfig(**{**CONFIG, **config}), run), requests, run)


def tables(run: Path) -> dict[str, list[dict[str, Any]]]:
    keys = {"items": ("uid",), "comments": ("uid", "comment_id"), "behavior": ("uid", "name"), "videos": ("uid",)}
    out = {}
    for name, key in keys.items():
        rows = read_dataset(run / name, name).to_pylist()
        out[name] = sorted(rows, key=lambda r: tuple(r[k] for k in key))
    return out


def side(run: Path, what: str) -> list[dict[str, Any]]:
    return read_dataset(run / what / "table.read", what).to_pylist()


def png(color: tuple[int, int, int], size: tuple[int, int] = (10, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------------------- formats


def test_csv_tsv_jsonl_and_parquet_with_the_same_rows_give_the_same_tables(tmp_path: Path):
    inputs = {
        "csv": write_csv(tmp_path / "csv" / "posts.csv", ROWS),
        "tsv": write_csv(tmp_path / "tsv" / "posts.tsv", ROWS, delimiter="\t", posted="ms"),
        "jsonl": write_jsonl(tmp_path / "jsonl" / "posts.jsonl", ROWS),
        "parquet": write_parquet(tmp_path / "parquet" / "posts.parquet", ROWS),
    }
    results = {}
    for fmt, path in inputs.items():
        counters, summary = ingest(tmp_path / f"run-{fmt}", [{"path": str(path)}], tmp_path)
        assert counters["in"] == 3 and counters["items"] == 3 and counters["invalid"] == 0, (fmt, counters)
        assert summary["errors"] == {} and summary["dropped"] == {}
        results[fmt] = tables(tmp_path / f"run-{fmt}")
        assert sorted(p.name for p in (tmp_path / f"run-{fmt}" / "behavior").glob("*.parquet")) == [
            f"part-{b:05d}.parquet" for b in range(3)]
    for fmt in ("tsv", "jsonl", "parquet"):
        assert results[fmt] == results["csv"], fmt

    got = results["csv"]
    items = {r["uid"]: r for r in got["items"]}
    assert sorted(items) == ["forum:p1", "forum:p2", "forum:p3"]
    p1, p2, p3 = items["forum:p1"], items["forum:p2"], items["forum:p3"]
    assert (p1["platform"], p1["item_id"], p1["source"], p1["title"]) == ("forum", "p1", "table", "A red barn")
    assert p1["media_kind"] == "image" and p1["media_urls"] == ["https://img.example/p1.jpg"]
    assert p1["url"] == "https://img.example/p1.jpg" and p1["permalink"] is None
    assert p2["media_kind"] == "video" and p2["media_urls"] == ["https://img.example/p2.mp4"]  # remote video: no row
    assert p3["media_kind"] == "text" and p3["media_urls"] == []
    assert [i["created_at"] for i in (p1, p2, p3)] == POSTED
    assert {i["collected_at"] for i in items.values()} == {datetime.fromtimestamp(EPOCH, UTC)}
    assert (p1["like_count"], p2["like_count"], p3["like_count"]) == (120, 7, None)
    assert p1["author_hash"] == author_hash("alice_photos") and p3["author_hash"] is None
    assert unpack_raw(p1["raw"]) == {"lang": "en", "note": "from export 3"}  # the unmapped columns, nothing else
    assert unpack_raw(p2["raw"]) == {"lang": "de", "note": None}
    assert got["videos"] == []

    behavior = {(r["uid"], r["name"]): r for r in got["behavior"]}
    assert len(behavior) == 9
    assert behavior[("forum:p1", "likes")] | {"collected_at": None} == {
        "uid": "forum:p1", "name": "likes", "value": 120.0, "kind": "count", "scale_min": None, "scale_max": None,
        "collected_at": None}
    assert behavior[("forum:p1", "ctr")]["kind"] == "ratio" and behavior[("forum:p1", "ctr")]["value"] == 0.25
    assert (behavior[("forum:p2", "memorability")]["scale_min"], behavior[("forum:p2", "memorability")]["scale_max"]) \
        == (0.0, 1.0)
    assert behavior[("forum:p3", "likes")]["value"] is None  # the row had none: the value is null, not 0

    comments = got["comments"]
    assert [(c["uid"], c["comment_id"], c["parent_id"], c["depth"], c["text"]) for c in comments] == [
        ("forum:p1", "c1", None, 0, "lovely"), ("forum:p1", "c2", "c1", 1, "agreed"),
        ("forum:p1", "c3", "c2", 2, "me too"), ("forum:p2", "c9", "gone", 1, "wow")]
    assert comments[0]["author_hash"] == author_hash("bob") and comments[3]["author_hash"] is None
    assert comments[0]["score"] == 5 and comments[3]["score"] is None

    # authors never leave the mapping as names: in no column and no raw of any table
    for fmt in inputs:
        for path in (tmp_path / f"run-{fmt}").rglob("*.parquet"):
            data = pq.read_table(path).to_pylist()
            assert not any(n in repr(data) for n in ("alice_photos", "'dave'", "carol")), path


def test_a_folder_and_a_glob_read_every_table_in_order(tmp_path: Path):
    data = tmp_path / "data"
    write_csv(data / "a.csv", ROWS[:1])
    write_jsonl(data / "sub" / "b.jsonl", ROWS[1:2])
    write_parquet(data / "sub" / "deeper" / "c.parquet", ROWS[2:])
    (data / "README.txt").write_text("not a table")
    (data / "dataset_info.json").write_text('{\n  "note": "metadata, not rows"\n}\n')  # .json: rows only if named
    write_csv(data / ".hidden" / "x.csv", [dict(ROWS[0], post_id="hidden")])
    write_csv(data / "_tmp.csv", [dict(ROWS[0], post_id="underscore")])
    counters, _ = ingest(tmp_path / "run", [{"path": "data"}], tmp_path)  # relative: to the pipeline's folder
    assert counters["inputs"] == 3 and counters["items"] == 3
    assert [r["item_id"] for r in tables(tmp_path / "run")["items"]] == ["p1", "p2", "p3"]

    write_csv(data / "more.csv", [dict(ROWS[0], post_id="p4")])
    counters, _ = ingest(tmp_path / "run-glob", [{"path": "data/*.csv"}], tmp_path)
    assert counters["inputs"] == 3  # a glob takes what it matches, a _name too
    assert [r["item_id"] for r in tables(tmp_path / "run-glob")["items"]] == ["p1", "p4", "underscore"]

    with pytest.raises(ConfigError, match=r"requests\[0\]: glob .*nothing\*\.csv.* matches no file"):
        ingest(tmp_path / "r", [{"path": "data/nothing*.csv"}], tmp_path)
    with pytest.raises(ConfigError, match=r"requests\[0\].media_roots: .*missing.* does not exist"):
        ingest(tmp_path / "r", [{"path": "data", "media_roots": ["missing"]}], tmp_path)
    (data / "odd.txt").write_text("id\n1\n")
    with pytest.raises(ConfigError, match="odd.txt: unknown format"):
        ingest(tmp_path / "r", [{"path": "data/odd.txt"}], tmp_path)
    counters, _ = ingest(tmp_path / "run-fmt", [{"path": "data/odd.txt", "format": "csv"}], tmp_path,
                         columns={"id": "id"}, behavior={})
    assert counters["items"] == 1


def test_an_fsspec_url_input_and_media_roots_for_it(tmp_path: Path):
    import fsspec

    fs = fsspec.filesystem("memory")
    buf = io.StringIO()
    out = csv.writer(buf)
    out.writerow(["id", "pic", "likes"])
    out.writerows([["u1", "https://x.example/1.png", "3"], ["u2", "pics/a.png", "4"]])
    fs.pipe("/tables/t1/posts.csv", buf.getvalue().encode())
    fs.pipe("/tables/t1/more/posts2.csv", b"id,pic,likes\nu3,,5\n")
    folder = tmp_path / "media"
    (folder / "pics").mkdir(parents=True)
    (folder / "pics" / "a.png").write_bytes(png((0, 200, 0)))
    config = {"columns": {"id": "id", "media": "pic"}, "behavior": {"likes": {"column": "likes", "kind": "count"}}}
    try:
        counters, _ = ingest(tmp_path / "run", [{"path": "memory://tables/t1"}], tmp_path, **config)
        assert counters["items"] == 2 and counters["invalid"] == 1  # a URL's table gives no local files
        (error,) = side(tmp_path / "run", "errors")
        assert error["record_key"] == "memory:///tables/t1/posts.csv:2" and error["error_type"] == "no_media_roots"
        assert "column 'pic'" in error["message"] and "media_roots" in error["message"]

        counters, _ = ingest(tmp_path / "run2", [{"path": "memory://tables/t1/*.csv", "media_roots": ["media"]}],
                             tmp_path, **config)
        assert counters["items"] == 2 and counters["invalid"] == 0 and counters["media_local_images"] == 1
        items = {r["item_id"]: r for r in tables(tmp_path / "run2")["items"]}
        assert items["u2"]["media_urls"][0].startswith("run:media_files/")
        assert (tmp_path / "run2" / items["u2"]["media_urls"][0][4:]).read_bytes() == png((0, 200, 0))
    finally:
        fs.rm("/tables", recursive=True)


@pytest.mark.slow
def test_a_table_on_s3_is_read_through_its_url(tmp_path: Path, s3):
    write_csv(tmp_path / "posts.csv", ROWS)
    s3.fs.put_file(str(tmp_path / "posts.csv"), f"{s3.name}/in/posts.csv")
    write_jsonl(tmp_path / "x.jsonl", [dict(ROWS[0], post_id="p9")])
    s3.fs.put_file(str(tmp_path / "x.jsonl"), f"{s3.name}/in/later/x.jsonl")
    counters, _ = ingest(tmp_path / "run", [{"path": s3.url("in")}], tmp_path)
    assert counters["inputs"] == 2 and counters["items"] == 4 and counters["invalid"] == 0
    assert [r["item_id"] for r in tables(tmp_path / "run")["items"]] == ["p1", "p2", "p3", "p9"]


# --------------------------------------------------------------------------------------- bad input


def test_every_bad_row_is_an_error_naming_file_row_and_column_and_the_good_rows_are_written(tmp_path: Path):
    folder = tmp_path / "in"
    (folder / "imgs").mkdir(parents=True)
    (folder / "imgs" / "a.png").write_bytes(png((200, 0, 0)))
    (tmp_path / "secret.png").write_bytes(png((1, 2, 3)))
    os.symlink(tmp_path / "secret.png", folder / "imgs" / "link.png")
    good = {"caption": "ok", "likes": "3", "ctr": "0.5", "mem": "0.5", "posted": "2024-01-01", "replies": "[]"}
    cases: list[tuple[dict[str, Any] | bytes, str | None, str | None]] = [  # (row, column, error_type)
        ({"post_id": "g1", "image": "imgs/a.png"}, None, None),
        ({"post_id": ""}, "post_id", "missing_id"),
        ({"post_id": "g3", "likes": "lots"}, "likes", "bad_number"),
        ({"post_id": "g4", "ctr": "1.5"}, "ctr", "out_of_range"),
        ({"post_id": "g5", "mem": "7"}, "mem", "out_of_range"),
        ({"post_id": "g6", "posted": "yesterday"}, "posted", "bad_time"),
        ({"post_id": "g7", "image": "ftp://host/x.png"}, "image", "bad_media"),
        ({"post_id": "g8", "image": "../secret.png"}, "image", "outside_roots"),
        ({"post_id": "g9", "image": "imgs/link.png"}, "image", "symlink"),
        ({"post_id": "g10", "image": "imgs/missing.png"}, "image", "missing"),
        ({"post_id": "g11", "replies": "lovely"}, "replies", "bad_comments"),
        ({"post_id": "g12", "replies": '[{"text": "x", "score": "many"}]'}, "replies", "bad_comments"),
        (b"g13,,too,few\n", None, "bad_row"),
        (b"g14,,caption \xff not utf-8,u,3,0.5,0.5,2024-01-01,[],en,\n", "caption", "bad_utf8"),
        ({"post_id": "g1", "image": "imgs/a.png", "caption": "second"}, None, "duplicate"),
        ({"post_id": "g16", "image": "https://x.example/16.jpg"}, None, None),
    ]
    buf = io.BytesIO()
    buf.write((",".join(COLUMNS) + "\n").encode())
    for row, _, _ in cases:
        if isinstance(row, bytes):
            buf.write(row)
        else:
            full = {**good, **row}
            line = io.StringIO()
            csv.writer(line).writerow([full.get(c, "") for c in COLUMNS])
            buf.write(line.getvalue().replace("\r\n", "\n").encode())
    table = folder / "posts.csv"
    table.write_bytes(buf.getvalue())

    counters, summary = ingest(tmp_path / "run", [{"path": str(table)}], tmp_path)
    errors = {e["record_key"]: e for e in side(tmp_path / "run", "errors")}
    expected = {f"{table}:{n}": (col, kind) for n, (_, col, kind) in enumerate(cases, 1)
                if kind not in (None, "duplicate")}
    assert sorted(errors) == sorted(expected)
    for key, (col, kind) in expected.items():
        error = errors[key]
        assert error["error_class"] == "invalid" and error["error_type"] == kind, error
        row_number = key.rsplit(":", 1)[1]
        assert error["message"].startswith(f"{table}: row {row_number}: "), error
        if col:
            assert f"column {col!r}" in error["message"], error
    assert "line 14" in errors[f"{table}:13"]["message"]  # the physical line too (the header is line 1)

    items = {r["item_id"]: r for r in tables(tmp_path / "run")["items"]}
    assert sorted(items) == ["g1", "g16"]
    assert items["g1"]["title"] == "ok" and items["g1"]["media_urls"][0].startswith("run:")
    (dropped,) = side(tmp_path / "run", "dropped")
    assert (dropped["uid"], dropped["reason"]) == ("forum:g1", "duplicate_id") and "row 15" in dropped["detail"]
    assert counters["in"] == len(cases) == counters["items"] + counters["invalid"] + counters["dropped:duplicate_id"]
    assert summary["errors"] == {"invalid": len(expected)} and summary["dropped"] == {"duplicate_id": 1}
    assert counters["invalid:out_of_range"] == 2
    assert (tmp_path / "secret.png").read_bytes() not in [p.read_bytes() for p in (tmp_path / "run").rglob("*.png")]


def test_a_cut_or_broken_input_is_one_error_and_the_rows_before_it_are_kept(tmp_path: Path):
    cfg = {"columns": {"id": "post_id", "title": "caption"}, "behavior": {}, "batch_rows": 50}
    head = "post_id,caption\n"
    cut_quote = tmp_path / "cut_quote.csv"
    cut_quote.write_text(head + "a1,one\na2,two\na3,\"a quoted text the copy stopped in")
    cut_row = tmp_path / "cut_row.csv"
    cut_row.write_text(head + "b1,one\nb2,two\nb3")
    jsonl = tmp_path / "lines.jsonl"
    jsonl.write_bytes(b'{"post_id": "j1", "caption": "x"}\n\n{"post_id": "j2", "caption": "bad \xff byte"}\n'
                      b'[1, 2]\n{"post_id": "j4", "caption": "y"}\n{"post_id": "j5", "capt')
    full = pa.table({"post_id": [f"q{i}" for i in range(1000)], "caption": [f"caption {i}" * 3 for i in range(1000)]})
    good = io.BytesIO()
    pq.write_table(full, good, row_group_size=100)
    footer = tmp_path / "footer.parquet"
    footer.write_bytes(good.getvalue()[:-20])
    corrupt = bytearray(good.getvalue())
    at = len(corrupt) // 2
    corrupt[at:at + 64] = b"\x55" * 64
    (tmp_path / "corrupt.parquet").write_bytes(bytes(corrupt))
    lines = b"".join(orjson.dumps({"post_id": f"z{i}", "caption": f"text {i} " * 20}) + b"\n" for i in range(3000))
    packed = gzip.compress(lines)
    (tmp_path / "cut.jsonl.gz").write_bytes(packed[: len(packed) * 2 // 3])

    specs = [{"path": str(p)} for p in (cut_quote, cut_row, jsonl, footer, tmp_path / "corrupt.parquet",
                                        tmp_path / "cut.jsonl.gz")]
    counters, _ = ingest(tmp_path / "run", specs, tmp_path, **cfg)
    errors = {e["record_key"]: e for e in side(tmp_path / "run", "errors")}
    ids = [r["item_id"] for r in tables(tmp_path / "run")["items"]]

    assert errors[f"{cut_quote}:3"]["error_type"] == "input_stopped"
    assert "unreadable after row 2" in errors[f"{cut_quote}:3"]["message"]
    assert "cut inside a quoted value" in errors[f"{cut_quote}:3"]["message"]
    assert errors[f"{cut_row}:3"]["error_type"] == "bad_row" and "expected 2 fields, got 1" in \
        errors[f"{cut_row}:3"]["message"]
    assert {"a1", "a2", "b1", "b2"} <= set(ids)
    # JSON lines: each bad line is one error in its place; the lines after it are read
    assert {"j1", "j4"} <= set(ids) and not {"j2", "j5"} & set(ids)
    assert [errors[f"{jsonl}:{n}"]["error_type"] for n in (2, 3, 5)] == ["bad_json"] * 3
    assert "line 3" in errors[f"{jsonl}:2"]["message"] and "line 6" in errors[f"{jsonl}:5"]["message"]
    assert errors[f"{footer}:1"]["message"].startswith(
        f"{footer}: unreadable after row 0: not a readable Parquet file (ArrowInvalid: ")
    kept_q = sum(i.startswith("q") for i in ids)
    assert 0 < kept_q < 1000 and kept_q % 50 == 0  # whole batches before the corrupt page
    (stopped,) = [e for k, e in errors.items() if k.startswith(str(tmp_path / "corrupt.parquet"))]
    assert f"unreadable after row {kept_q}" in stopped["message"]
    kept_z = sum(i.startswith("z") for i in ids)
    assert 0 < kept_z < 3000
    (gz,) = [e for k, e in errors.items() if k.startswith(str(tmp_path / "cut.jsonl.gz"))]
    assert gz["error_type"] == "input_stopped" and f"unreadable after row {kept_z}" in gz["message"]
    assert counters["inputs"] == 6 and counters["inputs_stopped"] == 4


def test_a_column_the_input_lacks_is_one_config_error_listing_its_columns(tmp_path: Path):
    table = write_csv(tmp_path / "posts.csv", ROWS)
    columns = dict(CONFIG["columns"], title="captoin")
    behavior = dict(CONFIG["behavior"], views={"column": "view_count", "kind": "count"})
    with pytest.raises(ConfigError) as info:
        ingest(tmp_path / "run", [{"path": str(table)}], tmp_path, columns=columns, behavior=behavior)
    message = str(info.value)
    assert "table.read: request " in message and str(table) in message
    assert "'captoin' (columns.title)" in message and "'view_count' (behavior.views)" in message
    assert str(sorted(COLUMNS)) in message
    assert not list((tmp_path / "run").glob("items/*.parquet"))  # nothing published


def test_config_and_request_mistakes_are_named(tmp_path: Path):
    base = dict(CONFIG)
    for bad, match in [
        ({"behavior": {"m": {"column": "mem", "kind": "score"}}}, "a score needs its scale"),
        ({"behavior": {"m": {"column": "mem", "kind": "ratio", "to": "like_count"}}}, "to: like_count takes a count"),
        ({"behavior": {"a": {"column": "x", "kind": "count", "to": "view_count"},
                       "b": {"column": "y", "kind": "count", "to": "view_count"}}}, "more than one value"),
        ({"behavior": {"two words": {"column": "x", "kind": "count"}}}, "behavior name"),
        ({"platform": "My Site"}, "platform"),
        ({"columns": {"media": "image"}}, "id"),
        ({"columns": {"id": "post_id", "titel": "caption"}}, "titel"),
        ({"store": "../elsewhere"}, "store"),
    ]:
        with pytest.raises(ValidationError, match=match):
            TableReadConfig(**{**base, **bad})
    fixed = TableReadConfig(**{**base, "collected_at": "2024-06-01T12:00:00+02:00"})
    assert fixed.fixed_time() == datetime(2024, 6, 1, 10, tzinfo=UTC) and fixed.mapping().collected_at_column is None
    from_yaml = TableReadConfig(**{**base, **yaml.safe_load("collected_at: 2024-06-01")})  # YAML reads a date
    assert from_yaml.fixed_time() == datetime(2024, 6, 1, tzinfo=UTC)
    assert TableReadConfig(**{**base, "collected_at": "crawled"}).mapping().collected_at_column == "crawled"
    write_csv(tmp_path / "posts.csv", ROWS)
    for spec, match in [
        ({"path": "posts.csv", "dataset": "a/b"}, "exactly one of 'path'"),
        ({"path": "posts.csv", "sheet": 1}, r"unknown key\(s\) \['sheet'\]"),
        ({"path": "posts.csv", "format": "xlsx"}, "format: 'xlsx'"),
        ({"path": "nope.csv"}, "no such file or folder"),
        ({"dataset": "a/b/c"}, "Hub dataset id"),
    ]:
        with pytest.raises(ConfigError, match=match):
            TableReadStage.expand_requests(TableReadStage.resolve_requests([spec], tmp_path))


def test_the_stage_is_registered_under_its_name():
    cls = load_stage("table.read")
    assert cls is TableReadStage and cls.__module__ == "blift.collect.table.read"
    assert set(cls.outputs) == {"items", "comments", "behavior", "videos"}


# --------------------------------------------------------------------------------------- mapping


def test_values_parse_the_same_from_text_and_typed_cells():
    t = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    for value in ("2024-05-01T10:00:00Z", "2024-05-01T12:00:00+02:00", "2024-05-01 10:00:00", 1714557600,
                  "1714557600", 1714557600000, "1714557600000.0", 1714557600.0, t, t.replace(tzinfo=None)):
        assert parse_time(value, "w", "c") == t, value
    assert parse_time(date(2024, 5, 1), "w", "c") == datetime(2024, 5, 1, tzinfo=UTC)
    assert parse_time("", "w", "c") is None and parse_time(float("nan"), "w", "c") is None
    mapping = TableMapping(platform="t", columns=TableReadConfig(**CONFIG).columns,
                           behavior=TableReadConfig(**CONFIG).behavior, collected_at_column="seen")
    ctx = MapContext(collected_at=t)
    row = {"post_id": 12.0, "posted": None, "seen": "2024-06-01", "likes": "1e3", "ctr": "", "mem": 1,
           "replies": ["first", {"text": "reply", "parent_id": "#0"}], "extra": b"\x00\x01", "uploader": "zed"}
    mapped = map_row(row, mapping, ctx, "f.csv: row 1")
    assert mapped.uid == "t:12" and mapped.item["like_count"] == 1000
    assert mapped.item["collected_at"] == datetime(2024, 6, 1, tzinfo=UTC)
    assert {b["name"]: b["value"] for b in mapped.behavior} == {"likes": 1000.0, "ctr": None, "memorability": 1.0}
    assert [(c["comment_id"], c["parent_id"], c["depth"]) for c in mapped.comments] == [("#0", None, 0),
                                                                                       ("#1", "#0", 1)]
    assert unpack_raw(mapped.item["raw"]) == {"extra": "AAE=", "uploader": author_hash("zed")}
    for bad, column in [({"likes": "1.5"}, "likes"), ({"seen": None}, "seen"), ({"likes": True}, "likes"),
                        ({"replies": [{"id": "a", "parent_id": "b"}, {"id": "b", "parent_id": "a"}]}, "replies"),
                        ({"replies": [{"id": "a"}, {"id": "a"}]}, "replies"), ({"post_id": None}, "post_id")]:
        with pytest.raises(InvalidRecord, match=f"f.csv: row 1: column '{column}'"):
            map_row({**row, **bad}, mapping, ctx, "f.csv: row 1")


# --------------------------------------------------------------------------------------- the runner


def _pipeline(path: Path, stages: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"name": "tables", "stages": stages}))
    return path


def test_a_rerun_skips_the_finished_stream_and_a_changed_table_is_read_again(tmp_path: Path):
    table = write_csv(tmp_path / "data" / "posts.csv", ROWS)
    pipe = _pipeline(tmp_path / "p.yaml", [{"stage": "table.read", "requests": [{"path": "data/posts.csv"}],
                                             "config": CONFIG}])
    run = tmp_path / "run"
    report = run_pipeline(pipe, RunOptions(out=run, progress=False))
    assert not report.failed and report.plans[0].skipped == []
    stats = report.stats["stages"]["table.read"]
    assert stats["out"] == {"items": 3, "comments": 4, "behavior": 9, "videos": 0}
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*.parquet")}
    again = run_pipeline(pipe, RunOptions(out=run, progress=False))
    assert again.plans[0].skipped == ["_stream"] and not again.plans[0].todo
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*.parquet") if "requests" not in p.parts} == {
        p: t for p, t in before.items() if "requests" not in p.parts}
    write_csv(table, [*ROWS, dict(ROWS[0], post_id="p4")])
    third = run_pipeline(pipe, RunOptions(out=run, progress=False))
    assert third.plans[0].skipped == [] and read_dataset(run / "items", "items").num_rows == 4


@pytest.mark.slow
def test_local_images_and_a_video_are_stored_once_and_media_download_checks_them(tmp_path: Path):
    from video_factory import Segment, make_video, require_tools

    require_tools("ffmpeg", "ffprobe")
    folder = tmp_path / "in"
    (folder / "imgs").mkdir(parents=True)
    (folder / "imgs" / "a.png").write_bytes(png((250, 0, 0)))
    (folder / "imgs" / "a copy.png").write_bytes(png((250, 0, 0)))  # same bytes, another name
    Image.new("RGB", (16, 12), (0, 0, 250)).save(folder / "imgs" / "b.jpg", "JPEG")
    make_video(folder / "clip.mp4", [Segment("testsrc", 12)], fps=12)
    with open(folder / "posts.csv", "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["id", "files", "likes", "views"])
        out.writerows([["v1", "clip.mp4", "10", "900"], ["i1", "imgs/a.png", "5", ""],
                       ["i2", "imgs/a copy.png", "3", ""], ["g1", '["imgs/a.png", "imgs/b.jpg"]', "8", ""]])
    pipe = _pipeline(tmp_path / "p.yaml", [
        {"stage": "table.read", "requests": [{"path": "in/posts.csv"}],
         "config": {"platform": "mine", "columns": {"id": "id", "media": "files"}, "buckets": 2,
                    "behavior": {"likes": {"column": "likes", "kind": "count", "to": "like_count"},
                                 "views": {"column": "views", "kind": "count", "to": "view_count"}}}},
        {"stage": "media.download", "config": {"threads": 1}},
    ])
    run = tmp_path / "run"
    report = run_pipeline(pipe, RunOptions(out=run, workers=1, progress=False))
    assert not report.failed
    got = tables(run)
    items = {r["item_id"]: r for r in got["items"]}
    assert {k: v["media_kind"] for k, v in items.items()} == {"v1": "video", "i1": "image", "i2": "image",
                                                              "g1": "gallery"}
    assert items["i1"]["media_urls"] == items["i2"]["media_urls"] == items["g1"]["media_urls"][:1]
    assert items["v1"]["view_count"] == 900 and items["v1"]["like_count"] == 10
    (video,) = got["videos"]
    assert (video["uid"], video["file_status"], video["source_info"]) == ("mine:v1", "ok", "table")
    assert items["v1"]["media_urls"] == [f"run:{video['file_path']}"]
    assert video["file_bytes"] == (folder / "clip.mp4").stat().st_size
    stored = sorted(p.name for p in (run / "media_files").rglob("*") if p.is_file())
    assert len(stored) == 3 and {Path(n).suffix for n in stored} == {".png", ".jpg", ".mp4"}  # each content once
    media = read_dataset(run / "media", "media").to_pylist()
    assert len(media) == 5 and {m["status"] for m in media} == {"ok"}, media
    by_uid = {(m["uid"], m["index"]): m for m in media}
    assert by_uid[("mine:v1", 0)]["duration_s"] == pytest.approx(1.0, abs=0.1)
    assert (by_uid[("mine:g1", 1)]["mime"], by_uid[("mine:g1", 1)]["width"]) == ("image/jpeg", 16)


@pytest.mark.slow
def test_a_hub_dataset_is_streamed_by_id_through_the_stand_in_hub(tmp_path: Path):
    from servers.hub_server import HubServer

    rows = [{"post_id": f"h{i}", "caption": f"post {i}", "likes": i * 10, "ctr": 0.1 * i, "lang": "en"}
            for i in range(1, 6)]
    rows[3]["ctr"] = 2.0  # h4: a ratio outside 0..1
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf, row_group_size=2)
    pipe = _pipeline(tmp_path / "p.yaml", [{"stage": "table.read",
                                            "requests": [{"dataset": "org/posts", "split": "train"}],
                                            "config": {"platform": "hubby", "buckets": 2, "batch_rows": 2,
                                                       "columns": {"id": "post_id", "title": "caption"},
                                                       "behavior": {"likes": {"column": "likes", "kind": "count"},
                                                                    "ctr": {"column": "ctr", "kind": "ratio"}}}}])
    run = tmp_path / "run"
    child = ("import json, sys\nfrom pathlib import Path\nfrom blift.pipeline import RunOptions, run_pipeline\n"
             "r = run_pipeline(Path(sys.argv[1]), RunOptions(out=sys.argv[2], progress=False))\n"
             "print(json.dumps(r.stats['stages']['table.read']))\n")
    with HubServer() as hub:
        hub._create_repo("org/posts", "dataset", False, "tester")
        commit = hub.commit_files("org/posts", {"data/train-00000-of-00001.parquet": buf.getvalue()})
        env = dict(os.environ, HF_ENDPOINT=hub.endpoint, HF_HUB_DISABLE_XET="1", HF_HUB_OFFLINE="0",
                   HF_DATASETS_OFFLINE="0", HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_TELEMETRY="1",
                   PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        proc = subprocess.run([sys.executable, "-c", child, str(pipe), str(run)], env=env, capture_output=True,
                              text=True, timeout=240)
        assert proc.returncode == 0, proc.stderr[-3000:]
        ranged = [r for r in hub.log("resolve", "org/posts") if r.status == 206]
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    assert stats["out"]["items"] == 4 and stats["errors"] == {"invalid": 1}
    assert ranged, "the rows came through ranged reads of the dataset's files (streaming), not a download"
    items = {r["item_id"]: r for r in tables(run)["items"]}
    assert sorted(items) == ["h1", "h2", "h3", "h5"]
    assert items["h2"]["uid"] == "hubby:h2" and items["h2"]["title"] == "post 2"
    assert unpack_raw(items["h2"]["raw"]) == {
        "lang": "en", "_source": {"dataset": "org/posts", "config": None, "split": "train", "revision": commit}}
    (error,) = side(run, "errors")
    assert error["record_key"] == "org/posts[train]:4"
    assert error["message"].startswith("org/posts[train]: row 4: column 'ctr': ratio 2.0 is outside 0..1")


def test_seen_ids_remember_every_id_across_merges():
    from blift.collect.table.seen import SeenIds
    from blift.ids import uid_hash

    seen = SeenIds(merge_at=7)
    hashes = [uid_hash(f"t:{i}") for i in range(100)]
    for h in hashes[:50]:
        assert h not in seen
        seen.add(h)
    assert len(seen) == 50 and all(h in seen for h in hashes[:50]) and not any(h in seen for h in hashes[50:])
    assert 2**64 - 1 not in seen and 0 not in seen


@pytest.mark.slow
def test_the_shipped_blift_hub_pipeline_imports_a_replica_of_the_published_corpus(tmp_path: Path):
    """pipelines/blift-hub.yaml's table.read step on a Parquet replica of behavior-in-the-wild/BLIFT
    (its published columns and types) served by the stand-in Hub: Reddit uids from the permalinks,
    comments in published order, the comment count as behavior, the image URL as media."""
    from servers.hub_server import HubServer

    schema = pa.schema([("url", pa.string()), ("permalink", pa.string()), ("comments", pa.list_(pa.string())),
                        ("num_comments", pa.int64()), ("subreddit", pa.string()), ("title", pa.string())])
    rows = [{"url": f"https://i.redd.it/img{i}.jpg", "permalink": f"/r/pics/comments/ab{i}cd/a_title_{i}/",
             "comments": [f"comment {j} on post {i}" for j in range(i)], "num_comments": 10 * i,
             "subreddit": "pics", "title": f"Post {i}"} for i in range(1, 4)]
    rows.append({"url": "https://i.redd.it/x.jpg", "permalink": "/r/pics/about/", "comments": [],
                 "num_comments": 0, "subreddit": "pics", "title": "no post id in its permalink"})
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buf)
    run = tmp_path / "run"
    child = ("import json, sys\nfrom pathlib import Path\nfrom blift.pipeline import RunOptions, run_pipeline\n"
             "r = run_pipeline(Path(sys.argv[1]), RunOptions(out=sys.argv[2], progress=False),\n"
             "                 only=['table.read'])\n"
             "print(json.dumps(r.stats['stages']['table.read']))\n")
    with HubServer() as hub:
        hub._create_repo("behavior-in-the-wild/BLIFT", "dataset", False, "tester")
        hub.commit_files("behavior-in-the-wild/BLIFT", {"data/train-00000-of-00001.parquet": buf.getvalue()})
        env = dict(os.environ, HF_ENDPOINT=hub.endpoint, HF_HUB_DISABLE_XET="1", HF_HUB_OFFLINE="0",
                   HF_DATASETS_OFFLINE="0", HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_TELEMETRY="1",
                   PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        proc = subprocess.run([sys.executable, "-c", child, str(ROOT / "pipelines" / "blift-hub.yaml"), str(run)],
                              env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    assert stats["out"]["items"] == 3 and stats["errors"] == {"invalid": 1}
    out = tables(run)
    items = {r["uid"]: r for r in out["items"]}
    assert sorted(items) == ["reddit:ab1cd", "reddit:ab2cd", "reddit:ab3cd"]
    post = items["reddit:ab2cd"]
    assert (post["item_id"], post["community"], post["num_comments"]) == ("ab2cd", "pics", 20)
    assert post["media_urls"] == ["https://i.redd.it/img2.jpg"]
    assert post["permalink"] == "/r/pics/comments/ab2cd/a_title_2/"
    texts = [c["text"] for c in out["comments"] if c["uid"] == "reddit:ab3cd"]  # sorted by comment id
    assert texts == ["comment 0 on post 3", "comment 1 on post 3", "comment 2 on post 3"]
    assert {(b["uid"], b["name"], b["value"]) for b in out["behavior"]} == {
        ("reddit:ab1cd", "num_comments", 10.0), ("reddit:ab2cd", "num_comments", 20.0),
        ("reddit:ab3cd", "num_comments", 30.0)}
    (error,) = side(run, "errors")
    assert "no id in '/r/pics/about/'" in error["message"] and "column 'permalink'" in error["message"]


WORDY = ["What a wonderful evening light over the water", "I used to fish there every summer as a kid",
         "The colours remind me of an old oil painting", "Which camera did you use for this shot"]


@pytest.mark.slow
def test_the_blift_hub_pipeline_turns_the_published_corpus_into_records(tmp_path: Path):
    """The whole of pipelines/blift-hub.yaml on a replica of behavior-in-the-wild/BLIFT through the
    stand-in Hub, its images on a loopback host: the published posts have no score, so each gets a
    generic behavior record stating what is known (its comment count and comments) and its
    content control; a post whose image is not on the allowed host is dropped, counted."""
    from servers.hub_server import HubServer
    from servers.media_server import MediaServer

    schema = pa.schema([("url", pa.string()), ("permalink", pa.string()), ("comments", pa.list_(pa.string())),
                        ("num_comments", pa.int64()), ("subreddit", pa.string()), ("title", pa.string())])
    pipeline = yaml.safe_load((ROOT / "pipelines" / "blift-hub.yaml").read_text())
    stages = {s["stage"]: s for s in pipeline["stages"]}
    assert stages["media.download"]["config"]["hosts"] == ["i.redd.it"]
    with MediaServer() as media, HubServer() as hub:
        rows = []
        for i in range(1, 4):
            img = Image.effect_noise((64, 48), 40 + 20 * i).convert("RGB")
            buf = io.BytesIO()
            img.save(buf, "JPEG")
            rows.append({"url": media.image(f"/img{i}.jpg", buf.getvalue()),
                         "permalink": f"/r/pics/comments/ab{i}cd/a_title_{i}/",
                         "comments": WORDY[: i + 1],
                         "num_comments": 10 * i, "subreddit": "pics", "title": f"Sunset over the lake {i}"})
        rows.append({**rows[0], "url": "https://imgur.example/elsewhere.jpg",
                     "permalink": "/r/pics/comments/zz9zz/elsewhere/"})
        data = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), data)
        hub._create_repo("behavior-in-the-wild/BLIFT", "dataset", False, "tester")
        hub.commit_files("behavior-in-the-wild/BLIFT", {"data/train-00000-of-00001.parquet": data.getvalue()})
        # the loopback host stands for i.redd.it; everything else is the shipped file
        stages["media.download"]["config"].update(hosts=["127.0.0.1"], allow_private_addresses=True)
        stages["attributes"]["config"] = {"ocr": False}
        pipe = tmp_path / "blift-hub.yaml"
        pipe.write_text(yaml.safe_dump(pipeline, sort_keys=False))
        run = tmp_path / "run"
        child = ("import json, sys\nfrom pathlib import Path\nfrom blift.pipeline import RunOptions, run_pipeline\n"
                 "r = run_pipeline(Path(sys.argv[1]), RunOptions(out=sys.argv[2], progress=False, workers=1))\n"
                 "print(json.dumps(r.stats['stages']['instruct']))\n")
        env = dict(os.environ, HF_ENDPOINT=hub.endpoint, HF_HUB_DISABLE_XET="1", HF_HUB_OFFLINE="0",
                   HF_DATASETS_OFFLINE="0", HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_TELEMETRY="1",
                   PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        proc = subprocess.run([sys.executable, "-c", child, str(pipe), str(run)], env=env, capture_output=True,
                              text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    assert stats["dropped"] == {"no_media": 1}
    records = {r["id"]: r for r in read_dataset(run / "instructions", "instructions").to_pylist()}
    assert set(records) == {f"reddit:ab{i}cd:{task}" for i in range(1, 4) for task in ("behavior", "content")}
    rec = records["reddit:ab2cd:behavior"]
    human, answer = (t["value"] for t in rec["conversations"])
    assert rec["template"] == "generic_image_behavior" and rec["media"][0].startswith("media_files/")
    assert 'This image was shared on Reddit.\nIt was posted in r/pics.\nIts title is "Sunset over the lake 2".' in human
    assert human.endswith("Give the number of comments and the top comments.")
    listed = "\n".join(f"{k}. {c}" for k, c in enumerate(WORDY[:3], 1))
    assert answer == "Number of comments: 20\nTop comments:\n" + listed
    assert rec["targets"]["num_comments"] == 20 and rec["targets"]["score"] is None
    assert len(rec["targets"]["comments"]) == 3 and records["reddit:ab2cd:content"]["targets"] is None
