"""Decode with each configured decoder, score the generations, and build the human row.

The human row is held-out data under the same budget: as many sequences as the generations,
cut to the same length limit, and continuing the same prompts when prompts are used.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from seqgen.config import to_dict
from seqgen.decoding import registry
from seqgen.decoding.steering import resolve as resolve_steering
from seqgen.driver import (
    _kept_per_prompt,
    decode_all,
    decode_chunks,
    decoder_key,
    decoder_label,
    generations,
    sample_records,
)
from seqgen.errors import UserError
from seqgen.metrics import Generations, compute
from seqgen.metrics.stream import StreamCounts
from seqgen.metrics.table import compute_stream, unstreamed
from seqgen.parallel import is_lead
from seqgen.progress import still_running
from seqgen.prompts import Prompts
from seqgen.scoring import score_sequences, step_logits

log = logging.getLogger("seqgen")


def _reference_scores(reference: Any, gen: Generations) -> Generations:
    """The generations with their log-probs under the reference model (`gen/ref_ppl`)."""
    if reference is None:
        return gen
    lps, eos = score_sequences(reference, list(gen.prompts), list(gen.sequences), list(gen.ended))
    return dataclasses.replace(gen, ref_logprobs=lps, ref_eos_logprobs=eos)


def evaluate_decoders(
    decoders: list[Any],
    corpus: Any,
    model: Any,
    pr: Prompts,
    decode_cfg: Any,
    metrics_cfg: Any,
    seed: int,
    reference: Any = None,
    on_result: Callable[[dict[str, Any], list[dict[str, Any]]], None] | None = None,
    on_samples: Callable[[list[dict[str, Any]], bool], None] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Results (one per decoder, then `human`) and samples (one per generated sequence).

    `decoders`: the run's decoder configs (`preflight.run_decoders`), decoded in order, the
    i-th with `decoder_key(seed, i)`; `pr`: the run's prompts (`prompts.prepare_prompts`, with
    its constraint). `on_result(result, samples)` is called as soon as each decoder (then the
    human row, with no samples) is done, so a caller can write it before the next one starts.
    A study (a decoder with more than `decode.stream_rows` rows, `study_decoder`) hands its
    samples to `on_samples(samples, continued)` chunk by chunk instead, and returns only the
    first ones.
    """
    if not decoders:
        raise UserError("nothing to decode: give decoder=NAME or a non-empty `compare` list")
    results, samples = [], []
    beams: list[tuple[int, Generations]] = []  # the mode-search rows, for search/beam_error
    exact_mode = None
    common = metric_settings(metrics_cfg, seed, corpus, pr)
    for i, dec in enumerate(decoders):
        key = decoder_key(seed, i)
        if _study_rows(decode_cfg, dec, len(pr.prompts)) > int(decode_cfg.stream_rows):
            _warn_study_metrics(decode_cfg, dec, corpus, reference, pr.constraint)
            study = (decode_cfg, metrics_cfg, seed, dec, corpus, model, pr.prompts, key)
            result, first_rows = study_decoder(*study, pr.constraint, on_samples, pr.unconditional)
            if is_lead():  # its samples are on disk; the first ones for the tracker's table
                results.append(result)
                samples += first_rows
                if on_result is not None:
                    on_result(result, [])
            continue
        done = _evaluate_one(decode_cfg, dec, key, corpus, model, pr, common, reference)
        if done is None:  # every process decodes its rows; process 0 has them all and scores
            continue
        gen, result, records = done
        if registry.searches_mode(dec):
            beams.append((len(results), gen))
        if registry.spec(dec).finds_mode:  # exact search: the mode each beam is held to
            exact_mode = (gen.sequence_logprobs(), gen.proven)
        results.append(result)
        samples += records
        if on_result is not None:
            on_result(result, records)
    if not is_lead():
        return [], []
    if exact_mode is not None:  # rows that compare decoders; write_outputs rewrites the file
        for i, gen in beams:
            gen = dataclasses.replace(gen, exact_mode=exact_mode)
            results[i]["metrics"].update(compute(gen, across=True))
    t0 = time.time()
    with still_running("scoring the human row"):
        results.append(human_row(decode_cfg, corpus, model, pr, common, reference))
    log.info("metrics %-28s %5d sequences in %.1f s", "human", len(pr.human), time.time() - t0)
    if on_result is not None:
        on_result(results[-1], [])
    return results, samples


