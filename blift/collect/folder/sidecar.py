"""The optional sidecar table of a ``folder.scan`` request: one row per file, joined by name.

A CSV (``.csv``, ``.tsv``), JSON-lines (``.jsonl``, ``.ndjson``) or Parquet file whose rows name
the folder's files, by file name (``join: file_name``, the default: every file of that name, at
any depth) or by path relative to the folder (``join: relative_path``), and give them what a
platform would: a title, a text, a date, a community, an author (stored only as a salted hash)
and behavior counts. ``sidecar_columns`` maps these fields to the sidecar's column names; a
field whose own name (or its ``items`` column's name) is a sidecar column is mapped without
saying so (but ``comments``, often a column of texts: a ``num_comments`` column is mapped, a
``comments`` one only when named). The join column is ``file`` in the mapping (default: a
column named like the join).

This is deliberately small. Once the generic table source (``table.read``) lands, the sidecar
takes its full column mapping (comments, named behavior values with their meaning).
"""

from __future__ import annotations

import csv
from datetime import date, datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

import orjson

from blift.errors import InvalidRecord
from blift.ids import author_hash

#: sidecar field -> the items column it fills
FIELDS: dict[str, str] = {
    "title": "title",
    "text": "text",
    "created_at": "created_at",
    "community": "community",
    "author": "author_hash",
    "likes": "like_count",
    "views": "view_count",
    "score": "score",
    "comments": "num_comments",
}
COUNTS = ("likes", "views", "score", "comments")
AMBIGUOUS = frozenset({"comments"})  # a "comments" column often holds texts: mapped only when named
KEY = "file"  # the mapping entry naming the join column
JOINS = ("file_name", "relative_path")
FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}


class SidecarError(ValueError):
    """A sidecar that cannot be used as configured (the stage turns it into a ConfigError naming
    ``field``, the request key to fix)."""

    def __init__(self, message: str, field: str = "sidecar") -> None:
        super().__init__(message)
        self.field = field


def sidecar_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise SidecarError(f"{path.name}: unknown sidecar format; use one of {', '.join(sorted(FORMATS))}")
    return fmt


