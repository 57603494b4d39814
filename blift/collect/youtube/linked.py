"""``youtube.linked``: items -> videos, the YouTube video each item links to (an r/videos post).

The paper's Reddit videos are YouTube videos carrying Reddit behavior: the post keeps its own
score, upvote ratio and comments (``items``/``comments`` from ``reddit.collect``), and this stage
adds what the linked video is: a ``videos`` row *keyed by the post's uid* (``reddit:abc123``) with
the file (fetched with exactly ``youtube.collect``'s yt-dlp options, rules and retries, through
:class:`~blift.collect.youtube.collect.VideoFetcher`) and the video's own views, likes, comment
count and most-replayed heatmap. ``media.download`` then probes the file into the post's
``media`` row, as for any collected video.

* Which link: the first of the item's ``media_urls``, then its ``url``, that names a YouTube
  video (yt-dlp's own URL rules: watch, youtu.be, shorts, embed, live, with or without a
  playlist). Only ``video`` items are looked at (media.download uses a videos row for no other
  kind), and never a YouTube item itself (``youtube.collect`` wrote its row). Items passed over
  are counted (``not_video``, ``not_youtube``, ``youtube_item``), with no row.
* What a post gets when its video cannot be had: a rule (the paper dropped videos over 500 s:
  ``max_duration_s``) gives a ``skipped`` file with the rule as reason (``too_long``) and the
  video's facts, and nothing but the page is fetched; a private, removed or otherwise
  unavailable video (about half the paper's links) gives a ``failed`` file with yt-dlp's
  classified reason (``private``, ``removed``, ``unavailable``...). Only transient failures
  (network, rate limits) fail the record, so ``--retry-failed`` redoes them.
* One fetch per video per run: posts linking the same video (reposts, the same link in two
  listings) share the first outcome. A worker keeps outcomes in memory (its threads wait for a
  video another thread is fetching); workers share them through small files under
  ``.tmp/youtube.linked/`` in the run's local folder, named by the settings that decide an
  outcome, so changing the format or a rule fetches again (delete that folder to fetch everything
  again in the same run folder). Two workers meeting the same new video at the same instant may
  both fetch it; the content-addressed store keeps one file.
* Saved info dicts: ``info_json_dir`` names a folder of ``.info.json`` files (``yt-dlp
  --write-info-json``, an archive made while the videos were still public); a linked video found
  there is read from it the way ``youtube.collect`` reads ``info_json_dir`` refs, and fetched
  from the formats it lists. With ``online: false`` a video not found there is not looked up on
  YouTube (``skipped``, reason ``no_info_json``).
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, ClassVar

import orjson
from pydantic import Field

from blift import storage
from blift.collect.youtube.client import WATCH_URL, youtube_video_id
from blift.collect.youtube.collect import VideoFetcher, YoutubeFetchConfig
from blift.collect.youtube.info_json import INFO_JSON, info_refs, is_info_json_ref
from blift.collect.youtube.rows import YOUTUBE, video_row
from blift.errors import ConfigError, PermanentError, TransientError
from blift.ids import short_id
from blift.stage import RecordOutput, RecordStage, ShardInput, StageConfig
from blift.storage import RunPath, local_dir

log = logging.getLogger(__name__)

# "<id>.info.json" (yt-dlp -o "%(id)s") or "<title> [<id>].info.json" (yt-dlp's default name)
_NAMED_ID = re.compile(r"^([A-Za-z0-9_-]{11})\.info\.json$|\[([A-Za-z0-9_-]{11})\]\.info\.json$")
# settings that change how a fetch goes, not what it gives: left out of the shared outcomes' key
_NOT_OUTCOME = frozenset({"threads", "socket_timeout_s", "retries"})
_MEMORY = 4096  # outcomes a worker keeps in memory (most recent); the shared files keep them all


class YoutubeLinkedConfig(YoutubeFetchConfig):
    # the paper's Reddit videos: no view rule (that was its YouTube set's), at most 500 s
    min_views: int | None = Field(None, ge=0, description="keep linked videos with at least this many views; "
                                  "0 or null (default): no view rule")
    max_duration_s: float | None = Field(500.0, gt=0, description="linked videos longer than this get a skipped "
                                         "file (reason too_long) and are never downloaded (paper: 500 s); "
                                         "null: no limit")
    info_json_dir: str | None = Field(None, description="folder of saved yt-dlp .info.json files (any depth), "
                                      "looked up by video id before asking YouTube")
    online: bool = Field(True, description="false: a video not in info_json_dir is not looked up on YouTube "
                         "(skipped, reason no_info_json)")


class YoutubeLinkedStage(RecordStage):
    """items -> videos: the YouTube video an item links to, keyed by the item's uid."""

    name: ClassVar[str] = "youtube.linked"
    version: ClassVar[int] = 1
    inputs: ClassVar[dict[str, str]] = {"items": "items"}
    outputs: ClassVar[dict[str, str]] = {"videos": "videos"}
    key_column: ClassVar[str] = "uid"
    Config = YoutubeLinkedConfig
    config: YoutubeLinkedConfig

    def __init__(self, config: StageConfig, run_dir: RunPath) -> None:
        super().__init__(config, run_dir)
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}  # one per video id: a second thread waits
        self._outcomes: OrderedDict[str, dict[str, Any]] = OrderedDict()  # video id -> videos row without uid
        self._saved: dict[str, str] | None = None  # video id -> info json ref
        settings = {k: v for k, v in self.config.model_dump(mode="json").items() if k not in _NOT_OUTCOME}
        self._shared = local_dir(run_dir) / ".tmp" / self.name / f"seen-{short_id(self.name, self.version, settings)}"

    def __getstate__(self) -> dict[str, Any]:
        """Config and run folder only: locks and caches belong to one process."""
        return {"config": self.config, "run_dir": self.run_dir}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"], state["run_dir"])  # type: ignore[misc]

    def setup(self) -> None:
        self._saved_refs()

    def describe(self) -> str:
        c = self.config
        rules = c.rules()
        saved = f", saved info dicts from {c.info_json_dir}" if c.info_json_dir else ""
        return (f"{self.name} via yt-dlp: format {c.format!r}, download={'on' if c.download else 'off'} "
                f"(cap {c.max_bytes / 1e6:.0f} MB), rules max_duration_s={rules.max_duration_s} "
                f"min_views={rules.min_views} age_limited={'drop' if rules.drop_age_limited else 'keep'}"
                f"{saved}{'' if c.online else ' (offline)'}, {c.threads} threads")

    def records(self, shard: ShardInput) -> list[tuple[str, Any]]:
        table = shard.tables["items"]
        columns = [c for c in ("uid", "platform", "media_kind", "media_urls", "url") if c in table.column_names]
        out: list[tuple[str, Any]] = []
        seen: set[str] = set()
        for row in table.select(columns).to_pylist():
            if row["uid"] not in seen:
                seen.add(row["uid"])
                out.append((row["uid"], row))
        return out

    # ------------------------------------------------------------------ one item

    def process_record(self, key: str, payload: Any) -> RecordOutput:
        if payload.get("platform") == YOUTUBE:
            return RecordOutput(counters={"youtube_item": 1})
        if payload.get("media_kind") != "video":
            return RecordOutput(counters={"not_video": 1})
        vid = linked_video_id(payload)
        if vid is None:
            return RecordOutput(counters={"not_youtube": 1})
        outcome, counters = self._outcome(vid)
        row = {**outcome, "uid": key}
        counters = {**counters, "linked": 1, f"file_{row['file_status']}": 1}
        if row["file_status"] != "ok":
            counters[f"{row['file_status']}_{row['file_reason']}"] = 1
        return RecordOutput(tables={"videos": [row]}, counters=counters)

    def _outcome(self, vid: str) -> tuple[dict[str, Any], dict[str, int]]:
        """The videos row (without uid) of a video, fetched once per run: (row, counters)."""
        with self._guard:
            lock = self._locks.setdefault(vid, threading.Lock())
        with lock:  # a second thread wanting this video waits here, then finds the first one's row
            row = self._recall(vid)
            if row is not None:
                return row, {"videos_reused": 1}
            row, counters, fetched = self._fetch(vid)
            if not fetched:
                return row, counters
            self._remember(vid, row)
            self._write_shared(vid, row)
            return row, {**counters, "videos_fetched": 1}

    def _recall(self, vid: str) -> dict[str, Any] | None:
        with self._guard:
            row = self._outcomes.get(vid)
            if row is not None:
                self._outcomes.move_to_end(vid)
                return row
        row = self._read_shared(vid)
        if row is not None:
            self._remember(vid, row)
        return row

    def _remember(self, vid: str, row: dict[str, Any]) -> None:
        with self._guard:
            self._outcomes[vid] = row
            self._outcomes.move_to_end(vid)
            while len(self._outcomes) > _MEMORY:
                self._outcomes.popitem(last=False)

    def _fetch(self, vid: str) -> tuple[dict[str, Any], dict[str, int], bool]:
        """One video to a videos row without uid: (row, counters, whether yt-dlp was asked; only
        such outcomes are kept). Transient failures raise, and nothing is kept."""
        cfg = self.config
        key = f"{YOUTUBE}:{vid}"
        what = f"video {key}"
        ref = self._saved_refs().get(vid)
        if ref is None and not cfg.online:  # not kept: the folder may hold it next time
            return _file_row("skipped", "no_info_json", f"{what}: not in info_json_dir and online is false"), {}, False
        try:
            got = VideoFetcher(cfg, self.run_dir, self.name).fetch(key, ref or WATCH_URL.format(vid), what)
        except TransientError:
            raise
        except PermanentError as err:  # private, removed, unavailable...: the post's row says so
            return _file_row("failed", err.error_type, str(err)[:1000]), {}, True
        if str(got.info.get("id")) != vid:
            log.warning("%s: %s: yt-dlp reports id %r", self.name, key, got.info.get("id"))
        if got.drop is not None:
            reason, detail = got.drop
            file: dict[str, Any] = {"file_status": "skipped", "file_reason": reason, "file_error": detail}
            subtitles = None
        else:
            file, subtitles = got.file, got.subtitles
        row = video_row(got.info, uid=key, source_info=got.source_info, subtitles=subtitles, comments_estimated=None,
                        file=file, counts=True)
        del row["uid"]
        return row, got.counters, True

    # ------------------------------------------------------------------ saved info dicts

    def _saved_refs(self) -> dict[str, str]:
        """Video id -> info json ref (``path`` or ``path#<entry>``) of ``info_json_dir``, listed
        once per worker. Ids come from yt-dlp's file names (``<id>.info.json``, ``<title>
        [<id>].info.json``); other files are opened (playlists give their full entries)."""
        with self._guard:
            if self._saved is not None:
                return self._saved
            found: dict[str, str] = {}
            folder = self.config.info_json_dir
            if folder:
                root = Path(folder).expanduser()
                if not root.is_dir():
                    raise ConfigError(f"{self.name}: config field 'info_json_dir': {root} is not a folder")
                for path in sorted(root.rglob(f"*{INFO_JSON}")):
                    named = _NAMED_ID.search(path.name)
                    if named:
                        found.setdefault(named.group(1) or named.group(2), str(path))
                        continue
                    try:
                        data = orjson.loads(path.read_bytes())
                        refs = info_refs(data, path) if isinstance(data, dict) else []
                    except (OSError, ValueError) as exc:
                        log.warning("%s: skipping unreadable %s: %s", self.name, path, exc)
                        continue
                    for vid, ref in refs:
                        if is_info_json_ref(ref):
                            found.setdefault(vid, ref)
            self._saved = found
            return found

    # ------------------------------------------------------------------ outcomes shared by workers

    def _read_shared(self, vid: str) -> dict[str, Any] | None:
        path = self._shared / f"{vid}.json"
        try:
            row = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:  # a torn or foreign file: fetch again
            log.warning("%s: ignoring %s: %s", self.name, path, exc)
            return None
        return row if isinstance(row, dict) and row.get("file_status") else None

    def _write_shared(self, vid: str, row: dict[str, Any]) -> None:
        try:
            storage.write_bytes(self._shared / f"{vid}.json", orjson.dumps(row))
        except OSError as exc:  # only an optimisation: the row itself is journaled by the runner
            log.warning("%s: cannot share the outcome of %s: %s", self.name, vid, exc)


def linked_video_id(item: dict[str, Any]) -> str | None:
    """The id of the YouTube video an item links to: the first of its ``media_urls``, then its
    ``url``, that is a YouTube video URL; None when none is."""
    candidates = [*(item.get("media_urls") or []), item.get("url")]
    for url in candidates:
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            vid = youtube_video_id(url)
            if vid:
                return vid
    return None


def _file_row(status: str, reason: str, error: str) -> dict[str, Any]:
    """A videos row (without uid) for a video whose metadata could not be had."""
    return {"file_status": status, "file_reason": reason, "file_error": error}
