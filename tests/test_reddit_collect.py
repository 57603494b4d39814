"""The Reddit stages through the real praw/prawcore stack against the local fake Reddit API."""

from __future__ import annotations

import io
import time
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from blift import schemas
from blift.collect.reddit.client import RedditClientConfig, make_reddit
from blift.collect.reddit.collect import RedditCollectConfig, RedditCollectStage
from blift.collect.reddit.list import RedditListConfig, RedditListStage
from blift.errors import ConfigError, CredentialError, PermanentError, TransientError
from blift.ids import unpack_raw
from blift.replay.reddit_api import ReplayServer, write_post
from blift.stage import ShardInput

BASE = 1_704_067_200  # 2024-01-01
N_PICS = 150
AUTHORS = ["zq_author_alpha", "zq_author_beta", "zq_author_gamma", "zq_author_delta", "zq_poster_omega"]


def _tree() -> list[dict]:
    """60 comments: 12 top-level, each with 3 replies, two of which have a reply and a
    reply-to-reply (depth 2 and 3). Scores decrease so the order is deterministic."""
    comments = []
    n = 0
    for top in range(12):
        tid = f"t{top:02d}"
        comments.append({"id": tid, "parent_id": "t3_big", "score": 1000 - top})
        for r in range(3):
            rid = f"{tid}r{r}"
            comments.append({"id": rid, "parent_id": f"t1_{tid}", "score": 100 - r})
            if r < 2 and top % 6 == 0:
                comments.append({"id": f"{rid}x", "parent_id": f"t1_{rid}", "score": 5})
                comments.append({"id": f"{rid}y", "parent_id": f"t1_{rid}x", "score": 4})
    for c in comments:
        n += 1
        c.update(body=f"comment number {n}", author=AUTHORS[n % 4], created_utc=BASE + n, author_fullname=f"t2_{n}")
    comments[5]["author"] = "[deleted]"
    return comments


TREE = _tree()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("reddit")
    for i in range(N_PICS):
        write_post(root, {"id": f"q{i:03d}", "subreddit": "pics", "title": f"pic {i}", "author": AUTHORS[i % 5],
                          "score": i * 13 % 997, "created_utc": BASE + i * 3600 * 30, "post_hint": "image",
                          "url": f"{{{{BASE_URL}}}}/media/q{i:03d}.jpg", "upvote_ratio": 0.93, "num_comments": 0,
                          "permalink": f"/r/pics/comments/q{i:03d}/pic_{i}/"})
    big = {"id": "big", "subreddit": "Art", "title": "A big thread", "author": "zq_poster_omega", "score": 4321,
           "created_utc": BASE, "url": "{{BASE_URL}}/media/big.jpg", "post_hint": "image",
           "num_comments": len(TREE), "over_18": False, "link_flair_text": "OC", "author_flair_text": "zq_poster_omega"}
    write_post(root, big, TREE)
    old = {"id": "old", "subreddit": "Art", "title": "no upvote ratio", "author": "zq_author_alpha", "score": 3,
           "created_utc": BASE - 10**8, "is_self": True, "selftext": "hello"}  # no upvote_ratio key at all
    write_post(root, old, [])
    return root


@pytest.fixture()
def server(store: Path):
    with ReplayServer(store, comment_limit=20, depth_limit=3, subreddit_status={"secret": "private"}) as srv:
        yield srv


def _cfg(cls, server: ReplayServer, tmp_path: Path, **kw):
    base = dict(client_id="test-id", client_secret="test-secret", user_agent="blift-tests/1.0",
                endpoint=server.url, timeout_s=5, backoff_s=0.05, max_backoff_s=1.5)
    return cls(**{**base, **kw})


def _list_stage(server, tmp_path, **kw) -> RedditListStage:
    stage = RedditListStage(_cfg(RedditListConfig, server, tmp_path, **kw), tmp_path)
    stage.setup()
    return stage


def _collect_stage(server, tmp_path, **kw) -> RedditCollectStage:
    stage = RedditCollectStage(_cfg(RedditCollectConfig, server, tmp_path, **kw), tmp_path)
    stage.setup()
    return stage


def _refs(server, tmp_path, entries, **kw) -> list[dict]:
    stage = _list_stage(server, tmp_path, **kw)
    rows = RedditListStage.expand_requests(entries)
    out = []
    for row in rows:
        out.extend(stage.process_record(row["request_id"], row).tables["item_refs"])
    schemas.get("item_refs").from_rows(out)
    return out


