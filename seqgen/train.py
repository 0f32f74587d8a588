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
(`KeyboardInterrupt`, still saving the last completed step), except while the state is updated
or a checkpoint written: it then stops as soon as that is done, so the checkpoint is whole.
The batch iterator must be deterministic for a given seed (as
`seqgen.data.batching.batch_iterator` is): on resume it is fast-forwarded by the number of
batches already consumed, unless it has a `skip(n)` method, which is then called instead.

A non-finite loss, gradient norm or parameter stops training with `NonFiniteLossError`; the
update of that step is not applied and no checkpoint is written after it, so the last good one
is kept.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import os
import signal
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
from seqgen.config import TrainConfig, check_train, schema_default
from seqgen.config import setting as config_setting
from seqgen.errors import TrainingInterrupted, UserError
from seqgen.metrics.perplexity import LN2, perplexity_from_nll
from seqgen.parallel import describe_devices, make_mesh, replicate, shard_batch
from seqgen.progress import Progress

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
    backward: str = schema_default(TrainConfig, "backward")  # models.recurrence, .wavefront


# --------------------------------------------------------------------------------------------
# Optimizer


def setting(cfg: Any, name: str) -> Any:
    """One field of a train config; a field it leaves out (a partial config of a test or
    script) takes its `seqgen.config.TrainConfig` default, the one place defaults live."""
    return config_setting(cfg, name, schema_default(TrainConfig, name))


def hparams_from_cfg(cfg: Any) -> TrainHParams:
    """The optimizer fields of a train config (missing ones: the schema's defaults), checked
    by `seqgen.config.check_train` (ranges, warmup_steps <= steps)."""
    check_train(cfg)
    return TrainHParams(
        steps=int(setting(cfg, "steps")),
        lr=float(setting(cfg, "lr")),
        weight_decay=float(setting(cfg, "weight_decay")),
        warmup_steps=int(setting(cfg, "warmup_steps")),
        clip_norm=float(setting(cfg, "clip_norm")),
        end_lr_ratio=float(setting(cfg, "end_lr_ratio")),
        backward=str(setting(cfg, "backward")),
    )


def lr_schedule(hp: TrainHParams) -> optax.Schedule:
    """Linear warmup 0 -> lr over `warmup_steps`, then cosine lr -> end_lr_ratio*lr at `steps`."""
    decay = optax.cosine_decay_schedule(
        hp.lr, max(hp.steps - hp.warmup_steps, 1), alpha=hp.end_lr_ratio
    )
    if hp.warmup_steps == 0:
        return decay
    warm = optax.linear_schedule(0.0, hp.lr, hp.warmup_steps)
    return optax.join_schedules([warm, decay], [hp.warmup_steps])


def _decay_mask(params: Any) -> Any:
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def _scaled_adamw(learning_rate: Any, hp: TrainHParams) -> optax.GradientTransformation:
    """AdamW on the schedule's shape (`lr_schedule` with peak 1), then times `learning_rate`.

    AdamW's update, weight decay included, is linear in the learning rate, so this is AdamW
    with `lr_schedule(hp)`; the peak is a separate factor so that it can be traced."""
    adamw = optax.adamw(
        lr_schedule(hp._replace(lr=1.0)), weight_decay=hp.weight_decay, mask=_decay_mask
    )
    if hp.clip_norm > 0:
        adamw = optax.chain(optax.clip_by_global_norm(hp.clip_norm), adamw)
    return optax.chain(adamw, optax.scale(learning_rate))


@functools.lru_cache(maxsize=16)
def make_optimizer(hp: TrainHParams) -> optax.GradientTransformation:
    """Clip by global norm (if clip_norm > 0), then AdamW with `lr_schedule(hp)`; no weight
    decay on biases.

    The peak learning rate `hp.lr` is injected (`optax.inject_hyperparams`): it lives in the
    optimizer state as `hyperparams["learning_rate"]`, a traced array, so the train step of an
    lr sweep compiles once (its compile key is `_compile_key(hp)`, without the lr)."""
    return optax.inject_hyperparams(_scaled_adamw, static_args="hp")(learning_rate=hp.lr, hp=hp)


