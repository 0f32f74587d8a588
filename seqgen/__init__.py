"""seqgen: decoding experiments with recurrent language models in JAX.

The Python API (`seqgen.api`), imported on first use so that `import seqgen` loads neither JAX
nor Hydra:

    >>> import seqgen
    >>> res = seqgen.run(["data=synthetic", "train=tiny", "decoder=greedy"])  # doctest: +SKIP
    >>> model = seqgen.load(res["out_dir"])  # doctest: +SKIP
    >>> model.generate(["ab"], decoder="sample", top_p=0.9, num_samples=3).texts  # doctest: +SKIP
    >>> model.score(["abab"]).perplexity  # doctest: +SKIP

`seqgen.run(overrides)` composes the same config as `python -m seqgen.run OVERRIDES` and runs it
in-process; `seqgen.load(dir)` loads a run dir or a model-cache entry as a `seqgen.Model`.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# name -> module that defines it; `seqgen.run` is the module `seqgen/run.py` itself, callable
_LAZY = {"load": "seqgen.api", "Model": "seqgen.api", "UserError": "seqgen.errors"}
__all__ = ["Model", "UserError", "load", "run"]


def __getattr__(name: str) -> Any:
    import importlib

    if name == "run":
        return importlib.import_module("seqgen.run")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'seqgen' has no attribute {name!r}")
