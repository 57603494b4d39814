"""Local media (blift.collect.media.local): which files a source may read, how they enter the run's
content-addressed store, and media.download checking them through ``run:`` references."""

from __future__ import annotations

import io
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from blift import schemas
from blift.collect.media.download import DownloadStage
from blift.collect.media.local import (
    LocalFileRefused,
    LocalRoots,
    identify,
    parse_run_ref,
    run_ref,
    store_copy,
)
from blift.collect.media.store import MediaStore


def png(size: tuple[int, int] = (12, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    (root / "sub").mkdir(parents=True)
    (root / "a.png").write_bytes(png())
    (root / "sub" / "b.png").write_bytes(png((5, 5)))
    (root / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x00" * 64)
    (root / "notes.txt").write_text("not media")
    (tmp_path / "secret.png").write_bytes(png())
    return root


def test_paths_inside_the_roots_resolve_and_everything_else_is_refused_by_reason(folder: Path, tmp_path: Path):
    roots = LocalRoots([folder])
    assert roots.resolve("a.png") == folder / "a.png"
    assert roots.resolve("sub/b.png") == folder / "sub" / "b.png"
    assert roots.resolve(folder / "sub" / "b.png") == folder / "sub" / "b.png"
    os.symlink(tmp_path / "secret.png", folder / "link.png")
    os.symlink(tmp_path, folder / "linkdir")
    cases = {"../secret.png": "outside_roots", str(tmp_path / "secret.png"): "outside_roots",
             "sub/../../secret.png": "outside_roots", "link.png": "symlink", "linkdir/secret.png": "symlink",
             "nope.png": "missing", "sub": "not_a_file"}
    for path, reason in cases.items():
        with pytest.raises(LocalFileRefused) as info:
            roots.resolve(path)
        assert info.value.reason == reason, path
        assert path.split("/")[-1] in str(info.value)
    with pytest.raises(ValueError, match="does not exist"):
        LocalRoots([tmp_path / "missing-folder"])


def test_kinds_come_from_the_bytes(folder: Path):
    image = identify(folder / "a.png")
    assert image is not None and (image.kind, image.ext, image.mime) == ("image", "png", "image/png")
    video = identify(folder / "clip.mp4")
    assert video is not None and (video.kind, video.ext) == ("video", "mp4")
    assert identify(folder / "notes.txt") is None
    renamed = folder / "photo.mp4"  # a PNG named .mp4 is still an image
    renamed.write_bytes(png())
    found = identify(renamed)
    assert found is not None and found.kind == "image"


def test_store_copy_leaves_the_original_and_stores_each_content_once(folder: Path, tmp_path: Path):
    run = tmp_path / "run"
    store = MediaStore(run, "media_files")
    original = (folder / "a.png").read_bytes()
    stored, size = store_copy(store, identify(folder / "a.png"))  # type: ignore[arg-type]
    assert stored.created and size == len(original)
    assert (run / stored.path).read_bytes() == original and (folder / "a.png").read_bytes() == original
    assert os.stat(run / stored.path).st_ino != os.stat(folder / "a.png").st_ino  # a copy, not a link
    (folder / "copy.png").write_bytes(original)
    again, _ = store_copy(store, identify(folder / "copy.png"))  # type: ignore[arg-type]
    assert not again.created and again.path == stored.path
    assert sorted(p.name for p in run.rglob("*") if p.is_file()) == [Path(stored.path).name]  # no temporaries


def test_run_references_stay_inside_the_run_folder():
    assert parse_run_ref(run_ref("media_files/ab/abc.png")) == "media_files/ab/abc.png"
    for bad in ("run:../etc/passwd", "run:/etc/passwd", "run:", "https://x/y.png", "media_files/a.png"):
        assert parse_run_ref(bad) is None, bad


def _item(uid: str, urls: list[str]) -> dict[str, Any]:
    row = {"uid": f"local:{uid}", "platform": "local", "item_id": uid, "source": "folder",
           "collected_at": datetime(2026, 11, 1, tzinfo=timezone.utc), "media_kind": "image", "media_urls": urls}
    return schemas.get("items").from_rows([row]).to_pylist()[0]


def test_media_download_checks_stored_images_without_any_network(folder: Path, tmp_path: Path):
    run = tmp_path / "run"
    store = MediaStore(run, "media_files")
    stored, _ = store_copy(store, identify(folder / "a.png"))  # type: ignore[arg-type]
    bad = store.put(b"<html>not an image</html>", "png")
    stage = DownloadStage(DownloadStage.Config(), run_dir=run)
    stage.setup()
    urls = [run_ref(stored.path), run_ref(bad.path), run_ref("media_files/zz/missing.png"), "run:../escape.png"]
    out = stage.process_record("local:a", _item("a", urls))
    rows = out.tables["media"]
    schemas.get("media").from_rows(rows)
    assert [r["status"] for r in rows] == ["ok", "failed", "failed", "failed"]
    assert rows[0]["path"] == stored.path and rows[0]["sha256"] == stored.sha256
    assert (rows[0]["mime"], rows[0]["width"], rows[0]["height"]) == ("image/png", 12, 8)
    assert [r["reason"] for r in rows[1:]] == ["not_an_image", "missing_file", "missing_file"]
    assert out.counters["local_files"] == 2
