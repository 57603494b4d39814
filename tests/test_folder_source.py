"""``folder.scan``: a folder of the user's own images and videos as a source (issue 14, part 2).

Most tests drive the stage in this process (expand the requests, list the records, do each one),
which lets them watch which files are opened; the runner tests check resumability and the
shipped ``pipelines/local-folder.yaml`` end to end on ffmpeg-made videos and a PNG.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import socket
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from blift import schemas, tables
from blift.collect.folder.listing import Pattern, Selection, split_glob, walk
from blift.collect.folder.scan import FolderScanConfig, FolderScanStage
from blift.errors import ConfigError, RecordError
from blift.ids import author_hash, unpack_raw
from blift.pipeline import RunOptions, run_pipeline
from blift.stage import ShardInput

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ("items", "comments", "behavior", "videos")
MP4_HEAD = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"  # enough for identify(); not probed here


def png(size: tuple[int, int] = (12, 8), color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def fake_mp4(tag: bytes) -> bytes:
    return MP4_HEAD + tag * 16


@pytest.fixture
def media(tmp_path: Path) -> Path:
    """A small folder: images, a video, a copy, a text file, an image misnamed .mp4, and a video
    misnamed .dat, in nested folders."""
    root = tmp_path / "media"
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "b.png").write_bytes(png())
    (root / "a.png").write_bytes(png((5, 5)))
    (root / "sub" / "copy-of-b.png").write_bytes(png())  # same bytes as b.png
    (root / "sub" / "deep" / "clip.mp4").write_bytes(fake_mp4(b"clip"))
    (root / "sub" / "photo.mp4").write_bytes(png((3, 3)))  # an image, whatever its name says
    (root / "movie.dat").write_bytes(fake_mp4(b"movie"))  # a video, whatever its name says
    (root / "notes.txt").write_text("not media")
    return root


def run_dir_of(tmp_path: Path) -> Path:
    return tmp_path / "run"


def scan(tmp_path: Path, requests: list[dict[str, Any]], **config: Any) -> dict[str, Any]:
    """Do folder.scan in this process: rows per table over every request, in record order."""
    stage = FolderScanStage(FolderScanConfig(**config), run_dir_of(tmp_path))
    stage.setup()
    rows = FolderScanStage.expand_requests(FolderScanStage.resolve_requests(requests, tmp_path))
    out: dict[str, Any] = {**{table: [] for table in OUTPUTS}, "dropped": [], "errors": [], "counters": Counter(),
                           "keys": [], "requests": rows}
    for row in rows:
        shard = ShardInput(row["request_id"], {"requests": schemas.get("requests").from_rows([row])},
                           run_dir_of(tmp_path))
        for key, payload in stage.records(shard):
            out["keys"].append(key)
            try:
                result = stage.process_record(key, payload)
            except RecordError as exc:
                out["errors"].append((key, str(exc)))
                continue
            for table in OUTPUTS:
                out[table] += result.tables.get(table, [])
            out["dropped"] += result.dropped
            out["counters"].update(result.counters)
    for table in OUTPUTS:  # every row fits its schema; full rows from here on
        out[table] = schemas.get(table).from_rows(out[table]).to_pylist()
    schemas.get("dropped").from_rows([{"stage": "folder.scan", **d} for d in out["dropped"]])
    return out


def stored_files(tmp_path: Path) -> list[Path]:
    return sorted(p for p in (run_dir_of(tmp_path) / "media_files").rglob("*") if p.is_file())


# ------------------------------------------------------------------------------ listing and items


def test_files_are_found_recursively_in_sorted_order_and_stored_once_by_content(tmp_path: Path, media: Path):
    out = scan(tmp_path, [{"folder": "media"}])
    items = out["items"]
    assert [i["item_id"] for i in items] == ["a.png", "b.png", "movie.dat", "sub/copy-of-b.png",
                                             "sub/deep/clip.mp4", "sub/photo.mp4"]
    assert all(i["uid"] == f"local:{i['item_id']}" and i["platform"] == "local" and i["source"] == "folder"
               for i in items)
    kinds = {i["item_id"]: i["media_kind"] for i in items}
    assert kinds == {"a.png": "image", "b.png": "image", "movie.dat": "video", "sub/copy-of-b.png": "image",
                     "sub/deep/clip.mp4": "video", "sub/photo.mp4": "image"}  # by bytes, not by name
    by_id = {i["item_id"]: i for i in items}
    assert by_id["sub/deep/clip.mp4"]["title"] == "clip" and by_id["a.png"]["title"] == "a"
    mtime = datetime.fromtimestamp((media / "a.png").stat().st_mtime, tz=timezone.utc)
    assert by_id["a.png"]["created_at"] == mtime and by_id["a.png"]["author_hash"] is None

    # two identical files: two items, one stored file (and the originals untouched)
    assert by_id["b.png"]["media_urls"] == by_id["sub/copy-of-b.png"]["media_urls"]
    (ref,) = by_id["b.png"]["media_urls"]
    assert ref.startswith("run:media_files/") and ref.endswith(".png")
    assert (run_dir_of(tmp_path) / ref[4:]).read_bytes() == (media / "b.png").read_bytes() == png()
    assert len(stored_files(tmp_path)) == 5  # 6 items, 5 distinct contents
    assert out["counters"]["stored_existing"] == 1 and out["counters"]["stored_new"] == 5

    # videos: a videos row each, the stored file referenced
    videos = {v["uid"]: v for v in out["videos"]}
    assert set(videos) == {"local:movie.dat", "local:sub/deep/clip.mp4"}
    clip = videos["local:sub/deep/clip.mp4"]
    assert clip["file_status"] == "ok" and clip["source_info"] == "folder"
    assert clip["file_bytes"] == (media / "sub" / "deep" / "clip.mp4").stat().st_size
    assert clip["file_path"].endswith(".mp4") and clip["file_sha256"] in clip["file_path"]
    assert by_id["sub/deep/clip.mp4"]["media_urls"] == [f"run:{clip['file_path']}"]
    assert videos["local:movie.dat"]["file_path"].endswith(".mp4")  # the store names the container

    # the text file is dropped, counted
    assert [(d["uid"], d["record_id"], d["reason"]) for d in out["dropped"]] == [
        ("local:notes.txt", "notes.txt", "not_media")]
    assert out["counters"]["files_image"] == 4 and out["counters"]["files_video"] == 2


def test_the_request_row_and_the_platform_come_from_the_spec_and_the_config(tmp_path: Path, media: Path):
    out = scan(tmp_path, [{"folder": "media", "include": "*.png"}], platform="family")
    (row,) = out["requests"]
    spec = json.loads(row["spec"])
    assert row["kind"] == "folder" and spec["folder"] == str(media) and spec["include"] == ["*.png"]
    assert spec["listing"]["entries"] == 3 and len(spec["listing"]["sha256"]) == 32
    assert [i["uid"] for i in out["items"]] == ["family:a.png", "family:b.png", "family:sub/copy-of-b.png"]
    with pytest.raises(ValueError, match="platform"):
        FolderScanConfig(platform="Has Spaces")


def test_listing_reads_no_file_and_dropped_files_are_never_hashed(tmp_path: Path, media: Path,
                                                                  monkeypatch: pytest.MonkeyPatch):
    """records() only lists names; a non-media file is read for its first bytes and never hashed."""
    import blift.collect.media.local as local

    opened: list[str] = []
    hashed: list[str] = []
    real_open, real_hash = builtins.open, local.file_sha256

    def spy_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    def spy_hash(path: Any, **kwargs: Any) -> str:
        hashed.append(str(path))
        return real_hash(path, **kwargs)

    stage = FolderScanStage(FolderScanConfig(), run_dir_of(tmp_path))
    (row,) = FolderScanStage.expand_requests([{"folder": str(media)}])
    shard = ShardInput(row["request_id"], {"requests": schemas.get("requests").from_rows([row])}, tmp_path)
    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(local, "file_sha256", spy_hash)
    records = stage.records(shard)
    assert len(records) == 7 and not [p for p in opened if p.startswith(str(media))]
    for key, payload in records:
        stage.process_record(key, payload)
    assert str(media / "notes.txt") in opened and str(media / "notes.txt") not in hashed
    assert sorted(hashed) == sorted(str(media / p["rel"]) for _, p in records if p["rel"] != "notes.txt")


def test_symbolic_links_to_files_and_folders_are_refused_without_reading_their_targets(
        tmp_path: Path, media: Path, monkeypatch: pytest.MonkeyPatch):
    outside = tmp_path / "private"
    (outside / "album").mkdir(parents=True)
    (outside / "secret.png").write_bytes(png((7, 7), (1, 2, 3)))
    (outside / "album" / "inner.png").write_bytes(png((9, 9), (4, 5, 6)))
    os.symlink(outside / "secret.png", media / "linked.png")
    os.symlink(outside / "album", media / "sub" / "linked-album")
    os.symlink(media / "a.png", media / "inside-link.png")  # even a link that stays inside
    opened: list[str] = []
    real_open = builtins.open

    def spy_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(os.path.realpath(file) if isinstance(file, (str, os.PathLike)) else str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy_open)
    out = scan(tmp_path, [{"folder": "media"}])
    monkeypatch.undo()
    refused = {d["record_id"]: d["reason"] for d in out["dropped"] if d["reason"] != "not_media"}
    assert refused == {"linked.png": "symlink", "sub/linked-album": "symlink", "inside-link.png": "symlink"}
    assert "links are not followed" in next(d["detail"] for d in out["dropped"] if d["record_id"] == "linked.png")
    assert not [p for p in opened if p.startswith(str(outside))]  # the targets were never read
    assert not [i for i in out["items"] if "linked" in i["item_id"] or "inner" in i["item_id"]]
    assert all(str(tmp_path) not in (d["detail"] or "") for d in out["dropped"])  # no absolute paths


def test_special_files_are_dropped_without_being_opened(tmp_path: Path, media: Path):
    os.mkfifo(media / "pipe.mp4")  # reading a FIFO would block forever
    sock = socket.socket(socket.AF_UNIX)
    expected = {"pipe.mp4": "not_a_file"}
    try:
        if len(str(media / "sock.png")) < 100:  # the limit of a socket's path
            sock.bind(str(media / "sock.png"))
            expected["sock.png"] = "not_a_file"
        out = scan(tmp_path, [{"folder": "media"}])
    finally:
        sock.close()
    refused = {d["record_id"]: d["reason"] for d in out["dropped"] if d["reason"] != "not_media"}
    assert refused == expected


def test_include_exclude_globs_and_hidden_files(tmp_path: Path, media: Path):
    (media / ".thumbs").mkdir()
    (media / ".thumbs" / "t.png").write_bytes(png((2, 2)))
    (media / "._clip.mp4").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # a macOS companion file
    (media / "drafts").mkdir()
    (media / "drafts" / "d.png").write_bytes(png((4, 4)))

    def ids(**request: Any) -> list[str]:
        out = scan(tmp_path, [{"folder": "media", **request}])
        return [i["item_id"] for i in out["items"]] + [d["record_id"] for d in out["dropped"]]

    assert ids(include=["*.mp4"]) == ["sub/deep/clip.mp4", "sub/photo.mp4"]  # names at any depth
    assert ids(include=["sub/**"]) == ["sub/copy-of-b.png", "sub/deep/clip.mp4", "sub/photo.mp4"]
    assert ids(include=["/*.png"]) == ["a.png", "b.png"]  # a leading / anchors to the folder
    assert ids(include=["*.png"], exclude=["sub/**", "drafts/**"]) == ["a.png", "b.png"]
    assert ids(include=["**/deep/*"]) == ["sub/deep/clip.mp4"]
    assert ids(include=["[ab].png"]) == ["a.png", "b.png"]
    assert ids(exclude=["*.txt", "*.dat", "sub/**", "drafts/**"]) == ["a.png", "b.png"]
    assert ids(folder="media/sub/*.mp4") == ["photo.mp4"]  # a glob: its folder, then a top-level pattern
    assert ids(folder="media/**/*.mp4") == ["sub/deep/clip.mp4", "sub/photo.mp4"]
    hidden = ids(hidden=True, include=["*.png", "*.mp4"], exclude=["sub/**"])
    assert ".thumbs/t.png" in hidden and "._clip.mp4" in hidden  # the companion is then a (failing) video
    assert split_glob("/x/y/*.png") == ("/x/y", "/*.png") and split_glob("/x/y") == ("/x/y", None)
    assert Pattern("a/**").folder is not None and Pattern("*.png").folder is None
    entries, counts = walk(media, Selection(exclude=("drafts/**",)))
    assert counts["excluded_folders"] == 1 and counts["hidden"] == 2 and "drafts/d.png" not in [e.rel for e in entries]


def test_a_folder_whose_name_looks_like_a_glob_is_a_folder(tmp_path: Path):
    folder = tmp_path / "[2024] trip"
    folder.mkdir()
    (folder / "x.png").write_bytes(png())
    out = scan(tmp_path, [{"folder": "[2024] trip"}])
    assert [i["item_id"] for i in out["items"]] == ["x.png"]


@pytest.mark.parametrize("request_, message", [
    ({"folder": "missing"}, r"requests\[1\]: field 'folder': folder .*missing does not exist"),
    ({"folder": "media", "includes": ["*.png"]}, r"requests\[1\]: field 'includes': unknown key"),
    ({"folder": "media", "include": []}, r"requests\[1\]: field 'include': expected a pattern"),
    ({"folder": "media", "exclude": ["../x/**"]}, r"requests\[1\]: field 'exclude': .*'\.\.'"),
    ({"folder": "media/*.png", "include": ["*.mp4"]}, r"requests\[1\]: field 'include': give either"),
    ({"folder": "media", "join": "file_name"}, r"requests\[1\]: field 'join': only applies with a 'sidecar'"),
    ({"folder": "media", "behavior": {}}, r"requests\[1\]: field 'behavior': only applies with a 'sidecar'"),
    ({"folder": "media", "sidecar": "nope.csv"}, r"requests\[1\]: field 'sidecar': file .*nope.csv does not exist"),
    ({"folder": "media", "hidden": "yes"}, r"requests\[1\]: field 'hidden'"),
    ({"path": "media"}, r"requests\[1\]: expected a mapping with a 'folder' key"),
])
def test_bad_requests_are_config_errors_naming_the_entry_and_field(tmp_path: Path, media: Path,
                                                                   request_: dict[str, Any], message: str):
    (tmp_path / "other").mkdir()
    with pytest.raises(ConfigError, match=message):
        FolderScanStage.expand_requests(FolderScanStage.resolve_requests([{"folder": "other"}, request_], tmp_path))


def test_two_requests_that_would_make_the_same_item_are_refused(tmp_path: Path, media: Path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.png").write_bytes(png((6, 6)))
    with pytest.raises(ConfigError, match=r"requests\[1\]: field 'folder': 'a.png' is also listed by requests\[0\]"):
        FolderScanStage.expand_requests([{"folder": str(media)}, {"folder": str(other)}])
    rows = FolderScanStage.expand_requests([{"folder": str(media)}, {"folder": str(other), "exclude": "a.png"},
                                            {"folder": str(media)}])  # the same request twice is one row
    assert len(rows) == 2
    (tmp_path / "s.csv").write_text("file_name,title\na.png,A\n")
    with pytest.raises(ConfigError, match=r"requests\[1\]: field 'folder': selects the same files as requests\[0\]"):
        FolderScanStage.expand_requests([{"folder": str(media)},
                                         {"folder": str(media), "sidecar": str(tmp_path / "s.csv")}])


# ------------------------------------------------------------------------------ the sidecar


def test_sidecar_csv_joined_by_file_name(tmp_path: Path, media: Path):
    (media / "sub" / "b.png").write_bytes(png((4, 2)))  # a second "b.png": a name joins every file so named
    (tmp_path / "likes.csv").write_text(
        "name,caption,upvotes,user,posted,view_count,mood,comments\n"
        "b.png,A red square,1204,alice,2024-05-01T12:30:00Z,99,happy,so red!\n"
        "clip.mp4,,7,bob,1714566600,,,\n"
        "ghost.png,Nobody,1,carol,,,,\n"
        "b.png,Second row,3,dave,,,,\n")
    out = scan(tmp_path, [{"folder": "media", "sidecar": "likes.csv", "join": "file_name",
                           "columns": {"file": "name", "title": "caption", "author": "user", "created_at": "posted"},
                           "behavior": {"likes": {"column": "upvotes", "kind": "count", "to": "like_count"}}}])
    assert not out["errors"]  # a "comments" column is taken for the comments only when named
    by_id = {i["item_id"]: i for i in out["items"]}
    for rel in ("b.png", "sub/b.png"):
        b = by_id[rel]
        # view_count: a column named like a typed items column is that count without saying so
        assert (b["title"], b["like_count"], b["view_count"]) == ("A red square", 1204, 99)
        assert b["author_hash"] == author_hash("alice") and b["author_hash"] != "alice"
        assert b["created_at"] == datetime(2024, 5, 1, 12, 30, tzinfo=timezone.utc)
        raw = unpack_raw(b["raw"])
        assert raw["mood"] == "happy" and "user" not in raw and "alice" not in json.dumps(raw)
        assert raw["comments"] == "so red!" and "caption" not in raw  # raw: the columns nothing maps
    clip = by_id["sub/deep/clip.mp4"]
    assert clip["title"] == "clip" and clip["like_count"] == 7  # an empty title keeps the file name
    assert clip["created_at"] == datetime.fromtimestamp(1714566600, tz=timezone.utc)
    a = by_id["a.png"]  # no sidecar row: still an item
    assert (a["title"], a["like_count"], a["author_hash"], a["raw"]) == ("a", None, None, None)
    side = sorted((d["record_id"], d["reason"]) for d in out["dropped"] if d["table"] == "sidecar")
    assert side == [("b.png", "sidecar_duplicate"), ("ghost.png", "sidecar_unmatched")]
    assert out["counters"]["sidecar_unmatched"] == 1 and out["counters"]["sidecar_rows"] == 4
    assert out["counters"]["sidecar_joined"] == 3
    assert not any(b"alice" in (i["raw"] or b"") for i in out["items"])
    behavior = sorted((r["uid"], r["name"], r["value"], r["kind"]) for r in out["behavior"])
    assert behavior == [("local:b.png", "likes", 1204.0, "count"), ("local:b.png", "view_count", 99.0, "count"),
                        ("local:sub/b.png", "likes", 1204.0, "count"), ("local:sub/b.png", "view_count", 99.0, "count"),
                        ("local:sub/deep/clip.mp4", "likes", 7.0, "count"),
                        ("local:sub/deep/clip.mp4", "view_count", None, "count")]  # an empty cell: null
    assert not out["comments"]


def test_sidecar_parquet_and_jsonl_joined_by_relative_path(tmp_path: Path, media: Path):
    pq.write_table(pa.table({
        "relative_path": ["sub/deep/clip.mp4", "./b.png", "deep/clip.mp4", "sub\\photo.mp4"],
        "title": ["Clip", "Bee", "wrong folder", "Photo"],
        "score": [5, -2, 1, None],
        "created_at": pa.array([datetime(2023, 1, 2), None, None, None], pa.timestamp("us")),
        "community": ["family", None, None, "trips"],
    }), tmp_path / "meta.parquet")
    out = scan(tmp_path, [{"folder": "media", "sidecar": "meta.parquet", "join": "relative_path"}])
    by_id = {i["item_id"]: i for i in out["items"]}
    assert (by_id["sub/deep/clip.mp4"]["title"], by_id["sub/deep/clip.mp4"]["score"]) == ("Clip", 5)
    assert by_id["sub/deep/clip.mp4"]["created_at"] == datetime(2023, 1, 2, tzinfo=timezone.utc)
    assert by_id["sub/deep/clip.mp4"]["community"] == "family"
    assert (by_id["b.png"]["title"], by_id["b.png"]["score"]) == ("Bee", -2)
    assert (by_id["sub/photo.mp4"]["title"], by_id["sub/photo.mp4"]["community"]) == ("Photo", "trips")
    assert [(d["record_id"], d["reason"]) for d in out["dropped"] if d["table"] == "sidecar"] == [
        ("deep/clip.mp4", "sidecar_unmatched")]

    (tmp_path / "meta.jsonl").write_text("\n".join(orjson.dumps(r).decode() for r in [
        {"path": "a.png", "likes": "12", "author": "[deleted]"},
        {"path": "b.png", "likes": "many"},
    ]) + "\n")
    out = scan(tmp_path, [{"folder": "media", "sidecar": "meta.jsonl", "join": "relative_path",
                           "columns": {"file": "path"},
                           "behavior": {"likes": {"column": "likes", "kind": "count", "to": "like_count"}}}])
    a = next(i for i in out["items"] if i["item_id"] == "a.png")
    assert a["like_count"] == 12 and a["author_hash"] is None
    assert out["errors"] == [("local:b.png", f"local:b.png: {tmp_path / 'meta.jsonl'}: row 2: column 'likes': "
                                             "expected a number, got 'many'")]


def test_sidecar_columns_that_do_not_exist_are_one_config_error_listing_the_columns(tmp_path: Path, media: Path):
    (tmp_path / "s.csv").write_text("file_name,caption,upvotes\nb.png,x,1\n")
    with pytest.raises(ConfigError) as info:
        FolderScanStage.expand_requests(FolderScanStage.resolve_requests([{
            "folder": "media", "sidecar": "s.csv", "columns": {"title": "titel"},
            "behavior": {"likes": {"column": "likes_count", "kind": "count"}}}], tmp_path))
    message = str(info.value)
    assert "requests[0]: field 'columns': s.csv:" in message
    assert "'titel' (columns.title), 'likes_count' (behavior.likes)" in message
    assert "the input's columns are ['caption', 'file_name', 'upvotes']" in message
    with pytest.raises(ConfigError, match=r"field 'behavior': s.csv: .*'likes_count' \(behavior.likes\)"):
        FolderScanStage.expand_requests(FolderScanStage.resolve_requests([{
            "folder": "media", "sidecar": "s.csv",
            "behavior": {"likes": {"column": "likes_count", "kind": "count"}}}], tmp_path))
    with pytest.raises(ConfigError, match=r"'columns': s.csv: unknown field\(s\) \['stars'\]; known: file, title"):
        FolderScanStage.expand_requests(FolderScanStage.resolve_requests([{
            "folder": "media", "sidecar": "s.csv", "columns": {"stars": "upvotes"}}], tmp_path))
    (tmp_path / "n.csv").write_text("filename,caption\nb.png,x\n")
    with pytest.raises(ConfigError, match=r"\['file_name'\] not in the sidecar \(the column holding each file's"):
        FolderScanStage.expand_requests(FolderScanStage.resolve_requests([{
            "folder": "media", "sidecar": "n.csv"}], tmp_path))


def test_a_sidecar_inside_the_folder_is_not_listed_as_a_file(tmp_path: Path, media: Path):
    (media / "meta.csv").write_text("file_name,title\na.png,Hello\n")
    out = scan(tmp_path, [{"folder": "media", "sidecar": "media/meta.csv"}])
    assert "meta.csv" not in [d["record_id"] for d in out["dropped"]]
    assert next(i for i in out["items"] if i["item_id"] == "a.png")["title"] == "Hello"


def test_sidecar_comments_and_named_behavior_as_table_read_maps_them(tmp_path: Path, media: Path):
    """The sidecar takes table.read's columns (comments too) and behavior (count, ratio, score;
    to: a typed items column): the same comments and behavior rows, keyed by the file's uid."""
    (tmp_path / "posts.csv").write_text(
        "file_name,caption,replies,upvotes,ctr,stars,user,lang\n"
        'a.png,Sunset,"[""stunning"", ""where is this?""]",532,0.25,4.5,ana,en\n'
        "clip.mp4,Clip,[],87,,2,ben,fr\n")
    behavior = {"likes": {"column": "upvotes", "kind": "count", "to": "like_count"},
                "ctr": {"column": "ctr", "kind": "ratio", "to": "upvote_ratio"},
                "rating": {"column": "stars", "kind": "score", "scale": [1, 5]}}
    out = scan(tmp_path, [{"folder": "media", "sidecar": "posts.csv", "behavior": behavior,
                           "columns": {"title": "caption", "comments": "replies", "author": "user"}}])
    assert not out["errors"]
    by_id = {i["item_id"]: i for i in out["items"]}
    a, clip = by_id["a.png"], by_id["sub/deep/clip.mp4"]
    assert (a["title"], a["like_count"], a["upvote_ratio"], a["author_hash"]) == ("Sunset", 532, 0.25,
                                                                                   author_hash("ana"))
    assert (clip["like_count"], clip["upvote_ratio"], a["source"]) == (87, None, "folder")
    assert unpack_raw(a["raw"]) == {"lang": "en"}  # the join column and the mapped ones are not raw
    assert [(c["uid"], c["platform"], c["comment_id"], c["text"], c["depth"]) for c in out["comments"]] == [
        ("local:a.png", "local", "#0", "stunning", 0), ("local:a.png", "local", "#1", "where is this?", 0)]
    rows = {(r["uid"], r["name"]): r for r in out["behavior"]}
    assert set(rows) == {(uid, name) for uid in ("local:a.png", "local:sub/deep/clip.mp4") for name in behavior}
    assert (rows["local:a.png", "likes"]["value"], rows["local:a.png", "likes"]["kind"]) == (532.0, "count")
    assert (rows["local:a.png", "ctr"]["value"], rows["local:a.png", "ctr"]["kind"]) == (0.25, "ratio")
    rating = rows["local:a.png", "rating"]
    assert (rating["value"], rating["kind"], rating["scale_min"], rating["scale_max"]) == (4.5, "score", 1.0, 5.0)
    assert rows["local:sub/deep/clip.mp4", "ctr"]["value"] is None  # an empty cell: a null value, kept
    assert all(r["collected_at"] == a["collected_at"] for r in out["behavior"] + out["comments"])
    assert out["counters"]["comments"] == 2 and out["counters"]["behavior"] == 6

    # a compressed JSON lines sidecar of comment structs, joined by path: ids, replies, hashed authors
    import gzip

    with gzip.open(tmp_path / "threads.jsonl.gz", "wt") as fh:
        fh.write(orjson.dumps({"relative_path": "sub/photo.mp4", "thread": [
            {"id": "c1", "text": "first", "author": "zoe", "score": 3},
            {"id": "c2", "parent_id": "c1", "text": "a reply", "like_count": "2", "mood": "glad"},
        ]}).decode() + "\n")
    out = scan(tmp_path, [{"folder": "media", "sidecar": "threads.jsonl.gz", "join": "relative_path",
                           "columns": {"comments": "thread"}}])
    first, reply = out["comments"]
    assert (first["uid"], first["comment_id"], first["depth"], first["score"]) == ("local:sub/photo.mp4", "c1", 0, 3)
    assert first["author_hash"] == author_hash("zoe") and b"zoe" not in orjson.dumps(out["comments"], default=str)
    assert (reply["parent_id"], reply["depth"], reply["like_count"]) == ("c1", 1, 2)
    assert unpack_raw(reply["raw"]) == {"mood": "glad"}
    assert not out["behavior"] and not out["errors"]


