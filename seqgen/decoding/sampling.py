"""Greedy decoding and ancestral sampling through the logits processors.

One `jax.jit` program per static configuration: a `lax.scan` over the `max_len` positions that
feeds BOS, forces the prompt tokens, then generates; rows are the (prompt, sample) pairs
flattened into the batch (row = b * N + n). A row that emitted EOS is frozen: it emits PAD and
its scores stop changing; when every row has ended the remaining steps change nothing
(`seqgen.decoding.loop`: skipped, masked or cut off, by the `loop` variant).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from seqgen.decoding import constraint as con
from seqgen.decoding import processor_table as table
from seqgen.decoding import processors as proc
from seqgen.decoding import steering
from seqgen.decoding.common import (
    DecodeOutput,
    DecodeRequest,
    Prepared,
    get,
    gumbel_noise,
    key_words,
    repeat_rows,
    row_keys,
)
from seqgen.decoding.loop import run_loop
from seqgen.decoding.program import ProgramInputs, ProgramOptions
from seqgen.decoding.program import launch as launch_program
from seqgen.parallel import row_parallel
from seqgen.tokens import BOS_ID, EOS_ID, PAD_ID


@struct.dataclass
class SampleState:
    """The loop state of greedy / sampling; R = B * N rows (row = b * N + n)."""

    carry: Any  # the step function's carry, every leaf [R, ...]
    last: jax.Array  # [R] int32 the next input token
    ended: jax.Array  # [R] bool the row emitted EOS
    counts: jax.Array | None  # [R, V] int32 token counts so far (a row that needs "counts")
    history: jax.Array | None  # [R, T] int32 tokens so far (a row that needs "history")
    own: dict[str, Any]  # each stateful row's state, leaves [R, ...] (Mirostat's mu [R] f32)
    cstate: jax.Array | None  # [R] int32 the automaton's state (constraint only)
    recent: jax.Array | None  # [R, W] int32 the last W tokens, newest last (stop sequences)


def _pick(x: jax.Array, tok: jax.Array) -> jax.Array:
    return jnp.take_along_axis(x, tok[:, None], axis=-1)[:, 0]


def _pick_logprob(logits: jax.Array, tok: jax.Array) -> jax.Array:
    """log softmax(logits)[tok] without materialising the [R, V] log-softmax."""
    return _pick(logits, tok) - jax.nn.logsumexp(logits, axis=-1)


def _choose(
    state: SampleState,
    logits: jax.Array,  # [R, V] f32
    t: jax.Array,
    plen: jax.Array,  # [R]
    words: jax.Array,  # [R, 2] the rows' key words
    knobs: dict[str, jax.Array],
    flags: table.ProcessorFlags,
    greedy: bool,
    constraint: con.Constraint | None,
) -> tuple:
    """The token each row chooses at position t (before prompt forcing): (tok [R], its
    processed log-prob [R], each stateful row's input logits {name: [R, V]}, the automaton's
    allowed set, the processed logits [R, V] (greedy: after the penalties))."""
    r, v = logits.shape
    temp = knobs["temperature"]
    masked, ok = logits, None
    if constraint is not None:  # forbidden tokens go before every processor
        ok = con.allowed(constraint, state.cstate)
        masked = con.mask_logits(logits, ok)
    run = {  # the state every stage sees
        "t": t,
        "generated": t - plen,  # [R] continuation tokens before this one (min_length)
        "counts": state.counts,
        "history": state.history,
        "words": words,
        "states": state.own,
    }
    pen, _ = table.apply(masked, flags, knobs, table.PENALTY_STAGES, **run)
    if greedy:
        return jnp.argmax(pen, axis=-1), jnp.zeros((r,), jnp.float32), {}, ok, pen
    later = tuple(s for s in table.STAGES if s not in table.PENALTY_STAGES)
    processed, inputs = table.apply(pen, flags, knobs, later, **run)  # [R, V]
    noise = gumbel_noise(words, t, (v,))  # [R, V]
    sampled = jnp.argmax(processed + noise, axis=-1)  # Gumbel-max
    # t = 0: greedy, the t -> 0 limit (typical-p may drop the argmax at t = 1, never
    # in that limit, where the tempered distribution is a point mass on it)
    tok = jnp.where(temp > 0, sampled, jnp.argmax(pen, axis=-1))
    plp = jnp.where(temp > 0, _pick_logprob(processed, tok), 0.0)
    return tok, plp, inputs, ok, processed


def _update_own(
    state: SampleState, inputs: dict, tok: jax.Array, live: jax.Array, knobs: dict, flags
) -> dict[str, Any]:
    """Each stateful row's `update` after the token `tok`, where `live` [R] (else unchanged)."""
    all_knobs = {**knobs, **dict(flags.static)}
    own = {}
    for name, old in state.own.items():
        new = table.PROCESSORS[name].update(old, inputs[name], tok, all_knobs)
        own[name] = jax.tree.map(
            lambda n, o: jnp.where(live.reshape((-1,) + (1,) * (n.ndim - 1)), n, o), new, old
        )
    return own


