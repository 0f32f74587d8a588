"""Checks a run needs before its first expensive step, each failing as one `UserError` line.

Two stages, both before any training or model loading:

- `check_environment(cfg, out_dir)`: what needs no data -- the run and cache folders can be
  written, the files and folders it reads are of the right kind, `distributed=true` has a
  coordinator, `logger.mode=online` has a W&B API key. `seqgen.run` calls it before Hydra
  starts (also for `hydra.run.dir`), `run_experiment` again.
- `check_corpus(cfg, corpus)` and `check_budgets(cfg, vocab_size, num_prompts)`: what depends
  on the vocabulary or the data, as soon as the corpus is loaded -- every decoder of the run
  (`decoder`, or each `compare[i]`, named so in the error), unique and path-safe labels,
  splits that are not empty; then, on the prompts the pipeline built once
  (`prompts.prepare_prompts`, which also refuses a constraint that accepts no prompt), budgets
  (training activations vs memory, decode outputs vs `decode.max_tokens` and memory).
  `check_run(cfg, corpus)` is the three in a row (a sweep checks each job with it).

`check_divergence` is the rule that a trained model is not a divergence (never cached).
"""

from __future__ import annotations

import logging
import math
import netrc
import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from seqgen.decoding.registry import rows_per_prompt, validate_decoder
from seqgen.errors import UserError
from seqgen.paths import cache_root, model_folder, regular_file
from seqgen.plugins import import_plugins
from seqgen.tokens import NUM_SPECIAL, SPECIAL_TOKENS

