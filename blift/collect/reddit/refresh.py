"""``reddit.refresh``: items -> items_refreshed, the current score, upvote ratio and comment count
of posts already known.

Why: a published corpus (the BLIFT release on the Hub, say) holds Reddit posts without their
upvotes; whoever rebuilds it has the post ids and wants the behavior they draw today. Reddit's
``GET /api/info?id=t3_a,t3_b,...`` answers up to 100 fullnames at once, so this stage asks in
batches of ``batch_size`` (100, Reddit's limit) through praw's ``reddit.info(fullnames=...)``:
one call per 100 posts, never one per post (10,000 posts are 100 calls, about a minute at
Reddit's ~100 requests a minute, instead of 10,000 calls and close to two hours). praw batches
by 100 itself and does not page (``/api/info`` has no ``after``); the stage still hands it one
chunk at a time, so that each chunk is one HTTP call, retried alone, and counted
(``api_calls``). It is a shard-level stage rather than a record stage for the same reason: one
call answers 100 records, and a crashed shard is redone with the same ~N/100 calls.

What comes out: every input row, in input order; nothing is dropped.

* ``refreshed``: a Reddit post the API returned gets the API's ``score``, ``upvote_ratio`` and
  ``num_comments`` (mapped as :func:`blift.collect.reddit.rows.item_row` maps them: a field the
  answer lacks, such as an old post's ``upvote_ratio``, becomes null), ``over_18`` when the answer
  has it, and ``collected_at`` = the refresh time. The values the row had before, with its old
  ``collected_at`` and ``source``, are appended to the list ``raw["blift_before_refresh"]``
  (oldest first, so refreshing twice keeps both earlier snapshots); a row whose ``raw`` was null
  gets ``{"blift_before_refresh": [...]}``. The rest of ``raw`` is left as it was (its authors are
  already hashed, so it is re-serialized, never hashed a second time).
* ``not_returned``: the API did not return the post: an id Reddit does not know, or a post it
  withholds (in a private, quarantined or banned subreddit). ``/api/info`` leaves those out
  rather than failing the batch. The row is kept unchanged; its last known behavior stays with
  its old ``collected_at``. (A deleted or removed post usually still comes back, with its author
  ``[deleted]`` and its last score, and is refreshed like any other.)
* ``not_reddit``: a row of another platform, kept unchanged.
* ``bad_id`` / ``bad_answer``: a Reddit row whose ``item_id`` is not a post id, or a post whose
  answer had a field of the wrong type: kept unchanged, and an ``invalid`` row in ``errors`` names
  the record and the field.

Failures: each batch is retried on transient errors by :func:`blift.collect.reddit.api.with_retries`
(on top of prawcore's own two retries of 5xx); when retries run out the shard fails with the
classified error (the runner records it; a rerun redoes the shard). Rejected credentials raise
``CredentialError``, which stops the run.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any, ClassVar

import orjson
from pydantic import Field

from blift.collect.fields import float_field, int_field
from blift.collect.reddit.api import POST_ID, PrawStage, with_retries
from blift.collect.reddit.client import RedditClientConfig, describe_endpoint
from blift.errors import ErrorClass, InvalidRecord
from blift.ids import canonical_json, now_utc, unpack_raw
from blift.stage import RecordFailure, ShardInput, StageResult

BEFORE_KEY = "blift_before_refresh"  # raw: the list of snapshots a row had before each refresh
INFO_MAX = 100  # fullnames Reddit's /api/info answers in one call
_FIELDS = ("score", "upvote_ratio", "num_comments", "over_18")


class RedditRefreshConfig(RedditClientConfig):
    batch_size: int = Field(INFO_MAX, ge=1, le=INFO_MAX,
                            description="fullnames per /api/info call (Reddit answers at most 100)")


class RedditRefreshStage(PrawStage):
    """items -> items_refreshed: known Reddit posts' current behavior, 100 posts per API call."""

    name: ClassVar[str] = "reddit.refresh"
    version: ClassVar[int] = 1
    inputs: ClassVar[dict[str, str]] = {"items": "items"}
    outputs: ClassVar[dict[str, str]] = {"items_refreshed": "items"}
    Config = RedditRefreshConfig
    resources: ClassVar[str] = "io"

    def describe(self) -> str:
        cfg: RedditRefreshConfig = self.config  # type: ignore[assignment]
        return f"{self.name} via praw at {describe_endpoint(cfg)}, {cfg.batch_size} posts per /api/info call"

    def process(self, shard: ShardInput) -> StageResult:
        rows = shard.rows("items")
        counters: Counter[str] = Counter({k: 0 for k in ("refreshed", "not_returned", "not_reddit", "api_calls")})
        errors: list[RecordFailure] = []
        wanted: dict[str, None] = {}  # fullnames to ask for, in first-seen order, each once
        for row in rows:
            if row.get("platform") != "reddit":
                continue
            item_id = str(row.get("item_id") or "")
            if POST_ID.match(item_id):
                wanted[f"t3_{item_id}"] = None
        answers = self._fetch(list(wanted), counters)
        refreshed_at = now_utc()
        out = []
        for row in rows:
            out.append(self._row(row, answers, refreshed_at, counters, errors))
        return StageResult(tables={"items_refreshed": out}, records_in=len(rows), errors=errors,
                           counters=dict(counters))

    def _fetch(self, fullnames: list[str], counters: Counter[str]) -> dict[str, dict[str, Any]]:
        """The API's data dict of each post it returned, by fullname: one /api/info call per
        ``batch_size`` fullnames, each retried alone on transient errors."""
        cfg: RedditRefreshConfig = self.config  # type: ignore[assignment]
        answers: dict[str, dict[str, Any]] = {}
        if not fullnames:
            return answers
        reddit = self._client()
        chunks = [fullnames[i: i + cfg.batch_size] for i in range(0, len(fullnames), cfg.batch_size)]
        for n, chunk in enumerate(chunks, 1):
            what = f"/api/info batch {n} of {len(chunks)} ({len(chunk)} posts from {chunk[0]})"

            def call(chunk: list[str] = chunk) -> list[Any]:
                return list(reddit.info(fullnames=chunk))  # one GET: praw splits only above 100

            things, attempts = with_retries(call, cfg, what)
            counters["api_calls"] += 1
            counters["api_retries"] += attempts - 1
            asked = set(chunk)
            for thing in things:
                data = _data(thing)
                name = str(data.get("name") or f"t3_{data.get('id')}")
                if name in asked:
                    answers[name] = data
        return answers

    def _row(self, row: dict[str, Any], answers: dict[str, dict[str, Any]], refreshed_at: datetime,
             counters: Counter[str], errors: list[RecordFailure]) -> dict[str, Any]:
        uid = str(row.get("uid"))
        if row.get("platform") != "reddit":
            counters["not_reddit"] += 1
            return row
        item_id = str(row.get("item_id") or "")
        if not POST_ID.match(item_id):
            counters["bad_id"] += 1
            errors.append(_invalid(uid, f"{uid}: field 'item_id': {item_id!r} is not a Reddit post id; "
                                        "kept unrefreshed"))
            return row
        data = answers.get(f"t3_{item_id}")
        if data is None:
            counters["not_returned"] += 1
            return row
        try:
            fresh = _behavior(data, f"submission {item_id}")
            raw = _with_before(row)
        except InvalidRecord as exc:
            counters["bad_answer"] += 1
            errors.append(_invalid(uid, f"{exc}; kept unrefreshed"))
            return row
        counters["refreshed"] += 1
        return {**row, **fresh, "collected_at": refreshed_at, "raw": raw}