class _Static(NamedTuple):
    """The program's static options the step's helpers read."""

    vocab_size: int
    flags: table.ProcessorFlags
    greedy: bool
    stops: tuple[tuple[int, ...], ...]
    logprobs: int
    logprobs_mode: str
    prompt_logprobs: bool


class _Token(NamedTuple):
    """What position t's token means for each row, [R] each."""

    tok: jax.Array  # int32 the token fed back (the prompt token where forced)
    lp: jax.Array  # f32 its log-prob under the model
    tlp: jax.Array  # f32 ... under the tempered model
    out: jax.Array  # int32 the token written (PAD once the row has ended)
    forced: jax.Array  # bool a prompt position
    is_eos: jax.Array  # bool a generated EOS (the row ends here)
    alive: jax.Array  # bool counts towards the length
    gen: jax.Array  # bool a generated token (EOS included)


def _init_state(
    init_carry: Any,
    r: int,
    n: int,
    t_max: int,
    knobs: dict[str, jax.Array],
    constraint: con.Constraint | None,
    st: _Static,
) -> SampleState:
    """Every row before BOS: nothing counted, no history, each stateful row's initial state."""
    flags = st.flags
    return SampleState(
        carry=repeat_rows(init_carry, n),
        last=jnp.full((r,), BOS_ID, jnp.int32),
        ended=jnp.zeros((r,), bool),
        counts=jnp.zeros((r, st.vocab_size), jnp.int32) if flags.needs("counts") else None,
        history=jnp.zeros((r, t_max), jnp.int32) if flags.needs("history") else None,
        own={name: table.PROCESSORS[name].init(r, knobs) for name in flags.stateful()},
        cstate=None if constraint is None else jnp.full((r,), constraint.start, jnp.int32),
        recent=jnp.zeros((r, steering.stop_width(st.stops)), jnp.int32) if st.stops else None,
    )


def _token(
    state: SampleState,
    chosen: jax.Array,  # [R] the token each row chose
    forced_tok: jax.Array,  # [R] the prompt token at position t
    t: jax.Array,
    plen: jax.Array,  # [R]
    logits: jax.Array,  # [R, V] the model's
    temp: jax.Array,
    greedy: bool,
) -> _Token:
    """The token of each row at position t: its prompt token where forced, else `chosen`."""
    forced = t < plen  # [R]
    tok = jnp.where(forced, forced_tok, chosen).astype(jnp.int32)
    lp = _pick_logprob(logits, tok)
    tlp = lp if greedy else _pick_logprob(proc.temperature(logits, temp), tok)
    ended = state.ended
    is_eos = (tok == EOS_ID) & ~forced & ~ended
    alive = ~ended & ~is_eos
    gen = ~forced & ~ended
    return _Token(tok, lp, tlp, jnp.where(ended, PAD_ID, tok), forced, is_eos, alive, gen)


