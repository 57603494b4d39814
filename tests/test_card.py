"""The dataset card: front matter that `datasets` loads, the filter table from stats.json, plots, takedowns.

Releases are written by the real writer (`blift.release.writer.release`) from small run folders
built with blift's own tables and the real `instruct` stage; the card is then rendered from the
release folder alone, as `blift release`, takedowns and pushes do.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pytest
import yaml
from PIL import Image

from blift import schemas, tables
from blift.ids import author_hash, pack_raw
from blift.release import card as card_mod
from blift.release import plots
from blift.release.card import CardError, arrow_feature, hf_feature, render_card, write_card
from blift.release.manifest import Takedown, read_manifest, write_manifest
from blift.release.writer import release
from blift.runner.stats import write_stats
from blift.stage import ShardInput
from blift.stages.instruct.stage import InstructStage

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
COLLECTED = datetime(2024, 6, 1, 12, 0, tzinfo=timezone.utc)
WORDS = ("the light on those mountains is beautiful and the colours look real",
         "I would love to visit this place next summer with my family",
         "great composition, what camera did you use for this shot",
         "this reminds me of a trip we took years ago along the coast",
         "the reflection in the water makes the whole picture work",
         "honestly one of the best photos I have seen here this week")
# Reddit scores: two are not positive, so the log plot must say how many it leaves out.
REDDIT_SCORES = [0, -3, 5, 12, 40, 150, 900, 2500, 12000, 55000]
YOUTUBE = [  # (views, likes, comment_count, heatmap?, scenes)
    (52_000, 1_700, 3, True, [(0.0, 4.0), (4.0, 8.0), (8.0, 12.0)]),
    (184_000, 6_000, 7, True, [(0.0, 5.0), (5.0, 12.0)]),
    (20_000, 300, 2, False, [(0.0, 12.0)]),
]
STATS_STAGES: dict[str, dict[str, Any]] = {
    "reddit.collect": {"shards": 2, "shards_done": 2, "records_in": 10, "out": {"items": 10, "comments": 31},
                       "dropped": {}, "errors": {"transient": 3}, "counters": {}, "seconds": 1.0,
                       "seconds_per_record": 0.1},
    "youtube.collect": {"shards": 1, "shards_done": 1, "records_in": 4, "out": {"items": 3, "videos": 3},
                        "dropped": {"few_views": 1}, "errors": {"permanent": 2}, "counters": {}, "seconds": 1.0,
                        "seconds_per_record": 0.25},
    "clean": {"shards": 2, "shards_done": 2, "records_in": 57, "out": {"items_clean": 13, "comments_clean": 30},
              "dropped": {"too_short": 9, "language": 4, "bot": 1}, "errors": {"invalid": 1},
              "counters": {"lang_en": 33, "lang_de": 4}, "seconds": 0.2, "seconds_per_record": 0.004,
              "languages": {"kept": ["en"]},
              "settings": {"comment words": "3 or more words, 5 to 2000 characters",
                           "comment words (youtube)": "4 to 100 words, 5 to 2000 characters",
                           "NSFW word list": "LDNOOBW (en), on comments and item titles", "toxicity": "off",
                           "near-duplicate cosine": ">= 0.6; youtube: >= 0.7"}},
}


# --------------------------------------------------------------------------- run folder


def _jpeg(seed: int) -> bytes:
    img = Image.new("RGB", (32, 24), ((seed * 40) % 256, (seed * 90) % 256, 120))
    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    return buf.getvalue()


def _heatmap(duration: float, peak: float) -> list[dict[str, float]]:
    step = duration / 40
    return [{"start_s": round(i * step, 3), "end_s": round((i + 1) * step, 3),
             "value": round(float(np.exp(-((i * step - peak) ** 2))) * 0.9 + 0.1, 4)} for i in range(40)]


def build_run(run: Path) -> dict[str, Any]:
    """Reddit image posts and YouTube videos with comments, scenes, heatmaps; instructions by the real stage."""
    items, comments, media, attrs, scenes, videos = [], [], [], [], [], []
    for i, score in enumerate(REDDIT_SCORES):
        uid = f"reddit:p{i}"
        items.append({"uid": uid, "platform": "reddit", "item_id": f"p{i}", "source": "api",
                      "title": f"Mountain view {i}",
                      "community": "EarthPorn" if i % 3 else "pics", "author_hash": author_hash(f"user{i}"),
                      "created_at": T0 + timedelta(days=i), "collected_at": COLLECTED, "media_kind": "image",
                      "score": score, "upvote_ratio": round(0.55 + 0.04 * i, 2), "num_comments": 3 + i,
                      "raw": pack_raw({"id": f"p{i}"})})
        path = f"media/im/p{i}.jpg"
        (run / path).parent.mkdir(parents=True, exist_ok=True)
        (run / path).write_bytes(_jpeg(i))
        media.append({"uid": uid, "index": 0, "url": f"https://i.example/p{i}.jpg", "status": "ok", "path": path,
                      "mime": "image/jpeg", "width": 32, "height": 24})
        attrs.append({"uid": uid, "media_index": 0, "orientation": "landscape", "width": 32, "height": 24,
                      "colors": [{"name": "Sky_Blue", "fraction": 0.6}], "tone": "cool", "complexity": "low",
                      "ocr_text": ""})
        for j in range(3):
            comments.append({"uid": uid, "platform": "reddit", "comment_id": f"p{i}c{j}", "depth": 0,
                             "text": WORDS[(i + j) % len(WORDS)], "score": 10 - j,
                             "author_hash": author_hash(f"commenter{j}"), "created_at": T0 + timedelta(days=i, hours=j),
                             "collected_at": COLLECTED})
    for k, (views, likes, n_comments, has_heatmap, spans) in enumerate(YOUTUBE):
        uid = f"youtube:vid{k}"
        items.append({"uid": uid, "platform": "youtube", "item_id": f"vid{k}", "source": "replay",
                      "title": f"Pattern study {k}", "community": f"Channel {k}",
                      "author_hash": author_hash(f"chan{k}"),
                      "created_at": T0 - timedelta(days=30 + k), "collected_at": COLLECTED, "media_kind": "video",
                      "view_count": views, "like_count": likes, "comment_count": n_comments,
                      "heatmap": _heatmap(12.0, 3.0 + 3 * k) if has_heatmap else None})
        path = f"media/vd/vid{k}.mp4"
        (run / path).parent.mkdir(parents=True, exist_ok=True)
        (run / path).write_bytes(b"\x00\x00\x00\x18ftypmp42" + uid.encode())
        media.append({"uid": uid, "index": 0, "url": f"https://v.example/vid{k}.mp4", "status": "ok", "path": path,
                      "mime": "video/mp4", "duration_s": 12.0, "has_audio": False, "width": 64, "height": 48})
        videos.append({"uid": uid, "duration_s": 12.0, "channel_name": f"Channel {k}",
                       "comment_times_estimated": k != 2,
                       "file_status": "ok", "file_path": path})
        for s, (start, end) in enumerate(spans):
            scenes.append({"uid": uid, "media_index": 0, "scene": s, "start_s": start, "end_s": end,
                           "start_frame": int(start * 25), "end_frame": int(end * 25), "detector": "content:27.0"})
            attrs.append({"uid": uid, "media_index": 0, "scene": s, "orientation": "landscape", "width": 64,
                          "height": 48, "colors": [{"name": "Red", "fraction": 0.5}], "tone": "warm",
                          "complexity": "high", "ocr_text": ""})
        for j in range(max(2, n_comments)):
            comments.append({"uid": uid, "platform": "youtube", "comment_id": f"v{k}c{j}", "depth": 0,
                             "text": WORDS[(k + j + 2) % len(WORDS)], "like_count": 20 - j,
                             "author_hash": author_hash(f"viewer{j}"), "created_at": COLLECTED - timedelta(days=11),
                             "collected_at": COLLECTED})
    tbl = {
        "items_clean": schemas.get("items").from_rows(items),
        "comments_clean": schemas.get("comments").from_rows(comments),
        "media": schemas.get("media").from_rows(media),
        "attributes": schemas.get("attributes").from_rows(attrs),
        "videos": schemas.get("videos").from_rows(videos),
        "scenes": schemas.get("scenes").from_rows(scenes),
    }
    for name in ("transcripts", "captions", "frames"):
        tbl[name] = schemas.get(name).empty()
    stage = InstructStage(InstructStage.Config(top_k_comments=3, require_heatmap=False), run)
    stage.setup()
    result = stage.process(ShardInput("part-00000", tbl, run))
    instructions = result.tables["instructions"]
    for folder, schema_name in (("items_clean", "items"), ("comments_clean", "comments"), ("media", "media"),
                                ("videos", "videos"), ("scenes", "scenes")):
        tables.write_shard(run / folder / "part-00000.parquet", tbl[folder], schema_name)
    tables.write_shard(run / "instructions" / "part-00000.parquet", instructions, "instructions")
    tables.write_shard(run / "scene_behavior" / "part-00000.parquet", result.tables["scene_behavior"], "scene_behavior")
    stages = json.loads(json.dumps(STATS_STAGES))
    stages["instruct"] = {"shards": 1, "shards_done": 1, "records_in": len(items),
                          "out": {"instructions": instructions.num_rows}, "dropped": {}, "errors": {}, "counters": {},
                          "seconds": 0.1, "seconds_per_record": 0.01}
    write_stats(run, "cardtest", stages)
    return {"items": items, "instructions": instructions.to_pylist(), "stages": stages}


ALL_CONFIGS = {"instructions": "instructions", "items": "items_clean", "comments": "comments_clean",
               "scenes": "scenes", "videos": "videos"}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path, dict[str, Any]]:
    base = tmp_path_factory.mktemp("card")
    written = build_run(base / "run")
    release(base / "run", base / "out", configs=ALL_CONFIGS, check=False)
    return base, base / "out", written


def _split_card(text: str) -> tuple[dict[str, Any], str]:
    assert text.startswith("---\n")
    _, meta, body = text.split("---\n", 2)
    return yaml.safe_load(meta), body


def _table_rows(body: str, header: str) -> list[list[str]]:
    """Rows of the Markdown table whose header line starts with ``header``."""
    lines = body.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def _fmt(value: float) -> str:
    """Counts as the card prints them: thousands separators, one decimal when not whole."""
    return f"{int(value):,}" if float(value).is_integer() else f"{value:,.1f}"


def _copy_release(out: Path, dest: Path) -> Path:
    shutil.copytree(out, dest)
    return dest


# --------------------------------------------------------------------------- tests


@pytest.mark.slow
def test_front_matter_parses_and_every_config_loads_with_its_features(built):
    base, out, written = built
    meta, _ = _split_card((out / "README.md").read_text())
    manifest = read_manifest(out)
    assert meta["license"] == manifest.license
    assert meta["language"] == ["en"]  # the comments are English: identified in the data
    assert meta["task_categories"] == ["image-text-to-text", "video-text-to-text"]
    assert meta["size_categories"] == [card_mod.size_category(manifest.configs["instructions"].rows)]
    assert {"reddit", "youtube"} <= set(meta["tags"])
    cfgs = {c["config_name"]: c for c in meta["configs"]}
    assert set(cfgs) == set(ALL_CONFIGS) and cfgs["instructions"].get("default") is True
    infos = {i["config_name"]: i for i in meta["dataset_info"]}
    assert set(infos) == set(ALL_CONFIGS)
    for name, cfg in manifest.configs.items():
        assert [d["split"] for d in cfgs[name]["data_files"]] == [s for s in ("train", "validation", "test")
                                                                  if s in cfg.splits]
        rows = {s: f.rows for s, f in cfg.splits.items()}
        assert {s["name"]: s["num_examples"] for s in infos[name]["splits"]} == rows
        files = [out / f for sf in cfg.splits.values() for f in sf.files]
        assert infos[name]["download_size"] == sum(f.stat().st_size for f in files)
        expected = datasets.Features._from_yaml_list(infos[name]["features"])
        loaded = datasets.load_dataset(str(out), name=name, cache_dir=str(base / "hf-cache"))
        assert {s: d.num_rows for s, d in loaded.items()} == rows
        for split_ds in loaded.values():
            assert split_ds.features == expected
        assert "raw" not in expected  # the release dropped it, so the card does not declare it
    stream = datasets.load_dataset(str(out), name="instructions", split="train", streaming=True)
    first = next(iter(stream))
    assert first["conversations"] and first["id"] in {r["id"] for r in written["instructions"]}


def test_features_yaml_is_what_datasets_writes_for_every_schema():
    """Our Arrow -> YAML conversion equals `datasets`' own, for every blift table and for media features."""
    for name, schema in schemas.all_schemas().items():
        ours = [{"name": f.name, **arrow_feature(f.type, name)} for f in schema.arrow]
        assert ours == datasets.Features.from_arrow_schema(schema.arrow)._to_yaml_list(), name
    media = datasets.Features({"image": datasets.Image(),
                               "frames": datasets.Array4D(shape=(None, 3, 8, 8), dtype="uint8"),
                               "pairs": datasets.List(datasets.Value("int32"), length=2),
                               "nested": {"a": datasets.List({"b": datasets.Value("string")})}})
    as_json = json.loads(json.dumps(media.to_dict()))  # what Parquet `huggingface` metadata holds
    ours = [{"name": k, **hf_feature(v)} for k, v in as_json.items()]
    assert ours == media._to_yaml_list()
    assert datasets.Features._from_yaml_list(ours) == media
    with pytest.raises(CardError, match="col"):
        arrow_feature(pa.map_(pa.string(), pa.int32()), "col")


