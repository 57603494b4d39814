"""Stable identifiers and hashes: author hashing, config hashes, splits, raw-JSON packing.

Authors are only ever stored as a salted hash; the salt comes from ``BLIFT_AUTHOR_SALT`` (set it
per release and keep it secret) so hashes cannot be reversed by hashing known user names.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from datetime import datetime, timezone
from typing import Any

import orjson
import zstandard

_DEFAULT_SALT = "blift-default-salt"  # documented: set BLIFT_AUTHOR_SALT for any real release
_DELETED_AUTHORS = {"[deleted]", "[removed]", "", None}
_BOT_NAME = re.compile(r"(?:bot|b0t)$|^bot[_-]|automoderator|_bot_|-bot-", re.IGNORECASE)


def author_salt() -> str:
    return os.environ.get("BLIFT_AUTHOR_SALT", _DEFAULT_SALT)


def author_hash(name: str | None, salt: str | None = None) -> str | None:
    """Salted SHA-256 of an author name; None for deleted or missing authors."""
    if name in _DELETED_AUTHORS:
        return None
    salt = author_salt() if salt is None else salt
    return hashlib.sha256(f"{salt}\x00{name}".encode()).hexdigest()[:32]


def author_kind(name: str | None) -> str | None:
    """What cleaning needs to know about a name, without keeping the name: deleted or bot-like."""
    if name in _DELETED_AUTHORS:
        return "deleted"
    if _BOT_NAME.search(str(name)):
        return "bot_name"
    return None


def canonical_json(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def config_hash(obj: Any) -> str:
    """Hash of a JSON-able config: a change of any value redoes the shards it produced."""
    return hashlib.sha256(canonical_json(obj)).hexdigest()[:16]


def short_id(*parts: Any) -> str:
    return hashlib.sha256(canonical_json(list(parts))).hexdigest()[:16]


_ZC = zstandard.ZstdCompressor(level=6)


def pack_raw(obj: Any, drop_keys: tuple[str, ...] = ()) -> bytes:
    """Platform JSON, compressed, with author names removed (``author``, ``author_fullname``...)."""
    if isinstance(obj, dict):
        obj = {k: v for k, v in obj.items() if k not in drop_keys}
    return _ZC.compress(orjson.dumps(scrub_authors(obj), option=orjson.OPT_SORT_KEYS))


def unpack_raw(blob: bytes | None) -> Any:
    if blob is None:
        return None
    return orjson.loads(zstandard.ZstdDecompressor().decompress(blob))


_AUTHOR_KEYS = {"author", "author_fullname", "author_flair_text", "author_flair_richtext", "author_id",
                "author_url", "author_thumbnail", "uploader", "uploader_id", "uploader_url", "name_author"}


def scrub_authors(obj: Any) -> Any:
    """Replace author-identifying fields anywhere in a JSON tree with their salted hash."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k in _AUTHOR_KEYS and isinstance(v, str):
                out[k] = author_hash(v)
            elif k in _AUTHOR_KEYS and isinstance(v, list):
                out[k] = None
            else:
                out[k] = scrub_authors(v)
        return out
    if isinstance(obj, list):
        return [scrub_authors(v) for v in obj]
    return obj


def split_of(uid: str, validation: float = 0.05, test: float = 0.05) -> str:
    """train / validation / test by a hash of the item uid: stable across runs and releases."""
    h = int.from_bytes(hashlib.sha256(uid.encode()).digest()[:8], "big") / 2**64
    if h < test:
        return "test"
    if h < test + validation:
        return "validation"
    return "train"


def utc_from_epoch(value: Any) -> datetime | None:
    """created_utc-style seconds (int, float or numeric string) to an aware datetime; None if absent."""
    if value is None or value == "":
        return None
    return datetime.fromtimestamp(float(value), tz=timezone.utc)


def now_utc() -> datetime:
    """Collection time. ``SOURCE_DATE_EPOCH`` pins it (reproducible runs and tests)."""
    fixed = os.environ.get("SOURCE_DATE_EPOCH")
    if fixed:
        return datetime.fromtimestamp(int(fixed), tz=timezone.utc)
    return datetime.now(tz=timezone.utc).replace(microsecond=0)
