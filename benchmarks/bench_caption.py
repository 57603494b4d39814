"""Throughput of the caption stage: images/s at batch size 1 against batch size N, side by side.

Run: ``.venv/bin/python benchmarks/bench_caption.py [--size tiny|llava-7b-shaped] [--device auto|cpu|cuda]
[--images 64] [--batch 1,8] [--max-new-tokens 32] [--threads N] [--quick]``

The model is built from a config with random weights (nothing is downloaded):

* ``tiny``: the 2-layer LLaVA-1.5 of tests/tiny_llava.py, saved to a temporary folder and loaded
  by the stage the way a real checkpoint is (the CPU-machine run);
* ``llava-7b-shaped``: LLaVA-1.5-7B's shape (CLIP ViT-L/14-336 tower, 32 Llama layers of width
  4096) built directly on the device in bf16/fp16, never written to disk (for a GPU machine; on
  a CPU it would take ~28 GB and minutes per image).

What is timed is ``CaptionStage.process`` over one shard of 640x480 JPEGs written to a temporary
run folder: decoding, preprocessing, generation, keyword extraction and the output table. Every
image generates exactly ``--max-new-tokens`` tokens (``min_new_tokens`` is pinned to it), so
batch sizes are compared on the same amount of work; random weights would otherwise stop at
arbitrary points. One warm-up batch runs before timing (CUDA kernels, lazy initialisation).
``--quick`` prints ``name: value`` headline lines last.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import tiny_llava  # noqa: E402
from blift import tables  # noqa: E402
from blift.models import devices  # noqa: E402
from blift.models.captioner import LlavaCaptioner  # noqa: E402
from blift.stage import ShardInput  # noqa: E402
from blift.stages.caption import CaptionConfig, CaptionStage  # noqa: E402

SHARD = "part-00000"


def make_images(run: Path, n: int, seed: int = 0) -> None:
    """``n`` 640x480 JPEGs (gradient, shapes, noise patch) and their media rows in ``run``."""
    rng = np.random.default_rng(seed)
    folder = run / "media_files"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        base = np.tile(np.linspace(0, 255, 640, dtype=np.float32), (480, 1))
        rgb = np.stack([base, base[::-1], np.full_like(base, rng.uniform(0, 255))], axis=-1).astype(np.uint8)
        img = Image.fromarray(rgb)
        draw = ImageDraw.Draw(img)
        for _ in range(5):
            x, y = rng.integers(0, 560), rng.integers(0, 400)
            draw.ellipse((x, y, x + 80, y + 80), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        img.save(folder / f"img{i}.jpg", quality=90)
        rows.append({"uid": f"reddit:b{i}", "index": 0, "url": f"http://127.0.0.1/{i}", "status": "ok",
                     "path": f"media_files/img{i}.jpg", "mime": "image/jpeg"})
    tables.write_rows(run / "media" / f"{SHARD}.parquet", rows, "media")


def build_captioner(size: str, device: str, max_new_tokens: int, tmp: Path) -> tuple[LlavaCaptioner, str]:
    if size == "tiny":
        folder = tiny_llava.build_tiny(tmp / "tiny-llava", "llava")
        captioner = LlavaCaptioner(str(folder), device=device, max_new_tokens=max_new_tokens)
        return captioner, str(folder)
    dev = devices.pick_device(device)
    dtype = devices.dtype_name("auto", dev)
    if dev == "cpu":
        print("warning: a 7B-shaped model on the CPU needs ~28 GB and minutes per image", file=sys.stderr)
    t0 = time.perf_counter()
    model, processor = tiny_llava.llava_7b_shaped(dev, devices.torch_dtype(dtype))
    print(f"built LLaVA-7B-shaped model ({sum(p.numel() for p in model.parameters()) / 1e9:.2f} B params) "
          f"on {dev} in {dtype} in {time.perf_counter() - t0:.1f}s")
    name = "llava-7b-shaped(random)"
    return LlavaCaptioner(name, max_new_tokens=max_new_tokens, model_obj=model, processor=processor), name


def run_once(captioner: LlavaCaptioner, name: str, run: Path, batch: int, max_new_tokens: int) -> dict[str, Any]:
    shard = ShardInput(SHARD, {"media": tables.read_shard(run / "media" / f"{SHARD}.parquet", "media"),
                               "scenes": tables.read_shard(run / "scenes" / f"{SHARD}.parquet", "scenes")}, run)
    stage = CaptionStage(CaptionConfig(model=name, batch_size=batch, max_new_tokens=max_new_tokens), run)
    stage.captioner = captioner  # one loaded model for every batch size
    sync = _sync(captioner)
    sync()
    t0 = time.perf_counter()
    result = stage.process(shard)
    sync()
    seconds = time.perf_counter() - t0
    n = result.tables["captions"].num_rows
    return {"batch": batch, "images": n, "errors": len(result.errors), "seconds": seconds, "images_per_s": n / seconds,
            "tokens_per_s": n * max_new_tokens / seconds}


def _sync(captioner: LlavaCaptioner):
    import torch

    if captioner.device.startswith("cuda"):
        return torch.cuda.synchronize
    return lambda: None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=["tiny", "llava-7b-shaped"], default="tiny")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    ap.add_argument("--images", type=int, default=None, help="images in the shard (default 64; 16 with --quick)")
    ap.add_argument("--batch", default="1,8", help="comma-separated batch sizes; the first is the baseline")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's choice, one per core); on a loaded machine 1 can be "
                         "much faster for small models, because idle OpenMP threads spin")
    ap.add_argument("--quick", action="store_true", help="fewer images; headline `name: value` lines last")
    args = ap.parse_args()
    n_images = args.images or (16 if args.quick else 64)
    batches = [int(b) for b in args.batch.split(",")]

    import torch

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        run = tmp / "run"
        make_images(run, n_images)
        tables.write_rows(run / "scenes" / f"{SHARD}.parquet", [], "scenes")
        captioner, name = build_captioner(args.size, args.device, args.max_new_tokens, tmp)
        captioner.generation.min_new_tokens = args.max_new_tokens  # same work per image at every batch size
        print(captioner.describe())
        warm = max(batches)
        captioner.caption([Image.new("RGB", (640, 480), "grey")] * min(warm, n_images), "warm up")
        if captioner.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        results = []
        for batch in batches:
            if captioner.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            res = run_once(captioner, name, run, batch, args.max_new_tokens)
            res["peak_gb"] = torch.cuda.max_memory_allocated() / 1e9 if captioner.device.startswith("cuda") else None
            results.append(res)

    base = results[0]["images_per_s"]
    print(f"\ncaption stage, {args.size}, {n_images} images 640x480 JPEG, {args.max_new_tokens} new tokens each, "
          f"{devices.describe(captioner.device, captioner.dtype)}, {torch.get_num_threads()} CPU thread(s)")
    print("| batch | images | errors | seconds | images/s | new tokens/s | speed-up | peak GPU GB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        peak = f"{r['peak_gb']:.1f}" if r["peak_gb"] is not None else "-"
        print(f"| {r['batch']} | {r['images']} | {r['errors']} | {r['seconds']:.2f} | {r['images_per_s']:.2f} | "
              f"{r['tokens_per_s']:.0f} | {r['images_per_s'] / base:.2f}x | {peak} |")
    if args.quick:
        tag = f"caption_{args.size.replace('-', '_')}_{captioner.device.split(':')[0]}"
        for r in results:
            print(f"{tag}_b{r['batch']}_images_per_s: {r['images_per_s']:.2f}")
        print(f"{tag}_batch_speedup: {results[-1]['images_per_s'] / base:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
