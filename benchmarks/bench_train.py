"""Training throughput: full fine-tuning vs LoRA through ``blift train``, side by side, then
``blift eval`` on both trained checkpoints against the base.

Usage: ``.venv/bin/python benchmarks/bench_train.py [--size tiny|mid|7b] [--quick] [--steps N]
[--batch N] [--posts N] [--lr-full X] [--lr-lora X] [--max-new-tokens N] [--workers N]
[--threads N] [--out DIR] [--keep DIR]``

The model is built from a config with random weights (nothing is downloaded) and saved to a
temporary folder, so ``blift.train.trainer.train`` loads it like any checkpoint:

* ``tiny`` (the CPU default): the 2-layer LLaVA-1.5 of tests/tiny_llava.py (32 px images).
* ``mid``: a ~0.9 B LLaVA-1.5: CLIP ViT-L/14 at 336 px (576 tokens an image), a 2-layer GELU
  projector, a 16-layer Llama of width 1536 with a 32,064-word vocabulary; built in bf16. Only
  sensible on a GPU (CPU full fine-tuning of it needs ~14 GB and minutes per step).
* ``7b``: LLaVA-1.5-7B's shape (tests/tiny_llava.py ``llava_7b_shaped``), saved in bf16 (14 GB of
  disk). Full fine-tuning keeps fp32 master weights and AdamW state (~16 bytes a parameter): it
  does not fit one 80 GB GPU without DeepSpeed offload, and the table then says ``OOM``.

The data is a real release (``blift.release.writer.release``) of synthetic Reddit image posts
(480x360 JPEGs) and YouTube video posts (8 frames of 224x168 as ``.npy``), each with a behavior
and a content record rendered from the shipped instruction templates, words drawn from the tiny
vocabulary so the loss has something to learn; train and test splits. Training mixes behavior
and content 1:1 (the paper's default), batch 4, ``max_length`` 2048, 2 frames a video (a frame
is an image to LLaVA-1.5: 576 tokens at 336 px), cosine schedule, warmup 3 %, gradient
checkpointing for mid/7b (the recipe's), DataLoader workers 0 for tiny and 4 (the recipe's) else.

Each variant runs in a fresh child process (one for building the model, one per variant, one
for eval), so peak memory is that run's alone and the parent never touches the GPU. Measured:

* ``tokens/s``: non-padding input tokens (image tokens included: what the GPU computes on)
  between the Trainer's ``on_train_begin`` and ``on_train_end`` (model loading, dataset opening
  and the final save excluded; CUDA synchronised at both ends); ``steady``: the same from the end
  of step 1 on (no warm-up, no lazy initialisation);
* ``peak mem``: ``torch.cuda.max_memory_allocated`` on a GPU; on the CPU the child's peak RSS
  (``VmHWM``: includes the ~0.5 GB of torch/transformers imports);
* the loss at the start, middle and end of the run (each the mean over one pass over the data:
  batches differ in kind and size); the whole curve, every result and the eval tables go to
  ``<out>/bench_train.json``, the eval tables also to ``<out>/eval/results.{json,md}``;
* eval: ``blift.eval.run.evaluate`` from an eval config file (like ``blift eval``) on base, full
  and LoRA: behavior records of the test split (generation + reference scoring) and a multiple
  choice and a free-text task file; seconds per record exclude model loading (timed between
  the runner's own log lines for that checkpoint); a one-record warm-up evaluation of the base
  runs first, so the first column does not pay for first-call initialisation.

The tiny model runs its children on one torch thread by default: its matrices are too small to
gain from more, and on a shared 2-core machine spinning OpenMP threads made 2-thread timings
swing by 2-50x between runs (``--threads N`` overrides).

Learning rates: ``tiny`` uses 3e-3 (full) and 1e-2 (LoRA) so a few dozen steps move a random model;
``mid``/``7b`` the paper's 2e-5 for full fine-tuning and LLaVA's LoRA recipe's 2e-4.
``--quick``: 9 train posts, 30 steps, 16-token generations (default 24 posts, 100 steps, 64).
The last lines are ``name: value`` pairs.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import tiny_llava  # noqa: E402

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
SIZES = ("tiny", "mid", "7b")
VARIANTS = ("full", "lora")
NUM_FRAMES = 2
MAX_LENGTH = 2048
LEARNING_RATES = {"tiny": {"full": 3e-3, "lora": 1e-2}, "mid": {"full": 2e-5, "lora": 2e-4},
                  "7b": {"full": 2e-5, "lora": 2e-4}}
# Words the models can learn (the tiny vocabulary; the larger tokenizers pad it with fillers).
WORDS = [w for w in tiny_llava.WORDS if w.isalpha() and w not in ("USER", "ASSISTANT")]


# ------------------------------------------------------------------------------------ data


def _sentence(rng: np.random.Generator, lo: int, hi: int) -> str:
    return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), int(rng.integers(lo, hi))))


def _image(path: Path, rng: np.random.Generator) -> None:
    """A 480x360 JPEG: a colour gradient with a few solid blocks (compresses like a photo)."""
    from PIL import Image

    base = np.linspace(0, 1, 480)[None, :, None] * rng.uniform(60, 255, 3)[None, None, :]
    arr = np.repeat(base, 360, axis=0)
    for _ in range(4):
        y, x = rng.integers(0, 300), rng.integers(0, 400)
        arr[y:y + 60, x:x + 80] = rng.uniform(0, 255, 3)
    arr = np.clip(arr + rng.normal(0, 12, arr.shape), 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path, format="JPEG", quality=85)


def _frames(path: Path, rng: np.random.Generator) -> None:
    """8 frames of 224x168 as uint8 (T,3,H,W), the ``.npy`` layout the release ships."""
    frames = np.empty((8, 3, 168, 224), dtype=np.uint8)
    for t in range(8):
        frames[t] = rng.integers(0, 256, 3, dtype=np.uint8)[:, None, None]
        frames[t, :, 40:120, 20 * t:20 * t + 80] = rng.integers(0, 256, (3, 80, 80), dtype=np.uint8)
    np.save(path, frames)


def _records(uid: str, kind: str, media: str, split: str, rng: np.random.Generator) -> list[dict[str, Any]]:
    """A behavior and a content record for one post, rendered from the shipped templates."""
    from blift.stages.instruct.templates import load_template

    platform = uid.split(":")[0]
    comments = [_sentence(rng, 4, 14) for _ in range(int(rng.integers(2, 5)))]
    scenes = [round(float(v), 2) for v in rng.uniform(0, 1, 3)]
    score, views = int(rng.integers(1, 5000)), int(rng.integers(1000, 10**6))
    likes = int(views * rng.uniform(0.005, 0.08))
    values = {
        "subreddit": "pics", "title": _sentence(rng, 4, 10), "channel": "the channel", "subscribers": 12000,
        "image_description": _sentence(rng, 25, 60), "duration": "42 seconds",
        "video_description": "\n".join(f"Scene {k + 1} (0:{10 * k:02d}-0:{10 * k + 10:02d}): {_sentence(rng, 10, 25)}"
                                       for k in range(3)),
        "score": score, "upvote_ratio": f"{int(rng.integers(60, 100))}%", "num_comments": len(comments) * 7,
        "views": views, "likes": likes, "like_ratio": f"{100 * likes / views:.1f}%",
        "scene_replay": ", ".join(f"Scene {k + 1}: {v:.2f}" for k, v in enumerate(scenes)),
        "most_replayed": ", ".join(str(k + 1) for k in np.argsort(scenes)[::-1]),
        "comments": "\n".join(f"{k}. {c}" for k, c in enumerate(comments, start=1)), "num_listed": len(comments),
    }
    targets = ({"score": score, "upvote_ratio": int(values["upvote_ratio"][:-1]) / 100,
                "num_comments": values["num_comments"], "comments": comments} if platform == "reddit" else
               {"view_count": views, "like_count": likes, "like_ratio": likes / views,
                "num_comments": values["num_comments"], "comments": comments, "scene_replay": scenes,
                "most_replayed_scenes": [int(k) for k in np.argsort(scenes)[::-1]]})
    rows = []
    for task in ("behavior", "content"):
        name = f"{platform}_{kind}_{task}"
        rows.append({"id": f"{uid}:{task}", "uid": uid, "platform": platform, "task": task, "template": name,
                     "template_version": 1, "media_kind": kind, "media": [media],
                     "conversations": load_template(name).render(values),
                     "targets": targets if task == "behavior" else None, "split": split, "collected_at": T0})
    return rows


def make_release(work: Path, posts: int, seed: int = 0) -> dict[str, Any]:
    """A run folder of ``posts`` train posts (2/3 images, 1/3 videos) and ``posts // 2`` test
    posts, released with the real writer. Returns the release path and record counts."""
    from blift import tables
    from blift.ids import author_hash
    from blift.release.writer import release

    rng = np.random.default_rng(seed)
    run = work / "run"
    (run / "media").mkdir(parents=True, exist_ok=True)
    items, instructions = [], []
    for split, n in (("train", posts), ("test", max(posts // 2, 3))):
        for i in range(n):
            kind = "video" if i % 3 == 2 else "image"
            if kind == "image":
                uid, media = f"reddit:{split}{i}", f"media/{split}{i}.jpg"
                _image(run / media, rng)
            else:
                uid, media = f"youtube:{split}{i:03d}xxxxxx", f"media/{split}{i}.npy"
                _frames(run / media, rng)
            platform, item_id = uid.split(":")
            items.append({"uid": uid, "platform": platform, "item_id": item_id, "source": "api", "title": item_id,
                          "community": "pics", "author_hash": author_hash(f"a{split}{i}"), "collected_at": T0,
                          "created_at": T0, "media_kind": kind, "score": 10, "num_comments": 0})
            instructions.extend(_records(uid, kind, media, split, rng))
    tables.write_rows(run / "items_clean" / "part-00000.parquet", items, "items")
    tables.write_rows(run / "comments_clean" / "part-00000.parquet", [], "comments")
    tables.write_rows(run / "instructions" / "part-00000.parquet", instructions, "instructions")
    out = work / "release"
    release(run, out, check=False, check_stats=False)
    counts: dict[str, int] = {}
    for row in instructions:
        key = f"{row['split']}_{row['task']}_{row['media_kind']}"
        counts[key] = counts.get(key, 0) + 1
    chars = [sum(len(t["value"]) for t in r["conversations"]) for r in instructions]
    return {"path": str(out), "counts": counts, "mean_conversation_chars": float(np.mean(chars))}


def write_tasks(folder: Path, n: int, seed: int = 1) -> list[str]:
    """A multiple-choice and a free-text content task file (JSONL) of ``n`` images each."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    options = ["happy", "quiet", "busy", "dark"]
    mc, ft = [], []
    for i in range(n):
        _image(folder / f"q{i}.jpg", rng)
        mc.append({"id": f"e{i}", "image": f"q{i}.jpg", "question": "Which mood does the picture show?",
                   "options": options, "answer": int(rng.integers(0, len(options)))})
        ft.append({"id": f"c{i}", "image": f"q{i}.jpg", "question": "What is in the picture?",
                   "references": [_sentence(rng, 3, 8)]})
    paths = []
    for name, rows in (("mood", mc), ("caption", ft)):
        path = folder / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        paths.append(str(path))
    return paths


