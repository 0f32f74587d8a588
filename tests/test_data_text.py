"""Text corpora: local files, presets with sha256, offline failure (no network used)."""

import hashlib
import io
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from seqgen.data import text
from seqgen.data.text import PRESETS, Preset, fetch_preset, line_blocks, read_text_file
from seqgen.errors import UserError
from seqgen.paths import cache_root

CONTENT = b"First Citizen:\nBefore we proceed any further, hear me speak.\n"


@pytest.fixture
def fake_preset(monkeypatch):
    """A small preset registered in the dict; its URL is never really fetched."""
    preset = Preset(
        url="http://127.0.0.1:9/fake/input.txt",
        filename="input.txt",
        sha256=hashlib.sha256(CONTENT).hexdigest(),
        size=len(CONTENT),
    )
    monkeypatch.setitem(PRESETS, "fake", preset)
    return preset


@pytest.fixture
def offline(monkeypatch):
    calls = []

    def urlopen(url, timeout=None):
        calls.append(url)
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(text.urllib.request, "urlopen", urlopen)
    return calls


def test_tinyshakespeare_preset_is_char_rnn():
    p = PRESETS["tinyshakespeare"]
    assert p.url == (
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
    )
    assert p.size == 1_115_394
    assert p.sha256 == "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def test_local_copy_with_matching_checksum_is_accepted(tmp_path, fake_preset, offline):
    f = tmp_path / "input.txt"
    f.write_bytes(CONTENT)
    assert fetch_preset("fake", path=str(f)) == str(f)
    assert offline == []  # no download attempted


def test_local_copy_with_wrong_checksum_is_user_error(tmp_path, fake_preset, offline):
    f = tmp_path / "input.txt"
    f.write_bytes(CONTENT + b"extra")
    with pytest.raises(UserError, match="sha256") as e:
        fetch_preset("fake", path=str(f))
    assert "\n" not in str(e.value)


def test_offline_preset_fails_with_one_line_naming_url_and_local_option(
    tmp_path, fake_preset, offline
):
    with pytest.raises(UserError) as e:
        fetch_preset("fake", cache_dir=str(tmp_path))
    msg = str(e.value)
    assert "\n" not in msg and fake_preset.url in msg and "data.path=" in msg
    assert offline == [fake_preset.url]
    assert not list((tmp_path / "fake").glob("*"))  # no partial file left behind


def test_unreachable_address_fails_cleanly(tmp_path, fake_preset, monkeypatch):
    monkeypatch.setattr(text, "DOWNLOAD_TIMEOUT_S", 2.0)
    # no proxy, so the request really goes to the local closed port and nowhere else
    no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    monkeypatch.setattr(urllib.request, "_opener", no_proxy)
    with pytest.raises(UserError, match="could not download preset fake"):
        fetch_preset("fake", cache_dir=str(tmp_path))  # 127.0.0.1:9: connection refused


def test_download_is_verified_and_cached(tmp_path, fake_preset, monkeypatch):
    calls = []

    def urlopen(url, timeout=None):
        calls.append(url)
        return io.BytesIO(CONTENT)

    monkeypatch.setattr(text.urllib.request, "urlopen", urlopen)
    path = fetch_preset("fake", cache_dir=str(tmp_path))
    assert open(path, "rb").read() == CONTENT
    assert fetch_preset("fake", cache_dir=str(tmp_path)) == path
    assert len(calls) == 1  # second call served from the cache


def test_corrupt_download_is_rejected(tmp_path, fake_preset, monkeypatch):
    monkeypatch.setattr(text.urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(b"x"))
    with pytest.raises(UserError, match="sha256"):
        fetch_preset("fake", cache_dir=str(tmp_path))
    assert not (tmp_path / "fake" / "input.txt").exists()


def test_presets_download_under_the_cache_root(monkeypatch, tmp_path, fake_preset):
    monkeypatch.setenv("SEQGEN_CACHE", str(tmp_path))
    monkeypatch.setattr(
        text.urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(CONTENT)
    )
    assert fetch_preset("fake") == str(tmp_path / "data" / "fake" / "input.txt")
    monkeypatch.delenv("SEQGEN_CACHE")
    assert str(cache_root()) == str(Path.home() / ".cache" / "seqgen")


def test_unreadable_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_text_file(str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(UserError, match="is empty"):
        read_text_file(str(tmp_path / "empty.txt"))
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8"):
        read_text_file(str(tmp_path / "latin1.txt"))
    with pytest.raises(UserError, match="unknown text preset 'nope'.*tinyshakespeare"):
        fetch_preset("nope")


def test_line_blocks_tile_the_text_and_end_at_line_ends():
    symbols = list("ab\ncdefghij\nk\nlm")
    blocks = line_blocks(symbols, 4)
    # "ab\n" is short of 4, so the block runs on; the long line "cdefghij" is cut at 4
    assert ["".join(b) for b in blocks] == ["ab\ncdef", "ghij\n", "k\nlm"]
    assert [s for b in blocks for s in b] == symbols
    words = ["one", "two", "\n", "three", "\n", "four", "five", "six", "\n"]
    assert line_blocks(words, 2) == [words[:3], words[3:5], words[5:7], words[7:]]
    with pytest.raises(UserError, match="data.window"):
        line_blocks(symbols, 0)
