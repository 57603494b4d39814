"""The ``caption`` stage: a VLM's description and keywords for every image and scene keyframe.

Candidates of one shard:

* Reddit (and any other) images: ``media`` rows with status ok and an ``image/*`` MIME type
  (``scene`` null in the output);
* video scenes: ``scenes`` rows with a ``keyframe_path`` (``scene`` set).

It is a plain :class:`Stage`, not a record stage, on purpose: a GPU is only busy when it captions
many images at once, so the whole shard is batched (``batch_size`` images per ``generate`` call,
filled across items). A file that cannot be read, or an image the model fails on, becomes an
error row keyed ``uid#index`` (images) or ``uid#index#scene`` (scenes); the rest of the batch is
still captioned (a failed batch is redone one image at a time to find the culprit).

Without a configured model the stage says so, writes an empty table and counts the candidates
under ``skipped_no_model``: it never invents text.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator, Literal

from PIL import Image
from pydantic import Field, field_validator

from blift import schemas
from blift.errors import BliftError, ErrorClass, PermanentError
from blift.images import open_image, to_rgb
from blift.models.keywords import extract_keywords
from blift.stage import (
    RecordFailure,
    ShardInput,
    Stage,
    StageConfig,
    StageResult,
    run_file,
)
from blift.storage import RunPath

log = logging.getLogger(__name__)

DEFAULT_PROMPT = "Describe this image in detail: objects, people, actions, setting, colours and any text."
# Longest side images are decoded at (JPEG DCT scaling): LLaVA-NeXT's largest anyres grid is
# 1008 px (3 x 336), so nothing a LLaVA-family processor uses is lost; 12 MP photos decode ~4x faster.
DECODE_SIDE = 1344
SKIP_MESSAGE = "caption: skipped: no captioning model configured"


def prompt_sha(prompt: str) -> str:
    """First 12 hex digits of the prompt's SHA-256: which prompt produced a caption."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:12]


class CaptionConfig(StageConfig):
    """Settings of the caption stage (keys of the pipeline YAML)."""

    model: str | None = Field(None, description="LLaVA-family checkpoint: a local folder or a Hub id in the HF cache; "
                                                "null skips captioning")
    prompt: str = Field(DEFAULT_PROMPT, min_length=1, description="instruction given with every image")
    batch_size: int = Field(8, ge=1, le=1024, description="images per generate() call")
    max_new_tokens: int = Field(128, ge=1, le=4096, description="longest caption, in tokens")
    device: str = Field("auto", description="auto (cuda when available, else cpu), cpu, cuda, cuda:N or mps")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: bfloat16 (or float16) on a GPU, float32 on the CPU")
    keywords_k: int = Field(10, ge=0, le=100, description="keywords kept per caption")
    images: bool = Field(True, description="caption images (media rows with an image/* MIME type)")
    scenes: bool = Field(True, description="caption video scene keyframes (scenes rows with a keyframe_path)")

    @field_validator("model")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if isinstance(value, str) else value


@dataclass(frozen=True)
class Candidate:
    """One picture to caption."""

    key: str  # record key of errors: uid#index or uid#index#scene
    uid: str
    media_index: int
    scene: int | None
    path: str | None  # relative to the run folder


