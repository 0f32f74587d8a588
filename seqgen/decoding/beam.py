"""Beam search and diverse beam search, with a finished pool, an exact stopping rule and n-best
output, as one `lax.scan` over `max_len` positions.

Beams are flattened into the batch (row = b * K + k) and the carry, any pytree, is reordered
with one gather per step (the t5x / Flax `decode.py` pattern). The loop state holds only fixed
buffers of size O(B * K) (+ the carry); the token history is rebuilt at the end from per-step
back-pointers (token, parent slot, log-prob: [T, B, K] each), so no [B, K, T] array is copied
per step and no [T, V] logits are kept.

Per step, the named steps below, for every beam group at once (one group for plain beam search;
K means the beams of a group), with live scores s_k (sums of model log-probs) and candidates
s_k + log p(v | y_k) (`_candidates`):
1. take the 2K best candidates (`_select`: by score, or for diverse beam group after group by
   the diversity-augmented score);
2. EVERY EOS candidate among them enters the finished pool (`_update_finished`), whatever its
   rank (t5x's rule, `decoding.beam_search`); the pool keeps the K best by the length-normalized
   score. (Hugging Face and fairseq admit only EOS candidates ranked < K, which discards a
   finished hypothesis that beats the ones finally returned; that rule is what made K = 1
   exactly greedy.)
3. the K best non-EOS candidates become the live beams (`_update_live`) -- there are at least
   K among 2K because each beam has one EOS child, so K beams ending at once never empty the
   beam.
`min_length` removes the EOS candidates of hypotheses with fewer continuation tokens (the
scores stay the model's log-probs: the search runs over the sequences of length >= min_length).
Output (`_n_best`, Hugging Face's finalization): finished hypotheses and the live ones cut at
max_len compete by the same normalized score; the K best, best first (`ended` False for cut
ones, whose L is their number of generated tokens); then empty slots (score -inf, length 0).
Stopping rule (exact: the output equals that of running every step): a group is done when the
bound on its best live hypothesis <= the worst (K-th) finished score. Log-probs are <= 0, so a
live sum s can only decrease; every descendant of a live hypothesis, finished or cut, has at most
L_max = max_len - prompt_length generated tokens, and every normalizer lp(L) (1, L, L^alpha,
((5+L)/6)^alpha, alpha >= 0) is >= 1 and non-decreasing in L, so its final score is at most
s / lp(L_max). Nothing a done group drops could enter its n-best (ties go to what is already
in the pool, and to finished over cut hypotheses, in the pool and in the output alike). "Stop"
means the remaining steps are no-ops for that group (frozen by a done flag); when every group
is done the remaining steps change nothing (`seqgen.decoding.loop`).
Beam methods score with the model's unmodified log-probs: temperature and the sampling
processors do not apply (tempered/processed log-probs equal the model's).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from seqgen.decoding import constraint as con
from seqgen.decoding import processors as proc
from seqgen.decoding.common import (
    DecodeOutput,
    DecodeRequest,
    Prepared,
    gather_rows,
    get,
    length_norm,
    repeat_rows,
    take_along,
)
from seqgen.decoding.loop import run_loop
from seqgen.decoding.program import ProgramInputs, ProgramOptions
from seqgen.decoding.program import launch as launch_program
from seqgen.parallel import row_parallel
from seqgen.tokens import BOS_ID, EOS_ID, PAD_ID


class Conventions(NamedTuple):
    """Which toolkit's beam-search conventions to follow (static; see `beam`). The defaults are
    seqgen's: they return the best-scoring hypotheses the search found."""

    eos_rule: str = "any"
    finalize: str = "score"
    early_stop: str = "exact"
    force_eos_at_max_len: bool = False


SEQGEN = Conventions()


@struct.dataclass
class Finished:
    """The finished pool of every group (Kg slots per group, K in all; an empty slot has score
    -inf). One field per fact of a finished hypothesis; every field [B, K]."""

    score: jax.Array  # [B, K] f32 length-normalized score
    raw: jax.Array  # [B, K] f32 log-prob sum, EOS included
    length: jax.Array  # [B, K] int32 length excl. EOS (= the step EOS was emitted)
    slot: jax.Array  # [B, K] int32 the live slot (entering that step) it extends
    eos: jax.Array  # [B, K] f32 its EOS log-prob
    cm: jax.Array | None  # [B, K] f32 log allowed mass at its EOS step (constraint only)


