"""The optional sidecar table of a ``folder.scan`` request: rows about the folder's files, joined
to them by file name or by relative path.

A sidecar is read and mapped the way ``table.read`` reads and maps a table, by its modules:
:mod:`blift.collect.table.inputs` reads it (CSV, TSV, JSON lines or Parquet, the text formats
also compressed: ``.gz``, ``.bz2``, ``.zst``, ``.xz``), and :mod:`blift.collect.table.mapping`
maps the row joined to a file onto that file's ``items`` row, its ``comments`` and its
``behavior`` rows. The request takes ``table.read``'s ``columns:`` and ``behavior:``, except that
the file itself gives the item's id and media (no ``id``, ``media`` or ``media_kind``), and
``file`` names the join column (default: a column named like the join, ``file_name`` or
``relative_path``). Without saying so, a column named like one of ``title``, ``text``,
``community``, ``created_at``, ``author`` is that field, and a column named like a typed
``items`` column (``like_count``, ``view_count``, ``score``, ``num_comments``, ...) is a behavior
value of that name filling it (a ``to:``), unless the request maps that column, name or items
column otherwise. ``comments`` and ``url`` are mapped only when named.

What is the sidecar's own is the join: a row's key is its join column's value (``\\`` read as
``/``, a leading ``./`` dropped; for ``file_name`` only the last part), and a file's key is its
name or its path in the folder. Every file with that key gets the row; a second row with a key
is dropped as ``sidecar_duplicate``, a row whose key no listed file has as
``sidecar_unmatched``, a row with an empty key as ``sidecar_no_key``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import TypeAdapter, ValidationError

from blift.collect.table.inputs import BadRow, InputStopped, format_for, read_file
from blift.collect.table.mapping import (
    TYPED_COLUMNS,
    BehaviorColumn,
    ColumnMap,
    TableMapping,
    check_behavior_names,
)
from blift.errors import ConfigError

KEY = "file"  # the ``columns:`` entry naming the join column
JOINS = ("file_name", "relative_path")
FROM_FILE = ("id", "id_pattern", "media", "media_kind")  # what the file gives, never a sidecar column
FIELDS = tuple(name for name in ColumnMap.model_fields if name not in FROM_FILE)
IMPLICIT = ("title", "text", "community", "created_at", "author")  # a column of that name is that field
SOURCE = "folder"
BATCH_ROWS = 4096
_BEHAVIOR: TypeAdapter[dict[str, BehaviorColumn]] = TypeAdapter(dict[str, BehaviorColumn])


class SidecarError(ValueError):
    """A sidecar that cannot be used as configured (the stage turns it into a ConfigError naming
    ``field``, the request key to fix)."""

    def __init__(self, message: str, field: str = "sidecar") -> None:
        super().__init__(message)
        self.field = field


@dataclass
class Sidecar:
    """A sidecar as read: its columns (a header's or schema's; JSON lines: every row's keys), its
    rows in order (a :class:`~blift.collect.table.inputs.BadRow` in the place of an unreadable
    one), and where it could not be read further (the rows before it are there)."""

    columns: list[str]
    rows: list[dict[str, Any] | BadRow]
    stopped: InputStopped | None = None


def read_sidecar(path: Path, columns_only: bool = False) -> Sidecar:
    """Read a sidecar (``columns_only``: as little as tells its columns). An unknown format is a
    SidecarError; a sidecar unreadable before its first row has no columns and ``stopped`` set."""
    try:
        fmt = format_for(str(path))
    except ValueError as exc:
        raise SidecarError(f"{path.name}: {exc}") from None
    names: dict[str, None] = {}
    rows: list[dict[str, Any] | BadRow] = []
    try:
        for batch in read_file(str(path), fmt, BATCH_ROWS):
            names.update(dict.fromkeys(batch.columns or ()))
            for row in batch.rows:
                if isinstance(row, dict):
                    names.update(dict.fromkeys(row))
            rows += batch.rows
            if columns_only and fmt != "jsonl":  # a header or a schema names them all
                break
    except InputStopped as exc:
        return Sidecar(list(names), rows, exc)
    return Sidecar(list(names), rows)


# ------------------------------------------------------------------------------------- mapping


def _problems(exc: ValueError) -> str:
    if not isinstance(exc, ValidationError):
        return str(exc)
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'value'}: "
                     f"{err['msg'].removeprefix('Value error, ')}" for err in exc.errors())


def resolve(columns: list[str], join: str, given_columns: Any, given_behavior: Any, where: str) -> dict[str, Any]:
    """The request's ``columns:`` and ``behavior:`` with the defaults the sidecar's column names
    give, as ``{columns: {file: ..., field: column}, behavior: {name: {...}}}``, checked against
    the sidecar's columns. A SidecarError names the request key to fix and lists the columns."""
    for key, value in (("columns", given_columns), ("behavior", given_behavior)):
        if value is not None and not isinstance(value, dict):
            raise SidecarError(f"{where}: expected a mapping, got {value!r:.80}", key)
    given = dict(given_columns or {})
    behavior = dict(given_behavior or {})
    from_file = sorted(set(given) & set(FROM_FILE))
    if from_file:
        raise SidecarError(f"{where}: {from_file}: the file itself is the item's id and media; name the "
                           f"join column with {KEY}: <column>", "columns")
    unknown = sorted(set(given) - set(FIELDS) - {KEY})
    if unknown:
        raise SidecarError(f"{where}: unknown field(s) {unknown}; known: {', '.join([KEY, *FIELDS])}", "columns")
    key_column = given.pop(KEY, join)
    if not isinstance(key_column, str) or not key_column:
        raise SidecarError(f"{where}: {KEY}: expected the name of the join column, got {key_column!r:.80}", "columns")
    specs = [b for b in behavior.values() if isinstance(b, dict)]
    used = {c for c in [key_column, *given.values(), *(b.get("column") for b in specs)] if isinstance(c, str)}
    filled = {b.get("to") for b in specs if isinstance(b.get("to"), str)}
    for name in IMPLICIT:
        if name in columns and name not in given and name not in used:
            given[name] = name
    for name, kinds in TYPED_COLUMNS.items():
        if name in columns and name not in used | filled | set(behavior):
            behavior[name] = {"column": name, "kind": kinds[0], "to": name}
    resolved = {"columns": {KEY: key_column, **given}, "behavior": behavior}
    try:
        mapping = table_mapping(resolved, "local")
    except SidecarError as exc:
        raise SidecarError(f"{where}: {exc}", exc.field) from None
    if key_column not in columns:
        raise SidecarError(f"{where}: column(s) [{key_column!r}] not in the sidecar (the column holding each "
                           f"file's {join.replace('_', ' ')}: name it with columns: {{{KEY}: <column>}}); "
                           f"its columns: {', '.join(columns) or '(none)'}", "columns")
    try:
        mapping.check_columns(columns, where)
    except ConfigError as exc:
        first = next(fld for col, fld in mapping.named_columns().items() if col not in columns)
        raise SidecarError(str(exc), first.partition(".")[0]) from None
    return resolved


def table_mapping(resolved: dict[str, Any], platform: str) -> TableMapping:
    """The table source's mapping of a resolved sidecar mapping (the join column as its ``id``);
    a SidecarError names the request key at fault."""
    columns = dict(resolved["columns"])
    try:
        column_map = ColumnMap(id=columns.pop(KEY), **columns)
    except ValidationError as exc:
        raise SidecarError(_problems(exc), "columns") from None
    try:
        behavior = check_behavior_names(_BEHAVIOR.validate_python(resolved["behavior"]))
    except ValueError as exc:  # pydantic's ValidationError is one
        raise SidecarError(_problems(exc), "behavior") from None
    return TableMapping(platform=platform, columns=column_map, behavior=behavior, source=SOURCE)


# ------------------------------------------------------------------------------------- the join


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
