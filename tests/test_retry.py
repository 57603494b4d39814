"""blift.retry: the one retry loop every network client uses."""

from __future__ import annotations

import random

import pytest

from blift.retry import RetriesExhausted, backoff_delay, call_with_retries


class Flaky(Exception):
    pass


def test_retries_until_success_and_reports_the_attempt():
    calls, slept, told = [], [], []

    def fn() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise Flaky(f"try {len(calls)}")
        return "ok"

    result, attempt = call_with_retries(fn, attempts=5, retry_on=lambda e: isinstance(e, Flaky),
                                        wait=lambda n, e: n * 10.0, sleep=slept.append,
                                        on_retry=lambda n, e, d: told.append((n, str(e), d)))
    assert (result, attempt) == ("ok", 3)
    assert slept == [10.0, 20.0]
    assert told == [(1, "try 1", 10.0), (2, "try 2", 20.0)]


def test_gives_up_with_the_last_error_and_the_count():
    slept: list[float] = []
    with pytest.raises(RetriesExhausted) as info:
        call_with_retries(lambda: (_ for _ in ()).throw(Flaky("down")), attempts=3,
                          retry_on=lambda e: isinstance(e, Flaky), wait=lambda n, e: 0.5, sleep=slept.append)
    assert info.value.attempts == 3 and isinstance(info.value.last, Flaky) and str(info.value.last) == "down"
    assert "gave up after 3 attempts" in str(info.value)
    assert slept == [0.5, 0.5]


def test_other_errors_pass_through_at_once_and_before_retry_runs_between_attempts():
    calls, refreshed = [], []

    def fn() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise Flaky("first")
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        call_with_retries(fn, attempts=5, retry_on=lambda e: isinstance(e, Flaky), wait=lambda n, e: 0,
                          sleep=lambda s: None, before_retry=lambda: refreshed.append(len(calls)))
    assert len(calls) == 2 and refreshed == [1]


def test_backoff_doubles_jitters_and_is_capped():
    assert [backoff_delay(n, 1.0, 100.0, jitter=False) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert backoff_delay(10, 1.0, 30.0, jitter=False) == 30.0
    rng = random.Random(7)
    values = [backoff_delay(3, 1.0, 100.0, rng=rng) for _ in range(200)]
    assert 2.0 <= min(values) and max(values) < 6.0 and len(set(values)) > 100