def _ref(item_id: str) -> dict:
    return {"uid": f"reddit:{item_id}", "platform": "reddit", "item_id": item_id, "request_id": "r", "rank": 0,
            "url": None}


# ------------------------------------------------------------------ listings


def test_top_listing_pages_past_100_in_score_order(server: ReplayServer, tmp_path: Path) -> None:
    refs = _refs(server, tmp_path, [{"subreddits": ["pics"], "listings": ["top"], "time_filter": "all", "limit": 120}])
    assert len(refs) == 120 and [r["rank"] for r in refs] == list(range(120))
    expected = sorted(range(N_PICS), key=lambda i: (-(i * 13 % 997), -i))[:120]
    assert [r["item_id"] for r in refs] == [f"q{i:03d}" for i in expected]
    assert refs[0]["url"] == f"https://www.reddit.com/r/pics/comments/{refs[0]['item_id']}/pic_{int(refs[0]['item_id'][1:])}/"
    calls = server.requests_to("/r/pics/top")
    assert len(calls) == 2 and "after" not in calls[0].query and calls[1].query["after"] == f"t3_{refs[99]['item_id']}"
    assert all(c.query["t"] == "all" and c.query["limit"] == "120" for c in calls)


def test_time_filter_and_new_listing(server: ReplayServer, tmp_path: Path) -> None:
    refs = _refs(server, tmp_path, [{"subreddits": ["pics"], "listings": ["top", "new"], "time_filter": "week",
                                     "limit": 10}])
    assert server.requests_to("/r/pics/top")[0].query["t"] == "week"
    assert "t" not in server.requests_to("/r/pics/new")[0].query
    by_request: dict[str, list[str]] = {}
    for r in refs:
        by_request.setdefault(r["request_id"], []).append(r["item_id"])
    week, new = sorted(by_request.values(), key=len)
    # posts are 30 h apart; "now" is 1 h after the newest: a week holds 6 of them
    assert sorted(week) == [f"q{i:03d}" for i in range(N_PICS - 6, N_PICS)]
    assert new == [f"q{i:03d}" for i in range(N_PICS - 1, N_PICS - 11, -1)]


def test_posts_request_parses_urls_without_fetching(server: ReplayServer, tmp_path: Path) -> None:
    entries = [{"posts": ["big", "https://www.reddit.com/r/Art/comments/big/a_big_thread/", "https://redd.it/old",
                          "t3_q001"]}]
    refs = _refs(server, tmp_path, entries)
    assert [(r["item_id"], r["rank"]) for r in refs] == [("big", 0), ("old", 1), ("q001", 2)]
    assert not [e for e in server.log if e.path != "/api/v1/access_token"]


def test_unknown_and_private_subreddits_are_permanent(server: ReplayServer, tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="does not exist"):
        _refs(server, tmp_path, [{"subreddits": ["nosuchsub"], "listings": ["hot"]}])
    with pytest.raises(PermanentError, match="403"):
        _refs(server, tmp_path, [{"subreddits": ["secret"], "listings": ["hot"]}])


# ------------------------------------------------------------------ request validation


def test_expand_requests_rows_and_ids() -> None:
    rows = RedditListStage.expand_requests([
        {"subreddits": ["pics", "r/EarthPorn"], "listings": ["top", "hot"], "time_filter": "year", "limit": 100},
        {"posts": ["abc123", "https://www.reddit.com/r/pics/comments/abc123/title/", "https://redd.it/abc123"]},
    ])
    assert [r["kind"] for r in rows] == ["listing"] * 4 + ["posts"]
    specs = [orjson.loads(r["spec"]) for r in rows]
    assert specs[0] == {"subreddit": "pics", "listing": "top", "limit": 100, "time_filter": "year"}
    assert specs[1] == {"subreddit": "pics", "listing": "hot", "limit": 100}  # no time filter on hot
    assert specs[2]["subreddit"] == "EarthPorn" and specs[4] == {"posts": ["abc123"]}
    assert len({r["request_id"] for r in rows}) == 5
    again = RedditListStage.expand_requests([{"posts": ["https://redd.it/abc123"]}])
    assert again[0]["request_id"] == rows[4]["request_id"]  # same post, same request id
    schemas.get("requests").from_rows(rows)


