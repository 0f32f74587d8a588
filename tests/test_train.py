"""Training loop: learning, evaluation, resume after interruption, NaN guard, tracker."""

import json
import logging
import math
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, replace
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from seqgen.checkpoint import TrainCheckpointer
from seqgen.errors import TrainingInterrupted, UserError
from seqgen.models import LanguageModel
from seqgen.train import (
    NonFiniteLossError,
    TrainHParams,
    evaluate,
    hparams_from_cfg,
    lr_schedule,
    masked_cross_entropy,
    train,
)

os.environ.setdefault("WANDB_MODE", "disabled")

V, B, T = 10, 4, 8


class Batch(NamedTuple):  # same layout as seqgen.data.batching.Batch
    inputs: np.ndarray
    targets: np.ndarray
    mask: np.ndarray


@dataclass(frozen=True)
class Cfg:
    steps: int = 8
    batch_size: int = B
    lr: float = 1e-2
    weight_decay: float = 0.01
    warmup_steps: int = 2
    clip_norm: float = 1.0
    eval_every: int = 4
    eval_batches: int = 2
    checkpoint_every: int = 4
    log_every: int = 2
    data_parallel: bool = False
    progress: bool = False
    patience: int = 0


def make_batch(rng: np.random.Generator) -> Batch:
    """Counting sequences mod 6 (ids 4..9) with a random start and a random padded tail."""
    start = rng.integers(0, 6, size=(B, 1))
    seq = 4 + (start + np.arange(T + 1)) % 6  # [B, T+1]
    mask = np.ones((B, T), np.float32)
    lengths = rng.integers(T // 2, T + 1, size=B)
    mask[np.arange(T)[None, :] >= lengths[:, None]] = 0.0
    inputs = np.where(mask > 0, seq[:, :-1], 0).astype(np.int32)
    targets = np.where(mask > 0, seq[:, 1:], 0).astype(np.int32)
    return Batch(inputs, targets, mask)


def batches(seed=0, fail_at=None, nan_at=None, interrupt_at=None, signal_at=None):
    """Infinite deterministic batch stream; raises at batch `fail_at` (RuntimeError) or
    `interrupt_at` (KeyboardInterrupt); NaN mask at batch `nan_at`; `signal_at=(i, sig)` sends
    the process `sig` while batch i is drawn."""
    rng = np.random.default_rng(seed)
    i = 0
    while True:
        if i == fail_at:
            raise RuntimeError("simulated preemption")
        if i == interrupt_at:
            raise KeyboardInterrupt
        if signal_at is not None and i == signal_at[0]:
            os.kill(os.getpid(), signal_at[1])
        b = make_batch(rng)
        if i == nan_at:
            b = b._replace(mask=np.full_like(b.mask, np.nan))
        yield b
        i += 1


VALID = [make_batch(np.random.default_rng(100 + i)) for i in range(3)]


def new_model(dropout=0.1):
    return LanguageModel(
        V, cell="lstm", embed_size=8, hidden_size=16, num_layers=2, dropout=dropout,
        rngs=nnx.Rngs(0),
    )  # fmt: skip


def params_of(model):
    return jax.tree.leaves(nnx.state(model, nnx.Param))


class ListTracker:
    def __init__(self):
        self.records = []

    def log(self, metrics, step):
        self.records.append((step, dict(metrics)))


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """8 steps in one go (shared by several tests)."""
    tracker = ListTracker()
    d = tmp_path_factory.mktemp("full")
    before = evaluate(new_model(), VALID)
    result = train(new_model(), batches(), VALID, Cfg(), ckpt_dir=str(d), tracker=tracker, seed=3)
    return before, result, tracker, d


@pytest.mark.slow
def test_training_lowers_valid_loss_and_reports_summary(full_run):
    before, (model, summary), tracker, _ = full_run
    assert summary["steps"] == 8
    assert summary["valid/loss"] < before["loss"]
    assert summary["valid/bits"] == pytest.approx(summary["valid/loss"] / math.log(2))
    assert summary["valid/ppl"] == pytest.approx(math.exp(summary["valid/loss"]))
    assert math.isfinite(summary["train/loss"]) and summary["tokens_per_s"] > 0
    assert summary["stopped_early"] is False
    # the returned model is the best one (in eval mode), and evaluate agrees with the summary
    assert evaluate(model, VALID[:2])["loss"] == pytest.approx(summary["valid/loss"], rel=1e-6)
    steps = [s for s, m in tracker.records if "train/loss" in m]
    assert steps == [2, 4, 6, 8]
    assert [s for s, m in tracker.records if "valid/loss" in m] == [4, 8]


def test_evaluate_is_token_weighted():
    model = new_model()
    per_batch = [evaluate(model, [b]) for b in VALID]
    counts = [b.mask.sum() for b in VALID]
    expected = sum(r["loss"] * n for r, n in zip(per_batch, counts)) / sum(counts)
    got = evaluate(model, VALID)
    assert got["loss"] == pytest.approx(expected, rel=1e-5)
    assert got["bits"] == pytest.approx(got["loss"] / math.log(2))


@pytest.mark.slow
def test_resume_after_interruption_gives_the_same_parameters(full_run, tmp_path):
    _, (full_model, full_summary), _, _ = full_run
    cfg = Cfg()
    with pytest.raises(RuntimeError, match="preemption"):
        train(new_model(), batches(fail_at=4), VALID, cfg, ckpt_dir=str(tmp_path), seed=3)
    assert TrainCheckpointer(tmp_path).latest_step() == 4
    model, summary = train(new_model(), batches(), VALID, cfg, ckpt_dir=str(tmp_path), seed=3)
    assert summary["steps"] == 8
    for a, b in zip(params_of(model), params_of(full_model)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    assert summary["valid/loss"] == pytest.approx(full_summary["valid/loss"], rel=1e-6)


@pytest.mark.slow
def test_ctrl_c_saves_and_resume_continues(full_run, tmp_path):
    _, (full_model, _), _, _ = full_run
    cfg = replace(Cfg(), checkpoint_every=100)  # only the Ctrl-C handler writes "latest"
    with pytest.raises(KeyboardInterrupt):
        train(new_model(), batches(interrupt_at=3), VALID, cfg, ckpt_dir=str(tmp_path), seed=3)
    assert TrainCheckpointer(tmp_path).latest_step() == 3
    model, summary = train(new_model(), batches(), VALID, cfg, ckpt_dir=str(tmp_path), seed=3)
    assert summary["steps"] == 8
    for a, b in zip(params_of(model), params_of(full_model)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_best_and_latest_checkpoints_are_restorable(full_run):
    _, (model, summary), _, d = full_run
    ckpt = TrainCheckpointer(d)
    assert ckpt.latest_step("latest") == 8
    assert ckpt.latest_step("best") == summary["best_step"]
    like = nnx.state(model, nnx.Param)
    for which in ("latest", "best"):
        _, _, meta = ckpt.restore(which, like)
        assert meta["step"] == ckpt.latest_step(which)
    best, _, _ = ckpt.restore("best", like)
    for a, b in zip(jax.tree.leaves(best), params_of(model)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_nan_batch_stops_with_clear_error_and_keeps_last_good_checkpoint(tmp_path):
    cfg = replace(Cfg(), checkpoint_every=2, log_every=1, eval_every=100)
    with pytest.raises(NonFiniteLossError, match="at step 4") as err:
        train(new_model(), batches(nan_at=3), VALID, cfg, ckpt_dir=str(tmp_path), seed=3)
    assert isinstance(err.value, UserError) and "\n" not in str(err.value)
    ckpt = TrainCheckpointer(tmp_path)
    assert ckpt.latest_step() == 2
    params, _, _ = ckpt.restore("latest", nnx.state(new_model(), nnx.Param))
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


@pytest.mark.slow
def test_absurd_learning_rate_is_caught(tmp_path):
    cfg = replace(Cfg(), lr=1e38, eval_every=100)
    with pytest.raises(NonFiniteLossError, match="train.lr"):
        train(new_model(), batches(), VALID, cfg, ckpt_dir=str(tmp_path), seed=3)


def test_bad_warmup_is_user_error():
    with pytest.raises(UserError, match="warmup_steps"):
        train(new_model(), batches(), VALID, replace(Cfg(), warmup_steps=100))


@pytest.mark.parametrize("warmup", [0, 3])
def test_schedule_warmup_then_cosine(warmup):
    hp = TrainHParams(steps=10, lr=0.5, weight_decay=0.0, warmup_steps=warmup, clip_norm=1.0,
                      end_lr_ratio=0.1)  # fmt: skip
    sched = lr_schedule(hp)
    values = [float(sched(i)) for i in range(12)]

    def want(i):  # linear 0 -> 0.5 over `warmup` steps, then cosine 0.5 -> 0.05 at step 10
        if i < warmup:
            return 0.5 * i / warmup
        t = min(i - warmup, 10 - warmup) / (10 - warmup)
        return 0.5 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    assert values == pytest.approx([want(i) for i in range(12)], rel=1e-5, abs=1e-7)
    assert max(values) == pytest.approx(0.5) and values[-1] == pytest.approx(0.05)
    if warmup:
        assert values[0] == 0.0 and values[:4] == sorted(values[:4])
    assert values[warmup:] == sorted(values[warmup:], reverse=True)


@pytest.mark.slow  # trains or runs the pipeline: the full suite runs it
def test_patience_stops_early_when_valid_loss_stalls():
    # lr so small that no parameter moves: the second evaluation does not improve on the first
    cfg = replace(Cfg(), lr=1e-30, eval_every=1, patience=1)
    _, summary = train(new_model(), batches(), VALID, cfg, seed=3)
    assert summary["stopped_early"] is True and summary["steps"] == 2
    assert summary["best_step"] == 1


@pytest.mark.slow
def test_update_equals_plain_optax_adamw():
    """The jit step (injected lr, NaN guard, dropout key (seed, step)) is plain optax AdamW:
    clip by global norm 1, then AdamW with the warmup + cosine schedule, no decay on biases."""
    cfg = replace(Cfg(), steps=3, eval_every=100)
    model, _ = train(new_model(), batches(), [], cfg, seed=3)

    ref = new_model()
    ref.train()
    graphdef, params, rest = nnx.split(ref, nnx.Param, ...)
    hp = hparams_from_cfg(cfg)
    decay = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)  # noqa: E731
    tx = optax.chain(
        optax.clip_by_global_norm(hp.clip_norm),
        optax.adamw(lr_schedule(hp), weight_decay=hp.weight_decay, mask=decay),
    )
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, batch, key_data):
        def loss_fn(p):
            m = nnx.merge(graphdef, p, rest)
            logits = m(batch.inputs, rngs=jax.random.wrap_key_data(key_data))
            return masked_cross_entropy(logits, batch.targets, batch.mask).sum() / batch.mask.sum()

        grads = jax.grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    stream = batches()
    for i in range(3):
        params, opt_state = step(params, opt_state, next(stream), jnp.array([3, i], jnp.uint32))
    for a, b in zip(jax.tree.leaves(params), params_of(model)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_a_checkpoint_and_resume_continues(full_run, tmp_path, caplog, sig, code):
    """SIGTERM (schedulers) and SIGINT (Ctrl-C) finish the step in flight, save it, and stop."""
    _, (full_model, _), _, _ = full_run
    cfg = replace(Cfg(), checkpoint_every=100)  # only the signal writes "latest" before step 8
    handler_before = signal.getsignal(sig)
    with pytest.raises(TrainingInterrupted) as err:
        train(new_model(), batches(signal_at=(2, sig)), VALID, cfg, ckpt_dir=tmp_path, seed=3)
    assert err.value.exit_code == code and err.value.step == 3
    assert str(err.value) == (
        "interrupted at step 3; checkpoint saved; rerun the same command to resume"
    )
    assert signal.getsignal(sig) is handler_before  # the handlers are put back
    assert TrainCheckpointer(tmp_path).latest_step() == 3
    with caplog.at_level(logging.INFO, logger="seqgen"):
        model, summary = train(new_model(), batches(), VALID, cfg, ckpt_dir=tmp_path, seed=3)
    assert any(r.getMessage().startswith("resumed from step 3") for r in caplog.records)
    assert summary["steps"] == 8
    for a, b in zip(params_of(model), params_of(full_model)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


@pytest.mark.slow  # trains a model per case: the full suite runs it
@pytest.mark.parametrize("second_during", ["save", "update"])
def test_a_second_signal_never_loses_the_interrupt_checkpoint(
    full_run, tmp_path, monkeypatch, second_during
):
    """Two SIGTERMs in quick succession: the second arrives (deterministically, in-process)
    while the interrupt checkpoint is written, or while the state takes a step's update; the
    run still stops with a whole checkpoint of the last completed step, and resumes from it."""
    _, (full_model, _), _, _ = full_run
    cfg = replace(Cfg(), checkpoint_every=100)
    real_save = TrainCheckpointer.save
    if second_during == "save":

        def save(self, *args, **kwargs):
            os.kill(os.getpid(), signal.SIGTERM)  # the second signal, mid-save
            return real_save(self, *args, **kwargs)

        monkeypatch.setattr(TrainCheckpointer, "save", save)
        stream = batches(signal_at=(2, signal.SIGTERM))
    else:
        # both signals while batch 2 is drawn: the second is raised inside the first's
        # handling window, before the step's update is applied
        def twice():
            for i, b in enumerate(batches()):
                if i == 2:
                    os.kill(os.getpid(), signal.SIGTERM)
                    os.kill(os.getpid(), signal.SIGTERM)
                yield b

        stream = twice()
    with pytest.raises((TrainingInterrupted, KeyboardInterrupt)):
        train(new_model(), stream, VALID, cfg, ckpt_dir=tmp_path, seed=3)
    monkeypatch.setattr(TrainCheckpointer, "save", real_save)
    saved = TrainCheckpointer(tmp_path).latest_step()
    assert saved in (2, 3)  # the last completed step, whichever it was
    model, summary = train(new_model(), batches(), VALID, cfg, ckpt_dir=tmp_path, seed=3)
    assert summary["steps"] == 8
    for a, b in zip(params_of(model), params_of(full_model)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_a_signal_inside_a_protected_section_waits_for_its_end():
    from seqgen.train import _StopSignals

    stop = _StopSignals()
    stop._handle(signal.SIGTERM, None)  # the first: recorded
    assert stop.signum == signal.SIGTERM
    done = []
    with pytest.raises(KeyboardInterrupt):
        with stop.protected():
            with stop.protected():  # nested: held until the outermost ends
                stop._handle(signal.SIGTERM, None)
            done.append("inner")
            stop._handle(signal.SIGTERM, None)
            done.append("outer")
    assert done == ["inner", "outer"]
    with pytest.raises(KeyboardInterrupt):  # outside a section: at once
        stop._handle(signal.SIGTERM, None)


@pytest.mark.slow
def test_unreadable_training_checkpoint_restarts_from_step_zero(full_run, tmp_path, caplog):
    _, (full_model, _), _, _ = full_run
    cfg = Cfg()
    with pytest.raises(RuntimeError, match="preemption"):
        train(new_model(), batches(fail_at=4), VALID, cfg, ckpt_dir=str(tmp_path), seed=3)
    for f in (tmp_path / "latest").rglob("*"):
        if f.is_file() and f.stat().st_size > 64:
            f.write_bytes(b"\0" * 64)
    with caplog.at_level(logging.WARNING, logger="seqgen"):
        model, summary = train(new_model(), batches(), VALID, cfg, ckpt_dir=str(tmp_path), seed=3)
    assert any("unreadable" in r.getMessage() for r in caplog.records)
    assert summary["steps"] == 8
    for a, b in zip(params_of(model), params_of(full_model)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


# The command line: `python -m seqgen.run` sent SIGTERM (deterministically, while batch 5 is
# drawn) prints one line, exits 143 and leaves a checkpoint that the same command resumes.
_SIGTERM_AT_BATCH = """
import os, runpy, signal
import seqgen.data.batching as batching

real = batching.batch_iterator

def batch_iterator(*args, **kwargs):
    for i, batch in enumerate(real(*args, **kwargs)):
        if i == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        yield batch

batching.batch_iterator = batch_iterator
runpy.run_module("seqgen.run", run_name="__main__", alter_sys=True)  # python -m seqgen.run
"""


@pytest.mark.slow
def test_sigterm_from_the_command_line_exits_143_and_the_rerun_resumes(
    tmp_path, monkeypatch, caplog
):
    from conftest import ROOT, TINY, compose

    from seqgen import model_store
    from seqgen.data.corpus import load_corpus

    args = [*TINY, "decoder=greedy", "train.checkpoint_every=20", f"cache_dir={tmp_path}/a"]
    proc = subprocess.run(
        [sys.executable, "-c", _SIGTERM_AT_BATCH, *args, f"hydra.run.dir={tmp_path}/run"],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 143, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "interrupted at step 6; checkpoint saved; rerun the same command to resume"
    )
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "run" / "metrics.json").exists()

    # the rerun (in-process: the same pipeline) resumes; it ends where an uninterrupted run does
    monkeypatch.setattr(model_store, "_LOADED", {})
    cfg = compose(args)
    corpus = load_corpus(cfg.data, int(cfg.seed))
    spec = model_store.ModelSpec.of(cfg)
    entry = tmp_path / "a" / "models" / model_store.model_cache_key(spec, corpus)
    assert TrainCheckpointer(entry / "train_ckpt").latest_step() == 6
    with caplog.at_level(logging.INFO, logger="seqgen"):
        resumed = model_store.get_model(spec, corpus, cfg.cache_dir)
    assert any(r.getMessage().startswith("resumed from step 6") for r in caplog.records)
    model_store._LOADED.clear()
    whole = model_store.get_model(spec, corpus, f"{tmp_path}/b")
    assert json.loads((entry / "meta.json").read_text())["train"]["steps"] == 20
    for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(whole.params)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_an_lr_sweep_compiles_one_train_step():
    """The lr is injected into the optimizer state (traced), not a compile-time constant."""
    from seqgen.train import _jitted

    train(new_model(), batches(), [], replace(Cfg(), steps=2), seed=3)
    size = _jitted()[0]._cache_size()
    model, _ = train(new_model(), batches(), [], replace(Cfg(), steps=2, lr=0.5), seed=3)
    assert _jitted()[0]._cache_size() == size
    other, _ = train(new_model(), batches(), [], replace(Cfg(), steps=2), seed=3)
    assert any(not np.array_equal(a, b) for a, b in zip(params_of(model), params_of(other)))
