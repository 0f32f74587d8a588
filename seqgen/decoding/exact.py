"""Exact MAP decoding: best-first branch-and-bound search for argmax_y log p(y | x).

Stahlberg & Byrne 2019 ("On NMT search errors and model errors: Cat got your tongue?",
EMNLP) find the exact mode of an NMT model with depth-first search that prunes every prefix
scoring below the best complete hypothesis found so far (initialised with the beam search
result). It is exact because log-probabilities are <= 0: a prefix's log-prob bounds the
log-prob of every extension. Here the same bound drives a batched best-first search:

- y ranges over the EOS-terminated continuations of the prompt with prompt + continuation
  <= max_len - 1 tokens (EOS at position <= max_len - 1, as in every other decoder's output);
- the incumbent starts as the best finished hypothesis of beam search with `beam_size` and no
  length penalty, and is replaced by a complete hypothesis only if it scores strictly higher;
- each iteration takes the `expansions_per_step` best unexpanded prefixes of every row (top-k
  over the bounds of the frontier) that still beat the incumbent, feeds them through the step
  function in one batched call, stores their carries in a fixed pool of slots and scores their
  EOS child at once (a complete hypothesis);
- a row stops when no frontier prefix beats the incumbent (then its result is *proven* the
  mode) or after `max_expansions` expansions (then it is the best found: >= beam's best).

Fixed device buffers, per row b and slot s < S = 1 + max_expansions + expansions_per_step:
the carry (every leaf [B * S, ...]), the log-prob sum of the prefix, its position (prompt +
generated tokens), parent slot, last token and its log-prob, and the children's log-probs
sorted descending ([B, S, V], EOS and tokens past the length limit removed) with a pointer to
the next unexpanded child: the frontier of slot s is a sorted list, so the K best frontier
prefixes are among the first K unexpanded children of each slot. The loop is a
`lax.while_loop` (its trip count is data dependent; every shape is static) in one `jax.jit`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from seqgen.decoding.beam import beam
from seqgen.decoding.common import (
    DecodeOutput,
    DecodeRequest,
    Prepared,
    StepFn,
    get,
)
from seqgen.tokens import BOS_ID, EOS_ID, PAD_ID


@struct.dataclass
class ExactState:
    """The search's loop state: a pool of S slots per row b (slot 0 is the root: the prompt);
    each slot holds a prefix, the carry after it and its sorted children (the frontier)."""

    carry: Any  # every leaf [B * S, ...] the step function's carry after each slot's prefix
    score: jax.Array  # [B, S] f32 log-prob of each slot's prefix (-inf: empty slot)
    pos: jax.Array  # [B, S] int32 its length (prompt + generated tokens)
    parent: jax.Array  # [B, S] int32 the slot it extends
    tok: jax.Array  # [B, S] int32 its last token
    lp: jax.Array  # [B, S] f32 that token's log-prob
    slp: jax.Array  # [B, S, V] f32 its children's log-probs, sorted descending (-inf: none)
    stok: jax.Array  # [B, S, V] int32 the children's tokens in that order
    ptr: jax.Array  # [B, S] int32 the next unexpanded child
    used: jax.Array  # [B] int32 slots in use
    best: jax.Array  # [B] f32 the incumbent's log-prob (EOS included)
    best_slot: jax.Array  # [B] int32 the slot it ends at with EOS (-1: beam's, not found)
    best_eos: jax.Array  # [B] f32 its EOS log-prob
    expansions: jax.Array  # [B] int32 step-function calls spent
    done: jax.Array  # [B] bool the row stopped
    iters: jax.Array  # int32 loop iterations


def pool_size(max_expansions: int, per_step: int) -> int:
    """S, the pool's slots per row: the root, one per expansion, and one batch of headroom."""
    return 1 + max_expansions + per_step


# Per slot, besides its carry: the sorted children (f32 log-prob and int32 token per vocabulary
# entry) and the [B, S] fields score, pos, parent, tok, lp, ptr (4 bytes each).
_CHILD_BYTES, _SLOT_FIELD_BYTES = 4 + 4, 6 * 4


def state_bytes(get_: Callable[[str], Any], carry_row_bytes: int, rows: int, vocab: int) -> int:
    """A lower estimate of the search's device memory for `rows` prompts per call: S slots per
    prompt (`pool_size`), each with a carry (`carry_row_bytes`; a Transformer's KV cache grows
    with max_len), its children sorted ([V] f32 and int32) and its [B, S] fields."""
    slots = pool_size(int(get_("max_expansions")), int(get_("expansions_per_step")))
    return rows * slots * (carry_row_bytes + _CHILD_BYTES * vocab + _SLOT_FIELD_BYTES)


