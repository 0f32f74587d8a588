"""Training benchmark: tokens/s of seqgen's training step beside a bare JAX step and PyTorch.

    python scripts/bench_train.py [--models default,char_rnn,folk_rnn] [--rounds 5] [--steps 3]
    python scripts/bench_train.py --quick                  # the default model, 3 rounds of 2
    python scripts/bench_train.py --breakdown              # + forward / forward+backward rows
    python scripts/bench_train.py --xla-options "xla_cpu_use_fusion_emitters=false"  # A/B

For each model (LSTM, AdamW, global-norm clipping, dropout as its experiment sets it) it times
- seqgen B, for each `train.backward` value B (`--backwards`; "(default)" marks the schema's):
  `seqgen.train`'s own loop step (`_Loop.step`: host batch, jitted update with the NaN guard,
  the meter, a log line every `log_every` steps). autodiff: JAX differentiates one scan per
  layer; fused: the per-layer scans with `seqgen.models.recurrence`'s backward; wavefront,
  wavefront_fused: all layers in one scan (`seqgen.models.wavefront`), by JAX or by hand;
- jax bare: a minimal JAX LSTM (hoisted input projections, `lax.scan`, `jax.value_and_grad`)
  with no optimizer, no dropout, no loop around it: what autodiff of a scan costs by itself;
- torch: `torch.nn.LSTM` + Linear + cross-entropy, AdamW and `clip_grad_norm_`, the usual
  PyTorch loop (`pip install .[bench]`);
- with `--breakdown`: seqgen's forward only (loss) and forward + backward (no optimizer), and
  the latter without dropout (dropout 0: the masks' threefry draw left out);
- with `--xla-options "NAME=VALUE ..."` (repeatable): seqgen's forward + backward compiled with
  those XLA options (`jax.jit(compiler_options=...)`, DebugOptions fields such as
  `xla_cpu_use_fusion_emitters`), beside the same without them: an A/B of XLA settings in one
  process and one round-robin, where separate processes with different `XLA_FLAGS` would each
  see a different load.
The implementations are interleaved round-robin (each round times `--steps` steps of each, in
a rotated order), so a machine loaded by other jobs slows all of them alike; the table shows
the median tokens/s over rounds and the ratio to torch's. Both frameworks use `--threads`
threads: the core count (XLA's CPU pool is sized by the cores) or 1 (torch.set_num_threads(1);
XLA with `XLA_ONE_THREAD`); on a machine loaded by other jobs, 1 thread each is the fair choice
(torch's OpenMP threads spin-wait and collapse when the cores are oversubscribed).
Timings are for this machine only; they are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from seqgen.config import TrainConfig, schema_default
from seqgen.models import LanguageModel
from seqgen.models.recurrence import BACKWARDS
from seqgen.progress import Progress
from seqgen.train import TrainHParams, _Loop, batch_loss, init_or_restore


class Size(NamedTuple):
    layers: int
    hidden: int
    embed: int  # 0: one-hot input (folk-rnn)
    vocab: int
    batch: int
    seq_len: int
    dropout: float


# default: conf/model/lstm.yaml + conf/train/default.yaml; char_rnn and folk_rnn: the layers,
# widths and vocabularies of conf/experiment/{char_rnn,folk_rnn}.yaml, on smaller batches
# than those experiments' (50 x 100 and 64 x 512) so that a round takes seconds on a CPU.
MODELS = {
    "default": Size(2, 128, 64, 89, 32, 256, 0.1),
    "char_rnn": Size(2, 512, 64, 65, 50, 100, 0.5),
    "folk_rnn": Size(3, 512, 0, 137, 16, 256, 0.5),
}
XLA_ONE_THREAD = ("--xla_cpu_multi_thread_eigen=false", "intra_op_parallelism_threads=1")
HP = dict(steps=10**6, lr=2e-3, weight_decay=0.01, warmup_steps=0, clip_norm=1.0, end_lr_ratio=0)


def _batches(size: Size, seed: int = 0):
    rng = np.random.default_rng(seed)
    while True:
        tokens = rng.integers(4, size.vocab, size=(size.batch, size.seq_len + 1), dtype=np.int32)
        yield tokens[:, :-1], tokens[:, 1:], np.ones((size.batch, size.seq_len), np.float32)


def _seqgen_model(size: Size) -> LanguageModel:
    return LanguageModel(
        size.vocab, cell="lstm", embed_size=size.embed or size.hidden, hidden_size=size.hidden,
        num_layers=size.layers, dropout=size.dropout, one_hot_input=size.embed == 0,
        rngs=nnx.Rngs(0),
    )  # fmt: skip


def seqgen_step(size: Size, backward: str) -> Callable[[], Any]:
    """`seqgen.train`'s loop step; returns a callable doing one step (result: params)."""
    model = _seqgen_model(size)
    hp = TrainHParams(**HP, backward=backward)
    cfg = argparse.Namespace(eval_every=10**9, checkpoint_every=10**9, log_every=10, patience=0)
    loop = _Loop(model, hp, cfg, [], None, None, 0, False, None)
    loop.bar = Progress("train", hp.steps, 0, enabled=False)
    state = init_or_restore(model, hp, iter(()), None, None)
    batches = _batches(size)

    def step():
        loop.step(state, next(batches))
        return state.params

    return step