def _compile_key(hp: TrainHParams) -> TrainHParams:
    """What the compiled train step depends on: `hp` but its lr, read from the optimizer state."""
    return hp._replace(lr=1.0)


# --------------------------------------------------------------------------------------------
# Pure steps


def masked_cross_entropy(logits: jax.Array, targets: jax.Array, mask: jax.Array) -> jax.Array:
    """Per-token cross-entropy [B, T] times mask (no reduction)."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
    return ce * mask


def batch_loss(model: nnx.Module, batch: Any, key: jax.Array | None, backward: str) -> jax.Array:
    """Masked-mean token cross-entropy of `model` on one (inputs, targets, mask) batch."""
    inputs, targets, mask = batch
    logits = model(inputs, rngs=key, backward=backward)
    return jnp.sum(masked_cross_entropy(logits, targets, mask)) / jnp.maximum(jnp.sum(mask), 1.0)


def _all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def _train_step(graphdef, compile_key, params, opt_state, rest, batch, key_data, step, bad_step):
    """One AdamW update on the masked-mean token cross-entropy; skipped if not finite.

    `key_data` uint32[2] = (seed, step) is the raw threefry key of this step's dropout masks
    (built on the host: no RNG op to compile for it). `step` is the number of updates done
    before this one; `bad_step` is -1 until the first non-finite step (1-based), after which
    every update is skipped. The learning rate is the one in `opt_state` (`make_optimizer`).
    """
    tx = make_optimizer(compile_key)
    key = jax.random.wrap_key_data(key_data, impl="threefry2x32")

    def loss_fn(p):
        return batch_loss(nnx.merge(graphdef, p, rest), batch, key, compile_key.backward)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, new_opt_state = tx.update(grads, opt_state, params)
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


class _StopSignals:
    """While active (main thread only), SIGINT and SIGTERM record their number in `signum`
    instead of interrupting; a second one raises `KeyboardInterrupt`, except inside
    `protected()` (a state update or a checkpoint save), where it is held until the section
    ends: a double signal never leaves a half-written checkpoint or a state whose step does
    not match its parameters. The previous handlers come back on exit."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        self._depth = 0  # nesting of protected sections
        self._held = False  # a second signal arrived inside one

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
        elif self._depth:
            self._held = True
        else:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def protected(self) -> Iterator[None]:
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if not self._depth and self._held:
            self._held = False
            raise KeyboardInterrupt

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


@dataclasses.dataclass
class TrainState:
    """What the loop carries from step to step; a checkpoint holds the arrays and `meta`."""

    params: Any
    opt_state: Any
    rest: Any  # the model's non-parameter state (dropout RNG counts, ...)
    bad_step: Any = -1  # int32 scalar: -1, or the first non-finite step (1-based)
    step: int = 0  # updates done
    data_position: int = 0  # batches consumed (one per step)
    best_loss: float = math.inf
    best_step: int = -1
    bad_evals: int = 0  # evaluations since the best one (not checkpointed)
    stopped_early: bool = False
    history: dict[str, float] = dataclasses.field(default_factory=dict)  # step -> valid loss

    def meta(self, seed: int) -> dict[str, Any]:
        return {
            "step": self.step,
            "data_position": self.data_position,
            "seed": seed,
            "best_valid_loss": self.best_loss if math.isfinite(self.best_loss) else 1e308,
            "best_step": self.best_step,
            "history": self.history,
            "stopped_early": self.stopped_early,
        }


