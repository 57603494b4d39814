"""Captioning: keywords, the transformers LLaVA backend on tiny random checkpoints, and the stage.

The checkpoints are built from configs at test time (tests/tiny_llava.py): random weights, so
captions are word salad, but they are the model's own output, which is all the code paths need.
Greedy decoding makes them a function of (weights, prompt, image), which the batching and
save/load tests rely on.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest
import yaml
from PIL import Image, ImageDraw

import tiny_llava
from blift import schemas, tables
from blift.errors import ConfigError, ErrorClass
from blift.models import devices
from blift.models.captioner import (
    Captioner,
    LlavaCaptioner,
    model_identity,
    resolve_model,
)
from blift.models.keywords import extract_keywords, tokens
from blift.pipeline import RunOptions, run_pipeline
from blift.registry import load_stage
from blift.stage import ShardInput
from blift.stages.caption import (
    DEFAULT_PROMPT,
    SKIP_MESSAGE,
    CaptionConfig,
    CaptionStage,
    prompt_sha,
)

SHARD = "part-00000"

# ------------------------------------------------------------------------------------ keywords


def test_keywords_rank_by_frequency_then_first_appearance() -> None:
    caption = "A dog chases a red ball in a park. The dog is brown and the ball is red."
    assert extract_keywords(caption, 10) == ["dog", "red", "ball", "chases", "park", "brown"]
    assert extract_keywords(caption, 2) == ["dog", "red"]


def test_keywords_drop_stop_words_and_caption_boilerplate() -> None:
    caption = "The image shows a woman holding an umbrella. In the picture there is also a bus."
    assert extract_keywords(caption, 10) == ["woman", "holding", "umbrella", "bus"]


def test_keywords_merge_plurals_only_when_the_singular_occurs() -> None:
    caption = "Two cities at night: the city lights and trees, one tree, several buses and glasses."
    kws = extract_keywords(caption, 10)
    assert kws[:2] == ["city", "tree"]  # cities+city, trees+tree: counted twice each
    assert "buses" in kws and "glasses" in kws  # no singular in the caption: kept as written


def test_keywords_keep_picture_words_that_generic_stop_lists_drop() -> None:
    # scikit-learn's list has "fire", "front", "empty": content words in a picture
    assert extract_keywords("A fire burns in front of an empty house.", 5) == [
        "fire", "burns", "front", "empty", "house"]


def test_keyword_tokens_handle_possessives_numbers_and_accents() -> None:
    assert tokens("The man's café has 3 chairs and a 2nd floor; it's U2's logo") == [
        "man", "café", "chairs", "floor", "logo"]


def test_keywords_of_empty_or_function_word_text_are_empty() -> None:
    assert extract_keywords("", 5) == []
    assert extract_keywords("the of and it is", 5) == []
    assert extract_keywords("a dog", 0) == []


def test_keywords_are_deterministic_and_bounded() -> None:
    caption = "A tiger, a zebra, a giraffe, a lion and another zebra by the tiger's water hole."
    assert extract_keywords(caption, 3) == extract_keywords(caption, 3) == ["tiger", "zebra", "giraffe"]
    assert len(extract_keywords(caption, 100)) == 6


# ------------------------------------------------------------------------------ tiny models


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny LLaVA-1.5 (no chat template: the plain USER/ASSISTANT prompt), LLaVA-NeXT and
    LLaVA-NeXT-Video (with a chat template) checkpoints on disk."""
    root = tmp_path_factory.mktemp("tiny_llava")
    return {kind: tiny_llava.build_tiny(root / kind, kind) for kind in tiny_llava.KINDS}


