"""Run folders as the pipeline leaves them, and releases made from them, for the release, push,
export and takedown tests: real shards validated by the real schemas, real image and frame files."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
from PIL import Image

from blift import schemas, tables
from blift.ids import author_hash, pack_raw, split_of
from blift.release.writer import release
from blift.stage import ShardInput
from blift.stages.instruct.stage import InstructStage

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


# ----------------------------------------------------------- image posts through the instruct stage


def uids_covering_all_splits(per_split: dict[str, int]) -> list[str]:
    """Deterministic uids, enough of each split (found by hashing, not hard-coded)."""
    want, out, i = dict(per_split), [], 0
    while any(want.values()):
        uid = f"reddit:r{i}"
        split = split_of(uid)
        if want[split]:
            want[split] -= 1
            out.append(uid)
        i += 1
    return out


def _rows_for(uid: str, n_comments: int) -> tuple[dict, list[dict], dict, dict]:
    item_id = uid.split(":")[1]
    item = {"uid": uid, "platform": "reddit", "item_id": item_id, "source": "api", "title": f"Post {item_id}",
            "community": "pics", "collected_at": T0, "media_kind": "image", "score": len(uid) * 17,
            "upvote_ratio": 0.9, "num_comments": n_comments, "raw": pack_raw({"id": item_id, "author": "someone"})}
    comments = [{"uid": uid, "platform": "reddit", "comment_id": f"{item_id}c{j}", "depth": 0,
                 "text": f"comment {j} on {item_id}", "score": 10 - j, "collected_at": T0,
                 "raw": pack_raw({"body": j})} for j in range(n_comments)]
    media = {"uid": uid, "index": 0, "url": f"https://i.example/{item_id}.jpg", "status": "ok",
             "path": f"media/ab/{item_id}.jpg", "mime": "image/jpeg", "width": 640, "height": 480}
    attrs = {"uid": uid, "media_index": 0, "scene": None, "orientation": "landscape", "width": 640, "height": 480,
             "colors": [{"name": "Sky_Blue", "fraction": 0.6}], "tone": "cool", "complexity": "medium",
             "ocr_text": "", "caption": None}
    return item, comments, media, attrs


def jpeg_for(uid: str) -> bytes:
    """A small real JPEG whose size and colour depend on the uid (so decoding can be checked)."""
    n = sum(uid.encode())
    buf = io.BytesIO()
    PIL.Image.new("RGB", (8 + n % 9, 6 + n % 5), (n % 256, 40, 200)).save(buf, format="JPEG")
    return buf.getvalue()


def build_run(run: Path, uids: list[str], shards: int = 2, **stage_config: Any) -> dict[str, Any]:
    """A run folder as the pipeline leaves it: items_clean, comments_clean, instructions, media files."""
    written: dict[str, list[dict]] = {"items": [], "comments": [], "instructions": []}
    for s in range(shards):
        part = [u for i, u in enumerate(uids) if i % shards == s]
        rows = [_rows_for(u, 1 + i % 4) for i, u in enumerate(part)]
        items = [r[0] for r in rows]
        comments = [c for r in rows for c in r[1]]
        tbl = {
            "items_clean": schemas.get("items").from_rows(items),
            "comments_clean": schemas.get("comments").from_rows(comments),
            "media": schemas.get("media").from_rows([r[2] for r in rows]),
            "attributes": schemas.get("attributes").from_rows([r[3] for r in rows]),
        }
        stage = InstructStage(InstructStage.Config(**{"top_k_comments": 3, **stage_config}), run)
        stage.setup()
        result = stage.process(ShardInput(f"part-{s:05d}", tbl, run))
        name = f"part-{s:05d}.parquet"
        tables.write_shard(run / "items_clean" / name, tbl["items_clean"], "items")
        tables.write_shard(run / "comments_clean" / name, tbl["comments_clean"], "comments")
        tables.write_shard(run / "instructions" / name, result.tables["instructions"], "instructions")
        for r in rows:
            (run / r[2]["path"]).parent.mkdir(parents=True, exist_ok=True)
            (run / r[2]["path"]).write_bytes(jpeg_for(r[0]["uid"]))
        written["items"] += items
        written["comments"] += comments
        written["instructions"] += result.tables["instructions"].to_pylist()
    return written


# ------------------------------------------------- image and video posts with hand-written records


COLOURS = {"red": (220, 20, 20), "blue": (20, 20, 220), "green": (20, 200, 20), "gray": (128, 128, 128)}


@dataclass
class Post:
    """One item of the test release and what it is made of."""

    uid: str
    author: str
    kind: str  # image or video
    media: str  # run-relative path of its media file
    split: str = "train"
    commenters: tuple[str, ...] = ()

    @property
    def item_id(self) -> str:
        return self.uid.split(":", 1)[1]

    def comment_text(self, j: int) -> str:
        return f"comment {j} by {self.commenters[j]} on {self.item_id}"


@dataclass
class Built:
    run: Path
    release: Path
    posts: list[Post]
    instructions: list[dict[str, Any]] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)
    comments: list[dict[str, Any]] = field(default_factory=list)

    def post(self, uid: str) -> Post:
        return next(p for p in self.posts if p.uid == uid)

    def record_ids(self, split: str | None = None) -> list[str]:
        return [r["id"] for r in self.instructions if split is None or r["split"] == split]


def _image(path: Path, colour: str, size: tuple[int, int] = (64, 48)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, COLOURS[colour]).save(path, format="JPEG", quality=90)


def _frames(path: Path, n: int, side: int, colour: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((n, 3, side, side), dtype=np.uint8)
    arr[:] = np.asarray(COLOURS[colour], dtype=np.uint8)[None, :, None, None]
    np.save(path, arr)


def default_posts(with_mp4: bool) -> list[Post]:
    posts = [
        Post("reddit:img0", "alice", "image", "media/aa/img0.jpg", commenters=("bob", "carol")),
        Post("reddit:img1", "bob", "image", "media/bb/img1.jpg", commenters=("alice", "dave")),
        Post("reddit:img2", "carol", "image", "media/cc/shared.jpg", commenters=("dave", "erin")),
        Post("reddit:img3", "dave", "image", "media/cc/shared.jpg", split="test", commenters=("erin", "bob")),
        Post("youtube:vid0aaaaaaa", "erin", "video", "frames/dd/vid0.npy", commenters=("frank", "gina")),
        Post("youtube:vid1bbbbbbb", "frank", "video", "frames/ee/vid1.npy", commenters=("gina", "alice")),
    ]
    if with_mp4:
        posts.append(Post("youtube:vid2ccccccc", "gina", "video", "media/ff/vid2.mp4", commenters=("bob", "erin")))
    return posts


def _conversations(post: Post, task: str) -> list[dict[str, str]]:
    what = "image" if post.kind == "image" else "video"
    human = f"<image>\nThis {what} was posted as {post.item_id}. Describe it."
    if task == "content":
        return [{"from": "human", "value": human}, {"from": "gpt", "value": f"A plain {what} called {post.item_id}."}]
    quoted = "\n".join(f"{j + 1}. {post.comment_text(j)}" for j in range(len(post.commenters)))
    return [{"from": "human", "value": human + " How did people react?"},
            {"from": "gpt", "value": f"It got {len(post.item_id) * 7} upvotes. Top comments:\n{quoted}"}]


def _mp4(path: Path) -> None:
    from video_factory import Segment, make_video, require_tools

    require_tools("ffmpeg")
    make_video(path, [Segment("color=c=red", 25), Segment("color=c=blue", 38)], fps=25.0)


def write_run(run: Path, posts: list[Post], *, broken: dict[str, list[dict[str, str]]] | None = None,
              side: int | None = None, video_files: dict[str, str] | None = None) -> Built:
    """A run folder as the pipeline leaves it (items_clean, comments_clean, instructions, media).

    Frames are 224 px except vid1's (112 px, to be resized), or all ``side`` px when given.
    ``video_files`` (uid -> run path) adds a ``videos`` dataset naming an mp4 for those videos.
    """
    built = Built(run=run, release=run.parent / "release", posts=posts)
    for n, post in enumerate(posts):
        src = run / post.media
        if not src.exists():
            if post.kind == "image":
                _image(src, "gray" if "shared" in post.media else "green")
            elif post.media.endswith(".npy"):
                _frames(src, 3, side or (112 if post.uid.startswith("youtube:vid1") else 224), "blue")
            else:
                _mp4(src)
        platform = post.uid.split(":")[0]
        built.items.append({
            "uid": post.uid, "platform": platform, "item_id": post.item_id, "source": "api",
            "title": f"Post {post.item_id}", "community": "pics", "author_hash": author_hash(post.author),
            "collected_at": T0, "created_at": T0 + timedelta(hours=n), "media_kind": post.kind, "score": 10,
            "num_comments": 2})
        for j, who in enumerate(post.commenters):
            built.comments.append({
                "uid": post.uid, "platform": platform, "comment_id": f"{post.item_id}c{j}", "depth": 0,
                "text": post.comment_text(j), "score": 5 - j, "author_hash": author_hash(who), "collected_at": T0})
        for task in ("behavior", "content"):
            rid = f"{post.uid}:{task}"
            conv = (broken or {}).get(rid) or _conversations(post, task)
            targets = None if task == "content" else {
                "score": 10, "comments": [post.comment_text(j) for j in range(len(post.commenters))]}
            built.instructions.append({
                "id": rid, "uid": post.uid, "platform": platform, "task": task, "template": f"{platform}_{task}",
                "template_version": 1, "media_kind": post.kind, "media": [post.media], "conversations": conv,
                "targets": targets, "split": post.split, "collected_at": T0})
    if video_files:
        rows = []
        for uid, rel in video_files.items():
            if not (run / rel).exists():
                _mp4(run / rel)
            rows.append({"uid": uid, "file_status": "ok", "file_path": rel, "duration_s": 2.52})
        tables.write_rows(run / "videos" / "part-00000.parquet", rows, "videos")
    tables.write_rows(run / "items_clean" / "part-00000.parquet", built.items, "items")
    tables.write_rows(run / "comments_clean" / "part-00000.parquet", built.comments, "comments")
    tables.write_rows(run / "instructions" / "part-00000.parquet", built.instructions, "instructions")
    return built


def make_release(base: Path, *, with_mp4: bool = False, check: bool = False,
                 broken: dict[str, list[dict[str, str]]] | None = None, side: int | None = None,
                 **options: Any) -> Built:
    """A release of the default posts; ``with_mp4`` adds vid2 (an mp4 record) and a ``videos``
    config naming an mp4 for vid0 and vid2. ``options`` go to the writer (images=, videos=...)."""
    video_files = {"youtube:vid0aaaaaaa": "media/ff/vid0.mp4", "youtube:vid2ccccccc": "media/ff/vid2.mp4"}
    built = write_run(base / "run", default_posts(with_mp4), broken=broken, side=side,
                      video_files=video_files if with_mp4 else None)
    release(built.run, built.release, check=check, check_stats=False, **options)
    return built