@struct.dataclass
class BeamState:
    """The loop state of beam / diverse beam search; row = b * K + k in the carry, slot k of
    prompt b belongs to group k // Kg."""

    carry: Any  # the step function's carry, every leaf [B * K, ...]
    last: jax.Array  # [B, K] int32 the next input token
    live: jax.Array  # [B, K] f32 log-prob sums of the live beams (-inf = empty)
    fin: Finished  # [B, K] each
    done: jax.Array  # [B, G] bool the group's stopping rule has fired
    cstate: jax.Array | None  # [B, K] int32 the automaton's state of each live beam


@struct.dataclass
class Candidates:
    """The 2Kg best candidates of each group, best first by the selection score."""

    top: jax.Array  # [B, G, 2Kg] f32 selection score (the diversity-augmented one)
    raw: jax.Array  # [B, G, 2Kg] f32 log-prob sum of the extended hypothesis
    beam: jax.Array  # [B, G, 2Kg] int32 the live beam it extends, within its group
    tok: jax.Array  # [B, G, 2Kg] int32 the token it appends
    is_eos: jax.Array  # [B, G, 2Kg] bool it appends EOS (not a forced prompt token)


def _top_k(x: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """`lax.top_k` over the last axis of a [B, G, N] array, as one 2-D top-k (the form XLA:CPU
    turns into its partial-sort TopK call); ties go to the lower index."""
    top, idx = jax.lax.top_k(x.reshape(-1, x.shape[-1]), k)
    return top.reshape(*x.shape[:-1], k), idx.reshape(*x.shape[:-1], k)


def backtrack(
    toks: jax.Array,  # [T, B, K] token chosen by each slot at each step
    parents: jax.Array,  # [T, B, K] slot (at step t-1) each slot came from
    lps: jax.Array,  # [T, B, K] log-prob of that token
    slot: jax.Array,  # [B, H] slot at step length-1 where each hypothesis ends
    length: jax.Array,  # [B, H] number of tokens (excl. EOS)
) -> tuple[jax.Array, jax.Array]:
    """Follow back-pointers from each hypothesis' last slot: tokens and log-probs [B, H, T]."""

    def back(cur: jax.Array, y: tuple) -> tuple[jax.Array, tuple]:
        t, tok_t, par_t, lp_t = y
        active = t < length  # [B, H]
        tok = jnp.where(active, take_along(tok_t, cur), PAD_ID)
        lp = jnp.where(active, take_along(lp_t, cur), 0.0)
        return jnp.where(active, take_along(par_t, cur), cur), (tok, lp)

    t_max = toks.shape[0]
    _, (tok, lp) = jax.lax.scan(back, slot, (jnp.arange(t_max), toks, parents, lps), reverse=True)
    return jnp.moveaxis(tok, 0, -1), jnp.moveaxis(lp, 0, -1)  # [B, H, T]


def _candidates(
    logits: jax.Array,  # [B * K, V]
    state: BeamState,
    forced: jax.Array,  # [B] the position is a prompt position
    ptok: jax.Array,  # [B] the prompt token there
    generated: jax.Array,  # [B * K] continuation tokens before this one
    min_len: jax.Array,
    constraint: con.Constraint | None,
    eos_only: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(cand [B, K, V] = live sum + log p(v) of every extension, logp [B, K, V] the model's
    log-probs, cm [B, K] log allowed mass): a forced position allows only the prompt token,
    min-length removes EOS, a constraint the tokens its automaton forbids; where `eos_only`
    (a scalar, `force_eos_at_max_len` at the last position) only EOS, with its model log-prob
    and whatever `min_length` says (the constraint still applies)."""
    b, k = state.last.shape
    v = logits.shape[-1]
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1).reshape(b, k, v)
    forced_lp = jnp.where(jnp.arange(v)[None, :] == ptok[:, None], 0.0, -jnp.inf)  # [B, V]
    base = logp.reshape(b * k, v)
    cm = jnp.zeros((b, k), jnp.float32)
    if constraint is not None:
        ok = con.allowed(constraint, state.cstate.reshape(-1))  # [B * K, V]
        base = con.mask_logits(base, ok)
        cm = con.allowed_logmass(logits.astype(jnp.float32), ok).reshape(b, k)
    open_lp = proc.min_length(base, generated, min_len)
    if eos_only is not None:
        only = jnp.where(jnp.arange(v)[None, :] == EOS_ID, base, -jnp.inf)
        open_lp = jnp.where(eos_only, only, open_lp)
    cand_lp = jnp.where(forced[:, None, None], forced_lp[:, None, :], open_lp.reshape(b, k, v))
    return state.live[..., None] + cand_lp, logp, cm


def _pick_live(c: Candidates, kg: int) -> tuple[jax.Array, jax.Array]:
    """The Kg best non-EOS candidates of each group: (live sums, index into the 2Kg)."""
    ltop, lidx = _top_k(jnp.where(c.is_eos, -jnp.inf, c.top), kg)
    return jnp.where(jnp.isfinite(ltop), take_along(c.raw, lidx), -jnp.inf), lidx


def _select(
    cand: jax.Array,  # [B, G, Kg, V]
    forced: jax.Array,  # [B]
    diversity: jax.Array | None,  # lambda of diverse beam search; None = plain beam search
) -> Candidates:
    """The 2Kg best candidates of each group. Plain: by their log-prob sum, every group at
    once. Diverse (Vijayakumar et al. 2018, Alg. 1, Hamming diversity): group after group, by
    the sum minus lambda * (how many live beams of the earlier groups chose the same token
    at this step); the sums stay the model's."""
    b, g_num, kg, v = cand.shape

    def group(c: jax.Array, sel: jax.Array) -> Candidates:  # c, sel [..., Kg * V]
        top, idx = _top_k(sel, 2 * kg)
        tok = (idx % v).astype(jnp.int32)
        is_eos = (tok == EOS_ID) & ~forced.reshape((b,) + (1,) * (idx.ndim - 1))
        return Candidates(top, take_along(c, idx), idx // v, tok, is_eos)

    flat = cand.reshape(b, g_num, kg * v)
    if diversity is None:
        return group(flat, flat)
    counts = jnp.zeros((b, v), jnp.float32)  # tokens the earlier groups chose at this step
    picks = []
    for g in range(g_num):
        pen = jnp.where(forced[:, None], 0.0, diversity * counts)  # [B, V]
        c = group(flat[:, g], (cand[:, g] - pen[:, None, :]).reshape(b, kg * v))
        live, lidx = _pick_live(c, kg)
        chosen = jax.nn.one_hot(take_along(c.tok, lidx), v) * jnp.isfinite(live)[..., None]
        counts = counts + jnp.sum(chosen, axis=1)
        picks.append(c)
    return jax.tree.map(lambda *x: jnp.stack(x, axis=1), *picks)


def _update_finished(
    fin: Finished,  # [B, G, Kg] each
    c: Candidates,
    logp_eos: jax.Array,  # [B, G, Kg] EOS log-prob of each live beam
    cm: jax.Array | None,  # [B, G, Kg]
    t: jax.Array,
    gen_len: jax.Array,  # [B, 1, 1] generated tokens incl. this one
    length_penalty: str,
    alpha: jax.Array,
    eos_rule: str = "any",
) -> Finished:
    """The EOS candidates enter their group's pool, which keeps the Kg best by normalized score
    (ties: the hypothesis already in the pool). `eos_rule` any: every EOS candidate among the
    2Kg (t5x's rule); top_k: only those ranked < Kg among them (Hugging Face's
    `BeamSearchScorer.process`, fairseq's `eos_mask[:, :beam_size]`)."""
    kg = fin.score.shape[-1]
    enters = c.is_eos & jnp.isfinite(c.raw)
    if eos_rule == "top_k":
        enters = enters & (jnp.arange(2 * kg) < kg)
    score = jnp.where(enters, length_norm(c.raw, gen_len, length_penalty, alpha), -jnp.inf)
    slot = c.beam + (jnp.arange(c.beam.shape[1]) * kg)[None, :, None]  # global slot
    fresh = Finished(
        score=score,
        raw=c.raw,
        length=jnp.full(c.raw.shape, t, jnp.int32),
        slot=slot,
        eos=take_along(logp_eos, c.beam),
        cm=None if cm is None else take_along(cm, c.beam),
    )
    _, pidx = _top_k(jnp.concatenate([fin.score, score], axis=-1), kg)
    merge = lambda old, new: take_along(jnp.concatenate([old, new], axis=-1), pidx)  # noqa: E731
    return jax.tree.map(merge, fin, fresh)


def _update_live(
    c: Candidates, logp: jax.Array, forced: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """The Kg best non-EOS candidates of each group become its live beams: (live sums, global
    parent slot, token, token log-prob; 0 on a forced prompt token), each [B, G, Kg]."""
    b, g_num, kg2 = c.top.shape
    kg, v = kg2 // 2, logp.shape[-1]
    live, lidx = _pick_live(c, kg)
    parent = take_along(c.beam, lidx) + (jnp.arange(g_num) * kg)[None, :, None]
    tok = take_along(c.tok, lidx)
    flat = (parent * v + tok).reshape(b, g_num * kg)
    lp = take_along(logp.reshape(b, -1), flat).reshape(b, g_num, kg)
    return live, parent, tok, jnp.where(forced[:, None, None], 0.0, lp)


def _best_first(
    score: jax.Array, finished: jax.Array, n: int, tier: bool
) -> tuple[jax.Array, jax.Array]:
    """The n best of the last axis, best first: (scores, indices). By score alone (ties: the
    lower index), or with `tier` the finished entries first, each tier by score (a stable sort,
    so ties keep the lower index there too)."""
    if not tier:
        return _top_k(score, n)
    idx = jnp.lexsort((-score, ~finished), axis=-1)[..., :n]
    return take_along(score, idx), idx


def _init_state(
    init_carry: Any, b: int, k: int, g_num: int, constraint: con.Constraint | None
) -> BeamState:
    """Each group's first beam at the root (log-prob 0), the other slots and the pools empty."""
    ninf = jnp.full((b, k), -jnp.inf, jnp.float32)
    zi, zf = jnp.zeros((b, k), jnp.int32), jnp.zeros((b, k), jnp.float32)
    has_cm = constraint is not None
    return BeamState(
        carry=repeat_rows(init_carry, k),
        last=jnp.full((b, k), BOS_ID, jnp.int32),
        live=jnp.where((jnp.arange(k) % (k // g_num) == 0)[None, :], 0.0, ninf),
        fin=Finished(ninf, ninf, zi, zi, zf, zf if has_cm else None),
        done=jnp.zeros((b, g_num), bool),
        cstate=jnp.full((b, k), constraint.start, jnp.int32) if has_cm else None,
    )


def _groups(x: jax.Array, g_num: int) -> jax.Array:
    """[B, K, ...] -> [B, G, Kg, ...]: slot k of a prompt is beam k % Kg of group k // Kg."""
    b, k = x.shape[:2]
    return x.reshape(b, g_num, k // g_num, *x.shape[2:])


def _stopped(
    fin: Finished,  # [B, G, Kg] each, the pools after this step
    live: jax.Array,  # [B, G, Kg] the new live sums
    lmax: jax.Array,  # [B] most generated tokens a hypothesis can have
    length_penalty: str,
    alpha: jax.Array,
    early_stop: str,
) -> jax.Array:
    """[B, G] the group's stopping rule fires: `exact`, no live hypothesis can beat the worst
    of a full pool (the module docstring's bound); `k_finished` (fairseq), the pool is full."""
    worst = jnp.min(fin.score, axis=-1)  # [B, G] -inf until the pool is full
    if early_stop == "k_finished":
        return jnp.isfinite(worst)
    bound = length_norm(jnp.max(live, axis=-1), lmax[:, None], length_penalty, alpha)
    return bound <= worst


def _next_state(
    state: BeamState,
    carry: Any,  # the step function's carry after this step, rows in the old slots' order
    fin: Finished,  # [B, G, Kg] each, the pools before this step
    fresh_fin: Finished,  # ... and after it
    picked: tuple[jax.Array, ...],  # `_update_live`'s (live, parent, tok, lp), [B, G, Kg] each
    stop: jax.Array,  # [B, G] the stopping rule fired at this step
    forced: jax.Array,  # [B]
    cm: jax.Array,  # [B, K] log allowed mass of each live beam
    constraint: con.Constraint | None,
) -> tuple[BeamState, dict[str, jax.Array]]:
    """The state after this step, and its back-pointers ys ({tok, parent, lp[, cm]}, [B, K]):
    a group done before this step keeps everything (its slots point to themselves), the others
    take their new live beams, whose carries are gathered from their parents' rows."""
    b, k = state.last.shape
    g_num = state.done.shape[1]
    live, parent, tok, lp = picked
    done = state.done | stop  # [B, G]
    frozen = state.done[..., None]  # [B, G, 1] a done group keeps everything
    keep = lambda old, new: jnp.where(frozen, old, new).reshape(b, k)  # noqa: E731
    own = _groups(jnp.broadcast_to(jnp.arange(k), (b, k)), g_num)
    parent = keep(own, parent)
    last = keep(_groups(state.last, g_num), tok)
    ys = {"tok": last, "parent": parent, "lp": keep(0.0, lp)}
    cstate = None
    if constraint is not None:
        frozen_k = jnp.repeat(state.done, k // g_num, axis=1)  # [B, K]
        nxt = con.advance(constraint, take_along(state.cstate, parent), last)
        cstate = jnp.where(frozen_k, state.cstate, nxt)
        ys["cm"] = jnp.where(forced[:, None] | frozen_k, 0.0, take_along(cm, parent))
    rows = (jnp.arange(b)[:, None] * k + parent).reshape(-1)  # [B * K]
    new = BeamState(
        carry=gather_rows(carry, rows),
        last=last,
        live=keep(_groups(state.live, g_num), live),
        fin=jax.tree.map(keep, fin, fresh_fin),
        done=done,
        cstate=cstate,
    )
    return new, ys


def _idle_outputs(b: int, k: int, has_cm: bool) -> dict[str, jax.Array]:
    """The back-pointers of a step that changes nothing: every slot points to itself."""
    return {
        "tok": jnp.full((b, k), PAD_ID, jnp.int32),
        "parent": jnp.broadcast_to(jnp.arange(k, dtype=jnp.int32), (b, k)),
        "lp": jnp.zeros((b, k), jnp.float32),
    } | ({"cm": jnp.zeros((b, k), jnp.float32)} if has_cm else {})


@row_parallel
def _beam_program(
    args: ProgramInputs,
    *,
    opts: ProgramOptions,
    beam_size: int,
    num_groups: int,
    length_penalty: str,
    conventions: Conventions = SEQGEN,
) -> DecodeOutput:
    params, init_carry, prompts, prompt_lengths, _, _, knobs, constraint = args
    step_fn, max_len, loop = opts.step_fn, opts.max_len, opts.loop
    b, k, g_num, t_max = prompt_lengths.shape[0], beam_size, num_groups, max_len
    alpha = knobs["alpha"]
    diversity = knobs["diversity_penalty"] if g_num > 1 else None
    plen = prompt_lengths
    lmax = t_max - plen  # [B] most generated tokens (incl. EOS) a hypothesis can have
    groups = functools.partial(_groups, g_num=g_num)  # [B, K, ...] -> [B, G, Kg, ...]
    has_cm = constraint is not None
    state = _init_state(init_carry, b, k, g_num, constraint)

    def step(state: BeamState, xs: tuple) -> tuple[BeamState, dict]:
        t, ptok = xs  # scalar, [B] prompt token at position t
        carry, logits = step_fn(params, state.carry, state.last.reshape(-1))
        forced = t < plen  # [B]
        generated = jnp.repeat(t - plen, k)
        eos_only = (t == t_max - 1) if conventions.force_eos_at_max_len else None
        cand, logp, cm = _candidates(
            logits, state, forced, ptok, generated, knobs["min_length"], constraint, eos_only
        )
        c = _select(groups(cand), forced, diversity)
        gen_len = (t - plen + 1)[:, None, None]
        fin = jax.tree.map(groups, state.fin)
        fresh_fin = _update_finished(
            fin, c, groups(logp[..., EOS_ID]), groups(cm) if has_cm else None,
            t, gen_len, length_penalty, alpha, conventions.eos_rule,
        )  # fmt: skip
        live, parent, tok, lp = _update_live(c, logp, forced)
        stop = _stopped(fresh_fin, live, lmax, length_penalty, alpha, conventions.early_stop)
        return _next_state(
            state, carry, fin, fresh_fin, (live, parent, tok, lp), stop, forced, cm, constraint
        )

    idle = _idle_outputs(b, k, has_cm)
    xs = (jnp.arange(t_max), prompts.T)  # [T], [T, B]
    state, ys = run_loop(step, state, xs, finished=lambda s: jnp.all(s.done), idle=idle, loop=loop)
    return _n_best(
        state, ys, prompt_lengths, t_max, g_num, length_penalty, alpha, conventions.finalize
    )


def _n_best(
    state: BeamState,
    ys: dict,  # [T, B, K] each: tok, parent, lp (and cm)
    prompt_lengths: jax.Array,
    t_max: int,
    g_num: int,
    length_penalty: str,
    alpha: jax.Array,
    finalize: str = "score",
) -> DecodeOutput:
    """Each group's Kg best of its finished and cut hypotheses by one normalized score (a done
    group's live beams cannot beat its pool and are left out, so the stopping rule is exact
    per group), then all groups' picks best first; empty slots last. top_k puts the lower
    index first among equal scores: finished (the first K) before cut. `finalize`
    finished_first (t5x, praxis): every finished hypothesis before every cut one, each tier
    by score (`_best_first`)."""
    b, k = state.live.shape
    kg = k // g_num
    fin = state.fin
    lmax = t_max - prompt_lengths
    live_ok = jnp.isfinite(state.live) & ~jnp.repeat(state.done, kg, axis=1)
    live_score = length_norm(state.live, lmax[:, None], length_penalty, alpha)
    live_score = jnp.where(live_ok, live_score, -jnp.inf)
    groups = lambda x: x.reshape(b, g_num, kg)  # noqa: E731
    tier = finalize == "finished_first"
    both = jnp.concatenate([groups(fin.score), groups(live_score)], axis=-1)  # [B, G, 2Kg]
    first = jnp.arange(2 * kg) < kg  # the finished half
    top, idx = _best_first(both, first & jnp.isfinite(both), kg, tier)
    offset = (jnp.arange(g_num) * kg)[None, :, None]
    picked = jnp.where(idx < kg, offset + idx, k + offset + idx - kg)  # index into [fin, live]
    top, from_fin = top.reshape(b, k), (idx < kg).reshape(b, k)
    best, pos = _best_first(top, from_fin & jnp.isfinite(top), k, tier)  # [B, K] best first
    order = take_along(picked.reshape(b, k), pos)
    real = jnp.isfinite(best)
    ended = real & (order < k)

    def pick(from_fin: jax.Array, from_live: jax.Array) -> jax.Array:
        return take_along(jnp.concatenate([from_fin, from_live], axis=1), order)

    length = jnp.where(real, pick(fin.length, jnp.full((b, k), t_max, jnp.int32)), 0)
    slot = pick(fin.slot, jnp.broadcast_to(jnp.arange(k), (b, k)))
    eos_lp = jnp.where(ended, pick(fin.eos, jnp.zeros((b, k))), 0.0)
    tokens, lps = backtrack(ys["tok"], ys["parent"], ys["lp"], slot, length)  # [B, K, T]
    at_eos = ended[..., None] & (jnp.arange(t_max) == length[..., None])
    tokens = jnp.where(at_eos, EOS_ID, tokens).astype(jnp.int32)
    cmass = None
    if fin.cm is not None:
        _, cmass = backtrack(ys["tok"], ys["parent"], ys["cm"], slot, length)
        cmass = jnp.where(at_eos, pick(fin.cm, jnp.zeros((b, k)))[..., None], cmass)
    return DecodeOutput.of(
        tokens,
        length,
        prompt_lengths,
        ended,
        lps,
        eos_lp,
        scores=best,
        constraint_logmass=cmass,
    )


def launch(req: DecodeRequest, prep: Prepared, *, diverse: bool = False) -> DecodeOutput:
    """Run the beam program for a validated request (`num_groups` groups when `diverse`;
    plain beam ignores the knob, as it ignores every diverse-beam knob)."""
    return launch_program(
        _beam_program,
        req,
        prep,
        keyed=False,
        beam_size=int(get(req.cfg, "beam_size")),
        num_groups=int(get(req.cfg, "num_groups")) if diverse else 1,
        length_penalty=str(get(req.cfg, "length_penalty")),
        conventions=Conventions(
            *(type(d)(get(req.cfg, f)) for f, d in Conventions._field_defaults.items())
        ),
    )


def launch_diverse(req: DecodeRequest, prep: Prepared) -> DecodeOutput:
    """Run the diverse beam program for a validated request."""
    return launch(req, prep, diverse=True)


def beam(req: DecodeRequest) -> DecodeOutput:
    """Beam search with a finished pool and an exact stopping rule (see the module docstring).

    Score of a hypothesis with log-prob sum S (EOS included) and L generated tokens (EOS
    included; a hypothesis cut at max_len has no EOS): `length_penalty` none: S; average: S / L;
    gnmt: S / ((5 + L) / 6)^alpha (Wu et al. 2016, eq. 14); power: S / L^alpha (fairseq's
    `--lenpen`). Returns the K = `beam_size` best, finished and cut alike, best first.
    K = 1 follows greedy's path (its live beam is the best non-EOS child) but, by t5x's rule,
    also keeps an EOS ending that ranked second: with `length_penalty=none` it returns greedy's
    sequence or an EOS-ended prefix of it that scores higher (with a normalizer it may also go
    on past greedy's EOS). EOS is forbidden before `min_length` continuation tokens.
    Deterministic: `key`, `num_samples` and `prompt_ids` are ignored.

    A toolkit's conventions instead of seqgen's (static knobs; `Conventions`): `eos_rule=top_k`
    admits an EOS candidate only when it ranks < K among the 2K (Hugging Face, fairseq);
    `finalize=finished_first` returns every finished hypothesis before every cut one (t5x,
    praxis); `early_stop=k_finished` stops a row once K hypotheses have finished (fairseq,
    Hugging Face's `early_stopping=True`); `force_eos_at_max_len` allows only EOS at the last
    position (fairseq), so every hypothesis ends.
    """
    from seqgen.decoding.registry import run

    return run("beam", req)


def diverse_beam(req: DecodeRequest) -> DecodeOutput:
    """Diverse beam search (Vijayakumar et al. 2018, "Diverse beam search", Alg. 1) with
    G = `num_groups` groups of K / G beams and Hamming diversity with strength
    lambda = `diversity_penalty`.

    At each step the groups are expanded in order g = 1..G; group g selects its beams by
    log p(y_[t]) - lambda * sum_{h < g} #{beams of group h whose token at step t is y_t}, i.e.
    the paper's Hamming diversity term for the current time step only. As in the paper, the
    penalty steers selection but is not added to the stored sequence log-probs, which are what
    the finished pools rank by (Hugging Face instead accumulates the penalty into the scores).
    Each group is a beam search of its own (finished pool, stopping rule, finalization, as
    `beam`); the output is every group's K / G best, all sorted best first. G = 1 is `beam`.
    """
    from seqgen.decoding.registry import run

    return run("diverse_beam", req)