def test_bad_sidecar_rows_and_values_are_errors_naming_the_sidecar_and_the_row(tmp_path: Path, media: Path):
    side = tmp_path / "side.csv"
    side.write_text("file_name,title,ctr,replies\n"
                    "a.png,A,0.5,[]\n"
                    "b.png,B,1.5,[]\n"  # a ratio outside 0..1
                    "copy-of-b.png,C,0.1,not json\n"  # an unreadable comments list
                    "movie.dat,M,0.2,[],one too many\n"  # not a row: no file gets it
                    "clip.mp4,Clip,0.3,[]\n")
    out = scan(tmp_path, [{"folder": "media", "sidecar": "side.csv", "columns": {"comments": "replies"},
                           "behavior": {"ctr": {"column": "ctr", "kind": "ratio"}}}])
    errors = dict(out["errors"])
    assert errors.pop("local:b.png") == f"local:b.png: {side}: row 2: column 'ctr': ratio 1.5 is outside 0..1"
    assert errors.pop("local:sub/copy-of-b.png").startswith(
        f"local:sub/copy-of-b.png: {side}: row 3: column 'replies': unreadable comments value")
    assert errors == {f"{side}:4": f"{side}: row 4: line 5: expected 4 fields, got 5"}
    titles = {i["item_id"]: i["title"] for i in out["items"]}
    assert titles == {"a.png": "A", "movie.dat": "movie", "sub/deep/clip.mp4": "Clip", "sub/photo.mp4": "photo"}
    assert out["keys"][-1] == f"{side}:4"  # after the files: the first file carries the listing

    # a sidecar cut short: the rows before the cut are joined, the cut is one error
    side.write_text('file_name,title\na.png,A\nb.png,"B is cut\n')
    out = scan(tmp_path, [{"folder": "media", "sidecar": "side.csv"}])
    assert out["errors"] == [(f"{side}:2", f"{side}: unreadable after row 1: cut inside a quoted value (line 3); "
                                           "the rest of the sidecar is skipped")]
    assert {i["item_id"]: i["title"] for i in out["items"]}["a.png"] == "A"