def _restore(ckpt: TrainCheckpointer, state: TrainState) -> TrainState | None:
    """The state in the latest checkpoint; None if there is none, or if it is unreadable (then
    the checkpoints are cleared with a warning and training starts from step 0)."""
    if ckpt.latest_step("latest") is None:
        return None
    try:
        params, opt_state, meta = ckpt.restore("latest", state.params, state.opt_state)
        return dataclasses.replace(
            state,
            params=params,
            opt_state=opt_state,
            step=int(meta["step"]),
            data_position=int(meta["data_position"]),
            best_loss=float(meta["best_valid_loss"]),
            best_step=int(meta["best_step"]),
            history=dict(meta.get("history", {})),
            stopped_early=bool(meta.get("stopped_early", False)),
        )
    except Exception as exc:  # damaged, or written for another model
        log.warning(
            "training checkpoint %s is unreadable (%s); training from step 0",
            ckpt.directory,
            type(exc).__name__,
        )
        ckpt.clear()
        return None


def init_or_restore(
    model: nnx.Module,
    hp: TrainHParams,
    train_batches: Iterator,
    ckpt: TrainCheckpointer | None,
    mesh: Any,
) -> TrainState:
    """A fresh state for `model`, or the latest checkpoint's (the batch iterator is then
    fast-forwarded past the batches it consumed), committed to its devices."""
    model.train()
    _, params, rest = nnx.split(model, nnx.Param, ...)
    state = TrainState(params, make_optimizer(hp).init(params), rest)
    resumed = _restore(ckpt, state) if ckpt is not None else None
    if resumed is not None:
        state = resumed
        log.info("resumed from step %d (%s)", state.step, ckpt.directory)
        _fast_forward(train_batches, state.data_position)
    # Commit the state to its devices: jit caches on committed-ness, and restored arrays are
    # committed, so fresh and resumed runs (and every step) share one compiled train step.
    arrays = (state.params, state.opt_state, state.rest, np.int32(-1))
    if mesh is not None:
        arrays = replicate(arrays, mesh)
    else:
        arrays = jax.device_put(arrays, jax.local_devices()[0])
    state.params, state.opt_state, state.rest, state.bad_step = arrays
    return state


class _Meter:
    """Throughput (tokens/s, the first step's compile excluded) and the mean loss of the
    steps since the last log line."""

    def __init__(self):
        self.pending: list = []
        self.first = True
        self.tokens_since, self.t_since = 0.0, time.perf_counter()
        self.total_tokens, self.t_train = 0.0, 0.0
        self.last_loss = math.nan

    def add(self, loss: jax.Array, ntok: float) -> None:
        self.pending.append(loss)
        if self.first:  # throughput excludes the compile in the first step
            jax.block_until_ready(loss)
            self.first, self.t_since = False, time.perf_counter()
        else:
            self.tokens_since += ntok
            self.total_tokens += ntok

    def flush(self) -> tuple[float, float]:
        """(mean loss, tokens/s) since the last flush."""
        self.last_loss = float(np.mean(jax.device_get(self.pending)))
        now = time.perf_counter()
        tps = self.tokens_since / max(now - self.t_since, 1e-9)
        self.t_train += now - self.t_since
        self.tokens_since, self.t_since, self.pending = 0.0, now, []
        return self.last_loss, tps

    def close(self) -> None:
        self.t_train += time.perf_counter() - self.t_since


