"""Stage names to classes, imported lazily so heavy dependencies load only when used."""

from __future__ import annotations

import importlib

from blift.errors import ConfigError
from blift.stage import Stage

STAGES: dict[str, str] = {
    "reddit.list": "blift.collect.reddit_stages:RedditListStage",
    "reddit.collect": "blift.collect.reddit_stages:RedditCollectStage",
    "reddit.dumps": "blift.collect.dumps:DumpIngestStage",
    "media.download": "blift.collect.download:DownloadStage",
    "clean": "blift.stages.clean:CleanStage",
    "attributes": "blift.stages.attributes:AttributesStage",
    "instruct": "blift.instruct.stage:InstructStage",
}


def load_stage(name: str) -> type[Stage]:
    try:
        target = STAGES[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, STAGES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown stage {name!r}{hint} (known: {', '.join(sorted(STAGES))})") from None
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)
