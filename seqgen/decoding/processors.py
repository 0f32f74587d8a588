"""Logits processors: pure functions `logits[R, V] -> logits[R, V]` (removed tokens get -inf).

Their order, stages, knobs and state are rows of ONE table, `processor_table.py` (its
`render_order()` gives the order; the README shows it). Every truncation works on the
distribution left by the processors before it (softmax of the current logits, i.e.
renormalised over the surviving tokens), as in Hugging Face's warpers.
None of them can empty the distribution: each keeps at least `min_tokens_to_keep` tokens
(Hugging Face's knob, default 1) -- top-k, top-p, min-p, epsilon and eta the most probable ones,
so they always keep the most probable token; typical-p the ones whose surprisal is closest to the
entropy, so it can drop the most probable token (as in Hugging Face and in Meister et al.).
Ties at a set's boundary are kept (a set is defined by a threshold, not by a sort order), so a
set can exceed `top_k` or `min_tokens_to_keep` when tokens tie there.
Only the rows switched on in `processor_table.ProcessorFlags` (static) are compiled in; their
continuous knob values are traced (see `seqgen.decoding.knobs`).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from seqgen.decoding.common import NEG_INF
from seqgen.tokens import EOS_ID


def _entropy(logp: jax.Array) -> jax.Array:
    """H = -sum_v p_v log p_v over tokens with p_v > 0.  # [R, 1]"""
    p = jnp.exp(logp)
    return -jnp.sum(jnp.where(p > 0, p * logp, 0.0), axis=-1, keepdims=True)


def _kth_largest(x: jax.Array, k: int) -> jax.Array:
    """The k-th largest value of each row (k static, 1 <= k <= V).  # [R, 1]"""
    if k <= 1:
        return jnp.max(x, axis=-1, keepdims=True)
    # The barrier keeps XLA:CPU from folding the slice into the sort, which would stop it
    # from turning sort+slice back into its partial-sort TopK call (a full sort per step).
    return jax.lax.optimization_barrier(jax.lax.top_k(x, k)[0])[..., k - 1 :]


def _keep_at_least(keep: jax.Array, key: jax.Array, m: int) -> jax.Array:
    """`keep` plus the m tokens with the largest `key` (ties at the m-th value kept).  # [R, V]"""
    return keep | (key >= _kth_largest(key, m))


def min_length(logits: jax.Array, generated: jax.Array, min_len: jax.Array) -> jax.Array:
    """Minimum length (fairseq `--min-len`, Hugging Face `MinLengthLogitsProcessor` counted in
    new tokens): EOS is forbidden (logit -inf) while fewer than `min_len` continuation tokens
    have been generated. logits: [R, V]; generated: [R] continuation tokens so far (EOS not
    counted); min_len: traced scalar. The sampling distribution is renormalised over the rest.
    """
    forbid = (generated.astype(jnp.float32) < min_len)[:, None]  # [R, 1]
    return jnp.where(forbid & (jnp.arange(logits.shape[-1]) == EOS_ID), NEG_INF, logits)


def repetition_penalty(logits: jax.Array, counts: jax.Array, penalty: jax.Array) -> jax.Array:
    """CTRL repetition penalty (Keskar et al. 2019, "CTRL", sec. 4.1), sign-aware form.

    CTRL divides the logit x_i of every previously seen token i by theta; for x_i < 0 that
    would raise its probability, so (as in Hugging Face) negative logits are multiplied instead:
    x_i <- x_i / theta if x_i > 0 else x_i * theta, for tokens with counts[i] > 0.
    logits: [R, V], counts: [R, V] (how often each token occurred), penalty: theta > 0.
    """
    penalized = jnp.where(logits > 0, logits / penalty, logits * penalty)
    return jnp.where(counts > 0, penalized, logits)


def presence_frequency_penalty(
    logits: jax.Array, counts: jax.Array, presence: jax.Array, frequency: jax.Array
) -> jax.Array:
    """Presence and frequency penalties (OpenAI API definition):
    x_i <- x_i - c_i * frequency - [c_i > 0] * presence, with c_i the token's count so far.
    """
    c = counts.astype(logits.dtype)
    return logits - c * frequency - (c > 0).astype(logits.dtype) * presence


