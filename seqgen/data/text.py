"""Plain-text corpora: local UTF-8 files or a named preset, and the line-aligned blocks a
single file is split by (`line_blocks`).

A preset (e.g. ``tinyshakespeare``, the char-rnn corpus of Karpathy 2015) is downloaded once
into the cache directory and verified against its sha256; a local copy passed as
``data.path`` is accepted when its checksum matches. Without network, the preset fails with
one line naming the URL and how to pass a local file instead.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass

from seqgen.errors import UserError
from seqgen.paths import cache_root, regular_file


@dataclass(frozen=True)
class Preset:
    url: str
    filename: str
    sha256: str
    size: int


PRESETS: dict[str, Preset] = {
    "tinyshakespeare": Preset(
        url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        filename="input.txt",
        sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        size=1_115_394,
    ),
}

DOWNLOAD_TIMEOUT_S = 30.0


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise UserError(f"unknown text preset {name!r}; allowed: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]


def _download(url: str, dest: str) -> None:
    """Download `url` to `dest` atomically (temp file in the same folder, then rename)."""
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dest), prefix=".download-")
    try:
        with (
            os.fdopen(fd, "wb") as out,
            urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp,
        ):
            while block := resp.read(1 << 20):
                out.write(block)
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def fetch_preset(name: str, *, path: str | None = None, cache_dir: str | None = None) -> str:
    """Local path of preset `name`, verified by sha256.

    With `path`, that file is used if its checksum matches (UserError otherwise). Without,
    the cached copy is used, or the file is downloaded into `cache_dir`/`name`/.
    """
    preset = _get_preset(name)
    if path is not None:
        path = os.path.expanduser(str(path))
        if not os.path.isfile(path):
            raise UserError(f"data.path={path} does not exist (expected the {name} file)")
        digest = sha256_file(path)
        if digest != preset.sha256:
            raise UserError(
                f"data.path={path} has sha256 {digest[:12]}..., not the {name} preset's "
                f"{preset.sha256[:12]}...; pass the original file from {preset.url} "
                "or drop data.preset to use your file as plain text"
            )
        return path
    cache_dir = os.path.expanduser(str(cache_dir)) if cache_dir else str(cache_root() / "data")
    dest = os.path.join(cache_dir, name, preset.filename)
    if os.path.isfile(dest) and sha256_file(dest) == preset.sha256:
        return dest
    try:
        _download(preset.url, dest)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        reason = getattr(e, "reason", e)
        raise UserError(
            f"could not download preset {name} from {preset.url} ({reason}); "
            f"download it elsewhere and pass data.path=/path/to/{preset.filename}"
        ) from None
    digest = sha256_file(dest)
    if digest != preset.sha256:
        os.remove(dest)
        raise UserError(
            f"downloaded {preset.url} has sha256 {digest[:12]}..., expected "
            f"{preset.sha256[:12]}...; download it by hand and pass data.path=/path/to/"
            f"{preset.filename}"
        )
    return dest


def read_text_file(path: str, key: str = "data.path") -> str:
    """Contents of a UTF-8 text file; UserError (naming the config `key`) if missing,
    unreadable, not UTF-8 or empty."""
    path = str(regular_file(path, key, "an existing UTF-8 text file"))
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise UserError(f"{key}={path} does not exist; pass an existing UTF-8 text file") from None
    except UnicodeDecodeError as e:
        raise UserError(
            f"{key}={path} is not UTF-8 text ({e.reason} at byte {e.start}); pass a UTF-8 text file"
        ) from None
    except OSError as e:
        raise UserError(
            f"{key}={path} cannot be read ({e.strerror}); pass a readable UTF-8 text file"
        ) from None
    if not text.strip():
        raise UserError(f"{key}={path} is empty; pass a non-empty UTF-8 text file")
    # NUL bytes and other control characters are valid UTF-8 but mark binary data, not text
    controls = sum(1 for ch in text if ord(ch) < 32 and ch not in "\t\n\r\f\v")
    if "\x00" in text or controls > 0.01 * len(text):
        raise UserError(
            f"{key}={path} is not text ({controls} of {len(text)} characters are NUL or "
            "other control characters); pass a UTF-8 text file"
        )
    return text


def resolve_text_source(
    path: str | None, preset: str | None, cache_dir: str | None, key: str = "data.path"
) -> tuple[str, dict]:
    """(text, meta) for data=text from either `preset` (with optional local `path`) or
    `path` alone (`key` names the config field of `path` in errors)."""
    if preset:
        local = fetch_preset(preset, path=path, cache_dir=cache_dir)
        return read_text_file(local), {
            "preset": preset,
            "path": local,
            "sha256": PRESETS[preset].sha256,
        }
    if not path:
        raise UserError(
            "data=text needs data.path=/path/to/file.txt, data.train_path=... or data.preset=one "
            f"of {', '.join(sorted(PRESETS))}"
        )
    text = read_text_file(path, key)
    return text, {
        "preset": None,
        "path": os.path.expanduser(str(path)),
        "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
    }


def line_blocks(symbols: list[str], window: int) -> list[list[str]]:
    """Consecutive blocks that tile `symbols`, each ending at a line end ("\\n") once it holds
    at least `window` symbols; a line longer than `window` is cut every `window` symbols (so
    only a block after such a cut starts mid-line). The last block may be shorter."""
    if window < 1:
        raise UserError(f"data.window={window} is not allowed; allowed: an integer >= 1")
    blocks, cur, line = [], [], 0
    for i, sym in enumerate(symbols):
        cur.append(sym)
        line = 0 if sym == "\n" else line + 1
        too_long = line >= window and (i + 1 == len(symbols) or symbols[i + 1] != "\n")
        if len(cur) >= window and (line == 0 or too_long):
            blocks.append(cur)
            cur, line = [], 0
    if cur:
        blocks.append(cur)
    return blocks
