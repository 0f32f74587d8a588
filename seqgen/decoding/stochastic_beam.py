"""Stochastic beam search (Kool, van Hoof & Welling 2019, "Stochastic beams and where to find
them: the Gumbel-top-k trick for sampling sequences without replacement", ICML, Alg. 2).

Every sequence y gets a perturbed log-prob G_phi(y) = phi(y) + Gumbel(0, 1), with
phi(y) = log p_t(y) under the temperature-t model (EOS forbidden before `min_length`
continuation tokens and each step renormalized, the distribution `sample` draws from;
`processed_logprobs` are its per-token log-probs); the K sequences with the largest G_phi are an
exact sample of K distinct sequences WITHOUT replacement. Stochastic beam search finds them
top-down: the root gets G ~ Gumbel(0) (phi(root) = 0), and the children of a node with perturbed
value G_parent get G~_c = phi_c + Gumbel(0, 1), conditioned on max_c G_c = G_parent by
G_c = -log(exp(-G_parent) - exp(-Z) + exp(-G~_c)), Z = max_c G~_c (their eq. 23, computed in
the numerically stable form of their appendix); each step keeps the K children with the largest
G. A sequence that emitted EOS has one child (itself + PAD, log-prob 0), so it keeps its G.

Estimators (Kool et al. 2019 sec. 4.2; Vieira 2017 "priority sampling"): with the threshold
kappa = the (K+1)-th largest G over all complete sequences, the inclusion probability of a
sampled y is q(y) = P(G_phi(y) > kappa) = 1 - exp(-exp(phi(y) - kappa)), and
sum_{y in S} p(y) / q(y) * f(y) is an unbiased estimator of E_p[f]. kappa is the largest
discarded perturbed value, i.e. the running max over steps of the (K+1)-th best candidate
(each discarded node's G is the max over its subtree). Sequences cut at max_len count as
complete (`ended` False). kappa = -inf (q = 1) when fewer than K+1 sequences exist.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from seqgen.decoding import constraint as con
from seqgen.decoding import processors as proc
from seqgen.decoding.beam import backtrack
from seqgen.decoding.common import (
    DecodeOutput,
    DecodeRequest,
    Prepared,
    gather_rows,
    get,
    gumbel_noise,
    key_words,
    repeat_rows,
    row_keys,
    take_along,
)
from seqgen.decoding.loop import run_loop
from seqgen.decoding.program import ProgramInputs, ProgramOptions
from seqgen.decoding.program import launch as launch_program
from seqgen.parallel import row_parallel
from seqgen.tokens import BOS_ID, EOS_ID, PAD_ID


@struct.dataclass
class StochasticBeamState:
    """The loop state of stochastic beam search; row = b * K + k in the carry."""

    carry: Any  # the step function's carry, every leaf [B * K, ...]
    last: jax.Array  # [B, K] int32 the next input token
    phi: jax.Array  # [B, K] f32 tempered log-prob sums phi(y) (-inf = empty slot)
    g: jax.Array  # [B, K] f32 perturbed log-probs G_phi(y)
    ended: jax.Array  # [B, K] bool the sequence emitted EOS
    kappa: jax.Array  # [B] f32 the largest perturbed value discarded so far
    cstate: jax.Array | None  # [B, K] int32 the automaton's state (constraint only)


def gumbel_with_max(g: jax.Array, target: jax.Array, z: jax.Array) -> jax.Array:
    """Shift Gumbels g (max z) so that their max becomes `target` (Kool et al. 2019, eq. 23 and
    appendix B.3): -log(exp(-target) - exp(-z) + exp(-g)), stably; -inf stays -inf."""
    u = target - g + jnp.log1p(-jnp.exp(g - z))
    out = target - jax.nn.relu(u) - jnp.log1p(jnp.exp(-jnp.abs(u)))
    return jnp.where(jnp.isfinite(g), out, -jnp.inf)


def _child_logprobs(
    logits: jax.Array,  # [B * K, V]
    state: StochasticBeamState,
    generated: jax.Array,  # [B * K] continuation tokens before this one
    knobs: dict[str, jax.Array],
    constraint: con.Constraint | None,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array | None]:
    """The children's log-probs [B, K, V]: the model's, the tempered model's, and the sampled
    distribution's (EOS forbidden before min_length, the automaton's mask, renormalized per
    step: a normalized tree is what makes the top-down Gumbels exact); and the log allowed
    mass [B, K] (constraint only, else None)."""
    b, k = state.last.shape
    v = logits.shape[-1]
    temp = knobs["temperature"]
    logits = logits.astype(jnp.float32).reshape(b, k, v)
    logp = jax.nn.log_softmax(logits, axis=-1)
    tlp = jax.nn.log_softmax(proc.temperature(logits, temp), axis=-1)
    opened = proc.min_length(logits.reshape(b * k, v), generated, knobs["min_length"])
    cm = None
    if constraint is not None:
        ok = con.allowed(constraint, state.cstate.reshape(-1))  # [B * K, V]
        opened = con.mask_logits(opened, ok)
        cm = con.allowed_logmass(logits.reshape(b * k, v), ok).reshape(b, k)
    plp = jax.nn.log_softmax(proc.temperature(opened.reshape(b, k, v), temp), axis=-1)
    return logp, tlp, plp, cm


def _init_state(
    init_carry: Any,
    words: jax.Array,  # [B, 2] each prompt's key words
    k: int,
    v: int,
    t_max: int,
    constraint: con.Constraint | None,
) -> StochasticBeamState:
    """Each prompt's root in slot 0 (phi = 0, G ~ Gumbel(0)), the other slots empty."""
    b = words.shape[0]
    # the counter block after the last step's, so the root's noise is independent of the steps'
    root_g = gumbel_noise(words, jnp.int32(t_max), (k, v))[:, 0, 0]  # [B]
    first = jnp.broadcast_to(jnp.arange(k)[None, :] == 0, (b, k))
    return StochasticBeamState(
        carry=repeat_rows(init_carry, k),
        last=jnp.full((b, k), BOS_ID, jnp.int32),
        phi=jnp.where(first, 0.0, -jnp.inf),
        g=jnp.where(first, root_g[:, None], -jnp.inf),
        ended=jnp.zeros((b, k), bool),
        kappa=jnp.full((b,), -jnp.inf, jnp.float32),
        cstate=None if constraint is None else jnp.full((b, k), constraint.start, jnp.int32),
    )


