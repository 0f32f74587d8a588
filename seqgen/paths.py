"""seqgen's cache folder (trained models `models/`, downloaded corpora `data/`, JAX's compiled
programs `jax_compile/` under one root), and the checks a user's path passes before it is
opened: a blocking `open()` of a FIFO, a device or a folder would hang or fail late."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from seqgen.errors import UserError


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """`cache_dir` when given, else `$SEQGEN_CACHE`, else `~/.cache/seqgen`."""
    root = cache_dir or os.environ.get("SEQGEN_CACHE") or Path.home() / ".cache" / "seqgen"
    return Path(root).expanduser()


def enable_compilation_cache(path: Path) -> None:
    """JAX's persistent compilation cache: a warm run reuses the decoders' compiled programs."""
    import jax  # here, so that importing seqgen's light modules does not import JAX

    try:
        jax.config.update("jax_compilation_cache_dir", str(path))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    except Exception as exc:  # an older JAX without these options: compile as usual
        logging.getLogger("seqgen").debug("no persistent compilation cache: %s", exc)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def regular_file(path: str | os.PathLike, key: str, allowed: str = "a readable file") -> Path:
    """`path` (with `~` expanded) if it is a regular file this process may read; else one
    `UserError` line naming `key`, what the path is, and `allowed`. Checked with `stat`, which
    never blocks, before any `open()`, which blocks forever on a FIFO without a writer."""
    p = Path(path).expanduser()
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise UserError(f"{key}={path} does not exist; allowed: {allowed}") from None
    except OSError as exc:
        msg = f"{key}={path} cannot be read ({exc.strerror}); allowed: {allowed}"
        raise UserError(msg) from None
    if not stat.S_ISREG(mode):
        raise UserError(f"{key}={path} is {_kind(mode)}; allowed: {allowed}")
    if not os.access(p, os.R_OK):
        raise UserError(f"{key}={path} is not readable by this user; allowed: {allowed}")
    return p


def model_folder(path: str | os.PathLike, key: str) -> Path:
    """`path` if it is a folder holding a model-cache entry's `meta.json` (a regular file);
    else one `UserError` line naming `key`."""
    p = Path(path).expanduser()
    allowed = "a model-cache folder ('model: ... cache <dir>' in a run's log; seqgen-sample --list)"
    if not p.is_dir():
        what = "does not exist" if not p.exists() else "is not a folder"
        raise UserError(f"{key}={path} {what}; allowed: {allowed}")
    if not (p / "meta.json").exists():
        raise UserError(f"{key}={path} is no model-cache entry (no meta.json); allowed: {allowed}")
    regular_file(p / "meta.json", f"{key} (its meta.json)", "a regular file")
    return p
