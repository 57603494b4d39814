"""Typed reads of platform JSON fields and config checks shared by the collectors.

A platform's JSON is not a contract: a count can arrive as a string, an empty string, or junk.
These helpers turn a field into the schema's type or raise :class:`InvalidRecord` naming the
record and the field, so one bad record becomes an error row instead of a crashed shard.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import orjson

from blift.errors import ConfigError, InvalidRecord


def int_field(data: dict[str, Any], field: str, where: str) -> int | None:
    """``data[field]`` as an int; missing or empty is None."""
    value = data.get(field)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidRecord(f"{where}: field {field!r}: expected an integer, got {value!r:.60}") from None


def float_field(data: dict[str, Any], field: str, where: str) -> float | None:
    """``data[field]`` as a float; missing or empty is None."""
    value = data.get(field)
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidRecord(f"{where}: field {field!r}: expected a number, got {value!r:.60}") from None


def relative_folder(value: str, what: str = "store") -> str:
    """A config folder that must stay inside the run folder (no absolute path, no ``..``)."""
    rel = PurePosixPath(value)
    if not value or rel.is_absolute() or ".." in rel.parts:
        raise ValueError(f"{what} must be a relative folder inside the run folder, got {value!r}")
    return value


def request_error(index: int, field: str, message: str, prefix: str = "") -> ConfigError:
    """A bad entry of a pipeline's ``requests:`` list, named by its index and field."""
    return ConfigError(f"{prefix}requests[{index}]: field {field!r}: {message}")


def request_spec(key: str, payload: Any) -> tuple[str | None, Any]:
    """(kind, spec) of a ``requests`` row, the spec parsed from its canonical JSON."""
    try:
        spec = orjson.loads(payload["spec"])
    except (orjson.JSONDecodeError, TypeError, KeyError) as exc:
        raise InvalidRecord(f"request {key}: field 'spec' is not JSON ({exc})") from None
    return payload.get("kind"), spec