def no_repeat_ngram(logits: jax.Array, history: jax.Array, t: jax.Array, n: int) -> jax.Array:
    """No-repeat n-gram blocking (Paulus et al. 2018, "A deep reinforced model for abstractive
    summarization", sec. 2.5; fairseq / Hugging Face `no_repeat_ngram_size`).

    Token v is banned at position t if the n-gram (x_{t-n+1}, ..., x_{t-1}, v) already occurs in
    x_0 .. x_{t-1} (prompt included, BOS excluded). n = 1 bans every token seen so far.
    logits: [R, V]; history: [R, T] int (positions >= t are ignored); t: scalar; n: static.
    Fixed shapes: compares the last n-1 tokens against every window start j, O(R * T * n).
    """
    r, length = history.shape
    if n < 1 or n > length:
        return logits
    starts = length - n + 1
    j = jnp.arange(starts)  # [J]
    match = (j + n - 1 <= t - 1)[None, :]  # the n-gram lies entirely before t  # [1, J]
    for i in range(n - 1):
        last_i = jnp.take(history, jnp.clip(t - n + 1 + i, 0, length - 1), axis=1)  # [R]
        match = match & (history[:, i : i + starts] == last_i[:, None])  # [R, J]
    banned_tok = history[:, n - 1 :]  # the token that followed each window  # [R, J]
    banned = jnp.zeros(logits.shape, bool)
    banned = banned.at[jnp.arange(r)[:, None], banned_tok].max(match)  # [R, V]
    return jnp.where(banned, NEG_INF, logits)


def temperature(logits: jax.Array, t: jax.Array) -> jax.Array:
    """Temperature (Ackley et al. 1985; Holtzman et al. 2020 sec. 3.1): x / t.

    t = 0 means greedy; the sampler handles it by taking the argmax, so here t = 0 leaves the
    logits unchanged; the sampler then takes the argmax of the penalised logits, the t -> 0
    limit of every truncation (as t -> 0 the tempered distribution is a point mass on the
    argmax, which each truncation keeps, typical-p included).
    """
    return logits / jnp.where(t > 0, t, 1.0)


def top_k(logits: jax.Array, k: int, min_keep: int = 1) -> jax.Array:
    """Top-k (Fan et al. 2018, "Hierarchical neural story generation"): keep the k most probable
    tokens, i.e. every v with x_v >= the k-th largest logit (ties at the boundary kept, so the set
    may exceed k). k = 0 (off) or k >= V keeps everything. k is static; as in Hugging Face,
    k' = max(k, min_keep) is used.
    """
    k = max(k, min_keep) if k > 0 else 0
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    return jnp.where(logits >= _kth_largest(logits, k), logits, NEG_INF)


def _ordered_bits(x: jax.Array) -> jax.Array:
    """float32 -> uint32 with the same order (flip negatives, set the sign bit of positives)."""
    u = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
    return jnp.where(u >> 31 == 1, ~u, u | jnp.uint32(0x80000000))