# ------------------------------------------------------------------------------------ models


def mid_config() -> Any:
    """A ~0.9 B LLaVA-1.5: LLaVA-7B's CLIP-L/14-336 tower and projector on a 16-layer Llama of
    width 1536 (12 heads of 128), same vocabulary size as LLaVA-1.5."""
    from transformers import LlamaConfig, LlavaConfig

    seven = tiny_llava.llava_7b_config()
    text = LlamaConfig(vocab_size=32064, hidden_size=1536, intermediate_size=4096, num_hidden_layers=16,
                       num_attention_heads=12, num_key_value_heads=12, max_position_embeddings=4096,
                       pad_token_id=0, bos_token_id=2, eos_token_id=3)
    return LlavaConfig(vision_config=seven.vision_config, text_config=text,
                       image_token_index=tiny_llava.vocabulary()["<image>"], vision_feature_select_strategy="default",
                       vision_feature_layer=-2, image_seq_length=576)


def build_model(size: str, folder: str) -> dict[str, Any]:
    """(child) Write a random checkpoint of ``size`` to ``folder``: weights, tokenizer, processor."""
    import torch

    _quiet_child(None)
    started = time.perf_counter()
    path = Path(folder)
    if size == "tiny":
        tiny_llava.build_tiny(path, "llava")
        from transformers import LlavaForConditionalGeneration

        params = sum(p.numel() for p in LlavaForConditionalGeneration.from_pretrained(path).parameters())
        return {"params": params, "seconds": time.perf_counter() - started}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    if size == "7b":
        model, processor = tiny_llava.llava_7b_shaped(device, torch.bfloat16)
    else:
        from transformers import LlavaForConditionalGeneration

        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        try:
            with torch.device(device):
                model = LlavaForConditionalGeneration(mid_config())
        finally:
            torch.set_default_dtype(previous)
        processor = tiny_llava.llava_7b_processor()
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = 3
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return {"params": params, "seconds": time.perf_counter() - started}


