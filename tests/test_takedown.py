"""`blift takedown`: ids, URLs and author hashes remove rows everywhere, media follow, release.json
counts (never ids), the card and load_dataset agree, reruns are no-ops, a failure changes nothing."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
import yaml

from blift.ids import author_hash
from blift.release import card as card_module
from blift.release.manifest import read_manifest
from blift.release.takedown import TakedownError, parse_ids, recover, takedown
from release_runs import T0, Built, make_release

WHEN = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Built:
    return make_release(tmp_path_factory.mktemp("td"), with_mp4=True)


@pytest.fixture
def built(pristine: Built, tmp_path: Path) -> Built:
    """A private copy of the release (and its run) for one test."""
    shutil.copytree(pristine.run, tmp_path / "run")
    shutil.copytree(pristine.release, tmp_path / "release")
    return Built(run=tmp_path / "run", release=tmp_path / "release", posts=pristine.posts,
                 instructions=pristine.instructions, items=pristine.items, comments=pristine.comments)


def ids_file(folder: Path, *lines: str) -> Path:
    path = folder / "takedown.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def rows(release: Path, config: str) -> list[dict]:
    out = []
    for f in sorted((release / "data" / config).glob("*.parquet")):
        out += pq.read_table(f).to_pylist()
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def front_matter(release: Path) -> dict:
    return yaml.safe_load((release / "README.md").read_text().split("---\n")[1])


def test_ids_file_forms() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = ids_file(Path(d),
                        "# takedown requests, 2025-01",
                        "reddit:ABC1", "reddit:t3_def2", "t3_ghi3", "t1_cmt9  # a comment",
                        "https://www.youtube.com/watch?v=dQw4w9WgXcQ&t=10", "https://youtu.be/aaaaaaaaaa1",
                        "youtube.com/shorts/bbbbbbbbbb2", "https://www.reddit.com/r/pics/comments/jkl4/some_title/",
                        "https://old.reddit.com/r/pics/comments/jkl4/some_title/cmt7/", "https://redd.it/mno5",
                        "youtube:ccccccccc-3", "author:ABCDEF0123", "plainid", "", "reddit:abc1")
        got = parse_ids(path)
    assert got.uids == {"reddit:abc1", "reddit:def2", "reddit:ghi3", "youtube:dQw4w9WgXcQ", "youtube:aaaaaaaaaa1",
                        "youtube:bbbbbbbbbb2", "reddit:jkl4", "reddit:mno5", "youtube:ccccccccc-3"}
    assert got.comments == {"cmt9", "cmt7"}
    assert got.authors == {"abcdef0123"}
    assert got.bare == {"plainid"}
    assert got.candidates() >= {"reddit:plainid", "youtube:plainid"}
    assert got.entries == 13  # distinct ids: "reddit:ABC1" and "reddit:abc1" are one


def test_a_bad_line_is_named_and_nothing_changes(built: Built, tmp_path: Path) -> None:
    before = snapshot(built.release)
    path = ids_file(tmp_path, "reddit:img0", "what is this?")
    with pytest.raises(TakedownError, match=r"takedown\.txt:2: 'what is this\?'"):
        takedown(built.release, path)
    with pytest.raises(TakedownError, match="not a YouTube video or Reddit"):
        takedown(built.release, ids_file(tmp_path, "https://example.com/watch?v=x"))
    assert snapshot(built.release) == before


@pytest.mark.slow
def test_takedown_by_uid_and_url_removes_rows_and_media_everywhere(built: Built, tmp_path: Path) -> None:
    rel = built.release
    before = read_manifest(rel)
    path = ids_file(tmp_path, "reddit:img0", "https://www.youtube.com/watch?v=vid0aaaaaaa", "reddit:nothere")
    report = takedown(rel, path, now=WHEN)

    gone = {"reddit:img0", "youtube:vid0aaaaaaa"}
    for config in ("instructions", "items", "comments", "videos"):
        left = rows(rel, config)
        assert left and not {r["uid"] for r in left} & gone, config
    assert report.items_removed == 2 and report.not_found == 1 and report.ids_listed == 3 and report.recorded
    assert report.rows_removed == {"instructions": 4, "items": 2, "comments": 4, "videos": 1}
    # media of the removed records: the image, the frames and the videos config's mp4; the others stay
    assert not (rel / "media/aa/img0.jpg").exists() and not (rel / "media/frames/dd/vid0.npy").exists()
    assert not (rel / "media/ff/vid0.mp4").exists() and not (rel / "media/aa").exists()
    assert (rel / "media/bb/img1.jpg").exists() and (rel / "media/ff/vid2.mp4").exists()
    assert report.media_removed == 3

    after = read_manifest(rel)
    assert report.check is not None and report.check.ok  # load_dataset read the staged release before the swap
    assert report.check.rows == {c: {s: sf.rows for s, sf in cfg.splits.items()} for c, cfg in after.configs.items()}
    # the collection window follows the items left (img0 was the first post made)
    assert before.collection_window["created_at_min"] == T0 and after.collection_window["created_at_min"] > T0
    assert after.media_files == before.media_files - 3 and after.media_bytes < before.media_bytes
    for config, cfg in after.configs.items():
        for split, sf in cfg.splits.items():
            assert sf.rows == sum(pq.read_metadata(rel / f).num_rows for f in sf.files), (config, split)
            assert sorted(sf.files) == sorted(f"data/{config}/{p.name}" for p in (rel / "data" / config).iterdir()
                                              if p.name.startswith(f"{split}-"))
    assert after.configs["instructions"].splits["train"].rows == before.configs["instructions"].splits["train"].rows - 4
    (entry,) = after.takedowns
    assert entry.date == WHEN and entry.ids_listed == 3 and entry.items_removed == 2 and entry.media_removed == 3
    assert entry.rows_removed == report.rows_removed
    text = (rel / "release.json").read_text()
    for needle in ("img0", "vid0aaaaaaa", "nothere"):
        assert needle not in text  # counts and a date, never the ids

    # load_dataset reads every config with the new counts, and the card says the same
    cache = tmp_path / "hf-cache"
    for config, cfg in after.configs.items():
        loaded = datasets.load_dataset(str(rel), name=config, cache_dir=str(cache))
        assert {s: d.num_rows for s, d in loaded.items()} == {s: sf.rows for s, sf in cfg.splits.items()}, config
    assert f"{after.configs['instructions'].splits['train'].rows:,}" in (rel / "README.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf-cache", "release", "run", "takedown.txt"]


def test_takedown_by_author_hash(built: Built, tmp_path: Path) -> None:
    rel = built.release
    alice = author_hash("alice")
    report = takedown(rel, ids_file(tmp_path, f"author:{alice}"), now=WHEN, check=False)
    inst = {r["id"] for r in rows(rel, "instructions")}
    # her post goes whole
    assert not {i for i in inst if i.startswith("reddit:img0:")}
    assert "reddit:img0" not in {r["uid"] for r in rows(rel, "items")}
    # her comments go everywhere: the rows, and the behavior records that quote them
    comments = rows(rel, "comments")
    assert alice not in {c["author_hash"] for c in comments}
    assert {c["uid"] for c in comments} >= {"reddit:img1", "youtube:vid1bbbbbbb"}  # the others' comments stay
    assert "reddit:img1:behavior" not in inst and "youtube:vid1bbbbbbb:behavior" not in inst
    assert {"reddit:img1:content", "youtube:vid1bbbbbbb:content", "reddit:img2:behavior"} <= inst
    assert "reddit:img1" in {r["uid"] for r in rows(rel, "items")}
    assert (rel / "media/bb/img1.jpg").exists()  # img1's content record still shows it
    assert report.authors_removed == 1 and report.items_removed == 1 and report.comments_removed == 2
    assert report.rows_removed["instructions"] == 4 and report.rows_removed["comments"] == 4  # 2 on img0 + 2 of hers
    assert alice not in (rel / "release.json").read_text() and alice not in (rel / "README.md").read_text()


def test_bare_ids_shared_media_and_an_emptied_split(built: Built, tmp_path: Path) -> None:
    rel = built.release
    assert "test" in read_manifest(rel).configs["instructions"].splits
    # img2 and img3 show the same file: it stays while one of them is left
    r1 = takedown(rel, ids_file(tmp_path, "t3_img2", "vid1bbbbbbb"), now=WHEN, check=False)
    assert r1.items_removed == 2 and r1.not_found == 0
    uids = {r["uid"] for r in rows(rel, "instructions")}
    assert "reddit:img2" not in uids and "youtube:vid1bbbbbbb" not in uids and "reddit:img3" in uids
    assert (rel / "media/cc/shared.jpg").exists() and not (rel / "media/frames/ee/vid1.npy").exists()
    # img3 was the only test item: every config loses its test split, the card and load_dataset follow
    r2 = takedown(rel, ids_file(tmp_path, "https://redd.it/img3"), now=WHEN, check=False)
    assert r2.items_removed == 1 and r2.media_removed == 1 and not (rel / "media/cc").exists()
    manifest = read_manifest(rel)
    assert all("test" not in cfg.splits for cfg in manifest.configs.values())
    assert not list((rel / "data").rglob("test-*.parquet"))
    for c in front_matter(rel)["configs"]:
        assert [d["split"] for d in c["data_files"]] == ["train"], c
    loaded = datasets.load_dataset(str(rel), name="instructions", cache_dir=str(tmp_path / "hf"))
    assert list(loaded) == ["train"] and loaded["train"].num_rows == manifest.configs["instructions"].rows
    assert [t.items_removed for t in manifest.takedowns] == [2, 1]


def test_a_second_identical_takedown_changes_nothing(built: Built, tmp_path: Path) -> None:
    path = ids_file(tmp_path, "reddit:img1", f"author:{author_hash('dave')}")
    first = takedown(built.release, path, now=WHEN, check=False)
    assert first.recorded and first.items_removed == 2  # img1, and dave's post img3
    before = snapshot(built.release)
    again = takedown(built.release, path, now=datetime(2026, 1, 1, tzinfo=timezone.utc), check=False)
    assert not again.changed and not again.recorded
    assert again.items_removed == 0 and again.media_removed == 0 and not any(again.rows_removed.values())
    assert again.not_found == 2
    assert snapshot(built.release) == before
    assert len(read_manifest(built.release).takedowns) == 1
    assert "nothing to remove" in again.summary_lines()[0]


def test_a_failure_half_way_leaves_the_old_release(built: Built, tmp_path: Path, monkeypatch) -> None:
    before = snapshot(built.release)

    def broken_card(release_dir: Path, **_: object) -> Path:
        raise RuntimeError("disk full while rendering the card")

    monkeypatch.setattr(card_module, "write_card", broken_card)
    with pytest.raises(RuntimeError, match="disk full"):
        takedown(built.release, ids_file(tmp_path, "reddit:img0"), check=False)
    assert snapshot(built.release) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release", "run", "takedown.txt"]


def test_a_swap_cut_between_its_two_renames_is_recovered(built: Built, tmp_path: Path) -> None:
    before = snapshot(built.release)
    old = tmp_path / ".release.takedown-old-123-456"
    built.release.rename(old)  # what a crash after the first rename leaves
    (tmp_path / ".release.takedown-new-123-456" / "release").mkdir(parents=True)  # and its staging folder
    recover(built.release)
    assert snapshot(built.release) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release", "run"]
    report = takedown(built.release, ids_file(tmp_path, "reddit:img1"), check=False)
    assert report.items_removed == 1


def test_not_a_release(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    with pytest.raises(Exception, match="release.json"):
        takedown(tmp_path, ids_file(tmp_path, "reddit:x"))
