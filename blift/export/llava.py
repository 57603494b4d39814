"""``blift export llava``: a release's instruction records as the JSON + media folder that LLaVA
and LLaMA-VID trainers read (the ``blift.json`` the Behavior-LLaVA authors tell users to build
for their ``train.sh``).

Layout written::

    <out>/blift.json                 the training file: a JSON list of {id, image|video, conversations}
    <out>/blift_<split>.json         one per further split asked (validation, test)
    <out>/images/...                 image files (hard links to the release's files when possible)
    <out>/videos/....npy             video frames, uint8 (N, 3, 224, 224)   (videos="frames")
    <out>/videos/....mp4             video files                             (videos="mp4")

Choices:

* **Paths** in ``image`` / ``video`` are relative to the export folder (``images/...``,
  ``videos/...``); train with ``--image_folder <out> --video_folder <out>`` (LLaMA-VID joins the
  folder and the record's path).
* **Splits.** ``blift.json`` holds the first split asked (``train`` by default), so pointing
  ``--data_path`` at it never trains on held-out records; every further split gets its own
  ``blift_<split>.json``.
* **Frames.** LLaMA-VID reads a ``.npy`` as the frames of a video (``np.load`` then its image
  processor) and decodes anything else with OpenCV at ``--video_fps``. The export gives it
  224 px frames (the resolution of the authors' ``llama-vid-13b-full-224-video-fps-1``):
  a release ``.npy`` that already is uint8 ``(N, 3, 224, 224)`` is linked as is; one of another
  size is letterboxed to 224 frame by frame; a record whose media is a video file is decoded at
  1 fps with PyAV (the frame on screen at 0 s, 1 s, 2 s, ...) and letterboxed (aspect kept, black
  bars), streaming frames to disk so a long video never sits in memory.
* **videos="mp4"** needs the video files in the release: a record whose media is a video file
  uses it, a frames record uses the file its ``videos`` row names; a video with frames only is
  not exported (reason ``no_mp4``), and the export fails when no video record has a file.
* **Where media come from**, in order: the release's file (``media[0]``); the bytes or frames a
  release written with ``images="bytes"`` / ``videos="frames"`` embeds in its ``image`` /
  ``video_frames`` columns; for videos, the file the release's ``videos`` config names
  (``file_path``), decoded to frames or, with ``videos="mp4"``, linked.
* **Missing media.** A record whose media is in none of those places is left out and named in
  the report (reason ``missing_media``); the rest is exported.
* **Atomicity.** Everything is written into a temporary sibling folder, validated with
  :func:`~blift.export.validate.validate_export` (the export fails with its problem list), then
  swapped in by two renames: ``out_dir`` is always the old complete export or the new one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from blift import schemas, tables
from blift.errors import BliftError
from blift.export.validate import (
    DEFAULT_MAX_LENGTH,
    EXPORT_FILE,
    FRAME_SIDE,
    VIDEO_SUFFIXES,
    export_files,
    load_tokenizer,
    validate_export,
)

INSTRUCTIONS = "instructions"
FRAMES_FPS = 1.0
_NPY_SUFFIX = ".npy"


class ExportError(BliftError):
    """The export cannot be written (no instructions in the release, unsafe target, bad media...)."""


class ExportValidationError(ExportError):
    """The written export breaks a rule its trainer relies on; ``problems`` lists each one."""

    def __init__(self, out_dir: Path, problems: list[str]) -> None:
        self.problems = problems
        shown = "\n  ".join(problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"{out_dir}: export failed validation ({len(problems)} problem(s)):\n  {shown}{more}")


@dataclass
class ExportReport:
    out_dir: Path
    records: dict[str, int] = field(default_factory=dict)  # split -> records exported
    files: dict[str, str] = field(default_factory=dict)  # split -> JSON file name
    images: int = 0  # image files placed
    videos: int = 0  # video files (.npy or mp4) placed
    linked: int = 0  # of the placed files, hard-linked
    decoded: int = 0  # videos decoded from a video file into frames
    resized: int = 0  # frame arrays letterboxed to 224 from another size
    skipped: dict[str, str] = field(default_factory=dict)  # record id -> why it is not exported
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.records.values())

    def summary_lines(self) -> list[str]:
        lines = [f"{self.files[s]}: {n} record(s) ({s})" for s, n in self.records.items()]
        lines.append(f"media: {self.images} image(s), {self.videos} video(s); {self.linked} hard-linked, "
                     f"{self.decoded} decoded to frames, {self.resized} resized")
        if self.skipped:
            reasons: dict[str, int] = {}
            for why in self.skipped.values():
                key = why.split(":", 1)[0]
                reasons[key] = reasons.get(key, 0) + 1
            lines.append("not exported: " + ", ".join(f"{k}={v}" for k, v in sorted(reasons.items())))
            lines.extend(f"  {rid}: {why}" for rid, why in list(self.skipped.items())[:20])
            if len(self.skipped) > 20:
                lines.append(f"  ... and {len(self.skipped) - 20} more")
        return lines


def export_llava(release_dir: Path, out_dir: Path, *, videos: Literal["frames", "mp4"] = "frames",
                 tokenizer: Any = None, max_length: int = DEFAULT_MAX_LENGTH,
                 splits: tuple[str, ...] | list[str] = ("train",), config: str | None = None) -> ExportReport:
    """Export the release in ``release_dir`` to ``out_dir`` (replacing an older export there).

    ``tokenizer`` (an object or a local folder) turns on the length check against ``max_length``.
    ``config`` picks the instruction config (default: ``instructions``, or the one config whose
    schema is instructions).
    """
    start = time.monotonic()
    release_dir, out_dir = Path(release_dir), Path(out_dir)
    if videos not in ("frames", "mp4"):
        raise ExportError(f"videos={videos!r}: use 'frames' or 'mp4'")
    splits = tuple(dict.fromkeys(splits))
    if not splits:
        raise ExportError("no splits to export")
    _check_target(release_dir, out_dir)
    config_dir = _instruction_config(release_dir, config)
    shards = {s: sorted(config_dir.glob(f"{s}-*.parquet")) for s in splits}
    empty = [s for s in splits if not shards[s]]
    if empty:  # an empty blift_<split>.json would look like an export of nothing
        have = sorted({p.name.split("-", 1)[0] for p in config_dir.glob("*.parquet")})
        raise ExportError(f"{config_dir}: no shards for split(s) {empty} (the release has {have}); "
                          f"ask for splits={tuple(s for s in splits if s in have)}")
    tok = load_tokenizer(tokenizer) if tokenizer is not None else None

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    report = ExportReport(out_dir=out_dir)
    try:
        placer = _MediaPlacer(release_dir, tmp, videos, report)
        video_records = 0
        for i, split in enumerate(splits):
            name = EXPORT_FILE if i == 0 else f"blift_{split}.json"
            written = 0
            with open(tmp / name, "w", encoding="utf-8") as fh:  # streamed: a big split never sits in memory
                fh.write("[")
                for rec in _read_records(shards[split]):
                    if rec["media_kind"] == "video":
                        video_records += 1
                    out = placer.place(rec)
                    if out is not None:
                        fh.write(("\n" if not written else ",\n") + json.dumps(out, ensure_ascii=False))
                        written += 1
                fh.write("\n]\n")
            report.records[split], report.files[split] = written, name
        if videos == "mp4" and video_records and not report.videos:
            raise ExportError(f"{release_dir}: videos='mp4' but none of its {video_records} video record(s) has a "
                              f"video file in the release (it holds frames only); export with videos='frames'")
        problems = validate_export(tmp, tok, max_length if tok is not None else None)
        if problems:
            raise ExportValidationError(out_dir, problems)
        report.seconds = round(time.monotonic() - start, 3)
        tables.swap_folder(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


# --------------------------------------------------------------------------- inputs


def _check_target(release_dir: Path, out_dir: Path) -> None:
    if not (release_dir / "data").is_dir():
        raise ExportError(f"{release_dir}: not a release folder (no data/); run `blift release` first")
    rel, out = release_dir.resolve(), out_dir.resolve()
    if out == rel or rel.is_relative_to(out) or out.is_relative_to(rel):
        raise ExportError(f"export folder {out_dir} overlaps the release {release_dir}; pick another")
    if out_dir.exists() and any(out_dir.iterdir()) and not export_files(out_dir):
        raise ExportError(f"{out_dir} exists and is not an export (no {EXPORT_FILE}); refusing to replace it")


def _instruction_config(release_dir: Path, config: str | None) -> Path:
    """The folder of the instruction config: named, from release.json, or ``data/instructions``."""
    if config is None:
        config = INSTRUCTIONS
        try:
            from blift.release.manifest import read_manifest

            manifest = read_manifest(release_dir)
        except BliftError:
            manifest = None  # releases written before release.json existed
        if manifest is not None and INSTRUCTIONS not in manifest.configs:
            candidates = [n for n, c in manifest.configs.items() if c.schema_name == "instructions"]
            if len(candidates) == 1:
                config = candidates[0]
    folder = release_dir / "data" / config
    if not folder.is_dir():
        raise ExportError(f"{release_dir}: no instruction config {config!r} (no {folder}); "
                          f"release the instructions or name the config")
    return folder


_COLUMNS = ["id", "uid", "media_kind", "media", "conversations"]
#: Columns a release may add to embed media (writer options images="bytes" / videos="frames").
_EMBEDDED = ["image", "video_frames"]


def _read_records(paths: list[Path]) -> Iterator[dict[str, Any]]:
    """The records of one split, row group by row group (a big split never sits in memory).

    Embedded frames stay Arrow data until a record needs them (``_frames`` holds a callable):
    turning a clip into Python lists would cost millions of objects.
    """
    for path in paths:
        schema = pq.read_schema(path)
        stamped = schemas.schema_of_file_metadata(schema.metadata, where=str(path))
        if stamped.name != "instructions":
            raise ExportError(f"{path}: holds table {stamped.name!r}, expected 'instructions'")
        columns = _COLUMNS + [c for c in _EMBEDDED if c in schema.names]
        pf = pq.ParquetFile(path)
        for group in range(pf.num_row_groups):
            t = pf.read_row_group(group, columns=columns)
            frames = t.column("video_frames").combine_chunks() if "video_frames" in t.column_names else None
            plain = t.drop_columns(["video_frames"]) if frames is not None else t
            for i, rec in enumerate(plain.to_pylist()):
                if frames is not None:
                    rec["_frames"] = (lambda arr=frames, row=i: _frames_row(arr, row))
                yield rec


def _frames_row(arr: pa.Array, row: int) -> np.ndarray | None:
    """Row ``row`` of a ``video_frames`` column (Array4D or its nested-list storage) as uint8 (N, C, H, W)."""
    if isinstance(arr, pa.ExtensionArray):
        arr = arr.storage
    if not arr[row].is_valid:
        return None
    values = arr.slice(row, 1).flatten()  # the N frames
    n = len(values)
    if n == 0:
        return None
    dims = [n]
    for _ in range(3):
        total = len(values)
        values = values.flatten()
        dims.append(len(values) // total if total else 0)
    shape = (n, dims[1], dims[2], dims[3])
    return values.to_numpy(zero_copy_only=False).astype(np.uint8, copy=False).reshape(shape)


def _video_files(release_dir: Path) -> dict[str, str]:
    """uid -> release-relative video file, from the release's ``videos`` config (when it has one)."""
    out: dict[str, str] = {}
    data = release_dir / "data"
    for config_dir in sorted(p for p in data.iterdir() if p.is_dir()):
        files = sorted(config_dir.glob("*.parquet"))
        if not files:
            continue
        meta = pq.read_schema(files[0]).metadata
        try:
            name = schemas.schema_of_file_metadata(meta, where=str(files[0])).name
        except BliftError:
            continue
        if name != "videos":
            continue
        for f in files:
            t = pq.read_table(f, columns=["uid", "file_path"])
            for uid, path in zip(t.column("uid").to_pylist(), t.column("file_path").to_pylist()):
                if path:
                    out.setdefault(uid, path)
    return out