def test_filter_table_has_every_stage_reason_and_error_class_from_stats(built):
    _, out, written = built
    _, body = _split_card((out / "README.md").read_text())
    stages = written["stages"]
    overview = {r[0]: r for r in _table_rows(body, "| stage | shards done |")}
    assert list(overview) == list(stages)
    for name, st in stages.items():
        row = overview[name]
        assert row[1] == f"{st['shards_done']}/{st['shards']}"
        assert row[2] == f"{st['records_in']:,}"
        assert row[4] == f"{sum(st['dropped'].values()):,}" and row[5] == f"{sum(st['errors'].values()):,}"
        for table, n in st["out"].items():
            assert f"{table} {n:,}" in row[3]
    dropped = {(r[0], r[1]): r[2] for r in _table_rows(body, "| stage | reason |")}
    assert dropped == {(s, r): f"{n:,}" for s, st in stages.items() for r, n in st["dropped"].items()}
    errors = {(r[0], r[1]): r[2] for r in _table_rows(body, "| stage | error class |")}
    assert errors == {(s, c): f"{n:,}" for s, st in stages.items() for c, n in st["errors"].items()}
    assert "`clean` stage identified" in body and "en 33, de 4" in body
    # every setting a stage recorded (its thresholds and switches) is listed under its stage
    settings = {(r[0], r[1]): r[2] for r in _table_rows(body, "| stage | setting |")}
    assert settings == {(s, k): v for s, st in stages.items() for k, v in st.get("settings", {}).items()}
    assert settings[("clean", "NSFW word list")] == "LDNOOBW (en), on comments and item titles"


