"""Released BLIFT instruction records as training and evaluation examples.

Where records come from (one :class:`DataSource` each):

* a **release folder** (what ``blift release`` writes): the Parquet shards
  ``data/<config>/<split>-*.parquet``; media paths resolve against the folder;
* a single **Parquet or JSON/JSONL file** of records (every row is used: ``split`` is ignored);
  media paths resolve against the release root above it (the nearest folder holding
  ``release.json``), else the file's folder. LLaVA-style JSON (``{"id", "image": "a.jpg",
  "conversations"}``, as ``blift export llava`` writes) reads too;
* a **Hub dataset id** through ``datasets.load_dataset(hub_id, config, split=, revision=)``;
  media stored as paths are fetched from the same dataset repo with ``hf_hub_download``.

Media of a record, in order of preference: image records take the ``image`` column (bytes,
``{bytes, path}`` or a decoded PIL image, as ``images="bytes"`` releases carry) else the file
``media[0]`` names. Video records take the ``video_frames`` column (uint8 ``(T,3,H,W)``,
``videos="frames"``) else ``media[0]``: a ``.npy`` of such frames or a video file decoded with
PyAV. Frames are sampled evenly down to ``num_frames`` (first and last frame kept) here, so a
long video never reaches the collator whole. Records decode lazily, in ``__getitem__``, so a
DataLoader's workers do the image/video work in parallel.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch.utils.data
from pydantic import BaseModel, ConfigDict, model_validator

from blift.errors import BliftError, InvalidRecord

if TYPE_CHECKING:
    import datasets
    from PIL import Image

MEDIA_KINDS = ("image", "video", "none")
VIDEO_FILE_SUFFIXES = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".m4v")


class DataSourceError(BliftError):
    """A data source cannot be read (missing folder, split or column); the message names it."""


class RecordDataError(InvalidRecord):
    """One record cannot become an :class:`Example` (missing media, bad frames); names record and field."""


@dataclass
class Example:
    """One record ready for the collator: its conversation and decoded media."""

    id: str
    task: str  # "behavior" | "content" | anything else ("other" instruction data)
    media_kind: str  # "image" | "video" | "none"
    conversations: list[dict]
    images: list[Image.Image] = field(default_factory=list)  # image records: their image
    frames: np.ndarray | None = None  # video records: uint8 (T,3,H,W), T <= num_frames
    targets: dict | None = None
    platform: str | None = None


class DataSource(BaseModel):
    """One entry of a train/eval config's ``data`` list: where records are and which ones."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = None  # a release folder, or one parquet/jsonl/json file of records
    hub_id: str | None = None  # or a Hub dataset id
    config: str = "instructions"
    split: str = "train"
    kind: str | None = None  # mixing bucket for every record; None: each record's own `task`
    revision: str | None = None

    @model_validator(mode="after")
    def _one_location(self) -> DataSource:
        if (self.path is None) == (self.hub_id is None):
            raise ValueError("give exactly one of `path` (release folder or records file) and `hub_id`")
        return self

    def describe(self) -> str:
        """How error messages name this source."""
        where = f"path {self.path}" if self.path is not None else f"hub_id {self.hub_id}"
        return f"data source ({where}, config {self.config!r}, split {self.split!r})"


def even_indices(total: int, count: int, *, exact: bool = False) -> np.ndarray:
    """Indices of ``count`` frames spread evenly over ``total`` (first and last included).

    ``exact=False``: at most ``count`` (all frames when there are fewer). ``exact=True``: exactly
    ``count``, repeating frames of a short video, so videos of a batch stack."""
    if total <= 0:
        raise ValueError("a video needs at least one frame")
    if count <= 0:
        raise ValueError(f"frame count must be positive, got {count}")
    if not exact and total <= count:
        return np.arange(total)
    return np.linspace(0, total - 1, count).round().astype(int)


# ------------------------------------------------------------------------------------ loading


def _release_root(file: Path) -> Path:
    """The nearest folder above ``file`` holding ``release.json`` (media paths are relative to
    it), else the file's own folder."""
    for parent in file.resolve().parents:
        if (parent / "release.json").is_file():
            return parent
    return file.resolve().parent


def _records_files(source: DataSource) -> tuple[str, list[str], Path]:
    """(datasets builder, files, media root) of a local source."""
    path = Path(source.path or "")
    if path.is_dir():
        config_dir = path / "data" / source.config
        if not config_dir.is_dir():
            found = sorted(p.name for p in (path / "data").iterdir()) if (path / "data").is_dir() else []
            raise DataSourceError(f"{source.describe()}: no folder {config_dir} (not a release folder? "
                                  f"configs found: {found or 'none'})")
        files = sorted(str(p) for p in config_dir.glob(f"{source.split}-*.parquet"))
        if not files:
            splits = sorted({p.name.split("-")[0] for p in config_dir.glob("*.parquet")})
            raise DataSourceError(f"{source.describe()}: no {source.split!r} shards in {config_dir} "
                                  f"(splits found: {splits or 'none'})")
        return "parquet", files, path.resolve()
    if path.is_file():
        suffix = path.suffix.lower()
        builder = {".parquet": "parquet", ".jsonl": "json", ".json": "json"}.get(suffix)
        if builder is None:
            raise DataSourceError(f"{source.describe()}: unsupported file type {suffix!r} "
                                  "(expected .parquet, .jsonl or .json)")
        return builder, [str(path)], _release_root(path)
    raise DataSourceError(f"{source.describe()}: {path} does not exist")


