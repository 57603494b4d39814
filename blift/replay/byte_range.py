"""HTTP byte ranges as a CDN answers them, for every loopback server that serves files.

yt-dlp's downloader, ``huggingface_hub`` and resumable downloads ask for ranges (``bytes=0-``,
``bytes=1000-``, ``bytes=-500``) and check ``Content-Range`` on a 206, so a server that always
answers 200 with the whole body would not exercise what they do in production.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SINGLE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$")


@dataclass(frozen=True)
class ByteRange:
    """How to answer one request for a body of ``total`` bytes: ``status`` 200 (whole body),
    206 (``body[start:end + 1]``) or 416 (the range starts past the end)."""

    status: int
    start: int
    end: int  # inclusive
    total: int

    def headers(self) -> dict[str, str]:
        """``Accept-Ranges`` always; ``Content-Range`` on a 206 or 416."""
        out = {"Accept-Ranges": "bytes"}
        if self.status == 206:
            out["Content-Range"] = f"bytes {self.start}-{self.end}/{self.total}"
        elif self.status == 416:
            out["Content-Range"] = f"bytes */{self.total}"
        return out

    def slice(self, data: bytes) -> bytes:
        if self.status == 416:
            return b""
        return data[self.start:self.end + 1]


def byte_range(header: str | None, total: int) -> ByteRange:
    """The answer to a ``Range`` header for a ``total``-byte body. One range (``a-b``, ``a-``, or
    the suffix ``-n``) is honoured; no header, a malformed one, several ranges, or an empty body
    get the whole body (200), as most CDNs do."""
    whole = ByteRange(200, 0, total - 1, total)
    match = _SINGLE.match(header or "")
    if not match or total == 0:
        return whole
    first, last = match.groups()
    if first:
        start = int(first)
        end = min(int(last), total - 1) if last else total - 1
    elif last:
        start, end = max(0, total - int(last)), total - 1
    else:
        return whole
    if start >= total or start > end:
        return ByteRange(416, 0, -1, total)
    return ByteRange(206, start, end, total)