def test_plots_are_valid_pngs_referenced_by_the_card_and_deterministic(built, tmp_path):
    _, out, written = built
    _, body = _split_card((out / "README.md").read_text())
    referenced = re.findall(r"!\[[^\]]*\]\((assets/[^)]+\.png)\)", body)
    heatmaps = sum(1 for i in written["items"] if i.get("heatmap"))
    assert sorted(referenced) == sorted(
        ["assets/upvotes.png", "assets/upvote_ratio.png", "assets/like_ratio.png", "assets/comments_per_item.png",
         "assets/views.png"] + [f"assets/replay_{i}.png" for i in range(1, heatmaps + 1)])
    assert sorted(p.name for p in (out / "assets").iterdir()) == sorted(Path(r).name for r in referenced)
    for rel in referenced:
        with Image.open(out / rel) as img:
            img.verify()
        with Image.open(out / rel) as img:
            assert img.format == "PNG" and img.size == (640, 360)
            assert "Software" not in img.info
    not_positive = sum(1 for s in REDDIT_SCORES if s <= 0)
    assert f"{not_positive:,} items with a score of 0 or less not shown" in body
    # scene cuts come from the scenes config: a video with 3 scenes has 2 cuts
    assert "dashed lines: 2 scene cuts" in body and "dashed lines: 1 scene cut" in body
    # rendering again (another folder, same data) gives the same bytes
    copy = _copy_release(out, tmp_path / "copy")
    shutil.rmtree(copy / "assets")
    write_card(copy)
    for rel in referenced:
        assert (copy / rel).read_bytes() == (out / rel).read_bytes(), rel


