"""Checks a run needs before its first expensive step, each failing as one `UserError` line.

Two stages, both before any training or model loading:

- `check_environment(cfg, out_dir)`: what needs no data -- the run and cache folders can be
  written, `distributed=true` has a coordinator, `logger.mode=online` has a W&B API key.
  `seqgen.run` calls it before Hydra starts (also for `hydra.run.dir`), `run_experiment` again.
- `check_corpus(cfg, corpus)` and `check_budgets(cfg, vocab_size, num_prompts)`: what depends
  on the vocabulary or the data, as soon as the corpus is loaded -- every decoder of the run
  (`decoder`, or each `compare[i]`, named so in the error), unique and path-safe labels,
  splits that are not empty; then, on the prompts the pipeline built once
  (`prompts.prepare_prompts`), budgets (training activations vs memory, decode outputs vs
  `decode.max_tokens` and memory).

`check_divergence` is the rule that a trained model is not a divergence (never cached).
"""

from __future__ import annotations

import math
import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from seqgen.decoding.registry import rows_per_prompt, validate_decoder
from seqgen.errors import UserError
from seqgen.paths import cache_root

# Environment variables from which `jax.distributed.initialize()` finds its coordinator.
_CLUSTER_ENV = (
    "JAX_COORDINATOR_ADDRESS",
    "SLURM_JOB_ID",  # SLURM
    "OMPI_MCA_orte_hnp_uri",  # Open MPI
    "OMPI_COMM_WORLD_SIZE",
    "PMI_RANK",  # MPICH / Intel MPI via mpi4py
    "TPU_WORKER_HOSTNAMES",  # Cloud TPU pods
    "CLOUD_TPU_TASK_ID",
    "MEGASCALE_COORDINATOR_ADDRESS",
)


# ---------------------------------------------------------------------------------------------
# Stage 1: the environment.


def check_writable_dir(path: str | os.PathLike, what: str) -> None:
    """`path` is a folder that exists or can be created, and this process may write into it."""
    p = Path(path).expanduser().absolute()
    probe = p
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        where = "is an existing file" if probe == p else f"is inside {probe}, which is a file"
        raise UserError(f"{what}={path} {where}; allowed: a folder that can be created or written")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(
            f"{what}={path} is not writable ({probe} does not allow writing); "
            "allowed: a folder this user can write"
        )


def _wandb_api_key_present() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or ""
    try:
        auth = netrc.netrc(os.environ.get("NETRC") or None).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(auth and auth[2])


def check_environment(
    cfg: Any, out_dir: str | os.PathLike | None = None, out_key: str = "hydra.run.dir"
) -> None:
    """Folders, coordinator and credentials: everything that can fail before any data is read."""
    if out_dir is not None:
        check_writable_dir(out_dir, out_key)
    cache = cfg.get("cache_dir")
    check_writable_dir(cache_root(cache), "cache_dir" if cache else "SEQGEN_CACHE")
    if cfg.get("distributed") and not (
        cfg.get("coordinator_address") or any(os.environ.get(v) for v in _CLUSTER_ENV)
    ):
        raise UserError(
            "distributed=true needs a coordinator: run under SLURM, Open MPI or a TPU pod, or "
            "set JAX_COORDINATOR_ADDRESS=host:port (with JAX_NUM_PROCESSES, JAX_PROCESS_ID); "
            "on one machine leave distributed=false"
        )
    logger = cfg.logger
    env_mode = os.environ.get("WANDB_MODE", "")
    if (
        logger.name == "wandb"
        and logger.mode == "online"
        and env_mode not in ("offline", "disabled", "dryrun")
        and not _wandb_api_key_present()
    ):
        raise UserError(
            "logger.mode=online needs a W&B API key (WANDB_API_KEY, or `wandb login`); "
            "without one use logger.mode=offline and `wandb sync` later"
        )


# ---------------------------------------------------------------------------------------------
# Stage 2: what depends on the corpus.


