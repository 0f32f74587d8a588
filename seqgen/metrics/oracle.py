"""Metrics against a known true distribution (the synthetic DPFSA oracle).

The oracle is duck-typed (no import of `seqgen.data`): any object with
- `logprob_batch(tokens int[N, T], lengths int[N], ended bool[N]) -> float[N]`: the true
  log-prob of each sequence's first `lengths[i]` tokens, plus log p(EOS | sequence) when
  `ended[i]` (a prefix probability otherwise);
- `entropy_rate() -> float`: true entropy per token (nats), EOS counted as a token;
- `mode() -> (list[int], float)`: the exact most probable string (ids without BOS; a trailing
  EOS, if present, is ignored) and its log-prob.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from seqgen.errors import UserError
from seqgen.metrics._packed import SequencesLike, pack
from seqgen.metrics.perplexity import perplexity_from_nll
from seqgen.tokens import EOS_ID


def oracle_nll(
    oracle: Any, sequences: SequencesLike, ended: Sequence[bool] | np.ndarray, *, lengths=None
) -> float:
    """Mean per-token NLL of the generations under the TRUE distribution (nats):

        oracle/nll = -sum_i log p*(x_i [, EOS]) / sum_i (|x_i| + ended_i)

    pooled over all tokens, EOS counted (and scored) exactly when the sequence ended with EOS
    -- the same token convention as `gen/ppl`, so the two are directly comparable; its floor
    in expectation for samples from p* itself is `oracle.entropy_rate()` (the cross-entropy
    of p* with itself). `oracle/ppl` = exp(oracle/nll).
    """
    packed = pack(sequences, lengths)
    ended_arr = np.asarray(ended, bool).reshape(-1)
    padded = packed.padded(pad=0)
    if padded.shape[1] == 0:
        padded = np.zeros((packed.num_sequences, 1), np.int64)
    lp = np.asarray(oracle.logprob_batch(padded, packed.lengths, ended_arr), np.float64)
    count = int(packed.lengths.sum() + ended_arr.sum())
    return -float(lp.sum()) / count if count else math.nan


def _strip_eos(seq) -> tuple[int, ...]:
    seq = [int(t) for t in seq]
    return tuple(seq[:-1] if seq and seq[-1] == EOS_ID else seq)


def mode_found_rate(
    oracle: Any,
    best_sequences: SequencesLike,
    best_ended: Sequence[bool] | np.ndarray,
    *,
    lengths=None,
) -> float:
    """search/mode_found: share of prompts whose best (top-ranked) beam is the exact mode,
    i.e. the same token ids as `oracle.mode()[0]` AND ended with EOS (the mode is a complete
    string). Pass one best sequence per prompt; meaningful for unconditional decoding (empty
    prompts), where the mode of the model's target distribution is the oracle's mode (cf.
    Stahlberg & Byrne 2019, "On NMT Search Errors and Model Errors", for the exact-search view).
    """
    mode = _strip_eos(oracle.mode()[0])
    packed = pack(best_sequences, lengths)
    ended_arr = np.asarray(best_ended, bool).reshape(-1)
    if packed.num_sequences == 0:
        return math.nan
    hits = [
        bool(ended_arr[i]) and tuple(int(t) for t in packed.sequence(i)) == mode
        for i in range(packed.num_sequences)
    ]
    return float(np.mean(hits))


def oracle_metrics(
    oracle: Any,
    sequences: SequencesLike,
    ended: Sequence[bool] | np.ndarray,
    *,
    lengths=None,
    best_sequences: SequencesLike | None = None,
    best_ended: Sequence[bool] | np.ndarray | None = None,
) -> dict[str, float]:
    """`oracle/nll`, `oracle/ppl`, `oracle/entropy`, `oracle/mode_logprob` and, when the best
    beam per prompt is given, `search/mode_found`."""
    nll = oracle_nll(oracle, sequences, ended, lengths=lengths)
    out = {
        "oracle/nll": nll,
        "oracle/ppl": perplexity_from_nll(nll, 1)["ppl"] if math.isfinite(nll) else math.nan,
        "oracle/entropy": float(oracle.entropy_rate()),
        "oracle/mode_logprob": float(oracle.mode()[1]),
    }
    if best_sequences is not None:
        if best_ended is None:
            raise UserError("search/mode_found needs best_ended together with best_sequences")
        out["search/mode_found"] = mode_found_rate(oracle, best_sequences, best_ended)
    return out