def test_behavior_summary_numbers_come_from_the_items(built):
    _, out, written = built
    _, body = _split_card((out / "README.md").read_text())
    rows = {r[0]: r for r in _table_rows(body, "| metric | items |")}
    score = rows["Reddit score (upvotes minus downvotes)"]
    assert score[1:] == [_fmt(len(REDDIT_SCORES)), _fmt(min(REDDIT_SCORES)), _fmt(np.median(REDDIT_SCORES)),
                         _fmt(np.mean(REDDIT_SCORES)), _fmt(max(REDDIT_SCORES))]
    views = rows["YouTube views"]
    assert views[1] == str(len(YOUTUBE)) and views[5] == f"{max(v for v, *_ in YOUTUBE):,}"
    ratios = [likes / views for views, likes, *_ in YOUTUBE]
    assert rows["YouTube like ratio (likes / views)"][2] == f"{min(ratios):.3f}"
    assert "| youtube | Channel 0 | 1 |" in body and "EarthPorn" in body


@pytest.mark.slow
def test_takedowns_are_listed_as_counts_and_contact_placeholder_until_set(built, tmp_path):
    _, out, _ = built
    copy = _copy_release(out, tmp_path / "rel")
    text = render_card(copy)
    assert "Takedown contact: not set" in text and "No takedown has been applied" in text
    manifest = read_manifest(copy)
    manifest.takedowns.append(Takedown(date=datetime(2026, 3, 4, 9, 30, tzinfo=timezone.utc), ids_listed=5,
                                       items_removed=2, authors_removed=1, rows_removed={"items": 2, "comments": 7},
                                       media_removed=2))
    manifest.takedown_contact = "takedown@example.org"
    write_manifest(copy, manifest)
    _, body = _split_card(render_card(copy))
    rows = _table_rows(body, "| date | ids listed |")
    assert rows == [["2026-03-04", "5", "2", "1", "comments 7, items 2", "2"]]
    assert "takedown@example.org" in body and "not set" not in body
    assert "09:30" not in body  # a date, not the moment


