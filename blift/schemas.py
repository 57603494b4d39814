"""Table schemas built from the versioned files in ``schemas/`` (the single source of truth).

Every shard blift writes is conformed to, and validated against, one of these schemas and
stamped with its name and version in the Parquet key-value metadata, so ``blift validate``
and every reader can tell what a file is and refuse versions they do not know.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from blift.errors import SchemaError

META_NAME = b"blift.schema"
META_VERSION = b"blift.schema_version"
META_OMITTED = b"blift.omitted_columns"  # comma-separated nullable columns a release left out


def schemas_dir() -> Path:
    """``schemas/`` of a source checkout, or the copy packed into the wheel."""
    here = Path(__file__).resolve().parent
    for cand in (here.parent / "schemas", here / "_schemas"):
        if cand.is_dir():
            return cand
    raise SchemaError(f"no schemas folder found next to {here}")


_SCALARS: dict[str, pa.DataType] = {
    "string": pa.string(),
    "binary": pa.binary(),
    "bool": pa.bool_(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}


def parse_type(text: str) -> pa.DataType:
    """Parse the small type grammar of the schema files (``list<struct<a: int64>>``...)."""
    tokens = re.findall(r"[A-Za-z_][A-Za-z0-9_]*|[<>:,]", text)
    pos = 0

    def take(expected: str | None = None) -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise SchemaError(f"type {text!r}: unexpected end")
        tok = tokens[pos]
        if expected is not None and tok != expected:
            raise SchemaError(f"type {text!r}: expected {expected!r}, found {tok!r}")
        pos += 1
        return tok

    def parse() -> pa.DataType:
        tok = take()
        if tok == "list":
            take("<")
            inner = parse()
            take(">")
            return pa.list_(inner)
        if tok == "struct":
            take("<")
            fields = []
            while True:
                name = take()
                take(":")
                fields.append(pa.field(name, parse()))
                if take() == ">":
                    break
            return pa.struct(fields)
        if tok in _SCALARS:
            return _SCALARS[tok]
        raise SchemaError(f"type {text!r}: unknown type {tok!r}")

    out = parse()
    if pos != len(tokens):
        raise SchemaError(f"type {text!r}: trailing {' '.join(tokens[pos:])!r}")
    return out


@dataclass(frozen=True)
class TableSchema:
    """A table's schema as declared in ``schemas/<name>.yaml``."""

    name: str
    version: int
    description: str
    key: str
    columns: tuple[dict[str, Any], ...]
    arrow: pa.Schema
    #: oldest version whose files this blift still reads: the versions since then only added
    #: nullable columns (each marked ``since: N``), which an older file gets as nulls.
    reads_from: int = 0

    def added_after(self, version: int) -> list[str]:
        """Columns a file written at ``version`` lacks (added by a later, additive version)."""
        return [c["name"] for c in self.columns if int(c.get("since", 1)) > version]

    def upgrade(self, table: pa.Table, version: int) -> pa.Table:
        """A table read from a file of an older, readable ``version``: the columns added since
        are appended as nulls, in schema order (a file of this version is returned as is)."""
        if version == self.version:
            return table
        for name in self.added_after(version):
            if name not in table.column_names:
                fld = self.arrow.field(name)
                table = table.append_column(fld, pa.nulls(table.num_rows, fld.type))
        order = [n for n in self.arrow.names if n in table.column_names]
        order += [n for n in table.column_names if n not in self.arrow.names]
        return table.select(order).replace_schema_metadata({**(table.schema.metadata or {}),
                                                            **(self.arrow.metadata or {})})

    def column_doc(self, name: str) -> str:
        for col in self.columns:
            if col["name"] == name:
                return str(col.get("doc", ""))
        raise KeyError(name)

    def empty(self) -> pa.Table:
        return self.arrow.empty_table()

    def from_rows(self, rows: list[dict[str, Any]], *, where: str = "") -> pa.Table:
        """Build a table from row dicts, naming the record and field on any mismatch."""
        names = set(self.arrow.names)
        for i, row in enumerate(rows):
            extra = set(row) - names
            if extra:
                raise SchemaError(
                    f"{where}table {self.name!r} v{self.version}: record {i} has unknown "
                    f"field(s) {sorted(extra)}; known: {sorted(names)}"
                )
        try:
            table = pa.Table.from_pylist(rows, schema=self.arrow)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
            raise SchemaError(self._locate(rows, where) or f"{where}table {self.name!r}: {exc}") from exc
        self.validate(table, where=where)
        return table

    def _locate(self, rows: list[dict[str, Any]], where: str) -> str | None:
        """Find the first record and field that does not convert, for the error message."""
        for i, row in enumerate(rows):
            for fld in self.arrow:
                try:
                    pa.array([row.get(fld.name)], type=fld.type)
                except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
                    return (
                        f"{where}table {self.name!r}: record {i}, field {fld.name!r}: "
                        f"expected {fld.type}, got {row.get(fld.name)!r:.80} ({exc})"
                    )
        return None

    def conform(self, table: pa.Table, *, where: str = "") -> pa.Table:
        """Reorder/cast a table to this schema (missing nullable columns become nulls)."""
        cols = []
        for fld in self.arrow:
            if fld.name in table.column_names:
                col = table.column(fld.name)
                if col.type != fld.type:
                    try:
                        col = col.cast(fld.type)
                    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                        raise SchemaError(
                            f"{where}table {self.name!r}: field {fld.name!r}: expected {fld.type}, "
                            f"got {col.type} ({exc})"
                        ) from exc
                cols.append(col)
            else:
                cols.append(pa.nulls(table.num_rows, type=fld.type))
        extra = set(table.column_names) - set(self.arrow.names)
        if extra:
            raise SchemaError(f"{where}table {self.name!r}: unknown column(s) {sorted(extra)}")
        out = pa.Table.from_arrays(cols, schema=self.arrow)
        self.validate(out, where=where)
        return out

    def validate(self, table: pa.Table, *, where: str = "", omitted: frozenset[str] = frozenset()) -> None:
        """Check types and non-null columns; raise SchemaError naming the field and record.
        ``omitted`` nullable columns may be absent (a release drops ``raw``)."""
        for fld in self.arrow:
            if fld.name not in table.column_names:
                if fld.name in omitted and fld.nullable:
                    continue
                raise SchemaError(f"{where}table {self.name!r}: missing column {fld.name!r}")
            col = table.column(fld.name)
            if col.type != fld.type:
                raise SchemaError(
                    f"{where}table {self.name!r}: field {fld.name!r}: expected {fld.type}, got {col.type}"
                )
            if not fld.nullable and col.null_count:
                first = next(i for i, v in enumerate(col.is_null().to_pylist()) if v)
                raise SchemaError(
                    f"{where}table {self.name!r}: record {first}, field {fld.name!r}: "
                    f"null in a non-nullable column"
                )
        extra = set(table.column_names) - set(self.arrow.names)
        if extra:
            raise SchemaError(f"{where}table {self.name!r}: unknown column(s) {sorted(extra)}")


