"""Automaton constraints: a deterministic finite automaton over token ids, run inside the scan.

A `Constraint` is a transition table `table[S, V]` (next state, -1 = token forbidden), the
accepting states `accept[S]` and a start state. Every decoder that takes `constraint=` keeps one
automaton state per row in its loop state (beams gather it with the carry), advances it on every
token (the forced prompt tokens too), and before any processor sets the logits of the tokens
the state forbids to -inf; EOS is allowed exactly in accepting states (the EOS column of
`table` is ignored). Sizes (S, V) are static; the table values, accepting set and start state
are traced, so a new automaton of the same size reuses the compiled program.

Conventions the builders keep (`trim` enforces them): every state that `table` can reach from
the start state can still reach an accepting state, so a masked row always keeps a token (a
live beam or sample never walks into a dead end). The prompts are run through the automaton on
the host before decoding (`check_prompts`): a prompt it rejects is one UserError naming the
prompt and the position.

The mask changes the distribution: the decoders sample from (or search over) the model's
distribution restricted to the allowed tokens and renormalized per step, which is NOT the
model's distribution conditioned on the constraint (that would need the mass of every
constrained continuation). `allowed_mass` gives, per step, the model's (unmodified, t = 1)
probability of the allowed tokens, m_t = sum_{v allowed} softmax(logits)_v; decoders return
log m_t per generated position (`DecodeOutput.constraint_logmass`), from which the metrics
`constraint/mass_removed` and `constraint/step_mass_removed` are computed
(`seqgen.metrics.constraint_metrics`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from seqgen.errors import UserError
from seqgen.tokens import EOS_ID, NUM_SPECIAL, PAD_ID


@struct.dataclass
class Constraint:
    """A DFA over token ids.

    table:  int[S, V]    next state after token v in state s; -1 = forbidden (int16 when S
                         fits, else int32). The EOS column
            is ignored (EOS is allowed iff `accept[s]`).
    accept: bool[S]      accepting states (where EOS may be emitted).
    start:  int32[]      the state before the first token (the first prompt token, or the first
                         generated one for an empty prompt).
    """

    table: jax.Array  # [S, V]
    accept: jax.Array  # [S]
    start: jax.Array  # []

    @property
    def num_states(self) -> int:
        return int(self.table.shape[0])


def make_constraint(table: Any, accept: Any, start: int) -> Constraint:
    """Trim `table` (see `trim`) and wrap it as device arrays."""
    table, accept, start = trim(np.asarray(table), np.asarray(accept, bool), int(start))
    small = table.shape[0] <= np.iinfo(np.int16).max  # halves the table (meter: ~20 MB)
    return Constraint(
        table=jnp.asarray(table, jnp.int16 if small else jnp.int32),
        accept=jnp.asarray(accept, bool),
        start=jnp.asarray(start, jnp.int32),
    )


def trim(table: np.ndarray, accept: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Keep the states reachable from `start` that can reach an accepting state; renumber them.

    Transitions into a removed state become -1 (forbidden). PAD, BOS and UNK are forbidden
    everywhere. Raises UserError when the start state cannot reach acceptance (an automaton
    that accepts nothing).
    """
    table = table.astype(np.int64).copy()
    table[:, :NUM_SPECIAL] = np.where(np.arange(NUM_SPECIAL) == EOS_ID, table[:, :NUM_SPECIAL], -1)
    table[:, EOS_ID] = -1
    s = table.shape[0]
    succ = [np.unique(row[row >= 0]) for row in table]
    reach = np.zeros(s, bool)
    stack = [start]
    reach[start] = True
    while stack:
        for n in succ[stack.pop()]:
            if not reach[n]:
                reach[n] = True
                stack.append(int(n))
    pred: list[list[int]] = [[] for _ in range(s)]
    for i in np.flatnonzero(reach):
        for n in succ[i]:
            pred[int(n)].append(int(i))
    alive = accept & reach
    stack = list(np.flatnonzero(alive))
    while stack:
        for p in pred[stack.pop()]:
            if not alive[p]:
                alive[p] = True
                stack.append(p)
    if not alive[start]:
        raise UserError("the constraint accepts no sequence; allowed: an automaton with a match")
    new_id = np.full(s + 1, -1, np.int64)  # index -1 (forbidden) maps to -1
    new_id[np.flatnonzero(alive)] = np.arange(int(alive.sum()))
    kept = table[alive]
    return new_id[kept].astype(np.int32), accept[alive], int(new_id[start])


def prefix_state(constraint: Constraint, tokens: Any) -> int:
    """Host side: the state after the token ids `tokens` (EOS-free), or -1 if rejected."""
    table = np.asarray(constraint.table)
    state = int(constraint.start)
    for tok in tokens:
        state = int(table[state, int(tok)]) if int(tok) != EOS_ID else -1
        if state < 0:
            return -1
    return state


def check_prompts(constraint: Constraint, prompts: np.ndarray, lengths: np.ndarray) -> None:
    """Run every prompt through the automaton on the host; one UserError for the first reject."""
    for b in range(prompts.shape[0]):
        if prefix_state(constraint, prompts[b, : int(lengths[b])]) < 0:
            n = next(
                i
                for i in range(int(lengths[b]))
                if prefix_state(constraint, prompts[b, : i + 1]) < 0
            )
            raise UserError(
                f"prompt {b} is rejected by the constraint at position {n} (token id "
                f"{int(prompts[b, n])}); allowed: prompts the constraint's automaton accepts as a "
                "prefix"
            )


def check_vocab(constraint: Constraint | None, vocab_size: int) -> None:
    if constraint is not None and constraint.table.shape[1] != vocab_size:
        raise UserError(
            f"the constraint's table has {constraint.table.shape[1]} token columns; "
            f"allowed: vocab_size={vocab_size}"
        )


def allowed(constraint: Constraint, state: jax.Array) -> jax.Array:
    """bool[R, V]: the tokens allowed in each row's state (EOS iff accepting)."""
    s = jnp.maximum(state, 0)  # a frozen row's state is never used; keep the gather in range
    ok = constraint.table[s] >= 0  # [R, V]
    return ok.at[:, EOS_ID].set(constraint.accept[s])


def mask_logits(logits: jax.Array, ok: jax.Array) -> jax.Array:
    """Forbidden tokens get -inf (logits [R, V], ok bool[R, V])."""
    return jnp.where(ok, logits, -jnp.inf)


def allowed_logmass(logits: jax.Array, ok: jax.Array) -> jax.Array:
    """f32[R]: log m_t = log sum_{v allowed} softmax(logits)_v (the model's unmodified logits)."""
    return jax.nn.logsumexp(mask_logits(logits, ok), axis=-1) - jax.nn.logsumexp(logits, axis=-1)


def advance(constraint: Constraint, state: jax.Array, tok: jax.Array) -> jax.Array:
    """int32[R]: the state after `tok` (EOS and PAD leave the state as it is)."""
    nxt = constraint.table[jnp.maximum(state, 0), tok]
    return jnp.where((tok == EOS_ID) | (tok == PAD_ID), state, nxt).astype(jnp.int32)


def accepts(constraint: Constraint, tokens: Any) -> bool:
    """Host side: does the automaton accept the token ids `tokens` (EOS-free) as a whole?"""
    state = prefix_state(constraint, tokens)
    return state >= 0 and bool(np.asarray(constraint.accept)[state])
