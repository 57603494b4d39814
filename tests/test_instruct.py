"""Instruction records for Reddit image posts: templates, verbalization, validation, the stage."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from blift import schemas
from blift.errors import ConfigError, ErrorClass
from blift.ids import split_of
from blift.stage import ShardInput
from blift.stages.instruct.stage import InstructStage
from blift.stages.instruct.templates import TEMPLATES_DIR, TemplateError, load_template
from blift.stages.instruct.validate import (
    InvalidInstruction,
    check_record,
    validate_record,
)
from blift.stages.instruct.verbalize import describe_image, format_ratio, shorten, tidy

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


# ---------------------------------------------------------------- hand-built rows


def item(uid: str, **kw: Any) -> dict[str, Any]:
    row = {
        "uid": uid, "platform": "reddit", "item_id": uid.split(":")[1], "source": "api",
        "title": f"Title of {uid}", "community": "EarthPorn", "collected_at": T0,
        "media_kind": "image", "score": 1234, "upvote_ratio": 0.92, "num_comments": 57,
    }
    row.update(kw)
    return row


def comment(uid: str, cid: str, score: int | None, text: str, depth: int = 0, **kw: Any) -> dict[str, Any]:
    row = {"uid": uid, "platform": "reddit", "comment_id": cid, "depth": depth, "text": text,
           "score": score, "collected_at": T0, "parent_id": None if depth == 0 else "x"}
    row.update(kw)
    return row


def media(uid: str, index: int = 0, status: str = "ok", mime: str = "image/jpeg", **kw: Any) -> dict[str, Any]:
    row = {"uid": uid, "index": index, "url": f"https://i.example/{uid}/{index}.jpg", "status": status,
           "path": f"media/{uid.split(':')[1]}/{index}.jpg" if status == "ok" else None, "mime": mime,
           "width": 1200, "height": 800}
    row.update(kw)
    return row


def attrs(uid: str, index: int = 0, **kw: Any) -> dict[str, Any]:
    row = {
        "uid": uid, "media_index": index, "scene": None, "orientation": "landscape", "width": 1200, "height": 800,
        "colors": [{"name": "Dark_Blue", "fraction": 0.45}, {"name": "Off_White", "fraction": 0.3},
                   {"name": "Red", "fraction": 0.1}],
        "foreground_colors": ["Red", "Off_White"], "background_colors": ["Dark_Blue"],
        "tone": "cool", "brightness": 0.4, "complexity": "low", "complexity_score": 0.05,
        "ocr_text": "", "caption": None, "keywords": None,
    }
    row.update(kw)
    return row


def shard(items: list[dict], comments: list[dict], media_rows: list[dict], attr_rows: list[dict],
          tmp_path: Path) -> ShardInput:
    tables = {
        "items_clean": schemas.get("items").from_rows(items),
        "comments_clean": schemas.get("comments").from_rows(comments),
        "media": schemas.get("media").from_rows(media_rows),
        "attributes": schemas.get("attributes").from_rows(attr_rows),
    }
    return ShardInput(shard_id="part-00000", tables=tables, run_dir=tmp_path)


def run_stage(tmp_path: Path, items, comments, media_rows, attr_rows, **config):
    stage = InstructStage(InstructStage.Config(**config), tmp_path)
    stage.setup()
    return stage.process(shard(items, comments, media_rows, attr_rows, tmp_path))


def by_id(result) -> dict[str, dict]:
    return {r["id"]: r for r in result.tables["instructions"].to_pylist()}


@pytest.fixture
def basic(tmp_path: Path):
    uid = "reddit:abc"
    comments = [
        comment(uid, "c1", 10, "ten points"),
        comment(uid, "c2", 300, "three hundred"),
        comment(uid, "c3", 50, "fifty   points\nwith a line break"),
        comment(uid, "c4", 50, "also fifty"),  # tie with c3: comment id decides (c3 first)
        comment(uid, "c5", 9999, "a reply, not top level", depth=1),
        comment(uid, "c6", 5000, "Please follow the rules", stickied=True, distinguished="moderator"),
        comment(uid, "c7", 7, "seven"),
        comment(uid, "c8", 1, "one"),
    ]
    return run_stage(tmp_path, [item(uid)], comments, [media(uid)], [attrs(uid)], top_k_comments=4)


# ---------------------------------------------------------------- the stage


def test_behavior_record_ranks_top_k_comments_and_types_targets(basic):
    recs = by_id(basic)
    assert set(recs) == {"reddit:abc:behavior", "reddit:abc:content"}
    beh = recs["reddit:abc:behavior"]
    t = beh["targets"]
    assert t["comments"] == ["three hundred", "fifty points with a line break", "also fifty", "ten points"]
    assert t["comment_scores"] == [300, 50, 50, 10]
    assert (t["score"], t["upvote_ratio"], t["num_comments"]) == (1234, 0.92, 57)
    assert t["view_count"] is None and t["like_count"] is None and t["like_ratio"] is None
    answer = beh["conversations"][1]["value"]
    assert "Upvotes: 1234" in answer and "Upvote ratio: 92%" in answer and "Number of comments: 57" in answer
    assert "1. three hundred\n2. fifty points with a line break\n3. also fifty\n4. ten points" in answer
    assert "seven" not in answer and "a reply" not in answer and "follow the rules" not in answer
    human = beh["conversations"][0]["value"]
    assert human.startswith("<image>\nThis image was posted on the subreddit r/EarthPorn")
    assert '"Title of reddit:abc"' in human and "dark blue (45%)" in human
    assert beh["media"] == ["media/abc/0.jpg"] and beh["template"] == "reddit_image_behavior"
    assert beh["template_version"] == 1 and beh["collected_at"] == T0
    assert basic.counters["comments_skipped_moderator"] == 1
    assert basic.counters["behavior"] == 1 and basic.counters["content"] == 1


def test_content_record_is_a_control_without_behavior(basic):
    content = by_id(basic)["reddit:abc:content"]
    assert content["targets"] is None
    text = "\n".join(t["value"] for t in content["conversations"])
    for leaked in ("1234", "92%", "57", "three hundred", "fifty points", "Upvote", "comment"):
        assert leaked not in text, leaked
    assert content["conversations"][1]["value"] == describe_image(attrs("reddit:abc"))
    assert "r/EarthPorn" in content["conversations"][0]["value"]


def test_every_record_validates_and_matches_the_schema(basic):
    table = basic.tables["instructions"]
    schemas.get("instructions").validate(table)
    assert table.schema.equals(schemas.get("instructions").arrow, check_metadata=False)
    for rec in table.to_pylist():
        assert validate_record(rec) == []
        assert sum(t["value"].count("<image>") for t in rec["conversations"]) == 1
        assert [t["from"] for t in rec["conversations"]] == ["human", "gpt"]
        assert rec["split"] == split_of(rec["uid"])


def test_caption_only_when_present(tmp_path):
    uids = ["reddit:nocap", "reddit:cap"]
    rows = [attrs(uids[0]), attrs(uids[1], caption="A lake <image> under\nmountains", keywords=["lake", "mountain"])]
    result = run_stage(tmp_path, [item(u, title="My <Image> {title}") for u in uids],
                       [comment(u, "c", 1, "nice <image> {score} }{") for u in uids], [media(u) for u in uids], rows)
    recs = by_id(result)
    without = recs["reddit:nocap:content"]["conversations"][1]["value"]
    assert "Caption" not in without and "Keywords" not in without
    with_cap = recs["reddit:cap:content"]["conversations"][1]["value"]
    assert "Caption: A lake (image) under mountains." in with_cap and "Keywords: lake, mountain." in with_cap
    # the caption reaches the behavior record's human turn too, and never adds an image token
    assert "A lake (image) under mountains" in recs["reddit:cap:behavior"]["conversations"][0]["value"]
    assert all(validate_record(r) == [] for r in recs.values())
    # stranger-written text is inserted verbatim (braces too) but can never add an image token
    beh = recs["reddit:cap:behavior"]
    assert beh["targets"]["comments"] == ["nice (image) {score} }{"]
    assert "1. nice (image) {score} }{" in beh["conversations"][1]["value"]
    assert '"My (image) {title}"' in beh["conversations"][0]["value"]


def test_item_without_ok_media_is_dropped_with_reason(tmp_path):
    uids = ["reddit:ok", "reddit:failed", "reddit:nomedia", "reddit:video"]
    media_rows = [media(uids[0]), media(uids[1], status="failed", reason="too_large", mime=None),
                  media(uids[3], mime="video/mp4")]
    result = run_stage(tmp_path, [item(u) for u in uids], [comment(u, "c", 1, "hi") for u in uids],
                       media_rows, [attrs(u) for u in uids])
    assert {r["uid"] for r in result.tables["instructions"].to_pylist()} == {"reddit:ok"}
    dropped = {d["uid"]: d for d in result.dropped}
    assert set(dropped) == set(uids[1:])
    for d in dropped.values():
        assert d["reason"] == "no_media" and d["stage"] == "instruct" and d["table"] == "items"
        assert d["record_id"] == d["uid"]
    assert "too_large" in dropped["reddit:failed"]["detail"]
    schemas.get("dropped").from_rows(result.dropped)  # rows follow schemas/dropped.yaml
    assert result.records_in == 4


def test_other_drop_reasons_and_paired_tasks(tmp_path):
    items = [item("reddit:few"), item("reddit:noattr"), item("reddit:noscore", score=None),
             item("reddit:text", media_kind="text"), item("reddit:yt", platform="youtube")]
    comments = [comment("reddit:few", "c", 3, "[deleted]"), comment("reddit:few", "d", 2, "only reply", depth=1)]
    comments += [comment(i["uid"], "c", 1, "hi") for i in items[1:]]
    media_rows = [media(i["uid"]) for i in items]
    attr_rows = [attrs(i["uid"]) for i in items if i["uid"] != "reddit:noattr"]
    result = run_stage(tmp_path, items, comments, media_rows, attr_rows, tasks=["content"], fallback_generic=False)
    reasons = {d["uid"]: d["reason"] for d in result.dropped}
    assert reasons == {"reddit:few": "few_comments", "reddit:noattr": "no_attributes",
                       "reddit:noscore": "no_score", "reddit:text": "not_image", "reddit:yt": "other_platform"}
    # an item without enough comments gets no content record either: both tasks cover the same items
    assert result.tables["instructions"].num_rows == 0


def test_gallery_uses_first_ok_image(tmp_path):
    uid = "reddit:gal"
    media_rows = [media(uid, 0, status="failed", reason="bad_image"), media(uid, 2), media(uid, 1)]
    attr_rows = [attrs(uid, 1, orientation="portrait", width=600, height=900), attrs(uid, 2)]
    result = run_stage(tmp_path, [item(uid, media_kind="gallery")], [comment(uid, "c", 1, "wow")], media_rows,
                       attr_rows)
    recs = by_id(result)
    assert recs[f"{uid}:behavior"]["media"] == ["media/gal/1.jpg"]
    assert "A portrait image of 600x900 pixels." in recs[f"{uid}:content"]["conversations"][1]["value"]
    assert result.counters["gallery_images_unused"] == 1


def test_missing_upvote_ratio_leaves_the_line_out(tmp_path):
    uid = "reddit:old"
    result = run_stage(tmp_path, [item(uid, upvote_ratio=None)], [comment(uid, "c", 1, "x" * 900)],
                       [media(uid)], [attrs(uid)], max_comment_chars=100)
    beh = by_id(result)[f"{uid}:behavior"]
    answer = beh["conversations"][1]["value"]
    assert "Upvote ratio" not in answer and "None" not in answer
    assert beh["targets"]["upvote_ratio"] is None
    shown = beh["targets"]["comments"][0]
    assert len(shown) <= 100 and shown.endswith("…") and shown in answer


def test_missing_title_is_an_invalid_record_not_a_crash(tmp_path):
    items = [item("reddit:notitle", title=None), item("reddit:fine")]
    result = run_stage(tmp_path, items, [comment(i["uid"], "c", 1, "hi") for i in items],
                       [media(i["uid"]) for i in items], [attrs(i["uid"]) for i in items])
    assert [e.record_key for e in result.errors] == ["reddit:notitle"]
    assert result.errors[0].error_class is ErrorClass.INVALID and "{title}" in result.errors[0].message
    assert {r["uid"] for r in result.tables["instructions"].to_pylist()} == {"reddit:fine"}


def test_stage_output_is_deterministic(tmp_path):
    uids = [f"reddit:p{i}" for i in range(20)]
    args = ([item(u) for u in uids], [comment(u, f"c{j}", j * 7 % 5, f"c {j}") for u in uids for j in range(6)],
            [media(u) for u in uids], [attrs(u) for u in uids])
    a = run_stage(tmp_path, *args).tables["instructions"]
    b = run_stage(tmp_path, *args).tables["instructions"]
    assert a.equals(b) and a.num_rows == 40


def test_config_rejects_bad_values():
    with pytest.raises(ValueError):
        InstructStage.Config(tasks=[])
    with pytest.raises(ValueError):
        InstructStage.Config(split_validation=0.6, split_test=0.5)
    with pytest.raises(ValueError):
        InstructStage.Config(top_k=3)  # typo: unknown keys are errors


# ---------------------------------------------------------------- split


def test_split_is_stable_and_about_90_5_5():
    uids = [f"reddit:{i:x}" for i in range(10_000)]
    splits = [split_of(u) for u in uids]
    assert splits == [split_of(u) for u in uids]
    counts = Counter(splits)
    assert 8800 <= counts["train"] <= 9200
    assert 400 <= counts["validation"] <= 600 and 400 <= counts["test"] <= 600


def test_stage_split_follows_its_config(tmp_path):
    uids = [f"reddit:s{i}" for i in range(60)]
    result = run_stage(tmp_path, [item(u) for u in uids], [comment(u, "c", 1, "hi") for u in uids],
                       [media(u) for u in uids], [attrs(u) for u in uids], split_validation=0.3, split_test=0.3,
                       tasks=["behavior"])
    got = {r["uid"]: r["split"] for r in result.tables["instructions"].to_pylist()}
    assert got == {u: split_of(u, 0.3, 0.3) for u in uids}
    assert len(set(got.values())) == 3


# ---------------------------------------------------------------- templates


def _template(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(body)
    return path


_HEADER = "name: {name}\nversion: 2\ntask: {task}\nplatform: reddit\nmedia_kind: image\n"


def test_missing_placeholder_error_names_the_file(tmp_path):
    path = _template(tmp_path, "mine", _HEADER.format(name="mine", task="content") + (
        "turns:\n  - {from: human, value: \"<image>\\nr/{subreddit}\"}\n  - {from: gpt, value: \"{colour_words}\"}\n"))
    template = load_template(str(path))
    with pytest.raises(TemplateError) as err:
        template.render({"subreddit": "pics"})
    assert str(path) in str(err.value) and "{colour_words}" in str(err.value)
    with pytest.raises(TemplateError) as err:  # and the stage notices at setup, before any record
        InstructStage(InstructStage.Config(content_template=str(path), tasks=["content"]), tmp_path).setup()
    assert str(path) in str(err.value) and "{colour_words}" in str(err.value)


def test_content_template_cannot_ask_for_behavior(tmp_path):
    path = _template(tmp_path, "leaky", _HEADER.format(name="leaky", task="content") + (
        "turns:\n  - {from: human, value: \"<image>\\nDescribe.\"}\n  - {from: gpt, value: \"{score} votes\"}\n"))
    with pytest.raises(TemplateError, match=r"\{score\}"):
        InstructStage(InstructStage.Config(content_template=str(path), tasks=["content"]), tmp_path).setup()


@pytest.mark.parametrize("turns, message", [
    ("  - {from: human, value: \"r/{subreddit} <image>\"}\n  - {from: gpt, value: \"x\"}\n", "exactly once"),
    ("  - {from: human, value: \"<image>\\nA\"}\n  - {from: gpt, value: \"<image>\\nB\"}\n", "exactly once"),
    ("  - {from: gpt, value: \"<image>\\nA\"}\n  - {from: human, value: \"B\"}\n", "alternate"),
    ("  - {from: human, value: \"<image>\\n{a.b}\"}\n  - {from: gpt, value: \"B\"}\n", "plain name"),
])
def test_malformed_templates_are_refused(tmp_path, turns, message):
    path = _template(tmp_path, "bad", _HEADER.format(name="bad", task="behavior") + "turns:\n" + turns)
    with pytest.raises(TemplateError, match=message) as err:
        load_template(str(path))
    assert str(path) in str(err.value)


def test_template_task_must_match_its_slot(tmp_path):
    with pytest.raises(ConfigError, match="behavior"):
        InstructStage(InstructStage.Config(content_template="reddit_image_behavior"), tmp_path).setup()


def test_bundled_templates_and_versions():
    beh = load_template("reddit_image_behavior")
    assert (beh.task, beh.platform, beh.media_kind, beh.version) == ("behavior", "reddit", "image", 1)
    assert load_template("reddit_image_behavior@1") == beh
    with pytest.raises(TemplateError, match="version"):
        load_template("reddit_image_behavior@99")
    with pytest.raises(TemplateError, match="unknown template"):
        load_template("no_such_template")


# ---------------------------------------------------------------- verbalization and validation


def test_describe_image_is_deterministic_prose():
    text = describe_image(attrs("reddit:x", ocr_text="  SALE\n50% off ", colors=[
        {"name": "Off_White", "fraction": 0.3}, {"name": "Dark_Blue", "fraction": 0.45}]))
    assert text == (
        "A landscape image of 1200x800 pixels. Dominant colours: dark blue (45%) and off white (30%). "
        "Foreground colours: red and off white. Background colours: dark blue. The overall tone is cool. "
        'The visual complexity is low. On-screen text: "SALE 50% off".'
    )
    assert describe_image({}) == ""
    assert describe_image({"width": 500, "height": 500}) == "A square image of 500x500 pixels."


def test_number_and_text_helpers():
    assert format_ratio(0.92) == "92%" and format_ratio(0.925) == "93%" and format_ratio(1.0) == "100%"
    with pytest.raises(ValueError):
        format_ratio(1.5)
    assert tidy(" a\n\tb <IMAGE> <video> ") == "a b (image) (video)"
    assert shorten("one two three four", 12) == "one two…" and shorten("short", 12) == "short"


def test_validate_record_catches_broken_records():
    good = {"id": "reddit:a:content", "uid": "reddit:a", "task": "content", "split": "train", "media_kind": "image",
            "media": ["media/a.jpg"], "targets": None,
            "conversations": [{"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": "A cat."}]}
    assert validate_record(good) == []
    cases = {
        "appears 2 times": {"conversations": [{"from": "human", "value": "<image>\nx"},
                                              {"from": "gpt", "value": "<image>"}]},
        "followed by a newline": {"conversations": [{"from": "human", "value": "x <image>"},
                                                    {"from": "gpt", "value": "y"}]},
        "roles alternate": {"conversations": [{"from": "human", "value": "<image>\nx"},
                                              {"from": "human", "value": "y"}, {"from": "gpt", "value": "z"}]},
        "empty text": {"conversations": [{"from": "human", "value": "<image>\nx"}, {"from": "gpt", "value": " "}]},
        "empty media": {"media": []},
        "behavior targets": {"targets": {"score": 3}},
        "split": {"split": "dev"},
    }
    for message, change in cases.items():
        problems = validate_record({**good, **change})
        assert any(message in p for p in problems), (message, problems)
    with pytest.raises(InvalidInstruction, match="reddit:a:content"):
        check_record({**good, "split": "dev"})


def test_editing_a_template_changes_the_config_hash(tmp_path):
    """The runner redoes instruction shards when a template's text changes, not only its config."""
    from blift.config import stage_config_hash

    tpl = tmp_path / "mine.yaml"
    tpl.write_text((TEMPLATES_DIR / "reddit_image_behavior.yaml").read_text())
    cfg = InstructStage.Config(behavior_template=str(tpl))
    before = stage_config_hash(InstructStage, cfg)
    assert stage_config_hash(InstructStage, cfg) == before
    tpl.write_text(tpl.read_text().replace("How did the audience", "How did the readers"))
    assert stage_config_hash(InstructStage, cfg) != before


