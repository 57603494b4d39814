"""``blift release``: turn a run folder into the Hugging Face dataset layout, then check it loads.

Layout written::

    <out>/README.md                                       the card (blift.release.card)
    <out>/release.json                                    what the release holds (blift.release.manifest)
    <out>/stats.json                                      the run's stats.json, copied (the card's filters)
    <out>/data/<config>/<split>-00000-of-0000N.parquet    size-cut shards per config and split
    <out>/media/...                                        files the records point to (paths mode)

Configs (defaults; ``configs=`` picks others):

* ``instructions`` (default config) from ``instructions``; ``items`` from ``items_clean``;
  ``comments`` from ``comments_clean``.
* ``scenes`` from ``scenes``, each scene joined with its row of the run's ``scene_behavior``
  table, which the instruct stage writes (:mod:`blift.stages.instruct.scene_behavior`): the
  per-scene replay values of its item's heatmap (``replay_mean``, ``replay_peak``) and the words
  spoken in it (``transcript``), as the video records compute them. A run whose instruct stage
  predates that table is refused with the command that writes it; ``videos`` from ``videos``.
  Both are optional: left out when the run has no such dataset. Their rows are limited to the
  items the release holds (``items_clean``): a video dropped by ``clean`` does not come back
  through them. The added columns are declared, with their meaning, in
  :mod:`blift.release.features` (the joined ones as ``schemas/scene_behavior.yaml`` declares them).

Choices:

* **Splits.** Instruction rows carry their ``split`` (a hash of the item uid). Other configs have
  no split column; they take the split of their uid's instruction records when the release has
  them, else :func:`blift.ids.split_of` with ``split_validation`` / ``split_test``. So an item, its
  comments, scenes and instruction records always share a split.
* **Images** (``images=``): ``paths`` (default) keeps ``media`` as paths to files copied under
  ``media/``. ``bytes`` adds an ``image`` column ``{bytes, path}`` (typed ``datasets.Image()``
  through the shards' ``huggingface`` metadata, so ``load_dataset`` gives PIL images) to the
  instructions config, and a ``keyframe`` column to the scenes config; those image files are then
  not copied (``media`` / ``keyframe_path`` still name them, release-relative, as ``image.path``
  does). The behavior and content records of one post carry the same bytes twice: simple rows
  beat a join for trainers, and zstd cannot save much on JPEG anyway.
* **Videos** (``videos=``): ``paths`` (default) copies each record's ``.npy`` frames (or mp4)
  under ``media/``. ``frames`` adds a ``video_frames`` column holding the ``.npy`` frames as
  ``Array4D((None, 3, H, W), uint8)`` (nested uint8 lists in Parquet: every reader can open them,
  ``datasets`` restores the shape) and does not copy the ``.npy`` files. One release has one frame
  size (``H``, ``W``): a second size is an error naming the record (re-run ``scenes`` with one
  ``side``, or use ``videos="paths"``). The ``videos`` config's ``file_path`` (the mp4) is a copied
  path in both modes.
* **Shards** are cut when the rows gathered for a split reach ``max_shard_bytes`` of
  *uncompressed* Arrow data (``Table.nbytes``); the cut point uses the mean row size, so the same
  run always gives the same files. Row groups aim at ``ROW_GROUP_BYTES`` uncompressed; rows with
  media bytes get small ones (``MEDIA_ROW_GROUP_BYTES``, at most ``MEDIA_ROW_GROUP_ROWS`` rows):
  a reader fetching one row reads its whole row group.
* **raw columns** (zstd platform JSON) are dropped by default (``drop_raw``); keep them with
  ``drop_raw=False`` (binary columns round-trip).
* **Media** paths in the run are relative to the run folder. With ``copy_media`` each referenced
  file is hard-linked (copied across file systems) to the same relative path under the release
  (paths not under ``media/`` get that prefix and the records are rewritten), so records resolve
  relative to the release root. Files are content-addressed and never modified, so linking is safe.
* **Empty configs** (no rows) are left out and listed in ``report.skipped``: ``datasets`` cannot
  read a split made of empty Parquet files.
* **Atomicity.** Everything is written into a temporary sibling folder, checked, then swapped in
  by two renames: the release folder is always either the old complete release or the new one.
* **Self-check** (:mod:`blift.release.check`): every config loaded back, normal and streaming,
  row counts compared; the instruction rows compared with the run's ``stats.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import blift
from blift import schemas, tables
from blift.ids import now_utc, split_of
from blift.release import features as feats
from blift.release.check import (  # re-exported: the writer is where callers look for them
    CheckResult,
    ReleaseCheckError,
    ReleaseError,
    StatsComparison,
    check_release,
    compare_with_stats,
)
from blift.release.manifest import (
    STATS_NAME,
    ReleaseConfig,
    ReleaseManifest,
    SplitFiles,
    languages_from_stats,
    write_manifest,
)
from blift.stages.instruct.scene_behavior import DATASET as SCENE_BEHAVIOR

__all__ = ["release", "write_split_shards", "check_release", "CheckResult", "ReleaseReport", "ReleaseError",
           "ReleaseCheckError", "DEFAULT_CONFIGS"]

DEFAULT_CONFIGS: dict[str, str] = {"instructions": "instructions", "items": "items_clean", "comments": "comments_clean",
                                   "scenes": "scenes", "videos": "videos"}
OPTIONAL_DEFAULTS = frozenset({"scenes", "videos"})  # left out, not an error, when the run lacks them
SPLITS = ("train", "validation", "test")
ROW_GROUP_BYTES = 64 * 2**20
MEDIA_ROW_GROUP_BYTES = 100_000_000
MEDIA_ROW_GROUP_ROWS = 200
_CONFIG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_SHARD_FILE = re.compile(r"^(?P<split>[A-Za-z0-9_]+)-(?P<i>\d{5})-of-(?P<n>\d{5})\.parquet$")

ImagesMode = Literal["paths", "bytes"]
VideosMode = Literal["paths", "frames"]


@dataclass
class ReleaseReport:
    out_dir: Path
    rows: dict[str, dict[str, int]] = field(default_factory=dict)  # config -> split -> rows
    files: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # config -> split -> shard paths
    media_files: int = 0
    media_linked: int = 0  # of media_files, hard-linked instead of copied
    media_bytes: int = 0
    embedded_media: dict[str, int] = field(default_factory=dict)  # column -> rows carrying media bytes
    check: CheckResult | None = None
    stats: StatsComparison | None = None
    skipped: dict[str, str] = field(default_factory=dict)  # config -> why it is not in the release
    duplicates: dict[str, int] = field(default_factory=dict)  # config -> rows dropped as repeats of a key
    not_released: dict[str, int] = field(default_factory=dict)  # config -> rows of items the release lacks
    manifest: ReleaseManifest | None = None

    def summary_lines(self) -> list[str]:
        """Human-readable lines for the CLI: rows and shards per config and split, the check."""
        lines = []
        for config, splits in self.rows.items():
            parts = ", ".join(f"{split}={n} ({len(self.files.get(config, {}).get(split, []))} shard(s))"
                              for split, n in splits.items())
            lines.append(f"{config}: {parts}")
        for config, why in self.skipped.items():
            lines.append(f"{config}: skipped ({why})")
        for config, n in self.duplicates.items():
            lines.append(f"{config}: {n} duplicate row(s) left out (same key in several shards)")
        for config, n in self.not_released.items():
            lines.append(f"{config}: {n} row(s) of items not in the release left out")
        if self.media_files:
            lines.append(f"media files: {self.media_files} ({self.media_bytes / 1e6:.1f} MB)")
        for column, n in self.embedded_media.items():
            lines.append(f"embedded media: {column} in {n} row(s)")
        if self.stats is not None and (self.stats.problems or self.check is None):
            lines.append(self.stats.note())
        if self.check is not None:
            lines.append(f"load_dataset check: {self.check}")
        return lines


# --------------------------------------------------------------------------- shards


def _row_group_rows(table: pa.Table) -> int:
    """Rows per row group: ~ROW_GROUP_BYTES, or small groups when rows carry media bytes."""
    if table.num_rows == 0:
        return 1
    per_row = max(1.0, table.nbytes / table.num_rows)
    if any(name in feats.MEDIA_COLUMNS for name in table.column_names):
        return max(1, min(MEDIA_ROW_GROUP_ROWS, int(MEDIA_ROW_GROUP_BYTES / per_row)))
    return max(1, min(table.num_rows, int(ROW_GROUP_BYTES / per_row)))


class _SplitWriter:
    """Gathers one split's rows and cuts them into shards of about ``max_bytes`` uncompressed.

    Parts are written under hidden names; :meth:`finish` renames them to their final
    ``<split>-0000i-of-0000N.parquet`` names and only then removes the split's older shards.
    """

    def __init__(self, folder: Path, split: str, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ReleaseError(f"max_shard_bytes must be positive, got {max_bytes}")
        self.folder, self.split, self.max_bytes = folder, split, max_bytes
        self._pending: list[pa.Table] = []
        self._bytes = 0
        self._tag = f"{os.getpid()}-{time.monotonic_ns()}"
        self.parts: list[Path] = []
        self.rows = 0  # written so far

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self._pending.append(table)
        self._bytes += table.nbytes
        while self._bytes >= self.max_bytes:
            buf = pa.concat_tables(self._pending)
            take = max(1, int(self.max_bytes / (buf.nbytes / buf.num_rows)))
            self._write(buf.slice(0, take))
            rest = buf.slice(take)
            self._pending = [rest] if rest.num_rows else []
            self._bytes = rest.nbytes if rest.num_rows else 0

    def finish(self) -> list[Path]:
        """Write what is left, give the shards their final names, remove the split's older shards."""
        if self._pending:
            self._write(pa.concat_tables(self._pending))
            self._pending, self._bytes = [], 0
        old = [p for p in split_shards(self.folder, self.split)]
        total = len(self.parts)
        final = []
        for i, part in enumerate(self.parts):
            target = self.folder / f"{self.split}-{i:05d}-of-{total:05d}.parquet"
            os.replace(part, target)
            final.append(target)
        self.parts = []
        for path in old:
            if path not in final:
                path.unlink(missing_ok=True)
        return final

    def abort(self) -> None:
        """Remove the parts written so far (the split's existing shards stay)."""
        for part in self.parts:
            part.unlink(missing_ok=True)
        self.parts, self._pending, self._bytes = [], [], 0

    def _write(self, table: pa.Table) -> None:
        path = self.folder / f".{self.split}-{len(self.parts):05d}.{self._tag}.partial.parquet"
        tables.atomic_write_parquet(path, table, row_group_size=_row_group_rows(table))
        self.parts.append(path)
        self.rows += table.num_rows


