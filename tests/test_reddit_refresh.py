"""``reddit.refresh`` through the real praw/prawcore stack against the local fake Reddit API:
100 posts per ``/api/info`` call, every row out in order, old behavior kept in ``raw``."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from blift import schemas, tables
from blift.collect.reddit.refresh import BEFORE_KEY, RedditRefreshConfig, RedditRefreshStage
from blift.errors import CredentialError, TransientError
from blift.ids import author_hash, pack_raw, unpack_raw
from blift.pipeline import RunOptions, run_pipeline
from blift.registry import load_stage
from blift.replay.reddit_api import ReplayServer, write_post
from blift.stage import ShardInput

BASE = 1_704_067_200  # 2024-01-01
N_POSTS = 250
UNKNOWN = ["gone1", "gone2", "gone3"]  # ids the server does not hold: deleted or removed posts
REFRESH_EPOCH = 1_735_689_600  # 2025-01-01, pinned through SOURCE_DATE_EPOCH
OLD_COLLECTED = datetime(2023, 6, 1, tzinfo=timezone.utc)


def _post_id(i: int) -> str:
    return f"p{i:03d}"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("reddit")
    for i in range(N_POSTS):
        post = {"id": _post_id(i), "subreddit": "pics", "title": f"pic {i}", "author": f"zq_author_{i % 7}",
                "score": 1000 + i * 7, "num_comments": i % 17, "upvote_ratio": round(0.5 + i / 1000, 3),
                "over_18": i % 10 == 0, "created_utc": BASE + i * 60, "post_hint": "image",
                "url": f"https://i.redd.it/{_post_id(i)}.jpg"}
        if i == N_POSTS - 1:
            del post["upvote_ratio"]  # old posts have none: it comes back null, with no lazy refetch
        write_post(root, post)
    return root


@pytest.fixture()
def server(store: Path):
    with ReplayServer(store) as srv:
        yield srv


@pytest.fixture()
def pinned_now(monkeypatch: pytest.MonkeyPatch) -> datetime:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(REFRESH_EPOCH))
    return datetime.fromtimestamp(REFRESH_EPOCH, tz=timezone.utc)


def _item(item_id: str, *, platform: str = "reddit", raw: dict | None = None) -> dict:
    """An items row as a published corpus holds it: no upvote ratio, an old score."""
    return {"uid": f"{platform}:{item_id}", "platform": platform, "item_id": item_id, "source": "dump",
            "url": f"https://example.org/{item_id}", "permalink": None, "title": f"title {item_id}", "text": None,
            "community": "pics", "author_hash": None, "created_at": None, "collected_at": OLD_COLLECTED,
            "media_kind": "image", "media_urls": [], "post_hint": None, "flair": None, "over_18": None,
            "spoiler": None, "license": None, "score": 5, "upvote_ratio": None, "num_comments": 1,
            "view_count": 10 if platform == "youtube" else None, "like_count": None, "comment_count": None,
            "subscriber_count": None, "heatmap": None, "raw": pack_raw(raw) if raw is not None else None}


def _items() -> list[dict]:
    """250 known posts, 3 unknown ones and 2 YouTube videos, interleaved (order must survive)."""
    rows = [_item(_post_id(i), raw={"id": _post_id(i), "author": f"zq_author_{i % 7}"} if i % 2 else None)
            for i in range(N_POSTS)]
    rows.insert(7, _item("vid00000001", platform="youtube"))
    rows.insert(120, _item(UNKNOWN[0]))
    rows.insert(121, _item("vid00000002", platform="youtube"))
    rows.insert(205, _item(UNKNOWN[1]))
    rows.append(_item(UNKNOWN[2]))
    return rows


def _stage(server: ReplayServer, tmp_path: Path, **kw) -> RedditRefreshStage:
    cfg = dict(client_id="test-id", client_secret="test-secret", user_agent="blift-tests/1.0", endpoint=server.url,
               timeout_s=5, backoff_s=0.05, max_backoff_s=1.0)
    stage = RedditRefreshStage(RedditRefreshConfig(**{**cfg, **kw}), tmp_path)
    stage.setup()
    return stage


def _run(stage: RedditRefreshStage, rows: list[dict], tmp_path: Path):
    table = schemas.get("items").from_rows(rows)
    return stage.process(ShardInput("part-00000", {"items": table}, tmp_path))


def _info_calls(server: ReplayServer) -> list:
    return server.requests_to("/api/info*", "GET")


def test_refresh_asks_100_posts_per_call_and_keeps_every_row(server: ReplayServer, tmp_path: Path,
                                                              pinned_now: datetime) -> None:
    rows = _items()
    result = _run(_stage(server, tmp_path), rows, tmp_path)
    out = result.tables["items_refreshed"]
    assert isinstance(out, list)
    schemas.get("items").from_rows(out)

    calls = _info_calls(server)
    assert [len(c.query["id"].split(",")) for c in calls] == [100, 100, 53]
    assert all(c.status == 200 for c in calls)
    asked = [name for c in calls for name in c.query["id"].split(",")]
    assert len(asked) == len(set(asked)) == N_POSTS + len(UNKNOWN)
    assert not server.requests_to("/comments/*")  # no lazy fetch of a field the answer lacked

    assert [r["uid"] for r in out] == [r["uid"] for r in rows]  # every row, in order
    assert result.records_in == len(rows) and not result.errors and not result.dropped
    assert result.counters == {"refreshed": N_POSTS, "not_returned": 3, "not_reddit": 2, "api_calls": 3,
                               "api_retries": 0}

    by_uid = {r["uid"]: r for r in out}
    before = {r["uid"]: r for r in rows}
    for i in range(N_POSTS):
        post = server.store.posts[_post_id(i)]
        row = by_uid[f"reddit:{_post_id(i)}"]
        assert (row["score"], row["num_comments"], row["over_18"]) == (
            post["score"], post["num_comments"], post["over_18"])
        assert row["upvote_ratio"] == post.get("upvote_ratio")  # the last has none: null
        assert row["collected_at"] == pinned_now
        untouched = {k: v for k, v in row.items() if k not in ("score", "upvote_ratio", "num_comments", "over_18",
                                                               "collected_at", "raw")}
        assert untouched == {k: before[row["uid"]][k] for k in untouched}
        raw = unpack_raw(row["raw"])
        assert raw[BEFORE_KEY] == [{"score": 5, "upvote_ratio": None, "num_comments": 1, "over_18": None,
                                    "collected_at": OLD_COLLECTED.isoformat(), "source": "dump"}]
        if i % 2:  # raw kept as it was, its author hash not hashed a second time
            assert raw["id"] == _post_id(i) and raw["author"] == author_hash(f"zq_author_{i % 7}")
        else:
            assert set(raw) == {BEFORE_KEY}
    assert by_uid[f"reddit:{_post_id(N_POSTS - 1)}"]["upvote_ratio"] is None
    for uid in [f"reddit:{g}" for g in UNKNOWN] + ["youtube:vid00000001", "youtube:vid00000002"]:
        assert by_uid[uid] == before[uid]  # unchanged, old collected_at included


def test_batch_size_sets_the_call_count(server: ReplayServer, tmp_path: Path) -> None:
    rows = [_item(_post_id(i)) for i in range(95)] + [_item(_post_id(3))]  # a repeated post is asked once
    result = _run(_stage(server, tmp_path, batch_size=40), rows, tmp_path)
    assert [len(c.query["id"].split(",")) for c in _info_calls(server)] == [40, 40, 15]
    assert result.counters["api_calls"] == 3 and result.counters["refreshed"] == 96
    with pytest.raises(ValueError, match="batch_size"):
        RedditRefreshConfig(batch_size=101)
    with pytest.raises(ValueError, match="batch_size"):
        RedditRefreshConfig(batch_size=0)


def test_a_shard_without_reddit_posts_calls_nothing(server: ReplayServer, tmp_path: Path) -> None:
    rows = [_item("vid00000001", platform="youtube")]
    result = _run(_stage(server, tmp_path), rows, tmp_path)
    assert result.tables["items_refreshed"] == rows and result.counters["not_reddit"] == 1
    assert not server.log  # not even a token


def test_refreshing_twice_keeps_both_snapshots_and_bad_ids_are_named(server: ReplayServer, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    stage = _stage(server, tmp_path)
    rows = [_item("p001"), _item("Not-An-Id")]
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(REFRESH_EPOCH))
    once = _run(stage, rows, tmp_path)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(REFRESH_EPOCH + 86400))
    twice = _run(stage, once.tables["items_refreshed"], tmp_path)  # type: ignore[arg-type]
    post = twice.tables["items_refreshed"][0]  # type: ignore[index]
    history = unpack_raw(post["raw"])[BEFORE_KEY]
    assert [h["collected_at"] for h in history] == [OLD_COLLECTED.isoformat(),
                                                   datetime.fromtimestamp(REFRESH_EPOCH, tz=timezone.utc).isoformat()]
    assert history[1]["score"] == server.store.posts["p001"]["score"]
    assert twice.tables["items_refreshed"][1] == rows[1]  # type: ignore[index]
    assert twice.counters["bad_id"] == 1
    assert [(e.record_key, e.error_class.value) for e in twice.errors] == [("reddit:Not-An-Id", "invalid")]
    assert "field 'item_id'" in twice.errors[0].message


def test_a_rate_limited_call_is_retried_after_retry_after(server: ReplayServer, tmp_path: Path) -> None:
    """prawcore never retries a 429 itself, so the stage's own retry (blift.retry) does, and only
    the refused batch is asked again."""
    rows = [_item(_post_id(i)) for i in range(150)]
    server.faults.add("/api/info*", status=429, count=1, retry_after=0)
    result = _run(_stage(server, tmp_path), rows, tmp_path)
    assert [c.status for c in _info_calls(server)] == [429, 200, 200]
    assert result.counters["refreshed"] == 150 and result.counters["api_calls"] == 2
    assert result.counters["api_retries"] == 1


def test_a_persistent_rate_limit_fails_the_shard_as_transient(server: ReplayServer, tmp_path: Path) -> None:
    server.faults.add("/api/info*", status=429, count=None, retry_after=0)
    with pytest.raises(TransientError, match=r"/api/info batch 1 of 2 \(100 posts from t3_p000\): rate limited "
                                             r"\(429\) \(gave up after 2 attempts\)") as info:
        _run(_stage(server, tmp_path, retries=1), [_item(_post_id(i)) for i in range(150)], tmp_path)
    assert info.value.error_type == "RateLimited"
    assert [c.status for c in _info_calls(server)] == [429, 429]  # 1 + 1 retry, then the shard fails


def test_rejected_credentials_stop_the_run(store: Path, tmp_path: Path) -> None:
    with ReplayServer(store, credentials={"test-id": "right"}) as srv:
        with pytest.raises(CredentialError, match="rejected the client credentials"):
            _run(_stage(srv, tmp_path, client_secret="wrong"), [_item("p001")], tmp_path)


def test_registered_as_an_io_stage_forwarding_reddit_credentials() -> None:
    cls = load_stage("reddit.refresh")
    assert cls is RedditRefreshStage and cls.resources == "io" and cls.forward_env == ("REDDIT_",)
    assert cls.inputs == {"items": "items"} and cls.outputs == {"items_refreshed": "items"}


def _pipeline(tmp_path: Path, server: ReplayServer, **config) -> Path:
    pipe = tmp_path / "refresh.yaml"
    pipe.write_text(yaml.safe_dump({"name": "refresh", "stages": [{"stage": "reddit.refresh", "config": {
        "client_id": "test-id", "client_secret": "test-secret", "endpoint": server.url, "timeout_s": 5,
        "backoff_s": 0.05, **config}}]}))
    return pipe


@pytest.mark.slow
def test_through_the_runner_a_failed_shard_is_redone_and_a_finished_one_skipped(server: ReplayServer,
                                                                               tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    rows = [_item("p001"), _item("vid00000001", platform="youtube"), _item("gone1"), _item("p002")]
    tables.write_rows(run_dir / "items" / "part-00000.parquet", rows, "items")
    pipe = _pipeline(tmp_path, server, retries=0)
    opts = RunOptions(out=run_dir, workers=1, progress=False, max_attempts=1)

    server.faults.add("/api/info*", status=429, count=None, retry_after=0)  # prawcore never retries a 429
    report = run_pipeline(pipe, opts)
    assert [(stage, f.shard) for stage, f in report.failed] == [("reddit.refresh", "part-00000")]
    errors = tables.read_dataset(run_dir / "errors" / "reddit.refresh", "errors").to_pylist()
    assert [(e["record_key"], e["error_class"]) for e in errors] == [("*", "transient")]
    assert "rate limited (429)" in errors[0]["message"]
    assert not (run_dir / "items_refreshed" / "part-00000.parquet").exists()

    server.faults.clear()
    server.clear_log()
    report = run_pipeline(pipe, RunOptions(out=run_dir, workers=1, progress=False, retry_failed=True))
    assert not report.failed
    assert len(_info_calls(server)) == 1
    out = tables.read_dataset(run_dir / "items_refreshed", "items").to_pylist()
    assert [r["uid"] for r in out] == [r["uid"] for r in rows]
    assert out[0]["score"] == server.store.posts["p001"]["score"] and out[2]["score"] == 5
    counters = report.stats["stages"]["reddit.refresh"]["counters"]
    assert (counters["refreshed"], counters["not_returned"], counters["not_reddit"], counters["api_calls"]) == (
        2, 1, 1, 1)

    server.clear_log()
    report = run_pipeline(pipe, opts)  # the same inputs and config: the shard is skipped
    assert not report.failed and report.plans[0].skipped == ["part-00000"] and not report.plans[0].todo
    assert not server.log
