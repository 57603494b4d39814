"""Turn :class:`~blift.train.data.Example` records into model batches for LLaVA-family models.

One collator serves training (``__call__``: right-padded, labels on assistant tokens only),
generation (``prompt_batch``: left-padded prompts ending in ``ASSISTANT:``) and likelihood
scoring (``scoring_batch``: a prompt plus a given answer, labels on that answer only), so the
text a model is scored on at evaluation is the text it was trained on, token for token.

Text comes from :mod:`blift.train.prompt` (never formatted here). The model's processor expands
each media placeholder into the number of feature tokens the model needs and reports where it
did so (``return_text_replacement_offsets``); the character spans of the assistant answers are
shifted by those expansions and every token overlapping a span is supervised. Everything else
(system prompt, user turns, ``ASSISTANT:`` headers, media tokens, padding) gets label -100.

Media per model type:

* ``llava`` / ``llava_next``: an image record is its image(s), each one ``<image>``. These models
  have no video input, so a video record becomes its frames as separate images, each its own
  ``<image>`` token, at most ``num_frames`` of them (sampled evenly). Mind the cost: a LLaVA-1.5
  image is 576 tokens, so 8 frames do not fit in 2048 tokens; choose ``num_frames`` to fit.
* ``llava_next_video``: images as above; a video is one ``<video>`` with ``pixel_values_videos``
  of exactly ``num_frames`` frames (evenly spaced, repeated when a video is shorter, so videos
  of a batch stack). Without torchvision the checkpoint's video processor cannot be built; then
  the frames are resized, centre-cropped and normalised with the image processor's settings
  (what LLaVA-NeXT-Video's video processor does) and ``<video>`` is expanded here with the
  processor's formula (``(H/patch * W/patch) / 4`` tokens per frame: the model's 2x2 pooling).
* ``qwen2_vl``: its processor needs torchvision; without it the collator refuses to start with
  a message saying so. With it, images and videos go through the processor (untested here).

Truncation to ``max_length`` keeps the head of a training sequence (media sit at its start) and
never cuts a media token: a record whose media alone do not fit raises :class:`CollatorError`
naming it. Prompts and scoring sequences are never truncated (cutting them changes the question
or the scored answer), so they raise as well when too long.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from blift.errors import InvalidRecord
from blift.train.data import Example, even_indices
from blift.train.prompt import EOS, GPT_ROLES, ConversationError, render, render_prompt

if TYPE_CHECKING:
    from transformers import CLIPImageProcessorPil

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
MODEL_TYPES = ("llava", "llava_next", "llava_next_video", "qwen2_vl")
# Keys of a processor's output that carry media; everything else it returns is text-side.
MEDIA_KEYS = ("pixel_values", "image_sizes", "pixel_values_videos", "image_grid_thw", "video_grid_thw")
QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
QWEN_VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"


class CollatorError(InvalidRecord):
    """A record that cannot become model input; ``record_id`` names it."""

    def __init__(self, record_id: str, message: str) -> None:
        super().__init__(f"record {record_id!r}: {message}")
        self.record_id = record_id


@dataclass
class _Encoded:
    """One tokenised record before padding."""

    record_id: str
    input_ids: list[int]
    labels: list[int]
    media: dict[str, torch.Tensor]


def _torchvision_available() -> bool:
    from transformers.utils import is_torchvision_available

    return bool(is_torchvision_available())


def frames_to_images(frames: np.ndarray) -> list[Any]:
    """uint8 (T,3,H,W) frames as T RGB PIL images."""
    from PIL import Image

    return [Image.fromarray(np.ascontiguousarray(frame.transpose(1, 2, 0))) for frame in frames]


def _shift(spans: Sequence[tuple[int, int]], replacements: Sequence[Mapping[str, Any]]) -> list[tuple[int, int]]:
    """Character spans of a text moved to where they are after placeholder expansion
    (``replacements``: the processor's ``text_replacement_offsets`` of that text)."""
    ends = [r["span"][1] for r in replacements]
    gained = [0]
    for r in replacements:
        gained.append(gained[-1] + (r["new_span"][1] - r["new_span"][0]) - (r["span"][1] - r["span"][0]))
    return [(s + gained[bisect_right(ends, s)], e + gained[bisect_right(ends, e - 1)]) for s, e in spans]


class VlmCollator:
    """Batches of :class:`Example` for a LLaVA-family model (see the module docstring).

    ``model_config`` (optional, the model's ``config``) lets the collator check at start that the
    processor's patch size and crop size agree with the vision tower, the usual cause of
    image-token count errors deep inside ``forward``."""

    def __init__(self, processor: Any, model_type: str, *, max_length: int = 2048, num_frames: int = 8,
                 model_config: Any = None) -> None:
        if model_type not in MODEL_TYPES:
            raise ValueError(f"unsupported model_type {model_type!r}; expected one of {MODEL_TYPES}")
        if model_type == "qwen2_vl" and not _torchvision_available():
            raise RuntimeError("model_type 'qwen2_vl' needs torchvision for its image/video processor, "
                               "which is not installed; use a llava/llava_next/llava_next_video checkpoint")
        if max_length < 1 or num_frames < 1:
            raise ValueError(f"max_length ({max_length}) and num_frames ({num_frames}) must be positive")
        self.processor = processor
        self.model_type = model_type
        self.max_length = max_length
        self.num_frames = num_frames
        self.tokenizer = getattr(processor, "tokenizer", processor)
        if not getattr(self.tokenizer, "is_fast", False):
            raise ValueError("VlmCollator needs a fast (tokenizers) tokenizer: labels come from its offset mapping")
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else (self.tokenizer.eos_token_id or 0)
        self.image_token = getattr(processor, "image_token", None) or "<image>"
        self.image_token_id = self._token_id(self.image_token)
        self.video_token: str | None = None
        self.video_token_id: int | None = None
        self.native_video = bool(hasattr(processor, "video_processor") and getattr(processor, "video_token", None))
        if model_type in ("llava_next_video", "qwen2_vl"):
            self.video_token = (getattr(processor, "video_token", None) or getattr(self.tokenizer, "video_token", None)
                                or "<video>")
            self.video_token_id = self._token_id(self.video_token)
        # lazily built plain-resize image processor for NeXT-Video frames
        self._video_images: CLIPImageProcessorPil | None = None
        # (image side, patch, strategy) of the model's vision tower: LLaVA-1.5 image-token counts
        # are then checked against the model, not against the processor that made them.
        self._vision: tuple[int, int, str] | None = None
        if model_config is not None:
            self._check_model_config(model_config)

    # -- setup helpers --------------------------------------------------------------------------

    def _token_id(self, token: str) -> int:
        ids = self.tokenizer.encode(token, add_special_tokens=False)
        if len(ids) != 1 or ids[0] == self.tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer does not have {token!r} as a single token (got ids {ids}); "
                             f"the processor and tokenizer do not belong to a {self.model_type} checkpoint")
        return ids[0]

    def _check_model_config(self, config: Any) -> None:
        vision = getattr(config, "vision_config", None)
        patch = getattr(self.processor, "patch_size", None)
        if vision is None or patch is None:
            return
        if patch != vision.patch_size:
            raise ValueError(f"processor patch_size {patch} != model vision patch_size {vision.patch_size}")
        crop = getattr(getattr(self.processor, "image_processor", None), "crop_size", None)
        if crop and self.model_type == "llava" and (crop["height"], crop["width"]) != (vision.image_size,) * 2:
            raise ValueError(f"processor crop size {crop} != model image_size {vision.image_size}")
        strategy = getattr(config, "vision_feature_select_strategy", "default")
        self._vision = (vision.image_size, vision.patch_size, strategy)
        token = getattr(config, "image_token_index", getattr(config, "image_token_id", None))
        if token is not None and token != self.image_token_id:
            raise ValueError(f"tokenizer id of {self.image_token!r} is {self.image_token_id}, model expects {token}")

    # -- media ----------------------------------------------------------------------------------

    def _media(self, ex: Example) -> tuple[list[Any], np.ndarray | None]:
        """(images, video frames) the model sees for ``ex``."""
        if ex.media_kind == "video" or (ex.frames is not None and not ex.images):
            if ex.frames is None:
                raise CollatorError(ex.id, "video record without frames")
            frames = np.asarray(ex.frames)
            if frames.ndim != 4 or frames.shape[1] != 3 or frames.shape[0] == 0:
                raise CollatorError(ex.id, f"frames must be uint8 (T,3,H,W) with T>0, got shape {frames.shape}")
            if self.video_token is None:  # image-only model: frames become images
                return frames_to_images(frames[even_indices(len(frames), self.num_frames)]), None
            return [], frames[even_indices(len(frames), self.num_frames, exact=True)]
        if ex.media_kind == "image" and not ex.images:
            raise CollatorError(ex.id, "image record without an image")
        return [image.convert("RGB") if image.mode != "RGB" else image for image in ex.images], None

    def _media_text(self, n_images: int, video: bool) -> str | None:
        if self.model_type == "qwen2_vl":
            return QWEN_VIDEO if video else (QWEN_IMAGE * n_images or None)
        if video:
            return self.video_token
        return self.image_token * n_images or None

    def _video_pixels(self, frames: np.ndarray) -> torch.Tensor:
        """(1,T,3,H,W) float pixels: resize + centre crop + normalise, with the image processor's
        settings (LLaVA-NeXT-Video's video processor does exactly this per frame)."""
        if self._video_images is None:
            from transformers import CLIPImageProcessorPil

            ip = self.processor.image_processor
            self._video_images = CLIPImageProcessorPil(
                size=dict(ip.size), crop_size=dict(ip.crop_size), image_mean=ip.image_mean, image_std=ip.image_std,
                resample=ip.resample, do_convert_rgb=True)
        out = self._video_images(frames_to_images(frames), return_tensors="pt")
        return out["pixel_values"].unsqueeze(0)

    def _expected_media_tokens(self, media: Mapping[str, torch.Tensor]) -> tuple[int, int]:
        """(image tokens, video tokens) the model will fill for these pixel tensors."""
        proc = self.processor
        images = videos = 0
        if self.model_type == "qwen2_vl":
            merge = getattr(proc.image_processor, "merge_size", 2) ** 2
            if "image_grid_thw" in media:
                images = int(media["image_grid_thw"].prod(-1).sum()) // merge
            if "video_grid_thw" in media:
                videos = int(media["video_grid_thw"].prod(-1).sum()) // merge
            return images, videos
        default = 1 if proc.vision_feature_select_strategy == "default" else 0
        pixels = media.get("pixel_values")
        if pixels is not None:
            height, width = pixels.shape[-2:]
            if pixels.dim() == 4 and self._vision is not None:  # llava, model known: CLIP patches (+CLS if "full")
                side, patch, strategy = self._vision
                if (height, width) != (side, side):
                    raise ValueError(f"pixel values are {height}x{width}, the vision tower takes {side}x{side}")
                images = len(pixels) * ((side // patch) ** 2 + (strategy != "default"))
            elif pixels.dim() == 4:  # llava: (n, 3, H, W), the processor's formula
                per = (height // proc.patch_size) * (width // proc.patch_size) + proc.num_additional_image_tokens
                images = len(pixels) * (per - default)
            else:  # llava_next: (n, patches, 3, H, W) + image_sizes
                for orig_h, orig_w in media["image_sizes"].tolist():
                    images += proc._get_number_of_features(int(orig_h), int(orig_w), height, width) - default
        video = media.get("pixel_values_videos")
        if video is not None:
            height, width = video.shape[-2:]
            videos = (height // proc.patch_size) * (width // proc.patch_size) // 4 * video.shape[0] * video.shape[1]
        return images, videos

    # -- one record -----------------------------------------------------------------------------

    def _text(self, ex: Example, mode: str, media_text: str | None, continuation: str | None,
              include_eos: bool) -> tuple[str, list[tuple[int, int]]]:
        try:
            if mode == "prompt":
                return render_prompt(ex.conversations, media_token=media_text), []
            if mode == "score":
                assert continuation is not None  # scoring_batch() passes one per example
                turns = list(ex.conversations)
                if turns and str(turns[-1].get("from") or turns[-1].get("role") or "").lower() in GPT_ROLES:
                    turns = turns[:-1]
                rendered = render([*turns, {"from": "gpt", "value": continuation}], media_token=media_text)
                start, end = rendered.assistant_spans[-1]
                return rendered.text, [(start, end if include_eos else end - len(EOS))]
            rendered = render(ex.conversations, media_token=media_text)
            return rendered.text, list(rendered.assistant_spans)
        except ConversationError as exc:
            raise CollatorError(ex.id, f"conversations: {exc}") from exc

    def _encode(self, ex: Example, mode: str, continuation: str | None = None, include_eos: bool = True) -> _Encoded:
        images, frames = self._media(ex)
        media_text = self._media_text(len(images), frames is not None)
        text, spans = self._text(ex, mode, media_text, continuation, include_eos)
        media: dict[str, torch.Tensor] = {}
        kwargs: dict[str, Any] = {}
        if images:
            kwargs["images"] = images
        if frames is not None:
            if self.native_video:
                kwargs["videos"] = [np.ascontiguousarray(frames.transpose(0, 2, 3, 1))]
            else:  # expand <video> here; the processor only sees the expanded tokens as text
                video_token = self.video_token
                assert video_token is not None  # _media() gives frames to video models only
                media["pixel_values_videos"] = self._video_pixels(frames)
                count = self._expected_media_tokens(media)[1]
                at = text.index(video_token)
                replacement = {"span": (at, at + len(video_token)),
                               "new_span": (at, at + len(video_token) * count)}
                text = text[:at] + video_token * count + text[at + len(video_token):]
                spans = _shift(spans, [replacement])
        try:
            out = self.processor(text=[text], return_offsets_mapping=True, return_text_replacement_offsets=True,
                                 return_tensors="pt", **kwargs)
        except (ValueError, TypeError, OSError) as exc:
            raise CollatorError(ex.id, f"processor failed: {exc}") from exc
        media.update({k: out[k] for k in MEDIA_KEYS if k in out})
        replacements = (out.get("text_replacement_offsets") or [[]])[0]
        spans = _shift(spans, replacements)
        ids: list[int] = out["input_ids"][0].tolist()
        offsets = out["offset_mapping"][0].tolist()
        media_ids = {t for t in (self.image_token_id, self.video_token_id) if t is not None}
        labels = [IGNORE_INDEX] * len(ids)
        for pos, ((tok_start, tok_end), tok) in enumerate(zip(offsets, ids)):
            if tok_end > tok_start and tok not in media_ids and any(tok_start < e and tok_end > s for s, e in spans):
                labels[pos] = tok
        self._check_counts(ex.id, ids, media)
        return self._truncate(_Encoded(ex.id, ids, labels, media), mode, media_ids)

    def _check_counts(self, record_id: str, ids: list[int], media: Mapping[str, torch.Tensor]) -> None:
        try:
            want_images, want_videos = self._expected_media_tokens(media)
        except ValueError as exc:
            raise CollatorError(record_id, str(exc)) from exc
        have_images = ids.count(self.image_token_id)
        have_videos = ids.count(self.video_token_id) if self.video_token_id is not None else 0
        if (have_images, have_videos) != (want_images, want_videos):
            raise CollatorError(record_id, f"media token count mismatch: the text has {have_images} image and "
                                           f"{have_videos} video tokens, the pixel values need {want_images} and "
                                           f"{want_videos} (a literal media token in the text, or a processor that "
                                           "does not match the model)")

    def _truncate(self, enc: _Encoded, mode: str, media_ids: set[int]) -> _Encoded:
        if len(enc.input_ids) <= self.max_length:
            return enc
        if mode != "train":
            raise CollatorError(enc.record_id, f"{len(enc.input_ids)} tokens exceed max_length {self.max_length}; "
                                               "prompts and scored answers are never truncated")
        last_media = max((i for i, t in enumerate(enc.input_ids) if t in media_ids), default=-1)
        if last_media >= self.max_length:
            raise CollatorError(enc.record_id, f"its media tokens end at position {last_media + 1}, beyond max_length "
                                               f"{self.max_length}; truncating would cut them (raise max_length or "
                                               "lower num_frames)")
        enc.input_ids = enc.input_ids[: self.max_length]
        enc.labels = enc.labels[: self.max_length]
        if all(label == IGNORE_INDEX for label in enc.labels):
            log.warning("record %s: no assistant token left after truncation to %d tokens", enc.record_id,
                        self.max_length)
        return enc

    # -- batches --------------------------------------------------------------------------------

    def _batch(self, encoded: list[_Encoded], *, left: bool, labels: bool) -> dict[str, torch.Tensor]:
        if not encoded:
            raise ValueError("empty batch")
        width = max(len(e.input_ids) for e in encoded)
        input_ids = torch.full((len(encoded), width), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(encoded), width), dtype=torch.long)
        label_t = torch.full((len(encoded), width), IGNORE_INDEX, dtype=torch.long)
        for row, enc in enumerate(encoded):
            n = len(enc.input_ids)
            cols = slice(width - n, width) if left else slice(0, n)
            input_ids[row, cols] = torch.tensor(enc.input_ids, dtype=torch.long)
            attention[row, cols] = 1
            label_t[row, cols] = torch.tensor(enc.labels, dtype=torch.long)
        batch: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": attention}
        if labels:
            batch["labels"] = label_t
        batch.update(_merge_media([e.media for e in encoded]))
        return batch

    def __call__(self, examples: list[Example]) -> dict[str, torch.Tensor]:
        """A right-padded training batch: input_ids, attention_mask, labels (-100 outside the
        assistant answers and on padding) and the media tensors of the model type."""
        return self._batch([self._encode(ex, "train") for ex in examples], left=False, labels=True)

    def prompt_batch(self, examples: list[Example]) -> dict[str, torch.Tensor]:
        """Left-padded generation prompts (every turn before the last answer, then ``ASSISTANT:``)
        with their media, for ``model.generate``; no labels."""
        return self._batch([self._encode(ex, "prompt") for ex in examples], left=True, labels=False)

    def scoring_batch(self, examples: list[Example], continuations: list[str], *,
                      include_eos: bool = True) -> dict[str, torch.Tensor]:
        """Prompt of example i with ``continuations[i]`` as its final answer, right-padded; labels
        only on the continuation's tokens (with its ``</s>`` unless ``include_eos`` is false:
        the model must also say the answer ends there, as it was trained)."""
        if len(examples) != len(continuations):
            raise ValueError(f"{len(examples)} examples but {len(continuations)} continuations")
        encoded = [self._encode(ex, "score", str(c), include_eos) for ex, c in zip(examples, continuations)]
        return self._batch(encoded, left=False, labels=True)


def _merge_media(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Concatenate per-record media along the first axis; LLaVA-NeXT's per-image patch stacks
    are zero-padded to the longest (the model drops the padding using ``image_sizes``)."""
    merged: dict[str, torch.Tensor] = {}
    for key in MEDIA_KEYS:
        tensors = [p[key] for p in parts if key in p]
        if not tensors:
            continue
        if key == "pixel_values" and tensors[0].dim() == 5:
            most = max(t.shape[1] for t in tensors)
            tensors = [torch.nn.functional.pad(t, (0, 0, 0, 0, 0, 0, 0, most - t.shape[1])) for t in tensors]
        merged[key] = torch.cat(tensors, dim=0)
    return merged
