"""Reddit collection through praw: listings to item refs, then posts with their comment trees.

``reddit.list``  requests  -> item_refs   (one record per request: a subreddit listing or a
                                            list of posts named by id or URL)
``reddit.collect`` item_refs -> items, comments  (one record per post: the post and its comment
                                                  tree, ``more`` stubs expanded within a bound)

praw objects are turned back into the plain Reddit JSON dicts that ``reddit_rows`` maps for
every source (API, dumps, replays), reading ``vars(obj)`` so that a field the API left out
(old posts lack ``upvote_ratio``) never triggers praw's lazy re-fetch.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal, TypeVar

import prawcore
from pydantic import Field

from blift.collect.fields import request_spec
from blift.collect.reddit_client import RedditClientConfig, describe_endpoint, make_reddit
from blift.collect.reddit_rows import REDDIT, comment_row, item_row
from blift.errors import ConfigError, CredentialError, InvalidRecord, PermanentError, TransientError
from blift.ids import canonical_json, now_utc, short_id
from blift.stage import RecordOutput, RecordStage, ShardInput
from blift.storage import RunPath, change_key
from blift.tables import read_parquet

log = logging.getLogger(__name__)
T = TypeVar("T")

LISTINGS = ("top", "hot", "new", "controversial")
TIMED_LISTINGS = ("top", "controversial")
TIME_FILTERS = ("hour", "day", "week", "month", "year", "all")
LISTING_KEYS = ("subreddits", "listings", "time_filter", "limit")
POSTS_KEYS = ("posts",)
MAX_LISTING = 1000  # Reddit stops every listing at about 1000 items
_SUBREDDIT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]{1,20}$")
_POST_ID = re.compile(r"^[0-9a-z]{1,13}$")


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


# --------------------------------------------------------------------------------------------
# Errors and retries


def _status(exc: prawcore.ResponseException) -> int:
    return int(getattr(exc.response, "status_code", 0) or 0)


def _retry_after(exc: BaseException) -> float | None:
    """Seconds the server asked us to wait (Retry-After, else the rate-limit reset when exhausted)."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    for name in ("retry-after", "x-ratelimit-reset"):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value))
            except ValueError:
                continue
    return None


def classify_praw_error(exc: BaseException, what: str) -> Exception | None:
    """The blift error for a praw/prawcore failure: TransientError (worth retrying),
    PermanentError / CredentialError (not), or None for a bug that should surface as is."""
    from praw.exceptions import InvalidURL, RedditAPIException

    if isinstance(exc, prawcore.Redirect):
        return PermanentError(f"{what}: reddit redirected to {exc.path!r}: the subreddit does not exist",
                              error_type="NotFound")
    if isinstance(exc, prawcore.NotFound):
        reason = _reason(exc)
        if reason == "banned":
            return PermanentError(f"{what}: the subreddit is banned (404)", error_type="Banned")
        return PermanentError(f"{what}: not found (404): deleted, removed or never existed", error_type="NotFound")
    if isinstance(exc, prawcore.Forbidden):
        reason = _reason(exc) or "private, quarantined or otherwise restricted"
        return PermanentError(f"{what}: forbidden (403): {reason}", error_type="Forbidden")
    if isinstance(exc, prawcore.UnavailableForLegalReasons):
        return PermanentError(f"{what}: unavailable for legal reasons (451)", error_type="LegalBlock")
    if isinstance(exc, (prawcore.InvalidToken, prawcore.OAuthException)) or (
        isinstance(exc, prawcore.ResponseException) and _status(exc) == 401
    ):
        return CredentialError(
            f"{what}: Reddit rejected the client credentials (HTTP 401); check REDDIT_CLIENT_ID and "
            "REDDIT_CLIENT_SECRET (or the praw.ini site)"
        )
    if isinstance(exc, prawcore.TooManyRequests):
        return TransientError(f"{what}: rate limited (429)", error_type="RateLimited")
    if isinstance(exc, prawcore.ServerError):
        return TransientError(f"{what}: server error ({_status(exc)})", error_type="ServerError")
    if isinstance(exc, prawcore.BadJSON):
        return TransientError(f"{what}: the answer was not JSON (HTTP {_status(exc)})", error_type="BadJSON")
    if isinstance(exc, prawcore.RequestException):
        original = exc.original_exception
        return TransientError(f"{what}: request failed: {type(original).__name__}: {original}",
                              error_type=type(original).__name__)
    if isinstance(exc, prawcore.ResponseException):
        status = _status(exc)
        if status >= 500 or status in (408, 425):
            return TransientError(f"{what}: HTTP {status}", error_type="ServerError")
        return PermanentError(f"{what}: HTTP {status}", error_type=f"HTTP{status}")
    if isinstance(exc, InvalidURL):
        return InvalidRecord(f"{what}: {exc}")
    if isinstance(exc, RedditAPIException):
        return PermanentError(f"{what}: reddit API error: {exc}", error_type="RedditAPIException")
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return TransientError(f"{what}: {type(exc).__name__}: {exc}", error_type=type(exc).__name__)
    return None