def test_missing_stats_is_said_not_guessed(built, tmp_path):
    _, out, _ = built
    copy = _copy_release(out, tmp_path / "rel")
    (copy / "stats.json").unlink()
    _, body = _split_card(render_card(copy))
    section = body.split("## Filtering and accounting", 1)[1].split("\n## ", 1)[0]
    assert "no `stats.json`" in section and "|" not in section


def test_card_refuses_a_manifest_that_disagrees_with_the_files(built, tmp_path):
    _, out, _ = built
    copy = _copy_release(out, tmp_path / "rel")
    manifest = read_manifest(copy)
    manifest.configs["items"].splits["train"].rows += 1
    write_manifest(copy, manifest)
    with pytest.raises(CardError, match=r"config 'items', split 'train'.*release.json says"):
        render_card(copy)


@pytest.mark.slow
def test_custom_template_and_broken_template(built, tmp_path):
    _, out, _ = built
    copy = _copy_release(out, tmp_path / "rel")
    good = tmp_path / "good.md.j2"
    good.write_text("---\n{{ front_matter }}---\n\n# {{ pretty_name }}\n\nrows: "
                    "{% for c in configs %}{{ c.name }}/{{ c.split }}={{ c.rows }} {% endfor %}\n")
    path = write_card(copy, template=good)
    meta, body = _split_card(path.read_text())
    assert meta["configs"] and "instructions/train=" in body
    bad = tmp_path / "bad.md.j2"
    bad.write_text("# no metadata {{ pretty_name }}\n")
    with pytest.raises(CardError, match="YAML block"):
        render_card(copy, template=bad)
    typo = tmp_path / "typo.md.j2"
    typo.write_text("---\n{{ front_matter }}---\n{{ no_such_value }}\n")
    with pytest.raises(CardError, match="no_such_value"):
        render_card(copy, template=typo)


