"""Local vs Ray executor on the bundled sample.

    .venv/bin/python benchmarks/bench_executors.py            # sample with both executors (3 runs each)
    .venv/bin/python benchmarks/bench_executors.py --quick    # one run each

Both executors run the same ``blift run pipelines/sample.yaml --no-release`` into fresh run
folders, in turn; Ray starts a local Ray for the run (what a user without a cluster gets), so its
start-up is inside its time. The goal in the issue: Ray at most 2x the local wall time on one
machine. (Cleaning with 1 vs 2 worker processes is measured by ``bench_clean.py``.)
``--quick`` prints ``name: value`` lines last.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLIFT = str(ROOT / ".venv" / "bin" / "blift")
SAMPLE = str(ROOT / "pipelines" / "sample.yaml")


def blift(*args: str) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "BLIFT_AUTHOR_SALT": "bench", "RAY_AUTH_MODE": "disabled"}
    started = time.perf_counter()
    proc = subprocess.run([BLIFT, *args], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode:
        sys.exit(f"blift {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    runs = 1 if args.quick else args.runs

    times: dict[str, list[float]] = {"local": [], "ray": []}
    with tempfile.TemporaryDirectory(prefix="blift-bench-exec-") as tmp_name:
        tmp = Path(tmp_name)
        for r in range(runs):
            for executor in ("local", "ray"):
                out = tmp / f"{executor}-{r}"
                times[executor].append(blift("run", SAMPLE, "--out", str(out), "--no-release", "--no-progress",
                                             "--workers", "2", "--executor", executor))

    local, ray = statistics.median(times["local"]), statistics.median(times["ray"])
    print(f"sample pipeline (no release), 2 workers, median of {runs}")
    print("| executor | wall s | vs local |")
    print("|---|---:|---:|")
    print(f"| local (process pools) | {local:.1f} | 1.00x |")
    print(f"| ray (local Ray started by the run) | {ray:.1f} | {ray / local:.2f}x |")
    print(f"\nsample_local_s: {local:.1f}")
    print(f"sample_ray_s: {ray:.1f}")
    print(f"ray_over_local: {ray / local:.2f}")


if __name__ == "__main__":
    main()