@pytest.mark.parametrize(("entry", "pattern"), [
    ({"subreddits": ["pics"], "listings": ["best"]},
     r"requests\[1\]: field 'listings': unknown listing 'best'; allowed: top, hot, new, controversial"),
    ({"subreddits": ["pics"], "listings": ["hot"], "time_filter": "year"},
     r"requests\[1\]: field 'time_filter': applies only to top and controversial"),
    ({"subreddits": ["pics"], "time_filter": "decade"},
     r"field 'time_filter': unknown time filter 'decade'; allowed: hour, day"),
    ({"subreddits": ["pics"], "limit": 0}, r"field 'limit': expected a positive integer"),
    ({"subreddits": ["pics"], "limit": 5000}, r"field 'limit': 5000 is more than Reddit serves"),
    ({"subreddits": ["pics"], "time_fliter": "year"},
     r"field 'time_fliter': unknown key; allowed: subreddits, listings, time_filter, limit"),
    ({"subreddit": "pics"}, r"requests\[1\]: expected a 'subreddits' or a 'posts' key"),
    ({"subreddits": ["no spaces"]}, r"field 'subreddits': 'no spaces' is not a subreddit name"),
    ({"posts": ["https://www.reddit.com/r/pics/"]},
     r"field 'posts': 'https://www.reddit.com/r/pics/' is not a Reddit post URL"),
    ({"posts": ["abc123"], "limit": 3}, r"field 'limit': unknown key in a posts entry"),
])
def test_expand_requests_rejects_bad_entries(entry: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        RedditListStage.expand_requests([{"subreddits": ["ok_sub"]}, entry])


# ------------------------------------------------------------------ collection


def _expected_depths() -> dict[str, int]:
    by_id = {c["id"]: c for c in TREE}
    out = {}
    for c in TREE:
        d, p = 0, c["parent_id"]
        while p.startswith("t1_"):
            d, p = d + 1, by_id[p[3:]]["parent_id"]
        out[c["id"]] = d
    return out


def test_full_tree_via_more_and_continue_stubs(server: ReplayServer, tmp_path: Path) -> None:
    stage = _collect_stage(server, tmp_path, replace_more_limit=None)
    out = stage.process_record("reddit:big", _ref("big"))
    comments = out.tables["comments"]
    assert len(comments) == len(TREE) and out.counters["comments_truncated"] == 0
    depths = _expected_depths()
    parents = {c["id"]: (c["parent_id"][3:] if c["parent_id"].startswith("t1_") else None) for c in TREE}
    assert {c["comment_id"]: c["depth"] for c in comments} == depths
    assert {c["comment_id"]: c["parent_id"] for c in comments} == parents
    assert max(depths.values()) == 3  # deeper than the server's depth limit: continue-thread was used
    assert server.requests_to("/api/morechildren/", "POST")
    assert server.requests_to("/comments/big/_/*")
    assert server.fetch_counts == {"big": 1}
    first = server.requests_to("/comments/big/")[0]
    assert first.query["sort"] == "top" and first.query["limit"] == "500" and first.query["raw_json"] == "1"
    item = out.tables["items"][0]
    assert item["uid"] == "reddit:big" and item["source"] == "api" and item["score"] == 4321
    assert item["media_urls"] == [f"{server.url}/media/big.jpg"] and item["flair"] == "OC"
    schemas.get("items").from_rows(out.tables["items"])
    schemas.get("comments").from_rows(comments)
    deleted = next(c for c in comments if c["comment_id"] == TREE[5]["id"])
    assert deleted["author_hash"] is None and deleted["author_kind"] == "deleted"


def test_replace_more_is_bounded(server: ReplayServer, tmp_path: Path) -> None:
    stage = _collect_stage(server, tmp_path, replace_more_limit=0)
    out = stage.process_record("reddit:big", _ref("big"))
    got = len(out.tables["comments"])
    assert got == 20  # the server's first-page budget
    assert out.counters["more_unexpanded"] > 0
    assert not server.requests_to("/api/morechildren/")
    capped = _collect_stage(server, tmp_path, replace_more_limit=None, max_comments=7)
    out = capped.process_record("reddit:big", _ref("big"))
    assert len(out.tables["comments"]) == 7 and out.counters["comments_capped"] == len(TREE) - 7
    assert all(c["depth"] == 0 for c in out.tables["comments"])  # breadth-first: top level first


def test_authors_never_leave_in_clear(server: ReplayServer, tmp_path: Path) -> None:
    stage = _collect_stage(server, tmp_path, replace_more_limit=None)
    out = stage.process_record("reddit:big", _ref("big"))
    blobs = []
    for name in ("items", "comments"):
        table = schemas.get(name).from_rows(out.tables[name])
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="none")
        blobs.append(buf.getvalue())
        blobs.extend(orjson.dumps(unpack_raw(row["raw"])) for row in out.tables[name])
    raw_comment = unpack_raw(out.tables["comments"][0]["raw"])
    assert raw_comment["body"] and raw_comment["author"]  # raw is really there, author hashed
    for author in AUTHORS:
        assert not any(author.encode() in blob for blob in blobs), author
    hashes = {c["author_hash"] for c in out.tables["comments"]} - {None}
    assert len(hashes) == 4


