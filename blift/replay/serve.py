"""The pipeline file's ``replay:`` section: recorded platform data served on loopback for one run.

The bundled sample uses it: one server on one (fixed) port answers Reddit's API from
``replay.reddit`` and serves the files of ``replay.youtube``/media at ``/youtube/media/`` (saved
yt-dlp info dicts point there). Stage configs name the server as ``${replay.reddit}`` /
``${replay.youtube}``. This is a feature of running a pipeline, not of the runner: the caller
starts the servers around the run and hands the runner the variables.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from blift.errors import ConfigError

log = logging.getLogger(__name__)

PLATFORMS = ("reddit", "youtube")


class ReplaySpec(BaseModel):
    """Serve recorded platform data on loopback for the run (the bundled sample uses it)."""

    model_config = ConfigDict(extra="forbid")

    reddit: str | None = Field(default=None, description="folder of recorded Reddit posts and media")
    youtube: str | None = Field(default=None, description="folder whose media/ is served at ${replay.youtube}/media/")
    port: int = Field(default=0, ge=0, le=65535, description="fixed port keeps URLs (and so outputs) stable")


def placeholders(spec: ReplaySpec | None) -> dict[str, str]:
    """Stand-in values of ``${replay.*}`` so stage configs validate before any server runs."""
    if not spec:
        return {}
    return {f"replay.{name}": "http://127.0.0.1:1" for name in PLATFORMS if getattr(spec, name)}


@contextlib.contextmanager
def serve(spec: ReplaySpec | None, base: Path) -> Iterator[dict[str, str]]:
    """Start the loopback server ``spec`` asks for (folders relative to ``base``, the pipeline
    file's folder); yield the ``${replay.*}`` variables; stop it on the way out."""
    variables: dict[str, str] = {}
    if not spec or not (spec.reddit or spec.youtube):
        yield variables
        return
    from blift.replay.reddit_api import ReplayServer

    folders = {}
    for name in PLATFORMS:
        value = getattr(spec, name)
        if value:
            folders[name] = (base / value).resolve()
            if not folders[name].is_dir():
                raise ConfigError(f"replay.{name}: folder {folders[name]} does not exist")
    static = {"youtube/media": folders["youtube"] / "media"} if "youtube" in folders else {}
    with tempfile.TemporaryDirectory(prefix="blift-replay-") as empty:
        reddit_root = folders.get("reddit")
        if reddit_root is None:  # a YouTube-only replay: an empty Reddit store
            reddit_root = Path(empty)
            (reddit_root / "posts").mkdir()
        server = ReplayServer(reddit_root, port=spec.port, static=static)
        server.start()
        try:
            for name, folder in folders.items():
                variables[f"replay.{name}"] = server.url if name == "reddit" else f"{server.url}/youtube"
                log.info("replaying recorded %s data from %s at %s", name, folder, variables[f"replay.{name}"])
            yield variables
        finally:
            server.stop()