# ------------------------------------------------------------------------------------ measuring


def _peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM), MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def _timer() -> Any:
    """A TrainerCallback stamping train begin/end and every step (CUDA synchronised)."""
    import torch
    from transformers import TrainerCallback

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)

    class Timer(TrainerCallback):
        def __init__(self) -> None:
            self.begin: tuple[float, int] | None = None
            self.end: tuple[float, int] | None = None
            self.steps: list[tuple[float, int, int]] = []  # (time, global step, tokens seen)
            self.params: tuple[int, int] = (0, 0)

        def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            from blift.train.models import count_parameters

            if model is not None:
                self.params = count_parameters(model)
            sync()
            self.begin = (time.perf_counter(), int(state.num_input_tokens_seen or 0))

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            sync()
            self.steps.append((time.perf_counter(), state.global_step, int(state.num_input_tokens_seen or 0)))

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            sync()
            self.end = (time.perf_counter(), int(state.num_input_tokens_seen or 0))

    return Timer()


def train_variant(variant: str, settings: dict[str, Any], threads: int | None) -> dict[str, Any]:
    """(child) One ``train()`` run; its timings, memory and losses, or ``error`` (e.g. OOM)."""
    import torch

    from blift.train.config import TrainConfig
    from blift.train.trainer import train

    _quiet_child(threads)
    cuda = torch.cuda.is_available()
    rss_before = _peak_rss_mb()
    timer = _timer()
    called = time.perf_counter()
    try:
        result = train(TrainConfig.model_validate(settings), resume=False, callbacks=[timer])
    except torch.cuda.OutOfMemoryError as exc:
        peak = torch.cuda.max_memory_allocated() / 2**20
        return {"variant": variant, "error": "OOM", "detail": str(exc).splitlines()[0], "peak_mem_mb": peak}
    returned = time.perf_counter()
    assert timer.begin is not None and timer.end is not None
    (t0, tok0), (t1, tok1) = timer.begin, timer.end
    train_s = t1 - t0
    steady = None
    if len(timer.steps) >= 2:
        (ta, _, ka), (tb, _, kb) = timer.steps[0], timer.steps[-1]
        steady = (kb - ka) / max(tb - ta, 1e-9)
    return {
        "variant": variant, "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "precision": result.precision, "trainable_params": timer.params[0], "total_params": timer.params[1],
        "steps": result.global_step, "examples_per_pass": result.examples, "tokens": tok1 - tok0,
        "train_s": train_s, "tokens_per_s": (tok1 - tok0) / max(train_s, 1e-9), "steady_tokens_per_s": steady,
        "tokens_per_step": (tok1 - tok0) / max(result.global_step, 1),
        "setup_s": t0 - called, "save_s": returned - t1, "result_seconds": result.seconds,
        "result_train_tokens": result.train_tokens,
        "peak_mem_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else _peak_rss_mb(),
        "peak_mem_kind": "cuda max_memory_allocated" if cuda else "process peak RSS (VmHWM)",
        "rss_before_mb": rss_before, "losses": result.losses, "dropped": result.dropped,
        "step_times": [[s, round(t - t0, 4), k] for t, s, k in timer.steps],
    }