def test_missing_upvote_ratio_does_not_refetch(server: ReplayServer, tmp_path: Path) -> None:
    stage = _collect_stage(server, tmp_path)
    item = stage.process_record("reddit:old", _ref("old")).tables["items"][0]
    assert item["upvote_ratio"] is None and item["media_kind"] == "text" and item["text"] == "hello"
    assert server.fetch_counts == {"old": 1}


@pytest.mark.slow
def test_429_is_retried_after_retry_after(server: ReplayServer, tmp_path: Path) -> None:
    server.faults.add("/comments/*", status=429, count=1, retry_after=1)
    out = _collect_stage(server, tmp_path).process_record("reddit:big", _ref("big"))
    assert out.tables["items"][0]["item_id"] == "big" and out.counters["fetch_attempts"] == 2
    assert [e.status for e in server.requests_to("/comments/big/")] == [429, 200]
    assert server.fetch_counts == {"big": 1}
    server.faults.add("/r/*/hot", status=429, count=None, retry_after=0)
    with pytest.raises(TransientError, match=r"r/pics/hot: rate limited \(429\) \(gave up after 3 attempts\)"):
        _refs(server, tmp_path, [{"subreddits": ["pics"], "listings": ["hot"]}], retries=2)
    assert len(server.requests_to("/r/pics/hot")) == 3  # prawcore does not retry 429 itself


@pytest.mark.slow
def test_persistent_503_becomes_transient_error(server: ReplayServer, tmp_path: Path) -> None:
    server.faults.add("/comments/*", status=503, count=None)
    stage = _collect_stage(server, tmp_path, retries=0)  # prawcore's own 2 retries sleep ~4 s
    with pytest.raises(TransientError, match=r"post big: server error \(503\)"):
        stage.process_record("reddit:big", _ref("big"))
    assert [e.status for e in server.requests_to("/comments/big/")] == [503] * 3  # prawcore: 1 + 2 retries


def test_missing_post_is_permanent(server: ReplayServer, tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="post gone1: not found"):
        _collect_stage(server, tmp_path).process_record("reddit:gone1", _ref("gone1"))
    assert len(server.requests_to("/comments/gone1/")) == 1  # not retried


def test_slow_answer_within_timeout(server: ReplayServer, tmp_path: Path) -> None:
    server.faults.add("/comments/*", delay_s=0.5, count=None)
    out = _collect_stage(server, tmp_path, timeout_s=3, retries=0).process_record("reddit:old", _ref("old"))
    assert out.tables["items"][0]["item_id"] == "old"
    assert [e.status for e in server.requests_to("/comments/old/")] == [200]


@pytest.mark.slow
def test_answer_slower_than_timeout_is_transient(server: ReplayServer, tmp_path: Path) -> None:
    server.faults.add("/comments/*", delay_s=1.0, count=None)
    stage = _collect_stage(server, tmp_path, timeout_s=0.3, retries=0)  # prawcore retries timeouts twice
    with pytest.raises(TransientError, match=r"post old: request failed: ReadTimeout") as info:
        stage.process_record("reddit:old", _ref("old"))
    assert info.value.error_type == "ReadTimeout"
    for _ in range(100):  # the server logs each slow request when its delay ends
        if len(server.requests_to("/comments/old/")) == 3:
            break
        time.sleep(0.05)
    # 499: the client hung up before the answer, so none of them counts as a fetch
    assert [e.status for e in server.requests_to("/comments/old/")] == [499] * 3
    assert server.fetch_counts["old"] == 0


