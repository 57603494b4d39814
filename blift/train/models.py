"""Load a LLaVA-family checkpoint ready to fine-tune: the right class, the right parts trainable.

The class comes from the checkpoint's ``config.json`` ``model_type``, never from its name:

* ``llava`` -> ``LlavaForConditionalGeneration`` (LLaVA-1.5),
* ``llava_next`` -> ``LlavaNextForConditionalGeneration`` (LLaVA-NeXT / 1.6),
* ``llava_next_video`` -> ``LlavaNextVideoForConditionalGeneration``,
* ``qwen2_vl`` -> ``Qwen2VLForConditionalGeneration`` (its processor needs torchvision; without it
  loading stops with a message saying so).

What trains follows LLaVA's instruction-tuning stage (the recipe Behavior-LLaVA inherits): the
vision tower stays frozen (``tune_vision`` unfreezes it), the projector always trains, and the
language model trains fully or, with LoRA, through adapters on its linear layers only (the
vision tower's attention layers share names like ``q_proj``, so targets are matched under
``language_model`` by a regex). A LoRA run keeps a full trainable copy of the projector
(peft ``modules_to_save``), so the saved adapter carries the projector too.

``ref`` may also be a folder written by ``blift train`` with LoRA: it holds the adapter and the
processor but no ``config.json``; the base model named in ``adapter_config.json`` is loaded and
the adapter applied on top, so evaluation takes a LoRA run's output folder like any checkpoint.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blift.errors import ConfigError
from blift.models import captioner, devices

if TYPE_CHECKING:
    from blift.train.config import LoraSettings

log = logging.getLogger(__name__)

# model_type in config.json -> transformers class name
MODEL_CLASSES: dict[str, str] = {
    **captioner.MODEL_CLASSES,
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
}
# Attribute names (under the model's inner ``model``) of the three parts, per family.
VISION_PARTS = ("vision_tower", "visual")
PROJECTOR_PARTS = ("multi_modal_projector", "visual.merger")
LANGUAGE_PART = "language_model"


def resolve(ref: str) -> captioner.ModelSource:
    """A local folder (a checkpoint or a LoRA output folder) or a cached/downloadable Hub id."""
    return captioner.resolve_model(ref, what="model", checkpoint_files=("config.json", "adapter_config.json"))


def adapter_base(source: captioner.ModelSource) -> str | None:
    """The base model a LoRA output folder was trained from (None: ``source`` is a full checkpoint)."""
    folder = Path(source.location)
    if not folder.is_dir() or (folder / "config.json").is_file():
        return None
    path = folder / "adapter_config.json"
    try:
        base = json.loads(path.read_text()).get("base_model_name_or_path")
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model {source.spec!r}: cannot read {path} ({exc})") from None
    if not base:
        raise ConfigError(f"model {source.spec!r}: {path} names no base_model_name_or_path")
    return str(base)


def read_config(source: captioner.ModelSource, model_type: str | None) -> Any:
    """The checkpoint's config, its ``model_type`` checked against ``model_type`` when given and
    against the families this module can train."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(source.location, local_files_only=source.local_files_only)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model {source.spec!r}: cannot read its config.json ({exc})") from None
    found = getattr(config, "model_type", None)
    if model_type is not None and found != model_type:
        raise ConfigError(f"model {source.spec!r}: model_type is {found!r} in its config.json, "
                          f"but {model_type!r} was asked for")
    if found not in MODEL_CLASSES:
        raise ConfigError(f"model {source.spec!r}: model_type {found!r} is not supported "
                          f"(supported: {', '.join(MODEL_CLASSES)})")
    return config


