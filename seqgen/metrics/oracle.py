"""Metrics against a known true distribution p* (the synthetic DPFSA oracle).

Generations continue prompts, so each continuation is scored under p*( . | its prompt): a
deterministic automaton reads the prompt into one state q, and p*(x | prompt) is the automaton
started in q. An empty prompt leads to the start state (unconditional p*). A prompt that is
impossible under p* (probability 0: a symbol the automaton forbids, or UNK) has no
conditional distribution: its continuations are left out of every `oracle/*` and
`search/mode_found` value, and `oracle/impossible_prompt_rate` counts them.

The oracle is duck-typed (no import of `seqgen.data`): any object with
- `state_after(prefix: list[int]) -> int | None`: the state a prefix (ids without BOS) leads
  to, None if the prefix is impossible; `state_after([])` is the start state;
- `logprob_batch(tokens int[N, T], lengths int[N], ended bool[N], start int[N]) -> float[N]`:
  the true log-prob of each row's first `lengths[i]` tokens read from state `start[i]`, plus
  log p(EOS | row) when `ended[i]` (a prefix probability otherwise);
- `entropy(start) -> float`, `expected_length(start) -> float`: exact entropy (nats) and
  expected length (EOS counted) of the strings generated from state `start`;
- `mode(start) -> (list[int], float)`: the exact most probable string from state `start` (ids
  without BOS; a trailing EOS, if present, is ignored) and its log-prob.
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

IMPOSSIBLE = -1  # the state of an impossible prompt in `prompt_states`


def prompt_states(oracle: Any, prompts: SequencesLike | None, n: int) -> np.ndarray:
    """int64 [n]: the state each of the n prompts leads to, IMPOSSIBLE (-1) where the prompt
    has probability 0 under p*; with `prompts=None`, the start state for all."""
    if prompts is None:
        prompts = [()] * n
    if len(prompts) != n:
        raise UserError(f"prompts must have one prompt per sequence ({n} sequences)")
    memo: dict[tuple[int, ...], int] = {}
    out = np.empty(n, np.int64)
    for i, p in enumerate(prompts):
        key = tuple(int(t) for t in np.asarray(p).reshape(-1))
        if key not in memo:
            state = oracle.state_after(list(key))
            memo[key] = IMPOSSIBLE if state is None else int(state)
        out[i] = memo[key]
    return out


def oracle_nll(
    oracle: Any,
    sequences: SequencesLike,
    ended: Sequence[bool] | np.ndarray,
    *,
    lengths=None,
    prompts: SequencesLike | None = None,
) -> float:
    """Mean per-token NLL of the continuations under the TRUE distribution, given each one's
    prompt (nats): the oracle NLL of Yu et al. 2017 ("SeqGAN"), per token,

        oracle/nll = -sum_i log p*(x_i [, EOS] | prompt_i) / sum_i (|x_i| + ended_i)

    pooled over all tokens of the sequences whose prompt is possible, EOS counted (and scored)
    exactly when the sequence ended with EOS -- the same token convention and the same
    conditioning as `gen/ppl`, so with the oracle as the model `gen/ppl_model` equals
    `oracle/ppl` = exp(oracle/nll). NaN when no sequence has a possible prompt.
    """
    packed = pack(sequences, lengths)
    ended_arr = np.asarray(ended, bool).reshape(-1)
    states = prompt_states(oracle, prompts, packed.num_sequences)
    ok = states != IMPOSSIBLE
    padded = packed.padded(pad=0)
    if padded.shape[1] == 0:
        padded = np.zeros((packed.num_sequences, 1), np.int64)
    lp = np.asarray(
        oracle.logprob_batch(padded[ok], packed.lengths[ok], ended_arr[ok], states[ok]),
        np.float64,
    )
    count = int(packed.lengths[ok].sum() + ended_arr[ok].sum())
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
    best_prompts: SequencesLike | None = None,
) -> float:
    """search/mode_found: share of prompts whose best (top-ranked) continuation is the exact
    conditional mode argmax_x p*(x | prompt), i.e. the same token ids as
    `oracle.mode(state_after(prompt))[0]` AND ended with EOS (the mode is a complete string).
    Pass one best continuation per prompt, with its prompt in `best_prompts` (None: all
    empty, unconditional decoding); prompts impossible under p* are left out (NaN if none is
    left). This is 1 minus the search-error rate of Stahlberg & Byrne 2019 ("On NMT Search
    Errors and Model Errors: Cat Got Your Tongue?"), with the exact mode from Dijkstra instead
    of their exact depth-first search (ties aside).
    """
    packed = pack(best_sequences, lengths)
    ended_arr = np.asarray(best_ended, bool).reshape(-1)
    states = prompt_states(oracle, best_prompts, packed.num_sequences)
    hits = [
        bool(ended_arr[i])
        and tuple(int(t) for t in packed.sequence(i)) == _strip_eos(oracle.mode(int(q))[0])
        for i, q in enumerate(states)
        if q != IMPOSSIBLE
    ]
    return float(np.mean(hits)) if hits else math.nan


def impossible_prompt_rate(oracle: Any, prompts: SequencesLike) -> float:
    """`oracle/impossible_prompt_rate`: share of the sequences whose prompt has probability 0
    under p* (they are left out of every other oracle value); 0 for no sequences."""
    states = prompt_states(oracle, prompts, len(prompts))
    return float(np.mean(states == IMPOSSIBLE)) if len(prompts) else 0.0


def oracle_summary(
    oracle: Any,
    sequences: SequencesLike,
    ended: Sequence[bool] | np.ndarray,
    *,
    lengths=None,
    prompts: SequencesLike | None = None,
) -> tuple[float, float, float, float]:
    """(`oracle/nll`, `oracle/ppl`, `oracle/entropy`, `oracle/mode_logprob`) of continuations
    of `prompts` (one per sequence; None: unconditional).

    - `oracle/nll`, `oracle/ppl`: `oracle_nll` and its exp.
    - `oracle/entropy`: the exact entropy per token of p*( . | prompt), pooled over the
      sequences' possible prompts like `oracle/nll`: sum_i H(q_i) / sum_i E|x|_{q_i} (EOS
      counted), q_i the state prompt i leads to; without prompts, the DPFSA's entropy rate.
      The floor in expectation of `oracle/nll` for (uncut) samples from p* itself.
    - `oracle/mode_logprob`: mean over the sequences' possible prompts of log p*(mode | prompt),
      the exact conditional mode from Dijkstra (Stahlberg & Byrne 2019's global best).
    `impossible_prompt_rate` and `mode_found_rate` are the other two oracle metrics.
    """
    n = pack(sequences, lengths).num_sequences
    states = prompt_states(oracle, prompts, n)
    used, counts = np.unique(states[states != IMPOSSIBLE], return_counts=True)
    nll = oracle_nll(oracle, sequences, ended, lengths=lengths, prompts=prompts)
    entropy = mode_lp = math.nan
    if used.size:
        entropy = sum(c * oracle.entropy(int(q)) for q, c in zip(used, counts)) / sum(
            c * oracle.expected_length(int(q)) for q, c in zip(used, counts)
        )
        mode_lp = sum(c * oracle.mode(int(q))[1] for q, c in zip(used, counts)) / counts.sum()
    ppl = math.nan if math.isnan(nll) else perplexity_from_nll(nll, 1)["ppl"]
    return nll, ppl, float(entropy), float(mode_lp)
