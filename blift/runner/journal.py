"""Per-shard record journal: what a record stage finished, so a crash loses nothing done.

Each finished record (success or classified failure) is appended as one length-prefixed pickle
frame and flushed before the next record starts. A ``kill -9`` can only cut the last frame,
which :meth:`Journal.load` ignores, so a rerun redoes at most the records that were in flight.
Pickle (not JSON) because rows hold tz-aware datetimes and bytes that must round-trip exactly.
The journal is private to one shard of one run and deleted once the shard's output is written.
"""

from __future__ import annotations

import os
import pickle
import struct
import threading
import zlib
from pathlib import Path
from typing import Any, BinaryIO

_HEADER = struct.Struct("<II")  # payload length, crc32


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._fh: BinaryIO | None = None

    def load(self) -> dict[str, dict[str, Any]]:
        """Entries by record key; a truncated or corrupt tail is dropped (and cut off the file)."""
        entries: dict[str, dict[str, Any]] = {}
        if not self.path.exists():
            return entries
        data = self.path.read_bytes()
        pos = good = 0
        while pos + _HEADER.size <= len(data):
            size, crc = _HEADER.unpack_from(data, pos)
            start, end = pos + _HEADER.size, pos + _HEADER.size + size
            if end > len(data) or zlib.crc32(data[start:end]) != crc:
                break
            entry = pickle.loads(data[start:end])
            entries[entry["key"]] = entry
            pos = good = end
        if good != len(data):
            with open(self.path, "r+b") as fh:
                fh.truncate(good)
        return entries

    def append(self, entry: dict[str, Any]) -> None:
        payload = pickle.dumps(entry, protocol=pickle.HIGHEST_PROTOCOL)
        frame = _HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        with self._lock:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(self.path, "ab")
            self._fh.write(frame)
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