# --------------------------------------------------------------------------- media


class _MediaPlacer:
    """Puts each record's media under ``images/`` or ``videos/`` once and builds its JSON record.

    Where media come from, in order: the release's file (``media[0]``); the bytes or frames the
    release embedded (``image`` / ``video_frames`` columns); for videos, the video file the
    ``videos`` config names (decoded to frames, or linked with ``videos="mp4"``).
    """

    def __init__(self, release_dir: Path, out: Path, videos: str, report: ExportReport) -> None:
        self.release_dir, self.out, self.videos, self.report = release_dir, out, videos, report
        self.done: dict[str, str | None] = {}  # release path -> export path (None: failed, reason in why)
        self.why: dict[str, str] = {}
        self._video_files: dict[str, str] | None = None

    def video_file(self, uid: str) -> Path | None:
        if self._video_files is None:
            self._video_files = _video_files(self.release_dir)
        rel = self._video_files.get(uid)
        if rel is None:
            return None
        pure = PurePosixPath(rel)
        if pure.is_absolute() or ".." in pure.parts:
            return None
        path = self.release_dir / pure
        return path if path.is_file() else None

    def place(self, rec: dict[str, Any]) -> dict[str, Any] | None:
        rid, kind, media = rec["id"], rec["media_kind"], rec.get("media") or []
        if not media:
            self.report.skipped[rid] = "no_media: the record has no media path"
            return None
        rel = media[0]
        key = "video" if kind == "video" else "image"
        if rel not in self.done:
            try:
                self.done[rel] = self._place(rel, key, rec)
            except _Skip as skip:
                self.done[rel], self.why[rel] = None, str(skip)
        placed = self.done[rel]
        if placed is None:
            self.report.skipped[rid] = self.why[rel]
            return None
        turns = [{"from": t["from"], "value": t["value"]} for t in rec["conversations"]]
        return {"id": rid, key: placed, "conversations": turns}

    def _place(self, rel: str, key: str, rec: dict[str, Any]) -> str:
        pure = PurePosixPath(rel)
        if pure.is_absolute() or ".." in pure.parts or not pure.parts:
            raise _Skip(f"bad_path: media path {rel!r} is not relative to the release")
        src = self.release_dir / pure
        inner = PurePosixPath(*pure.parts[1:]) if pure.parts[0] == "media" and len(pure.parts) > 1 else pure
        if key == "image":
            dst = PurePosixPath("images") / inner
            embedded = (rec.get("image") or {}).get("bytes")
            if src.is_file():
                self._link(src, dst)
            elif embedded:
                tables.atomic_write_bytes(self.out / dst, embedded)
            else:
                raise _Skip(f"missing_media: {rel} is not in the release")
            self.report.images += 1
            return str(dst)
        placed = self._place_mp4(src, inner, rec) if self.videos == "mp4" else self._place_frames(src, inner, rec)
        self.report.videos += 1
        return str(placed)

    def _place_mp4(self, src: Path, inner: PurePosixPath, rec: dict[str, Any]) -> PurePosixPath:
        if src.suffix.lower() in VIDEO_SUFFIXES and src.is_file():
            dst = PurePosixPath("videos") / inner
            self._link(src, dst)
            return dst
        video = self.video_file(rec["uid"])
        if video is None:
            raise _Skip(f"no_mp4: {inner.name}: the release has no video file for {rec['uid']} (frames only)")
        dst = PurePosixPath("videos") / PurePosixPath(*video.relative_to(self.release_dir).parts[1:])
        self._link(video, dst)
        return dst

    def _place_frames(self, src: Path, inner: PurePosixPath, rec: dict[str, Any]) -> PurePosixPath:
        dst = PurePosixPath("videos") / inner.with_suffix(_NPY_SUFFIX)
        if src.suffix == _NPY_SUFFIX and src.is_file():
            self._frames_from_npy(src, dst)
            return dst
        frames = rec["_frames"]() if "_frames" in rec else None
        if frames is not None:
            self._frames_from_array(frames, dst, src.name)
            return dst
        video = src if src.suffix.lower() in VIDEO_SUFFIXES and src.is_file() else self.video_file(rec["uid"])
        if video is None:
            raise _Skip(f"missing_media: {inner} is not in the release (no frames, no video file)")
        from blift.video import VideoReadError, decode_frames, write_frames

        try:
            write_frames(self.out / dst, decode_frames(video, FRAMES_FPS, FRAME_SIDE), FRAME_SIDE)
        except VideoReadError as exc:
            raise _Skip(f"bad_video: {video.name}: {exc}") from None
        self.report.decoded += 1
        return dst

    def _link(self, src: Path, rel: PurePosixPath) -> None:
        dst = self.out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
            self.report.linked += 1
        except OSError:
            shutil.copy2(src, dst)

    def _frames_from_npy(self, src: Path, rel: PurePosixPath) -> None:
        try:
            arr = np.load(src, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise _Skip(f"bad_media: {src.name}: not a readable .npy ({exc})") from None
        if arr.shape[2:] == (FRAME_SIDE, FRAME_SIDE) and arr.dtype == np.uint8 and arr.ndim == 4 and arr.shape[1] == 3:
            self._link(src, rel)
        else:
            self._frames_from_array(arr, rel, src.name)

    def _frames_from_array(self, arr: np.ndarray, rel: PurePosixPath, name: str) -> None:
        """Write frames (N, 3, H, W) uint8, letterboxed to 224 when they have another size."""
        from blift.video import letterbox, write_frames

        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[1] != 3 or arr.shape[0] < 1:
            raise _Skip(f"bad_media: {name}: frames must be uint8 (N, 3, H, W), got {arr.dtype} {tuple(arr.shape)}")
        if arr.shape[2:] == (FRAME_SIDE, FRAME_SIDE):
            write_frames(self.out / rel, iter(arr), FRAME_SIDE)
            return
        from PIL import Image

        frames = (letterbox(Image.fromarray(np.ascontiguousarray(f.transpose(1, 2, 0))), FRAME_SIDE) for f in arr)
        write_frames(self.out / rel, frames, FRAME_SIDE)
        self.report.resized += 1


class _Skip(Exception):
    """This record's media cannot be exported; the message is the reason the report shows."""


