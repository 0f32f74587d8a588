"""Model cache: content keys, save/load round trip, one trainer under concurrent requests,
damaged entries retrained (never loaded), the lock holder named; the pipeline's use of it."""

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import TINY, compose
from flax import nnx

import seqgen
import seqgen.checkpoint
from seqgen import model_store
from seqgen.checkpoint import DamagedCacheEntry, ModelCache, _meta_digest
from seqgen.errors import UserError
from seqgen.models import LanguageModel
from seqgen.paths import cache_root

V = 10
MODEL_CFG = {"cell": "gru", "embed_size": 8, "hidden_size": 8, "num_layers": 1}
TRAIN_CFG = {"steps": 10, "lr": 1e-3}


def new_model(seed=0):
    return LanguageModel(V, cell="gru", embed_size=8, hidden_size=8, rngs=nnx.Rngs(seed))


def leaves(model):
    return jax.tree.leaves(nnx.state(model, nnx.Param))


def test_key_is_deterministic_and_content_addressed():
    k = ModelCache.key("abc", MODEL_CFG, TRAIN_CFG, 0)
    assert k == ModelCache.key("abc", dict(reversed(MODEL_CFG.items())), TRAIN_CFG, 0)
    assert len(k) == 64 and int(k, 16) >= 0
    others = {
        ModelCache.key("abd", MODEL_CFG, TRAIN_CFG, 0),
        ModelCache.key("abc", MODEL_CFG | {"hidden_size": 16}, TRAIN_CFG, 0),
        ModelCache.key("abc", MODEL_CFG, TRAIN_CFG | {"lr": 2e-3}, 0),
        ModelCache.key("abc", MODEL_CFG, TRAIN_CFG, 1),
    }
    assert k not in others and len(others) == 4


def test_key_accepts_dataclasses_like_dicts():
    @dataclass
    class M:
        cell: str = "gru"
        embed_size: int = 8
        hidden_size: int = 8
        num_layers: int = 1

    assert ModelCache.key("abc", M(), TRAIN_CFG, 0) == ModelCache.key(
        "abc", MODEL_CFG, TRAIN_CFG, 0
    )


def test_default_root_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SEQGEN_CACHE", str(tmp_path))
    assert cache_root() == tmp_path
    assert cache_root(tmp_path / "given") == tmp_path / "given"  # a cache_dir wins
    assert ModelCache().root == tmp_path.absolute()