def _next_state(
    state: SampleState,
    carry: Any,
    tk: _Token,
    t: jax.Array,
    plen: jax.Array,
    inputs: dict,
    knobs: dict[str, jax.Array],
    constraint: con.Constraint | None,
    st: _Static,
) -> tuple[SampleState, jax.Array | None]:
    """The state after position t's token, and the length of the stop sequence it completes
    ([R], 0 = none; None without stop sequences)."""
    tok, flags, stop_len = tk.tok, st.flags, None
    new = state.replace(carry=carry, last=tk.out, ended=state.ended | tk.is_eos)
    if st.stops:  # the row ends as at EOS once a stop sequence completes (`scan_outputs` cuts it)
        recent = jnp.concatenate([state.recent[:, 1:], tok[:, None]], axis=1)  # [R, W]
        stop_len = steering.stop_match(recent, t - plen + 1, st.stops)  # [R]
        stop_len = jnp.where(tk.gen & ~tk.is_eos, stop_len, 0)
        new = new.replace(recent=recent, ended=new.ended | (stop_len > 0))
    if constraint is not None:
        nxt = con.advance(constraint, state.cstate, tok)
        new = new.replace(cstate=jnp.where(state.ended, state.cstate, nxt))
    if state.own and not st.greedy:
        live = tk.gen & (knobs["temperature"] > 0)
        new = new.replace(own=_update_own(state, inputs, tok, live, knobs, flags))
    if flags.needs("counts"):
        count_it = tk.alive & (~tk.forced | (knobs["penalize_prompt"] > 0.5))
        one_hot = jax.nn.one_hot(tok, st.vocab_size, dtype=jnp.int32) * count_it[:, None]
        new = new.replace(counts=state.counts + one_hot)
    if flags.needs("history"):
        history = jax.lax.dynamic_update_slice_in_dim(state.history, tk.out[:, None], t, 1)
        new = new.replace(history=history)
    return new, stop_len


def _step_outputs(
    tk: _Token,
    plp: jax.Array,  # [R] the token's processed log-prob
    logits: jax.Array,  # [R, V] the model's
    processed: jax.Array,  # [R, V] the processed logits
    ok: jax.Array | None,
    stop_len: jax.Array | None,
    st: _Static,
) -> dict[str, jax.Array]:
    """What position t writes per row (`scan_outputs` reads them; `_idle_outputs` has the same
    keys and shapes): token, log-probs, alive/EOS flags and the optional outputs."""
    lp, tlp, gen = tk.lp, tk.tlp, tk.gen
    ys = {"tok": tk.out, "lp": jnp.where(gen, lp, 0.0), "alive": tk.alive, "eos": tk.is_eos}
    if not st.greedy:  # greedy's tempered log-prob is lp and its processed one 0 (scan_outputs)
        ys |= {"tlp": jnp.where(gen, tlp, 0.0), "plp": jnp.where(gen, plp, 0.0)}
    if ok is not None:
        ys["cmass"] = jnp.where(gen, con.allowed_logmass(logits, ok), 0.0)
    if stop_len is not None:
        ys["stop"] = stop_len
    if st.prompt_logprobs:  # the model's log-prob of each forced prompt token
        ys["prompt_lp"] = jnp.where(tk.forced, lp, 0.0)
    if st.logprobs:
        dist = processed if st.logprobs_mode == "processed" else logits
        top_lp, top_id = jax.lax.top_k(jax.nn.log_softmax(dist, axis=-1), st.logprobs)  # [R, K]
        ys["top_lp"] = jnp.where(gen[:, None], top_lp, 0.0)
        ys["top_id"] = jnp.where(gen[:, None], top_id, PAD_ID)
    return ys


def _idle_outputs(r: int, constrained: bool, st: _Static) -> dict[str, jax.Array]:
    """`_step_outputs` of a step that changes nothing (every row has ended)."""
    zeros, false = jnp.zeros((r,), jnp.float32), jnp.zeros((r,), bool)
    idle = {"tok": jnp.full((r,), PAD_ID, jnp.int32), "lp": zeros, "alive": false, "eos": false}
    idle |= {} if st.greedy else {"tlp": zeros, "plp": zeros}
    idle |= {"cmass": zeros} if constrained else {}
    idle |= {"stop": jnp.zeros((r,), jnp.int32)} if st.stops else {}
    idle |= {"prompt_lp": zeros} if st.prompt_logprobs else {}
    if st.logprobs:
        idle |= {
            "top_lp": jnp.zeros((r, st.logprobs), jnp.float32),
            "top_id": jnp.full((r, st.logprobs), PAD_ID, jnp.int32),
        }
    return idle