def seqgen_parts(
    size: Size, grad: bool, backward: str = "autodiff", options: dict[str, Any] | None = None
) -> Callable[[], Any]:
    """seqgen's loss (forward) or its value and gradient (no optimizer), jitted (with the XLA
    compile `options`, if any)."""
    model = _seqgen_model(size)
    model.train()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    key = jax.random.key(0)

    def loss(p, batch):
        return batch_loss(nnx.merge(graphdef, p, rest), batch, key, backward)

    fn = jax.jit(jax.value_and_grad(loss) if grad else loss, compiler_options=options)
    batches = _batches(size)
    return lambda: fn(params, next(batches))


def xla_options(text: str) -> dict[str, Any]:
    """'NAME=VALUE ...' -> XLA compile options; true/false and integers typed, else strings."""
    out: dict[str, Any] = {}
    for item in text.split():
        name, _, value = item.partition("=")
        typed = {"true": True, "false": False}.get(value.lower(), value)
        out[name.lstrip("-")] = int(value) if value.lstrip("-").isdigit() else typed
    return out


def jax_bare_step(size: Size) -> Callable[[], Any]:
    """A minimal autodiff LSTM step: embedding, per layer one input matmul and a scan."""
    k = iter(jax.random.split(jax.random.key(0), 4 * size.layers + 2))
    s = 0.1
    h = size.hidden
    p = {"emb": s * jax.random.normal(next(k), (size.vocab, size.embed or size.vocab))}
    p["head"] = s * jax.random.normal(next(k), (h, size.vocab))
    for i in range(size.layers):
        n_in = p["emb"].shape[1] if i == 0 else h
        p[f"wi{i}"] = s * jax.random.normal(next(k), (n_in, 4 * h))
        p[f"wh{i}"] = s * jax.random.normal(next(k), (h, 4 * h))
        p[f"b{i}"] = jnp.zeros((4 * h,))

    def loss(p, batch):
        inputs, targets, mask = batch
        x = p["emb"][inputs]
        for i in range(size.layers):

            def cell(carry, xp, wh=p[f"wh{i}"]):
                c, hh = carry
                ii, f, g, o = jnp.split(xp + hh @ wh, 4, -1)
                c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(ii) * jnp.tanh(g)
                hh = jax.nn.sigmoid(o) * jnp.tanh(c)
                return (c, hh), hh

            z = jnp.zeros((inputs.shape[0], h))
            xp = jnp.swapaxes(x @ p[f"wi{i}"] + p[f"b{i}"], 0, 1)
            x = jnp.swapaxes(jax.lax.scan(cell, (z, z), xp)[1], 0, 1)
        ce = optax.softmax_cross_entropy_with_integer_labels(x @ p["head"], targets)
        return jnp.sum(ce * mask) / jnp.sum(mask)

    fn = jax.jit(jax.value_and_grad(loss))
    batches = _batches(size)
    return lambda: fn(p, next(batches))


def torch_step(size: Size) -> Callable[[], Any]:
    """PyTorch's usual loop: nn.LSTM (fused kernels), AdamW, clip_grad_norm_."""
    import torch

    torch.manual_seed(0)
    n_in = size.embed or size.vocab
    emb = torch.nn.Embedding(size.vocab, n_in)
    if size.embed == 0:  # one-hot input: the embedding is the identity (folk-rnn)
        emb.weight.data = torch.eye(size.vocab)
        emb.weight.requires_grad_(False)
    lstm = torch.nn.LSTM(n_in, size.hidden, size.layers, batch_first=True, dropout=size.dropout)
    head = torch.nn.Linear(size.hidden, size.vocab)
    drop = torch.nn.Dropout(size.dropout)
    params = [q for m in (emb, lstm, head) for q in m.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=HP["lr"], weight_decay=HP["weight_decay"])
    batches = _batches(size)

    def step():
        inputs, targets, mask = (torch.from_numpy(a) for a in next(batches))
        out, _ = lstm(emb(inputs.long()))
        logits = head(drop(out))
        ce = torch.nn.functional.cross_entropy(
            logits.reshape(-1, size.vocab), targets.long().reshape(-1), reduction="none"
        )
        loss = (ce * mask.reshape(-1)).sum() / mask.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, HP["clip_norm"])
        opt.step()
        return loss.item()  # the usual loop reads the loss back every step

    return step