def _load(path: Path) -> TableSchema:
    try:
        spec = yaml.safe_load(path.read_text())
        fields = []
        version = int(spec["version"])
        for col in spec["columns"]:
            since = int(col.get("since", 1))
            if since > 1 and (col.get("nullable", True) is False or since > version):
                raise SchemaError(f"{path}: column {col['name']!r}: since {since} needs a nullable column "
                                  f"added by a version <= {version}")
            fields.append(pa.field(col["name"], parse_type(col["type"]), nullable=col.get("nullable", True)))
        meta = {META_NAME: spec["name"].encode(), META_VERSION: str(spec["version"]).encode()}
        reads_from = int(spec.get("reads_from", version))
        if not 1 <= reads_from <= version:
            raise SchemaError(f"{path}: reads_from {reads_from} must be between 1 and version {version}")
        return TableSchema(
            reads_from=reads_from,
            name=spec["name"],
            version=int(spec["version"]),
            description=spec.get("description", ""),
            key=spec.get("key", ""),
            columns=tuple(spec["columns"]),
            arrow=pa.schema(fields, metadata=meta),
        )
    except (KeyError, TypeError, yaml.YAMLError) as exc:
        raise SchemaError(f"{path}: malformed schema file ({exc!r})") from exc


@functools.cache
def all_schemas() -> dict[str, TableSchema]:
    return {s.name: s for s in (_load(p) for p in sorted(schemas_dir().glob("*.yaml")))}


def get(name: str) -> TableSchema:
    try:
        return all_schemas()[name]
    except KeyError:
        raise SchemaError(f"unknown table schema {name!r}; known: {sorted(all_schemas())}") from None


def file_version(metadata: dict[bytes, bytes] | None) -> int | None:
    """The schema version stamped in a shard's metadata (None: no stamp)."""
    if not metadata or META_VERSION not in metadata:
        return None
    return int(metadata[META_VERSION].decode())


def schema_of_file_metadata(metadata: dict[bytes, bytes] | None, *, where: str) -> TableSchema:
    """The schema a shard was written with; refuses unknown names and versions.

    An older version is accepted when every version since it only added nullable columns
    (the schema file's ``reads_from``); :meth:`TableSchema.upgrade` then fills them with nulls.
    """
    if not metadata or META_NAME not in metadata:
        raise SchemaError(f"{where}: no blift schema stamp in the Parquet metadata")
    name = metadata[META_NAME].decode()
    version = int(metadata[META_VERSION].decode())
    schema = get(name)
    if not schema.reads_from <= version <= schema.version:
        raise SchemaError(
            f"{where}: written with schema {name!r} v{version}, this blift reads v{schema.reads_from}"
            f"{'' if schema.reads_from == schema.version else f'..v{schema.version}'}; "
            f"re-run the stage or use a matching blift version"
        )
    return schema
