"""``cbc.read`` (blift.collect.cbc): LCBM's Content Behavior Corpus as blift tables.

The corpus is rebuilt here as a faithful replica: Parquet files with exactly the published
features (``CBC_SCHEMA``, the card's ``dataset_info``) and a README carrying that card's YAML,
served with a train and a test split by the stand-in Hub of tests/servers/hub_server.py and read
through the real ``datasets`` client (in a child process: huggingface_hub reads HF_ENDPOINT at
import, and this session is offline on purpose). Local copies (Parquet, JSON lines) go through
``run_pipeline`` in process. Nothing is downloaded.
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from blift.collect.cbc.read import CbcReadConfig, CbcReadStage
from blift.collect.cbc.replay import heatmap
from blift.collect.cbc.scene_lists import phrases
from blift.collect.cbc.values import count, day
from blift.errors import ConfigError, InvalidRecord
from blift.ids import author_hash, unpack_raw
from blift.pipeline import RunOptions, run_pipeline
from blift.registry import load_stage
from blift.tables import read_dataset

ROOT = Path(__file__).resolve().parents[1]
UTC = timezone.utc
EPOCH = 1_790_000_000  # SOURCE_DATE_EPOCH: the snapshot time when none is configured
REPO = "behavior-in-the-wild/content-behavior-corpus"
TABLES = {"items": ("uid",), "videos": ("uid",), "behavior": ("uid", "name"), "transcripts": ("uid",),
          "captions": ("uid", "scene"), "attributes": ("uid", "scene"), "video_refs": ("uid",)}

# ------------------------------------------------------------------------------ the replica

F64, STR = pa.float64(), pa.string()
WORD = pa.struct([("confidence", F64), ("start", F64), ("end", F64), ("text", STR)])
SEGMENT = pa.struct([("start", F64), ("end", F64), ("text", STR), ("words", pa.list_(WORD))])
MARKER = pa.struct([("start", F64), ("end", F64), ("replay_score", F64)])
CBC_SCHEMA = pa.schema([
    ("video_id", STR),
    ("asr_raw", pa.list_(SEGMENT)),
    ("asr_grouped", pa.list_(pa.list_(STR))),
    ("ocr", pa.list_(pa.list_(STR))),
    ("blip2_annotations", pa.struct([("actions", pa.list_(STR)), ("captions", pa.list_(STR)),
                                     ("objects", pa.list_(STR))])),
    ("replay_graphs", pa.struct([("original_marker_duration", F64), ("processed_marker_duration", F64),
                                 ("multiplier", F64), ("markers", pa.list_(MARKER))])),
    ("likes", F64),
    ("views", F64),
    ("metadata", pa.struct([("title", STR), ("description", STR), ("length", F64), ("date", STR)])),
    ("channel_data", pa.struct([("channel_id", STR), ("company_name", STR), ("subscribers", F64)])),
])


def _features() -> list[dict[str, Any]]:
    """The card's dataset_info.features, as published."""
    def fields(*pairs: tuple[str, Any]) -> list[dict[str, Any]]:
        return [{"name": n, **(t if isinstance(t, dict) else {"dtype": t})} for n, t in pairs]

    word = fields(("confidence", "float64"), ("start", "float64"), ("end", "float64"), ("text", "string"))
    segment = fields(("start", "float64"), ("end", "float64"), ("text", "string"), ("words", {"list": word}))
    marker = fields(("start", "float64"), ("end", "float64"), ("replay_score", "float64"))
    return fields(
        ("video_id", "string"), ("asr_raw", {"list": segment}), ("asr_grouped", {"list": {"list": "string"}}),
        ("ocr", {"list": {"list": "string"}}),
        ("blip2_annotations", {"struct": fields(("actions", {"list": "string"}), ("captions", {"list": "string"}),
                                                ("objects", {"list": "string"}))}),
        ("replay_graphs", {"struct": fields(("original_marker_duration", "float64"),
                                            ("processed_marker_duration", "float64"), ("multiplier", "float64"),
                                            ("markers", {"list": marker}))}),
        ("likes", "float64"), ("views", "float64"),
        ("metadata", {"struct": fields(("title", "string"), ("description", "string"), ("length", "float64"),
                                       ("date", "string"))}),
        ("channel_data", {"struct": fields(("channel_id", "string"), ("company_name", "string"),
                                           ("subscribers", "float64"))}),
    )


