"""Models as the pipeline gets them: the DPFSA oracle, or an NNX language model trained once
per (data, model, train, seed) and kept in the content-addressed model cache; a model-cache
folder loaded back (`seqgen-sample`, the Python API, `metrics.reference_checkpoint`).

Every function takes the sub-configs it reads (`model`, `train`, `data`), not the root config.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from seqgen import plugins
from seqgen.checkpoint import DamagedCacheEntry, ModelCache
from seqgen.config import to_dict
from seqgen.data.batching import batch_iterator, eval_batches
from seqgen.data.corpus import fingerprint
from seqgen.errors import UserError
from seqgen.metrics import perplexity_from_nll
from seqgen.models import (
    build_model,
    count_params,
    make_init_carry_fn,
    make_step_fn,
    model_identity,
)
from seqgen.paths import cache_root, model_folder
from seqgen.preflight import check_divergence
from seqgen.scoring import LoadedModel
from seqgen.train import evaluate, train

log = logging.getLogger("seqgen")

# Train-config fields that change what is trained (the others only change how it is shown).
_TRAIN_DISPLAY_ONLY = ("progress", "log_every")


# ---------------------------------------------------------------------------------------------
# Model: the DPFSA oracle, or an NNX language model trained once per (data, model, train, seed).


@dataclass(frozen=True)
class ModelSpec:
    """What a trained model is: the `data`, `model` and `train` configs and the seed (the parts
    of its cache key; `data` is recorded in its `meta.json` so that it can be loaded back)."""

    data: Any
    model: Any
    train: Any
    seed: int

    @classmethod
    def of(cls, cfg: Any) -> ModelSpec:
        """The spec of a run's root config."""
        return cls(cfg.data, cfg.model, cfg.train, int(cfg.seed))


def model_cache_key(spec: ModelSpec, corpus: Any) -> str:
    train_cfg = {k: v for k, v in to_dict(spec.train).items() if k not in _TRAIN_DISPLAY_ONLY}
    if train_cfg.get("backward") == "autodiff":  # what every model cached before the knob
        del train_cfg["backward"]  # was trained with: their keys stay, and they still load
    model_cfg = model_identity(spec.model)  # only the fields the cell reads
    return ModelCache.key(fingerprint(corpus), model_cfg, train_cfg, int(spec.seed))


# Models loaded in this process, by cache entry (folder): the jobs of a multirun share one step
# function, so the decoders' compiled programs are reused across jobs.
_LOADED: dict[str, LoadedModel] = {}


def get_model(
    spec: ModelSpec,
    corpus: Any,
    cache_dir: str | None = None,
    retrain_damaged: bool = True,
    tracker: Any = None,
) -> LoadedModel:
    """The oracle (`model=oracle`), or the cached model, training it first if needed.

    Jobs that ask for the same model take a file lock on its cache entry, so only one trains
    and the others load what it saved. A loaded entry is verified first (checksums, format,
    vocabulary; a damaged one is retrained or, with `cache_on_damage=error`, reported) and
    its held-out metrics are recomputed, not read back. `cache_dir`: the cache root
    (`paths.cache_root`); `retrain_damaged`: `cache_on_damage=retrain`.
    """
    if spec.model.cell == "oracle":
        return oracle_model(corpus)

    cache = ModelCache(cache_root(cache_dir) / "models")
    key = model_cache_key(spec, corpus)
    entry = str(cache.path(key))  # another cache folder is another entry, even for one key
    if entry in _LOADED:  # a later job of a sweep in this process: same step_fn, no recompile
        hit = _LOADED[entry]
        return replace(hit, info={**hit.info, "cached": True})
    vocab_json = json.dumps(corpus.vocab.to_json())
    model, meta, trained = cache.get_or_train(
        key,
        build_model(spec.model, len(corpus.vocab), int(spec.seed), corpus.has_eos),
        lambda: _train_model(spec, corpus, cache.path(key), tracker, vocab_json),
        vocab_json=vocab_json,
        retrain_damaged=retrain_damaged,
    )
    metrics = dict(meta["metrics"])
    if not trained:
        log.info("model: loaded from cache %s", cache.path(key))
        metrics = heldout_metrics(model, corpus, spec.train)
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
    spec: ModelSpec, corpus: Any, entry: Path, tracker: Any, vocab_json: str
) -> tuple[Any, str, dict]:
    """`ModelCache.get_or_train`'s `train_fn`: a freshly trained model (resuming from
    `entry/train_ckpt`), its vocabulary and its `meta.json`."""
    seed, train_cfg = int(spec.seed), spec.train
    seq_len = int(train_cfg.seq_len)
    model = build_model(spec.model, len(corpus.vocab), seed, corpus.has_eos)
    log.info(
        "model: training %s (%s params) -> cache %s",
        spec.model.cell,
        f"{count_params(model):,}",
        entry,
    )
    stream = corpus.stream  # text: windows of the stream, no EOS appended
    train_it = batch_iterator(corpus.train, int(train_cfg.batch_size), seq_len, seed, stream=stream)
    valid = eval_batches(corpus.valid, int(train_cfg.batch_size), seq_len, stream=stream)
    valid = valid[: int(train_cfg.eval_batches)]
    result = train(
        model, train_it, valid, train_cfg, ckpt_dir=entry / "train_ckpt", tracker=tracker, seed=seed
    )
    metrics = heldout_metrics(result.model, corpus, train_cfg)
    check_divergence(metrics, len(corpus.vocab))  # a diverged model is never cached
    meta = {
        "metrics": metrics,
        "train": result.summary,
        "params": count_params(result.model),
        "model": model_identity(spec.model),
        "train_cfg": to_dict(train_cfg),
        "data": corpus.name,
        "data_cfg": to_dict(spec.data),  # with `seed`: what seqgen-sample reloads
        "seed": seed,
        "predict_eos": corpus.has_eos,  # text streams without EOS pin its logit
    }
    if plugins.IMPORTED:  # a model a plugin registered loads from this entry alone
        meta["plugins"] = list(plugins.IMPORTED)
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


def load_reference(ref: str | None, corpus: Any) -> LoadedModel | None:
    """The reference model of `metrics.reference_checkpoint` (a model cache folder), if given.

    Generations are scored under it for `gen/ref_ppl`; its vocabulary must be the corpus's.
    The folder is verified like any cache entry; a damaged one is an error.
    """
    if not ref:
        return None
    path = model_folder(str(ref), "metrics.reference_checkpoint").absolute()
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


def oracle_model(corpus: Any) -> LoadedModel:
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
