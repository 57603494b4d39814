"""Content-understanding task files: the questions ``blift eval`` asks besides behavior.

A task file is JSON Lines (``.jsonl``/``.json``, one object per line) or Parquet (``.parquet``),
one item per line/row. The task's name is the file's stem, unless every row carries the same
``task`` value. Columns:

============  ==========================================================================
id            optional (string or integer); default ``<file stem>-<n>``, n the line / row number
question      required, non-empty text
options       multiple choice: a list of at least two distinct non-empty strings (alias
              ``choices``). Scored by answer-option likelihood.
answer        multiple choice: the 0-based index of the right option, the option text
              itself (compared case- and space-insensitively) or a letter ``A``..``Z`` when
              no option is that letter; stored as the index. Free text: a string, also used
              as the reference when ``references`` is absent.
references    free text: a string or a list of strings (aliases ``reference``,
              ``answers``); scored by exact match / token F1 against the best one.
image         a path, raw bytes, or ``{bytes, path}`` (how ``datasets.Image`` stores one)
video         a path: ``.npy`` of uint8 frames (T,3,H,W) or (T,H,W,3), or a video file
frames        the frames themselves: a nested list / array, uint8 (T,3,H,W) or (T,H,W,3)
media         instruction-record style: a path or a list of paths whose first entry is
              used, with an optional ``media_kind`` (else the kind follows the suffix)
============  ==========================================================================

At most one of ``image``/``video``/``frames``/``media`` may be set; without any the item is
text-only (``media_kind`` "none"). An item needs ``options`` or a reference (``references``
or ``answer``), not both ``options`` and ``references``. Other columns are kept in
:attr:`TaskItem.meta` (e.g. a memorability score for a rank correlation).

Relative paths are resolved against ``root`` when given, else the task file's folder. Media is
loaded here, so a broken image fails now, naming the item, not halfway through scoring a
checkpoint. Videos are sampled to at most ``num_frames`` evenly spread frames (first and last
included); frames decoded from a video file are scaled down so the longer side is at most
``max_side`` pixels (672, the largest input of the LLaVA family) to bound memory, while ``.npy``
frames are kept as they are (blift writes them at 224 px).

Every problem is a :class:`TaskError` naming the file, the line (JSONL, 1-based) or row
(Parquet, 0-based) and the field; up to 10 problems are reported at once.
"""

from __future__ import annotations

import io
import json
import math
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, overload

import numpy as np
from PIL import Image, UnidentifiedImageError

from blift.errors import ConfigError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".npy", ".mp4", ".webm", ".mkv", ".mov", ".avi", ".m4v"}
MEDIA_FIELDS = ("image", "video", "frames", "media")
_ALIASES = {"choices": "options", "reference": "references", "answers": "references"}
_KNOWN = {"id", "task", "question", "options", "answer", "references", "media_kind", *MEDIA_FIELDS}
MAX_REPORTED = 10


class TaskError(ConfigError):
    """A task file that cannot be used; the message names file, line/row and field."""


@dataclass
class TaskItem:
    """One question of a content-understanding task, media decoded."""

    id: str
    media_kind: str                      # "image" | "video" | "none"
    image: Image.Image | None
    frames: np.ndarray | None            # uint8 (T, 3, H, W)
    question: str
    options: list[str] | None            # multiple choice
    answer: str | int | None             # option index (multiple choice) or reference text
    references: list[str] | None         # free text
    meta: dict[str, Any] = field(default_factory=dict)  # other columns of the row

    @property
    def is_multiple_choice(self) -> bool:
        return self.options is not None