@row_parallel
def _sample_program(
    args: ProgramInputs,
    *,
    opts: ProgramOptions,
    num_samples: int,
    flags: table.ProcessorFlags,
    greedy: bool,
    stops: tuple[tuple[int, ...], ...] = (),
    include_stop: bool = False,
    logprobs: int = 0,
    logprobs_mode: str = "raw",
    prompt_logprobs: bool = False,
) -> DecodeOutput:
    params, init_carry, prompts, prompt_lengths, prompt_ids, key, knobs, constraint = args
    step_fn, max_len, vocab_size, loop = opts.step_fn, opts.max_len, opts.vocab_size, opts.loop
    st = _Static(vocab_size, flags, greedy, stops, logprobs, logprobs_mode, prompt_logprobs)
    b, n, t_max = prompt_lengths.shape[0], num_samples, max_len
    r = b * n
    plen = jnp.repeat(prompt_lengths, n)  # [R]
    words = key_words(row_keys(key, prompt_ids, n))  # [R, 2]
    temp = knobs["temperature"]
    state = _init_state(init_carry, r, n, t_max, knobs, constraint, st)

    def step(state: SampleState, xs: tuple) -> tuple[SampleState, dict]:
        t, forced_tok = xs  # scalar, [R]
        carry, logits = step_fn(params, state.carry, state.last)
        logits = logits.astype(jnp.float32)  # [R, V]
        chosen, plp, inputs, ok, processed = _choose(
            state, logits, t, plen, words, knobs, flags, greedy, constraint
        )
        tk = _token(state, chosen, forced_tok, t, plen, logits, temp, greedy)
        new, stop_len = _next_state(state, carry, tk, t, plen, inputs, knobs, constraint, st)
        return new, _step_outputs(tk, plp, logits, processed, ok, stop_len, st)

    idle = _idle_outputs(r, constraint is not None, st)
    xs = (jnp.arange(t_max), jnp.repeat(prompts, n, axis=0).T)  # [T], [T, R]
    state, ys = run_loop(step, state, xs, finished=lambda s: jnp.all(s.ended), idle=idle, loop=loop)
    return scan_outputs(ys, state.ended, prompt_lengths, n, include_stop)


def _cut_stops(ys: dict) -> dict:
    """A row ended by a stop sequence of m tokens without `include_stop`: its last m tokens
    become PAD with log-probs 0 and leave the length, so length, log-probs and score are those
    of the returned sequence, as for a row ended at EOS. ys [B, N, T] each."""
    pos = jnp.arange(ys["tok"].shape[-1])  # [T]
    end = jnp.sum(ys["alive"], axis=-1, keepdims=True)  # [B, N, 1] the length before the cut
    m = jnp.sum(ys["stop"], axis=-1, keepdims=True)  # [B, N, 1]
    cut = (pos >= end - m) & (pos < end) & (m > 0)  # [B, N, T]
    ys = {k: jnp.where(cut, 0.0, x) if k in ("lp", "tlp", "plp") else x for k, x in ys.items()}
    return ys | {"tok": jnp.where(cut, PAD_ID, ys["tok"]), "alive": ys["alive"] & ~cut}


