"""What the downloader keeps: image bytes checked for what they are, stored once per content hash.

The checks trust only the bytes: the MIME type comes from magic numbers (a server's
Content-Type is often wrong, sometimes hostile), the pixel count is read from the format header
by hand and refused above a limit *before* Pillow decodes anything (a 30000x30000 PNG of zeros
is a few kilobytes on the wire and gigabytes in memory), and only then does Pillow verify the
structure and fully decode one frame to prove the file is whole.
"""

from __future__ import annotations

import hashlib
import io
import struct
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from PIL import Image

from blift.ids import file_sha256
from blift.storage import RunPath, commit_file, run_path
from blift.tables import atomic_write_bytes

# mime -> (file extension, Pillow format name)
IMAGE_TYPES: dict[str, tuple[str, str]] = {
    "image/jpeg": ("jpg", "JPEG"),
    "image/png": ("png", "PNG"),
    "image/gif": ("gif", "GIF"),
    "image/webp": ("webp", "WEBP"),
    "image/bmp": ("bmp", "BMP"),
}
_BMP_DIB_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})


class ImageRejected(Exception):
    """The bytes are not an acceptable image (``reason``: not_an_image, bad_image, decompression_bomb)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# --------------------------------------------------------------------------- sniffing


def sniff_mime(head: bytes) -> str | None:
    """Image MIME type from the first bytes (at least 18 for BMP, 12 for WebP), or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:2] == b"BM" and len(head) >= 18 and struct.unpack_from("<I", head, 14)[0] in _BMP_DIB_SIZES:
        return "image/bmp"
    return None


def describe_bytes(head: bytes) -> str:
    """A short guess at what non-image bytes are, for error messages."""
    text = head.lstrip()[:64].lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in text:
        return "an HTML page"
    if text.startswith((b"<?xml", b"<svg")):
        return "XML/SVG (not a raster image)"
    if text.startswith((b"{", b"[")):
        return "JSON"
    if not head:
        return "an empty body"
    if head[4:8] == b"ftyp":
        return "an MP4/ISO media file"
    return f"unknown bytes {head[:8].hex()}"


def require_image_head(head: bytes) -> None:
    """Reject a body as soon as its first bytes show it is not an image we accept."""
    if sniff_mime(head) is None:
        raise ImageRejected("not_an_image", f"body is {describe_bytes(head)}, not a JPEG/PNG/GIF/WebP/BMP image")


# --------------------------------------------------------------------------- header sizes


def header_size(data: bytes, mime: str) -> tuple[int, int] | None:
    """(width, height) read from the format header without decoding, or None if unreadable."""
    try:
        if mime == "image/png":
            if data[12:16] != b"IHDR":
                return None
            return struct.unpack_from(">II", data, 16)
        if mime == "image/gif":
            return struct.unpack_from("<HH", data, 6)
        if mime == "image/bmp":
            if struct.unpack_from("<I", data, 14)[0] == 12:
                w, h = struct.unpack_from("<HH", data, 18)
                return w, h
            w, h = struct.unpack_from("<ii", data, 18)
            return abs(w), abs(h)
        if mime == "image/webp":
            return _webp_size(data)
        if mime == "image/jpeg":
            return _jpeg_size(data)
    except struct.error:
        return None
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return w, h
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        w, h = struct.unpack_from("<HH", data, 26)
        return w & 0x3FFF, h & 0x3FFF
    return None


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Walk the JPEG marker segments up to the first start-of-frame."""
    i = 2
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            return None
        marker = data[i]
        i += 1
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        if i + 2 > n:
            return None
        (length,) = struct.unpack_from(">H", data, i)
        if marker in _SOF_MARKERS:
            h, w = struct.unpack_from(">HH", data, i + 3)
            return w, h
        i += length
    return None


# --------------------------------------------------------------------------- probing


@dataclass(frozen=True)
class ImageFacts:
    mime: str
    ext: str
    width: int
    height: int


def pixel_limit(max_pixels: int) -> int:
    """Our limit, never above Pillow's own warning threshold, so Pillow never has to warn."""
    pil = Image.MAX_IMAGE_PIXELS
    return max_pixels if pil is None else min(max_pixels, int(pil))