class _Bad(Exception):
    """One problem with one field of one row (turned into a TaskError with file and row)."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


# ------------------------------------------------------------------ reading rows

def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict[str, Any] | _Bad]]:
    with path.open("r", encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield f"line {n}", _Bad("-", f"not valid JSON ({exc.msg} at column {exc.colno})")
                continue
            if not isinstance(row, dict):
                yield f"line {n}", _Bad("-", f"expected a JSON object, got {type(row).__name__}")
                continue
            yield f"line {n}", row


def _parquet_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise TaskError(f"{path}: cannot read as Parquet: {exc}") from exc
    for n, row in enumerate(table.to_pylist()):
        yield f"row {n}", row


def _rows(path: Path) -> Iterator[tuple[str, dict[str, Any] | _Bad]]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return _jsonl_rows(path)
    if suffix == ".parquet":
        return _parquet_rows(path)
    raise TaskError(f"{path}: unknown task file type {suffix!r}; expected .jsonl or .parquet")


# ------------------------------------------------------------------ fields

@overload
def _text(row: dict[str, Any], name: str, *, required: Literal[True]) -> str: ...
@overload
def _text(row: dict[str, Any], name: str, *, required: bool) -> str | None: ...
def _text(row: dict[str, Any], name: str, *, required: bool) -> str | None:
    value = row.get(name)
    if value is None:
        if required:
            raise _Bad(name, "is required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise _Bad(name, f"must be non-empty text, got {value!r:.60}")
    return value.strip()


def _strings(row: dict[str, Any], name: str) -> list[str] | None:
    value = row.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise _Bad(name, f"must be a non-empty list of strings, got {value!r:.60}")
    out = []
    for i, v in enumerate(value):
        if not isinstance(v, str) or not v.strip():
            raise _Bad(name, f"entry {i} must be non-empty text, got {v!r:.60}")
        out.append(v.strip())
    return out


def _fold(text: str) -> str:
    return " ".join(text.casefold().split())


def _choice(answer: Any, options: list[str]) -> int:
    """The option index an ``answer`` names (index, option text, or letter)."""
    if isinstance(answer, bool):
        raise _Bad("answer", f"must be an option index or text, got {answer!r}")
    if isinstance(answer, (int, np.integer)) or (isinstance(answer, float) and answer.is_integer()):
        index = int(answer)
        if not 0 <= index < len(options):
            raise _Bad("answer", f"index {index} is outside the {len(options)} options (0-based)")
        return index
    if isinstance(answer, str) and answer.strip():
        folded = [_fold(o) for o in options]
        if _fold(answer) in folded:
            return folded.index(_fold(answer))
        letter = answer.strip().rstrip(").").upper()
        if (len(letter) == 1 and letter in string.ascii_uppercase
                and string.ascii_uppercase.index(letter) < len(options)):
            return string.ascii_uppercase.index(letter)
        raise _Bad("answer", f"{answer!r:.60} is none of the options {options!r:.120} (nor an index or letter)")
    raise _Bad("answer", f"multiple choice needs the right option (index, text or letter), got {answer!r:.60}")


def _resolve(value: Any, name: str, base: Path) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise _Bad(name, f"must be a path, got {value!r:.60}")
    path = Path(value)
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise _Bad(name, f"file not found: {path}")
    return path


def _open_image(data: bytes | Path, name: str) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as img:
            img.load()
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise _Bad(name, f"not a readable image ({exc})") from exc


def _image(value: Any, base: Path) -> Image.Image:
    if isinstance(value, dict):  # datasets.Image: {bytes, path}
        if value.get("bytes"):
            return _open_image(bytes(value["bytes"]), "image")
        return _open_image(_resolve(value.get("path"), "image", base), "image")
    if isinstance(value, (bytes, bytearray)):
        return _open_image(bytes(value), "image")
    return _open_image(_resolve(value, "image", base), "image")


def even_indices(total: int, count: int) -> np.ndarray:
    """At most ``count`` frame indices spread evenly over ``total`` frames, first and last included."""
    if total <= count:
        return np.arange(total)
    return np.unique(np.linspace(0, total - 1, count).round().astype(int))


def _frames_array(value: Any, name: str, num_frames: int) -> np.ndarray:
    """uint8 (T, 3, H, W), at most ``num_frames`` evenly spaced frames."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise _Bad(name, f"not a rectangular array of frames ({exc})") from exc
    if arr.ndim != 4 or arr.shape[0] == 0:
        raise _Bad(name, f"frames must be 4-d (T,3,H,W) with T >= 1, got shape {tuple(arr.shape)}")
    if arr.shape[1] != 3:
        if arr.shape[3] == 3:
            arr = arr.transpose(0, 3, 1, 2)  # (T,H,W,3) -> (T,3,H,W)
        else:
            raise _Bad(name, f"frames need 3 colour channels at axis 1 or 3, got shape {tuple(arr.shape)}")
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0 or arr.max() > 255:
            raise _Bad(name, f"frames must be uint8 0..255, got {arr.dtype}")
        arr = arr.astype(np.uint8)
    return np.ascontiguousarray(arr[even_indices(arr.shape[0], num_frames)])


def decode_video(path: Path, num_frames: int, max_side: int = 672) -> np.ndarray:
    """Evenly spaced frames of a video file as uint8 (T, 3, H, W), longer side <= ``max_side``.

    Counts the frames first (the container's count is often missing or wrong), then decodes
    again keeping only the chosen ones, so a long video never sits in memory."""
    import av

    def frames() -> Iterator[Any]:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            yield from container.decode(stream)

    try:
        total = sum(1 for _ in frames())
        if total == 0:
            raise _Bad("video", f"{path}: no video frames")
        wanted = set(int(i) for i in even_indices(total, num_frames))
        out = []
        for i, frame in enumerate(frames()):
            if i not in wanted:
                continue
            img = frame.to_image()
            scale = max_side / max(img.size)
            if scale < 1:
                img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                                 Image.Resampling.BICUBIC)
            out.append(np.asarray(img.convert("RGB")).transpose(2, 0, 1))
    except av.error.FFmpegError as exc:
        raise _Bad("video", f"{path}: cannot decode ({exc})") from exc
    return np.stack(out)


def _video(path: Path, name: str, num_frames: int) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise _Bad(name, f"{path}: not a readable .npy ({exc})") from exc
        return _frames_array(arr, name, num_frames)
    return decode_video(path, num_frames)