def card(sizes: dict[str, tuple[int, int]]) -> bytes:
    """README.md with the published card's YAML header (features, splits, configs, licence)."""
    header = {
        "dataset_info": {"features": _features(),
                         "splits": [{"name": s, "num_bytes": b, "num_examples": n} for s, (n, b) in sizes.items()],
                         "download_size": sum(b for _, b in sizes.values()),
                         "dataset_size": sum(b for _, b in sizes.values())},
        "configs": [{"config_name": "default",
                     "data_files": [{"split": s, "path": f"data/{s}-*"} for s in sizes]}],
        "license": "mit", "pretty_name": "Content Behavior Corpus", "language": ["en"],
    }
    return f"---\n{yaml.safe_dump(header, sort_keys=False)}---\n\n# Dataset Card for Content Behavior Corpus\n".encode()


def words(text: str, start: float, step: float = 0.4) -> list[dict[str, Any]]:
    return [{"confidence": round(0.9 - 0.1 * i, 2), "start": start + i * step, "end": start + (i + 1) * step,
             "text": f" {w}"} for i, w in enumerate(text.split())]


def cbc_row(video_id: str | None, **over: Any) -> dict[str, Any]:
    """A CBC row as LCBM published them: three annotated scenes, a replay graph, counts as floats."""
    row: dict[str, Any] = {
        "video_id": video_id,
        "asr_raw": [{"start": 0.0, "end": 2.4, "text": " Meet the new Zephyr bike.",
                     "words": words("Meet the new Zephyr bike.", 0.0)},
                    {"start": 2.4, "end": 4.0, "text": " Built for the city.",
                     "words": words("Built for the city.", 2.4)}],
        "asr_grouped": [["Meet the new Zephyr bike."], ["Built for the city."], []],
        "ocr": [["ZEPHYR", "Ride further"], [], ["zephyr.example", "Order now"]],
        "blip2_annotations": {
            "captions": ["a man riding a bicycle down a city street", "a close up of a bicycle wheel",
                         "a logo on a white background"],
            "objects": ["a man, a bicycle, a street", "wheel; spokes", "logo"],
            "actions": ["riding a bicycle", "spinning", ""],
        },
        "replay_graphs": {"original_marker_duration": 1.5, "processed_marker_duration": 3.0, "multiplier": 2.0,
                          "markers": [{"start": 3.0, "end": 6.0, "replay_score": 0.4},
                                      {"start": 0.0, "end": 3.0, "replay_score": 1.0},
                                      {"start": 6.0, "end": 6.0, "replay_score": 0.7},   # end <= start: dropped
                                      {"start": 6.0, "end": 9.0, "replay_score": 0.25}]},
        "likes": 1234.0, "views": 98765.0,
        "metadata": {"title": "Zephyr | The city bike", "description": "Meet Zephyr.\nhttps://zephyr.example",
                     "length": 30.5, "date": "2021-03-04"},
        "channel_data": {"channel_id": "UCzephyr0000000000000000", "company_name": "Zephyr Bikes",
                         "subscribers": 150000.0},
    }
    row.update(over)
    return row


