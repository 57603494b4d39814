"""Small releases and task files for the training and evaluation tests: real release layouts
(written by ``blift release`` or laid out as it does) whose records a tiny random LLaVA can learn
or be scored on. Words come from ``tiny_llava.WORDS``, so every token is in its vocabulary."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
from PIL import Image

from blift import schemas, tables
from blift.ids import author_hash
from blift.release.writer import release
from blift.train.data import Example

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


# ---------------------------------------------------------------------- a release to train on


COLOURS = {"red": (220, 20, 20), "blue": (20, 20, 220), "green": (20, 200, 20), "yellow": (230, 230, 20)}
ANSWERS = {  # content answer, behavior answer; words from tiny_llava.WORDS
    "red": ("a red car on the street", "many people are happy and smiling"),
    "blue": ("a blue sky with white clouds", "some people are busy"),
    "green": ("a green park with tall trees", "several people are sitting"),
    "yellow": ("a yellow bus in the city", "two people are walking"),
}


# --------------------------------------------------------------------------- fixtures


def _conversations(colour: str, task: str, kind: str) -> list[dict[str, str]]:
    content, behavior = ANSWERS[colour]
    if task == "content":
        return [{"from": "human", "value": f"<image>\ndescribe this {kind}"}, {"from": "gpt", "value": content}]
    return [{"from": "human", "value": f"<image>\nthis {kind} shows {content} . describe the action"},
            {"from": "gpt", "value": behavior}]


def write_release(base: Path, *, videos: bool = True, missing: tuple[str, ...] = ()) -> Path:
    """A release of four image posts (and two video posts), each with a behavior and a content
    record, all in the train split. ``missing``: uids whose media file is deleted before the
    release is written (their records then fail to load)."""
    run = base / "run"
    posts = [(f"reddit:img{i}", "image", colour, f"media/i{i}.jpg") for i, colour in enumerate(COLOURS)]
    if videos:
        posts += [(f"youtube:vid{i}xxxxxxx", "video", colour, f"frames/v{i}.npy")
                  for i, colour in enumerate(("red", "blue"))]
    items, instructions = [], []
    for n, (uid, kind, colour, media) in enumerate(posts):
        path = run / media
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "image":
            Image.new("RGB", (40, 32), COLOURS[colour]).save(path, format="JPEG", quality=95)
        else:
            frames = np.zeros((4, 3, 32, 32), dtype=np.uint8)
            frames[:] = np.asarray(COLOURS[colour], dtype=np.uint8)[None, :, None, None]
            np.save(path, frames)
        platform, item_id = uid.split(":")
        items.append({"uid": uid, "platform": platform, "item_id": item_id, "source": "api", "title": item_id,
                      "community": "pics", "author_hash": author_hash(f"a{n}"), "collected_at": T0,
                      "created_at": T0, "media_kind": kind, "score": 10, "num_comments": 0})
        for task in ("behavior", "content"):
            instructions.append({
                "id": f"{uid}:{task}", "uid": uid, "platform": platform, "task": task,
                "template": f"{platform}_{task}", "template_version": 1, "media_kind": kind, "media": [media],
                "conversations": _conversations(colour, task, kind),
                "targets": {"score": 10} if task == "behavior" else None, "split": "train", "collected_at": T0})
    tables.write_rows(run / "items_clean" / "part-00000.parquet", items, "items")
    tables.write_rows(run / "comments_clean" / "part-00000.parquet", [], "comments")
    tables.write_rows(run / "instructions" / "part-00000.parquet", instructions, "instructions")
    out = base / "release"
    release(run, out, check=False, check_stats=False)
    for uid, _, _, media in posts:
        if uid in missing:
            (out / media).unlink()
    return out


# ----------------------------------------------------------------- a release and tasks to score


def image(seed: int) -> PIL.Image.Image:
    rng = np.random.default_rng(seed)
    return PIL.Image.fromarray(rng.integers(0, 255, (20 + seed, 28, 3), dtype=np.uint8))


def reddit_answer(score: int, ratio: int, n_comments: int, comments: list[str]) -> str:
    """The gpt turn of reddit_image_behavior.yaml, filled."""
    lines = "\n".join(f"{k}. {c}" for k, c in enumerate(comments, start=1))
    return (f"Upvotes: {score}\nUpvote ratio: {ratio}%\nNumber of comments: {n_comments}\n"
            f"Top comments, ranked by score:\n{lines}")


def reddit_record(i: int, score: int, comments: list[str]) -> Example:
    question = ("<image>\nThis image was posted on the subreddit r/pics with the title \"a dog in the park\".\n"
                "Description of the image: a small dog running on green grass near a tree.\n"
                "How did the audience of r/pics react to this post?")
    targets = {"score": score, "upvote_ratio": 0.9, "num_comments": len(comments), "comments": comments,
               "view_count": None, "like_count": None, "like_ratio": None, "scene_replay": None,
               "most_replayed_scenes": None, "comment_scores": None}
    convs = [{"from": "human", "value": question},
             {"from": "gpt", "value": reddit_answer(score, 90, len(comments), comments)}]
    return Example(id=f"reddit:r{i}:behavior", task="behavior", media_kind="image", conversations=convs,
                   images=[image(i)], targets=targets, platform="reddit")


TARGET_KEYS = ("score", "upvote_ratio", "num_comments", "view_count", "like_count", "like_ratio", "comments",
               "comment_scores", "scene_replay", "most_replayed_scenes")


def _row(rid: str, split: str, task: str, media_kind: str, media: str, convs: list[dict],
         targets: dict | None, platform: str = "reddit") -> dict[str, Any]:
    full = {k: (targets or {}).get(k) for k in TARGET_KEYS} if targets is not None else None
    return {"id": rid, "uid": rid.rsplit(":", 1)[0], "platform": platform, "task": task,
            "template": f"{platform}_{media_kind}_{task}", "template_version": 1, "media_kind": media_kind,
            "media": [media], "conversations": convs, "targets": full, "split": split, "collected_at": T0}


def build_release(root: Path) -> dict[str, int]:
    """A release folder as ``blift release`` lays it out (instructions config, test and train
    shards, media/), rows validated by the real instructions schema. Returns counts per kind."""
    (root / "media").mkdir(parents=True)
    test_rows, train_rows = [], []
    for i in range(3):
        ex = reddit_record(i, 3 + 25 * i, ["nice dog", "the dog is happy"][: 1 + i % 2])
        ex.images[0].save(root / "media" / f"r{i}.png")
        test_rows.append(_row(f"reddit:r{i}:behavior", "test", "behavior", "image", f"media/r{i}.png",
                              ex.conversations, ex.targets))
        test_rows.append(_row(f"reddit:r{i}:content", "test", "content", "image", f"media/r{i}.png",
                              [ex.conversations[0], {"from": "gpt", "value": "a dog on green grass"}], None))
    frames = np.random.default_rng(7).integers(0, 255, (5, 3, 24, 24), dtype=np.uint8)
    np.save(root / "media" / "v0.npy", frames)
    video_answer = ("Views: 5000\nLikes: 100\nLike ratio: 2.0%\nNumber of comments: 3\n"
                    "Replay value per scene: Scene 1: 0.10, Scene 2: 0.50\n"
                    "Most replayed scenes, most replayed first: 2, 1\nTop comments, ranked by likes:\n1. so bright")
    video_targets = {"view_count": 5000, "like_count": 100, "like_ratio": 0.02, "num_comments": 3,
                     "scene_replay": [0.1, 0.5], "most_replayed_scenes": [1, 0], "comments": ["so bright"]}
    test_rows.append(_row("youtube:v0:behavior", "test", "behavior", "video", "media/v0.npy",
                          [{"from": "human", "value": "<image>\nHow did viewers react to this video?"},
                           {"from": "gpt", "value": video_answer}], video_targets, platform="youtube"))
    train = reddit_record(9, 1, ["meh"])
    train.images[0].save(root / "media" / "r9.png")
    train_rows.append(_row("reddit:r9:behavior", "train", "behavior", "image", "media/r9.png",
                           train.conversations, train.targets))
    for split, rows in (("test", test_rows), ("train", train_rows)):
        tables.write_shard(root / "data" / "instructions" / f"{split}-00000-of-00001.parquet",
                           schemas.get("instructions").from_rows(rows), "instructions")
    (root / "release.json").write_text("{}")
    return {"behavior_test": 4, "content_test": 3}


def write_tasks(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(2):
        image(20 + i).save(folder / f"q{i}.png")
    mc = folder / "emotion.jsonl"
    mc.write_text("\n".join(json.dumps(r) for r in [
        {"id": "e0", "image": "q0.png", "question": "Which emotion does the picture show?",
         "options": ["happy", "dark", "quiet"], "answer": "happy"},
        {"id": "e1", "image": "q1.png", "question": "Which emotion does the picture show?",
         "options": ["happy", "dark", "quiet"], "answer": 2},
    ]) + "\n")
    ft = folder / "caption.jsonl"
    ft.write_text(json.dumps({"id": "c0", "image": "q0.png", "question": "What is in the picture?",
                              "references": ["a dog", "a small dog"]}) + "\n")
    return mc, ft