def _rows(b: int, s: int, idx: jax.Array) -> jax.Array:
    """Flat pool rows b * S + idx for idx [B, K]."""
    return (jnp.arange(b)[:, None] * s + idx).reshape(-1)


def _prime(
    step_fn: StepFn,
    params: Any,
    init_carry: Any,
    prompts: jax.Array,  # [B, T]
    plen: jax.Array,  # [B]
    v: int,
) -> tuple[Any, jax.Array]:
    """Feed BOS and the prompt: the root's carry and its children's log-probs [B, V] (the
    first continuation tokens)."""
    b, t_max = prompts.shape
    feed = jnp.concatenate([jnp.full((b, 1), BOS_ID, jnp.int32), prompts], axis=1)  # [B, T+1]

    def prime(state: tuple, xs: tuple) -> tuple[tuple, None]:
        carry, logp = state
        t, tok = xs
        new_carry, logits = step_fn(params, carry, tok)
        active = t <= plen  # [B]
        carry = jax.tree.map(
            lambda n, o: jnp.where(active.reshape((-1,) + (1,) * (n.ndim - 1)), n, o),
            new_carry,
            carry,
        )
        lp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        return (carry, jnp.where((t == plen)[:, None], lp, logp)), None

    (root_carry, root_logp), _ = jax.lax.scan(
        prime,
        (init_carry, jnp.zeros((b, v), jnp.float32)),
        (jnp.arange(t_max + 1), feed.T),
    )
    return root_carry, root_logp


def _outputs(
    state: ExactState, proven: jax.Array, init: dict, prompts: jax.Array, prompt_lengths: jax.Array
) -> DecodeOutput:
    """Follow parent pointers from the best slot (or keep beam's best when search found none)."""
    b, t_max = prompts.shape
    plen = prompt_lengths
    found = state.best_slot >= 0  # [B]
    cur0 = jnp.maximum(state.best_slot, 0)
    length = jnp.where(found, state.pos[jnp.arange(b), cur0], init["length"])

    def back(cur: jax.Array, _: None) -> tuple[jax.Array, tuple]:
        p = state.pos[jnp.arange(b), cur]
        live = p > plen  # a generated token (slot 0 is the root at position plen)
        return jnp.where(live, state.parent[jnp.arange(b), cur], cur), (
            jnp.where(live, p - 1, t_max),
            state.tok[jnp.arange(b), cur],
            state.lp[jnp.arange(b), cur],
        )

    _, (at, toks, lps) = jax.lax.scan(back, cur0, None, length=t_max)  # [T, B] each
    rows = jnp.broadcast_to(jnp.arange(b), at.shape)
    prompt_part = jnp.where(jnp.arange(t_max) < plen[:, None], prompts, PAD_ID)
    s_tokens = prompt_part.at[rows, at].set(toks, mode="drop")
    s_lps = jnp.zeros((b, t_max), jnp.float32).at[rows, at].set(lps, mode="drop")
    ended = jnp.where(found, True, init["ended"])
    s_tokens = jnp.where(jnp.arange(t_max) == length[:, None], EOS_ID, s_tokens)
    tokens = jnp.where(found[:, None], s_tokens, init["tokens"]).astype(jnp.int32)
    lps_out = jnp.where(found[:, None], s_lps, init["logprobs"])
    eos_lp = jnp.where(found, state.best_eos, init["eos_logprob"])
    score = jnp.where(found, state.best, init["raw_score"])
    one = lambda x: x[:, None]  # noqa: E731  [B] -> [B, 1]
    return DecodeOutput.of(
        tokens[:, None],
        one(length),
        prompt_lengths,
        one(ended),
        lps_out[:, None],
        one(eos_lp),
        scores=one(score),
        proven=proven,
        expansions=state.expansions,
    )


def _children(logp: jax.Array, score: jax.Array, pos: jax.Array, t_max: int) -> tuple:
    """Sorted non-EOS children of new slots and their EOS scores. logp [B, K, V]."""
    v = logp.shape[-1]
    extendable = (pos <= t_max - 2)[..., None]  # a non-EOS child must still fit its EOS
    masked = jnp.where(extendable & (jnp.arange(v) != EOS_ID) & ~jnp.isnan(logp), logp, -jnp.inf)
    slp, stok = jax.lax.top_k(masked, v)  # [B, K, V] descending
    eos = jnp.where(pos <= t_max - 1, score + logp[..., EOS_ID], -jnp.inf)  # EOS must fit too
    return slp, stok.astype(jnp.int32), eos


