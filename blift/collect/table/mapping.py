"""The column mapping: one table row (a dict) to an ``items`` row, its ``comments`` and its
``behavior`` rows.

Independent of how the row was read (a CSV gives strings, JSON lines and Parquet give typed
values, a Hub dataset gives whatever its features say), so every value is parsed the same way
from either: ``"12"`` and ``12`` are the same like count, ``"2024-05-01T10:00:00Z"``,
``1714557600`` (epoch seconds), ``1714557600000`` (epoch milliseconds) and a timestamp are the
same time. ``table.read`` uses it for the tables it streams; a media-folder source uses it for
the sidecar tables next to the files.

What a row becomes
  * ``uid`` is ``<platform>:<id>``; a missing id is an error, never a made-up one.
  * Every mapped value is checked (a number that is not one, a ratio outside 0..1, a score
    outside its scale, an unreadable comments list, a time that is none): :func:`map_row` raises
    :class:`~blift.errors.InvalidRecord` naming the row and the column, and the caller writes an
    ``errors`` row instead of the item. A half-mapped item would be worse than none: its
    behavior would silently lack the value that was bad.
  * The author is kept only as :func:`blift.ids.author_hash`; the name is neither a column nor in
    ``raw``.
  * Every column the mapping does not use goes into ``raw`` (:func:`blift.ids.pack_raw`, which
    also hashes author-like keys), so nothing of the table is lost.
  * Media references are returned as they are, with the column they came from: whether they are
    URLs, allowed local files, images or videos is the caller's business
    (:mod:`blift.collect.table.media`), because it needs the file system and the run folder.

Behavior values
  Each named behavior is a row of the ``behavior`` table with its kind (``count``, ``ratio``
  0..1, or ``score`` on a declared scale), so a template can phrase any of them. ``to:`` also
  writes the value into the typed ``items`` column of that name (``like_count``,
  ``upvote_ratio``...), which today's templates and release plots read.
"""

from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal
from functools import cached_property
from typing import Any, Literal

import orjson
from pydantic import Field, field_validator, model_validator

from blift.errors import ConfigError, InvalidRecord
from blift.ids import author_hash, author_kind, author_salt, pack_raw
from blift.stage import StageConfig

#: ``items`` columns a behavior may also fill (``to:``), and the kinds each accepts.
TYPED_COLUMNS: dict[str, tuple[str, ...]] = {
    "score": ("count",), "upvote_ratio": ("ratio",), "num_comments": ("count",),
    "view_count": ("count",), "like_count": ("count",), "comment_count": ("count",),
    "subscriber_count": ("count",),
}
_INT_COLUMNS = frozenset(TYPED_COLUMNS) - {"upvote_ratio"}
_INT64 = (-(2**63), 2**63 - 1)
# Epoch values at or above this are milliseconds: 1e11 seconds is the year 5138, 1e11 ms is 1973.
_MS_FROM = 1e11
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INTEGER = re.compile(r"[+-]?\d+")
_COMMENT_KEYS = ("text", "score", "like_count", "created_at", "author", "id", "parent_id")
#: The raw key a source may add for where the row came from (a Hub dataset's revision).
SOURCE_KEY = "_source"


# --------------------------------------------------------------------------------------- config


class BehaviorColumn(StageConfig):
    """One named behavior value read from a column."""

    column: str = Field(min_length=1, description="the table column holding the value")
    kind: Literal["count", "ratio", "score"] = Field(
        description="count: a number of people or events; ratio: a share in 0..1; score: a value on `scale`")
    scale: tuple[float, float] | None = Field(
        None, description="for a score: [low, high] of its scale (values outside it are errors)")
    to: Literal["score", "upvote_ratio", "num_comments", "view_count", "like_count", "comment_count",
                "subscriber_count"] | None = Field(
        None, description="also write the value into this typed items column, which templates and plots read")

    @model_validator(mode="after")
    def _consistent(self) -> BehaviorColumn:
        if self.kind == "score":
            if self.scale is None:
                raise ValueError("a score needs its scale: [low, high]")
            if not (math.isfinite(self.scale[0]) and math.isfinite(self.scale[1]) and self.scale[0] < self.scale[1]):
                raise ValueError(f"scale {list(self.scale)}: expected finite [low, high] with low < high")
        elif self.scale is not None:
            raise ValueError(f"scale is for kind score only (this one is {self.kind})")
        if self.to is not None and self.kind not in TYPED_COLUMNS[self.to]:
            raise ValueError(f"to: {self.to} takes a {' or '.join(TYPED_COLUMNS[self.to])}, not a {self.kind}")
        return self


