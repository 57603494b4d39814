"""`blift train` on CPU: config files, model loading (full / LoRA), the Trainer loop on a tiny release.

The model is a tiny random LLaVA (tests/tiny_llava.py); the data a real release written by
``blift.release.writer.release`` from a small run folder: image posts (32 px JPEGs) and video
posts (``.npy`` frames), a behavior and a content record each, with conversations in the tiny
tokenizer's vocabulary so the loss has something to learn. Learning rates are far above the
paper's 2e-5 so a dozen steps move the loss on a random model.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from PIL import Image

from blift.errors import ConfigError
from blift.train.config import RECIPES, LoraSettings, TrainConfig, load_train_config
from blift.train.data import DataSource, open_examples
from blift.train.models import load_model_and_processor
from blift.train.trainer import SUMMARY, pick_precision, train
from model_releases import COLOURS, write_release
from tiny_llava import build_tiny


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("model") / "llava", "llava")


@pytest.fixture(scope="module")
def images_release(tmp_path_factory) -> Path:
    return write_release(tmp_path_factory.mktemp("rel_images"), videos=False)


@pytest.fixture(scope="module")
def mixed_release(tmp_path_factory) -> Path:
    return write_release(tmp_path_factory.mktemp("rel_mixed"), missing=("reddit:img3",))


def make_config(model: Path, data: Path, out: Path, **overrides: Any) -> TrainConfig:
    """A CPU test config: tiny batches, a high learning rate, every step logged."""
    settings: dict[str, Any] = dict(
        model=str(model), data=[{"path": str(data)}], output_dir=str(out), learning_rate=3e-3, warmup_ratio=0.0,
        max_steps=12, per_device_batch_size=4, max_length=256, logging_steps=1, save_steps=100,
        dataloader_workers=0, gradient_checkpointing=False, num_frames=2, seed=0)
    settings.update(overrides)
    return TrainConfig.model_validate(settings)


def logits(model: Any, processor: Any, prompt: str = "describe this image") -> torch.Tensor:
    """Next-token logits of a fixed image prompt (same input for every model compared)."""
    batch = processor(images=[Image.new("RGB", (32, 32), COLOURS["red"])], text=[f"USER: <image>\n{prompt} ASSISTANT:"],
                      return_tensors="pt")
    with torch.no_grad():
        return model.eval()(**batch).logits[0, -1].float()


def generate(model: Any, processor: Any) -> list[int]:
    from blift.train.collator import VlmCollator
    from blift.train.data import Example

    ex = Example(id="g", task="content", media_kind="image", images=[Image.new("RGB", (32, 32), COLOURS["red"])],
                 conversations=[{"from": "human", "value": "<image>\ndescribe this image"}])
    batch = VlmCollator(processor, model.config.model_type).prompt_batch([ex])
    with torch.no_grad():
        out = model.eval().generate(**batch, max_new_tokens=4, do_sample=False)
    return out[0, batch["input_ids"].shape[1]:].tolist()


# --------------------------------------------------------------------------- config files


def test_shipped_recipe_is_the_papers(tmp_path: Path) -> None:
    path = RECIPES / "behavior_llava.yaml"
    config = load_train_config(path)
    assert (config.learning_rate, config.lr_scheduler, config.warmup_ratio, config.weight_decay) == (
        2e-5, "cosine", 0.03, 0.0)
    # 4096, not the paper's 2048: LLaVA-NeXT-Video spends 144 tokens a frame where LLaMA-VID spent 2
    assert (config.max_length, config.num_train_epochs, config.per_device_batch_size) == (4096, 2.2, 4)
    assert config.model == "llava-hf/LLaVA-NeXT-Video-7B-hf" and config.num_frames * 144 < config.max_length // 2
    assert config.gradient_accumulation_steps == 1 and config.gradient_checkpointing and not config.lora.enabled
    assert config.mix == {"behavior": 1.0, "content": 1.0}
    assert config.deepspeed_path() == RECIPES / "zero2_offload.json"
    # relative paths are relative to the recipe's folder
    assert Path(config.output_dir).is_absolute() and Path(config.data[0].path).is_absolute()
    assert Path(config.output_dir) == (path.parent / "../../../runs/behavior-llava").resolve()
    # the defaults of the config class are the recipe too
    bare = TrainConfig.model_validate({"model": "m", "data": [{"path": "x"}], "output_dir": "o"})
    assert (bare.learning_rate, bare.warmup_ratio, bare.num_train_epochs, bare.max_length) == (2e-5, 0.03, 2.2, 2048)


def test_shipped_deepspeed_and_accelerate_configs_parse() -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    ds = json.loads((RECIPES / "zero2_offload.json").read_text())
    zero = ds["zero_optimization"]
    assert zero["stage"] == 2
    assert zero["offload_optimizer"]["device"] == "cpu" and zero["offload_param"]["device"] == "cpu"
    assert zero["overlap_comm"] and zero["contiguous_gradients"]
    assert ds["bf16"]["enabled"] == "auto" and ds["train_micro_batch_size_per_gpu"] == "auto"
    cluster = load_config_from_file(str(RECIPES / "accelerate_zero2.yaml"))
    assert cluster.distributed_type.value == "DEEPSPEED"
    repo = Path(__file__).resolve().parents[1]
    assert (repo / cluster.deepspeed_config["deepspeed_config_file"]).resolve() == RECIPES / "zero2_offload.json"


@pytest.mark.parametrize(("change", "expected"), [
    ({"learning_rat": 1e-4}, ["field 'learning_rat': unknown field", "did you mean 'learning_rate'"]),
    ({"learning_rate": "fast"}, ["field 'learning_rate'", "fast"]),
    ({"warmup_ratio": 1.5}, ["field 'warmup_ratio'"]),
    ({"lora": {"enabled": True, "rank": 8}}, ["field 'lora.rank': unknown field"]),
    ({"data": [{"path": "a", "hub_id": "b/c"}]}, ["field 'data[0]'", "exactly one of"]),
    ({"mix": {"behavior": -1}}, ["field 'mix'", ">= 0"]),
    ({"deepspeed": "zero9"}, ["deepspeed", "zero2_offload"]),
    ({"deepspeed": "nowhere.json"}, ["field 'deepspeed'", "nowhere.json", "does not exist"]),
    ({"lr_scheduler": "cosinus"}, ["field 'lr_scheduler'"]),
])
def test_config_errors_name_file_and_field(tmp_path: Path, change: dict, expected: list[str]) -> None:
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({"model": "org/model", "data": [{"path": "rel"}], "output_dir": "out", **change}))
    with pytest.raises(ConfigError) as err:
        load_train_config(path)
    for part in [str(path), *expected]:
        assert part in str(err.value), (part, str(err.value))


def test_config_file_problems(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml: cannot read"):
        load_train_config(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_train_config(bad)
    no_data = tmp_path / "no_data.yaml"
    no_data.write_text("model: org/m\noutput_dir: o\n")
    with pytest.raises(ConfigError, match=r"no_data.yaml: field 'data': required but missing"):
        load_train_config(no_data)


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is not None, reason="deepspeed is installed here")
def test_deepspeed_config_without_deepspeed_is_a_clear_error(tmp_path: Path) -> None:
    config = TrainConfig.model_validate({"model": str(tmp_path / "never-loaded"), "data": [{"path": "x"}],
                                         "output_dir": str(tmp_path / "o"), "deepspeed": "zero2_offload"})
    with pytest.raises(ConfigError, match="DeepSpeed, which is not installed"):
        train(config)
    assert not (tmp_path / "o").exists()


def test_precision_choice() -> None:
    base = {"model": "m", "data": [{"path": "x"}], "output_dir": "o"}
    assert pick_precision(TrainConfig.model_validate(base), cuda=False).name == "fp32"
    full_bf16 = pick_precision(TrainConfig.model_validate({**base, "precision": "bf16"}), cuda=True)
    assert (full_bf16.name, full_bf16.weights) == ("bf16", "float32")  # fp32 master weights, autocast
    lora_bf16 = pick_precision(TrainConfig.model_validate({**base, "precision": "bf16", "lora": {"enabled": True}}),
                               cuda=True)
    assert lora_bf16.weights == "bfloat16"  # frozen base in bf16, adapters kept in fp32 by peft


# --------------------------------------------------------------------------- model loading


def test_full_finetuning_freezes_only_the_vision_tower(tiny: Path) -> None:
    model, processor, model_type = load_model_and_processor(str(tiny))
    assert model_type == "llava" and processor.tokenizer is not None
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(".vision_tower." in n for n in frozen)
    assert any(".multi_modal_projector." in n for n in trainable)
    assert any(".language_model." in n for n in trainable) and any(n.startswith("lm_head") for n in trainable)
    tuned, _, _ = load_model_and_processor(str(tiny), tune_vision=True)
    assert all(p.requires_grad for p in tuned.parameters())


def test_lora_adapters_sit_on_the_language_model_only(tiny: Path) -> None:
    model, _, _ = load_model_and_processor(str(tiny), lora=LoraSettings(enabled=True, r=4, alpha=8))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    lora = [n for n in names if "lora_" in n]
    assert lora and all(".language_model." in n for n in lora)
    assert {n.split(".lora_")[0].rsplit(".", 1)[1] for n in lora} == {"q_proj", "k_proj", "v_proj", "o_proj",
                                                                     "gate_proj", "up_proj", "down_proj"}
    assert any("multi_modal_projector.modules_to_save" in n for n in names)  # projector trains in full
    assert not any("vision_tower" in n for n in names)
    assert not any("embed_tokens" in n or "lm_head" in n for n in names)
    with pytest.raises(ConfigError, match="target_modules"):
        load_model_and_processor(str(tiny), lora=LoraSettings(enabled=True, target_modules=["no_such_layer"]))


def test_model_loading_errors(tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_model_and_processor(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="neither config.json nor adapter_config.json"):
        load_model_and_processor(str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="model_type is 'llava'.*'llava_next' was asked for"):
        load_model_and_processor(str(tiny), model_type="llava_next")
    with pytest.raises(ConfigError, match="not in the Hugging Face cache"):
        load_model_and_processor("some-org/not-cached-model")


# --------------------------------------------------------------------------- training


@pytest.mark.slow
def test_training_lowers_the_loss_and_the_saved_model_loads_and_generates(tiny: Path, images_release: Path,
                                                                          tmp_path: Path) -> None:
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    out = tmp_path / "full"
    config = make_config(tiny, images_release, out, max_steps=12, save_steps=6, learning_rate=1e-2)
    result = train(config)
    assert result.global_step == 12 and result.resumed_from is None
    assert [s for s, _ in result.losses] == list(range(1, 13))
    first, last = result.losses[0][1], result.losses[-1][1]
    assert last < 0.8 * first, result.losses
    assert result.kinds == {"behavior": [4, 4], "content": [4, 4]} and result.examples == 8
    assert result.train_tokens > 0 and not result.dropped
    summary = json.loads((out / SUMMARY).read_text())
    assert summary["global_step"] == 12 and summary["losses"][-1] == [12, last]
    assert (out / "checkpoint-6").is_dir() and (out / "checkpoint-12").is_dir()

    base = LlavaForConditionalGeneration.from_pretrained(tiny)
    loaded = LlavaForConditionalGeneration.from_pretrained(out)
    processor = AutoProcessor.from_pretrained(out)
    # the vision tower stayed frozen; the language model moved
    for (name, a), b in zip(base.named_parameters(), loaded.parameters()):
        if ".vision_tower." in name:
            assert torch.equal(a, b), name
    assert not torch.equal(base.lm_head.weight, loaded.lm_head.weight)
    tokens = generate(loaded, processor)
    assert len(tokens) >= 1
    # the trained model learned the answers' words: "a" (every content answer starts with it)
    # is likelier after the prompt than under the random base
    a_id = processor.tokenizer.convert_tokens_to_ids("a")
    assert torch.log_softmax(logits(loaded, processor), -1)[a_id] > torch.log_softmax(logits(base, processor), -1)[a_id]


class _Interrupt(Exception):
    pass


def _stop_after_save(step: int) -> Any:
    from transformers import TrainerCallback

    class StopAfterSave(TrainerCallback):
        """Simulates a crash right after checkpoint-``step`` is written."""

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == step:
                raise _Interrupt(f"stopped after step {step}")

    return StopAfterSave()


def _count_steps() -> Any:
    from transformers import TrainerCallback

    class CountSteps(TrainerCallback):
        steps: list[int] = []

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.steps.append(state.global_step)

    counter = CountSteps()
    counter.steps = []
    return counter


@pytest.mark.slow
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_resume_continues_from_the_last_checkpoint(tiny: Path, images_release: Path, tmp_path: Path,
                                                   lora: bool) -> None:
    out = tmp_path / "resume"
    config = make_config(tiny, images_release, out, max_steps=6, save_steps=3, learning_rate=1e-3 if not lora else 1e-2,
                         lora={"enabled": lora, "r": 4, "alpha": 8, "dropout": 0.0})
    first = _count_steps()
    with pytest.raises(_Interrupt):
        train(config, callbacks=[first, _stop_after_save(3)])
    assert first.steps == [1, 2, 3] and (out / "checkpoint-3").is_dir() and not (out / SUMMARY).exists()

    second = _count_steps()
    result = train(config, callbacks=[second])
    assert result.resumed_from is not None and Path(result.resumed_from).name == "checkpoint-3"
    assert second.steps == [4, 5, 6] and result.global_step == 6
    assert [s for s, _ in result.losses] == [1, 2, 3, 4, 5, 6]  # history carried over from the checkpoint

    fresh = train(config.model_copy(update={"output_dir": str(tmp_path / "fresh")}), resume=False)
    # the resumed run saw the same batches with the same weights as one uninterrupted run
    assert [round(v, 4) for _, v in result.losses] == [round(v, 4) for _, v in fresh.losses]


def test_lora_run_saves_an_adapter_that_loads_and_merges(tiny: Path, images_release: Path, tmp_path: Path) -> None:
    from transformers import LlavaForConditionalGeneration

    out = tmp_path / "lora"
    config = make_config(tiny, images_release, out, max_steps=8, learning_rate=1e-2, gradient_checkpointing=True,
                         lora={"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0, "merge": True})
    result = train(config)
    assert result.global_step == 8 and result.losses[-1][1] < result.losses[0][1]
    assert (out / "adapter_config.json").is_file() and not (out / "config.json").exists()
    assert (out / "tokenizer_config.json").is_file()

    adapted, processor, model_type = load_model_and_processor(str(out))
    assert model_type == "llava" and type(adapted).__name__.startswith("PeftModel")
    assert not any(p.requires_grad for p in adapted.parameters())  # loaded for inference
    base = LlavaForConditionalGeneration.from_pretrained(tiny)
    merged = LlavaForConditionalGeneration.from_pretrained(out / "merged")
    assert not torch.allclose(logits(adapted, processor), logits(base, processor))
    torch.testing.assert_close(logits(merged, processor), logits(adapted, processor), atol=1e-4, rtol=1e-4)
    assert len(generate(merged, processor)) >= 1


def test_unreadable_records_are_dropped_by_name(tiny: Path, mixed_release: Path, tmp_path: Path) -> None:
    # img3's media file is gone: its two records are dropped by id, the run goes on
    examples = open_examples(DataSource(path=str(mixed_release)))
    assert len(examples) == 12
    config = make_config(tiny, mixed_release, tmp_path / "drops", max_steps=3, per_device_batch_size=12)
    result = train(config)
    assert result.global_step == 3
    assert set(result.dropped) == {"reddit:img3:behavior", "reddit:img3:content"}
    assert "not found" in result.dropped["reddit:img3:content"]
    summary = json.loads((tmp_path / "drops" / SUMMARY).read_text())
    assert set(summary["dropped"]) == set(result.dropped)


def test_media_that_can_never_fit_max_length_are_refused_before_training(tiny: Path, mixed_release: Path,
                                                                         tmp_path: Path) -> None:
    # 4 frames x 17 tokens after the system prompt end beyond 60 tokens: every video record would
    # be dropped batch by batch, so the run stops before its first step, saying what to change
    config = make_config(tiny, mixed_release, tmp_path / "long", max_steps=3, max_length=60, num_frames=4)
    with pytest.raises(ConfigError,
                       match=r"video records do not fit: .*Lower num_frames \(now 4\) or raise max_length \(now 60\)"):
        train(config)
    assert not list((tmp_path / "long").glob("checkpoint-*"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_bf16_training_on_the_gpu_lowers_the_loss(tiny: Path, images_release: Path, tmp_path: Path, lora: bool) -> None:
    """precision auto on a GPU: bf16 autocast (full: fp32 master weights; LoRA: bf16 base)."""
    config = make_config(tiny, images_release, tmp_path / "gpu", max_steps=12, learning_rate=1e-2 if not lora else 3e-2,
                         lora={"enabled": lora, "r": 8, "alpha": 16})
    result = train(config)
    assert result.precision == "bf16"
    first, last = result.losses[0][1], result.losses[-1][1]
    assert last < 0.9 * first, result.losses
