"""Versioned instruction templates: YAML data files loaded, checked and rendered into LLaVA turns.

A template file (``blift/stages/instruct/templates/<name>.yaml``) holds::

    name: reddit_image_behavior    # must equal the file name
    version: 1                     # bump on any wording change; stored in every record
    task: behavior                 # behavior | content
    platform: reddit
    media_kind: image
    optional: [upvote_ratio]       # placeholders that may be absent (see below)
    media_token: true              # false: a text-only record (a video known by its annotations)
    comment_item: "{rank}. {text}" # behavior templates: how one ranked comment is written
    turns:
      - {from: human, value: "<image>\\n... {placeholder} ..."}
      - {from: gpt, value: "..."}

Rendering uses ``str.format_map`` with a strict mapping: a placeholder the stage does not
provide raises :class:`TemplateError` naming the template file, the turn and the placeholder.
A line whose *optional* placeholder has no value (``None``) is left out whole, so e.g. an old
post without an upvote ratio gets no "Upvote ratio:" line instead of "Upvote ratio: None"; a
non-optional placeholder without a value is an error (:class:`MissingValue`). Literal braces are
written ``{{`` and ``}}``.

Older versions stay loadable as ``<name>.v<version>.yaml`` next to the current file and are
named ``"<name>@<version>"``, so a past release can be rebuilt with its exact wording.
"""

from __future__ import annotations

import functools
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from blift.errors import ConfigError
from blift.stages.instruct.verbalize import IMAGE_TOKEN, tidy

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
TASKS = ("behavior", "content")
MEDIA_KINDS = ("image", "video")
ROLES = ("human", "gpt")
_KEYS = {"name", "version", "task", "platform", "media_kind", "description", "optional", "comment_item", "turns",
         "media_token"}


class TemplateError(ConfigError):
    """A template file is malformed or asks for a placeholder the caller did not provide."""


class MissingValue(TemplateError):
    """A non-optional placeholder has no value (``None``) for this record: bad input, not a bug."""

    def __init__(self, message: str, placeholder: str) -> None:
        super().__init__(message)
        self.placeholder = placeholder


@functools.lru_cache(maxsize=1024)
def _parse(text: str) -> tuple[str, ...]:
    return tuple(field for _, field, _, _ in string.Formatter().parse(text) if field is not None)


def placeholders_of(text: str, *, where: str = "") -> list[str]:
    """Field names used in a format string, in order (``{a} {b!r:>3}`` -> ``["a", "b"]``)."""
    try:
        fields = _parse(text)
    except ValueError as exc:
        raise TemplateError(f"{where}bad format string ({exc}); write literal braces as {{{{ and }}}}") from None
    names = []
    for field in fields:
        if not field.isidentifier():
            raise TemplateError(f"{where}placeholder {{{field}}} must be a plain name "
                                "(no index, attribute or position)")
        names.append(field)
    return names


class _Strict(dict):
    """Mapping for ``format_map`` that names the template file and placeholder when one is missing."""

    where: str = ""

    def __missing__(self, key: str) -> Any:
        raise TemplateError(
            f"{self.where}placeholder {{{key}}} has no value; provided: {', '.join(sorted(self)) or 'none'}"
        )


@dataclass(frozen=True)
class Template:
    """A loaded, checked template."""

    name: str
    version: int
    task: str
    platform: str
    media_kind: str
    turns: tuple[tuple[str, str], ...]  # (role, format string)
    optional: frozenset[str]
    comment_item: str
    description: str
    path: Path
    media_token: bool = True  # the first human turn starts with <image>; false: no media token at all

    @property
    def placeholders(self) -> frozenset[str]:
        """Every placeholder the turns use (not those of ``comment_item``)."""
        return frozenset(n for _, text in self.turns for n in placeholders_of(text))

    def check_provides(self, provided: set[str] | frozenset[str]) -> None:
        """Fail early (at stage setup) when the template needs a value the stage never provides."""
        missing = sorted(self.placeholders - set(provided))
        if missing:
            raise TemplateError(
                f"{self.path}: {self.task} template uses placeholder(s) {', '.join('{' + m + '}' for m in missing)} "
                f"that a {self.task} record does not provide; available: {', '.join(sorted(provided))}"
            )

    def render(self, values: Mapping[str, Any]) -> list[dict[str, str]]:
        """The conversation turns for one record: ``[{"from": ..., "value": ...}, ...]``.

        Values are inserted as given (``str()``), except that media tokens in them are
        neutralised (:func:`~blift.stages.instruct.verbalize.tidy` does the same to each line), so only
        the template's own ``<image>`` can reach the record.
        """
        neutral = {k: _neutral(v) for k, v in values.items()}
        turns = []
        for i, (role, text) in enumerate(self.turns):
            where = f"{self.path}: turn {i} ({role}): "
            mapping = _Strict(neutral)
            mapping.where = where
            lines = []
            for line in text.split("\n"):
                names = placeholders_of(line, where=where)
                absent = [n for n in names if n in values and values[n] is None]
                if absent:
                    required = [n for n in absent if n not in self.optional]
                    if required:
                        raise MissingValue(f"{where}placeholder {{{required[0]}}} has no value (None)", required[0])
                    continue  # an optional value is missing: leave the whole line out
                lines.append(line.format_map(mapping))
            turns.append({"from": role, "value": "\n".join(lines).strip("\n")})
        return turns

    def render_comment(self, rank: int, text: str, score: int | None) -> str:
        """One ranked comment line of a behavior answer, from ``comment_item``."""
        mapping = _Strict({"rank": rank, "text": _neutral(text), "score": "" if score is None else score})
        mapping.where = f"{self.path}: comment_item: "
        return self.comment_item.format_map(mapping)


