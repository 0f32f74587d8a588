"""Truncation sampling measured against the true distribution (synthetic DPFSA data).

Hewitt, Manning & Liang 2022 ("Truncation Sampling as Language Model Desmoothing") read a
truncation as an estimate of the true distribution's support: a good one keeps exactly the
tokens p* allows. With the oracle, seqgen measures that at every sampled step:

- the kept set K_t: the tokens whose logit is finite after the sampler's processors, computed
  by the processor table's own `apply` (`kept_sets`) on the model's logits at that step
  (teacher-forced over the generated tokens, `seqgen.scoring.step_logits`);
- the true support S_t = {v : p*(v | q_t) > 0}, q_t the automaton's state after prompt and
  the continuation so far.

The oracle is duck-typed like `seqgen.metrics.oracle`'s, plus `log_probs` float[Q, V]: the
true next-token log-probs of each state (-inf: not allowed; EOS included).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from seqgen.decoding import processor_table as table
from seqgen.decoding.common import get, traced_knobs
from seqgen.errors import UserError
from seqgen.metrics._packed import SequencesLike
from seqgen.tokens import EOS_ID

Rows = Sequence[np.ndarray]


def exact_rows(flags: table.ProcessorFlags) -> bool:
    """Whether every row of `flags` can be rerun from the logits alone (no shared state but
    the continuation's length, no state of its own): then `kept_sets` is the sampler's set."""
    return not flags.stateful() and not any(
        s in table.PROCESSORS[n].needs for n in flags.order for s in table.SHARED_STATE
    )


def sampler_flags(
    dec: Mapping[str, Any] | Any, vocab_size: int | None = None
) -> table.ProcessorFlags:
    """The rows the sampler compiles in for decoder config `dec` (as `sampling._launch`)."""
    return table.flags_from_cfg(lambda k: get(dec, k), vocab_size, table.STAGES)


def truncation_applies(dec: Any, step_logits: Callable[..., Rows] | None) -> bool:
    """Whether `oracle/trunc_*` apply: the model's logits are at hand and `dec` is the sampler
    (`sample`, temperature > 0: at 0 it is greedy, no truncation) with rows `kept_sets` can
    rerun exactly (`exact_rows`)."""
    if dec is None or step_logits is None:
        return False
    from seqgen.decoding import registry, sampling  # the registry imports the metrics

    is_sampler = registry.spec(dec).fn is sampling.launch_sample
    return is_sampler and float(get(dec, "temperature")) > 0 and exact_rows(sampler_flags(dec))


@jax.jit(static_argnums=1)
def _processed(logits: jax.Array, flags: table.ProcessorFlags, knobs, generated) -> jax.Array:
    return table.process_logits(logits, knobs, flags, generated=generated)


def kept_sets(dec: Any, logits: Rows) -> list[np.ndarray]:
    """bool [steps, V] per sequence: the tokens the sampler with config `dec` could draw at each
    step (finite logit after every processor that is on, in the table's order), from the
    model's raw logits [steps, V] at those steps (step j chooses continuation token j, the last
    one EOS when it ended). All steps of all sequences go through one call of the table's
    `process_logits`, with `generated` = j for min-length."""
    vocab = int(logits[0].shape[-1]) if len(logits) else 0
    flags = sampler_flags(dec, vocab)
    if not exact_rows(flags):
        raise UserError(
            f"oracle/trunc_*: processors {list(flags.order)} keep state the metric cannot "
            "rerun from logits; allowed: temperature, min_length and the truncations"
        )
    sizes = [len(x) for x in logits]
    if not sum(sizes):
        return [np.zeros((0, vocab), bool) for _ in logits]
    stacked = np.concatenate([np.asarray(x, np.float32) for x in logits])  # [S, V]
    generated = np.concatenate([np.arange(n, dtype=np.int32) for n in sizes])
    out = np.asarray(_processed(stacked, flags, traced_knobs(dec), generated)) > -np.inf
    return np.split(out, np.cumsum(sizes)[:-1])


def truncation_oracle(
    oracle: Any,
    kept: Rows,
    sequences: SequencesLike,
    ended: Sequence[bool] | np.ndarray,
    prompts: SequencesLike | None = None,
) -> tuple[float, float, float]:
    """(`oracle/trunc_precision`, `oracle/trunc_recall`, `oracle/off_support_rate`).

    kept[i]: bool [steps_i, V], the kept set at each sampled step of sequence i (steps_i =
    len(x_i) + ended_i: the EOS step counts). Over the steps whose prefix (prompt + tokens so
    far) is possible under p*, with q_t its state and S_t = {v : p*(v | q_t) > 0}:

        precision = mean over steps of |K_t & S_t| / |K_t|
        recall    = mean over steps of sum_{v in K_t} p*(v | q_t)

    pooled over every counted step of every sequence (each step weighs the same). A sequence
    stops being counted after its first token outside S_t (no true state follows);
    off_support_rate is the share of sequences with such a token (EOS included), the rate of
    Hewitt et al.'s "leaving the support". Prompts impossible under p* are left out (as in
    every `oracle/*`); NaN when nothing is left.
    """
    ended = np.asarray(ended, bool).reshape(-1)
    if prompts is None:
        prompts = [()] * len(sequences)
    prec, rec, left, counted = [], [], [], 0
    for p, x, e, k in zip(prompts, sequences, ended, kept):
        prefix = [int(t) for t in np.asarray(p).reshape(-1)]
        q = oracle.state_after(prefix)
        if q is None:
            continue
        counted += 1
        toks = [int(t) for t in np.asarray(x).reshape(-1)] + ([EOS_ID] if e else [])
        if len(k) != len(toks):
            raise UserError(f"kept sets: {len(k)} steps for a sequence of {len(toks)} steps")
        off = False
        for j, tok in enumerate(toks):
            true = np.exp(np.asarray(oracle.log_probs[q], np.float64))  # [V]
            keep = np.asarray(k[j], bool)
            prec.append(float((keep & (true > 0)).sum()) / max(int(keep.sum()), 1))
            rec.append(float(true[keep].sum()))
            if true[tok] == 0:
                off = True
                break
            if tok != EOS_ID:
                prefix.append(tok)
                q = oracle.state_after(prefix)
        left.append(off)
    if not counted:
        return math.nan, math.nan, math.nan
    mean = lambda xs: float(np.mean(xs)) if xs else math.nan  # noqa: E731
    return mean(prec), mean(rec), float(np.mean(left))


def truncation_metrics(
    oracle: Any,
    dec: Any,
    step_logits: Callable[..., Rows],
    sequences: SequencesLike,
    ended: Sequence[bool] | np.ndarray,
    prompts: SequencesLike | None = None,
) -> tuple[float, float, float]:
    """`truncation_oracle` of the kept sets of sampler `dec` on the model's logits
    `step_logits(prompts, sequences, ended)` (raw logits [len + ended, V] per sequence)."""
    if prompts is None:
        prompts = [np.zeros(0, np.int32)] * len(sequences)
    logits = step_logits(list(prompts), list(sequences), list(ended))
    return truncation_oracle(oracle, kept_sets(dec, logits), sequences, ended, prompts)
