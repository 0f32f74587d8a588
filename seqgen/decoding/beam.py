"""Beam search and diverse beam search, with a finished pool, an exact stopping rule and n-best
output, as one `lax.scan` over `max_len` positions.

Beams are flattened into the batch (row = b * K + k) and the carry, any pytree, is reordered
with one gather per step (the t5x / Flax `decode.py` pattern). The loop state holds only fixed
buffers of size O(B * K) (+ the carry); the token history is rebuilt at the end from per-step
back-pointers (token, parent slot, log-prob: [T, B, K] each), so no [B, K, T] array is copied
per step and no [T, V] logits are kept.

Per step, for each beam group (one group for plain beam search), with live scores s_k (sums
of model log-probs) and candidates s_k + log p(v | y_k):
1. take the 2K best candidates (by score, or by the diversity-augmented score);
2. EVERY EOS candidate among them enters the finished pool, whatever its rank (t5x's rule,
   `decoding.beam_search`); the pool keeps the K best by the length-normalized score. (Hugging
   Face and fairseq admit only EOS candidates ranked < K, which discards a finished hypothesis
   that beats the ones finally returned; that rule is what made K = 1 exactly greedy.)
3. the K best non-EOS candidates become the live beams -- there are at least K among 2K because
   each beam has one EOS child, so K beams ending at once never empty the beam.
`min_length` removes the EOS candidates of hypotheses with fewer continuation tokens (the
scores stay the model's log-probs: the search runs over the sequences of length >= min_length).
Output (Hugging Face's finalization): finished hypotheses and the live ones cut at max_len
compete by the same normalized score; the K best, best first (`ended` False for cut ones, whose
L is their number of generated tokens); then empty slots (score -inf, length 0).
Stopping rule (exact: the output equals that of running every step): a group is done when the
bound on its best live hypothesis <= the worst (K-th) finished score. Log-probs are <= 0, so a
live sum s can only decrease; every descendant of a live hypothesis, finished or cut, has at most
L_max = max_len - prompt_length generated tokens, and every normalizer lp(L) (1, L, L^alpha,
((5+L)/6)^alpha, alpha >= 0) is >= 1 and non-decreasing in L, so its final score is at most
s / lp(L_max). Nothing a done group drops could enter its n-best (ties go to what is already
in the pool, and to finished over cut hypotheses, in the pool and in the output alike). Under
`lax.scan`, "stop" means the remaining steps are no-ops for that group (frozen by a done flag);
when every group is done the step is skipped with `lax.cond`.
Beam methods score with the model's unmodified log-probs: temperature and the sampling
processors do not apply (tempered/processed log-probs equal the model's).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from seqgen.decoding import constraint as con
from seqgen.decoding import processors as proc
from seqgen.decoding.common import (
    DecodeOutput,
    StepFn,
    gather_rows,
    get,
    length_norm,
    prepare,
    repeat_rows,
    traced_knobs,
    validate_config,
)
from seqgen.parallel import row_parallel
from seqgen.tokens import BOS_ID, EOS_ID, PAD_ID


def _take(x: jax.Array, idx: jax.Array) -> jax.Array:
    return jnp.take_along_axis(x, idx, axis=1)


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
        tok = jnp.where(active, _take(tok_t, cur), PAD_ID)
        lp = jnp.where(active, _take(lp_t, cur), 0.0)
        return jnp.where(active, _take(par_t, cur), cur), (tok, lp)

    t_max = toks.shape[0]
    _, (tok, lp) = jax.lax.scan(back, slot, (jnp.arange(t_max), toks, parents, lps), reverse=True)
    return jnp.moveaxis(tok, 0, -1), jnp.moveaxis(lp, 0, -1)  # [B, H, T]


@row_parallel(
    static_argnames=(
        "step_fn",
        "max_len",
        "vocab_size",
        "beam_size",
        "num_groups",
        "length_penalty",
    ),
)
def _beam_program(
    params: Any,
    init_carry: Any,
    prompts: jax.Array,  # [B, T]
    prompt_lengths: jax.Array,  # [B]
    knobs: dict[str, jax.Array],
    constraint: con.Constraint | None = None,
    *,
    step_fn: StepFn,
    max_len: int,
    vocab_size: int,
    beam_size: int,
    num_groups: int,
    length_penalty: str,
) -> DecodeOutput:
    b, k, g_num, t_max, v = prompt_lengths.shape[0], beam_size, num_groups, max_len, vocab_size
    kg = k // g_num  # beams per group
    alpha, lam = knobs["alpha"], knobs["diversity_penalty"]
    plen = prompt_lengths
    lmax = t_max - plen  # [B] most generated tokens (incl. EOS) a hypothesis can have
    first_of_group = (jnp.arange(k) % kg) == 0  # each group starts from the root
    ninf = jnp.full((b, k), -jnp.inf, jnp.float32)
    zi = jnp.zeros((b, k), jnp.int32)
    state = {
        "carry": repeat_rows(init_carry, k),  # leaves [B * K, ...]
        "last": jnp.full((b, k), BOS_ID, jnp.int32),  # [B, K] next input token
        "live": jnp.where(first_of_group[None, :], 0.0, ninf),  # [B, K] log-prob sums
        "fin_score": ninf,  # [B, K] normalized score of finished hypotheses (-inf = empty)
        "fin_raw": ninf,  # [B, K] their log-prob sums incl. EOS
        "fin_len": zi,  # [B, K] their length excl. EOS (= the step EOS was emitted)
        "fin_slot": zi,  # [B, K] live slot (entering that step) they extend
        "fin_eos": jnp.zeros((b, k), jnp.float32),  # [B, K] their EOS log-prob
        "done": jnp.zeros((b, g_num), bool),  # [B, G]
        # [B, K] automaton state of each live beam; [B, K] log allowed mass at each finished
        # hypothesis' EOS step
        "cstate": None if constraint is None else jnp.full((b, k), constraint.start, jnp.int32),
        "fin_cm": None if constraint is None else jnp.zeros((b, k), jnp.float32),
    }

    def live_step(state: dict, xs: tuple) -> tuple[dict, dict]:
        t, ptok = xs  # scalar, [B] prompt token at position t
        carry, logits = step_fn(params, state["carry"], state["last"].reshape(-1))
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1).reshape(b, k, v)
        forced = t < plen  # [B]
        forced_lp = jnp.where(jnp.arange(v)[None, :] == ptok[:, None], 0.0, -jnp.inf)  # [B, V]
        generated = jnp.repeat(t - plen, k)  # [B * K] continuation tokens before this one
        open_lp = proc.min_length(logp.reshape(b * k, v), generated, knobs["min_length"])
        cm = jnp.zeros((b, k), jnp.float32)  # [B, K] log allowed mass of each live beam
        if constraint is not None:
            ok = con.allowed(constraint, state["cstate"].reshape(-1))  # [B * K, V]
            open_lp = con.mask_logits(open_lp, ok)
            cm = con.allowed_logmass(logits.astype(jnp.float32), ok).reshape(b, k)
        cand_lp = jnp.where(forced[:, None, None], forced_lp[:, None, :], open_lp.reshape(b, k, v))
        cand_all = state["live"][..., None] + cand_lp  # [B, K, V]
        gen_len = (t - plen + 1)[:, None]  # [B, 1] generated tokens incl. this one
        counts = jnp.zeros((b, v), jnp.float32)  # tokens chosen by earlier groups this step
        names = ("live", "last", "parent", "lp", "fs", "fr", "fl", "fslot", "fe", "fcm")
        new = {n: [] for n in names}
        done = []
        for g in range(g_num):
            sl = slice(g * kg, (g + 1) * kg)
            cand = cand_all[:, sl].reshape(b, kg * v)  # [B, Kg * V]
            sel = cand
            if g_num > 1:  # Hamming diversity: penalize tokens earlier groups chose at step t
                pen = jnp.where(forced[:, None], 0.0, lam * counts)  # [B, V]
                sel = (cand_all[:, sl] - pen[:, None, :]).reshape(b, kg * v)
            top, idx = jax.lax.top_k(sel, 2 * kg)  # [B, 2Kg]
            raw = _take(cand, idx)
            beam, tok = idx // v, (idx % v).astype(jnp.int32)
            is_eos = (tok == EOS_ID) & ~forced[:, None]
            enters = is_eos & jnp.isfinite(raw)  # every EOS candidate among the 2K (t5x)
            score = jnp.where(enters, length_norm(raw, gen_len, length_penalty, alpha), -jnp.inf)
            eos_lp = _take(logp[:, sl, EOS_ID], beam)  # [B, 2Kg]
            pool = jnp.concatenate([state["fin_score"][:, sl], score], axis=1)  # [B, 3Kg]
            fs, pidx = jax.lax.top_k(pool, kg)

            def merge(old: jax.Array, fresh: jax.Array, pidx: jax.Array = pidx) -> jax.Array:
                return _take(jnp.concatenate([old, fresh], axis=1), pidx)

            fr = merge(state["fin_raw"][:, sl], raw)
            fl = merge(state["fin_len"][:, sl], jnp.full((b, 2 * kg), t, jnp.int32))
            fslot = merge(state["fin_slot"][:, sl], beam + g * kg)
            fe = merge(state["fin_eos"][:, sl], eos_lp)
            old_cm = state["fin_cm"] if constraint is not None else jnp.zeros((b, k))
            fcm = merge(old_cm[:, sl], _take(cm[:, sl], beam))
            ltop, lidx = jax.lax.top_k(jnp.where(is_eos, -jnp.inf, top), kg)  # [B, Kg]
            live = jnp.where(jnp.isfinite(ltop), _take(raw, lidx), -jnp.inf)
            parent = _take(beam, lidx) + g * kg  # [B, Kg] global slot
            ntok = _take(tok, lidx)
            lp = _take(logp.reshape(b, k * v), parent * v + ntok)
            lp = jnp.where(forced[:, None], 0.0, lp)
            if g_num > 1:
                chosen = jax.nn.one_hot(ntok, v) * jnp.isfinite(live)[..., None]
                counts = counts + jnp.sum(chosen, axis=1)
            bound = length_norm(jnp.max(live, axis=1), lmax, length_penalty, alpha)  # [B]
            was_done = state["done"][:, g]
            done.append(was_done | (bound <= jnp.min(fs, axis=1)))
            frozen = was_done[:, None]
            keep = lambda old, fresh, frozen=frozen: jnp.where(frozen, old, fresh)  # noqa: E731
            new["live"].append(keep(state["live"][:, sl], live))
            new["last"].append(keep(state["last"][:, sl], ntok))
            new["parent"].append(keep(jnp.arange(g * kg, (g + 1) * kg)[None, :], parent))
            new["lp"].append(keep(0.0, lp))
            new["fs"].append(keep(state["fin_score"][:, sl], fs))
            new["fr"].append(keep(state["fin_raw"][:, sl], fr))
            new["fl"].append(keep(state["fin_len"][:, sl], fl))
            new["fslot"].append(keep(state["fin_slot"][:, sl], fslot))
            new["fe"].append(keep(state["fin_eos"][:, sl], fe))
            new["fcm"].append(keep(old_cm[:, sl], fcm))
        cat = {n: jnp.concatenate(x, axis=1) for n, x in new.items()}  # each [B, K]
        rows = (jnp.arange(b)[:, None] * k + cat["parent"]).reshape(-1)  # [B * K]
        ys = {"tok": cat["last"], "parent": cat["parent"], "lp": cat["lp"]}
        cstate = fin_cm = None
        if constraint is not None:
            frozen = jnp.repeat(state["done"], kg, axis=1)  # [B, K] slots of done groups
            nxt = con.advance(constraint, _take(state["cstate"], cat["parent"]), cat["last"])
            cstate = jnp.where(frozen, state["cstate"], nxt)
            fin_cm = cat["fcm"]
            ys["cm"] = jnp.where(forced[:, None] | frozen, 0.0, _take(cm, cat["parent"]))
        state = {
            "carry": gather_rows(carry, rows),
            "last": cat["last"],
            "live": cat["live"],
            "fin_score": cat["fs"],
            "fin_raw": cat["fr"],
            "fin_len": cat["fl"],
            "fin_slot": cat["fslot"],
            "fin_eos": cat["fe"],
            "done": jnp.stack(done, axis=1),
            "cstate": cstate,
            "fin_cm": fin_cm,
        }
        return state, ys

    def skip_step(state: dict, xs: tuple) -> tuple[dict, dict]:
        ys = {
            "tok": jnp.full((b, k), PAD_ID, jnp.int32),
            "parent": jnp.broadcast_to(jnp.arange(k, dtype=jnp.int32), (b, k)),
            "lp": jnp.zeros((b, k), jnp.float32),
        }
        if constraint is not None:
            ys["cm"] = jnp.zeros((b, k), jnp.float32)
        return state, ys

    def body(state: dict, xs: tuple) -> tuple[dict, dict]:
        return jax.lax.cond(jnp.all(state["done"]), skip_step, live_step, state, xs)

    state, ys = jax.lax.scan(body, state, (jnp.arange(t_max), prompts.T))

    # n-best: each group's Kg best of its finished and cut hypotheses by one normalized score
    # (a done group's live beams cannot beat its pool and are left out, so the stopping rule
    # is exact per group), then all groups' picks best first; empty slots last. top_k puts the
    # lower index first among equal scores: finished (the first K) before cut.
    group_done = jnp.repeat(state["done"], kg, axis=1)  # [B, K]
    live_ok = jnp.isfinite(state["live"]) & ~group_done
    live_score = length_norm(state["live"], lmax[:, None], length_penalty, alpha)
    live_score = jnp.where(live_ok, live_score, -jnp.inf)
    picks, picked = [], []
    for g in range(g_num):
        sl = slice(g * kg, (g + 1) * kg)
        top, idx = jax.lax.top_k(
            jnp.concatenate([state["fin_score"][:, sl], live_score[:, sl]], axis=1), kg
        )  # [B, Kg], index into [fin of g, live of g]
        picks.append(top)
        picked.append(jnp.where(idx < kg, g * kg + idx, k + g * kg + idx - kg))
    best, pos = jax.lax.top_k(jnp.concatenate(picks, axis=1), k)  # [B, K] best first
    order = _take(jnp.concatenate(picked, axis=1), pos)  # [B, K] index into `score`
    real = jnp.isfinite(best)
    ended = real & (order < k)
    length = _take(
        jnp.concatenate([state["fin_len"], jnp.full((b, k), t_max, jnp.int32)], axis=1), order
    )
    length = jnp.where(real, length, 0)
    slot = _take(
        jnp.concatenate([state["fin_slot"], jnp.broadcast_to(jnp.arange(k), (b, k))], axis=1),
        order,
    )
    eos_lp = jnp.where(
        ended, _take(jnp.concatenate([state["fin_eos"], jnp.zeros((b, k))], axis=1), order), 0.0
    )
    tokens, lps = backtrack(ys["tok"], ys["parent"], ys["lp"], slot, length)  # [B, K, T]
    at_eos = ended[..., None] & (jnp.arange(t_max) == length[..., None])
    tokens = jnp.where(at_eos, EOS_ID, tokens).astype(jnp.int32)
    cmass = None
    if constraint is not None:
        _, cmass = backtrack(ys["tok"], ys["parent"], ys["cm"], slot, length)
        fin_cm = jnp.concatenate([state["fin_cm"], jnp.zeros((b, k))], axis=1)
        cmass = jnp.where(at_eos, _take(fin_cm, order)[..., None], cmass)
    return DecodeOutput(
        tokens=tokens,
        lengths=length.astype(jnp.int32),
        prompt_lengths=prompt_lengths,
        ended=ended,
        logprobs=lps,
        tempered_logprobs=lps,
        processed_logprobs=lps,
        eos_logprob=eos_lp,
        eos_tempered_logprob=eos_lp,
        eos_processed_logprob=eos_lp,
        scores=best,
        constraint_logmass=cmass,
    )


def _run_beam(
    name: str,
    step_fn: StepFn,
    params: Any,
    init_carry: Any,
    prompts: Any,
    prompt_lengths: Any,
    *,
    max_len: int,
    vocab_size: int,
    cfg: Any,
    num_groups: int,
    constraint: con.Constraint | None,
) -> DecodeOutput:
    validate_config(cfg, name, vocab_size)
    prep = prepare(
        init_carry,
        prompts,
        prompt_lengths,
        max_len=max_len,
        num_samples=1,
        vocab_size=vocab_size,
        key=None,
        prompt_ids=None,
        constraint=constraint,
    )
    return _beam_program(
        params,
        init_carry,
        prep.prompts,
        prep.prompt_lengths,
        traced_knobs(cfg),
        constraint,
        step_fn=step_fn,
        max_len=max_len,
        vocab_size=vocab_size,
        beam_size=int(get(cfg, "beam_size")),
        num_groups=num_groups,
        length_penalty=str(get(cfg, "length_penalty")),
    )


def beam(
    step_fn: StepFn,
    params: Any,
    init_carry: Any,
    prompts: Any = None,
    prompt_lengths: Any = None,
    *,
    max_len: int,
    vocab_size: int,
    key: Any = None,
    cfg: Any = None,
    num_samples: int = 1,
    prompt_ids: Any = None,
    constraint: con.Constraint | None = None,
) -> DecodeOutput:
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
    """
    del key, num_samples, prompt_ids
    return _run_beam(
        "beam",
        step_fn,
        params,
        init_carry,
        prompts,
        prompt_lengths,
        max_len=max_len,
        vocab_size=vocab_size,
        cfg=cfg,
        num_groups=1,
        constraint=constraint,
    )


def diverse_beam(
    step_fn: StepFn,
    params: Any,
    init_carry: Any,
    prompts: Any = None,
    prompt_lengths: Any = None,
    *,
    max_len: int,
    vocab_size: int,
    key: Any = None,
    cfg: Any = None,
    num_samples: int = 1,
    prompt_ids: Any = None,
    constraint: con.Constraint | None = None,
) -> DecodeOutput:
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
    del key, num_samples, prompt_ids
    return _run_beam(
        "diverse_beam",
        step_fn,
        params,
        init_carry,
        prompts,
        prompt_lengths,
        max_len=max_len,
        vocab_size=vocab_size,
        cfg=cfg,
        num_groups=int(get(cfg, "num_groups")),
        constraint=constraint,
    )
