"""Decode with each configured decoder, score the generations, and build the human row.

The human row is held-out data under the same budget: as many sequences as the generations,
cut to the same length limit, and continuing the same prompts when prompts are used.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from seqgen.config import to_dict
from seqgen.decoding import registry
from seqgen.driver import decode_all, decoder_key, decoder_label, generations, sample_records
from seqgen.errors import UserError
from seqgen.metrics import compute_metrics, human_metrics
from seqgen.prompts import Prompts
from seqgen.scoring import score_sequences

log = logging.getLogger("seqgen")


def _reference_scores(reference: Any, prompts, conts, ended) -> dict[str, Any]:
    """`gen/ref_ppl` inputs: the continuations scored under the reference model."""
    if reference is None:
        return {}
    lps, eos = score_sequences(reference, list(prompts), list(conts), list(ended))
    return {"ref_logprobs": lps, "ref_eos_logprobs": eos}


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
    constraint = pr.constraint
    is_abc = corpus.name == "folk"
    results, samples = [], []
    search: dict = {}  # best log-prob per prompt of the n-best decoders (search/beam_error)
    common = {
        "seed": int(seed),
        "oracle": corpus.oracle,
        "self_bleu_max": int(metrics_cfg.self_bleu_max),
        "abc_subset": int(metrics_cfg.abc_subset),
    }
    for i, dec in enumerate(decoders):
        label = decoder_label(dec)
        t0 = time.time()
        key = decoder_key(int(seed), i)
        out = decode_all(decode_cfg, dec, model, pr.prompts, key, constraint)
        t_dec = time.time() - t0
        gen, rec, texts = generations(decode_cfg, dec, corpus, pr.prompts, out)
        metrics = compute_metrics(
            **gen,
            abc_texts=texts if is_abc else None,
            max_len=[int(decode_cfg.max_len) - len(p) for p in gen["prompts"]],
            **_reference_scores(reference, gen["prompts"], gen["sequences"], gen["ended"]),
            **common,
        )
        metrics["score/mean"] = float(np.mean(rec["score"]))
        metrics.update(_search_metrics(dec, out, gen, search))
        if constraint is not None:
            from seqgen.metrics.constraint import constraint_metrics

            metrics.update(constraint_metrics(rec["constraint_logmass"]))
            metrics["constraint/prompts_left_out"] = pr.left_out
        metrics["time/decode_s"] = t_dec
        log.info("decoded %-28s %5d sequences in %.1f s", label, len(gen["sequences"]), t_dec)
        results.append({"decoder": {**to_dict(dec), "label": label}, "metrics": metrics})
        first = len(samples)
        samples += sample_records(label, gen, rec, texts, corpus.vocab)
        if on_result is not None:
            on_result(results[-1], samples[first:])
    _add_beam_error(results, search)  # needs every decoder; write_outputs rewrites results.jsonl
    results.append(human_row(decode_cfg, corpus, model, pr, common, is_abc, reference))
    if on_result is not None:
        on_result(results[-1], [])
    return results, samples


def _search_metrics(dec: Any, out: dict, gen: dict, search: dict) -> dict[str, float]:
    """exact: `search/exact_proven`, `search/expansions_mean`; mbr: `mbr/*`. Notes the beam
    decoders' best log-probs per prompt (-inf when not ended) in `search` for
    `search/beam_error`."""
    from seqgen.metrics.search import exact_proven_rate
    from seqgen.metrics.utility import mbr_summary

    if registry.SPECS[dec.name].mode_search or dec.name == "exact":
        best = [np.sum(lp) + e for lp, e in zip(gen["model_logprobs"], gen["eos_model_logprobs"])]
        best = np.where(gen["ended"], np.array(best), -np.inf)
        if dec.name != "exact":
            search.setdefault("beams", []).append(best)  # in the order of their result rows
    if dec.name == "exact":
        search["exact"] = (best, out["proven"])
        empty = [len(t) == 0 and e for t, e in zip(gen["sequences"], gen["ended"])]
        return {
            "search/exact_proven": exact_proven_rate(out["proven"]),
            "search/expansions_mean": float(np.mean(out["expansions"])),
            "search/exact_empty": float(np.mean(empty)),  # the mode is EOS at once
        }
    if dec.name == "mbr":
        return mbr_summary(out["scores"])
    return {}


def _add_beam_error(results: list[dict], search: dict) -> None:
    """`search/beam_error` for each beam, diverse beam and greedy row decoded beside exact."""
    from seqgen.metrics.search import beam_error_rate

    if "exact" not in search:
        return
    mode, proven = search["exact"]
    rows = [r for r in results if registry.SPECS[r["decoder"]["name"]].mode_search]
    for i, res in enumerate(rows):
        res["metrics"]["search/beam_error"] = beam_error_rate(search["beams"][i], mode, proven)


def human_row(
    decode_cfg: Any,
    corpus: Any,
    model: Any,
    pr: Prompts,
    common: dict,
    is_abc: bool,
    reference: Any = None,
) -> dict[str, Any]:
    """The human row: the held-out continuations (`make_prompts`) scored by the model
    (teacher-forced log-probs: `gen/ppl` is the model's perplexity on them), `human_metrics`."""
    lps, eos = score_sequences(model, pr.human_prompts, pr.human, pr.human_ended)
    texts = [
        corpus.vocab.decode(np.concatenate([p, t])) for p, t in zip(pr.human_prompts, pr.human)
    ]
    metrics = human_metrics(
        pr.human,
        ended=pr.human_ended,
        logprobs=lps,
        eos_logprobs=eos,
        abc_texts=texts if is_abc else None,
        max_len=[int(decode_cfg.max_len) - len(p) for p in pr.human_prompts],
        prompts=pr.human_prompts,
        **_reference_scores(reference, pr.human_prompts, pr.human, pr.human_ended),
        **common,
    )
    return {"decoder": {"name": "human", "label": "human"}, "metrics": metrics}
