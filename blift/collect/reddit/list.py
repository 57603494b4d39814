"""``reddit.list``: requests (subreddit listings, lists of posts) -> item_refs.

One record per request: a subreddit listing (top/hot/new/controversial, time filter, limit) or a
list of posts named by id or URL. Refs keep listing order (``rank``), so the collector keeps the
best-ranked copy of a post that two listings share.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from blift.collect.fields import request_error, request_spec
from blift.collect.reddit.api import POST_ID, RedditStage, with_retries
from blift.collect.reddit.client import RedditClientConfig
from blift.collect.reddit.rows import REDDIT
from blift.errors import ConfigError, InvalidRecord
from blift.ids import canonical_json, short_id
from blift.stage import RecordOutput, ShardInput

LISTINGS = ("top", "hot", "new", "controversial")
TIMED_LISTINGS = ("top", "controversial")
TIME_FILTERS = ("hour", "day", "week", "month", "year", "all")
LISTING_KEYS = ("subreddits", "listings", "time_filter", "limit")
POSTS_KEYS = ("posts",)
POST_FILE_KEYS = ("post_file",)
POSTS_PER_REQUEST = 500  # ids of one post_file request; a longer file becomes several shards
MAX_LISTING = 1000  # Reddit stops every listing at about 1000 items
_SUBREDDIT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]{1,20}$")

# --------------------------------------------------------------------------------------------
# Request expansion


_fail = request_error


def parse_post_ref(ref: Any, index: int, field: str = "posts", where: str = "") -> str:
    """A post id from ``abc123``, ``t3_abc123``, a reddit.com / redd.it / gallery URL, or a
    relative permalink (``/r/pics/comments/abc123/...``, what dumps and exports often hold).
    ``where`` prefixes the message (``ids.txt line 7: ``)."""
    from praw.exceptions import InvalidURL
    from praw.models import Submission

    if not isinstance(ref, str) or not ref.strip():
        raise _fail(index, field, f"{where}expected a post id or URL, got {ref!r}")
    text = ref.strip()
    if text.startswith("/") and not text.startswith("//"):
        text = f"{REDDIT}{text}"  # a permalink relative to reddit.com
    elif text.startswith(("r/", "u/", "comments/")):
        text = f"{REDDIT}/{text}"
    if "/" in text or "." in text:
        try:
            post_id = Submission.id_from_url(text if "://" in text else f"https://{text}")
        except InvalidURL:
            raise _fail(index, field, f"{where}{ref!r} is not a Reddit post URL (expected "
                        "https://www.reddit.com/r/<sub>/comments/<id>/..., /r/<sub>/comments/<id>/... "
                        "or https://redd.it/<id>)") from None
        return post_id.lower()
    post_id = text[3:] if text.startswith("t3_") else text
    if not POST_ID.match(post_id):
        raise _fail(index, field, f"{where}{ref!r} is not a Reddit post id (base36, like '1b2c3d4')")
    return post_id


def read_post_file(path: Any, index: int) -> list[str]:
    """Post ids from a text file, one id, fullname, URL or permalink per line (blank lines and
    ``#`` comments skipped); a bad line is a ConfigError naming the file and the line."""
    if not isinstance(path, str) or not path:
        raise _fail(index, "post_file", f"expected a file path, got {path!r}")
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise _fail(index, "post_file", f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(index, "post_file", f"{path}: cannot read it as UTF-8 text ({exc})") from None
    ids = [parse_post_ref(line, index, "post_file", f"{path} line {n}: ")
           for n, line in enumerate(lines, 1) if line.strip() and not line.lstrip().startswith("#")]
    if not ids:
        raise _fail(index, "post_file", f"{path}: no post ids in it")
    return list(dict.fromkeys(ids))


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
            spec: dict[str, Any] = {"posts": ids}
            kinds = [("posts", spec)]
        elif "post_file" in entry:
            unknown = sorted(set(entry) - set(POST_FILE_KEYS))
            if unknown:
                raise _fail(index, unknown[0],
                            f"unknown key in a post_file entry; allowed: {', '.join(POST_FILE_KEYS)}")
            ids = read_post_file(entry["post_file"], index)
            # a long list becomes several requests, so several shards run in parallel
            kinds = [("posts", {"posts": ids[i:i + POSTS_PER_REQUEST]}) for i in range(0, len(ids), POSTS_PER_REQUEST)]
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
                    raise _fail(index, "time_filter",
                                f"unknown time filter {time_filter!r}; allowed: {', '.join(TIME_FILTERS)}")
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
            raise ConfigError(f"requests[{index}]: expected a 'subreddits' or a 'posts' key (or 'post_file'), got keys "
                              f"{sorted(entry)}; allowed: {', '.join(LISTING_KEYS)} or {', '.join(POSTS_KEYS)} "
                              f"or {', '.join(POST_FILE_KEYS)}")
        for kind, spec in kinds:
            request_id = short_id(kind, spec)
            rows.setdefault(request_id, {"request_id": request_id, "kind": kind, "spec": canonical_json(spec).decode()})
    return list(rows.values())



class RedditListConfig(RedditClientConfig):
    pass


class RedditListStage(RedditStage):
    """Requests (listings, post lists) -> item_refs, ranked in listing order."""

    name = "reddit.list"
    inputs = {"requests": "requests"}
    outputs = {"item_refs": "item_refs"}
    key_column = "request_id"
    Config = RedditListConfig
    request_paths = ("post_file",)

    @classmethod
    def expand_requests(cls, specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``{subreddits: [...], listings: [top, hot], time_filter: year, limit: 100}`` gives one
        ``listing`` row per subreddit and listing (``time_filter`` goes to top/controversial,
        default ``all``); ``{posts: [id or URL, ...]}`` gives one ``posts`` row;
        ``{post_file: ids.txt}`` (ids, ``t3_`` fullnames, URLs or relative permalinks, one per
        line) gives one ``posts`` row per 500 ids."""
        return expand_reddit_requests(specs)

    def records(self, shard: ShardInput) -> list[tuple[str, Any]]:
        return [(row["request_id"], row) for row in shard.rows("requests")]

    def process_record(self, key: str, payload: Any) -> RecordOutput:
        kind, spec = request_spec(key, payload)
        refs: list[tuple[str, str | None]]  # (post id, permalink when the listing gave one)
        if kind == "posts":
            ids = spec.get("posts") if isinstance(spec, dict) else None
            if not isinstance(ids, list):
                raise InvalidRecord(f"request {key}: field 'spec.posts': expected a list of post ids")
            bad = [i for i in ids if not isinstance(i, str) or not POST_ID.match(i)]
            if bad:
                raise InvalidRecord(f"request {key}: field 'spec.posts': {bad[0]!r} is not a Reddit post id")
            refs = [(i, None) for i in ids]
            counters = {"posts_named": len(refs)}
        elif kind == "listing":
            refs, counters = self._listing(key, spec)
        else:
            raise InvalidRecord(f"request {key}: field 'kind': {kind!r} is not a reddit request (listing, posts)")
        rows: list[dict[str, Any]] = []
        seen: set[str] = set()
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
                "url": (REDDIT + permalink if permalink and permalink.startswith("/")
                        else f"{REDDIT}/comments/{item_id}/"),
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