def _neutral(value: Any) -> Any:
    if isinstance(value, str) and "<" in value:
        # multi-line values (lists of comments) keep their line breaks
        return "\n".join(tidy(part) for part in value.split("\n"))
    return value


def _check(spec: Any, path: Path) -> Template:
    where = f"{path}: "
    if not isinstance(spec, dict):
        raise TemplateError(f"{where}expected a mapping at the top level")
    unknown = set(spec) - _KEYS
    if unknown:
        raise TemplateError(f"{where}unknown key(s) {sorted(unknown)}; known: {sorted(_KEYS)}")
    for key in ("name", "version", "task", "platform", "media_kind", "turns"):
        if key not in spec:
            raise TemplateError(f"{where}missing key {key!r}")
    if spec["name"] != path.name.split(".")[0]:
        raise TemplateError(f"{where}name {spec['name']!r} does not match the file name")
    if not isinstance(spec["version"], int) or isinstance(spec["version"], bool) or spec["version"] < 1:
        raise TemplateError(f"{where}version must be a positive integer, got {spec['version']!r}")
    if spec["task"] not in TASKS:
        raise TemplateError(f"{where}task must be one of {TASKS}, got {spec['task']!r}")
    if spec["media_kind"] not in MEDIA_KINDS:
        raise TemplateError(f"{where}media_kind must be one of {MEDIA_KINDS}, got {spec['media_kind']!r}")
    raw_turns = spec["turns"]
    if not isinstance(raw_turns, list) or len(raw_turns) < 2:
        raise TemplateError(f"{where}turns must be a list of at least two {{from, value}} entries")
    turns = []
    for i, turn in enumerate(raw_turns):
        if not isinstance(turn, dict) or set(turn) != {"from", "value"} or not isinstance(turn["value"], str):
            raise TemplateError(f"{where}turn {i}: expected exactly {{from: ..., value: <text>}}")
        role = turn["from"]
        if role != ROLES[i % 2]:
            raise TemplateError(f"{where}turn {i}: role {role!r}; turns must alternate human, gpt, starting with human")
        if not turn["value"].strip():
            raise TemplateError(f"{where}turn {i}: empty text")
        placeholders_of(turn["value"], where=f"{where}turn {i}: ")
        turns.append((role, turn["value"]))
    if turns[-1][0] != "gpt":
        raise TemplateError(f"{where}the last turn must be the assistant's (gpt)")
    tokens = sum(text.count(IMAGE_TOKEN) for _, text in turns)
    media_token = spec.get("media_token", True)
    if not isinstance(media_token, bool):
        raise TemplateError(f"{where}media_token must be true or false, got {media_token!r}")
    if not media_token:
        if tokens:
            raise TemplateError(f"{where}media_token is false (a text-only record) but {IMAGE_TOKEN} appears "
                                f"{tokens} time(s)")
    elif tokens != 1 or not turns[0][1].startswith(IMAGE_TOKEN + "\n"):
        raise TemplateError(
            f"{where}{IMAGE_TOKEN} must appear exactly once, at the start of the first human turn "
            f"followed by a newline (found {tokens})"
        )
    optional = spec.get("optional") or []
    if not isinstance(optional, list) or not all(isinstance(o, str) for o in optional):
        raise TemplateError(f"{where}optional must be a list of placeholder names")
    comment_item = spec.get("comment_item", "{rank}. {text}")
    bad = set(placeholders_of(comment_item, where=f"{where}comment_item: ")) - {"rank", "text", "score"}
    if bad:
        raise TemplateError(f"{where}comment_item may use {{rank}}, {{text}} and {{score}} only, not {sorted(bad)}")
    return Template(
        name=spec["name"],
        version=spec["version"],
        task=spec["task"],
        platform=str(spec["platform"]),
        media_kind=spec["media_kind"],
        turns=tuple(turns),
        optional=frozenset(optional),
        comment_item=comment_item,
        description=str(spec.get("description", "")).strip(),
        path=path,
        media_token=media_token,
    )


def available() -> list[str]:
    """Names of the bundled templates (current versions)."""
    return sorted(p.stem for p in TEMPLATES_DIR.glob("*.yaml") if "." not in p.stem)


def template_path(ref: str) -> tuple[Path, int | None]:
    """Where ``ref`` lives: a bundled name, ``name@version``, or a path to a ``.yaml`` file."""
    if ref.endswith((".yaml", ".yml")):
        return Path(ref), None
    name, _, version = ref.partition("@")
    if not name.isidentifier():
        raise TemplateError(f"template {ref!r}: expected a name like 'reddit_image_behavior' or 'name@2'")
    wanted = None
    if version:
        if not version.isdigit():
            raise TemplateError(f"template {ref!r}: version after '@' must be an integer")
        wanted = int(version)
        old = TEMPLATES_DIR / f"{name}.v{wanted}.yaml"
        if old.is_file():
            return old, wanted
    path = TEMPLATES_DIR / f"{name}.yaml"
    if not path.is_file():
        raise TemplateError(f"unknown template {name!r} (no {path}); bundled: {', '.join(available())}")
    return path, wanted


def _load_file(path: Path) -> Template:
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TemplateError(f"{path}: cannot read template ({exc})") from None
    except yaml.YAMLError as exc:
        raise TemplateError(f"{path}: not valid YAML ({exc})") from None
    return _check(spec, path)


def load_template(ref: str) -> Template:
    """Load and check a template by name, ``name@version`` or path."""
    path, wanted = template_path(ref)
    template = _load_file(path.resolve())
    if wanted is not None and template.version != wanted:
        raise TemplateError(f"template {ref!r}: {path} is version {template.version}, "
                            f"and no {path.stem}.v{wanted}.yaml exists")
    return template
