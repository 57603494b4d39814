"""openai-whisper (the PyTorch reference implementation) behind the ``Transcriber`` interface.

Use it to reproduce results made with the reference code, or to run a ``.pt`` checkpoint that
has no CTranslate2 conversion. It has no VAD filter: the ``vad`` option is ignored (logged).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from blift.errors import ConfigError
from blift.models import devices
from blift.models.transcriber import (
    SAMPLE_RATE,
    Segment,
    Transcriber,
    TranscriberOptions,
    Transcript,
    Word,
    load_audio,
    resolve_openai_whisper_model,
)

log = logging.getLogger(__name__)


class OpenAIWhisperTranscriber(Transcriber):
    backend: ClassVar[str] = "openai-whisper"

    def __init__(self, options: TranscriberOptions) -> None:
        super().__init__(options)
        import torch
        import whisper

        self.device = devices.pick_device(options.device, where="asr: device")
        self.fp16 = self.device.startswith("cuda")  # half precision only on GPU (CPU would warn and fall back)
        self.compute_type = "float16" if self.fp16 else "float32"
        if options.cpu_threads > 0:
            torch.set_num_threads(options.cpu_threads)
        resolved = resolve_openai_whisper_model(options)
        self.model_source = resolved.source
        self.model_origin = resolved.origin
        try:
            self.model = whisper.load_model(resolved.source, device=self.device, download_root=options.download_root)
        except (RuntimeError, ValueError, OSError, KeyError, TypeError) as exc:
            raise ConfigError(f"asr: openai-whisper could not load model {options.model!r} from "
                              f"{resolved.source} ({resolved.origin}): {type(exc).__name__}: {exc}") from None
        if options.vad:
            log.info("openai-whisper has no VAD filter; vad: true is ignored for this backend")
        log.info("openai-whisper: model %s from %s (%s) on %s, fp16=%s",
                 options.model, resolved.source, resolved.origin, self.device, self.fp16)

    def languages(self) -> tuple[str, ...]:
        import whisper

        return tuple(whisper.tokenizer.LANGUAGES) if self.model.is_multilingual else ("en",)

    def transcribe(self, audio_path: str | Path | np.ndarray, language: str | None = None) -> Transcript:
        import whisper

        audio = audio_path if isinstance(audio_path, np.ndarray) else load_audio(audio_path)
        duration = len(audio) / SAMPLE_RATE
        if len(audio) == 0:
            return Transcript(language=language, language_probability=None, duration_s=0.0)
        probability = 1.0
        if language is None:
            if self.model.is_multilingual:
                language, probability = self._detect_language(audio)
            else:
                language = "en"
        opts = self.options
        decode: dict[str, Any] = {"beam_size": opts.beam_size} if opts.beam_size > 1 else {}
        result = whisper.transcribe(
            self.model,
            audio,
            verbose=None,  # no printing, no progress bar
            language=language,
            fp16=self.fp16,
            word_timestamps=opts.word_timestamps,
            **decode,
        )
        segments = tuple(seg for seg in (_segment(s) for s in result["segments"]) if seg.text)
        return Transcript(
            language=result.get("language") or language,
            language_probability=probability,
            duration_s=duration,
            segments=segments,
        )

    def _detect_language(self, audio: np.ndarray) -> tuple[str, float]:
        """Whisper's own detection on the first 30 s (what ``whisper.transcribe`` does inside,
        but keeping the probability, which it throws away)."""
        import torch
        import whisper

        mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(audio[: whisper.audio.N_SAMPLES]), self.model.dims.n_mels)
        mel = mel.to(self.model.device).to(torch.float16 if self.fp16 else torch.float32)
        with torch.no_grad():
            _, probs = self.model.detect_language(mel)
        language = max(probs, key=probs.get)
        return language, float(probs[language])


def _segment(s: dict[str, Any]) -> Segment:
    words = tuple(
        Word(start=float(w["start"]), end=float(w["end"]), word=str(w["word"]).strip(),
             probability=float(w["probability"]))
        for w in s.get("words") or ()
    )
    return Segment(
        start=float(s["start"]),
        end=float(s["end"]),
        text=str(s["text"]).strip(),
        avg_logprob=float(s["avg_logprob"]),
        no_speech_prob=float(s["no_speech_prob"]),
        words=words,
    )
