"""The one pipeline: data -> model (trained, or loaded from the cache) -> decode -> metrics ->
outputs and trackers. `run_experiment(cfg)` is what `python -m seqgen.run` calls; tests and
notebooks call it directly with a composed config.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import jax
from flax import nnx
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from seqgen.checkpoint import DamagedCacheEntry, ModelCache
from seqgen.config import to_dict
from seqgen.data.batching import batch_iterator, eval_batches
from seqgen.data.corpus import fingerprint, load_corpus
from seqgen.errors import UserError
from seqgen.evaluate import evaluate_decoders
from seqgen.metrics import perplexity_from_nll
from seqgen.models import LanguageModel, count_params, make_init_carry_fn, make_step_fn
from seqgen.outputs import print_results_table, reset_outputs, write_decoder, write_outputs
from seqgen.parallel import maybe_initialize_distributed
from seqgen.paths import cache_root
from seqgen.preflight import check_divergence, check_environment, check_run
from seqgen.progress import still_running
from seqgen.report import write_report
from seqgen.scoring import LoadedModel
from seqgen.tracking import make_tracker
from seqgen.train import evaluate, train

log = logging.getLogger("seqgen")

# Train-config fields that change what is trained (the others only change how it is shown).
_TRAIN_DISPLAY_ONLY = ("progress", "log_every")


# ---------------------------------------------------------------------------------------------
# Model: the DPFSA oracle, or an NNX language model trained once per (data, model, train, seed).


def build_model(model_cfg: Any, vocab_size: int, seed: int, predict_eos: bool = True):
    """The configured LM; `predict_eos=False` for a text stream without EOS (see LanguageModel)."""
    return LanguageModel(
        vocab_size,
        cell=model_cfg.cell,
        embed_size=model_cfg.embed_size,
        hidden_size=model_cfg.hidden_size,
        num_layers=model_cfg.num_layers,
        dropout=model_cfg.dropout,
        tie_weights=model_cfg.tie_weights,
        one_hot_input=model_cfg.one_hot_input,
        predict_eos=predict_eos,
        rngs=nnx.Rngs(seed),
    )


def model_cache_key(cfg: Any, corpus: Any) -> str:
    train_cfg = {k: v for k, v in to_dict(cfg.train).items() if k not in _TRAIN_DISPLAY_ONLY}
    if train_cfg.get("backward") == "autodiff":  # what every model cached before the knob
        del train_cfg["backward"]  # was trained with: their keys stay, and they still load
    return ModelCache.key(fingerprint(corpus), to_dict(cfg.model), train_cfg, int(cfg.seed))


# Models loaded in this process, by cache entry (folder): the jobs of a multirun share one step
# function, so the decoders' compiled programs are reused across jobs.
_LOADED: dict[str, LoadedModel] = {}


def get_model(cfg: Any, corpus: Any, tracker: Any = None) -> LoadedModel:
    """The oracle (`model=oracle`), or the cached model, training it first if needed.

    Jobs that ask for the same model take a file lock on its cache entry, so only one trains
    and the others load what it saved. A loaded entry is verified first (checksums, format,
    vocabulary; a damaged one is retrained or, with `cache_on_damage=error`, reported) and
    its held-out metrics are recomputed, not read back.
    """
    if cfg.model.cell == "oracle":
        return _oracle_model(corpus)

    cache = ModelCache(cache_root(cfg.cache_dir) / "models")
    key = model_cache_key(cfg, corpus)
    entry = str(cache.path(key))  # another cache folder is another entry, even for one key
    if entry in _LOADED:  # a later job of a sweep in this process: same step_fn, no recompile
        hit = _LOADED[entry]
        return replace(hit, info={**hit.info, "cached": True})
    vocab_json = json.dumps(corpus.vocab.to_json())
    model, meta, trained = cache.get_or_train(
        key,
        build_model(cfg.model, len(corpus.vocab), int(cfg.seed), corpus.has_eos),
        lambda: _train_model(cfg, corpus, cache.path(key), tracker, vocab_json),
        vocab_json=vocab_json,
        retrain_damaged=cfg.cache_on_damage == "retrain",
    )
    metrics = dict(meta["metrics"])
    if not trained:
        log.info("model: loaded from cache %s", cache.path(key))
        metrics = heldout_metrics(model, corpus, cfg.train)
        _compare_metrics(metrics, meta.get("metrics"), cache.path(key))
    step_fn, params = make_step_fn(model)
    info = {
        "cache_key": key,
        "cache_dir": str(cache.path(key)),
        "cached": not trained,
        "params": meta.get("params"),
        "train": meta.get("train", {}),
    }
    loaded = LoadedModel(
        step_fn=step_fn,
        params=params,
        init_carry=make_init_carry_fn(model),
        vocab_size=len(corpus.vocab),
        metrics=metrics,
        info=info,
    )
    _LOADED[entry] = loaded
    return loaded


def _train_model(
    cfg: Any, corpus: Any, entry: Path, tracker: Any, vocab_json: str
) -> tuple[Any, str, dict]:
    """`ModelCache.get_or_train`'s `train_fn`: a freshly trained model (resuming from
    `entry/train_ckpt`), its vocabulary and its `meta.json`."""
    seed, seq_len = int(cfg.seed), int(cfg.train.seq_len)
    model = build_model(cfg.model, len(corpus.vocab), seed, corpus.has_eos)
    log.info(
        "model: training %s (%s params) -> cache %s",
        cfg.model.cell,
        f"{count_params(model):,}",
        entry,
    )
    stream = corpus.stream  # text: windows of the stream, no EOS appended
    train_it = batch_iterator(corpus.train, int(cfg.train.batch_size), seq_len, seed, stream=stream)
    valid = eval_batches(corpus.valid, int(cfg.train.batch_size), seq_len, stream=stream)
    valid = valid[: int(cfg.train.eval_batches)]
    result = train(
        model, train_it, valid, cfg.train, ckpt_dir=entry / "train_ckpt", tracker=tracker, seed=seed
    )
    metrics = heldout_metrics(result.model, corpus, cfg.train)
    check_divergence(metrics, len(corpus.vocab))  # a diverged model is never cached
    meta = {
        "metrics": metrics,
        "train": result.summary,
        "params": count_params(result.model),
        "model": to_dict(cfg.model),
        "train_cfg": to_dict(cfg.train),
        "data": corpus.name,
        "data_cfg": to_dict(cfg.data),  # with `seed`: what seqgen-sample reloads
        "seed": seed,
        "predict_eos": corpus.has_eos,  # text streams without EOS pin its logit
    }
    return result.model, vocab_json, meta


def heldout_metrics(model: Any, corpus: Any, train_cfg: Any) -> dict[str, float]:
    """`ppl/` and `bits/` of the valid and test splits: per target token, i.e. every sequence
    with its EOS, or every stream token (text: EOS only where `data.line_eos` put it)."""
    batch_size, seq_len = int(train_cfg.batch_size), int(train_cfg.seq_len)
    metrics = {}
    for split, seqs in (("valid", corpus.valid), ("test", corpus.test)):
        ev = evaluate(model, eval_batches(seqs, batch_size, seq_len, stream=corpus.stream))
        metrics[f"ppl/{split}"] = float(ev["ppl"])
        metrics[f"bits/{split}"] = float(ev["bits"])
    return metrics


def _compare_metrics(now: dict[str, float], recorded: Any, where: Path) -> None:
    """Warn when a verified entry's recomputed metrics differ from those recorded at training:
    the model or evaluation code changed without a bump of `checkpoint.MODEL_FORMAT`."""
    recorded = recorded if isinstance(recorded, dict) else {}
    for name, value in now.items():
        old = recorded.get(name)
        if not (isinstance(old, int | float) and math.isclose(value, old, rel_tol=1e-4)):
            log.warning(
                "model: %s recomputed %.6g, recorded at training %s (%s); reporting the "
                "recomputed value (did the model code change without a MODEL_FORMAT bump?)",
                name,
                value,
                old,
                where,
            )


def load_reference(cfg: Any, corpus: Any) -> LoadedModel | None:
    """The reference model of `metrics.reference_checkpoint` (a model cache folder), if given.

    Generations are scored under it for `gen/ref_ppl`; its vocabulary must be the corpus's.
    The folder is verified like any cache entry; a damaged one is an error.
    """
    ref = cfg.metrics.get("reference_checkpoint")
    if not ref:
        return None
    path = Path(str(ref)).expanduser().absolute()
    if not (path / "meta.json").exists():
        raise UserError(
            f"metrics.reference_checkpoint={ref} is not a cached model folder (no meta.json); "
            "give a folder printed as 'model: ... cache <dir>' by an earlier run"
        )
    return load_model_dir(
        path, corpus, f"metrics.reference_checkpoint={ref}", {"reference": str(path)}
    )


def load_model_dir(
    path: Path, corpus: Any, what: str, info: dict[str, Any] | None = None
) -> LoadedModel:
    """The model saved in one model-cache folder (`meta.json`, `vocab.json`, checkpoint),
    verified like any cache entry (checksums, format) and against the corpus's vocabulary;
    `what` names the folder in the one-line error a damaged or mismatched entry gives."""
    cache = ModelCache(path.parent)
    try:
        meta = cache.check(path.name)
        vocab = json.loads(cache.load_vocab_json(path.name))  # checked: as it was written
        if vocab != json.loads(json.dumps(corpus.vocab.to_json())):
            raise UserError(
                f"{what} was trained with another vocabulary than these data give; "
                "it needs the same data and tokenization (did the corpus files change?)"
            )
        template = build_model(
            OmegaConf.create(meta["model"]), len(corpus.vocab), 0, corpus.has_eos
        )
        model, _ = cache.load_model(path.name, template)
    except DamagedCacheEntry as exc:
        raise UserError(f"{what}: {exc}") from None
    step_fn, params = make_step_fn(model)
    return LoadedModel(
        step_fn=step_fn,
        params=params,
        init_carry=make_init_carry_fn(model),
        vocab_size=len(corpus.vocab),
        metrics=dict(meta.get("metrics", {})),
        info={"cache_dir": str(path), **(info or {})},
    )


def _oracle_model(corpus: Any) -> LoadedModel:
    """The DPFSA's exact distribution as a step function; its held-out perplexity is exact."""
    oracle = corpus.oracle
    metrics = {}
    for split, seqs in (("valid", corpus.valid), ("test", corpus.test)):
        nll = -sum(oracle.logprob(list(map(int, s))) for s in seqs)
        n_tokens = sum(len(s) + 1 for s in seqs)  # + EOS
        pb = perplexity_from_nll(nll, n_tokens)
        metrics[f"ppl/{split}"] = pb["ppl"]
        metrics[f"bits/{split}"] = pb["bits"]
    return LoadedModel(
        step_fn=oracle.step_fn,
        params=oracle.params(),
        init_carry=oracle.init_carry,
        vocab_size=len(corpus.vocab),
        metrics=metrics,
        info={"oracle": True, "params": 0},
    )


