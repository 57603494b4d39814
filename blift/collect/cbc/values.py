"""Reading one value of a CBC row: structs, lists, counts, seconds, dates.

The published corpus is Parquet with fixed types (``likes``, ``views``, ``metadata.length`` and
``channel_data.subscribers`` are float64, ``metadata.date`` a string), but a copy may come as JSON
lines or CSV, where a number can be text and a struct JSON text: every value is read the same way
from either (numbers through :func:`blift.collect.table.mapping.parse_number`). What is wrong
with a value decides what happens to it:

* a value that cannot be what the column holds (text where a number goes, a list where a struct
  goes) raises :class:`~blift.errors.InvalidRecord` naming the row and the column, and the row
  becomes an ``errors`` row;
* a count that is missing (null, NaN), negative or not whole is a known kind of gap in scraped
  numbers: missing and negative become null, a fraction is rounded, each counted
  (``missing:<column>``, ``negative:<column>``, ``rounded:<column>``), and the caller keeps the
  original in ``raw``;
* a date in a form not recognised becomes null, counted (``unparsed:<column>``): the published
  format is not documented, and a whole corpus of error rows over a date format would be worse.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from datetime import date, datetime, timezone
from typing import Any

import orjson

from blift.collect.table.mapping import parse_number, parse_text, parse_time
from blift.errors import InvalidRecord

#: Date forms tried in order, after ISO 8601 (2023-05-01, 2023-05-01T10:00:00Z).
DAY_FORMATS = ("%Y%m%d", "%Y/%m/%d", "%b %d, %Y", "%B %d, %Y", "%d %b %Y", "%d %B %Y")
_EIGHT_DIGITS = re.compile(r"\d{8}")
_EPOCH = re.compile(r"\d{9,13}")  # epoch seconds (1973 on) or milliseconds; fewer digits are no time


def bad(where: str, column: str, what: str, error_type: str = "bad_struct") -> InvalidRecord:
    return InvalidRecord(f"{where}: column {column!r}: {what}", error_type=error_type)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _json_text(value: str, where: str, column: str, what: str) -> Any:
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise bad(where, column, f"expected {what}, got text that is not JSON ({exc})") from None


def struct(value: Any, where: str, column: str) -> dict[str, Any]:
    """A struct (a dict, or JSON text of one); missing is an empty struct."""
    if _missing(value):
        return {}
    if isinstance(value, str):
        value = _json_text(value, where, column, "a struct")
    if not isinstance(value, dict):
        raise bad(where, column, f"expected a struct, got {type(value).__name__} {value!r:.60}")
    return value


def listing(value: Any, where: str, column: str) -> list[Any]:
    """A list (a list or tuple, or JSON text of one); missing is an empty list."""
    if _missing(value):
        return []
    if isinstance(value, str):
        value = _json_text(value, where, column, "a list")
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list):
        raise bad(where, column, f"expected a list, got {type(value).__name__} {value!r:.60}")
    return value


def records(value: Any, where: str, column: str) -> list[dict[str, Any]]:
    """A list of structs. Also takes the columnar form older ``datasets`` releases gave a list of
    structs in (one dict of equal-length lists); a non-struct entry is an error naming its index."""
    if isinstance(value, dict) and value and all(isinstance(v, list) for v in value.values()):
        lengths = {len(v) for v in value.values()}
        if len(lengths) == 1:
            keys = list(value)
            value = [dict(zip(keys, entry)) for entry in zip(*value.values())]
    entries = listing(value, where, column)
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise bad(where, f"{column}[{i}]", f"expected a struct, got {type(entry).__name__} {entry!r:.60}")
    return entries


def strings(value: Any, where: str, column: str) -> list[str]:
    """A list of text entries (one text is a list of one); null entries are left out."""
    if isinstance(value, str) and not value.lstrip().startswith("["):
        return [value]
    out = []
    for i, entry in enumerate(listing(value, where, column)):
        if _missing(entry):
            continue
        if not isinstance(entry, str):
            raise bad(where, f"{column}[{i}]", f"expected text, got {type(entry).__name__} {entry!r:.60}")
        out.append(entry)
    return out


def text(value: Any, where: str, column: str) -> str | None:
    return parse_text(value, where, column)


def number(value: Any, where: str, column: str) -> float | None:
    """A finite number, or None when missing (null, NaN); text that is no number, and infinity,
    are errors naming the column."""
    found = parse_number(value, where, column)
    return None if found is None else float(found)


def count(value: Any, where: str, column: str, counts: Counter[str]) -> int | None:
    """A whole, non-negative count; missing or negative is None and a fraction is rounded, each
    counted under its column."""
    found = parse_number(value, where, column)
    if found is None:
        counts[f"missing:{column}"] += 1
        return None
    if found < 0:
        counts[f"negative:{column}"] += 1
        return None
    if isinstance(found, float) and not found.is_integer():
        counts[f"rounded:{column}"] += 1
        found = round(found)
    whole = int(found)
    if whole >= 2**63:
        raise bad(where, column, f"{found!r} does not fit a 64-bit count", "bad_number")
    return whole


def seconds(value: Any, where: str, column: str, counts: Counter[str]) -> float | None:
    """A non-negative duration in seconds; missing or negative is None, counted."""
    found = number(value, where, column)
    if found is None:
        counts[f"missing:{column}"] += 1
        return None
    if found < 0:
        counts[f"negative:{column}"] += 1
        return None
    return found


def day(value: Any, where: str, column: str, counts: Counter[str]) -> datetime | None:
    """An aware UTC time from ISO 8601 text (a day or a timestamp), ``YYYYMMDD`` (text or a
    number), a few written forms (``May 1, 2023``), a date or datetime, or epoch seconds; a form
    not recognised is None, counted as ``unparsed:<column>``; missing is None."""
    if _missing(value) or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, (datetime, date)):
        return parse_time(value, where, column)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(int(value)) if float(value).is_integer() else str(value)
    if isinstance(value, str):
        cleaned = value.strip()
        if not _EIGHT_DIGITS.fullmatch(cleaned):
            try:
                when = datetime.fromisoformat(cleaned)
            except ValueError:
                pass
            else:
                return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)
        for fmt in DAY_FORMATS:
            try:
                return datetime.strptime(cleaned, fmt).replace(tzinfo=timezone.utc)
            except ValueError:
                continue
        if _EPOCH.fullmatch(cleaned):
            return parse_time(int(cleaned), where, column)  # epoch seconds or ms
    counts[f"unparsed:{column}"] += 1
    return None