class ColumnMap(StageConfig):
    """Which table column holds each blift field (``id`` is the only one required)."""

    id: str = Field(min_length=1, description="the row's id, unique in the table (uid: <platform>:<id>)")
    id_pattern: str | None = Field(
        None, description="a regular expression whose first group takes the id out of the id column, e.g. "
                          "'/comments/([a-z0-9]+)' on a Reddit permalink (BLIFT on the Hub has no id column)")
    media: str | list[str] | None = Field(
        None, description="column(s) holding an http(s) URL, a local path, or a list of them")
    media_kind: Literal["auto", "image", "video"] = Field(
        "auto", description="auto: a local file's bytes, a URL's extension decide (unknown extensions: image)")
    title: str | None = Field(None, description="title column")
    text: str | None = Field(None, description="body text or description column")
    community: str | None = Field(None, description="where it was posted (subreddit, channel, board...)")
    created_at: str | None = Field(None, description="posting time: ISO text, epoch seconds or ms, or a timestamp")
    author: str | None = Field(None, description="author name or id; stored only as a salted hash")
    url: str | None = Field(None, description="the post's own page (items.permalink)")
    comments: str | None = Field(
        None, description="a list of strings, or of {text, score, like_count, created_at, author, id, parent_id}")

    @field_validator("id_pattern")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            compiled = re.compile(value)
        except re.error as exc:
            raise ValueError(f"id_pattern {value!r} is not a regular expression ({exc})") from None
        if compiled.groups < 1:
            raise ValueError(f"id_pattern {value!r} needs a group, e.g. '/comments/([a-z0-9]+)'")
        return value

    @field_validator("media")
    @classmethod
    def _media(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and (not value or not all(value)):
            raise ValueError("media: give a column name or a non-empty list of column names")
        if isinstance(value, str) and not value:
            raise ValueError("media: empty column name")
        return value

    @field_validator("title", "text", "community", "created_at", "author", "url", "comments")
    @classmethod
    def _named(cls, value: str | None) -> str | None:
        if value is not None and not value:
            raise ValueError("empty column name")
        return value

    def media_columns(self) -> list[str]:
        if self.media is None:
            return []
        return [self.media] if isinstance(self.media, str) else list(self.media)


def check_behavior_names(behavior: dict[str, BehaviorColumn]) -> dict[str, BehaviorColumn]:
    """Behavior names are identifiers (templates name them); two may not fill one items column."""
    for name in behavior:
        if not _NAME.fullmatch(name):
            raise ValueError(f"behavior name {name!r}: use letters, digits and '_' (not first a digit)")
    targets = [b.to for b in behavior.values() if b.to]
    doubled = sorted({t for t in targets if targets.count(t) > 1})
    if doubled:
        raise ValueError(f"behavior: more than one value fills items column(s) {doubled}")
    return behavior


@dataclass(frozen=True)
class TableMapping:
    """A complete mapping: the platform (uid prefix), the columns, the named behavior values,
    and the column holding the snapshot time (None: the caller's fixed time)."""

    platform: str
    columns: ColumnMap
    behavior: dict[str, BehaviorColumn] = field(default_factory=dict)
    collected_at_column: str | None = None
    source: str = "table"

    @cached_property
    def _named(self) -> dict[str, str]:
        out: dict[str, str] = {}
        c = self.columns
        for fld in ("id", "title", "text", "community", "created_at", "author", "url", "comments"):
            col = getattr(c, fld)
            if col is not None:
                out.setdefault(col, f"columns.{fld}")
        for col in c.media_columns():
            out.setdefault(col, "columns.media")
        for name, b in self.behavior.items():
            out.setdefault(b.column, f"behavior.{name}")
        if self.collected_at_column:
            out.setdefault(self.collected_at_column, "collected_at")
        return out

    def named_columns(self) -> dict[str, str]:
        """Every column the mapping reads, with the field that reads it (for messages)."""
        return self._named

    def check_columns(self, available: list[str] | set[str], where: str) -> None:
        """ConfigError (once per input) when the mapping names columns the input lacks."""
        have = set(available)
        missing = {col: fld for col, fld in self.named_columns().items() if col not in have}
        if missing:
            named = ", ".join(f"{col!r} ({fld})" for col, fld in missing.items())
            raise ConfigError(f"{where}: the config names column(s) the input does not have: {named}; "
                              f"the input's columns are {sorted(have)}")


@dataclass(frozen=True)
class MapContext:
    """What a row's mapping needs beyond the row: the snapshot time used when the mapping names no
    column for it, the author salt, and keys to add to ``raw`` (where the row came from)."""

    collected_at: datetime
    salt: str = field(default_factory=author_salt)
    raw_extra: dict[str, Any] | None = None


@dataclass(frozen=True)
class MediaRef:
    """A media reference as the table gave it: the column and the text (URL or path)."""

    column: str
    value: str


@dataclass
class MappedRow:
    """One row, mapped: the ``items`` row (``media_kind``/``media_urls`` left for the media
    step), its media references, ``comments`` and ``behavior`` rows."""

    uid: str
    item: dict[str, Any]
    media: list[MediaRef]
    comments: list[dict[str, Any]]
    behavior: list[dict[str, Any]]


# --------------------------------------------------------------------------------------- values


def _bad(where: str, column: str, what: str, error_type: str) -> InvalidRecord:
    return InvalidRecord(f"{where}: column {column!r}: {what}", error_type=error_type)


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, float) and value != value  # NaN


