"""The Python API: load a trained model, generate with any decoder, score texts; run an
experiment from Hydra overrides. `import seqgen` exposes `seqgen.load`, `seqgen.run` and
`seqgen.Model` (imported on first use, so `import seqgen` stays light).

    >>> import seqgen
    >>> res = seqgen.run(["data=synthetic", "train=tiny", "decoder=greedy"])  # doctest: +SKIP
    >>> model = seqgen.load(res["out_dir"])  # a run dir, or a model-cache entry  # doctest: +SKIP
    >>> out = model.generate(["ab"], decoder="sample", top_p=0.9, num_samples=3, seed=0)
    ... # doctest: +SKIP
    >>> out.texts, out.token_ids, out.scores, out.token_logprobs  # doctest: +SKIP
    >>> model.score(["abcab"]).perplexity  # doctest: +SKIP

The decoding is the pipeline's own (`prompts.prepare_prompts`, `driver.decode_all` with the key
of a run's first decoder, `driver.generations`), and `seqgen-sample` decodes through
`Model.decode_config`: the same seed, decoder, knobs and prompts give the run's own tokens.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict

from seqgen.errors import UserError

log = logging.getLogger("seqgen")


@dataclass
class GenerateOutput:
    """What `Model.generate` returns: one entry per generated sequence, prompt-major (all the
    sequences of prompt 0, then of prompt 1, ...).

    `token_ids[i]` are the continuation's ids (no BOS, prompt or EOS); `token_logprobs[i]` the
    model's own log-prob of each of them (temperature 1, before any logits processor) and
    `eos_logprobs[i]` that of the EOS that ended it (0.0 when it was cut at `max_len`), so
    `logprobs[i] = token_logprobs[i].sum() + eos_logprobs[i]` is the sequence's log-prob under
    the model. `scores[i]` is the decoder's ranking score (`DecodeOutput.scores`: the sequence
    log-prob for sampling and greedy, length-normalized for beams). `records` are the objects
    `samples.jsonl` holds. `generations` is the bundle the metric table scores, with the run's
    metric settings and its human row as the reference: `seqgen.metrics.compute(
    out.generations)` gives the metrics a run of this decoder reports.
    """

    texts: list[str]  # prompt + continuation
    continuations: list[str]
    prompts: list[str]
    token_ids: list[np.ndarray]
    token_logprobs: list[np.ndarray]
    eos_logprobs: np.ndarray
    ended: np.ndarray
    scores: np.ndarray
    prompt_index: list[int]
    sample_index: list[int]
    records: list[dict[str, Any]]
    generations: Any  # seqgen.metrics.Generations

    @property
    def logprobs(self) -> np.ndarray:
        """Each sequence's log-prob under the model (its tokens and its EOS when it ended)."""
        return np.array([lp.sum() + e for lp, e in zip(self.token_logprobs, self.eos_logprobs)])


@dataclass
class ScoreOutput:
    """What `Model.score` returns, one entry per text: the teacher-forced log-prob of each of
    its tokens (after BOS and its prompt), of the EOS after it (0.0 when `ended` is False),
    the sequence's log-prob (their sum), the tokens scored (EOS counted) and the perplexity
    `exp(-logprob / num_tokens)`; `token_ids` are the ids scored (each text as encoded)."""

    token_ids: list[np.ndarray]
    token_logprobs: list[np.ndarray]
    eos_logprobs: np.ndarray
    logprobs: np.ndarray
    num_tokens: np.ndarray
    perplexity: np.ndarray


