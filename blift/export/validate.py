"""Checks an exported LLaVA / LLaMA-VID folder the way its trainer will read it, before anyone
spends GPU hours on it.

LLaMA-VID's ``LazySupervisedDataset`` raises (or silently trains on the wrong tokens) on records
that break its assumptions: it moves ``<image>`` to the front of the first human turn, asserts
that roles alternate from ``human``, masks every non-assistant token, opens ``image`` with PIL
and ``video`` with ``np.load`` (or OpenCV for other files) relative to ``--image_folder`` /
``--video_folder``, and cuts every sample at ``--model_max_length`` tokens. Each rule below is
one of those assumptions; each problem names the file, the record id and the field.

**Token count** (only with a tokenizer). The count mirrors LLaMA-VID's ``preprocess_imgsp_v1``
with the ``imgsp_v1`` template that the authors' ``train.sh`` uses (Vicuna v1 system prompt, roles
``USER`` / ``ASSISTANT``, separators ``" "`` and ``"</s>"``): the prompt
``SYSTEM + " " + "USER: " + turn0 + " " + "ASSISTANT: " + turn1 + "</s>" + ...`` is built with
``<image>\\n`` moved to the front of the first human turn, the text around the image token is
tokenized without special tokens, and the count is::

    1 (BOS) + text tokens + (number of "</s>" separators, one token each) + visual tokens

where the visual tokens are ``tokens_per_frame`` (2: LLaMA-VID's context + content token with
``--compress_type mean``) per image, or per frame of a video (the ``.npy``'s first dimension; for
an mp4, its duration in seconds rounded up, i.e. frames at ``--video_fps 1``). Approximations:
the text pieces are tokenized separately (a SentencePiece tokenizer may merge a character or two
differently at a piece boundary), and a slow and a fast tokenizer of the same model can differ
by a token here and there. The trainer cuts ``input_ids`` (which hold one placeholder per image)
at ``model_max_length`` before the visual tokens are spliced in; counting the visual tokens too
is the stricter of the two readings, so a record that passes is never cut.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

IMAGE_TOKEN = "<image>"
ROLES = ("human", "gpt")
#: LLaMA-VID ``imgsp_v1`` (= Vicuna v1) conversation template, as its train.py renders it.
SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the user's questions.")
TEMPLATE_ROLES = {"human": "USER", "gpt": "ASSISTANT"}
SEP, SEP2 = " ", "</s>"
TOKENS_PER_FRAME = 2  # LLaMA-VID: one context token + one content token per image / frame
DEFAULT_MAX_LENGTH = 2048  # --model_max_length of the authors' train.sh
EXPORT_FILE = "blift.json"
FRAME_SIDE = 224
VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".m4v")
TOKENIZE_BATCH = 512


@dataclass
class _Rec:
    """One record as read from a JSON file, with what the checks need to name it."""

    file: str
    index: int
    data: Any

    @property
    def name(self) -> str:
        rid = self.data.get("id") if isinstance(self.data, dict) else None
        return f"{self.file}: record {rid!r}" if isinstance(rid, str) and rid else f"{self.file}: record #{self.index}"


def export_files(out_dir: Path) -> list[Path]:
    """The JSON files of an export: ``blift.json`` first, then ``blift_<split>.json``."""
    out_dir = Path(out_dir)
    main = out_dir / EXPORT_FILE
    others = sorted(p for p in out_dir.glob("blift_*.json") if p.is_file())
    return ([main] if main.is_file() else []) + others


def validate_export(out_dir: Path, tokenizer: Any = None, max_length: int | None = None, *,
                    tokens_per_frame: int = TOKENS_PER_FRAME) -> list[str]:
    """Every problem of the export in ``out_dir`` (an empty list when it is fine to train on).

    ``tokenizer``: a transformers tokenizer, or a local folder to load one from (offline).
    With a tokenizer, records longer than ``max_length`` tokens (default 2048, the authors'
    ``--model_max_length``) are problems; see the module doc for how tokens are counted.
    """
    out_dir = Path(out_dir)
    files = export_files(out_dir)
    if not files:
        return [f"{out_dir}: no {EXPORT_FILE}"]
    problems: list[str] = []
    records: list[_Rec] = []
    for path in files:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            problems.append(f"{path.name}: not readable JSON ({exc})")
            continue
        if not isinstance(data, list):
            problems.append(f"{path.name}: top level is {type(data).__name__}, expected a list of records")
            continue
        records.extend(_Rec(path.name, i, rec) for i, rec in enumerate(data))

    seen: dict[str, str] = {}
    frames: dict[int, int] = {}  # position in `records` -> visual units (1 per image, N per video)
    media_cache: dict[str, tuple[int, str | None]] = {}
    for pos, rec in enumerate(records):
        if not isinstance(rec.data, dict):
            problems.append(f"{rec.name}: is a {type(rec.data).__name__}, expected an object")
            continue
        rid = rec.data.get("id")
        if not isinstance(rid, str) or not rid.strip():
            problems.append(f"{rec.name}: id: missing or empty")
        elif rid in seen:
            problems.append(f"{rec.name}: id: duplicate (also in {seen[rid]})")
        else:
            seen[rid] = rec.file
        problems.extend(f"{rec.name}: {p}" for p in _conversation_problems(rec.data.get("conversations")))
        units, media_problems = _media_problems(rec.data, out_dir, media_cache)
        problems.extend(f"{rec.name}: {p}" for p in media_problems)
        if units is not None:
            frames[pos] = units

    if tokenizer is not None:
        tok = load_tokenizer(tokenizer)
        limit = DEFAULT_MAX_LENGTH if max_length is None else int(max_length)
        good = [(pos, r) for pos, r in enumerate(records)
                if isinstance(r.data, dict) and _is_turn_list(r.data.get("conversations"))]
        counts = count_tokens(tok, (r.data["conversations"] for _, r in good),
                              (frames.get(pos, 0) * tokens_per_frame for pos, _ in good))
        for (_, rec), n in zip(good, counts):
            if n > limit:
                problems.append(f"{rec.name}: conversations: {n} tokens, longer than max_length {limit} "
                                f"(the trainer would cut the answer)")
    return problems


# --------------------------------------------------------------------------- conversations


def _is_turn_list(turns: Any) -> bool:
    return isinstance(turns, list) and all(isinstance(t, dict) and isinstance(t.get("value"), str) for t in turns)


def _conversation_problems(turns: Any) -> list[str]:
    if not isinstance(turns, list) or not turns:
        return ["conversations: missing or empty"]
    problems = []
    for i, turn in enumerate(turns):
        where = f"conversations[{i}]"
        if not isinstance(turn, dict):
            problems.append(f"{where}: is a {type(turn).__name__}, expected {{from, value}}")
            continue
        expected = ROLES[i % 2]
        if turn.get("from") != expected:
            problems.append(f"{where}.from: {turn.get('from')!r}, expected {expected!r} "
                            f"(roles alternate, starting with human)")
        value = turn.get("value")
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{where}.value: empty")
            continue
        n = value.count(IMAGE_TOKEN)
        if i == 0 and n != 1:
            problems.append(f"{where}.value: {IMAGE_TOKEN} appears {n} times in the first human turn, expected once")
        elif i > 0 and n:
            problems.append(f"{where}.value: {IMAGE_TOKEN} appears {n} times; only the first human turn may hold it")
    if isinstance(turns[-1], dict) and turns[-1].get("from") != "gpt":
        problems.append(f"conversations[{len(turns) - 1}].from: the last turn is not the assistant's (gpt): "
                        f"it would train on nothing")
    return problems


# --------------------------------------------------------------------------- media


def _media_problems(rec: dict[str, Any], out_dir: Path, cache: dict[str, tuple[int, str | None]]
                    ) -> tuple[int | None, list[str]]:
    """(visual units of the record or None, problems of its ``image`` / ``video`` field)."""
    keys = [k for k in ("image", "video") if k in rec]
    if len(keys) != 1:
        return None, [f"image/video: the record needs exactly one of them, has {keys or 'neither'}"]
    key = keys[0]
    rel = rec[key]
    if not isinstance(rel, str) or not rel:
        return None, [f"{key}: not a path"]
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts:
        return None, [f"{key}: {rel!r} must be relative to the export folder, without '..'"]
    if rel not in cache:
        cache[rel] = _check_file(key, out_dir / pure)
    units, problem = cache[rel]
    return (units if problem is None else None), ([] if problem is None else [f"{key}: {rel!r}: {problem}"])


def _check_file(key: str, path: Path) -> tuple[int, str | None]:
    if not path.is_file():
        return 0, "file not found"
    if key == "image":
        if path.suffix == ".npy":
            return 0, "an image record must point to an image file (the trainer opens it with PIL)"
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as img:  # reads the header only
                img.size  # noqa: B018
        except (UnidentifiedImageError, OSError) as exc:
            return 0, f"not a readable image ({exc})"
        return 1, None
    if path.suffix == ".npy":
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            return 0, f"not a readable .npy ({exc})"
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[1] != 3 or arr.shape[0] < 1:
            return 0, f"frames must be uint8 (N, 3, H, W) with N >= 1, got {arr.dtype} {tuple(arr.shape)}"
        if arr.shape[2] != arr.shape[3]:
            return 0, f"frames must be square, got {tuple(arr.shape)}"
        return int(arr.shape[0]), None
    if path.suffix.lower() in VIDEO_SUFFIXES:
        seconds = video_seconds(path)
        if seconds is None:
            return 0, "not a readable video"
        return max(1, math.ceil(seconds - 1e-9)), None
    return 0, f"unknown video file type {path.suffix!r} (expected .npy frames or a video file)"


def video_seconds(path: Path) -> float | None:
    """Duration of a video file from its container header (None when it cannot be opened)."""
    import av

    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            if stream.duration and stream.time_base:
                return float(stream.duration * stream.time_base)
            if container.duration:
                return container.duration / 1_000_000
            return 0.0
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError):
        return None


# --------------------------------------------------------------------------- tokens


def load_tokenizer(tokenizer: Any) -> Any:
    """A tokenizer object as given, or loaded offline from a local folder."""
    if isinstance(tokenizer, (str, Path)):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(tokenizer), local_files_only=True)
    return tokenizer


def prompt_pieces(turns: list[dict[str, Any]]) -> tuple[list[str], int, int]:
    """The imgsp_v1 prompt of ``turns`` as (text pieces, image tokens, ``</s>`` separators).

    The text is split at every ``<image>`` and ``</s>``: those become one token each (the image
    placeholder, the EOS id), whatever the tokenizer would make of the literal string.
    """
    parts = [SYSTEM + SEP]
    for i, turn in enumerate(turns):
        value = str(turn.get("value") or "")
        if i == 0 and IMAGE_TOKEN in value:  # LLaMA-VID's preprocess_multimodal
            value = IMAGE_TOKEN + "\n" + value.replace(IMAGE_TOKEN, "").strip()
        role = TEMPLATE_ROLES.get(str(turn.get("from")), str(turn.get("from")))
        parts.append(f"{role}: {value}" + (SEP if i % 2 == 0 else SEP2))
    text = "".join(parts)
    seps = text.count(SEP2)
    pieces: list[str] = []
    images = 0
    for chunk in text.split(SEP2):
        sub = chunk.split(IMAGE_TOKEN)
        images += len(sub) - 1
        pieces.extend(s for s in sub if s)
    return pieces, images, seps


def count_tokens(tokenizer: Any, conversations: Iterable[list[dict[str, Any]]], visual_tokens: Iterable[int]
                 ) -> Iterator[int]:
    """Token count of each conversation (see the module doc), tokenizing in batches."""
    batch: list[tuple[list[str], int, int, int]] = []
    for turns, visual in zip(conversations, visual_tokens):
        pieces, images, seps = prompt_pieces(turns)
        batch.append((pieces, images, seps, visual))
        if len(batch) >= TOKENIZE_BATCH:
            yield from _count_batch(tokenizer, batch)
            batch = []
    if batch:
        yield from _count_batch(tokenizer, batch)


def _count_batch(tokenizer: Any, batch: list[tuple[list[str], int, int, int]]) -> list[int]:
    flat = [p for pieces, *_ in batch for p in pieces]
    ids = tokenizer(flat, add_special_tokens=False)["input_ids"] if flat else []
    out, k = [], 0
    for pieces, images, seps, visual in batch:
        text = sum(len(ids[k + j]) for j in range(len(pieces)))
        k += len(pieces)
        # BOS + text + EOS separators; each image placeholder is replaced by the visual tokens
        out.append(1 + text + seps + (visual if images else 0))
    return out