def _reason(exc: prawcore.ResponseException) -> str | None:
    try:
        body = exc.response.json()
    except ValueError:
        return None
    return body.get("reason") if isinstance(body, dict) else None


def with_retries(fn: Callable[[], T], cfg: RedditClientConfig, what: str,
                 sleep: Callable[[float], None] = time.sleep) -> tuple[T, int]:
    """Run ``fn``; on a transient failure wait (Retry-After when given, else exponential
    backoff, capped by ``max_backoff_s``) and try again, ``cfg.retries`` times at most.
    Returns (result, attempts). Raises the classified blift error when it gives up."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn(), attempt
        except Exception as exc:  # noqa: BLE001 - classified below; anything else re-raised as is
            err = classify_praw_error(exc, what)
            if err is None:
                raise
            if not isinstance(err, TransientError) or attempt > cfg.retries:
                if isinstance(err, TransientError) and attempt > 1:
                    err = TransientError(f"{err} (gave up after {attempt} attempts)", error_type=err.error_type)
                raise err from exc
            wait = cfg.backoff_s * (2 ** (attempt - 1))
            asked = _retry_after(exc) if isinstance(exc, prawcore.TooManyRequests) else None
            if asked is not None:
                wait = max(wait, asked)
            wait = min(wait, cfg.max_backoff_s)
            log.warning("%s; retrying in %.1f s (attempt %d of %d)", err, wait, attempt + 1, cfg.retries + 1)
            sleep(wait)


# --------------------------------------------------------------------------------------------
# Request expansion


def _fail(index: int, field: str, message: str) -> ConfigError:
    return ConfigError(f"requests[{index}]: field {field!r}: {message}")


def parse_post_ref(ref: Any, index: int) -> str:
    """A post id from ``abc123``, ``t3_abc123``, a reddit.com / redd.it / gallery URL."""
    from praw.exceptions import InvalidURL
    from praw.models import Submission

    if not isinstance(ref, str) or not ref.strip():
        raise _fail(index, "posts", f"expected a post id or URL, got {ref!r}")
    text = ref.strip()
    if "/" in text or "." in text:
        try:
            post_id = Submission.id_from_url(text if "://" in text else f"https://{text}")
        except InvalidURL:
            raise _fail(index, "posts", f"{ref!r} is not a Reddit post URL "
                        "(expected https://www.reddit.com/r/<sub>/comments/<id>/... or https://redd.it/<id>)") from None
        return post_id.lower()
    post_id = text[3:] if text.startswith("t3_") else text
    if not _POST_ID.match(post_id):
        raise _fail(index, "posts", f"{ref!r} is not a Reddit post id (base36, like '1b2c3d4')")
    return post_id


def _as_list(value: Any, index: int, field: str) -> list[Any]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        return value
    raise _fail(index, field, f"expected a non-empty list, got {value!r}")


def expand_reddit_requests(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pipeline ``requests:`` entries -> ``requests`` rows (see RedditListStage.expand_requests)."""
    rows: dict[str, dict[str, Any]] = {}
    for index, entry in enumerate(specs):
        if not isinstance(entry, dict):
            raise ConfigError(f"requests[{index}]: expected a mapping with 'subreddits' or 'posts', got {entry!r}")
        if "posts" in entry:
            unknown = sorted(set(entry) - set(POSTS_KEYS))
            if unknown:
                raise _fail(index, unknown[0], f"unknown key in a posts entry; allowed: {', '.join(POSTS_KEYS)} "
                            "(listings and posts go in separate entries)")
            ids = list(dict.fromkeys(parse_post_ref(r, index) for r in _as_list(entry["posts"], index, "posts")))
            spec = {"posts": ids}
            kinds = [("posts", spec)]
        elif "subreddits" in entry:
            unknown = sorted(set(entry) - set(LISTING_KEYS))
            if unknown:
                raise _fail(index, unknown[0], f"unknown key; allowed: {', '.join(LISTING_KEYS)}")
            subs = []
            for sub in _as_list(entry["subreddits"], index, "subreddits"):
                name = str(sub).strip().removeprefix("/").removeprefix("r/") if isinstance(sub, str) else sub
                if not isinstance(name, str) or not _SUBREDDIT.match(name):
                    raise _fail(index, "subreddits", f"{sub!r} is not a subreddit name (letters, digits, '_', 2-21)")
                subs.append(name)
            listings = _as_list(entry.get("listings", ["top"]), index, "listings")
            for listing in listings:
                if listing not in LISTINGS:
                    raise _fail(index, "listings", f"unknown listing {listing!r}; allowed: {', '.join(LISTINGS)}")
            time_filter = entry.get("time_filter")
            if time_filter is not None:
                if time_filter not in TIME_FILTERS:
                    raise _fail(index, "time_filter", f"unknown time filter {time_filter!r}; allowed: {', '.join(TIME_FILTERS)}")
                if not any(li in TIMED_LISTINGS for li in listings):
                    raise _fail(index, "time_filter", f"applies only to {' and '.join(TIMED_LISTINGS)} listings, "
                                f"not {', '.join(listings)}")
            limit = entry.get("limit", 100)
            if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
                raise _fail(index, "limit", f"expected a positive integer, got {limit!r}")
            if limit > MAX_LISTING:
                raise _fail(index, "limit", f"{limit} is more than Reddit serves for one listing ({MAX_LISTING}); "
                            "use several listings or time filters, or dump ingestion")
            kinds = []
            for sub in subs:
                for listing in dict.fromkeys(listings):
                    spec = {"subreddit": sub, "listing": listing, "limit": limit}
                    if listing in TIMED_LISTINGS:
                        spec["time_filter"] = time_filter or "all"
                    kinds.append(("listing", spec))
        else:
            raise ConfigError(f"requests[{index}]: expected a 'subreddits' or a 'posts' key, got keys "
                              f"{sorted(entry)}; allowed: {', '.join(LISTING_KEYS)} or {', '.join(POSTS_KEYS)}")
        for kind, spec in kinds:
            request_id = short_id(kind, spec)
            rows.setdefault(request_id, {"request_id": request_id, "kind": kind, "spec": canonical_json(spec).decode()})
    return list(rows.values())


