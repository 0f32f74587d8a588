"""llama.cpp's samplers that seqgen lacked, as pure jit-safe logits functions: DRY, XTC, dynamic
temperature and the windowed token counts behind `penalty_last_n`.

Each follows llama.cpp's `src/llama-sampling.cpp` (the function named in its docstring); every
buffer has a fixed size ([R, T] history, [R, V] logits) and positions past the current one are
masked, so nothing here depends on data through Python control flow. Removed tokens get -inf.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from seqgen.decoding.common import NEG_INF

# llama.cpp clamps DRY's exponent so that base ** exponent stays a finite float32
_FLOAT_MAX_LOG = 88.7228391


def window_counts(
    history: jax.Array, t: jax.Array, first: jax.Array, last_n: int, vocab_size: int
) -> jax.Array:
    """How often each token occurs among the last `last_n` tokens (llama.cpp
    `llama_sampler_penalties`, whose ring buffer holds the last `penalty_last_n` accepted tokens).

    history: [R, T] the tokens so far (positions < t are filled); first: [R] the first position
    that counts (0, or the prompt length when the prompt is not penalised). Returns [R, V] int32:
    counts[r, v] = #{p : max(t - last_n, first[r]) <= p < t, history[r, p] = v}.
    """
    r, n_pos = history.shape
    pos = jnp.arange(n_pos)[None, :]  # [1, T]
    live = (pos < t) & (pos >= t - last_n) & (pos >= first[:, None])  # [R, T]
    rows = jnp.broadcast_to(jnp.arange(r)[:, None], history.shape)
    counts = jnp.zeros((r, vocab_size), jnp.int32)
    return counts.at[rows, history].add(live.astype(jnp.int32))


def dry_match_lengths(
    history: jax.Array, t: jax.Array, breakers: tuple[int, ...]
) -> tuple[jax.Array, jax.Array]:
    """For every lag d (1 <= d < t), the length n_d of the longest common suffix of the context
    x[0..t-1] and of x[0..t-1-d], capped (llama.cpp's `rep_limit`) at the number of tokens after
    the context's last sequence breaker; and the token x[t-d] that would extend that repeat.

    history: [R, T]. Returns (n [R, T], next_token [R, T]) indexed by d (d = 0 and d >= t: n = 0).
    llama.cpp computes the same lengths with a reversed Z-algorithm; here one [R, T, T] compare.
    """
    r, n_pos = history.shape
    d = jnp.arange(n_pos)[:, None]  # [T, 1] lag
    k = jnp.arange(n_pos)[None, :]  # [1, T] offset from the end
    a_pos, b_pos = t - 1 - k, t - 1 - k - d  # [T, T] (the end's token, the earlier one's)
    ok = (b_pos >= 0) & (d >= 1)
    a = jnp.take(history, jnp.clip(a_pos, 0, n_pos - 1), axis=1)  # [R, T, T]
    b = jnp.take(history, jnp.clip(b_pos, 0, n_pos - 1), axis=1)
    same = (a == b) & ok[None]
    n = jnp.sum(jnp.cumprod(same, axis=-1), axis=-1)  # [R, T] leading run per lag
    if breakers:
        pos = jnp.arange(n_pos)[None, :]
        brk = jnp.isin(history, jnp.asarray(breakers, history.dtype)) & (pos < t)
        last_brk = jnp.max(jnp.where(brk, pos, -1), axis=-1)  # [R]
        n = jnp.minimum(n, (t - 1 - last_brk)[:, None])
    nxt = jnp.take(history, jnp.clip(t - d[:, 0], 0, n_pos - 1), axis=1)  # [R, T]
    return n, nxt


def dry(
    logits: jax.Array,
    history: jax.Array,
    t: jax.Array,
    multiplier: jax.Array,
    base: jax.Array,
    allowed_length: jax.Array,
    breakers: tuple[int, ...] = (),
) -> jax.Array:
    """DRY, "Don't Repeat Yourself" (p-e-w, text-generation-webui PR #5677; llama.cpp
    `llama_sampler_dry_apply`, PR #9702), over the whole context (llama.cpp's
    `dry_penalty_last_n = -1`).

    For each token v, n(v) = the longest repeat that emitting v would extend: the max over earlier
    positions j with x[j+1] = v of the common-suffix length of x[..j] and of the context, capped
    at the tokens after the last sequence breaker (`dry_match_lengths`). If n(v) >= allowed_length
    and v is not a breaker: x_v <- x_v - multiplier * base ** min(n(v) - allowed_length, e_max),
    e_max = floor(88.7228391 / ln base) when base > 1.000001 (else no clamp).
    Breakers are single tokens (llama.cpp also takes multi-token ones: not here).
    """
    r, v = logits.shape
    n, nxt = dry_match_lengths(history, t, breakers)
    d = jnp.arange(n.shape[1])[None, :]
    hit = jnp.where((n >= allowed_length) & (d >= 1) & (d < t), n, -1)  # [R, T]
    rows = jnp.broadcast_to(jnp.arange(r)[:, None], nxt.shape)
    longest = jnp.full((r, v), -1, jnp.int32).at[rows, nxt].max(hit.astype(jnp.int32))
    exp = (longest - allowed_length).astype(jnp.float32)
    e_max = jnp.floor(_FLOAT_MAX_LOG / jnp.log(jnp.maximum(base, 1.000001 + 1e-7)))
    exp = jnp.where((base > 1.000001) & (exp > e_max), e_max, exp)
    penalty = multiplier * jnp.power(base, jnp.maximum(exp, 0.0))
    is_brk = jnp.zeros((v,), bool)
    if breakers:
        is_brk = is_brk.at[jnp.asarray(breakers)].set(True)
    apply = (longest >= 0) & ~is_brk[None, :]
    return jnp.where(apply, logits - penalty, logits)


def xtc(
    logits: jax.Array,
    keys: jax.Array,
    threshold: jax.Array,
    probability: jax.Array,
    min_keep: int = 1,
) -> jax.Array:
    """XTC, "Exclude Top Choices" (p-e-w, text-generation-webui PR #6335; llama.cpp
    `llama_sampler_xtc_apply`, PR #9742).

    With probability `probability` (one uniform draw u per row and step from its own key:
    applied when u <= probability), among the tokens with p_i >= threshold (p = softmax of the
    current logits) remove all but the least probable one; nothing happens when fewer than two
    tokens reach the threshold (so threshold > 0.5 disables it), or when fewer than `min_keep`
    tokens would remain. keys: [R] PRNG keys.
    """
    v = logits.shape[-1]
    probs = jax.nn.softmax(logits, axis=-1)  # [R, V]
    above = probs >= threshold
    n_above = jnp.sum(above, axis=-1)  # [R]
    p_least = jnp.min(jnp.where(above, probs, 2.0), axis=-1, keepdims=True)  # [R, 1]
    # ties at the least probable one: llama.cpp keeps the last in its sort; keep them all here
    drop = above & (probs > p_least)
    n_left = v - jnp.sum(drop, axis=-1)
    u = jax.vmap(lambda k: jax.random.uniform(k, ()))(keys)  # [R]
    act = (u <= probability) & (n_above >= 2) & (n_left >= min_keep) & (threshold <= 0.5)
    return jnp.where(act[:, None] & drop, NEG_INF, logits)


def dynatemp_factor(logits: jax.Array, t: jax.Array, t_range: jax.Array, exponent: jax.Array):
    """The factor t / T_dyn [R, 1] that turns the later `x / t` into llama.cpp's dynamic
    temperature (`llama_sampler_temp_ext_apply`, "dynatemp", kalomaze, llama.cpp PR #4972):

      T_dyn = T_min + (T_max - T_min) * (H / H_max) ** exponent,
      T_min = max(0, t - range), T_max = t + range,

    H the entropy of softmax(logits) over the candidates (finite logits), H_max = ln(their
    count); a row with at most one candidate is left alone (factor 1).
    """
    finite = logits > NEG_INF / 2
    count = jnp.sum(finite, axis=-1, keepdims=True)  # [R, 1]
    logp = jax.nn.log_softmax(logits, axis=-1)
    p = jnp.exp(logp)
    h = -jnp.sum(jnp.where(p > 0, p * logp, 0.0), axis=-1, keepdims=True)
    h_max = jnp.log(jnp.maximum(count, 2).astype(jnp.float32))
    t_min, t_max = jnp.maximum(0.0, t - t_range), t + t_range
    t_dyn = t_min + (t_max - t_min) * jnp.power(h / h_max, exponent)
    # T_dyn = 0 only when the row is a point mass, which any positive temperature keeps as is
    factor = jnp.where(t > 0, t, 1.0) / jnp.maximum(t_dyn, 1e-6)
    return jnp.where(count > 1, factor, 1.0)


def dynatemp(logits: jax.Array, t: jax.Array, t_range: jax.Array, exponent: jax.Array) -> jax.Array:
    """Dynamic temperature, applied before the `temperature` row (which divides by t), so the
    two together give llama.cpp's x / T_dyn (`dynatemp_factor` has the definition)."""
    return jnp.where(
        logits > NEG_INF / 2, logits * dynatemp_factor(logits, t, t_range, exponent), logits
    )