def split_shards(config_dir: Path, split: str) -> list[Path]:
    """The finished shards of one split of a config folder, in order."""
    if not config_dir.is_dir():
        return []
    found = []
    for p in config_dir.iterdir():
        m = _SHARD_FILE.match(p.name)
        if m and m.group("split") == split:
            found.append(p)
    return sorted(found)


def write_split_shards(table: pa.Table, config_dir: Path, split: str, max_shard_bytes: int) -> list[Path]:
    """Write ``table`` as the whole of one config's split: ``<split>-0000i-of-0000N.parquet`` files.

    Every file is written under a hidden name first; only when all are written are they renamed
    into place and the split's older shards (other names or another ``N``) removed, so a failure
    leaves the old split as it was. An empty ``table`` removes the split's shards and returns
    ``[]`` (``datasets`` cannot read a split of empty files: drop the split from the card).
    The shards keep ``table``'s metadata (blift schema stamp) and get its ``huggingface`` features.
    """
    config_dir = Path(config_dir)
    if not re.fullmatch(r"[A-Za-z0-9_]+", split):
        raise ReleaseError(f"split name {split!r}: use letters, digits and '_'")
    config_dir.mkdir(parents=True, exist_ok=True)
    meta = table.schema.metadata or {}
    schema_name = meta[schemas.META_NAME].decode() if schemas.META_NAME in meta else None
    table = feats.with_features_metadata(feats.restore_media_types(table), schema_name)
    writer = _SplitWriter(config_dir, split, max_shard_bytes)
    try:
        writer.add(table)
        return writer.finish()
    except BaseException:
        writer.abort()
        raise