def _media(row: dict[str, Any], base: Path, num_frames: int) -> tuple[str, Image.Image | None, np.ndarray | None]:
    given = [f for f in MEDIA_FIELDS if row.get(f) is not None]
    if len(given) > 1:
        raise _Bad(given[1], f"an item has one medium; found {', '.join(given)}")
    if not given:
        return "none", None, None
    name = given[0]
    value = row[name]
    if name == "image":
        return "image", _image(value, base), None
    if name == "frames":
        return "video", None, _frames_array(value, name, num_frames)
    if name == "video":
        return "video", None, _video(_resolve(value, name, base), name, num_frames)
    # media: a path or a list of paths (instruction-record style)
    if isinstance(value, (list, tuple)):
        if not value:
            raise _Bad(name, "is an empty list")
        value = value[0]
    kind = row.get("media_kind")
    path = _resolve(value, name, base)
    if kind is None:
        suffix = path.suffix.lower()
        kind = "video" if suffix in VIDEO_SUFFIXES else "image" if suffix in IMAGE_SUFFIXES else None
        if kind is None:
            raise _Bad(name, f"cannot tell image from video by the suffix {suffix!r}; set media_kind")
    if kind == "image":
        return "image", _open_image(path, name), None
    if kind == "video":
        return "video", None, _video(path, name, num_frames)
    raise _Bad("media_kind", f"must be 'image' or 'video', got {kind!r}")


def _item(row: dict[str, Any], default_id: str, base: Path, num_frames: int) -> TaskItem:
    row = dict(row)
    for alias, name in _ALIASES.items():
        if alias in row:
            if row.get(name) is not None and row[alias] is not None:
                raise _Bad(alias, f"both {alias!r} and {name!r} are set")
            value = row.pop(alias)
            if row.get(name) is None:
                row[name] = value
    raw_id = row.get("id")
    if raw_id is not None and (isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or str(raw_id) == ""):
        raise _Bad("id", f"must be a non-empty string or integer, got {raw_id!r:.60}")
    item_id = str(raw_id) if raw_id is not None else default_id
    question = _text(row, "question", required=True)
    options = _strings(row, "options")
    references = _strings(row, "references")
    answer = row.get("answer")
    if isinstance(answer, float) and math.isnan(answer):
        answer = None
    if options is not None:
        if references is not None:
            raise _Bad("references", "an item is multiple choice (options) or free text (references), not both")
        if len(options) < 2:
            raise _Bad("options", f"needs at least two options, got {len(options)}")
        folded = [_fold(o) for o in options]
        if len(set(folded)) != len(folded):
            raise _Bad("options", f"options must differ: {options!r:.120}")
        answer = _choice(answer, options)
    else:
        if answer is not None:
            if not isinstance(answer, str) or not answer.strip():
                raise _Bad("answer", f"a free-text answer must be non-empty text, got {answer!r:.60}")
            answer = answer.strip()
            references = references or [answer]
        if references is None:
            raise _Bad("references", "needs options (multiple choice) or references/answer (free text)")
    media_kind, image, frames = _media(row, base, num_frames)
    meta = {k: v for k, v in row.items() if k not in _KNOWN}
    return TaskItem(id=item_id, media_kind=media_kind, image=image, frames=frames, question=question,
                    options=options, answer=answer, references=references, meta=meta)


def load_task(path: Path, *, root: Path | None = None, num_frames: int = 8, limit: int | None = None
              ) -> tuple[str, list[TaskItem]]:
    """(task name, items) of a task file, every item validated and its media decoded.

    ``limit`` keeps the first ``limit`` items (rows after it are not read into items at all).
    """
    path = Path(path)
    if not path.is_file():
        raise TaskError(f"{path}: task file not found")
    base = Path(root) if root is not None else path.parent
    items: list[TaskItem] = []
    problems: list[str] = []
    names: set[str] = set()
    seen: dict[str, str] = {}
    count = 0
    for where, row in _rows(path):
        if limit is not None and count >= limit:
            break
        count += 1
        try:
            if isinstance(row, _Bad):
                raise row
            task = row.get("task")
            if task is not None:
                names.add(str(task))
            item = _item(row, f"{path.stem}-{where.split()[-1]}", base, num_frames)
            if item.id in seen:
                raise _Bad("id", f"duplicate id {item.id!r} (first at {seen[item.id]})")
            seen[item.id] = where
            items.append(item)
        except _Bad as bad:
            problems.append(f"{path}: {where}: field '{bad.field}': {bad}")
            if len(problems) >= MAX_REPORTED:
                break
    if problems:
        more = " (stopped after the first 10 problems)" if len(problems) >= MAX_REPORTED else ""
        raise TaskError(f"{len(problems)} problem(s) in task file{more}:\n" + "\n".join(problems))
    if not items:
        raise TaskError(f"{path}: no items")
    if len(names) > 1:
        raise TaskError(f"{path}: field 'task': rows name different tasks {sorted(names)}; one task per file")
    return (names.pop() if names else path.stem), items