@pytest.mark.parametrize("sidecar, request_, message", [
    ("s.csv", {"columns": {"id": "file_name"}},
     r"field 'columns': s.csv: \['id'\]: the file itself is the item's id and media"),
    ("s.csv", {"columns": {"media": "title"}}, r"field 'columns': s.csv: \['media'\]: the file itself"),
    ("s.csv", {"columns": "title"}, r"field 'columns': s.csv: expected a mapping"),
    ("s.csv", {"columns": {"file": ""}}, r"field 'columns': s.csv: file: expected the name of the join column"),
    ("s.csv", {"behavior": {"likes": {"column": "likes", "kind": "counts"}}},
     r"field 'behavior': s.csv: likes.kind: Input should be 'count', 'ratio' or 'score'"),
    ("s.csv", {"behavior": {"likes": {"column": "likes", "kind": "score"}}},
     r"field 'behavior': s.csv: likes: a score needs its scale"),
    ("s.csv", {"behavior": {"likes": {"column": "likes", "kind": "count", "to": "upvote_ratio"}}},
     r"field 'behavior': s.csv: likes: to: upvote_ratio takes a ratio, not a count"),
    ("s.txt", {}, r"field 'sidecar': s.txt: unknown format; use one of the extensions"),
    ("s.parquet.gz", {}, r"field 'sidecar': s.parquet.gz: a compressed Parquet file"),
    ("empty.csv", {}, r"field 'columns': empty.csv: column\(s\) \['file_name'\] not in the sidecar .*: \(none\)"),
])
def test_bad_sidecar_mappings_are_config_errors_naming_the_request_key(tmp_path: Path, media: Path, sidecar: str,
                                                                       request_: dict[str, Any], message: str):
    (tmp_path / sidecar).write_text("file_name,title,likes\nb.png,x,1\n" if sidecar != "empty.csv" else "")
    with pytest.raises(ConfigError, match=r"requests\[0\]: " + message):
        FolderScanStage.expand_requests(FolderScanStage.resolve_requests(
            [{"folder": "media", "sidecar": sidecar, **request_}], tmp_path))


