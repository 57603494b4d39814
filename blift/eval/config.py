"""Eval configuration files (``blift eval CONFIG``): which checkpoints, on which data, how.

A config is YAML::

    checkpoints:
      - {name: base, path: llava-hf/llava-1.5-7b-hf}
      - {name: behavior-ift, path: runs/train/behavior}
    behavior: {path: releases/blift, split: test}   # released records (or hub_id)
    tasks: [tasks/emotion.jsonl, tasks/vqa.parquet]  # content-understanding task files
    output_dir: runs/eval
    max_records: 500

Relative paths (checkpoint folders, the behavior release, task files, output_dir) are relative to
the config file's folder, like pipeline files, so a config works from any working directory. A
checkpoint ``path`` that is not an existing folder is taken as a Hub id. Every mistake is
reported as ``<file>: field '<name>': <what was expected>`` (:class:`blift.errors.ConfigError`).
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

MODEL_TYPES = ("llava", "llava_next", "llava_next_video", "qwen2_vl")


class CheckpointRef(BaseModel):
    """One model to evaluate: a column of the results table."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="column name in the results table, e.g. base / behavior-ift")
    path: str = Field(min_length=1, description="checkpoint folder or Hub model id")
    model_type: str | None = Field(default=None, description="HF model_type; default: the checkpoint's config")

    @field_validator("model_type")
    @classmethod
    def _known_type(cls, value: str | None) -> str | None:
        if value is not None and value not in MODEL_TYPES:
            raise ValueError(f"unknown model_type {value!r}; expected one of {', '.join(MODEL_TYPES)}")
        return value


class EvalConfig(BaseModel):
    """What ``blift eval`` runs. ``behavior`` defaults to the ``test`` split of the source."""

    model_config = ConfigDict(extra="forbid")

    checkpoints: list[CheckpointRef] = Field(min_length=1)
    behavior: DataSource | None = Field(default=None, description="behavior records (a release folder or Hub id)")
    tasks: list[str] = Field(default_factory=list, description="content-understanding task files (JSONL/Parquet)")
    output_dir: str
    max_records: int | None = Field(default=None, gt=0, description="cap on behavior records and on items per task")
    max_new_tokens: int = Field(default=256, gt=0)
    batch_size: int = Field(default=4, gt=0)
    num_frames: int = Field(default=8, gt=0, description="frames per video record / task item")
    max_length: int = Field(default=2048, gt=0, description="token limit of one scored or prompted sequence")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto", description="auto: bf16 on a GPU that supports it, else fp32")

    @field_validator("behavior", mode="before")
    @classmethod
    def _test_split_default(cls, value: object) -> object:
        # DataSource defaults to the train split (what training reads); eval reads the test split
        # unless the config says otherwise.
        if isinstance(value, dict) and "split" not in value:
            return {**value, "split": "test"}
        return value

    @model_validator(mode="after")
    def _sane(self) -> EvalConfig:
        names = [c.name for c in self.checkpoints]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"checkpoint names must be unique (they name result columns); repeated: {dupes}")
        if self.behavior is None and not self.tasks:
            raise ValueError("nothing to evaluate: give 'behavior' records and/or 'tasks' files")
        return self


def _resolve(value: str, base: Path) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def _checkpoint_path(value: str, base: Path) -> str:
    """Folders (existing, or written as explicit paths) resolve against the config folder; anything
    else is a Hub id and stays as written."""
    candidate = Path(value).expanduser()
    if candidate.is_absolute():
        return str(candidate)
    if (base / candidate).exists() or value.startswith((".", "~")):
        return str((base / candidate).resolve())
    return value


def load_eval_config(path: Path | str) -> EvalConfig:
    """Parse, validate and resolve an eval config file; errors name the file and the field."""
    path = Path(path)
    data = read_config_mapping(path, "eval config", "'checkpoints' and 'output_dir'")
    try:
        config = EvalConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation(exc, f"{path}: ", EvalConfig)) from None
    base = path.resolve().parent
    for i, ref in enumerate(config.checkpoints):
        ref.path = _checkpoint_path(ref.path, base)
        if Path(ref.path).is_absolute() and not Path(ref.path).is_dir():
            raise ConfigError(f"{path}: field 'checkpoints[{i}].path': no checkpoint folder at {ref.path}")
    if config.behavior is not None and config.behavior.path:
        config.behavior.path = _resolve(config.behavior.path, base)
        if not Path(config.behavior.path).exists():
            raise ConfigError(f"{path}: field 'behavior.path': {config.behavior.path} does not exist")
    resolved = []
    for i, task in enumerate(config.tasks):
        task_path = _resolve(task, base)
        if not Path(task_path).is_file():
            raise ConfigError(f"{path}: field 'tasks[{i}]': no task file at {task_path}")
        resolved.append(task_path)
    config.tasks = resolved
    config.output_dir = _resolve(config.output_dir, base)
    return config