def replica_rows() -> dict[str, list[dict[str, Any]]]:
    nan = float("nan")
    rescaled = cbc_row("Zx9_Yw8-Vu7", asr_raw=[], asr_grouped=[[], [], []], likes=nan, views=5000.0,
                       replay_graphs={"original_marker_duration": 2.0, "processed_marker_duration": 2.0,
                                      "multiplier": 1.0,
                                      "markers": [{"start": 0.0, "end": 2.0, "replay_score": 20.0},
                                                  {"start": 2.0, "end": 4.0, "replay_score": 80.0},
                                                  {"start": 4.0, "end": 6.0, "replay_score": 40.0},
                                                  {"start": 6.0, "end": 8.0, "replay_score": nan}]},
                       metadata={"title": "Quiet ad", "description": None, "length": 8.0, "date": "20200115"})
    misaligned = cbc_row("Mm1Nn2Oo3Pp", ocr=[["A"], ["B"], ["C"], ["D"]],
                         blip2_annotations={"captions": ["a red car", "a road", "a sunset"],
                                            "objects": ["car", "road"], "actions": ["driving", "", ""]},
                         replay_graphs=None, likes=10.0, views=500.0,
                         metadata={"title": "Drive", "description": "d", "length": 12.0,
                                   "date": "2019-07-08T12:30:00Z"})
    train = [cbc_row("aB3dE5fG7hI"), rescaled, misaligned,
             cbc_row(None),                                                     # no video_id: an error row
             cbc_row("aB3dE5fG7hI", metadata={"title": "again", "description": None, "length": 1.0,
                                              "date": "2021-01-01"})]             # a duplicate: dropped
    test = [cbc_row("Tt4Ss5Rr6Qq"), cbc_row("Uu7Vv8Ww9Xx", likes=3.0, views=40.0)]
    return {"train": train, "test": test}


def parquet_bytes(rows: list[dict[str, Any]], row_group_size: int = 2) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=CBC_SCHEMA), buf, row_group_size=row_group_size)
    return buf.getvalue()


def tables(run: Path) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for name, key in TABLES.items():
        rows = read_dataset(run / name, "item_refs" if name == "video_refs" else name).to_pylist()
        out[name] = sorted(rows, key=lambda r: tuple(r[k] for k in key))
    return out


def side(run: Path, what: str) -> list[dict[str, Any]]:
    return read_dataset(run / what / "cbc.read", what).to_pylist()


@pytest.fixture(autouse=True)
def _pinned_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(EPOCH))


# ------------------------------------------------------------------------------ the Hub replica


CHILD = """import json, sys
from pathlib import Path
from blift.pipeline import RunOptions, run_pipeline
out = {}
for pipe, run, only in json.loads(sys.argv[1]):
    r = run_pipeline(Path(pipe), RunOptions(out=run, progress=False), only=only)
    out[run] = r.stats['stages']
print(json.dumps(out))
"""


