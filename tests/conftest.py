"""Test-wide settings: caches inside the work tree, offline Hub, a fixed author salt; and the
fixture modules every test can use without importing them (``pytest_plugins``)."""

from __future__ import annotations

import os
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
_CACHE = _ROOT / ".cache" / "test"
for _var, _sub in (("HF_HOME", "hf"), ("XDG_CACHE_HOME", "xdg"), ("MPLCONFIGDIR", "mpl")):
    os.environ.setdefault(_var, str(_CACHE / _sub))
    Path(os.environ[_var]).mkdir(parents=True, exist_ok=True)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("BLIFT_AUTHOR_SALT", "test-salt")
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

# Fixtures shared between test modules live in these modules, never in a test module.
pytest_plugins = ["toy_runs", "ray_cluster", "dump_files", "servers.s3_server", "youtube_fakes"]
