"""Training loop: optax AdamW, global-norm clipping, warmup + cosine; jit steps; NaN guard.

The model is split once with `nnx.split(model, nnx.Param, ...)`; the train and eval steps are
pure jitted functions of `(params, opt_state, rest, batch, ...)` that `nnx.merge` inside the
trace only, so the hot loop does no NNX graph traversal. The dropout key of step s is the
threefry key with raw data (seed, s): a resumed run draws the same masks as an uninterrupted one.

Interruption safety (big_vision style): with `ckpt_dir`, the latest checkpoint (params,
optimizer state, step, data position) is written every `checkpoint_every` steps, and `train`
resumes from it (logging `resumed from step N`). SIGINT (Ctrl-C) and SIGTERM (what SLURM and
other schedulers send before they kill) only set a flag while training; after the step in
flight the loop saves the latest checkpoint and raises `TrainingInterrupted`, which
`seqgen.run` turns into one line and exit status 130 / 143. A second signal stops at once
(`KeyboardInterrupt`, still saving the last completed step). The batch iterator must be
deterministic for a given seed (as `seqgen.data.batching.batch_iterator` is): on resume it is
fast-forwarded by the number of batches already consumed, unless it has a `skip(n)` method,
which is then called instead.

A non-finite loss, gradient norm or parameter stops training with `NonFiniteLossError`; the
update of that step is not applied and no checkpoint is written after it, so the last good one
is kept.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from seqgen.checkpoint import TrainCheckpointer
from seqgen.config import TrainConfig
from seqgen.errors import TrainingInterrupted, UserError
from seqgen.metrics.perplexity import perplexity_from_nll
from seqgen.parallel import make_mesh, replicate, shard_batch

LN2 = math.log(2.0)
log = logging.getLogger("seqgen")


class NonFiniteLossError(UserError):
    """Training produced a NaN/Inf loss, gradient or parameter at a given step."""


class TrainResult(NamedTuple):
    model: nnx.Module
    summary: dict[str, Any]


class TrainHParams(NamedTuple):
    """The optimizer-relevant part of the train config (hashable: caches the compiled step)."""

    steps: int
    lr: float
    weight_decay: float
    warmup_steps: int
    clip_norm: float
    end_lr_ratio: float


# --------------------------------------------------------------------------------------------
# Optimizer


_SCHEMA = TrainConfig()


def hparams_from_cfg(cfg: Any) -> TrainHParams:
    """The optimizer fields of a train config; one it leaves out (a partial config of a test or
    script) takes its `seqgen.config.TrainConfig` default."""

    def get(name: str) -> Any:
        return getattr(cfg, name, getattr(_SCHEMA, name))

    hp = TrainHParams(
        steps=int(get("steps")),
        lr=float(get("lr")),
        weight_decay=float(get("weight_decay")),
        warmup_steps=int(get("warmup_steps")),
        clip_norm=float(get("clip_norm") or 0.0),
        end_lr_ratio=float(get("end_lr_ratio")),
    )
    if hp.steps < 0:
        raise UserError(f"train.steps={hp.steps} must be >= 0")
    if not hp.lr > 0:
        raise UserError(f"train.lr={hp.lr} must be > 0")
    if not 0 <= hp.warmup_steps <= max(hp.steps, 0):
        raise UserError(
            f"train.warmup_steps={hp.warmup_steps} must be between 0 and train.steps={hp.steps}"
        )
    return hp


def lr_schedule(hp: TrainHParams) -> optax.Schedule:
    """Linear warmup 0 -> lr over `warmup_steps`, then cosine lr -> end_lr_ratio*lr at `steps`."""
    decay = optax.cosine_decay_schedule(
        hp.lr, max(hp.steps - hp.warmup_steps, 1), alpha=hp.end_lr_ratio
    )
    if hp.warmup_steps == 0:
        return decay
    warm = optax.linear_schedule(0.0, hp.lr, hp.warmup_steps)
    return optax.join_schedules([warm, decay], [hp.warmup_steps])


def lr_at(hp: TrainHParams, count: int) -> float:
    """`lr_schedule(hp)(count)` in plain Python (for logging without device ops)."""
    if count < hp.warmup_steps:
        return hp.lr * count / hp.warmup_steps
    decay_steps = max(hp.steps - hp.warmup_steps, 1)
    t = min(count - hp.warmup_steps, decay_steps) / decay_steps
    return hp.lr * (hp.end_lr_ratio + (1 - hp.end_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


@functools.lru_cache(maxsize=16)
def make_optimizer(hp: TrainHParams) -> optax.GradientTransformation:
    """Clip by global norm (if clip_norm > 0), then AdamW; no weight decay on biases."""

    def decay_mask(params):
        return jax.tree.map(lambda p: p.ndim >= 2, params)

    adamw = optax.adamw(lr_schedule(hp), weight_decay=hp.weight_decay, mask=decay_mask)
    if hp.clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(hp.clip_norm), adamw)
    return adamw


# --------------------------------------------------------------------------------------------
# Pure steps


def masked_cross_entropy(logits: jax.Array, targets: jax.Array, mask: jax.Array) -> jax.Array:
    """Per-token cross-entropy [B, T] times mask (no reduction)."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
    return ce * mask


