"""Checkpoints (orbax) for interruption-safe training, and the content-addressed model cache.

`TrainCheckpointer(dir)` keeps two orbax `CheckpointManager`s, each with one checkpoint:
`dir/latest` (written every `checkpoint_every` steps and on Ctrl-C) and `dir/best` (written when
the validation loss improves). Each checkpoint holds the items `params` and `opt_state`
(StandardSave array trees) and `meta` (JSON: step, data position, seed, best validation loss).
No pickle anywhere.

`ModelCache(root)` stores trained models under `root/<sha256 key>/` with `model/` (orbax),
`vocab.json` and `meta.json`; `meta.json` is written last, so its presence means "complete".
A `filelock.FileLock` per key makes concurrent jobs train a given model only once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import filelock
import jax
import orbax.checkpoint as ocp
from flax import nnx

# --------------------------------------------------------------------------------------------
# Training checkpoints


def _abstract(tree: Any) -> Any:
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class TrainCheckpointer:
    """Latest and best-by-valid-loss training checkpoints under `directory`."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory).absolute()
        opts = ocp.CheckpointManagerOptions(max_to_keep=1, create=True)
        self._managers = {
            name: ocp.CheckpointManager(self.directory / name, options=opts)
            for name in ("latest", "best")
        }

    def latest_step(self, which: str = "latest") -> int | None:
        """Step of the `which` ("latest" or "best") checkpoint, None if there is none."""
        return self._managers[which].latest_step()

    def save(
        self, which: str, step: int, params: Any, opt_state: Any, meta: Mapping[str, Any]
    ) -> None:
        """Save `params`, `opt_state` (pytrees of arrays) and JSON-able `meta` at `step`."""
        mgr = self._managers[which]
        mgr.save(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(params),
                opt_state=ocp.args.StandardSave(opt_state),
                meta=ocp.args.JsonSave(dict(meta)),
            ),
            force=True,
        )
        mgr.wait_until_finished()

    def restore(
        self, which: str, params_like: Any, opt_state_like: Any = None
    ) -> tuple[Any, Any, dict[str, Any]]:
        """Restore `(params, opt_state, meta)` of the `which` checkpoint.

        The arrays take the structure of `params_like` / `opt_state_like`; the optimizer state
        is only read when `opt_state_like` is given (else None is returned for it).
        """
        mgr = self._managers[which]
        step = mgr.latest_step()
        if step is None:
            raise FileNotFoundError(f"no {which!r} checkpoint in {self.directory}")
        items = {
            "params": ocp.args.StandardRestore(_abstract(params_like)),
            "meta": ocp.args.JsonRestore(),
        }
        if opt_state_like is not None:
            items["opt_state"] = ocp.args.StandardRestore(_abstract(opt_state_like))
        out = mgr.restore(step, args=ocp.args.Composite(**items))
        opt_state = out["opt_state"] if opt_state_like is not None else None
        return out["params"], opt_state, dict(out["meta"])

    def close(self) -> None:
        for mgr in self._managers.values():
            mgr.close()


# --------------------------------------------------------------------------------------------
# Content-addressed model cache


def default_cache_root() -> Path:
    """`$SEQGEN_CACHE` if set, else `~/.cache/seqgen`."""
    return Path(os.environ.get("SEQGEN_CACHE") or Path.home() / ".cache" / "seqgen")


def _plain(obj: Any) -> Any:
    """Dataclasses / DictConfigs / mappings / sequences -> plain JSON-able Python values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _plain(dataclasses.asdict(obj))
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(obj, DictConfig | ListConfig):
            return _plain(OmegaConf.to_container(obj, resolve=True))
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy / jax scalars
        return obj.item()
    return obj


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no whitespace) of `obj` after `_plain`."""
    return json.dumps(_plain(obj), sort_keys=True, separators=(",", ":"), allow_nan=False)


class ModelCache:
    """Trained models keyed by sha256(data fingerprint, model config, train config, seed)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = (Path(root) if root is not None else default_cache_root()).absolute()
        self.root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(data_fingerprint: str, model_cfg: Any, train_cfg: Any, seed: int) -> str:
        """sha256 hex digest of the canonical JSON of everything that determines the model."""
        payload = {
            "data": data_fingerprint,
            "model": model_cfg,
            "train": train_cfg,
            "seed": int(seed),
        }
        return hashlib.sha256(canonical_json(payload).encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key

    def exists(self, key: str) -> bool:
        return (self.path(key) / "meta.json").is_file()

    def lock(self, key: str, timeout: float = -1) -> filelock.FileLock:
        """Inter-process lock for `key` (use as a context manager); -1 waits forever."""
        return filelock.FileLock(str(self.root / f"{key}.lock"), timeout=timeout)

    def save_model(self, key: str, model: nnx.Module, vocab_json: str, meta: Mapping) -> Path:
        """Write the model's parameters, `vocab.json`, then `meta.json` (last, atomically).

        Other files in the key's directory (e.g. a `train_ckpt/` that `train` resumes from)
        are left alone. Call it while holding `lock(key)`.
        """
        final = self.path(key)
        final.mkdir(parents=True, exist_ok=True)
        (final / "meta.json").unlink(missing_ok=True)  # incomplete until rewritten
        tmp = Path(tempfile.mkdtemp(prefix=".model.", dir=final))
        try:
            ckptr = ocp.StandardCheckpointer()
            ckptr.save(tmp / "model", nnx.state(model, nnx.Param))
            ckptr.wait_until_finished()
            ckptr.close()
            shutil.rmtree(final / "model", ignore_errors=True)
            os.replace(tmp / "model", final / "model")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _atomic_write(final / "vocab.json", vocab_json)
        _atomic_write(final / "meta.json", json.dumps(_plain(meta), indent=2, sort_keys=True))
        return final

    def load_model(self, key: str, model_template: nnx.Module) -> tuple[nnx.Module, dict]:
        """Load the parameters of `key` into `model_template` (updated in place); + meta."""
        path = self.path(key)
        if not self.exists(key):
            raise FileNotFoundError(f"no complete cached model {key} under {self.root}")
        target = _abstract(nnx.state(model_template, nnx.Param))
        ckptr = ocp.StandardCheckpointer()
        params = ckptr.restore(path / "model", target)
        ckptr.close()
        nnx.update(model_template, params)
        return model_template, json.loads((path / "meta.json").read_text())

    def load_vocab_json(self, key: str) -> str:
        return (self.path(key) / "vocab.json").read_text()

    def get_or_train(
        self,
        key: str,
        model_template: nnx.Module,
        train_fn: Callable[[], tuple[nnx.Module, str, Mapping]],
    ) -> tuple[nnx.Module, dict, bool]:
        """Load `key`, or train it under the lock: `train_fn() -> (model, vocab_json, meta)`.

        Concurrent callers with the same key wait on the lock; only the first trains, the
        others load its result. Returns (model, meta, trained_here).
        """
        if self.exists(key):
            return (*self.load_model(key, model_template), False)
        with self.lock(key):
            if self.exists(key):
                return (*self.load_model(key, model_template), False)
            model, vocab_json, meta = train_fn()
            self.save_model(key, model, vocab_json, meta)
            return model, json.loads((self.path(key) / "meta.json").read_text()), True
