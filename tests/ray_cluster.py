"""One Ray head per test session, on loopback, with logical GPUs (pytest fixture module).

``--num-gpus 2`` on a CPU machine makes Ray schedule GPU actors and pin CUDA_VISIBLE_DEVICES as
on a real GPU node. The head has its own --temp-dir (never the shared /tmp/ray), token auth off
on both sides (Ray 2.60), and is stopped with SIGTERM (never `ray stop`: it kills every Ray
process on the machine; SIGKILL leaves agents alive for minutes).

Registered for every test module by conftest.py (``pytest_plugins``): take ``ray_head``
(the head's address) as an argument.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 90.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_head() -> Iterator[str]:
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'blift[ray]')")
    ray_bin = Path(sys.executable).with_name("ray")
    if not ray_bin.exists():
        pytest.skip(f"ray CLI not found next to {sys.executable}")
    temp_dir = ROOT / ".cache" / "test" / f"ray{os.getpid()}"  # short: Ray's unix socket paths are limited
    temp_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    log_path = temp_dir / "head.log"
    log_fh = open(log_path, "w")
    proc = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
         "--num-cpus", "4", "--num-gpus", "2", "--include-dashboard=false", "--disable-usage-stats",
         "--temp-dir", str(temp_dir)],
        stdout=log_fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    address = f"127.0.0.1:{port}"
    mp = pytest.MonkeyPatch()
    mp.setenv("RAY_AUTH_MODE", "disabled")
    mp.delenv("RAY_ADDRESS", raising=False)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while "Ray runtime started" not in log_path.read_text():
            if proc.poll() is not None:
                pytest.fail(f"ray head exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"ray head did not start in {START_TIMEOUT_S:g} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield address
    finally:
        if ray.is_initialized():
            ray.shutdown()  # disconnects this driver; the head is ours and is stopped below
        mp.undo()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log_fh.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


