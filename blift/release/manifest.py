"""``release.json``: what a release folder holds and how it was made, in one machine-readable file.

Every release tool reads and writes it: the writer creates it, the card renders from it (with
the run's ``stats.json``, copied next to it), takedowns append to it, push uploads it. Keeping
these facts in one file means the card can always be re-rendered from the folder alone (after
a takedown, on the Hub) and never drifts from the data.

It never holds a taken-down id: takedowns record counts and dates only.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from blift import tables

MANIFEST_NAME = "release.json"
STATS_NAME = "stats.json"  # the run's stats.json, copied: the card's filter accounting
ASSETS_DIR = "assets"  # card plots (PNG)
FORMAT_VERSION = 1
LANGUAGE_MIN_SHARE = 0.10  # an observed language is listed when at least this share of the kept comments has it


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SplitFiles(_Model):
    rows: int
    files: list[str] = Field(description="shard paths relative to the release root, in order")


class ReleaseConfig(_Model):
    source: str = Field(description="run dataset folder it was built from")
    schema_name: str = Field(description="blift table schema of its rows (schemas/<name>.yaml)")
    default: bool = False
    splits: dict[str, SplitFiles] = Field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.splits.values())


class Takedown(_Model):
    """One applied takedown: counts and a date, never the ids."""

    date: datetime
    ids_listed: int = Field(description="ids in the takedown file")
    items_removed: int
    authors_removed: int = 0
    rows_removed: dict[str, int] = Field(default_factory=dict, description="config -> rows removed")
    media_removed: int = 0


class ReleaseLanguages(_Model):
    """The languages of the released comments as the run recorded them (its ``stats.json``), so
    the card names them without identifying languages itself."""

    stage: str = Field(description="the run stage that recorded them (clean)")
    codes: list[str] = Field(description="ISO codes the card's `language:` lists")
    filtered: bool = Field(description="true: the stage kept only comments in `codes`; false: it did not filter "
                                       "by language and `codes` are those it found on the comments it kept")
    counts: dict[str, int] = Field(default_factory=dict, description="filtered=false: kept comments per code found")
    min_share: float | None = Field(None, description="filtered=false: share of `counts` a code needs to be listed")


def languages_from_stats(stats: dict[str, Any] | None) -> ReleaseLanguages | None:
    """What the run's ``stats.json`` says about languages (the last stage that recorded them), or None.

    A language filter gives its list. Without one, the codes found on the kept comments that reach
    :data:`LANGUAGE_MIN_SHARE` are listed, most frequent first (and after the filter's codes when
    some shards filtered and others did not)."""
    found = [(name, st["languages"]) for name, st in ((stats or {}).get("stages") or {}).items()
             if isinstance(st, dict) and st.get("languages")]
    if not found:
        return None
    stage, langs = found[-1]
    kept, observed = list(langs.get("kept") or []), {str(k): int(v) for k, v in (langs.get("observed") or {}).items()}
    if not observed:
        return ReleaseLanguages(stage=stage, codes=kept, filtered=True, min_share=None)
    total = sum(observed.values())
    frequent = [c for c, n in sorted(observed.items(), key=lambda kv: (-kv[1], kv[0]))
                if n / total >= LANGUAGE_MIN_SHARE]
    return ReleaseLanguages(stage=stage, codes=list(dict.fromkeys(kept + frequent)), filtered=False, counts=observed,
                            min_share=LANGUAGE_MIN_SHARE)


class ReleaseManifest(_Model):
    format_version: int = FORMAT_VERSION
    blift_version: str
    created_at: datetime
    pipeline: str | None = Field(None, description="pipeline name of the run")
    pipeline_config_hash: str | None = Field(None, description="hash of the pipeline's stage configs")
    platforms: list[str] = Field(default_factory=list)
    collection_window: dict[str, datetime | None] = Field(
        default_factory=dict, description="first/last created_at and collected_at of the released items")
    configs: dict[str, ReleaseConfig] = Field(default_factory=dict)
    images: Literal["paths", "bytes"] = "paths"
    videos: Literal["paths", "frames"] = "paths"
    media_files: int = 0
    media_bytes: int = 0
    max_shard_bytes: int
    takedowns: list[Takedown] = Field(default_factory=list)
    takedown_contact: str | None = None
    license: str = "other"
    pretty_name: str | None = None
    languages: ReleaseLanguages | None = Field(
        None,
        description="languages of the released comments as the run's clean stage recorded them (null: not recorded)")
    options: dict[str, str | int | float | bool | None] = Field(
        default_factory=dict, description="writer options that shaped the files (drop_raw, copy_media, ...)")


def read_manifest(release_dir: Path) -> ReleaseManifest:
    path = Path(release_dir) / MANIFEST_NAME
    if not path.is_file():
        from blift.errors import BliftError

        raise BliftError(f"{release_dir}: no {MANIFEST_NAME}; not a release written by blift (run `blift release`)")
    return ReleaseManifest.model_validate(json.loads(path.read_text(encoding="utf-8")))


def write_manifest(release_dir: Path, manifest: ReleaseManifest) -> Path:
    """Atomic write, sorted keys: the same release gives the same bytes."""
    path = Path(release_dir) / MANIFEST_NAME
    data = json.dumps(manifest.model_dump(mode="json"), indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    tables.atomic_write_bytes(path, data.encode("utf-8"))
    return path
