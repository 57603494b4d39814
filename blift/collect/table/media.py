"""The media a table row names, made into ``media_kind`` / ``media_urls`` (and a ``videos`` row
for a local video file).

* An ``http(s)`` URL stays a URL: ``media.download`` fetches it later and checks its bytes.
  With ``media_kind: auto`` its extension says image or video; an extension it does not know
  (``https://cdn.example/123?w=600`` is common) counts as an image, and ``media.download`` fails
  it as ``not_an_image`` if it is not one.
* Anything else with ``://`` (``ftp://``, ``s3://``...) is refused: it is neither a URL blift
  fetches nor a local path.
* A local path is read only inside the request's allowed folders, with no symbolic link on the
  way (:class:`blift.collect.media.local.LocalRoots`), is identified by its bytes (images) or its
  container (videos), and is copied into the run's content-addressed store: the item names it
  as a ``run:`` reference. An image so stored is checked by ``media.download`` with no network;
  a video gets a ``videos`` row (``file_status: ok``, path, hash, size), which ``media.download``
  probes with ffprobe as it does a collected YouTube video.

A remote *video* URL becomes a video item with no ``videos`` row, which ``media.download``
downloads itself (:mod:`blift.collect.media.video_fetch`). Limit today: a video item holds
exactly one file (a row naming a video and anything else is an error).
"""

from __future__ import annotations

import os
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blift.collect.media.local import LocalFileRefused, LocalMedia, LocalRoots, identify, run_ref, store_copy
from blift.collect.media.store import MediaStore, StoredFile
from blift.collect.table.mapping import MediaRef
from blift.errors import InvalidRecord
from blift.storage import RunPath

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ogv", ".flv", ".mpg", ".mpeg",
                              ".ts", ".3gp"})
_CACHE_SIZE = 4096  # stored local files remembered by (path, size, mtime): a file named by many rows is hashed once


@dataclass
class ResolvedMedia:
    """A row's media: ``kind`` (image, gallery, video, or None for none), the ``media_urls``, and
    for a local video the file facts of its ``videos`` row."""

    kind: str | None
    urls: list[str]
    video_file: dict[str, Any] | None = None
    first_url: str | None = None  # the first http(s) URL, for items.url


def url_kind(path: str) -> str:
    """image or video from the extension of a URL's path (unknown: image)."""
    name = path.rpartition("/")[2]
    dot = name.rfind(".")
    return "video" if dot > 0 and name[dot:].lower() in VIDEO_EXTENSIONS else "image"


def _host_and_path(rest: str) -> tuple[str, str]:
    """Host and path of what follows ``scheme://`` (what urlsplit gives, without its ~5 us: it
    caches, but a table's URLs are all different)."""
    end = len(rest)
    for stop in "/?#":
        at = rest.find(stop)
        if 0 <= at < end:
            end = at
    path = rest[end:]
    for stop in "?#":
        path = path.partition(stop)[0]
    return rest[:end], path


class MediaResolver:
    """Turns media references into stored files and URLs for one stream (one store, one cache)."""

    def __init__(self, run_dir: RunPath, store_folder: str) -> None:
        self.store = MediaStore(run_dir, store_folder)
        self.counts: Counter[str] = Counter()
        self._stored: OrderedDict[tuple[str, int, int], tuple[LocalMedia, StoredFile, int]] = OrderedDict()

    def resolve(self, refs: list[MediaRef], mode: str, roots: LocalRoots | None, base: Path | None,
                where: str) -> ResolvedMedia:
        """``mode``: auto, image or video (the ``media_kind`` option). Raises InvalidRecord naming
        ``where`` and the column of the first bad reference."""
        found: list[tuple[str, str, dict[str, Any] | None]] = []  # (kind, media_urls entry, video file)
        first_url = None
        for ref in refs:
            value = ref.value
            head, sep, _ = value.partition("://")
            scheme = head.lower() if sep else ""
            if scheme in ("http", "https"):
                host, path = _host_and_path(value[len(head) + 3:])
                if not host:
                    raise self._bad(where, ref, "URL without a host", "bad_media")
                kind = url_kind(path) if mode == "auto" else mode
                found.append((kind, value, None))
                first_url = first_url or value
                self.counts["media_urls"] += 1
            elif scheme:
                raise self._bad(where, ref, f"{value!r:.100} is neither an http(s) URL nor a local path",
                                "bad_media")
            else:
                found.append(self._local(ref, mode, roots, base, where))
        if not found:
            return ResolvedMedia(None, [])
        videos = [f for f in found if f[0] == "video"]
        if videos and len(found) > 1:
            raise InvalidRecord(f"{where}: columns {sorted({r.column for r in refs})}: a video item takes exactly "
                                f"one file; the row names {len(found)} ({len(videos)} video)",
                                error_type="bad_media")
        if videos:
            return ResolvedMedia("video", [videos[0][1]], videos[0][2], first_url)
        return ResolvedMedia("image" if len(found) == 1 else "gallery", [f[1] for f in found], None, first_url)

    @staticmethod
    def _bad(where: str, ref: MediaRef, what: str, error_type: str) -> InvalidRecord:
        return InvalidRecord(f"{where}: column {ref.column!r}: {what}", error_type=error_type)

    def _local(self, ref: MediaRef, mode: str, roots: LocalRoots | None, base: Path | None,
               where: str) -> tuple[str, str, dict[str, Any] | None]:
        if roots is None:
            raise self._bad(where, ref, f"local path {ref.value!r:.100}, but this input allows no local files "
                            "(give the request media_roots: [folders])", "no_media_roots")
        try:
            path = roots.resolve(ref.value, base)
        except LocalFileRefused as exc:
            raise self._bad(where, ref, str(exc), exc.reason) from None
        media, stored, size = self._store(path, mode, where, ref)
        self.counts[f"media_local_{media.kind}s"] += 1
        video = None
        if media.kind == "video":
            video = {"file_status": "ok", "file_path": stored.path, "file_sha256": stored.sha256,
                     "file_bytes": size, "source_info": "table"}
        return media.kind, run_ref(stored.path), video

    def _store(self, path: Path, mode: str, where: str, ref: MediaRef) -> tuple[LocalMedia, StoredFile, int]:
        st = os.stat(path)
        key = (str(path), st.st_size, st.st_mtime_ns)
        hit = self._stored.get(key)
        if hit is not None:
            self._stored.move_to_end(key)
            media = hit[0]
        else:
            found = identify(path)
            if found is None:
                raise self._bad(where, ref, f"{ref.value!r:.100} is neither an image nor a video", "not_media")
            media = found
        if mode != "auto" and media.kind != mode:
            raise self._bad(where, ref, f"{ref.value!r:.100} is a {media.kind}, but media_kind is {mode}",
                            "wrong_kind")
        if hit is not None:
            return hit
        stored, size = store_copy(self.store, media)
        self.counts["stored_new" if stored.created else "stored_existing"] += 1
        self._stored[key] = (media, stored, size)
        if len(self._stored) > _CACHE_SIZE:
            self._stored.popitem(last=False)
        return media, stored, size