def test_records_dedupe_by_uid_keeping_best_rank(tmp_path: Path) -> None:
    cfg = RedditCollectConfig(client_id="x", client_secret="y")
    stage = RedditCollectStage(cfg, tmp_path)
    rows = [{**_ref("a"), "rank": 5}, {**_ref("b"), "rank": 1}, {**_ref("a"), "rank": 2, "request_id": "s"}]
    shard = ShardInput("part-0", {"item_refs": schemas.get("item_refs").from_rows(rows)}, tmp_path)
    records = stage.records(shard)
    assert [(k, p["rank"], p["request_id"]) for k, p in records] == [("reddit:a", 2, "s"), ("reddit:b", 1, "r")]


# ------------------------------------------------------------------ credentials


def test_missing_credentials_name_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("REDDIT_CLIENT_ID", "REDDIT_CLIENT_SECRET", "REDDIT_USER_AGENT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(CredentialError, match="set REDDIT_CLIENT_ID and REDDIT_CLIENT_SECRET"):
        make_reddit(RedditClientConfig())
    monkeypatch.setenv("REDDIT_CLIENT_ID", "abc")
    with pytest.raises(CredentialError) as info:
        make_reddit(RedditClientConfig())
    assert "REDDIT_CLIENT_SECRET" in str(info.value) and "REDDIT_CLIENT_ID" not in str(info.value)
    with pytest.raises(CredentialError, match=r"praw.ini has no section \[nosuchsite\]"):
        make_reddit(RedditClientConfig(site="nosuchsite"))
    monkeypatch.setenv("REDDIT_CLIENT_SECRET", "def")
    reddit = make_reddit(RedditClientConfig(endpoint="http://127.0.0.1:9/"))
    assert reddit.read_only and reddit.config.oauth_url == "http://127.0.0.1:9"


def test_rejected_credentials_are_a_credential_error(store: Path, tmp_path: Path) -> None:
    with ReplayServer(store, credentials={"test-id": "right"}) as srv:
        stage = _collect_stage(srv, tmp_path, client_secret="wrong")
        with pytest.raises(CredentialError, match="rejected the client credentials"):
            stage.process_record("reddit:old", _ref("old"))


def test_post_ids_from_a_file_of_ids_fullnames_urls_and_relative_permalinks(tmp_path: Path) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("# posts to collect\nabc123\n\nt3_def456\nhttps://www.reddit.com/r/pics/comments/ghi789/t/\n"
                   "/r/videos/comments/jkl012/a_video/\nr/pics/comments/mno345/\nhttps://redd.it/abc123\n")
    (tmp_path / "p.yaml").write_text("")
    resolved = RedditListStage.resolve_requests([{"post_file": "ids.txt"}], tmp_path)
    rows = RedditListStage.expand_requests(resolved)
    assert [orjson.loads(r["spec"]) for r in rows] == [{"posts": ["abc123", "def456", "ghi789", "jkl012", "mno345"]}]
    # the same ids named inline make the same request (and so the same shard)
    inline = RedditListStage.expand_requests([{"posts": ["abc123", "def456", "ghi789", "jkl012", "mno345"]}])
    assert inline[0]["request_id"] == rows[0]["request_id"]
    # a relative permalink is accepted inline too
    assert orjson.loads(RedditListStage.expand_requests([{"posts": ["/r/pics/comments/zz9/x/"]}])[0]["spec"]) == {
        "posts": ["zz9"]}


def test_a_long_post_file_becomes_several_requests_and_bad_lines_are_named(tmp_path: Path) -> None:
    ids = tmp_path / "many.txt"
    ids.write_text("\n".join(f"p{i:05d}" for i in range(1200)) + "\n")
    rows = RedditListStage.expand_requests([{"post_file": str(ids)}])
    assert [len(orjson.loads(r["spec"])["posts"]) for r in rows] == [500, 500, 200]
    bad = tmp_path / "bad.txt"
    bad.write_text("abc123\nhttps://www.reddit.com/r/pics/\n")
    with pytest.raises(ConfigError, match=r"requests\[0\]: field 'post_file': .*bad.txt line 2: "
                                          r"'https://www.reddit.com/r/pics/' is not a Reddit post URL"):
        RedditListStage.expand_requests([{"post_file": str(bad)}])
    with pytest.raises(ConfigError, match=r"field 'post_file': .*nope.txt: no such file"):
        RedditListStage.expand_requests([{"post_file": str(tmp_path / "nope.txt")}])
    with pytest.raises(ConfigError, match=r"field 'limit': unknown key in a post_file entry"):
        RedditListStage.expand_requests([{"post_file": str(ids), "limit": 3}])
