"""A dump file as blocks of whole lines: the reading half of ``reddit.dumps``, apart so that the
stage's parent process (which reads) and the parse workers (which split the blocks into lines)
share one definition of where a line ends and which lines are too long.

Files are decompressed as a stream (``max_window_size=2**31``: Pushshift wrote with
``--long=31``) in ``_READ_CHUNK`` pieces and cut at line ends; the parent never splits lines.
``tests/test_dumps.py`` checks :func:`read_blocks` + :func:`lines_of` against a plain
line-by-line reader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import zstandard

_READ_CHUNK = 1 << 20


def read_blocks(path: Path, batch_rows: int, max_line_bytes: int) -> Iterator[tuple[int, int, list[bytes | None]]]:
    """(first line number, line count, pieces) batches of lines (tests check them against a plain
    line-by-line reader).

    A piece is a run of whole lines joined by ``\\n`` (a slice of the decompressed stream, never
    split into line objects here) or None for one line over ``max_line_bytes`` that spanned
    chunks (its bytes skipped, never held). The parse workers split the pieces
    (:func:`lines_of`): the parent, which also decompresses and writes every row, stays light,
    and a batch crosses the process boundary as a few large buffers. A batch is whole chunks, so
    it holds at least ``batch_rows`` lines (the last one fewer).
    """
    with open(path, "rb") as raw:
        if path.suffix == ".zst":
            stream: Any = zstandard.ZstdDecompressor(max_window_size=2**31).stream_reader(raw, read_size=_READ_CHUNK)
        else:
            stream = raw
        pieces: list[bytes | None] = []
        count, first, line_no = 0, 1, 0
        tail = b""
        skipping = False  # inside an over-long line
        while True:
            chunk = stream.read(_READ_CHUNK)
            if not chunk:
                break
            cut = chunk.rfind(b"\n")
            if cut < 0:  # no line ends in this chunk
                if not skipping:
                    tail += chunk
                    if len(tail) > max_line_bytes:
                        skipping, tail = True, b""
                continue
            if skipping:  # the first line ending here is the over-long one
                pieces.append(None)
                n = 1
                start = chunk.find(b"\n") + 1
                if start <= cut:
                    block = chunk[start:cut]
                    pieces.append(block)
                    n += _newlines(block) + 1
                skipping = False
            else:
                block = tail + chunk[:cut] if tail else chunk[:cut]
                pieces.append(block)
                n = _newlines(block) + 1
            tail = chunk[cut + 1:]
            if len(tail) > max_line_bytes:
                skipping, tail = True, b""
            count += n
            line_no += n
            if count >= batch_rows:
                yield first, count, pieces
                pieces, count, first = [], 0, line_no + 1
        if tail or skipping:
            pieces.append(None if skipping else tail)
            count += 1
        if count:
            yield first, count, pieces


def _newlines(data: bytes) -> int:
    """``data.count(b"\\n")``, 4x faster (bytes.count scans a byte at a time)."""
    return int(np.count_nonzero(np.frombuffer(data, dtype=np.uint8) == 10))


def lines_of(pieces: list[bytes | None], max_line_bytes: int) -> list[bytes | None]:
    """The lines of :func:`read_blocks` pieces (None: a line over ``max_line_bytes``)."""
    lines: list[bytes | None] = []
    for piece in pieces:
        if piece is None:
            lines.append(None)
            continue
        parts = piece.split(b"\n")
        if len(piece) > max_line_bytes:  # some line may be over the limit: check each
            lines.extend(part if len(part) <= max_line_bytes else None for part in parts)
        else:
            lines.extend(parts)
    return lines
