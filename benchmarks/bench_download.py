"""Image download: ``media.download`` vs img2dataset on the same loopback server and URL list.

Images: ``--images`` synthetic JPEGs (85%) and PNGs (15%) of 20-200 KB (gradients, shapes and
noise; a fixed seed), served from memory by a threaded HTTP/1.1 server in its own process
(keep-alive allowed, TCP_NODELAY, listen backlog 1024, no logging). Both tools get the same URL
list, the same concurrency (``--threads``, one process) and no resizing:

ours          ``blift run`` of ``media.download`` only (``--workers 1``, ``threads: N``,
              ``per_host_rps: 0``, ``allow_private_addresses: true``, ``retries: 0``) on items a
              ``table.read`` of the URL CSV made first (one bucket: one shard; not timed). Per
              image: fetch (requests, keep-alive), sniff, header size check, Pillow verify and full
              decode, sha256, content-addressed file write; then the ``media`` Parquet shard.
img2dataset   its CLI from a separate venv (``.bench-venv``): ``--processes_count 1
              --thread_count N --resize_mode no --skip_reencode True --output_format files
              --extract_exif False --retries 0``. Per image: urllib fetch (a new connection
              each), OpenCV decode, sha256; JPEGs written as fetched, PNGs re-encoded to JPEG
              (img2dataset's output is one format); then a .jpg + .json + .txt per image and a
              Parquet of the shard.
img2dataset   the same with ``--disable_all_reencoding True``: bytes written as fetched, no
(no decode)   decode at all (so no check that an image is whole); its fastest setting.

Every run is a child process (start-up included) in a fresh output folder; the runs go
interleaved and the table shows the median of ``--repeats``. CPU is user+sys of the child's
process tree (RUSAGE_CHILDREN, every descendant waited for); the server's own CPU is read from
its process and shown apart. Before the runs a plain client (``http.client``, N threads, no
decode, nothing written) measures what the server can deliver, so a tool far below that rate is
not waiting on the server. After them each tool runs once on ``--threads`` images: its fixed
cost (interpreter, imports, worker start, output files), taken off to give the rate after
start-up. img2dataset runs with ``NO_ALBUMENTATIONS_UPDATE=1``: otherwise albumentations asks
PyPI for a newer version in each of its processes at import (seconds each here).

    .venv/bin/python benchmarks/bench_download.py             # 3,000 images, 16 threads, 3 repeats
    .venv/bin/python benchmarks/bench_download.py --quick     # 300 images, 1 repeat, <1 min

Set it up once: ``python3 -m venv .bench-venv && .bench-venv/bin/pip install img2dataset``
(``--img2dataset PATH`` names another executable).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ENV = {"SOURCE_DATE_EPOCH": "1732406400", "BLIFT_AUTHOR_SALT": "bench", "PYTHONPATH": str(ROOT),
       "HF_HUB_OFFLINE": "1", "NO_PROXY": "*", "no_proxy": "*"}


# ------------------------------------------------------------------------------------ the images


def make_image(i: int, seed: int) -> tuple[bytes, str]:
    """Image ``i``: (bytes, extension); 20-200 KB, the same bytes every time."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng([seed, i])
    png = rng.random() < 0.15
    w, h = (int(rng.integers(240, 480)), int(rng.integers(180, 360))) if png else \
        (int(rng.integers(400, 1024)), int(rng.integers(300, 800)))
    noise = float(rng.uniform(2, 14 if png else 30))
    for _ in range(6):
        x = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
        y = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
        c0, cx, cy = (rng.uniform(0, 255, 3).astype(np.float32) for _ in range(3))
        img = c0 * (1 - x) * (1 - y) + cx * x + cy * y * (1 - x)
        img = img + rng.normal(0, noise, (h, w, 3)).astype(np.float32)
        pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(pil)
        for _ in range(int(rng.integers(2, 8))):
            x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
            box = [x0, y0, x0 + int(rng.integers(10, w // 2)), y0 + int(rng.integers(10, h // 2))]
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
        buf = io.BytesIO()
        if png:
            pil.quantize(int(rng.integers(32, 256))).save(buf, "PNG") if rng.random() < 0.5 else pil.save(buf, "PNG")
        else:
            pil.save(buf, "JPEG", quality=int(rng.integers(75, 93)))
        size = buf.tell()
        if size > 200_000:
            w, h, noise = int(w * 0.8), int(h * 0.8), noise * 0.8
        elif size < 20_000:
            noise, w, h = noise * 1.8 + 2, int(w * 1.15), int(h * 1.15)
        else:
            break
    return buf.getvalue(), "png" if png else "jpg"


def _make_one(job: tuple[Path, int, int]) -> str:
    folder, i, seed = job
    data, ext = make_image(i, seed)
    tmp = folder / f".{i:06d}.tmp"
    tmp.write_bytes(data)
    tmp.rename(folder / f"{i:06d}.{ext}")
    return f"{i:06d}.{ext}"


def make_images(folder: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` image files in ``folder`` (reused when there; made on every core); their names."""
    from concurrent.futures import ProcessPoolExecutor

    folder.mkdir(parents=True, exist_ok=True)
    have = {p.name.split(".")[0]: p.name for p in folder.iterdir() if not p.name.startswith(".")}
    todo = [(folder, i, seed) for i in range(n) if f"{i:06d}" not in have]
    if todo:
        t0 = time.perf_counter()
        with ProcessPoolExecutor() as pool:
            for name in pool.map(_make_one, todo, chunksize=16):
                have[name.split(".")[0]] = name
        print(f"# generated {len(todo)} images in {time.perf_counter() - t0:.1f}s: {folder}", flush=True)
    return [have[f"{i:06d}"] for i in range(n)]


# ------------------------------------------------------------------------------------ the server


def serve(folder: str) -> None:
    """Serve every file of ``folder`` from memory at ``/<name>`` until killed; prints the port."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    files = {f"/{p.name}": p.read_bytes() for p in Path(folder).iterdir()}
    types = {"jpg": b"image/jpeg", "png": b"image/png"}
    replies = {path: b"HTTP/1.1 200 OK\r\nContent-Type: " + types[path.rsplit(".", 1)[1]] +
               b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body for path, body in files.items()}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_GET(self) -> None:  # noqa: N802
            reply = replies.get(self.path)
            if reply is None:
                self.send_error(404)
                return
            if self.headers.get("Connection", "").lower() == "close":
                self.close_connection = True
            self.wfile.write(reply)  # status line, headers and body in one write

        def log_message(self, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 1024

        def handle_error(self, request: object, client_address: object) -> None:
            pass

    httpd = Server(("127.0.0.1", 0), Handler)
    print(httpd.server_address[1], flush=True)
    httpd.serve_forever(poll_interval=0.5)


def start_server(folder: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    return proc, port


def plain_client(urls_file: str, threads: int, keep_alive: bool) -> None:
    """Fetch every URL with ``threads`` threads, read the body, keep nothing: the server's rate."""
    import http.client
    from urllib.parse import urlsplit

    urls = Path(urls_file).read_text().split()
    parts = [urlsplit(u) for u in urls]
    lock, nbytes, it = threading.Lock(), [0], iter(parts)

    def work() -> None:
        conn = None
        while True:
            with lock:
                u = next(it, None)
            if u is None:
                break
            if conn is None:
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
            conn.request("GET", u.path, headers={} if keep_alive else {"Connection": "close"})
            body = conn.getresponse().read()
            with lock:
                nbytes[0] += len(body)
            if not keep_alive:
                conn.close()
                conn = None

    t0 = time.perf_counter()
    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    print(json.dumps({"images": len(urls), "bytes": nbytes[0], "seconds": time.perf_counter() - t0}))


# ------------------------------------------------------------------------------------ the runs


def run_child(cmd: list[str], env: dict[str, str], log: Path, server: object) -> dict:
    """Run ``cmd`` to its end: wall, CPU of its tree, peak RSS of its tree, the server's CPU."""
    import psutil

    load = os.getloadavg()[0]
    srv = server.cpu_times()  # type: ignore[attr-defined]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    top = psutil.Process(proc.pid)
    peak, tree, listed = 0, [top], 0.0
    while proc.poll() is None:
        now = time.perf_counter()
        if now - listed > 0.5:  # listing descendants scans /proc: twice a second, not every sample
            try:
                tree, listed = [top, *top.children(recursive=True)], now
            except psutil.Error:
                pass
        rss = 0
        for p in tree:
            try:
                rss += p.memory_info().rss
            except psutil.Error:
                pass
        peak = max(peak, rss)
        time.sleep(0.1)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    srv2 = server.cpu_times()  # type: ignore[attr-defined]
    if proc.returncode:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{log.read_text()[-3000:]}")
    return {"seconds": wall, "cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
            "server_cpu_s": (srv2.user + srv2.system) - (srv.user + srv.system), "rss_mb": peak / 2**20,
            "load": load}


def blift_pipeline(work: Path, csv: Path, threads: int) -> Path:
    import yaml

    pipe = {"name": "bench-download", "stages": [
        {"stage": "table.read", "requests": [{"path": str(csv)}],
         "config": {"platform": "bench", "columns": {"id": "id", "media": "url"}, "buckets": 1}},
        {"stage": "media.download", "config": {"threads": threads, "per_host_rps": 0, "retries": 0,
                                               "allow_private_addresses": True}},
    ]}
    path = work / "pipe.yaml"
    path.write_text(yaml.safe_dump(pipe, sort_keys=False))
    return path


def run_ours(csv: Path, n: int, threads: int, tmp: Path, server: object) -> dict:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    work = Path(tempfile.mkdtemp(prefix="ours-", dir=tmp))
    pipe = blift_pipeline(work, csv, threads)
    env = {**os.environ, **ENV}
    base = [sys.executable, "-m", "blift.cli", "run", str(pipe), "--out", str(work / "run"), "--no-progress"]
    prep = subprocess.run(base + ["--stage", "table.read"], env=env, cwd=ROOT, capture_output=True, text=True)
    if prep.returncode:
        sys.exit(f"table.read failed:\n{prep.stderr[-3000:]}")
    r = run_child(base + ["--stage", "media.download", "--workers", "1"], env, work / "log.txt", server)
    media = pq.read_table(work / "run" / "media", columns=["status"])
    ok = int(pc.sum(pc.equal(media["status"], "ok")).as_py() or 0)
    if ok != n:
        sys.exit(f"blift: {ok} of {n} images ok; log: {(work / 'log.txt').read_text()[-2000:]}")
    r["images"] = ok
    shutil.rmtree(work, ignore_errors=True)
    return r


def run_img2dataset(exe: str, csv: Path, n: int, threads: int, tmp: Path, server: object, decode: bool) -> dict:
    work = Path(tempfile.mkdtemp(prefix="i2d-", dir=tmp))
    cmd = [exe, "--url_list", str(csv), "--input_format", "csv", "--url_col", "url",
           "--output_folder", str(work / "out"), "--processes_count", "1", "--thread_count", str(threads),
           "--resize_mode", "no", "--output_format", "files", "--extract_exif", "False", "--retries", "0",
           "--number_sample_per_shard", str(max(n, 10_000)), "--enable_wandb", "False"]
    cmd += ["--skip_reencode", "True"] if decode else ["--disable_all_reencoding", "True"]
    # albumentations (imported by img2dataset in every process) asks PyPI for a newer version on
    # import: seconds of network wait per process where PyPI is reachable, forever where it is not.
    env = {**os.environ, "NO_PROXY": "*", "no_proxy": "*", "NO_ALBUMENTATIONS_UPDATE": "1"}
    env.pop("PYTHONPATH", None)
    r = run_child(cmd, env, work / "log.txt", server)
    stats = [json.loads(p.read_text()) for p in (work / "out").glob("*_stats.json")]
    ok = sum(s.get("successes", 0) for s in stats)
    if ok != n:
        sys.exit(f"img2dataset: {ok} of {n} images ok ({stats}); log: {(work / 'log.txt').read_text()[-2000:]}")
    r["images"] = ok
    shutil.rmtree(work, ignore_errors=True)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=None, help="images (default 3,000; --quick 300)")
    ap.add_argument("--threads", type=int, default=16, help="concurrent downloads, one process (both tools)")
    ap.add_argument("--repeats", type=int, default=None, help="runs of each, interleaved (default 3; --quick 1)")
    ap.add_argument("--img2dataset", default=str(ROOT / ".bench-venv" / "bin" / "img2dataset"))
    ap.add_argument("--data", type=Path, default=None,
                    help="keep the generated images here and reuse them (default: a temporary folder, removed)")
    ap.add_argument("--tmp", type=Path, default=None, help="where outputs go (default: TMPDIR)")
    ap.add_argument("--quick", action="store_true", help="300 images, one run each: under a minute")
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--plain-client", nargs=3, metavar=("URLS", "THREADS", "KEEPALIVE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve)
        return
    if args.plain_client:
        urls, threads, keep = args.plain_client
        plain_client(urls, int(threads), keep == "1")
        return
    import psutil

    n = args.images or (300 if args.quick else 3000)
    repeats = args.repeats or (1 if args.quick else 3)
    if not Path(args.img2dataset).exists():
        sys.exit(f"no img2dataset at {args.img2dataset}: python3 -m venv .bench-venv && "
                 ".bench-venv/bin/pip install img2dataset")
    tmp = Path(tempfile.mkdtemp(prefix="bench-download-", dir=args.tmp))
    server = None
    try:
        folder = (args.data or tmp / "data") / f"images-{n}"
        names = make_images(folder, n)
        sizes = sorted(f.stat().st_size for f in folder.iterdir())
        server, port = start_server(folder)
        urls = [f"http://127.0.0.1:{port}/{name}" for name in names]
        csv, small = tmp / "urls.csv", tmp / "urls-startup.csv"
        csv.write_text("id,url\n" + "".join(f"{i},{u}\n" for i, u in enumerate(urls)))
        small.write_text("id,url\n" + "".join(f"{i},{u}\n" for i, u in enumerate(urls[:args.threads])))
        (tmp / "urls.txt").write_text("\n".join(urls))
        srv = psutil.Process(server.pid)
        load = os.getloadavg()
        pngs = sum(name.endswith(".png") for name in names)
        print(f"# cpus={os.cpu_count()} load={load[0]:.2f},{load[1]:.2f},{load[2]:.2f} python={sys.version.split()[0]} "
              f"images={n} ({pngs} PNG) KB min/median/max={sizes[0] / 1e3:.0f}/{sizes[len(sizes) // 2] / 1e3:.0f}/"
              f"{sizes[-1] / 1e3:.0f} total={sum(sizes) / 2**20:.0f} MiB threads={args.threads} repeats={repeats}",
              flush=True)

        # What the server delivers to a client that does nothing else (same threads, same machine).
        for keep in (True, False):
            cpu0 = srv.cpu_times()
            out = subprocess.run([sys.executable, __file__, "--plain-client", str(tmp / "urls.txt"),
                                  str(args.threads), "1" if keep else "0"], capture_output=True, text=True, check=True)
            cpu1 = srv.cpu_times()
            res = json.loads(out.stdout.strip().splitlines()[-1])
            server_cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
            print(f"# server alone, plain client ({'keep-alive' if keep else 'new connection per image'}): "
                  f"{res['images'] / res['seconds']:,.0f} images/s, "
                  f"{res['bytes'] / res['seconds'] / 2**20:,.0f} MiB/s, "
                  f"server CPU {server_cpu / res['seconds']:.2f} cores", flush=True)

        print(f"{'impl':24s} {'images':>6s} {'seconds':>8s} {'images/s':>9s} {'CPU s':>7s} {'CPU s/1000':>10s} "
              f"{'server CPU s':>12s} {'RSS MB':>7s} {'load':>5s}", flush=True)
        impls = ["ours", "img2dataset", "img2dataset (no decode)"]

        def show(impl: str, r: dict) -> None:
            k = r["images"]
            print(f"{impl:24s} {k:6d} {r['seconds']:8.2f} {k / r['seconds']:9.1f} {r['cpu_s']:7.1f} "
                  f"{r['cpu_s'] / k * 1000:10.2f} {r['server_cpu_s']:12.1f} {r['rss_mb']:7.0f} {r['load']:5.2f}",
                  flush=True)

        results: dict[str, list[dict]] = {k: [] for k in impls}
        for _ in range(repeats):
            for impl in impls:
                if impl == "ours":
                    r = run_ours(csv, n, args.threads, tmp, srv)
                else:
                    r = run_img2dataset(args.img2dataset, csv, n, args.threads, tmp, srv, decode=impl == "img2dataset")
                results[impl].append(r)
                show(impl, r)
        # The fixed cost: each tool once on as many images as threads (one round of downloads).
        startup: dict[str, dict] = {}
        for impl in impls:
            k = args.threads
            startup[impl] = r = (run_ours(small, k, args.threads, tmp, srv) if impl == "ours" else
                                 run_img2dataset(args.img2dataset, small, k, args.threads, tmp, srv,
                                                 decode=impl == "img2dataset"))
            show(f"{impl}, start-up", r)
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    def med(impl: str, key: str) -> float:
        return statistics.median(r[key] for r in results[impl])

    print(f"\n# median of {repeats}; {n} images, {args.threads} threads, one process; wall time of the whole child")
    print("| impl | images/s | CPU s per 1000 images (tool's process tree) | server CPU s per 1000 | peak RSS MB "
          f"| start-up run ({args.threads} images) s, CPU s | images/s after start-up "
          "| CPU s per 1000 after start-up |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for impl in impls:
        s0 = startup[impl]
        k = n - s0["images"]
        print(f"| {impl} | {n / med(impl, 'seconds'):,.1f} | {med(impl, 'cpu_s') / n * 1000:.2f} | "
              f"{med(impl, 'server_cpu_s') / n * 1000:.2f} | {med(impl, 'rss_mb'):,.0f} | "
              f"{s0['seconds']:.1f}, {s0['cpu_s']:.1f} | {k / (med(impl, 'seconds') - s0['seconds']):,.1f} | "
              f"{(med(impl, 'cpu_s') - s0['cpu_s']) / k * 1000:.2f} |")
    ours, theirs = n / med("ours", "seconds"), n / med("img2dataset", "seconds")
    print(f"# ours vs img2dataset (decoding): {ours / theirs:.2f}x images/s, "
          f"{med('ours', 'cpu_s') / med('img2dataset', 'cpu_s'):.2f}x CPU")
    print(f"download_images_per_s: {ours:.1f}")
    print(f"img2dataset_images_per_s: {theirs:.1f}")
    print(f"download_cpu_s_per_1000: {med('ours', 'cpu_s') / n * 1000:.2f}")
    print(f"img2dataset_cpu_s_per_1000: {med('img2dataset', 'cpu_s') / n * 1000:.2f}")


if __name__ == "__main__":
    main()