def impls(
    size: Size, backwards: list[str], breakdown: bool, with_torch: bool, options: list[str]
) -> dict[str, Callable[[], Any]]:
    default = schema_default(TrainConfig, "backward")
    out = {f"seqgen {b}{' (default)' * (b == default)}": seqgen_step(size, b) for b in backwards}
    out["jax bare"] = jax_bare_step(size)
    if breakdown:
        out["seqgen fwd"] = seqgen_parts(size, grad=False)
        out["seqgen fwd+bwd"] = seqgen_parts(size, grad=True)
        out["seqgen fwd+bwd dropout 0"] = seqgen_parts(size._replace(dropout=0.0), grad=True)
    if options:  # each beside the same program without options
        out["seqgen fwd+bwd"] = out.get("seqgen fwd+bwd") or seqgen_parts(size, grad=True)
    for text in options:
        out[f"seqgen fwd+bwd {text}"] = seqgen_parts(size, True, options=xla_options(text))
    if with_torch:
        out["torch"] = torch_step(size)
    return out


def run_model(name: str, size: Size, args: argparse.Namespace) -> list[tuple[str, float]]:
    fns = impls(
        size, args.backwards.split(","), args.breakdown, not args.no_torch, args.xla_options
    )
    for fn in fns.values():  # compile and warm up
        for _ in range(2):
            jax.block_until_ready(fn())
    names = list(fns)
    rates: dict[str, list[float]] = {n: [] for n in names}
    tokens = size.batch * size.seq_len * args.steps
    for r in range(args.rounds):
        for n in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            for _ in range(args.steps):
                out = fns[n]()
            jax.block_until_ready(out)
            rates[n].append(tokens / (time.perf_counter() - t0))
    return [(n, statistics.median(v)) for n, v in rates.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(MODELS), help=f"of {', '.join(MODELS)}")
    ap.add_argument(
        "--backwards", default=",".join(BACKWARDS), help="train.backward values to time"
    )
    ap.add_argument("--rounds", type=int, default=5, help="round-robin rounds (median)")
    ap.add_argument("--steps", type=int, default=3, help="steps per implementation per round")
    ap.add_argument("--batch", type=int, default=None, help="override every model's batch")
    ap.add_argument("--seq-len", type=int, default=None, help="override every model's seq_len")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="1 or the core count")
    ap.add_argument("--quick", action="store_true", help="default model, 3 rounds of 2 steps")
    ap.add_argument("--breakdown", action="store_true", help="+ seqgen forward, fwd+bwd rows")
    ap.add_argument(
        "--xla-options", action="append", default=[], metavar="'NAME=VALUE ...'",
        help="+ a seqgen fwd+bwd row compiled with these XLA options (repeatable)",
    )  # fmt: skip
    ap.add_argument("--no-torch", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.models, args.rounds, args.steps = "default", 3, 2
    if args.threads == 1:  # read when JAX starts its CPU backend (on first use, after this)
        os.environ["XLA_FLAGS"] = " ".join(
            [os.environ.get("XLA_FLAGS", ""), *XLA_ONE_THREAD]
        ).strip()
    elif args.threads != os.cpu_count():
        raise SystemExit(f"--threads={args.threads}; allowed: 1 or {os.cpu_count()} (XLA's pool)")
    if not args.no_torch:
        import torch

        torch.set_num_threads(args.threads)
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f}, threads: torch {args.threads}, "
        f"XLA {args.threads}; jax {jax.__version__}; "
        f"{args.rounds} rounds x {args.steps} steps, median tokens/s"
    )
    print("| model | size | implementation | tokens/s | vs torch |")
    print("|---|---|---|---|---|")
    for name in args.models.split(","):
        size = MODELS[name]._replace(
            **{k: v for k, v in (("batch", args.batch), ("seq_len", args.seq_len)) if v}
        )
        desc = (
            f"{size.layers}x{size.hidden}, {'one-hot' if size.embed == 0 else f'emb {size.embed}'}"
            f", V {size.vocab}, {size.batch}x{size.seq_len}, dropout {size.dropout}"
        )
        rows = run_model(name, size, args)
        ref = dict(rows).get("torch")
        for impl, rate in rows:
            ratio = f"{rate / ref:.2f}" if ref else "-"
            print(f"| {name} | {desc} | {impl} | {rate:,.0f} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
