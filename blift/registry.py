"""Stage names to classes, imported lazily so heavy dependencies load only when used."""

from __future__ import annotations

import importlib
import os

from blift.errors import ConfigError
from blift.stage import Stage

STAGES: dict[str, str] = {
    "reddit.list": "blift.collect.reddit.list:RedditListStage",
    "reddit.collect": "blift.collect.reddit.collect:RedditCollectStage",
    "reddit.dumps": "blift.collect.reddit.dumps:DumpIngestStage",
    "youtube.list": "blift.collect.youtube.list:YoutubeListStage",
    "youtube.collect": "blift.collect.youtube.collect:YoutubeCollectStage",
    "media.download": "blift.collect.media.download:DownloadStage",
    "clean": "blift.stages.clean:CleanStage",
    "scenes": "blift.stages.scenes:ScenesStage",
    "asr": "blift.stages.asr:AsrStage",
    "attributes": "blift.stages.attributes:AttributesStage",
    "caption": "blift.stages.caption:CaptionStage",
    "instruct": "blift.stages.instruct.stage:InstructStage",
}


def _extra_stages() -> dict[str, str]:
    """Plugin stages from ``BLIFT_STAGES="name=module:Class;..."`` (inherited by worker processes)."""
    extra = {}
    for item in filter(None, (s.strip() for s in os.environ.get("BLIFT_STAGES", "").split(";"))):
        name, sep, target = item.partition("=")
        if not sep or ":" not in target:
            raise ConfigError(f"BLIFT_STAGES: entry {item!r}: expected name=module:Class")
        extra[name.strip()] = target.strip()
    return extra


def load_stage(name: str) -> type[Stage]:
    stages = {**STAGES, **_extra_stages()}
    try:
        target = stages[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, stages, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown stage {name!r}{hint} (known: {', '.join(sorted(stages))})") from None
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)