@pytest.mark.slow
def test_save_load_round_trip(tmp_path):
    cache = ModelCache(tmp_path)
    key = cache.key("abc", MODEL_CFG, TRAIN_CFG, 0)
    assert not cache.exists(key)
    (cache.path(key) / "train_ckpt").mkdir(parents=True)  # kept by save_model
    model = new_model(seed=1)
    cache.save_model(key, model, '{"symbols": []}', {"metrics": {"ppl/valid": np.float32(3.5)}})
    assert cache.exists(key) and (cache.path(key) / "train_ckpt").is_dir()
    assert json.loads(cache.load_vocab_json(key)) == {"symbols": []}
    loaded, meta = cache.load_model(key, new_model(seed=2))
    assert meta["metrics"]["ppl/valid"] == 3.5
    for a, b in zip(leaves(loaded), leaves(model)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_concurrent_requests_train_once(tmp_path):
    cache = ModelCache(tmp_path / "cache")
    key = cache.key("abc", MODEL_CFG, TRAIN_CFG, 0)
    marker = tmp_path / "trained.txt"
    trained = new_model(seed=5)

    def train_fn():
        with open(marker, "a") as f:
            f.write("x")
        time.sleep(0.5)  # long enough for the other thread to reach the lock
        return trained, "{}", {"who": threading.current_thread().name}

    results = {}

    def job(name):
        results[name] = cache.get_or_train(key, new_model(seed=9), train_fn)

    threads = [threading.Thread(target=job, args=(f"t{i}",), name=f"t{i}") for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert marker.read_text() == "x"
    assert sorted(r[2] for r in results.values()) == [False, False, True]
    for model, meta, _ in results.values():
        assert meta["who"] in results
        for a, b in zip(leaves(model), leaves(trained)):
            np.testing.assert_array_equal(a, b)


def test_lock_excludes_other_processes(tmp_path):
    """The lock is a file lock: another process cannot take it until it is released."""
    cache = ModelCache(tmp_path)
    key = "k" * 64
    script = textwrap.dedent(
        f"""
        import filelock
        lock = filelock.FileLock({str(tmp_path / f"{key}.lock")!r})
        try:
            lock.acquire(timeout=0)
            print("free")
        except filelock.Timeout:
            print("held")
        """
    )

    def probe():
        return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)

    with cache.lock(key):
        assert probe().stdout.strip() == "held"
    assert probe().stdout.strip() == "free"


def test_load_missing_key_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        ModelCache(tmp_path).load_model("0" * 64, new_model())


def test_key_changes_with_code_version_and_model_format(monkeypatch, tmp_path):
    k = ModelCache.key("abc", MODEL_CFG, TRAIN_CFG, 0)
    monkeypatch.setattr(seqgen.checkpoint, "MODEL_FORMAT", seqgen.checkpoint.MODEL_FORMAT + 1)
    k_format = ModelCache.key("abc", MODEL_CFG, TRAIN_CFG, 0)
    monkeypatch.setattr(seqgen, "__version__", seqgen.__version__ + ".post1")
    k_both = ModelCache.key("abc", MODEL_CFG, TRAIN_CFG, 0)
    assert len({k, k_format, k_both}) == 3
    cache = ModelCache(tmp_path)
    cache.save_model(k_both, new_model(), "{}", {})
    meta = json.loads((cache.path(k_both) / "meta.json").read_text())
    assert meta["seqgen_version"] == seqgen.__version__
    assert meta["model_format"] == seqgen.checkpoint.MODEL_FORMAT


# --------------------------------------------------------------------------------------------
# Damaged entries: each is detected before any array is used, and retrained or reported.

VOCAB = '{"symbols": ["a", "b"]}'


def _largest_model_file(entry):
    return max((p for p in (entry / "model").rglob("*") if p.is_file()), key=os.path.getsize)


def _flip_bytes(entry):  # 400 bytes inverted in the middle of the array data, size unchanged
    path = _largest_model_file(entry)
    data = bytearray(path.read_bytes())
    mid = max(len(data) // 2 - 200, 0)
    data[mid : mid + 400] = bytes(b ^ 0xFF for b in data[mid : mid + 400])
    path.write_bytes(bytes(data))


def _truncate(entry):
    path = _largest_model_file(entry)
    path.write_bytes(path.read_bytes()[: os.path.getsize(path) // 2])


def _edit_meta(entry, **changes):
    meta = json.loads((entry / "meta.json").read_text())
    meta.update(changes)
    (entry / "meta.json").write_text(json.dumps({k: v for k, v in meta.items() if v is not None}))


DAMAGE = {
    "flipped_bytes": (_flip_bytes, "does not match its sha256"),
    "truncated": (_truncate, "does not match its sha256"),
    "deleted_model_dir": (lambda e: shutil.rmtree(e / "model"), "is missing"),
    "garbage_meta": (lambda e: (e / "meta.json").write_text("{not json"), "not readable JSON"),
    "meta_not_an_object": (lambda e: (e / "meta.json").write_text("[1, 2]"), "not an object"),
    "edited_meta": (lambda e: _edit_meta(e, seed=1), "edited"),
    "meta_without_checksum": (lambda e: _edit_meta(e, meta_sha256=None), "no checksums"),
    "other_vocab": (lambda e: (e / "vocab.json").write_text('{"symbols": ["a"]}'), "vocab"),
}


def _damaged_entry(tmp_path, damage):
    cache = ModelCache(tmp_path)
    key = cache.key("abc", MODEL_CFG, TRAIN_CFG, 0)
    cache.save_model(key, new_model(seed=1), VOCAB, {"metrics": {"ppl/valid": 3.5}})
    DAMAGE[damage][0](cache.path(key))
    return cache, key


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_entry_is_retrained_with_one_warning(tmp_path, caplog, damage):
    cache, key = _damaged_entry(tmp_path, damage)
    retrained = new_model(seed=7)
    calls = []

    def train_fn():
        calls.append(1)
        return retrained, VOCAB, {"metrics": {"ppl/valid": 9.0}}

    with caplog.at_level(logging.WARNING, logger="seqgen"):
        model, meta, trained = cache.get_or_train(
            key, new_model(seed=2), train_fn, vocab_json=VOCAB
        )
    assert trained and calls == [1]
    assert meta["metrics"] == {"ppl/valid": 9.0}  # the new model's, not the damaged entry's
    for a, b in zip(leaves(model), leaves(retrained)):
        np.testing.assert_array_equal(a, b)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and DAMAGE[damage][1] in warnings[0] and "\n" not in warnings[0]
    # the new entry is whole: a later load verifies and gives the retrained parameters
    loaded, _ = cache.load_model(key, new_model(seed=3), VOCAB)
    for a, b in zip(leaves(loaded), leaves(retrained)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_entry_is_one_line_error_when_asked(tmp_path, damage):
    cache, key = _damaged_entry(tmp_path, damage)
    template = new_model(seed=2)
    before = leaves(template)

    def train_fn():
        raise AssertionError("must not train")

    with pytest.raises(DamagedCacheEntry) as err:
        cache.get_or_train(key, template, train_fn, vocab_json=VOCAB, retrain_damaged=False)
    msg = str(err.value)
    assert isinstance(err.value, UserError) and "\n" not in msg
    assert DAMAGE[damage][1] in msg and "cache_on_damage=retrain" in msg
    for a, b in zip(leaves(template), before):  # nothing was loaded into the template
        np.testing.assert_array_equal(a, b)


def test_waiting_for_the_lock_names_its_holder(tmp_path):
    cache = ModelCache(tmp_path)
    key = "k" * 64
    seen = threading.Event()

    class Handler(logging.Handler):
        def emit(self, record):
            if f"waiting for the cache lock (held by PID {os.getpid()}" in record.getMessage():
                seen.set()

    handler = Handler()
    logger = logging.getLogger("seqgen")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    got = threading.Event()

    def waiter():
        with cache.lock(key):
            got.set()

    try:
        with cache.lock(key):
            t = threading.Thread(target=waiter)
            t.start()
            assert seen.wait(timeout=60)
            assert not got.is_set()  # it logged, and it waits
        t.join(timeout=60)
        assert got.is_set()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


# --------------------------------------------------------------------------------------------
# The pipeline (model_store.get_model) goes through the verified cache.


def _get_model(cfg, corpus):
    """The model a run of `cfg` gets (`run_experiment`'s call)."""
    spec = model_store.ModelSpec.of(cfg)
    return model_store.get_model(spec, corpus, cfg.cache_dir, cfg.cache_on_damage == "retrain")


@pytest.fixture
def pipeline(tmp_path, monkeypatch):
    """A tiny config with its own cache, its corpus, and the model trained into that cache."""
    from seqgen.data.corpus import load_corpus

    monkeypatch.setattr(model_store, "_LOADED", {})  # no in-process reuse across calls
    cfg = compose([*TINY, "decoder=greedy", f"cache_dir={tmp_path}"])
    corpus = load_corpus(cfg.data, int(cfg.seed))
    first = _get_model(cfg, corpus)
    model_store._LOADED.clear()
    return cfg, corpus, first


@pytest.mark.slow
def test_pipeline_recomputes_the_metrics_of_a_loaded_model(pipeline, caplog):
    cfg, corpus, first = pipeline
    meta_path = Path(first.info["cache_dir"]) / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["metrics"]["ppl/valid"] = 1.0  # meta.json is not what the numbers come from
    meta["meta_sha256"] = _meta_digest(meta)  # as if recorded so by an older model code
    meta_path.write_text(json.dumps(meta))
    with caplog.at_level(logging.INFO, logger="seqgen"):
        again = _get_model(cfg, corpus)
    assert again.info["cached"] is True and first.info["cached"] is False
    assert again.metrics["ppl/valid"] == pytest.approx(first.metrics["ppl/valid"], rel=1e-6)
    assert again.metrics["ppl/valid"] != 1.0
    assert any("ppl/valid recomputed" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_pipeline_retrains_a_damaged_entry_or_stops_with_one_line(pipeline, caplog):
    cfg, corpus, first = pipeline
    entry = Path(first.info["cache_dir"])
    _flip_bytes(entry)
    with pytest.raises(UserError, match="damaged: model/.*cache_on_damage=retrain"):
        _get_model(compose([*TINY, "decoder=greedy", f"cache_dir={entry.parent.parent}",
                                      "cache_on_damage=error"]), corpus)  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="seqgen"):
        again = _get_model(cfg, corpus)
    assert again.info["cached"] is False  # retrained, not loaded
    assert any("damaged" in r.getMessage() for r in caplog.records)
    # the same config trains to the same model: the retrained numbers are the first ones
    assert again.metrics["ppl/valid"] == pytest.approx(first.metrics["ppl/valid"], rel=1e-6)
    for a, b in zip(jax.tree.leaves(again.params), jax.tree.leaves(first.params)):
        np.testing.assert_array_equal(a, b)