# ------------------------------------------------------------------------------ through the runner


def write_pipeline(tmp_path: Path, requests: list[dict[str, Any]]) -> Path:
    pipe = tmp_path / "folder.yaml"
    pipe.write_text(yaml.safe_dump({"name": "folder", "stages": [{"stage": "folder.scan", "requests": requests}]}))
    return pipe


@pytest.mark.slow
def test_a_rerun_skips_the_folder_until_it_changes_then_picks_up_what_changed(tmp_path: Path, media: Path):
    pipe = write_pipeline(tmp_path, [{"folder": "media", "include": ["*.png", "*.mp4"]}])
    run = run_dir_of(tmp_path)
    opts = RunOptions(out=run, workers=1, progress=False)

    def items() -> list[str]:
        return [r["item_id"] for r in tables.read_dataset(run / "items", "items").to_pylist()]

    first = run_pipeline(pipe, opts)
    assert not first.failed and len(first.plans[0].todo) == 1
    assert items() == ["a.png", "b.png", "sub/copy-of-b.png", "sub/deep/clip.mp4", "sub/photo.mp4"]
    (shard,) = first.plans[0].shards

    again = run_pipeline(pipe, opts)
    assert again.plans[0].skipped == [shard] and not again.plans[0].todo  # nothing changed: nothing done
    (media / "notes-2.txt").write_text("excluded by the patterns")
    assert run_pipeline(pipe, opts).plans[0].skipped == [shard]  # a file the request does not take

    (media / "sub" / "new.png").write_bytes(png((11, 11), (0, 200, 0)))  # a new file
    (media / "a.png").unlink()  # a removed one
    third = run_pipeline(pipe, opts)
    assert third.plans[0].shards == [shard] and [t.shard for t in third.plans[0].todo] == [shard]
    assert items() == ["b.png", "sub/copy-of-b.png", "sub/deep/clip.mp4", "sub/new.png", "sub/photo.mp4"]
    counters = third.stats["stages"]["folder.scan"]["counters"]
    assert counters["stored_new"] == 1 and counters["stored_existing"] == 4  # nothing copied twice
    assert len(list((run / "requests" / "folder.scan").iterdir())) == 1  # still one request shard
    assert run_pipeline(pipe, opts).plans[0].skipped == [shard]

    # a sidecar added to the request, then edited: the same shard, redone each time
    (tmp_path / "titles.csv").write_text("file_name,title\nb.png,Bee\n")
    pipe = write_pipeline(tmp_path, [{"folder": "media", "include": ["*.png", "*.mp4"], "sidecar": "titles.csv"}])
    assert [t.shard for t in run_pipeline(pipe, opts).plans[0].todo] == [shard]
    assert tables.read_dataset(run / "items", "items").to_pylist()[0]["title"] == "Bee"
    (tmp_path / "titles.csv").write_text("file_name,title\nb.png,Bumblebee\n")
    assert [t.shard for t in run_pipeline(pipe, opts).plans[0].todo] == [shard]
    assert tables.read_dataset(run / "items", "items").to_pylist()[0]["title"] == "Bumblebee"