# --------------------------------------------------------------------------- media


class _MediaCopier:
    """Links or copies the media files records point to, once each, under ``<release>/media``."""

    def __init__(self, run_dir: Path, release_dir: Path, *, copy: bool = True) -> None:
        self.run_dir, self.release_dir, self.copy = run_dir, release_dir, copy
        self.done: dict[str, str] = {}  # run-relative -> release-relative, files placed
        self.linked = 0
        self.bytes = 0

    def source(self, rel: str, *, record: str, where: Path) -> tuple[Path, str]:
        """Check a run-relative media path; return its file and its release-relative name."""
        pure = PurePosixPath(rel)
        if pure.is_absolute() or ".." in pure.parts or not pure.parts:
            raise ReleaseError(f"{where}: record {record!r}: media path {rel!r} is not relative to the run folder")
        src = self.run_dir / pure
        if not src.is_file():
            raise ReleaseError(f"{where}: record {record!r}: media file {rel!r} not found in {self.run_dir}")
        out = pure if pure.parts[0] == "media" else PurePosixPath("media") / pure
        return src, str(out)

    def place(self, rel: str, *, record: str, where: Path) -> str:
        """Put one file in place (when copying); return its path relative to the release root."""
        if rel in self.done:
            return self.done[rel]
        src, out = self.source(rel, record=record, where=where)
        if not self.copy:
            return rel  # records keep run-relative paths
        dst = self.release_dir / out
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
            self.linked += 1
        except OSError:
            shutil.copy2(src, dst)
        self.bytes += src.stat().st_size
        self.done[rel] = out
        return out

    def name(self, rel: str, *, record: str, where: Path) -> str:
        """Release-relative name of a file that is embedded, not copied (checked to exist)."""
        return self.source(rel, record=record, where=where)[1]