def picture(size: tuple[int, int], bg: str, shape: str = "") -> Image.Image:
    img = Image.new("RGB", size, bg)
    draw = ImageDraw.Draw(img)
    w, h = size
    if shape == "circle":
        draw.ellipse((w // 4, h // 4, 3 * w // 4, 3 * h // 4), fill="yellow")
    elif shape == "bars":
        for i, colour in enumerate(("red", "green", "blue", "white")):
            draw.rectangle((i * w // 4, 0, (i + 1) * w // 4, h), fill=colour)
    return img


IMAGES = [  # varied sizes and aspect ratios: LLaVA-NeXT gives them different token counts (padding)
    (picture((96, 64), "navy", "circle"), "image/png"),
    (picture((40, 120), "white", "bars"), "image/jpeg"),
    (picture((64, 64), "darkgreen"), "image/png"),
    (picture((200, 50), "black", "circle"), "image/jpeg"),
    (picture((80, 60), "orange", "bars"), "image/png"),
]


@pytest.fixture(scope="session")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder with a media shard and a scenes shard written directly with blift.tables:
    five good images (two on one item), a broken JPEG, a missing file, a video, rows not ok,
    and three scenes of that video (two keyframes, one keyframe file missing, one without)."""
    run = tmp_path_factory.mktemp("caption_run")
    files = run / "media_files"
    files.mkdir()
    media: list[dict] = []

    def row(uid: str, index: int, **kw) -> dict:
        return {"uid": uid, "index": index, "url": f"http://127.0.0.1/{uid}/{index}", "status": "ok", **kw}

    for i, (img, mime) in enumerate(IMAGES):
        ext = "png" if mime == "image/png" else "jpg"
        img.save(files / f"img{i}.{ext}")
        uid, index = ("reddit:multi", i - 3) if i >= 3 else (f"reddit:p{i}", 0)
        media.append(row(uid, index, path=f"media_files/img{i}.{ext}", mime=mime))
    (files / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all")
    media.insert(2, row("reddit:broken", 0, path="media_files/broken.jpg", mime="image/jpeg"))
    media.append(row("reddit:gone", 0, path="media_files/gone.png", mime="image/png"))
    media.append(row("reddit:skip", 0, status="skipped", reason="unsupported_kind"))
    media.append(row("youtube:v1", 0, path="media_files/v1.mp4", mime="video/mp4"))
    tables.write_rows(run / "media" / f"{SHARD}.parquet", media, "media")

    keyframes = run / "scenes_files"
    keyframes.mkdir()
    picture((160, 120), "purple", "circle").save(keyframes / "k0.jpg")
    picture((160, 120), "teal", "bars").save(keyframes / "k1.jpg")
    scene = {"uid": "youtube:v1", "media_index": 0, "detector": "content:27.0"}
    scenes = [
        {**scene, "scene": 0, "start_s": 0.0, "end_s": 2.0, "start_frame": 0, "end_frame": 50, "keyframe_frame": 25,
         "keyframe_path": "scenes_files/k0.jpg"},
        {**scene, "scene": 1, "start_s": 2.0, "end_s": 4.0, "start_frame": 50, "end_frame": 100, "keyframe_frame": 75,
         "keyframe_path": "scenes_files/k1.jpg"},
        {**scene, "scene": 2, "start_s": 4.0, "end_s": 5.0, "start_frame": 100, "end_frame": 125, "keyframe_frame": 112,
         "keyframe_path": "scenes_files/k2_gone.jpg"},
        {**scene, "scene": 3, "start_s": 5.0, "end_s": 6.0, "start_frame": 125, "end_frame": 150,
         "keyframe_frame": None, "keyframe_path": None},
    ]
    tables.write_rows(run / "scenes" / f"{SHARD}.parquet", scenes, "scenes")
    return run


GOOD_KEYS = {("reddit:p0", 0, None), ("reddit:p1", 0, None), ("reddit:p2", 0, None), ("reddit:multi", 0, None),
             ("reddit:multi", 1, None), ("youtube:v1", 0, 0), ("youtube:v1", 0, 1)}
BAD_KEYS = {"reddit:broken#0", "reddit:gone#0", "youtube:v1#0#2"}


def shard_input(run: Path) -> ShardInput:
    return ShardInput(SHARD, {d: tables.read_shard(run / d / f"{SHARD}.parquet", d) for d in ("media", "scenes")}, run)


def run_stage(run: Path, **config) -> tuple:
    stage = CaptionStage(CaptionConfig(**config), run)
    stage.setup()
    result = stage.process(shard_input(run))
    return stage, result, result.tables["captions"]


def keyed(table) -> dict[tuple, dict]:
    return {(r["uid"], r["media_index"], r["scene"]): r for r in table.to_pylist()}


# ------------------------------------------------------------------------------------ stage


def _pipeline(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(
        {"name": "caption-test", "stages": [{"stage": "caption", "config": config, "workers": 1}]}))
    return path


@pytest.mark.slow
def test_stage_runs_through_the_runner(models: dict[str, Path], run_folder: Path, tmp_path: Path) -> None:
    prompt = "Describe this picture."
    config = {"model": str(models["llava"]), "prompt": prompt, "batch_size": 3, "max_new_tokens": 8, "keywords_k": 4}
    report = run_pipeline(_pipeline(tmp_path / "p.yaml", config), RunOptions(out=run_folder, workers=1, progress=False))
    assert not report.failed

    captions = tables.read_dataset(run_folder / "captions", "captions")
    schemas.get("captions").validate(captions)
    out = keyed(captions)
    assert set(out) == GOOD_KEYS
    for key, r in out.items():
        assert isinstance(r["caption"], str) and r["caption"].strip() == r["caption"] and r["caption"]
        assert r["keywords"] == extract_keywords(r["caption"], 4)
        assert r["model"] == str(models["llava"])
        assert r["prompt_sha"] == hashlib.sha256(prompt.encode()).hexdigest()[:12]
        assert (r["scene"] is None) == key[0].startswith("reddit:")
    assert len({r["caption"] for r in out.values()}) > 1  # the picture reaches the model

    errors = {e["record_key"]: e for e in tables.read_dataset(run_folder / "errors" / "caption", "errors").to_pylist()}
    assert set(errors) == BAD_KEYS
    assert (errors["reddit:gone#0"]["error_type"] == "missing_file"
            and "media_files/gone.png" in errors["reddit:gone#0"]["message"])
    assert "media_files/broken.jpg" in errors["reddit:broken#0"]["message"]
    assert "k2_gone.jpg" in errors["youtube:v1#0#2"]["message"]
    assert all(e["error_class"] == "permanent" for e in errors.values())

    stats = json.loads((run_folder / "stats.json").read_text())["stages"]["caption"]
    c = stats["counters"]
    assert (c["images"], c["scenes"], c["captioned"]) == (7, 3, 7)
    assert (c["media_not_ok"], c["not_image"], c["scene_no_keyframe"], c["skipped_no_model"]) == (1, 1, 1, 0)
    assert stats["out"]["captions"] == 7 and stats["errors"] == {"permanent": 3}

    # the same captions as the stage run in this process: the runner adds nothing of its own
    _, _, direct = run_stage(run_folder, model=str(models["llava"]), prompt=prompt, batch_size=3, max_new_tokens=8,
                             keywords_k=4)
    assert direct.equals(captions.select(direct.column_names))


@pytest.mark.slow
def test_no_model_is_skipped_with_an_empty_table(run_folder: Path, tmp_path: Path, caplog) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for d in ("media", "scenes", "media_files", "scenes_files"):
        (run / d).symlink_to(run_folder / d, target_is_directory=True)
    report = run_pipeline(_pipeline(tmp_path / "p.yaml", {}), RunOptions(out=run, workers=1, progress=False))
    assert not report.failed
    assert tables.read_shard(run / "captions" / f"{SHARD}.parquet", "captions").num_rows == 0
    stats = json.loads((run / "stats.json").read_text())["stages"]["caption"]
    assert stats["counters"]["skipped_no_model"] == 10 and stats["counters"]["captioned"] == 0
    assert stats["errors"] == {}

    with caplog.at_level(logging.INFO, logger="blift.stages.caption"):
        stage, result, table = run_stage(run_folder, model=None, scenes=False)
    assert table.num_rows == 0 and result.errors == []
    assert result.counters["skipped_no_model"] == 7  # images only
    assert SKIP_MESSAGE in caplog.text and stage.describe() == SKIP_MESSAGE


def test_llava_next_with_chat_template_captions_images_and_scenes(models: dict[str, Path], run_folder: Path) -> None:
    stage, result, table = run_stage(run_folder, model=str(models["llava_next"]), batch_size=4, max_new_tokens=4)
    assert type(stage.captioner.net).__name__ == "LlavaNextForConditionalGeneration"
    assert stage.captioner.build_prompt("Hi there") == "USER: <image>\nHi there ASSISTANT:"  # rendered by the template
    assert "cpu (float32)" in stage.describe()
    assert set(keyed(table)) == GOOD_KEYS and {f.record_key for f in result.errors} == BAD_KEYS
    assert all(table.column("caption").to_pylist())
    assert set(table.column("prompt_sha").to_pylist()) == {prompt_sha(DEFAULT_PROMPT)}


def test_batching_gives_the_same_captions_as_batch_size_1(models: dict[str, Path], run_folder: Path) -> None:
    # LLaVA-NeXT: images of different aspect ratios get different token counts, so the batch is
    # left-padded; LLaVA-1.5: every prompt has the same length.
    one = run_stage(run_folder, model=str(models["llava_next"]), batch_size=1, max_new_tokens=8)[2]
    many = run_stage(run_folder, model=str(models["llava_next"]), batch_size=5, max_new_tokens=8)[2]
    assert one.num_rows == len(GOOD_KEYS)
    assert one.equals(many)
    images = [img for img, _ in IMAGES]
    for kind in ("llava", "llava_next"):
        captioner = LlavaCaptioner(str(models[kind]), max_new_tokens=8)
        assert captioner.caption(images, "What is shown?") == [
            captioner.caption([i], "What is shown?")[0] for i in images]


def test_model_saves_and_reloads_with_the_same_captions(models: dict[str, Path], tmp_path: Path) -> None:
    first = LlavaCaptioner(str(models["llava_next"]), max_new_tokens=12)
    images = [img for img, _ in IMAGES[:3]]
    before = first.caption(images, "Describe.")
    first.net.save_pretrained(tmp_path / "saved")
    first.processor.save_pretrained(tmp_path / "saved")
    again = LlavaCaptioner(str(tmp_path / "saved"), max_new_tokens=12)
    assert again.caption(images, "Describe.") == before
    assert all(before)
    # a different random model says something else: the equality above is not vacuous
    other = LlavaCaptioner(str(tiny_llava.build_tiny(tmp_path / "other", "llava_next", seed=1)), max_new_tokens=12)
    assert other.caption(images, "Describe.") != before


def test_model_class_comes_from_config_model_type(models: dict[str, Path], tmp_path: Path) -> None:
    video = LlavaCaptioner(str(models["llava_next_video"]), max_new_tokens=5)
    assert type(video.net).__name__ == "LlavaNextVideoForConditionalGeneration"
    assert all(video.caption([IMAGES[0][0], IMAGES[1][0]], "Describe."))
    # the folder's name says llava-1.5, its config says llava_next: the config wins
    misnamed = tmp_path / "llava-1.5-7b-hf"
    misnamed.symlink_to(models["llava_next"], target_is_directory=True)
    assert type(LlavaCaptioner(str(misnamed), max_new_tokens=2).net).__name__ == "LlavaNextForConditionalGeneration"
    plain = LlavaCaptioner(str(models["llava"]), max_new_tokens=2)
    assert type(plain.net).__name__ == "LlavaForConditionalGeneration"
    assert plain.build_prompt("Say it.") == "USER: <image>\nSay it. ASSISTANT:"  # no chat template


def test_missing_or_unsupported_models_are_config_errors(tmp_path: Path, run_folder: Path) -> None:
    with pytest.raises(ConfigError, match=r"does not exist") as exc:
        CaptionStage(CaptionConfig(model=str(tmp_path / "nope")), run_folder).setup()
    assert str(tmp_path / "nope") in str(exc.value)
    with pytest.raises(ConfigError, match=r"not in the Hugging Face cache.*HF_HUB_OFFLINE"):
        resolve_model("llava-hf/not-downloaded-here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        resolve_model(str(tmp_path / "empty"))
    from transformers import LlamaConfig

    LlamaConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2).save_pretrained(tmp_path / "llama")
    with pytest.raises(ConfigError, match=r"model_type 'llama' is not supported"):
        LlavaCaptioner(str(tmp_path / "llama"))
    with pytest.raises(ConfigError, match="unknown device"):
        LlavaCaptioner(str(tmp_path / "llama"), device="tpu")


def test_hub_id_is_read_from_the_hf_cache_offline(models: dict[str, Path]) -> None:
    """A Hub id resolves through the Hugging Face cache (the layout huggingface_hub writes:
    refs/main -> snapshots/<commit>/...) without any network access."""
    import shutil

    from blift.models.captioner import hub_cache_dir

    cache = hub_cache_dir()
    if Path(__file__).resolve().parents[1] / ".cache" not in cache.resolve().parents:
        pytest.skip(f"HF cache {cache} is not the test cache; not writing into it")
    repo = cache / "models--blift-test--tiny-llava-next"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.rmtree(repo, ignore_errors=True)
    shutil.copytree(models["llava_next"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    try:
        source = resolve_model("blift-test/tiny-llava-next")
        assert source.location == "blift-test/tiny-llava-next" and source.local_files_only
        assert model_identity("blift-test/tiny-llava-next") == {"hub_commit": commit}
        from_hub = LlavaCaptioner("blift-test/tiny-llava-next", max_new_tokens=6)
        from_folder = LlavaCaptioner(str(models["llava_next"]), max_new_tokens=6)
        images = [img for img, _ in IMAGES[:2]]
        assert from_hub.caption(images, "Describe.") == from_folder.caption(images, "Describe.")
    finally:
        shutil.rmtree(repo, ignore_errors=True)


class ScriptedCaptioner(Captioner):
    """Our own interface implemented by a stand-in: fails on (and only on) pictures of one width,
    so the stage's batch fallback can be driven exactly."""

    model = "scripted"

    def __init__(self, poison_width: int, exc: Exception) -> None:
        self.poison_width, self.exc, self.calls = poison_width, exc, []

    def caption(self, images: list[Image.Image], prompt: str) -> list[str]:
        self.calls.append(len(images))
        if any(img.width == self.poison_width for img in images):
            raise self.exc
        return [f"a {img.width} by {img.height} picture" if img.width != 64 else "" for img in images]

    def describe(self) -> str:
        return "scripted"


def test_a_failing_image_costs_only_its_own_record(run_folder: Path) -> None:
    stage = CaptionStage(CaptionConfig(model="scripted", batch_size=4, scenes=False), run_folder)
    stage.captioner = ScriptedCaptioner(poison_width=40, exc=ValueError("cannot patchify"))
    result = stage.process(shard_input(run_folder))
    rows = keyed(result.tables["captions"])
    # batch 1 = p0, p1 (40 wide: fails), p2, multi#0 -> retried one by one; batch 2 = multi#1
    assert stage.captioner.calls == [4, 1, 1, 1, 1, 1]
    assert set(rows) == {("reddit:p0", 0, None), ("reddit:multi", 0, None), ("reddit:multi", 1, None)}
    assert rows[("reddit:p0", 0, None)]["caption"] == "a 96 by 64 picture"
    failures = {f.record_key: f for f in result.errors}
    assert failures["reddit:p1#0"].error_type == "ValueError" and "cannot patchify" in failures["reddit:p1#0"].message
    assert failures["reddit:p2#0"].error_type == "empty_caption"  # 64 wide: the model said nothing
    assert set(failures) == {"reddit:p1#0", "reddit:p2#0", "reddit:broken#0", "reddit:gone#0"}
    assert result.counters["batch_retried_singly"] == 1 and result.counters["empty_caption"] == 1

    stage.captioner = ScriptedCaptioner(poison_width=96, exc=RuntimeError("CUDA out of memory. Tried to allocate"))
    oom = {f.record_key: f for f in stage.process(shard_input(run_folder)).errors}
    assert (oom["reddit:p0#0"].error_class is ErrorClass.TRANSIENT
            and oom["reddit:p0#0"].error_type == "gpu_out_of_memory")


def test_config_fingerprint_and_registry(models: dict[str, Path]) -> None:
    assert load_stage("caption") is CaptionStage
    assert CaptionStage.inputs == {"media": "media", "scenes": "scenes"} and CaptionStage.resources == "gpu"
    with pytest.raises(ValueError, match="batchsize"):
        CaptionConfig(batchsize=4)
    with pytest.raises(ValueError, match="dtype"):
        CaptionConfig(dtype="int4")
    assert CaptionConfig(model="  ").model is None
    a = CaptionStage.fingerprint(CaptionConfig(model=str(models["llava"])))
    b = CaptionStage.fingerprint(CaptionConfig(model=str(models["llava"]), prompt="Other prompt."))
    assert a["prompt_sha"] == prompt_sha(DEFAULT_PROMPT) != b["prompt_sha"]
    assert a["model"] == model_identity(str(models["llava"])) and a["model"]["weights"]
    assert model_identity(str(models["llava"])) != model_identity(str(models["llava_next"]))


# ------------------------------------------------------------------------------------ devices


def test_device_and_dtype_choice() -> None:
    if not devices.torch_cuda_available():
        assert devices.pick_device("auto") == "cpu"
        with pytest.raises(ConfigError, match="no CUDA device"):
            devices.pick_device("cuda", where="caption device")
    assert devices.pick_device("CPU") == "cpu"
    with pytest.raises(ConfigError, match="unknown device 'gpu0'"):
        devices.pick_device("gpu0")
    assert devices.dtype_name("auto", "cpu") == "float32"
    assert devices.dtype_name("bf16", "cpu") == "bfloat16" and devices.dtype_name("fp16", "cuda") == "float16"
    with pytest.raises(ConfigError, match="unknown dtype 'int8'"):
        devices.dtype_name("int8", "cpu")
    assert devices.describe("cpu", "float32") == "cpu (float32)"


@pytest.mark.gpu
@pytest.mark.skipif(not devices.torch_cuda_available(), reason="no CUDA GPU")
def test_tiny_llava_on_the_gpu_in_half_precision(models: dict[str, Path]) -> None:
    captioner = LlavaCaptioner(str(models["llava_next"]), max_new_tokens=8)
    assert captioner.device == "cuda" and captioner.dtype in ("bfloat16", "float16")
    assert str(captioner.net.device).startswith("cuda") and "cuda" in captioner.describe()
    captions = captioner.caption([img for img, _ in IMAGES], "Describe.")
    assert len(captions) == len(IMAGES) and all(isinstance(c, str) for c in captions)