class _EvalClock(logging.Handler):
    """Times each checkpoint's evaluation from the runner's log lines: its first ``[name] ...``
    line comes after the model is loaded, ``[name] done in`` at the end."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.first: dict[str, float] = {}
        self.done: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        msg, args = record.msg, record.args
        if not isinstance(msg, str) or not msg.startswith("[%s]") or not isinstance(args, tuple) or not args:
            return
        name = str(args[0])
        self.first.setdefault(name, record.created)
        if msg.startswith("[%s] done in"):
            self.done[name] = record.created


def _quiet_child(threads: int | None) -> None:
    """Child process set-up: thread count, warnings only, no weight-loading progress bars."""
    import warnings

    import datasets
    import torch
    from transformers.utils import logging as hf_logging

    if threads:
        torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING)
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation notes, once per child


def eval_checkpoints(config_path: str, threads: int | None, scratch: str) -> dict[str, Any]:
    """(child) ``blift eval`` on the config file; results plus per-checkpoint timings.

    A one-record warm-up run on the first checkpoint goes first (into ``scratch``), so the first
    column does not pay for lazy imports, first-call initialisation and CUDA kernel selection."""
    from blift.eval import run
    from blift.eval.config import load_eval_config

    _quiet_child(threads)
    config = load_eval_config(Path(config_path))
    run.evaluate(config.model_copy(update={"checkpoints": config.checkpoints[:1], "max_records": 1,
                                           "output_dir": scratch}))
    clock = _EvalClock()
    eval_log = logging.getLogger("blift.eval")
    eval_log.setLevel(logging.INFO)
    eval_log.propagate = False  # timed, not printed
    eval_log.addHandler(clock)
    results = run.evaluate(config)
    n_items = (results["data"]["behavior_records"] or 0) + sum(results["data"]["tasks"].values())
    rows = {}
    for name, metrics in results["checkpoints"].items():
        total = results["seconds"][name]
        scored = clock.done[name] - clock.first[name] if name in clock.done and name in clock.first else None
        behavior = metrics.get("behavior", {})
        rows[name] = {
            "total_s": total, "eval_s": scored, "load_s": total - scored if scored is not None else None,
            "items": n_items, "s_per_record": (scored if scored is not None else total) / max(n_items, 1),
            "answer_perplexity": behavior.get("answer_perplexity"),
            "comment_perplexity": (behavior.get("comments") or {}).get("perplexity"),
            "unparsed": behavior.get("unparsed"), "mood_accuracy": (metrics.get("mood") or {}).get("accuracy"),
        }
    return {"rows": rows, "data": results["data"], "results_md": str(Path(config.output_dir) / "results.md")}


def in_child(fn: Any, *args: Any) -> Any:
    """Run ``fn(*args)`` in a fresh spawned process (clean peak memory, no CUDA in the parent)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


