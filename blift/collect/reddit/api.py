"""Calling Reddit's API through praw: one client per worker, every failure classified, and
bounded retries of the transient ones.

prawcore paces requests by Reddit's rate-limit headers and retries 5xx twice itself (see
``client``); the retries here come on top, for 429s and for failures that outlast prawcore's.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any, Callable, ClassVar, TypeVar

import prawcore

from blift.collect.reddit.client import (
    RedditClientConfig,
    describe_endpoint,
    make_reddit,
)
from blift.errors import CredentialError, InvalidRecord, PermanentError, TransientError
from blift.retry import RetriesExhausted, backoff_delay, call_with_retries
from blift.stage import RecordStage, Stage

log = logging.getLogger(__name__)
T = TypeVar("T")

POST_ID = re.compile(r"^[0-9a-z]{1,13}$")  # a Reddit post id: base36

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

    def classified() -> T:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - classified below; anything else re-raised as is
            err = classify_praw_error(exc, what)
            if err is None:
                raise
            raise err from exc

    def wait(attempt: int, err: BaseException) -> float:
        delay = backoff_delay(attempt, cfg.backoff_s, float("inf"), jitter=False)
        cause = err.__cause__
        asked = _retry_after(cause) if isinstance(cause, prawcore.TooManyRequests) else None
        return min(max(delay, asked or 0.0), cfg.max_backoff_s)

    def told(attempt: int, err: BaseException, delay: float) -> None:
        log.warning("%s; retrying in %.1f s (attempt %d of %d)", err, delay, attempt + 1, cfg.retries + 1)

    try:
        return call_with_retries(classified, attempts=cfg.retries + 1, retry_on=lambda e: isinstance(e, TransientError),
                                 wait=wait, sleep=sleep, on_retry=told)
    except RetriesExhausted as gave_up:
        last = gave_up.last
        if gave_up.attempts > 1:
            assert isinstance(last, TransientError)
            raise TransientError(f"{last} (gave up after {gave_up.attempts} attempts)",
                                 error_type=last.error_type) from last.__cause__
        raise last from last.__cause__


class PrawStage(Stage):
    """What every praw stage shares, record-level or shard-level: one praw client per worker,
    built in setup(), and the credentials a cluster must forward to its workers."""

    Config: ClassVar[type[RedditClientConfig]] = RedditClientConfig
    forward_env: ClassVar[tuple[str, ...]] = ("REDDIT_",)  # credentials (see client.ENV_VARS)

    def setup(self) -> None:
        self.reddit = make_reddit(self.config)  # type: ignore[arg-type]

    def _client(self) -> Any:
        if getattr(self, "reddit", None) is None:
            self.setup()
        return self.reddit

    def describe(self) -> str:
        return f"{self.name} via praw at {describe_endpoint(self.config)}"  # type: ignore[arg-type]


class RedditStage(PrawStage, RecordStage):
    """A record-level praw stage (``reddit.list``, ``reddit.collect``)."""