class Model:
    """A trained model (or the DPFSA oracle) with its data: `generate`, `score`, `vocab`,
    `config` (the run's config: `data`, `model`, `train`, `decode`, `seed`, ...).

    Made by `seqgen.load(path)`. `loaded` is the step function and parameters the decoders
    see (`scoring.LoadedModel`), `corpus` the data it was trained on.
    """

    def __init__(self, config: DictConfig, corpus: Any, loaded: Any):
        self.config = config
        self.corpus = corpus
        self.loaded = loaded

    @classmethod
    def from_source(cls, cfg: DictConfig, model_dir: Path | None) -> Model:
        """Load the corpus of `cfg.data` (with the model's seed: its splits and vocabulary) and
        the model of cache entry `model_dir` (None: the DPFSA oracle of `data=synthetic`)."""
        from seqgen.data.corpus import load_corpus
        from seqgen.model_store import load_model_dir, oracle_model
        from seqgen.paths import cache_root, enable_compilation_cache

        enable_compilation_cache(cache_root(cfg.cache_dir) / "jax_compile")
        corpus = load_corpus(cfg.data, int(cfg.seed))
        if model_dir is None:
            return cls(cfg, corpus, oracle_model(corpus))
        if not (model_dir / "meta.json").exists():
            raise UserError(f"the run's model {model_dir} is no longer in the cache")
        return cls(cfg, corpus, load_model_dir(model_dir, corpus, f"the model {model_dir}"))

    @property
    def vocab(self) -> Any:
        """The vocabulary (`data.vocab.Vocab`): `encode(text)`, `decode(ids)`, `symbols`."""
        return self.corpus.vocab

    def generate(
        self,
        prompts: str | list[str] | None = None,
        decoder: str = "sample",
        *,
        num_samples: int = 1,
        max_len: int | None = None,
        seed: int | None = None,
        **knobs: Any,
    ) -> GenerateOutput:
        """Decode `prompts` (a text, a list of texts, or None for the empty start) with
        `decoder` (any name of `conf/decoder/`) and its knobs (`top_p=0.9`, `beam_size=4`, ...
        as `decoder.KNOB=V` on the command line; each checked against its range).

        `num_samples`: sequences per prompt for sampling (beams and greedy give their best
        one); `max_len`: prompt + continuation in tokens (default the run's `decode.max_len`);
        `seed`: the decoding seed (default the run's; row keys are per prompt and sample, so
        a sequence does not depend on the batch it was decoded in). A run decoded under a
        constraint (`constraint=regex|meter`) generates under it here too, as in
        `seqgen-sample`.

            >>> out = model.generate("ab", decoder="beam", beam_size=4)  # doctest: +SKIP
            >>> out.continuations[0], out.scores[0]  # doctest: +SKIP
        """
        from seqgen import config

        dec = decoder_config(decoder, knobs)
        # a copy (the model's own config stays as loaded) on the schema as it is now: with the
        # knobs a processor registered since `load` added
        plain = OmegaConf.to_container(self.config, resolve=True)
        cfg = OmegaConf.merge(OmegaConf.structured(config.Config), plain)
        cfg.decoder = dec
        if prompts is None:
            cfg.decode.prompts = "none"
        else:
            cfg.decode.prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        cfg.decode.num_samples = int(num_samples)
        if max_len is not None:
            cfg.decode.max_len = int(max_len)
        config.validate_config(cfg)
        return self.decode_config(cfg, int(cfg.seed) if seed is None else int(seed))

    def decode_config(self, cfg: DictConfig, seed: int) -> GenerateOutput:
        """Decode as `cfg` says (`decoder`, `decode`, `constraint`, `data.unknown`), with the
        key of a run's first decoder for `seed`: what `generate` and `seqgen-sample` run."""
        from seqgen.decoding.steering import resolve as resolve_steering
        from seqgen.driver import (
            decode_all,
            decoder_key,
            decoder_label,
            generations,
            sample_records,
        )
        from seqgen.evaluate import metric_settings
        from seqgen.preflight import check_decode_budget, check_decoders
        from seqgen.prompts import prepare_prompts
        from seqgen.scoring import step_logits

        dec, corpus = cfg.decoder, self.corpus
        label = decoder_label(dec)
        check_decoders(cfg, len(corpus.vocab))  # the knobs bounded by the vocabulary
        pr = prepare_prompts(cfg.decode, corpus, cfg.get("constraint"), cfg.data.unknown)
        check_decode_budget(cfg, len(pr.prompts))  # rows x max_len within budget and memory
        t0 = time.time()
        steered = resolve_steering(dec, corpus.vocab)  # texts as the vocabulary's ids, as a run
        key = decoder_key(seed, 0)
        out = decode_all(
            cfg.decode, steered, self.loaded, pr.prompts, key, pr.constraint, pr.unconditional
        )
        settings = metric_settings(cfg.metrics, int(cfg.seed), corpus, pr)
        # what evaluate_decoders adds for the sampler's kept sets (oracle/trunc_*)
        settings.update(decoder=dec, step_logits=functools.partial(step_logits, self.loaded))
        gen, rec, texts = generations(cfg.decode, dec, corpus, pr.prompts, out, **settings)
        records = sample_records(label, gen, rec, texts, corpus.vocab)
        log.info("decoded %s: %d sequences in %.1f s", label, len(records), time.time() - t0)
        return GenerateOutput(
            texts=texts,
            continuations=[corpus.vocab.decode(s) for s in gen.sequences],
            prompts=[r["prompt"] for r in records],
            token_ids=list(gen.sequences),
            token_logprobs=list(gen.model_logprobs),
            eos_logprobs=np.asarray(gen.eos_model_logprobs, np.float64),
            ended=np.asarray(gen.ended, bool),
            scores=np.asarray(rec["score"]),
            prompt_index=list(rec["prompt_index"]),
            sample_index=list(rec["sample_index"]),
            records=records,
            generations=gen,
        )

    def score(
        self,
        texts: str | list[str] | list[list[int]],
        prompts: list[str] | list[list[int]] | None = None,
        ended: bool | list[bool] = True,
    ) -> ScoreOutput:
        """Teacher-forced log-probs of `texts` (each a text or a list of token ids), each after
        BOS and its prompt (`prompts[i]`, not scored), and of the EOS after it where `ended`.

            >>> s = model.score(["abca", "ba"])  # doctest: +SKIP
            >>> s.logprobs, s.perplexity  # doctest: +SKIP

        Scoring a generation's `token_ids` after its prompt with its `ended` gives back its
        `GenerateOutput.logprobs` (the decoders report the same model log-probs).
        """
        from seqgen.scoring import score_sequences

        texts = [texts] if isinstance(texts, str) else list(texts)
        prompts = [""] * len(texts) if prompts is None else list(prompts)
        ends = [ended] * len(texts) if isinstance(ended, bool | np.bool_) else list(ended)
        if not len(prompts) == len(ends) == len(texts):
            raise UserError(
                f"score: {len(texts)} texts, {len(prompts)} prompts and {len(ends)} ended "
                "flags; allowed: one prompt and one flag per text (or none)"
            )
        conts, pids = [self._ids(t, "text") for t in texts], [self._ids(p) for p in prompts]
        lps, eos = score_sequences(self.loaded, pids, conts, [bool(e) for e in ends])
        eos = np.asarray(eos, np.float64)
        total = np.array([lp.astype(np.float64).sum() for lp in lps]) + eos
        n = np.array([len(c) + bool(e) for c, e in zip(conts, ends)])
        with np.errstate(divide="ignore", invalid="ignore"):
            ppl = np.exp(-total / n)
        return ScoreOutput(conts, list(lps), eos, total, n, ppl)

    def _ids(self, text: str | Any, what: str = "prompt") -> np.ndarray:
        if isinstance(text, str):
            unknown = self.config.data.unknown
            return np.asarray(self.vocab.encode(text, unknown=unknown, what=what), np.int32)
        return np.asarray(text, np.int32).reshape(-1)