def _replace(table: pa.Table, name: str, values: list[Any], type_: pa.DataType | None = None) -> pa.Table:
    fld = table.schema.field(name)
    arr = pa.array(values, type=type_ or fld.type)
    return table.set_column(table.column_names.index(name), pa.field(name, arr.type, nullable=fld.nullable), arr)


# --------------------------------------------------------------------------- per-schema row transforms


@dataclass
class _Ctx:
    """What the transforms of one release share."""

    run_dir: Path
    release_dir: Path
    copier: _MediaCopier
    images: ImagesMode
    videos: VideosMode
    frame_shape: tuple[int, int, int] | None = None  # videos=frames: (C, H, W) of every frames file
    released_uids: set[str] | None = None  # items the release holds (None: no filter)
    scene_behavior: dict[tuple[str, int, int], dict[str, Any]] = field(default_factory=dict)  # (uid, media, scene)
    embedded: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def _instructions_rows(table: pa.Table, ctx: _Ctx, where: Path) -> pa.Table:
    """Place or embed each record's media; add ``image`` / ``video_frames`` per the options."""
    import numpy as np

    ids = table.column("id").to_pylist()
    kinds = table.column("media_kind").to_pylist()
    lists = table.column("media").to_pylist()
    images: list[dict[str, Any] | None] = []
    frames: list[Any] = []
    placed = []
    cache: dict[str, bytes] = {}
    for rid, kind, paths in zip(ids, kinds, lists):
        paths = paths or []
        image = frame = None
        out = []
        for i, rel in enumerate(paths):
            if i == 0 and kind == "image" and ctx.images == "bytes":
                src, name = ctx.copier.source(rel, record=rid, where=where)
                if rel not in cache:
                    cache = {rel: src.read_bytes()}  # behavior and content records of a post are adjacent
                image = {"bytes": cache[rel], "path": name}
                out.append(name)
            elif i == 0 and kind == "video" and ctx.videos == "frames" and rel.endswith(".npy"):
                src, name = ctx.copier.source(rel, record=rid, where=where)
                frame = np.load(src)
                _check_frames(frame, ctx.frame_shape, record=rid, path=rel)
                out.append(name)
            else:
                out.append(ctx.copier.place(rel, record=rid, where=where))
        images.append(image)
        frames.append(frame)
        placed.append(out)
    if placed != lists:
        table = _replace(table, "media", placed)
    if ctx.images == "bytes":
        table = table.append_column(pa.field("image", feats.IMAGE_STRUCT), pa.array(images, type=feats.IMAGE_STRUCT))
        ctx.embedded["instructions.image"] += sum(i is not None for i in images)
    if ctx.videos == "frames" and ctx.frame_shape is not None:
        table = table.append_column(pa.field("video_frames", feats.frames_type(ctx.frame_shape)),
                                    feats.frames_array(frames, ctx.frame_shape))
        ctx.embedded["instructions.video_frames"] += sum(f is not None for f in frames)
    return table


def _check_frames(frame: Any, shape: tuple[int, int, int] | None, *, record: str, path: str) -> None:
    if frame.dtype.name != "uint8" or frame.ndim != 4:
        raise ReleaseError(f"record {record!r}: frames file {path!r} holds {frame.dtype}{list(frame.shape)}, "
                           "expected uint8 (frames, 3, H, W)")
    if shape is not None and tuple(frame.shape[1:]) != shape:
        raise ReleaseError(
            f"record {record!r}: frames file {path!r} has frames of {tuple(frame.shape[1:])}, but this release's "
            f"video_frames column holds {shape} (set by the first frames file); one Array4D column has one "
            "frame size: re-run scenes with one `side`, or release with videos='paths'")


def _frame_shape(shard_files: list[Path], run_dir: Path) -> tuple[int, int, int] | None:
    """(C, H, W) of the first ``.npy`` a video record points to (read from its header only)."""
    import numpy as np

    for path in shard_files:
        t = pq.read_table(path, columns=["media_kind", "media"])
        for kind, paths in zip(t.column("media_kind").to_pylist(), t.column("media").to_pylist()):
            if kind == "video" and paths and paths[0].endswith(".npy") and (run_dir / paths[0]).is_file():
                arr = np.load(run_dir / paths[0], mmap_mode="r")
                if arr.ndim == 4:
                    return tuple(int(x) for x in arr.shape[1:])  # type: ignore[return-value]
    return None