@pytest.mark.slow
def test_languages_come_from_release_json_without_language_identification(built, tmp_path, monkeypatch):
    """The card names what the run's clean stage recorded; it never runs a language identifier."""
    from blift.models import langid

    def no_language_id(*_: object, **__: object) -> None:
        raise AssertionError("the card ran language identification")

    monkeypatch.setattr(langid, "make_identifier", no_language_id)
    monkeypatch.setattr(langid, "detect_all", no_language_id)
    _, out, _ = built
    copy = _copy_release(out, tmp_path / "rel")
    manifest = read_manifest(copy)
    assert manifest.languages is not None and manifest.languages.codes == ["en"] and manifest.languages.filtered
    meta, body = _split_card(render_card(copy))
    assert meta["language"] == ["en"] and "(the languages the `clean` stage kept comments in)" in body

    manifest.languages = manifest.languages.model_copy(update={  # a run without a language filter
        "codes": ["en", "de"], "filtered": False, "counts": {"en": 70, "de": 25, "fr": 5}, "min_share": 0.1})
    write_manifest(copy, manifest)
    meta, body = _split_card(render_card(copy))
    assert meta["language"] == ["en", "de"]
    assert ("found by the `clean` stage on the 100 comments it kept, without filtering by language: en 70%, de 25%, "
            "fr 5%; languages with at least 10% are listed") in body

    manifest.languages = None  # a run whose clean stage predates the record: nothing is guessed
    write_manifest(copy, manifest)
    meta, body = _split_card(render_card(copy))
    assert "language" not in meta and "not recorded" in body


