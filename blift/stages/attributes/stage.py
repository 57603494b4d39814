"""The ``attributes`` stage: colours, tone, brightness, complexity and on-screen text per image.

These are the parts of the paper's scene verbalization that need no learned weights. Captions
and keywords are left null for the captioning stage; this stage never invents them.

:class:`ImageAnalyzer` works on a PIL image, so the video path runs it on every scene keyframe
the ``scenes`` stage stored (optional input ``scenes``) and sets the ``scene`` number: one row
per scene, sized like the keyframe. Without a scenes table (no ``scenes`` stage in the
pipeline) videos are only counted.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
from PIL import Image
from pydantic import Field

from blift import schemas
from blift.errors import BliftError, ErrorClass, PermanentError
from blift.images import open_image, to_rgb
from blift.stage import (
    RecordFailure,
    ShardInput,
    Stage,
    StageConfig,
    StageResult,
    run_file,
)
from blift.stages.attributes.measures import (
    ANALYSIS_SIDE,
    COMPLEXITY_SIDE,
    brightness,
    complexity,
    downscaled,
    orientation,
    tone,
)
from blift.stages.attributes.ocr import OcrEngine, OcrError
from blift.stages.attributes.palette import (
    NAMES,
    nearest_index,
    ranked_colors,
    split_regions,
)
from blift.storage import RunPath

log = logging.getLogger(__name__)


class AttributesConfig(StageConfig):
    """Settings of the attributes stage (keys of the pipeline YAML)."""

    ocr: bool = True
    ocr_lang: str = Field("eng", min_length=1, description="tesseract language(s), e.g. 'eng+deu'")
    ocr_min_confidence: float = Field(60.0, ge=0, le=100, description="drop words tesseract is less sure of")
    ocr_psm: int = Field(11, ge=0, le=13, description="tesseract page segmentation mode (11: sparse text)")
    ocr_max_side: int = Field(2000, ge=64, description="images are shrunk to this before OCR")
    ocr_timeout_s: float = Field(30.0, gt=0, description="give up OCR of one image after this")
    tesseract_cmd: str | None = Field(None, description="tesseract binary when it is not on PATH")
    colors_k: int = Field(5, ge=1, le=len(NAMES), description="dominant colours listed per image")
    color_min_fraction: float = Field(0.01, ge=0, le=1, description="smallest share of pixels listed as a colour")
    region_colors_k: int = Field(3, ge=1, le=len(NAMES), description="foreground/background colours listed")
    max_side: int = Field(ANALYSIS_SIDE, ge=16, le=4096, description="longest side of the copy colours are counted on")


class ImageAnalyzer:
    """All weight-free attributes of one PIL image (shared by the image and video paths)."""

    def __init__(self, config: AttributesConfig) -> None:
        self.config = config
        self.ocr: OcrEngine | None = None
        if config.ocr:
            self.ocr = OcrEngine(
                lang=config.ocr_lang,
                min_confidence=config.ocr_min_confidence,
                psm=config.ocr_psm,
                max_side=config.ocr_max_side,
                timeout_s=config.ocr_timeout_s,
                tesseract_cmd=config.tesseract_cmd,
            )

    def setup(self) -> None:
        if self.ocr is not None:
            self.ocr.setup()

    def decode_side(self) -> int:
        """Smallest longest-side a decoder may reduce an image to without losing anything used."""
        need = max(COMPLEXITY_SIDE, self.config.max_side)
        if self.ocr is not None:
            need = max(need, self.ocr.max_side)
        return need

    def analyze(self, img: Image.Image) -> tuple[dict[str, Any], str | None]:
        """Attribute columns of ``img`` (everything but the keys, caption and keywords), and the
        OCR failure message when OCR failed (its column is then null, the rest stands)."""
        cfg = self.config
        rgb = to_rgb(img)
        small = downscaled(rgb, cfg.max_side)  # one shared copy for every colour statistic
        label, score = complexity(rgb)
        names = nearest_index(np.asarray(small, dtype=np.uint8))  # palette index per pixel, once
        fg, bg = split_regions(names, cfg.region_colors_k)
        ocr_text: str | None = None
        ocr_error: str | None = None
        if self.ocr is not None:
            try:
                ocr_text = self.ocr.read(rgb)
            except OcrError as exc:
                ocr_error = str(exc)
        row = {
            "orientation": orientation(*rgb.size),
            "width": rgb.width,
            "height": rgb.height,
            "colors": [
                {"name": name, "fraction": round(frac, 4)}
                for name, frac in ranked_colors(names, cfg.colors_k, cfg.color_min_fraction)
            ],
            "foreground_colors": fg,
            "background_colors": bg,
            "tone": tone(small, cfg.max_side),
            "brightness": round(brightness(small, cfg.max_side), 4),
            "complexity": label,
            "complexity_score": round(score, 4),
            "ocr_text": ocr_text,
        }
        return row, ocr_error


class AttributesStage(Stage):
    """Weight-free visual attributes of every downloaded image (media rows with status ok)."""

    name: ClassVar[str] = "attributes"
    version: ClassVar[int] = 1
    inputs: ClassVar[dict[str, str]] = {"media": "media", "scenes": "scenes"}
    outputs: ClassVar[dict[str, str]] = {"attributes": "attributes"}
    Config: ClassVar[type[StageConfig]] = AttributesConfig
    resources: ClassVar[str] = "cpu"

    config: AttributesConfig

    def __init__(self, config: StageConfig, run_dir: RunPath) -> None:
        super().__init__(config, run_dir)
        self.analyzer = ImageAnalyzer(self.config)

    def setup(self) -> None:
        self.analyzer.setup()

    def describe(self) -> str:
        ocr = f"tesseract OCR ({self.config.ocr_lang})" if self.config.ocr else "no OCR"
        return f"attributes: {len(NAMES)}-colour palette, {ocr}"

    def process(self, shard: ShardInput) -> StageResult:
        media = shard.rows("media")
        out: list[dict[str, Any]] = []
        errors: list[RecordFailure] = []
        counters = {
            "images": 0,
            "not_image": 0,
            "media_not_ok": 0,
            "ocr_text_found": 0,
            "ocr_failed": 0,
            "video_scenes": 0,
            "video_without_scenes": 0,
        }
        scenes = _scenes_by_media(shard)
        for row in media:
            if row.get("status") != "ok":
                counters["media_not_ok"] += 1  # the download stage accounts for these
                continue
            mime = str(row.get("mime") or "")
            if not mime.startswith("image/"):
                counters["not_image"] += 1
                if mime.startswith("video/"):  # videos get their attributes per scene keyframe
                    self._video(row, scenes.get((row["uid"], row["index"]), []), shard.run_dir, out, errors, counters)
                continue
            uid, index = row["uid"], row["index"]
            attrs = self._analyze(f"{uid}#{index}", f"{uid}#{index}: media", row.get("path"), shard.run_dir,
                                  errors, counters)
            if attrs is not None:
                counters["images"] += 1
                out.append({"uid": uid, "media_index": index, "scene": None, **attrs, "caption": None,
                            "keywords": None})
        table = schemas.get("attributes").from_rows(out, where=f"{self.name} shard {shard.shard_id}: ")
        return StageResult(tables={"attributes": table}, records_in=len(media), errors=errors, counters=counters)

    def _video(self, row: dict[str, Any], scenes: list[dict[str, Any]], run_dir: RunPath, out: list[dict[str, Any]],
               errors: list[RecordFailure], counters: dict[str, int]) -> None:
        """One attributes row per scene keyframe of a video; a missing or unreadable keyframe is
        an error of that scene (named by uid, media index, scene and path), the others stand."""
        uid, index = row["uid"], row["index"]
        if not scenes:
            counters["video_without_scenes"] += 1  # the scenes stage accounts for why
            return
        for scene in scenes:
            attrs = self._analyze(f"{uid}#{index}#{scene['scene']}", f"{uid}#{index} scene {scene['scene']}: keyframe",
                                  scene.get("keyframe_path"), run_dir, errors, counters)
            if attrs is not None:
                counters["video_scenes"] += 1
                out.append({"uid": uid, "media_index": index, "scene": scene["scene"], **attrs,
                            "caption": None, "keywords": None})

    def _analyze(self, key: str, what: str, rel: str | None, run_dir: RunPath, errors: list[RecordFailure],
                 counters: dict[str, int]) -> dict[str, Any] | None:
        """Attributes of one image file (a downloaded image or a scene keyframe), or None after
        recording why it could not be read: one bad file must not kill the shard."""
        try:
            path = run_file(run_dir, rel, what)
            img, (width, height) = open_image(path, self.analyzer.decode_side())
            attrs, ocr_error = self.analyzer.analyze(img)
        except BliftError:
            raise  # configuration problems end the run with their own message
        except Exception as exc:  # noqa: BLE001 - recorded as this file's error
            errors.append(_failure(key, rel, exc))
            return None
        if ocr_error:
            counters["ocr_failed"] += 1
            log.warning("%s: %s: OCR failed, ocr_text left null: %s", self.name, key, ocr_error)
        elif attrs["ocr_text"]:
            counters["ocr_text_found"] += 1
        # Sizes and orientation describe the full picture, not the reduced decode.
        attrs.update(width=width, height=height, orientation=orientation(width, height))
        return attrs


def _scenes_by_media(shard: ShardInput) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """Scene rows grouped by (uid, media_index), in scene order. The input is optional: a shard
    built without it (or a pipeline without a scenes stage) has none."""
    table = shard.tables.get("scenes")
    grouped: dict[tuple[str, int], list[dict[str, Any]]] = {}
    if table is None:
        return grouped
    for scene in table.to_pylist():
        grouped.setdefault((scene["uid"], scene["media_index"]), []).append(scene)
    for rows in grouped.values():
        rows.sort(key=lambda r: r["scene"])
    return grouped


def _failure(key: str, rel: str | None, exc: Exception) -> RecordFailure:
    """An unreadable image is a permanent failure of its record (a local file does not get better
    on retry), named by uid#index and path."""
    if isinstance(exc, PermanentError):
        return RecordFailure(key, ErrorClass.PERMANENT, exc.error_type, str(exc))
    return RecordFailure(key, ErrorClass.PERMANENT, type(exc).__name__, f"{key}: cannot read image {rel}: {exc}")