def _idle_outputs(b: int, k: int, constrained: bool) -> dict[str, jax.Array]:
    """The back-pointers of a step that changes nothing: every slot points to itself."""
    zeros = jnp.zeros((b, k), jnp.float32)
    return {
        "tok": jnp.full((b, k), PAD_ID, jnp.int32),
        "parent": jnp.broadcast_to(jnp.arange(k, dtype=jnp.int32), (b, k)),
        "lp": zeros,
        "tlp": zeros,
        "plp": zeros,
    } | ({"cm": zeros} if constrained else {})


@row_parallel
def _stochastic_beam_program(
    args: ProgramInputs, *, opts: ProgramOptions, beam_size: int
) -> DecodeOutput:
    params, init_carry, prompts, prompt_lengths, prompt_ids, key, knobs, constraint = args
    step_fn, max_len, vocab_size, loop = opts.step_fn, opts.max_len, opts.vocab_size, opts.loop
    b, k, t_max, v = prompt_lengths.shape[0], beam_size, max_len, vocab_size
    plen = prompt_lengths
    words = key_words(row_keys(key, prompt_ids, 1))  # [B, 2]
    state = _init_state(init_carry, words, k, v, t_max, constraint)

    def step(state: StochasticBeamState, xs: tuple) -> tuple[StochasticBeamState, dict]:
        t, ptok = xs
        carry, logits = step_fn(params, state.carry, state.last.reshape(-1))
        generated = jnp.repeat(t - plen, k)  # [B * K]
        logp, tlp, plp, cm = _child_logprobs(logits, state, generated, knobs, constraint)
        forced = t < plen  # [B]
        single = forced[:, None] | state.ended  # [B, K] nodes with exactly one child
        only = jnp.where(forced[:, None], ptok[:, None], PAD_ID)  # [B, K] that child
        single_lp = jnp.where(jnp.arange(v) == only[..., None], 0.0, -jnp.inf)
        phi_c = state.phi[..., None] + jnp.where(single[..., None], single_lp, plp)
        noise = gumbel_noise(words, t, (k, v))  # [B, K, V]
        perturbed = phi_c + noise  # [B, K, V]
        z = jnp.max(perturbed, axis=-1, keepdims=True)
        g_c = gumbel_with_max(perturbed, state.g[..., None], z).reshape(b, k * v)
        # the barrier keeps XLA:CPU's TopK custom call: without it the two slices of `top`
        # below are folded into the sort that top_k is decomposed into, which then no longer
        # matches the TopK pattern and stays a full stable sort of [B, K * V] every step (~50x).
        # One barrier per output: a barrier over the (values, indices) tuple crashes XLA:CPU's
        # compiler in a multi-device (shard_map) program
        top, idx = map(jax.lax.optimization_barrier, jax.lax.top_k(g_c, k + 1))  # [B, K + 1]
        kappa = jnp.maximum(state.kappa, top[:, k])
        g_new, idx = top[:, :k], idx[:, :k]
        parent, tok = idx // v, (idx % v).astype(jnp.int32)
        phi = take_along(phi_c.reshape(b, k * v), idx)
        par_single = take_along(single, parent)
        ended = take_along(state.ended, parent) | ((tok == EOS_ID) & ~forced[:, None])
        lp = jnp.where(par_single, 0.0, take_along(logp.reshape(b, k * v), idx))
        tl = jnp.where(par_single, 0.0, take_along(tlp.reshape(b, k * v), idx))
        pl = jnp.where(par_single, 0.0, take_along(plp.reshape(b, k * v), idx))
        rows = (jnp.arange(b)[:, None] * k + parent).reshape(-1)
        cstate = None
        ys = {"tok": tok, "parent": parent, "lp": lp, "tlp": tl, "plp": pl}
        if constraint is not None:
            cstate = con.advance(constraint, take_along(state.cstate, parent), tok)
            ys["cm"] = jnp.where(par_single, 0.0, take_along(cm, parent))
        new = StochasticBeamState(gather_rows(carry, rows), tok, phi, g_new, ended, kappa, cstate)
        return new, ys

    idle = _idle_outputs(b, k, constraint is not None)

    def finished(state: StochasticBeamState) -> jax.Array:
        return jnp.all(state.ended | ~jnp.isfinite(state.g))

    xs = (jnp.arange(t_max), prompts.T)
    state, ys = run_loop(step, state, xs, finished=finished, idle=idle, loop=loop)
    return _outputs(state, ys, prompt_lengths)