# --------------------------------------------------------------------------------------------
# Stages


class _RedditStage(RecordStage):
    """Shared: one praw client per worker, built in setup()."""

    Config: ClassVar[type[RedditClientConfig]] = RedditClientConfig

    def setup(self) -> None:
        self.reddit = make_reddit(self.config)  # type: ignore[arg-type]

    def _client(self) -> Any:
        if getattr(self, "reddit", None) is None:
            self.setup()
        return self.reddit

    def describe(self) -> str:
        return f"{self.name} via praw at {describe_endpoint(self.config)}"  # type: ignore[arg-type]


class RedditListConfig(RedditClientConfig):
    pass


class RedditListStage(_RedditStage):
    """Requests (listings, post lists) -> item_refs, ranked in listing order."""

    name = "reddit.list"
    inputs = {"requests": "requests"}
    outputs = {"item_refs": "item_refs"}
    key_column = "request_id"
    Config = RedditListConfig

    @classmethod
    def expand_requests(cls, specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``{subreddits: [...], listings: [top, hot], time_filter: year, limit: 100}`` gives one
        ``listing`` row per subreddit and listing (``time_filter`` goes to top/controversial,
        default ``all``); ``{posts: [id or URL, ...]}`` gives one ``posts`` row."""
        return expand_reddit_requests(specs)

    def records(self, shard: ShardInput) -> list[tuple[str, Any]]:
        return [(row["request_id"], row) for row in shard.rows("requests")]

    def process_record(self, key: str, payload: Any) -> RecordOutput:
        kind, spec = request_spec(key, payload)
        if kind == "posts":
            ids = spec.get("posts") if isinstance(spec, dict) else None
            if not isinstance(ids, list):
                raise InvalidRecord(f"request {key}: field 'spec.posts': expected a list of post ids")
            bad = [i for i in ids if not isinstance(i, str) or not _POST_ID.match(i)]
            if bad:
                raise InvalidRecord(f"request {key}: field 'spec.posts': {bad[0]!r} is not a Reddit post id")
            refs = [(i, None) for i in ids]
            counters = {"posts_named": len(refs)}
        elif kind == "listing":
            refs, counters = self._listing(key, spec)
        else:
            raise InvalidRecord(f"request {key}: field 'kind': {kind!r} is not a reddit request (listing, posts)")
        rows, seen = [], set()
        for item_id, permalink in refs:
            if item_id in seen:
                continue
            seen.add(item_id)
            rows.append({
                "uid": f"reddit:{item_id}",
                "platform": "reddit",
                "item_id": item_id,
                "request_id": key,
                "rank": len(rows),
                "url": REDDIT + permalink if permalink and permalink.startswith("/") else f"{REDDIT}/comments/{item_id}/",
            })
        counters["item_refs"] = len(rows)
        return RecordOutput(tables={"item_refs": rows}, counters=counters)

    def _listing(self, key: str, spec: dict[str, Any]) -> tuple[list[tuple[str, str | None]], dict[str, int]]:
        try:
            sub, listing, limit = spec["subreddit"], spec["listing"], int(spec["limit"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidRecord(f"request {key}: spec lacks subreddit/listing/limit ({exc})") from None
        if listing not in LISTINGS:
            raise InvalidRecord(f"request {key}: field 'spec.listing': {listing!r} not in {LISTINGS}")
        reddit = self._client()
        what = f"r/{sub}/{listing}"

        def fetch() -> list[tuple[str, str | None]]:
            method = getattr(reddit.subreddit(sub), listing)
            kwargs: dict[str, Any] = {"limit": limit}
            if listing in TIMED_LISTINGS:
                kwargs["time_filter"] = spec.get("time_filter") or "all"
            out = []
            for submission in method(**kwargs):
                data = vars(submission)
                out.append((str(data["id"]), data.get("permalink")))
            return out

        refs, attempts = with_retries(fetch, self.config, what)  # type: ignore[arg-type]
        return refs, {"listing_attempts": attempts}


class RedditCollectConfig(RedditClientConfig):
    threads: int = Field(1, ge=1, description="praw is not thread-safe: keep 1 per worker")
    comment_sort: Literal["confidence", "top", "new", "controversial", "old", "q&a"] = "top"
    comment_limit: int = Field(500, ge=0, description="comments asked for in the first fetch")
    replace_more_limit: int | None = Field(8, ge=0, description="'more' stubs expanded per post (0: none, null: all)")
    replace_more_threshold: int = Field(0, ge=0, description="skip 'more' stubs hiding fewer comments")
    max_comments: int | None = Field(None, ge=0, description="keep at most this many comments per post, breadth-first (top level first)")
    skip_collected_in: str | None = Field("items", description="skip posts already in another shard of this dataset "
                                           "(a post in two listings is fetched once); null: fetch every ref")


class RedditCollectStage(_RedditStage):
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
            return RecordOutput(dropped=[{"table": "item_refs", "uid": key, "record_id": key, "reason": "already_collected",
                                          "detail": f"in shard {payload['_collected_in']}"}])
        if payload.get("platform") != "reddit":
            raise InvalidRecord(f"{key}: field 'platform': {payload.get('platform')!r} is not reddit")
        item_id = str(payload.get("item_id") or "")
        if not _POST_ID.match(item_id):
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