class _Loop:
    """The train loop's parts over one `TrainState`: step, evaluate, checkpoint, and the
    checks between them (finite state, stop signals)."""

    def __init__(self, model, hp, cfg, valid, ckpt, tracker, seed, progress, mesh):
        self.hp, self.valid, self.ckpt, self.tracker, self.seed = hp, valid, ckpt, tracker, seed
        self.progress, self.mesh = progress, mesh
        self.eval_every = int(setting(cfg, "eval_every"))
        self.ckpt_every = int(setting(cfg, "checkpoint_every"))
        self.log_every = int(setting(cfg, "log_every"))
        self.patience = int(setting(cfg, "patience"))
        model.eval()
        self.graphdef_eval = nnx.graphdef(model)
        model.train()
        self.graphdef = nnx.graphdef(model)
        self.schedule = lr_schedule(hp)
        self.meter = _Meter()
        self.stop = _StopSignals()
        self.saved_step = -1

    def step(self, state: TrainState, batch: Any) -> None:
        """One update, then its log line, evaluation and checkpoint when they are due.

        The update is dispatched asynchronously, so the next batch is built on the host while
        it runs; the host waits for the device only for a log line, evaluation or checkpoint
        (every `log_every` steps at most), never per step (`scripts/bench_train.py`)."""
        batch = _as_arrays(batch)
        ntok = float(batch[2].sum())
        if self.mesh is not None:
            batch = shard_batch(batch, self.mesh)
        train_step, _ = _jitted()
        new = train_step(
            self.graphdef, _compile_key(self.hp), state.params, state.opt_state, state.rest,
            batch, np.array([self.seed % 2**32, state.step], np.uint32), np.int32(state.step),
            state.bad_step,
        )  # fmt: skip
        with self.stop.protected():  # the parameters and their step change together
            state.params, state.opt_state, state.bad_step, m = new
            state.step += 1
            state.data_position = state.step  # one batch per step
        compiling = self.meter.first
        self.meter.add(m["loss"], ntok)
        if compiling:  # `add` waited for the first step, its compile included
            self.bar.compiled(state.step)
        last = state.step == self.hp.steps
        if state.step % self.log_every == 0 or last:
            self.log(state, m)
        if self.valid and (state.step % self.eval_every == 0 or last):
            self.evaluate(state)
        if state.step % self.ckpt_every == 0 or last or state.stopped_early:
            self.check_finite(state)
            self.save(state, "latest")
        self.stop_if_signalled(state)

    def log(self, state: TrainState, m: dict[str, jax.Array]) -> None:
        self.check_finite(state)
        loss, tps = self.meter.flush()
        if self.tracker is not None:
            lr = float(self.schedule(state.step - 1))  # the lr of the update just done
            self.tracker.log(
                {
                    "train/loss": loss,
                    "train/grad_norm": float(m["grad_norm"]),
                    "train/lr": lr,
                    "train/tokens_per_s": tps,
                },
                step=state.step,
            )
        self.bar.update(state.step, loss, tps)

    def evaluate(self, state: TrainState) -> None:
        """Valid loss; a new best is checkpointed; `patience` evaluations without one stop."""
        self.check_finite(state)
        sums = _eval_sums(self.graphdef_eval, state.params, state.rest, self.valid, self.mesh)
        res = _metrics_from_sums(*sums)
        state.history[str(state.step)] = res["loss"]
        if self.progress:
            log.info("valid step %d: loss %.4f, ppl %.3f", state.step, res["loss"], res["ppl"])
        if self.tracker is not None:
            self.tracker.log({f"valid/{k}": v for k, v in res.items()}, step=state.step)
        if res["loss"] < state.best_loss:
            state.best_loss, state.best_step, state.bad_evals = res["loss"], state.step, 0
            self.save(state, "best")
        else:
            state.bad_evals += 1
        if self.patience and state.bad_evals >= self.patience:
            state.stopped_early = True

    def save(self, state: TrainState, which: str) -> None:
        if self.ckpt is not None:
            with self.stop.protected():  # a second signal waits until the checkpoint is whole
                meta = state.meta(self.seed)
                self.ckpt.save(which, state.step, state.params, state.opt_state, meta)
                self.saved_step = state.step if which == "latest" else self.saved_step

    def check_finite(self, state: TrainState) -> None:
        bad = int(state.bad_step)
        if bad >= 0:
            kept = self.ckpt.latest_step("latest") if self.ckpt is not None else None
            where = f"; last good checkpoint: step {kept} in {self.ckpt.directory}" if kept else ""
            raise NonFiniteLossError(
                f"training diverged: non-finite loss, gradient or parameters at step {bad} "
                f"(train.lr={self.hp.lr}); lower train.lr or set train.clip_norm{where}"
            )

    def stop_if_signalled(self, state: TrainState) -> None:
        if self.stop.signum is None:
            return
        self.check_finite(state)  # a diverged state is not saved; that error wins
        if self.saved_step != state.step:
            self.save(state, "latest")
        kept = "checkpoint saved" if self.ckpt is not None else "no checkpoint (no ckpt_dir)"
        raise TrainingInterrupted(
            f"interrupted at step {state.step}; {kept}; rerun the same command to resume",
            state.step,
            self.stop.signum,
        )

    def run(self, state: TrainState, train_batches: Iterator, restore_best: bool) -> None:
        """Step until `hp.steps` (or an early stop); then the best parameters, if asked."""
        self.saved_step = state.step
        self.bar = Progress("train", self.hp.steps, state.step, enabled=self.progress)
        try:
            self.stop.install()
            while state.step < self.hp.steps and not state.stopped_early:
                self.step(state, next(train_batches))
            self.check_finite(state)
            best = state.best_step
            if restore_best and self.ckpt is not None and best >= 0 and best != state.step:
                state.params, _, _ = self.ckpt.restore("best", state.params)
        except KeyboardInterrupt:
            # Keep what was computed: the state after `step` completed updates is good if finite.
            if int(state.bad_step) < 0 and self.saved_step != state.step:
                self.save(state, "latest")
            raise
        finally:
            self.stop.restore()
            self.bar.close()
            self.meter.close()
            if self.ckpt is not None:
                self.ckpt.close()


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

    `cfg` holds the fields of `seqgen.config.TrainConfig` (steps, lr, weight_decay,
    warmup_steps, clip_norm, eval_every, eval_batches: the first N valid batches per
    evaluation, checkpoint_every, log_every, data_parallel, progress, patience: evaluations
    without improvement before stopping, 0 = off, end_lr_ratio); a missing one takes the
    schema's default (`setting`). With `restore_best` and validation data the returned
    model holds the best-by-valid-loss parameters, else the last ones.

    Summary keys: train/loss (last logged), valid/loss, valid/ppl, valid/bits (best),
    best_step, steps, tokens_per_s, wall_time_s, stopped_early.
    """
    t_start = time.perf_counter()
    hp = hparams_from_cfg(cfg)
    eval_batches = int(setting(cfg, "eval_batches"))
    if progress is None:
        progress = bool(setting(cfg, "progress"))
    valid = list(valid_batches)[:eval_batches] if eval_batches > 0 else list(valid_batches)
    mesh = make_mesh() if setting(cfg, "data_parallel") else None
    if mesh is not None and mesh.size == 1:
        mesh = None
    log.info("training on %s", describe_devices(mesh))

    ckpt = TrainCheckpointer(ckpt_dir) if ckpt_dir is not None else None
    loop = _Loop(model, hp, cfg, valid, ckpt, tracker, seed, progress, mesh)
    state = init_or_restore(model, hp, train_batches, ckpt if resume else None, mesh)
    loop.run(state, train_batches, restore_best)

    params = state.params
    if mesh is not None:  # hand back single-device arrays (decoding does not use the mesh)
        # a replica this process holds: under multi-host the global array is not addressable
        local = jax.tree.map(lambda x: x.addressable_data(0), params)
        params = jax.device_put(local, jax.local_devices()[0])
    nnx.update(model, params)
    model.eval()
    summary: dict[str, Any] = {
        "train/loss": loop.meter.last_loss,
        "steps": state.step,
        "tokens_per_s": loop.meter.total_tokens / max(loop.meter.t_train, 1e-9),
        "wall_time_s": time.perf_counter() - t_start,
        "stopped_early": state.stopped_early,
        "best_step": state.best_step,
    }
    if math.isfinite(state.best_loss):
        summary.update(
            {
                "valid/loss": state.best_loss,
                "valid/ppl": math.exp(min(state.best_loss, 700.0)),
                "valid/bits": state.best_loss / LN2,
            }
        )
    return TrainResult(model, summary)