def _all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def _train_step(graphdef, unit_hp, params, opt_state, rest, batch, key_data, step, bad_step, lr):
    """One AdamW update on the masked-mean token cross-entropy; skipped if not finite.

    `key_data` uint32[2] = (seed, step) is the raw threefry key of this step's dropout masks
    (built on the host: no RNG op to compile for it). `step` is the number of updates done
    before this one; `bad_step` is -1 until the first non-finite step (1-based), after which
    every update is skipped.

    The learning rate is traced: `unit_hp` has lr=1 and the updates are scaled by `lr`
    (AdamW's update, weight decay included, is linear in lr), so an lr sweep compiles once.
    """
    tx = make_optimizer(unit_hp)
    inputs, targets, mask = batch

    def loss_fn(p):
        model = nnx.merge(graphdef, p, rest)
        logits = model(inputs, rngs=jax.random.wrap_key_data(key_data, impl="threefry2x32"))
        return jnp.sum(masked_cross_entropy(logits, targets, mask)) / jnp.maximum(
            jnp.sum(mask), 1.0
        )

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, new_opt_state = tx.update(grads, opt_state, params)
    updates = jax.tree.map(lambda u: lr * u, updates)
    new_params = optax.apply_updates(params, updates)
    grad_norm = optax.tree.norm(grads)
    ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & _all_finite(new_params)
    ok = ok & (bad_step < 0)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
    bad_step = jnp.where((bad_step < 0) & ~ok, step + 1, bad_step)
    metrics = {"loss": loss, "grad_norm": grad_norm}
    return keep(new_params, params), keep(new_opt_state, opt_state), bad_step, metrics


def _eval_step(graphdef, params, rest, batch):
    """(sum of masked cross-entropy, number of real tokens) for one batch."""
    inputs, targets, mask = batch
    logits = nnx.merge(graphdef, params, rest)(inputs)
    return jnp.sum(masked_cross_entropy(logits, targets, mask)), jnp.sum(mask)


@functools.cache
def _jitted():
    # Donation saves a copy of params + optimizer state per step; CPU does not implement it.
    donate = (2, 3) if jax.default_backend() != "cpu" else ()
    train = jax.jit(_train_step, static_argnums=(0, 1), donate_argnums=donate)
    evaluate = jax.jit(_eval_step, static_argnums=(0,))
    return train, evaluate


# --------------------------------------------------------------------------------------------
# Evaluation


def _eval_sums(graphdef, params, rest, batches: Iterable, mesh=None) -> tuple[float, float]:
    _, eval_step = _jitted()
    total, count = jnp.float32(0.0), jnp.float32(0.0)
    for batch in batches:
        batch = _as_arrays(batch)
        if mesh is not None:
            batch = shard_batch(batch, mesh)
        s, n = eval_step(graphdef, params, rest, batch)
        total, count = total + s, count + n
    return float(total), float(count)