def _expand(
    st: ExactState, params: Any, *, step_fn: StepFn, t_max: int, max_expansions: int, k: int
) -> ExactState:
    """One iteration: the k best unexpanded frontier prefixes of each row that still beat the
    incumbent go through the step function in one call, into new slots of the pool; their EOS
    children are complete hypotheses that may replace the incumbent."""
    b, s_num, v = st.slp.shape
    ninf = -jnp.inf
    bi = jnp.arange(b)[:, None]
    j = jnp.arange(k)
    idx = st.ptr[..., None] + j  # [B, S, K]
    vals = jnp.take_along_axis(st.slp, jnp.minimum(idx, v - 1), axis=-1)
    cand = jnp.where(idx < v, st.score[..., None] + vals, ninf).reshape(b, s_num * k)
    top, flat = jax.lax.top_k(cand, k)  # [B, K] best first
    allowance = jnp.minimum(k, max_expansions - st.expansions)  # [B]
    sel = (top > st.best[:, None]) & (j[None, :] < allowance[:, None]) & ~st.done[:, None]
    parent = flat // k  # [B, K]
    rank = st.ptr[bi, parent] + flat % k
    tok = st.stok[bi, parent, jnp.minimum(rank, v - 1)]
    lp = st.slp[bi, parent, jnp.minimum(rank, v - 1)]
    ptr = st.ptr.at[bi, parent].add(sel.astype(jnp.int32))
    carry_in = jax.tree.map(lambda x: x[_rows(b, s_num, parent)], st.carry)
    carry_out, logits = step_fn(params, carry_in, tok.reshape(-1))
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1).reshape(b, k, v)
    pos = st.pos[bi, parent] + 1
    slp, stok, eos_score = _children(logp, top, pos, t_max)
    n_sel = jnp.sum(sel, axis=1).astype(jnp.int32)  # sel is a prefix of the K picks
    slot = jnp.where(sel, st.used[:, None] + j, s_num)  # s_num: out of range, dropped
    flat_slot = jnp.where(sel, _rows(b, s_num, slot).reshape(b, k), b * s_num).reshape(-1)
    put = lambda old, new: old.at[bi, slot].set(new, mode="drop")  # noqa: E731
    eos_score = jnp.where(sel, eos_score, ninf)
    e_best, e_arg = jnp.max(eos_score, axis=1), jnp.argmax(eos_score, axis=1)
    better = e_best > st.best
    return ExactState(
        carry=jax.tree.map(
            lambda old, new: old.at[flat_slot].set(new, mode="drop"), st.carry, carry_out
        ),
        score=put(st.score, top),
        pos=put(st.pos, pos),
        parent=put(st.parent, parent),
        tok=put(st.tok, tok),
        lp=put(st.lp, lp),
        slp=put(st.slp, slp),
        stok=put(st.stok, stok),
        ptr=ptr,
        used=st.used + n_sel,
        best=jnp.where(better, e_best, st.best),
        best_slot=jnp.where(better, st.used + e_arg, st.best_slot),
        best_eos=jnp.where(better, logp[jnp.arange(b), e_arg, EOS_ID], st.best_eos),
        expansions=st.expansions + n_sel,
        done=st.done,
        iters=st.iters + 1,
    )


