"""Dump records straight to Arrow columns: the exact rows of :mod:`blift.collect.reddit.rows`, faster.

Why a second mapping
  ``item_row`` / ``comment_row`` + ``pack_raw`` + ``pa.Table.from_pylist`` cost 40-60 us per dump
  comment (here ~15), most of it Python overhead around each field (helper calls, a dict per row, a copy of
  the record for ``pack_raw``, a second author-hash lookup through ``lru_cache``). At dump scale
  (billions of lines) that is the whole budget. Here one loop per batch fills one list per
  column, hashes authors through a plain dict, scrubs the record in place (it was parsed for this
  row alone) and builds each column with one ``pa.array`` call.

Why it is exact
  Only records whose fields have the types dumps normally carry take this path: ids and text as
  ``str``, counts as ``int``, flags as ``bool``, epochs as ``int`` in datetime's range, ``None``
  anywhere a field may be missing. For those the reference helpers reduce to what is inlined
  here (``_text`` of an orjson ``str`` is the identity: orjson rejects lone surrogates). Any other
  record is *returned to the caller*, which maps it with the reference functions themselves, so
  odd records get the reference result and the reference error, byte for byte.
  ``tests/test_dumps.py`` compares both paths on the bundled sample and on synthetic dumps.
"""

from __future__ import annotations

import re
from array import array
from hashlib import sha256
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from blift.collect.reddit.rows import REDDIT, classify_media
from blift.ids import (
    _AUTHOR_KEYS,
    _DELETED_AUTHORS,
    author_hash,
    author_kind,
    scrub_authors,
)

# The author keys pack_raw hashes, as a tuple: 11 dict lookups beat a set intersection over a
# 60-key record.
_AUTHOR_KEY_LIST = tuple(sorted(_AUTHOR_KEYS))


def _trie(words: list[str]) -> str:
    """A regex matching exactly ``words``, as a prefix tree: the engine tries one branch per
    leading letter instead of every word at every quote."""
    if words == [""]:
        return ""
    heads: dict[str, list[str]] = {}
    for w in words:
        heads.setdefault(w[:1], []).append(w[1:])
    alts = []
    for head, tails in sorted(heads.items()):
        if head == "":
            continue
        sub = _trie(sorted(tails))
        if "" in tails and sub:
            sub = f"(?:{sub})?"
        alts.append(re.escape(head) + sub)
    inner = "|".join(alts)
    return inner if len(alts) == 1 else f"(?:{inner})"


# Matches exactly what ids._AUTHOR_KEY_BYTES matches (``"<author key>":``), 1.5x faster.
_AUTHOR_KEY_RE = re.compile(('"' + _trie(sorted(_AUTHOR_KEYS)) + '":').encode())
_MISSING: Any = object()
_SORT = orjson.OPT_SORT_KEYS
_MAX_EPOCH = 253_402_300_799  # 9999-12-31T23:59:59Z, the last second datetime.fromtimestamp takes
_CACHE_MAX = 1 << 15  # names per cache (~5 MB): bounded, so memory does not grow with the input
_TS = pa.timestamp("us", tz="UTC")


class AuthorCache:
    """Salted author hashes (and kinds) by name, in plain dicts the hot loops read directly.

    A miss hashes as :func:`blift.ids.author_hash` does (``sha256(salt \\0 name)``, 32 hex digits;
    None for deleted names) without its ``lru_cache`` layer, whose bookkeeping cost more than the
    hash on dumps where most names are new. The tests compare both on many names. Cleared whole
    when full (memory stays bounded whatever the input) or when the salt changes."""

    def __init__(self) -> None:
        self.salt: str | None = None
        self.prefix: bytes | None = None
        self.hashes: dict[str, str | None] = {}
        self.kinds: dict[str, str | None] = {}

    def use(self, salt: str) -> None:
        if salt != self.salt or len(self.hashes) > _CACHE_MAX or len(self.kinds) > _CACHE_MAX:
            self.salt = salt
            try:
                self.prefix = salt.encode() + b"\x00"
            except UnicodeEncodeError:  # a salt author_hash cannot encode either: let it raise
                self.prefix = None
            self.hashes = {}
            self.kinds = {}

    def miss(self, name: str) -> str | None:
        """Hash of a name not in ``hashes`` (added to it)."""
        if self.prefix is None or name in _DELETED_AUTHORS:
            h = author_hash(name, self.salt)
        else:
            h = sha256(self.prefix + name.encode()).hexdigest()[:32]
        self.hashes[name] = h
        return h

    def hash(self, name: str) -> str | None:
        h = self.hashes.get(name, _MISSING)
        return self.miss(name) if h is _MISSING else h

    def kind(self, name: str) -> str | None:
        k = self.kinds.get(name, _MISSING)
        if k is _MISSING:
            k = self.kinds[name] = author_kind(name)
        return k


