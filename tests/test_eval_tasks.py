"""blift.eval.tasks (task files: JSONL / Parquet, media, validation) and blift.eval.report."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from blift.eval.report import direction, markdown_table, write_results
from blift.eval.tasks import TaskError, even_indices, load_task


def _png(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (8, 6)) -> Path:
    Image.new("RGB", size, colour).save(path)
    return path


def _png_bytes(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (5, 4), colour).save(buf, format="PNG")
    return buf.getvalue()


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _mp4(path: Path, n: int, size: tuple[int, int] = (64, 48)) -> Path:
    """A tiny mp4 whose frame i is filled with grey level 10*i (so a frame can be told by its colour)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.full((size[1], size[0], 3), 10 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


# ---------------------------------------------------------------------------------- tasks


def test_jsonl_multiple_choice_and_free_text(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    _png(tmp_path / "img" / "red.png", (255, 0, 0))
    frames = np.arange(5 * 3 * 2 * 2, dtype=np.uint8).reshape(5, 3, 2, 2)
    np.save(tmp_path / "clip.npy", frames)
    path = _jsonl(tmp_path / "emotion.jsonl", [
        {"id": "q1", "image": "img/red.png", "question": "Which emotion?", "options": ["joy", "anger", "fear"],
         "answer": "Anger"},
        {"question": "Which colour?", "choices": ["Red", "Blue"], "answer": "b", "image": "img/red.png"},
        {"question": "How many frames?", "video": "clip.npy", "options": ["one", "five"], "answer": 1,
         "memorability": 0.83},
        {"question": "Name the colour.", "image": "img/red.png", "answer": " red ", "references": ["crimson"]},
        {"question": "Say hi.", "reference": "hi"},
    ])
    name, items = load_task(path, num_frames=3)
    assert name == "emotion"
    assert [i.id for i in items] == ["q1", "emotion-2", "emotion-3", "emotion-4", "emotion-5"]
    assert [i.media_kind for i in items] == ["image", "image", "video", "image", "none"]
    assert [i.answer for i in items] == [1, 1, 1, "red", None]  # text, letter and index all become an index
    assert items[0].image.size == (8, 6) and items[0].image.getpixel((0, 0)) == (255, 0, 0)
    assert items[1].options == ["Red", "Blue"] and items[1].is_multiple_choice
    # 5 frames sampled to 3: linspace(0, 4, 3) = 0, 2, 4
    assert items[2].frames.shape == (3, 3, 2, 2) and items[2].frames.dtype == np.uint8
    assert np.array_equal(items[2].frames, frames[[0, 2, 4]])
    assert items[2].meta == {"memorability": 0.83}
    assert items[3].references == ["crimson"] and not items[3].is_multiple_choice
    assert items[4].references == ["hi"] and items[4].image is None and items[4].frames is None


def test_parquet_image_bytes_frames_and_media_paths(tmp_path: Path) -> None:
    _png(tmp_path / "blue.png", (0, 0, 255))
    hwc = np.zeros((2, 4, 4, 3), np.uint8)
    hwc[1, ..., 0] = 200  # frame 1 is red
    np.save(tmp_path / "v.npy", hwc)
    table = pa.table({
        "id": ["a", "b", "c", "d"],
        "task": ["memorability"] * 4,
        "question": ["Memorable?"] * 4,
        "options": [["low", "high"]] * 4,
        "answer": [0, 1, 1, 0],
        "image": pa.array([{"bytes": _png_bytes((0, 255, 0)), "path": None}, None, None, None],
                          type=pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        "frames": [None, np.full((1, 3, 2, 2), 7, np.uint8).tolist(), None, None],
        "media": [None, None, ["blue.png"], ["v.npy"]],
    })
    pq.write_table(table, tmp_path / "mem.parquet")
    name, items = load_task(tmp_path / "mem.parquet")
    assert name == "memorability"  # from the task column, not the stem
    assert items[0].media_kind == "image" and items[0].image.getpixel((1, 1)) == (0, 255, 0)
    assert items[1].frames.shape == (1, 3, 2, 2) and int(items[1].frames.max()) == 7
    assert items[2].image.getpixel((0, 0)) == (0, 0, 255)
    # (T,H,W,3) frames are turned into (T,3,H,W)
    assert items[3].frames.shape == (2, 3, 4, 4) and items[3].frames[1, 0, 0, 0] == 200
    assert items[3].frames[1, 1].max() == 0


def test_root_and_limit(tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    _png(media / "x.png", (1, 2, 3))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    path = _jsonl(tasks / "t.jsonl", [{"question": f"q{i}", "image": "x.png", "answer": "a"} for i in range(4)])
    with pytest.raises(TaskError, match="file not found"):
        load_task(path)  # relative to the task file's folder by default
    _, items = load_task(path, root=media, limit=2)
    assert [i.question for i in items] == ["q0", "q1"]


def test_mp4_frames_are_sampled_and_downscaled(tmp_path: Path) -> None:
    _mp4(tmp_path / "clip.mp4", 9, size=(64, 48))
    path = _jsonl(tmp_path / "v.jsonl", [{"question": "q", "video": "clip.mp4", "answer": "x"}])
    _, items = load_task(path, num_frames=3)
    frames = items[0].frames
    assert frames.shape == (3, 3, 48, 64) and frames.dtype == np.uint8
    # frames 0, 4, 8 of 9: grey 0, 40, 80 (lossy codec: within a few levels)
    assert np.allclose(frames.reshape(3, -1).mean(axis=1), [0, 40, 80], atol=4)
    from blift.eval.tasks import decode_video
    small = decode_video(tmp_path / "clip.mp4", 2, max_side=32)
    assert small.shape == (2, 3, 24, 32)


def test_even_indices() -> None:
    assert even_indices(3, 8).tolist() == [0, 1, 2]
    assert even_indices(10, 4).tolist() == [0, 3, 6, 9]  # 0, 3, 6, 9 exactly
    assert even_indices(100, 1).tolist() == [0]


@pytest.mark.parametrize(("row", "field", "message"), [
    ({"options": ["a", "b"], "answer": 0}, "question", "is required"),
    ({"question": "q", "options": ["a", "b"], "answer": 2}, "answer", "outside the 2 options"),
    ({"question": "q", "options": ["a", "b"], "answer": "c"}, "answer", "none of the options"),
    ({"question": "q", "options": ["a", "b"]}, "answer", "multiple choice needs"),
    ({"question": "q", "options": ["a", " A"], "answer": 0}, "options", "must differ"),
    ({"question": "q", "options": ["a"], "answer": 0}, "options", "at least two"),
    ({"question": "q", "options": ["a", "b"], "answer": 0, "references": ["a"]}, "references", "not both"),
    ({"question": "q"}, "references", "needs options"),
    ({"question": "  ", "answer": "x"}, "question", "non-empty"),
    ({"question": "q", "answer": "x", "image": "missing.png"}, "image", "file not found"),
    ({"question": "q", "answer": "x", "image": "bad.png"}, "image", "not a readable image"),
    ({"question": "q", "answer": "x", "image": "ok.png", "video": "v.npy"}, "video", "one medium"),
    ({"question": "q", "answer": "x", "frames": [[1, 2]]}, "frames", "4-d"),
    ({"question": "q", "answer": "x", "frames": [[[[300]]]]}, "frames", "colour channels"),
    ({"question": "q", "answer": "x", "media": "notes.txt"}, "media", "set media_kind"),
    ({"question": "q", "answer": True, "options": ["a", "b"]}, "answer", "index or text"),
])
def test_bad_rows_name_file_line_and_field(tmp_path: Path, row: dict, field: str, message: str) -> None:
    (tmp_path / "bad.png").write_bytes(b"not a png")
    (tmp_path / "notes.txt").write_text("x")
    _png(tmp_path / "ok.png", (0, 0, 0))
    path = _jsonl(tmp_path / "t.jsonl", [{"question": "fine", "answer": "x"}, row])
    with pytest.raises(TaskError) as info:
        load_task(path)
    text = str(info.value)
    assert f"{path}: line 2: field '{field}':" in text and message in text


def test_several_problems_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"question": "ok", "answer": "x", "id": "a"}\n'
                    "{not json\n"
                    "\n"
                    '["a list"]\n'
                    '{"question": "dup", "answer": "y", "id": "a"}\n', encoding="utf-8")
    with pytest.raises(TaskError) as info:
        load_task(path)
    text = str(info.value)
    assert text.startswith("3 problem(s)")
    assert "line 2: field '-': not valid JSON" in text
    assert "line 4: field '-': expected a JSON object" in text
    assert "line 5: field 'id': duplicate id 'a' (first at line 1)" in text


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="task file not found"):
        load_task(tmp_path / "none.jsonl")
    (tmp_path / "t.csv").write_text("question\n")
    with pytest.raises(TaskError, match="expected .jsonl or .parquet"):
        load_task(tmp_path / "t.csv")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(TaskError, match="no items"):
        load_task(tmp_path / "empty.jsonl")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 nope")
    with pytest.raises(TaskError, match="cannot read as Parquet"):
        load_task(tmp_path / "bad.parquet")
    path = _jsonl(tmp_path / "mixed.jsonl", [{"task": "a", "question": "q", "answer": "x"},
                                               {"task": "b", "question": "q", "answer": "x"}])
    with pytest.raises(TaskError, match="field 'task': rows name different tasks"):
        load_task(path)


# ---------------------------------------------------------------------------------- report

RESULTS = {
    "checkpoints": {
        "base": {
            "behavior": {"score": {"mae_log": 1.23456, "r2_log": float("nan"), "n": 40}, "unparsed": 3},
            "emotion": {"accuracy": 0.25},
        },
        "behavior-ift": {
            "behavior": {"score": {"mae_log": 0.5, "r2_log": 0.1, "n": 40}, "unparsed": 0},
            "emotion": {"accuracy": 0.5, "per_item": [1, 0]},
            "vqa": {"token_f1": np.float64(0.75)},
        },
    },
    "config": {"output_dir": Path("runs/eval")},
}


def test_markdown_table_layout() -> None:
    assert markdown_table(RESULTS) == (
        "| metric | base | behavior-ift |\n"
        "|---|---:|---:|\n"
        "| behavior / score.mae_log | 1.235 | **0.5** |\n"
        "| behavior / score.r2_log | – | 0.1 |\n"
        "| behavior / score.n | 40 | 40 |\n"
        "| behavior / unparsed | 3 | 0 |\n"
        "| emotion / accuracy | 0.25 | **0.5** |\n"
        "| vqa / token_f1 | – | 0.75 |\n"
    )
    # a bare checkpoints mapping works too
    assert markdown_table(RESULTS["checkpoints"]) == markdown_table(RESULTS)
    assert markdown_table({"checkpoints": {}}) == "_No results._\n"


def test_metric_direction() -> None:
    assert [direction(m) for m in ["score.mae_log", "comments.perplexity", "answer_perplexity", "r2", "token_f1",
                                   "scene_replay.per_record_pearson", "most_replayed_top1", "n", "n_missing",
                                   "comments.perplexity_tokens", "unparsed"]] == [-1, -1, -1, 1, 1, 1, 1, 0, 0, 0, 0]


def test_write_results_strict_json_and_markdown(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    json_path, md_path = write_results(out, RESULTS)
    assert (json_path, md_path) == (out / "results.json", out / "results.md")
    data = json.loads(json_path.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))
    assert data["checkpoints"]["base"]["behavior"]["score"]["r2_log"] is None  # NaN -> null
    assert data["checkpoints"]["behavior-ift"]["vqa"]["token_f1"] == 0.75
    assert data["checkpoints"]["behavior-ift"]["emotion"]["per_item"] == [1, 0]
    assert data["config"]["output_dir"] == "runs/eval"
    md = md_path.read_text()
    assert md.startswith("# blift eval results\n") and md.endswith(markdown_table(RESULTS))
    # rewriting replaces both files and leaves no temporary files behind
    write_results(out, {"checkpoints": {"only": {"t": {"accuracy": math.inf}}}})
    assert json.loads(json_path.read_text()) == {"checkpoints": {"only": {"t": {"accuracy": None}}}}
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "results.md"]