def probe_image(data: bytes, max_pixels: int) -> ImageFacts:
    """Prove ``data`` is one whole image of an accepted type and size; raise ImageRejected if not."""
    mime = sniff_mime(data[:32])
    if mime is None:
        raise ImageRejected("not_an_image", f"body is {describe_bytes(data[:64])}, not an accepted image type")
    ext, fmt = IMAGE_TYPES[mime]
    limit = pixel_limit(max_pixels)
    size = header_size(data, mime)
    if size is None:
        raise ImageRejected("bad_image", f"{fmt} header unreadable (no size found)")
    _check_pixels(size, limit, fmt)
    try:
        with Image.open(io.BytesIO(data), formats=[fmt]) as img:
            _check_pixels(img.size, limit, fmt)  # Pillow's view of the size, in case ours differs
            img.verify()
        with Image.open(io.BytesIO(data), formats=[fmt]) as img:  # verify() leaves it unusable
            img.load()
            width, height = img.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected("decompression_bomb", f"{fmt}: {exc}") from exc
    except ImageRejected:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure on untrusted bytes means "bad image"
        raise ImageRejected("bad_image", f"{fmt} does not decode: {type(exc).__name__}: {exc}") from exc
    if width <= 0 or height <= 0:
        raise ImageRejected("bad_image", f"{fmt} has an empty size {width}x{height}")
    return ImageFacts(mime=mime, ext=ext, width=width, height=height)


def _check_pixels(size: tuple[int, int], limit: int, fmt: str) -> None:
    width, height = size
    if width * height > limit:
        raise ImageRejected(
            "decompression_bomb",
            f"{fmt} header says {width}x{height} = {width * height} pixels, above the limit of {limit}",
        )


# --------------------------------------------------------------------------- the store


@dataclass(frozen=True)
class StoredFile:
    sha256: str
    path: str  # relative to the run folder, POSIX separators
    created: bool  # False when identical bytes were already stored


class MediaStore:
    """Content-addressed files under ``<run_dir>/<folder>/<sha[:2]>/<sha>.<ext>``.

    The same bytes land on the same path, so a file is stored once whatever URL or item it came
    from, concurrent writers of the same content are harmless (atomic rename of equal bytes), and
    a re-run never rewrites what it already has.
    """

    def __init__(self, run_dir: RunPath, folder: str) -> None:
        rel = PurePosixPath(folder)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise ValueError(f"media store folder {folder!r} must be a relative path inside the run folder")
        self.run_dir = run_path(run_dir)
        self.folder = rel

    def relpath(self, sha256: str, ext: str) -> str:
        return str(self.folder / sha256[:2] / f"{sha256}.{ext}")

    def put(self, data: bytes, ext: str) -> StoredFile:
        sha = hashlib.sha256(data).hexdigest()
        rel = self.relpath(sha, ext)
        target = self.run_dir / rel
        try:
            if target.stat().st_size == len(data):
                return StoredFile(sha, rel, created=False)
        except FileNotFoundError:
            pass
        atomic_write_bytes(target, data)
        return StoredFile(sha, rel, created=True)

    def put_file(self, src: Path, ext: str) -> tuple[StoredFile, int]:
        """Move a (large) file into the store: hash it in chunks, never holding it in memory, then
        commit it (a rename into the local run folder, an upload to an object store). Returns
        (stored, size). When the content is already stored, ``src`` is deleted and the existing
        file kept."""
        src = Path(src)
        sha, size = file_sha256(src), src.stat().st_size
        rel = self.relpath(sha, ext)
        target = self.run_dir / rel
        try:
            if target.stat().st_size == size:
                src.unlink()
                return StoredFile(sha, rel, created=False), size
        except FileNotFoundError:
            pass
        commit_file(src, target)
        return StoredFile(sha, rel, created=True), size