@pytest.mark.slow
def test_rendering_a_card_does_not_import_the_language_identifier(built):
    _, out, _ = built
    code = ("import sys; from blift.release.card import render_card; render_card(sys.argv[1]); "
            "print('blift.models.langid' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "False"


def test_instructions_only_release_with_image_bytes(built, tmp_path):
    """No items config: behavior comes from the records' targets; embedded images load as `Image`."""
    base, _, written = built
    out = tmp_path / "bytes"
    release(base / "run", out, configs={"instructions": "instructions"}, images="bytes", check=False)
    meta, body = _split_card((out / "README.md").read_text())
    info = meta["dataset_info"][0]
    image = next(f for f in info["features"] if f["name"] == "image")
    assert image == {"name": "image", "dtype": "image"}
    loaded = datasets.load_dataset(str(out), name="instructions", cache_dir=str(tmp_path / "hf-cache"))
    rec = next(r for r in loaded["train"] if r["media_kind"] == "image")
    assert rec["image"].size == (32, 24)
    assert "targets of its `behavior` records" in body
    behavior_uids = {r["uid"] for r in written["instructions"] if r["task"] == "behavior" and r["platform"] == "reddit"}
    rows = {r[0]: r for r in _table_rows(body, "| metric | items |")}
    assert rows["Reddit score (upvotes minus downvotes)"][1] == f"{len(behavior_uids):,}"
    assert "language" not in meta  # no comments or titles released: not determined, not guessed
    assert "not determined" in body


def test_plots_are_left_out_without_data_and_stale_ones_removed(tmp_path):
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "views.png").write_bytes(b"old")
    (assets / "logo.png").write_bytes(b"mine")
    behavior = plots.Behavior(source="test", platform=np.array(["reddit"], dtype=object), score=np.array([np.nan]),
                              upvote_ratio=np.array([0.5]), num_comments=np.array([np.nan]),
                              comment_count=np.array([np.nan]), view_count=np.array([np.nan]),
                              like_count=np.array([np.nan]), like_ratio=np.array([np.nan]))
    written = plots.write_plots(tmp_path, behavior)
    assert [p.file for p in written] == ["assets/upvote_ratio.png"]
    assert sorted(p.name for p in assets.iterdir()) == ["logo.png", "upvote_ratio.png"]
    assert plots.write_plots(tmp_path, None) == []
    assert sorted(p.name for p in assets.iterdir()) == ["logo.png"]


@pytest.mark.slow
def test_real_takedown_rerenders_the_card_with_counts_and_no_ids(built, tmp_path):
    """`blift.release.takedown` re-renders the card: the removed video's plot and uid leave, counts stay."""
    from blift.release.takedown import takedown

    base, _, written = built
    copy = tmp_path / "rel"
    # no scenes config: the card must not depend on it, and a takedown re-shards every config it touches
    release(base / "run", copy, configs={k: v for k, v in ALL_CONFIGS.items() if k != "scenes"}, check=False)
    before = (copy / "README.md").read_text()
    assert "youtube:vid0" in before and (copy / "assets" / "replay_2.png").is_file()
    author = next(i["author_hash"] for i in written["items"] if i["uid"] == "reddit:p4")
    ids = tmp_path / "ids.txt"
    ids.write_text(f"youtube:vid0\nauthor:{author}\n")
    report = takedown(copy, ids, now=datetime(2026, 7, 8, tzinfo=timezone.utc), check=False)
    text = (copy / "README.md").read_text()
    assert "youtube:vid0" not in text and author not in text
    meta, body = _split_card(text)
    row = _table_rows(body, "| date | ids listed |")
    assert row[0][:4] == ["2026-07-08", "2", f"{report.items_removed:,}", f"{report.authors_removed:,}"]
    manifest = read_manifest(copy)
    infos = {i["config_name"]: i for i in meta["dataset_info"]}
    assert {s["name"]: s["num_examples"] for s in infos["items"]["splits"]} == {
        s: f.rows for s, f in manifest.configs["items"].splits.items()}
    assert sum(s["num_examples"] for s in infos["items"]["splits"]) == len(written["items"]) - 2
    # one video with a heatmap is left: one replay plot, the stale second one is gone
    assert (copy / "assets" / "replay_1.png").is_file() and not (copy / "assets" / "replay_2.png").exists()


def test_blifts_own_record_kinds_are_explained_only_when_present(built, monkeypatch):
    _, out, _ = built
    _, body = _split_card(render_card(out))
    assert "`generic_*` records are blift's" not in body and "`video_annotations_*` records" not in body
    import blift.release.card as card

    kinds = [{"task": "behavior", "media_kind": "image", "template": "generic_image_behavior v1", "records": "3"},
             {"task": "behavior", "media_kind": "video", "template": "video_annotations_behavior v1", "records": "2"}]
    monkeypatch.setattr(card, "_tasks", lambda release_dir, manifest: kinds)
    _, body = _split_card(render_card(out))
    assert "`generic_*` records are blift's, not the paper's" in body
    assert "`video_annotations_*` records are text-only" in body