def _epoch_us(value: Any) -> int | None | Any:
    """Microseconds of an ``int`` epoch in datetime's range, None for None; _MISSING otherwise."""
    if value is None:
        return None
    if value.__class__ is int and 0 <= value <= _MAX_EPOCH:
        return value * 1_000_000
    return _MISSING


def collected_us(data: dict[str, Any], fallback_us: int) -> int | Any:
    """``collected_at`` in microseconds, as :func:`blift.collect.reddit.dump_parse._collected_at` picks it;
    _MISSING when the chosen field is not a plain int epoch (the caller then takes the reference)."""
    meta = data.get("_meta")
    second = meta.get("retrieved_2nd_on") if meta.__class__ is dict else None
    for value in (second, data.get("retrieved_on"), data.get("retrieved_utc")):
        if value is not None and value != "":
            if value.__class__ is int and 0 <= value <= _MAX_EPOCH:
                return value * 1_000_000
            return _MISSING
    return fallback_us


def pack_raw_inplace(data: dict[str, Any], cache: AuthorCache, drop_replies: bool) -> bytes:
    """:func:`blift.ids.pack_raw` of ``data`` (with ``drop_keys=("replies",)`` if asked), same bytes.

    Modifies ``data`` instead of copying it: the caller parsed it for this row and is done with it.
    """
    if drop_replies:
        data.pop("replies", None)
    present = 0
    get = data.get
    hashes = cache.hashes
    for key in _AUTHOR_KEY_LIST:
        value = get(key, _MISSING)
        if value is not _MISSING:
            present += 1
            if value.__class__ is str:
                h = hashes.get(value, _MISSING)
                data[key] = cache.miss(value) if h is _MISSING else h
            elif value.__class__ is list:
                data[key] = None
    raw = orjson.dumps(data, option=_SORT)
    if not _top_level_keys_only(raw) and len(_AUTHOR_KEY_RE.findall(raw)) > present:
        raw = orjson.dumps(scrub_authors(data, cache.salt), option=_SORT)  # pack_raw's nested case
    return raw


def _top_level_keys_only(raw: bytes) -> bool:
    """True when no ``"<author key>":`` of ``raw`` (orjson output) can lie beyond the top level,
    so pack_raw's count of them equals the top level's and its regex scan can be skipped.

    Such a match is always a key: inside a string value every quote is escaped, and a string
    value is never followed by ``:``. A key beyond the top level sits in a nested non-empty
    object, which starts with ``{"``; a key ending in ``\\"author`` needs a backslash before a
    quote. Neither present: no such key. Strings that merely contain ``{"`` or ``\\"`` only cost
    the scan. (Single-byte ``find`` is memchr; a two-byte needle was 10x slower here.)
    """
    i = raw.find(b"\\")
    while i >= 0:
        if raw[i + 1] == 34:  # '"'
            return False
        i = raw.find(b"\\", i + 2)
    i = raw.find(b"{", 1)
    while i >= 0:
        if raw[i + 1] == 34:
            return False
        i = raw.find(b"{", i + 1)
    return True