@partial(
    jax.jit,
    static_argnames=("step_fn", "max_len", "vocab_size", "max_expansions", "per_step"),
)
def _exact_program(
    params: Any,
    init_carry: Any,
    prompts: jax.Array,  # [B, T]
    prompt_lengths: jax.Array,  # [B]
    init: dict[str, jax.Array],  # beam's best: score [B] (-inf if none), tokens/lps [B, T], ...
    *,
    step_fn: StepFn,
    max_len: int,
    vocab_size: int,
    max_expansions: int,
    per_step: int,
) -> DecodeOutput:
    s_num = pool_size(max_expansions, per_step)
    b, t_max, v, k = prompt_lengths.shape[0], max_len, vocab_size, per_step
    plen = prompt_lengths
    ninf = -jnp.inf

    root_carry, root_logp = _prime(step_fn, params, init_carry, prompts, plen, v)

    slp0, stok0, eos0 = _children(root_logp[:, None], jnp.zeros((b, 1)), plen[:, None], t_max)
    pool_carry = jax.tree.map(
        lambda x: jnp.zeros((b * s_num,) + x.shape[1:], x.dtype).at[jnp.arange(b) * s_num].set(x),
        root_carry,
    )
    zf = jnp.zeros((b, s_num), jnp.float32)
    zi = jnp.zeros((b, s_num), jnp.int32)
    root_better = eos0[:, 0] > init["score"]
    state = ExactState(
        carry=pool_carry,
        score=jnp.full((b, s_num), ninf).at[:, 0].set(0.0),
        pos=zi.at[:, 0].set(plen),
        parent=zi,
        tok=zi,
        lp=zf,
        slp=jnp.full((b, s_num, v), ninf).at[:, 0].set(slp0[:, 0]),
        stok=jnp.zeros((b, s_num, v), jnp.int32).at[:, 0].set(stok0[:, 0]),
        ptr=zi,
        used=jnp.ones((b,), jnp.int32),
        best=jnp.where(root_better, eos0[:, 0], init["score"]),
        best_slot=jnp.where(root_better, 0, -1),
        best_eos=jnp.where(root_better, root_logp[:, EOS_ID], 0.0),
        expansions=jnp.zeros((b,), jnp.int32),
        done=jnp.zeros((b,), bool),
        iters=jnp.int32(0),
    )

    def frontier_max(st: ExactState) -> jax.Array:
        head = jnp.take_along_axis(st.slp, jnp.minimum(st.ptr, v - 1)[..., None], -1)[..., 0]
        head = jnp.where(st.ptr < v, st.score + head, ninf)  # [B, S]
        return jnp.max(head, axis=1)

    def is_done(st: ExactState) -> jax.Array:
        return ~(frontier_max(st) > st.best) | (st.expansions >= max_expansions)

    def step(st: ExactState) -> ExactState:
        st = _expand(st, params, step_fn=step_fn, t_max=t_max, max_expansions=max_expansions, k=k)
        return st.replace(done=st.done | is_done(st))

    state = state.replace(done=is_done(state))
    state = jax.lax.while_loop(
        lambda st: ~jnp.all(st.done) & (st.iters <= max_expansions), step, state
    )
    proven = ~(frontier_max(state) > state.best)

    return _outputs(state, proven, init, prompts, prompt_lengths)


def exact(req: DecodeRequest) -> DecodeOutput:
    """Exact MAP search (Stahlberg & Byrne 2019; see the module docstring): for each prompt x,
    y* = argmax_y log p(y | x) over EOS-terminated continuations within `max_len`, by
    best-first branch and bound from beam search's best (`beam_size`, no length penalty).

    Returns N = 1 row per prompt with scores = log p(y* | x) (EOS included), plus
    `proven` bool[B] (no unexplored prefix can beat it: y* is the mode) and `expansions` int[B]
    (step-function calls spent; at most `max_expansions`). An unproven row is the best
    complete hypothesis found, never worse than beam's. Deterministic: `key`, `num_samples`
    and `prompt_ids` are ignored. Static: `max_expansions`, `expansions_per_step`, `max_len`.
    """
    from seqgen.decoding.registry import run

    return run("exact", req)


def launch(req: DecodeRequest, prep: Prepared) -> DecodeOutput:
    """Run the search for a validated request: beam's best first, then branch and bound."""
    bcfg = {"name": "beam", "beam_size": int(get(req.cfg, "beam_size")), "length_penalty": "none"}
    start = beam(
        dataclasses.replace(req, prompts=prep.prompts, prompt_lengths=prep.prompt_lengths, cfg=bcfg)
    )
    raw = jnp.sum(start.logprobs[:, 0], axis=-1) + start.eos_logprob[:, 0]
    init = {
        "score": jnp.where(start.ended[:, 0], raw, -jnp.inf),
        "raw_score": raw,
        "tokens": start.tokens[:, 0],
        "logprobs": start.logprobs[:, 0],
        "eos_logprob": start.eos_logprob[:, 0],
        "length": start.lengths[:, 0],
        "ended": start.ended[:, 0],
    }
    return _exact_program(
        req.params,
        req.init_carry,
        prep.prompts,
        prep.prompt_lengths,
        init,
        step_fn=req.step_fn,
        max_len=req.max_len,
        vocab_size=req.vocab_size,
        max_expansions=int(get(req.cfg, "max_expansions")),
        per_step=int(get(req.cfg, "expansions_per_step")),
    )