@pytest.mark.slow
def test_the_shipped_pipeline_reads_a_replica_of_the_corpus_from_the_stand_in_hub(tmp_path: Path):
    """pipelines/cbc-hub.yaml's cbc.read step on the replica's train split, and its test split, through
    the real ``datasets`` client streaming from the stand-in Hub: every table's content."""
    from servers.hub_server import HubServer

    rows = replica_rows()
    files = {f"data/{split}-00000-of-00001.parquet": parquet_bytes(r) for split, r in rows.items()}
    files["README.md"] = card({s: (len(r), len(files[f"data/{s}-00000-of-00001.parquet"])) for s, r in rows.items()})
    test_pipe = tmp_path / "test-split.yaml"
    test_pipe.write_text(yaml.safe_dump({"name": "cbc-test", "stages": [
        {"stage": "cbc.read", "requests": [{"dataset": REPO, "split": "test"}], "config": {"buckets": 2}}]}))
    train_run, test_run = tmp_path / "train", tmp_path / "test"
    jobs = [[str(ROOT / "pipelines" / "cbc-hub.yaml"), str(train_run), None],  # the whole shipped pipeline
            [str(test_pipe), str(test_run), None]]
    with HubServer() as hub:
        hub._create_repo(REPO, "dataset", False, "tester")
        commit = hub.commit_files(REPO, files)
        env = dict(os.environ, HF_ENDPOINT=hub.endpoint, HF_HUB_DISABLE_XET="1", HF_HUB_OFFLINE="0",
                   HF_DATASETS_OFFLINE="0", HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_TELEMETRY="1",
                   SOURCE_DATE_EPOCH=str(EPOCH), USE_TORCH="0",  # datasets imports torch (~8 s) if it may
                   PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(jobs)], env=env, capture_output=True,
                              text=True, timeout=240)
        assert proc.returncode == 0, proc.stderr[-3000:]
        ranged = [r for r in hub.log("resolve", REPO) if r.status == 206]
    assert ranged, "the rows came through ranged reads of the dataset's files (streaming), not a download"
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    train = stats[str(train_run)]["cbc.read"]
    assert train["records_in"] == 5 and train["errors"] == {"invalid": 1} and train["dropped"] == {"duplicate_id": 1}
    assert train["out"] == {"items": 3, "videos": 3, "behavior": 6, "transcripts": 3, "captions": 9,
                            "attributes": 8, "video_refs": 3}
    counters = train["counters"]
    assert counters["heatmap_rescaled"] == 1 and counters["scene_lists_misaligned"] == 1
    assert counters["missing:likes"] == 1 and counters["no_heatmap"] == 1
    assert counters["markers_dropped:end_not_after_start"] == 1 and counters["markers_dropped:bad_number"] == 1
    assert counters["transcript_ok"] == 2 and counters["transcript_no_speech"] == 1

    got = tables(train_run)
    assert not (train_run / "scenes").exists() and not (train_run / "comments").exists()
    items = {r["uid"]: r for r in got["items"]}
    assert sorted(items) == ["youtube:Mm1Nn2Oo3Pp", "youtube:Zx9_Yw8-Vu7", "youtube:aB3dE5fG7hI"]
    first = items["youtube:aB3dE5fG7hI"]
    url = "https://www.youtube.com/watch?v=aB3dE5fG7hI"
    assert (first["platform"], first["item_id"], first["source"], first["media_kind"]) == (
        "youtube", "aB3dE5fG7hI", "cbc", "video")
    assert first["url"] == first["permalink"] == url and first["media_urls"] == [url]
    assert (first["title"], first["community"]) == ("Zephyr | The city bike", "Zephyr Bikes")  # the first row kept
    assert first["text"] == "Meet Zephyr.\nhttps://zephyr.example"
    assert (first["view_count"], first["like_count"], first["subscriber_count"]) == (98765, 1234, 150000)
    assert first["created_at"] == datetime(2021, 3, 4, tzinfo=UTC)
    assert first["collected_at"] == datetime.fromtimestamp(EPOCH, UTC)
    assert first["author_hash"] == author_hash("UCzephyr0000000000000000")
    assert first["heatmap"] == [{"start_s": 0.0, "end_s": 3.0, "value": 1.0},  # sorted, bad marker out, scale kept
                                {"start_s": 3.0, "end_s": 6.0, "value": 0.4},
                                {"start_s": 6.0, "end_s": 9.0, "value": 0.25}]
    raw = unpack_raw(first["raw"])
    assert raw["asr_grouped"] == [["Meet the new Zephyr bike."], ["Built for the city."], []]
    assert raw["replay_graphs"]["multiplier"] == 2.0 and raw["replay_graphs"]["original_marker_duration"] == 1.5
    assert len(raw["replay_graphs"]["markers"]) == 4  # a marker was dropped: the published ones are kept
    assert raw["channel_data"] == {"channel_id": "UCzephyr0000000000000000"}
    assert raw["metadata"] == {"date": "2021-03-04"}
    assert raw["blip2_annotations"]["objects"] == ["a man, a bicycle, a street", "wheel; spokes", "logo"]
    assert raw["_source"] == {"dataset": REPO, "config": None, "split": "train", "revision": commit}
    assert "ocr" not in raw and "captions" not in raw["blip2_annotations"]  # aligned: held by the tables

    quiet = items["youtube:Zx9_Yw8-Vu7"]
    assert quiet["like_count"] is None and quiet["view_count"] == 5000  # NaN likes: null
    assert [p["value"] for p in quiet["heatmap"]] == [0.25, 1.0, 0.5]  # 20, 80, 40 over the video's max 80
    assert [m["replay_score"] for m in unpack_raw(quiet["raw"])["replay_graphs"]["markers"]][:3] == [20.0, 80.0, 40.0]
    assert quiet["created_at"] == datetime(2020, 1, 15, tzinfo=UTC) and quiet["text"] is None
    drive = items["youtube:Mm1Nn2Oo3Pp"]
    assert drive["heatmap"] is None and drive["created_at"] == datetime(2019, 7, 8, 12, 30, tzinfo=UTC)
    drive_raw = unpack_raw(drive["raw"])
    assert drive_raw["ocr"] == [["A"], ["B"], ["C"], ["D"]]  # misaligned lists: the originals kept
    assert drive_raw["blip2_annotations"]["captions"] == ["a red car", "a road", "a sunset"]

    videos = {r["uid"]: r for r in got["videos"]}
    v = videos["youtube:aB3dE5fG7hI"]
    assert (v["duration_s"], v["upload_date"], v["channel_id"], v["channel_name"], v["channel_follower_count"]) == (
        30.5, "20210304", "UCzephyr0000000000000000", "Zephyr Bikes", 150000)
    assert (v["file_status"], v["file_reason"], v["source_info"], v["file_path"]) == ("skipped", "not_fetched", "cbc",
                                                                                      None)
    assert videos["youtube:Zx9_Yw8-Vu7"]["upload_date"] == "20200115"
    assert {(b["uid"], b["name"], b["value"], b["kind"]) for b in got["behavior"]} == {
        ("youtube:aB3dE5fG7hI", "likes", 1234.0, "count"), ("youtube:aB3dE5fG7hI", "views", 98765.0, "count"),
        ("youtube:Zx9_Yw8-Vu7", "likes", None, "count"), ("youtube:Zx9_Yw8-Vu7", "views", 5000.0, "count"),
        ("youtube:Mm1Nn2Oo3Pp", "likes", 10.0, "count"), ("youtube:Mm1Nn2Oo3Pp", "views", 500.0, "count")}

    transcripts = {r["uid"]: r for r in got["transcripts"]}
    t = transcripts["youtube:aB3dE5fG7hI"]
    assert (t["status"], t["backend"], t["model"], t["media_index"], t["duration_s"]) == (
        "ok", "cbc", "cbc:asr_raw", 0, 30.5)
    assert t["text"] == "Meet the new Zephyr bike. Built for the city."
    assert [s["text"] for s in t["segments"]] == [" Meet the new Zephyr bike.", " Built for the city."]
    assert t["segments"][0]["words"][:2] == [
        {"start_s": 0.0, "end_s": 0.4, "word": " Meet", "probability": 0.9},
        {"start_s": 0.4, "end_s": 0.8, "word": " the", "probability": 0.8}]
    assert t["segments"][1]["start_s"] == 2.4 and len(t["segments"][1]["words"]) == 4
    silent = transcripts["youtube:Zx9_Yw8-Vu7"]
    assert (silent["status"], silent["text"], silent["segments"]) == ("no_speech", None, [])

    caps = {(c["uid"], c["scene"]): c for c in got["captions"]}
    assert caps[("youtube:aB3dE5fG7hI", 0)]["caption"] == "a man riding a bicycle down a city street"
    assert caps[("youtube:aB3dE5fG7hI", 0)]["keywords"] == ["man", "bicycle", "street", "riding a bicycle"]
    assert caps[("youtube:aB3dE5fG7hI", 1)]["keywords"] == ["wheel", "spokes", "spinning"]
    assert caps[("youtube:aB3dE5fG7hI", 2)]["keywords"] == ["logo"]
    assert {(c["model"], c["prompt_sha"], c["media_index"]) for c in got["captions"]} == {("blip2 (CBC)", "cbc", 0)}
    assert [caps[("youtube:Mm1Nn2Oo3Pp", i)]["keywords"] for i in range(3)] == [["car", "driving"], ["road"], []]
    ocr = {(a["uid"], a["scene"]): a["ocr_text"] for a in got["attributes"]}
    assert ocr[("youtube:aB3dE5fG7hI", 0)] == "ZEPHYR\nRide further"
    assert ("youtube:aB3dE5fG7hI", 1) not in ocr  # no on-screen text in scene 1: no row
    assert [ocr[("youtube:Mm1Nn2Oo3Pp", i)] for i in range(4)] == ["A", "B", "C", "D"]
    assert all(a["tone"] is None and a["colors"] is None for a in got["attributes"])
    refs = {r["uid"]: r for r in got["video_refs"]}
    assert refs["youtube:Mm1Nn2Oo3Pp"]["rank"] == 2 and refs["youtube:Mm1Nn2Oo3Pp"]["url"].endswith("v=Mm1Nn2Oo3Pp")

    (error,) = side(train_run, "errors")
    assert error["record_key"] == f"{REPO}[train]:4" and error["error_class"] == "invalid"
    assert error["message"] == f"{REPO}[train]: row 4: column 'video_id': missing id"
    (dropped,) = side(train_run, "dropped")
    assert (dropped["reason"], dropped["uid"]) == ("duplicate_id", "youtube:aB3dE5fG7hI")
    assert dropped["detail"].startswith(f"{REPO}[train]: row 5: id 'aB3dE5fG7hI' was read before")

    test = stats[str(test_run)]["cbc.read"]
    assert test["out"]["items"] == 2 and test["errors"] == {}
    test_items = {r["uid"]: r for r in tables(test_run)["items"]}
    assert sorted(test_items) == ["youtube:Tt4Ss5Rr6Qq", "youtube:Uu7Vv8Ww9Xx"]
    assert unpack_raw(test_items["youtube:Uu7Vv8Ww9Xx"]["raw"])["_source"]["split"] == "test"
    assert test_items["youtube:Uu7Vv8Ww9Xx"]["like_count"] == 3

    # the shipped pipeline's instruct step: text-only records from the annotations alone
    assert stats[str(train_run)]["instruct"]["dropped"] == {}
    records = {r["id"]: r for r in read_dataset(train_run / "instructions", "instructions").to_pylist()}
    assert set(records) == {f"{uid}:{task}" for uid in items for task in ("behavior", "content")}
    zephyr = records["youtube:aB3dE5fG7hI:behavior"]
    human, answer = (t["value"] for t in zephyr["conversations"])
    assert zephyr["template"] == "video_annotations_behavior" and zephyr["media"] == [] and "<image>" not in human
    assert 'Its title is "Zephyr | The city bike".' in human and "It was posted in Zephyr Bikes." in human
    assert 'The audio says: "Meet the new Zephyr bike. Built for the city."' in human
    assert "Scene 1: Caption: a man riding a bicycle down a city street." in human
    assert 'On-screen text: "ZEPHYR Ride further".' in human
    assert answer == "Likes: 1234\nViews: 98765\nLike ratio: 1.2%"
    assert records["youtube:Zx9_Yw8-Vu7:behavior"]["conversations"][1]["value"] == "Views: 5000"  # likes unknown


