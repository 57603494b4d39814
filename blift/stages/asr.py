"""The ``asr`` stage: what is said in each video, segment by segment, with word timestamps.

One record per item uid (its media rows). Every downloaded video or audio file gets one
``transcripts`` row: ``ok`` with segments, ``no_audio`` when the file has no audio track (a
silent video is data, not an error) or ``no_speech`` when the VAD/decoder found none. Images and
media that were not downloaded are counted and skipped. A file whose audio cannot be decoded is a
permanent error of its record.

The backend sits behind :class:`~blift.models.transcriber.Transcriber`; the model loads once per
worker in :meth:`AsrStage.setup`.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from blift.errors import PermanentError
from blift.models.transcriber import (
    AudioDecodeError,
    NoAudioStream,
    Transcriber,
    TranscriberOptions,
    Transcript,
    load_transcriber,
)
from blift.stage import RecordOutput, RecordStage, ShardInput, StageConfig, run_file
from blift.storage import RunPath

log = logging.getLogger(__name__)

_PACKAGES = {"faster-whisper": ("faster-whisper", "ctranslate2"), "openai-whisper": ("openai-whisper", "torch")}


class AsrConfig(StageConfig, TranscriberOptions):
    """Settings of the asr stage (keys of the pipeline YAML): the transcriber's options plus the
    backend that runs them and the language to force."""

    model_config = ConfigDict(extra="forbid", frozen=False)

    backend: Literal["faster-whisper", "openai-whisper"] = "faster-whisper"
    language: str | None = Field(None, description="language code to force (e.g. 'en'); null: detect per file")

    def options(self) -> TranscriberOptions:
        return TranscriberOptions(**self.model_dump(include=set(TranscriberOptions.model_fields)))


def is_audio_visual(mime: str | None) -> bool:
    return str(mime or "").startswith(("video/", "audio/"))


class AsrStage(RecordStage):
    """Whisper transcripts of every downloaded video (and audio) file."""

    name: ClassVar[str] = "asr"
    version: ClassVar[int] = 1
    inputs: ClassVar[dict[str, str]] = {"media": "media"}
    outputs: ClassVar[dict[str, str]] = {"transcripts": "transcripts"}
    Config: ClassVar[type[StageConfig]] = AsrConfig
    resources: ClassVar[str] = "gpu"

    config: AsrConfig

    def __init__(self, config: StageConfig, run_dir: RunPath) -> None:
        super().__init__(config, run_dir)
        self.transcriber: Transcriber | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Executors may ship the stage to another process: send the config, never the model."""
        return {"config": self.config, "run_dir": self.run_dir}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"], state["run_dir"])  # type: ignore[misc]

    # ------------------------------------------------------------------ lifecycle

    def setup(self) -> None:
        """Load the model once per worker; a model that cannot be found is a ConfigError."""
        if self.transcriber is None:
            transcriber = load_transcriber(self.config.backend, self.config.options())
            transcriber.check_language(self.config.language)
            self.transcriber = transcriber
            log.info("%s", self.describe())

    def describe(self) -> str:
        cfg = self.config
        where = self.transcriber.describe() if self.transcriber else f"{cfg.backend} {cfg.model} on {cfg.device}"
        vad = "VAD on" if cfg.vad and cfg.backend == "faster-whisper" else "no VAD"
        return (f"{self.name}: {where}, beam {cfg.beam_size}, batch {cfg.batch_size}, {vad}, "
                f"language {cfg.language or 'detected'}")

    def threads(self) -> int:
        return 1  # one model per worker; the backend uses its own threads

    @classmethod
    def fingerprint(cls, config: StageConfig) -> dict[str, Any]:
        """The library versions and, for a local model, its files' sizes and mtimes: a new
        checkpoint under the same path, or a new decoder, redoes the shards."""
        assert isinstance(config, AsrConfig)
        versions: dict[str, str | None] = {}
        for pkg in _PACKAGES[config.backend]:
            try:
                versions[pkg] = importlib.metadata.version(pkg)
            except importlib.metadata.PackageNotFoundError:
                versions[pkg] = None
        out: dict[str, Any] = {"packages": versions}
        path = Path(config.model).expanduser()
        if path.exists():
            files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
            out["model_files"] = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]
        return out

    # ------------------------------------------------------------------ records

    def records(self, shard: ShardInput) -> list[tuple[str, Any]]:
        """One record per item uid: its media rows in index order (first appearance order)."""
        by_uid: dict[str, list[dict[str, Any]]] = {}
        for row in shard.rows("media"):
            by_uid.setdefault(row["uid"], []).append(row)
        return [(uid, sorted(rows, key=lambda r: r["index"])) for uid, rows in by_uid.items()]

    def process_record(self, key: str, payload: Any) -> RecordOutput:
        if self.transcriber is None:
            self.setup()
        counts: Counter[str] = Counter()
        rows: list[dict[str, Any]] = []
        for media in payload:
            if media.get("status") != "ok":
                counts["media_not_ok"] += 1  # the download stage accounts for these
                continue
            if not is_audio_visual(media.get("mime")):
                counts["not_audio_video"] += 1  # images: nothing to transcribe
                continue
            row = self._transcribe(key, media)
            counts[f"status_{row['status']}"] += 1
            counts["audio_ms"] += round(1000 * (row["duration_s"] or 0.0))
            rows.append(row)
        return RecordOutput(tables={"transcripts": rows}, counters=dict(counts))

    def _transcribe(self, uid: str, media: dict[str, Any]) -> dict[str, Any]:
        assert self.transcriber is not None
        where = f"{uid}#{media['index']}"
        if media.get("has_audio") is False:
            return self._row(uid, media, "no_audio", None)
        path = run_file(self.run_dir, media.get("path"), f"{where}: media")
        try:
            transcript = self.transcriber.transcribe(path, language=self.config.language)
        except NoAudioStream:
            return self._row(uid, media, "no_audio", None)  # has_audio was unknown (null)
        except AudioDecodeError as exc:
            raise PermanentError(f"{where}: {exc}", error_type="audio_decode_failed") from None
        return self._row(uid, media, "ok" if transcript.segments else "no_speech", transcript)

    def _row(self, uid: str, media: dict[str, Any], status: str, t: Transcript | None) -> dict[str, Any]:
        assert self.transcriber is not None
        return {
            "uid": uid,
            "media_index": media["index"],
            "status": status,
            "backend": self.transcriber.backend,
            "model": self.config.model,
            "language": t.language if t else None,
            "language_probability": t.language_probability if t else None,
            "duration_s": t.duration_s if t else media.get("duration_s"),
            "text": t.text if t and t.segments else None,
            "segments": [
                {
                    "start_s": s.start,
                    "end_s": s.end,
                    "text": s.text,
                    "avg_logprob": s.avg_logprob,
                    "no_speech_prob": s.no_speech_prob,
                    "words": [
                        {"start_s": w.start, "end_s": w.end, "word": w.word, "probability": w.probability}
                        for w in s.words
                    ],
                }
                for s in (t.segments if t else ())
            ],
        }