def parse_number(value: Any, where: str, column: str) -> int | float | None:
    """An int or float from a number or numeric text; missing (None, "", NaN) is None."""
    if _missing(value):
        return None
    if isinstance(value, bool):
        raise _bad(where, column, f"expected a number, got {value!r}", "bad_number")
    if isinstance(value, Decimal):
        value = float(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _bad(where, column, f"expected a finite number, got {value!r}", "bad_number")
        return value
    if isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            if _INTEGER.fullmatch(text):
                return int(text)
            number = float(text)
            if math.isfinite(number):
                return number
        elif text.lower() == "nan":
            return None
    raise _bad(where, column, f"expected a number, got {value!r:.60}", "bad_number")


def parse_time(value: Any, where: str, column: str) -> datetime | None:
    """An aware UTC datetime from a timestamp, a date, epoch seconds or milliseconds (numbers or
    numeric text), or ISO 8601 text; missing is None. A naive time is taken as UTC."""
    if _missing(value):
        return None
    try:
        if isinstance(value, datetime):
            return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
        if isinstance(value, date):
            return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
        if isinstance(value, str) and not _NUMBER.fullmatch(value.strip()):
            when = datetime.fromisoformat(value.strip())
            return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)
        number = parse_number(value, where, column)
        if number is None:
            return None
        seconds = number / 1000 if abs(number) >= _MS_FROM else number
        return datetime.fromtimestamp(seconds, tz=timezone.utc)
    except InvalidRecord:
        raise _bad(where, column, f"expected a time (ISO text, epoch seconds or ms), got {value!r:.60}",
                   "bad_time") from None
    except (ValueError, OverflowError, OSError):
        raise _bad(where, column, f"expected a time (ISO text, epoch seconds or ms), got {value!r:.60}",
                   "bad_time") from None


def parse_text(value: Any, where: str, column: str) -> str | None:
    """Text from text or a number; missing (None, "", NaN) is None, as an empty CSV cell is;
    anything else (a list, a struct) is an error."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        return str(value)
    raise _bad(where, column, f"expected text, got {type(value).__name__} {value!r:.60}", "bad_text")


def parse_id(value: Any, where: str, column: str) -> str:
    """The row's id as text (a whole float such as 12.0, which a table with gaps turns ints
    into, is "12"); a missing id is an error."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = parse_text(value, where, column)
    if text is None or not text.strip():
        raise _bad(where, column, "missing id", "missing_id")
    return text.strip()


def _whole(number: int | float, where: str, column: str) -> int:
    if isinstance(number, float):
        if not number.is_integer():
            raise _bad(where, column, f"expected a whole number, got {number!r}", "bad_number")
        number = int(number)
    if not _INT64[0] <= number <= _INT64[1]:
        raise _bad(where, column, f"{number} does not fit a 64-bit integer", "bad_number")
    return number