# ------------------------------------------------------------------------------------ report


def _fmt(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def loss_window(run: dict[str, Any], batch: int) -> int:
    """Steps averaged per loss figure: one pass over the data (batches differ in kind and size,
    and a pass may end on a short batch), at most a third of the run."""
    return max(1, min(len(run["losses"]) // 3, -(-run["examples_per_pass"] // batch)))


def loss_points(run: dict[str, Any], batch: int) -> tuple[float, float, float]:
    """Mean loss over the first, middle and last ``loss_window`` steps."""
    values = [v for _, v in run["losses"]]
    w = loss_window(run, batch)
    mid = max(0, len(values) // 2 - w // 2)
    return (float(np.mean(values[:w])), float(np.mean(values[mid:mid + w])), float(np.mean(values[-w:])))


def print_tables(size: str, model: dict[str, Any], runs: dict[str, dict[str, Any]], evals: dict[str, Any] | None,
                 steps: int, batch: int) -> None:
    devices = {r["device"] for r in runs.values() if "device" in r}
    mem_label = "peak GPU MB" if devices - {"cpu"} else "peak RSS MB"
    print(f"\ndevice: {', '.join(sorted(devices)) or 'n/a'}")
    print(f"| {size} ({model['params'] / 1e6:,.1f} M params), {steps} steps x batch {batch} | trainable | "
          f"precision | tokens | train s | tokens/s | steady tokens/s | {mem_label} | loss first | loss mid | "
          f"loss last | load s |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    windows = set()
    for name, r in runs.items():
        if "error" in r:
            print(f"| {name} | | | | | {r['error']} | | {_fmt(r.get('peak_mem_mb'), ',.0f')} | | | | |")
            continue
        first, mid, last = loss_points(r, batch)
        windows.add(loss_window(r, batch))
        print(f"| {name} | {r['trainable_params'] / 1e6:,.2f} M | {r['precision']} | {r['tokens']:,} | "
              f"{r['train_s']:.1f} | {r['tokens_per_s']:,.0f} | {_fmt(r['steady_tokens_per_s'], ',.0f')} | "
              f"{r['peak_mem_mb']:,.0f} | {first:.3f} | {mid:.3f} | {last:.3f} | {r['setup_s']:.1f} |")
    if windows:
        window = "/".join(map(str, sorted(windows)))
        print(f"\nloss first/mid/last: mean over {window} step(s) (one pass over the data); "
              "load s: model load, dataset and Trainer set-up before the first step")
    if not evals:
        return
    print()
    print(f"| eval ({next(iter(evals['rows'].values()))['items']} records: behavior test split + 2 task files) | "
          "s/record | eval s | load s | answer ppl | comment ppl | mood acc |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, e in evals["rows"].items():
        print(f"| {name} | {e['s_per_record']:.3f} | {_fmt(e['eval_s'], '.1f')} | {_fmt(e['load_s'], '.1f')} | "
              f"{_fmt(e['answer_perplexity'], ',.1f')} | {_fmt(e['comment_perplexity'], ',.1f')} | "
              f"{_fmt(e['mood_accuracy'], '.2f')} |")


# ------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=SIZES, default="tiny")
    ap.add_argument("--quick", action="store_true", help="fewer posts and steps, short generations")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps per variant (default 100; quick 30)")
    ap.add_argument("--batch", type=int, default=4, help="per-device batch size")
    ap.add_argument("--posts", type=int, default=None, help="train posts (x2 records; default 24; quick 9)")
    ap.add_argument("--lr-full", type=float, default=None)
    ap.add_argument("--lr-lora", type=float, default=None)
    ap.add_argument("--max-new-tokens", type=int, default=None, help="eval generation length (default 64; quick 16)")
    ap.add_argument("--workers", type=int, default=None,
                    help="DataLoader workers (default: 0 for tiny, the recipe's 4 for mid/7b)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads in the children (default: 1 for tiny, torch's choice for mid/7b)")
    ap.add_argument("--out", type=Path, default=None, help="results folder (default runs/bench_train/<size>)")
    ap.add_argument("--keep", type=Path, default=None, help="work (model, release, checkpoints) here and keep it")
    args = ap.parse_args(argv)

    steps = args.steps or (30 if args.quick else 100)
    posts = args.posts or (9 if args.quick else 24)
    max_new = args.max_new_tokens or (16 if args.quick else 64)
    workers = args.workers if args.workers is not None else (0 if args.size == "tiny" else 4)
    threads = args.threads if args.threads is not None else (1 if args.size == "tiny" else None)
    lrs = {"full": args.lr_full or LEARNING_RATES[args.size]["full"],
           "lora": args.lr_lora or LEARNING_RATES[args.size]["lora"]}
    out = args.out or ROOT / "runs" / "bench_train" / args.size
    out.mkdir(parents=True, exist_ok=True)
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-train-"))
    work.mkdir(parents=True, exist_ok=True)
    # Children inherit these: nothing may reach the Hub; caches stay inside the work folder.
    os.environ.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    os.environ.setdefault("HF_HOME", str(work / "hf"))
    try:
        t0 = time.perf_counter()
        data = make_release(work, posts)
        tasks = write_tasks(work / "tasks", n=3 if args.quick else 8)
        print(f"release: {data['counts']} ({data['mean_conversation_chars']:.0f} chars of conversation per record) "
              f"in {time.perf_counter() - t0:.1f} s", flush=True)
        base = work / "model-base"
        model = in_child(build_model, args.size, str(base))
        print(f"model: {args.size}, {model['params'] / 1e6:,.1f} M params, built and saved in "
              f"{model['seconds']:.1f} s", flush=True)

        runs: dict[str, dict[str, Any]] = {}
        for variant in VARIANTS:
            settings = {
                "model": str(base), "data": [{"path": data["path"]}], "output_dir": str(work / f"out-{variant}"),
                "learning_rate": lrs[variant], "max_steps": steps, "per_device_batch_size": args.batch,
                "max_length": MAX_LENGTH, "num_frames": NUM_FRAMES, "logging_steps": 1, "save_steps": steps + 1,
                "dataloader_workers": workers, "gradient_checkpointing": args.size != "tiny", "seed": 0,
                "lora": {"enabled": variant == "lora"},
            }
            try:
                runs[variant] = in_child(train_variant, variant, settings, threads)
            except BrokenProcessPool as exc:  # killed (host OOM): name it, keep going
                runs[variant] = {"variant": variant, "error": "child died", "detail": str(exc)}
            r = runs[variant]
            print(f"train {variant}: " + (r["error"] if "error" in r else
                  f"{r['steps']} steps, {r['tokens']:,} tokens in {r['train_s']:.1f} s"), flush=True)

        checkpoints = [{"name": "base", "path": str(base)}]
        checkpoints += [{"name": f"{v}-ift", "path": str(work / f"out-{v}")}
                        for v in VARIANTS if "error" not in runs[v]]
        eval_config = work / "eval.yaml"
        eval_config.write_text(yaml.safe_dump({
            "checkpoints": checkpoints, "behavior": {"path": data["path"]}, "tasks": tasks,
            "output_dir": str(out / "eval"), "max_new_tokens": max_new, "batch_size": args.batch,
            "num_frames": NUM_FRAMES, "max_length": MAX_LENGTH}))
        print(f"eval: {', '.join(c['name'] for c in checkpoints)} ...", flush=True)
        evals = in_child(eval_checkpoints, str(eval_config), threads, str(work / "eval-warmup"))

        report = {"size": args.size, "model": model, "steps": steps, "batch": args.batch, "learning_rates": lrs,
                  "release": data, "train": runs, "eval": evals,
                  "loss_curves": {v: r.get("losses", []) for v, r in runs.items()}}
        (out / "bench_train.json").write_text(json.dumps(report, indent=2, default=str))
        print_tables(args.size, model, runs, evals, steps, args.batch)
        print(f"\nloss curves, results and eval tables: {out / 'bench_train.json'}, {evals['results_md']}")
        print()
        for v, r in runs.items():
            if "error" in r:
                print(f"{v}_error: {r['error']}")
                continue
            print(f"{v}_tokens_per_s: {r['tokens_per_s']:.0f}")
            if r["steady_tokens_per_s"] is not None:
                print(f"{v}_steady_tokens_per_s: {r['steady_tokens_per_s']:.0f}")
            print(f"{v}_peak_mem_mb: {r['peak_mem_mb']:.0f}")
            first, _, last = loss_points(r, args.batch)
            print(f"{v}_loss_first: {first:.4f}")
            print(f"{v}_loss_last: {last:.4f}")
        for name, e in evals["rows"].items():
            print(f"eval_{name.replace('-', '_')}_s_per_record: {e['s_per_record']:.4f}")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
