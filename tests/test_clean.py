"""The clean stage and its rules, on hand-written items and comments."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from blift import schemas
from blift.ids import pack_raw, unpack_raw
from blift.stage import Languages, ShardInput
from blift.stages.clean import CleanStage
from blift.stages.clean.near_duplicates import find_duplicates, normalize_texts, tfidf
from blift.stages.clean.text_rules import RuleConfig, apply_rules

T0 = datetime(2024, 5, 1, tzinfo=timezone.utc)
LONG_EN = "This is a perfectly ordinary English comment about the photo and the light in it."


def comment(cid: str, text: str | None, *, uid: str = "reddit:p1", score: int | None = 1,
            author_kind: str | None = None, distinguished: str | None = None) -> dict[str, Any]:
    return {
        "uid": uid, "platform": "reddit", "comment_id": cid, "parent_id": None, "depth": 0, "text": text,
        "score": score, "like_count": None, "author_hash": f"h{cid}", "author_kind": author_kind,
        "created_at": T0, "is_submitter": False, "distinguished": distinguished, "stickied": False,
        "collected_at": T0, "raw": pack_raw({"id": cid, "body": text}),
    }


def item(uid: str, *, over_18: bool = False, title: str = "A photo of my garden",
         raw: dict[str, Any] | None = None) -> dict[str, Any]:
    item_id = uid.split(":", 1)[1]
    return {
        "uid": uid, "platform": "reddit", "item_id": item_id, "source": "api", "title": title,
        "collected_at": T0, "created_at": T0, "over_18": over_18, "score": 10, "media_kind": "image",
        "media_urls": [f"https://i.example.org/{item_id}.jpg"],
        "raw": pack_raw(raw if raw is not None else {"id": item_id, "title": title}),
    }


def run_stage(items: list[dict], comments: list[dict], tmp_path: Path, **config: Any):
    stage = CleanStage(CleanStage.Config(**config), run_dir=tmp_path)
    stage.setup()
    shard = ShardInput(
        shard_id="part-00000",
        tables={
            "items": schemas.get("items").from_rows(items),
            "comments": schemas.get("comments").from_rows(comments),
        },
        run_dir=tmp_path,
    )
    return stage.process(shard)


def reasons(result) -> dict[str, str]:
    return {d["record_id"]: d["reason"] for d in result.dropped}


# ------------------------------------------------------------------ text rules

RULE_CASES = [
    ("", None, None, "empty"),
    ("   \n\t ", None, None, "empty"),
    (None, None, None, "empty"),
    ("[deleted]", "deleted", None, "deleted"),
    ("[deleted]", None, None, "deleted"),
    ("[removed]", None, None, "removed"),
    ("[ Removed by Reddit ]", None, None, "removed"),
    ("[removed]", "deleted", None, "removed"),
    ("Please read the rules before posting here, thank you all.", "bot_name", None, "bot"),
    ("Your submission was removed for breaking rule 3 of this subreddit.", None, "moderator", "bot"),
    ("Here is the link you asked for.\n\n^(I am a bot, beep boop)", None, None, "bot"),
    ("Converted 5 ft to 1.52 m. I'm a bot and this action was performed automatically.", None, None, "bot"),
    ("https://i.imgur.com/abc123.jpg", None, None, "link_only"),
    ("  https://example.org/a https://example.org/b  ", None, None, "link_only"),
    ("[source](https://example.org/x) !!", None, None, "link_only"),
    ("www.example.com/page", None, None, "link_only"),
    ("lol same", None, None, "too_short"),
    ("😂😂😂", None, None, "too_short"),
    ("a b c", None, None, None),  # three words, five characters: the default minimums
    ("word " * 500, None, None, "too_long"),
    (LONG_EN, None, None, None),
    ("Look at this one, it is amazing: https://example.org/x", None, None, None),
    ("[my source](https://example.org/x) says the bridge was built in 1890", None, None, None),
    ("An author name that was deleted keeps its real comment text.", "deleted", None, None),
    ("I am a bottle collector and I love this photo of old glass.", None, None, None),
    ("mixed \ufffd\ufffd replacement characters in a normal comment", None, None, None),
]


@pytest.mark.parametrize("text,kind,dist,expected", RULE_CASES)
def test_each_rule(text, kind, dist, expected) -> None:
    result = apply_rules([text], [kind], [dist])
    assert result.reasons == [expected]


def test_rules_run_vectorized_and_first_reason_wins() -> None:
    texts = [c[0] for c in RULE_CASES]
    result = apply_rules(texts, [c[1] for c in RULE_CASES], [c[2] for c in RULE_CASES])
    assert result.reasons == [c[3] for c in RULE_CASES]
    # AutoModerator posting "[removed]" is reported as removed (earlier rule), not as a bot
    assert apply_rules(["[removed]"], ["bot_name"], ["moderator"]).reasons == ["removed"]


def test_rule_switches_and_thresholds() -> None:
    texts = ["[deleted]", "https://example.org/x", "short one", "x" * 50]
    kinds = [None, None, None, "bot_name"]
    off = RuleConfig(drop_deleted=False, drop_bots=False, drop_link_only=False, min_words=1, max_chars=100)
    assert apply_rules(texts, kinds, None, off).reasons == [None, None, None, None]
    strict = RuleConfig(min_words=4, max_chars=20, drop_bots=False)
    assert apply_rules(texts, kinds, None, strict).reasons == ["deleted", "link_only", "too_short", "too_long"]
    assert apply_rules(["two words"], None, None, RuleConfig(min_words=2, min_chars=20)).reasons == ["too_short"]


def test_rules_accept_lone_surrogates() -> None:
    assert apply_rules(["broken \ud800 surrogate in a longer comment"]).reasons == [None]


# ------------------------------------------------------------------ duplicates


def test_normalization() -> None:
    assert normalize_texts(["  Great   PHOTO!!! 🔥", "great photo", "Straße\tnice"]) == \
        ["great photo", "great photo", "strasse nice"]


def test_exact_duplicates_keep_the_highest_score_within_each_item() -> None:
    res = find_duplicates(
        uids=["a", "a", "a", "b"], ids=["c1", "c2", "c3", "c4"],
        texts=["Great photo!", "great photo", "GREAT PHOTO!!!", "Great photo!"], scores=[1, 50, 50, 3],
        threshold=None,
    )
    # c2 and c3 tie on score: input order breaks the tie; c4 is in another item
    assert res.reasons == ["duplicate", None, "duplicate", None]
    assert res.kept_id == ["c2", None, "c2", None]


def test_near_duplicate_threshold() -> None:
    texts = [
        "The lighting in this photo of the old harbour is absolutely stunning tonight",
        "the lighting in this photo of the old harbour is stunning tonight, wow",  # paraphrase
        "My grandmother had a dog that looked exactly like this one when I was small",
        "Completely unrelated: which lens and camera settings did you use here?",
    ]
    uids, ids, scores = ["a"] * 4, ["k", "p", "d", "u"], [10, 5, 4, 3]
    X = tfidf(normalize_texts(texts))
    cos = (X @ X.T).toarray()
    assert cos[0, 1] > 0.6 > max(cos[0, 2], cos[0, 3], cos[1, 2])
    res = find_duplicates(uids, ids, texts, scores, threshold=0.6)
    assert res.reasons == [None, "near_duplicate", None, None]
    assert res.kept_id[1] == "k" and res.similarity[1] == pytest.approx(cos[0, 1], abs=1e-3)
    # above the pair's similarity, nothing is a near duplicate; other items are never compared
    assert find_duplicates(uids, ids, texts, scores, threshold=float(cos[0, 1]) + 0.01).reasons == [None] * 4
    assert find_duplicates(["a", "b", "a", "a"], ids, texts, scores, threshold=0.6).reasons == [None] * 4


def test_near_duplicate_chains_compare_with_kept_comments_only() -> None:
    # A~B and B~C but A!~C: B goes (near A); C stays because its only close match B is gone.
    a = "red apples green pears yellow bananas purple grapes"
    b = "red apples green pears yellow bananas orange melons blue berries"
    c = "yellow bananas orange melons blue berries white peaches"
    X = tfidf(normalize_texts([a, b, c]))
    cos = (X @ X.T).toarray()
    thr = float(min(cos[0, 1], cos[1, 2])) - 0.01
    assert cos[0, 2] < thr
    res = find_duplicates(["i"] * 3, ["A", "B", "C"], [a, b, c], [3, 2, 1], threshold=thr)
    assert res.reasons == [None, "near_duplicate", None]


def test_large_item_is_compared_in_blocks() -> None:
    rng = np.random.default_rng(0)
    vocab = [f"w{k}" for k in range(3000)]
    texts = [" ".join(rng.choice(vocab, 12)) for _ in range(2500)]
    texts[2400] = texts[7] + " extra"  # a near copy far away from its original, across blocks
    res = find_duplicates(["a"] * 2500, [f"c{k}" for k in range(2500)], texts, list(range(2500, 0, -1)),
                          threshold=0.8)
    assert res.reasons[2400] == "near_duplicate" and res.kept_id[2400] == "c7"
    assert sum(r is not None for r in res.reasons) == 1


# ------------------------------------------------------------------ the stage


def test_clean_stage_end_to_end(tmp_path: Path) -> None:
    items = [
        item("reddit:p1"),
        item("reddit:p2", over_18=True),
        item("reddit:p3", raw={"id": "p3", "removed_by_category": "moderator"}),
        item("reddit:p4", title="[deleted by user]"),
    ]
    comments = [
        comment("k1", LONG_EN, score=5),
        comment("n1", "Nice, but this one is on an NSFW post and goes with it.", uid="reddit:p2"),
        comment("r1", "A perfectly fine comment under a post a moderator removed.", uid="reddit:p3"),
        comment("r2", "Another perfectly fine comment under a post its author deleted.", uid="reddit:p4"),
        comment("d1", "[deleted]", author_kind="deleted"),
        comment("d2", "[removed]"),
        comment("b1", "Please remember to follow the subreddit rules in this thread.", author_kind="bot_name"),
        comment("b2", "Thread locked for now, please keep it civil everyone.", distinguished="moderator"),
        comment("l1", "https://i.imgur.com/abc123.jpg"),
        comment("s1", "so cute"),
        comment("e1", "😍😍😍"),
        comment("x1", ""),
        comment("g1", "Das ist wirklich ein wunderschönes Foto von deinem Garten, danke fürs Teilen!"),
        comment("t1", "Fuck this shit, what a fucking stupid picture, you dumbass."),
        comment("u1", LONG_EN.upper(), score=2),  # exact duplicate of k1 (after normalization), lower score
        comment("v1", "This is an ordinary English comment about the photo and the light in it!!", score=1),
        comment("ok2", "Where was this taken? The mountains in the background look familiar to me.", score=3),
    ]
    res = run_stage(items, comments, tmp_path)

    assert reasons(res) == {
        "reddit:p2": "nsfw", "reddit:p3": "removed", "reddit:p4": "removed",
        "n1": "item_dropped", "r1": "item_dropped", "r2": "item_dropped",
        "d1": "deleted", "d2": "removed", "b1": "bot", "b2": "bot", "l1": "link_only",
        "s1": "too_short", "e1": "too_short", "x1": "empty", "g1": "language", "t1": "toxic",
        "u1": "duplicate", "v1": "near_duplicate",
    }
    details = {d["record_id"]: d["detail"] for d in res.dropped}
    assert details["g1"] == "de"
    assert float(details["t1"]) >= 0.8
    assert details["u1"] == "of k1"
    assert details["v1"].startswith("of k1 (cosine ")

    items_out, comments_out = res.tables["items_clean"], res.tables["comments_clean"]
    schemas.get("items").validate(items_out)
    schemas.get("comments").validate(comments_out)
    assert items_out.column("uid").to_pylist() == ["reddit:p1"]
    assert comments_out.column("comment_id").to_pylist() == ["k1", "ok2"]
    # kept rows are the input rows, untouched
    assert comments_out.to_pylist() == [c for c in schemas.get("comments").from_rows(comments).to_pylist()
                                        if c["comment_id"] in ("k1", "ok2")]
    assert unpack_raw(comments_out.column("raw")[0].as_py()) == {"body": LONG_EN, "id": "k1"}

    dropped_table = schemas.get("dropped").from_rows(res.dropped)
    assert dropped_table.num_rows == len(res.dropped)
    assert all(d["reason"] and d["stage"] == "clean" for d in res.dropped)
    assert {d["table"] for d in res.dropped if d["record_id"].startswith("reddit:")} == {"items"}

    # counts add up: every input record is either kept or dropped exactly once
    assert res.records_in == len(items) + len(comments)
    assert res.records_in == items_out.num_rows + comments_out.num_rows + len(res.dropped)
    assert len({(d["table"], d["record_id"]) for d in res.dropped}) == len(res.dropped)
    assert res.counters["comments_in"] == len(comments) and res.counters["comments_out"] == 2
    assert res.counters["items_in"] == 4 and res.counters["items_out"] == 1
    assert Counter(d["reason"] for d in res.dropped)["item_dropped"] == 3


def test_switches_keep_what_they_turn_off(tmp_path: Path) -> None:
    items = [item("reddit:p1"), item("reddit:p2", over_18=True)]
    comments = [
        comment("n1", "A comment under an NSFW post that should be kept this time.", uid="reddit:p2"),
        comment("g1", "Das ist wirklich ein wunderschönes Foto von deinem Garten, danke fürs Teilen!"),
        comment("t1", "Fuck this shit, what a fucking stupid picture, you dumbass."),
        comment("k1", LONG_EN, score=5),
        comment("v1", "This is an ordinary English comment about the photo and the light in it!!"),
    ]
    res = run_stage(items, comments, tmp_path, drop_nsfw=False, languages=["en", "de"],
                    toxicity_backend="none", near_duplicate_threshold=None)
    assert res.dropped == []
    assert res.tables["comments_clean"].num_rows == len(comments)
    res = run_stage(items, comments, tmp_path, languages=[], toxicity_backend="none")
    assert reasons(res) == {"reddit:p2": "nsfw", "n1": "item_dropped", "v1": "near_duplicate"}


def test_the_languages_kept_are_recorded_for_the_release(tmp_path: Path) -> None:
    """A language filter records its list; without one, the languages found on the kept comments, counted."""
    items = [item("reddit:p1")]
    comments = [
        comment("e1", LONG_EN, score=9),
        comment("e2", "What a lovely garden, the roses along the fence look absolutely wonderful today."),
        comment("g1", "Das ist wirklich ein wunderschönes Foto von deinem Garten, danke fürs Teilen!"),
        comment("x1", "12345 67890 !!! ??? 42 42 42 ..."),  # no letters: no language ("und"), not counted
    ]
    res = run_stage(items, comments, tmp_path, languages=["en", "de"], toxicity_backend="none",
                    near_duplicate_threshold=None, drop_duplicates=False)
    assert res.languages == Languages(kept=["en", "de"])
    res = run_stage(items, comments, tmp_path, languages=[], toxicity_backend="none",
                    near_duplicate_threshold=None, drop_duplicates=False)
    assert reasons(res) == {}
    assert res.languages == Languages(observed={"de": 1, "en": 2})


def test_empty_shard_and_youtube_likes(tmp_path: Path) -> None:
    res = run_stage([], [], tmp_path)
    assert res.tables["comments_clean"].num_rows == 0 and res.dropped == [] and res.records_in == 0
    yt = [dict(comment(f"y{k}", LONG_EN + suffix, uid="reddit:p1", score=None), like_count=likes, platform="youtube")
          for k, (suffix, likes) in enumerate([("", 1), (" !", 90)])]
    res = run_stage([item("reddit:p1")], yt, tmp_path)
    assert reasons(res) == {"y0": "duplicate"}  # the comment with more likes is the one kept


def test_near_duplicate_threshold_per_platform(tmp_path: Path) -> None:
    """0.6 on Reddit, 0.7 on YouTube (the paper's choices): a pair at cosine ~0.65 is a near
    duplicate on Reddit only; a pair at ~0.9 on both."""
    base = "This is an ordinary English comment about the photo and the light in it"
    mid = "An English comment about this photo and the warm colours in it"  # ~0.65
    high = "This is an ordinary English comment about the photo and the light"  # ~0.9

    def pair(platform: str, uid: str, other: str) -> list[dict[str, Any]]:
        return [dict(comment(f"{platform[0]}{k}{uid[-1]}", text, uid=uid, score=9 - k), platform=platform)
                for k, text in enumerate([base, other])]

    items = [item("reddit:p1"), item("reddit:p2"), dict(item("reddit:p3"), uid="youtube:v1", platform="youtube"),
             dict(item("reddit:p4"), uid="youtube:v2", platform="youtube")]
    comments = (pair("reddit", "reddit:p1", mid) + pair("reddit", "reddit:p2", high)
                + pair("youtube", "youtube:v1", mid) + pair("youtube", "youtube:v2", high))
    res = run_stage(items, comments, tmp_path, languages=[], toxicity_backend="none")
    assert reasons(res) == {"r11": "near_duplicate", "r12": "near_duplicate", "y12": "near_duplicate"}
    cosine = {d["record_id"]: float(d["detail"].split("cosine ")[1].rstrip(")")) for d in res.dropped}
    assert 0.6 <= cosine["r11"] < 0.7 and cosine["y12"] >= 0.7
    res = run_stage(items, comments, tmp_path, languages=[], toxicity_backend="none",
                    near_duplicate_thresholds={"youtube": None})
    assert reasons(res) == {"r11": "near_duplicate", "r12": "near_duplicate"}


def test_config_is_validated() -> None:
    with pytest.raises(ValidationError):
        CleanStage.Config(near_duplicate_treshold=0.5)  # typo: unknown keys are errors
    with pytest.raises(ValidationError):
        CleanStage.Config(toxicity_threshold=1.5)
    with pytest.raises(ValidationError):
        CleanStage.Config(language_backend="cld3")


def _reference_near_duplicates(uids, texts, scores, threshold):
    """Brute force: dense cosine per item, greedy in score order (the documented semantics)."""
    norm = normalize_texts(texts)
    X = tfidf(norm).toarray()
    out = [None] * len(texts)
    for u in sorted(set(uids)):
        rows = sorted((i for i in range(len(texts)) if uids[i] == u and norm[i]), key=lambda i: (-scores[i], i))
        kept: list[int] = []
        for i in rows:
            match = next((k for k in kept if float(X[k] @ X[i]) >= threshold - 1e-6), None)
            if match is None:
                kept.append(i)
            else:
                out[i] = match
    return out


@pytest.mark.parametrize("block", [3, 16, 2048])
def test_near_duplicates_match_a_brute_force_reference(monkeypatch, block) -> None:
    import blift.stages.clean.near_duplicates as nd

    monkeypatch.setattr(nd, "_BLOCK", block)  # small blocks: many batches, items split over blocks
    rng = np.random.default_rng(block)
    words = [f"w{k}" for k in range(25)]
    n = 300
    texts = [" ".join(rng.choice(words, rng.integers(2, 7))) for _ in range(n)]
    uids = [f"i{int(k)}" for k in rng.integers(0, 12, n)]
    scores = [int(s) for s in rng.integers(0, 5, n)]
    res = find_duplicates(uids, [f"c{k}" for k in range(n)], texts, scores, threshold=0.6)
    ref = _reference_near_duplicates(uids, texts, scores, 0.6)
    got = [None if r is None else int(k[1:]) for r, k in zip(res.reasons, res.kept_id)]
    assert sum(r is not None for r in ref) > 20  # the data has plenty of (near) duplicates
    assert [g is not None for g in got] == [r is not None for r in ref]
    # exact duplicates may name another kept copy than the reference's first match; both are kept rows
    for i, (g, r) in enumerate(zip(got, ref)):
        if g is not None and res.reasons[i] == "near_duplicate":
            assert g == r


def test_the_papers_item_rules_dates_and_too_few_kept_comments(tmp_path: Path) -> None:
    """Posts outside [created_after, created_before) and posts left with fewer than
    min_item_comments kept comments are dropped under their own reasons; their comments follow."""
    early, late = item("reddit:e1"), item("reddit:l1")
    early["created_at"], late["created_at"] = T0 - timedelta(days=400), T0 + timedelta(days=400)
    undated = item("reddit:u1")
    undated["created_at"] = None
    few, many = item("reddit:f1"), item("reddit:m1")
    comments = [comment("f-a", "a great photo of the garden", uid="reddit:f1"),
                comment("f-b", "ok", uid="reddit:f1"),  # too short: leaves one kept comment
                comment("m-a", "a great photo of the garden", uid="reddit:m1"),
                comment("m-b", "the colours here are lovely", uid="reddit:m1"),
                comment("u-a", "what a lovely garden you have", uid="reddit:u1"),
                comment("u-b", "I want to plant roses too now", uid="reddit:u1"),
                comment("e-a", "this was years ago right here", uid="reddit:e1")]
    res = run_stage([early, late, undated, few, many], comments, tmp_path, languages=[], toxicity_backend="none",
                    created_after=T0 - timedelta(days=30), created_before=T0 + timedelta(days=30),
                    min_item_comments=2)
    kept = res.tables["items_clean"].column("uid").to_pylist()
    assert kept == ["reddit:u1", "reddit:m1"]  # no date says nothing against an item
    reasons = {d["record_id"]: d["reason"] for d in res.dropped}
    assert reasons["reddit:e1"] == reasons["reddit:l1"] == "date_range"
    assert reasons["reddit:f1"] == "few_comments" and reasons["f-a"] == "item_dropped" and reasons["f-b"] == "too_short"
    assert reasons["e-a"] == "item_dropped"
    detail = next(d["detail"] for d in res.dropped if d["record_id"] == "reddit:f1")
    assert detail == "1 kept comment(s) < min_item_comments 2"
    assert sorted(res.tables["comments_clean"].column("comment_id").to_pylist()) == ["m-a", "m-b", "u-a", "u-b"]
    # off by default: the same input keeps every dated item
    res = run_stage([early, late, few], comments, tmp_path, languages=[], toxicity_backend="none")
    assert res.tables["items_clean"].num_rows == 3