@pytest.mark.slow
def test_comments_and_behavior_are_written_in_the_folder_s_shard_and_a_new_mapping_redoes_it(
        tmp_path: Path, media: Path):
    (tmp_path / "side.csv").write_text('file_name,likes,replies\nb.png,5,"[""nice""]"\na.png,2,[]\n')
    request = {"folder": "media", "include": ["*.png"], "sidecar": "side.csv", "columns": {"comments": "replies"}}
    pipe = write_pipeline(tmp_path, [request])
    run = run_dir_of(tmp_path)
    opts = RunOptions(out=run, workers=1, progress=False)
    first = run_pipeline(pipe, opts)
    assert not first.failed
    (shard,) = first.plans[0].shards
    for dataset in ("items", "comments", "behavior", "videos"):  # co-partitioned: one request, one shard
        assert [p.name for p in (run / dataset).glob("*.parquet")] == [f"{shard}.parquet"]
    assert [c["text"] for c in tables.read_dataset(run / "comments", "comments").to_pylist()] == ["nice"]
    assert tables.read_dataset(run / "behavior", "behavior").num_rows == 0  # likes: a column of no known name

    pipe = write_pipeline(tmp_path, [{**request, "behavior": {"likes": {"column": "likes", "kind": "count"}}}])
    again = run_pipeline(pipe, opts)
    assert [t.shard for t in again.plans[0].todo] == [shard]  # the same shard, redone
    behavior = tables.read_dataset(run / "behavior", "behavior").to_pylist()
    assert sorted((r["uid"], r["name"], r["value"]) for r in behavior) == [
        ("local:a.png", "likes", 2.0), ("local:b.png", "likes", 5.0)]
    assert run_pipeline(pipe, opts).plans[0].skipped == [shard]


