"""Retries with backoff, one way for every network client (praw calls, media fetches, Hub pushes).

Built on tenacity; each client says only what is worth retrying and how long to wait, so the
loop itself (counting, sleeping, giving up with the last error and the number of attempts) is
written once. ``Retry-After`` handling stays with the client: it knows where its server puts it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
)

T = TypeVar("T")


class RetriesExhausted(Exception):
    """Every attempt failed with a retryable error: ``last`` is the final one."""

    def __init__(self, last: BaseException, attempts: int) -> None:
        super().__init__(f"{last} (gave up after {attempts} attempt{'s' if attempts != 1 else ''})")
        self.last = last
        self.attempts = attempts


def backoff_delay(attempt: int, base_s: float, cap_s: float, *, jitter: bool = True,
                  rng: random.Random | None = None) -> float:
    """Exponential backoff for retry number ``attempt`` (1-based): ``base * 2^(n-1)``, times a
    random factor in [0.5, 1.5) with ``jitter`` (so clients that failed together do not retry
    together), capped at ``cap_s``."""
    delay = base_s * (2 ** (attempt - 1))
    if jitter:
        delay *= 0.5 + (rng or random).random()
    return min(cap_s, delay)


def call_with_retries(
    fn: Callable[[], T],
    *,
    attempts: int,
    retry_on: Callable[[BaseException], bool],
    wait: Callable[[int, BaseException], float],
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
    before_retry: Callable[[], None] | None = None,
) -> tuple[T, int]:
    """Call ``fn`` up to ``attempts`` times; returns (its result, the attempt that gave it).

    An exception ``retry_on`` accepts is retried after ``wait(attempt, exc)`` seconds
    (``on_retry(attempt, exc, delay)`` is told first, ``before_retry()`` runs before the next
    call); any other exception propagates at once, untouched. When the last attempt fails too,
    :class:`RetriesExhausted` is raised from the last error.
    """

    def _wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        return max(0.0, float(wait(state.attempt_number, exc))) if exc is not None else 0.0

    def _told(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if on_retry is not None and exc is not None:
            on_retry(state.attempt_number, exc, state.next_action.sleep if state.next_action else 0.0)

    retrying = Retrying(stop=stop_after_attempt(max(1, attempts)), retry=retry_if_exception(retry_on), wait=_wait,
                        sleep=sleep, before_sleep=_told, reraise=False)
    try:
        for attempt in retrying:
            with attempt:
                number = attempt.retry_state.attempt_number
                if number > 1 and before_retry is not None:
                    before_retry()
                result = fn()
            if not attempt.retry_state.outcome or not attempt.retry_state.outcome.failed:
                return result, number
    except RetryError as gave_up:
        last = gave_up.last_attempt.exception()
        assert last is not None
        raise RetriesExhausted(last, gave_up.last_attempt.attempt_number) from last
    raise AssertionError("unreachable: tenacity stops with a result or an error")  # pragma: no cover
