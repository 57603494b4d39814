"""``reddit.collect``: item_refs -> items and comments, one record per post.

Each post is fetched with its comment tree (``more`` stubs expanded within a bound) and
flattened with parent and depth. praw objects are turned back into the plain Reddit JSON dicts
that ``rows`` maps for every source (API, dumps, replays), reading ``vars(obj)`` so that a field
the API left out (old posts lack ``upvote_ratio``) never triggers praw's lazy re-fetch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from blift.collect.reddit.api import POST_ID, RedditStage, with_retries
from blift.collect.reddit.client import RedditClientConfig
from blift.collect.reddit.rows import comment_row, item_row
from blift.errors import InvalidRecord
from blift.ids import now_utc
from blift.stage import RecordOutput, ShardInput
from blift.storage import RunPath, change_key
from blift.tables import read_parquet

# --------------------------------------------------------------------------------------------
# praw objects -> plain dicts


def plain(obj: Any) -> dict[str, Any]:
    """The Reddit JSON ``data`` dict behind a praw Submission or Comment, without praw's
    internals: ``author`` becomes the name (None when deleted), ``subreddit`` the display
    name, replies and private attributes are dropped. Never triggers a fetch."""
    out: dict[str, Any] = {}
    for key, value in vars(obj).items():
        if key.startswith("_") or key in ("comment_limit", "comment_sort", "replies"):
            continue
        out[key] = _plain_value(key, value)
    return out


def _plain_value(key: str, value: Any) -> Any:
    from praw.models import Redditor, Subreddit
    from praw.models.base import PRAWBase

    if isinstance(value, Redditor):
        return vars(value).get("name")
    if isinstance(value, Subreddit):
        return vars(value).get("display_name")
    if isinstance(value, PRAWBase):  # poll data and the like: their fields, praw-free
        return {k: _plain_value(k, v) for k, v in vars(value).items() if not k.startswith("_")}
    if isinstance(value, list):
        return [_plain_value(key, v) for v in value]
    if isinstance(value, dict):
        return {k: _plain_value(k, v) for k, v in value.items()}
    return value



class RedditCollectConfig(RedditClientConfig):
    threads: int = Field(1, ge=1, description="praw is not thread-safe: keep 1 per worker")
    comment_sort: Literal["confidence", "top", "new", "controversial", "old", "q&a"] = "top"
    comment_limit: int = Field(500, ge=0, description="comments asked for in the first fetch")
    replace_more_limit: int | None = Field(8, ge=0, description="'more' stubs expanded per post (0: none, null: all)")
    replace_more_threshold: int = Field(0, ge=0, description="skip 'more' stubs hiding fewer comments")
    max_comments: int | None = Field(None, ge=0, description="keep at most this many comments per post, "
                                     "breadth-first (top level first)")
    skip_collected_in: str | None = Field("items", description="skip posts already in another shard of this dataset "
                                           "(a post in two listings is fetched once); null: fetch every ref")


class RedditCollectStage(RedditStage):
    """item_refs -> items (source "api") and comments, flattened with parent and depth."""

    name = "reddit.collect"
    inputs = {"item_refs": "item_refs"}
    outputs = {"items": "items", "comments": "comments"}
    key_column = "uid"
    Config = RedditCollectConfig

    def records(self, shard: ShardInput) -> list[tuple[str, Any]]:
        best: dict[str, dict[str, Any]] = {}
        for row in shard.rows("item_refs"):
            uid = row["uid"]
            if uid not in best or row["rank"] < best[uid]["rank"]:
                best[uid] = row
        elsewhere = self._collected_elsewhere(shard.run_dir, shard.shard_id, set(best))
        return [(uid, {**row, "_collected_in": elsewhere.get(uid)}) for uid, row in best.items()]

    def _collected_elsewhere(self, run_dir: RunPath, shard_id: str, uids: set[str]) -> dict[str, str]:
        """Posts of this shard that another finished shard already collected (a post in both the
        top and the hot listing): fetching them again would spend the API's rate limit twice."""
        folder = self.config.skip_collected_in  # type: ignore[attr-defined]
        found: dict[str, str] = {}
        if not folder:
            return found
        for path in sorted((run_dir / folder).glob("*.parquet")):
            other = path.name[: -len(".parquet")]
            if path.name.startswith(".") or other == shard_id:
                continue
            for uid in uids.intersection(self._uids_of(path)):
                found.setdefault(uid, other)
        return found

    def _uids_of(self, path: Path) -> frozenset[str]:
        """uids of a finished shard, read once per worker (re-read only if the file changed):
        a worker runs many shards, and each would otherwise re-read every other shard."""
        cache: dict[str, tuple[Any, frozenset[str]]] = self.__dict__.setdefault("_uid_cache", {})
        stamp = change_key(path)
        hit = cache.get(str(path))
        if hit is None or hit[0] != stamp:
            hit = cache[str(path)] = (stamp, frozenset(read_parquet(path, columns=["uid"]).column("uid").to_pylist()))
        return hit[1]

    def process_record(self, key: str, payload: Any) -> RecordOutput:
        cfg: RedditCollectConfig = self.config  # type: ignore[assignment]
        if payload.get("_collected_in"):
            return RecordOutput(dropped=[{"table": "item_refs", "uid": key, "record_id": key,
                                          "reason": "already_collected",
                                          "detail": f"in shard {payload['_collected_in']}"}])
        if payload.get("platform") != "reddit":
            raise InvalidRecord(f"{key}: field 'platform': {payload.get('platform')!r} is not reddit")
        item_id = str(payload.get("item_id") or "")
        if not POST_ID.match(item_id):
            raise InvalidRecord(f"{key}: field 'item_id': {item_id!r} is not a Reddit post id")
        reddit = self._client()
        what = f"post {item_id}"

        def fetch() -> tuple[Any, list[Any]]:
            submission = reddit.submission(id=item_id)
            submission.comment_sort = cfg.comment_sort
            submission.comment_limit = cfg.comment_limit
            forest = submission.comments  # the one GET /comments/{id}/
            leftover = forest.replace_more(limit=cfg.replace_more_limit, threshold=cfg.replace_more_threshold)
            return submission, leftover

        (submission, leftover), attempts = with_retries(fetch, cfg, what)
        collected_at = now_utc()
        post = plain(submission)
        item = item_row(post, source="api", collected_at=collected_at)
        comments, counters = self._comments(submission, key, collected_at)
        counters["comments_truncated"] = counters.get("comments_truncated", 0) + sum(int(m.count) for m in leftover)
        counters["more_unexpanded"] = len(leftover)
        counters["fetch_attempts"] = attempts
        return RecordOutput(tables={"items": [item], "comments": comments}, counters=counters)

    def _comments(self, submission: Any, uid: str, collected_at: Any) -> tuple[list[dict[str, Any]], dict[str, int]]:
        from praw.models import MoreComments

        cfg: RedditCollectConfig = self.config  # type: ignore[assignment]
        depth: dict[str, int] = {}
        rows: list[dict[str, Any]] = []
        counters = {"comments": 0, "comments_truncated": 0, "comments_capped": 0}
        for comment in submission.comments.list():
            if isinstance(comment, MoreComments):  # after replace_more(limit=0) none remain in the forest
                counters["comments_truncated"] += int(comment.count)
                continue
            data = plain(comment)
            parent = str(data.get("parent_id") or "")
            if parent.startswith("t1_") and parent[3:] in depth:
                level = depth[parent[3:]] + 1
            elif parent.startswith("t3_"):
                level = 0
            else:  # parent not collected: trust Reddit's own depth field
                level = int(data.get("depth") or 0)
            depth[str(data.get("id"))] = level
            if cfg.max_comments is not None and len(rows) >= cfg.max_comments:
                counters["comments_capped"] += 1
                continue
            rows.append(comment_row(data, depth=level, collected_at=collected_at, uid=uid))
        counters["comments"] = len(rows)
        return rows, counters