def _list_value(value: Any, where: str, column: str, what: str, error_type: str) -> list[Any]:
    """A list from a list, or from JSON text holding one (a CSV cell); missing is []."""
    if _missing(value):
        return []
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise _bad(where, column, f"unreadable {what}: not a JSON list ({exc})", error_type) from None
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list):
        raise _bad(where, column, f"unreadable {what}: expected a list, got {type(value).__name__}", error_type)
    return value


def media_refs(value: Any, where: str, column: str) -> list[MediaRef]:
    """A media cell: one reference, a list of them, or JSON text of a list."""
    if _missing(value):
        return []
    if isinstance(value, str) and not value.lstrip().startswith("["):
        return [MediaRef(column, value.strip())]
    out = []
    for i, ref in enumerate(_list_value(value, where, column, "media list", "bad_media")):
        if _missing(ref):
            continue
        if not isinstance(ref, str):
            raise _bad(where, column, f"media entry {i}: expected a URL or path, got {type(ref).__name__}",
                       "bad_media")
        out.append(MediaRef(column, ref.strip()))
    return out


def jsonable(value: Any) -> Any:
    """A value orjson can write: bytes become base64 text, other unknown objects their text."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, Decimal):
        return float(value)
    if value is None or isinstance(value, (str, int, float, bool, datetime, date)):
        return value
    return str(value)


def pack_columns(row: dict[str, Any], salt: str) -> bytes:
    """``raw`` for the unmapped columns (author-like keys hashed); values orjson cannot write are
    converted first (:func:`jsonable`), only when needed."""
    try:
        return pack_raw(row, salt=salt)
    except TypeError:
        return pack_raw(jsonable(row), salt=salt)


# --------------------------------------------------------------------------------------- rows


def _comments(value: Any, *, uid: str, platform: str, collected_at: datetime, salt: str, where: str,
              column: str) -> list[dict[str, Any]]:
    """``comments`` rows in published order; depth from ``parent_id`` links (a reply to a comment
    the list lacks is depth 1, its replies 2: a lower bound, as for the dumps)."""
    entries = _list_value(value, where, column, "comments value", "bad_comments")
    rows: list[dict[str, Any]] = []
    for i, entry in enumerate(entries):
        at = f"{where}: column {column!r}: comment {i}"
        if isinstance(entry, str):
            entry = {"text": entry}
        if not isinstance(entry, dict):
            raise InvalidRecord(f"{at}: expected text or a struct with 'text', got {type(entry).__name__}",
                                error_type="bad_comments")
        try:
            comment_id = None if _missing(entry.get("id")) else parse_id(entry.get("id"), at, "id")
            parent = None if _missing(entry.get("parent_id")) else parse_id(entry.get("parent_id"), at, "parent_id")
            score = parse_number(entry.get("score"), at, "score")
            likes = parse_number(entry.get("like_count"), at, "like_count")
            row: dict[str, Any] = {
                "uid": uid, "platform": platform,
                "comment_id": comment_id if comment_id is not None else f"#{i}",
                "parent_id": parent, "depth": 0,
                "text": parse_text(entry.get("text"), at, "text"),
                "score": None if score is None else _whole(score, at, "score"),
                "like_count": None if likes is None else _whole(likes, at, "like_count"),
                "author_hash": None, "author_kind": None,
                "created_at": parse_time(entry.get("created_at"), at, "created_at"),
                "is_submitter": None, "distinguished": None, "stickied": None,
                "collected_at": collected_at, "raw": None,
            }
        except InvalidRecord as exc:
            raise InvalidRecord(str(exc), error_type="bad_comments") from None
        if not _missing(entry.get("author")):  # no author given is unknown, not "deleted"
            name = str(entry["author"])
            row["author_hash"], row["author_kind"] = author_hash(name, salt), author_kind(name)
        rest = {k: v for k, v in entry.items() if k not in _COMMENT_KEYS}
        if rest:
            row["raw"] = pack_columns(rest, salt)
        rows.append(row)
    ids = [r["comment_id"] for r in rows]
    if len(set(ids)) != len(ids):
        twice = sorted({c for c in ids if ids.count(c) > 1})
        raise _bad(where, column, f"comment id(s) {twice[:5]} appear more than once", "bad_comments")
    parents = {r["comment_id"]: r["parent_id"] for r in rows}
    for row in rows:
        depth, current, seen = 0, row["parent_id"], {row["comment_id"]}
        while current is not None:
            if current in seen:
                raise _bad(where, column, f"comment {row['comment_id']!r}: its parent links form a cycle",
                           "bad_comments")
            seen.add(current)
            depth += 1
            if current not in parents:
                break  # a parent the list lacks counts as top-level: a lower bound, as for the dumps
            current = parents[current]
        row["depth"] = depth
    return rows


def map_row(row: dict[str, Any], mapping: TableMapping, ctx: MapContext, where: str,
            item_id: str | None = None) -> MappedRow:
    """Map one table row; raises :class:`~blift.errors.InvalidRecord` naming ``where`` (the input
    and row number) and the column on any bad value. ``item_id``: the item's id when the caller
    has it (a media folder's file, which its sidecar row names by the ``id`` column); the id
    column is then only left out of ``raw``."""
    c = mapping.columns
    if item_id is None:
        item_id = parse_id(row.get(c.id), where, c.id)
        if c.id_pattern is not None:
            found = re.search(c.id_pattern, item_id)
            if found is None or not found.group(1):
                raise _bad(where, c.id, f"no id in {item_id!r:.80} (id_pattern {c.id_pattern!r})", "missing_id")
            item_id = found.group(1)
    uid = f"{mapping.platform}:{item_id}"
    collected_at = ctx.collected_at
    if mapping.collected_at_column:
        when = parse_time(row.get(mapping.collected_at_column), where, mapping.collected_at_column)
        if when is None:
            raise _bad(where, mapping.collected_at_column, "no collection time", "bad_time")
        collected_at = when

    def text(fld: str) -> str | None:
        col = getattr(c, fld)
        return None if col is None else parse_text(row.get(col), where, col)

    page = text("url")
    author = None
    if c.author is not None and not _missing(row.get(c.author)):
        author = author_hash(parse_text(row.get(c.author), where, c.author), ctx.salt)
    item: dict[str, Any] = {
        "uid": uid, "platform": mapping.platform, "item_id": item_id, "source": mapping.source,
        "url": page, "permalink": page, "title": text("title"), "text": text("text"),
        "community": text("community"), "author_hash": author,
        "created_at": None if c.created_at is None else parse_time(row.get(c.created_at), where, c.created_at),
        "collected_at": collected_at, "media_kind": None, "media_urls": None,
        "post_hint": None, "flair": None, "over_18": None, "spoiler": None, "license": None,
        "score": None, "upvote_ratio": None, "num_comments": None, "view_count": None, "like_count": None,
        "comment_count": None, "subscriber_count": None, "heatmap": None, "raw": None,
    }
    behavior = []
    for name, spec in mapping.behavior.items():
        number = parse_number(row.get(spec.column), where, spec.column)
        if number is not None:
            if spec.kind == "ratio" and not 0 <= number <= 1:
                raise _bad(where, spec.column, f"ratio {number!r} is outside 0..1", "out_of_range")
            if spec.kind == "score" and spec.scale and not spec.scale[0] <= number <= spec.scale[1]:
                raise _bad(where, spec.column, f"score {number!r} is outside its scale {list(spec.scale)}",
                           "out_of_range")
            if spec.to is not None:
                item[spec.to] = _whole(number, where, spec.column) if spec.to in _INT_COLUMNS else float(number)
        behavior.append({
            "uid": uid, "name": name, "value": None if number is None else float(number), "kind": spec.kind,
            "scale_min": spec.scale[0] if spec.scale else None, "scale_max": spec.scale[1] if spec.scale else None,
            "collected_at": collected_at,
        })
    media = [ref for col in c.media_columns() for ref in media_refs(row.get(col), where, col)]
    comments = [] if c.comments is None else _comments(
        row.get(c.comments), uid=uid, platform=mapping.platform, collected_at=collected_at, salt=ctx.salt,
        where=where, column=c.comments)
    mapped = mapping.named_columns()
    rest = {k: v for k, v in row.items() if k not in mapped}
    if ctx.raw_extra:
        for key, value in ctx.raw_extra.items():
            rest.setdefault(key, value)  # a table column of the same name wins
    item["raw"] = pack_columns(rest, ctx.salt) if rest else None
    return MappedRow(uid=uid, item=item, media=media, comments=comments, behavior=behavior)