def load_records(source: DataSource) -> datasets.Dataset:
    """The records of ``source`` as a ``datasets.Dataset`` (media not decoded yet)."""
    import datasets

    try:
        if source.path is not None:
            builder, files, _ = _records_files(source)
            records = datasets.load_dataset(builder, data_files={"records": files}, split="records")
        else:
            records = datasets.load_dataset(source.hub_id, source.config, split=source.split,
                                            revision=source.revision)
    except DataSourceError:
        raise
    except Exception as exc:  # datasets raises many types (FileNotFoundError, ValueError, DatasetNotFoundError...)
        raise DataSourceError(f"{source.describe()}: cannot load records: {type(exc).__name__}: {exc}") from exc
    missing = {"id", "conversations"} - set(records.column_names)
    if missing:
        raise DataSourceError(f"{source.describe()}: records lack column(s) {sorted(missing)} "
                              f"(columns: {records.column_names})")
    if len(records) == 0:
        raise DataSourceError(f"{source.describe()}: no records")
    return records


def media_root(source: DataSource) -> Path | None:
    """The folder media paths of ``source``'s records are relative to (None for Hub sources)."""
    return None if source.path is None else _records_files(source)[2]


# ------------------------------------------------------------------------------------ decoding


def _open_image(data: bytes | Path, *, record: str, where: str) -> Image.Image:
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
        image.load()
    except (OSError, UnidentifiedImageError) as exc:
        raise RecordDataError(f"record {record!r}: {where}: not a readable image ({exc})") from exc
    return image.convert("RGB") if image.mode != "RGB" else image


def _check_frames(frames: Any, *, record: str, where: str) -> np.ndarray:
    frames = np.asarray(frames)
    # datasets' numpy format hands Array4D(uint8) columns with a free first axis back as int64
    if np.issubdtype(frames.dtype, np.integer) and frames.dtype != np.uint8 and frames.size \
            and frames.min() >= 0 and frames.max() <= 255:
        frames = frames.astype(np.uint8)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1] != 3 or frames.shape[0] == 0:
        raise RecordDataError(f"record {record!r}: {where}: expected uint8 frames (T,3,H,W) with T>0, "
                              f"got {frames.dtype}{list(frames.shape)}")
    return frames


