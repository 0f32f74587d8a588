"""Model cache: content keys, save/load round trip, one trainer under concurrent requests."""

import json
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass

import jax
import numpy as np
import pytest
from flax import nnx

from seqgen.checkpoint import ModelCache, default_cache_root
from seqgen.models import LanguageModel

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
    assert default_cache_root() == tmp_path
    assert ModelCache().root == tmp_path.absolute()


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
    """The lock is a file lock: a second process waits until the first releases it."""
    cache = ModelCache(tmp_path)
    key = "k" * 64
    script = textwrap.dedent(
        f"""
        import time, filelock
        t0 = time.time()
        with filelock.FileLock({str(tmp_path / f"{key}.lock")!r}):
            print(time.time() - t0)
        """
    )
    with cache.lock(key):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)
        assert proc.poll() is None  # still waiting
    out, _ = proc.communicate(timeout=30)
    assert float(out) > 0.5


def test_load_missing_key_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        ModelCache(tmp_path).load_model("0" * 64, new_model())
