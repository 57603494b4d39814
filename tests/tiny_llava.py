"""Tiny random LLaVA-family checkpoints built from configs, for tests and benchmarks.

No download: the language model is a 2-layer Llama, the vision tower a 2-layer CLIP ViT on
32x32 images, the tokenizer a word-level ``tokenizers`` model over a small English vocabulary
wrapped in ``PreTrainedTokenizerFast``, the image processor the PIL backend of CLIP's (LLaVA-1.5)
or LLaVA-NeXT's (anyres tiles). Weights are random, so captions are word salad from the
vocabulary, but every code path of a real checkpoint runs: processor, chat template or plain
prompt, image-token expansion, generation, save and reload.

``build_tiny(folder, kind)`` writes a checkpoint folder that ``from_pretrained`` reads;
``llava_7b_shaped(device, dtype)`` builds a LLaVA-1.5-7B-shaped model (CLIP-L/336 tower, 32 Llama
layers of width 4096) with random weights directly on a device, never touching the disk, for
GPU throughput measurements.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

KINDS = ("llava", "llava_next", "llava_next_video")

SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<image>", "<video>"]
# Words the random model can say: caption-like English, so keyword extraction has material.
WORDS = """
a an the of in on at with and or to is are this that it its there here image picture photo scene
shows showing describe detail details detailed objects people person man woman child dog cat bird
car bus tree trees house street road sky cloud clouds sun water river beach mountain field grass
red green blue yellow white black orange purple brown grey pink colour colours bright dark light
text sign logo words title running walking sitting standing holding playing eating smiling
table chair window door wall floor room kitchen city park garden forest snow rain night day
small large big tall old young happy busy quiet setting background foreground left right center
front behind near next two three several many some one actions action USER ASSISTANT : , . ! ?
""".split()

# A minimal chat template in the LLaVA-NeXT (Vicuna) style; the processor renders images as the
# image token. Tests use it for the NeXT checkpoints and leave LLaVA-1.5 without one, so both
# prompt paths of the captioner run.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<image>\n{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}"
    "{% if message['role'] != 'user' %}</s>{% endif %} "
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

IMAGE_SIDE = 32
PATCH = 8
PINPOINTS = [[32, 32], [32, 64], [64, 32], [64, 64]]


def vocabulary(size: int | None = None) -> dict[str, int]:
    """Special tokens, then WORDS, then filler words ``w<N>`` up to ``size`` entries (a large
    model's random output ids must all decode to something)."""
    vocab: dict[str, int] = {}
    for word in SPECIALS + WORDS:
        vocab.setdefault(word, len(vocab))
    while size is not None and len(vocab) < size:
        vocab[f"w{len(vocab)}"] = len(vocab)
    return vocab


def tokenizer(size: int | None = None) -> Any:
    """A word-level tokenizer (whitespace and punctuation split) as a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel(vocabulary(size), unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins words with spaces
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens={"image_token": "<image>", "video_token": "<video>"},
    )
    tok.add_special_tokens({"additional_special_tokens": ["<image>", "<video>"]})
    return tok


def _vision_config(**overrides: Any) -> Any:
    from transformers import CLIPVisionConfig

    cfg = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
               image_size=IMAGE_SIDE, patch_size=PATCH, projection_dim=32)
    cfg.update(overrides)
    return CLIPVisionConfig(**cfg)


def _text_config(vocab_size: int, **overrides: Any) -> Any:
    from transformers import LlamaConfig

    cfg = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
               pad_token_id=0, bos_token_id=2, eos_token_id=3)
    cfg.update(overrides)
    return LlamaConfig(**cfg)


def tiny_config(kind: str = "llava") -> Any:
    """The model config of a tiny checkpoint of ``kind`` (one of KINDS)."""
    from transformers import LlavaConfig, LlavaNextConfig, LlavaNextVideoConfig

    vocab = vocabulary()
    common = dict(vision_config=_vision_config(), text_config=_text_config(len(vocab)),
                  image_token_index=vocab["<image>"], vision_feature_select_strategy="default",
                  vision_feature_layer=-2)
    if kind == "llava":
        return LlavaConfig(**common, image_seq_length=(IMAGE_SIDE // PATCH) ** 2)
    if kind == "llava_next":
        return LlavaNextConfig(**common, image_grid_pinpoints=PINPOINTS)
    if kind == "llava_next_video":
        return LlavaNextVideoConfig(**common, image_grid_pinpoints=PINPOINTS, video_token_index=vocab["<video>"],
                                    spatial_pool_stride=2)
    raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")


def processor(kind: str = "llava", *, chat_template: bool | None = None) -> Any:
    """The processor of a tiny checkpoint. ``chat_template``: default on for the NeXT kinds only."""
    from transformers import (
        CLIPImageProcessorPil,
        LlavaNextImageProcessorPil,
        LlavaNextProcessor,
        LlavaProcessor,
    )

    template = CHAT_TEMPLATE if (chat_template if chat_template is not None else kind != "llava") else None
    tok = tokenizer()
    size = {"shortest_edge": IMAGE_SIDE}
    crop = {"height": IMAGE_SIDE, "width": IMAGE_SIDE}
    common = dict(tokenizer=tok, patch_size=PATCH, vision_feature_select_strategy="default",
                  num_additional_image_tokens=1, chat_template=template)
    if kind == "llava":
        return LlavaProcessor(image_processor=CLIPImageProcessorPil(size=size, crop_size=crop), **common)
    if kind in ("llava_next", "llava_next_video"):
        images = LlavaNextImageProcessorPil(size=size, crop_size=crop, image_grid_pinpoints=PINPOINTS)
        if kind == "llava_next" or not _torchvision():
            # Without torchvision the NeXT-Video processor cannot be built (its video half needs
            # it); build_tiny then rewrites the saved processor config into the video checkpoint's.
            return LlavaNextProcessor(image_processor=images, **common)
        from transformers import LlavaNextVideoProcessor, LlavaNextVideoVideoProcessor

        video = LlavaNextVideoVideoProcessor(size=size, crop_size=crop)
        return LlavaNextVideoProcessor(video_processor=video, image_processor=images, **common)
    raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")


def _torchvision() -> bool:
    from transformers.utils import is_torchvision_available

    return bool(is_torchvision_available())


def _as_video_checkpoint(folder: Path) -> None:
    """Make a saved LlavaNextProcessor config read like LLaVA-NeXT-Video's (as saved on a machine
    with torchvision): processor class, video token and a video processor section."""
    path = folder / "processor_config.json"
    cfg = json.loads(path.read_text())
    images = cfg["image_processor"]
    cfg["processor_class"] = "LlavaNextVideoProcessor"
    cfg["video_token"] = "<video>"
    cfg["video_processor"] = {
        "video_processor_type": "LlavaNextVideoVideoProcessor",
        **{k: images[k] for k in ("size", "crop_size", "do_center_crop", "do_convert_rgb", "do_normalize",
                                  "do_rescale", "do_resize", "image_mean", "image_std", "resample", "rescale_factor")},
    }
    path.write_text(json.dumps(cfg, indent=2))
    tok = folder / "tokenizer_config.json"
    tok_cfg = json.loads(tok.read_text())
    tok_cfg["processor_class"] = "LlavaNextVideoProcessor"
    tok.write_text(json.dumps(tok_cfg, indent=2))


def model_class(kind: str) -> Any:
    import transformers

    return {
        "llava": transformers.LlavaForConditionalGeneration,
        "llava_next": transformers.LlavaNextForConditionalGeneration,
        "llava_next_video": transformers.LlavaNextVideoForConditionalGeneration,
    }[kind]


def build_tiny(folder: Path, kind: str = "llava", *, seed: int = 0, chat_template: bool | None = None) -> Path:
    """Write a tiny random checkpoint (model, tokenizer, processor) of ``kind`` to ``folder``."""
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = model_class(kind)(tiny_config(kind)).eval()
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = 3
    model.save_pretrained(folder)
    proc = processor(kind, chat_template=chat_template)
    proc.save_pretrained(folder)
    if kind == "llava_next_video" and type(proc).__name__ == "LlavaNextProcessor":
        _as_video_checkpoint(folder)
    return folder


def llava_7b_config() -> Any:
    """LLaVA-1.5-7B's shape: CLIP ViT-L/14 at 336 px, a 2-layer GELU projector, Llama-2-7B (Vicuna)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu")
    text = LlamaConfig(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                       pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return LlavaConfig(vision_config=vision, text_config=text, image_token_index=32000,
                       vision_feature_select_strategy="default", vision_feature_layer=-2, image_seq_length=576)


def llava_7b_processor() -> Any:
    """A processor for the 7B-shaped model: CLIP-336 preprocessing and a word tokenizer padded to
    the model's 32064 ids with filler words (text quality is irrelevant for throughput)."""
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    images = CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    return LlavaProcessor(image_processor=images, tokenizer=tokenizer(32064), patch_size=14,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1)


def llava_7b_shaped(device: str, dtype: Any) -> tuple[Any, Any]:
    """(model, processor) of LLaVA-7B's shape with random weights, built on ``device`` in ``dtype``
    without writing anything to disk (about 14 GB in bf16)."""
    import torch
    from transformers import LlavaForConditionalGeneration

    config = llava_7b_config()
    config.image_token_index = vocabulary()["<image>"]
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlavaForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    model.eval()
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = 3
    return model, llava_7b_processor()
