"""Forced words: lexically constrained beam search (`decoder=beam decoder.force=[...]`).

Every returned hypothesis contains every forced phrase: grid beam search (Hokamp & Liu 2017,
"Lexically constrained decoding for sequence generation using grid beam search") with dynamic
beam allocation (Post & Vilar 2018, "Fast lexically constrained decoding with dynamic beam
allocation for neural machine translation"), as in fairseq's `LexicallyConstrainedBeamSearch`
(with the vectorized bookkeeping of Hu et al. 2019), Sockeye's `lexical_constraints` and Hugging
Face's `force_words_ids` (`PhrasalConstraint`, `DisjunctiveConstraint`).

The definition implemented, exactly:
- `force` is a list of C sets; a set is one phrase (a text, a token id or a list of ids) or a
  disjunctive set (a list of phrases: any one of them will do). A hypothesis *meets* a set when
  one of its phrases occurs contiguously in the continuation (the prompt does not count; EOS
  is no token of it). Phrases may overlap (`ab` and `bc` are both met by `abc`).
- State per hypothesis, fixed size: for each phrase p the length of the longest suffix of the
  continuation that is a prefix of p (the Knuth-Morris-Pratt automaton, so a failed partial
  match falls back to the longest still-open prefix instead of 0: `aab` is found in `aaab`,
  which a matcher that restarts from 0 on a mismatch misses), and per set a met bit.
- Bank (Post & Vilar's "number of constraint tokens met") of a hypothesis:
  sum over sets of (W_s if met, else the longest open prefix of its phrases), W_s the longest
  phrase of set s; banks 0 .. sum W_s, the top bank is "every set met".
- Candidates per step (Post & Vilar's): the 2K best extensions of the beam (as plain
  beam), every token that extends an open prefix of a phrase of an unmet set, and each
  hypothesis' best token.
- Dynamic beam allocation: the candidates, best first by log-prob within each bank, are taken
  round robin over the banks, highest bank first (the top bank's best, the next bank's best,
  ..., then each bank's second best, ...), until K are live: a bank without enough candidates
  leaves its slots to the others (fairseq's `LexicallyConstrainedBeamSearch` stripes the beam
  across its banks the same way, after Hu et al. 2019).
- Finishing: EOS is allowed only to a hypothesis that meets every set; its EOS extensions enter
  the finished pool as in plain beam (t5x's rule among the 2K best, `decoding.beam`); a
  hypothesis cut at max_len is returned only when it meets every set. Scores, length penalty,
  the toolkit conventions, the exact stopping rule and the n-best output are plain beam's
  (the bound on a live hypothesis' descendants holds whatever the constraints).
With no set (C = 0) there is one bank and the candidates are a superset of the 2K whose best K
non-EOS plain beam keeps: the program is plain beam search, bit for bit (tests). A prompt for
which no hypothesis meets every set within max_len gets empty rows (score -inf, length 0).

Why a beam option, not a decoder row of its own: a forced beam has every fact of `beam` (its
knobs, conventions, score unit, n-best rows, label), so the `beam` row reads the `force` knob and
its program is `launch` below, which runs plain beam's program when `force` is empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from seqgen.decoding import steering
from seqgen.decoding.beam import (
    BeamState,
    Conventions,
    Finished,
    _candidates,
    _init_state,
    _n_best,
    _select,
    _top_k,
    _update_finished,
)
from seqgen.decoding.beam import launch as launch_beam
from seqgen.decoding.common import (
    DecodeOutput,
    DecodeRequest,
    Prepared,
    gather_rows,
    get,
    length_norm,
    take_along,
)
from seqgen.decoding.loop import run_loop
from seqgen.decoding.program import ProgramInputs, ProgramOptions
from seqgen.decoding.program import launch as launch_program
from seqgen.errors import UserError
from seqgen.parallel import row_parallel
from seqgen.tokens import EOS_ID, PAD_ID

Ids = tuple[int, ...]
Force = tuple[tuple[Ids, ...], ...]  # sets of phrases (a set of one: a plain phrase)


# ---------------------------------------------------------------- the knob's value


def is_set(entry: Any) -> bool:
    """A disjunctive set: a list with a text or a list among its elements (`["ab", "ba"]`,
    `[[5, 6], [7]]`); a text, an id or a list of ids is one phrase."""
    seq = isinstance(entry, Sequence | np.ndarray) and not isinstance(entry, str)
    return seq and any(not steering._is_int(x) for x in entry)


def check_value(value: Any, where: str, vocab_size: int | None) -> None:
    """`decoder.force`: a list of phrases and disjunctive sets (texts or token ids < V), one
    `UserError` line naming the entry."""
    key = f"{where}.force"
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise UserError(f"{key}={value!r}; allowed: a list of phrases and sets of phrases")
    for entry in value:
        phrases = list(entry) if is_set(entry) else [entry]
        for p in phrases:
            steering._entry(p, key, vocab_size)


def resolve(value: Any, ids: Any) -> list:
    """`value` with every text phrase made token ids by `ids(text)` (`steering.resolve`)."""
    return [[ids(p) for p in e] if is_set(e) else ids(e) for e in value]


def freeze(value: Any) -> Force:
    """The hashable form a program keys on: each set's distinct phrases as sorted id tuples;
    texts refused (`decode()` takes ids)."""
    sets = [[steering._ids(p, "force") for p in (e if is_set(e) else [e])] for e in value]
    return tuple(tuple(sorted(set(s))) for s in sets)


def _shown(entry: Any) -> str:
    return repr(entry if isinstance(entry, str) else list(entry))


def check_fits(value: Any, budget: int, why: str, shown: Any = None) -> None:
    """Refuse a set none of whose phrases fits in `budget` continuation tokens, naming it
    (`shown`: the entries as the user wrote them, texts included; `why`: where the budget
    comes from)."""
    shown = value if shown is None else shown
    for entry, orig in zip(value, shown, strict=True):
        phrases = entry if is_set(entry) else [entry]
        shortest = min(1 if steering._is_int(p) else len(p) for p in phrases)
        if shortest > budget:
            raise UserError(
                f"decoder.force: {_shown(orig)} is {shortest} tokens, more than the {budget} "
                f"a continuation may have ({why}); allowed: phrases of at most {budget} tokens"
            )


def check_config(dec: Any, resolved: Any, max_len: int) -> None:
    """Before any work (`preflight`): every set of `dec.force` (as ids in `resolved`, the
    config after `steering.resolve`) fits in `decode.max_len`."""
    value = get(resolved, "force")
    if value:
        check_fits(value, max_len, f"decode.max_len={max_len}", shown=get(dec, "force"))


# ---------------------------------------------------------------- the automaton


def _kmp_tables(force: Force, v: int) -> dict[str, np.ndarray]:
    """The phrases' KMP automata and facts, host-side constants: delta [P, M+1, V] next
    matched-prefix length, nxt [P, M+1] the token that extends prefix j (-1 past the end),
    plen [P], member [P, S] phrase p belongs to set s, width [S] the set's bank width."""
    phrases = [p for s in force for p in s]
    m = max((len(p) for p in phrases), default=0)
    delta = np.zeros((len(phrases), m + 1, v), np.int32)
    nxt = np.full((len(phrases), m + 1), -1, np.int32)
    for i, p in enumerate(phrases):
        nxt[i, : len(p)] = p
        for j in range(len(p) + 1):
            for a in set(p):  # any other token matches no prefix: 0
                s = (*p[:j], a)
                delta[i, j, a] = max(
                    n for n in range(min(len(s), len(p)) + 1) if s[len(s) - n :] == p[:n]
                )
    member = np.zeros((len(phrases), len(force)), bool)
    member[np.arange(len(phrases)), [i for i, s in enumerate(force) for _ in s]] = True
    width = np.array([max(len(p) for p in s) for s in force], np.int32)
    return {
        "delta": delta,
        "nxt": nxt,
        "plen": np.array([len(p) for p in phrases], np.int32),
        "member": member,
        "width": width,
    }


