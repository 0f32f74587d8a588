"""seqgen's cache folder: trained models (`models/`), downloaded corpora (`data/`) and JAX's
compiled programs (`jax_compile/`) live under one root."""

from __future__ import annotations

import logging
import os
from pathlib import Path


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
