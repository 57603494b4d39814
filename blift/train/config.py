"""Training config files (``blift train CONFIG``): YAML, validated, defaults = the paper's recipe.

Defaults follow Behavior-LLaVA's released training script (PAPER.md §4): learning rate 2e-5,
cosine schedule, warmup 3 % of the steps, weight decay 0, max length 2048, per-device batch 4,
no gradient accumulation, gradient checkpointing, bf16 on a GPU, about 2.2 epochs, behavior and
content records mixed 1:1, DeepSpeed ZeRO-2 with CPU offload when ``deepspeed: zero2_offload``.
``blift/train/recipes/behavior_llava.yaml`` spells them out with a placeholder model and data.

Every mistake is reported as ``<file>: field '<where>': <what was expected>``. Relative paths in
the file (data paths, output_dir, a deepspeed JSON, a local model folder written ``./x`` or
existing next to the file) are relative to the file's folder, as in pipeline files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from blift.config import format_validation, read_config_mapping
from blift.errors import ConfigError
from blift.train.data import DataSource

RECIPES = Path(__file__).resolve().parent / "recipes"
# Names accepted by ``deepspeed:`` besides a path: JSON files shipped in recipes/.
DEEPSPEED_PRESETS = {"zero2_offload": RECIPES / "zero2_offload.json"}
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt", "cosine_with_min_lr", "warmup_stable_decay")
# The language model's linear layers in Llama/Vicuna/Mistral/Qwen2 (LLaVA's LoRA targets).
LM_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class LoraSettings(BaseModel):
    """LoRA through peft on the language model only (the vision tower never gets adapters)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    r: int = Field(default=16, ge=1, description="adapter rank")
    alpha: float = Field(default=32, gt=0, description="scaling numerator (lora_alpha)")
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: list(LM_LINEAR), min_length=1,
                                      description="linear layer names inside the language model")
    merge: bool = Field(default=False, description="also save base+adapter merged weights in output_dir/merged")


class TrainConfig(BaseModel):
    """One fine-tuning run. ``max_steps`` (when set) overrides ``num_train_epochs``."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="HF id, local checkpoint folder, or a LoRA output folder")
    model_type: str | None = Field(default=None, description="checked against the checkpoint's config.json")
    data: list[DataSource] = Field(min_length=1, description="release folders / record files / Hub datasets")
    mix: dict[str, float] = Field(default_factory=lambda: {"behavior": 1.0, "content": 1.0},
                                  description="sampling ratio between record kinds (behavior:content 1:1)")
    output_dir: str
    learning_rate: float = Field(default=2e-5, gt=0)
    lr_scheduler: Literal[SCHEDULERS] = "cosine"  # type: ignore[valid-type]
    warmup_ratio: float = Field(default=0.03, ge=0, lt=1, description="fraction of the steps warming up")
    weight_decay: float = Field(default=0.0, ge=0)
    max_grad_norm: float = Field(default=1.0, ge=0)
    max_length: int = Field(default=2048, ge=16, description="tokens per record, media tokens included")
    num_train_epochs: float = Field(default=2.2, gt=0)
    max_steps: int | None = Field(default=None, ge=1, description="overrides num_train_epochs")
    per_device_batch_size: int = Field(default=4, ge=1)
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        default="auto", description="auto: bf16 on a GPU that has it (else fp16), fp32 on the CPU")
    gradient_checkpointing: bool = True
    tune_vision: bool = Field(default=False, description="also train the vision tower (LLaVA keeps it frozen)")
    lora: LoraSettings = Field(default_factory=LoraSettings)
    deepspeed: str | None = Field(default=None, description="a DeepSpeed JSON path or a preset name (zero2_offload)")
    save_steps: int = Field(default=500, ge=1)
    save_total_limit: int | None = Field(default=2, ge=1)
    logging_steps: int = Field(default=10, ge=1)
    seed: int = 42
    num_frames: int = Field(default=8, ge=1, description="frames sampled per video record")
    dataloader_workers: int = Field(default=4, ge=0)
    report_to: list[str] = Field(default_factory=list, description="extra loggers: tensorboard, wandb...")

    @field_validator("mix")
    @classmethod
    def _mix_positive(cls, mix: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in mix.items() if v < 0}
        if bad:
            raise ValueError(f"ratios must be >= 0, got {bad}")
        if mix and sum(mix.values()) <= 0:
            raise ValueError("at least one ratio must be > 0")
        return mix

    @model_validator(mode="after")
    def _deepspeed_known(self) -> TrainConfig:
        if self.deepspeed and self.deepspeed not in DEEPSPEED_PRESETS and not self.deepspeed.endswith(".json"):
            raise ValueError(f"deepspeed: {self.deepspeed!r} is neither a preset ({', '.join(DEEPSPEED_PRESETS)}) "
                             "nor a .json file")
        return self

    def deepspeed_path(self) -> Path | None:
        """The DeepSpeed JSON this run uses (a preset resolved to the shipped file)."""
        if not self.deepspeed:
            return None
        return DEEPSPEED_PRESETS.get(self.deepspeed, Path(self.deepspeed))


def _relative_to(base: Path, value: str) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def _resolve_paths(data: dict, base: Path) -> dict:
    """Make the file's relative paths absolute (relative to the file's folder)."""
    data = dict(data)
    if isinstance(data.get("output_dir"), str):
        data["output_dir"] = _relative_to(base, data["output_dir"])
    ds = data.get("deepspeed")
    if isinstance(ds, str) and ds not in DEEPSPEED_PRESETS:
        data["deepspeed"] = _relative_to(base, ds)
    model = data.get("model")
    if isinstance(model, str) and model:
        if model.startswith(("./", "../")) or (base / model).is_dir():
            data["model"] = _relative_to(base, model)
    if isinstance(data.get("data"), list):
        entries = []
        for entry in data["data"]:
            if isinstance(entry, dict) and isinstance(entry.get("path"), str):
                entry = {**entry, "path": _relative_to(base, entry["path"])}
            entries.append(entry)
        data["data"] = entries
    return data


def parse_train_config(data: object, where: str, base: Path | None = None) -> TrainConfig:
    """Validate an already-parsed mapping; ``where`` prefixes every message (usually the file)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with 'model', 'data' and 'output_dir', "
                          f"got {type(data).__name__}")
    if base is not None:
        data = _resolve_paths(data, base)
    try:
        config = TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation(exc, f"{where}: ", TrainConfig)) from None
    ds = config.deepspeed_path()
    if ds is not None and not ds.is_file():
        raise ConfigError(f"{where}: field 'deepspeed': {ds} does not exist")
    return config


def load_train_config(path: Path) -> TrainConfig:
    """Parse and validate a training config file."""
    path = Path(path)
    data = read_config_mapping(path, "training config", "'model', 'data' and 'output_dir'")
    return parse_train_config(data, str(path), path.resolve().parent)