def keep_by_mass(key: jax.Array, probs: jax.Array, mass: jax.Array, ways: int = 2) -> jax.Array:
    """Keep {v : key_v >= kappa}, kappa the LARGEST threshold whose kept mass
    sum_{u : key_u >= kappa} P_u is >= mass. This is the smallest "best first" prefix with
    mass >= `mass`, ties at its boundary kept (top-p: key = logit; typical: key = -deviation).

    Exact without a sort: a `ways`-ary search over the 2^32 order-preserving bit patterns of
    the keys. Each round tests `ways - 1` thresholds at once (a compare and a masked sum over
    [R, ways - 1, V]) and keeps the sub-range of the largest one that still holds the mass;
    ceil(32 / log2(ways)) rounds: 32 for bisection (ways=2), 8 for ways=16 (fewer, larger
    kernels for the same set).  # [R, V] bool
    """
    if ways < 2 or ways & (ways - 1):
        raise ValueError(f"ways={ways}; expected a power of 2 >= 2")
    bits = _ordered_bits(key)  # [R, V]
    # invariant: kappa in [lo, hi]; the kept mass at lo (everything at first) is >= mass
    lo = jnp.min(bits, axis=-1, keepdims=True)  # [R, 1]
    hi = jnp.max(bits, axis=-1, keepdims=True)
    j = jnp.arange(1, ways, dtype=jnp.uint32)  # [W-1]
    rounds = -(-32 // (ways.bit_length() - 1))

    def body(_: int, bounds: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        lo, hi = bounds
        step = (hi - lo) // ways + 1  # ceil((hi - lo + 1) / ways) without overflow
        mids = jnp.minimum(lo + j * step, hi)  # [R, W-1]; <= hi + W, below 2^32 for floats
        kept = jnp.where(bits[:, None, :] >= mids[:, :, None], probs[:, None, :], 0.0)
        ok = jnp.sum(kept, axis=-1) >= mass  # [R, W-1], a prefix of True (mass is monotone)
        c = jnp.sum(jnp.cumprod(ok, axis=-1), axis=-1, keepdims=True).astype(jnp.uint32)
        new_lo = lo + c * step  # the largest tested threshold that holds the mass (or lo)
        new_hi = jnp.where(c == ways - 1, hi, jnp.minimum(new_lo + step - 1, hi))
        return jnp.minimum(new_lo, hi), new_hi

    lo, _ = jax.lax.fori_loop(0, rounds, body, (lo, hi))
    return bits >= lo


def keep_by_mass_sorted(key: jax.Array, probs: jax.Array, mass: jax.Array) -> jax.Array:
    """The set of `keep_by_mass` by one sort per row: with the keys sorted in decreasing order
    and c_i the cumulative mass of the first i + 1, kappa = the key at the first i with
    c_i >= mass (every larger key's tie group ends before i, so its kept mass is < mass; ties
    at kappa are kept by the threshold).  # [R, V] bool"""
    order = jnp.argsort(-key, axis=-1)  # [R, V]
    sorted_key = jnp.take_along_axis(key, order, axis=-1)
    cum = jnp.cumsum(jnp.take_along_axis(probs, order, axis=-1), axis=-1)
    first = jnp.minimum(jnp.sum(cum < mass, axis=-1, keepdims=True), key.shape[-1] - 1)
    return key >= jnp.take_along_axis(sorted_key, first, axis=-1)


# How top-p and typical-p find their set (the same set every way, tested): a search over the
# keys' bit patterns, 2-ary (32 rounds) or 16-ary (8 rounds of 15 thresholds), or one sort.
NUCLEUS_METHODS = {
    "bisect": keep_by_mass,
    "search16": partial(keep_by_mass, ways=16),
    "sort": keep_by_mass_sorted,
}
# backend -> method, by measurement (`scripts/bench_decode.py --loops`, README's benchmarks);
# a backend not listed bisects
NUCLEUS_METHOD = {"cpu": "bisect"}


def nucleus_method() -> str:
    """The default backend's entry of NUCLEUS_METHOD (a backend not listed bisects)."""
    return NUCLEUS_METHOD.get(jax.default_backend(), "bisect")


def mass_set(key: jax.Array, probs: jax.Array, mass: jax.Array, method: str | None) -> jax.Array:
    """`keep_by_mass`'s set by `method` (one of NUCLEUS_METHODS; None = `nucleus_method()`)."""
    return NUCLEUS_METHODS[method or nucleus_method()](key, probs, mass)


def top_p(
    logits: jax.Array, p: jax.Array, min_keep: int = 1, method: str | None = None
) -> jax.Array:
    """Nucleus / top-p (Holtzman et al. 2020, "The curious case of neural text degeneration",
    sec. 3.1, eq. 2): keep the smallest set V^(p) with sum_{v in V^(p)} P(v) >= p.

    With P sorted in decreasing order, rank i is in the set iff sum_{j<i} P_j < p; every token
    with P_v >= the smallest kept probability is kept too (ties at the boundary kept).
    Equivalently V^(p) = {v : x_v >= kappa} with kappa the largest threshold whose kept mass is
    >= p, which `keep_by_mass` finds without a sort (on CPU a per-row sort costs more) and
    `keep_by_mass_sorted` with one; `method` (one of NUCLEUS_METHODS; None = NUCLEUS_METHOD of
    the backend) picks one. The `min_keep` most probable tokens are always kept.
    """
    probs = jax.nn.softmax(logits, axis=-1)
    keep = mass_set(logits, probs, p, method)
    if min_keep > 1:
        keep = _keep_at_least(keep, logits, min_keep)
    return jnp.where(keep, logits, NEG_INF)


def typical_p(
    logits: jax.Array, mass: jax.Array, min_keep: int = 1, method: str | None = None
) -> jax.Array:
    """Locally typical sampling (Meister et al. 2023, "Locally typical sampling", TACL, eq. 7-9).

    With H = -sum_v P(v) log P(v), sort tokens by |-log P(v) - H| (increasing) and keep the
    smallest prefix whose probability mass is >= `mass` (tau); every token whose deviation is <=
    the largest kept deviation is kept (ties kept). Tokens with P = 0 are never kept.
    Computed as `keep_by_mass`'s set on the key -deviation (`method` as for `top_p`).
    The set always holds the `min_keep` tokens of smallest deviation (Hugging Face's
    `TypicalLogitsWarper`), NOT necessarily the most probable token: when the argmax is
    atypical (its surprisal far below H), it is dropped.
    """
    logp = jax.nn.log_softmax(logits, axis=-1)
    dev = jnp.where(jnp.isfinite(logp), jnp.abs(-logp - _entropy(logp)), jnp.inf)  # [R, V]
    keep = mass_set(-dev, jnp.exp(logp), mass, method)
    if min_keep > 1:
        keep = _keep_at_least(keep, -dev, min_keep)
    keep = keep & jnp.isfinite(dev)
    return jnp.where(keep, logits, NEG_INF)


def min_p(logits: jax.Array, p_base: jax.Array, min_keep: int = 1) -> jax.Array:
    """Min-p (Nguyen et al. 2024, "Turning up the heat: min-p sampling"): keep v iff
    P(v) >= p_base * max_u P(u), i.e. x_v >= max_u x_u + log p_base; and the `min_keep` most
    probable tokens.
    """
    probs = jax.nn.softmax(logits, axis=-1)
    keep = probs >= p_base * jnp.max(probs, axis=-1, keepdims=True)
    return jnp.where(_keep_at_least(keep, logits, min_keep), logits, NEG_INF)


def epsilon(logits: jax.Array, eps: jax.Array, min_keep: int = 1) -> jax.Array:
    """Epsilon sampling (Hewitt et al. 2022, "Truncation sampling as language model desmoothing",
    sec. 4): keep {v : P(v) > eps}; the `min_keep` most probable tokens are always kept.
    """
    probs = jax.nn.softmax(logits, axis=-1)
    return jnp.where(_keep_at_least(probs > eps, logits, min_keep), logits, NEG_INF)


def eta(logits: jax.Array, eta_: jax.Array, min_keep: int = 1) -> jax.Array:
    """Eta sampling (Hewitt et al. 2022, sec. 5): keep {v : P(v) > eta'} with the entropy-dependent
    threshold eta' = min(eta, sqrt(eta) * exp(-H(P))); the `min_keep` most probable tokens are
    always kept.
    """
    logp = jax.nn.log_softmax(logits, axis=-1)
    thr = jnp.minimum(eta_, jnp.sqrt(eta_) * jnp.exp(-_entropy(logp)))
    return jnp.where(_keep_at_least(jnp.exp(logp) > thr, logits, min_keep), logits, NEG_INF)


def top_n_sigma(logits: jax.Array, n: jax.Array, min_keep: int = 1) -> jax.Array:
    """Top-n-sigma (Tang et al. 2024, "Top-nsigma: Not all logits are you need", eq. 4): keep
    {v : x_v >= max_u x_u - n * sigma}, sigma the standard deviation (population, 1/|V|) of the
    logits. sigma is taken over the tokens still allowed (finite logits), which is the whole
    vocabulary, as in the paper, when no earlier processor removed any; the set is invariant to
    temperature (max and sigma scale alike). The `min_keep` most probable tokens are always kept.
    """
    finite = jnp.isfinite(logits)
    cnt = jnp.maximum(jnp.sum(finite, axis=-1, keepdims=True), 1)  # [R, 1]
    x = jnp.where(finite, logits, 0.0)
    mean = jnp.sum(x, axis=-1, keepdims=True) / cnt
    var = jnp.sum(jnp.where(finite, (x - mean) ** 2, 0.0), axis=-1, keepdims=True) / cnt
    thr = jnp.max(logits, axis=-1, keepdims=True) - n * jnp.sqrt(var)
    return jnp.where(_keep_at_least(logits >= thr, logits, min_keep), logits, NEG_INF)


LOG2 = 0.6931471805599453


def mirostat_truncate(logits: jax.Array, mu: jax.Array) -> jax.Array:
    """Mirostat v2 truncation (Basu et al. 2021, "Mirostat: a neural text decoding algorithm
    that directly controls perplexity", ICLR, Alg. 2 / sec. 4): keep the tokens whose surprise
    -log2 P(v) <= mu (bits) under the current distribution P = softmax(logits); the most
    probable token is always kept. mu: [R] the running bound of each row.
    """
    surprise = -jax.nn.log_softmax(logits, axis=-1) / LOG2  # [R, V] bits
    return jnp.where(_keep_at_least(surprise <= mu[:, None], logits, 1), logits, NEG_INF)


def mirostat_update(mu: jax.Array, surprise: jax.Array, tau: jax.Array, lr: jax.Array) -> jax.Array:
    """Mirostat's feedback rule (Basu et al. 2021, Alg. 1-2): with the observed surprise
    s = -log2 P(x) of the sampled token x under the distribution before Mirostat's truncation
    (the model's surprise, as the paper's code computes it; llama.cpp uses the truncated,
    renormalised P instead), e = s - tau and mu <- mu - lr * e. mu starts at 2 * tau.
    """
    return mu - lr * (surprise - tau)