def _scenes_rows(table: pa.Table, ctx: _Ctx, where: Path) -> pa.Table:
    """Join each scene's replay values and transcript (the run's ``scene_behavior``); place or embed keyframes."""
    rows = table.to_pylist()
    joined = [_scene_behavior_of(ctx, r) for r in rows]
    keyframes: list[dict[str, Any] | None] = []
    paths: list[str | None] = []
    for r in rows:
        rel = r.get("keyframe_path")
        record = f"{r['uid']}#{r['media_index']}/scene {r['scene']}"
        if rel is None:
            keyframes.append(None)
            paths.append(None)
        elif ctx.images == "bytes":
            src, name = ctx.copier.source(rel, record=record, where=where)
            keyframes.append({"bytes": src.read_bytes(), "path": name})
            paths.append(name)
        else:
            keyframes.append(None)
            paths.append(ctx.copier.place(rel, record=record, where=where))
    table = _replace(table, "keyframe_path", paths)
    declared = schemas.get(SCENE_BEHAVIOR).arrow
    for name in feats.SCENE_BEHAVIOR_COLUMNS:
        type_ = declared.field(name).type
        table = table.append_column(pa.field(name, type_), pa.array([j[name] for j in joined], type=type_))
    if ctx.images == "bytes":
        table = table.append_column(pa.field("keyframe", feats.IMAGE_STRUCT),
                                    pa.array(keyframes, type=feats.IMAGE_STRUCT))
        ctx.embedded["scenes.keyframe"] += sum(k is not None for k in keyframes)
    return table


def _scene_behavior_of(ctx: _Ctx, scene: dict[str, Any]) -> dict[str, Any]:
    """The ``scene_behavior`` row of one released scene; a scene without one means the instruct
    stage ran before the scenes were (re)written, and joining nulls would hide that."""
    key = (scene["uid"], scene["media_index"], scene["scene"])
    found = ctx.scene_behavior.get(key)
    if found is None:
        raise ReleaseError(
            f"{ctx.run_dir / SCENE_BEHAVIOR}: no row for scene {key[2]} of {key[0]}#{key[1]}, which the scenes table "
            f"holds: the instruct stage ran before these scenes were written; run `blift run PIPELINE --stage "
            f"instruct` to bring it up to date")
    return found


def _videos_rows(table: pa.Table, ctx: _Ctx, where: Path) -> pa.Table:
    """Place each video file; ``file_path`` becomes release-relative."""
    paths = table.column("file_path").to_pylist()
    uids = table.column("uid").to_pylist()
    placed = [None if p is None else ctx.copier.place(p, record=u, where=where) for u, p in zip(uids, paths)]
    return table if placed == paths else _replace(table, "file_path", placed)


_TRANSFORMS: dict[str, Callable[[pa.Table, _Ctx, Path], pa.Table]] = {
    "instructions": _instructions_rows,
    "scenes": _scenes_rows,
    "videos": _videos_rows,
}
# configs whose rows are limited to the items the release holds (other tables come from clean's output)
_FOLLOW_ITEMS = frozenset({"scenes", "videos", "transcripts", "media", "attributes", "captions", "frames"})


def _load_scene_behavior(ctx: _Ctx, scene_files: list[Path]) -> None:
    """The instruct stage's ``scene_behavior`` rows of the released items that have scenes.

    A run whose instruct stage predates that table is refused (naming the folder and the command
    that writes it) rather than released with empty replay and transcript columns; a release
    without scenes of released items needs no such table."""
    uids = _uids_of(scene_files)
    if ctx.released_uids is not None:
        uids &= ctx.released_uids
    if not uids:
        return
    folder = ctx.run_dir / SCENE_BEHAVIOR
    paths = tables.shard_paths(folder)
    if not paths:
        raise ReleaseError(
            f"{folder}: no shards; the scenes config joins the per-scene replay values and transcripts that the "
            f"instruct stage writes there, and this run's instruct stage predates that table: run "
            f"`blift run PIPELINE --stage instruct` to bring it up to date")
    wanted = pa.array(sorted(uids), type=pa.string())
    for path in paths:
        t = tables.read_shard(path, SCENE_BEHAVIOR)
        for row in t.filter(pc.is_in(t.column("uid"), value_set=wanted)).to_pylist():
            ctx.scene_behavior.setdefault((row["uid"], row["media_index"], row["scene"]), row)


# --------------------------------------------------------------------------- release


