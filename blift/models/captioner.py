"""Image captioning behind one small interface, with a transformers LLaVA backend.

:class:`Captioner` is what the ``caption`` stage talks to: ``caption(images, prompt)`` returns one
text per image, in order, for a whole batch at once (on a GPU, batching is most of the speed).

:class:`LlavaCaptioner` runs the LLaVA family through ``transformers``:

* ``llava`` -> ``LlavaForConditionalGeneration`` (LLaVA-1.5),
* ``llava_next`` -> ``LlavaNextForConditionalGeneration`` (LLaVA-NeXT / 1.6, the paper's model),
* ``llava_next_video`` -> ``LlavaNextVideoForConditionalGeneration`` (keyframes fed as images),

picked from the checkpoint's ``config.json`` ``model_type``, never from its name. Decoding is
greedy so a caption is a function of (model, prompt, image): reruns and batch sizes agree.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from blift.errors import ConfigError
from blift.models import devices

log = logging.getLogger(__name__)

# model_type in config.json -> transformers class name
MODEL_CLASSES: dict[str, str] = {
    "llava": "LlavaForConditionalGeneration",
    "llava_next": "LlavaNextForConditionalGeneration",
    "llava_next_video": "LlavaNextVideoForConditionalGeneration",
}

# LLaVA-1.5's conversation format; used when a checkpoint ships no chat template.
PLAIN_TEMPLATE = "USER: <image>\n{prompt} ASSISTANT:"

_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")


class Captioner(ABC):
    """Describes images in words. Implementations load their model once, in ``__init__``."""

    model: str  # the model name or path, as configured (goes into the ``model`` column)

    @abstractmethod
    def caption(self, images: list[Image.Image], prompt: str) -> list[str]:
        """One caption per image, in order. Images are RGB; the batch is processed together."""

    @abstractmethod
    def describe(self) -> str:
        """One line for logs: backend, model, device and precision."""


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: a local folder, or a Hub repo id read through the HF cache."""

    spec: str  # as configured
    location: str  # what from_pretrained gets
    local_files_only: bool

    @property
    def is_folder(self) -> bool:
        return Path(self.location).is_dir()


def looks_like_path(spec: str) -> bool:
    """A spec is a path when it is absolute, explicitly relative or home-relative, or is not
    shaped like a Hub id (``org/name`` or ``name``); an existing folder always wins anyway."""
    return spec.startswith(("/", "./", "../", "~", ".")) or not _REPO_ID.match(spec)


def resolve_model(spec: str, *, what: str = "caption model",
                  checkpoint_files: tuple[str, ...] = ("config.json",)) -> ModelSource:
    """Find ``spec`` as a local folder or a Hub id; raise ConfigError naming what was tried.
    A folder must hold one of ``checkpoint_files`` (training also takes LoRA output folders,
    which have ``adapter_config.json`` instead of ``config.json``)."""
    spec = str(spec).strip()
    if not spec:
        raise ConfigError(f"{what}: empty model name")
    folder = Path(spec).expanduser()
    if folder.is_dir():
        if not any((folder / name).is_file() for name in checkpoint_files):
            wanted = (f"neither {checkpoint_files[0]} nor {checkpoint_files[1]}" if len(checkpoint_files) == 2
                      else "no " + " or ".join(checkpoint_files))
            raise ConfigError(f"{what} {spec!r}: folder {folder.resolve()} has {wanted} "
                              "(expected a transformers checkpoint saved with save_pretrained)")
        return ModelSource(spec, str(folder.resolve()), True)
    if looks_like_path(spec):
        raise ConfigError(f"{what} {spec!r}: folder {folder.resolve()} does not exist "
                          "(a Hub model is given as 'org/name')")
    offline = hub_offline()
    if offline and cached_snapshot(spec) is None:
        raise ConfigError(
            f"{what} {spec!r}: not a local folder ({folder.resolve()} does not exist) and not in the "
            f"Hugging Face cache ({hub_cache_dir()}); HF_HUB_OFFLINE is set, so nothing is downloaded. "
            "Download it on a connected machine (huggingface-cli download) or give a local path.")
    return ModelSource(spec, spec, offline)


def cached_snapshot(repo_id: str) -> Path | None:
    """The cached snapshot folder of ``repo_id`` at ``main`` holding a config.json, if any."""
    repo = hub_cache_dir() / ("models--" + repo_id.replace("/", "--"))
    ref = repo / "refs" / "main"
    if not ref.is_file():
        return None
    snap = repo / "snapshots" / ref.read_text().strip()
    return snap if (snap / "config.json").is_file() else None


