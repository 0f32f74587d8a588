"""The one pipeline: data -> prompts -> model (trained, or loaded from the cache) -> decode ->
metrics -> outputs and trackers. `run_experiment(cfg)` is what `python -m seqgen.run` and
`seqgen.run(overrides)` call; tests and notebooks call it directly with a composed config.

It reads the root config once and hands each stage the sub-config it needs: `data` to the
corpus, `decode` and `constraint` to the prompts (built once, checked by preflight, decoded by
evaluation), `model`/`train`/`data` to the model store, `decode`/`metrics` to evaluation.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from seqgen.config import to_dict, validate_config
from seqgen.data.corpus import load_corpus
from seqgen.evaluate import evaluate_decoders
from seqgen.model_store import ModelSpec, get_model, load_reference
from seqgen.outputs import (
    print_results_table,
    reset_outputs,
    write_decoder,
    write_outputs,
    write_samples,
)
from seqgen.parallel import is_lead, maybe_initialize_distributed
from seqgen.paths import cache_root, enable_compilation_cache
from seqgen.preflight import check_budgets, check_corpus, check_environment, run_decoders
from seqgen.progress import still_running
from seqgen.prompts import prepare_prompts
from seqgen.report import write_report
from seqgen.tracking import make_tracker

log = logging.getLogger("seqgen")


def run_experiment(cfg: Any, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Run one configured experiment end to end and return its results.

    Returns `{"metrics": {...model metrics...}, "results": [one dict per decoder + human],
    "out_dir": str}`. Files written into `out_dir`: `config.yaml`, `metrics.json`,
    `results.jsonl`, `samples.jsonl`, `samples/`, `plots/`.
    """
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.structured(cfg)
    out_dir = Path(out_dir or Path.cwd())
    validate_config(cfg)  # a notebook's or script's config gets the command line's checks
    check_environment(cfg, out_dir)
    maybe_initialize_distributed(cfg)
    enable_compilation_cache(cache_root(cfg.cache_dir) / "jax_compile")
    if not is_lead():
        return _follow(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    reset_outputs(out_dir)
    (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    tracker = make_tracker(
        cfg.logger,
        config=to_dict(cfg),
        out_dir=out_dir,
        default_group=_group(cfg),
        default_name=_run_name(out_dir),
    )
    t0 = time.time()
    try:
        corpus = load_corpus(cfg.data, int(cfg.seed))
        _log_corpus(corpus)
        prompts = _checked_prompts(cfg, corpus)  # every data-dependent check, before training
        spec = ModelSpec.of(cfg)
        model = get_model(spec, corpus, cfg.cache_dir, cfg.cache_on_damage == "retrain", tracker)
        model_metrics = dict(model.metrics)
        log.info(
            "model: ppl/valid %.3f, ppl/test %.3f",
            model_metrics.get("ppl/valid", float("nan")),
            model_metrics.get("ppl/test", float("nan")),
        )
        _write_metrics(out_dir, model_metrics, model.info)
        reference = load_reference(cfg.metrics.get("reference_checkpoint"), corpus)
        results, samples, listen = _evaluate(cfg, corpus, model, prompts, reference, out_dir)
        t_write = time.time()
        outputs = write_outputs(cfg.output, results, samples, out_dir, tracker)
        report = write_report(out_dir, vocab=corpus.vocab)  # `vocab` marks the prompts in it
        tracker.log_html("report", report)
        log.info("wrote results, plots and report in %.1f s", time.time() - t_write)
        tracker.log_summary(model_metrics)
        wall = time.time() - t0
        outputs = {**outputs, "report": str(report), "listen": listen}
        _write_metrics(out_dir, model_metrics, model.info, wall_s=wall, outputs=outputs)
        print_results_table(results, model_metrics)
        log.info("done in %.1f s -> %s", wall, out_dir)
        log.info("report: open %s", report.resolve().as_uri())
    except BaseException:
        tracker.finish(exit_code=1)
        raise
    tracker.finish(exit_code=0)
    return {"metrics": model_metrics, "results": results, "out_dir": str(out_dir)}


def _evaluate(
    cfg: Any, corpus: Any, model: Any, prompts: Any, reference: Any, out_dir: Path
) -> tuple[list[dict], list[dict], list[str]]:
    """Every decoder of the run, each written as soon as it is done (`_DecoderWriter`):
    results, samples and the files to listen to. On a failure, the log names the decoders
    whose results and samples are already in `out_dir`."""
    writer = _DecoderWriter(cfg, corpus, out_dir)
    decoders = [dec for _, dec in run_decoders(cfg)]
    try:
        results, samples = evaluate_decoders(
            decoders, corpus, model, prompts, cfg.decode, cfg.metrics, int(cfg.seed), reference,
            writer, writer.samples,
        )  # fmt: skip
    except BaseException:
        log.warning(
            "decoders finished before the failure: %s (their results and samples are in %s)",
            ", ".join(writer.finished) or "none",
            out_dir,
        )
        raise
    return results, samples, writer.listen


class _DecoderWriter:
    """`evaluate_decoders`'s `on_result`: each decoder's result, samples and tunes written as
    soon as it finishes (so a later failure loses none of them), with the time it took."""

    def __init__(self, cfg: Any, corpus: Any, out_dir: Path):
        self.output_cfg, self.corpus, self.out_dir = cfg.output, corpus, out_dir
        self.abc_timeout_s = float(cfg.metrics.abc_timeout_s)
        self.finished: list[str] = []
        self.listen: list[str] = []

    def __call__(self, result: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        t0 = time.time()
        label = result["decoder"]["label"]
        with still_running(f"writing {label}"):  # MIDI: up to metrics.abc_timeout_s a tune
            files = write_decoder(
                self.output_cfg, self.corpus, result, rows, self.out_dir, self.abc_timeout_s
            )
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

    def samples(self, rows: list[dict[str, Any]], continued: bool) -> None:
        """`evaluate_decoders`'s `on_samples`: a study's samples, chunk by chunk."""
        listen_to = 0 if continued else int(self.output_cfg.num_listen)
        files = write_samples(
            self.corpus.name, rows, self.out_dir, listen_to, self.abc_timeout_s, append=continued
        )
        self.listen.extend(map(str, files))


def _follow(cfg: Any) -> dict[str, Any]:
    """A process other than 0 of a multi-process run: its part of the collective work (training,
    decoding); process 0 computes the metrics over every row and writes the run folder."""
    corpus = load_corpus(cfg.data, int(cfg.seed))
    prompts = _checked_prompts(cfg, corpus)
    model = get_model(ModelSpec.of(cfg), corpus, cfg.cache_dir, cfg.cache_on_damage == "retrain")
    reference = load_reference(cfg.metrics.get("reference_checkpoint"), corpus)
    decoders = [dec for _, dec in run_decoders(cfg)]
    evaluate_decoders(
        decoders, corpus, model, prompts, cfg.decode, cfg.metrics, int(cfg.seed), reference
    )
    return {"metrics": dict(model.metrics), "results": [], "out_dir": None}


def _checked_prompts(cfg: Any, corpus: Any) -> Any:
    """The run's prompts, built once (`prompts.prepare_prompts`), after every decoder and
    data-dependent knob is checked against the corpus and before the budgets on them."""
    check_corpus(cfg, corpus)
    prompts = prepare_prompts(cfg.decode, corpus, cfg.get("constraint"), cfg.data.unknown)
    check_budgets(cfg, len(corpus.vocab), len(prompts.prompts))
    return prompts


def _log_corpus(corpus: Any) -> None:
    log.info(
        "data: %s, vocab %d, %d/%d/%d train/valid/test sequences",
        corpus.name,
        len(corpus.vocab),
        len(corpus.train),
        len(corpus.valid),
        len(corpus.test),
    )


def _write_metrics(out_dir: Path, metrics: dict[str, float], info: dict, **extra: Any) -> None:
    """`metrics.json`: written as soon as the model is ready (what `seqgen-sample run=` needs),
    then again with the wall time and the output files."""
    (out_dir / "metrics.json").write_text(
        json.dumps({**metrics, "model": info, **extra}, indent=2, default=str)
    )


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
