"""VlmCollator on tiny random LLaVA-family processors and models (tests/tiny_llava.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import tiny_llava
from blift.train.collator import IGNORE_INDEX, CollatorError, VlmCollator
from blift.train.data import Example
from blift.train.prompt import SYSTEM

TWO_TURNS = [
    {"from": "human", "value": "describe the image <image>"},  # token moved to the front by render
    {"from": "gpt", "value": "a red car"},
    {"from": "human", "value": "and the sky"},
    {"from": "gpt", "value": "blue sky"},
]
ONE_TURN = TWO_TURNS[:2]
IMAGE_TOKENS = (tiny_llava.IMAGE_SIDE // tiny_llava.PATCH) ** 2  # 16 for LLaVA-1.5 "default"


def _image(seed: int = 0, size: tuple[int, int] = (40, 50)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8))


def _frames(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (count, 3, 24, 30), dtype=np.uint8)


def _image_example(rid: str = "img", conv: list[dict] = TWO_TURNS) -> Example:
    return Example(rid, "behavior", "image", conv, [_image()], None, None)


def _video_example(rid: str = "vid", frames: int = 5) -> Example:
    return Example(rid, "content", "video", ONE_TURN, [], _frames(frames), None)


def _text_example(rid: str = "txt") -> Example:
    return Example(rid, "other", "none", ONE_TURN, [], None, None)


@pytest.fixture(scope="module")
def llava() -> tuple:
    torch.manual_seed(0)
    model = tiny_llava.model_class("llava")(tiny_llava.tiny_config("llava")).eval()
    return tiny_llava.processor("llava"), model


def _tokens(processor, ids) -> list[str]:
    return processor.tokenizer.convert_ids_to_tokens([int(i) for i in ids])


def test_labels_mask_exactly_the_non_assistant_tokens(llava):
    processor, model = llava
    batch = VlmCollator(processor, "llava", model_config=model.config)([_image_example()])
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    vocab = tiny_llava.vocabulary()
    # Hand-built expectation: the system sentence (word-level tokens), then the turns.
    system = processor.tokenizer.tokenize(SYSTEM)
    turns = (["USER", ":"] + ["<image>"] * IMAGE_TOKENS + ["describe", "the", "image"]
             + ["ASSISTANT", ":", "a", "red", "car", "</s>"]
             + ["USER", ":", "and", "the", "sky", "ASSISTANT", ":", "blue", "sky", "</s>"])
    assert _tokens(processor, ids) == system + turns
    supervised = {len(system) + i for i in list(range(IMAGE_TOKENS + 7, IMAGE_TOKENS + 11))
                  + list(range(IMAGE_TOKENS + 18, IMAGE_TOKENS + 21))}
    expected = [ids[i] if i in supervised else IGNORE_INDEX for i in range(len(ids))]
    assert labels == expected
    assert [vocab[w] for w in ["a", "red", "car", "</s>", "blue", "sky", "</s>"]] == [
        label for label in labels if label != -100]


def test_right_padding_and_media_of_a_mixed_batch(llava):
    processor, model = llava
    examples = [_image_example("a"), _text_example("b"), _video_example("c", frames=5)]
    batch = VlmCollator(processor, "llava", num_frames=3, model_config=model.config)(examples)
    lengths = batch["attention_mask"].sum(1).tolist()
    width = batch["input_ids"].shape[1]
    assert max(lengths) == width and len(set(lengths)) == 3
    for row, n in enumerate(lengths):
        assert batch["attention_mask"][row, :n].all() and not batch["attention_mask"][row, n:].any()
        assert (batch["input_ids"][row, n:] == processor.tokenizer.pad_token_id).all()
        assert (batch["labels"][row, n:] == IGNORE_INDEX).all()
    # one image + 3 frames (5 sampled down to num_frames) as images, each with its own tokens
    assert tuple(batch["pixel_values"].shape) == (4, 3, 32, 32)
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    assert (batch["input_ids"] == image_id).sum(1).tolist() == [IMAGE_TOKENS, 0, 3 * IMAGE_TOKENS]
    loss = model(**batch).loss
    assert torch.isfinite(loss)


def test_image_token_count_is_checked_against_the_model(llava):
    _, model = llava
    # A classic misconfiguration: the processor forgets the CLS token, so it expands <image> into
    # one token fewer than a "default"-strategy CLIP tower gives (16 patches + CLS - CLS = 16).
    processor = tiny_llava.processor("llava")
    processor.num_additional_image_tokens = 0
    collator = VlmCollator(processor, "llava", model_config=model.config)
    with pytest.raises(CollatorError, match="'rec-7'.*media token count mismatch"):
        collator([_image_example("rec-7")])


def test_truncation_keeps_media_and_cuts_the_tail(llava):
    processor, model = llava
    full = VlmCollator(processor, "llava", model_config=model.config)([_image_example()])
    n = int(full["attention_mask"].sum())
    cut = VlmCollator(processor, "llava", max_length=n - 5, model_config=model.config)([_image_example()])
    assert cut["input_ids"].shape[1] == n - 5
    assert torch.equal(cut["input_ids"][0], full["input_ids"][0, : n - 5])
    assert torch.equal(cut["labels"][0], full["labels"][0, : n - 5])
    system = len(processor.tokenizer.tokenize(SYSTEM))
    with pytest.raises(CollatorError, match="'img'.*media tokens end at position"):
        VlmCollator(processor, "llava", max_length=system + 5)([_image_example()])


def test_prompt_batch_is_left_padded_and_generates(llava):
    processor, model = llava
    collator = VlmCollator(processor, "llava", model_config=model.config)
    batch = collator.prompt_batch([_image_example("a"), _text_example("b")])
    assert "labels" not in batch
    tokens = [_tokens(processor, row) for row in batch["input_ids"]]
    assert all(row[-2:] == ["ASSISTANT", ":"] for row in tokens)
    # the last gpt answer is left out: the prompt ends with the last human turn, then ASSISTANT:
    assert tokens[0][-8:] == ["</s>", "USER", ":", "and", "the", "sky", "ASSISTANT", ":"]
    assert batch["attention_mask"][1, 0] == 0 and batch["attention_mask"][:, -1].all()
    out = model.generate(**batch, max_new_tokens=2, do_sample=False, pad_token_id=0)
    assert out.shape == (2, batch["input_ids"].shape[1] + 2)


def test_scoring_batch_labels_only_the_continuation(llava):
    processor, model = llava
    collator = VlmCollator(processor, "llava", model_config=model.config)
    batch = collator.scoring_batch([_image_example("a"), _text_example("b")], ["green grass", "dog"])
    scored = [_tokens(processor, [t for t in row if t != IGNORE_INDEX]) for row in batch["labels"]]
    assert scored == [["green", "grass", "</s>"], ["dog", "</s>"]]
    # the scored text is the prompt of prompt_batch + the continuation
    prompt = collator.prompt_batch([_image_example("a")])["input_ids"][0].tolist()
    assert batch["input_ids"][0, : len(prompt)].tolist() == prompt
    no_eos = collator.scoring_batch([_text_example("b")], ["dog"], include_eos=False)
    assert _tokens(processor, [t for t in no_eos["labels"][0] if t != IGNORE_INDEX]) == ["dog"]
    with pytest.raises(ValueError, match="continuations"):
        collator.scoring_batch([_text_example()], [])


def test_llava_next_pads_patch_stacks_and_passes_image_sizes():
    torch.manual_seed(0)
    model = tiny_llava.model_class("llava_next")(tiny_llava.tiny_config("llava_next")).eval()
    processor = tiny_llava.processor("llava_next")
    wide = Example("w", "behavior", "image", ONE_TURN, [_image(1, (30, 70))], None, None)
    square = Example("s", "behavior", "image", ONE_TURN, [_image(2, (32, 32))], None, None)
    batch = VlmCollator(processor, "llava_next", model_config=model.config)([wide, square, _text_example()])
    assert batch["image_sizes"].tolist() == [[30, 70], [32, 32]]
    assert batch["pixel_values"].dim() == 5 and batch["pixel_values"].shape[0] == 2
    assert torch.isfinite(model(**batch).loss)


def test_llava_next_video_frames_become_one_video():
    torch.manual_seed(0)
    model = tiny_llava.model_class("llava_next_video")(tiny_llava.tiny_config("llava_next_video")).eval()
    processor = tiny_llava.processor("llava_next_video")  # without torchvision: LlavaNextProcessor
    collator = VlmCollator(processor, "llava_next_video", num_frames=4, model_config=model.config)
    batch = collator([_video_example("v1", frames=2), _video_example("v2", frames=9), _image_example()])
    # exactly num_frames per video (short ones repeat frames), so videos stack
    assert tuple(batch["pixel_values_videos"].shape) == (2, 4, 3, 32, 32)
    video_id = processor.tokenizer.convert_tokens_to_ids("<video>")
    per_frame = (tiny_llava.IMAGE_SIDE // tiny_llava.PATCH) ** 2 // 4
    assert (batch["input_ids"] == video_id).sum(1).tolist() == [4 * per_frame, 4 * per_frame, 0]
    labels = [_tokens(processor, [t for t in row if t != IGNORE_INDEX]) for row in batch["labels"]]
    assert labels[0] == ["a", "red", "car", "</s>"]
    assert torch.isfinite(model(**batch).loss)
    gen = model.generate(**collator.prompt_batch([_video_example()]), max_new_tokens=2, do_sample=False)
    assert gen.shape[0] == 1


def test_bad_records_name_themselves(llava):
    processor, _ = llava
    collator = VlmCollator(processor, "llava")
    with pytest.raises(CollatorError, match="'no-img'.*without an image"):
        collator([Example("no-img", "behavior", "image", ONE_TURN, [], None, None)])
    with pytest.raises(CollatorError, match="'bad-conv'.*expected a gpt turn"):
        collator([Example("bad-conv", "behavior", "none", [ONE_TURN[0], ONE_TURN[0]], [], None, None)])
    with pytest.raises(CollatorError, match="'bad-frames'.*T,3,H,W"):
        collator([Example("bad-frames", "content", "video", ONE_TURN, [], np.zeros((2, 8, 8, 3), np.uint8), None)])


def test_unsupported_setups_fail_clearly(llava):
    processor, _ = llava
    with pytest.raises(ValueError, match="unsupported model_type"):
        VlmCollator(processor, "blip2")
    from transformers.utils import is_torchvision_available

    if not is_torchvision_available():
        with pytest.raises(RuntimeError, match="torchvision"):
            VlmCollator(processor, "qwen2_vl")
