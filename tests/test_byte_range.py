"""blift.replay.byte_range: how every loopback file server answers a Range header."""

from __future__ import annotations

from blift.replay.byte_range import byte_range

DATA = bytes(range(100))


def answer(header: str | None) -> tuple[int, bytes, dict[str, str]]:
    r = byte_range(header, len(DATA))
    return r.status, r.slice(DATA), r.headers()


def test_whole_body_without_a_usable_range():
    for header in (None, "", "items=0-5", "bytes=0-5,10-20", "bytes=x-y", "bytes=-"):
        status, body, headers = answer(header)
        assert (status, body, headers) == (200, DATA, {"Accept-Ranges": "bytes"}), header


def test_single_ranges_as_a_cdn_answers_them():
    assert answer("bytes=0-9") == (206, DATA[:10], {"Accept-Ranges": "bytes", "Content-Range": "bytes 0-9/100"})
    assert answer("bytes=90-") == (206, DATA[90:], {"Accept-Ranges": "bytes", "Content-Range": "bytes 90-99/100"})
    assert answer("bytes=95-500")[1] == DATA[95:]  # an end past the body is cut to it
    assert answer("bytes=-5") == (206, DATA[-5:], {"Accept-Ranges": "bytes", "Content-Range": "bytes 95-99/100"})
    assert answer("bytes=-500")[1] == DATA  # a suffix longer than the body is the body


def test_a_range_past_the_end_is_416():
    assert answer("bytes=100-") == (416, b"", {"Accept-Ranges": "bytes", "Content-Range": "bytes */100"})
    assert answer("bytes=50-10")[0] == 416
    assert byte_range("bytes=0-", 0).status == 200  # an empty body has no range to refuse