def release(
    run_dir: Path,
    out_dir: Path,
    *,
    configs: dict[str, str] | None = None,
    max_shard_bytes: int = 500_000_000,
    copy_media: bool = True,
    check: bool = True,
    streaming_check: bool = True,
    check_stats: bool = True,
    drop_raw: bool = True,
    images: ImagesMode = "paths",
    videos: VideosMode = "paths",
    split_validation: float = 0.05,
    split_test: float = 0.05,
    pretty_name: str | None = None,
    license: str = "other",
    takedown_contact: str | None = None,
    check_timeout_s: float = 3600.0,
) -> ReleaseReport:
    """Write the release of ``run_dir`` to ``out_dir`` (replacing an older release there) and check it.

    ``configs`` maps release config names to run dataset folders (default :data:`DEFAULT_CONFIGS`;
    ``scenes`` and ``videos`` are left out when the run has no such folder). ``images`` /
    ``videos`` pick how media travel (see the module docstring). ``license`` defaults to
    ``other``: the texts and media belong to their authors; set what applies to your release.
    With ``check``, every config is loaded back (and streamed, ``streaming_check``) and, with
    ``check_stats``, the instruction rows must match the run's ``stats.json``
    (:class:`ReleaseCheckError` otherwise, nothing replaced).
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if images not in ("paths", "bytes"):
        raise ReleaseError(f"images={images!r}: expected 'paths' or 'bytes'")
    if videos not in ("paths", "frames"):
        raise ReleaseError(f"videos={videos!r}: expected 'paths' or 'frames'")
    if max_shard_bytes < 1:
        raise ReleaseError(f"max_shard_bytes must be positive, got {max_shard_bytes}")
    report = ReleaseReport(out_dir=out_dir)
    explicit = configs is not None
    configs = dict(DEFAULT_CONFIGS if configs is None else configs)
    if not explicit:
        for name in sorted(OPTIONAL_DEFAULTS):
            if not tables.shard_paths(run_dir / configs[name]):
                report.skipped[name] = f"the run has no {configs.pop(name)!r} dataset"
    sources = _check_inputs(run_dir, out_dir, configs)
    stats = _read_stats(run_dir)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        ctx = _Ctx(run_dir=run_dir, release_dir=tmp, copier=_MediaCopier(run_dir, tmp, copy=copy_media),
                   images=images, videos=videos)
        items_dir = run_dir / configs.get("items", DEFAULT_CONFIGS["items"])
        if any(schema in _FOLLOW_ITEMS for _, schema in sources.values()) and tables.shard_paths(items_dir):
            ctx.released_uids = _uids_of(tables.shard_paths(items_dir))
        uid_split: dict[str, str] = {}
        facts = _Facts()
        out_configs: dict[str, ReleaseConfig] = {}
        # instruction configs first: their splits decide those of the others
        order = sorted(configs, key=lambda name: sources[name][1] != "instructions")
        for name in order:
            shard_files, schema_name = sources[name]
            if schema_name == "instructions" and videos == "frames":
                ctx.frame_shape = _frame_shape(shard_files, run_dir)
            if schema_name == "scenes":
                _load_scene_behavior(ctx, shard_files)
            rows, files, dupes, left_out = _write_config(
                name, shard_files, schema_name, tmp, ctx=ctx, uid_split=uid_split, facts=facts, drop_raw=drop_raw,
                max_shard_bytes=max_shard_bytes, split_validation=split_validation, split_test=split_test)
            if dupes:
                report.duplicates[name] = dupes
            if left_out:
                report.not_released[name] = left_out
            if not files:  # datasets cannot load a config made of empty Parquet files
                shutil.rmtree(tmp / "data" / name, ignore_errors=True)
                report.skipped[name] = f"{configs[name]!r} has no rows"
                continue
            report.rows[name] = rows
            report.files[name] = {s: [p.relative_to(tmp).as_posix() for p in fs] for s, fs in files.items()}
            out_configs[name] = ReleaseConfig(
                source=configs[name], schema_name=schema_name,
                splits={s: SplitFiles(rows=rows[s], files=report.files[name][s]) for s in rows})
        if not out_configs:
            raise ReleaseError(f"nothing to release: every config is empty ({', '.join(report.skipped)})")
        ordered = {n: out_configs[n] for n in configs if n in out_configs}
        default = "instructions" if "instructions" in ordered else next(
            (n for n, c in ordered.items() if c.schema_name == "instructions"), next(iter(ordered)))
        ordered[default].default = True
        report.media_files, report.media_linked, report.media_bytes = (
            len(ctx.copier.done), ctx.copier.linked, ctx.copier.bytes)
        report.embedded_media = dict(ctx.embedded)

        manifest = ReleaseManifest(
            blift_version=blift.__version__, created_at=now_utc(),
            pipeline=(stats or {}).get("pipeline"), pipeline_config_hash=pipeline_config_hash(run_dir),
            platforms=sorted(facts.platforms), collection_window=facts.window(), configs=ordered,
            images=images, videos=videos, media_files=report.media_files, media_bytes=report.media_bytes,
            max_shard_bytes=max_shard_bytes, takedown_contact=takedown_contact, license=license,
            pretty_name=pretty_name or f"{out_dir.name} (BLIFT-style)", languages=languages_from_stats(stats))
        report.manifest = manifest
        write_manifest(tmp, manifest)
        if stats is not None:
            shutil.copy2(run_dir / STATS_NAME, tmp / STATS_NAME)
        _write_card(tmp)

        inst = next((n for n, c in ordered.items() if c.schema_name == "instructions" and c.source == "instructions"),
                    None)
        if inst is not None:
            report.stats = compare_with_stats(stats, ordered[inst].rows, report.duplicates.get(inst, 0))
        if check and check_stats and report.stats is not None and report.stats.problems:  # before the slow load
            raise ReleaseCheckError(f"{run_dir}: " + "; ".join(report.stats.problems))
        if check:
            report.check = check_release(tmp, report.rows, streaming=streaming_check, timeout_s=check_timeout_s)
            if report.stats is not None:
                report.check.stats_note = report.stats.note()
        tables.swap_folder(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    readme = out_dir / "README.md"
    if tmp.name in readme.read_text(encoding="utf-8"):  # the card named the folder it was rendered in
        _write_card(out_dir)
    return report


def _write_card(release_dir: Path) -> None:
    """The card, rendered from the folder's release.json and stats.json (imported here: the card
    module brings Jinja2 and matplotlib, which importing the writer should not cost)."""
    from blift.release.card import write_card

    write_card(release_dir)


def _read_stats(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / STATS_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ReleaseError(f"{path}: not readable JSON ({exc}); fix or remove it") from exc
    if not isinstance(data, dict):
        raise ReleaseError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def pipeline_config_hash(run_dir: Path) -> str | None:
    """One hash of the per-stage config hashes in ``<run>/_blift/manifests/<stage>/*.json``.

    A stage whose shards ran under several configs contributes each of them (sorted): the hash
    then says the run mixes configs, which is true.
    """
    root = Path(run_dir) / "_blift" / "manifests"
    if not root.is_dir():
        return None
    per_stage: dict[str, set[str]] = defaultdict(set)
    for path in sorted(root.glob("*/*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ReleaseError(f"{path}: unreadable shard manifest ({exc})") from exc
        value = data.get("config_hash") if isinstance(data, dict) else None
        if value:
            per_stage[str(data.get("stage") or path.parent.name)].add(str(value))
    if not per_stage:
        return None
    blob = json.dumps({s: sorted(v) for s, v in sorted(per_stage.items())}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class _Facts:
    """Platforms and the collection window, gathered while configs are written."""

    def __init__(self) -> None:
        self.platforms: set[str] = set()
        self.bounds: dict[str, list[datetime]] = defaultdict(list)
        self.have_items = False

    def add(self, table: pa.Table, schema_name: str) -> None:
        if table.num_rows == 0:
            return
        if "platform" in table.column_names:
            self.platforms.update(p for p in pc.unique(table.column("platform")).to_pylist() if p)
        cols: tuple[str, ...] = ("created_at", "collected_at") if schema_name == "items" else ()
        if schema_name == "items":
            self.have_items = True
        elif schema_name == "instructions":
            cols = ("collected_at",)
        for col in cols:
            if col in table.column_names:
                mm = pc.min_max(table.column(col)).as_py()
                self.bounds[f"{schema_name}.{col}"] += [v for v in (mm["min"], mm["max"]) if v is not None]

    def window(self) -> dict[str, datetime | None]:
        """``created_at_min/max`` and ``collected_at_min/max`` of the released items (instruction
        rows give ``collected_at`` when no items config is released)."""
        src = "items" if self.have_items else "instructions"
        out: dict[str, datetime | None] = {}
        for col in ("created_at", "collected_at"):
            values = self.bounds.get(f"{src}.{col}", [])
            out[f"{col}_min"] = min(values) if values else None
            out[f"{col}_max"] = max(values) if values else None
        return out


def _uids_of(shard_files: list[Path]) -> set[str]:
    out: set[str] = set()
    for path in shard_files:
        out.update(pq.read_table(path, columns=["uid"]).column("uid").to_pylist())
    return out


def _check_inputs(run_dir: Path, out_dir: Path, configs: dict[str, str]) -> dict[str, tuple[list[Path], str]]:
    """Validate names and folders; return config -> (shard files, blift schema name)."""
    if not configs:
        raise ReleaseError("no configs to release")
    run_abs, out_abs = run_dir.resolve(), out_dir.resolve()
    if run_abs == out_abs or run_abs.is_relative_to(out_abs):
        raise ReleaseError(f"release folder {out_dir} would replace the run folder {run_dir}; pick another")
    if out_dir.exists() and any(out_dir.iterdir()) and not ((out_dir / "README.md").is_file()
                                                            and (out_dir / "data").is_dir()):
        raise ReleaseError(f"{out_dir} exists and is not a release (no README.md and data/); refusing to replace it")
    sources = {}
    for name, folder in configs.items():
        if not _CONFIG_NAME.match(name):
            raise ReleaseError(f"config name {name!r}: use letters, digits, '_' and '-'")
        shard_files = tables.shard_paths(run_dir / folder)
        if not shard_files:
            raise ReleaseError(
                f"config {name!r}: no shards in {run_dir / folder}; run the stage that writes {folder!r} "
                f"or leave the config out (configs={{...}})")
        first = pq.read_schema(shard_files[0])
        schema = schemas.schema_of_file_metadata(first.metadata, where=str(shard_files[0]))
        sources[name] = (shard_files, schema.name)
    return sources


# Rows with the same key are the same record (first shard in sorted order wins).
UNIQUE_KEYS: dict[str, tuple[str, ...]] = {
    "instructions": ("id",),
    "items": ("uid",),
    "comments": ("uid", "comment_id"),
    "media": ("uid", "index"),
    "attributes": ("uid", "media_index", "scene"),
    "scenes": ("uid", "media_index", "scene"),
    "videos": ("uid",),
}


def _write_config(name: str, shard_files: list[Path], schema_name: str, release_dir: Path, *, ctx: _Ctx,
                  uid_split: dict[str, str], facts: _Facts, drop_raw: bool, max_shard_bytes: int,
                  split_validation: float, split_test: float
                  ) -> tuple[dict[str, int], dict[str, list[Path]], int, int]:
    folder = release_dir / "data" / name
    folder.mkdir(parents=True, exist_ok=True)
    writers = {s: _SplitWriter(folder, s, max_shard_bytes) for s in SPLITS}
    key_cols = UNIQUE_KEYS.get(schema_name)
    transform = _TRANSFORMS.get(schema_name)
    seen: set[tuple[Any, ...]] = set()
    duplicates = left_out = 0
    for path in shard_files:
        table = tables.read_shard(path, schema_name)
        if key_cols:  # one post listed by two requests is collected in two shards: release it once
            keep = []
            for key in zip(*(table.column(c).to_pylist() for c in key_cols)):
                keep.append(key not in seen)
                seen.add(key)
            if not all(keep):
                duplicates += keep.count(False)
                table = table.filter(pa.array(keep))
        if schema_name in _FOLLOW_ITEMS and ctx.released_uids is not None and table.num_rows:
            mask = pa.array([u in ctx.released_uids for u in table.column("uid").to_pylist()])
            kept = table.filter(mask)
            left_out += table.num_rows - kept.num_rows
            table = kept
        meta = dict(table.schema.metadata or {})  # keep the schema stamp: `blift validate` reads it
        if drop_raw and "raw" in table.column_names:
            table = table.drop_columns(["raw"])
            meta[schemas.META_OMITTED] = b"raw"
        table = table.replace_schema_metadata(meta)
        if transform is not None:
            table = transform(table, ctx, path)
        table = feats.with_features_metadata(table, schema_name)
        facts.add(table, schema_name)
        if schema_name == "instructions":
            splits = table.column("split")
            for uid, split in zip(table.column("uid").to_pylist(), splits.to_pylist()):
                uid_split.setdefault(uid, split)
        else:
            splits = pa.array([uid_split.get(u) or split_of(u, split_validation, split_test)
                               for u in table.column("uid").to_pylist()], type=pa.string())
        unknown = set(pc.unique(splits).to_pylist()) - set(SPLITS)
        if unknown:
            raise ReleaseError(f"{path}: split value(s) {sorted(map(str, unknown))}; expected {SPLITS}")
        for split, writer in writers.items():
            writer.add(table.filter(pc.equal(splits, split)))
    files: dict[str, list[Path]] = {}
    rows: dict[str, int] = {}
    for split, writer in writers.items():
        written = writer.finish()
        if written:
            files[split], rows[split] = written, writer.rows
    return rows, files, duplicates, left_out


