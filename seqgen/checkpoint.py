"""Checkpoints (orbax) for interruption-safe training, and the content-addressed model cache.

`TrainCheckpointer(dir)` keeps two orbax `CheckpointManager`s, each with one checkpoint:
`dir/latest` (written every `checkpoint_every` steps and on SIGINT/SIGTERM) and `dir/best`
(written when the validation loss improves). Each checkpoint holds the items `params` and
`opt_state` (StandardSave array trees) and `meta` (JSON: step, data position, seed, best
validation loss). No pickle anywhere.

`ModelCache(root)` stores trained models under `root/<sha256 key>/` with `model/` (orbax),
`vocab.json` and `meta.json`; `meta.json` is written last, so its presence means "complete".
The key hashes the data fingerprint, model and train configs, seed, seqgen's version and
`MODEL_FORMAT`; `meta.json` records the last two, the sha256 of every file of `model/` and
of `vocab.json`, and its own sha256 (`meta_sha256`, over every other field). `load_model`
verifies all of it (and the vocabulary against the corpus's) before it reads an array: a
damaged entry raises `DamagedCacheEntry`, never a half-loaded model.
A `filelock.FileLock` per key makes concurrent jobs train a given model only once; the holder's
PID is written beside the lock so a waiting job can say whom it waits for.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import filelock
import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from omegaconf import DictConfig, ListConfig, OmegaConf

import seqgen
from seqgen.data.text import sha256_file
from seqgen.errors import UserError
from seqgen.paths import cache_root, regular_file

log = logging.getLogger("seqgen")

# The on-disk and training semantics of a cached model. Bump it with any change to seqgen/models,
# seqgen/train.py or the data pipeline that changes what a given config trains to: it is part of
# every cache key, so old entries are then retrained instead of loaded.
MODEL_FORMAT = 2

# --------------------------------------------------------------------------------------------
# Training checkpoints


def _this_process_only() -> ocp.options.MultiprocessingOptions:
    """Orbax options for a file that this process alone writes or reads (the model cache)."""
    me = jax.process_index()
    return ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})


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

    def clear(self) -> None:
        """Delete every checkpoint (e.g. an unreadable one) and start empty."""
        self.close()
        shutil.rmtree(self.directory, ignore_errors=True)
        self.__init__(self.directory)


# --------------------------------------------------------------------------------------------
# Content-addressed model cache


def _plain(obj: Any) -> Any:
    """Dataclasses / DictConfigs / mappings / sequences -> plain JSON-able Python values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _plain(dataclasses.asdict(obj))
    if isinstance(obj, DictConfig | ListConfig):
        return _plain(OmegaConf.to_container(obj, resolve=True))
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


# meta.json's own checksum: the sha256 of its canonical JSON without this key, so that every
# field (the data, model and train configs seqgen-sample rebuilds the model from) is covered.
META_SHA256 = "meta_sha256"


def _meta_digest(meta: Mapping[str, Any]) -> str:
    body = {k: v for k, v in meta.items() if k != META_SHA256}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def read_json_object(path: Path, what: str, required: Mapping[str, type] = {}) -> dict:
    """The JSON object in the regular file `path`, with each `required` key of its type;
    one `UserError` line naming `what` otherwise (missing, a FIFO or folder, unreadable, not
    JSON, not an object, a key missing or of another type)."""
    regular_file(path, what, "a regular file")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{what} ({path}) is not readable JSON ({type(exc).__name__})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{what} ({path}) holds a JSON {type(obj).__name__}, not an object")
    for key, kind in required.items():
        if not isinstance(obj.get(key), kind):
            raise UserError(
                f"{what} ({path}) has no {key!r} of type {kind.__name__}; it is incomplete or "
                "was written by another program"
            )
    return obj


class DamagedCacheEntry(UserError):
    """A cache entry that cannot be trusted: unreadable, incomplete, altered or of another
    format. With `cache_on_damage=retrain` (the default) it is retrained, else reported."""


def _entry_hashes(entry: Path) -> dict[str, str]:
    """sha256 of `vocab.json` and of every file under `model/`, by path within the entry."""
    files = [entry / "vocab.json", *sorted((entry / "model").rglob("*"))]
    return {p.relative_to(entry).as_posix(): sha256_file(p) for p in files if p.is_file()}