# ------------------------------------------------------------------------------ the shipped pipeline


SENTENCES = [
    "The weather today is sunny with a light breeze from the west.",
    "Our team finished building the new library near the river.",
    "Please remember to bring your umbrella and a warm jacket tomorrow.",
]


@pytest.mark.slow
def test_the_local_folder_pipeline_end_to_end(tmp_path: Path):
    """pipelines/local-folder.yaml on two ffmpeg-made videos (one speaking) and a PNG, with a
    sidecar CSV of likes: stored, probed, cut into scenes, transcribed, described, and turned into
    behavior records (likes) beside their content controls; the PNG without a sidecar row has no
    behavior and is dropped, counted."""
    from video_factory import Segment, make_video, require_tools

    require_tools("ffmpeg", "espeak-ng")
    folder = tmp_path / "my-media"
    make_video(folder / "talks" / "talk.mp4", [Segment("testsrc", 75), Segment("color=c=red", 75)],
                      fps=25, audio=SENTENCES)
    cuts = make_video(folder / "cuts.mp4", [Segment("smptebars", 25), Segment("mandelbrot", 25),
                                            Segment("color=c=blue", 25)], fps=25)
    (folder / "poster.png").write_bytes(png((64, 48), (20, 120, 220)))
    (folder / "README.txt").write_text("my clips")

    pipeline = yaml.safe_load((ROOT / "pipelines" / "local-folder.yaml").read_text())
    stages = {s["stage"]: s for s in pipeline["stages"]}
    assert stages["folder.scan"]["requests"] == [{"folder": "../my-media"}]  # the placeholder users edit
    (tmp_path / "my-media.csv").write_text("relative_path,title,like_count\n"
                                           "talks/talk.mp4,Weather talk,120\ncuts.mp4,Three cuts,7\n")
    stages["folder.scan"]["requests"] = [{"folder": "../my-media", "sidecar": "../my-media.csv",
                                          "join": "relative_path"}]
    stages["asr"]["config"].update(model="tiny.en", device="cpu", cpu_threads=2)
    stages["attributes"]["config"] = {"ocr": False}
    (tmp_path / "pipelines").mkdir()
    pipe = tmp_path / "pipelines" / "local-folder.yaml"
    pipe.write_text(yaml.safe_dump(pipeline, sort_keys=False))

    run = tmp_path / "run"
    report = run_pipeline(pipe, RunOptions(out=run, workers=1, progress=False))
    assert not report.failed
    for shard in run.rglob("*.parquet"):  # what `blift validate` checks
        tables.read_shard(shard)

    media_rows = {r["uid"]: r for r in tables.read_dataset(run / "media", "media").to_pylist()}
    assert set(media_rows) == {"local:talks/talk.mp4", "local:cuts.mp4", "local:poster.png"}
    assert all(r["status"] == "ok" for r in media_rows.values()), media_rows
    assert media_rows["local:talks/talk.mp4"]["has_audio"] is True
    assert media_rows["local:cuts.mp4"]["has_audio"] is False
    assert abs(media_rows["local:cuts.mp4"]["duration_s"] - cuts.duration_s) < 0.1
    assert media_rows["local:poster.png"]["mime"] == "image/png"

    scenes = tables.read_dataset(run / "scenes", "scenes").to_pylist()
    per_video = Counter(s["uid"] for s in scenes)
    assert per_video["local:cuts.mp4"] == 3 and per_video["local:talks/talk.mp4"] == 2

    transcripts = {t["uid"]: t for t in tables.read_dataset(run / "transcripts", "transcripts").to_pylist()}
    assert transcripts["local:talks/talk.mp4"]["status"] == "ok"
    assert "weather" in (transcripts["local:talks/talk.mp4"]["text"] or "").lower()  # the video is 6 s long
    assert transcripts["local:cuts.mp4"]["status"] == "no_audio"

    attributes = tables.read_dataset(run / "attributes", "attributes").to_pylist()
    assert {(a["uid"], a["scene"]) for a in attributes} == {("local:poster.png", None)} | {
        (s["uid"], s["scene"]) for s in scenes}

    stats = json.loads((run / "stats.json").read_text())["stages"]
    assert stats["folder.scan"]["dropped"] == {"not_media": 1}
    assert stats["caption"]["counters"]["skipped_no_model"] == 1 + len(scenes)
    # the generic templates say the likes the sidecar gave; the poster has none: dropped, counted
    assert stats["instruct"]["dropped"] == {"no_behavior": 1}
    records = {r["id"]: r for r in tables.read_dataset(run / "instructions", "instructions").to_pylist()}
    assert set(records) == {f"{uid}:{task}" for uid in ("local:talks/talk.mp4", "local:cuts.mp4")
                            for task in ("behavior", "content")}
    talk = records["local:talks/talk.mp4:behavior"]
    human, answer = (t["value"] for t in talk["conversations"])
    assert talk["template"] == "generic_video_behavior" and answer == "Likes: 120"
    assert 'Its title is "Weather talk".' in human and "weather" in human.lower().split("scene 1", 1)[1]
    assert talk["behavior"][0]["name"] == "like_count" and talk["behavior"][0]["value"] == 120.0
    assert records["local:cuts.mp4:behavior"]["conversations"][1]["value"] == "Likes: 7"
    assert records["local:cuts.mp4:content"]["targets"] is None