class _BinaryBuilder:
    """A ``binary`` column built in one buffer: a bytes object kept per row until the batch ends
    cost ~4 us per dump comment in allocator traffic; appended here, each is freed at once."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.offsets = array("q", [0])

    def append(self, value: bytes) -> None:
        self.data += value
        self.offsets.append(len(self.data))

    def finish(self) -> pa.Array:
        n = len(self.offsets) - 1
        if len(self.data) >= 1 << 31:  # int32 offsets; the caller falls back to the reference path
            raise OverflowError("binary column over 2 GiB in one batch")
        offsets = np.frombuffer(self.offsets, dtype=np.int64).astype(np.int32)
        return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(self.data)])


class CommentColumns:
    """``comments`` columns of the records mapped so far (``pos``: each row's place in the batch)."""

    def __init__(self) -> None:
        self.pos: list[int] = []
        self.uid: list[str] = []
        self.comment_id: list[str] = []
        self.parent_id: list[str | None] = []
        self.text: list[str | None] = []
        self.score: list[int | None] = []
        self.author_hash: list[str | None] = []
        self.author_kind: list[str | None] = []
        self.created_at: list[int | None] = []
        self.is_submitter: list[bool | None] = []
        self.distinguished: list[str | None] = []
        self.stickied: list[bool | None] = []
        self.collected_at: list[int] = []
        self.raw = _BinaryBuilder()

    def __len__(self) -> int:
        return len(self.pos)

    def add(self, cands: list[tuple[int, dict[str, Any], str, str]], fallback_us: int,
            cache: AuthorCache) -> list[tuple[int, Exception | None]]:
        """Map ``(pos, record, uid, comment_id)`` candidates. Returns ``(index, None)`` for each
        record left to the reference mapping (unusual field types), ``(index, error)`` for one
        whose raw JSON failed to serialize (as ``pack_raw`` would have). Mapped records are
        consumed (scrubbed in place)."""
        slow: list[tuple[int, Exception | None]] = []
        a_pos, a_uid, a_cid, a_par = self.pos.append, self.uid.append, self.comment_id.append, self.parent_id.append
        a_text, a_score, a_ah, a_ak = (self.text.append, self.score.append, self.author_hash.append,
                                       self.author_kind.append)
        a_cr, a_sub, a_dist, a_st = (self.created_at.append, self.is_submitter.append, self.distinguished.append,
                                     self.stickied.append)
        a_col, a_raw = self.collected_at.append, self.raw.append
        str_, int_, bool_, dict_, max_epoch, missing = str, int, bool, dict, _MAX_EPOCH, _MISSING
        hashes, kinds = cache.hashes, cache.kinds
        for i, (pos, data, uid, cid) in enumerate(cands):
            get = data.get
            body = get("body")
            score = get("score")
            author = get("author")
            parent = get("parent_id")
            sub = get("is_submitter")
            dist = get("distinguished")
            st = get("stickied")
            created = get("created_utc")
            # collected_us(), inlined: this loop runs once per dump comment
            meta = get("_meta")
            when = meta.get("retrieved_2nd_on") if meta.__class__ is dict_ else None
            if when is None or when == "":
                when = get("retrieved_on")
                if when is None or when == "":
                    when = get("retrieved_utc")
            if ((created is not None and not (created.__class__ is int_ and 0 <= created <= max_epoch))
                    or (when is not None and when != "" and not (when.__class__ is int_ and 0 <= when <= max_epoch))
                    or (body is not None and body.__class__ is not str_)
                    or (score is not None and score.__class__ is not int_)
                    or (author is not None and author.__class__ is not str_)
                    or (parent is not None and parent.__class__ is not str_)
                    or (dist is not None and dist.__class__ is not str_)
                    or (sub is not None and sub.__class__ is not bool_)
                    or (st is not None and st.__class__ is not bool_)):
                slow.append((i, None))
                continue
            try:
                raw = pack_raw_inplace(data, cache, True)
            except Exception as exc:  # noqa: BLE001 - e.g. nesting beyond orjson's dump limit
                slow.append((i, exc))
                continue
            a_pos(pos)
            a_uid(uid)
            a_cid(cid)
            a_par(parent[3:] if parent and parent.startswith("t1_") else None)
            a_text(body)
            a_score(score)
            if author is None:
                a_ah(None)
                a_ak("deleted")
            else:
                h = hashes.get(author, missing)  # pack_raw_inplace just hashed it: a hit
                a_ah(cache.miss(author) if h is missing else h)
                k = kinds.get(author, missing)
                a_ak(cache.kind(author) if k is missing else k)
            a_cr(None if created is None else created * 1_000_000)
            a_sub(sub)
            a_dist(dist)
            a_st(st)
            a_col(fallback_us if when is None or when == "" else when * 1_000_000)
            a_raw(raw)
        return slow

    def table(self, schema: pa.Schema) -> pa.Table:
        """The columns as a table of ``schema`` (the ``comments`` schema); rows in ``pos`` order of adding."""
        n = len(self.pos)
        return pa.Table.from_arrays([
            pa.array(self.uid, pa.string()),
            pa.repeat(pa.scalar("reddit", pa.string()), n),
            pa.array(self.comment_id, pa.string()),
            pa.array(self.parent_id, pa.string()),
            pa.repeat(pa.scalar(0, pa.int32()), n),
            pa.array(self.text, pa.string()),
            pa.array(self.score, pa.int64()),
            pa.nulls(n, pa.int64()),
            pa.array(self.author_hash, pa.string()),
            pa.array(self.author_kind, pa.string()),
            pa.array(self.created_at, _TS),
            pa.array(self.is_submitter, pa.bool_()),
            pa.array(self.distinguished, pa.string()),
            pa.array(self.stickied, pa.bool_()),
            pa.array(self.collected_at, _TS),
            self.raw.finish(),
        ], schema=schema)


class ItemColumns:
    """``items`` columns of the submissions mapped so far (``pos``: each row's place in the batch)."""

    def __init__(self) -> None:
        self.pos: list[int] = []
        self.uid: list[str] = []
        self.item_id: list[str] = []
        self.url: list[str | None] = []
        self.permalink: list[str | None] = []
        self.title: list[str | None] = []
        self.text: list[str | None] = []
        self.community: list[str | None] = []
        self.author_hash: list[str | None] = []
        self.created_at: list[int | None] = []
        self.collected_at: list[int] = []
        self.media_kind: list[str] = []
        self.media_urls: list[list[str]] = []
        self.post_hint: list[str | None] = []
        self.flair: list[str | None] = []
        self.over_18: list[bool | None] = []
        self.spoiler: list[bool | None] = []
        self.score: list[int | None] = []
        self.upvote_ratio: list[float | None] = []
        self.num_comments: list[int | None] = []
        self.subscriber_count: list[int | None] = []
        self.raw = _BinaryBuilder()

    def __len__(self) -> int:
        return len(self.pos)

    def add(self, pos: int, data: dict[str, Any], uid: str, item_id: str,
            media: tuple[str, list[str]] | None, fallback_us: int, cache: AuthorCache) -> bool:
        """Map one submission; False (record untouched) when it needs the reference mapping.
        ``media``: :func:`classify_media` of the record when the caller already computed it.
        Raises what ``item_row`` raises for this record (``classify_media`` on an odd shape,
        ``pack_raw`` on nesting beyond orjson's limit); nothing is added then."""
        get = data.get
        url, permalink, title, text = get("url"), get("permalink"), get("title"), get("selftext")
        community, author, hint, flair = get("subreddit"), get("author"), get("post_hint"), get("link_flair_text")
        over_18, spoiler = get("over_18"), get("spoiler")
        score, ratio, comments, subs = (get("score"), get("upvote_ratio"), get("num_comments"),
                                        get("subreddit_subscribers"))
        created = _epoch_us(get("created_utc"))
        collected = collected_us(data, fallback_us)
        for value in (url, permalink, title, text, community, author, hint, flair):
            if value is not None and value.__class__ is not str:
                return False
        for value in (over_18, spoiler):
            if value is not None and value.__class__ is not bool:
                return False
        for value in (score, comments, subs):
            if value is not None and value.__class__ is not int:
                return False
        if created is _MISSING or collected is _MISSING or (ratio is not None and ratio.__class__ is not float):
            return False
        kind, urls = media if media is not None else classify_media(data)
        raw = pack_raw_inplace(data, cache, False)
        self.pos.append(pos)
        self.uid.append(uid)
        self.item_id.append(item_id)
        self.url.append(url)
        self.permalink.append(REDDIT + permalink if permalink and permalink.startswith("/") else permalink)
        self.title.append(title)
        self.text.append(text)
        self.community.append(community)
        self.author_hash.append(None if author is None else cache.hash(author))
        self.created_at.append(created)
        self.collected_at.append(collected)
        self.media_kind.append(kind)
        self.media_urls.append(urls)
        self.post_hint.append(hint)
        self.flair.append(flair)
        self.over_18.append(over_18)
        self.spoiler.append(spoiler)
        self.score.append(score)
        self.upvote_ratio.append(ratio)
        self.num_comments.append(comments)
        self.subscriber_count.append(subs)
        self.raw.append(raw)
        return True

    def table(self, schema: pa.Schema) -> pa.Table:
        """The columns as a table of ``schema`` (the ``items`` schema)."""
        n = len(self.pos)
        fields = {f.name: f.type for f in schema}
        return pa.Table.from_arrays([
            pa.array(self.uid, pa.string()),
            pa.repeat(pa.scalar("reddit", pa.string()), n),
            pa.array(self.item_id, pa.string()),
            pa.repeat(pa.scalar("dump", pa.string()), n),
            pa.array(self.url, pa.string()),
            pa.array(self.permalink, pa.string()),
            pa.array(self.title, pa.string()),
            pa.array(self.text, pa.string()),
            pa.array(self.community, pa.string()),
            pa.array(self.author_hash, pa.string()),
            pa.array(self.created_at, _TS),
            pa.array(self.collected_at, _TS),
            pa.array(self.media_kind, pa.string()),
            pa.array(self.media_urls, fields["media_urls"]),
            pa.array(self.post_hint, pa.string()),
            pa.array(self.flair, pa.string()),
            pa.array(self.over_18, pa.bool_()),
            pa.array(self.spoiler, pa.bool_()),
            pa.nulls(n, pa.string()),
            pa.array(self.score, pa.int64()),
            pa.array(self.upvote_ratio, pa.float64()),
            pa.array(self.num_comments, pa.int64()),
            pa.nulls(n, pa.int64()),
            pa.nulls(n, pa.int64()),
            pa.nulls(n, pa.int64()),
            pa.array(self.subscriber_count, pa.int64()),
            pa.nulls(n, fields["heatmap"]),
            self.raw.finish(),
        ], schema=schema)
