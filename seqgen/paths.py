"""seqgen's cache folder: trained models (`models/`), downloaded corpora (`data/`) and JAX's
compiled programs (`jax_compile/`) live under one root."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """`cache_dir` when given, else `$SEQGEN_CACHE`, else `~/.cache/seqgen`."""
    root = cache_dir or os.environ.get("SEQGEN_CACHE") or Path.home() / ".cache" / "seqgen"
    return Path(root).expanduser()