class ModelCache:
    """Trained models keyed by sha256(data fingerprint, model config, train config, seed,
    seqgen version, model format)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = (Path(root) if root is not None else cache_root()).absolute()
        self.root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(data_fingerprint: str, model_cfg: Any, train_cfg: Any, seed: int) -> str:
        """sha256 hex digest of the canonical JSON of everything that determines the model."""
        payload = {
            "data": data_fingerprint,
            "model": model_cfg,
            "train": train_cfg,
            "seed": int(seed),
            **_code_version(),
        }
        return hashlib.sha256(canonical_json(payload).encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key

    def exists(self, key: str) -> bool:
        return (self.path(key) / "meta.json").is_file()

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Hold the inter-process lock of `key`; log whom we wait for when another job has it."""
        path = self.root / f"{key}.lock"
        if path.exists() and not path.is_file():
            raise UserError(
                f"the model cache's lock {path} is not a file; allowed: a file (remove it, or "
                "use another cache_dir)"
            )
        lock = filelock.FileLock(str(path))
        owner = self.root / f"{key}.lock.owner"
        try:
            self._acquire(lock, 0)
        except filelock.Timeout:
            try:
                holder = owner.read_text().strip() or "unknown"
            except OSError:
                holder = "unknown"
            log.info("waiting for the cache lock (held by PID %s): %s", holder, self.path(key))
            self._acquire(lock, -1)
        try:
            _atomic_write(owner, f"{os.getpid()} on {socket.gethostname()}")
            yield
        finally:
            owner.unlink(missing_ok=True)
            lock.release()

    def _acquire(self, lock: filelock.FileLock, timeout: float) -> None:
        try:
            lock.acquire(timeout=timeout)
        except filelock.Timeout:
            raise
        except OSError as exc:  # a read-only cache: loading needs no lock, training does
            raise UserError(
                f"the model cache {self.root} is not writable ({exc.strerror}), and a model must "
                "be trained or repaired in it; allowed: a writable cache_dir"
            ) from None

    def save_model(self, key: str, model: nnx.Module, vocab_json: str, meta: Mapping) -> Path:
        """Write the model's parameters, `vocab.json`, then `meta.json` (last, atomically).

        `meta.json` gets `seqgen_version`, `model_format` and `sha256` (of each file of
        `model/` and of `vocab.json`) besides `meta`. Other files in the key's directory (e.g.
        a `train_ckpt/` that `train` resumes from) are left alone. Call it holding `lock(key)`.
        """
        final = self.path(key)
        final.mkdir(parents=True, exist_ok=True)
        (final / "meta.json").unlink(missing_ok=True)  # incomplete until rewritten
        for stale in final.glob(".model.*"):  # a killed save's temporary folder (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=".model.", dir=final))
        params = nnx.state(model, nnx.Param)
        if jax.process_count() > 1:  # process 0 alone writes: host copies, no barrier with others
            params = jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), params)
        try:
            ckptr = ocp.StandardCheckpointer(multiprocessing_options=_this_process_only())
            ckptr.save(tmp / "model", params)
            ckptr.wait_until_finished()
            ckptr.close()
            shutil.rmtree(final / "model", ignore_errors=True)
            os.replace(tmp / "model", final / "model")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _atomic_write(final / "vocab.json", vocab_json)
        full = {**_plain(meta), **_code_version(), "sha256": _entry_hashes(final)}
        full[META_SHA256] = _meta_digest(full)
        _atomic_write(final / "meta.json", json.dumps(full, indent=2, sort_keys=True))
        return final

    def check(self, key: str, vocab_json: str | None = None) -> dict:
        """The verified `meta.json` of `key`; `DamagedCacheEntry` naming what is wrong.

        Checks that meta.json is a JSON object of this `MODEL_FORMAT`, that every file it
        lists has its recorded sha256 and `model/` holds no other file, and (when given) that
        `vocab.json` equals `vocab_json` as JSON.
        """
        path = self.path(key)

        def damaged(reason: str) -> DamagedCacheEntry:
            return DamagedCacheEntry(f"model cache entry {path} is damaged: {reason}")

        try:
            meta = read_json_object(path / "meta.json", "meta.json")
        except UserError as exc:
            raise damaged(str(exc)) from None
        if not isinstance(meta.get("sha256"), dict) or META_SHA256 not in meta:
            raise damaged("meta.json holds no checksums (written by an older seqgen?)")
        if meta[META_SHA256] != _meta_digest(meta):
            raise damaged("meta.json does not match its own sha256 (it was edited)")
        if meta.get("model_format") != MODEL_FORMAT:
            raise damaged(
                f"model format {meta.get('model_format')!r}, this seqgen reads {MODEL_FORMAT}"
            )
        expected, actual = meta["sha256"], _entry_hashes(path)
        for name in sorted(set(expected) | set(actual)):
            if name not in actual:
                raise damaged(f"{name} is missing")
            if name not in expected:
                raise damaged(f"{name} is not in meta.json's checksums")
            if actual[name] != expected[name]:
                raise damaged(f"{name} does not match its sha256 in meta.json")
        if vocab_json is not None:
            try:
                same = json.loads((path / "vocab.json").read_text()) == json.loads(vocab_json)
            except (OSError, ValueError):
                same = False
            if not same:
                raise damaged("vocab.json differs from the corpus's vocabulary")
        return meta

    def load_model(
        self, key: str, model_template: nnx.Module, vocab_json: str | None = None
    ) -> tuple[nnx.Module, dict]:
        """Load the verified parameters of `key` into `model_template` (in place); + meta.

        `FileNotFoundError` if there is no complete entry; `DamagedCacheEntry` if `check`
        fails or the arrays do not restore into the template (the template is then unchanged).
        """
        path = self.path(key)
        if not self.exists(key):
            raise FileNotFoundError(f"no complete cached model {key} under {self.root}")
        meta = self.check(key, vocab_json)
        target = _abstract(nnx.state(model_template, nnx.Param))
        ckptr = ocp.StandardCheckpointer(multiprocessing_options=_this_process_only())
        try:
            params = ckptr.restore(path / "model", target)
        except Exception as exc:  # shapes or tree of another model: not this config's entry
            msg = f"model cache entry {path} is damaged: its arrays do not restore ({exc})"
            raise DamagedCacheEntry(" ".join(msg.split())[:300]) from None
        finally:
            ckptr.close()
        nnx.update(model_template, params)
        return model_template, meta

    def load_vocab_json(self, key: str) -> str:
        return (self.path(key) / "vocab.json").read_text()

    def discard(self, key: str) -> None:
        """Delete the entry of `key` (its training checkpoints too). Call it holding the lock."""
        shutil.rmtree(self.path(key), ignore_errors=True)

    def get_or_train(
        self,
        key: str,
        model_template: nnx.Module,
        train_fn: Callable[[], tuple[nnx.Module, str, Mapping]],
        *,
        vocab_json: str | None = None,
        retrain_damaged: bool = True,
    ) -> tuple[nnx.Module, dict, bool]:
        """Load `key`, or train it under the lock: `train_fn() -> (model, vocab_json, meta)`.

        Concurrent callers with the same key wait on the lock; only the first trains, the
        others load its result. A damaged entry (see `check`; `vocab_json` is the corpus's
        vocabulary) is discarded and retrained with one warning line, or, unless
        `retrain_damaged`, raises `DamagedCacheEntry`. Returns (model, meta, trained_here).
        """
        if jax.process_count() > 1:
            return self._get_or_train_together(
                key, model_template, train_fn, vocab_json, retrain_damaged
            )
        if self.exists(key):
            # a damaged or vanishing entry is dealt with under the lock, below
            with contextlib.suppress(DamagedCacheEntry, FileNotFoundError):
                return (*self.load_model(key, model_template, vocab_json), False)
        with self.lock(key):
            if self.exists(key):
                try:
                    return (*self.load_model(key, model_template, vocab_json), False)
                except DamagedCacheEntry as exc:
                    if not retrain_damaged:
                        raise DamagedCacheEntry(
                            f"{exc}; delete it, or rerun with cache_on_damage=retrain"
                        ) from None
                    log.warning("%s; retraining it", exc)
                    self.discard(key)
            model, vocab, meta = train_fn()
            self.save_model(key, model, vocab, meta)
            return model, self.check(key), True

    def _get_or_train_together(
        self,
        key: str,
        model_template: nnx.Module,
        train_fn: Callable[[], tuple[nnx.Module, str, Mapping]],
        vocab_json: str | None,
        retrain_damaged: bool,
    ) -> tuple[nnx.Module, dict, bool]:
        """`get_or_train` for the processes of one multi-process run, which all call it.

        Process 0 alone takes the lock (other jobs wait for it; the run's own processes must
        not, since training needs them all) and decides whether the entry loads; the decision
        is broadcast, then every process restores the entry, or all train together
        (data-parallel) and process 0 writes the entry once while the others wait.
        """
        from jax.experimental import multihost_utils

        lead = jax.process_index() == 0
        with self.lock(key) if lead else contextlib.nullcontext():
            action, why = _TRAIN, ""
            if lead and self.exists(key):
                try:
                    self.check(key, vocab_json)
                    action = _LOAD
                except DamagedCacheEntry as exc:
                    why = f"{exc}; delete it, or rerun with cache_on_damage=retrain"
                    if retrain_damaged:
                        log.warning("%s; retraining it", exc)
                        self.discard(key)
                    else:
                        action = _DAMAGED
            action = int(multihost_utils.broadcast_one_to_all(np.int32(action)))
            if action == _DAMAGED:
                raise DamagedCacheEntry(why or f"model cache entry {self.path(key)} is damaged")
            if action == _LOAD:
                return (*self.load_model(key, model_template, vocab_json), False)
            model, vocab, meta = train_fn()
            if lead:
                self.save_model(key, model, vocab, meta)
            multihost_utils.sync_global_devices(f"seqgen model cache {key}")
            return model, self.check(key), True


# What process 0 of a multi-process run decided for a cache entry (broadcast to the others).
_TRAIN, _LOAD, _DAMAGED = 0, 1, 2


def _code_version() -> dict[str, Any]:
    """seqgen's version and `MODEL_FORMAT`: part of every cache key and of `meta.json`."""
    return {"seqgen_version": seqgen.__version__, "model_format": MODEL_FORMAT}