def _evaluate_one(
    decode_cfg: Any,
    dec: Any,
    key: Any,
    corpus: Any,
    model: Any,
    pr: Prompts,
    common: dict[str, Any],
    reference: Any,
) -> tuple[Generations, dict[str, Any], list[dict[str, Any]]] | None:
    """Decode every prompt with one decoder and compute its metrics: (its generations, its
    result, its samples); None on a process other than 0, which only decodes its rows."""
    label = decoder_label(dec)
    t0 = time.time()
    with still_running(f"decoding {label}"):  # a compile or one long chunk: not silent
        steered = resolve_steering(dec, corpus.vocab)  # texts as the vocabulary's ids
        out = decode_all(
            decode_cfg, steered, model, pr.prompts, key, pr.constraint, pr.unconditional
        )
    t_dec = time.time() - t0
    if not is_lead():
        return None
    fields = {
        "decode_s": t_dec,
        "prompts_left_out": pr.left_out,
        "decoder": dec,  # with step_logits: the sampler's kept sets (oracle/trunc_*)
        "step_logits": functools.partial(step_logits, model),
        **registry.metric_inputs(dec, out),
    }
    fields["label"] = label
    gen, rec, texts = generations(decode_cfg, dec, corpus, pr.prompts, out, **fields, **common)
    gen = _reference_scores(reference, gen)
    log.info("decoded %-28s %5d sequences in %.1f s", label, gen.num_sequences, t_dec)
    t0 = time.time()
    metrics = compute(gen)
    log.info("metrics %-28s %5d sequences in %.1f s", label, gen.num_sequences, time.time() - t0)
    result = {"decoder": {**to_dict(dec), "label": label}, "metrics": metrics}
    return gen, result, sample_records(label, gen, rec, texts, corpus.vocab)


TRACKER_SAMPLES = 2000  # the samples a study keeps in memory, for the tracker's table