def decoder_config(name: str, knobs: Any = None) -> DictConfig:
    """`decoder=NAME` as conf/decoder/NAME.yaml defines it, with `knobs` (a dict or DictConfig
    of knob values) merged over it; a wrong name or knob is one `UserError` line."""
    from seqgen import config
    from seqgen.compose import compose_config, explain

    base = compose_config([f"decoder={name}"]).decoder
    try:  # the schema as composing built it: with the knobs registered until then
        return OmegaConf.merge(OmegaConf.structured(config.DecoderConfig), base, knobs or {})
    except Exception as exc:
        raise UserError(explain(exc, [f"decoder.{k}" for k in (knobs or {})])) from None


def load(path: str | Path) -> Model:
    """The model of a run dir (as a run printed it: "done in ... -> DIR") or of a model-cache
    entry (`seqgen-sample --list`), with the data it was trained on and its config.

        >>> model = seqgen.load("outputs/default/2026-12-01_10-00-00")  # doctest: +SKIP
        >>> model.vocab.encode("ab"), model.config.model.hidden_size  # doctest: +SKIP
    """
    from seqgen.sample import SampleOptions, read_source

    path = Path(path).expanduser()
    if (path / "meta.json").exists():
        cfg, model_dir = read_source(SampleOptions(model_dir=str(path)))
    else:
        cfg, model_dir = read_source(SampleOptions(run=str(path)))
    return Model.from_source(cfg, model_dir)


def run(overrides: list[str] = (), out_dir: str | Path | None = None) -> dict[str, Any]:
    """Run one experiment in-process, composed from `overrides` exactly as
    `python -m seqgen.run OVERRIDES` composes it (Hydra's compose API), and return its results
    (`run_experiment`'s dict: model `metrics`, one `results` row per decoder and the human row,
    `out_dir`). A bad override raises `UserError` with the line the command prints.

    `out_dir` defaults to the run dir the command would use (`hydra.run.dir`, e.g.
    `outputs/default/<date>`). Sweeps (`-m`, `a,b`) are the command line's.

        >>> res = seqgen.run(["decoder=beam", "decoder.beam_size=8"])  # doctest: +SKIP
        >>> res["results"][0]["metrics"]["gen/ppl"]  # doctest: +SKIP
    """
    from seqgen.compose import check_overrides, compose_config
    from seqgen.config import validate_config
    from seqgen.experiment import run_experiment

    overrides = list(overrides)
    check_overrides(overrides)
    cfg = compose_config(overrides, return_hydra_config=True)
    if out_dir is None:
        out_dir = OmegaConf.select(cfg, "hydra.run.dir")
    with open_dict(cfg):
        del cfg["hydra"]  # what `@hydra.main` hands the CLI's run: the job's config only
    validate_config(cfg)
    return run_experiment(cfg, out_dir=out_dir)