def model_identity(spec: str | None) -> dict[str, Any]:
    """What pins a model's content without loading it (joins the stage's config hash, so swapping
    the weights behind the same path redoes the shards): the config.json digest and the weight
    files' names and sizes for a folder, the cached commit for a Hub id."""
    if not spec:
        return {}
    folder = Path(spec).expanduser()
    if not folder.is_dir():
        snap = cached_snapshot(spec) if _REPO_ID.match(spec) else None
        return {"hub_commit": snap.name if snap else None}
    config = folder / "config.json"
    digest = hashlib.sha256(config.read_bytes()).hexdigest()[:16] if config.is_file() else None
    weights = sorted((p.name, p.stat().st_size) for p in folder.iterdir()
                     if p.suffix in (".safetensors", ".bin", ".pt") and p.is_file())
    return {"config_sha": digest, "weights": weights}


def read_model_type(source: ModelSource) -> str:
    """``model_type`` of the checkpoint's config.json, checked against what this backend runs."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(source.location, local_files_only=source.local_files_only)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"caption model {source.spec!r}: cannot read its config.json ({exc})") from None
    model_type = getattr(config, "model_type", None)
    if model_type not in MODEL_CLASSES:
        raise ConfigError(f"caption model {source.spec!r}: model_type {model_type!r} is not supported by the "
                          f"transformers LLaVA backend (supported: {', '.join(MODEL_CLASSES)})")
    return model_type


def load_processor(source: ModelSource, model_type: str, model_config: Any) -> Any:
    """The checkpoint's processor. LLaVA-NeXT-Video's processor also builds a video processor,
    which needs torchvision; when that fails, the image half is assembled as a LlavaNextProcessor
    from the same files (the image path of the two models is the same anyres pipeline)."""
    from transformers import AutoProcessor

    kwargs = {"local_files_only": source.local_files_only}
    try:
        return AutoProcessor.from_pretrained(source.location, **kwargs)
    except (ImportError, AttributeError, ValueError, TypeError) as exc:
        if model_type != "llava_next_video":
            raise ConfigError(f"caption model {source.spec!r}: cannot load its processor ({exc})") from None
        log.info("caption: %s: video processor unavailable (%s); using its image processor only",
                 source.spec, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    except OSError as exc:
        raise ConfigError(f"caption model {source.spec!r}: cannot load its processor ({exc})") from None
    return image_only_next_processor(source, model_config)


def image_only_next_processor(source: ModelSource, model_config: Any) -> Any:
    from transformers import AutoImageProcessor, AutoTokenizer, LlavaNextProcessor

    try:
        tokenizer = AutoTokenizer.from_pretrained(source.location, local_files_only=source.local_files_only)
        images = AutoImageProcessor.from_pretrained(source.location, local_files_only=source.local_files_only)
    except (OSError, ValueError, ImportError) as exc:
        raise ConfigError(f"caption model {source.spec!r}: cannot load its tokenizer/image processor ({exc})") from None
    saved = _processor_settings(source)
    template = saved.get("chat_template") or getattr(tokenizer, "chat_template", None)
    return LlavaNextProcessor(
        image_processor=images,
        tokenizer=tokenizer,
        patch_size=saved.get("patch_size") or model_config.vision_config.patch_size,
        vision_feature_select_strategy=saved.get("vision_feature_select_strategy")
        or model_config.vision_feature_select_strategy,
        num_additional_image_tokens=saved.get("num_additional_image_tokens", 1),  # CLIP's CLS token
        image_token=saved.get("image_token", "<image>"),
        chat_template=template,
    )


def _processor_settings(source: ModelSource) -> dict[str, Any]:
    """processor_config.json (+ chat_template.jinja / .json) of a checkpoint, when readable."""
    from huggingface_hub import hf_hub_download

    out: dict[str, Any] = {}

    def fetch(name: str) -> Path | None:
        if Path(source.location).is_dir():
            path = Path(source.location) / name
            return path if path.is_file() else None
        try:
            return Path(hf_hub_download(source.location, name, local_files_only=source.local_files_only))
        except Exception:  # noqa: BLE001 - optional files
            return None

    if path := fetch("processor_config.json"):
        out.update(json.loads(path.read_text()))
    if path := fetch("chat_template.jinja"):
        out["chat_template"] = path.read_text()
    elif path := fetch("chat_template.json"):
        out["chat_template"] = json.loads(path.read_text()).get("chat_template")
    return out


class LlavaCaptioner(Captioner):
    """LLaVA / LLaVA-NeXT / LLaVA-NeXT-Video through transformers, greedy, batched, left-padded."""

    def __init__(self, model: str, *, device: str = "auto", dtype: str = "auto", max_new_tokens: int = 128,
                 model_obj: Any = None, processor: Any = None) -> None:
        """Load ``model`` (a folder or Hub id). ``model_obj``/``processor``: an already-built pair
        (benchmarks build LLaVA-7B-shaped random models on the device without saving them)."""
        import transformers

        self.model = model
        self.max_new_tokens = int(max_new_tokens)
        if model_obj is not None:
            self.net, self.processor = model_obj.eval(), processor
            self.model_type = model_obj.config.model_type
            self.device = str(model_obj.device)
            self.dtype = str(model_obj.dtype).removeprefix("torch.")
        else:
            self.device = devices.pick_device(device, where="caption device")
            self.dtype = devices.dtype_name(dtype, self.device, where="caption dtype")
            source = resolve_model(model)
            self.model_type = read_model_type(source)
            cls = getattr(transformers, MODEL_CLASSES[self.model_type])
            try:
                # device_map puts the weights straight on the device (no CPU copy of a 14 GB model)
                net = cls.from_pretrained(source.location, dtype=devices.torch_dtype(self.dtype),
                                          device_map=self.device, local_files_only=source.local_files_only)
            except OSError as exc:
                raise ConfigError(f"caption model {model!r}: cannot load weights ({exc})") from None
            self.net = net.eval()
            self.processor = load_processor(source, self.model_type, self.net.config)
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "left"  # generation appends on the right: pads must be on the left
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token  # LLaVA checkpoints without a pad token
        self.image_token = getattr(self.processor, "image_token", "<image>")
        self.generation = self._generation_config()
        log.info("%s", self.describe())

    def _generation_config(self) -> Any:
        """The checkpoint's generation config made greedy: a checkpoint that ships ``do_sample``
        with a temperature must not make captions random."""
        import copy

        gen = copy.deepcopy(self.net.generation_config)
        gen.do_sample = False
        gen.num_beams = 1
        gen.temperature = None
        gen.top_p = None
        gen.top_k = None
        gen.max_new_tokens = self.max_new_tokens
        gen.max_length = None
        if gen.pad_token_id is None:
            gen.pad_token_id = self.tokenizer.pad_token_id
        return gen

    def describe(self) -> str:
        return (f"transformers {type(self.net).__name__} {self.model} on {devices.describe(self.device, self.dtype)}, "
                f"greedy, max_new_tokens={self.max_new_tokens}")

    def build_prompt(self, prompt: str) -> str:
        """The full text for one image: the checkpoint's chat template when it has one (user turn =
        image + prompt, then the assistant header), else LLaVA-1.5's ``USER: <image>\\n... ASSISTANT:``."""
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        if getattr(self.processor, "chat_template", None):
            text = self.processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        elif getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        else:
            text = PLAIN_TEMPLATE.replace("<image>", self.image_token).format(prompt=prompt)
        if text.count(self.image_token) != 1:
            raise ConfigError(f"caption model {self.model!r}: its chat template put {text.count(self.image_token)} "
                              f"image tokens ({self.image_token}) in the prompt, expected 1: {text!r:.200}")
        return text

    def caption(self, images: list[Image.Image], prompt: str) -> list[str]:
        import torch

        if not images:
            return []
        text = self.build_prompt(prompt)
        rgb = [img if img.mode == "RGB" else img.convert("RGB") for img in images]
        inputs = self.processor(images=rgb, text=[text] * len(rgb), return_tensors="pt", padding=True)
        inputs = inputs.to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.net.dtype)
        with torch.inference_mode():
            out = self.net.generate(**inputs, generation_config=self.generation)
        new = out[:, inputs["input_ids"].shape[1]:]  # left padding: every prompt ends at the same column
        return [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]


def load_captioner(model: str, *, device: str = "auto", dtype: str = "auto", max_new_tokens: int = 128) -> Captioner:
    """The captioner for ``model`` (only the transformers LLaVA family so far)."""
    return LlavaCaptioner(model, device=device, dtype=dtype, max_new_tokens=max_new_tokens)
