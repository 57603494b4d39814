"""An S3 endpoint on loopback for run folders on ``s3://`` (pytest fixtures).

moto's server speaks the S3 REST protocol (signed requests, multipart uploads, ListObjectsV2,
ETags), so blift talks to it through the real ``s3fs``/``aiobotocore`` client, configured only by
the standard variables a user would set for MinIO or any S3-compatible store: ``AWS_ENDPOINT_URL``
and credentials. Worker processes (local pool, Ray workers, a ``blift`` subprocess) reach it the
same way, because they inherit or are forwarded those variables.

Registered for every test module by conftest.py (``pytest_plugins``): take ``s3`` (a
:class:`Bucket`) as an argument.
"""

from __future__ import annotations

import logging
import socket
import uuid
from dataclasses import dataclass
from typing import Any, Iterator

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    server_mod = pytest.importorskip("moto.server", reason="moto[server] is not installed")
    pytest.importorskip("s3fs", reason="s3fs is not installed (pip install 'blift[s3]')")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request otherwise
    port = _free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@dataclass
class Bucket:
    """A fresh bucket on the loopback S3, and ways to look at it as a test would."""

    name: str
    fs: Any  # s3fs.S3FileSystem, listings never cached

    def url(self, *parts: str) -> str:
        return "/".join([f"s3://{self.name}", *parts])

    def keys(self, prefix: str = "") -> dict[str, dict[str, Any]]:
        """Object info by key relative to ``prefix`` (a run folder's name)."""
        base = f"{self.name}/{prefix}".rstrip("/") + "/"
        found = self.fs.find(base, detail=True)
        return {k[len(base):]: v for k, v in found.items() if v.get("type") != "directory"}

    def read(self, key: str) -> bytes:
        return self.fs.cat_file(f"{self.name}/{key}")

    def stamps(self, prefix: str) -> dict[str, tuple[str, Any]]:
        """(ETag, LastModified) of every object under ``prefix``: changes when an object is rewritten."""
        return {k: (v.get("ETag"), v.get("LastModified")) for k, v in self.keys(prefix).items()}


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path) -> Bucket:
    """A new bucket; AWS_* variables pointing at the loopback endpoint; a private scratch folder."""
    import s3fs

    for name, value in {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "blift-test",
                        "AWS_SECRET_ACCESS_KEY": "blift-test-secret", "AWS_DEFAULT_REGION": "us-east-1",
                        "BLIFT_SCRATCH": str(tmp_path / "scratch")}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    fs = s3fs.S3FileSystem(use_listings_cache=False, skip_instance_cache=True)
    bucket = f"blift-{uuid.uuid4().hex[:12]}"
    fs.mkdir(bucket)
    return Bucket(bucket, fs)