class CaptionStage(Stage):
    """LLaVA-family captions and keywords for images and scene keyframes."""

    name: ClassVar[str] = "caption"
    version: ClassVar[int] = 1
    inputs: ClassVar[dict[str, str]] = {"media": "media", "scenes": "scenes"}
    outputs: ClassVar[dict[str, str]] = {"captions": "captions"}
    Config: ClassVar[type[StageConfig]] = CaptionConfig
    resources: ClassVar[str] = "gpu"

    config: CaptionConfig

    def __init__(self, config: StageConfig, run_dir: RunPath) -> None:
        super().__init__(config, run_dir)
        self.captioner: Any = None
        self._announced = False

    def setup(self) -> None:
        model = self.config.model
        if model is None:
            if not self._announced:
                log.warning(SKIP_MESSAGE)
                self._announced = True
            return
        if self.captioner is None:
            from blift.models.captioner import (
                load_captioner,  # torch/transformers only when used
            )

            cfg = self.config
            self.captioner = load_captioner(model, device=cfg.device, dtype=cfg.dtype,
                                            max_new_tokens=cfg.max_new_tokens)
            log.info("caption: %s, batch %d", self.captioner.describe(), cfg.batch_size)

    def describe(self) -> str:
        if self.config.model is None:
            return SKIP_MESSAGE
        if self.captioner is None:
            return f"caption: {self.config.model} (not loaded yet)"
        return f"caption: {self.captioner.describe()}, batch {self.config.batch_size}"

    @classmethod
    def fingerprint(cls, config: StageConfig) -> dict[str, Any]:
        from blift.models.captioner import model_identity

        assert isinstance(config, CaptionConfig)
        return {"prompt_sha": prompt_sha(config.prompt), "prompt": config.prompt, "model": model_identity(config.model)}

    # ------------------------------------------------------------------------------ candidates

    def candidates(self, shard: ShardInput, counters: dict[str, int]) -> list[Candidate]:
        """Images then scene keyframes of the shard, in table order; the rest counted by reason."""
        out: list[Candidate] = []
        if self.config.images:
            for row in shard.rows("media"):
                if row.get("status") != "ok":
                    counters["media_not_ok"] += 1  # the download stage accounts for these
                elif not str(row.get("mime") or "").startswith("image/"):
                    counters["not_image"] += 1  # videos are captioned per scene keyframe
                else:
                    counters["images"] += 1
                    out.append(Candidate(f"{row['uid']}#{row['index']}", row["uid"], row["index"], None,
                                         row.get("path")))
        if self.config.scenes:
            for row in shard.rows("scenes"):
                key = f"{row['uid']}#{row['media_index']}#{row['scene']}"
                if not row.get("keyframe_path"):
                    counters["scene_no_keyframe"] += 1  # the scenes stage wrote no keyframe
                    continue
                counters["scenes"] += 1
                out.append(Candidate(key, row["uid"], row["media_index"], row["scene"], row["keyframe_path"]))
        return out

    def load(self, cand: Candidate, run_dir: RunPath) -> Image.Image:
        """The candidate's picture as RGB, displayed orientation, first frame of an animation."""
        path = run_file(run_dir, cand.path, f"{cand.key}: media")
        img, _ = open_image(path, DECODE_SIDE)
        return to_rgb(img)

    # ------------------------------------------------------------------------------ process

    def process(self, shard: ShardInput) -> StageResult:
        counters = {k: 0 for k in ("images", "scenes", "media_not_ok", "not_image", "scene_no_keyframe",
                                   "captioned", "empty_caption", "batch_retried_singly", "skipped_no_model")}
        records_in = (shard.tables["media"].num_rows if self.config.images else 0) + (
            shard.tables["scenes"].num_rows if self.config.scenes else 0)
        todo = self.candidates(shard, counters)
        if self.config.model is None:
            counters["skipped_no_model"] = len(todo)
            log.info("%s (shard %s: %d picture(s) not captioned)", SKIP_MESSAGE, shard.shard_id, len(todo))
            return StageResult(tables={"captions": schemas.get("captions").empty()}, records_in=records_in,
                               counters=counters)
        self.setup()
        rows: list[dict[str, Any]] = []
        errors: list[RecordFailure] = []
        for batch in self._batches(todo, shard.run_dir, errors):
            for cand, caption in self._caption(batch, errors, counters):
                if not caption:
                    counters["empty_caption"] += 1
                    errors.append(RecordFailure(cand.key, ErrorClass.PERMANENT, "empty_caption",
                                                f"{cand.key}: the model produced no text for {cand.path}"))
                    continue
                counters["captioned"] += 1
                rows.append(self._row(cand, caption))
        table = schemas.get("captions").from_rows(rows, where=f"{self.name} shard {shard.shard_id}: ")
        return StageResult(tables={"captions": table}, records_in=records_in, errors=errors, counters=counters)

    def _row(self, cand: Candidate, caption: str) -> dict[str, Any]:
        return {
            "uid": cand.uid,
            "media_index": cand.media_index,
            "scene": cand.scene,
            "caption": caption,
            "keywords": extract_keywords(caption, self.config.keywords_k),
            "model": self.config.model,
            "prompt_sha": prompt_sha(self.config.prompt),
        }

    def _batches(self, todo: list[Candidate], run_dir: RunPath,
                 errors: list[RecordFailure]) -> Iterator[list[tuple[Candidate, Image.Image]]]:
        """Full batches of readable pictures (an unreadable file does not shrink a batch); only
        one batch of decoded images is held at a time."""
        batch: list[tuple[Candidate, Image.Image]] = []
        for cand in todo:
            try:
                img = self.load(cand, run_dir)
            except BliftError:
                raise
            except Exception as exc:  # noqa: BLE001 - one bad file must not kill the shard
                errors.append(_failure(cand, exc, "cannot read image"))
                continue
            batch.append((cand, img))
            if len(batch) == self.config.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def _caption(self, batch: list[tuple[Candidate, Image.Image]], errors: list[RecordFailure],
                 counters: dict[str, int]) -> list[tuple[Candidate, str]]:
        """Captions of a batch; when the batch call fails, each image alone, so one image the
        model cannot take (or a batch too large for the GPU) costs only its own record."""
        prompt = self.config.prompt
        try:
            captions = self.captioner.caption([img for _, img in batch], prompt)
            if len(captions) != len(batch):
                raise RuntimeError(f"captioner returned {len(captions)} captions for {len(batch)} images")
            return [(cand, text) for (cand, _), text in zip(batch, captions)]
        except BliftError:
            raise
        except Exception as exc:  # noqa: BLE001
            if len(batch) == 1:
                errors.append(_failure(batch[0][0], exc, "captioning failed"))
                return []
            log.warning("caption: a batch of %d failed (%s: %s); captioning its images one by one",
                        len(batch), type(exc).__name__, exc)
            counters["batch_retried_singly"] += 1
            _free_cuda_cache()
        out = []
        for cand, img in batch:
            try:
                [text] = self.captioner.caption([img], prompt)
            except BliftError:
                raise
            except Exception as exc:  # noqa: BLE001
                errors.append(_failure(cand, exc, "captioning failed"))
                continue
            out.append((cand, text))
        return out


def _failure(cand: Candidate, exc: Exception, what: str) -> RecordFailure:
    """A record error named by its key and file. Out of GPU memory is transient (a smaller batch
    or a quieter GPU may succeed); anything else about one local file is permanent."""
    if isinstance(exc, PermanentError):
        return RecordFailure(cand.key, ErrorClass.PERMANENT, exc.error_type, str(exc))
    name = type(exc).__name__
    if name == "OutOfMemoryError" or "out of memory" in str(exc).lower():
        return RecordFailure(cand.key, ErrorClass.TRANSIENT, "gpu_out_of_memory", f"{cand.key}: {what}: {exc}")
    return RecordFailure(cand.key, ErrorClass.PERMANENT, name, f"{cand.key}: {what} {cand.path}: {exc}")


def _free_cuda_cache() -> None:
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
