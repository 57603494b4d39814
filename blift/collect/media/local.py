"""Media files a user already holds: read from allowed folders, stored by content, no network.

Sources that take local files (a folder of media, a table whose rows name paths) put each file
into the run's content-addressed media store themselves and hand ``media.download`` a ``run:``
reference to it instead of a URL; ``media.download`` then checks and probes the stored file as
it would a downloaded one (MIME from the bytes, the decompression-bomb guard, ffprobe for
videos). The user's own files are never moved or changed: they are copied (uploaded when the run
folder is on an object store). A hard link would save the space but tie the store's content to
a file the user may edit later, and the store's promise is that a path's bytes never change.

What a source may read is decided here, once: a path is allowed only when it resolves to a
regular file inside one of the source's roots, with no symbolic link on the way (a link could
point anywhere on the machine, and a table row is data, not a permission).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from blift.collect.media.store import IMAGE_TYPES, MediaStore, StoredFile, sniff_mime
from blift.ids import file_sha256
from blift.storage import commit_file, scratch_file

RUN_REF = "run:"  # a media reference to a file in the run folder (the media store)

#: Video containers by their first bytes (the store keeps the extension ffprobe and PyAV expect).
_VIDEO_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (4, b"ftyp", "mp4"),  # ISO BMFF: mp4, mov, m4v, 3gp (offset 4)
    (0, b"\x1a\x45\xdf\xa3", "mkv"),  # Matroska / WebM (EBML header)
    (0, b"OggS", "ogv"),
    (0, b"FLV\x01", "flv"),
)
_VIDEO_EXTENSIONS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "mkv", ".webm": "webm", ".avi": "avi",
                     ".ogv": "ogv", ".flv": "flv", ".mpg": "mpg", ".mpeg": "mpg", ".ts": "ts", ".3gp": "3gp"}


class LocalFileRefused(Exception):
    """A local path a source may not read (``reason``: outside_roots, symlink, not_a_file, missing)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class LocalMedia:
    """One local file as a source sees it: what kind of media, and its store extension."""

    path: Path
    kind: str  # "image" or "video"
    ext: str  # extension the store gives it
    mime: str | None  # for images: sniffed from the bytes


def run_ref(rel: str) -> str:
    """The ``media_urls`` entry naming a file in the run folder."""
    return RUN_REF + rel


def parse_run_ref(url: str) -> str | None:
    """The run-relative path of a ``run:`` reference (None for any other URL); a reference that
    leaves the run folder is None too."""
    if not url.startswith(RUN_REF):
        return None
    rel = PurePosixPath(url[len(RUN_REF):])
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        return None
    return str(rel)


class LocalRoots:
    """The folders a source may read files from."""

    def __init__(self, roots: list[str | Path]) -> None:
        if not roots:
            raise ValueError("no allowed folders given")
        resolved = []
        for root in roots:
            path = Path(root).expanduser()
            if not path.is_dir():
                raise ValueError(f"allowed folder {root} does not exist or is not a folder")
            resolved.append(path.resolve(strict=True))
        self.roots = tuple(resolved)

    def resolve(self, path: str | Path, base: Path | None = None) -> Path:
        """The file ``path`` names (relative to ``base``, else to the first root), checked: inside a
        root, no symbolic link in any component below the root, a regular file."""
        given = Path(path).expanduser()
        if not given.is_absolute():
            given = (base or self.roots[0]) / given
        absolute = Path(os.path.abspath(given))  # normalises "..", follows no link
        root = next((r for r in self.roots if absolute == r or absolute.is_relative_to(r)), None)
        if root is None:
            raise LocalFileRefused("outside_roots", f"{path}: outside the allowed folders "
                                   f"({', '.join(str(r) for r in self.roots)})")
        current = root
        for part in absolute.relative_to(root).parts:
            current = current / part
            if current.is_symlink():
                raise LocalFileRefused("symlink", f"{path}: {current} is a symbolic link; links are not followed")
        if not absolute.exists():
            raise LocalFileRefused("missing", f"{path}: no such file")
        if not absolute.is_file():
            raise LocalFileRefused("not_a_file", f"{path}: not a regular file")
        return absolute


def identify(path: Path) -> LocalMedia | None:
    """Image (by its bytes) or video (by its container's magic, else its extension); None for
    anything else (a text file, a PDF...)."""
    with open(path, "rb") as fh:
        head = fh.read(64)
    mime = sniff_mime(head)
    if mime is not None:
        return LocalMedia(path, "image", IMAGE_TYPES[mime][0], mime)
    for offset, magic, ext in _VIDEO_MAGIC:
        if head[offset:offset + len(magic)] == magic:
            suffix = _VIDEO_EXTENSIONS.get(path.suffix.lower())
            return LocalMedia(path, "video", suffix or ext, None)
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return LocalMedia(path, "video", "avi", None)
    suffix = _VIDEO_EXTENSIONS.get(path.suffix.lower())
    if suffix:  # MPEG-PS/TS and others without a reliable magic: ffprobe decides in media.download
        return LocalMedia(path, "video", suffix, None)
    return None


def store_copy(store: MediaStore, media: LocalMedia) -> tuple[StoredFile, int]:
    """Put a user's file into the content-addressed store without touching the original:
    (stored file, size). Identical content already stored is reused."""
    sha, size = file_sha256(media.path), media.path.stat().st_size
    rel = store.relpath(sha, media.ext)
    target = store.run_dir / rel
    try:
        if target.stat().st_size == size:
            return StoredFile(sha, rel, created=False), size
    except FileNotFoundError:
        pass
    tmp = scratch_file(target)  # next to the target when local, so the commit is a rename
    try:
        shutil.copyfile(media.path, tmp)
        commit_file(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return StoredFile(sha, rel, created=True), size