def _metrics_from_sums(total: float, count: float) -> dict[str, float]:
    if count <= 0:
        raise UserError("evaluation got no tokens (every mask entry is 0); check the valid split")
    # the same reduction as every other perplexity in seqgen (ppl/valid, ppl/test, gen/ppl)
    return {"loss": total / count, **perplexity_from_nll(total, count)}


def evaluate(model: nnx.Module, batches: Iterable) -> dict[str, float]:
    """Token-weighted loss (nats/token), perplexity and bits/token over `batches` (eval mode)."""
    was_training = _is_training(model)
    model.eval()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    try:
        return _metrics_from_sums(*_eval_sums(graphdef, params, rest, batches))
    finally:
        if was_training:
            model.train()


def _is_training(model: nnx.Module) -> bool:
    return any(isinstance(m, nnx.Dropout) and not m.deterministic for _, m in nnx.iter_graph(model))


def _as_arrays(batch: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    inputs, targets, mask = batch
    return (
        np.asarray(inputs, np.int32),
        np.asarray(targets, np.int32),
        np.asarray(mask, np.float32),
    )


# --------------------------------------------------------------------------------------------
# The loop


class _Progress:
    """A rich progress bar with loss and tokens/s on a TTY; elsewhere (a log file, a cluster
    job) a log line at every tenth of the run; nothing when disabled."""

    def __init__(self, enabled: bool, total: int, start: int):
        self.bar = None
        self.total = total
        self.lines = enabled and not sys.stdout.isatty()
        self.next_line = start + max(1, total // 10)
        if enabled and sys.stdout.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[tps]} tok/s"),
                TimeRemainingColumn(),
            )
            self.bar.start()
            self.task = self.bar.add_task("train", total=total, completed=start, loss="-", tps="-")

    def update(self, step: int, loss: float | None = None, tps: float | None = None) -> None:
        if self.lines and loss is not None and (step >= self.next_line or step == self.total):
            self.next_line = step + max(1, self.total // 10)
            rate = f", {tps:,.0f} tok/s" if tps is not None else ""
            logging.getLogger("seqgen").info(
                "train step %d/%d: loss %.4f%s", step, self.total, loss, rate
            )
        if self.bar is None:
            return
        fields = {}
        if loss is not None:
            fields["loss"] = f"{loss:.4f}"
        if tps is not None:
            fields["tps"] = f"{tps:,.0f}"
        self.bar.update(self.task, completed=step, **fields)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


class _StopSignals:
    """While active (main thread only), SIGINT and SIGTERM record their number in `signum`
    instead of interrupting; a second one raises `KeyboardInterrupt`. The previous handlers
    come back on exit."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def _fast_forward(batches: Iterator, n: int) -> None:
    if n <= 0:
        return
    if hasattr(batches, "skip"):
        batches.skip(n)
        return
    for _ in range(n):
        next(batches)


def _resume_state(ckpt: TrainCheckpointer, params: Any, opt_state: Any) -> dict | None:
    """The state in the latest checkpoint; None if there is none, or if it is unreadable (then
    the checkpoints are cleared with a warning and training starts from step 0)."""
    if ckpt.latest_step("latest") is None:
        return None
    try:
        params, opt_state, meta = ckpt.restore("latest", params, opt_state)
        return {
            "params": params,
            "opt_state": opt_state,
            "step": int(meta["step"]),
            "data_position": int(meta["data_position"]),
            "best_loss": float(meta["best_valid_loss"]),
            "best_step": int(meta["best_step"]),
            "history": dict(meta.get("history", {})),
            "stopped_early": bool(meta.get("stopped_early", False)),
        }
    except Exception as exc:  # damaged, or written for another model
        log.warning(
            "training checkpoint %s is unreadable (%s); training from step 0",
            ckpt.directory,
            type(exc).__name__,
        )
        ckpt.clear()
        return None


def train(
    model: nnx.Module,
    train_batches: Iterator,
    valid_batches: list,
    cfg: Any,
    *,
    ckpt_dir: str | os.PathLike | None = None,
    tracker: Any = None,
    seed: int = 0,
    progress: bool | None = None,
    resume: bool = True,
    restore_best: bool = True,
) -> TrainResult:
    """Train `model` in place on `train_batches` (an iterator of `Batch(inputs, targets, mask)`).

    `cfg` is read with getattr: steps, lr, weight_decay, warmup_steps, clip_norm, eval_every,
    eval_batches (first N valid batches per evaluation), checkpoint_every, log_every,
    data_parallel, progress, and optionally patience (evaluations without improvement before
    stopping; 0 = off) and end_lr_ratio. With `restore_best` and validation data the returned
    model holds the best-by-valid-loss parameters, else the last ones.

    Summary keys: train/loss (last logged), valid/loss, valid/ppl, valid/bits (best),
    best_step, steps, tokens_per_s, wall_time_s, stopped_early.
    """
    t_start = time.perf_counter()
    hp = hparams_from_cfg(cfg)
    eval_every = max(int(getattr(cfg, "eval_every", 0) or hp.steps or 1), 1)
    eval_batches = int(getattr(cfg, "eval_batches", 0) or 0)
    ckpt_every = max(int(getattr(cfg, "checkpoint_every", 0) or hp.steps or 1), 1)
    log_every = max(int(getattr(cfg, "log_every", 0) or 1), 1)
    patience = int(getattr(cfg, "patience", 0) or 0)
    if progress is None:
        progress = bool(getattr(cfg, "progress", True))
    valid = list(valid_batches)[:eval_batches] if eval_batches > 0 else list(valid_batches)

    mesh = make_mesh() if getattr(cfg, "data_parallel", False) else None
    if mesh is not None and mesh.size == 1:
        mesh = None

    model.eval()
    graphdef_eval = nnx.graphdef(model)
    model.train()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    unit_hp, lr_arg = hp._replace(lr=1.0), np.float32(hp.lr)
    opt_state = make_optimizer(unit_hp).init(params)
    train_step, _ = _jitted()

    step, best_loss, best_step, data_position = 0, math.inf, -1, 0
    stopped_early, bad_evals = False, 0
    history: dict[str, Any] = {}
    ckpt = TrainCheckpointer(ckpt_dir) if ckpt_dir is not None else None
    resumed = _resume_state(ckpt, params, opt_state) if ckpt is not None and resume else None
    if resumed is not None:
        params, opt_state = resumed.pop("params"), resumed.pop("opt_state")
        step, data_position = resumed["step"], resumed["data_position"]
        best_loss, best_step = resumed["best_loss"], resumed["best_step"]
        history, stopped_early = resumed["history"], resumed["stopped_early"]
        log.info("resumed from step %d (%s)", step, ckpt.directory)
        _fast_forward(train_batches, data_position)

    # Commit the state to its devices: jit caches on committed-ness, and restored arrays are
    # committed, so fresh and resumed runs (and every step) share one compiled train step.
    bad_step = np.int32(-1)
    if mesh is not None:
        params, opt_state, rest, bad_step = replicate((params, opt_state, rest, bad_step), mesh)
    else:
        device = jax.local_devices()[0]
        params, opt_state, rest, bad_step = jax.device_put(
            (params, opt_state, rest, bad_step), device
        )

    def meta_now() -> dict[str, Any]:
        return {
            "step": step,
            "data_position": data_position,
            "seed": seed,
            "best_valid_loss": best_loss if math.isfinite(best_loss) else 1e308,
            "best_step": best_step,
            "history": history,
            "stopped_early": stopped_early,
        }

    saved_step = step

    def save(which: str) -> None:
        nonlocal saved_step
        if ckpt is not None:
            ckpt.save(which, step, params, opt_state, meta_now())
            saved_step = step if which == "latest" else saved_step

    def stop_if_signalled() -> None:
        if stop.signum is None:
            return
        check_finite()  # a diverged state is not saved; that error wins
        if saved_step != step:
            save("latest")
        kept = "checkpoint saved" if ckpt is not None else "no checkpoint (no ckpt_dir)"
        raise TrainingInterrupted(
            f"interrupted at step {step}; {kept}; rerun the same command to resume",
            step,
            stop.signum,
        )

    def check_finite() -> None:
        bad = int(bad_step)
        if bad >= 0:
            kept = ckpt.latest_step("latest") if ckpt is not None else None
            where = f"; last good checkpoint: step {kept} in {ckpt.directory}" if kept else ""
            raise NonFiniteLossError(
                f"training diverged: non-finite loss, gradient or parameters at step {bad} "
                f"(train.lr={hp.lr}); lower train.lr or set train.clip_norm{where}"
            )

    bar = _Progress(progress, hp.steps, step)
    last_loss = math.nan
    tokens_since, t_since, total_tokens, t_train = 0.0, time.perf_counter(), 0.0, 0.0
    pending: list = []
    first_step = True
    stop = _StopSignals()
    try:
        stop.install()
        while step < hp.steps and not stopped_early:
            batch = _as_arrays(next(train_batches))
            ntok = float(batch[2].sum())
            if mesh is not None:
                batch = shard_batch(batch, mesh)
            params, opt_state, bad_step, m = train_step(
                graphdef, unit_hp, params, opt_state, rest, batch,
                np.array([seed % 2**32, step], np.uint32), np.int32(step), bad_step, lr_arg,
            )  # fmt: skip
            step += 1
            data_position = step  # one batch per step
            pending.append(m["loss"])
            if first_step:  # throughput excludes the compile in the first step
                jax.block_until_ready(m["loss"])
                first_step, t_since = False, time.perf_counter()
            else:
                tokens_since += ntok
                total_tokens += ntok
            if step % log_every == 0 or step == hp.steps:
                check_finite()
                last_loss = float(np.mean(jax.device_get(pending)))
                now = time.perf_counter()
                tps = tokens_since / max(now - t_since, 1e-9)
                t_train += now - t_since
                tokens_since, t_since = 0.0, now
                lr = lr_at(hp, step - 1)
                if tracker is not None:
                    tracker.log(
                        {
                            "train/loss": last_loss,
                            "train/grad_norm": float(m["grad_norm"]),
                            "train/lr": lr,
                            "train/tokens_per_s": tps,
                        },
                        step=step,
                    )
                pending = []
                bar.update(step, last_loss, tps)
            if valid and (step % eval_every == 0 or step == hp.steps):
                check_finite()
                res = _metrics_from_sums(*_eval_sums(graphdef_eval, params, rest, valid, mesh))
                history[str(step)] = res["loss"]
                if progress:
                    logging.getLogger("seqgen").info(
                        "valid step %d: loss %.4f, ppl %.3f", step, res["loss"], res["ppl"]
                    )
                if tracker is not None:
                    tracker.log({f"valid/{k}": v for k, v in res.items()}, step=step)
                if res["loss"] < best_loss:
                    best_loss, best_step, bad_evals = res["loss"], step, 0
                    save("best")
                else:
                    bad_evals += 1
                if patience and bad_evals >= patience:
                    stopped_early = True
            if step % ckpt_every == 0 or step == hp.steps or stopped_early:
                check_finite()
                save("latest")
            stop_if_signalled()
        check_finite()
        if restore_best and ckpt is not None and best_step >= 0 and best_step != step:
            params, _, _ = ckpt.restore("best", params)
    except KeyboardInterrupt:
        # Keep what was computed: the state after `step` completed updates is good if finite.
        if int(bad_step) < 0 and saved_step != step:
            save("latest")
        raise
    finally:
        stop.restore()
        bar.close()
        t_train += time.perf_counter() - t_since
        if ckpt is not None:
            ckpt.close()

    if mesh is not None:  # hand back single-device arrays (decoding does not use the mesh)
        params = jax.device_put(params, jax.local_devices()[0])
    nnx.update(model, params)
    model.eval()

    summary: dict[str, Any] = {
        "train/loss": last_loss,
        "steps": step,
        "tokens_per_s": total_tokens / max(t_train, 1e-9),
        "wall_time_s": time.perf_counter() - t_start,
        "stopped_early": stopped_early,
        "best_step": best_step,
    }
    if math.isfinite(best_loss):
        summary.update(
            {
                "valid/loss": best_loss,
                "valid/ppl": math.exp(min(best_loss, 700.0)),
                "valid/bits": best_loss / LN2,
            }
        )
    return TrainResult(model, summary)