log = logging.getLogger("seqgen")

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
    """`path` is a folder that exists or can be created, and this process may write into it:
    tried by creating (and removing) a file in its nearest existing folder, since permission
    bits say nothing of /proc, a read-only mount or a root user."""
    p = Path(path).expanduser().absolute()
    probe = p
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        where = "is an existing file" if probe == p else f"is inside {probe}, which is a file"
        raise UserError(f"{what}={path} {where}; allowed: a folder that can be created or written")
    try:
        fd, name = tempfile.mkstemp(prefix=".seqgen-probe-", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise UserError(
            f"{what}={path} is not writable ({probe}: {exc.strerror}); "
            "allowed: a folder this user can write"
        ) from None


def check_cache_dir(path: Path, what: str) -> None:
    """The model cache can be written, or is an existing read-only folder: models already in
    it are loaded (without the lock); one that must be trained is refused then, in one line."""
    try:
        check_writable_dir(path, what)
    except UserError:
        if not (path / "models").is_dir():
            raise
        log.warning(
            "%s=%s is read-only: models already in it are loaded, none can be trained", what, path
        )


# Bytes a synthetic string takes on the host per sequence (a NumPy array and its list slot) and
# per symbol (int32, and again in the training windows).
_SEQ_BYTES, _SYMBOL_BYTES = 128, 8


def check_data_memory(cfg: Any) -> None:
    """data=synthetic draws data.num_train strings (and the held-out ones) of expected length
    1 / data.stop_prob into host memory: refuse a number that cannot fit, before drawing."""
    data = cfg.get("data")
    if data is None or data.get("name") != "synthetic":
        return
    num_train, vf, tf = int(data.num_train), float(data.valid_fraction), float(data.test_fraction)
    total = num_train / max(1e-9, 1.0 - vf - tf)
    if data.get("max_sequences"):
        total = min(total, int(data.max_sequences))
    need = total * (_SEQ_BYTES + _SYMBOL_BYTES / float(data.stop_prob))
    have = host_available_memory()
    if have is not None and need > have:
        raise UserError(
            f"data.num_train={num_train} (with data.stop_prob={data.stop_prob}) needs about "
            f"{_gib(need)} of host memory for its strings, more than the {_gib(have)} available; "
            "lower data.num_train or cap it with data.max_sequences"
        )


def check_input_paths(cfg: Any) -> None:
    """Every file or folder the config names for reading exists and is of the right kind (a
    FIFO or a device would block `open()` forever), before any data is read."""
    data = cfg.get("data")
    if data is not None and data.get("name") == "text":
        for key in ("path", "train_path", "valid_path", "test_path"):
            if data.get(key):
                regular_file(data[key], f"data.{key}", "an existing UTF-8 text file")
    metrics = cfg.get("metrics")
    ref = metrics.get("reference_checkpoint") if metrics is not None else None
    if ref:
        model_folder(ref, "metrics.reference_checkpoint")


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
    check_input_paths(cfg)
    check_data_memory(cfg)
    cache = cfg.get("cache_dir")
    check_cache_dir(cache_root(cache), "cache_dir" if cache else "SEQGEN_CACHE")
    if cfg.get("distributed") and not (
        cfg.get("coordinator_address") or any(os.environ.get(v) for v in _CLUSTER_ENV)
    ):
        raise UserError(
            "distributed=true needs a coordinator: run under SLURM, Open MPI or a TPU pod, or "
            "set JAX_COORDINATOR_ADDRESS=host:port (with JAX_NUM_PROCESSES, JAX_PROCESS_ID); "
            "on one machine leave distributed=false"
        )
    from seqgen.tracking import effective_mode

    logger = cfg.logger
    if (
        logger.name == "wandb"
        and effective_mode(logger) == "online"
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


def check_vocabulary(cfg: Any, corpus: Any) -> None:
    """A vocabulary of nothing but the reserved symbols (every symbol rarer than
    data.min_count, say) would train and decode `<unk>` alone."""
    if len(corpus.vocab) <= NUM_SPECIAL:
        data = cfg.data
        raise UserError(
            f"the vocabulary has no symbol besides {', '.join(SPECIAL_TOKENS)} (data.min_count="
            f"{data.get('min_count')}, data.max_vocab={data.get('max_vocab')}); allowed: a lower "
            "data.min_count or a larger data.max_vocab"
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
    """A lower estimate of one device's training memory, float32 throughout, for a
    [batch_size / devices, seq_len] batch (`seqgen.models.training_bytes`: parameters counted
    exactly, activations per token from the cell's row of the models table)."""
    from seqgen.models import training_bytes as model_training_bytes

    rows = math.ceil(int(train_cfg.batch_size) / max(1, n_devices))
    return model_training_bytes(model_cfg, int(train_cfg.seq_len), rows, vocab_size)


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
        m, t = cfg.model, cfg.train
        raise UserError(
            f"train.batch_size={t.batch_size} x train.seq_len={t.seq_len} with model."
            f"num_layers={m.num_layers} x model.hidden_size={m.hidden_size} needs at least "
            f"{_gib(need)} per device to train, more than the {_gib(have)} of {where} "
            "available; lower one of them"
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
    from seqgen.decoding.forced import check_config as check_force
    from seqgen.decoding.steering import resolve

    check_vocabulary(cfg, corpus)
    check_decoders(cfg, len(corpus.vocab))
    for _, dec in run_decoders(cfg):
        # a steering text's symbol missing from the vocabulary; a forced phrase too long
        check_force(dec, resolve(dec, corpus.vocab), int(cfg.decode.max_len))
    check_splits(corpus)


def check_run(cfg: Any, corpus: Any) -> None:
    """`check_corpus`, the prompts (`prompts.prepare_prompts`: unknown symbols, prompt
    lengths, held-out prompts, a constraint that rejects every prompt), then `check_budgets`:
    every corpus-dependent check of a run, before any training."""
    from seqgen.prompts import prepare_prompts

    check_corpus(cfg, corpus)
    unknown = cfg.data.get("unknown", "error")
    prompts = prepare_prompts(cfg.decode, corpus, cfg.get("constraint"), unknown)
    check_budgets(cfg, len(corpus.vocab), len(prompts.prompts))


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


# ---------------------------------------------------------------------------------------------
# seqgen-sample: its sources (a run folder or a model-cache entry) and the folder it writes.

# The file seqgen-sample writes first into a folder of its own; a folder without it that holds
# anything (a run's folder above all) is never written into.
SAMPLE_OWNER_MARK = ".seqgen-sample"


def _load_yaml_mapping(path: Path, what: str) -> Any:
    from omegaconf import DictConfig, OmegaConf

    regular_file(path, what, "a regular file")
    try:
        node = OmegaConf.load(path)
    except Exception as exc:  # yaml's and OmegaConf's parse errors
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{what} ({path}) is not a readable YAML config: {first}") from None
    if not isinstance(node, DictConfig):
        raise UserError(f"{what} ({path}) holds a YAML {type(node).__name__}, not a mapping")
    return node


def merge_saved_config(saved: Any, what: str, base: Any = None) -> Any:
    """`base` (default: the schema's config) with a saved one merged in (retired keys dropped);
    one line when a key is unknown or a value of the wrong type (a damaged or foreign file)."""
    from omegaconf import OmegaConf

    from seqgen.config import Config, drop_retired

    base = OmegaConf.structured(Config) if base is None else base
    try:
        return OmegaConf.merge(base, drop_retired(saved))
    except Exception as exc:
        key = getattr(exc, "full_key", "") or ""
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{what} does not fit the config schema ({key}: {first})") from None


def read_run_source(run: str) -> tuple[Any, Path | None]:
    """A finished run folder's config (`config.yaml`) and model-cache entry (`metrics.json`;
    None for the DPFSA oracle), each checked for its shape."""
    from seqgen.checkpoint import read_json_object

    folder = Path(run).expanduser()
    if not folder.is_dir():
        raise UserError(f"run={run} is not a folder; allowed: a run folder ('done ... -> DIR')")
    if not (folder / "config.yaml").exists() or not (folder / "metrics.json").exists():
        raise UserError(
            f"run={run} is not a finished run dir (it needs config.yaml and metrics.json, "
            "written once the model is ready)"
        )
    saved = _load_yaml_mapping(folder / "config.yaml", f"run={run}: config.yaml")
    # the run's own extensions (a plugin's model, decoder or knobs), before the schema reads it
    import_plugins(saved.get("plugins"), f"run={run}: config.yaml plugins")
    cfg = merge_saved_config(saved, f"run={run}: config.yaml")
    metrics = read_json_object(folder / "metrics.json", f"run={run}: metrics.json", {"model": dict})
    info = metrics["model"]
    if info.get("oracle") is True:
        return cfg, None
    if not isinstance(info.get("cache_dir"), str):
        raise UserError(
            f"run={run}: metrics.json names no model-cache entry (model.cache_dir); it is "
            "incomplete or was written by another program"
        )
    return cfg, model_folder(info["cache_dir"], f"the model of run={run} (model.cache_dir)")


def read_model_source(model_dir: str) -> tuple[dict[str, Any], Path]:
    """A model-cache entry's verified `meta.json` (every field under its checksum) as the
    trained config `{data, model, train, seed}`, and the entry's folder."""
    from seqgen.checkpoint import ModelCache

    path = model_folder(model_dir, "model_dir").absolute()
    try:
        meta = ModelCache(path.parent).check(path.name)
    except UserError as exc:
        raise UserError(f"model_dir={model_dir}: {exc}") from None
    if "data_cfg" not in meta:
        raise UserError(
            f"model_dir={model_dir} was cached before entries recorded their data; "
            "give the run dir that trained it (run=...)"
        )
    kinds = {"data_cfg": dict, "model": dict, "train_cfg": dict, "seed": int}
    for key, kind in kinds.items():
        if not isinstance(meta.get(key), kind):
            raise UserError(f"model_dir={model_dir}: meta.json has no {key!r} {kind.__name__}")
    # the plugins of the process that trained it (a plugin's model), before the schema reads it
    import_plugins(meta.get("plugins"), f"model_dir={model_dir}: meta.json plugins")
    trained = {"data": meta["data_cfg"], "model": meta["model"], "train": meta["train_cfg"]}
    return {**trained, "seed": meta["seed"]}, path


def check_sample_out(out: str) -> Path:
    """The folder `seqgen-sample out=` writes: new, empty, or one it wrote before (it holds
    `SAMPLE_OWNER_MARK`), and writable; checked before decoding, so a run's folder is never
    overwritten and no decode is lost to a bad path."""
    path = Path(out).expanduser()
    check_writable_dir(path, "out")
    if path.is_dir() and not (path / SAMPLE_OWNER_MARK).is_file():
        held = sorted(p.name for p in path.iterdir())
        if held:
            shown = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
            raise UserError(
                f"out={out} is a folder seqgen-sample did not write (it holds {shown}); "
                "allowed: a new or empty folder, or one an earlier seqgen-sample wrote"
            )
    return path