# ------------------------------------------------------------------------------ local copies


def _pipeline(path: Path, stages: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"name": "cbc", "stages": stages}))
    return path


def test_local_parquet_and_json_lines_copies_through_the_runner(tmp_path: Path):
    """A Parquet copy and a JSON lines export (numbers as text, a struct as JSON text, malformed
    values) through run_pipeline: the good rows written, each bad one an error naming the input,
    the row and the column; then media.download records the videos as not fetched."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "train-00000-of-00001.parquet").write_bytes(parquet_bytes(replica_rows()["test"]))
    lines = [
        cbc_row("Jj1Kk2Ll3Mm", likes="42", views="1e3", channel_data=json.dumps(
            {"channel_id": "UCj", "company_name": "Jay", "subscribers": "7"})),
        cbc_row("Bad0Likes00", likes="lots"),
        cbc_row("Bad0Meta000", metadata="oops"),
        cbc_row("Bad0Marker0", replay_graphs={"markers": [{"start": 0, "end": 1, "replay_score": 1}, "x"]}),
        cbc_row("Bad0Word000", asr_raw=[{"start": 0, "end": 1, "text": "hi", "words": [{"start": "soon"}]}]),
        cbc_row("bad id!"),
        cbc_row("Neg0Views00", views=-5, likes=2.6, metadata={"title": "t", "length": 3, "date": "sometime"}),
    ]
    (data / "export.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in lines))
    pipe = _pipeline(tmp_path / "p.yaml", [
        {"stage": "cbc.read",
         "requests": [{"path": "data/train-00000-of-00001.parquet"}, {"path": "data/export.jsonl"}],
         "config": {"buckets": 2, "batch_rows": 3, "collected_at": "2023-06-01T00:00:00Z"}},
        {"stage": "media.download", "config": {"threads": 1}}])
    run = tmp_path / "run"
    report = run_pipeline(pipe, RunOptions(out=run, workers=1, progress=False))
    assert not report.failed
    stats = report.stats["stages"]["cbc.read"]
    assert stats["out"]["items"] == 4 and stats["errors"] == {"invalid": 5}
    assert stats["counters"]["negative:views"] == 1 and stats["counters"]["rounded:likes"] == 1
    assert stats["counters"]["unparsed:metadata.date"] == 1
    got = tables(run)
    items = {r["uid"]: r for r in got["items"]}
    assert sorted(items) == ["youtube:Jj1Kk2Ll3Mm", "youtube:Neg0Views00", "youtube:Tt4Ss5Rr6Qq",
                             "youtube:Uu7Vv8Ww9Xx"]
    jay = items["youtube:Jj1Kk2Ll3Mm"]
    assert (jay["like_count"], jay["view_count"], jay["subscriber_count"], jay["community"]) == (42, 1000, 7, "Jay")
    assert jay["collected_at"] == datetime(2023, 6, 1, tzinfo=UTC)
    assert {b["collected_at"] for b in got["behavior"]} == {datetime(2023, 6, 1, tzinfo=UTC)}
    neg = items["youtube:Neg0Views00"]
    assert (neg["view_count"], neg["like_count"], neg["created_at"]) == (None, 3, None)
    neg_raw = unpack_raw(neg["raw"])
    assert (neg_raw["views"], neg_raw["likes"], neg_raw["metadata"]) == (-5, 2.6, {"date": "sometime"})
    export = str(data / "export.jsonl")
    errors = {e["record_key"]: e for e in side(run, "errors")}
    assert sorted(errors) == [f"{export}:{n}" for n in (2, 3, 4, 5, 6)]
    messages = {k.rpartition(":")[2]: e["message"] for k, e in errors.items()}
    assert messages["2"] == f"{export}: row 2: column 'likes': expected a number, got 'lots'"
    assert messages["3"].startswith(f"{export}: row 3: column 'metadata': expected a struct, got text that is not JSON")
    assert messages["4"] == f"{export}: row 4: column 'replay_graphs.markers[1]': expected a struct, got str 'x'"
    assert messages["5"] == (f"{export}: row 5: column 'asr_raw[0].words[0].start': expected a number, got 'soon'")
    assert messages["6"].startswith(f"{export}: row 6: column 'video_id': 'bad id!' is not a YouTube video id")
    assert {e["error_type"] for e in errors.values()} == {"bad_number", "bad_struct", "bad_id"}
    media = read_dataset(run / "media", "media").to_pylist()
    assert {(m["status"], m["reason"]) for m in media} == {("skipped", "not_fetched")} and len(media) == 4


def test_a_rerun_skips_the_read_and_a_fixed_snapshot_changes_the_config(tmp_path: Path):
    data = tmp_path / "cbc.parquet"
    data.write_bytes(parquet_bytes(replica_rows()["test"]))
    stage = {"stage": "cbc.read", "requests": [{"path": "cbc.parquet"}], "config": {"buckets": 1}}
    pipe = _pipeline(tmp_path / "p.yaml", [stage])
    run = tmp_path / "run"
    assert run_pipeline(pipe, RunOptions(out=run, progress=False)).plans[0].skipped == []
    assert run_pipeline(pipe, RunOptions(out=run, progress=False)).plans[0].skipped == ["_stream"]
    stage["config"] = {"buckets": 1, "collected_at": "2023-01-01"}
    again = run_pipeline(_pipeline(pipe, [stage]), RunOptions(out=run, progress=False))
    assert again.plans[0].skipped == []
    assert {r["collected_at"] for r in tables(run)["items"]} == {datetime(2023, 1, 1, tzinfo=UTC)}


def test_requests_and_inputs_that_are_not_the_corpus_are_named(tmp_path: Path):
    from blift.runner.bucket_sink import stream_into_buckets

    assert load_stage("cbc.read") is CbcReadStage
    with pytest.raises(ConfigError, match=r"requests\[0\]: media_roots"):
        CbcReadStage.expand_requests([{"path": str(tmp_path), "media_roots": [str(tmp_path)]}])
    with pytest.raises(ConfigError, match="exactly one of 'path'"):
        CbcReadStage.expand_requests([{"url": "x"}])
    other = tmp_path / "posts.parquet"
    pq.write_table(pa.table({"post_id": ["p1"], "title": ["hi"]}), other)
    requests = CbcReadStage.expand_requests([{"path": str(other)}])
    with pytest.raises(ConfigError, match=r"no 'video_id' column, so not the Content Behavior Corpus; "
                                          r"the input's columns are \['post_id', 'title'\]"):
        stream_into_buckets(CbcReadStage(CbcReadConfig(), tmp_path / "run"), requests, tmp_path / "run")


# ------------------------------------------------------------------------------ the parts


def test_replay_scores_are_kept_in_0_1_or_rescaled_by_the_videos_maximum():
    kept = heatmap([{"start": 0, "end": 1, "replay_score": 0.0}, {"start": 1, "end": 2, "replay_score": 1.0}], "r")
    assert [p["value"] for p in kept.points or []] == [0.0, 1.0] and kept.rescaled_by is None and not kept.changed
    scaled = heatmap([{"start": 0, "end": 1, "replay_score": 1.5}, {"start": 1, "end": 2, "replay_score": 3.0}], "r")
    assert [p["value"] for p in scaled.points or []] == [0.5, 1.0] and scaled.rescaled_by == 3.0
    bad = heatmap([{"start": 0, "end": 1, "replay_score": -0.1}, {"start": -1, "end": 1, "replay_score": 0.5},
                   {"start": 2, "end": 1, "replay_score": 0.5}, {"start": None, "end": 1, "replay_score": 0.5},
                   {"start": 0, "end": 1, "replay_score": math.inf}], "r")
    assert bad.points is None and bad.dropped == Counter(
        {"negative_score": 1, "negative_time": 1, "end_not_after_start": 1, "bad_number": 2})
    assert heatmap(None, "r").points is None
    columnar = heatmap({"start": [0.0, 1.0], "end": [1.0, 2.0], "replay_score": [0.2, 0.4]}, "r")  # old datasets form
    assert [p["value"] for p in columnar.points or []] == [0.2, 0.4]
    with pytest.raises(InvalidRecord, match=r"column 'replay_graphs.markers\[0\]': expected a struct"):
        heatmap([3.0], "r")


def test_keywords_dates_and_counts():
    assert phrases("a man, two dogs and a ball") == ["man", "two dogs", "ball"]
    assert phrases("['Car', 'tree']") == ["car", "tree"]
    assert phrases("  ") == [] and phrases("rock; The Sea | sky\nsun.") == ["rock", "sea", "sky", "sun"]
    counts: Counter[str] = Counter()
    when = [day(v, "r", "d", counts) for v in ("2023-05-01", "20230501", 20230501, "2023-05-01T10:00:00+02:00",
                                                "May 1, 2023", "1 May 2023", "1682899200")]
    assert [w.isoformat() if w else None for w in when] == [
        "2023-05-01T00:00:00+00:00"] * 3 + ["2023-05-01T08:00:00+00:00"] + ["2023-05-01T00:00:00+00:00"] * 3
    assert [day(v, "r", "d", counts) for v in ("soon", "2023", None, "")] == [None] * 4
    assert counts == Counter({"unparsed:d": 2})
    got = [count(v, "r", "c", counts) for v in (5.0, "12", float("nan"), None, -1.0, 2.5)]
    assert got == [5, 12, None, None, None, 2]
    assert counts["missing:c"] == 2 and counts["negative:c"] == 1 and counts["rounded:c"] == 1
    with pytest.raises(InvalidRecord, match="column 'c': expected a finite number"):
        count(math.inf, "r", "c", counts)