def decode_video_file(path: Path, num_frames: int, *, record: str = "?") -> np.ndarray:
    """``num_frames`` (at most) evenly spaced frames of a video file as uint8 (T,3,H,W).

    Two passes with PyAV: count the stream's packets (no decoding), then decode and keep only the
    wanted frames, so a long video never sits in memory."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            total = sum(1 for packet in container.demux(stream) if packet.size)
        wanted = set(even_indices(max(total, 1), num_frames).tolist())
        frames: list[np.ndarray] = []
        with av.open(str(path)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i in wanted:
                    frames.append(frame.to_ndarray(format="rgb24").transpose(2, 0, 1))
                if i >= max(wanted):
                    break
    except (av.error.FFmpegError, IndexError, OSError) as exc:
        raise RecordDataError(f"record {record!r}: media {path}: cannot decode video ({exc})") from exc
    if not frames:
        raise RecordDataError(f"record {record!r}: media {path}: no decodable video frame")
    return np.stack(frames)


class RecordDataset(torch.utils.data.Dataset):
    """A map-style dataset turning rows into :class:`Example` lazily (``torch.utils.data``
    compatible: ``__getitem__`` and ``__len__``).

    ``root``: the folder media paths are relative to. ``kind``: the mixing bucket of every
    record (None: the record's ``task``). ``hub``: ``(repo id, revision)`` to fetch media paths
    of a Hub dataset from. ``name``: how errors name the source."""

    def __init__(self, records: datasets.Dataset, root: Path | None, num_frames: int = 8, *,
                 kind: str | None = None, hub: tuple[str, str | None] | None = None, name: str = "records") -> None:
        if num_frames < 1:
            raise ValueError(f"num_frames must be positive, got {num_frames}")
        if "video_frames" in records.column_names:  # numpy, not nested lists, for the frames only
            records = records.with_format("numpy", columns=["video_frames"], output_all_columns=True)
        self.records = records
        self.root = Path(root) if root is not None else None
        self.num_frames = num_frames
        self.kind = kind
        self.hub = hub
        self.name = name

    def __len__(self) -> int:
        return len(self.records)

    def kinds(self) -> list[str]:
        """Mixing bucket of every record, in order (reads the ``task`` column only)."""
        if self.kind is not None:
            return [self.kind] * len(self)
        if "task" not in self.records.column_names:
            return ["other"] * len(self)
        return [t or "other" for t in self.records.select_columns(["task"])["task"]]

    def __getitem__(self, i: int) -> Example:
        row = self.records[int(i)]
        rid = str(row["id"])
        conversations = row["conversations"]
        if not isinstance(conversations, list) or not conversations:
            raise RecordDataError(f"record {rid!r} ({self.name}): field conversations: expected a non-empty list")
        conversations = [dict(turn) for turn in conversations]
        media = list(row.get("media") or [])
        if not media and isinstance(row.get("image"), str):  # LLaVA JSON: "image": "path"
            media = [row["image"]]
        if not media and isinstance(row.get("video"), str):
            media = [row["video"]]
        kind = row.get("media_kind") or self._infer_kind(row, media)
        if kind == "video" and not media and row.get("video_frames") is None:
            kind = "none"  # a video known by its annotations alone: a text-only record (instruct)
        if kind not in MEDIA_KINDS:
            raise RecordDataError(f"record {rid!r} ({self.name}): field media_kind: {kind!r} "
                                  f"is not one of {MEDIA_KINDS}")
        images: list[Image.Image] = []
        frames = None
        if kind == "image":
            images = [self._image(row, media, rid)]
        elif kind == "video":
            frames = self._frames(row, media, rid)
        targets = row.get("targets")
        return Example(id=rid, task=self.kind or row.get("task") or "other", media_kind=kind,
                       conversations=conversations, images=images, frames=frames,
                       targets=dict(targets) if isinstance(targets, dict) else None, platform=row.get("platform"))

    @staticmethod
    def _infer_kind(row: dict, media: list[str]) -> str:
        if row.get("video_frames") is not None or row.get("video"):
            return "video"
        if row.get("image") is not None:
            return "image"
        if media:
            return "video" if media[0].lower().endswith((".npy", *VIDEO_FILE_SUFFIXES)) else "image"
        return "none"

    def _media_path(self, media: list[str], rid: str, field_name: str) -> Path:
        if not media:
            raise RecordDataError(f"record {rid!r} ({self.name}): no {field_name} column value and no media path")
        rel = media[0]
        if self.root is not None:
            path = self.root / rel
        elif self.hub is not None:
            path = self._hub_file(rel, rid)
        else:
            path = Path(rel)
        if not path.is_file():
            raise RecordDataError(f"record {rid!r} ({self.name}): field media[0]: file {path} not found")
        return path

    def _hub_file(self, rel: str, rid: str) -> Path:
        from huggingface_hub import hf_hub_download

        repo, revision = self.hub  # type: ignore[misc]
        try:
            return Path(hf_hub_download(repo, rel, repo_type="dataset", revision=revision))
        except Exception as exc:  # network and not-found errors of the Hub client
            raise RecordDataError(f"record {rid!r} ({self.name}): media {rel} not fetched from {repo}: {exc}") from exc

    def _image(self, row: dict, media: list[str], rid: str) -> Image.Image:
        value = row.get("image")
        if value is not None and not isinstance(value, str):
            if hasattr(value, "convert"):  # datasets decoded it
                return value.convert("RGB") if value.mode != "RGB" else value
            if isinstance(value, dict) and value.get("bytes"):
                return _open_image(value["bytes"], record=rid, where="field image")
            if isinstance(value, dict) and value.get("path"):
                media = [value["path"]]
        return _open_image(self._media_path(media, rid, "image"), record=rid, where="field media[0]")

    def _frames(self, row: dict, media: list[str], rid: str) -> np.ndarray:
        value = row.get("video_frames")
        if value is not None and np.ndim(value) == 0:  # a null under the numpy format reads as nan
            value = None
        if value is not None:
            frames = _check_frames(value, record=rid, where="field video_frames")
        else:
            path = self._media_path(media, rid, "video_frames")
            if path.suffix.lower() == ".npy":
                try:
                    loaded = np.load(path, mmap_mode="r")
                except (OSError, ValueError) as exc:
                    raise RecordDataError(f"record {rid!r} ({self.name}): media {path}: "
                                          f"not a .npy array ({exc})") from exc
                loaded = _check_frames(loaded, record=rid, where=f"media {path}")
                return np.ascontiguousarray(loaded[even_indices(len(loaded), self.num_frames)])
            return decode_video_file(path, self.num_frames, record=rid)
        return frames[even_indices(len(frames), self.num_frames)]


def open_examples(source: DataSource, num_frames: int = 8) -> RecordDataset:
    """The examples of ``source``: its records, media resolved against the right root."""
    records = load_records(source)
    hub = (source.hub_id, source.revision) if source.hub_id is not None and not Path(source.hub_id).is_dir() else None
    root = media_root(source) if source.path is not None else (
        Path(source.hub_id) if source.hub_id is not None and Path(source.hub_id).is_dir() else None)
    return RecordDataset(records, root, num_frames, kind=source.kind, hub=hub, name=source.describe())

