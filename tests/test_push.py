"""`blift push`: a release goes to a stand-in Hub through the real huggingface_hub client, and
`datasets.load_dataset(repo_id)` reads it back; resume, append, retries, privacy and prune.

The pushes run in a child process: huggingface_hub reads HF_HUB_OFFLINE / HF_ENDPOINT /
HF_HUB_DISABLE_XET at import, and the test session is offline (conftest) on purpose.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from blift.errors import CredentialError
from blift.release.push import PushError, push_release
from blift.release.writer import release
from release_runs import build_run, uids_covering_all_splits
from servers.hub_server import HubServer  # noqa: E402

TOKEN = "hf_test_token"
FAST_RETRY = {"attempts": 3, "initial_s": 0.01, "max_s": 0.05}

_PUSH_CHILD = textwrap.dedent("""
    import dataclasses, json, sys
    from blift.errors import BliftError
    from blift.release.push import RetryPolicy, push_release
    args = json.loads(sys.argv[1])
    args["retry"] = RetryPolicy(**args.pop("retry"))
    try:
        report = push_release(args.pop("release_dir"), args.pop("repo_id"), **args)
        print(json.dumps({"report": dataclasses.asdict(report)}))
    except BliftError as exc:
        print(json.dumps({"error": str(exc), "type": type(exc).__name__}))
""")

_LOAD_CHILD = textwrap.dedent("""
    import json, sys
    import datasets
    datasets.disable_progress_bars()
    repo_id, local, configs, cache = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
    out = {}
    for config in configs:
        hub = datasets.load_dataset(repo_id, name=config, cache_dir=cache + "/hub")
        mine = datasets.load_dataset(local, name=config, cache_dir=cache + "/local") if local else None
        out[config] = {split: {"rows": ds.to_list(),
                               "same": None if mine is None else ds.to_list() == mine[split].to_list()}
                       for split, ds in hub.items()}
        if mine is not None:
            out[config]["__splits_equal__"] = sorted(hub) == sorted(mine)
    print(json.dumps(out, default=str))
