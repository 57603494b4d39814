"""media.download against a real HTTP server on 127.0.0.1 (tests/servers/media_server.py).

Images are made with Pillow at test time; every assertion about retries, waits and spacing is
made on the server's own request log, never on the test's wall clock.
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import pickle
import random
import socket
import struct
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pydantic import ValidationError

from blift import schemas
from blift.collect.media.download import DownloadStage
from blift.collect.media.http_fetch import (
    AddressGuard,
    BlockedAddress,
    Fetcher,
    FetchPolicy,
    HostRateLimiter,
    blocked_kind,
    parse_retry_after,
)
from blift.collect.media.store import header_size, sniff_mime
from blift.errors import ErrorClass, TransientError
from blift.stage import ShardInput
from servers.media_server import MediaServer, Reply

# --------------------------------------------------------------------------- media made here


def noise_image(size: tuple[int, int], seed: int, fmt: str, **save: Any) -> bytes:
    """A random-pixel image: incompressible, so truncation really cuts pixel data."""
    rng = random.Random(seed)
    img = Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


@pytest.fixture(scope="module")
def media() -> dict[str, bytes]:
    big_jpeg = noise_image((256, 256), 7, "JPEG", quality=90)
    bomb = io.BytesIO()
    Image.new("1", (16000, 16000)).save(bomb, "PNG")  # 256 Mpx of zeros: ~30 KB on the wire
    palette = io.BytesIO()
    Image.new("P", (3000, 3000)).save(palette, "PNG")  # 9 Mpx, ~1 KB
    gif = io.BytesIO()
    Image.new("P", (20, 10), 3).save(gif, "GIF")
    return {
        "jpeg": noise_image((64, 48), 1, "JPEG"),
        "jpeg2": noise_image((40, 30), 2, "JPEG"),
        "png": noise_image((32, 16), 3, "PNG"),
        "webp": noise_image((24, 24), 4, "WEBP"),
        "bmp": noise_image((10, 12), 5, "BMP"),
        "gif": gif.getvalue(),
        "truncated_jpeg": big_jpeg[: len(big_jpeg) // 2],
        "bomb_png": bomb.getvalue(),
        "palette_9mpx_png": palette.getvalue(),
        "html": b"<!DOCTYPE html><html><body>Sorry, this image was removed</body></html>",
    }


@pytest.fixture
def server() -> MediaServer:
    with MediaServer() as srv:
        yield srv


def make_stage(run_dir: Path, **overrides: Any) -> DownloadStage:
    """A stage configured for fast tests on loopback (callers override what they test)."""
    opts: dict[str, Any] = dict(
        allow_private_addresses=True,
        per_host_rps=0,
        connect_timeout_s=2,
        read_timeout_s=5,
        retries=2,
        backoff_s=0.01,
        max_retry_after_s=5,
    )
    opts.update(overrides)
    stage = DownloadStage(DownloadStage.Config(**opts), run_dir=run_dir)
    stage.setup()
    return stage


def item(uid: str, kind: str | None, urls: list[str] | None, url: str | None = None) -> dict[str, Any]:
    """An items row (validated against schemas/items.yaml, as the stage receives it)."""
    row = {
        "uid": f"reddit:{uid}",
        "platform": "reddit",
        "item_id": uid,
        "source": "api",
        "url": url if url is not None else (urls[0] if urls else None),
        "collected_at": datetime(2026, 11, 1, tzinfo=timezone.utc),
        "media_kind": kind,
        "media_urls": urls,
    }
    return schemas.get("items").from_rows([row]).to_pylist()[0]


def run(stage: DownloadStage, *items: dict[str, Any]) -> list[dict[str, Any]]:
    """Process items; return their media rows, checked against the media schema."""
    rows: list[dict[str, Any]] = []
    for it in items:
        rows.extend(stage.process_record(it["uid"], it).tables["media"])
    schemas.get("media").from_rows(rows)
    return rows


def one(stage: DownloadStage, url: str) -> dict[str, Any]:
    (row,) = run(stage, item("x1", "image", [url]))
    return row


# --------------------------------------------------------------------------- good images


def test_good_images_are_stored_by_content_hash(server: MediaServer, media: dict[str, bytes], tmp_path: Path) -> None:
    stage = make_stage(tmp_path)
    cases = [
        ("jpeg", "image/jpeg", "jpg", (64, 48)),
        ("png", "image/png", "png", (32, 16)),
        ("webp", "image/webp", "webp", (24, 24)),
        ("bmp", "image/bmp", "bmp", (10, 12)),
        ("gif", "image/gif", "gif", (20, 10)),
    ]
    for i, (name, mime, ext, (w, h)) in enumerate(cases):
        # the Content-Type lies on purpose: the MIME must come from the bytes
        url = server.image(f"/i/{name}", media[name], content_type="application/octet-stream")
        (row,) = run(stage, item(f"good{i}", "image", [url]))
        sha = hashlib.sha256(media[name]).hexdigest()
        assert row["status"] == "ok", row
        assert (row["mime"], row["width"], row["height"]) == (mime, w, h)
        assert row["sha256"] == sha and row["bytes"] == len(media[name])
        assert row["path"] == f"media_files/{sha[:2]}/{sha}.{ext}"
        assert (tmp_path / row["path"]).read_bytes() == media[name]
        assert row["reason"] is None and row["error"] is None
    assert server.hits[0].headers["User-Agent"].startswith("blift/")


def test_same_bytes_at_two_urls_are_stored_once(server: MediaServer, media: dict[str, bytes], tmp_path: Path) -> None:
    stage = make_stage(tmp_path)
    a = server.image("/a.jpg", media["jpeg"])
    b = server.image("/b/copy.jpg", media["jpeg"])
    out_a = stage.process_record("reddit:a", item("a", "image", [a]))
    out_b = stage.process_record("reddit:b", item("b", "image", [b]))
    (ra,), (rb,) = out_a.tables["media"], out_b.tables["media"]
    assert ra["status"] == rb["status"] == "ok"
    assert ra["path"] == rb["path"] and ra["sha256"] == rb["sha256"]
    assert out_a.counters["stored_new"] == 1 and out_b.counters["stored_existing"] == 1
    stored = [p for p in (tmp_path / "media_files").rglob("*") if p.is_file()]
    assert stored == [tmp_path / ra["path"]]


def test_gallery_keeps_order_and_classifies_each_entry(
    server: MediaServer, media: dict[str, bytes], tmp_path: Path
) -> None:
    stage = make_stage(tmp_path, store="files/media")
    urls = [
        server.image("/g/1", media["png"], "image/png"),
        server.image("/g/2", media["jpeg"]),
        server.url("/g/missing"),
        server.image("/g/4", media["gif"], "image/gif"),
        server.image("/g/1", media["png"], "image/png"),  # listed twice: fetched once
    ]
    rows = run(stage, item("gal", "gallery", urls))
    assert [r["index"] for r in rows] == [0, 1, 2, 3, 4]
    assert [r["url"] for r in rows] == urls
    assert [r["status"] for r in rows] == ["ok", "ok", "failed", "ok", "ok"]
    assert [r["mime"] for r in rows] == ["image/png", "image/jpeg", None, "image/gif", "image/png"]
    assert rows[2]["reason"] == "not_found"
    assert rows[0]["path"] == rows[4]["path"] and rows[0]["path"].startswith("files/media/")
    assert len(server.hits_for("/g/1")) == 1
    assert {r["uid"] for r in rows} == {"reddit:gal"}


# --------------------------------------------------------------------------- bad bodies


def test_truncated_jpeg_is_bad_image(server: MediaServer, media: dict[str, bytes], tmp_path: Path) -> None:
    row = one(make_stage(tmp_path), server.image("/cut.jpg", media["truncated_jpeg"]))
    assert (row["status"], row["reason"]) == ("failed", "bad_image")
    assert "truncated" in row["error"]
    assert row["path"] is None and not (tmp_path / "media_files").exists()


def test_decompression_bombs_are_refused_before_decoding(
    server: MediaServer, media: dict[str, bytes], tmp_path: Path
) -> None:
    assert len(media["bomb_png"]) < 100_000
    stage = make_stage(tmp_path)
    row = one(stage, server.image("/bomb.png", media["bomb_png"], "image/png"))
    assert (row["status"], row["reason"]) == ("failed", "decompression_bomb")
    assert "16000x16000" in row["error"]
    # a modest image above a configured limit: our header check, well below Pillow's own limit
    small_limit = make_stage(tmp_path, max_pixels=1_000_000)
    row = one(small_limit, server.image("/p.png", media["palette_9mpx_png"], "image/png"))
    assert (row["reason"], row["width"]) == ("decompression_bomb", None)
    assert "3000x3000" in row["error"] and "1000000" in row["error"]
    # the same file passes under the default limit
    assert one(stage, server.url("/p.png"))["status"] == "ok"


def test_html_served_as_jpeg_is_not_an_image(server: MediaServer, media: dict[str, bytes], tmp_path: Path) -> None:
    row = one(make_stage(tmp_path), server.image("/removed.jpg", media["html"], "image/jpeg"))
    assert (row["status"], row["reason"]) == ("failed", "not_an_image")
    assert "HTML" in row["error"]


@pytest.mark.parametrize("mode", ["length", "chunked"])
def test_body_over_the_cap_is_too_large(
    server: MediaServer, media: dict[str, bytes], tmp_path: Path, mode: str
) -> None:
    body = noise_image((400, 400), 9, "PNG")  # ~480 KB of valid PNG
    assert len(body) > 300_000
    url = server.route("/huge.png", Reply(body=body, content_type="image/png", mode=mode))  # type: ignore[arg-type]
    row = one(make_stage(tmp_path, max_bytes=100_000), url)
    assert (row["status"], row["reason"]) == ("failed", "too_large")
    assert ("Content-Length" in row["error"]) == (mode == "length")
    # the same chunked/lengthed body under a larger cap downloads fine
    assert one(make_stage(tmp_path, max_bytes=1_000_000), url)["status"] == "ok"


@pytest.mark.parametrize(
    ("status", "reason"), [(404, "not_found"), (410, "not_found"), (403, "forbidden"), (400, "http_400")]
)
def test_permanent_http_errors_become_failed_rows(
    server: MediaServer, tmp_path: Path, status: int, reason: str
) -> None:
    url = server.route("/gone", Reply(status=status, body=b"no", content_type="text/plain"))
    row = one(make_stage(tmp_path), url)
    assert (row["status"], row["reason"]) == ("failed", reason)
    assert str(status) in row["error"]
    assert len(server.hits_for("/gone")) == 1  # permanent: never retried


def test_redirects_are_followed(server: MediaServer, media: dict[str, bytes], tmp_path: Path) -> None:
    server.image("/real.png", media["png"], "image/png")
    url = server.route("/short", Reply(status=302, headers={"Location": "/real.png"}))
    row = one(make_stage(tmp_path), url)
    assert row["status"] == "ok" and row["url"] == url and row["mime"] == "image/png"
    assert [h.path for h in server.hits] == ["/short", "/real.png"]


# --------------------------------------------------------------------------- retries and timeouts


def test_429_retry_after_is_honoured(server: MediaServer, media: dict[str, bytes], tmp_path: Path) -> None:
    url = server.route(
        "/busy.jpg",
        Reply(status=429, headers={"Retry-After": "1"}, body=b"slow down", content_type="text/plain"),
        Reply(body=media["jpeg"], content_type="image/jpeg"),
    )
    row = one(make_stage(tmp_path, backoff_s=0.01), url)
    assert row["status"] == "ok"
    first, second = server.hits_for("/busy.jpg")
    assert second.at - first.at >= 1.0  # the wait the server asked for, not the 10 ms backoff


def test_retry_after_is_capped(server: MediaServer, media: dict[str, bytes], tmp_path: Path) -> None:
    url = server.route(
        "/busy.jpg",
        Reply(status=503, headers={"Retry-After": "3600"}),
        Reply(body=media["jpeg"], content_type="image/jpeg"),
    )
    assert one(make_stage(tmp_path, max_retry_after_s=0.3), url)["status"] == "ok"
    first, second = server.hits_for("/busy.jpg")
    assert second.at - first.at >= 0.3


def test_503_then_success(server: MediaServer, media: dict[str, bytes], tmp_path: Path) -> None:
    url = server.route("/flaky.png", Reply(status=503), Reply(status=502),
                       Reply(body=media["png"], content_type="image/png"))
    out = make_stage(tmp_path, retries=2).process_record("reddit:x1", item("x1", "image", [url]))
    assert out.tables["media"][0]["status"] == "ok"
    assert len(server.hits_for("/flaky.png")) == 3
    assert out.counters["http_retries"] == 2 and out.counters["media_ok"] == 1


def test_5xx_after_retries_raises_transient(server: MediaServer, tmp_path: Path) -> None:
    url = server.route("/down", Reply(status=503, body=b"maintenance"))
    stage = make_stage(tmp_path, retries=2)
    with pytest.raises(TransientError) as info:
        stage.process_record("reddit:x1", item("x1", "image", [url]))
    assert info.value.error_class is ErrorClass.TRANSIENT
    assert info.value.error_type == "http_503" and "3 attempts" in str(info.value)
    assert len(server.hits_for("/down")) == 3


@pytest.mark.timeout(20)
def test_endpoint_that_never_answers_is_transient(server: MediaServer, tmp_path: Path) -> None:
    url = server.route("/hang.jpg", Reply(mode="hang"))
    stage = make_stage(tmp_path, read_timeout_s=0.4, retries=1)
    with pytest.raises(TransientError) as info:
        stage.process_record("reddit:x1", item("x1", "image", [url]))
    assert info.value.error_type == "timeout"
    assert len(server.hits_for("/hang.jpg")) == 2


@pytest.mark.timeout(20)
def test_trickling_body_hits_the_total_deadline(server: MediaServer, media: dict[str, bytes], tmp_path: Path) -> None:
    # every byte arrives well within the per-read timeout; only the total deadline can stop it
    url = server.route("/slow.jpg", Reply(body=media["jpeg"], content_type="image/jpeg", mode="trickle",
                                          trickle_interval_s=0.05))
    stage = make_stage(tmp_path, read_timeout_s=0.6, retries=0)
    with pytest.raises(TransientError) as info:
        stage.process_record("reddit:x1", item("x1", "image", [url]))
    assert info.value.error_type == "timeout" and "deadline" in str(info.value)


def test_connection_refused_is_transient(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TransientError) as info:
        one(make_stage(tmp_path, retries=1), f"http://127.0.0.1:{port}/x.jpg")
    assert info.value.error_type == "connection"


# --------------------------------------------------------------------------- address guard


def test_private_addresses_are_blocked_unless_allowed(
    server: MediaServer, media: dict[str, bytes], tmp_path: Path
) -> None:
    url = server.image("/local.jpg", media["jpeg"])
    guarded = make_stage(tmp_path, allow_private_addresses=False)
    for u in (url, server.url("/local.jpg", host="localhost")):
        row = one(guarded, u)
        assert (row["status"], row["reason"]) == ("failed", "blocked_address")
        assert "loopback" in row["error"] and "not allowed" in row["error"]
    assert server.hits == []  # refused before any connection
    assert one(make_stage(tmp_path, allow_private_addresses=True), url)["status"] == "ok"


def test_redirect_targets_are_checked_again(server: MediaServer, media: dict[str, bytes], tmp_path: Path) -> None:
    server.image("/ok.jpg", media["jpeg"])
    url = server.route("/r", Reply(status=301, headers={"Location": f"http://127.0.0.2:{server.port}/ok.jpg"}))
    row = one(make_stage(tmp_path, deny_networks=["127.0.0.2/32"]), url)
    assert (row["status"], row["reason"]) == ("failed", "blocked_address")
    assert "127.0.0.2" in row["error"]
    assert [h.path for h in server.hits] == ["/r"]


def test_connections_check_their_peer_address(server: MediaServer, media: dict[str, bytes]) -> None:
    """The socket-level check that defeats DNS rebinding, seen without the pre-resolution check."""
    url = server.image("/peer.jpg", media["jpeg"])
    fetcher = Fetcher(FetchPolicy(), AddressGuard(allow_private=False), HostRateLimiter(0))
    with pytest.raises(BlockedAddress, match="127.0.0.1"):
        fetcher.session().get(url, timeout=5)
    assert server.hits == []
    open_fetcher = Fetcher(FetchPolicy(), AddressGuard(allow_private=True), HostRateLimiter(0))
    assert open_fetcher.session().get(url, timeout=5).content == media["jpeg"]
    fetcher.close()
    open_fetcher.close()


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.10", "private"),
        ("169.254.169.254", "link-local"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("100.64.0.1", "non-global"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("::ffff:127.0.0.1", "loopback"),
        ("93.184.216.34", None),
        ("2606:4700::1111", None),
    ],
)
def test_blocked_kind(address: str, kind: str | None) -> None:
    assert blocked_kind(ipaddress.ip_address(address)) == kind


# --------------------------------------------------------------------------- rate limit


@pytest.mark.timeout(30)
def test_per_host_rate_limit_spaces_requests(server: MediaServer, media: dict[str, bytes], tmp_path: Path) -> None:
    stage = make_stage(tmp_path, per_host_rps=4, threads=4)  # one request start per 0.25 s
    items = [item(f"r{i}", "image", [server.image(f"/rl/{i}.jpg", media["jpeg"])]) for i in range(8)]
    with ThreadPoolExecutor(max_workers=stage.threads()) as pool:
        outs = list(pool.map(lambda it: stage.process_record(it["uid"], it), items))
    assert all(o.tables["media"][0]["status"] == "ok" for o in outs)
    times = sorted(h.at for h in server.hits)
    assert len(times) == 8
    # The limiter hands out start slots 0.25 s apart. A request can arrive late (a slow connect)
    # but never before its slot, so the k-th arrival is at least k slots after the first one
    # (less the first request's own delay, bounded here by 0.1 s).
    late = [round(times[k] - times[0] - k * 0.25, 3) for k in range(len(times))]
    assert all(d >= -0.1 for d in late), late


# --------------------------------------------------------------------------- classification and plumbing


def test_unsupported_kinds_and_empty_items_are_skipped(server: MediaServer, tmp_path: Path) -> None:
    stage = make_stage(tmp_path)
    video = item("v", "video", None, url="https://v.redd.it/abc")
    link = item("l", "link", [server.url("/never")], url="https://example.org/article")
    text = item("t", "text", None, url=None)
    empty = item("e", "image", [], url=None)
    rows = run(stage, video, link, text, empty)
    assert [(r["uid"], r["status"], r["reason"], r["index"], r["url"]) for r in rows] == [
        ("reddit:v", "skipped", "no_media", 0, "https://v.redd.it/abc"),  # videos are fetched: none named here
        ("reddit:l", "skipped", "unsupported_kind", 0, "https://example.org/article"),
        ("reddit:t", "skipped", "unsupported_kind", 0, ""),
        ("reddit:e", "skipped", "no_media", 0, ""),
    ]
    assert server.hits == []


def test_bad_urls_are_failed_rows(tmp_path: Path) -> None:
    stage = make_stage(tmp_path)
    for url in ("ftp://example.org/x.jpg", "not a url", "http:///nohost.jpg"):
        row = one(stage, url)
        assert (row["status"], row["reason"]) == ("failed", "bad_url"), url


def test_records_come_one_per_item(tmp_path: Path) -> None:
    rows = [item("a", "image", ["http://h/a.jpg"]), item("b", "video", None), item("a", "image", ["http://h/dup.jpg"])]
    table = schemas.get("items").from_rows(rows)
    stage = DownloadStage(DownloadStage.Config(), run_dir=tmp_path)
    records = stage.records(ShardInput("part-00000", {"items": table}, tmp_path))
    assert [k for k, _ in records] == ["reddit:a", "reddit:b"]
    assert records[0][1]["media_urls"] == ["http://h/a.jpg"]


def test_config_defaults_and_validation(tmp_path: Path) -> None:
    cfg = DownloadStage.Config()
    assert (cfg.threads, cfg.retries, cfg.allow_private_addresses, cfg.store) == (4, 3, False, "media_files")
    assert cfg.max_bytes == 20 * 1024 * 1024 and cfg.max_pixels == 64_000_000 and cfg.per_host_rps == 2
    for bad in ({"store": "../elsewhere"}, {"store": "/abs"}, {"threads": 0}, {"deny_networks": ["nope"]},
                {"max_byte": 1}):
        with pytest.raises(ValidationError):
            DownloadStage.Config(**bad)
    stage = DownloadStage(cfg, run_dir=tmp_path)
    assert stage.threads() == 4
    line = stage.describe()
    assert line.startswith("media.download") and "public addresses only" in line
    assert (DownloadStage.name, DownloadStage.inputs, DownloadStage.outputs) == (
        "media.download", {"items": "items", "videos": "videos"}, {"media": "media"}
    )


def test_parse_retry_after() -> None:
    now = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now) == 90.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=90), usegmt=True), now) == 0.0
    assert parse_retry_after("soon", now) is None and parse_retry_after(None, now) is None


def test_sniffing_and_header_sizes(media: dict[str, bytes]) -> None:
    expect = {"jpeg": ("image/jpeg", (64, 48)), "png": ("image/png", (32, 16)), "webp": ("image/webp", (24, 24)),
              "bmp": ("image/bmp", (10, 12)), "gif": ("image/gif", (20, 10)), "bomb_png": ("image/png", (16000, 16000))}
    for name, (mime, size) in expect.items():
        assert sniff_mime(media[name][:32]) == mime, name
        assert header_size(media[name], mime) == size, name
    assert sniff_mime(media["html"][:32]) is None
    assert sniff_mime(b"BMsome text that is not a bitmap") is None


def lying_gif(screen: tuple[int, int], frame: tuple[int, int]) -> bytes:
    """A GIF whose logical screen is small but whose first frame claims ``frame`` pixels."""
    out = b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    out += b"\x2c" + struct.pack("<HHHHB", 0, 0, *frame, 0) + b"\x02\x02\x4c\x01\x00\x3b"
    return out


def test_pillow_decompression_bomb_error_is_a_bomb_too(server: MediaServer, tmp_path: Path) -> None:
    """Our header check reads the GIF screen size (10x10); Pillow finds the 20000x20000 frame."""
    url = server.image("/frame.gif", lying_gif((10, 10), (20000, 20000)), "image/gif")
    row = one(make_stage(tmp_path), url)
    assert (row["status"], row["reason"]) == ("failed", "decompression_bomb")
    assert "400000000 pixels" in row["error"]


@pytest.mark.timeout(20)
def test_trickling_response_head_hits_the_total_deadline(server: MediaServer, tmp_path: Path) -> None:
    # each header byte arrives within the per-read timeout; the attempt deadline must still win
    url = server.route("/slowhead.jpg", Reply(mode="trickle_head", trickle_interval_s=0.05))
    stage = make_stage(tmp_path, read_timeout_s=0.6, retries=0)
    with pytest.raises(TransientError) as info:
        stage.process_record("reddit:x1", item("x1", "image", [url]))
    assert info.value.error_type == "timeout" and "deadline" in str(info.value)


def test_stage_pickles_for_worker_processes(server: MediaServer, media: dict[str, bytes], tmp_path: Path) -> None:
    stage = make_stage(tmp_path, max_bytes=123_456)
    clone = pickle.loads(pickle.dumps(stage))
    assert clone.config == stage.config and clone.run_dir == tmp_path
    clone.setup()
    assert one(clone, server.image("/p.jpg", media["jpeg"]))["status"] == "ok"


def test_hosts_keeps_only_media_hosted_there(server: MediaServer, media: dict[str, bytes], tmp_path: Path) -> None:
    """The paper kept only images Reddit hosts itself: ``hosts: [i.redd.it]``; others are skipped,
    never fetched, and counted under other_host. A leading dot admits subdomains."""
    loopback = server.image("/a.jpg", media["jpeg"])
    stage = make_stage(tmp_path, hosts=["i.redd.it"])
    out = stage.process_record("reddit:x1", item("x1", "gallery", [loopback, "https://imgur.com/b.jpg"]))
    rows = out.tables["media"]
    assert [(r["status"], r["reason"]) for r in rows] == [("skipped", "other_host")] * 2
    assert out.counters["skipped_other_host"] == 2 and not server.hits_for("/a.jpg")  # nothing was requested
    host = loopback.split("/")[2].split(":")[0]
    assert one(make_stage(tmp_path, hosts=[host]), loopback)["status"] == "ok"
    from blift.collect.media.download import _hosted_on

    assert _hosted_on("https://i.redd.it/x.jpg", [".redd.it"]) and _hosted_on("https://redd.it/x", [".redd.it"])
    assert not _hosted_on("https://evilredd.it/x.jpg", [".redd.it"])
    assert not _hosted_on("https://i.redd.it.x/", ["i.redd.it"])
