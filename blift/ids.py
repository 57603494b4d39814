"""Stable identifiers and hashes: author hashing, config hashes, splits, raw-JSON packing.

Authors are only ever stored as a salted hash; the salt comes from ``BLIFT_AUTHOR_SALT`` (set it
per release and keep it secret) so hashes cannot be reversed by hashing known user names.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import orjson
import zstandard

_DEFAULT_SALT = "blift-default-salt"  # documented: set BLIFT_AUTHOR_SALT for any real release
_DELETED_AUTHORS = {"[deleted]", "[removed]", "", None}
_BOT_NAME = re.compile(r"(?:bot|b0t)$|^bot[_-]|automoderator|_bot_|-bot-", re.IGNORECASE)


def author_salt() -> str:
    return os.environ.get("BLIFT_AUTHOR_SALT", _DEFAULT_SALT)


@functools.lru_cache(maxsize=1 << 14)  # active authors repeat at dump scale; bounded to ~5 MB
def _salted(salt: str, name: str) -> str:
    return hashlib.sha256(f"{salt}\x00{name}".encode()).hexdigest()[:32]


def author_hash(name: str | None, salt: str | None = None) -> str | None:
    """Salted SHA-256 of an author name; None for deleted or missing authors."""
    if name in _DELETED_AUTHORS:
        return None
    return _salted(author_salt() if salt is None else salt, str(name))


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


def pack_raw(obj: Any, drop_keys: tuple[str, ...] = (), salt: str | None = None) -> bytes:
    """Platform JSON (sorted keys) with author names replaced by their salted hash.

    Not compressed per row: the Parquet column codec (zstd) compresses the whole column, which
    measured 4x smaller and faster than per-row zstd (benchmarks/bench_dumps.py). Author keys
    are almost always top-level; nested ones (crossposts, replies) are found in the serialized
    bytes and only then is the whole tree walked."""
    salt = author_salt() if salt is None else salt
    if type(obj) is not dict:
        return orjson.dumps(scrub_authors(obj, salt), option=orjson.OPT_SORT_KEYS)
    top = dict(obj)
    for key in drop_keys:
        top.pop(key, None)
    present = 0
    for key in _AUTHOR_KEYS.intersection(top):
        value = top[key]
        present += 1
        if isinstance(value, str):
            top[key] = author_hash(value, salt)
        elif isinstance(value, list):
            top[key] = None
    data = orjson.dumps(top, option=orjson.OPT_SORT_KEYS)
    if len(_AUTHOR_KEY_BYTES.findall(data)) > present:
        data = orjson.dumps(scrub_authors(top, salt), option=orjson.OPT_SORT_KEYS)
    return data


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def unpack_raw(blob: bytes | None) -> Any:
    """The JSON of a ``raw`` cell (older shards held per-row zstd frames: read those too)."""
    if blob is None:
        return None
    if blob[:4] == _ZSTD_MAGIC:
        blob = zstandard.ZstdDecompressor().decompress(blob)
    return orjson.loads(blob)


_AUTHOR_KEYS = {"author", "author_fullname", "author_flair_text", "author_flair_richtext", "author_id",
                "author_url", "author_thumbnail", "uploader", "uploader_id", "uploader_url", "name_author"}


_AUTHOR_KEY_BYTES = re.compile(b'"(?:' + b"|".join(re.escape(k.encode()) for k in sorted(_AUTHOR_KEYS)) + b')":')


def scrub_authors(obj: Any, salt: str | None = None) -> Any:
    """Replace author-identifying fields anywhere in a JSON tree with their salted hash (lists of
    them become null). Returns a new tree; the input is left as it was."""
    salt = author_salt() if salt is None else salt
    t = type(obj)
    if t is dict:
        out = {}
        for k, v in obj.items():
            if k in _AUTHOR_KEYS and isinstance(v, str):
                out[k] = author_hash(v, salt)
            elif k in _AUTHOR_KEYS and isinstance(v, list):
                out[k] = None
            elif type(v) in (dict, list):
                out[k] = scrub_authors(v, salt)
            else:
                out[k] = v
        return out
    if t is list:
        return [scrub_authors(v, salt) if type(v) in (dict, list) else v for v in obj]
    return obj


def uid_hash(uid: str) -> int:
    """A 64-bit hash of an item uid, the same on every machine and run: it decides an item's split
    and its dump bucket, so every table of one item lands in the same place."""
    return int.from_bytes(hashlib.sha256(uid.encode()).digest()[:8], "big")


def file_sha256(path: str | os.PathLike[str], *, digest: Callable[[], Any] = hashlib.sha256) -> str:
    """Hex digest of a file's content, read in blocks (never whole in memory)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, digest).hexdigest()


def split_of(uid: str, validation: float = 0.05, test: float = 0.05) -> str:
    """train / validation / test by a hash of the item uid: stable across runs and releases."""
    h = uid_hash(uid) / 2**64
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