def study_decoder(
    decode_cfg: Any,
    metrics_cfg: Any,
    seed: int,
    dec: Any,
    corpus: Any,
    model: Any,
    prompts: list[np.ndarray],
    key: Any,
    constraint: Any,
    on_samples: Callable[[list[dict[str, Any]], bool], None] | None,
    unconditional: list[np.ndarray] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One decoder's result for a study of many generations, in memory that does not grow
    with their number (the distinct n-grams aside): each decoded chunk's samples go to
    `on_samples` (process 0) and its generations into `StreamCounts`, whose values are the
    metric table's streamed rows (`compute_stream`, the same numbers as `compute`). Returns
    the result and the first `TRACKER_SAMPLES` samples."""
    label = decoder_label(dec)
    counts = StreamCounts(
        _study_rows(decode_cfg, dec, len(prompts)),
        rows=int(decode_cfg.stream_rows),
        seed=int(seed),
        self_bleu_samples=int(metrics_cfg.self_bleu_max),
        vocab_size=model.vocab_size,
        dataset=corpus.name,
        abc_subset=int(metrics_cfg.abc_subset),
        abc_timeout_s=float(metrics_cfg.abc_timeout_s),
        label=label,
    )
    kept: list[dict[str, Any]] = []
    t0 = time.time()
    steered = resolve_steering(dec, corpus.vocab)  # texts as the vocabulary's ids
    chunks = decode_chunks(decode_cfg, steered, model, prompts, key, constraint, unconditional)
    for start, out in chunks:
        if not is_lead():
            continue
        chunk = prompts[start : start + out["tokens"].shape[0]]
        gen, rec, texts = generations(decode_cfg, dec, corpus, chunk, out)
        rec["prompt_index"] = [start + i for i in rec["prompt_index"]]
        counts.add(dataclasses.replace(gen, scores=rec["score"]))
        records = sample_records(label, gen, rec, texts, corpus.vocab)
        if on_samples is not None:
            on_samples(records, bool(kept))
        kept += records[: TRACKER_SAMPLES - len(kept)]
    counts.decode_s = time.time() - t0  # decoding, metrics and writing together
    metrics = compute_stream(counts)
    log.info("studied %-28s %5d sequences in %.1f s", label, counts.count, counts.decode_s)
    return {"decoder": {**to_dict(dec), "label": label}, "metrics": metrics}, kept


def _study_rows(decode_cfg: Any, dec: Any, num_prompts: int) -> int:
    """The generations a decoder keeps for its metrics (`_kept_per_prompt` per prompt)."""
    n_out = registry.rows_per_prompt(dec, int(decode_cfg.num_samples))
    return num_prompts * _kept_per_prompt(decode_cfg, dec, n_out)


def _warn_study_metrics(
    decode_cfg: Any, dec: Any, corpus: Any, reference: Any, constraint: Any
) -> None:
    """A study computes the metric table's streamed rows: say in one line which of the run's
    other metrics it skips, and why."""
    row = registry.spec(dec)
    own_outputs = row.metric_inputs is not None  # metrics of what only its outputs mean (MBR's)
    applies = (
        ("oracle/", corpus.oracle is not None),
        ("gen/ref_ppl", reference is not None),
        ("constraint/", constraint is not None),
        ("search/", row.mode_search or row.finds_mode or own_outputs),
        ("mbr/", own_outputs),
    )
    # a key of no prefix above is a registered metric without a streamed form: it applies
    skipped = [k for k in unstreamed() if not any(k.startswith(p) and not on for p, on in applies)]
    if skipped:
        log.warning(
            "%s has more than decode.stream_rows=%d rows: a study, whose samples are streamed "
            "to disk; not computed: %s (no streamed form: each reads per-generation inputs a "
            "study does not keep: oracle states, a second model's scores, the constraint's "
            "masses, search results)",
            decoder_label(dec),
            int(decode_cfg.stream_rows),
            ", ".join(skipped),
        )


def metric_settings(metrics_cfg: Any, seed: int, corpus: Any, pr: Prompts) -> dict[str, Any]:
    """What every `Generations` bundle of a run shares: the metrics' settings (`metrics`
    config, seed), the corpus' name, vocabulary and oracle, and the human continuations (the
    reference)."""
    return {
        "seed": int(seed),
        "self_bleu_max": int(metrics_cfg.self_bleu_max),
        "abc_subset": int(metrics_cfg.abc_subset),
        "abc_timeout_s": float(metrics_cfg.abc_timeout_s),
        "dataset": corpus.name,
        "vocab": corpus.vocab,
        "oracle": corpus.oracle,
        "reference": pr.human,
    }


def human_row(
    decode_cfg: Any, corpus: Any, model: Any, pr: Prompts, common: dict, reference: Any = None
) -> dict[str, Any]:
    """The human row: the metrics of the held-out continuations (`make_prompts`), scored by
    the model (teacher-forced log-probs: `gen/ppl` and `gen/ppl_model` are the model's
    perplexity on them, t = 1, as in Holtzman et al. 2020's Human row). Held-out text is no
    n-best list and has no decoder score, so `search/mode_found` and `score/mean` do not
    apply."""
    lps, eos = score_sequences(model, pr.human_prompts, pr.human, pr.human_ended)
    texts = [
        corpus.vocab.decode(np.concatenate([p, t])) for p, t in zip(pr.human_prompts, pr.human)
    ]
    gen = Generations(
        pr.human,
        ended=pr.human_ended,
        prompts=pr.human_prompts,
        tempered_logprobs=lps,
        eos_tempered_logprobs=eos,
        model_logprobs=lps,
        eos_model_logprobs=eos,
        texts=texts,
        max_len=[int(decode_cfg.max_len) - len(p) for p in pr.human_prompts],
        label="human",
        **common,
    )
    metrics = compute(_reference_scores(reference, gen))
    return {"decoder": {"name": "human", "label": "human"}, "metrics": metrics}