def run_decoders(cfg: Any) -> list[tuple[str, Any]]:
    """The decoders of a run with the name the user knows them by: `decoder` or `compare[i]`."""
    if cfg.get("decoder") is not None:
        return [("decoder", cfg.decoder)]
    return [(f"compare[{i}]", dec) for i, dec in enumerate(cfg.compare)]


def check_decoders(cfg: Any, vocab_size: int) -> list[str]:
    """Validate every decoder's knobs (as `decode()` will) and labels; return the labels."""
    from seqgen.driver import decoder_label
    from seqgen.outputs import slug

    decoders = run_decoders(cfg)
    if not decoders:
        raise UserError("nothing to decode: give decoder=NAME or a non-empty `compare` list")
    labels: dict[str, str] = {"human": "the human row"}
    files: dict[str, str] = {"human": "the human row"}
    for where, dec in decoders:
        validate_decoder(dec, where, vocab_size)
        label = decoder_label(dec)
        if label in labels:
            raise UserError(
                f"{where} and {labels[label]} have the same label {label!r}; "
                "allowed: a distinct label per decoder (set label: ...)"
            )
        if slug(label) in files:
            raise UserError(
                f"{where} ({label!r}) and {files[slug(label)]} would write the same file "
                f"samples/{slug(label)}.txt; allowed: labels that differ in letters or digits"
            )
        labels[label] = where
        files[slug(label)] = where
    return list(labels)[1:]


def check_splits(corpus: Any) -> None:
    """Training, validation and test each need at least one sequence."""
    sizes = {"train": len(corpus.train), "valid": len(corpus.valid), "test": len(corpus.test)}
    if min(sizes.values()) > 0:
        return
    n = sum(sizes.values())
    tokens = sum(len(s) for split in (corpus.train, corpus.valid, corpus.test) for s in split)
    raise UserError(
        f"the corpus is too small for its splits: {n} sequence(s), {tokens} token(s), give "
        f"{sizes['train']}/{sizes['valid']}/{sizes['test']} train/valid/test sequences; each "
        "split needs at least one: use more data (at least 3 sequences; for text, a smaller "
        "data.window) or larger data.valid_fraction / data.test_fraction"
    )


def available_memory() -> tuple[int | None, str]:
    """Bytes one accelerator (or, on CPU, the host) can still give this process, and where."""
    import jax

    dev = jax.local_devices()[0]
    if dev.platform != "cpu":
        try:
            stats = dev.memory_stats() or {}
            limit = stats.get("bytes_limit")
            if limit:
                return int(limit) - int(stats.get("bytes_in_use", 0)), f"{dev.platform} memory"
        except Exception:  # a backend without memory statistics: no check
            return None, ""
    return host_available_memory(), "host memory"


def host_available_memory() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def training_bytes(model_cfg: Any, train_cfg: Any, vocab_size: int, n_devices: int = 1) -> int:
    """A lower estimate of one device's training memory, float32 throughout.

    Parameters, gradients and AdamW's two moments: 4 copies of P parameters. Activations kept
    for the backward pass, per token of a [batch_size / devices, seq_len] batch: the embedding
    (E), per layer the gates (g*H, g = 4 LSTM, 3 GRU, 1 RNN), cell and hidden state and the
    layer input (3H), and the logits, their log-softmax and gradient (3V).
    """
    V, E, H = vocab_size, int(model_cfg.embed_size), int(model_cfg.hidden_size)
    L = int(model_cfg.num_layers)
    g = {"lstm": 4, "gru": 3, "rnn": 1}.get(str(model_cfg.cell), 4)
    e_in = V if model_cfg.one_hot_input else E
    params = (0 if model_cfg.one_hot_input else V * E) + H * V + V
    params += g * H * (e_in + H + 2) + (L - 1) * g * H * (2 * H + 2)
    rows = math.ceil(int(train_cfg.batch_size) / max(1, n_devices))
    per_token = E + L * (g + 3) * H + 3 * V
    return 4 * (4 * params + rows * int(train_cfg.seq_len) * per_token)


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_training_memory(cfg: Any, vocab_size: int) -> None:
    import jax

    if cfg.model.cell == "oracle":
        return
    n_dev = jax.local_device_count() if cfg.train.get("data_parallel", True) else 1
    need = training_bytes(cfg.model, cfg.train, vocab_size, n_dev)
    have, where = available_memory()
    if have is not None and need > have:
        raise UserError(
            f"train.batch_size={cfg.train.batch_size} with train.seq_len={cfg.train.seq_len} "
            f"needs at least {_gib(need)} per device to train, more than the {_gib(have)} of "
            f"{where} available; lower train.batch_size or train.seq_len"
        )