def _extend(
    tabs: dict[str, np.ndarray], prog: jax.Array, met: jax.Array, forced: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The constraint state after each token v: (prog [B, K, P, V], met [B, K, S, V],
    bank [B, K, V]); a prompt position (`forced` [B]) changes nothing."""
    p_num = tabs["plen"].shape[0]
    nprog = jnp.asarray(tabs["delta"])[jnp.arange(p_num), prog]  # [B, K, P, V]
    nprog = jnp.where(forced[:, None, None, None], prog[..., None], nprog)
    member = jnp.asarray(tabs["member"])  # [P, S]
    complete = (nprog == jnp.asarray(tabs["plen"])[:, None]).astype(jnp.float32)
    nmet = met[..., None] | (jnp.einsum("bkpv,ps->bksv", complete, member) > 0)
    open_ = jnp.where(member[None, None, :, :, None], nprog[:, :, :, None], 0)  # [B, K, P, S, V]
    open_ = jnp.max(open_, axis=2, initial=0)
    bank = jnp.sum(jnp.where(nmet, jnp.asarray(tabs["width"])[:, None], open_), axis=2)
    return nprog, nmet, bank


def _advancing(tabs: dict[str, np.ndarray], prog: jax.Array, met: jax.Array, v: int) -> jax.Array:
    """[B, K, V]: the tokens that extend an open prefix of a phrase of an unmet set."""
    p_num = tabs["plen"].shape[0]
    tok = jnp.asarray(tabs["nxt"])[jnp.arange(p_num), prog]  # [B, K, P]
    unmet = ~jnp.any(met[:, :, None, :] & jnp.asarray(tabs["member"]), axis=-1)  # [B, K, P]
    return jnp.any(jax.nn.one_hot(tok, v, dtype=bool) & unmet[..., None], axis=2)


# ---------------------------------------------------------------- the search


@struct.dataclass
class ForcedState:
    """Plain beam's loop state (G = 1) and each live beam's constraint state."""

    carry: Any  # the step function's carry, every leaf [B * K, ...]
    last: jax.Array  # [B, K] int32 the next input token
    live: jax.Array  # [B, K] f32 log-prob sums (-inf = empty)
    fin: Finished  # [B, K] each
    done: jax.Array  # [B, 1] bool the stopping rule has fired
    prog: jax.Array  # [B, K, P] int32 longest open prefix of each phrase
    met: jax.Array  # [B, K, S] bool each set met


def _allocate(
    cand: jax.Array,  # [B, K, V] EOS only where every set is met
    top2k: Any,  # `Candidates` [B, 1, 2K]
    bank: jax.Array,  # [B, K, V]
    advancing: jax.Array,  # [B, K, V]
    num_banks: int,
    pool: int,
) -> tuple[jax.Array, jax.Array]:
    """Dynamic beam allocation: the K live beams (sums [B, K], flat index k * V + v [B, K]),
    taken from the candidates (the 2K best, the advancing tokens, each beam's best; at most
    `pool`) round robin over the banks, highest first, each bank best first."""
    b, k, v = cand.shape
    flat = (top2k.beam * v + top2k.tok).reshape(b, -1)
    in_top = jnp.zeros((b, k * v), bool).at[jnp.arange(b)[:, None], flat].set(True)
    best = jax.nn.one_hot(jnp.argmax(cand.at[..., EOS_ID].set(-jnp.inf), -1), v, dtype=bool)
    ok = (in_top.reshape(b, k, v) | advancing | best) & (jnp.arange(v) != EOS_ID)
    score, idx = _top_k(jnp.where(ok, cand, -jnp.inf).reshape(b, k * v), min(k * v, pool))
    bank_s = take_along(bank.reshape(b, -1), idx)  # [B, n] best first; ties: the lower index
    valid = jnp.isfinite(score)
    seen = jnp.cumsum(jax.nn.one_hot(bank_s, num_banks, dtype=jnp.int32) * valid[..., None], 1)
    rank = take_along(seen, bank_s[..., None])[..., 0] - 1  # its place within its bank
    order = rank * num_banks + (num_banks - 1 - bank_s)  # round robin, highest bank first
    _, pos = _top_k(jnp.where(valid, -order.astype(jnp.float32), -jnp.inf), k)
    return take_along(score, pos), take_along(idx, pos)


def _at(x: jax.Array, flat: jax.Array) -> jax.Array:
    """x [B, K, N, V] at each new live beam's (parent, token), flat index k * V + v [B, K]:
    [B, K, N]."""
    b, k, n, v = x.shape
    return jnp.take_along_axis(jnp.moveaxis(x, 3, 2).reshape(b, k * v, n), flat[..., None], 1)


def _stop(
    fin_score: jax.Array,  # [B, 1, K] the finished pool after this step
    live: jax.Array,  # [B, K]
    lmax: jax.Array,  # [B]
    length_penalty: str,
    alpha: jax.Array,
    early_stop: str,
) -> jax.Array:
    """[B, 1] plain beam's stopping rule: no live hypothesis can beat the K-th finished one
    (exact), or K have finished (fairseq)."""
    worst = jnp.min(fin_score, axis=-1)  # [B, 1] -inf until the pool is full
    if early_stop == "k_finished":
        return jnp.isfinite(worst)
    return length_norm(jnp.max(live, axis=-1), lmax, length_penalty, alpha)[:, None] <= worst


def _idle(b: int, k: int) -> dict[str, jax.Array]:
    """A step's outputs once every row is done: no token, every slot its own parent."""
    return {
        "tok": jnp.full((b, k), PAD_ID, jnp.int32),
        "parent": jnp.broadcast_to(jnp.arange(k, dtype=jnp.int32), (b, k)),
        "lp": jnp.zeros((b, k), jnp.float32),
    }


def _init(init_carry: Any, b: int, k: int, tabs: dict[str, np.ndarray]) -> ForcedState:
    """Plain beam's start (one live beam at the root), nothing matched, no set met."""
    s = _init_state(init_carry, b, k, 1, None)
    p_num, s_num = tabs["member"].shape
    return ForcedState(
        carry=s.carry,
        last=s.last,
        live=s.live,
        fin=s.fin,
        done=s.done,
        prog=jnp.zeros((b, k, p_num), jnp.int32),
        met=jnp.zeros((b, k, s_num), bool),
    )


@row_parallel
def _forced_program(
    args: ProgramInputs,
    *,
    opts: ProgramOptions,
    beam_size: int,
    length_penalty: str,
    conventions: Conventions,
    force: Force,
) -> DecodeOutput:
    params, init_carry, prompts, prompt_lengths, _, _, knobs, _ = args
    step_fn, max_len, vocab_size, loop = opts.step_fn, opts.max_len, opts.vocab_size, opts.loop
    b, k, v, t_max = prompt_lengths.shape[0], beam_size, vocab_size, max_len
    tabs = _kmp_tables(force, v)
    num_banks = int(tabs["width"].sum()) + 1
    pool = 3 * k + k * tabs["plen"].shape[0]  # 2K best + each beam's best + advancing tokens
    alpha, plen = knobs["alpha"], prompt_lengths
    lmax = t_max - plen  # [B] most generated tokens (incl. EOS) a hypothesis can have
    one = lambda x: x.reshape(b, 1, k, *x.shape[2:])  # noqa: E731  [B, K] -> [B, 1, K]

    def step(state: ForcedState, xs: tuple) -> tuple[ForcedState, dict]:
        t, ptok = xs  # scalar, [B] prompt token at position t
        carry, logits = step_fn(params, state.carry, state.last.reshape(-1))
        forced = t < plen  # [B]
        eos_only = (t == t_max - 1) if conventions.force_eos_at_max_len else None
        generated = jnp.repeat(t - plen, k)
        cand, logp, _ = _candidates(
            logits, state, forced, ptok, generated, knobs["min_length"], None, eos_only
        )
        all_met = jnp.all(state.met, axis=-1)  # [B, K] only these may end
        cand = cand.at[..., EOS_ID].set(jnp.where(all_met, cand[..., EOS_ID], -jnp.inf))
        c = _select(one(cand), forced, None)
        gen_len = (t - plen + 1)[:, None, None]
        fin = jax.tree.map(one, state.fin)
        fresh_fin = _update_finished(
            fin, c, one(logp[..., EOS_ID]), None, t, gen_len, length_penalty, alpha,
            conventions.eos_rule,
        )  # fmt: skip
        nprog, nmet, bank = _extend(tabs, state.prog, state.met, forced)
        advancing = _advancing(tabs, state.prog, state.met, v)
        live, flat = _allocate(cand, c, bank, advancing, num_banks, pool)
        parent, tok = flat // v, (flat % v).astype(jnp.int32)
        lp = jnp.where(forced[:, None], 0.0, take_along(logp.reshape(b, -1), flat))
        stop = _stop(fresh_fin.score, live, lmax, length_penalty, alpha, conventions.early_stop)
        frozen = state.done  # [B, 1] a done row keeps everything
        keep = lambda old, new: jnp.where(frozen.reshape(b, *[1] * (new.ndim - 1)), old, new)  # noqa: E731
        parent = keep(jnp.broadcast_to(jnp.arange(k), (b, k)), parent)
        last = keep(state.last, tok)
        rows = (jnp.arange(b)[:, None] * k + parent).reshape(-1)  # [B * K]
        new = ForcedState(
            carry=gather_rows(carry, rows),
            last=last,
            live=keep(state.live, live),
            fin=jax.tree.map(lambda o, n: keep(o, n.reshape(b, k)), state.fin, fresh_fin),
            done=state.done | stop,
            prog=keep(state.prog, _at(nprog, flat)),
            met=keep(state.met, _at(nmet, flat)),
        )
        return new, {"tok": last, "parent": parent, "lp": keep(jnp.zeros_like(lp), lp)}

    state, ys = run_loop(
        step,
        _init(init_carry, b, k, tabs),
        (jnp.arange(t_max), prompts.T),
        finished=lambda s: jnp.all(s.done),
        idle=_idle(b, k),
        loop=loop,
    )
    # a hypothesis cut at max_len is returned only when it meets every set
    live = jnp.where(jnp.all(state.met, axis=-1), state.live, -jnp.inf)
    beams = BeamState(state.carry, state.last, live, state.fin, state.done, None)
    return _n_best(beams, ys, prompt_lengths, t_max, 1, length_penalty, alpha, conventions.finalize)


def launch(req: DecodeRequest, prep: Prepared) -> DecodeOutput:
    """The `beam` row's program: plain beam search (`beam.launch`) when `decoder.force` is
    empty, else the forced search above. A set that cannot fit in the continuation of the
    longest prompt, or a `constraint=` automaton beside `force`, is one `UserError` line."""
    value = get(req.cfg, "force")
    if not value:
        return launch_beam(req, prep)
    if req.constraint is not None:
        raise UserError(
            "decoder.force is not supported with a constraint automaton; allowed: "
            "constraint=none with decoder.force, or decoder.force=[] with a constraint"
        )
    force = freeze(value)  # texts refused: decode() takes ids
    longest = int(np.max(np.asarray(prep.prompt_lengths), initial=0))
    budget = req.max_len - longest
    check_fits(value, budget, f"decode.max_len={req.max_len} minus the longest prompt, {longest}")
    return run(req, prep, force)


def run(req: DecodeRequest, prep: Prepared, force: Force) -> DecodeOutput:
    """The forced program for a validated request (`force=()`: no set, plain beam's output)."""
    return launch_program(
        _forced_program,
        req,
        prep,
        keyed=False,
        beam_size=int(get(req.cfg, "beam_size")),
        length_penalty=str(get(req.cfg, "length_penalty")),
        conventions=Conventions(
            *(type(d)(get(req.cfg, f)) for f, d in Conventions._field_defaults.items())
        ),
        force=force,
    )
