"""The resolver: cache -> mirror -> package -> download, sha256 everywhere, one-line errors that say how to fix."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading

import pytest

from evalkit.assets import Asset, AssetSettings, AssetStore
from evalkit.errors import AssetError


def _store(tmp_path, **kw) -> AssetStore:
    return AssetStore(AssetSettings(home=str(tmp_path / "home"), **kw))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_order_cache_then_mirror_then_package(tmp_path):
    data = b"weights!"
    mirror = tmp_path / "mirror"
    (mirror / "m").mkdir(parents=True)
    (mirror / "m" / "w.bin").write_bytes(data)
    asset = Asset("m/w.bin", _sha(data))
    store = _store(tmp_path, weights_mirror=str(mirror))
    assert store.locate(asset).source == "mirror"
    store.cache_path(asset).parent.mkdir(parents=True)
    store.cache_path(asset).write_bytes(data)
    assert store.locate(asset).source == "cache"
    pkg = Asset(
        "astro.png",
        "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
        kind="data",
        package="skimage",
        resource="data/astronaut.png",
    )
    assert _store(tmp_path).locate(pkg).source == "package"


def test_wrong_sha256_names_file_where_and_fix(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "x.pth").write_bytes(b"tampered")
    asset = Asset("x.pth", _sha(b"original"))
    with pytest.raises(AssetError) as err:
        _store(tmp_path, weights_mirror=str(mirror)).fetch(asset)
    msg = str(err.value)
    assert "x.pth" in msg and "mirror" in msg and "expected" in msg and "\n" not in msg


def test_missing_file_says_where_it_looked(tmp_path):
    asset = Asset("nope/n.pth", _sha(b"n"))
    with pytest.raises(AssetError) as err:
        _store(tmp_path).fetch(asset)
    msg = str(err.value)
    assert "nope/n.pth" in msg and "EVALKIT_WEIGHTS_MIRROR" in msg and "Fix:" in msg and "\n" not in msg


@pytest.fixture
def http_root(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_verifies_and_caches(http_root, tmp_path):
    root, base = http_root
    payload = bytes(range(256)) * 1000
    (root / "w.pth").write_bytes(payload)
    asset = Asset("dl/w.pth", _sha(payload), url=f"{base}/w.pth")
    store = _store(tmp_path)
    path = store.fetch(asset, progress=False)
    assert path == store.cache_path(asset) and path.read_bytes() == payload
    assert store.locate(asset).source == "cache"


def test_download_with_wrong_digest_leaves_nothing_behind(http_root, tmp_path):
    root, base = http_root
    (root / "w.pth").write_bytes(b"upstream changed")
    asset = Asset("dl/w.pth", _sha(b"what we pinned"), url=f"{base}/w.pth")
    store = _store(tmp_path)
    with pytest.raises(AssetError, match="downloaded from .* has sha256"):
        store.fetch(asset, progress=False)
    assert not store.cache_path(asset).exists()
    assert not list(store.cache_path(asset).parent.glob(".part-*"))


def test_unpinned_download_is_pinned_on_first_use(http_root, tmp_path):
    root, base = http_root
    (root / "o.pth").write_bytes(b"official v1")
    asset = Asset("dl/o.pth", None, url=f"{base}/o.pth")
    store = _store(tmp_path)
    store.fetch(asset, progress=False)
    assert store.expected_sha256(asset) == _sha(b"official v1")
    store.cache_path(asset).write_bytes(b"swapped later")  # the pin now protects the cached copy
    with pytest.raises(AssetError, match="o.pth"):
        store.fetch(asset, progress=False)


def test_failed_download_is_a_clear_error(tmp_path):
    asset = Asset("dl/z.pth", _sha(b"z"), url="http://127.0.0.1:9/z.pth")  # discard port: connection refused
    with pytest.raises(AssetError, match="download failed"):
        _store(tmp_path).fetch(asset, progress=False)


def test_offline_setting_refuses_downloads(tmp_path):
    asset = Asset("dl/z.pth", _sha(b"z"), url="http://127.0.0.1:9/z.pth")
    with pytest.raises(AssetError, match="downloads are disabled"):
        _store(tmp_path, allow_download=False).fetch(asset, progress=False)