def _outputs(state: StochasticBeamState, ys: dict, prompt_lengths: jax.Array) -> DecodeOutput:
    """The K sampled sequences of each prompt from the back-pointers ys ([T, B, K] each), with
    their perturbed scores, kappa and inclusion probabilities."""
    b, k = state.g.shape
    t_max = ys["tok"].shape[0]
    plen = prompt_lengths
    slot = jnp.broadcast_to(jnp.arange(k), (b, k))
    full = jnp.full((b, k), t_max)
    tokens, lp = backtrack(ys["tok"], ys["parent"], ys["lp"], slot, full)  # [B, K, T]
    _, tlp = backtrack(ys["tok"], ys["parent"], ys["tlp"], slot, full)
    _, plp = backtrack(ys["tok"], ys["parent"], ys["plp"], slot, full)
    cmass = None
    if "cm" in ys:
        _, cmass = backtrack(ys["tok"], ys["parent"], ys["cm"], slot, full)
        cmass = jnp.where(jnp.isfinite(state.g)[..., None], cmass, 0.0)
    valid = jnp.isfinite(state.g)  # [B, K]
    ended = state.ended & valid
    pos = jnp.arange(t_max)
    gen = pos[None, None, :] >= plen[:, None, None]
    at_eos = (tokens == EOS_ID) & gen & ended[..., None]  # [B, K, T]
    length = jnp.where(ended, jnp.argmax(at_eos, axis=-1), jnp.where(valid, t_max, 0))
    tokens = jnp.where(valid[..., None], tokens, PAD_ID).astype(jnp.int32)
    eos_lp = jnp.sum(jnp.where(at_eos, lp, 0.0), axis=-1)
    eos_tlp = jnp.sum(jnp.where(at_eos, tlp, 0.0), axis=-1)
    eos_plp = jnp.sum(jnp.where(at_eos, plp, 0.0), axis=-1)
    lp = jnp.where(at_eos | ~valid[..., None], 0.0, lp)
    tlp = jnp.where(at_eos | ~valid[..., None], 0.0, tlp)
    plp = jnp.where(at_eos | ~valid[..., None], 0.0, plp)
    kappa = state.kappa
    q = -jnp.expm1(-jnp.exp(state.phi - kappa[:, None]))
    q = jnp.where(valid, jnp.where(jnp.isfinite(kappa)[:, None], q, 1.0), 0.0)
    return DecodeOutput.of(
        tokens,
        length,
        prompt_lengths,
        ended,
        (lp, tlp, plp),
        (eos_lp, eos_tlp, eos_plp),
        scores=state.g,
        gumbel_scores=state.g,
        kappa=kappa,
        inclusion_probs=q,
        constraint_logmass=cmass,
    )


def stochastic_beam(req: DecodeRequest) -> DecodeOutput:
    """K = `beam_size` distinct sequences per prompt, sampled without replacement from the
    temperature-t model by stochastic beam search (see the module docstring), sorted by their
    perturbed log-prob G (= `scores` = `gumbel_scores`), with `kappa` and `inclusion_probs`.

    Prompt b uses the key fold_in(fold_in(key, prompt_ids[b]), 0). `num_samples` is ignored
    (the K beams are the samples); the sampling processors other than temperature and
    min-length do not apply.
    """
    from seqgen.decoding.registry import run

    return run("stochastic_beam", req)


def launch(req: DecodeRequest, prep: Prepared) -> DecodeOutput:
    """Run the stochastic beam program for a validated request."""
    beam_size = int(get(req.cfg, "beam_size"))
    return launch_program(_stochastic_beam_program, req, prep, keyed=True, beam_size=beam_size)