def _text_rows(path: Path, delimiter: str) -> tuple[list[str], list[dict[str, Any]]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        rows = [dict(row) for row in reader]
        return list(reader.fieldnames or []), rows


def read_table(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """(column names, rows) of a sidecar file."""
    fmt = sidecar_format(path)
    try:
        if fmt in ("csv", "tsv"):
            return _text_rows(path, "," if fmt == "csv" else "\t")
        if fmt == "parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            return list(table.column_names), table.to_pylist()
        columns: dict[str, None] = {}
        rows = []
        for n, line in enumerate(path.read_bytes().splitlines(), 1):
            if not line.strip():
                continue
            row = orjson.loads(line)
            if not isinstance(row, dict):
                raise SidecarError(f"{path.name}: line {n} is not a JSON object")
            columns.update(dict.fromkeys(row))
            rows.append(row)
        return list(columns), rows
    except SidecarError:
        raise
    except (OSError, ValueError, UnicodeDecodeError, csv.Error) as exc:  # orjson's errors are ValueErrors
        raise SidecarError(f"{path.name}: cannot read the sidecar ({type(exc).__name__}: {exc})") from None
    except Exception as exc:  # noqa: BLE001 - pyarrow's own errors (a file that is not Parquet)
        raise SidecarError(f"{path.name}: cannot read the sidecar ({type(exc).__name__}: {exc})") from None


def read_columns(path: Path) -> list[str]:
    """A sidecar's column names (CSV: the header line; Parquet: the schema; JSONL: every row's keys)."""
    fmt = sidecar_format(path)
    try:
        if fmt in ("csv", "tsv"):
            with open(path, newline="", encoding="utf-8-sig") as fh:
                return next(csv.reader(fh, delimiter="," if fmt == "csv" else "\t"), [])
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
    except (OSError, ValueError, UnicodeDecodeError, csv.Error) as exc:
        raise SidecarError(f"{path.name}: cannot read the sidecar ({type(exc).__name__}: {exc})") from None
    except Exception as exc:  # noqa: BLE001 - pyarrow's own errors (a file that is not Parquet)
        raise SidecarError(f"{path.name}: cannot read the sidecar ({type(exc).__name__}: {exc})") from None
    return read_table(path)[0]


def mapping(columns: list[str], join: str, given: dict[str, Any] | None, where: str) -> dict[str, str]:
    """Field -> sidecar column (the join column under ``file``). Unknown fields, and columns the
    sidecar lacks, raise one SidecarError listing the sidecar's columns."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(FIELDS) - {KEY})
    if unknown:
        raise SidecarError(f"{where}: unknown field(s) {unknown}; known: {', '.join([KEY, *FIELDS])}",
                           "sidecar_columns")
    bad_values = sorted(k for k, v in given.items() if not isinstance(v, str) or not v)
    if bad_values:
        raise SidecarError(f"{where}: field(s) {bad_values}: expected a sidecar column name", "sidecar_columns")
    out: dict[str, str] = {}
    for name, column in FIELDS.items():
        if name in columns and name not in AMBIGUOUS:
            out[name] = name
        elif column in columns:
            out[name] = column
    out[KEY] = join
    out.update(given)
    missing = sorted({c for c in out.values() if c not in columns})
    if missing:
        hint = (f" (the column holding each file's {join.replace('_', ' ')}: name it with "
                f"sidecar_columns: {{{KEY}: <column>}})" if out[KEY] in missing else "")
        raise SidecarError(f"{where}: column(s) {missing} not in the sidecar{hint}; "
                           f"its columns: {', '.join(columns) or '(none)'}", "sidecar_columns")
    return out


def join_key(value: Any, join: str) -> str | None:
    """The normalised join value of a sidecar cell (None for an empty one)."""
    if value is None:
        return None
    text = str(value).strip().replace("\\", "/")
    if not text:
        return None
    path = PurePosixPath(text)
    if join == "file_name":
        return path.name
    return str(path).removeprefix("./")


def file_key(rel: str, join: str) -> str:
    return rel.rpartition("/")[2] if join == "file_name" else rel


def _count(value: Any, where: str) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise InvalidRecord(f"{where}: expected a count, got {value!r}")
    try:
        number = float(value.strip().replace("_", "") if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise InvalidRecord(f"{where}: expected a count, got {value!r:.60}") from None
    if number != number or number in (float("inf"), float("-inf")) or number != int(number):
        raise InvalidRecord(f"{where}: expected a whole number, got {value!r:.60}")
    return int(number)


def parse_time(value: Any, where: str) -> datetime | None:
    """A sidecar date: ISO 8601 text (a date alone is midnight UTC; no zone means UTC), Unix
    seconds, or a timestamp / date cell of a Parquet sidecar."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return datetime.fromtimestamp(float(value), tz=timezone.utc)
        text = str(value).strip()
        if text.lstrip("-").replace(".", "", 1).isdigit():
            return datetime.fromtimestamp(float(text), tz=timezone.utc)
        parsed = datetime.fromisoformat(text)
    except (ValueError, OverflowError, OSError):
        raise InvalidRecord(f"{where}: expected an ISO 8601 date or Unix seconds, got {value!r:.60}") from None
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def item_fields(row: dict[str, Any], columns: dict[str, str], where: str) -> dict[str, Any]:
    """The ``items`` columns one sidecar row gives (the author as a salted hash, never raw); a
    value of the wrong type raises InvalidRecord naming ``where`` and the sidecar column."""
    out: dict[str, Any] = {}
    for name, column in columns.items():
        if name == KEY:
            continue
        value, at = row.get(column), f"{where}: sidecar column {column!r}"
        if name in COUNTS:
            out[FIELDS[name]] = _count(value, at)
        elif name == "created_at":
            out["created_at"] = parse_time(value, at)
        elif name == "author":
            name_text = _text(value)
            out["author_hash"] = author_hash(name_text) if name_text is not None else None
        else:
            out[FIELDS[name]] = _text(value)
    return out