def load_processor(source: captioner.ModelSource, model_type: str, config: Any) -> Any:
    """The checkpoint's processor. LLaVA-NeXT-Video's needs torchvision for its video half; without
    it the image half is built as a LlavaNextProcessor (the collator builds video tensors with the
    image processor). Qwen2-VL's cannot be built without torchvision: a ConfigError says so."""
    from transformers import AutoProcessor

    try:
        proc = AutoProcessor.from_pretrained(source.location, local_files_only=source.local_files_only)
    except (ImportError, AttributeError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if model_type == "llava_next_video":
            log.info("model %s: video processor unavailable (%s); using its image processor", source.spec, first)
            return captioner.image_only_next_processor(source, config)
        if "torchvision" in str(exc).lower():
            raise ConfigError(f"model {source.spec!r}: the {model_type} processor needs torchvision, which is not "
                              "installed (install it on the training machine)") from None
        raise ConfigError(f"model {source.spec!r}: cannot load its processor ({first})") from None
    except OSError as exc:
        raise ConfigError(f"model {source.spec!r}: cannot load its processor ({exc})") from None
    return proc


def _part(model: Any, names: tuple[str, ...]) -> Any:
    """The first submodule of ``model``'s inner model (or the model itself) named in ``names``."""
    for root in (getattr(model, "model", None), model):
        if root is None:
            continue
        for name in names:
            module = root
            for attr in name.split("."):
                module = getattr(module, attr, None)
                if module is None:
                    break
            if module is not None:
                return module
    return None


def set_trainable(model: Any, *, tune_vision: bool) -> None:
    """Full fine-tuning: everything trains except the vision tower (unless ``tune_vision``); the
    projector always trains (Qwen2-VL's merger sits inside its vision module)."""
    for param in model.parameters():
        param.requires_grad_(True)
    vision = _part(model, VISION_PARTS)
    if vision is not None and not tune_vision:
        for param in vision.parameters():
            param.requires_grad_(False)
    projector = _part(model, PROJECTOR_PARTS)
    if projector is not None:
        for param in projector.parameters():
            param.requires_grad_(True)


def lora_targets(names: list[str]) -> str:
    """peft regex (full match) for linear layers called ``names`` inside the language model only."""
    import re

    alternatives = "|".join(re.escape(n) for n in names)
    return rf".*{LANGUAGE_PART}\..*\.({alternatives})"


def apply_lora(model: Any, lora: LoraSettings, *, tune_vision: bool) -> Any:
    """Wrap ``model`` with LoRA adapters on the language model; projector (and, with
    ``tune_vision``, the vision tower) trained in full and saved with the adapter."""
    import peft

    # modules_to_save matches by name suffix: LLaVA's projector, Qwen2-VL's merger
    saved = [p.rsplit(".", 1)[-1] for p in PROJECTOR_PARTS if _part(model, (p,)) is not None]
    if tune_vision:
        saved += [p for p in VISION_PARTS if _part(model, (p,)) is not None]
    # peft annotates lora_alpha as int but only divides by it; a fractional alpha is kept as configured
    config = peft.LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,  # type: ignore[arg-type]
                             target_modules=lora_targets(list(lora.target_modules)),
                             modules_to_save=saved or None, task_type="CAUSAL_LM")
    try:
        wrapped = peft.get_peft_model(model, config)
    except ValueError as exc:  # no module matched
        raise ConfigError(f"lora.target_modules {list(lora.target_modules)}: {exc}") from None
    return wrapped


def load_model_and_processor(ref: str, *, model_type: str | None = None, dtype: Any = None,
                             lora: LoraSettings | None = None, tune_vision: bool = False,
                             gradient_checkpointing: bool = False,
                             device_map: Any = None) -> tuple[Any, Any, str]:
    """(model, processor, model_type) of ``ref`` (Hub id, local folder, or a LoRA output folder).

    ``dtype``: a torch dtype or name ("auto" or None: float32 on CPU, bfloat16 on a bf16 GPU).
    ``lora`` with ``enabled``: wrap the model with fresh adapters for training. A LoRA output folder
    as ``ref`` loads base + trained adapter (trainable again when ``lora`` is enabled, frozen and
    ready for inference otherwise). ``gradient_checkpointing``: recompute activations in the
    backward pass (non-reentrant, so frozen embeddings under LoRA still get gradients)."""
    import transformers

    source = resolve(ref)
    base = adapter_base(source)
    base_source = resolve(base) if base else source
    config = read_config(base_source, model_type)
    model_type = config.model_type
    torch_dtype = _dtype(dtype)
    cls = getattr(transformers, MODEL_CLASSES[model_type])
    try:
        model = cls.from_pretrained(base_source.location, dtype=torch_dtype, device_map=device_map,
                                    local_files_only=base_source.local_files_only)
    except OSError as exc:
        raise ConfigError(f"model {base_source.spec!r}: cannot load weights ({exc})") from None
    # The processor travels with the run's output (LoRA folders included); fall back to the base.
    proc_source = source if (Path(source.location) / "tokenizer_config.json").is_file() or not base else base_source
    processor = load_processor(proc_source, model_type, model.config)
    if gradient_checkpointing:
        model.config.use_cache = False
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if base:
        import peft

        training = bool(lora and lora.enabled)
        model = peft.PeftModel.from_pretrained(model, source.location, is_trainable=training)
        log.info("model %s: LoRA adapter on %s (%s)", ref, base, "trainable" if training else "frozen")
    elif lora is not None and lora.enabled:
        model = apply_lora(model, lora, tune_vision=tune_vision)
    else:
        set_trainable(model, tune_vision=tune_vision)
    trainable, total = count_parameters(model)
    log.info("model %s (%s, %s): %s of %s parameters trainable", ref, model_type,
             str(next(model.parameters()).dtype).removeprefix("torch."), f"{trainable:,}", f"{total:,}")
    return model, processor, model_type


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = total = 0
    for param in model.parameters():
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
    return trainable, total


def _dtype(dtype: Any) -> Any:
    """A torch dtype from a dtype, a name ("bf16", "float32"...) or None/"auto" (device default)."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    name = devices.dtype_name(None if dtype is None else str(dtype), devices.pick_device("auto"), where="model dtype")
    return devices.torch_dtype(name)
