"""Validation before any work, and nothing lost after: seqgen.preflight and the run around it."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
from conftest import TINY, compose

from seqgen.errors import UserError


@pytest.fixture()
def no_training(monkeypatch, tmp_path):
    """A private, empty model cache and a `train` that fails the test if it is ever called."""
    import seqgen.model_store

    cache = tmp_path / "cache"
    monkeypatch.setenv("SEQGEN_CACHE", str(cache))

    def forbidden(*args, **kwargs):
        raise AssertionError("a training step ran")

    monkeypatch.setattr(seqgen.model_store, "train", forbidden)
    return cache


def _no_model_cached(cache: Path) -> bool:
    return not list((cache / "models").glob("*/meta.json"))


@pytest.mark.parametrize(
    "compare, needle",
    [
        ("[{name:greedy},{name:sample,temperature:inf}]", r"compare\[1\]\.temperature=inf"),
        ("[{name:diverse_beam,beam_size:4,num_groups:3}]", r"compare\[0\]\.num_groups=3"),
        ("[{name:stochastic_beam,temperature:0}]", r"compare\[0\]\.temperature=0"),
        ("[{name:greedy},{name:sample,label:x},{name:beam,label:x}]", r"compare\[2\].*label 'x'"),
        ("[{name:sample,label:'a/b'},{name:sample,label:'a b'}]", r"same file samples/a_b\.txt"),
        ("[{name:sample,label:human}]", r"compare\[0\] and the human row have the same label"),
    ],
)
def test_a_bad_decoder_ends_the_run_before_training(no_training, tmp_path, compare, needle):
    from seqgen.experiment import run_experiment

    cfg = compose([*TINY, f"compare={compare}"])
    with pytest.raises(UserError, match=needle):
        run_experiment(cfg, out_dir=tmp_path / "run")
    assert _no_model_cached(no_training)


def test_top_k_above_the_vocabulary_is_valid_for_the_default_compare_set():
    # data=synthetic has V=10; the default set's top-k 40 means no truncation, not an error
    from seqgen.data.corpus import load_corpus
    from seqgen.preflight import check_decoders

    cfg = compose(["data=synthetic", "data.num_train=50"])
    corpus = load_corpus(cfg.data, 0)
    assert len(corpus.vocab) < 40 and any(d.top_k == 40 for d in cfg.compare)
    labels = check_decoders(cfg, len(corpus.vocab))
    assert labels == ["greedy", "beam(beam_size=4)", "pure sampling", "top-k 40", "nucleus 0.95"]


def test_labels_cannot_leave_samples(tmp_path):
    from seqgen.outputs import slug

    root = (tmp_path / "samples").resolve()
    for label in ("..", ".", "../../etc/x", "/abs", ".hidden", "a/../.."):
        name = slug(label)
        assert name not in ("", ".", "..") and "/" not in name
        assert (root / f"{name}.txt").resolve().parent == root
        assert (root / name).resolve().parent == root


def _text_cfg(path: Path):
    return compose(
        [
            *(o for o in TINY if not o.startswith("data")),  # data.num_train: synthetic's
            "data=text",
            f"data.path={path}",
            "data.window=8",
            "decoder=greedy",
        ]
    )


def test_a_corpus_too_small_for_its_splits_is_refused_before_training(no_training, tmp_path):
    from seqgen.experiment import run_experiment

    path = tmp_path / "one.txt"
    path.write_text("a")
    with pytest.raises(UserError, match=r"too small for its splits: 1 sequence.*1/0/0"):
        run_experiment(_text_cfg(path), out_dir=tmp_path / "run")
    assert _no_model_cached(no_training)


def test_a_file_of_nul_bytes_is_not_text(tmp_path):
    from seqgen.data.corpus import load_corpus

    path = tmp_path / "zeros.txt"
    path.write_bytes(b"\x00" * 4096)
    with pytest.raises(UserError, match="is not text"):
        load_corpus(_text_cfg(path).data, 0)
    ok = tmp_path / "ok.txt"
    ok.write_text("tabs\tand\nnew lines\r\n are text\n" * 10)
    assert len(load_corpus(_text_cfg(ok).data, 0).vocab) > 4


def test_decode_budget_is_bounded_by_max_tokens():
    from seqgen.preflight import check_decode_budget

    # 1 prompt x 8 samples x 16 positions = 128
    check_decode_budget(compose([*TINY, "decoder=sample", "decode.max_tokens=128"]), 1)
    with pytest.raises(UserError, match=r"decoder would decode 8 rows.*decode\.max_tokens=127"):
        check_decode_budget(compose([*TINY, "decoder=sample", "decode.max_tokens=127"]), 1)
    # the default set on 100 prompts: greedy's 100 rows x 300,000 fit the default bound of 1e8
    # positions, the beam's 4 x 100 rows do not
    with pytest.raises(UserError, match=r"compare\[1\] would decode 400 rows"):
        check_decode_budget(compose(["decode.max_len=300000"]), 100)


def test_a_batch_that_cannot_fit_in_memory_is_refused():
    from seqgen.preflight import check_training_memory, host_available_memory, training_bytes

    cfg = compose(TINY)
    check_training_memory(cfg, 10)  # the tiny run fits
    # the estimate counts what training must hold: 4 float32 copies of the parameters
    # (embedding 10x8, LSTM 4*16*(8+16+1): input and recurrent kernels and one bias, output
    # 16x10+10) plus the batch's activations: embedding and its gradient 2E, 21 floats per
    # hidden unit of an LSTM layer, 6V for the logits and the loss (scripts/calibrate_memory.py)
    params = 10 * 8 + 4 * 16 * (8 + 16 + 1) + 16 * 10 + 10
    per_token = 2 * 8 + 1 * 21 * 16 + 6 * 10
    expected = 4 * (4 * params + cfg.train.batch_size * cfg.train.seq_len * per_token)
    assert training_bytes(cfg.model, cfg.train, 10) == expected
    huge = 10 * host_available_memory() // (cfg.train.seq_len * per_token * 4)
    with pytest.raises(UserError, match=rf"train\.batch_size={huge} x .* lower one of them"):
        check_training_memory(compose([*TINY, f"train.batch_size={huge}"]), 10)


@pytest.mark.parametrize(
    "metrics, diverged",
    [
        ({"ppl/valid": 5.0, "bits/valid": math.log2(5.0)}, False),
        ({"ppl/valid": 99.0}, False),  # just below V**2 = 100
        ({"ppl/valid": 101.0}, True),
        ({"ppl/valid": math.inf, "bits/valid": 6.6e30 / math.log(2)}, True),  # train.lr=1e30
        ({"ppl/valid": math.nan}, True),
        ({"ppl/valid": 5.0, "ppl/test": math.inf}, True),
    ],
)
def test_divergence_rule(metrics, diverged):
    from seqgen.preflight import check_divergence

    if diverged:
        with pytest.raises(UserError, match="training diverged"):
            check_divergence(metrics, 10)
    else:
        check_divergence(metrics, 10)


def test_a_diverged_model_is_never_cached(monkeypatch, tmp_path):
    # training is replaced by its outcome under train.lr=1e30 (measured: a finite loss of
    # ~6e30 nats per token, ppl inf); the run must refuse the model, not cache it
    from types import SimpleNamespace

    from seqgen import model_store
    from seqgen.experiment import run_experiment

    cache = tmp_path / "cache"
    monkeypatch.setenv("SEQGEN_CACHE", str(cache))
    monkeypatch.setattr(
        model_store, "train", lambda model, *a, **k: SimpleNamespace(model=model, summary={})
    )
    monkeypatch.setattr(model_store, "evaluate", lambda *a, **k: {"ppl": math.inf, "bits": 8e30})
    cfg = compose([*TINY, "decoder=greedy"])
    with pytest.raises(UserError, match=r"training diverged: ppl/valid=inf"):
        run_experiment(cfg, out_dir=tmp_path / "run")
    assert _no_model_cached(cache)


def test_environment_mistakes(monkeypatch, tmp_path):
    from seqgen.preflight import _CLUSTER_ENV, check_environment

    file = tmp_path / "a_file"
    file.write_text("x")
    cfg = compose(TINY)
    check_environment(cfg, tmp_path / "new" / "run")
    with pytest.raises(UserError, match=r"hydra\.run\.dir=.* is an existing file"):
        check_environment(cfg, file)
    with pytest.raises(UserError, match=r"hydra\.run\.dir=.* is inside .*a_file, which is a file"):
        check_environment(cfg, file / "run")
    with pytest.raises(UserError, match=r"cache_dir=.* is an existing file"):
        check_environment(compose([*TINY, f"cache_dir={file}"]))
    for var in _CLUSTER_ENV:
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(UserError, match="distributed=true needs a coordinator"):
        check_environment(compose([*TINY, "distributed=true"]))
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
    check_environment(compose([*TINY, "distributed=true"]))
    online = compose([*TINY, "logger=wandb", "logger.mode=online"])
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine example.org login u password p\n")
    monkeypatch.setenv("NETRC", str(netrc))
    with pytest.raises(UserError, match="logger.mode=online needs a W&B API key"):
        check_environment(online)
    netrc.write_text("machine api.wandb.ai login user password 0123abcd\n")
    check_environment(online)


def test_finished_decoders_are_kept_when_a_later_one_fails(monkeypatch, tmp_path, caplog):
    # the DPFSA oracle needs no training; the second decoder's decode fails
    import seqgen.evaluate
    from seqgen.experiment import run_experiment

    real = seqgen.evaluate.decode_all
    calls = []

    def flaky(cfg, dec, *args, **kwargs):
        calls.append(dec.name)
        if len(calls) == 2:
            raise RuntimeError("injected failure")
        return real(cfg, dec, *args, **kwargs)

    monkeypatch.setattr(seqgen.evaluate, "decode_all", flaky)
    cfg = compose([*TINY, "model=oracle", "compare=[{name:greedy},{name:sample}]"])
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="seqgen"):
        with pytest.raises(RuntimeError, match="injected"):
            run_experiment(cfg, out_dir=out)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["decoder"]["label"] for r in rows] == ["greedy"]
    assert rows[0]["metrics"]["length/mean"] > 0
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert samples and {s["decoder"] for s in samples} == {"greedy"}
    assert (out / "samples" / "greedy.txt").read_text().strip()
    assert "decoders finished before the failure: greedy" in caplog.text


@pytest.mark.slow
def test_long_decodes_show_progress_per_chunk(caplog):
    import jax
    import numpy as np

    from seqgen.data.corpus import load_corpus
    from seqgen.driver import decode_all
    from seqgen.model_store import oracle_model

    # 8 samples per prompt, 16 rows per call: 2 prompts per chunk, 4 prompts in 2 chunks
    cfg = compose([*TINY, "model=oracle", "decoder=sample", "decode.batch_size=16"])
    model = oracle_model(load_corpus(cfg.data, 0))
    prompts = [np.asarray([4 + i % 3], np.int32) for i in range(4)]
    with caplog.at_level(logging.INFO, logger="seqgen"):
        out = decode_all(cfg.decode, cfg.decoder, model, prompts, jax.random.key(0))
    assert out["tokens"].shape[:2] == (4, 8)
    chunks = [r.getMessage() for r in caplog.records if "chunk" in r.getMessage()]
    assert [m.split("chunk ")[1].split(" after")[0] for m in chunks] == [
        "1/2 (2 of 4 prompts)",
        "2/2 (4 of 4 prompts)",
    ]


def _transformer(*overrides: str):
    """TINY with a 2-layer Transformer of 2 heads of size 8 (d_model 16)."""
    model = ["model=transformer", "model.hidden_size=16", "model.num_heads=2", "model.context=64"]
    return compose([*TINY, *model, "model.num_layers=2", *overrides])


def _kv_bytes(t: int) -> int:
    """A row's KV cache for t steps: k and v [layers=2, t, heads=2, head_dim=8] float32, and
    its int32 position."""
    return 2 * 2 * t * 2 * 8 * 4 + 4


def test_the_decode_memory_estimate_counts_the_transformers_kv_cache():
    from seqgen.decoding.registry import state_bytes
    from seqgen.models import decode_carry_bytes

    v, cfg = 10, _transformer()
    for t in (8, 16, 64):
        assert decode_carry_bytes(cfg.model, v, t) == _kv_bytes(t)
    lstm = compose(TINY).model  # (c, h) of 16 units per row, whatever the budget
    assert decode_carry_bytes(lstm, v, 8) == decode_carry_bytes(lstm, v, 64) == 2 * 16 * 4

    def exact(t: int, max_expansions: int, prompts: int = 3) -> int:
        dec = {"name": "exact", "max_expansions": max_expansions, "expansions_per_step": 4}
        return state_bytes(dec, decode_carry_bytes(cfg.model, v, t), prompts, v, 1)

    # a pool of 1 + max_expansions + expansions_per_step slots per prompt, each with its KV
    # cache, its children sorted (a float32 log-prob and an int32 token per vocabulary entry)
    # and six 4-byte fields
    slot = lambda t: _kv_bytes(t) + v * (4 + 4) + 6 * 4  # noqa: E731
    assert exact(16, 100) == 3 * (1 + 100 + 4) * slot(16)
    assert exact(64, 100) - exact(16, 100) == 3 * 105 * (_kv_bytes(64) - _kv_bytes(16))
    assert exact(16, 150) - exact(16, 100) == 3 * 50 * slot(16)
    assert exact(16, 100, prompts=6) == 2 * exact(16, 100)


def test_an_exact_search_beyond_memory_is_refused_before_training(
    no_training, tmp_path, monkeypatch
):
    import seqgen.preflight
    from seqgen.experiment import run_experiment

    monkeypatch.setattr(seqgen.preflight, "available_memory", lambda: (2**30, "test memory"))
    # 1 + 10^6 + 16 slots of about 4 kB each: 4 GiB for a single prompt
    cfg = _transformer("decoder=exact", "decoder.max_expansions=1000000")
    with pytest.raises(UserError) as err:
        run_experiment(cfg, out_dir=tmp_path / "run")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("decoder (exact(") and "decode.max_len=16" in msg
    assert "more than the 1.0 GiB of test memory" in msg
    assert _no_model_cached(no_training)
    # a pool that fits passes: 64 prompts x 105 slots x 4 kB
    seqgen.preflight.check_decode_memory(
        _transformer("decoder=exact", "decoder.max_expansions=100"), 10, 64
    )