def _data(thing: Any) -> dict[str, Any]:
    """The fields praw parsed from the answer, read without triggering praw's lazy fetch (an
    attribute the answer lacks would otherwise make praw fetch the post again)."""
    return {k: v for k, v in vars(thing).items() if not k.startswith("_")}


def _behavior(data: dict[str, Any], where: str) -> dict[str, Any]:
    """The behavior columns from an /api/info answer, typed as ``rows.item_row`` types them."""
    fresh: dict[str, Any] = {
        "score": int_field(data, "score", where),
        "upvote_ratio": float_field(data, "upvote_ratio", where),
        "num_comments": int_field(data, "num_comments", where),
    }
    if data.get("over_18") is not None:
        fresh["over_18"] = bool(data["over_18"])
    return fresh


def _with_before(row: dict[str, Any]) -> bytes:
    """The row's ``raw`` with its current behavior appended to ``raw["blift_before_refresh"]``."""
    uid = row.get("uid")
    try:
        raw = unpack_raw(row.get("raw"))
    except (orjson.JSONDecodeError, ValueError) as exc:
        raise InvalidRecord(f"{uid}: field 'raw': not JSON ({exc})") from None
    if raw is None:
        raw = {}
    elif not isinstance(raw, dict):
        raise InvalidRecord(f"{uid}: field 'raw': expected a JSON object, got {type(raw).__name__}")
    collected = row.get("collected_at")
    before = {k: row.get(k) for k in _FIELDS}
    before["collected_at"] = collected.isoformat() if isinstance(collected, datetime) else collected
    before["source"] = row.get("source")
    history = raw.get(BEFORE_KEY)
    history = list(history) if isinstance(history, list) else ([] if history is None else [history])
    # Authors in raw are hashed already: serialize as pack_raw does, without hashing them again.
    return canonical_json({**raw, BEFORE_KEY: [*history, before]})


def _invalid(uid: str, message: str) -> RecordFailure:
    return RecordFailure(record_key=uid, error_class=ErrorClass.INVALID, error_type="InvalidRecord", message=message)
