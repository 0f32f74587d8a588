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
from seqgen.driver import decode_all, decoder_key, decoder_label, generations, sample_records
from seqgen.errors import UserError
from seqgen.metrics import Generations, compute
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
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Results (one per decoder, then `human`) and samples (one per generated sequence).

    `decoders`: the run's decoder configs (`preflight.run_decoders`), decoded in order, the
    i-th with `decoder_key(seed, i)`; `pr`: the run's prompts (`prompts.prepare_prompts`, with
    its constraint). `on_result(result, samples)` is called as soon as each decoder (then the
    human row, with no samples) is done, so a caller can write it before the next one starts.
    """
    if not decoders:
        raise UserError("nothing to decode: give decoder=NAME or a non-empty `compare` list")
    results, samples = [], []
    beams: list[tuple[int, Generations]] = []  # the mode-search rows, for search/beam_error
    exact_mode = None
    common = metric_settings(metrics_cfg, seed, corpus, pr)
    for i, dec in enumerate(decoders):
        label = decoder_label(dec)
        t0 = time.time()
        with still_running(f"decoding {label}"):  # a compile or one long chunk: not silent
            steered = resolve_steering(dec, corpus.vocab)  # texts as the vocabulary's ids
            out = decode_all(
                decode_cfg, steered, model, pr.prompts, decoder_key(seed, i), pr.constraint
            )
        t_dec = time.time() - t0
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
        if registry.spec(dec).mode_search:
            beams.append((len(results), gen))
        if registry.spec(dec).finds_mode:  # exact search: the mode each beam is held to
            exact_mode = (gen.sequence_logprobs(), gen.proven)
        log.info("decoded %-28s %5d sequences in %.1f s", label, gen.num_sequences, t_dec)
        t0 = time.time()
        metrics = compute(gen)
        log.info(
            "metrics %-28s %5d sequences in %.1f s", label, gen.num_sequences, time.time() - t0
        )
        results.append({"decoder": {**to_dict(dec), "label": label}, "metrics": metrics})
        first = len(samples)
        samples += sample_records(label, gen, rec, texts, corpus.vocab)
        if on_result is not None:
            on_result(results[-1], samples[first:])
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