# ---------------------------------------------------------------------------------------------
# The run.


def run_experiment(cfg: Any, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Run one configured experiment end to end and return its results.

    Returns `{"metrics": {...model metrics...}, "results": [one dict per decoder + human],
    "out_dir": str}`. Files written into `out_dir`: `config.yaml`, `metrics.json`,
    `results.jsonl`, `samples.jsonl`, `samples/`, `plots/`.
    """
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.structured(cfg)
    out_dir = Path(out_dir or Path.cwd())
    check_environment(cfg, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    reset_outputs(out_dir)
    maybe_initialize_distributed(cfg)
    enable_compilation_cache(cache_root(cfg.cache_dir) / "jax_compile")
    resolved = to_dict(cfg)
    (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    tracker = make_tracker(
        cfg.logger,
        config=resolved,
        out_dir=out_dir,
        default_group=_group(cfg),
        default_name=_run_name(out_dir),
    )
    t0 = time.time()
    try:
        corpus = load_corpus(cfg.data, int(cfg.seed))
        log.info(
            "data: %s, vocab %d, %d/%d/%d train/valid/test sequences",
            corpus.name,
            len(corpus.vocab),
            len(corpus.train),
            len(corpus.valid),
            len(corpus.test),
        )
        check_run(cfg, corpus)  # every decoder and data-dependent knob, before any training
        model = get_model(cfg, corpus, tracker)
        model_metrics = dict(model.metrics)
        log.info(
            "model: ppl/valid %.3f, ppl/test %.3f",
            model_metrics.get("ppl/valid", float("nan")),
            model_metrics.get("ppl/test", float("nan")),
        )
        (out_dir / "metrics.json").write_text(
            json.dumps({**model_metrics, "model": model.info}, indent=2, default=str)
        )
        reference = load_reference(cfg, corpus)
        writer = _DecoderWriter(cfg, corpus, out_dir)
        try:
            results, samples = evaluate_decoders(cfg, corpus, model, reference, writer)
        except BaseException:
            log.warning(
                "decoders finished before the failure: %s (their results and samples are in %s)",
                ", ".join(writer.finished) or "none",
                out_dir,
            )
            raise
        t_write = time.time()
        outputs = write_outputs(cfg, results, samples, out_dir, tracker)
        report = write_report(out_dir, vocab=corpus.vocab)  # `vocab` marks the prompts in it
        tracker.log_html("report", report)
        log.info("wrote results, plots and report in %.1f s", time.time() - t_write)
        outputs = {**outputs, "report": str(report), "listen": writer.listen}
        tracker.log_summary(model_metrics)
        wall = time.time() - t0
        (out_dir / "metrics.json").write_text(
            json.dumps(
                {**model_metrics, "model": model.info, "wall_s": wall, "outputs": outputs},
                indent=2,
                default=str,
            )
        )
        print_results_table(results, model_metrics)
        log.info("done in %.1f s -> %s", wall, out_dir)
        log.info("report: open %s", report.resolve().as_uri())
    except BaseException:
        tracker.finish(exit_code=1)
        raise
    tracker.finish(exit_code=0)
    return {"metrics": model_metrics, "results": results, "out_dir": str(out_dir)}


class _DecoderWriter:
    """`evaluate_decoders`'s `on_result`: each decoder's result, samples and tunes written as
    soon as it finishes (so a later failure loses none of them), with the time it took."""

    def __init__(self, cfg: Any, corpus: Any, out_dir: Path):
        self.cfg, self.corpus, self.out_dir = cfg, corpus, out_dir
        self.finished: list[str] = []
        self.listen: list[str] = []

    def __call__(self, result: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        t0 = time.time()
        label = result["decoder"]["label"]
        with still_running(f"writing {label}"):  # MIDI: up to metrics.abc_timeout_s a tune
            files = write_decoder(self.cfg, self.corpus, result, rows, self.out_dir)
        self.listen.extend(map(str, files))
        self.finished.append(label)
        if rows:  # the human row has no samples: a line of results.jsonl only
            log.info(
                "wrote   %-28s %5d samples, %d tune files in %.1f s",
                label,
                len(rows),
                len(files),
                time.time() - t0,
            )


def enable_compilation_cache(path: Path) -> None:
    """JAX's persistent compilation cache: a warm run reuses the decoders' compiled programs."""
    try:
        jax.config.update("jax_compilation_cache_dir", str(path))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    except Exception as exc:  # an older JAX without these options: compile as usual
        log.debug("no persistent compilation cache: %s", exc)


def _group(cfg: Any) -> str:
    """W&B group: the experiment, and for a multirun also its sweep folder."""
    try:
        hc = HydraConfig.get()
        if hc.mode == RunMode.MULTIRUN:
            return f"{cfg.experiment_name}/{Path(hc.sweep.dir).name}"
    except Exception:  # not under Hydra (tests, notebooks)
        pass
    return str(cfg.experiment_name)


def _run_name(out_dir: Path) -> str | None:
    try:
        overrides = HydraConfig.get().overrides.task
        return ",".join(str(o) for o in overrides) or "default"
    except Exception:
        return out_dir.name
