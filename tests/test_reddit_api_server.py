"""Contract tests of the fake Reddit API: the wire protocol praw relies on, faults and hooks."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from blift.replay.reddit_api import ReplayServer, StoreError, write_post

SUB_POSTS = 130  # more than one 100-item page


def _comment(cid: str, parent: str, score: int, t: int, body: str | None = None) -> dict:
    return {"id": cid, "parent_id": parent, "body": body or f"body {cid}", "author": f"a_{cid}",
            "score": score, "created_utc": 1_710_000_000 + t}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store")
    base = 1_704_067_200  # 2024-01-01
    for i in range(SUB_POSTS):
        write_post(root, {"id": f"p{i:03d}", "subreddit": "pics", "title": f"t{i}", "author": "x",
                          "score": (i * 37) % 1000, "created_utc": base + i * 86400 // 2,
                          "url": "{{BASE_URL}}/media/a.jpg", "upvote_ratio": 0.9, "num_comments": 0})
    # A tree: 3 top-level comments; c1 has 3 replies; c1a has a reply chain 4 deep.
    comments = [
        _comment("c1", "t3_tree", 50, 1), _comment("c2", "t3_tree", 40, 2), _comment("c3", "t3_tree", 30, 3),
        _comment("c1a", "t1_c1", 9, 4), _comment("c1b", "t1_c1", 8, 5), _comment("c1c", "t1_c1", 7, 6),
        _comment("d1", "t1_c1a", 1, 7), _comment("d2", "t1_d1", 1, 8), _comment("d3", "t1_d2", 1, 9),
    ]
    write_post(root, {"id": "tree", "subreddit": "Art", "title": "tree", "author": "op", "score": 5,
                      "created_utc": base}, comments)
    (root / "media" / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


@pytest.fixture()
def server(store: Path):
    with ReplayServer(store, comment_limit=5, depth_limit=3) as srv:
        yield srv


def _token(url: str) -> dict[str, str]:
    r = requests.post(f"{url}/api/v1/access_token", auth=("id", "secret"), data={"grant_type": "client_credentials"})
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "bearer" and body["expires_in"] > 0 and body["scope"]
    return {"Authorization": f"bearer {body['access_token']}"}


def test_token_requires_basic_auth_and_api_requires_bearer(server: ReplayServer) -> None:
    assert requests.post(f"{server.url}/api/v1/access_token",
                         data={"grant_type": "client_credentials"}).status_code == 401
    r = requests.get(f"{server.url}/r/pics/top")
    assert r.status_code == 401 and "invalid_token" in r.headers["www-authenticate"]
    assert requests.get(f"{server.url}/r/pics/top", headers=_token(server.url)).status_code == 200


def test_configured_credentials_are_checked(store: Path) -> None:
    with ReplayServer(store, credentials={"good": "pw"}) as srv:
        data = {"grant_type": "client_credentials"}
        assert requests.post(f"{srv.url}/api/v1/access_token", auth=("good", "bad"), data=data).status_code == 401
        assert requests.post(f"{srv.url}/api/v1/access_token", auth=("good", "pw"), data=data).status_code == 200


def test_listing_pages_sorts_and_filters(server: ReplayServer) -> None:
    h = _token(server.url)
    first = requests.get(f"{server.url}/r/PICS/top", params={"t": "all", "limit": 500}, headers=h).json()
    assert first["kind"] == "Listing"
    page1 = [c["data"] for c in first["data"]["children"]]
    assert len(page1) == 100 and all(c["kind"] == "t3" for c in first["data"]["children"])
    assert first["data"]["after"] == page1[-1]["name"]
    second = requests.get(f"{server.url}/r/pics/top",
                          params={"t": "all", "limit": 500, "after": first["data"]["after"]}, headers=h).json()
    page2 = [c["data"] for c in second["data"]["children"]]
    assert len(page2) == SUB_POSTS - 100 and second["data"]["after"] is None
    scores = [p["score"] for p in page1 + page2]
    assert scores == sorted(scores, reverse=True)
    assert len({p["id"] for p in page1 + page2}) == SUB_POSTS
    new = requests.get(f"{server.url}/r/pics/new", params={"limit": 10}, headers=h).json()["data"]["children"]
    created = [c["data"]["created_utc"] for c in new]
    assert created == sorted(created, reverse=True) and len(created) == 10
    # "now" is an hour after the newest post; posts are 12 h apart, so t=day holds 2 of them
    day = requests.get(f"{server.url}/r/pics/top", params={"t": "day", "limit": 100}, headers=h).json()
    assert len(day["data"]["children"]) == 2
    assert requests.get(f"{server.url}/r/pics/top", params={"t": "decade"}, headers=h).status_code == 400


def test_unknown_private_banned_subreddits_and_posts(store: Path) -> None:
    with ReplayServer(store, subreddit_status={"pics": "private", "Art": "banned"}) as srv:
        h = _token(srv.url)
        r = requests.get(f"{srv.url}/r/nosuchsub/hot", headers=h, allow_redirects=False)
        assert r.status_code == 302 and "/subreddits/search" in r.headers["Location"]
        r = requests.get(f"{srv.url}/r/pics/hot", headers=h)
        assert r.status_code == 403 and r.json()["reason"] == "private"
        r = requests.get(f"{srv.url}/r/Art/hot", headers=h)
        assert r.status_code == 404 and r.json()["reason"] == "banned"
        r = requests.get(f"{srv.url}/comments/zzz999/", headers=h)
        assert r.status_code == 404 and r.json() == {"message": "Not Found", "error": 404}


def _walk(things: list[dict], out: dict) -> None:
    for thing in things:
        out.setdefault(thing["kind"], []).append(thing["data"])
        replies = thing["data"].get("replies")
        if isinstance(replies, dict):
            _walk(replies["data"]["children"], out)


def test_comment_tree_budget_and_depth_stubs(server: ReplayServer) -> None:
    h = _token(server.url)
    post, comments = requests.get(f"{server.url}/comments/tree/", params={"limit": 2048, "sort": "top"},
                                  headers=h).json()
    assert post["data"]["children"][0]["data"]["id"] == "tree"
    found: dict = {}
    _walk(comments["data"]["children"], found)
    # budget 5 in depth-first order: c1, c1a, d1 (depth 2: its reply is behind "continue"), c1b, c1c
    assert [c["id"] for c in found["t1"]] == ["c1", "c1a", "d1", "c1b", "c1c"]
    assert {c["id"]: c["depth"] for c in found["t1"]} == {"c1": 0, "c1a": 1, "d1": 2, "c1b": 1, "c1c": 1}
    stubs = {(m["parent_id"], tuple(m["children"]), m["count"]) for m in found["more"]}
    assert ("t1_d1", (), 0) in stubs  # continue this thread
    assert ("t3_tree", ("c2", "c3"), 2) in stubs  # remaining top-level siblings


def test_morechildren_returns_flat_things_with_parents(server: ReplayServer) -> None:
    h = _token(server.url)
    r = requests.post(f"{server.url}/api/morechildren/", params={"raw_json": 1}, headers=h,
                      data={"api_type": "json", "children": "c3,c2", "link_id": "t3_tree", "sort": "top"})
    body = r.json()
    assert body["json"]["errors"] == []
    things = body["json"]["data"]["things"]
    assert [(t["kind"], t["data"]["id"], t["data"]["parent_id"]) for t in things] == [
        ("t1", "c2", "t3_tree"), ("t1", "c3", "t3_tree")]
    assert all(t["data"]["replies"] == "" for t in things)
    r = requests.post(f"{server.url}/api/morechildren/", headers=h, data={"children": "c1", "link_id": "t3_nope"})
    assert r.json()["json"]["errors"]


def test_continue_thread_view(server: ReplayServer) -> None:
    h = _token(server.url)
    _, comments = requests.get(f"{server.url}/comments/tree/_/d1", params={"limit": 2048}, headers=h).json()
    children = comments["data"]["children"]
    assert len(children) == 1 and children[0]["data"]["id"] == "d1"
    found: dict = {}
    _walk(children, found)
    assert [c["id"] for c in found["t1"]] == ["d1", "d2", "d3"]


def test_base_url_substitution_media_and_rate_headers(server: ReplayServer) -> None:
    h = _token(server.url)
    r = requests.get(f"{server.url}/r/pics/new", params={"limit": 1}, headers=h)
    for name in ("x-ratelimit-remaining", "x-ratelimit-used", "x-ratelimit-reset"):
        assert name in r.headers
    url = r.json()["data"]["children"][0]["data"]["url"]
    assert url == f"{server.url}/media/a.jpg"
    media = requests.get(url)
    assert media.status_code == 200 and media.headers["Content-Type"] == "image/jpeg"
    assert media.content.startswith(b"\xff\xd8") and "x-ratelimit-used" in media.headers
    assert requests.head(url).headers["Content-Length"] == str(len(media.content))
    assert requests.get(f"{server.url}/media/missing.jpg").status_code == 404
    assert requests.get(f"{server.url}/media/..%2Fposts%2Ftree.json").status_code == 404
    used = [int(requests.get(f"{server.url}/r/pics/new", headers=h).headers["x-ratelimit-used"]) for _ in range(2)]
    assert used[1] == used[0] + 1


def test_faults_log_and_fetch_counts(server: ReplayServer) -> None:
    h = _token(server.url)
    server.faults.add("/comments/*", status=429, count=2, retry_after=3)
    statuses = [requests.get(f"{server.url}/comments/tree/", headers=h) for _ in range(3)]
    assert [r.status_code for r in statuses] == [429, 429, 200]
    assert statuses[0].headers["retry-after"] == "3" and statuses[0].headers["x-ratelimit-remaining"] == "0.0"
    server.faults.add("/r/*/hot", status=503, count=None)
    assert [requests.get(f"{server.url}/r/pics/hot", headers=h).status_code for _ in range(3)] == [503] * 3
    server.faults.clear()
    assert requests.get(f"{server.url}/r/pics/hot", headers=h).status_code == 200
    server.faults.add("/r/pics/new", delay_s=0.2, count=1)
    assert requests.get(f"{server.url}/r/pics/new", headers=h).status_code == 200
    assert server.fetch_counts == {"tree": 1}  # the two 429s are not fetches
    log = server.requests_to("/comments/*")
    assert [e.status for e in log] == [429, 429, 200] and log[0].method == "GET"
    assert server.requests_to("/api/v1/access_token", "POST")[0].form["grant_type"] == "client_credentials"


def test_store_errors_name_file_and_field(tmp_path: Path) -> None:
    write_post(tmp_path, {"id": "ok1", "subreddit": "pics"}, [
        {"id": "c1", "parent_id": "t1_missing", "body": "x"}])
    with pytest.raises(StoreError, match=r"ok1\.json: comments\[0\]: parent 't1_missing'"):
        ReplayServer(tmp_path)
    (tmp_path / "posts" / "ok1.json").write_text(json.dumps({"post": {"id": "BAD ID", "subreddit": "x"}}))
    with pytest.raises(StoreError, match=r"field 'post.id'"):
        ReplayServer(tmp_path)


def test_cli_runs_in_its_own_process_with_admin_hooks(store: Path, tmp_path: Path) -> None:
    url_file = tmp_path / "url"
    proc = subprocess.Popen([sys.executable, "-m", "blift.replay.reddit_api", str(store), "--port", "0",
                             "--url-file", str(url_file), "--fault", "/r/*/new=503x1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for _ in range(200):
            if url_file.exists() or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert url_file.exists(), proc.stderr.read().decode() if proc.poll() is not None else "no URL file"
        url = url_file.read_text().strip()
        h = _token(url)
        assert requests.get(f"{url}/r/pics/new", headers=h).status_code == 503
        assert requests.get(f"{url}/r/pics/new", headers=h).status_code == 200
        requests.post(f"{url}/__replay__/faults", json={"pattern": "/comments/*", "status": 500, "count": 1})
        assert requests.get(f"{url}/comments/tree/", headers=h).status_code == 500
        assert requests.get(f"{url}/comments/tree/", headers=h).status_code == 200
        assert requests.get(f"{url}/__replay__/fetch_counts").json() == {"tree": 1}
        log = requests.get(f"{url}/__replay__/log").json()
        assert [e["status"] for e in log if e["path"].startswith("/comments/")] == [500, 200]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0


def test_static_folder_with_ranges(store: Path, tmp_path: Path) -> None:
    """The YouTube sample's videos: served under a prefix, byte ranges as yt-dlp may ask."""
    folder = tmp_path / "videos"
    folder.mkdir()
    data = bytes(range(256)) * 40
    (folder / "clip.mp4").write_bytes(data)
    with ReplayServer(store, static={"youtube/media": folder}) as srv:
        url = f"{srv.url}/youtube/media/clip.mp4"
        full = requests.get(url, timeout=5)
        assert full.status_code == 200 and full.content == data
        assert full.headers["Content-Type"] == "video/mp4" and full.headers["Accept-Ranges"] == "bytes"
        part = requests.get(url, headers={"Range": "bytes=100-199"}, timeout=5)
        assert part.status_code == 206 and part.content == data[100:200]
        assert part.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
        tail = requests.get(url, headers={"Range": "bytes=10000-"}, timeout=5)
        assert tail.status_code == 206 and tail.content == data[10000:]
        assert requests.get(url, headers={"Range": f"bytes={len(data)}-"}, timeout=5).status_code == 416
        assert requests.get(f"{srv.url}/youtube/media/missing.mp4", timeout=5).status_code == 404