# Bytes per decoded position kept on the host: token id (int32) and three log-probs (float32),
# twice (the per-chunk outputs and their concatenation).
_DECODE_BYTES_PER_POSITION = 2 * 16


def check_decode_budget(cfg: Any, num_prompts: int) -> None:
    """Each decoder's outputs, rows x decode.max_len, within decode.max_tokens and memory."""
    max_len = int(cfg.decode.max_len)
    limit = int(cfg.decode.get("max_tokens") or 0)
    have = host_available_memory()
    for where, dec in run_decoders(cfg):
        rows = num_prompts * rows_per_prompt(dec, int(cfg.decode.num_samples))
        positions = rows * max_len
        lower = "lower decode.max_len, decode.num_samples, decode.num_prompts or the beam size"
        if limit and positions > limit:
            raise UserError(
                f"{where} would decode {rows} rows x decode.max_len={max_len} = {positions:,} "
                f"token positions, more than decode.max_tokens={limit:,}; {lower}, or raise "
                "decode.max_tokens"
            )
        need = positions * _DECODE_BYTES_PER_POSITION
        if have is not None and need > have:
            raise UserError(
                f"{where} would decode {positions:,} token positions ({_gib(need)} of outputs), "
                f"more than the {_gib(have)} of host memory available; {lower}"
            )


def check_corpus(cfg: Any, corpus: Any) -> None:
    """Every decoder of the run against the vocabulary, and the splits: before the prompts."""
    from seqgen.decoding.steering import resolve

    check_decoders(cfg, len(corpus.vocab))
    for _, dec in run_decoders(cfg):
        resolve(dec, corpus.vocab)  # a steering text's symbol missing from the vocabulary
    check_splits(corpus)


def check_budgets(cfg: Any, vocab_size: int, num_prompts: int) -> None:
    """The decode outputs of the run's `num_prompts` prompts (built once by the pipeline,
    `prompts.prepare_prompts`, which also checks their symbols and lengths) and the training
    memory, before training or loading a model."""
    check_decode_budget(cfg, num_prompts)
    check_training_memory(cfg, vocab_size)


# ---------------------------------------------------------------------------------------------
# After training.

# A held-out cross-entropy above this many times log V (perplexity above V**2) is a divergence.
DIVERGENCE_FACTOR = 2.0


def check_divergence(metrics: dict[str, float], vocab_size: int) -> None:
    """A trained model whose held-out perplexity is not finite, or exceeds V**2, diverged.

    The uniform distribution over the V tokens has cross-entropy log V on any data, and an
    initialized model scores about that; a model that gives held-out tokens on average less
    than 1/V**2 probability is worse than knowing nothing by a factor of V, which training
    reaches only by blowing up (e.g. train.lr=1e30: loss 6.6e30). Such a model is not cached.
    """
    bound = DIVERGENCE_FACTOR * math.log(vocab_size)
    for split in ("valid", "test"):
        ppl, bits = metrics.get(f"ppl/{split}"), metrics.get(f"bits/{split}")
        if ppl is None and bits is None:
            continue
        if bits is not None and math.isfinite(bits):  # finite also where ppl overflowed
            nll = bits * math.log(2)
        else:
            nll = math.log(ppl) if ppl is not None and 0 < ppl < math.inf else math.inf
        if not nll <= bound:
            raise UserError(
                f"training diverged: ppl/{split}={ppl} (cross-entropy {nll:.4g} nats per "
                f"token, above {DIVERGENCE_FACTOR:g} x log V = {bound:.2f} for V={vocab_size}); "
                "the model was not cached; lower train.lr or raise train.warmup_steps"
            )
