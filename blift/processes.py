"""Worker processes that die with their parent.

A stdlib process pool's workers outlive a parent killed with ``kill -9``: they would keep
fetching, writing and holding memory with nobody to collect their results. Every pool blift
starts (the runner's, the dump parser's) calls :func:`die_with_parent` in each worker.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time


def die_with_parent(parent_pid: int, poll_s: float = 0.5) -> None:
    """End this process when ``parent_pid`` is no longer its parent: the kernel's parent-death
    signal where there is one (Linux), and a polling thread as well (other systems, and a parent
    that died before the signal was armed)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass

    def poll() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(poll_s)

    threading.Thread(target=poll, daemon=True, name="blift-parent-watch").start()