""")


def _hub_env(hub: HubServer, home: Path) -> dict[str, str]:
    return dict(os.environ, HF_ENDPOINT=hub.endpoint, HF_HUB_DISABLE_XET="1", HF_HUB_OFFLINE="0",
                HF_DATASETS_OFFLINE="0", HF_HOME=str(home), HF_TOKEN=TOKEN, HF_HUB_DISABLE_TELEMETRY="1")


def push(hub: HubServer, release_dir: Path, repo_id: str, tmp: Path, **kwargs: Any) -> dict[str, Any]:
    """push_release in a child pointed at the stand-in Hub; returns the report as a dict (or raises PushError)."""
    args = {"release_dir": str(release_dir), "repo_id": repo_id, "endpoint": hub.endpoint, "progress": False,
            "retry": FAST_RETRY, **kwargs}
    proc = subprocess.run([sys.executable, "-c", _PUSH_CHILD, json.dumps(args)], env=_hub_env(hub, tmp / "hf-home"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if "error" in result:
        raise PushError(f"{result['type']}: {result['error']}")
    return result["report"]


def load_from_hub(hub: HubServer, repo_id: str, configs: list[str], tmp: Path, local: Path | None = None) -> dict:
    proc = subprocess.run([sys.executable, "-c", _LOAD_CHILD, repo_id, str(local or ""), json.dumps(configs),
                           str(tmp / "load-cache")], env=_hub_env(hub, tmp / "hf-home-load"),
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def local_files(release_dir: Path) -> dict[str, bytes]:
    return {p.relative_to(release_dir).as_posix(): p.read_bytes() for p in release_dir.rglob("*") if p.is_file()}


def make_release(base: Path, name: str, uids: list[str], **kwargs: Any) -> Path:
    build_run(base / f"run-{name}", uids)
    release(base / f"run-{name}", base / name, check=False, **kwargs)
    return base / name


def commits_of(hub: HubServer, repo_id: str, since: int = 0) -> list[Any]:
    return [r for r in hub.log("commit", repo_id)[since:] if r.status == 200]


@pytest.fixture(scope="module")
def hub():
    with HubServer(tokens={TOKEN: "tester"}, page_size=7) as server:  # small pages: listings paginate
        yield server


@pytest.fixture(scope="module")
def small_release(tmp_path_factory):
    base = tmp_path_factory.mktemp("push-rel")
    uids = uids_covering_all_splits({"train": 8, "validation": 2, "test": 2})
    return make_release(base, "rel", uids)


# --------------------------------------------------------------------------- push, load, rerun


@pytest.mark.slow
def test_push_then_load_dataset_from_the_hub_gives_the_same_rows(hub, small_release, tmp_path):
    repo = "tester/blift-small"
    report = push(hub, small_release, repo, tmp_path, max_files_per_commit=4)
    files = local_files(small_release)
    assert (small_release / "release.json").is_file() and any(p.startswith("media/") for p in files)
    # every release file is on the Hub with the same bytes (the repo also has the Hub's .gitattributes)
    on_hub = hub.repo(repo).files()
    assert {p: b for p, b in on_hub.items() if p != ".gitattributes"} == files
    assert report["created"] and sorted(report["uploaded"]) == sorted(files) and report["skipped"] == []
    assert report["bytes_uploaded"] == sum(len(b) for b in files.values())

    commits = commits_of(hub, repo)
    assert [c.detail["oid"] for c in commits] == report["commits"]
    paths_per_commit = [[p for _, p in c.detail["ops"]] for c in commits]
    assert all(0 < len(ps) <= 4 for ps in paths_per_commit[:-1])
    # the card and the manifest come last, alone: a half-pushed repo advertises nothing it lacks
    assert sorted(paths_per_commit[-1]) == ["README.md", "release.json"]
    assert not any(p in ("README.md", "release.json") for ps in paths_per_commit[:-1] for p in ps)
    first_data = min(i for i, ps in enumerate(paths_per_commit) if any(p.startswith("data/") for p in ps))
    last_media = max(i for i, ps in enumerate(paths_per_commit) if any(p.startswith("media/") for p in ps))
    assert last_media <= first_data  # media before the rows that point at it
    # each commit named the head it was made on
    assert commits[0].detail["parent"] is not None
    assert [c.detail["parent"] for c in commits[1:]] == [c.detail["oid"] for c in commits[:-1]]
    assert all(r.status == 200 for r in hub.log("lfs-upload", repo))

    configs = json.loads((small_release / "release.json").read_text())["configs"]
    loaded = load_from_hub(hub, repo, sorted(configs), tmp_path, local=small_release)
    for config, splits in loaded.items():
        assert splits.pop("__splits_equal__") is True, config
        assert splits, config
        for split, got in splits.items():
            assert got["same"] is True, (config, split)
            assert len(got["rows"]) == configs[config]["splits"][split]["rows"]
    assert hub.log("resolve", repo), "load_dataset read the files through the Hub's resolve endpoint"

    # a second push finds everything in place: no commit, no upload
    before_commits, before_puts = len(hub.log("commit", repo)), len(hub.log("lfs-upload", repo))
    again = push(hub, small_release, repo, tmp_path, max_files_per_commit=4)
    assert again["uploaded"] == [] and again["commits"] == [] and not again["created"]
    assert sorted(again["skipped"]) == sorted(files)
    assert len(hub.log("commit", repo)) == before_commits and len(hub.log("lfs-upload", repo)) == before_puts


@pytest.mark.slow
def test_interrupted_push_resumes_without_sending_anything_twice(hub, small_release, tmp_path):
    repo = "tester/blift-resume"
    hub.inject("commit", nth=2, status=503, times=None)  # the Hub fails from the 2nd commit on
    hub.inject("lfs-upload", nth=1, mode="drop")  # and drops the first upload half way
    with pytest.raises(PushError, match=r"stopped after 1 commit.*rerun"):
        push(hub, small_release, repo, tmp_path, max_files_per_commit=5)
    hub.clear_faults()
    first_commits = commits_of(hub, repo)
    assert (len(first_commits) == 1
            and len([r for r in hub.log("commit", repo) if r.status == 503]) == FAST_RETRY["attempts"])
    committed_first = {p for _, p in first_commits[0].detail["ops"]}
    assert len(committed_first) == 5
    dropped = [r for r in hub.log("lfs-upload", repo) if r.status == 0]
    assert len(dropped) == 1  # huggingface_hub sent that one again itself
    n_log = len(hub.log(repo_id=repo))

    report = push(hub, small_release, repo, tmp_path, max_files_per_commit=5)
    files = local_files(small_release)
    assert {p: b for p, b in hub.repo(repo).files().items() if p != ".gitattributes"} == files
    assert set(report["skipped"]) == committed_first
    assert set(report["uploaded"]) == set(files) - committed_first
    resumed_ops = [p for c in commits_of(hub, repo)[1:] for _, p in c.detail["ops"]]
    assert sorted(resumed_ops) == sorted(set(files) - committed_first)  # each missing file committed once
    # no LFS object was sent twice across both runs (the 2nd batch's content went up before its commit failed)
    ok_puts = [r.detail for r in hub.log("lfs-upload", repo) if r.status == 200]
    assert len(ok_puts) == len(set(ok_puts))
    resumed_puts = [r for r in hub.log(repo_id=repo)[n_log:] if r.action == "lfs-upload"]
    assert len(resumed_puts) < len(ok_puts)


# --------------------------------------------------------------------------- append


@pytest.mark.slow
def test_append_renumbers_every_shard_of_the_split_in_one_commit(hub, tmp_path):
    repo = "tester/blift-append"
    uids = uids_covering_all_splits({"train": 12, "validation": 0, "test": 0})
    first = make_release(tmp_path, "first", uids[:6], max_shard_bytes=1500)
    later = make_release(tmp_path, "later", uids[6:], max_shard_bytes=1500)
    configs = sorted(json.loads((first / "release.json").read_text())["configs"])
    first_shards = {c: sorted((first / "data" / c).glob("train-*")) for c in configs}
    later_shards = {c: sorted((later / "data" / c).glob("train-*")) for c in configs}
    assert len(first_shards["instructions"]) >= 2 and all(later_shards.values())
    push(hub, first, repo, tmp_path)
    n_commits = len(commits_of(hub, repo))

    report = push(hub, later, repo, tmp_path, append=True)
    new_commits = commits_of(hub, repo)[n_commits:]
    data_commits = [c for c in new_commits if any(p.startswith("data/") for _, p in c.detail["ops"])]
    assert len(data_commits) == 1  # the whole renumbering and the card: one commit
    ops = data_commits[0].detail["ops"]
    assert ("file", "README.md") in ops and ("file", "release.json") in ops
    on_hub = hub.repo(repo).files()
    manifest = json.loads(on_hub["release.json"])
    new_names = []
    for c in configs:
        total = len(first_shards[c]) + len(later_shards[c])
        names = [f"data/{c}/train-{i:05d}-of-{total:05d}.parquet" for i in range(total)]
        assert sorted(p for p in on_hub if p.startswith(f"data/{c}/")) == names
        # the Hub's shards keep their order, the new ones follow
        assert [on_hub[n] for n in names] == [p.read_bytes() for p in first_shards[c] + later_shards[c]]
        new_names += names[len(first_shards[c]):]
        rows = [json.loads((r / "release.json").read_text())["configs"][c]["splits"]["train"]["rows"]
                for r in (first, later)]
        assert manifest["configs"][c]["splits"]["train"] == {"rows": sum(rows), "files": names}
    assert sorted(report["renamed"]) == sorted(f"data/{c}/{p.name}" for c in configs for p in first_shards[c])
    uploaded = report["uploaded"]
    assert sorted(p for p in uploaded if p.startswith("data/")) == sorted(new_names)
    assert {"README.md", "release.json"} <= set(uploaded)
    first_media = {p for p in local_files(first) if p.startswith("media/")}
    assert {p for p in uploaded if p.startswith("media/")} == (
        {p for p in local_files(later) if p.startswith("media/")} - first_media)
    # renames are server-side copies: no shard of the first release was uploaded again
    first_oids = {hashlib.sha256(p.read_bytes()).hexdigest() for ps in first_shards.values() for p in ps}
    puts = [r.detail for r in hub.log("lfs-upload", repo) if r.status == 200]
    assert all(puts.count(oid) == 1 for oid in first_oids)

    loaded = load_from_hub(hub, repo, ["instructions"], tmp_path)
    ids = [r["id"] for r in loaded["instructions"]["train"]["rows"]]
    shards = first_shards["instructions"] + later_shards["instructions"]
    assert ids == [r["id"] for p in shards for r in pq.read_table(p, columns=["id"]).to_pylist()]
    assert len(ids) == manifest["configs"]["instructions"]["splits"]["train"]["rows"]

    # appending the same release again finds nothing new
    again = push(hub, later, repo, tmp_path, append=True)
    assert again["commits"] == [] and again["renamed"] == {}
    assert any("nothing was appended" in w for w in again["warnings"])


# --------------------------------------------------------------------------- retries, privacy, prune


@pytest.mark.slow
def test_stale_parent_412_and_a_409_are_retried_with_a_fresh_parent(hub, small_release, tmp_path):
    repo = "tester/blift-race"
    hub.inject("commit", nth=1, mode="concurrent_commit")  # another writer commits just before our first commit
    hub.inject("commit", nth=3, status=409)  # and a conflict later
    try:
        report = push(hub, small_release, repo, tmp_path, max_files_per_commit=10)
    finally:
        hub.clear_faults()
    log = hub.log("commit", repo)
    assert [r.status for r in log[:4]] == [412, 200, 409, 200]
    assert log[0].detail["parent"] != log[1].detail["parent"]  # the retry named the new head
    concurrent = [p for p in hub.repo(repo).files() if p.startswith(".concurrent/")]
    assert len(concurrent) == 1  # the other writer's file survived: nothing overwritten
    assert report["retries"] == 2
    assert ({p: b for p, b in hub.repo(repo).files().items() if p in local_files(small_release)}
            == local_files(small_release))


@pytest.mark.slow
def test_private_flag_reaches_the_hub_and_is_never_downgraded(hub, small_release, tmp_path):
    push(hub, small_release, "tester/blift-private", tmp_path, private=True, max_files_per_commit=100)
    assert hub.repo("tester/blift-private").private
    create = [r for r in hub.log("create", "tester/blift-private") if r.status == 200]
    assert create[0].detail["visibility"] == "private"
    with pytest.raises(urllib.error.HTTPError) as err:  # anonymous readers do not see it
        urllib.request.urlopen(f"{hub.endpoint}/api/datasets/tester/blift-private", timeout=10)
    assert err.value.code == 401

    push(hub, small_release, "tester/blift-public", tmp_path, max_files_per_commit=100)
    n = len(hub.log(repo_id="tester/blift-public"))
    with pytest.raises(PushError, match="public.*private=True"):
        push(hub, small_release, "tester/blift-public", tmp_path, private=True)
    assert not [r for r in hub.log(repo_id="tester/blift-public")[n:] if r.action in ("commit", "lfs-upload")]
    with pytest.raises(PushError, match="refused the token.*write access"):
        push(hub, small_release, "tester/blift-other", tmp_path, token="hf_not_a_token")


@pytest.mark.slow
def test_superseded_shards_always_go_and_prune_deletes_what_the_release_dropped(hub, tmp_path):
    repo = "tester/blift-prune"
    uids = uids_covering_all_splits({"train": 10, "validation": 0, "test": 0})
    rel = make_release(tmp_path, "rel", uids, max_shard_bytes=1500)
    push(hub, rel, repo, tmp_path)
    before = set(hub.repo(repo).files())
    old_train = sorted(p for p in before if p.startswith("data/instructions/train-"))

    # a smaller release into the same folder (as after a takedown): fewer items, no comments config
    build_run(tmp_path / "run-small", uids[:4])
    release(tmp_path / "run-small", rel, check=False, max_shard_bytes=1500,
            configs={"instructions": "instructions", "items": "items_clean"})
    now = local_files(rel)
    new_train = sorted(p for p in now if p.startswith("data/instructions/train-"))
    assert new_train != old_train
    dropped_media = {p for p in before if p.startswith("media/")} - set(now)
    assert dropped_media and any(p.startswith("data/comments/") for p in before)

    report = push(hub, rel, repo, tmp_path)
    on_hub = set(hub.repo(repo).files())
    # shards of splits the release holds are replaced whole, so the split never mixes old and new rows
    assert sorted(p for p in on_hub if p.startswith("data/instructions/train-")) == new_train
    assert set(old_train) - set(new_train) <= set(report["deleted"])
    # without prune, files the release no longer has elsewhere stay
    assert dropped_media <= on_hub and any(p.startswith("data/comments/") for p in on_hub)

    report = push(hub, rel, repo, tmp_path, prune=True)
    on_hub = set(hub.repo(repo).files())
    assert ({p for p in on_hub if p.split("/")[0] in ("data", "media")}
            == {p for p in now if p.split("/")[0] in ("data", "media")})
    assert dropped_media <= set(report["deleted"]) and report["uploaded"] == []
    assert len(report["commits"]) == 1
    assert {p: b for p, b in hub.repo(repo).files().items() if p != ".gitattributes"} == now


# --------------------------------------------------------------------------- refusals (no network needed)


def test_refusals_before_any_request(small_release, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with pytest.raises(CredentialError, match="hf auth login"):
        push_release(small_release, "tester/x", endpoint="http://127.0.0.1:9")
    with pytest.raises(PushError, match="not a release"):
        push_release(tmp_path, "tester/x", token=TOKEN)
    with pytest.raises(PushError, match="append .* prune"):
        push_release(small_release, "tester/x", token=TOKEN, append=True, prune=True)
    # the session is offline (conftest): the push says so instead of failing on the first request
    with pytest.raises(PushError, match="HF_HUB_OFFLINE"):
        push_release(small_release, "tester/x", token=TOKEN, endpoint="http://127.0.0.1:9")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "data").mkdir()
    (broken / "README.md").write_text("---\nconfigs: [unclosed\n---\n# card\n")
    with pytest.raises(PushError, match="README.md: invalid YAML"):
        push_release(broken, "tester/x", token=TOKEN)
