"""Pipeline files: YAML naming the stages in order with their parameters.

Every mistake is reported as ``<file>: <where>: <what was expected>``, e.g.
``pipelines/x.yaml: stages[3] (clean) config: field 'min_wrds': unknown field; known fields: ...``.
Paths inside a pipeline file are relative to the file's folder.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from blift.errors import ConfigError
from blift.ids import config_hash
from blift.registry import load_stage
from blift.replay.serve import ReplaySpec, placeholders
from blift.stage import Stage, StageConfig


class StageEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: str = Field(description="registered stage name, e.g. clean")
    config: dict[str, Any] = Field(default_factory=dict, description="the stage's typed config")
    requests: list[dict[str, Any]] | None = Field(default=None, description="what a source stage collects")
    inputs: dict[str, str] = Field(default_factory=dict, description="rename input datasets: declared -> folder")
    outputs: dict[str, str] = Field(default_factory=dict, description="rename output datasets: declared -> folder")
    workers: int | None = Field(default=None, ge=1, description="worker processes for this stage")
    record_timeout_s: float | None = Field(default=None, gt=0,
                                           description="watchdog for record stages (default: the run's)")


class ReleaseSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    out: str = Field(description="release folder")
    configs: dict[str, str] | None = Field(default=None, description="release config -> run dataset")
    max_shard_bytes: int = Field(default=500_000_000, gt=0)
    images: Literal["paths", "bytes"] = Field(default="paths", description="images as files under media/ or as bytes")
    videos: Literal["paths", "frames"] = Field(default="paths", description="videos as files or frame arrays")
    license: str = Field(default="other", description="card license; the media and texts belong to their authors")
    pretty_name: str | None = None
    takedown_contact: str | None = Field(default=None,
                                         description="e-mail or URL for removal requests, shown in the card")
    push: str | None = Field(default=None, description="ORG/NAME: push the release to the Hub after the run")
    private: bool = Field(default=False, description="with push: create the Hub repo private")


class Pipeline(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    out: str | None = Field(default=None, description="run folder (default runs/<name>)")
    replay: ReplaySpec | None = None
    executor: Literal["local", "ray"] = Field(default="local", description="local process pools or a Ray cluster")
    ray_address: str | None = Field(default=None,
                                    description="Ray cluster to join (default: RAY_ADDRESS, else a local Ray)")
    stages: list[StageEntry]
    release: ReleaseSpec | None = None


def format_validation(exc: ValidationError, prefix: str, model: type[BaseModel]) -> str:
    """One line per problem, ``<prefix>field 'a.b[0]': <message>``, with a "did you mean" for
    unknown fields; a problem of the whole mapping (a model validator) has no field."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in err["loc"]).replace(".[", "[")
        if not loc:
            lines.append(f"{prefix}{err['msg'].removeprefix('Value error, ')}")
        elif err["type"] == "extra_forbidden":
            field = str(err["loc"][-1])
            known = sorted(model.model_fields) if len(err["loc"]) == 1 else []
            close = difflib.get_close_matches(field, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            lines.append(f"{prefix}field {loc!r}: unknown field{hint}"
                         + (f"; known fields: {', '.join(known)}" if known else ""))
        elif err["type"] == "missing":
            lines.append(f"{prefix}field {loc!r}: required but missing")
        else:
            lines.append(f"{prefix}field {loc!r}: {err['msg'].removeprefix('Value error, ')} "
                         f"(got {err.get('input')!r:.60})")
    return "\n".join(lines)


def validate_stage_config(stage_cls: type[Stage], config: dict[str, Any], where: str) -> StageConfig:
    try:
        return stage_cls.Config.model_validate(config)
    except ValidationError as exc:
        msg = format_validation(exc, f"{where}: ", stage_cls.Config)
        known = ", ".join(sorted(stage_cls.Config.model_fields))
        raise ConfigError(f"{msg}\n  known fields of {stage_cls.name!r}: {known}") from None


_VAR = re.compile(r"\$\{([a-z_.]+)\}")


def substitute(obj: Any, variables: dict[str, str], where: str) -> Any:
    """Replace ``${name}`` in config strings (the replay servers' URLs, say)."""
    if isinstance(obj, str):
        def repl(m: re.Match[str]) -> str:
            if m.group(1) not in variables:
                raise ConfigError(f"{where}: unknown variable ${{{m.group(1)}}}; known: {sorted(variables)}")
            return variables[m.group(1)]
        return _VAR.sub(repl, obj)
    if isinstance(obj, dict):
        return {k: substitute(v, variables, where) for k, v in obj.items()}
    if isinstance(obj, list):
        return [substitute(v, variables, where) for v in obj]
    return obj


def read_config_mapping(path: Path, what: str, expected: str) -> dict[str, Any]:
    """A YAML config file as a mapping; unreadable files, bad YAML and non-mappings are
    ConfigErrors naming the file (``what``: "pipeline file"; ``expected``: its main keys)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what} ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with {expected}, got {type(data).__name__}")
    return data


def load_pipeline(path: Path) -> Pipeline:
    """Parse and validate a pipeline file, including every stage's config."""
    data = read_config_mapping(path, "pipeline file", "'name' and 'stages'")
    try:
        pipeline = Pipeline.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation(exc, f"{path}: ", Pipeline)) from None
    for i, entry in enumerate(pipeline.stages):
        where = f"{path}: stages[{i}] ({entry.stage})"
        try:
            cls = load_stage(entry.stage)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        # Variables are filled at run time; validate with placeholders so types still get checked.
        validate_stage_config(cls, substitute(entry.config, placeholders(pipeline.replay), where), f"{where} config")
        for side, declared in (("inputs", cls.inputs), ("outputs", cls.outputs)):
            bad = set(getattr(entry, side)) - set(declared)
            if bad:
                raise ConfigError(f"{where}: {side}: unknown dataset(s) {sorted(bad)}; "
                                  f"this stage has {sorted(declared)}")
        if "requests" in cls.inputs and not entry.requests:
            raise ConfigError(f"{where}: field 'requests': this source stage needs a non-empty 'requests' list")
        if entry.requests and "requests" not in cls.inputs:
            raise ConfigError(f"{where}: field 'requests': stage {entry.stage!r} takes no requests")
        if entry.requests:
            try:
                cls.expand_requests(cls.resolve_requests(entry.requests, path.parent))
            except ConfigError as exc:
                raise ConfigError(f"{where}: requests: {exc}") from None
    return pipeline


def stage_config_hash(stage_cls: type[Stage], config: StageConfig) -> str:
    return config_hash({"stage": stage_cls.name, "version": stage_cls.version, "config": config.model_dump(mode="json"),
                        "fingerprint": stage_cls.fingerprint(config)})
