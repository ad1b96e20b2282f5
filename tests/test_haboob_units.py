"""Haboob's pure parts, without an event loop: the page cache and safe path resolution."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from examples.haboob.cache import PageCache
from examples.haboob.static import (
    Page,
    Refused,
    content_type,
    load,
    not_modified,
    parse_target,
)

# -- the page cache ------------------------------------------------------------------------


def test_cache_hits_misses_and_lru_order() -> None:
    cache: PageCache[str] = PageCache(100, max_item=50)
    assert cache.get("/a") is None
    assert cache.put("/a", "A", 40) and cache.put("/b", "B", 40)
    assert cache.get("/a") == "A"  # /a is now the most recently used
    assert cache.put("/c", "C", 40)  # 120 > 100: evicts the least recently used, /b
    assert cache.keys() == ["/a", "/c"] and "/b" not in cache
    s = cache.stats()
    assert (s.hits, s.misses, s.inserts, s.evictions, s.evicted_bytes) == (1, 1, 3, 1, 40)
    assert (s.bytes, s.items, s.hit_ratio) == (80, 2, 0.5)
    assert "hits 1 (50.0%)" in str(s)


def test_cache_evicts_as_many_as_needed_and_never_exceeds_capacity() -> None:
    cache: PageCache[int] = PageCache(100, max_item=100)
    for i in range(10):
        cache.put(f"/{i}", i, 10)
    assert cache.bytes == 100 and len(cache) == 10
    cache.put("/big", -1, 95)  # evicts ten items of 10 bytes: only 5 bytes may stay
    assert cache.keys() == ["/big"] and cache.bytes == 95
    assert cache.stats().evictions == 10
    cache.discard("/big")
    for i in range(200):
        cache.put(f"/x{i}", i, 1 + i % 37)
        assert cache.bytes <= cache.capacity
        assert cache.bytes == sum(1 + int(k[2:]) % 37 for k in cache.keys())  # noqa: SIM118 - LRU order


def test_cache_item_cap_protects_the_cache() -> None:
    cache: PageCache[str] = PageCache(100, max_item=30)
    cache.put("/a", "A", 30)
    cache.put("/b", "B", 30)
    assert not cache.put("/huge", "H", 31)  # refused: nothing evicted
    assert cache.keys() == ["/a", "/b"] and cache.stats().too_large == 1
    assert not cache.put("/a", "A2", 31)  # a new version too large drops the stale one
    assert "/a" not in cache and cache.bytes == 30


def test_cache_replace_discard_peek_and_zero_capacity() -> None:
    cache: PageCache[str] = PageCache(100)
    assert cache.max_item == 12  # capacity // 8 by default
    cache.put("/a", "A", 10)
    cache.put("/a", "A2", 12)  # a replacement: the old size is given back
    assert cache.bytes == 12 and cache.peek("/a") == "A2"
    assert cache.stats().hits == 0  # peek counts nothing
    cache.discard("/a")
    cache.discard("/missing")
    assert cache.bytes == 0 and len(cache) == 0
    empty: PageCache[str] = PageCache(0)
    assert not empty.put("/a", "A", 1) and empty.put("/empty", "", 0)
    with pytest.raises(ValueError, match="larger than the capacity"):
        PageCache(10, max_item=11)
    with pytest.raises(ValueError, match="must be >= 0"):
        PageCache(-1)
    with pytest.raises(ValueError, match="must be >= 0"):
        cache.put("/neg", "x", -1)


# -- request targets -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("/", "/"),
        ("/index.html", "/index.html"),
        ("/a/b?x=1", "/a/b"),
        ("//etc/passwd", "/etc/passwd"),  # an absolute-looking path stays below the root
        ("/a/./b", "/a/b"),
        ("/a/b/", "/a/b/"),
        ("/a/.", "/a/"),
        ("/caf%C3%A9%20menu.txt", "/café menu.txt"),
        ("http://example.com/a/b", "/a/b"),
        ("HTTP://example.com", "/"),
    ],
)
def test_parse_target_accepts(raw: str, key: str) -> None:
    assert parse_target(raw).key == key


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("/../etc/passwd", 400),
        ("/a/../../etc/passwd", 400),
        ("/%2e%2e/etc/passwd", 400),
        ("/%2E%2E%2Fetc%2Fpasswd", 400),
        ("/a%2Fb", 400),
        ("/a%2fb", 400),
        ("/a\\..\\b", 400),
        ("/a%5c..%5cb", 400),
        ("/a%00.html", 400),
        ("/a%0d%0ab", 400),
        ("/a%zz", 400),
        ("/a%4", 400),
        ("/caf%E9", 400),  # Latin-1, not UTF-8
        ("/a#frag", 400),
        ("*", 400),
        ("etc/passwd", 400),
        ("/.git/config", 404),
        ("/a/.env", 404),
        ("/%2egit/config", 404),
    ],
)
def test_parse_target_refuses(raw: str, status: int) -> None:
    with pytest.raises(Refused) as caught:
        parse_target(raw)
    assert caught.value.status == status


def test_hidden_names_may_be_allowed() -> None:
    assert parse_target("/.well-known/x", allow_hidden=True).key == "/.well-known/x"


def test_content_types() -> None:
    assert content_type("index.html") == "text/html; charset=utf-8"
    assert content_type("LOGO.PNG") == "image/png"
    assert content_type("class1_4") == "application/octet-stream"  # SPECweb99: no extension
    assert content_type("archive.unknown") == "application/octet-stream"


# -- loading files -------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> tuple[str, Path]:
    """A document root with files, a directory, symlinks in and out, and a secret outside."""
    root = tmp_path / "root"
    (root / "docs").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "index.html").write_bytes(b"<h1>home</h1>")
    (root / "docs" / "index.html").write_bytes(b"<h1>docs</h1>")
    (root / "data.bin").write_bytes(bytes(range(256)))
    (tmp_path / "secret.txt").write_bytes(b"top secret")
    (root / "inside-link.html").symlink_to(root / "index.html")
    (root / "outside-link").symlink_to(tmp_path / "secret.txt")
    (root / "outside-dir").symlink_to(tmp_path)
    return os.path.realpath(root), tmp_path


def _load(tree: tuple[str, Path], raw: str, **options: int) -> Page:
    return load(tree[0], parse_target(raw), **options)


def test_load_a_file(tree: tuple[str, Path]) -> None:
    page = _load(tree, "/data.bin")
    assert page.body == bytes(range(256)) and page.size == 256
    assert page.content_type == "application/octet-stream" and page.key == "/data.bin"
    assert page.etag.startswith('"100-') and page.last_modified.endswith("GMT")


def test_load_directories(tree: tuple[str, Path]) -> None:
    assert _load(tree, "/").body == b"<h1>home</h1>"
    assert _load(tree, "/docs/").body == b"<h1>docs</h1>"
    assert _load(tree, "/docs/").content_type.startswith("text/html")
    with pytest.raises(Refused) as caught:
        _load(tree, "/docs?x=1")
    assert (caught.value.status, caught.value.location) == (301, "/docs/?x=1")
    with pytest.raises(Refused) as caught:
        _load(tree, "/empty/")  # no index, no listing
    assert caught.value.status == 403


def test_load_symlinks(tree: tuple[str, Path]) -> None:
    assert _load(tree, "/inside-link.html").body == b"<h1>home</h1>"  # followed: inside
    for raw in ("/outside-link", "/outside-dir/secret.txt", "/outside-dir/"):
        with pytest.raises(Refused) as caught:
            _load(tree, raw)
        assert caught.value.status == 404, raw


def test_load_refuses_missing_special_and_large_files(tree: tuple[str, Path]) -> None:
    root, _ = tree
    with pytest.raises(Refused) as caught:
        _load(tree, "/missing.html")
    assert caught.value.status == 404
    with pytest.raises(Refused) as caught:
        _load(tree, "/data.bin/x")  # a file used as a directory
    assert caught.value.status == 404
    os.mkfifo(os.path.join(root, "fifo"))
    with pytest.raises(Refused) as caught:
        _load(tree, "/fifo")  # would block a thread forever if opened for reading
    assert caught.value.status == 403
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(os.path.join(root, "sock"))
        with pytest.raises(Refused) as caught:
            _load(tree, "/sock")
        assert caught.value.status in (403, 404)
    with pytest.raises(Refused) as caught:
        _load(tree, "/data.bin", max_bytes=255)
    assert (caught.value.status, caught.value.reason) == (403, "too large to serve")


def test_conditional_get(tree: tuple[str, Path]) -> None:
    page = _load(tree, "/data.bin")
    assert not_modified(page, page.etag, None)
    assert not_modified(page, f'"other", W/{page.etag}', None)
    assert not_modified(page, "*", None)
    assert not not_modified(page, '"other"', None)
    assert not_modified(page, None, page.last_modified)
    assert not not_modified(page, None, "Thu, 01 Jan 1970 00:00:00 GMT")
    assert not not_modified(page, None, "not a date")
    assert not not_modified(page, None, None)
    assert not not_modified(page, '"other"', page.last_modified)  # If-None-Match wins
