"""Metrics for generated token sequences: perplexity, diversity, repetition, oracle, ABC.

Every function works on token ids (or decoded ABC text for `abc`), imports no model and no
corpus, and names its paper and exact definition in its docstring. The metric table
(`seqgen.metrics.table`) lists every metric once; `compute(generations)` returns the flat
`{key: float}` dict the experiments log (keys like `diversity/self_bleu4`), and
`register_metric` adds a metric of your own.
"""

from seqgen.metrics.abc import abc_rates, bars_ok, parse_abc
from seqgen.metrics.constraint import mass_removed
from seqgen.metrics.diversity import (
    distinct_n,
    ngram_entropy,
    self_bleu,
    unique_sequences,
    zipf_coefficient,
)
from seqgen.metrics.generations import Generations, decode_output_inputs, decode_output_records
from seqgen.metrics.length import eos_rate, length_stats
from seqgen.metrics.oracle import (
    impossible_prompt_rate,
    mode_found_rate,
    oracle_nll,
    oracle_summary,
)
from seqgen.metrics.perplexity import generation_perplexity, perplexity_from_nll, pooled_logprob
from seqgen.metrics.repetition import (
    end_repeats,
    is_repetition,
    rep_l,
    repetition_percent,
    seq_rep_n,
)
from seqgen.metrics.table import METRICS, Key, Metric, Unit, compute, register_metric

__all__ = [
    "METRICS",
    "Generations",
    "Key",
    "Metric",
    "Unit",
    "abc_rates",
    "bars_ok",
    "compute",
    "decode_output_inputs",
    "decode_output_records",
    "distinct_n",
    "end_repeats",
    "eos_rate",
    "generation_perplexity",
    "impossible_prompt_rate",
    "is_repetition",
    "length_stats",
    "mass_removed",
    "mode_found_rate",
    "ngram_entropy",
    "oracle_nll",
    "oracle_summary",
    "parse_abc",
    "perplexity_from_nll",
    "pooled_logprob",
    "register_metric",
    "rep_l",
    "repetition_percent",
    "self_bleu",
    "seq_rep_n",
    "unique_sequences",
    "zipf_coefficient",
]