def scan_outputs(
    ys: dict, ended: jax.Array, prompt_lengths: jax.Array, n: int, include_stop: bool = False
) -> DecodeOutput:
    """The DecodeOutput of the per-step outputs ys ([T, R] each) and the final `ended` [R].
    Without "tlp" / "plp" (greedy, which does not write them per step) they are lp and 0."""
    b, t_max = prompt_lengths.shape[0], ys["tok"].shape[0]
    top = {k: ys.pop(k) for k in ("top_lp", "top_id") if k in ys}  # [T, R, K]
    prompt_lp = ys.pop("prompt_lp", None)  # [T, R]: the same in a prompt's N rows
    prompt_lp = None if prompt_lp is None else prompt_lp.T.reshape(b, n, t_max)[:, 0]
    top = {k: jnp.moveaxis(x, 0, 1).reshape(b, n, t_max, -1) for k, x in top.items()}
    ys = jax.tree.map(lambda x: x.T.reshape(b, n, t_max), ys)  # [B, N, T] each
    ys.setdefault("tlp", ys["lp"])
    ys.setdefault("plp", jnp.zeros_like(ys["lp"]))
    if "stop" in ys and not include_stop:
        ys = _cut_stops(ys)
    if top:  # positions the cut emptied (PAD) hold no alternatives either
        kept = (ys["tok"] != PAD_ID)[..., None]
        top = {k: jnp.where(kept, x, 0 if k == "top_lp" else PAD_ID) for k, x in top.items()}
    eos = ys["eos"]

    def split_eos(x: jax.Array) -> tuple[jax.Array, jax.Array]:
        return jnp.where(eos, 0.0, x), jnp.sum(jnp.where(eos, x, 0.0), axis=-1)

    lp, eos_lp = split_eos(ys["lp"])
    tlp, eos_tlp = split_eos(ys["tlp"])
    plp, eos_plp = split_eos(ys["plp"])
    return DecodeOutput.of(
        ys["tok"],
        jnp.sum(ys["alive"], axis=-1),
        prompt_lengths,
        ended.reshape(b, n),
        (lp, tlp, plp),
        (eos_lp, eos_tlp, eos_plp),
        scores=jnp.sum(lp, axis=-1) + eos_lp,
        constraint_logmass=ys.get("cmass"),
        stopped=None if "stop" not in ys else jnp.any(ys["stop"] > 0, axis=-1),
        top_ids=top.get("top_id"),
        top_logprobs=top.get("top_lp"),
        prompt_logprobs=prompt_lp,
    )


def _launch(req: DecodeRequest, prep: Prepared, *, greedy: bool) -> DecodeOutput:
    """Run the sampling program for a validated request (`registry.run` is the entry path)."""
    stages = table.PENALTY_STAGES if greedy else table.STAGES  # truncation cannot move an argmax
    flags = table.flags_from_cfg(lambda k: get(req.cfg, k), req.vocab_size, stages)
    num_samples = 1 if greedy else req.num_samples
    return launch_program(
        _sample_program,
        req,
        prep,
        keyed=True,
        num_samples=num_samples,
        flags=flags,
        greedy=greedy,
        stops=steering.freeze("stop", get(req.cfg, "stop")),
        include_stop=bool(get(req.cfg, "include_stop")),
        logprobs=int(req.logprobs),
        logprobs_mode=str(req.logprobs_mode),
        prompt_logprobs=bool(req.prompt_logprobs),
    )


def launch_greedy(req: DecodeRequest, prep: Prepared) -> DecodeOutput:
    return _launch(req, prep, greedy=True)


def launch_sample(req: DecodeRequest, prep: Prepared) -> DecodeOutput:
    return _launch(req, prep, greedy=False)


def greedy(req: DecodeRequest) -> DecodeOutput:
    """Greedy decoding: y_t = argmax_v x_v after min-length (EOS forbidden before
    `min_length` continuation tokens) and the penalty processors (repetition, presence,
    frequency, no-repeat n-gram); temperature and truncation do not apply.

    Deterministic, so N = 1 whatever `num_samples` is (ties: the lowest token id).
    processed_logprobs are 0 (a point mass); tempered_logprobs use t = 1.
    """
    from seqgen.decoding.registry import run

    return run("greedy", req)


def sample(req: DecodeRequest) -> DecodeOutput:
    """Ancestral sampling: y_t ~ softmax(process(x_t)), `num_samples` rows per prompt.

    `process` applies the rows of `processor_table` that are on, in its order
    (`processor_table.render_order()`: min-length, the penalties, temperature, the
    truncations, Mirostat, and any registered by a user).
    Sampling is Gumbel-max, argmax_v(x'_v + g_v) with g_v ~ Gumbel(0, 1), which draws exactly
    from softmax(x') (Gumbel 1954; Maddison et al. 2014). temperature = 0 is greedy (the argmax
    after min-length and the penalties, the t -> 0 limit of every truncation).
    Row (b, n) uses the key fold_in(fold_in(key, prompt_ids[b]), n) and, at step t, the
    Threefry counters (t, v) under that key (`common.gumbel_noise`), so a row's output does not
    depend on the batch around it.
    """
    from seqgen.decoding.registry import run

    return run("sample", req)
