"""Metrics for generated token sequences: perplexity, diversity, repetition, oracle, ABC.

Every function works on token ids (or decoded ABC text for `abc`), imports no model and no
corpus, and names its paper and exact definition in its docstring. `compute_metrics` returns
the flat `{key: float}` dict the experiments log (keys like `diversity/self_bleu4`).
"""

from seqgen.metrics.abc import abc_metrics, bars_ok, parse_abc
from seqgen.metrics.compute import (
    compute_metrics,
    decode_output_inputs,
    decode_output_records,
    human_metrics,
    length_metrics,
)
from seqgen.metrics.diversity import (
    distinct_n,
    diversity_metrics,
    ngram_entropy,
    self_bleu,
    unique_sequences,
    zipf_coefficient,
)
from seqgen.metrics.oracle import mode_found_rate, oracle_metrics, oracle_nll
from seqgen.metrics.perplexity import generation_perplexity, perplexity_from_nll, pooled_logprob
from seqgen.metrics.repetition import (
    end_repeats,
    is_repetition,
    rep_l,
    repetition_metrics,
    repetition_percent,
    seq_rep_n,
)

__all__ = [
    "abc_metrics",
    "bars_ok",
    "compute_metrics",
    "decode_output_inputs",
    "decode_output_records",
    "distinct_n",
    "diversity_metrics",
    "end_repeats",
    "generation_perplexity",
    "human_metrics",
    "is_repetition",
    "length_metrics",
    "mode_found_rate",
    "ngram_entropy",
    "oracle_metrics",
    "oracle_nll",
    "parse_abc",
    "perplexity_from_nll",
    "pooled_logprob",
    "rep_l",
    "repetition_metrics",
    "repetition_percent",
    "self_bleu",
    "seq_rep_n",
    "unique_sequences",
    "zipf_coefficient",
]