# ---------------------------------------------------------------- any source: the generic templates


def behavior_row(uid: str, name: str, value: float | None, kind: str, scale: tuple[float, float] | None = None):
    return {"uid": uid, "name": name, "value": value, "kind": kind, "collected_at": T0,
            "scale_min": scale[0] if scale else None, "scale_max": scale[1] if scale else None}


def test_any_source_says_whatever_behavior_it_has(tmp_path):
    """A table source's item with named values (a count, a ratio, a score on its scale), a BLIFT
    post without a score (comment count and comments only), an item with no behavior at all."""
    items = [item("ads:1", platform="ads", community=None, title="Summer sale", score=None, upvote_ratio=None,
                  num_comments=None, like_count=4321),
             item("reddit:blift", score=None, upvote_ratio=None, num_comments=3),
             item("ads:nothing", platform="ads", score=None, upvote_ratio=None, num_comments=None)]
    behavior = [behavior_row("ads:1", "likes", 4321.0, "count"), behavior_row("ads:1", "ctr", 0.03249, "ratio"),
                behavior_row("ads:1", "memorability", 0.8125, "score", (0.0, 1.0)),
                behavior_row("ads:1", "shares", None, "count")]  # a null value is left out
    comments = [comment("reddit:blift", "a", None, "first published comment"),
                comment("reddit:blift", "b", None, "second one")]
    tabs = shard(items, comments, [media(i["uid"]) for i in items], [attrs(i["uid"]) for i in items], tmp_path)
    tabs.tables["behavior"] = schemas.get("behavior").from_rows(behavior)
    stage = InstructStage(InstructStage.Config(), tmp_path)
    stage.setup()
    result = stage.process(tabs)
    recs = by_id(result)
    assert set(recs) == {"ads:1:behavior", "ads:1:content", "reddit:blift:behavior", "reddit:blift:content"}
    assert {d["uid"]: d["reason"] for d in result.dropped} == {"ads:nothing": "no_behavior"}
    ad = recs["ads:1:behavior"]
    assert ad["template"] == "generic_image_behavior" and ad["platform"] == "ads"
    human, answer = (t["value"] for t in ad["conversations"])
    assert "This image was shared on ads." in human and 'Its title is "Summer sale".' in human
    assert "It was posted in" not in human  # no community: the line is left out
    assert "Give the likes, the click-through rate and the memorability." in human
    assert answer == "Likes: 4321\nClick-through rate: 3.2%\nMemorability: 0.8125 on a scale of 0 to 1"
    assert ad["behavior"] == [
        {"name": "likes", "kind": "count", "value": 4321.0, "scale_min": None, "scale_max": None},
        {"name": "ctr", "kind": "ratio", "value": 0.03249, "scale_min": None, "scale_max": None},
        {"name": "memorability", "kind": "score", "value": 0.8125, "scale_min": 0.0, "scale_max": 1.0}]
    assert ad["targets"]["like_count"] == 4321 and ad["targets"]["score"] is None
    # the control beside it: same context, no behavior anywhere
    content = recs["ads:1:content"]
    assert content["targets"] is None and content["behavior"] is None
    assert content["conversations"][0]["value"].split("\n")[:3] == human.split("\n")[:3]
    assert "4321" not in str(content["conversations"])
    # the published BLIFT: what is known (comment count, comments), not dropped for having no score
    post = recs["reddit:blift:behavior"]
    human, answer = (t["value"] for t in post["conversations"])
    assert "This image was shared on Reddit." in human and "It was posted in r/EarthPorn." in human
    assert answer == "Number of comments: 3\nTop comments:\n1. first published comment\n2. second one"
    assert post["targets"]["num_comments"] == 3 and post["targets"]["comments"] == [
        "first published comment", "second one"]
    assert result.counters["generic_records"] == 2
    for rec in recs.values():
        assert validate_record(rec) == []
    schemas.get("instructions").from_rows(list(recs.values()))


def test_platform_records_keep_their_wording_and_gain_typed_named_values(tmp_path, basic):
    rec = by_id(basic)["reddit:abc:behavior"]
    assert rec["template"] == "reddit_image_behavior"
    assert [v["name"] for v in rec["behavior"]] == ["score", "upvote_ratio", "num_comments"]
